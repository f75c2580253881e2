//! A dropped cache's memory goes back to the OS at once, as the resident set shows: not after
//! alloc-core's decommit delay at its next maintenance, which a program that drops a cache and then
//! idles never reaches (a filled `BlobCache` of 90 MB, dropped, stayed resident). That holds for
//! many smaller caches dropped together too. One emptied arena stays mapped for the next cache
//! (unmapping it at every drop made creating and dropping small caches 1.4–2.7 times slower). One
//! test in its own process: the resident set and the arenas are the process's.

use relocate_api::{BlobCache, RelocCache};

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Runs `fill` (which fills a cache and drops it) and checks that at least 90 % of what the cache
/// made resident is back once it is dropped; returns the bytes it made resident.
fn dropped_cache_gives_back(what: &str, fill: impl FnOnce(&mut dyn FnMut())) -> usize {
    let before = resident_bytes();
    let mut full = 0;
    fill(&mut || full = resident_bytes());
    let after = resident_bytes();
    let grew = full.saturating_sub(before);
    assert!(
        grew > 50 << 20,
        "{what}: the cache made {grew} bytes resident"
    );
    assert!(
        after.saturating_sub(before) < grew / 10,
        "{what}: {before} bytes resident before, {full} full, {after} after the drop"
    );
    grew
}

#[test]
fn a_dropped_cache_gives_its_memory_back_at_once() {
    let value = vec![7u8; 30 << 10];
    dropped_cache_gives_back("BlobCache", |full| {
        let cache = BlobCache::new().unwrap();
        for _ in 0..3000 {
            cache.insert(&value).unwrap();
        }
        full();
    });
    dropped_cache_gives_back("RelocCache", |full| {
        let cache: RelocCache<[u64; 8]> = RelocCache::new().unwrap();
        for i in 0..1_000_000u64 {
            cache.insert([i; 8]).unwrap();
        }
        full();
    });
    // Sixty caches of 1.5 MB each, alive together, then dropped.
    dropped_cache_gives_back("60 BlobCaches", |full| {
        let caches: Vec<BlobCache> = (0..60)
            .map(|_| {
                let cache = BlobCache::new().unwrap();
                for _ in 0..50 {
                    cache.insert(&value).unwrap();
                }
                cache
            })
            .collect();
        full();
        drop(caches);
    });
    let arenas = || alloc_core::stats().arenas;
    for _ in 0..3 {
        let cache: RelocCache<u64> = RelocCache::new().unwrap();
        for i in 0..100 {
            cache.insert(i).unwrap();
        }
        let blobs = BlobCache::new().unwrap();
        blobs.insert(&value).unwrap();
        let mapped = arenas();
        assert!(mapped > 0);
        drop((cache, blobs));
        // Small caches share arenas (a cache takes arenas of its own only past 2 MiB).
        assert_eq!(arenas(), mapped, "small caches leave their arenas mapped");
    }
}
