//! The main demo: a small service-like program running entirely on alloc-core.
//!
//! It builds an in-memory inverted index over generated documents on several worker threads, answers
//! queries against it, hands results between threads (so frees cross threads), then drops the index,
//! calls `alloc_core::purge()`, and prints what it did with the allocator's statistics and the resident
//! set read from the OS at each step.

use examples::{mib, resident_bytes};
use std::collections::HashMap;
use std::sync::{mpsc, Arc};
use std::time::Instant;

#[global_allocator]
static ALLOC: alloc_core::SlabAlloc = alloc_core::SlabAlloc::new();

/// A tiny deterministic generator (xorshift64*), so the demo needs no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

const SYLLABLES: [&str; 16] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zi", "pa", "qu", "do", "fe", "gi", "ho", "ju",
];

fn word(rng: &mut Rng) -> String {
    let syllables = 1 + (rng.next() % 4) as usize;
    (0..syllables)
        .map(|_| SYLLABLES[(rng.next() % 16) as usize])
        .collect()
}

type Index = HashMap<String, Vec<u32>>;

fn build_index(worker: u64, documents: u32) -> Index {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ worker);
    let mut index: Index = HashMap::new();
    for doc in 0..documents {
        let words = 20 + (rng.next() % 200) as usize;
        for _ in 0..words {
            index.entry(word(&mut rng)).or_default().push(doc);
        }
    }
    index
}

fn print_stats(step: &str) {
    let s = alloc_core::stats();
    println!(
        "{step:<28} rss {:>8.1} MiB | allocated {:>8.1} MiB, committed {:>8.1} MiB, mapped {:>8.1} MiB, arenas {:>3}, heaps {} ({} abandoned)",
        mib(resident_bytes()),
        mib(s.allocated_bytes),
        mib(s.committed_bytes),
        mib(s.mapped_bytes),
        s.arenas,
        s.heaps_created,
        s.heaps_abandoned,
    );
}

fn main() {
    let workers = 4u64;
    let documents = 20_000u32;
    let started = Instant::now();
    print_stats("start");

    // Build one index shard per worker thread.
    let shards: Vec<Arc<Index>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| scope.spawn(move || Arc::new(build_index(w, documents))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    let terms: usize = shards.iter().map(|s| s.len()).sum();
    let postings: usize = shards.iter().flat_map(|s| s.values()).map(Vec::len).sum();
    println!(
        "built {workers} shards: {terms} terms, {postings} postings in {:?}",
        started.elapsed()
    );
    print_stats("after build");

    // Answer queries on worker threads; results travel to the main thread, which frees them.
    let (tx, rx) = mpsc::channel::<(String, Vec<u32>)>();
    std::thread::scope(|scope| {
        for w in 0..workers {
            let tx = tx.clone();
            let shards = shards.clone();
            scope.spawn(move || {
                let mut rng = Rng(0x51_7cc1_b727_220a ^ w);
                for _ in 0..20_000 {
                    let query = word(&mut rng);
                    // The first 256 postings of each shard, merged: a page of results.
                    let mut hits: Vec<u32> = shards
                        .iter()
                        .filter_map(|s| s.get(&query))
                        .flat_map(|postings| postings.iter().take(256))
                        .copied()
                        .collect();
                    hits.sort_unstable();
                    hits.dedup();
                    tx.send((query, hits)).expect("receiver alive");
                }
            });
        }
        drop(tx);
        let (mut answered, mut hits) = (0usize, 0usize);
        for (_, result) in rx {
            answered += 1;
            hits += result.len();
        }
        println!("answered {answered} queries ({hits} hits), results freed on the main thread");
    });
    print_stats("after queries");

    drop(shards);
    print_stats("after dropping the index");
    let released = alloc_core::purge();
    println!("purge() gave back {:.1} MiB", mib(released));
    print_stats("after purge");

    let s = alloc_core::stats();
    println!("slab classes in use:");
    for class in s.classes.iter().filter(|c| c.slabs_created > 0) {
        println!(
            "  {:>6} B blocks: {:>4} slabs now, {:>6} blocks in use, {:>5} slabs made",
            class.block_bytes, class.slabs, class.used_blocks, class.slabs_created
        );
    }
    let mut heaps = 0;
    alloc_core::for_each_heap(|h| {
        heaps += 1;
        println!(
            "  heap {heaps}: {} slow-path allocations, {} slabs taken, {} returned, {} remote frees collected",
            h.slow_allocs, h.slabs_taken, h.slabs_returned, h.remote_frees_collected
        );
    });
    println!("done in {:?}", started.elapsed());
}
