//! Reclaims in a row, without a flush between them, each take the next arena. In a file of its
//! own: a cache's first 2 MiB share arenas with the other small caches of the process (see
//! `Inner::arena_group`), so a test that counts the objects of its arenas must be alone in it.

use relocate_api::{Handle, RelocCache};

/// 64-byte objects in a movable arena: 32 slabs of 64 KiB, 1,024 objects each.
const PER_ARENA: usize = 32 * 1024;

/// Reclaims in a row, without a flush between them (as a cache held to a budget makes them), each
/// take the next arena: the arenas whose evicted objects' blocks still wait for the epoch count
/// as full until they come back, and used to be picked again (the second reclaim found nothing).
#[test]
fn reclaims_in_a_row_take_the_next_arena_without_a_flush() {
    let cache: RelocCache<[u64; 8]> = RelocCache::new().unwrap();
    let reader = cache.reader();
    let handles: Vec<Handle<[u64; 8]>> = (0..3 * PER_ARENA + 1)
        .map(|i| cache.insert([i as u64; 8]).unwrap())
        .collect();
    let guard = reader.pin();
    for turn in 0..3 {
        let report = cache
            .reclaim_oldest(&guard, |h, object| {
                let index = object[0] as usize;
                assert_eq!(handles[index], h);
                // Arena by arena, first opened first: the objects inserted `turn`th.
                assert_eq!(index / PER_ARENA, turn, "object {index} in reclaim {turn}");
            })
            .unwrap();
        assert_eq!(report.evicted, PER_ARENA, "reclaim {turn}");
    }
    // The last object alone, in the fourth arena; then nothing.
    assert_eq!(cache.reclaim(&guard, |_, _| ()).unwrap().evicted, 1);
    assert_eq!(cache.reclaim(&guard, |_, _| ()).unwrap().evicted, 0);
    assert!(cache.is_empty());
    drop(guard);
    cache.flush(&reader);
    // Every evicted block came back: the arenas are for reclaims to pick again, and the slabs gone.
    assert_eq!(cache.stats().slabs, 0);
    let again = cache.insert([7; 8]).unwrap();
    let guard = reader.pin();
    assert_eq!(cache.reclaim_oldest(&guard, |_, _| ()).unwrap().evicted, 1);
    assert_eq!(cache.get(again, &guard), None);
}
