//! How long a `BlobCache` insert can take when it gives a class's vacant runs of handle-table slots
//! back (see `BlobCache::insert`), and how large the table ends.
//!
//! `--phases` phases (default 12) insert `--blobs` blobs (default 500,000) of one size, a new size
//! each phase (cycling through six classes from 40 to 3,000 bytes), then remove all but one in 300
//! of them. No background compactor runs, so the inserts after which a class claimed slots give
//! runs back themselves. Prints, per phase, the slowest insert and the table's slots; at the end,
//! the slowest insert of all, the 99.99th percentile, and the time of an explicit
//! `release_vacant_slots` on the final state.
//!
//! ```text
//! cargo run --release -p benches --bin blob-slots
//! ```

use relocate_api::BlobCache;
use std::time::Instant;

#[global_allocator]
static GLOBAL: alloc_core::SlabAlloc = alloc_core::SlabAlloc::new();

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|at| args.get(at + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn main() {
    let (phases, blobs) = (arg("--phases", 12), arg("--blobs", 500_000));
    const SIZES: [usize; 6] = [40, 3000, 120, 700, 250, 1500];
    let cache = BlobCache::new().expect("cache");
    let reader = cache.reader();
    let mut kept = Vec::new();
    let mut all_ns: Vec<u64> = Vec::with_capacity(phases * blobs);
    for phase in 0..phases {
        let size = SIZES[phase % SIZES.len()];
        let value: Vec<u8> = (0..size).map(|i| (i + phase) as u8).collect();
        let mut handles = Vec::with_capacity(blobs);
        let (mut slowest, mut slowest_at, mut over_1ms) = (0, 0, 0);
        for at in 0..blobs {
            let began = Instant::now();
            let handle = cache.insert(&value).expect("insert");
            let ns = began.elapsed().as_nanos() as u64;
            if ns > slowest {
                (slowest, slowest_at) = (ns, at);
            }
            over_1ms += usize::from(ns > 1_000_000);
            all_ns.push(ns);
            handles.push(handle);
        }
        for (i, handle) in handles.into_iter().enumerate() {
            if i % 300 == 0 {
                kept.push((handle, phase));
            } else {
                assert!(cache.remove(handle, &reader.pin()), "live");
            }
        }
        cache.flush(&reader);
        println!(
            "phase {phase:2} ({size:4} B): slowest insert {:7.3} ms (insert {slowest_at}), {over_1ms} over 1 ms, table {:9} slots committed",
            slowest as f64 / 1e6,
            cache.stats().table_committed_bytes / 8
        );
    }
    let over_1ms = all_ns.iter().filter(|&&ns| ns > 1_000_000).count();
    all_ns.sort_unstable();
    let began = Instant::now();
    let given = cache.release_vacant_slots();
    let release = began.elapsed();
    let guard = reader.pin();
    for &(handle, phase) in &kept {
        let blob = cache.get(handle, &guard).expect("kept blob");
        assert_eq!(blob[0], phase as u8, "a kept blob's content");
    }
    println!(
        "slowest insert {:.3} ms, {over_1ms} over 1 ms, p99.99 {:.1} us; release_vacant_slots gave {given} slots in {:.3} ms; {} blobs kept and checked",
        all_ns[all_ns.len() - 1] as f64 / 1e6,
        all_ns[all_ns.len() * 9999 / 10000] as f64 / 1e3,
        release.as_secs_f64() * 1e3,
        kept.len()
    );
}
