//! `xthread`: producer/consumer cross-thread frees.
//!
//! The producer allocates batches of 256 blocks (16 B–1 KiB) and sends each batch over a bounded
//! channel; the consumer frees them. Every free is therefore remote to the allocating thread,
//! which is the path that per-thread allocators must handle without a lock.

use std::sync::mpsc::sync_channel;
use std::time::Instant;

use crate::block::Block;
use crate::report::Report;
use crate::rng::Rng;
use crate::workloads::Ctx;

/// Blocks per message.
const BATCH: usize = 256;
/// Blocks produced in a full run.
const BLOCKS: usize = 8_000_000;
/// Batches in flight at most (bounds the live set to some 20 MB).
const CHANNEL_BATCHES: usize = 64;

pub(crate) fn run(ctx: &Ctx, report: &mut Report) {
    let batches = ctx.scaled(BLOCKS) / BATCH;
    let (sender, receiver) = sync_channel::<Vec<Block>>(CHANNEL_BATCHES);

    let start = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut rng = Rng::new(0x9D0D);
            for batch_idx in 0..batches {
                let batch: Vec<Block> = (0..BATCH)
                    .map(|i| Block::new(rng.log_uniform(16, 1024), (batch_idx * BATCH + i) as u64))
                    .collect();
                if sender.send(batch).is_err() {
                    break;
                }
            }
        });
        scope.spawn(move || receiver.into_iter().for_each(drop));
    });
    report.set("secs", start.elapsed().as_secs_f64());
    report.set("ops", batches * BATCH);

    ctx.after_free(report);
    ctx.release(report);
}
