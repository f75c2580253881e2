//! `churn`: mixed-size allocation churn on one thread.
//!
//! A window of slots holds live objects; each operation picks a random slot and frees its object
//! if it has one, or allocates a new one if it is empty, so frees come in random order and the
//! live set hovers around half the window. Sizes: 80 % 8–256 B, 18 % 256 B–4 KiB, 2 % 4–64 KiB,
//! each spread evenly over the powers of two. The free phase drops what is still live.

use std::time::Instant;

use crate::block::Block;
use crate::report::Report;
use crate::rng::Rng;
use crate::workloads::Ctx;

/// Slots in the window (about half are live at any time, some 15 MB).
const WINDOW_SLOTS: usize = 40_000;
/// Operations (one allocation or one free each) in a full run.
const OPS: usize = 8_000_000;

fn churn_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..80 => rng.log_uniform(8, 256),
        80..98 => rng.log_uniform(256, 4096),
        _ => rng.log_uniform(4096, 65536),
    }
}

pub(crate) fn run(ctx: &Ctx, report: &mut Report) {
    let ops = ctx.scaled(OPS);
    let mut rng = Rng::new(0xC4A5);
    let mut window: Vec<Option<Block>> = (0..WINDOW_SLOTS).map(|_| None).collect();

    let start = Instant::now();
    for op in 0..ops {
        let slot = &mut window[rng.below(WINDOW_SLOTS)];
        *slot = match slot.take() {
            Some(_freed) => None,
            None => Some(Block::new(churn_size(&mut rng), op as u64)),
        };
    }
    window.iter_mut().for_each(|slot| drop(slot.take()));
    report.set("secs", start.elapsed().as_secs_f64());
    report.set("ops", ops);

    drop(window);
    ctx.after_free(report);
    ctx.release(report);
}
