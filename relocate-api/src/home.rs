//! Home slots: handle-table indices that name a block's place, so a read can find an object without
//! waiting for its slot.
//!
//! A plain handle table costs a `get` two dependent cache misses after the handle: the slot, then
//! the object at the address the slot holds. A cache that owns its table (every [`crate::RelocCache`]
//! but the byte-blob classes) instead gives each block of the movable region a *home* slot, whose
//! index the block's place determines:
//!
//! ```text
//!   index = (unit << shift) | block          unit:  the slab's first 64 KiB unit in the region
//!                                            block: the block's index in its slab (< 2^shift)
//!   home  = data_start + (unit << 16) + block * block_bytes
//! ```
//!
//! `shift` is the slab's capacity rounded up to a power of two, so a slab's indices are
//! `unit << shift ..` that plus its capacity, and slabs (which start at least one unit apart) never
//! share one. An insert takes its block's home slot when that slot is free, and a *spare* slot
//! otherwise. While an object is live at its home and nobody holds it, its slot holds the *home word*:
//! the bits of the object's handle themselves (see `slot`). A read computes the home address from
//! the index alone and loads the object there in parallel with the slot, then compares the slot
//! with its handle: equal, the object is live at its home, under the handle's generation and the
//! cache's tag (one compare, which the branch predictor gets right for objects at home). For an
//! object elsewhere (moved by compaction, or inserted into a block whose home slot was taken) the
//! slot holds a normal word and the read takes the address from it, as before. Correctness never
//! rests on the home: the slot decides.
//!
//! Which slots are used how (all under the cache's lock):
//! - Spares are claimed from the top of the index space down (`Inner::spare_floor`): indices at or
//!   above the floor are spares for good, listed as free (see `free`) when vacant. A claim that
//!   reaches down into home slots converts the free ones and skips the used ones (which become spares
//!   when they come back).
//! - Below the floor, a slot that comes back from a removal is *parked* (see `slot`): it waits for
//!   its home block's next object. A parked slot whose block is occupied by a moved-in object just
//!   waits longer.
//! - The table must grow with the cache's objects, not with every unit its slabs ever used (slabs
//!   emptied by compaction are made again elsewhere). So a fresh home slot is taken only while the
//!   cache has used fewer than 1.5 slots per live object plus a run; past that bound new objects
//!   take vacant slots away from home, and when a quarter of the used slots are parked, all parked
//!   slots are listed as free (`Inner::may_touch_more`, `Inner::list_parked_slots`).
//! - Blocks beyond the index space (a region used past `2^INDEX_BITS >> shift` units) have no home:
//!   their objects take spares.
//!
//! A `get` computes home addresses from constants for its `T` ([`HomeOf`]) and one load (the base).
//! A byte-blob class shares its table with the other classes, which claim runs of it, so it has no
//! homes ([`Homes::NONE`], base 0: its home addresses are not blocks').

use crate::slot::INDEX_BITS;
use alloc_core::movable::{movable_geometry, BlockPlace, MovableHeap};
use alloc_core::size_class::UNIT_SHIFT;
use core::marker::PhantomData;

/// The home geometry of one cache (see the module doc).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Homes {
    data_start: usize,
    /// log2 of the index stride of a unit (`INDEX_BITS` for no homes: every index's unit part then
    /// shifts to 0).
    shift: u32,
    /// `(1 << shift) - 1`, or 0 for no homes.
    mask: u32,
    /// The block size, or 0 for no homes.
    block_bytes: usize,
}

impl Homes {
    /// No homes: every home address is 0.
    pub(crate) const NONE: Self = Self {
        data_start: 0,
        shift: INDEX_BITS,
        mask: 0,
        block_bytes: 0,
    };

    /// The homes of `heap`'s blocks (the movable region is reserved).
    pub(crate) fn of(heap: &MovableHeap) -> Self {
        let shift = heap.slab_capacity().next_power_of_two().trailing_zeros();
        Self {
            data_start: alloc_core::movable::data_start(),
            shift,
            mask: (1 << shift) - 1,
            block_bytes: heap.block_bytes(),
        }
    }

    pub(crate) fn exist(&self) -> bool {
        self.block_bytes != 0
    }

    /// The home address of slot `index` (0 for no homes).
    #[cfg(test)]
    pub(crate) fn address(&self, index: u32) -> usize {
        let unit = (index >> self.shift) as usize;
        let block = (index & self.mask) as usize;
        self.data_start + (unit << UNIT_SHIFT) + block * self.block_bytes
    }

    /// Where home addresses are counted from: the region's data, or 0 for no homes.
    pub(crate) fn base(&self) -> usize {
        self.data_start
    }

    /// The home slot of the block at `place`, if it has one.
    pub(crate) fn index(&self, place: BlockPlace) -> Option<u32> {
        if !self.exist() || place.unit >= 1 << (INDEX_BITS - self.shift) {
            return None;
        }
        debug_assert!(place.index <= self.mask as usize);
        Some((place.unit << self.shift | place.index) as u32)
    }

    /// Whether a cache of `T` (with homes) has the geometry `HomeOf<T>` computed at compile time.
    pub(crate) fn is_that_of<T>(&self) -> bool {
        self.shift == HomeOf::<T>::SHIFT && self.block_bytes == HomeOf::<T>::BLOCK_BYTES
    }

    /// The home slots of the slab whose first unit is `unit`: a range as long as the stride.
    pub(crate) fn unit_slots(&self, unit: u32) -> std::ops::Range<u32> {
        let start = unit << self.shift;
        start..start + self.mask + 1
    }

    /// The unit part of home slot `index`.
    pub(crate) fn unit_of(&self, index: u32) -> u32 {
        index >> self.shift
    }
}

/// The home geometry of a cache of `T`'s own blocks (`size_of::<T>()` bytes, aligned to `T`), at
/// compile time: a `get` computes the home address with constant shifts and a constant multiplier,
/// from the handle and one load (the base), so the object's load can start as soon as the handle
/// is known.
pub(crate) struct HomeOf<T>(PhantomData<T>);

impl<T> HomeOf<T> {
    const GEOMETRY: (u32, usize) = match movable_geometry(size_of::<T>(), align_of::<T>()) {
        Some(g) => (
            (g.capacity as usize).next_power_of_two().trailing_zeros(),
            g.block_bytes as usize,
        ),
        // A type too large for a slab makes no cache.
        None => (INDEX_BITS, 0),
    };
    const SHIFT: u32 = Self::GEOMETRY.0;
    const BLOCK_BYTES: usize = Self::GEOMETRY.1;

    /// The home address of slot `index`, from `base` ([`Homes::base`]: 0 for a cache without homes,
    /// whose home addresses are then never a block's; a `get` reads at them only if the slot says so).
    #[inline]
    pub(crate) fn address(base: usize, index: u32) -> usize {
        let unit = (index >> Self::SHIFT) as usize;
        let block = (index & ((1 << Self::SHIFT) - 1)) as usize;
        base + (unit << UNIT_SHIFT) + block * Self::BLOCK_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_home_index_names_its_block_and_no_other() {
        assert!(alloc_core::movable::reserve_movable_region());
        for bytes in [8, 24, 64, 200, 1000, 3000, 32 << 10] {
            let mut heap = MovableHeap::new(bytes).expect("a movable size");
            let homes = Homes::of(&heap);
            let mut seen = std::collections::HashSet::new();
            let mut blocks = Vec::new();
            for _ in 0..3 * heap.slab_capacity() {
                let mut place = None;
                let block = heap
                    .alloc_placed(|p| {
                        place = Some(p);
                        0
                    })
                    .expect("memory");
                let index = homes.index(place.expect("called")).expect("a home");
                assert_eq!(homes.address(index), block.as_ptr() as usize, "{bytes} B");
                assert!(homes.unit_slots(homes.unit_of(index)).contains(&index));
                assert!(seen.insert(index), "two blocks share home {index}");
                blocks.push(block);
            }
            for block in blocks {
                // SAFETY: allocated above from this heap.
                unsafe { heap.free(block) };
            }
        }
        let heap = MovableHeap::new(size_of::<[u64; 8]>()).expect("a movable size");
        let homes = Homes::of(&heap);
        assert!(homes.is_that_of::<[u64; 8]>());
        assert!(Homes::of(&MovableHeap::new(24).expect("movable")).is_that_of::<[u8; 24]>());
        for index in [0, 1, 1023, 1024, 5 << 10 | 17, (1 << INDEX_BITS) - 1] {
            let at = HomeOf::<[u64; 8]>::address(homes.base(), index);
            assert_eq!(at, homes.address(index));
        }
        assert_eq!(Homes::NONE.address(12345), 0);
        assert_eq!(Homes::NONE.address(u32::MAX >> 4), 0);
        assert!(Homes::NONE
            .index(BlockPlace { unit: 0, index: 0 })
            .is_none());
    }
}
