//! A `BlobCache`'s reclaims in a row, without a flush between them, each take the next arena (in a
//! file of its own, as `reclaims_in_a_row.rs`, since it counts what its arenas hold).

use relocate_api::{BlobCache, BlobHandle};
use std::collections::HashSet;

#[test]
fn blob_reclaims_in_a_row_take_the_next_arena_without_a_flush() {
    let cache = BlobCache::new().unwrap();
    let reader = cache.reader();
    // About 7 MiB of 250-byte blobs (256-byte blocks): three full arenas and part of a fourth.
    let stored: Vec<BlobHandle> = (0..28_000u32)
        .map(|i| {
            let mut value = [0u8; 250];
            value[..4].copy_from_slice(&i.to_le_bytes());
            cache.insert(&value).unwrap()
        })
        .collect();
    let guard = reader.pin();
    let mut evicted: HashSet<u32> = HashSet::new();
    let mut last_newest = None;
    let mut reclaims = 0;
    // Until the cache is empty: each reclaim evicts something (an arena of the cache's own, or its
    // share of an arena its first slabs shared with other small caches), in the order stored.
    while !cache.is_empty() {
        let mut newest = 0;
        let report = cache
            .reclaim_oldest(&guard, |h, blob| {
                let i = u32::from_le_bytes(blob[..4].try_into().unwrap());
                assert_eq!(stored[i as usize], h);
                assert!(evicted.insert(i), "blob {i} evicted twice");
                newest = newest.max(i);
            })
            .unwrap();
        reclaims += 1;
        assert!(report.evicted > 0, "reclaim {reclaims} evicted nothing");
        assert!(last_newest < Some(newest), "reclaim {reclaims}");
        last_newest = Some(newest);
        assert!(reclaims <= 8, "{} left", cache.len());
    }
    // Three whole arenas of 256-byte blocks (8,192 a piece) took one reclaim each.
    assert!(reclaims <= 6, "{reclaims} reclaims");
    assert_eq!(cache.len(), stored.len() - evicted.len());
    drop(guard);
    cache.flush(&reader);
    let guard = reader.pin();
    for (i, h) in stored.iter().enumerate() {
        assert_eq!(
            cache.get(*h, &guard).is_some(),
            !evicted.contains(&(i as u32))
        );
    }
}
