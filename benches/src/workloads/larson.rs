//! `larson`: larson-style slot replacement with hand-off between threads.
//!
//! Each of two threads (the machine has two cores) owns an array of slots and replaces randomly
//! chosen slots with new blocks of 8–1024 B. At the end of a round every thread exits and its
//! array is handed to a new thread (rotated, so each array meets another thread's objects); the
//! blocks a thread frees were mostly allocated by threads that have already exited, which
//! exercises remote frees into abandoned heaps and their adoption.

use std::time::Instant;

use crate::block::Block;
use crate::report::Report;
use crate::rng::Rng;
use crate::workloads::Ctx;

/// Worker threads per round.
const THREADS: usize = 2;
/// Slots per thread's array.
const SLOTS: usize = 8_000;
/// Rounds; each round's threads are new.
const ROUNDS: usize = 30;
/// Slot replacements per thread per round in a full run.
const STEPS: usize = 100_000;

fn larson_size(rng: &mut Rng) -> usize {
    rng.between(8, 1024)
}

/// One thread's round: `steps` random slot replacements.
fn replace_slots(slots: &mut [Block], steps: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    for step in 0..steps {
        let slot = rng.below(slots.len());
        slots[slot] = Block::new(larson_size(&mut rng), seed ^ step as u64);
    }
}

pub(crate) fn run(ctx: &Ctx, report: &mut Report) {
    let steps = ctx.scaled(STEPS);
    let mut rng = Rng::new(0x1A250);
    let mut arrays: Vec<Vec<Block>> = (0..THREADS)
        .map(|_| {
            (0..SLOTS)
                .map(|i| Block::new(larson_size(&mut rng), i as u64))
                .collect()
        })
        .collect();

    let start = Instant::now();
    for round in 0..ROUNDS {
        std::thread::scope(|scope| {
            for (thread_idx, slots) in arrays.iter_mut().enumerate() {
                let seed = ((round * THREADS + thread_idx) as u64) << 32;
                scope.spawn(move || replace_slots(slots, steps, seed));
            }
        });
        arrays.rotate_left(1);
    }
    drop(arrays);
    report.set("secs", start.elapsed().as_secs_f64());
    report.set("ops", THREADS * ROUNDS * steps);

    ctx.after_free(report);
    ctx.release(report);
}
