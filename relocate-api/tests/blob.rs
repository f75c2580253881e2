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
        .chain([1, 2, 3, 12, 13, 32 << 10, MAX_BLOB_BYTES])
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
    // Eviction removes whole arenas' worth of blobs, and reports each one exactly, either way.
    // (The first reclaim's blocks are freed before the second, which could otherwise pick their
    // arena again and find nothing live in it.)
    drop(guard);
    for oldest in [false, true] {
        cache.flush(&reader);
        let guard = reader.pin();
        let mut evicted = Vec::new();
        let record = |h, bytes: &[u8]| evicted.push((h, bytes.to_vec()));
        let n = if oldest {
            cache.reclaim_oldest(&guard, record)
        } else {
            cache.reclaim(&guard, record)
        }
        .unwrap()
        .evicted;
        assert_eq!(n, evicted.len());
        assert!(n > 0, "oldest: {oldest}");
        for (h, bytes) in evicted {
            assert_eq!(model.remove(&h), Some(bytes));
            assert_eq!(cache.get(h, &guard), None);
        }
        for (h, v) in &model {
            assert_eq!(cache.get(*h, &guard), Some(v.as_slice()));
        }
    }
    let guard = reader.pin();
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
fn get_many_answers_as_get_does() {
    let cache = BlobCache::new().unwrap();
    let other = BlobCache::new().unwrap();
    let reader = cache.reader();
    let guard = reader.pin();
    let live: Vec<BlobHandle> = (0..200)
        .map(|i| cache.insert(&value(i, 1 + i as usize * 37)).unwrap())
        .collect();
    let removed: Vec<BlobHandle> = (0..20)
        .map(|i| cache.insert(&value(i, 5)).unwrap())
        .collect();
    for &handle in &removed {
        assert!(cache.remove(handle, &guard));
    }
    let foreign = other.insert(b"elsewhere").unwrap();
    let mut mixed = Vec::new();
    for (i, &handle) in live.iter().enumerate() {
        mixed.push(handle);
        match i % 5 {
            0 => mixed.push(removed[i % removed.len()]),
            2 => mixed.push(foreign),
            4 => mixed.push(BlobHandle::from_bits(!(i as u64))),
            _ => {}
        }
    }
    for len in [0, 1, 8, 9, 16, 17, mixed.len()] {
        let batch = &mixed[..len];
        let mut visited = Vec::new();
        cache.get_many(batch, &guard, |i, bytes| {
            visited.push((i, bytes.map(<[u8]>::to_vec)))
        });
        let expected: Vec<(usize, Option<Vec<u8>>)> = (batch.iter().enumerate())
            .map(|(i, &h)| (i, cache.get(h, &guard).map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(visited, expected, "a batch of {len}");
    }
}

#[test]
fn remove_many_removes_as_remove_does() {
    let cache = BlobCache::new().unwrap();
    let other = BlobCache::new().unwrap();
    let reader = cache.reader();
    let guard = reader.pin();
    let foreign = other.insert(b"elsewhere").unwrap();
    for len in [0, 1, 8, 9, 16, 17, 200] {
        let live: Vec<BlobHandle> = (0..len)
            .map(|i| cache.insert(&value(i as u64, 1 + i * 37)).unwrap())
            .collect();
        let kept = cache.insert(b"kept").unwrap();
        let stale = cache.insert(b"stale").unwrap();
        assert!(cache.remove(stale, &guard));
        // Live handles of many classes, one named twice, removed, foreign and forged handles.
        let mut batch = Vec::new();
        for (i, &handle) in live.iter().enumerate() {
            batch.push(handle);
            match i % 5 {
                0 => batch.push(stale),
                1 => batch.push(foreign),
                2 => batch.push(BlobHandle::from_bits(!(i as u64))),
                3 => batch.push(handle),
                _ => {}
            }
        }
        assert_eq!(cache.remove_many(&batch, &guard), len, "a batch of {len}");
        for &handle in &batch {
            assert_eq!(cache.get(handle, &guard), None, "a removed handle resolved");
        }
        assert_eq!(cache.get(kept, &guard), Some(&b"kept"[..]));
        assert!(cache.remove(kept, &guard));
    }
    assert_eq!(cache.stats().live_objects, 0);
    assert_eq!(
        other.get(foreign, &other.reader().pin()),
        Some(&b"elsewhere"[..])
    );
}

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
        cache.stats().table_committed_bytes,
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

#[test]
fn a_class_gives_its_vacant_slot_runs_to_the_next_class() {
    // 20,000 slots are claimed in runs of 256: 79 runs, the last with 224 slots never used.
    const N: usize = 20_000;
    const RUN: usize = 256;
    let cache = BlobCache::new().unwrap();
    let reader = cache.reader();
    let small: Vec<BlobHandle> = (0..N)
        .map(|i| cache.insert(&value(i as u64, 100)).unwrap())
        .collect();
    let index_mask = relocate_api::MAX_OBJECTS as u64 - 1;
    assert!(small.iter().all(|h| (h.to_bits() & index_mask) < N as u64));
    {
        let guard = reader.pin();
        // The first small blob stays, and keeps its run.
        for &handle in &small[1..] {
            assert!(cache.remove(handle, &guard));
        }
    }
    cache.flush(&reader);
    let given = cache.release_vacant_slots();
    assert_eq!(given, 77 * RUN, "every run but the first and the last");
    assert_eq!(cache.stats().counters.returned_slots, given as u64);
    assert_eq!(cache.release_vacant_slots(), 0, "nothing left to give");

    // Another class takes the given runs before the table grows: 19,712 slots given, then two
    // new runs from the end of the table.
    let large: Vec<(u64, BlobHandle)> = (0..N as u64)
        .map(|i| (i, cache.insert(&value(i + N as u64, 1000)).unwrap()))
        .collect();
    let mut indices: Vec<u64> = large
        .iter()
        .map(|(_, h)| h.to_bits() & index_mask)
        .collect();
    indices.sort_unstable();
    indices.dedup();
    assert_eq!(indices.len(), N, "distinct slots");
    assert!(indices
        .iter()
        .all(|&i| (RUN as u64..79 * RUN as u64 + 2 * RUN as u64).contains(&i)));
    assert_eq!(
        cache.stats().table_committed_bytes,
        (32 << 10) * 8,
        "two chunks of table (three without the runs given back)"
    );
    let guard = reader.pin();
    assert_eq!(cache.get(small[0], &guard), Some(value(0, 100).as_slice()));
    for &handle in &small[1..] {
        assert_eq!(
            cache.get(handle, &guard),
            None,
            "stale in the slot's new class"
        );
        assert!(!cache.remove(handle, &guard));
        assert_eq!(cache.replace(handle, &guard, b"x").unwrap(), None);
    }
    for &(i, handle) in &large {
        assert_eq!(
            cache.get(handle, &guard),
            Some(value(i + N as u64, 1000).as_slice())
        );
    }
    // The large blobs move and go back like any others.
    cache.compact(&guard, Budget::Unlimited).unwrap();
    for &(i, handle) in &large {
        assert_eq!(
            cache.get(handle, &guard),
            Some(value(i + N as u64, 1000).as_slice())
        );
        assert!(cache.remove(handle, &guard));
    }
    drop(guard);
    cache.flush(&reader);
    // The large class gives back the 77 runs it was given and the first of its two new ones.
    assert_eq!(cache.release_vacant_slots(), 78 * RUN);
    assert_eq!(cache.stats().live_objects, 1);
    let guard = reader.pin();
    assert_eq!(cache.get(small[0], &guard), Some(value(0, 100).as_slice()));
}

/// Random inserts, replaces and removes whose value sizes drift from class to class, with slot runs
/// given back (and compaction) along the way: every blob reads back as the model says, every removed
/// handle stays stale, and the table grows no further than the live blobs need.
#[test]
fn drifting_sizes_reuse_slots_given_back_and_match_a_model() {
    let cache = BlobCache::new().unwrap();
    let reader = cache.reader();
    let mut model: HashMap<BlobHandle, Vec<u8>> = HashMap::new();
    let mut stale: Vec<BlobHandle> = Vec::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut peak_live = 0;
    let mut given = 0;
    for phase in 0..12u64 {
        // Each phase stores values of one band of sizes (a few classes) and removes most others.
        let base = 16 + (phase % 6) as usize * 700;
        let mut guard = reader.pin();
        // The last band mostly goes: a few of its blobs stay, scattered over its runs.
        // (one `remove` each in even phases, one `remove_many` in odd ones).
        let going: Vec<BlobHandle> = (model.keys().enumerate())
            .filter_map(|(i, &h)| (i % 500 != 0).then_some(h))
            .collect();
        if phase % 2 == 0 {
            for &h in &going {
                assert!(cache.remove(h, &guard));
            }
        } else {
            assert_eq!(cache.remove_many(&going, &guard), going.len());
        }
        for h in going {
            model.remove(&h);
            stale.push(h);
        }
        for step in 0..16_000u64 {
            if step % 256 == 0 {
                guard.repin();
            }
            let handles_len = model.len();
            match next() % 8 {
                0..=4 => {
                    let v = value(phase << 32 | step, base + (next() % 40) as usize);
                    let h = cache.insert(&v).unwrap();
                    assert_eq!(cache.get(h, &guard), Some(v.as_slice()));
                    assert!(
                        model.insert(h, v).is_none(),
                        "a live handle was handed out again"
                    );
                }
                5..=6 if handles_len > 0 => {
                    let h = *model
                        .keys()
                        .nth((next() % handles_len as u64) as usize)
                        .unwrap();
                    assert_eq!(cache.get(h, &guard), model.get(&h).map(Vec::as_slice));
                    assert!(cache.remove(h, &guard));
                    model.remove(&h);
                    stale.push(h);
                }
                7 if handles_len > 0 => {
                    let h = *model
                        .keys()
                        .nth((next() % handles_len as u64) as usize)
                        .unwrap();
                    let v = value(!step, base + (next() % 40) as usize);
                    let new = cache.replace(h, &guard, &v).unwrap().unwrap();
                    model.remove(&h);
                    if new != h {
                        stale.push(h);
                    }
                    model.insert(new, v);
                }
                _ => {}
            }
            peak_live = peak_live.max(model.len());
        }
        if phase % 2 == 1 {
            cache.compact(&guard, Budget::Objects(2_000)).unwrap();
        }
        drop(guard);
        cache.flush(&reader);
        given += cache.release_vacant_slots();
        let guard = reader.pin();
        for (h, v) in &model {
            assert_eq!(cache.get(*h, &guard), Some(v.as_slice()));
        }
        for h in &stale {
            assert_eq!(cache.get(*h, &guard), None, "a removed handle resolved");
        }
        // The same through `get_many`, live and removed handles interleaved.
        let mixed: Vec<BlobHandle> = (model.keys().copied())
            .zip(stale.iter().rev().copied())
            .flat_map(|(live, removed)| [live, removed])
            .collect();
        let mut visited = 0;
        cache.get_many(&mixed, &guard, |i, bytes| {
            assert_eq!(i, visited);
            let expected = model.get(&mixed[i]).map(Vec::as_slice);
            assert_eq!(bytes, expected, "get_many of {:?}", mixed[i]);
            visited += 1;
        });
        assert_eq!(visited, mixed.len());
        assert_eq!(cache.stats().live_objects, model.len());
        // `for_each` visits each live blob once, with its bytes, over runs that changed classes.
        let mut seen: HashMap<BlobHandle, Vec<u8>> = HashMap::new();
        cache.for_each(&guard, |h, bytes| {
            assert!(
                seen.insert(h, bytes.to_vec()).is_none(),
                "{h:?} visited twice"
            );
        });
        assert!(seen == model, "for_each's blobs differ from the model");
        assert_eq!(cache.len(), model.len());
        assert_eq!(cache.is_empty(), model.is_empty());
    }
    // Inserts give runs back too (when a class claims slots), often before the calls get to them,
    // so the counter holds at least what the calls gave.
    let returned = cache.stats().counters.returned_slots;
    assert!(
        returned > 0 && returned >= given as u64,
        "{returned} {given}"
    );
    // Without giving back, each band's classes would keep their own peaks' slots: 49,152 table
    // slots here (three chunks of 16,384) for a peak of about 6,300 live blobs; with it, one chunk.
    let table_slots = cache.stats().table_committed_bytes / 8;
    assert!(
        table_slots <= (peak_live * 2).next_multiple_of(16 << 10),
        "{table_slots} table slots for a peak of {peak_live} live blobs"
    );
}

/// Values whose sizes drift, phase after phase, with no call to `release_vacant_slots`: inserts that
/// make a class claim slots have the emptied classes give their runs back, so the table stays near
/// what the live blobs need rather than the sum of every class's peak. Each insert is followed by
/// an insert and a removal in another cache, and the phases' inserts come from short-lived threads
/// (50 inserts each): neither may keep this cache from giving runs back. Nor may a background
/// compactor that ran on it and stopped (while one runs, its rounds do this instead).
#[test]
fn drifting_sizes_keep_the_table_small_without_being_asked() {
    use relocate_api::{start_compactor, CompactorConfig};
    const PHASES: usize = 20;
    const LIVE: usize = 20_000;
    const PER_THREAD: usize = 50;
    let cache = std::sync::Arc::new(BlobCache::new().unwrap());
    let config = CompactorConfig {
        interval: std::time::Duration::from_millis(1),
        budget: Budget::Objects(100),
        target_fragmentation: 1.5,
    };
    start_compactor(cache.clone(), config).unwrap().stop();
    let other = BlobCache::new().unwrap();
    let reader = cache.reader();
    let mut live: Vec<(BlobHandle, Vec<u8>)> = Vec::new();
    for phase in 0..PHASES {
        let guard = reader.pin();
        for (h, _) in live.drain(..) {
            assert!(cache.remove(h, &guard));
        }
        drop(guard);
        cache.flush(&reader);
        let len = 20 + phase * 150;
        for first in (0..LIVE).step_by(PER_THREAD) {
            let (cache, other) = (&cache, &other);
            let inserted = std::thread::scope(|scope| {
                scope
                    .spawn(move || {
                        let other_reader = other.reader();
                        (first..first + PER_THREAD)
                            .map(|i| {
                                let v = value((phase * LIVE + i) as u64, len);
                                let h = cache.insert(&v).unwrap();
                                let o = other.insert(&v).unwrap();
                                assert!(other.remove(o, &other_reader.pin()));
                                (h, v)
                            })
                            .collect::<Vec<_>>()
                    })
                    .join()
                    .unwrap()
            });
            live.extend(inserted);
        }
    }
    let guard = reader.pin();
    for (h, v) in &live {
        assert_eq!(cache.get(*h, &guard), Some(v.as_slice()));
    }
    let table_slots = cache.stats().table_committed_bytes / 8;
    // Each class's peak kept: PHASES × LIVE = 400,000 slots.
    assert!(
        table_slots <= 4 * LIVE,
        "{table_slots} table slots for {LIVE} live blobs"
    );
    assert!(cache.stats().counters.returned_slots > 0);
}

/// Slot runs given back while other threads insert, read and remove in other classes (and in the
/// class giving them back): every blob reads back whole, every removed handle stays stale.
#[test]
fn slots_given_back_while_other_threads_store_and_read() {
    const ROUNDS: u64 = if cfg!(debug_assertions) { 6 } else { 30 };
    const PER_ROUND: u64 = 3_000;
    let cache = BlobCache::new().unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let giver = scope.spawn(|| {
            let reader = cache.reader();
            let mut given = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                cache.flush(&reader);
                given += cache.release_vacant_slots();
            }
            given
        });
        // Walks every blob over and over while runs change classes: no blob twice in one walk, and
        // each one of the workers' lengths and as `get` reads it (unless it went meanwhile).
        let walker = scope.spawn(|| {
            let reader = cache.reader();
            let lengths: Vec<usize> = (0..5)
                .flat_map(|k| [20 + k * 300, 20 + k * 300 + 150])
                .collect();
            let mut walks = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let guard = reader.pin();
                let mut seen = std::collections::HashSet::new();
                cache.for_each(&guard, |h, bytes| {
                    assert!(seen.insert(h), "{h:?} visited twice in one walk");
                    assert!(
                        lengths.contains(&bytes.len()),
                        "a blob of {} B",
                        bytes.len()
                    );
                    let now = cache.get(h, &guard);
                    assert!(now.is_none() || now == Some(bytes), "{h:?} read otherwise");
                });
                walks += 1;
            }
            walks
        });
        let workers: Vec<_> = (0..2u64)
            .map(|worker| {
                let cache = &cache;
                scope.spawn(move || {
                    let reader = cache.reader();
                    let mut stale = Vec::new();
                    for round in 0..ROUNDS {
                        // Sizes drift from round to round, and the two workers use other classes.
                        let len = 20 + (round % 5) as usize * 300 + worker as usize * 150;
                        let seed = |i: u64| worker << 48 | round << 24 | i;
                        let mut guard = reader.pin();
                        let live: Vec<(u64, BlobHandle)> = (0..PER_ROUND)
                            .map(|i| (i, cache.insert(&value(seed(i), len)).unwrap()))
                            .collect();
                        for (n, &(i, h)) in live.iter().enumerate() {
                            if n % 256 == 0 {
                                guard.repin();
                            }
                            assert_eq!(cache.get(h, &guard), Some(value(seed(i), len).as_slice()));
                            if i % 1_000 != 0 {
                                assert!(cache.remove(h, &guard));
                                stale.push(h);
                            }
                        }
                        for &h in stale.iter().rev().take(500) {
                            assert_eq!(cache.get(h, &guard), None, "a removed handle resolved");
                        }
                    }
                    stale.len()
                })
            })
            .collect();
        for worker in workers {
            assert!(worker.join().unwrap() > 0);
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let given = giver.join().unwrap();
        assert!(walker.join().unwrap() > 0);
        let reader = cache.reader();
        cache.flush(&reader);
        let rest = cache.release_vacant_slots();
        assert!(given + rest > 0, "the emptied rounds' runs went back");
        assert!(cache.stats().counters.returned_slots >= (given + rest) as u64);
    });
    let survivors = (ROUNDS * 2 * PER_ROUND.div_ceil(1_000)) as usize;
    assert_eq!(cache.stats().live_objects, survivors);
    assert_eq!(cache.len(), survivors);
    let reader = cache.reader();
    let mut walked = 0;
    cache.for_each(&reader.pin(), |_, _| walked += 1);
    assert_eq!(walked, survivors);
}

/// A background compactor serves a blob cache too: it brings a class's fragmentation down, and
/// gives the class's wholly vacant runs of table slots back (no `release_vacant_slots` call), so
/// that another class's blobs take them before the table grows.
#[test]
fn the_background_compactor_compacts_blobs_and_gives_vacant_slots_back() {
    use relocate_api::{start_compactor, CompactorConfig};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    const N: usize = 20_000;
    const RUN: u64 = 256;
    let cache = Arc::new(BlobCache::new().unwrap());
    let reader = cache.reader();
    let small: Vec<BlobHandle> = (0..N)
        .map(|i| cache.insert(&value(i as u64, 100)).unwrap())
        .collect();
    // The first half all goes (runs 0 to 38 wholly vacant; run 39 keeps blob 10,000); of the second
    // half every eighth stays, scattered over its slabs.
    let keeps = |i: usize| i >= N / 2 && i % 8 == 0;
    {
        let guard = reader.pin();
        for (i, &handle) in small.iter().enumerate() {
            if !keeps(i) {
                assert!(cache.remove(handle, &guard));
            }
        }
    }
    cache.flush(&reader);
    cache.flush(&reader);
    let before = cache.stats();
    assert!(before.fragmentation > 4.0, "{before:?}");
    assert_eq!(before.counters.returned_slots, 0);
    let compactor = start_compactor(
        cache.clone(),
        CompactorConfig {
            interval: Duration::from_millis(5),
            budget: Budget::Objects(500),
            target_fragmentation: 1.5,
        },
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = |s: relocate_api::CacheStats| {
        s.fragmentation <= 1.5 && s.counters.returned_slots >= 39 * RUN
    };
    while !done(cache.stats()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = cache.stats();
    assert!(done(after), "before {before:?} after {after:?}");
    assert_eq!(after.counters.returned_slots, 39 * RUN, "runs 0 to 38");
    assert!(compactor.moved_objects() > 0);
    // Another class's blobs, stored while the compactor runs, take the runs given back first: the
    // table stays at two chunks (three without them).
    let large: Vec<BlobHandle> = (0..N)
        .map(|i| cache.insert(&value(!(i as u64), 1000)).unwrap())
        .collect();
    assert_eq!(cache.stats().table_committed_bytes, (32 << 10) * 8);
    // What the compactor reports doing is what the cache counted.
    let report = compactor.stop();
    let counters = cache.stats().counters;
    assert!(report.compactions >= 1 && report.rounds >= report.compactions);
    assert_eq!(report.returned_slots, 39 * RUN, "{report:?}");
    assert_eq!(report.returned_slots, counters.returned_slots);
    assert_eq!(
        report.compacted.moved_objects as u64, counters.moved_objects,
        "{report:?}"
    );
    let guard = reader.pin();
    for (i, &handle) in small.iter().enumerate() {
        let expected = keeps(i).then(|| value(i as u64, 100));
        assert_eq!(cache.get(handle, &guard), expected.as_deref());
    }
    for (i, &handle) in large.iter().enumerate() {
        assert_eq!(
            cache.get(handle, &guard),
            Some(value(!(i as u64), 1000).as_slice())
        );
    }
}

/// A compactor that backs off (its rounds compact a dense cache and move nothing) still gives
/// vacant slot runs back while its compactions sit out, and reports those too: its report says
/// what the cache counted. (Slots given back in the rounds that sat out went unreported.)
#[test]
fn a_backed_off_compactor_reports_the_slots_it_gives_back() {
    use relocate_api::{start_compactor, CompactorConfig};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let cache = Arc::new(BlobCache::new().unwrap());
    let reader = cache.reader();
    let small: Vec<BlobHandle> = (0..40_000)
        .map(|i| cache.insert(&value(i, 100)).unwrap())
        .collect();
    let kept: Vec<BlobHandle> = (0..2_000)
        .map(|i| cache.insert(&value(i, 3000)).unwrap())
        .collect();
    // Dense, yet above a target of 0.5: every round compacts, moves nothing and frees nothing.
    let compactor = start_compactor(
        cache.clone(),
        CompactorConfig {
            interval: Duration::from_millis(5),
            budget: Budget::Objects(100),
            target_fragmentation: 0.5,
        },
    )
    .unwrap();
    // Long enough to sit out 64 intervals between compactions (after 1 + 2 + ... + 32 before).
    std::thread::sleep(Duration::from_secs(1));
    let backed_off = compactor.report();
    assert_eq!(backed_off.compacted.moved_objects, 0, "{backed_off:?}");
    assert_eq!(backed_off.returned_slots, 0, "{backed_off:?}");
    {
        let guard = reader.pin();
        for &handle in &small {
            assert!(cache.remove(handle, &guard));
        }
    }
    cache.flush(&reader);
    let deadline = Instant::now() + Duration::from_secs(20);
    while cache.stats().counters.returned_slots == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = compactor.stop();
    let counters = cache.stats().counters;
    assert!(counters.returned_slots > 0, "{counters:?}");
    assert_eq!(report.returned_slots, counters.returned_slots, "{report:?}");
    let guard = reader.pin();
    for (i, &handle) in kept.iter().enumerate() {
        assert_eq!(
            cache.get(handle, &guard),
            Some(value(i as u64, 3000).as_slice())
        );
    }
}

/// Eviction checks the guard before it reads any blob under it, as every call does, even when the
/// cache has nothing to evict.
#[test]
#[should_panic(expected = "guard from another cache")]
fn reclaim_refuses_a_guard_from_another_cache() {
    let cache = BlobCache::new().unwrap();
    let other = BlobCache::new().unwrap();
    let reader = other.reader();
    let _ = cache.reclaim_oldest(&reader.pin(), |_, _| ());
}

/// Every call that reads under a guard checks it first, even with no class made yet.
#[test]
#[should_panic(expected = "guard from another cache")]
fn compact_refuses_a_guard_from_another_cache_before_any_blob() {
    let cache = BlobCache::new().unwrap();
    let other = BlobCache::new().unwrap();
    let reader = other.reader();
    let _ = cache.compact(&reader.pin(), Budget::Unlimited);
}

/// A budget is one for the whole cache, not one per size class: a call moves at most what it
/// allows (it used to apply to each class in turn: `Objects(10)` moved 120 blobs here), and calls
/// with small budgets compact every class in the end, as far as one unlimited call does.
#[test]
fn one_budget_serves_every_class() {
    let run = |budgeted: Option<Budget>| {
        let cache = BlobCache::new().unwrap();
        let reader = cache.reader();
        let mut kept = Vec::new();
        {
            let guard = reader.pin();
            let mut gone = Vec::new();
            for i in 0..7_200u64 {
                // 24 classes, from 1 KiB to about 8 KiB: several slabs each.
                let v = value(i, 1024 + (i % 24) as usize * 300);
                let h = cache.insert(&v).unwrap();
                if i % 10 == 3 {
                    kept.push((h, v));
                } else {
                    gone.push(h);
                }
            }
            assert_eq!(cache.remove_many(&gone, &guard), gone.len());
        }
        cache.flush(&reader);
        let mut calls = 0;
        loop {
            let guard = reader.pin();
            let report = match budgeted {
                None => cache.compact(&guard, Budget::Unlimited).unwrap(),
                Some(budget) => {
                    let report = cache.compact(&guard, budget).unwrap();
                    match budget {
                        Budget::Objects(n) => assert!(report.moved_objects <= n, "{report:?}"),
                        // The last move may cross the bound (blocks here are 8 KiB at most).
                        Budget::Bytes(n) => {
                            assert!(report.moved_bytes < n + (8 << 10), "{report:?}")
                        }
                        Budget::Unlimited => unreachable!(),
                    }
                    report
                }
            };
            drop(guard);
            cache.flush(&reader);
            calls += 1;
            if report.moved_objects == 0 && !report.budget_exhausted {
                break;
            }
            assert!(calls < 100_000, "compaction never ends");
        }
        let guard = reader.pin();
        for (h, v) in &kept {
            assert_eq!(cache.get(*h, &guard), Some(&v[..]));
        }
        (cache.stats().slabs, calls)
    };
    let (unlimited_slabs, _) = run(None);
    for budget in [Budget::Objects(10), Budget::Bytes(4096)] {
        let (slabs, calls) = run(Some(budget));
        assert!(calls > 40, "{budget:?}: {calls} calls");
        assert_eq!(slabs, unlimited_slabs, "{budget:?} after {calls} calls");
    }
}

/// Calls with a small budget take the classes in turn: one that always has a budget's worth to
/// move (here a class whose blobs are replaced all the time) does not keep the others from being
/// compacted. (When each call resumed at the class whose pass ran out, a review's churning class
/// took every call's budget, and none of the other class's blobs ever moved.)
#[test]
fn a_churning_class_does_not_starve_the_others_of_budget() {
    let cache = BlobCache::new().unwrap();
    let reader = cache.reader();
    let (mut churning, mut quiet) = (Vec::new(), Vec::new());
    {
        let guard = reader.pin();
        let mut gone = Vec::new();
        for i in 0..3_000u64 {
            let a = cache.insert(&value(i, 1000)).unwrap();
            let b = cache.insert(&value(i, 3000)).unwrap();
            if i % 10 == 0 {
                churning.push((a, i));
                quiet.push((b, i));
            } else {
                gone.extend([a, b]);
            }
        }
        assert_eq!(cache.remove_many(&gone, &guard), gone.len());
    }
    cache.flush(&reader);
    let addresses = |blobs: &[(BlobHandle, u64)], len: usize| -> Vec<usize> {
        let guard = reader.pin();
        (blobs.iter())
            .map(|&(h, seed)| {
                let blob = cache.get(h, &guard).unwrap();
                assert_eq!(blob, &value(seed, len)[..]);
                blob.as_ptr() as usize
            })
            .collect()
    };
    let before = addresses(&quiet, 3000);
    let mut seed = 1u64;
    for round in 0..100u64 {
        let guard = reader.pin();
        let report = cache.compact(&guard, Budget::Objects(20)).unwrap();
        assert!(report.moved_objects <= 20, "{report:?}");
        let mut gone = Vec::new();
        for k in 0..40 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = seed as usize % churning.len();
            gone.push(churning[at].0);
            let fresh = 10_000 + round * 100 + k;
            churning[at] = (cache.insert(&value(fresh, 1000)).unwrap(), fresh);
        }
        assert_eq!(cache.remove_many(&gone, &guard), gone.len());
        drop(guard);
        cache.flush(&reader);
    }
    let after = addresses(&quiet, 3000);
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    assert!(
        moved > 0,
        "none of the quiet class's blobs moved in 100 calls"
    );
    addresses(&churning, 1000);
}
