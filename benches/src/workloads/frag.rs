//! `frag`: fragmentation after a mass free, then a different size.
//!
//! Allocates 2 million objects of 16–512 B (spread evenly over the powers of two, about 290 MB),
//! frees a random 90 % of them in random order, and measures the resident set (`rss_free`, with
//! `live` the bytes still held). Then it allocates 1–2 KiB objects until their total is about the
//! freed bytes, so an allocator that cannot reuse the small objects' memory for another size grows
//! (`rss_end`, `live_end`). The release step runs while everything from the last phase is live.

use std::time::Instant;

use crate::block::Block;
use crate::report::Report;
use crate::rng::Rng;
use crate::workloads::Ctx;

/// Small objects in a full run.
const OBJECTS: usize = 2_000_000;
/// Of every hundred small objects, how many are freed.
const FREED_PERCENT: usize = 90;

fn total_bytes(blocks: &[Block]) -> usize {
    blocks.iter().map(Block::size_bytes).sum()
}

pub(crate) fn run(ctx: &Ctx, report: &mut Report) {
    let objects = ctx.scaled(OBJECTS);
    let mut rng = Rng::new(0xF4A6);

    let alloc_start = Instant::now();
    let mut small: Vec<Block> = (0..objects)
        .map(|i| Block::new(rng.log_uniform(16, 512), i as u64))
        .collect();
    let mut secs = alloc_start.elapsed().as_secs_f64();

    // Untimed: choose the random 90 % and their order.
    rng.shuffle(&mut small);
    let survivors = small.split_off(objects * FREED_PERCENT / 100);
    let freed_bytes = total_bytes(&small);

    let free_start = Instant::now();
    drop(small);
    secs += free_start.elapsed().as_secs_f64();
    let live = total_bytes(&survivors);
    report.set("live", live);
    ctx.after_free(report);

    let refill_start = Instant::now();
    let mut refill = Vec::new();
    let mut refill_bytes = 0;
    while refill_bytes < freed_bytes {
        let block = Block::new(rng.between(1024, 2048), refill.len() as u64);
        refill_bytes += block.size_bytes();
        refill.push(block);
    }
    secs += refill_start.elapsed().as_secs_f64();
    report.set("secs", secs);
    report.set(
        "ops",
        objects + objects * FREED_PERCENT / 100 + refill.len(),
    );
    report.set("rss_end", crate::rss::current_rss_bytes());
    report.set("live_end", live + refill_bytes);

    ctx.release(report);
    drop((survivors, refill));
}
