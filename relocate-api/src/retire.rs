//! Handing removed blocks and vacant slots back to their cache, in batches.
//!
//! A removal (or an update, which replaces an object's block) must not free the old block while a
//! reader pinned before it may still hold the address: the block goes to the cache's epoch collector
//! and comes back only once every such guard is gone. A guard gathers its removals for one cache in
//! an [`OpenBatch`] of up to [`BATCH_BLOCKS`] blocks and hands them to the epoch as one deferred
//! function when it is dropped, re-pinned, flushed or full. A batch may hold the blocks of several
//! caches of one collector (the size classes of a byte-blob cache, whose removals come in any order
//! of sizes). The deferred function (after dropping the values, for types that need it) puts each
//! cache's blocks on its [`Retired`] lists; the cache's next locked operation takes them and frees
//! them into its heap.
//!
//! The vacant slots of removed objects need no epoch (their generation moved on when they were
//! emptied, so no handle reaches them), and go onto `Retired` at once when their batch is handed over,
//! to be listed as free by the cache at its next lock.
//!
//! Invariants:
//! - handing a block over later than its removal is safe: a deferred function runs only once every
//!   guard pinned when it was deferred is gone, and the remover's guard is still pinned when it hands
//!   the batch over, so every guard pinned at the removal is among them;
//! - deferred functions take only `Retired`'s own lock, never the cache's, so they may run on any
//!   thread, inside any cache operation, without deadlock;
//! - `Retired`'s count of waiting entries is a hint read without the lock: a stale zero only delays
//!   the entries to a later call, and a call that took the lock first (as `RelocCache::flush` does,
//!   to count) sees the current count;
//! - a deferred function does not unwind: it runs in whichever thread pins or flushes next, and a
//!   panic out of it would leave the other deferred functions of its epoch bag never run (their
//!   blocks never freed). A value whose drop panics is counted (`Retired::drop_panics`), and the
//!   batch goes on with the next value.
//!
//! Built under `--cfg loom` too (its lock, counter and `Arc` come from the `sync` shim), so that
//! `loom-tests` checks the hand-over with the real code (`tests/batch_retire.rs`).

use crate::sync::{Arc, AtomicUsize, Mutex, Ordering};
use core::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Blocks per batch.
pub const BATCH_BLOCKS: usize = 32;
/// Caches per batch: a batch that would need another is handed over first.
const BATCH_OWNERS: usize = 8;

/// What removals hand back to a cache, waiting for its lock: blocks whose epoch has passed (to
/// return to the heap) and the vacant slots of removed objects (to list as free).
#[derive(Default)]
pub struct Retired {
    lists: Mutex<RetiredLists>,
    /// How many blocks and slots wait: a hint, written under the lock, that lets a cache skip the
    /// lock when nothing waits (every insert and update takes the cache lock, and checks here).
    queued: AtomicUsize,
    /// Values whose drop panicked in a deferred function (caught there, see the module doc).
    drop_panics: AtomicUsize,
}

/// The blocks and slots taken from [`Retired`] in one go.
#[derive(Default)]
pub struct RetiredLists {
    pub blocks: Vec<usize>,
    pub slots: Vec<u32>,
}

impl RetiredLists {
    fn count(&self) -> usize {
        self.blocks.len() + self.slots.len()
    }
}

impl Retired {
    fn push(&self, blocks: &[usize], slots: &[u32]) {
        let mut lists = self.lists.lock().unwrap_or_else(|e| e.into_inner());
        lists.blocks.extend_from_slice(blocks);
        lists.slots.extend_from_slice(slots);
        self.queued.store(lists.count(), Ordering::Relaxed);
    }

    /// Queues the old blocks of moved objects (`guard.defer` them to call this).
    pub fn push_blocks(&self, blocks: &[usize]) {
        self.push(blocks, &[]);
    }

    /// Blocks and slots waiting (under the lock: exact).
    pub fn waiting(&self) -> usize {
        self.lists.lock().unwrap_or_else(|e| e.into_inner()).count()
    }

    /// Values whose drop panicked after their removal (each was caught, and its block freed all the
    /// same).
    pub fn drop_panics(&self) -> usize {
        self.drop_panics.load(Ordering::Relaxed)
    }

    /// Whether anything may wait: the hint, without the lock.
    #[inline]
    pub fn may_hold_some(&self) -> bool {
        self.queued.load(Ordering::Relaxed) != 0
    }

    /// Takes everything waiting (nothing, without locking, when the hint says nothing waits).
    pub fn take(&self) -> RetiredLists {
        if !self.may_hold_some() {
            return RetiredLists::default();
        }
        let mut lists = self.lists.lock().unwrap_or_else(|e| e.into_inner());
        self.queued.store(0, Ordering::Relaxed);
        core::mem::take(&mut *lists)
    }
}

/// Where a retired block goes back to: its cache's lists, and how its value is dropped first.
struct Owner {
    retired: Arc<Retired>,
    /// Drops the value in a block (`None` for types without drop glue).
    drop_value: Option<unsafe fn(usize)>,
}

/// Blocks a guard's removals retired, handed to the epoch together: one deferred function per
/// batch, and one lock of each cache's `Retired` per batch, not per block. The blocks may belong to
/// several caches of the guard's collector (a byte-blob cache's size classes, whose removals come
/// in any order of classes), at most `BATCH_OWNERS` (a removal from one more hands the batch over):
/// each block and slot carries its owner's place in `owners` in bits it does not use (a block's
/// low 3 bits, as blocks are 8-aligned; a slot's top 3 bits, above a handle's index bits).
struct Batch {
    /// The caches of the batch's blocks, each once, in the order they came: the first here, the
    /// others (a byte-blob cache's) in `more`, allocated for the batch's second cache, so that a
    /// single cache's batches stay small (one is copied into the deferred function).
    first: Option<Owner>,
    more: Option<Box<[Option<Owner>; BATCH_OWNERS - 1]>>,
    owner_len: usize,
    /// The owner the last block went to, and its lists' address: a removal from the same cache
    /// compares one pointer.
    last: usize,
    last_retired: *const Retired,
    blocks: [usize; BATCH_BLOCKS],
    len: usize,
    /// The vacant slots of the removed objects: handed back when the batch is (they need no epoch:
    /// their generation moved on when they were emptied), to be reused after their cache's next lock.
    slots: [u32; BATCH_BLOCKS],
    slot_len: usize,
}

/// Where a slot's owner goes: above every slot index (`2^28` of them).
const SLOT_OWNER_SHIFT: u32 = 29;
const _: () = assert!(BATCH_OWNERS <= 8);

impl Batch {
    fn new() -> Self {
        Self {
            first: None,
            more: None,
            owner_len: 0,
            last: 0,
            last_retired: core::ptr::null(),
            blocks: [0; BATCH_BLOCKS],
            len: 0,
            slots: [0; BATCH_BLOCKS],
            slot_len: 0,
        }
    }

    /// Makes `retired`'s cache the last owner, adding it if new; false when it is new and `owners`
    /// is full.
    #[cold]
    fn switch_owner(
        &mut self,
        retired: &Arc<Retired>,
        drop_value: Option<unsafe fn(usize)>,
    ) -> bool {
        let is = |o: &Owner| Arc::ptr_eq(&o.retired, retired);
        self.last = match (0..self.owner_len).find(|&at| self.owner(at).is_some_and(is)) {
            Some(at) => at,
            None if self.owner_len == BATCH_OWNERS => return false,
            None => {
                let owner = Some(Owner {
                    retired: Arc::clone(retired),
                    drop_value,
                });
                match self.owner_len {
                    0 => self.first = owner,
                    n => {
                        self.more
                            .get_or_insert_with(|| Box::new([const { None }; BATCH_OWNERS - 1]))
                            [n - 1] = owner
                    }
                }
                self.owner_len += 1;
                self.owner_len - 1
            }
        };
        self.last_retired = Arc::as_ptr(retired);
        true
    }

    /// Owner `at` of the batch.
    fn owner(&self, at: usize) -> Option<&Owner> {
        owner_in(&self.first, &self.more, at)
    }

    /// Adds a block (and a slot) of the cache whose lists are `retired`, if the batch has room for
    /// its cache (it has room for the block: it is handed over when full); false if not.
    #[inline(always)]
    fn add(
        &mut self,
        retired: &Arc<Retired>,
        drop_value: Option<unsafe fn(usize)>,
        block: usize,
        slot: Option<u32>,
    ) -> bool {
        if !core::ptr::eq(self.last_retired, Arc::as_ptr(retired))
            && !self.switch_owner(retired, drop_value)
        {
            return false;
        }
        debug_assert!(block & 7 == 0 && slot.is_none_or(|s| s >> SLOT_OWNER_SHIFT == 0));
        self.blocks[self.len] = block | self.last;
        self.len += 1;
        if let Some(slot) = slot {
            self.slots[self.slot_len] = slot | (self.last as u32) << SLOT_OWNER_SHIFT;
            self.slot_len += 1;
        }
        true
    }

    fn defer(self, guard: &crossbeam_epoch::Guard) {
        let mut picked = [0u32; BATCH_BLOCKS];
        for (at, owner) in (0..self.owner_len).filter_map(|at| Some((at, self.owner(at)?))) {
            let slots = (self.slots[..self.slot_len].iter())
                .filter(|&&s| (s >> SLOT_OWNER_SHIFT) as usize == at)
                .map(|&s| s & ((1 << SLOT_OWNER_SHIFT) - 1));
            let n = picked.iter_mut().zip(slots).map(|(p, s)| *p = s).count();
            if n > 0 {
                owner.retired.push(&[], &picked[..n]);
            }
        }
        // Only what the deferred function needs goes into it (it is copied there).
        let Batch {
            first,
            more,
            owner_len,
            blocks,
            len,
            ..
        } = self;
        guard.defer(move || {
            let mut picked = [0usize; BATCH_BLOCKS];
            for (at, owner) in
                (0..owner_len).filter_map(|at| Some((at, owner_in(&first, &more, at)?)))
            {
                let blocks = (blocks[..len].iter())
                    .filter(|&&b| b & 7 == at)
                    .map(|&b| b & !7);
                let n = picked.iter_mut().zip(blocks).map(|(p, b)| *p = b).count();
                if let Some(drop_value) = owner.drop_value {
                    for &block in &picked[..n] {
                        let dropped = catch_unwind(AssertUnwindSafe(|| {
                            // SAFETY: `OpenBatch::retire`'s contract: the epoch has passed, so
                            // nothing reaches the value, and it is dropped once, here (a drop that
                            // panicked is not retried: the value is gone).
                            unsafe { drop_value(block) }
                        }));
                        if let Err(payload) = dropped {
                            // Not dropped: a payload whose own drop panics would unwind from here.
                            core::mem::forget(payload);
                            owner.retired.drop_panics.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                owner.retired.push(&picked[..n], &[]);
            }
        });
    }
}

/// Owner `at` of a batch whose owners are `first` and `more`.
fn owner_in<'a>(
    first: &'a Option<Owner>,
    more: &'a Option<Box<[Option<Owner>; BATCH_OWNERS - 1]>>,
    at: usize,
) -> Option<&'a Owner> {
    match at {
        0 => first.as_ref(),
        n => more.as_ref()?[n - 1].as_ref(),
    }
}

/// A guard's batch of retired blocks, not yet handed to the epoch.
#[derive(Default)]
pub struct OpenBatch {
    open: RefCell<Option<Batch>>,
    /// Batches handed over so far (see [`handed`](Self::handed)).
    handed: Cell<u32>,
}

impl OpenBatch {
    /// Retires `block` of the cache whose retired lists are `retired`: after the epoch of `guard`
    /// (the guard this batch belongs to), its value is dropped by `drop_value`, if any, and the block
    /// queued on `retired`. A removal hands back the object's vacant `slot` with it.
    ///
    /// # Safety
    /// - No reader can newly reach `block`: its object was removed from its slot, or replaced there.
    /// - `drop_value`, if any, may be called once on `block` when every guard pinned now is gone (it
    ///   drops the value there), and the cache outlives `guard`, so that this happens while the
    ///   cache's memory is there.
    pub unsafe fn retire(
        &self,
        guard: &crossbeam_epoch::Guard,
        retired: &Arc<Retired>,
        drop_value: Option<unsafe fn(usize)>,
        block: usize,
        slot: Option<u32>,
    ) {
        let mut batch = self.open.borrow_mut();
        if let Some(open) = batch.as_mut() {
            if open.add(retired, drop_value, block, slot) {
                if open.len == BATCH_BLOCKS {
                    drop(batch);
                    self.hand_over(guard);
                }
                return;
            }
        }
        drop(batch);
        self.retire_into_new_batch(guard, retired, drop_value, block, slot);
    }

    /// `retire` when there is no open batch, or it has no room for one more cache: the open one,
    /// if any, goes to the epoch, and a new one takes the block. (Out of line: the common case,
    /// adding to the open batch, stays a few instructions.)
    #[cold]
    #[inline(never)]
    fn retire_into_new_batch(
        &self,
        guard: &crossbeam_epoch::Guard,
        retired: &Arc<Retired>,
        drop_value: Option<unsafe fn(usize)>,
        block: usize,
        slot: Option<u32>,
    ) {
        self.hand_over(guard);
        let mut fresh = Batch::new();
        fresh.add(retired, drop_value, block, slot);
        *self.open.borrow_mut() = Some(fresh);
    }

    /// Hands the open batch, if any, to the epoch (`guard` is the batch's own guard, still pinned).
    pub fn hand_over(&self, guard: &crossbeam_epoch::Guard) {
        let open = self.open.borrow_mut().take();
        if let Some(open) = open {
            open.defer(guard);
            self.handed.set(self.handed.get().saturating_add(1));
        }
    }

    /// How many batches this guard's batch handed to the epoch so far (each one deferred function:
    /// see the cache's `Guard`, which counts them to know when to flush its thread's bag).
    pub fn handed(&self) -> u32 {
        self.handed.get()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Runs the collector's deferred functions (after the guards that could hold them are gone).
    fn collect(handle: &crossbeam_epoch::LocalHandle) {
        for _ in 0..8 {
            handle.pin().flush();
        }
    }

    /// Removals from several caches of one collector, interleaved, go out in shared batches: each
    /// cache gets back exactly its own blocks and slots, slots at hand-over, blocks after the epoch;
    /// a removal from one cache more than a batch holds hands the batch over first.
    #[test]
    fn one_batch_carries_several_caches_blocks_to_each_its_own() {
        let collector = crossbeam_epoch::Collector::new();
        let handle = collector.register();
        let caches: Vec<Arc<Retired>> = (0..BATCH_OWNERS + 1).map(|_| Arc::default()).collect();
        let batch = OpenBatch::default();
        let guard = handle.pin();
        // Three caches take turns: 21 removals, one batch, nothing handed over yet.
        for i in 0..21usize {
            // SAFETY: made-up block addresses, never read: no value to drop (`drop_value` is None).
            unsafe { batch.retire(&guard, &caches[i % 3], None, 8 * (i + 1), Some(i as u32)) };
        }
        assert!(caches.iter().all(|c| c.waiting() == 0));
        // Caches 3 to 7 join, then cache 8 is one more than a batch holds: the batch goes.
        for (i, cache) in caches.iter().enumerate().skip(3) {
            // SAFETY: as above.
            unsafe { batch.retire(&guard, cache, None, 8 * (100 + i), Some(100 + i as u32)) };
            let handed_over = i == BATCH_OWNERS;
            assert_eq!(caches[0].waiting() > 0, handed_over, "cache {i}");
        }
        batch.hand_over(&guard);
        drop(guard);
        collect(&handle);
        for (c, cache) in caches.iter().enumerate() {
            let lists = cache.take();
            let (blocks, slots): (Vec<usize>, Vec<u32>) = match c {
                0..3 => (0..21)
                    .filter(|i| i % 3 == c)
                    .map(|i| (8 * (i + 1), i as u32))
                    .unzip(),
                _ => (vec![8 * (100 + c)], vec![100 + c as u32]),
            };
            assert_eq!(lists.blocks, blocks, "cache {c}");
            assert_eq!(lists.slots, slots, "cache {c}");
        }
    }
}
