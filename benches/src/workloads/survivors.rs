//! `survivors` and `survivors-idle`: scattered survivors of exited threads.
//!
//! Four threads each allocate a quarter of 1 GiB in blocks of 32 B–4 KiB (spread evenly over the
//! powers of two), then free all but every sixteenth block, in allocation order, and exit, handing
//! the survivors to `main` through the join. The survivors are spread thinly over everything the
//! threads touched, so what stays resident shows how well an allocator returns partly used memory
//! of threads that are gone. `rss_free` is measured right after the joins (`live` = survivor
//! bytes); the release step is a purge call (`survivors`) or 2 s of idling with no call at all
//! (`survivors-idle`, where ours has its background purger running since the start of `main`).

use std::time::Instant;

use crate::block::Block;
use crate::report::Report;
use crate::rng::Rng;
use crate::workloads::Ctx;

/// Threads allocating.
const THREADS: usize = 4;
/// Bytes all threads allocate together in a full run.
const TOTAL_BYTES: usize = 1 << 30;
/// One block in this many survives.
const KEEP_ONE_IN: usize = 16;

/// One thread's part: allocate `budget_bytes`, keep one block in sixteen.
fn allocate_and_thin(budget_bytes: usize, seed: u64) -> (Vec<Block>, usize) {
    let mut rng = Rng::new(seed);
    let mut all = Vec::new();
    let mut allocated = 0;
    while allocated < budget_bytes {
        let block = Block::new(rng.log_uniform(32, 4096), seed ^ all.len() as u64);
        allocated += block.size_bytes();
        all.push(block);
    }
    let ops = 2 * all.len() - all.len().div_ceil(KEEP_ONE_IN);
    let kept = all
        .into_iter()
        .enumerate()
        .filter_map(|(i, block)| (i % KEEP_ONE_IN == 0).then_some(block))
        .collect();
    (kept, ops)
}

pub(crate) fn run(ctx: &Ctx, report: &mut Report) {
    let budget_bytes = ctx.scaled(TOTAL_BYTES) / THREADS;

    let start = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| std::thread::spawn(move || allocate_and_thin(budget_bytes, (t as u64 + 1) << 40)))
        .collect();
    let mut survivors = Vec::new();
    let mut ops = 0;
    for handle in handles {
        let (kept, thread_ops) = handle
            .join()
            .unwrap_or_else(|payload| std::panic::resume_unwind(payload));
        survivors.push(kept);
        ops += thread_ops;
    }
    report.set("secs", start.elapsed().as_secs_f64());
    report.set("ops", ops);

    let live: usize = survivors.iter().flatten().map(Block::size_bytes).sum();
    report.set("live", live);
    ctx.after_free(report);
    ctx.release(report);
    drop(survivors);
}
