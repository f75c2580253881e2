//! Caches that stop growing do not keep the unused rest of a huge page. A cache's arenas after its
//! first get the huge-page hint as they open (one page fault per 2 MiB instead of 512), so the
//! arena a cache is growing into is resident whole, used or not; with an arena per cache, that is up
//! to 2 MiB per cache. Once an arena has not grown for alloc-core's decommit delay, maintenance
//! gives its never-used units back. Twenty caches of 3 MiB each (two arenas, the second a third
//! used), grown side by side: their resident set, after a maintenance pass, is within 8 MiB of their
//! slabs and handle tables, the 8 MiB for the arenas' metadata (a 4-byte back-map entry per 64-byte
//! block, 3.75 MiB here, and liveness bitmaps): 6.4 MiB over on the machine of `benches/README.md`.
//! Without the hand-back it was 26.4 MiB over. (That is where transparent huge pages are on, as
//! `madvise` or `always`; where they are off, nothing is resident that was not written.)
//! One test in a process of its own: it reads the process's resident set.

use relocate_api::{Handle, RelocCache};
use std::time::Duration;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn caches_that_stop_growing_give_back_the_rest_of_their_huge_pages() {
    const CACHES: usize = 20;
    /// 3 MiB of 64-byte objects per cache.
    const PER_CACHE: u64 = 48 << 10;
    let mut handles: Vec<Handle<[u64; 8]>> = Vec::with_capacity(CACHES * PER_CACHE as usize);
    let before = resident_bytes();
    let caches: Vec<RelocCache<[u64; 8]>> =
        (0..CACHES).map(|_| RelocCache::new().unwrap()).collect();
    for i in 0..PER_CACHE {
        for cache in &caches {
            handles.push(cache.insert([i; 8]).unwrap());
        }
    }
    let accounted: usize = handles.capacity() * size_of::<Handle<[u64; 8]>>()
        + caches
            .iter()
            .map(|cache| {
                let stats = cache.stats();
                stats.resident_bytes + stats.table_bytes
            })
            .sum::<usize>();
    let grown = resident_bytes() - before;
    std::thread::sleep(Duration::from_millis(60));
    caches[0].release_aged_arenas();
    let after = resident_bytes() - before;
    eprintln!(
        "accounted {} KiB; resident grew {} KiB, {} KiB after maintenance",
        accounted >> 10,
        grown >> 10,
        after >> 10
    );
    assert!(
        after <= accounted + (8 << 20),
        "resident {after} bytes for {accounted} bytes of slabs, tables and handles"
    );
    let reader = caches[0].reader();
    let guard = reader.pin();
    for (i, &handle) in handles.iter().enumerate().step_by(CACHES * 97) {
        assert_eq!(
            caches[0].get(handle, &guard),
            Some(&[(i / CACHES) as u64; 8])
        );
    }
}
