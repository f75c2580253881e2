//! The handle table: slots that never move, in one reservation of address space.
//!
//! The table reserves `RESERVED_SLOTS` slots (8 bytes each, every index a handle can hold) and as many
//! pin counters (4 bytes each) as read-only address space when it is made, and makes them writable `CHUNK_SLOTS` at a time as caches
//! [`claim`](SlotTable::claim) slots. Nothing is ever copied or unmapped while the table lives, so a
//! reader that found a slot can keep using it without any lock. Fresh pages are zero, and an all-zero
//! slot is vacant; pin counters are only ever touched by caches that pin, so for the others they stay
//! non-resident.
//!
//! A table can be shared ([`SlotTable::share`]) by caches that share a tag, as the byte-blob classes
//! do: each claims runs of slots and only ever uses its own, so the index space (and with it the
//! generations, see `MAX_OBJECTS`) is one for all of them, not split between them. A sharer can
//! [`give back`](SlotTable::give_back) a run whose slots are all vacant; the next claim by any sharer
//! takes it before growing the table. Its slots keep their generations, so handles from the old
//! owner stay stale under the new one.
//!
//! Readers ([`Slots::for_read`]) do not check an index at all: every index a handle can hold lies
//! in the reservation (the index is masked to its bits), and which chunks are writable (a bitmap
//! that growth writes) is for writers: a slot elsewhere reads as zero, vacant, from the kernel's
//! shared zero page, which is not counted as resident. No load and no branch for the bound, in the `get` loop that
//! counts every instruction. (A forged
//! handle can so make the kernel map the zero page at an unused index: page tables, at most 8 bytes
//! per 4 KiB of slots, about 4 MiB for a whole table.) Whatever writes to a slot
//! (or a pin count) finds it with [`SlotTable::get`], which checks the chunk is writable.
//!
//! Sharers claim runs, and the table grows as a prefix. A cache that owns its table and uses home
//! slots (see `home`) instead makes writable whichever chunks its homes and spares fall in
//! ([`SlotTable::get_or_commit`]), so its writable chunks need not be contiguous.
//!
//! The table does not ask for transparent huge pages: a huge page makes a whole 2 MiB resident for
//! the first slot used in it, and the table's resident size is part of the cache's footprint (in the
//! `handles` benchmark, huge pages for the table made no measurable difference to `get`).

use crate::slot::INDEX_BITS;
use crate::slot::{PinGate, Pins, Slot};
use core::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Slots made accessible at a time: 128 KiB of slots and 64 KiB of pins, whole pages for every page
/// size up to 64 KiB.
pub(crate) const CHUNK_SLOTS: usize = 16 << 10;
/// Slots every table reserves: one for each index a handle can hold.
const RESERVED_SLOTS: usize = 1 << INDEX_BITS;

/// A handle to a table: the reservation's fixed geometry, copied so that a read needs no indirection,
/// and the state every sharer of the table sees.
pub(crate) struct SlotTable {
    /// The reservation: `RESERVED_SLOTS` slots, then as many pin counters.
    base: *mut u8,
    /// Slots that may be claimed (`RESERVED_SLOTS` but in tests).
    max_slots: usize,
    shared: Arc<Reservation>,
}

/// Slots below `end` have been claimed, less the runs given back and not claimed again.
#[derive(Default)]
struct Claims {
    end: usize,
    returned: Vec<Range<u32>>,
}

struct Reservation {
    base: *mut u8,
    /// One bit per chunk of `CHUNK_SLOTS` slots: set once the chunk is writable (`Release` after
    /// `mprotect`, `Acquire` by writers that look a slot up; readers do not read it).
    writable: Box<[AtomicU64]>,
    /// Chunks made writable.
    chunks: AtomicUsize,
    /// Runs claimed so far (fresh or given back), for sharers that act when slots are wanted.
    claims_made: AtomicUsize,
    /// Which slots caches have claimed; claims (and so growth) are serialised by it.
    claims: Mutex<Claims>,
    /// Open once any slot has been pinned: until then a move never reads (or faults in) a pin count.
    gate: PinGate,
}

// SAFETY: the table only hands out shared references to atomics in memory it owns until the last
// sharer drops it; `base` and `max_slots` never change.
unsafe impl Send for SlotTable {}
// SAFETY: as above; growth is serialised by `claims` and published through `writable`.
unsafe impl Sync for SlotTable {}
// SAFETY: as for `SlotTable`.
unsafe impl Send for Reservation {}
// SAFETY: as for `SlotTable`.
unsafe impl Sync for Reservation {}

impl SlotTable {
    /// A table for up to `max_slots` slots (at most `RESERVED_SLOTS`), or `None` if the address
    /// space cannot be reserved.
    pub(crate) fn new(max_slots: usize) -> Option<Self> {
        let max_slots = max_slots.next_multiple_of(CHUNK_SLOTS);
        assert!(max_slots <= RESERVED_SLOTS);
        // SAFETY: an anonymous private mapping chosen by the kernel; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                Self::reserved_bytes(),
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let base = base.cast::<u8>();
        Some(Self {
            base,
            max_slots,
            shared: Arc::new(Reservation {
                base,
                writable: (0..RESERVED_SLOTS / CHUNK_SLOTS / 64)
                    .map(|_| AtomicU64::new(0))
                    .collect(),
                chunks: AtomicUsize::new(0),
                claims_made: AtomicUsize::new(0),
                claims: Mutex::default(),
                gate: PinGate::new(),
            }),
        })
    }

    /// Another handle to the same table (for a cache that shares its index space).
    pub(crate) fn share(&self) -> Self {
        Self {
            base: self.base,
            max_slots: self.max_slots,
            shared: Arc::clone(&self.shared),
        }
    }

    fn reserved_bytes() -> usize {
        RESERVED_SLOTS * (size_of::<Slot>() + size_of::<Pins>())
    }

    fn pins_base(&self) -> *mut u8 {
        // SAFETY: the pin counters start right after the slots, inside the reservation.
        unsafe { self.base.add(RESERVED_SLOTS * size_of::<Slot>()) }
    }

    /// The table's slots for reading, as a value: see [`Slots`].
    #[inline]
    pub(crate) fn slots(&self) -> Slots<'_> {
        Slots {
            base: self.base.cast(),
            _table: PhantomData,
        }
    }

    /// Starts loading the slot at `index` into the cache: see [`Slots::prefetch`].
    #[inline]
    pub(crate) fn prefetch_slot(&self, index: u32) {
        self.slots().prefetch(index);
    }

    /// The slot at `index`, if it has been made writable (wait-free).
    #[inline]
    pub(crate) fn get(&self, index: u32) -> Option<&Slot> {
        if !self.is_writable(index) {
            return None;
        }
        // SAFETY: in a writable chunk, the slot is accessible, zero-initialised memory that lives as
        // long as the table, and `Slot` is one `AtomicU64` (valid for any bits).
        Some(unsafe { &*self.base.cast::<Slot>().add(index as usize) })
    }

    /// Whether the chunk of slot `index` has been made writable.
    #[inline]
    fn is_writable(&self, index: u32) -> bool {
        let chunk = index as usize / CHUNK_SLOTS;
        (index as usize) < self.max_slots
            && self.shared.writable[chunk / 64].load(Ordering::Acquire) & (1 << (chunk % 64)) != 0
    }

    /// The slot at `index` (below the table's size), its chunk made writable first if it is not yet.
    /// `None` if memory is exhausted. For a cache that owns its table and uses slots wherever its
    /// objects' homes are (see `home`), rather than claiming runs.
    pub(crate) fn get_or_commit(&self, index: u32) -> Option<&Slot> {
        if index as usize >= self.max_slots {
            return None;
        }
        if !self.is_writable(index) {
            let chunk = index as usize / CHUNK_SLOTS;
            let _claims = self.claims();
            if !self.is_writable(index) && !self.commit(chunk..chunk + 1) {
                return None;
            }
        }
        self.get(index)
    }

    /// Makes the chunks `chunks` writable (those that are not yet); false if `mprotect` fails. The
    /// caller holds the claims lock, which serialises commits.
    fn commit(&self, chunks: Range<usize>) -> bool {
        for chunk in chunks {
            let (word, bit) = (&self.shared.writable[chunk / 64], 1u64 << (chunk % 64));
            if word.load(Ordering::Relaxed) & bit != 0 {
                continue;
            }
            let slots = chunk * CHUNK_SLOTS * size_of::<Slot>();
            let pins = chunk * CHUNK_SLOTS * size_of::<Pins>();
            // SAFETY: both ranges lie inside the reservation (chunks below `max_slots`) and are page
            // aligned (`CHUNK_SLOTS` of either makes whole pages); making them accessible touches no
            // live memory.
            let ok = unsafe {
                protect(self.base.add(slots), CHUNK_SLOTS * size_of::<Slot>())
                    && protect(self.pins_base().add(pins), CHUNK_SLOTS * size_of::<Pins>())
            };
            if !ok {
                return false;
            }
            word.fetch_or(bit, Ordering::Release);
            self.shared.chunks.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Starts loading the slot at `index` (masked as in `for_read`) and, once any slot has been
    /// pinned, its pin count into the cache: for a move, which reads both. A hint, so no check that
    /// the chunk is writable, as in [`prefetch_slot`](Self::prefetch_slot).
    #[inline]
    pub(crate) fn prefetch(&self, index: u32) {
        self.prefetch_slot(index);
        if self.shared.gate.is_open() {
            let index = index as usize & (RESERVED_SLOTS - 1);
            alloc_core::os::prefetch(self.pins_base().wrapping_add(index * size_of::<Pins>()));
        }
    }

    /// The table's pin gate (see `slot`).
    pub(crate) fn pin_gate(&self) -> &PinGate {
        &self.shared.gate
    }

    /// The pin counter of the slot at `index`, which `get` returned.
    #[inline]
    pub(crate) fn pins(&self, index: u32) -> &Pins {
        debug_assert!(self.is_writable(index));
        // SAFETY: as in `get`: the counters of committed slots are accessible and zero-initialised.
        unsafe { &*self.pins_base().cast::<Pins>().add(index as usize) }
    }

    /// How many runs sharers have claimed so far (see [`claim`](Self::claim)).
    pub(crate) fn claims_made(&self) -> usize {
        self.shared.claims_made.load(Ordering::Relaxed)
    }

    /// Slots accessible now (in the whole table, whoever claimed them).
    pub(crate) fn committed(&self) -> usize {
        self.shared.chunks.load(Ordering::Relaxed) * CHUNK_SLOTS
    }

    /// Bytes of the table (slots and pin counts) resident now, as the kernel reports them
    /// (`mincore` over the writable chunks, one call per run of them: no other page can have been
    /// written).
    pub(crate) fn resident_bytes(&self) -> usize {
        let chunks = self.max_slots / CHUNK_SLOTS;
        let writable = |chunk: usize| self.is_writable((chunk * CHUNK_SLOTS) as u32);
        let (mut resident, mut chunk) = (0, 0);
        while chunk < chunks {
            if !writable(chunk) {
                chunk += 1;
                continue;
            }
            let start = chunk;
            while chunk < chunks && writable(chunk) {
                chunk += 1;
            }
            for (base, bytes) in [
                (self.base, size_of::<Slot>()),
                (self.pins_base(), size_of::<Pins>()),
            ] {
                resident += in_core_bytes(
                    base,
                    start * CHUNK_SLOTS * bytes,
                    chunk * CHUNK_SLOTS * bytes,
                );
            }
        }
        resident
    }

    /// Claims slots for one cache: the run given back last, if any (then of the size it was given back
    /// with: the sharers all claim alike), else the next `want` slots (fewer at the end of the table),
    /// made accessible first. `None` when the table is full or memory is exhausted.
    pub(crate) fn claim(&self, want: usize) -> Option<Range<u32>> {
        let mut claims = self.claims();
        self.shared.claims_made.fetch_add(1, Ordering::Relaxed);
        if let Some(run) = claims.returned.pop() {
            return Some(run);
        }
        let start = claims.end;
        let end = (start + want.max(1)).min(self.max_slots);
        if start == end {
            return None;
        }
        if !self.commit(start / CHUNK_SLOTS..end.div_ceil(CHUNK_SLOTS)) {
            return None;
        }
        claims.end = end;
        Some(start as u32..end as u32)
    }

    /// Gives back a run that a cache claimed and no longer uses, for the next claim by any sharer.
    /// Its slots must be vacant and reusable (a generation that has not wrapped to 0), with their free
    /// links cleared, and the cache must not touch them again: a claim hands them out as fresh.
    pub(crate) fn give_back(&self, run: Range<u32>) {
        let mut claims = self.claims();
        debug_assert!(run.end as usize <= claims.end);
        claims.returned.push(run);
    }

    /// Whether a claim would fail: every slot claimed, and no run given back.
    pub(crate) fn is_full(&self) -> bool {
        let claims = self.claims();
        claims.end == self.max_slots && claims.returned.is_empty()
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, Claims> {
        self.shared.claims.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A table's slots for reading only: its base address as a value, which a loop of reads keeps in a
/// register. (Read through the table, it would be loaded again after every read's `Acquire` fence.)
#[derive(Clone, Copy)]
pub(crate) struct Slots<'t> {
    base: *const Slot,
    _table: PhantomData<&'t SlotTable>,
}

impl<'t> Slots<'t> {
    /// The slot at `index` (masked to a handle's index bits) for reading only (wait-free). Outside the
    /// writable chunks it reads as vacant.
    #[inline]
    pub(crate) fn for_read(self, index: u32) -> ReadOnlySlot<'t> {
        let index = index as usize & (RESERVED_SLOTS - 1);
        // SAFETY: inside the reservation, which is readable (zero where not yet committed) for the
        // table's life (`'t`); `Slot` is one `AtomicU64`, valid for any bits.
        ReadOnlySlot(unsafe { &*self.base.add(index) })
    }

    /// Starts loading the slot at `index` (masked as in `for_read`) into the cache, for a read or a
    /// write soon (a hint: it cannot fault, and a slot outside the writable chunks reads as the zero
    /// page). Asking for the line in exclusive state, for a removal's write, made no difference in the
    /// `handles` benchmark's removals.
    #[inline]
    pub(crate) fn prefetch(self, index: u32) {
        let index = index as usize & (RESERVED_SLOTS - 1);
        alloc_core::os::prefetch(self.base.wrapping_add(index).cast());
    }
}

/// A slot that may lie in the read-only part of the table: it can only be read.
pub(crate) struct ReadOnlySlot<'t>(&'t Slot);

impl ReadOnlySlot<'_> {
    /// See [`Slot::read_at`].
    #[inline]
    pub(crate) fn read_at(&self, handle_bits: u64, tag_bits: u64, home: usize) -> Option<usize> {
        self.0.read_at(handle_bits, tag_bits, home)
    }

    /// See [`Slot::read`].
    #[cfg(test)]
    pub(crate) fn read(&self, home: crate::slot::Home, gen: u32) -> Option<usize> {
        self.0.read(home, gen)
    }
}

/// Bytes of `base[start..end]` (a page-aligned range of the table's reservation) that are resident.
fn in_core_bytes(base: *mut u8, start: usize, end: usize) -> usize {
    let page = alloc_core::page_size();
    let mut in_core = vec![0u8; (end - start).div_ceil(page)];
    // SAFETY: a page-aligned range of the reservation, which stays mapped while the table lives;
    // `in_core` has an entry for each of its pages.
    let ok =
        unsafe { libc::mincore(base.add(start).cast(), end - start, in_core.as_mut_ptr()) == 0 };
    if !ok {
        return 0;
    }
    in_core.iter().filter(|&&p| p & 1 != 0).count() * page
}

/// Makes `bytes` at `addr` readable and writable.
///
/// # Safety
/// `addr..addr + bytes` must be page-aligned memory of this process's own mapping.
unsafe fn protect(addr: *mut u8, bytes: usize) -> bool {
    // SAFETY: the caller passes a page-aligned range of a mapping it owns.
    unsafe { libc::mprotect(addr.cast(), bytes, libc::PROT_READ | libc::PROT_WRITE) == 0 }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: the whole reservation, mapped in `new`; no reader outlives the last sharer.
        unsafe { libc::munmap(self.base.cast(), SlotTable::reserved_bytes()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::Home;

    #[test]
    fn slots_appear_a_chunk_at_a_time_and_stay_put() {
        let table = SlotTable::new(3 * CHUNK_SLOTS).expect("reservation");
        assert!(table.get(0).is_none());
        assert_eq!(table.claim(5), Some(0..5));
        let first = table.get(0).expect("claimed") as *const Slot;
        assert_eq!(table.committed(), CHUNK_SLOTS);
        assert!(table.get(CHUNK_SLOTS as u32 - 1).is_some());
        assert!(table.get(CHUNK_SLOTS as u32).is_none());
        let far = 5..2 * CHUNK_SLOTS as u32 + 6;
        assert_eq!(table.claim(far.len()), Some(far.clone()));
        assert_eq!(table.get(far.end - 1).expect("claimed").generation(), 0);
        assert_eq!(table.committed(), 3 * CHUNK_SLOTS);
        assert_eq!(table.get(0).map(|s| s as *const Slot), Some(first));
        let rest = far.end..3 * CHUNK_SLOTS as u32;
        assert_eq!(
            table.claim(usize::MAX >> 1),
            Some(rest),
            "the last run is cut short"
        );
        assert_eq!(table.claim(1), None, "full");
        assert!(table.get(u32::MAX).is_none());
        // Readers may look past the committed part, and past the slots that may be claimed, to the
        // end of the reservation: those slots read as vacant.
        let uncommitted = SlotTable::new(4 * CHUNK_SLOTS).expect("reservation");
        for index in [0, 3 * CHUNK_SLOTS as u32, 4 * CHUNK_SLOTS as u32, u32::MAX] {
            assert_eq!(
                uncommitted.slots().for_read(index).read(Home::NONE, 0),
                None
            );
        }
        assert!(uncommitted.get(0).is_none());
        let pins = table.pins(7);
        pins.fetch_add(1, Ordering::Relaxed);
        assert_eq!(table.pins(7).load(Ordering::Relaxed), 1);
    }

    #[test]
    fn sharers_claim_disjoint_runs_of_one_table() {
        let table = SlotTable::new(CHUNK_SLOTS).expect("reservation");
        let other = table.share();
        assert_eq!(table.claim(100), Some(0..100));
        assert_eq!(other.claim(100), Some(100..200));
        // Both see the same slots: what one writes, the other reads.
        let addr = 0x1000;
        let slot = other.get(150).expect("claimed");
        slot.publish_new(addr, Home::NONE);
        assert_eq!(table.slots().for_read(150).read(Home::NONE, 0), Some(addr));
        drop(table);
        assert_eq!(
            other.get(150).map(|slot| slot.address(Home::NONE)),
            Some(addr),
            "kept by the last sharer"
        );
    }

    #[test]
    fn runs_given_back_are_claimed_again_last_first_before_the_table_grows() {
        let table = SlotTable::new(CHUNK_SLOTS).expect("reservation");
        let other = table.share();
        for start in [0, 256, 512] {
            assert_eq!(table.claim(256), Some(start..start + 256));
        }
        table.give_back(512..768);
        table.give_back(256..512);
        assert_eq!(other.claim(256), Some(256..512));
        assert_eq!(other.claim(256), Some(512..768));
        assert_eq!(other.claim(256), Some(768..1024), "then the table grows");
        assert_eq!(table.committed(), CHUNK_SLOTS);
        assert!(!table.is_full());
        assert_eq!(table.claim(CHUNK_SLOTS), Some(1024..CHUNK_SLOTS as u32));
        assert!(table.is_full() && other.is_full());
        other.give_back(0..256);
        assert!(!table.is_full(), "a run to claim again");
        assert_eq!(table.claim(256), Some(0..256));
        assert!(table.is_full());
    }
}
