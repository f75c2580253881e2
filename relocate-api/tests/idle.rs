//! Memory comes back when the threads that removed objects go idle, and when a cache empties.
//!
//! - `a_thread_that_removes_and_idles_holds_nothing_back`: a thread removes every object under one
//!   guard, drops the guard and idles with its reader kept (one reader per thread, as the docs
//!   advise); another thread's `flush` then drops every value and frees every block. (A guard flushes
//!   its thread's bag of deferred functions when it is dropped once the thread has handed 8 batches
//!   to the epoch since its last flush; before, up to about 2,000 values and their slabs waited
//!   there for the idle thread.)
//! - `an_emptied_cache_goes_back_under_the_background_compactor`: every object of a cache is removed
//!   while a background compactor runs with a target of 1.2; its rounds give back every slab. (An
//!   empty cache that still holds slabs has infinite fragmentation; it had 1.0, below every target,
//!   so the rounds stopped before the last blocks came back.)
//! - `the_background_compactor_backs_off_when_its_rounds_do_nothing`: when an idle thread holds the
//!   last removed blocks back, rounds can do nothing; the compactor sits out a growing number of
//!   intervals between them (186 rounds in 200 intervals without that, here at most 30).

use relocate_api::{start_compactor, Budget, CompactorConfig, Handle, RelocCache, Relocatable};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Counts itself in `LIVE`; 48 bytes of payload, as a small object would carry.
struct Counted(#[allow(dead_code)] [u64; 6]);

impl Counted {
    fn new(i: u64) -> Self {
        LIVE.fetch_add(1, Ordering::Relaxed);
        Self([i; 6])
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

// SAFETY: a plain value without interior mutability.
unsafe impl Relocatable for Counted {}

/// On a new thread of `scope`, removes every object of `handles` under one guard, then idles with its
/// reader kept until the returned sender sends (or is dropped); returns once the removals are done.
fn remove_all_then_idle<'s, T: Send + Sync + 'static>(
    scope: &'s std::thread::Scope<'s, '_>,
    cache: &'s RelocCache<T>,
    handles: &'s [Handle<T>],
) -> mpsc::Sender<()> {
    let (removed_tx, removed_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    scope.spawn(move || {
        let reader = cache.reader();
        let guard = reader.pin();
        for &h in handles {
            assert!(cache.remove(h, &guard));
        }
        drop(guard);
        removed_tx.send(()).unwrap();
        let _ = done_rx.recv();
        drop(reader);
    });
    removed_rx.recv().unwrap();
    done_tx
}

#[test]
fn a_thread_that_removes_and_idles_holds_nothing_back() {
    let cache: RelocCache<Counted> = RelocCache::new().unwrap();
    let handles: Vec<_> = (0..10_000)
        .map(|i| cache.insert(Counted::new(i)).ok().unwrap())
        .collect();
    std::thread::scope(|scope| {
        let done_tx = remove_all_then_idle(scope, &cache, &handles);
        let reader = cache.reader();
        cache.flush(&reader);
        let (live, slabs) = (LIVE.load(Ordering::Relaxed), cache.stats().slabs);
        done_tx.send(()).unwrap();
        assert_eq!(live, 0, "values not dropped while the remover idles");
        assert_eq!(slabs, 0, "slabs kept while the remover idles");
    });
}

#[test]
fn an_emptied_cache_goes_back_under_the_background_compactor() {
    let cache: Arc<RelocCache<[u64; 8]>> = Arc::new(RelocCache::new().unwrap());
    let handles: Vec<_> = (0..100_000u64)
        .map(|i| cache.insert([i; 8]).unwrap())
        .collect();
    let compactor = start_compactor(
        cache.clone(),
        CompactorConfig {
            interval: Duration::from_millis(5),
            budget: Budget::Unlimited,
            target_fragmentation: 1.2,
        },
    )
    .unwrap();
    let reader = cache.reader();
    for part in handles.chunks(7_000) {
        let guard = reader.pin();
        for &h in part {
            assert!(cache.remove(h, &guard));
        }
    }
    // The reader stays: this thread idles as far as the epoch knows.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.stats().slabs > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Read while the compactor still runs: stopping it drops its reader, which lets the epoch go on.
    let stats = cache.stats();
    let report = compactor.stop();
    assert_eq!(stats.live_objects, 0);
    assert_eq!(stats.slabs, 0, "{stats:?} after {report:?}");
    assert_eq!(stats.fragmentation, 1.0);
    drop(reader);
}

/// The last objects of a cache removed by a thread that then idles hold their slab back (fewer
/// batches than make its guard flush): the compactor's rounds can do nothing about it, and sit out
/// a growing number of intervals instead of compacting and flushing at every one.
#[test]
fn the_background_compactor_backs_off_when_its_rounds_do_nothing() {
    let cache: Arc<RelocCache<[u64; 8]>> = Arc::new(RelocCache::new().unwrap());
    let handles: Vec<_> = (0..100u64).map(|i| cache.insert([i; 8]).unwrap()).collect();
    let compactor = start_compactor(
        cache.clone(),
        CompactorConfig {
            interval: Duration::from_millis(2),
            budget: Budget::Unlimited,
            target_fragmentation: 1.2,
        },
    )
    .unwrap();
    std::thread::scope(|scope| {
        let done_tx = remove_all_then_idle(scope, &cache, &handles);
        let began = Instant::now();
        std::thread::sleep(Duration::from_millis(400));
        let intervals = began.elapsed().as_millis() / 2;
        let report = compactor.report();
        done_tx.send(()).unwrap();
        // About 200 intervals: 1 + 2 + 4 + ... + 64 skipped after the first fruitless rounds. The
        // rounds go on meanwhile, and the compactor did try (a compactor that never runs would
        // pass the bound above).
        assert!(
            report.compactions >= 2 && report.rounds >= 20,
            "{report:?} in about {intervals} intervals"
        );
        assert!(
            report.compactions <= 30,
            "{} compactions in about {intervals} intervals",
            report.compactions
        );
    });
    compactor.stop();
}
