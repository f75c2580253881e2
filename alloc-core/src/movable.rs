//! Movable slabs: the hooks a compactor (relocate-api) builds on.
//!
//! A [`MovableHeap`] allocates blocks of one exact size from slabs that live in `Movable` arenas, never
//! mixed with the global allocator's slabs, so that evacuating them frees whole arenas. Unlike the
//! per-thread heaps it is an ordinary value with one owner (`&mut self` everywhere): a relocating cache
//! keeps it behind its own synchronisation and frees through it, never through the global allocator.
//!
//! For every block it keeps, out of line in the arena's metadata (a piece of its own, see `region`):
//! - the liveness bitmap bit of the block's first 8-byte granule (set while the block is allocated),
//! - a back-map entry: a `u32` naming the block's owner (e.g. a handle-table index), in a table with a
//!   row per block index and a column per unit, so the back-map costs 4 bytes per block (a quarter of
//!   16-byte blocks), and the slabs of an arena share the pages of the rows they use (an arena of
//!   512-byte slabs touches three pages of back-map, not one per slab).
//!
//! The bitmap words and back-map entries of a slab belong to the slab's one owner (64 KiB units hold
//! whole bitmap words), so the heap updates them with plain loads and stores, not read-modify-writes.
//!
//! A compactor walks [`MovableHeap::slabs`] to find sparse slabs, [`MovableHeap::for_each_live`] to
//! find what to move and who owns it, marks the slabs it empties with [`MovableHeap::begin_drain`] so a
//! move never lands in the slab being emptied, and frees the old blocks; a slab whose last block goes
//! is returned to its arena at once, and an arena whose units are all free is unmapped by `purge` or
//! after the decommit delay.
//!
//! Movable arenas are carved from one reservation (`region`) below `2^MOVABLE_ADDRESS_BITS`, so a
//! handle slot can store a movable block's address in that many bits.

use crate::arena::{
    self, ArenaKind, Placement, BACKMAP_COLUMNS, BACKMAP_GRANULE, BACKMAP_OFFSET,
    LIVE_BITMAP_OFFSET, LIVE_GRANULE,
};
use crate::heap::{release_slab_to_arena, SlabList};
pub use crate::region::{data_start, reserve_movable_region, MOVABLE_ADDRESS_BITS};
use crate::size_class::{class_of, ClassInfo, MAX_SLAB_UNITS, MAX_SMALL_BYTES, UNIT_BYTES};
use crate::slab::{Slab, FLAG_DRAINING, FLAG_FULL, FLAG_ORDER, UNOWNED};
use crate::sync::{AtomicU64, Ordering};
use core::ptr::{self, NonNull};

/// The bytes of a movable arena: what evicting or evacuating one gives back.
pub const ARENA_BYTES: usize = arena::ARENA_BYTES;

/// The smallest block a movable heap serves (one back-map entry per block).
pub const MIN_MOVABLE_BYTES: usize = BACKMAP_GRANULE;
/// The largest block a movable heap serves: the global allocator's largest class and an eighth, so
/// that a cache of byte strings can keep a 32 KiB value and its length in one block. Seven such
/// blocks fill a slab of the most units but for at most an eighth of it, as every smaller block does.
pub const MAX_MOVABLE_BYTES: usize = MAX_SMALL_BYTES + MAX_SMALL_BYTES / 8;

/// The slab geometry of movable blocks of `bytes` aligned to `align`: the block size is exact (`bytes`
/// rounded up to 8 and to `align`), not a size class's, because a movable heap serves one object size
/// and every byte of rounding is resident for each object it holds. The slab is the shortest run of
/// 1 to 4 units that loses at most 1/32 at its tail and holds at least 8 blocks; failing that, the one
/// that loses the smallest share. `None` above [`MAX_MOVABLE_BYTES`] or for alignments above a unit.
pub const fn movable_geometry(bytes: usize, align: usize) -> Option<ClassInfo> {
    if !align.is_power_of_two() || align > UNIT_BYTES {
        return None;
    }
    let least = if bytes > MIN_MOVABLE_BYTES {
        bytes
    } else {
        MIN_MOVABLE_BYTES
    };
    let granule = if align > LIVE_GRANULE {
        align
    } else {
        LIVE_GRANULE
    };
    let Some(block) = least.checked_next_multiple_of(granule) else {
        return None;
    };
    if block > MAX_MOVABLE_BYTES {
        return None;
    }
    // (A `const fn`, so that a cache can know its geometry at compile time: loops, not iterators.)
    const fn capacity_of(units: usize, block: usize) -> usize {
        let fit = units * UNIT_BYTES / block;
        if fit < arena::BACKMAP_ROWS {
            fit
        } else {
            arena::BACKMAP_ROWS
        }
    }
    const fn waste_of(units: usize, block: usize) -> usize {
        units * UNIT_BYTES - capacity_of(units, block) * block
    }
    let mut units = 1;
    while units <= MAX_SLAB_UNITS {
        if waste_of(units, block) * 32 <= units * UNIT_BYTES && capacity_of(units, block) >= 8 {
            break;
        }
        units += 1;
    }
    if units > MAX_SLAB_UNITS {
        // The smallest share of its slab lost (waste(u)/u), the shortest such run on a tie.
        units = 1;
        let mut u = 2;
        while u <= MAX_SLAB_UNITS {
            if waste_of(u, block) * 12 / u < waste_of(units, block) * 12 / units {
                units = u;
            }
            u += 1;
        }
    }
    Some(ClassInfo {
        block_bytes: block as u32,
        slab_units: units as u8,
        capacity: capacity_of(units, block) as u32,
    })
}

/// Where a block lies in the movable region: an owner that names blocks by place (a relocating
/// cache's home slots) maps it to a number of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockPlace {
    /// The slab's first unit, counted from [`data_start`] (so `data_start() + (unit << UNIT_SHIFT)` is
    /// the slab's first block).
    pub unit: usize,
    /// The block's index in its slab.
    pub index: usize,
}

/// A read-only view of one movable slab.
#[derive(Clone, Copy, Debug)]
pub struct SlabView {
    /// Address of the first block.
    pub start: usize,
    pub block_bytes: usize,
    pub capacity: usize,
    /// Blocks allocated now.
    pub live: usize,
    /// Start address of the 2 MiB arena holding the slab.
    pub arena: usize,
    /// The order in which that arena was opened among every arena of the process (higher is newer):
    /// mapped, or given a unit again after all its units were free. So it dates the arena's oldest
    /// contents.
    pub arena_serial: u64,
}

/// A single-owner allocator of same-sized blocks on movable slabs.
pub struct MovableHeap {
    /// Block size, slab length and capacity of every slab.
    geometry: ClassInfo,
    /// The size class whose statistics count these slabs (the smallest that holds a block, or the
    /// largest).
    class: usize,
    /// [`index_magic`] of the block size.
    magic: u64,
    /// Slabs with free blocks (head is allocated from first) and slabs without.
    avail: SlabList,
    full: SlabList,
    /// Slabs being emptied by a compactor (between `begin_drain` and `end_drain`).
    draining: SlabList,
    slabs: usize,
    /// The heap's arena group (0, shared, until `set_arena_group`), and an arena being evacuated,
    /// which new slabs never come from.
    placement: Placement,
}

// SAFETY: the heap owns its slabs exclusively (their `owner` is UNOWNED, so no thread heap treats them as
// its own, and nobody else frees into them), so moving the heap moves that ownership with it.
unsafe impl Send for MovableHeap {}

/// The slab descriptor of a block of a movable slab (or of any address in a live movable arena's unit
/// that holds a slab).
fn slab_of(block: usize) -> &'static Slab {
    let meta = arena::movable_meta_of(block);
    let unit = (block & arena::ARENA_MASK) >> crate::size_class::UNIT_SHIFT;
    // SAFETY: callers pass addresses in live movable arenas, whose metadata is mapped while they live
    // and starts with one descriptor per unit; `unit` is below that.
    unsafe { (*meta).descs[unit].head() }
}

fn live_bit(block: usize) -> (&'static AtomicU64, u64) {
    let meta = arena::movable_meta_of(block) as usize;
    let granule = (block & arena::ARENA_MASK) / LIVE_GRANULE;
    let word = (meta + LIVE_BITMAP_OFFSET) as *const AtomicU64;
    // SAFETY: the bitmap lies in the arena's metadata, mapped for the arena's life; the index is
    // below 2 MiB / 8 / 64.
    (unsafe { &*word.add(granule / 64) }, 1u64 << (granule % 64))
}

/// Sets or clears a block's liveness bit. Only the slab's owner writes its bitmap words, so a plain
/// load and store suffice (readers of other words are unaffected).
fn set_live(block: usize, live: bool) {
    let (word, bit) = live_bit(block);
    let old = word.load(Ordering::Relaxed);
    word.store(if live { old | bit } else { old & !bit }, Ordering::Relaxed);
}

/// The back-map entry of block `index` of the slab starting at `slab_start`: row `index`, column of
/// the slab's first unit (see `arena::BACKMAP_OFFSET`). A slab's entries are a column, one per row, so
/// slabs of few large blocks share the pages of the first rows: an arena of 512-byte slabs touches
/// 12 KiB of back-map in all rather than a page per slab.
fn backmap_slot(slab_start: usize, index: usize) -> *mut u32 {
    let meta = arena::movable_meta_of(slab_start) as usize;
    let column = (slab_start & arena::ARENA_MASK) >> crate::size_class::UNIT_SHIFT;
    debug_assert!(column < BACKMAP_COLUMNS && index < arena::BACKMAP_ROWS);
    (meta + BACKMAP_OFFSET + (index * BACKMAP_COLUMNS + column) * 4) as *mut u32
}

/// Block index from a byte offset inside a slab, without a division: `offset * magic >> 40` is exact
/// for offsets that are multiples of the block size below 2^24 (slabs are at most 256 KiB).
const INDEX_SHIFT: u32 = 40;

fn index_magic(block_bytes: usize) -> u64 {
    (1u64 << INDEX_SHIFT) / block_bytes as u64 + 1
}

/// The back-map entry of a block of a movable slab.
fn backmap_entry(block: usize) -> *mut u32 {
    let slab = slab_of(block);
    let start = slab.start.get() as usize;
    backmap_slot(start, (block - start) / slab.block_bytes.get() as usize)
}

impl MovableHeap {
    /// A heap for blocks of `bytes` (rounded up to 8); `None` above [`MAX_MOVABLE_BYTES`].
    pub fn new(bytes: usize) -> Option<Self> {
        Self::with_layout(bytes, 1)
    }

    /// A heap for blocks of `bytes` aligned to `align` (a power of two); see [`movable_geometry`].
    pub fn with_layout(bytes: usize, align: usize) -> Option<Self> {
        let geometry = movable_geometry(bytes, align)?;
        let block = geometry.block_bytes as usize;
        Some(Self {
            geometry,
            class: class_of(block.min(MAX_SMALL_BYTES)),
            magic: index_magic(block),
            avail: SlabList::new(),
            full: SlabList::new(),
            draining: SlabList::new(),
            slabs: 0,
            placement: Placement::SHARED,
        })
    }

    /// Puts the heap in arena group `group`: its new slabs come only from arenas that hold no other
    /// group's slabs (a wholly free arena joins the group), so that evicting or evacuating one of
    /// them concerns this group's heaps alone and frees the whole 2 MiB. Group 0, every heap's at
    /// first, is shared. A heap should join a group of its own only once it holds an arena's worth
    /// of live blocks (a relocating cache does): small heaps each in an arena of their own would
    /// take pages that they share in one (the back-map's rows span an arena's slabs, and a huge
    /// page spans its units), and a process of many small caches would map an arena for each.
    /// Slabs made before keep their arenas.
    pub fn set_arena_group(&mut self, group: u32) {
        self.placement.group = group;
    }

    /// While set, new slabs are never taken from the arena at `arena` (the one being evacuated).
    pub fn set_avoid_arena(&mut self, arena: Option<usize>) {
        self.placement.avoid = arena.unwrap_or(0);
    }

    /// The block size this heap hands out.
    pub fn block_bytes(&self) -> usize {
        self.geometry.block_bytes as usize
    }

    /// Blocks in each slab.
    pub fn slab_capacity(&self) -> usize {
        self.geometry.capacity as usize
    }

    /// Allocates a block and records `owner` in its back-map entry. Never from a draining slab; a new
    /// slab is made if no other slab has room.
    pub fn alloc(&mut self, owner: u32) -> Option<NonNull<u8>> {
        self.alloc_placed(|_| owner)
    }

    /// Allocates a block, as [`Self::alloc`] does, and records in its back-map entry the owner that
    /// `owner_at` names for the block's place (called once, only when a block was found).
    #[inline]
    pub fn alloc_placed(
        &mut self,
        owner_at: impl FnOnce(BlockPlace) -> u32,
    ) -> Option<NonNull<u8>> {
        loop {
            let slab = self.avail.head();
            if slab.is_null() {
                break;
            }
            // SAFETY: slabs on our lists are live and ours.
            let s = unsafe { &*slab };
            if s.flags.get() & FLAG_ORDER != 0 {
                Self::order_free_list(s);
            }
            if s.refill() {
                return Some(self.take_from(s, owner_at));
            }
            self.avail.remove(s);
            s.flags.set(s.flags.get() | FLAG_FULL);
            self.full.push(s);
        }
        let s = self.new_slab()?;
        if !s.refill() {
            return None;
        }
        Some(self.take_from(s, owner_at))
    }

    /// Marks the slabs for which `is_source` holds as draining: until [`Self::end_drain`], allocation
    /// never takes blocks from them (so a compactor's moves land elsewhere, at constant cost per move),
    /// and each is returned to its arena as soon as its last block is freed.
    pub fn begin_drain(&mut self, is_source: impl Fn(&SlabView) -> bool) {
        for list in [&self.avail, &self.full] {
            let mut slab = list.head();
            while !slab.is_null() {
                // SAFETY: slabs on our lists are live and ours.
                let s = unsafe { &*slab };
                let next = s.next.get();
                if is_source(&view_of(s)) {
                    list.remove(s);
                    s.flags.set((s.flags.get() & !FLAG_FULL) | FLAG_DRAINING);
                    self.draining.push(s);
                }
                slab = next;
            }
        }
    }

    /// Has the free blocks of the slabs that the next `blocks` allocations will use re-linked in
    /// address order, so that those allocations (a compactor's moves) fill each slab's holes front to
    /// back, with the hardware prefetcher's help, rather than in the order the blocks were freed.
    /// Each slab is re-linked when its first allocation comes, not here: a slab's 64 KiB are then
    /// still in the cache when its blocks are filled, where re-linking them all at once had
    /// written megabytes that the moves read again from memory. Pages that were never threaded or
    /// were released stay untouched.
    pub fn order_free_lists(&mut self, blocks: usize) {
        let mut wanted = blocks;
        let mut slab = self.avail.head();
        while !slab.is_null() && wanted > 0 {
            // SAFETY: slabs on our lists are live and ours.
            let s = unsafe { &*slab };
            s.flags.set(s.flags.get() | FLAG_ORDER);
            wanted = wanted.saturating_sub((s.capacity.get() - s.used()) as usize);
            slab = s.next.get();
        }
    }

    /// Re-links `slab`'s free list in address order (see [`Self::order_free_lists`]).
    #[cold]
    #[inline(never)]
    fn order_free_list(slab: &Slab) {
        slab.flags.set(slab.flags.get() & !FLAG_ORDER);
        slab.relink_free_in_order(|block| {
            let (word, bit) = live_bit(block);
            word.load(Ordering::Relaxed) & bit == 0
        });
    }

    /// Ends a drain: slabs that still hold blocks become ordinary slabs again, and slabs that were to
    /// be re-linked in order but got no allocation keep their lists as they are.
    pub fn end_drain(&mut self) {
        let mut slab = self.avail.head();
        while !slab.is_null() {
            // SAFETY: slabs on our lists are live and ours.
            let s = unsafe { &*slab };
            s.flags.set(s.flags.get() & !FLAG_ORDER);
            slab = s.next.get();
        }
        loop {
            let slab = self.draining.head();
            if slab.is_null() {
                break;
            }
            // SAFETY: slabs on our lists are live and ours.
            let s = unsafe { &*slab };
            self.draining.remove(s);
            s.flags.set(s.flags.get() & !FLAG_DRAINING);
            self.avail.push(s);
        }
    }

    fn take_from(&mut self, slab: &Slab, owner_at: impl FnOnce(BlockPlace) -> u32) -> NonNull<u8> {
        // SAFETY: `refill` returned true, so `free` is non-empty; we own the slab.
        let block = unsafe { slab.pop_unchecked() } as usize;
        // The next block of this slab's free list is the next allocation's: a compactor allocates one
        // per move, and the list is in free order (scattered), so start its load now.
        crate::os::prefetch(slab.free.get().cast());
        set_live(block, true);
        let start = slab.start.get() as usize;
        let index = (((block - start) as u64 * self.magic) >> INDEX_SHIFT) as usize;
        let unit = (start - crate::region::data_start()) >> crate::size_class::UNIT_SHIFT;
        let owner = owner_at(BlockPlace { unit, index });
        // SAFETY: the back-map entry of a block in a movable arena lies in the arena's metadata units.
        unsafe { backmap_slot(start, index).write(owner) };
        // SAFETY: blocks are non-null addresses inside an arena.
        unsafe { NonNull::new_unchecked(block as *mut u8) }
    }

    fn new_slab(&mut self) -> Option<&'static Slab> {
        let (class, geometry) = (self.class, self.geometry);
        let units = geometry.slab_units as usize;
        let taken =
            arena::POOL
                .lock()
                .alloc_units(ArenaKind::Movable, units, self.placement, |u| {
                    // SAFETY: the units were just taken from a live arena under the pool lock.
                    let descs = unsafe { &(*u.arena).descs };
                    descs[u.first].init_with_geometry(
                        &descs[u.first + 1..u.first + units],
                        u.start(),
                        class,
                        geometry,
                        UNOWNED,
                        true,
                    );
                })?;
        crate::stats::slab_created(class);
        if self.slabs > 0 {
            // The heap fills slabs one after another: a second slab will be used whole, so fault it
            // in with one call rather than a page fault per page. (A heap's first slab stays lazy,
            // so a cache holding a handful of objects keeps a handful of pages.)
            crate::os::populate(taken.start(), units * UNIT_BYTES);
        }
        // SAFETY: `alloc_units` initialised this descriptor; arena metadata is never unmapped while the
        // slab lives, and the heap releases the slab before dropping its reference.
        let slab: &'static Slab = unsafe { &(*taken.arena).descs[taken.first] };
        self.avail.push(slab);
        self.slabs += 1;
        Some(slab)
    }

    /// Frees a block. A slab whose last block goes is returned to its arena.
    ///
    /// # Safety
    /// - `block` was allocated by this heap and is not used afterwards.
    pub unsafe fn free(&mut self, block: NonNull<u8>) {
        let addr = block.as_ptr() as usize;
        let slab = slab_of(addr);
        debug_assert!(slab.is_movable() && slab.block_bytes.get() == self.geometry.block_bytes);
        set_live(addr, false);
        // SAFETY: the caller's contract: the block was handed out from this slab and is ours again.
        let used = unsafe { slab.push_local(block.as_ptr().cast()) };
        if slab.flags.get() & FLAG_DRAINING != 0 {
            if used == 0 {
                self.draining.remove(slab);
                self.slabs -= 1;
                release_slab_to_arena(slab);
            }
            return;
        }
        if slab.is_full_parked() {
            slab.flags.set(slab.flags.get() & !FLAG_FULL);
            self.full.remove(slab);
            self.avail.push(slab);
        }
        if used == 0 {
            self.avail.remove(slab);
            self.slabs -= 1;
            release_slab_to_arena(slab);
        }
    }

    /// The owner recorded for a live block of this heap.
    ///
    /// # Safety
    /// - `block` is a live block of this heap.
    pub unsafe fn owner_of(&self, block: NonNull<u8>) -> u32 {
        // SAFETY: the caller's contract; the entry lies in the arena's metadata units.
        unsafe { backmap_entry(block.as_ptr() as usize).read() }
    }

    /// Re-records the owner of a live block.
    ///
    /// # Safety
    /// - `block` is a live block of this heap.
    pub unsafe fn set_owner(&mut self, block: NonNull<u8>, owner: u32) {
        // SAFETY: as for `owner_of`.
        unsafe { backmap_entry(block.as_ptr() as usize).write(owner) };
    }

    /// Whether the block at `addr` is allocated (false for any address that is not a block start).
    ///
    /// # Safety
    /// - `addr` lies in a slab of this heap.
    pub unsafe fn is_live(&self, addr: usize) -> bool {
        let (word, bit) = live_bit(addr);
        word.load(Ordering::Relaxed) & bit != 0
    }

    /// Every slab of the heap.
    pub fn slabs(&self) -> impl Iterator<Item = SlabView> + '_ {
        let mut lists = [self.avail.head(), self.full.head(), self.draining.head()].into_iter();
        let mut slab: *mut Slab = ptr::null_mut();
        core::iter::from_fn(move || loop {
            if slab.is_null() {
                slab = lists.next()?;
                continue;
            }
            // SAFETY: slabs on our lists are live and ours.
            let s = unsafe { &*slab };
            slab = s.next.get();
            return Some(view_of(s));
        })
    }

    /// Calls `visit(block, owner)` for every live block of a slab of this heap, in address order.
    ///
    /// A slab's back-map entries are a column of the row-major back-map, a cache line apart or more,
    /// so each is a cache miss: they are found from the bitmap and prefetched `BATCH` at a time, and
    /// read (and visited) only then, so that the misses overlap instead of following one another.
    pub fn for_each_live(&self, slab: &SlabView, mut visit: impl FnMut(NonNull<u8>, u32)) {
        const BATCH: usize = 64;
        let mut batch = [(0usize, ptr::null_mut::<u32>()); BATCH];
        let mut pending = 0;
        let mut drain = |batch: &[(usize, *mut u32)]| {
            for &(addr, entry) in batch {
                // SAFETY: the entry of a live block of a movable arena, in its metadata units; block
                // addresses are non-null.
                unsafe { visit(NonNull::new_unchecked(addr as *mut u8), entry.read()) };
            }
        };
        // Only block starts carry bits, so every set bit in the slab's words is a live block: scan
        // the words (64 granules each) and their set bits, not every block.
        let end = slab.start + slab.capacity * slab.block_bytes;
        let (first, _) = live_bit(slab.start);
        let words = (end - slab.start).div_ceil(LIVE_GRANULE * 64);
        let first_granule = (slab.start & arena::ARENA_MASK) / LIVE_GRANULE;
        debug_assert_eq!(first_granule % 64, 0, "slabs start on a bitmap word");
        let base = slab.start & !arena::ARENA_MASK;
        for w in 0..words {
            // SAFETY: the slab's words follow one another in the arena's bitmap.
            let mut bits = unsafe { &*(first as *const AtomicU64).add(w) }.load(Ordering::Relaxed);
            while bits != 0 {
                let granule = first_granule + w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let addr = base + granule * LIVE_GRANULE;
                if addr >= end {
                    break;
                }
                let index = ((addr - slab.start) as u64 * self.magic) >> INDEX_SHIFT;
                let entry = backmap_slot(slab.start, index as usize);
                crate::os::prefetch(entry.cast());
                batch[pending] = (addr, entry);
                pending += 1;
                if pending == BATCH {
                    drain(&batch);
                    pending = 0;
                }
            }
        }
        drain(&batch[..pending]);
    }

    /// Number of slabs held.
    pub fn slab_count(&self) -> usize {
        self.slabs
    }
}

impl Drop for MovableHeap {
    /// Returns every slab. Blocks still live are lost to their owners (the heap's owner must have
    /// dropped them), but their memory goes back.
    fn drop(&mut self) {
        for list in [&self.avail, &self.full, &self.draining] {
            loop {
                let slab = list.head();
                if slab.is_null() {
                    break;
                }
                // SAFETY: slabs on our lists are live and ours.
                let s = unsafe { &*slab };
                list.remove(s);
                let bytes = s.block_bytes.get() as usize;
                for index in 0..s.capacity.get() as usize {
                    let (word, bit) = live_bit(s.start.get() as usize + index * bytes);
                    word.fetch_and(!bit, Ordering::Relaxed);
                }
                s.free.set(ptr::null_mut());
                s.local_free.set(ptr::null_mut());
                s.set_used(0);
                release_slab_to_arena(s);
            }
        }
    }
}

fn view_of(s: &Slab) -> SlabView {
    SlabView {
        start: s.start.get() as usize,
        block_bytes: s.block_bytes.get() as usize,
        capacity: s.capacity.get() as usize,
        live: s.used() as usize,
        arena: s.start.get() as usize & !arena::ARENA_MASK,
        arena_serial: arena::serial_of(s),
    }
}

/// Unmaps every movable arena that holds no slab now (rather than after the decommit delay), and
/// decommits the free units of the others. Returns the bytes given back.
pub fn release_free_arenas() -> usize {
    release_movable(true)
}

/// What [`release_free_arenas`] does, for arenas that have had free memory for the decommit delay
/// (50 ms) only. Cheaper for the process's other threads, when called often: each unmapping or
/// decommit makes the kernel interrupt every CPU running one of them to flush its TLB, and an arena
/// that empties and is needed again soon is reused instead of unmapped and mapped again.
pub fn release_aged_arenas() -> usize {
    release_movable(false)
}

/// Unmaps the movable arenas that hold no slab now, but `keep` of them, which stay mapped for the
/// next slabs (so that a program that makes and drops caches does not map and fault in an arena
/// each time); arenas that still hold slabs are left alone. Returns the bytes given back. What a
/// relocating cache calls when it is dropped.
pub fn release_free_arenas_but(keep: usize) -> usize {
    arena::POOL
        .lock()
        .release_free_beyond(ArenaKind::Movable, keep)
}

fn release_movable(force: bool) -> usize {
    arena::POOL
        .lock()
        .maintain_kinds(&[ArenaKind::Movable], crate::os::now_ms(), force)
}

/// Whether `addr` lies in a movable arena's part of the address space (for callers that must tell
/// movable blocks apart; any address may be asked about).
pub fn is_movable_address(addr: usize) -> bool {
    crate::region::is_data(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::UNIT_BYTES;

    #[test]
    fn heaps_share_arenas_while_small_and_keep_to_their_group_after() {
        // Heaps 0 and 2 in one group, heap 1 in another, making one-unit slabs by turns: an
        // arena's worth of them each in the shared arenas, then as many again in their groups.
        let groups = [0xA11CE, 0xB0B, 0xA11CE];
        let mut heaps: Vec<MovableHeap> = (0..groups.len())
            .map(|_| MovableHeap::new(4096).unwrap())
            .collect();
        assert_eq!(heaps[0].geometry.slab_units, 1);
        let per_slab = heaps[0].slab_capacity();
        let small = arena::UNITS_PER_ARENA * per_slab;
        let mut blocks = vec![Vec::new(); heaps.len()];
        for i in 0..2 * small {
            for ((heap, blocks), &group) in heaps.iter_mut().zip(&mut blocks).zip(&groups) {
                if i == small {
                    heap.set_arena_group(group);
                }
                blocks.push(heap.alloc(0).unwrap());
            }
        }
        let arenas = |blocks: &[NonNull<u8>]| {
            let mut arenas: Vec<usize> = blocks
                .iter()
                .map(|b| b.as_ptr() as usize & !arena::ARENA_MASK)
                .collect();
            arenas.sort_unstable();
            arenas.dedup();
            arenas
        };
        let early: Vec<Vec<usize>> = blocks.iter().map(|b| arenas(&b[..small])).collect();
        let late: Vec<Vec<usize>> = blocks.iter().map(|b| arenas(&b[small..])).collect();
        assert!(
            early[0].iter().any(|arena| early[1].contains(arena)),
            "small heaps share arenas: {early:x?}"
        );
        let (a, b, c) = (&late[0], &late[1], &late[2]);
        assert!(
            a.iter()
                .chain(c)
                .all(|arena| !b.contains(arena) && !early[1].contains(arena)),
            "grown heaps keep to their group: {late:x?}, {early:x?}"
        );
        assert!(
            a.iter().any(|arena| c.contains(arena)),
            "one group's heaps share their arenas: {a:x?} {c:x?}"
        );
        for (heap, blocks) in heaps.iter_mut().zip(blocks) {
            for block in blocks {
                // SAFETY: allocated above from this heap, freed once.
                unsafe { heap.free(block) };
            }
            assert_eq!(heap.slab_count(), 0);
        }
    }

    #[test]
    fn live_blocks_and_owners_are_walkable() {
        let mut heap = MovableHeap::new(64).unwrap();
        assert_eq!(heap.block_bytes(), 64);
        let blocks: Vec<_> = (0..5000u32).map(|i| (heap.alloc(i).unwrap(), i)).collect();
        assert!(blocks
            .iter()
            .all(|(b, _)| is_movable_address(b.as_ptr() as usize)));
        for (b, i) in blocks.iter().filter(|(_, i)| i % 3 != 0) {
            // SAFETY: allocated above, freed once.
            unsafe { heap.free(*b) };
            let _ = i;
        }
        let mut seen = Vec::new();
        let views: Vec<_> = heap.slabs().collect();
        assert_eq!(views.len(), heap.slab_count());
        for view in &views {
            heap.for_each_live(view, |block, owner| {
                seen.push((block.as_ptr() as usize, owner))
            });
            assert_eq!(view.live, {
                let mut n = 0;
                heap.for_each_live(view, |_, _| n += 1);
                n
            });
        }
        seen.sort_unstable();
        let mut expected: Vec<_> = blocks
            .iter()
            .filter(|(_, i)| i % 3 == 0)
            .map(|(b, i)| (b.as_ptr() as usize, *i))
            .collect();
        expected.sort_unstable();
        assert_eq!(seen, expected);
        let keep = blocks[0].0;
        let excluded = views
            .iter()
            .find(|v| v.start <= keep.as_ptr() as usize)
            .map(|v| v.start);
        heap.begin_drain(|v| Some(v.start) == excluded);
        let moved = heap.alloc(7).unwrap();
        heap.end_drain();
        assert_ne!(Some(moved.as_ptr() as usize & !0xffff), excluded);
        // SAFETY: live block of this heap.
        assert_eq!(unsafe { heap.owner_of(moved) }, 7);
        drop(heap);
    }

    /// After scattered frees, ordered free lists hand the free blocks out again in address order within
    /// each slab, each exactly once, and never a live block.
    #[test]
    fn ordered_free_lists_allocate_forward() {
        let mut heap = MovableHeap::new(48).unwrap();
        let blocks: Vec<_> = (0..4000u32).map(|i| heap.alloc(i).unwrap()).collect();
        let mut freed = Vec::new();
        let mut z = 12345u64;
        for &block in blocks.iter().rev() {
            z = z
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if z >> 62 != 0 {
                freed.push(block.as_ptr() as usize);
                // SAFETY: allocated above, freed once.
                unsafe { heap.free(block) };
            }
        }
        heap.order_free_lists(usize::MAX);
        let mut again: Vec<usize> = (0..freed.len())
            .map(|_| heap.alloc(0).unwrap().as_ptr() as usize)
            .collect();
        for pair in again.windows(2) {
            let same_slab = pair[0] & !(UNIT_BYTES - 1) == pair[1] & !(UNIT_BYTES - 1);
            assert!(
                !same_slab || pair[0] < pair[1],
                "not in address order: {pair:x?}"
            );
        }
        again.sort_unstable();
        freed.sort_unstable();
        assert_eq!(again, freed, "exactly the freed blocks come back");
    }

    /// Slabs are re-linked when their first allocation comes: a block freed after the order was
    /// given joins the ordered list, and a drain that ends first leaves the lists valid.
    #[test]
    fn ordered_free_lists_take_late_frees_and_end_early() {
        let mut heap = MovableHeap::new(64).unwrap();
        // Whole slabs, so that every page is threaded and no fresh block comes before a freed one.
        let count = 3 * heap.slab_capacity() as u32;
        let blocks: Vec<_> = (0..count).map(|i| heap.alloc(i).unwrap()).collect();
        let mut freed: Vec<usize> = Vec::new();
        for &block in blocks.iter().step_by(3) {
            freed.push(block.as_ptr() as usize);
            // SAFETY: allocated above, freed once.
            unsafe { heap.free(block) };
        }
        heap.order_free_lists(usize::MAX);
        // Freed after the order, before any allocation: the re-link finds it.
        freed.push(blocks[1].as_ptr() as usize);
        // SAFETY: allocated above, freed once.
        unsafe { heap.free(blocks[1]) };
        let mut again: Vec<usize> = (0..10)
            .map(|_| heap.alloc(0).unwrap().as_ptr() as usize)
            .collect();
        assert!(again.windows(2).all(|p| p[0] < p[1]), "{again:x?}");
        heap.end_drain();
        again.extend((again.len()..freed.len()).map(|_| heap.alloc(0).unwrap().as_ptr() as usize));
        again.sort_unstable();
        freed.sort_unstable();
        assert_eq!(again, freed, "exactly the freed blocks come back");
    }

    /// Exact block sizes: every multiple of 8 up to 1 KiB, then a spread to 36 KiB. The walk finds
    /// exactly the live blocks with their owners (the division-free block index of the back-map is
    /// exact for every block size and slab length).
    #[test]
    fn every_block_size_walks_its_live_blocks() {
        let sizes = (MIN_MOVABLE_BYTES..=1024)
            .step_by(8)
            .chain((1032..=MAX_MOVABLE_BYTES).step_by(1032))
            .chain([MAX_SMALL_BYTES, MAX_SMALL_BYTES + 8])
            .chain([MAX_MOVABLE_BYTES - 8, MAX_MOVABLE_BYTES]);
        for bytes in sizes {
            let mut heap = MovableHeap::new(bytes).unwrap();
            assert_eq!(heap.block_bytes(), bytes);
            let geometry = movable_geometry(bytes, 8).unwrap();
            let count = (3 * geometry.capacity).max(7);
            let blocks: Vec<_> = (0..count).map(|i| (heap.alloc(i).unwrap(), i)).collect();
            let mut expected = Vec::new();
            for &(block, owner) in &blocks {
                assert_eq!(block.as_ptr() as usize % 8, 0);
                if owner % 3 == 1 {
                    expected.push((block.as_ptr() as usize, owner));
                    // SAFETY: a live block of this heap.
                    assert_eq!(unsafe { heap.owner_of(block) }, owner);
                } else {
                    // SAFETY: allocated above, freed once.
                    unsafe { heap.free(block) };
                }
            }
            let mut seen = Vec::new();
            for view in heap.slabs().collect::<Vec<_>>() {
                assert_eq!(view.capacity, geometry.capacity as usize);
                heap.for_each_live(&view, |block, owner| {
                    seen.push((block.as_ptr() as usize, owner))
                });
            }
            seen.sort_unstable();
            expected.sort_unstable();
            assert_eq!(seen, expected, "{bytes} B blocks");
            drop(heap);
        }
    }

    /// Every size and alignment: the block holds the request, is aligned, and the slab loses little.
    #[test]
    fn geometry_is_exact_aligned_and_tight() {
        for align in [1, 8, 16, 64, 256, 4096] {
            for bytes in 0..=MAX_MOVABLE_BYTES {
                // Every size up to the largest block fits, at every alignment up to a unit.
                let g = movable_geometry(bytes, align).expect("a slab geometry");
                let block = g.block_bytes as usize;
                assert!(block >= bytes.max(MIN_MOVABLE_BYTES) && block % align.max(8) == 0);
                assert!(block < bytes.max(MIN_MOVABLE_BYTES) + align.max(8));
                let slab = g.slab_units as usize * UNIT_BYTES;
                assert!(g.capacity as usize * block <= slab);
                assert!(g.capacity >= 2 && g.capacity as usize <= arena::BACKMAP_ROWS);
                assert!(
                    (slab - g.capacity as usize * block) * 8 <= slab,
                    "{bytes} B, align {align}: {g:?}"
                );
            }
        }
        assert!(movable_geometry(MAX_MOVABLE_BYTES + 1, 8).is_none());
        assert!(movable_geometry(64, 2 * UNIT_BYTES).is_none());
    }
}
