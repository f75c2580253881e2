//! The handle table: slots that never move, in one reservation of address space.
//!
//! The table reserves `max_slots` slots (8 bytes each) and as many pin counters (4 bytes each) as
//! inaccessible address space when the cache is made, and makes them accessible `CHUNK_SLOTS` at a
//! time as handles are first used. Nothing is ever copied or unmapped while the table lives, so a
//! reader that found a slot can keep using it without any lock, and finding slot `i` is one bounds
//! check against `committed` and an add: no segment lookup on the read path. Fresh pages are zero,
//! and an all-zero slot is vacant; pin counters are only ever touched by caches that pin, so for the
//! others they stay non-resident.
//!
//! Large tables are read at random, so their TLB misses cost as much as their cache misses: the slot
//! part of the reservation is advised for transparent huge pages, and once the table passes
//! `HUGE_SLOTS` it grows a whole 2 MiB (aligned) at a time, so that the kernel can back each new step
//! with one huge page. Small tables keep growing by `CHUNK_SLOTS` (a huge page is only used where a
//! whole aligned 2 MiB is accessible when first touched), so a small cache costs small pages.

use crate::slot::{Pins, Slot};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Slots made accessible at a time: 128 KiB of slots and 64 KiB of pins, whole pages for every page
/// size up to 64 KiB.
const CHUNK_SLOTS: usize = 16 << 10;
/// A transparent huge page.
const HUGE_BYTES: usize = 2 << 20;
/// Slots in 2 MiB: the growth step of large tables.
const HUGE_SLOTS: usize = HUGE_BYTES / size_of::<Slot>();

pub(crate) struct SlotTable {
    /// The mapping (2 MiB more than the reservation, for alignment) and its length.
    mapping: *mut u8,
    mapping_bytes: usize,
    /// The reservation, 2 MiB aligned inside the mapping: `max_slots` slots, then `max_slots` pin
    /// counters.
    base: *mut u8,
    max_slots: usize,
    /// Slots below this index are accessible (`Release` after `mprotect`, `Acquire` by readers).
    committed: AtomicUsize,
}

// SAFETY: the table only hands out shared references to atomics in memory it owns until drop.
unsafe impl Send for SlotTable {}
// SAFETY: as above; growth is serialised by the caller and published through `committed`.
unsafe impl Sync for SlotTable {}

impl SlotTable {
    /// A table for up to `max_slots` slots, or `None` if the address space cannot be reserved.
    pub(crate) fn new(max_slots: usize) -> Option<Self> {
        let max_slots = max_slots.next_multiple_of(HUGE_SLOTS);
        let mapping_bytes = Self::reserved_bytes(max_slots) + HUGE_BYTES;
        // SAFETY: an anonymous private mapping chosen by the kernel; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                mapping_bytes,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let mapping = base.cast::<u8>();
        let base = mapping.wrapping_add(mapping.align_offset(HUGE_BYTES));
        // SAFETY: the slot part of our own fresh reservation. Advice only: failure changes nothing.
        unsafe {
            libc::madvise(
                base.cast(),
                max_slots * size_of::<Slot>(),
                libc::MADV_HUGEPAGE,
            )
        };
        Some(Self {
            mapping,
            mapping_bytes,
            base,
            max_slots,
            committed: AtomicUsize::new(0),
        })
    }

    fn reserved_bytes(max_slots: usize) -> usize {
        max_slots * (size_of::<Slot>() + size_of::<Pins>())
    }

    fn pins_base(&self) -> *mut u8 {
        // SAFETY: the pin counters start right after the slots, inside the reservation.
        unsafe { self.base.add(self.max_slots * size_of::<Slot>()) }
    }

    /// The slot at `index`, if it has been made accessible (wait-free).
    #[inline]
    pub(crate) fn get(&self, index: u32) -> Option<&Slot> {
        if index as usize >= self.committed.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: below `committed`, the slot is accessible, zero-initialised memory that lives as long
        // as the table, and `Slot` is one `AtomicU64` (valid for any bits).
        Some(unsafe { &*self.base.cast::<Slot>().add(index as usize) })
    }

    /// Starts loading the slot at `index` into the cache (a hint; nothing for slots beyond the
    /// accessible ones).
    #[inline]
    pub(crate) fn prefetch(&self, index: u32) {
        if let Some(slot) = self.get(index) {
            alloc_core::os::prefetch((slot as *const Slot).cast());
        }
    }

    /// The pin counter of the slot at `index`, which `get` returned.
    #[inline]
    pub(crate) fn pins(&self, index: u32) -> &Pins {
        debug_assert!((index as usize) < self.committed.load(Ordering::Relaxed));
        // SAFETY: as in `get`: the counters of committed slots are accessible and zero-initialised.
        unsafe { &*self.pins_base().cast::<Pins>().add(index as usize) }
    }

    /// Slots accessible now.
    #[cfg(test)]
    pub(crate) fn committed(&self) -> usize {
        self.committed.load(Ordering::Acquire)
    }

    /// The slot at `index`, making its chunk accessible if needed. Callers serialise growth (the
    /// cache's lock). `None` when the table is full or memory is exhausted.
    pub(crate) fn get_or_grow(&self, index: u32) -> Option<&Slot> {
        let committed = self.committed.load(Ordering::Relaxed);
        let index = index as usize;
        if index >= committed {
            if index >= self.max_slots {
                return None;
            }
            let step = if index >= HUGE_SLOTS {
                HUGE_SLOTS
            } else {
                CHUNK_SLOTS
            };
            let end = (index + 1).next_multiple_of(step).min(self.max_slots);
            let slots = committed * size_of::<Slot>()..end * size_of::<Slot>();
            let pins = committed * size_of::<Pins>()..end * size_of::<Pins>();
            // SAFETY: both ranges lie inside the reservation (`end <= max_slots`) and are page
            // aligned (multiples of `CHUNK_SLOTS`); making them accessible touches no live memory.
            let ok = unsafe {
                protect(self.base.add(slots.start), slots.len())
                    && protect(self.pins_base().add(pins.start), pins.len())
            };
            if !ok {
                return None;
            }
            if step == HUGE_SLOTS {
                // Write-fault the step in: a first *read* would map the zero page, and a write after
                // it gets small pages. Nobody else sees these slots before `committed` moves.
                // SAFETY: `committed` is within the accessible range just made; vacant slots are 0.
                unsafe { &*self.base.cast::<Slot>().add(committed) }.clear_vacant();
            }
            self.committed.store(end, Ordering::Release);
        }
        self.get(index as u32)
    }
}

/// Makes `bytes` at `addr` readable and writable.
///
/// # Safety
/// `addr..addr + bytes` must be page-aligned memory of this process's own mapping.
unsafe fn protect(addr: *mut u8, bytes: usize) -> bool {
    // SAFETY: the caller passes a page-aligned range of a mapping it owns.
    unsafe { libc::mprotect(addr.cast(), bytes, libc::PROT_READ | libc::PROT_WRITE) == 0 }
}

impl Drop for SlotTable {
    fn drop(&mut self) {
        // SAFETY: the whole mapping, made in `new`; no reader outlives the table.
        unsafe { libc::munmap(self.mapping.cast(), self.mapping_bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_appear_a_step_at_a_time_and_stay_put() {
        let table = SlotTable::new(1).expect("reservation");
        assert_eq!(table.base as usize % HUGE_BYTES, 0);
        assert!(table.get(0).is_none());
        let first = table.get_or_grow(0).expect("grow") as *const Slot;
        assert_eq!(table.committed(), CHUNK_SLOTS);
        assert!(table.get(CHUNK_SLOTS as u32 - 1).is_some());
        assert!(table.get(CHUNK_SLOTS as u32).is_none());
        let far = table.get_or_grow(2 * CHUNK_SLOTS as u32 + 5).expect("grow");
        assert_eq!(far.generation(), 0);
        assert_eq!(table.committed(), 3 * CHUNK_SLOTS);
        assert_eq!(table.get(0).map(|s| s as *const Slot), Some(first));
        assert!(table.get_or_grow(HUGE_SLOTS as u32 - 1).is_some());
        assert!(table.get_or_grow(HUGE_SLOTS as u32).is_none(), "full");
        assert!(table.get(u32::MAX).is_none());
        let pins = table.pins(7);
        pins.fetch_add(1, Ordering::Relaxed);
        assert_eq!(table.pins(7).load(Ordering::Relaxed), 1);
    }

    #[test]
    fn large_tables_grow_by_whole_huge_pages() {
        let table = SlotTable::new(HUGE_SLOTS + 1).expect("reservation");
        assert!(table.get_or_grow(HUGE_SLOTS as u32).is_some());
        assert_eq!(table.committed(), 2 * HUGE_SLOTS);
        assert!(table.get((2 * HUGE_SLOTS - 1) as u32).is_some());
    }
}
