//! The lock-free lists that carry frees across threads.
//!
//! Two lists, one protocol family, both intrusive through the first word of a free block:
//!
//! - [`RemoteFreeList`] lives in each slab descriptor. Any thread pushes a block it frees into a slab
//!   it does not own; only the owner takes the whole list at once (`swap`), so there is no ABA: a
//!   popped node is never re-read by a racing popper. The low bit of the head is the **notify flag**:
//!   the owner sets it when it parks the slab in its full queue. The first remote free that finds the
//!   flag set clears it *instead of* pushing, and hands its block to the owner's heap through
//!   [`DelayedFreeList`]; that is how the owner learns that a full slab has room again, without scanning
//!   full slabs.
//! - [`DelayedFreeList`] lives in each heap: blocks that belong to that heap's full slabs. Multiple
//!   producers, one consumer (the owner) that takes everything at once.
//!
//! Invariants:
//! - A block on either list is counted in its slab's `used` until the owner collects it, so the slab
//!   cannot be released while a block of it is in flight; a remote freer therefore never touches a slab
//!   after its successful CAS except through the block it owns.
//! - Heaps are never unmapped (they are recycled), so pushing to a heap that has since been abandoned
//!   is safe; whoever adopts the heap drains its list.
//!
//! The push publishes the block's link with `Release`, the take reads with `Acquire`: the link and
//! everything the freeing thread wrote before the free happen-before the owner reuses the block.

use crate::sync::{AtomicUsize, Ordering};
use core::ptr;

/// A free block: the link is the block's first word.
#[repr(C)]
pub struct Block {
    pub(crate) next: *mut Block,
}

const NOTIFY: usize = 1;

/// What a remote free did with its block.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The block is on the slab's list.
    OnSlab,
    /// The notify flag was set: the flag is now cleared and the caller must hand the block to the
    /// owning heap's [`DelayedFreeList`] (the block is not on any list yet).
    NotifyOwner,
}

/// A slab's list of blocks freed by other threads, with the owner's notify flag in bit 0.
pub struct RemoteFreeList {
    head: AtomicUsize,
}

impl RemoteFreeList {
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            head: AtomicUsize::new(0),
        }
    }

    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            head: AtomicUsize::new(0),
        }
    }

    /// Pushes `block` (any thread).
    ///
    /// # Safety
    /// - `block` is valid for writing one pointer, at least 2-aligned, and owned by the caller (freed
    ///   by it and on no list).
    pub unsafe fn push(&self, block: *mut Block) -> Pushed {
        let mut old = self.head.load(Ordering::Relaxed);
        loop {
            if old & NOTIFY != 0 {
                match self.head.compare_exchange_weak(
                    old,
                    old & !NOTIFY,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Pushed::NotifyOwner,
                    Err(now) => {
                        old = now;
                        continue;
                    }
                }
            }
            // SAFETY: the caller owns `block` and it is valid for a pointer write.
            unsafe { (*block).next = old as *mut Block };
            match self.head.compare_exchange_weak(
                old,
                block as usize,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Pushed::OnSlab,
                Err(now) => old = now,
            }
        }
    }

    /// Takes every block (the owner only). The flag is left as it was.
    pub fn take(&self) -> *mut Block {
        // Fast exit without a write when empty keeps the owner's slow path from dirtying the line.
        let seen = self.head.load(Ordering::Relaxed);
        if seen & !NOTIFY == 0 {
            return ptr::null_mut();
        }
        let old = self.head.fetch_and(NOTIFY, Ordering::Acquire);
        (old & !NOTIFY) as *mut Block
    }

    /// Takes every block and sets the notify flag in one step (the owner, parking the slab as full).
    /// If the returned list is non-empty the slab is not full after all; call [`Self::disarm`].
    pub fn take_and_arm(&self) -> *mut Block {
        let old = self.head.swap(NOTIFY, Ordering::AcqRel);
        (old & !NOTIFY) as *mut Block
    }

    /// Clears the notify flag if it is still set and nothing was pushed since. Returns false when a
    /// remote free consumed the flag, in which case its block is on its way to the owner's delayed list.
    pub fn disarm(&self) -> bool {
        let mut old = self.head.load(Ordering::Relaxed);
        while old & NOTIFY != 0 {
            match self.head.compare_exchange_weak(
                old,
                old & !NOTIFY,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => old = now,
            }
        }
        false
    }

    /// Whether the notify flag is set (for invariant checks).
    pub fn is_armed(&self) -> bool {
        self.head.load(Ordering::Relaxed) & NOTIFY != 0
    }

    /// Whether blocks are waiting (a hint: may be stale by the time it returns).
    pub fn has_blocks(&self) -> bool {
        self.head.load(Ordering::Relaxed) & !NOTIFY != 0
    }
}

impl Default for RemoteFreeList {
    fn default() -> Self {
        Self::new()
    }
}

/// A heap's list of blocks that belong to its full slabs (multi-producer, single consumer).
pub struct DelayedFreeList {
    head: AtomicUsize,
}

impl DelayedFreeList {
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            head: AtomicUsize::new(0),
        }
    }

    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            head: AtomicUsize::new(0),
        }
    }

    /// # Safety
    /// - As for [`RemoteFreeList::push`].
    pub unsafe fn push(&self, block: *mut Block) {
        let mut old = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: the caller owns `block` and it is valid for a pointer write.
            unsafe { (*block).next = old as *mut Block };
            match self.head.compare_exchange_weak(
                old,
                block as usize,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => old = now,
            }
        }
    }

    /// Takes every block (the heap's owner only).
    pub fn take(&self) -> *mut Block {
        if self.head.load(Ordering::Relaxed) == 0 {
            return ptr::null_mut();
        }
        self.head.swap(0, Ordering::Acquire) as *mut Block
    }
}

impl Default for DelayedFreeList {
    fn default() -> Self {
        Self::new()
    }
}
