//! Slab descriptors: everything the allocator knows about a slab, a span or a huge mapping, kept out
//! of line in the arena's metadata (one 128-byte descriptor per 64 KiB unit; see `arena`).
//!
//! A small slab is a run of 1..4 units cut into blocks of one size class. Its blocks are in exactly one
//! of these places, which is the counter invariant `check_invariants` recounts:
//!
//! ```text
//! capacity == |free| + |local_free| + |blocks starting in unthreaded pages| + used
//! ```
//!
//! where `used` counts blocks handed out, *including* those freed by other threads that sit on the
//! `remote` list or on the owner heap's delayed list until the owner collects them.
//!
//! - `free`: the owner allocates by popping it (the fast path).
//! - `local_free`: the owner's own frees; swapped into `free` when `free` runs dry, so alloc and free
//!   never touch the same list head in a tight loop.
//! - `remote`: frees by other threads, lock-free (see `remote`).
//! - unthreaded pages: OS pages whose blocks were never put on a list (a fresh slab threads one page at
//!   a time, so a slab's memory is touched only as it is used) or whose blocks were all free when the
//!   page was decommitted by a purge. Threading a page is how a slab grows and how it recommits.
//!
//! Who touches what: the owner heap's thread reads and writes the `Cell` fields; other threads only
//! push to `remote` and read `owner`/`local_key`. Fields fixed at creation (`kind`, `class`, sizes) are
//! written under the arena pool lock before any block is handed out, so every thread that holds a block
//! also sees them.
//!
//! `local_key` equals the owner heap's address exactly when the owner may free into the slab on the
//! fast path; it differs (the owner's address with bit 0 set) while the slab is parked as full, which
//! sends the owner's next free to the slow path to un-park it. One comparison decides the free path.

use crate::os;
use crate::remote::{Block, RemoteFreeList};
use crate::size_class::{ClassInfo, CLASSES, UNIT_BYTES};
use crate::sync::{AtomicU32, AtomicUsize, Ordering};
use core::cell::Cell;
use core::ptr;

/// Descriptor kinds.
pub(crate) const KIND_FREE: u8 = 0;
pub(crate) const KIND_SMALL: u8 = 1;
pub(crate) const KIND_LARGE: u8 = 2;
pub(crate) const KIND_HUGE: u8 = 3;

/// The owner value of a slab no heap owns (spans, huge mappings, pooled slabs). Never a heap address.
pub(crate) const UNOWNED: usize = 1;

/// Owner-private flags.
pub(crate) const FLAG_FULL: u8 = 1;
pub(crate) const FLAG_MOVABLE: u8 = 2;
/// A movable slab a compactor is emptying: allocation skips it.
pub(crate) const FLAG_DRAINING: u8 = 4;
/// A movable slab whose free list is re-linked in address order before its next allocation.
pub(crate) const FLAG_ORDER: u8 = 8;
/// A heap's slab that was empty when the heap last collected itself on its own (see `heap`), and has
/// not been its class's current slab since: if it is still empty at the next such collection, the
/// heap returns it.
pub(crate) const FLAG_IDLE: u8 = 16;

/// Largest slab in OS pages (4 units of 64 KiB at 4 KiB pages); `unthreaded` has one bit per page.
const MAX_SLAB_PAGES: usize = 64;
/// Largest slab capacity: 64 KiB of 8-byte blocks.
const MAX_CAPACITY: usize = UNIT_BYTES / 8;

#[repr(C, align(128))]
pub(crate) struct Slab {
    // First cache line: everything the fast paths read.
    pub(crate) free: Cell<*mut Block>,
    pub(crate) local_free: Cell<*mut Block>,
    pub(crate) local_key: AtomicUsize,
    /// Written only by the owner; atomic so that a statistics walk may read it.
    pub(crate) used: AtomicU32,
    pub(crate) block_bytes: Cell<u32>,
    /// Descriptor index of this unit minus that of the slab's first unit.
    pub(crate) head_delta: Cell<u8>,
    pub(crate) kind: Cell<u8>,
    pub(crate) class: Cell<u8>,
    pub(crate) flags: Cell<u8>,
    pub(crate) capacity: Cell<u32>,
    /// Bit p: the blocks starting in page p of the slab are on no list.
    pub(crate) unthreaded: Cell<u64>,
    pub(crate) start: Cell<*mut u8>,
    // Second cache line: cross-thread frees and queue links.
    pub(crate) remote: RemoteFreeList,
    pub(crate) owner: AtomicUsize,
    pub(crate) next: Cell<*mut Slab>,
    pub(crate) prev: Cell<*mut Slab>,
    /// Units covered by this slab or span.
    pub(crate) units: Cell<u32>,
    /// Spans: offset of the object from the span start (alignment padding).
    pub(crate) span_offset: Cell<u32>,
    /// Spans and huge mappings: the usable size of the object in bytes.
    pub(crate) object_bytes: Cell<usize>,
    /// Pages decommitted by a purge and not yet threaded again (a subset of `unthreaded`).
    pub(crate) released: Cell<u64>,
    /// `used` when free pages were last released (`u32::MAX`: never), so a background pass can skip
    /// slabs that have not changed since.
    pub(crate) scanned_used: Cell<u32>,
}

// SAFETY: the `Cell` fields follow the ownership discipline in the module doc: only the owner thread
// (or the pool lock holder, for fixed fields and unowned slabs) writes them, and other threads reach a
// descriptor only through a block they hold, which happens-after those writes.
unsafe impl Sync for Slab {}

const _: () = assert!(core::mem::size_of::<Slab>() == 128);

impl Slab {
    /// The sentinel every empty heap points at: `free` is null, so allocation goes to the slow path.
    #[cfg(not(loom))]
    pub(crate) const fn empty() -> Self {
        Self {
            free: Cell::new(ptr::null_mut()),
            local_free: Cell::new(ptr::null_mut()),
            local_key: AtomicUsize::new(UNOWNED),
            used: AtomicU32::new(0),
            block_bytes: Cell::new(0),
            head_delta: Cell::new(0),
            kind: Cell::new(KIND_FREE),
            class: Cell::new(0),
            flags: Cell::new(0),
            capacity: Cell::new(0),
            unthreaded: Cell::new(0),
            start: Cell::new(ptr::null_mut()),
            remote: RemoteFreeList::new(),
            owner: AtomicUsize::new(UNOWNED),
            next: Cell::new(ptr::null_mut()),
            prev: Cell::new(ptr::null_mut()),
            units: Cell::new(0),
            span_offset: Cell::new(0),
            object_bytes: Cell::new(0),
            released: Cell::new(0),
            scanned_used: Cell::new(u32::MAX),
        }
    }

    /// Resets a descriptor to "free unit, owned by nobody" (under the pool lock).
    pub(crate) fn init_unowned(&self) {
        self.free.set(ptr::null_mut());
        self.local_free.set(ptr::null_mut());
        self.local_key.store(UNOWNED, Ordering::Relaxed);
        self.owner.store(UNOWNED, Ordering::Relaxed);
        self.used.store(0, Ordering::Relaxed);
        self.kind.set(KIND_FREE);
        self.head_delta.set(0);
        self.flags.set(0);
        self.units.set(0);
        self.next.set(ptr::null_mut());
        self.prev.set(ptr::null_mut());
    }

    /// Makes this descriptor the head of a small slab of `class` at `start` (under the pool lock; `tail`
    /// are the descriptors of the slab's following units).
    pub(crate) fn init_small(
        &self,
        tail: &[Slab],
        start: *mut u8,
        class: usize,
        owner: usize,
        movable: bool,
    ) {
        self.init_with_geometry(tail, start, class, CLASSES[class], owner, movable);
    }

    /// As [`Self::init_small`], with the block size, slab length and capacity given by `info` rather
    /// than by the class (movable slabs of exact block sizes; `class` then only groups statistics).
    pub(crate) fn init_with_geometry(
        &self,
        tail: &[Slab],
        start: *mut u8,
        class: usize,
        info: ClassInfo,
        owner: usize,
        movable: bool,
    ) {
        debug_assert!(info.capacity as usize <= MAX_CAPACITY);
        debug_assert_eq!(tail.len() + 1, info.slab_units as usize);
        self.init_unowned();
        self.kind.set(KIND_SMALL);
        self.class.set(class as u8);
        self.block_bytes.set(info.block_bytes);
        self.capacity.set(info.capacity);
        self.units.set(info.slab_units as u32);
        self.start.set(start);
        let pages = (info.slab_units as usize * UNIT_BYTES) / os::page_size();
        self.unthreaded.set(if pages >= 64 {
            u64::MAX
        } else {
            (1u64 << pages) - 1
        });
        self.released.set(0);
        self.scanned_used.set(u32::MAX);
        self.flags.set(if movable { FLAG_MOVABLE } else { 0 });
        self.owner.store(owner, Ordering::Relaxed);
        self.local_key.store(owner, Ordering::Relaxed);
        for (i, desc) in tail.iter().enumerate() {
            desc.init_unowned();
            desc.kind.set(KIND_SMALL);
            desc.head_delta.set((i + 1) as u8);
        }
    }

    /// The head descriptor of the slab or span this unit belongs to.
    #[inline]
    pub(crate) fn head(&self) -> &Slab {
        let delta = self.head_delta.get() as usize;
        // SAFETY: `head_delta` is set under the pool lock to this unit's distance from its slab's first
        // unit, whose descriptor lies `delta` slots earlier in the same descriptor array.
        unsafe { &*(self as *const Slab).sub(delta) }
    }

    pub(crate) fn is_full_parked(&self) -> bool {
        self.flags.get() & FLAG_FULL != 0
    }

    pub(crate) fn is_movable(&self) -> bool {
        self.flags.get() & FLAG_MOVABLE != 0
    }

    #[inline]
    pub(crate) fn used(&self) -> u32 {
        self.used.load(Ordering::Relaxed)
    }

    /// Owner-only counter update (no read-modify-write needed: nobody else writes it).
    #[inline]
    pub(crate) fn set_used(&self, used: u32) {
        self.used.store(used, Ordering::Relaxed);
    }

    /// Pops a block (owner; `free` must be non-empty).
    ///
    /// # Safety
    /// - The caller is the owner and `free` is non-null.
    #[inline]
    pub(crate) unsafe fn pop_unchecked(&self) -> *mut Block {
        let block = self.free.get();
        // SAFETY: `block` is on this slab's free list, so it is a free block whose first word is a link.
        self.free.set(unsafe { (*block).next });
        self.set_used(self.used() + 1);
        block
    }

    /// Pushes a block freed by the owner.
    ///
    /// # Safety
    /// - The caller is the owner and `block` is a block of this slab that was handed out.
    #[inline]
    pub(crate) unsafe fn push_local(&self, block: *mut Block) -> u32 {
        // SAFETY: the block was handed out, so the caller may overwrite its first word.
        unsafe { (*block).next = self.local_free.get() };
        self.local_free.set(block);
        let used = self.used() - 1;
        self.set_used(used);
        used
    }

    /// Moves the remote frees onto `local_free`. Returns how many blocks came back.
    pub(crate) fn collect_remote(&self) -> u32 {
        let list = self.remote.take();
        self.absorb(list)
    }

    /// Appends a list of this slab's blocks (taken from a remote or delayed list) to `local_free`.
    pub(crate) fn absorb(&self, list: *mut Block) -> u32 {
        if list.is_null() {
            return 0;
        }
        let mut count = 1;
        let mut tail = list;
        // SAFETY: a list taken from `remote` consists of blocks of this slab freed by other threads; each
        // first word is a link written before the push that published it (acquire in `take`).
        unsafe {
            while !(*tail).next.is_null() {
                tail = (*tail).next;
                count += 1;
            }
            (*tail).next = self.local_free.get();
        }
        self.local_free.set(list);
        self.set_used(self.used() - count);
        count
    }

    /// Makes `free` non-empty if the slab has any free block: local frees, then remote frees, then the
    /// next unthreaded page. Owner only. Inline for the common case, a movable heap's allocation from a
    /// slab whose list is not empty yet.
    #[inline]
    pub(crate) fn refill(&self) -> bool {
        !self.free.get().is_null() || self.refill_from_elsewhere()
    }

    #[inline(never)]
    fn refill_from_elsewhere(&self) -> bool {
        if self.local_free.get().is_null() {
            self.collect_remote();
        }
        let local = self.local_free.replace(ptr::null_mut());
        if !local.is_null() {
            self.free.set(local);
            return true;
        }
        while self.unthreaded.get() != 0 {
            if self.thread_next_page() {
                return true;
            }
        }
        false
    }

    /// Threads the blocks that start in the lowest unthreaded page onto `free` (which is empty).
    fn thread_next_page(&self) -> bool {
        let mask = self.unthreaded.get();
        let page = mask.trailing_zeros() as usize;
        self.unthreaded.set(mask & !(1u64 << page));
        let released = self.released.get();
        if released & (1u64 << page) != 0 {
            self.released.set(released & !(1u64 << page));
            crate::stats::add_committed(os::page_size());
        }
        let (first, end) = self.blocks_starting_in(page);
        if first >= end {
            return false;
        }
        let bytes = self.block_bytes.get() as usize;
        let start = self.start.get();
        let mut head = self.free.get();
        for index in (first..end).rev() {
            let block = start.wrapping_add(index * bytes).cast::<Block>();
            // SAFETY: blocks starting in an unthreaded page are free and inside the slab's units.
            unsafe { (*block).next = head };
            head = block;
        }
        self.free.set(head);
        true
    }

    /// Re-links the free blocks of the threaded pages onto `free` in address order (`local_free`
    /// joins them), so that a run of allocations walks the slab forward instead of in free order.
    /// `is_free(block)` tells a free block from a used one; the remote list must be empty (movable
    /// slabs, whose frees are all the owner's). Unthreaded pages stay unthreaded, untouched. Owner only.
    /// Returns the number of blocks linked.
    pub(crate) fn relink_free_in_order(&self, is_free: impl Fn(usize) -> bool) -> usize {
        debug_assert!(!self.remote.has_blocks());
        let pages = (self.units.get() as usize * UNIT_BYTES / os::page_size()).min(MAX_SLAB_PAGES);
        let bytes = self.block_bytes.get() as usize;
        let start = self.start.get();
        let unthreaded = self.unthreaded.get();
        let mut head: *mut Block = ptr::null_mut();
        let mut linked = 0;
        for page in (0..pages).rev() {
            if unthreaded & (1u64 << page) != 0 {
                continue;
            }
            let (first, end) = self.blocks_starting_in(page);
            for index in (first..end).rev() {
                let block = start.wrapping_add(index * bytes).cast::<Block>();
                if is_free(block as usize) {
                    // SAFETY: a free block of a threaded page: it is ours to link.
                    unsafe { (*block).next = head };
                    head = block;
                    linked += 1;
                }
            }
        }
        self.free.set(head);
        self.local_free.set(ptr::null_mut());
        linked
    }

    /// Indices of the blocks whose first byte lies in slab page `page`.
    fn blocks_starting_in(&self, page: usize) -> (usize, usize) {
        let bytes = self.block_bytes.get() as usize;
        let page_bytes = os::page_size();
        let cap = self.capacity.get() as usize;
        let first = (page * page_bytes).div_ceil(bytes).min(cap);
        let end = ((page + 1) * page_bytes).div_ceil(bytes).min(cap);
        (first, end)
    }

    /// Decommits every page of the slab on which no block is in use (owner, or holder of an unowned
    /// slab). Collects remote frees first. With `only_if_changed`, a slab whose `used` count is what it
    /// was at the last pass is skipped (right for slabs nobody allocates from: pooled or abandoned).
    /// Returns the bytes given back.
    pub(crate) fn release_free_pages(&self, only_if_changed: bool) -> usize {
        self.collect_remote();
        if only_if_changed && self.used() == self.scanned_used.get() {
            return 0;
        }
        self.scanned_used.set(self.used());
        let bytes = self.block_bytes.get() as usize;
        let cap = self.capacity.get() as usize;
        let page_bytes = os::page_size();
        let pages = (self.units.get() as usize * UNIT_BYTES) / page_bytes;
        if pages > MAX_SLAB_PAGES || cap > MAX_CAPACITY {
            return 0;
        }
        // 1 bit per block: free or unthreaded.
        let mut is_free = [0u64; MAX_CAPACITY / 64];
        let start = self.start.get() as usize;
        let mut mark_list = |mut block: *mut Block| {
            while !block.is_null() {
                let index = (block as usize - start) / bytes;
                is_free[index / 64] |= 1 << (index % 64);
                // SAFETY: blocks on the owner's lists are free and hold a valid link.
                block = unsafe { (*block).next };
            }
        };
        mark_list(self.free.get());
        mark_list(self.local_free.get());
        let mut unthreaded = self.unthreaded.get();
        for page in 0..pages {
            if unthreaded & (1 << page) != 0 {
                let (first, end) = self.blocks_starting_in(page);
                for index in first..end {
                    is_free[index / 64] |= 1 << (index % 64);
                }
            }
        }
        let block_is_free = |index: usize| is_free[index / 64] & (1 << (index % 64)) != 0;
        // A page can go when every block overlapping it is free.
        let mut release = 0u64;
        for page in 0..pages {
            if unthreaded & (1 << page) != 0 {
                continue;
            }
            let lo = page * page_bytes / bytes;
            let hi = ((page + 1) * page_bytes).div_ceil(bytes).min(cap);
            if (lo..hi).all(block_is_free) {
                release |= 1 << page;
            }
        }
        if release == 0 {
            return 0;
        }
        unthreaded |= release;
        // Rebuild the free list from free blocks that start in pages still threaded, in address order.
        let mut head: *mut Block = ptr::null_mut();
        for index in (0..cap).rev() {
            let page = index * bytes / page_bytes;
            if block_is_free(index) && unthreaded & (1 << page) == 0 {
                let block = (start + index * bytes) as *mut Block;
                // SAFETY: the block is free and starts in a page that stays committed.
                unsafe { (*block).next = head };
                head = block;
            }
        }
        self.free.set(head);
        self.local_free.set(ptr::null_mut());
        self.unthreaded.set(unthreaded);
        let mut released_bytes = 0;
        let mut rest = release;
        while rest != 0 {
            let first = rest.trailing_zeros() as usize;
            let len = (rest >> first).trailing_ones() as usize;
            os::decommit((start + first * page_bytes) as *mut u8, len * page_bytes);
            released_bytes += len * page_bytes;
            rest &= !(((1u128 << len) - 1) as u64) << first;
        }
        self.released.set(self.released.get() | release);
        crate::stats::sub_committed(released_bytes);
        released_bytes
    }

    /// Recounts the counter invariant (owner, tests and the `invariants` feature).
    #[cfg(any(test, feature = "invariants"))]
    pub(crate) fn check_invariants(&self) {
        if self.kind.get() != KIND_SMALL || self.head_delta.get() != 0 {
            return;
        }
        let count = |mut block: *mut Block| {
            let mut n = 0usize;
            while !block.is_null() {
                let offset = block as usize - self.start.get() as usize;
                assert_eq!(
                    offset % self.block_bytes.get() as usize,
                    0,
                    "misaligned block on a list"
                );
                assert!(offset / (self.block_bytes.get() as usize) < self.capacity.get() as usize);
                n += 1;
                // SAFETY: blocks on the owner's lists are free and hold a valid link.
                block = unsafe { (*block).next };
            }
            n
        };
        let pages = (self.units.get() as usize * UNIT_BYTES) / os::page_size();
        let unthreaded: usize = (0..pages)
            .filter(|p| self.unthreaded.get() & (1 << p) != 0)
            .map(|p| {
                let (a, b) = self.blocks_starting_in(p);
                b.saturating_sub(a)
            })
            .sum();
        let total = count(self.free.get())
            + count(self.local_free.get())
            + unthreaded
            + self.used() as usize;
        assert_eq!(
            total,
            self.capacity.get() as usize,
            "slab counter invariant"
        );
    }
}
