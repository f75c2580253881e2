//! The handle table: slots that never move.
//!
//! Segment `k` holds `FIRST_SEGMENT << k` slots and is allocated (zeroed: an all-zero slot is vacant)
//! the first time an index falls in it; existing segments are never copied or freed while the table
//! lives, so a reader that found a slot can keep using it without any lock. Index → segment is a
//! leading-zeros computation. 24 segments give 2^34 slots, more than a `u32` index can name.

use crate::slot::Slot;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::atomic::{AtomicPtr, Ordering};

const FIRST_SEGMENT_SHIFT: u32 = 10;
const FIRST_SEGMENT: usize = 1 << FIRST_SEGMENT_SHIFT;
const SEGMENTS: usize = 24;

pub(crate) struct SlotTable {
    segments: [AtomicPtr<Slot>; SEGMENTS],
}

/// (segment, offset) of a slot index.
#[inline]
fn locate(index: u32) -> (usize, usize) {
    let biased = index as usize + FIRST_SEGMENT;
    let segment = (usize::BITS - 1 - biased.leading_zeros() - FIRST_SEGMENT_SHIFT) as usize;
    (segment, biased - (FIRST_SEGMENT << segment))
}

fn segment_layout(segment: usize) -> Layout {
    Layout::array::<Slot>(FIRST_SEGMENT << segment).expect("segment layout")
}

impl SlotTable {
    pub(crate) fn new() -> Self {
        Self {
            segments: [const { AtomicPtr::new(core::ptr::null_mut()) }; SEGMENTS],
        }
    }

    /// The slot at `index`, if its segment exists (wait-free).
    #[inline]
    pub(crate) fn get(&self, index: u32) -> Option<&Slot> {
        let (segment, offset) = locate(index);
        let base = self.segments[segment].load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        // SAFETY: a published segment holds `FIRST_SEGMENT << segment` initialised slots and lives as
        // long as the table; `offset` is below that.
        Some(unsafe { &*base.add(offset) })
    }

    /// The slot at `index`, allocating its segment if needed. Callers serialise growth (the cache's
    /// lock). `None` when memory is exhausted.
    pub(crate) fn get_or_grow(&self, index: u32) -> Option<&Slot> {
        let (segment, _) = locate(index);
        if self.segments[segment].load(Ordering::Acquire).is_null() {
            // SAFETY: the layout is non-zero-sized; zeroed bytes are vacant slots.
            let base = unsafe { alloc_zeroed(segment_layout(segment)) }.cast::<Slot>();
            if base.is_null() {
                return None;
            }
            self.segments[segment].store(base, Ordering::Release);
        }
        self.get(index)
    }
}

impl Drop for SlotTable {
    fn drop(&mut self) {
        for (segment, base) in self.segments.iter().enumerate() {
            let base = base.load(Ordering::Relaxed);
            if !base.is_null() {
                // SAFETY: allocated in `get_or_grow` with this layout; no reader outlives the table.
                unsafe { dealloc(base.cast(), segment_layout(segment)) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_map_to_disjoint_segment_offsets() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(1023), (0, 1023));
        assert_eq!(locate(1024), (1, 0));
        assert_eq!(locate(3071), (1, 2047));
        assert_eq!(locate(3072), (2, 0));
        let (segment, offset) = locate(u32::MAX);
        assert!(segment < SEGMENTS && offset < FIRST_SEGMENT << segment);
    }
}
