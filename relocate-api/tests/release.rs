//! Giving memory back on alloc-core's decommit delay (`release_aged_arenas`, what the background
//! compactor does every round) against at once (`release_empty_arenas`). This file holds one test so
//! that it runs in a process of its own: the arenas are process-wide, and another test's frees would
//! change what either call finds to give back.

use relocate_api::{Handle, RelocCache};
use std::time::{Duration, Instant};

/// alloc-core's decommit delay (`DECOMMIT_DELAY_MS`), and a margin for the wait.
const DELAY: Duration = Duration::from_millis(50);
const ARENA_BYTES: usize = 2 << 20;

/// Fills about `arenas` movable arenas with 64-byte objects, then removes them all; returns the
/// moment just before their memory was freed (the epoch passed and the slabs went back).
fn fill_and_empty(cache: &RelocCache<[u64; 8]>, arenas: usize) -> Instant {
    let reader = cache.reader();
    let handles: Vec<Handle<[u64; 8]>> = (0..arenas * ARENA_BYTES / 64)
        .map(|i| cache.insert([i as u64; 8]).unwrap())
        .collect();
    let guard = reader.pin();
    for handle in handles {
        assert!(cache.remove(handle, &guard));
    }
    drop(guard);
    let freed = Instant::now();
    cache.flush(&reader);
    assert_eq!(cache.stats().slabs, 0);
    freed
}

#[test]
fn aged_release_waits_for_the_delay_and_then_gives_as_much_back() {
    let cache: RelocCache<[u64; 8]> = RelocCache::new().unwrap();

    // Freed just now: nothing is old enough (checked only if this thread really was quick: a
    // machine that stalled it past the delay has aged the arenas legitimately).
    let freed = fill_and_empty(&cache, 3);
    let early = cache.release_aged_arenas();
    if freed.elapsed() < DELAY {
        assert_eq!(early, 0, "released before the delay");
    }

    // Once the delay has passed, the same arenas go back: at least the 3 × 2 MiB of data.
    std::thread::sleep(DELAY * 2);
    let aged = early + cache.release_aged_arenas();
    assert!(
        aged >= 3 * ARENA_BYTES,
        "aged release gave back {aged} bytes"
    );
    assert_eq!(
        cache.release_aged_arenas(),
        0,
        "nothing is left to give back"
    );

    // `release_empty_arenas` does not wait; both are counted in the statistics.
    let freed = fill_and_empty(&cache, 3);
    let at_once = cache.release_empty_arenas();
    assert!(
        at_once >= 3 * ARENA_BYTES,
        "forced release gave back {at_once} bytes ({:?} after the free)",
        freed.elapsed()
    );
    assert_eq!(
        cache.stats().counters.released_bytes,
        (aged + at_once) as u64
    );
}
