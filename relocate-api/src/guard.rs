//! Readers and guards: a thread's registration with a cache's epoch collector, and the pins that
//! keep what it reads valid.
//!
//! A [`Guard`] carries its collector's identity, so a cache checks with one comparison that a guard
//! protects its own memory. Blocks removed under a guard are gathered in an open batch and handed to
//! the epoch when the guard is dropped, re-pinned or flushed; a dropped guard also flushes its
//! thread's bag of deferred functions once enough have gathered ([`FLUSH_AFTER`]), so a thread that
//! removes and then idles holds little back from other threads' flushes.

use crate::retire::{OpenBatch, Retired};
use crossbeam_epoch::LocalHandle;
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A thread's registration with a cache's epoch collector. Keep one per thread and pin it around
/// reads: `let guard = reader.pin();`.
pub struct Reader<'c> {
    local: LocalHandle,
    /// The collector's identity (see [`Guard`]).
    epoch: usize,
    _cache: PhantomData<&'c ()>,
}

impl<'c> Reader<'c> {
    pub(crate) fn new(local: LocalHandle, epoch: usize) -> Self {
        Self {
            local,
            epoch,
            _cache: PhantomData,
        }
    }

    /// Pins the current epoch: objects read under the guard stay valid until it is dropped. The guard
    /// lives no longer than the cache (it may outlive the reader): removed objects it holds back are
    /// dropped, and their blocks freed, once it is gone, which must be before the cache's memory is.
    pub fn pin(&self) -> Guard<'c> {
        Guard {
            inner: self.local.pin(),
            epoch: self.epoch,
            batch: OpenBatch::default(),
            deferred: Cell::new(0),
            _cache: PhantomData,
        }
    }
}

/// An epoch guard of one cache's collector (a [`crate::BlobCache`]'s classes share one), made by
/// [`Reader::pin`]: objects read under it stay valid, unchanged, until it is dropped or re-pinned.
///
/// It carries its collector's identity, a number no other collector has, so a cache checks that a
/// guard protects its own memory with one comparison; a guard of another cache is refused with a
/// panic (it would not hold back that cache's reclamation).
///
/// Objects removed (and old copies replaced) under a guard are handed to the epoch in batches: when
/// the guard is dropped, re-pinned or flushed, or every `BATCH_BLOCKS` blocks (of any of the byte-blob
/// classes that share the guard's collector). A guard lives no longer than its cache,
/// so every batch is handed over while the cache's memory is there:
///
/// ```compile_fail,E0505
/// let cache: relocate_api::RelocCache<String> = relocate_api::RelocCache::new().unwrap();
/// let guard = cache.reader().pin();
/// drop(cache); // error: the guard borrows the cache
/// drop(guard);
/// ```
pub struct Guard<'c> {
    inner: crossbeam_epoch::Guard,
    epoch: usize,
    /// Blocks removed under this guard, not yet handed to the epoch.
    batch: OpenBatch,
    /// Deferred functions (old blocks of moved objects) handed to the epoch under this guard.
    deferred: Cell<u32>,
    _cache: PhantomData<&'c ()>,
}

impl Guard<'_> {
    /// Hands the open batch, if any, to the epoch.
    fn defer_batch(&self) {
        self.batch.hand_over(&self.inner);
    }

    /// Panics unless this guard is of the collector whose identity is `epoch`.
    #[inline]
    pub(crate) fn check(&self, epoch: usize) {
        assert!(
            self.epoch == epoch,
            "relocate-api: a guard from another cache's reader was passed to this cache"
        );
    }

    /// Unpins and pins again, so that the epoch (and reclamation) can move on; references read under
    /// the guard end here (they borrow it).
    pub fn repin(&mut self) {
        self.defer_batch();
        self.inner.repin();
    }

    /// Adds `block` of the cache whose retired lists are `retired` to this guard's open batch (see
    /// [`OpenBatch::retire`]).
    ///
    /// # Safety
    /// [`OpenBatch::retire`]'s contract.
    pub(crate) unsafe fn retire(
        &self,
        retired: &Arc<Retired>,
        drop_value: Option<unsafe fn(usize)>,
        block: usize,
        slot: Option<u32>,
    ) {
        // SAFETY: the caller's contract; the batch is this guard's own.
        unsafe {
            self.batch
                .retire(&self.inner, retired, drop_value, block, slot)
        };
    }

    /// Runs `f` once no thread can hold what was reachable when it was deferred.
    pub(crate) fn defer(&self, f: impl FnOnce() + Send + 'static) {
        self.inner.defer(f);
        self.deferred.set(self.deferred.get().saturating_add(1));
    }

    /// Hands this thread's deferred functions to the collector and runs those whose epoch passed.
    pub(crate) fn flush(&self) {
        self.defer_batch();
        self.inner.flush();
        UNFLUSHED.with(|u| {
            let mut counts = u.get();
            counts.forget(self.epoch);
            u.set(counts);
        });
    }
}

/// Collectors a thread keeps counts for (see [`Unflushed`]).
const COUNTED_COLLECTORS: usize = 4;

thread_local! {
    /// Deferred functions this thread's guards handed to each collector's epoch since the thread
    /// last flushed its bag of that collector.
    static UNFLUSHED: Cell<Unflushed> = const { Cell::new(Unflushed([(0, 0); COUNTED_COLLECTORS])) };
}

/// `(collector identity, deferred functions handed over since its last flush)` for the collectors
/// this thread used last, most recent first (identity 0: a free entry).
#[derive(Clone, Copy)]
struct Unflushed([(usize, u32); COUNTED_COLLECTORS]);

impl Unflushed {
    /// Adds `handed` to `epoch`'s count, moving its entry to the front, and says whether the bag is
    /// due for a flush: the count reached [`FLUSH_AFTER`] (it then starts again), or the collector
    /// had no entry while all were taken. Its earlier count may then have been evicted, so its bag
    /// is flushed now; the collector whose entry this one takes (the least recently used) keeps
    /// what its bag holds until it is next used (or the bag fills).
    fn add(&mut self, epoch: usize, handed: u32) -> bool {
        let last = COUNTED_COLLECTORS - 1;
        let (count, evicted) = match self.0.iter().position(|&(e, _)| e == epoch) {
            Some(at) => {
                let count = self.0[at].1;
                self.0.copy_within(0..at, 1);
                (count, false)
            }
            None => {
                let evicted = self.0[last].0 != 0;
                self.0.copy_within(0..last, 1);
                (0, evicted)
            }
        };
        let count = count.saturating_add(handed);
        let due = evicted || count >= FLUSH_AFTER;
        self.0[0] = (epoch, if due { 0 } else { count });
        due
    }

    /// Starts `epoch`'s count again (its bag was just flushed).
    fn forget(&mut self, epoch: usize) {
        if let Some(entry) = self.0.iter_mut().find(|(e, _)| *e == epoch) {
            entry.1 = 0;
        }
    }
}

/// A guard flushes its thread's bag of its collector when it is dropped once the thread's guards of
/// that collector have handed this many deferred functions to the epoch since the last flush.
const FLUSH_AFTER: u32 = 8;

impl Drop for Guard<'_> {
    /// Hands the open batch to the epoch, and flushes the thread's bag of deferred functions to the
    /// collector, where any thread's `flush` finds them, once its guards of this collector have
    /// handed over `FLUSH_AFTER` (8) since the last flush. A deferred function waits in the bag of the
    /// thread that made it until the bag fills (64) or the thread flushes; without this, a thread
    /// that removes objects and then idles, keeping its reader, would hold up to 64 batches (2,048
    /// blocks, and their slabs) back from every other thread's `flush`. So it holds back at most 7
    /// batches of each of the last `COUNTED_COLLECTORS` (4) collectors it used, and a thread that
    /// removes one object per guard (an LRU's evictions) flushes every 8 guards, not every one: a
    /// flush costs a global queue push and a collection.
    fn drop(&mut self) {
        self.defer_batch();
        let handed = self.deferred.get().saturating_add(self.batch.handed());
        if handed == 0 {
            return;
        }
        let due = UNFLUSHED.with(|u| {
            let mut counts = u.get();
            let due = counts.add(self.epoch, handed);
            u.set(counts);
            due
        });
        if due {
            self.inner.flush();
        }
    }
}

/// Flushes `reader`'s collector until `waiting` (blocks retired and not yet taken back) has not
/// changed for `QUIET_ROUNDS` rounds in a row, or a bound is reached (see [`RelocCache::flush`]).
pub(crate) fn flush_until_quiet(reader: &Reader<'_>, epoch: usize, waiting: impl Fn() -> usize) {
    assert!(
        reader.epoch == epoch,
        "relocate-api: a reader of another cache was passed to this cache's flush"
    );
    const QUIET_ROUNDS: usize = 256;
    let mut quiet_rounds = 0;
    for _ in 0..1_000_000 {
        let before = waiting();
        reader.pin().flush();
        if waiting() == before {
            quiet_rounds += 1;
            if quiet_rounds == QUIET_ROUNDS {
                break;
            }
        } else {
            quiet_rounds = 0;
        }
    }
}

/// The next collector identity; never reused (a `usize` counter does not wrap in practice).
pub(crate) fn next_epoch_id() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
