//! The handle table: slots that never move, in one reservation of address space.
//!
//! The table reserves `max_slots` slots (8 bytes each) and as many pin counters (4 bytes each) as
//! read-only address space when the cache is made, and makes them writable `CHUNK_SLOTS` at a time as
//! handles are first used. Nothing is ever copied or unmapped while the table lives, so a reader that
//! found a slot can keep using it without any lock. Fresh pages are zero, and an all-zero slot is
//! vacant; pin counters are only ever touched by caches that pin, so for the others they stay
//! non-resident.
//!
//! Readers ([`SlotTable::for_read`]) check an index only against `max_slots`, a field that never
//! changes, not against the committed part (an atomic that growth writes): a slot above it reads as
//! zero, vacant, from the kernel's shared zero page, which is not counted as resident. (A forged
//! handle can so make the kernel map the zero page at an unused index: page tables, at most 8 bytes
//! per 4 KiB of reservation, about 6 MiB for a whole `RelocCache` table.) Whatever writes to a slot
//! (or a pin count) finds it with [`SlotTable::get`], bounded by the committed part.
//!
//! The table does not ask for transparent huge pages: a huge page makes a whole 2 MiB resident for
//! the first slot used in it, and the table's resident size is part of the cache's footprint (in the
//! `handles` benchmark, huge pages for the table made no measurable difference to `get`).

use crate::slot::{PinGate, Pins, Slot};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Slots made accessible at a time: 128 KiB of slots and 64 KiB of pins, whole pages for every page
/// size up to 64 KiB.
const CHUNK_SLOTS: usize = 16 << 10;
pub(crate) struct SlotTable {
    /// The reservation: `max_slots` slots, then `max_slots` pin counters.
    base: *mut u8,
    max_slots: usize,
    /// Slots below this index are writable (`Release` after `mprotect`, `Acquire` by writers that
    /// look a slot up; readers do not read it).
    committed: AtomicUsize,
    /// Open once any slot has been pinned: until then a move never reads (or faults in) a pin count.
    gate: PinGate,
}

// SAFETY: the table only hands out shared references to atomics in memory it owns until drop.
unsafe impl Send for SlotTable {}
// SAFETY: as above; growth is serialised by the caller and published through `committed`.
unsafe impl Sync for SlotTable {}

impl SlotTable {
    /// A table for up to `max_slots` slots, or `None` if the address space cannot be reserved.
    pub(crate) fn new(max_slots: usize) -> Option<Self> {
        let max_slots = max_slots.next_multiple_of(CHUNK_SLOTS);
        // SAFETY: an anonymous private mapping chosen by the kernel; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                Self::reserved_bytes(max_slots),
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        Some(Self {
            base: base.cast(),
            max_slots,
            committed: AtomicUsize::new(0),
            gate: PinGate::new(),
        })
    }

    fn reserved_bytes(max_slots: usize) -> usize {
        max_slots * (size_of::<Slot>() + size_of::<Pins>())
    }

    fn pins_base(&self) -> *mut u8 {
        // SAFETY: the pin counters start right after the slots, inside the reservation.
        unsafe { self.base.add(self.max_slots * size_of::<Slot>()) }
    }

    /// The slot at `index` for reading only, if it lies in the reservation (wait-free). Above the
    /// committed part it reads as vacant.
    #[inline]
    pub(crate) fn for_read(&self, index: u32) -> Option<ReadOnlySlot<'_>> {
        if index as usize >= self.max_slots {
            return None;
        }
        // SAFETY: inside the reservation, which is readable (zero where not yet committed) for the
        // table's life; `Slot` is one `AtomicU64`, valid for any bits.
        Some(ReadOnlySlot(unsafe {
            &*self.base.cast::<Slot>().add(index as usize)
        }))
    }

    /// The slot at `index`, if it has been made writable (wait-free).
    #[inline]
    pub(crate) fn get(&self, index: u32) -> Option<&Slot> {
        if index as usize >= self.committed.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: below `committed`, the slot is accessible, zero-initialised memory that lives as long
        // as the table, and `Slot` is one `AtomicU64` (valid for any bits).
        Some(unsafe { &*self.base.cast::<Slot>().add(index as usize) })
    }

    /// Starts loading the slot at `index` and its pin count into the cache (a hint; nothing for slots
    /// beyond the accessible ones).
    #[inline]
    pub(crate) fn prefetch(&self, index: u32) {
        if let Some(slot) = self.get(index) {
            alloc_core::os::prefetch((slot as *const Slot).cast());
            if self.gate.is_open() {
                alloc_core::os::prefetch((self.pins(index) as *const Pins).cast());
            }
        }
    }

    /// The table's pin gate (see `slot`).
    pub(crate) fn pin_gate(&self) -> &PinGate {
        &self.gate
    }

    /// The pin counter of the slot at `index`, which `get` returned.
    #[inline]
    pub(crate) fn pins(&self, index: u32) -> &Pins {
        debug_assert!((index as usize) < self.committed.load(Ordering::Relaxed));
        // SAFETY: as in `get`: the counters of committed slots are accessible and zero-initialised.
        unsafe { &*self.pins_base().cast::<Pins>().add(index as usize) }
    }

    /// Slots accessible now.
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
            let end = (index + 1)
                .next_multiple_of(CHUNK_SLOTS)
                .min(self.max_slots);
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
            self.committed.store(end, Ordering::Release);
        }
        self.get(index as u32)
    }
}

/// A slot that may lie in the read-only part of the table: it can only be read.
pub(crate) struct ReadOnlySlot<'t>(&'t Slot);

impl ReadOnlySlot<'_> {
    /// See [`Slot::read`].
    #[inline]
    pub(crate) fn read(&self, gen: u32) -> Option<usize> {
        self.0.read(gen)
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
        // SAFETY: the whole reservation, mapped in `new`; no reader outlives the table.
        unsafe { libc::munmap(self.base.cast(), Self::reserved_bytes(self.max_slots)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_appear_a_chunk_at_a_time_and_stay_put() {
        let table = SlotTable::new(3 * CHUNK_SLOTS).expect("reservation");
        assert!(table.get(0).is_none());
        let first = table.get_or_grow(0).expect("grow") as *const Slot;
        assert_eq!(table.committed(), CHUNK_SLOTS);
        assert!(table.get(CHUNK_SLOTS as u32 - 1).is_some());
        assert!(table.get(CHUNK_SLOTS as u32).is_none());
        let far = table.get_or_grow(2 * CHUNK_SLOTS as u32 + 5).expect("grow");
        assert_eq!(far.generation(), 0);
        assert_eq!(table.committed(), 3 * CHUNK_SLOTS);
        assert_eq!(table.get(0).map(|s| s as *const Slot), Some(first));
        assert!(table.get_or_grow(3 * CHUNK_SLOTS as u32).is_none(), "full");
        assert!(table.get(u32::MAX).is_none());
        // Readers may look past the committed part: those slots read as vacant.
        assert_eq!(
            table
                .for_read(2 * CHUNK_SLOTS as u32 + 5)
                .map(|s| s.read(0)),
            Some(None)
        );
        let uncommitted = SlotTable::new(4 * CHUNK_SLOTS).expect("reservation");
        assert_eq!(
            uncommitted
                .for_read(3 * CHUNK_SLOTS as u32)
                .map(|s| s.read(0)),
            Some(None)
        );
        assert!(uncommitted.for_read(4 * CHUNK_SLOTS as u32).is_none());
        assert!(uncommitted.get(0).is_none());
        let pins = table.pins(7);
        pins.fetch_add(1, Ordering::Relaxed);
        assert_eq!(table.pins(7).load(Ordering::Relaxed), 1);
    }
}
