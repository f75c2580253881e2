//! A long run of a relocating cache under churn, to watch its resident set and its huge pages over
//! minutes rather than seconds: does the resident set follow the live objects as they grow and
//! shrink, with the background compactor at work, and do the movable arenas keep (or regain) their
//! huge pages without khugepaged making decommitted memory resident again?
//!
//! A `RelocCache<[u64; 8]>` of up to `--objects` objects (default 1,000,000) is churned for
//! `--secs` seconds (default 300) at `--rate` operations a second (default 1,000,000): inserts and
//! removals at random, towards a target live count that moves to a new random level between 10 %
//! and 100 % every 10 seconds. A background compactor (every 10 ms, 4 MiB per round, while resident
//! / live is above 1.2) moves objects meanwhile. Every object holds its key in its first and
//! (inverted) last word, checked when it is removed and at the end.
//!
//! Once a second it prints the live objects' bytes, the resident set from `/proc/self/statm`, the
//! cache's slab bytes (its own count), the anonymous huge pages from `/proc/self/smaps_rollup`, and
//! the objects moved so far; at the end, the kernel's THP counters from `/proc/vmstat` over the run
//! (faults that got a huge page, khugepaged collapses, splits). `ALLOC_CORE_THP=0` runs it without
//! huge pages for comparison.
//!
//! ```text
//! cargo run --release -p benches --bin reloc-soak -- --secs 600
//! ```

use benches::rng::Rng;
use benches::rss::current_rss_bytes;
use relocate_api::{start_compactor, Budget, CompactorConfig, Handle, RelocCache};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: alloc_core::SlabAlloc = alloc_core::SlabAlloc::new();

type Obj = [u64; 8];

fn object(key: u64) -> Obj {
    [key, 1, 2, 3, 4, 5, 6, !key]
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

/// A `key: value kB` field of a `/proc` file, in bytes (0 if absent).
fn proc_kib(path: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
        .map_or(0, |kib: u64| kib << 10)
}

/// The `/proc/vmstat` counters of transparent huge pages this run reports.
fn thp_counters() -> [u64; 3] {
    let text = std::fs::read_to_string("/proc/vmstat").unwrap_or_default();
    ["thp_fault_alloc ", "thp_collapse_alloc ", "thp_split_page "].map(|key| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn main() {
    let secs = arg("--secs", 300);
    let rate = arg("--rate", 1_000_000).max(4096);
    let objects = arg("--objects", 1_000_000) as usize;
    let cache: Arc<RelocCache<Obj>> = Arc::new(RelocCache::new().expect("a RelocCache"));
    let compactor = start_compactor(
        cache.clone(),
        CompactorConfig {
            interval: Duration::from_millis(10),
            budget: Budget::Bytes(4 << 20),
            target_fragmentation: 1.2,
        },
    )
    .expect("the compactor thread");
    let reader = cache.reader();
    let thp_before = thp_counters();
    let rss_before = current_rss_bytes() as u64;
    // The live objects: (key, handle bits); removal swaps a random one out.
    let mut live: Vec<(u64, u64)> = Vec::with_capacity(objects);
    let mut rng = Rng::new(42);
    let (mut next_key, mut target, mut ops, mut checked) = (0u64, objects / 2, 0u64, 0u64);
    let began = Instant::now();
    let mut next_report = Duration::ZERO;
    let mut next_target = Duration::ZERO;
    let mut worst = (0.0f64, 0.0f64);
    println!(" secs  live MiB   RSS MiB  slabs MiB  huge MiB  RSS-slabs MiB    moved");
    while began.elapsed() < Duration::from_secs(secs) {
        if began.elapsed() >= next_target {
            next_target += Duration::from_secs(10);
            target = objects / 10 + rng.below(objects - objects / 10 + 1);
        }
        // Keep to the rate: a batch of 4,096 operations is due every 4096 / rate seconds.
        let due = Duration::from_secs_f64(ops as f64 / rate as f64);
        if let Some(early) = due.checked_sub(began.elapsed()) {
            std::thread::sleep(early);
        }
        let mut guard = reader.pin();
        for _ in 0..4096 {
            ops += 1;
            let grow = live.len() < target;
            // Mostly towards the target, with some traffic the other way.
            if (grow && rng.below(10) < 8) || live.is_empty() {
                let handle = cache.insert(object(next_key)).map_err(|(_, e)| e);
                live.push((next_key, handle.expect("insert").to_bits()));
                next_key += 1;
            } else {
                let (key, bits) = live.swap_remove(rng.below(live.len()));
                let found = cache.remove_with(Handle::from_bits(bits), &guard, |o| *o);
                assert_eq!(found, Some(object(key)), "object {key}");
                checked += 1;
            }
        }
        guard.repin();
        drop(guard);
        if began.elapsed() >= next_report {
            next_report += Duration::from_secs(1);
            let rss = current_rss_bytes() as u64;
            let slabs = cache.stats().resident_bytes as u64;
            let huge = proc_kib("/proc/self/smaps_rollup", "AnonHugePages:");
            let live_bytes = (live.len() * size_of::<Obj>()) as u64;
            println!(
                "{:5} {:9.1} {:9.1} {:10.1} {:9.1} {:14.1} {:8}",
                began.elapsed().as_secs(),
                mib(live_bytes),
                mib(rss),
                mib(slabs),
                mib(huge),
                mib(rss.saturating_sub(slabs)),
                compactor.moved_objects()
            );
            if live_bytes > 0 {
                let ratio = slabs as f64 / live_bytes as f64;
                worst = (
                    worst.0.max(ratio),
                    worst.1.max(mib(rss.saturating_sub(slabs))),
                );
            }
        }
    }
    let background = compactor.stop();
    println!(
        "compactor: {} rounds, {} compacted, {} objects moved, {} refused",
        background.rounds,
        background.compactions,
        background.compacted.moved_objects,
        background.compacted.refused
    );
    let guard = reader.pin();
    for &(key, bits) in &live {
        assert_eq!(
            cache.get(Handle::from_bits(bits), &guard),
            Some(&object(key))
        );
    }
    drop(guard);
    let thp_after = thp_counters();
    println!(
        "{ops} operations, {checked} removals and {} survivors checked; worst slabs/live {:.2}, \
         worst RSS-slabs {:.1} MiB (RSS at start {:.1} MiB)",
        live.len(),
        worst.0,
        worst.1,
        mib(rss_before)
    );
    println!(
        "THP over the run (whole machine): {} faults got a huge page, {} khugepaged collapses, {} \
         splits",
        thp_after[0] - thp_before[0],
        thp_after[1] - thp_before[1],
        thp_after[2] - thp_before[2]
    );
}
