//! Caches that grow side by side keep, past their first 2 MiB, to arenas of their own: a
//! `reclaim_oldest` of one evicts that cache's oldest objects and nothing newer, and once the
//! cache's share of the arenas it began in (shared by small caches) is gone, each reclaim evicts a
//! whole arena of it and frees the 2 MiB. When caches shared every arena, each arena held slabs of
//! all of them: a reclaim evicted a third of an arena (with three caches), the arena stayed mapped
//! for the others, and the slabs they made in its freed room were the next "oldest" to go.
//! One test in a process of its own: it counts the arenas given back, which are process-wide.

use relocate_api::{Handle, RelocCache};

/// 64-byte objects in a movable arena: 32 slabs of 64 KiB, 1,024 objects each.
const PER_ARENA: usize = 32 * 1024;

#[test]
fn reclaim_oldest_evicts_a_whole_arena_of_the_oldest_beside_other_caches() {
    const CACHES: usize = 3;
    /// Objects each cache gains in a round: more than an arena.
    const PER_ROUND: u64 = 40_000;
    let caches: Vec<RelocCache<[u64; 8]>> =
        (0..CACHES).map(|_| RelocCache::new().unwrap()).collect();
    assert_eq!(caches[0].block_bytes(), 64);
    // Each cache's live objects, by sequence number (the value), oldest first.
    let mut live: Vec<Vec<(u64, Handle<[u64; 8]>)>> = vec![Vec::new(); CACHES];
    let mut seq = 0;
    for round in 0..6 {
        for _ in 0..PER_ROUND {
            for (cache, live) in caches.iter().zip(&mut live) {
                live.push((seq, cache.insert([seq; 8]).unwrap()));
            }
            seq += 1;
        }
        for (c, (cache, live)) in caches.iter().zip(&mut live).enumerate() {
            let reader = cache.reader();
            let mut evicted = Vec::new();
            {
                let guard = reader.pin();
                cache
                    .reclaim_oldest(&guard, |_, object| evicted.push(object[0]))
                    .unwrap();
            }
            cache.flush(&reader);
            evicted.sort_unstable();
            let oldest: Vec<u64> = live.iter().take(evicted.len()).map(|&(s, _)| s).collect();
            assert_eq!(
                evicted, oldest,
                "round {round}, cache {c}: its oldest objects"
            );
            // Its first arena's worth of slabs went, by turns with the others', into three shared
            // arenas, one evicted by each reclaim; from then on, whole arenas of its own.
            let whole = round >= CACHES;
            if whole {
                assert_eq!(
                    evicted.len(),
                    PER_ARENA,
                    "round {round}, cache {c}: a whole arena of this cache's objects"
                );
            } else {
                assert!(
                    !evicted.is_empty() && evicted.len() < PER_ARENA,
                    "round {round}, cache {c}: its share of a shared arena ({})",
                    evicted.len()
                );
            }
            live.drain(..evicted.len());
            let guard = reader.pin();
            assert!(live
                .iter()
                .all(|&(s, h)| cache.get(h, &guard) == Some(&[s; 8])));
            drop(guard);
            let released = cache.release_empty_arenas();
            // A shared arena goes back once the last cache's share of it is evicted.
            if whole || c == CACHES - 1 {
                assert!(
                    released >= 2 << 20,
                    "round {round}, cache {c}: the evicted arena goes back whole ({released} bytes)"
                );
            }
        }
    }
}
