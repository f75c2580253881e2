//! Giving memory back on alloc-core's decommit delay (`release_aged_arenas`, what the background
//! compactor does every round) against at once (`release_empty_arenas`). This file holds one test so
//! that it runs in a process of its own, without alloc-core as its global allocator: the arenas are
//! process-wide, and nothing but this test may free movable memory (alloc-core's own maintenance,
//! which runs when a slab goes back, gives back aged arenas too).

use relocate_api::{Handle, RelocCache};
use std::time::{Duration, Instant};

/// alloc-core's decommit delay (`DECOMMIT_DELAY_MS`).
const DELAY: Duration = Duration::from_millis(50);
const ARENA_BYTES: usize = 2 << 20;

/// Bytes of movable arenas mapped (data and metadata pieces), as alloc-core counts them.
fn mapped() -> usize {
    alloc_core::stats().mapped_bytes
}

/// Fills about `arenas` movable arenas with 64-byte objects, then removes them all and flushes.
/// Returns the bytes mapped when they were full, and the moment the removals began: no block was
/// freed before it, so until the delay has passed since then, no arena it emptied can have aged
/// (and neither alloc-core's own maintenance, which runs as slabs go back, nor an aged release can
/// have given any back).
fn fill_and_empty(cache: &RelocCache<[u64; 8]>, arenas: usize) -> (usize, Instant) {
    let reader = cache.reader();
    let handles: Vec<Handle<[u64; 8]>> = (0..arenas * ARENA_BYTES / 64)
        .map(|i| cache.insert([i as u64; 8]).unwrap())
        .collect();
    let full = mapped();
    let began = Instant::now();
    let guard = reader.pin();
    for handle in handles {
        assert!(cache.remove(handle, &guard));
    }
    drop(guard);
    cache.flush(&reader);
    assert_eq!(cache.stats().slabs, 0);
    (full, began)
}

/// Whether less than the delay has passed since `began`, with a margin: alloc-core's clock is
/// coarse (a tick of a few ms).
fn within_delay(began: Instant) -> bool {
    began.elapsed() < DELAY / 2
}

#[test]
fn aged_release_waits_for_the_delay_and_then_gives_as_much_back() {
    let cache: RelocCache<[u64; 8]> = RelocCache::new().unwrap();

    // Freed just now: nothing is old enough. (The amounts are checked only if this thread was
    // quick: a machine that stalled it past the delay has aged the arenas legitimately.)
    let (full, began) = fill_and_empty(&cache, 3);
    let early = cache.release_aged_arenas();
    let quick = within_delay(began);
    if quick {
        assert_eq!(early, 0, "released before the delay");
    }

    // Once the delay has passed, the emptied arenas go back (all by this call if it was quick).
    std::thread::sleep(DELAY * 2);
    let aged = early + cache.release_aged_arenas();
    let unmapped = full - mapped();
    assert!(unmapped >= 3 * ARENA_BYTES, "{unmapped} bytes unmapped");
    if quick {
        assert!(
            aged >= 3 * ARENA_BYTES,
            "aged release gave back {aged} bytes"
        );
    }
    assert_eq!(
        cache.release_aged_arenas(),
        0,
        "nothing is left to give back"
    );

    // `release_empty_arenas` does not wait; both are counted in the statistics.
    let (full, began) = fill_and_empty(&cache, 3);
    let at_once = cache.release_empty_arenas();
    let unmapped = full - mapped();
    assert!(unmapped >= 3 * ARENA_BYTES, "{unmapped} bytes unmapped");
    if within_delay(began) {
        assert!(
            at_once >= 3 * ARENA_BYTES,
            "forced release gave back {at_once}"
        );
    }
    assert_eq!(
        cache.stats().counters.released_bytes,
        (aged + at_once) as u64
    );
}
