//! Which arena a reclaim empties: `reclaim` the one with the fewest live objects (which may be the
//! arena the cache just opened for its newest objects), `reclaim_oldest` the one opened earliest
//! (mapped, or given a slab again after it was wholly free).
//! This file holds one test so that it runs in a process of its own: the arenas are process-wide,
//! and the test counts on its cache filling them in order.

use relocate_api::{BlobCache, BlobHandle, Handle, RelocCache};
use std::collections::HashSet;

/// 64-byte objects in a movable arena: 32 slabs of 64 KiB, 1,024 objects each.
const PER_ARENA: usize = 32 * 1024;

/// A reclaim that reports each handle it evicts to its argument and returns how many it evicted.
type Reclaim<'a> = &'a dyn Fn(&mut dyn FnMut(Handle<[u64; 8]>)) -> usize;

#[test]
fn reclaim_takes_the_sparsest_arena_and_reclaim_oldest_the_first_opened() {
    let cache: RelocCache<[u64; 8]> = RelocCache::new().unwrap();
    assert_eq!(cache.block_bytes(), 64);
    let reader = cache.reader();
    // Arenas fill one after another: A (objects 0..PER_ARENA), B (the next PER_ARENA), C (the
    // last object alone). Then half of B goes: A holds PER_ARENA, B PER_ARENA / 2, C 1.
    let handles: Vec<Handle<[u64; 8]>> = (0..2 * PER_ARENA + 1)
        .map(|i| cache.insert([i as u64; 8]).unwrap())
        .collect();
    let arena_of = |h: Handle<[u64; 8]>| {
        let guard = reader.pin();
        cache
            .get(h, &guard)
            .map(|o| o as *const [u64; 8] as usize >> 21)
    };
    let (a, b, c) = (
        arena_of(handles[0]),
        arena_of(handles[PER_ARENA]),
        arena_of(handles[2 * PER_ARENA]),
    );
    assert!(a != b && b != c && a != c, "{a:?} {b:?} {c:?}");
    {
        let guard = reader.pin();
        for h in &handles[PER_ARENA..PER_ARENA + PER_ARENA / 2] {
            assert!(cache.remove(*h, &guard));
        }
    }
    cache.flush(&reader);
    let evicted_by = |reclaim: Reclaim| {
        let mut evicted = HashSet::new();
        let n = reclaim(&mut |h| assert!(evicted.insert(h)));
        assert_eq!(n, evicted.len());
        cache.flush(&reader);
        evicted
    };
    // Compared without printing the sets: a failure names the sizes and the first stray handle.
    let check = |evicted: HashSet<Handle<[u64; 8]>>, range: std::ops::Range<usize>| {
        let expected: HashSet<_> = handles[range].iter().copied().collect();
        let stray = evicted.symmetric_difference(&expected).next().copied();
        assert!(
            stray.is_none(),
            "{} evicted, {} expected; {stray:?} in one only",
            evicted.len(),
            expected.len()
        );
    };

    // First in, first out: A, the full one.
    let evicted = evicted_by(&|record| {
        let guard = reader.pin();
        let report = cache.reclaim_oldest(&guard, |h, object| {
            assert_eq!(object[0], object[1]);
            record(h);
        });
        report.unwrap().evicted
    });
    check(evicted, 0..PER_ARENA);

    // The rule: the fewest live objects, C's one, the newest.
    let evicted = evicted_by(&|record| {
        let guard = reader.pin();
        cache.reclaim(&guard, |h, _| record(h)).unwrap().evicted
    });
    check(evicted, 2 * PER_ARENA..2 * PER_ARENA + 1);

    // Then B, whichever way.
    let evicted = evicted_by(&|record| {
        let guard = reader.pin();
        cache
            .reclaim_oldest(&guard, |h, _| record(h))
            .unwrap()
            .evicted
    });
    check(evicted, PER_ARENA + PER_ARENA / 2..2 * PER_ARENA);
    assert_eq!(cache.len(), 0);
    let guard = reader.pin();
    let nothing = cache.reclaim_oldest(&guard, |_, _| unreachable!()).unwrap();
    assert_eq!(nothing.evicted, 0);
    assert!(handles.iter().all(|h| cache.get(*h, &guard).is_none()));
    drop(guard);
    cache.release_empty_arenas();

    // An arena that empties and takes new objects again counts as opened then: D empties, E stays
    // full, the next objects go into D (E has no room), and E is now the oldest.
    let handles: Vec<Handle<[u64; 8]>> = (0..2 * PER_ARENA)
        .map(|i| cache.insert([i as u64; 8]).unwrap())
        .collect();
    {
        let guard = reader.pin();
        for h in &handles[..PER_ARENA] {
            assert!(cache.remove(*h, &guard));
        }
    }
    cache.flush(&reader);
    let newest: Vec<Handle<[u64; 8]>> = (0..PER_ARENA / 2)
        .map(|i| cache.insert([i as u64; 8]).unwrap())
        .collect();
    let guard = reader.pin();
    let mut evicted = HashSet::new();
    let report = cache.reclaim_oldest(&guard, |h, _| assert!(evicted.insert(h)));
    assert_eq!(report.unwrap().evicted, PER_ARENA);
    assert!(handles[PER_ARENA..].iter().all(|h| evicted.contains(h)));
    assert!(newest.iter().all(|h| cache.get(*h, &guard).is_some()));
    drop(guard);
    drop(reader);
    drop(cache);

    // Blobs: the first one stored goes with the oldest arena, the last one stays.
    let blobs = BlobCache::new().unwrap();
    let reader = blobs.reader();
    let stored: Vec<BlobHandle> = (0..3 * PER_ARENA / 2)
        .map(|i| blobs.insert(&(i as u64).to_le_bytes().repeat(7)).unwrap())
        .collect();
    let guard = reader.pin();
    let mut evicted = HashSet::new();
    let n = blobs
        .reclaim_oldest(&guard, |h, bytes| {
            assert_eq!(bytes.len(), 56);
            evicted.insert(h);
        })
        .unwrap()
        .evicted;
    assert!(
        n == evicted.len() && n < stored.len(),
        "{n} of {}",
        stored.len()
    );
    assert!(evicted.contains(&stored[0]));
    let last = *stored.last().unwrap();
    assert!(!evicted.contains(&last) && blobs.get(last, &guard).is_some());
    assert!(blobs.get(stored[0], &guard).is_none());
}
