//! Compaction past objects that stay where they are:
//!
//! - Objects that refuse to move (or whose callbacks panic) spend none of a budget, and a slab that
//!   keeps one is left at once: a budgeted compaction gets past the sparsest slabs when they cannot
//!   empty, to the slabs behind them, call after call (it used to spend every call's budget on the
//!   same refusals, and never moved anything).
//! - That holds too for a relocator whose `batch` catches a panic and runs the moves again: the
//!   abandoned moves are given back before the moves go on.
//! - A callback's panic whose payload panics when dropped is still counted, not propagated: the pass
//!   ends normally and nothing is held back (the payload's drop used to unwind out of the pass,
//!   leaving its old copies unretired and its slabs draining for good).
//! - Fragmentation is measured against the live objects' blocks, so a dense cache of small objects is
//!   at 1.0 (a cache of `u64`, in 16-byte blocks, was at 2.0, above every usual target).

use relocate_api::{Budget, FnRelocator, Handle, Isolation, RelocCache, Relocator};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

type IsolateFn = fn(&u64, Handle<u64>) -> Isolation;
type MigrateFn = fn(*const u64, *mut u64, Handle<u64>);
type Cache = RelocCache<u64, FnRelocator<IsolateFn, MigrateFn>>;

fn copy(old: *const u64, new: *mut u64, _: Handle<u64>) {
    // SAFETY: the cache passes a live value and room for one.
    unsafe { new.write(*old) };
}

fn cache_with(isolate: IsolateFn, migrate: MigrateFn) -> Cache {
    // SAFETY: every `migrate` given here leaves a copy of the value at `new`, or panics first.
    RelocCache::with_relocator(unsafe { FnRelocator::new(isolate, migrate) }).unwrap()
}

/// Blocks per slab of a `u64` cache (16-byte blocks, one 64 KiB unit).
const PER_SLAB: u64 = 4096;
/// Values below this refuse to move: those of the first two slabs.
const BUSY_BELOW: u64 = 2 * PER_SLAB;

fn refuse_the_first_slabs(&value: &u64, _: Handle<u64>) -> Isolation {
    if value < BUSY_BELOW {
        Isolation::Busy
    } else {
        Isolation::Ready
    }
}

/// Eight slabs of values in order: the first two kept sparsest (one value in 16, all refusing to
/// move), the next four a quarter full, the last two full. Returns the handles of the values kept.
fn layered(cache: &Cache) -> Vec<(u64, Handle<u64>)> {
    let reader = cache.reader();
    let all: Vec<(u64, Handle<u64>)> = (0..8 * PER_SLAB)
        .map(|v| (v, cache.insert(v).unwrap()))
        .collect();
    let keeps = |v: u64| match v / PER_SLAB {
        0 | 1 => v % 16 == 0,
        2..=5 => v % 4 == 0,
        _ => true,
    };
    let guard = reader.pin();
    for &(v, h) in &all {
        if !keeps(v) {
            assert!(cache.remove(h, &guard));
        }
    }
    drop(guard);
    cache.flush(&reader);
    all.into_iter().filter(|&(v, _)| keeps(v)).collect()
}

#[test]
fn refusing_objects_spend_no_budget() {
    let cache = cache_with(refuse_the_first_slabs, copy);
    let kept = layered(&cache);
    let reader = cache.reader();
    let before = cache.stats();
    assert_eq!(before.slabs, 8, "{before:?}");
    let (mut moved, mut calls) = (0, 0);
    // 3,328 live objects need 4 slabs: the two full ones and two of the quarter-full ones stay, and
    // the other two quarter-full ones (2,048 objects) can empty. The refusing slabs cannot.
    while moved < 2 * PER_SLAB as usize / 4 && calls < 40 {
        let report = cache.compact(&reader.pin(), Budget::Objects(100)).unwrap();
        assert!(report.moved_objects <= 100, "{report:?}");
        assert!(
            report.refused <= 2,
            "one refusal ends its slab's moves: {report:?}"
        );
        moved += report.moved_objects;
        calls += 1;
        cache.flush(&reader);
    }
    assert_eq!(moved, 2048, "after {calls} calls");
    let after = cache.stats();
    assert_eq!(after.slabs, 6, "{after:?}");
    let guard = reader.pin();
    for &(v, h) in &kept {
        assert_eq!(cache.get(h, &guard), Some(&v));
    }
}

/// Moves bytewise, but `migrate` panics on its first three calls, and `batch` catches each panic
/// and runs the moves again (which `Relocator::batch` allows).
struct PanicsThenRerun(AtomicUsize);

// SAFETY: `migrate` leaves a copy of the value at `new`, or panics before it writes anything.
unsafe impl Relocator<u64> for PanicsThenRerun {
    fn batch(&self, moves: &mut dyn FnMut()) {
        while catch_unwind(AssertUnwindSafe(&mut *moves)).is_err() {}
    }

    unsafe fn migrate(&self, old: *const u64, new: *mut u64, handle: Handle<u64>) {
        if self.0.fetch_add(1, Ordering::Relaxed) < 3 {
            panic!("test: one of the first three moves");
        }
        copy(old, new, handle);
    }
}

#[test]
fn moves_abandoned_inside_a_rerunning_batch_spend_no_budget() {
    let cache = RelocCache::with_relocator(PanicsThenRerun(AtomicUsize::new(0))).unwrap();
    let handles: Vec<_> = (0..1000u64).map(|v| cache.insert(v).unwrap()).collect();
    let reader = cache.reader();
    let report = cache
        .evacuate_sparsest(&reader.pin(), 1, Budget::Objects(3))
        .unwrap();
    assert_eq!((report.panics, report.moved_objects), (3, 3), "{report:?}");
    let guard = reader.pin();
    for (v, &h) in handles.iter().enumerate() {
        assert_eq!(cache.get(h, &guard), Some(&(v as u64)));
    }
}

/// A panic payload whose drop panics.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("test: a panic payload whose drop panics");
    }
}

static MIGRATIONS: AtomicUsize = AtomicUsize::new(0);

fn ready(_: &u64, _: Handle<u64>) -> Isolation {
    Isolation::Ready
}

fn copy_but_the_tenth_throws_a_bomb(old: *const u64, new: *mut u64, handle: Handle<u64>) {
    if MIGRATIONS.fetch_add(1, Ordering::Relaxed) == 9 {
        std::panic::panic_any(Bomb);
    }
    copy(old, new, handle);
}

#[test]
fn a_panic_payload_whose_drop_panics_is_still_only_counted() {
    let cache = cache_with(ready, copy_but_the_tenth_throws_a_bomb);
    let kept = layered(&cache);
    let reader = cache.reader();
    let report = cache.compact(&reader.pin(), Budget::Unlimited).unwrap();
    assert_eq!(report.panics, 1, "{report:?}");
    assert!(report.moved_objects > 1000, "{report:?}");
    let guard = reader.pin();
    for &(v, h) in &kept {
        assert_eq!(cache.get(h, &guard), Some(&v));
    }
    // Everything comes back: no old copy or draining slab was left behind by the panic.
    for &(_, h) in &kept {
        assert!(cache.remove(h, &guard));
    }
    drop(guard);
    cache.flush(&reader);
    let emptied = cache.stats();
    assert_eq!((emptied.live_objects, emptied.slabs), (0, 0), "{emptied:?}");
}

#[test]
fn a_dense_cache_of_small_objects_is_not_fragmented() {
    let cache: RelocCache<u64> = RelocCache::new().unwrap();
    for v in 0..8 * PER_SLAB {
        cache.insert(v).unwrap();
    }
    let stats = cache.stats();
    assert_eq!(stats.live_bytes, 8 * 8 * PER_SLAB as usize, "object bytes");
    assert_eq!(stats.resident_bytes, 8 * 16 * PER_SLAB as usize);
    assert_eq!(stats.fragmentation, 1.0, "{stats:?}");
}
