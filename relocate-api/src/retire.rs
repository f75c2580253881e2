//! Handing removed blocks and vacant slots back to their cache, in batches.
//!
//! A removal (or an update, which replaces an object's block) must not free the old block while a
//! reader pinned before it may still hold the address: the block goes to the cache's epoch collector
//! and comes back only once every such guard is gone. A guard gathers its removals for one cache in
//! an [`OpenBatch`] of up to [`BATCH_BLOCKS`] blocks and hands them to the epoch as one deferred
//! function when it is dropped, re-pinned, flushed, full, or turns to another cache. The deferred
//! function (after dropping the values, for types that need it) puts the blocks on the cache's
//! [`Retired`] lists; the cache's next locked operation takes them and frees them into its heap.
//!
//! The vacant slots of removed objects need no epoch (their generation moved on when they were
//! emptied, so no handle reaches them), and go onto `Retired` at once when their batch is handed over,
//! to be linked into the cache's free list at its next lock.
//!
//! Invariants:
//! - handing a block over later than its removal is safe: a deferred function runs only once every
//!   guard pinned when it was deferred is gone, and the remover's guard is still pinned when it hands
//!   the batch over, so every guard pinned at the removal is among them;
//! - deferred functions take only `Retired`'s own lock, never the cache's, so they may run on any
//!   thread, inside any cache operation, without deadlock;
//! - `Retired`'s count of waiting entries is a hint read without the lock: a stale zero only delays
//!   the entries to a later call, and a call that took the lock first (as `RelocCache::flush` does,
//!   to count) sees the current count.
//!
//! Built under `--cfg loom` too (its lock, counter and `Arc` come from the `sync` shim), so that
//! `loom-tests` checks the hand-over with the real code (`tests/batch_retire.rs`).

use crate::sync::{Arc, AtomicUsize, Mutex, Ordering};
use core::cell::RefCell;

/// Blocks per batch.
pub const BATCH_BLOCKS: usize = 32;

/// What removals hand back to a cache, waiting for its lock: blocks whose epoch has passed (to
/// return to the heap) and the vacant slots of removed objects (to link into the free list).
#[derive(Default)]
pub struct Retired {
    lists: Mutex<RetiredLists>,
    /// How many blocks and slots wait: a hint, written under the lock, that lets a cache skip the
    /// lock when nothing waits (every insert and update takes the cache lock, and checks here).
    queued: AtomicUsize,
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

/// Blocks a guard's removals retired for one cache, handed to the epoch together: one deferred
/// function and one lock of the cache's `Retired` per batch, not per block.
struct Batch {
    retired: Arc<Retired>,
    /// Drops the value in a block (`None` for types without drop glue); the same for the whole batch,
    /// whose blocks are all one cache's.
    drop_value: Option<unsafe fn(usize)>,
    blocks: [usize; BATCH_BLOCKS],
    len: usize,
    /// The vacant slots of the removed objects: handed back when the batch is (they need no epoch:
    /// their generation moved on when they were emptied), to be reused after the cache's next lock.
    slots: [u32; BATCH_BLOCKS],
    slot_len: usize,
}

impl Batch {
    /// Adds a block (and a slot); the batch has room (it is handed over when full).
    fn add(&mut self, block: usize, slot: Option<u32>) {
        self.blocks[self.len] = block;
        self.len += 1;
        if let Some(slot) = slot {
            self.slots[self.slot_len] = slot;
            self.slot_len += 1;
        }
    }

    fn defer(self, guard: &crossbeam_epoch::Guard) {
        if self.slot_len > 0 {
            self.retired.push(&[], &self.slots[..self.slot_len]);
        }
        guard.defer(move || {
            let blocks = &self.blocks[..self.len];
            if let Some(drop_value) = self.drop_value {
                for &block in blocks {
                    // SAFETY: `OpenBatch::retire`'s contract: the epoch has passed, so nothing
                    // reaches the value, and it is dropped once, here.
                    unsafe { drop_value(block) };
                }
            }
            self.retired.push(blocks, &[]);
        });
    }
}

/// A guard's batch of retired blocks, not yet handed to the epoch.
#[derive(Default)]
pub struct OpenBatch(RefCell<Option<Batch>>);

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
        let mut batch = self.0.borrow_mut();
        let full = match &mut *batch {
            Some(open) if Arc::ptr_eq(&open.retired, retired) => {
                open.add(block, slot);
                open.len == BATCH_BLOCKS
            }
            other => {
                let mut first = Batch {
                    retired: Arc::clone(retired),
                    drop_value,
                    blocks: [0; BATCH_BLOCKS],
                    len: 0,
                    slots: [0; BATCH_BLOCKS],
                    slot_len: 0,
                };
                first.add(block, slot);
                // Another cache's batch (a byte-blob class's sibling) goes to the epoch now.
                if let Some(previous) = other.replace(first) {
                    previous.defer(guard);
                }
                false
            }
        };
        if full {
            if let Some(full) = batch.take() {
                full.defer(guard);
            }
        }
    }

    /// Hands the open batch, if any, to the epoch (`guard` is the batch's own guard, still pinned).
    pub fn hand_over(&self, guard: &crossbeam_epoch::Guard) {
        let open = self.0.borrow_mut().take();
        if let Some(open) = open {
            open.defer(guard);
        }
    }
}
