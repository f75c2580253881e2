//! A compressed page store in the spirit of zcache: 4 KiB pages are compressed (a simple run-length
//! code) and kept in a `BlobCache` under a memory budget. When the cache's slabs exceed the budget,
//! `reclaim_oldest` drops the arena opened earliest at once (no copying): its pages' handles stop
//! resolving, the eviction callback removes them from the index, and the 2 MiB goes back to the OS.
//! The pages are clean and re-creatable, so a later lookup of an evicted page regenerates it (a miss).
//!
//! First in, first out, rather than `reclaim`'s fewest live bytes: once the cache is full, each page
//! that needs a new slab opens a new arena, which then holds the fewest bytes, so `reclaim` would
//! evict the pages stored last, one reclaim each, and the cache would keep its first contents.

use relocate_api::{BlobCache, BlobHandle};
use std::collections::HashMap;

#[global_allocator]
static ALLOC: alloc_core::SlabAlloc = alloc_core::SlabAlloc::new();

const PAGE: usize = 4096;
const BUDGET_BYTES: usize = 24 << 20;

/// A page whose compressibility depends on its number (runs of 1..64 equal bytes).
fn make_page(id: u64) -> Vec<u8> {
    let mut page = Vec::with_capacity(PAGE);
    let mut x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while page.len() < PAGE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let run = 1 + (x % (1 + id % 64)) as usize;
        page.extend(std::iter::repeat_n(
            (x >> 8) as u8,
            run.min(PAGE - page.len()),
        ));
    }
    page
}

fn compress(page: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in page.chunk_by(|a, b| a == b) {
        for piece in chunk.chunks(255) {
            out.extend([piece.len() as u8, piece[0]]);
        }
    }
    out
}

fn decompress(data: &[u8]) -> Vec<u8> {
    data.chunks(2)
        .flat_map(|p| std::iter::repeat_n(p[1], p[0] as usize))
        .collect()
}

fn resident_mib() -> f64 {
    examples::mib(examples::resident_bytes())
}

fn main() {
    let cache = BlobCache::new().expect("cache");
    let reader = cache.reader();
    let mut index: HashMap<u64, BlobHandle> = HashMap::new();
    let mut owners: HashMap<BlobHandle, u64> = HashMap::new();
    let (mut hits, mut misses, mut evicted, mut reclaims) = (0u64, 0u64, 0usize, 0u32);
    let mut stored_bytes = 0usize;
    let mut x = 7u64;
    for access in 0..400_000u64 {
        // A skewed access pattern over 60,000 pages: recent pages are hot.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let span = 1 + access.min(60_000);
        let id = access
            .min(60_000)
            .saturating_sub((x % span).min(x % 5_000 + (x >> 40) % span));
        let guard = reader.pin();
        if let Some(data) = index.get(&id).and_then(|h| cache.get(*h, &guard)) {
            assert_eq!(decompress(data), make_page(id), "page {id} corrupted");
            hits += 1;
        } else {
            misses += 1;
            let compressed = compress(&make_page(id));
            if compressed.len() <= relocate_api::MAX_BLOB_BYTES {
                stored_bytes += compressed.len();
                let handle = cache.insert(&compressed).expect("insert");
                if let Some(old) = index.insert(id, handle) {
                    owners.remove(&old);
                }
                owners.insert(handle, id);
            }
        }
        drop(guard);
        // Over budget: drop the oldest arena whole, then let the epoch return its memory.
        while cache.stats().resident_bytes > BUDGET_BYTES {
            reclaims += 1;
            let guard = reader.pin();
            let dropped = cache
                .reclaim_oldest(&guard, |handle, _| {
                    if let Some(id) = owners.remove(&handle) {
                        index.remove(&id);
                    }
                })
                .expect("refused only from inside a relocation callback")
                .evicted;
            drop(guard);
            cache.flush(&reader);
            evicted += dropped;
            if dropped == 0 {
                break;
            }
        }
        if access % 100_000 == 99_999 {
            let s = cache.stats();
            println!(
                "{:>7} accesses: {} pages cached ({:.1} MiB compressed in {:.1} MiB of slabs), rss {:.1} MiB, hits {hits}, misses {misses}, {evicted} evicted in {reclaims} reclaims",
                access + 1,
                s.live_objects,
                s.live_bytes as f64 / (1 << 20) as f64,
                s.resident_bytes as f64 / (1 << 20) as f64,
                resident_mib()
            );
        }
    }
    println!(
        "compressed {:.1} MiB of pages into {:.1} MiB; budget {} MiB held by reclaiming whole arenas",
        (misses as usize * PAGE) as f64 / (1 << 20) as f64,
        stored_bytes as f64 / (1 << 20) as f64,
        BUDGET_BYTES >> 20
    );
}
