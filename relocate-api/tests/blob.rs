//! The byte-blob flavour: values of any size from 1 B to `MAX_BLOB_BYTES`, checked against a `HashMap`
//! model through inserts, in-class and cross-class replaces, removes, compaction, evacuation and
//! eviction; oversize values are refused.

use relocate_api::{BlobCache, BlobHandle, Budget, CacheError, MAX_BLOB_BYTES};
use std::collections::HashMap;

fn value(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i as u64 * 31) >> 3) as u8)
        .collect()
}

#[test]
fn blobs_of_every_size_round_trip_through_compaction_and_eviction() {
    let cache = BlobCache::new().unwrap();
    let reader = cache.reader();
    let mut model: HashMap<BlobHandle, Vec<u8>> = HashMap::new();
    let mut seed = 1u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let guard = reader.pin();
    for len in (1..=MAX_BLOB_BYTES)
        .step_by(97)
        .chain([1, 2, 3, 12, 13, MAX_BLOB_BYTES])
    {
        let v = value(len as u64, len);
        let h = cache.insert(&v).unwrap();
        model.insert(h, v);
    }
    for i in 0..20_000u64 {
        let len = 1 + (next() % 600) as usize;
        let v = value(i, len);
        model.insert(cache.insert(&v).unwrap(), v);
    }
    assert_eq!(
        cache.insert(&vec![0; MAX_BLOB_BYTES + 1]).err(),
        Some(CacheError::TooLarge)
    );
    // Replace some in place (same length) and some across classes; remove a random 80 %.
    let handles: Vec<BlobHandle> = model.keys().copied().collect();
    for (i, h) in handles.iter().enumerate() {
        let old = model.remove(h).unwrap();
        match i % 10 {
            0 => {
                let v = value(i as u64 + 7, old.len());
                assert_eq!(
                    cache.replace(*h, &guard, &v).unwrap(),
                    Some(*h),
                    "same-class replace moved"
                );
                model.insert(*h, v);
            }
            1 => {
                let v = value(i as u64 + 9, (old.len() * 3 + 100).min(MAX_BLOB_BYTES));
                let new = cache.replace(*h, &guard, &v).unwrap().unwrap();
                if new != *h {
                    assert_eq!(cache.get(*h, &guard), None, "old handle still resolves");
                }
                model.insert(new, v);
            }
            2..=7 => assert!(cache.remove(*h, &guard)),
            _ => {
                model.insert(*h, old);
            }
        }
    }
    drop(guard);
    cache.flush(&reader);
    let before = cache.stats();
    let guard = reader.pin();
    let report = cache.compact(&guard, Budget::Unlimited).unwrap();
    assert!(report.moved_objects > 0);
    drop(guard);
    cache.flush(&reader);
    let after = cache.stats();
    assert!(after.slabs < before.slabs, "{before:?} {after:?}");
    let guard = reader.pin();
    for (h, v) in &model {
        assert_eq!(cache.get(*h, &guard), Some(v.as_slice()));
    }
    // Eviction removes whole arenas' worth of blobs, and reports each one exactly.
    let mut evicted = Vec::new();
    let n = cache.reclaim(&guard, |h, bytes| evicted.push((h, bytes.to_vec())));
    assert_eq!(n, evicted.len());
    assert!(n > 0);
    for (h, bytes) in evicted {
        assert_eq!(model.remove(&h), Some(bytes));
        assert_eq!(cache.get(h, &guard), None);
    }
    for (h, v) in &model {
        assert_eq!(cache.get(*h, &guard), Some(v.as_slice()));
    }
    for bits in [0, u64::MAX, 1 << 63] {
        assert_eq!(cache.get(BlobHandle::from_bits(bits), &guard), None);
    }
    // Removing everything empties the arenas, which go back to the OS and show in the statistics
    // (unless the allocator's own decommit delay already returned them: the count may be 0).
    for h in model.keys() {
        assert!(cache.remove(*h, &guard));
    }
    drop(guard);
    cache.flush(&reader);
    let released = cache.release_empty_arenas();
    let stats = cache.stats();
    assert_eq!(stats.live_objects, 0);
    assert_eq!(stats.slabs, 0, "{stats:?}");
    assert_eq!(stats.counters.released_bytes, released as u64);
    assert!(stats.table_bytes > 0);
}

/// Threads that store blobs of every size at once make each class once (the first blob of a class
/// makes its cache; a thread that loses that race uses the winner's), and every blob reads back.
/// Blocks are the class's exact size: a class of 16-byte steps wastes under 16 bytes per blob.
#[test]
fn classes_made_by_racing_threads_serve_every_size() {
    let cache = BlobCache::new().unwrap();
    let lens: Vec<usize> = (1..=MAX_BLOB_BYTES).step_by(61).collect();
    let stored: Vec<Vec<(BlobHandle, Vec<u8>)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let (cache, lens) = (&cache, &lens);
                scope.spawn(move || {
                    lens.iter()
                        .map(|&len| {
                            let v = value(t * 1_000_003 + len as u64, len);
                            (cache.insert(&v).unwrap(), v)
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let reader = cache.reader();
    let guard = reader.pin();
    let mut handles = std::collections::HashSet::new();
    for (h, v) in stored.iter().flatten() {
        assert!(handles.insert(*h), "handle {h:?} handed out twice");
        assert_eq!(cache.get(*h, &guard), Some(v.as_slice()));
    }
    let stats = cache.stats();
    assert_eq!(stats.live_objects, 4 * lens.len());
    // Each blob (4-byte length included) wastes under 16 bytes up to 512, under 1/16 of its block to
    // 4 KiB, under 1/8 above: block - need < block/16 means block - need < need/15.
    let (mut need, mut slack) = (0, 0);
    for len in &lens {
        let n = len + 4;
        need += 4 * n;
        slack += 4 * if n <= 512 {
            15
        } else if n <= 4096 {
            n / 15 + 1
        } else {
            n / 7 + 1
        };
    }
    assert!(stats.live_bytes >= need, "{stats:?}");
    assert!(
        stats.live_bytes - need <= slack,
        "{} B over {need}",
        stats.live_bytes - need
    );
}

/// A blob handle from another `BlobCache` (same classes, same slot indices) resolves to nothing, and
/// neither removes nor replaces anything.
#[test]
fn a_handle_from_another_blob_cache_is_refused() {
    let (a, b) = (BlobCache::new().unwrap(), BlobCache::new().unwrap());
    let (ra, rb) = (a.reader(), b.reader());
    let (ga, gb) = (ra.pin(), rb.pin());
    for len in [0, 1, 100, 5000] {
        let (ha, hb) = (
            a.insert(&value(1, len)).unwrap(),
            b.insert(&value(2, len)).unwrap(),
        );
        assert_eq!(
            ha.to_bits() & (relocate_api::MAX_OBJECTS as u64 - 1),
            hb.to_bits() & (relocate_api::MAX_OBJECTS as u64 - 1),
            "same slot"
        );
        assert_eq!(b.get(ha, &gb), None, "{len} B: a's handle resolved in b");
        assert_eq!(a.get(hb, &ga), None, "{len} B: b's handle resolved in a");
        assert!(!b.remove(ha, &gb));
        assert_eq!(b.replace(ha, &gb, b"x").unwrap(), None);
        assert_eq!(b.get(hb, &gb), Some(value(2, len).as_slice()));
        assert_eq!(a.get(ha, &ga), Some(value(1, len).as_slice()));
    }
}

/// The size classes share one handle table: each claims runs of slots from it, so blobs of every
/// class get distinct slots of one index space (the whole generation space of a cache), which
/// `stats` counts once. A handle needs no class to be read, removed or refused.
#[test]
fn size_classes_share_one_handle_table() {
    let cache = BlobCache::new().unwrap();
    let reader = cache.reader();
    let guard = reader.pin();
    let lens = (0..15).map(|p| (1usize << p) - 1).chain([MAX_BLOB_BYTES]);
    let handles: Vec<(usize, BlobHandle)> = lens
        .map(|len| (len, cache.insert(&value(len as u64, len)).unwrap()))
        .collect();
    let index_mask = relocate_api::MAX_OBJECTS as u64 - 1;
    let mut indices: Vec<u64> = handles
        .iter()
        .map(|(_, h)| h.to_bits() & index_mask)
        .collect();
    indices.sort_unstable();
    indices.dedup();
    assert_eq!(indices.len(), handles.len(), "distinct slots: {indices:?}");
    assert!(
        indices.iter().all(|&i| i < handles.len() as u64 * 256),
        "runs of one table: {indices:?}"
    );
    assert_eq!(
        cache.stats().table_bytes,
        (16 << 10) * 8,
        "one chunk of one table"
    );
    for (len, handle) in handles {
        assert_eq!(
            cache.get(handle, &guard),
            Some(value(len as u64, len).as_slice())
        );
        assert!(cache.remove(handle, &guard));
        assert_eq!(cache.get(handle, &guard), None);
        assert!(!cache.remove(handle, &guard), "{len} B: removed twice");
        assert_eq!(cache.replace(handle, &guard, b"x").unwrap(), None);
    }
    assert_eq!(cache.stats().live_objects, 0);
}
