//! `buffers`: request buffers of 256 KiB to 4 MiB, filled whole, on two threads.
//!
//! Each thread serves requests: it allocates a buffer of a size spread evenly over the powers of
//! two from 256 KiB to 4 MiB, fills it (as reading a request body would), and keeps it in one of
//! [`LIVE`] slots, freeing the buffer that was there after checking its first, middle and last
//! bytes. A
//! service that takes a fresh buffer per request pays for the allocator's handling of sizes past
//! its largest class: a fresh mapping faults every page in again.

use std::time::Instant;

use crate::block::note_corrupt;
use crate::report::Report;
use crate::rng::Rng;
use crate::workloads::Ctx;

/// Threads serving requests.
const THREADS: usize = 2;
/// Buffers each thread keeps live.
const LIVE: usize = 4;
/// Requests per thread in a full run.
const REQUESTS: usize = 4_000;

/// Frees a buffer after checking that it still holds what it was filled with.
fn check_and_drop(buffer: Vec<u8>) {
    let fill = buffer[0];
    if buffer[buffer.len() - 1] != fill || buffer[buffer.len() / 2] != fill {
        note_corrupt(format_args!("a buffer of {} bytes changed", buffer.len()));
    }
}

fn serve(requests: usize, seed: u64) -> usize {
    let mut rng = Rng::new(seed);
    let mut slots: Vec<Option<Vec<u8>>> = (0..LIVE).map(|_| None).collect();
    let mut bytes = 0;
    for request in 0..requests {
        let size = rng.log_uniform(256 << 10, 4 << 20);
        let buffer = vec![(request % 251) as u8 + 1; size];
        bytes += buffer.len();
        if let Some(old) = slots[rng.below(LIVE)].replace(buffer) {
            check_and_drop(old);
        }
    }
    slots.into_iter().flatten().for_each(check_and_drop);
    bytes
}

pub(crate) fn run(ctx: &Ctx, report: &mut Report) {
    let requests = ctx.scaled(REQUESTS);
    let start = Instant::now();
    let bytes: usize = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| scope.spawn(move || serve(requests, 0xB0F + t as u64)))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    report.set("secs", start.elapsed().as_secs_f64());
    report.set("ops", THREADS * requests);
    report.set("buffer_bytes", bytes);

    ctx.after_free(report);
    ctx.release(report);
}
