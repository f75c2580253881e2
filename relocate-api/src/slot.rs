//! One handle-table slot and its state machine: the protocol between readers, writers, removers and
//! the mover of one object.
//!
//! A slot is one 64-bit word, so that a read is one load and the table costs 8 bytes per handle:
//!
//! ```text
//!   63        45   44   43                                3   2       1       0
//!  | generation | LIVE |  address (8-aligned, below 2^44)   |   -   | WRITING | MOVING |
//! ```
//!
//! Every movable block is 8-aligned and lies below 16 TiB (alloc-core carves movable arenas from one
//! reservation there, see `alloc_core::movable`), so bits 3..43 of the word hold its address and the
//! generation gets the 19 bits above `LIVE`. The generation and `LIVE`
//! are the top 20 bits, so a read checks both (and, with the cache's tag folded into the expected
//! generation, that the handle is the cache's own) with one shift and one compare. A vacant slot has `LIVE` clear; its address bits then hold the cache's free-slot link (see
//! [`Slot::free_link`]). Its generation is the one the next object will get: removal bumps it in the
//! same store that clears `LIVE`, so no state pairs an old generation with a new object or a new
//! generation with an old one. A *pin* count, for types that may not be read during a move (interior
//! mutability), lives beside the slot in a [`Pins`] counter of its own (untouched, and so never
//! resident, for caches that do not pin).
//!
//! ```text
//!            insert                 begin_write            finish_write(new)
//!   vacant ----------> addr|LIVE ---------------> +WRITING ----------------> new|LIVE
//!     ^                 |     \   try_isolate
//!     |   begin_remove  |      `----------------> +MOVING --publish_move--> new|LIVE
//!     `-----------------'                            `--abort_move--------> addr|LIVE
//! ```
//!
//! - Readers never write the slot: one load (and an `Acquire` fence once it matches) gives the
//!   generation, `LIVE` and the address at once. An object they reach stays valid until their epoch guard is dropped, because every old
//!   address is retired through the epoch (a move, an update or a remove never frees memory a pinned
//!   reader may hold).
//! - Writers, removers and movers take the object by a CAS on the word from a state with neither
//!   `WRITING` nor `MOVING`, so at most one of them holds it at a time; the others wait (writers,
//!   removers) or skip it (the mover never waits: it refuses busy objects). Only the holder changes
//!   the word while it is held.
//! - A pin (`pins += 1`, then the word has no `MOVING`) and an isolation (`MOVING` set, then
//!   `pins == 0`) are ordered with `SeqCst` on both sides: of two such concurrent steps at least one
//!   sees the other, so a pinned object is never moved.
//! - A table's [`PinGate`] opens (for good) before its first pin, and an isolation reads a slot's pin
//!   count only if the gate is open, so caches that never pin never touch (or fault in) their pin
//!   counts. The gate is read with `SeqCst` after the `MOVING` CAS and opened (or seen open) with
//!   `SeqCst` before the pin count is raised: if the mover sees it closed, the pinner's gate step,
//!   and so its load of the word, come later in the `SeqCst` order than the mover's CAS, and the
//!   pinner sees `MOVING` and waits.

use crate::sync::{
    backoff, fence, AtomicBool, AtomicU32, AtomicU64, Ordering, MOVABLE_ADDRESS_BITS,
};

pub(crate) const MOVING: u64 = 1;
pub(crate) const WRITING: u64 = 2;
/// In a vacant slot (`LIVE` clear), the low bits mark what the cache's lock holder keeps it for: a
/// *parked* home slot waits for the next object its home block gets (see `home`); a *retired* slot's
/// generation wrapped, and it is never used again. Readers ignore both (they look at `LIVE`).
const PARKED: u64 = 1;
const RETIRED: u64 = 2;
const LIVE_SHIFT: u32 = MOVABLE_ADDRESS_BITS;
pub(crate) const LIVE: u64 = 1 << LIVE_SHIFT;
const HELD: u64 = MOVING | WRITING;

/// Bits of the generation counter kept in the slot (and in the low bits of a handle's generation;
/// the bits above are the cache's tag).
pub(crate) const GEN_COUNTER_BITS: u32 = 64 - GEN_SHIFT;
pub(crate) const GEN_COUNTER_MASK: u32 = (1 << GEN_COUNTER_BITS) - 1;
const GEN_SHIFT: u32 = LIVE_SHIFT + 1;
const GEN_BITS: u64 = (GEN_COUNTER_MASK as u64) << GEN_SHIFT;
/// The address bits: 8-aligned addresses below 2^44 (where alloc-core puts every movable block).
pub(crate) const ADDR_MASK: u64 = ((1 << LIVE_SHIFT) - 1) & !7;

/// Whether `addr` can be stored in a slot (8-aligned, below 2^44). Blocks from alloc-core's movable
/// heap always can; the cache checks anyway rather than corrupt a generation.
pub(crate) fn storable(addr: usize) -> bool {
    addr as u64 & !ADDR_MASK == 0 && addr != 0
}

/// The address bits of `addr` a slot keeps (all of them, for a storable address).
#[inline]
fn stored(addr: usize) -> u64 {
    addr as u64 & ADDR_MASK
}

/// The address a slot word holds.
#[inline]
fn address_in(word: u64) -> usize {
    (word & ADDR_MASK) as usize
}

/// The pin count of one slot.
pub type Pins = AtomicU32;

/// Whether any slot of a table has ever been pinned (see the module doc).
pub struct PinGate(AtomicBool);

impl PinGate {
    pub fn new() -> Self {
        Self(AtomicBool::new(false))
    }

    /// Opens the gate (before a pin); a no-op store-free load once it is open.
    fn open(&self) {
        if !self.0.load(Ordering::SeqCst) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// Whether pin counts may be non-zero (read after the isolation's `MOVING` CAS and fence).
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Default for PinGate {
    fn default() -> Self {
        Self::new()
    }
}

#[repr(transparent)]
pub struct Slot {
    word: AtomicU64,
}

fn gen_of(word: u64) -> u32 {
    (word >> GEN_SHIFT) as u32
}

fn with_gen(gen: u32) -> u64 {
    u64::from(gen & GEN_COUNTER_MASK) << GEN_SHIFT
}

impl Slot {
    /// A vacant slot of generation 0 (the table's slots are zeroed memory, which is the same).
    pub fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
        }
    }

    /// The generation counter now (of the live object, or the next one if vacant).
    pub fn generation(&self) -> u32 {
        gen_of(self.word.load(Ordering::Acquire))
    }

    /// The object's address if the slot holds a live object of generation `gen` (readers; one load).
    /// A `gen` wider than the counter never matches, so a reader may pass a handle's generation with
    /// the cache's tag xor-ed out unchecked: a foreign tag leaves high bits set.
    ///
    /// The load is `Relaxed` because the slot may lie in the table's read-only part, where only
    /// relaxed atomic loads are allowed; the `Acquire` fence after a match makes the object's
    /// contents, written before its publication, visible (it is free on x86-64).
    #[inline]
    pub fn read(&self, gen: u64) -> Option<usize> {
        Self::read_word(self.word.load(Ordering::Relaxed), gen)
    }

    /// [`Self::read`] for a handle whose object is expected at `home` (its home block, see `home`):
    /// when the slot holds generation `gen` live at `home`, the answer is `home` itself, which the
    /// caller computed without the slot, so the object's load does not wait for the slot's (the
    /// branch is predicted; the compare then confirms it). Otherwise the answer is `read`'s. A `gen`
    /// with bits above the counter (another cache's tag) never matches here either.
    #[inline]
    pub fn read_at(&self, gen: u64, home: usize) -> Option<usize> {
        let word = self.word.load(Ordering::Relaxed);
        if gen <= u64::from(GEN_COUNTER_MASK) && word == (gen << GEN_SHIFT) | LIVE | home as u64 {
            fence(Ordering::Acquire);
            return Some(home);
        }
        Self::read_word(word, gen)
    }

    /// `read`'s answer for the slot's `word`, loaded by the caller.
    #[inline]
    fn read_word(word: u64, gen: u64) -> Option<usize> {
        if word >> LIVE_SHIFT != (gen << 1) | 1 {
            return None;
        }
        fence(Ordering::Acquire);
        Some(address_in(word))
    }

    /// The generation and address of the live object, if any, from one load.
    pub fn snapshot(&self) -> Option<(u32, usize)> {
        let word = self.word.load(Ordering::Acquire);
        (word & LIVE != 0).then_some((gen_of(word), address_in(word)))
    }

    /// The live object's address, or 0 if vacant.
    pub fn address(&self) -> usize {
        self.snapshot().map_or(0, |(_, addr)| addr)
    }

    /// Publishes a new object in a vacant slot (the inserting thread owns the vacant slot), under the
    /// slot's current generation.
    pub fn publish_new(&self, addr: usize) {
        debug_assert!(storable(addr));
        let word = self.word.load(Ordering::Relaxed);
        debug_assert_eq!(word & LIVE, 0);
        self.word
            .store((word & GEN_BITS) | LIVE | stored(addr), Ordering::Release);
    }

    /// The free-slot link a vacant slot holds (0 if none was set).
    pub fn free_link(&self) -> u32 {
        let word = self.word.load(Ordering::Relaxed);
        debug_assert_eq!(word & LIVE, 0);
        ((word & ADDR_MASK) >> 3) as u32
    }

    /// Sets a vacant slot's free-slot link (its owner, the cache's lock holder, does this; readers
    /// ignore vacant slots whatever their address bits).
    pub fn set_free_link(&self, link: u32) {
        let word = self.word.load(Ordering::Relaxed);
        debug_assert_eq!(word & LIVE, 0);
        self.word.store(
            (word & GEN_BITS) | (u64::from(link) << 3 & ADDR_MASK),
            Ordering::Relaxed,
        );
    }

    /// Whether a home slot is free for its home block's next object: never used (all zero) or parked,
    /// and so neither live, nor on its way back from a removal, nor retired. Lock holder only.
    pub fn is_free_home(&self) -> bool {
        self.is_fresh() || self.is_parked()
    }

    /// Whether the slot was never used (all zero). Lock holder only.
    pub fn is_fresh(&self) -> bool {
        self.word.load(Ordering::Relaxed) == 0
    }

    /// Whether the slot is parked (see `is_free_home`). Lock holder only.
    pub fn is_parked(&self) -> bool {
        self.word.load(Ordering::Relaxed) & (LIVE | PARKED) == PARKED
    }

    /// Parks a vacant slot that came back from a removal (lock holder only; see `is_free_home`).
    pub fn park(&self) {
        let word = self.word.load(Ordering::Relaxed);
        debug_assert_eq!(word & LIVE, 0);
        self.word
            .store((word & GEN_BITS) | PARKED, Ordering::Relaxed);
    }

    /// Marks a vacant slot whose generation wrapped as never to be used again (lock holder only).
    pub fn retire_for_good(&self) {
        debug_assert_eq!(self.word.load(Ordering::Relaxed) & (LIVE | GEN_BITS), 0);
        self.word.store(RETIRED, Ordering::Relaxed);
    }

    /// Takes the object for writing; waits while another writer, remover or mover holds it.
    /// `None` when the slot no longer holds generation `gen`.
    pub fn begin_write(&self, gen: u32) -> Option<usize> {
        self.take(gen, WRITING)
    }

    /// Ends a write by publishing `new` (which may equal the old address).
    pub fn finish_write(&self, new: usize) {
        self.release_with(new);
    }

    /// Empties the slot; waits while a writer or mover holds it. Returns the old address; the slot is
    /// then vacant under the next generation, so handles to it are stale. `None` if already stale.
    pub fn begin_remove(&self, gen: u32) -> Option<usize> {
        let addr = self.take(gen, WRITING)?;
        // One store clears `LIVE` and bumps the generation: no reader can pair either generation with
        // the other state.
        self.word
            .store(with_gen(next_generation(gen)), Ordering::Release);
        Some(addr)
    }

    fn take(&self, gen: u32, bit: u64) -> Option<usize> {
        let expected = with_gen(gen) | LIVE;
        let mut spins = 0;
        loop {
            let word = self.word.load(Ordering::Acquire);
            if word & (GEN_BITS | LIVE) != expected {
                return None;
            }
            if word & HELD != 0 {
                backoff(&mut spins);
                continue;
            }
            if self
                .word
                .compare_exchange_weak(word, word | bit, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Some(address_in(word));
            }
        }
    }

    /// Ends a hold (write, move) by publishing `addr` as the live object's address.
    fn release_with(&self, addr: usize) {
        debug_assert!(storable(addr));
        // Only the holder changes a held word: the relaxed load sees our own CAS.
        let word = self.word.load(Ordering::Relaxed);
        debug_assert_ne!(word & HELD, 0);
        self.word
            .store((word & GEN_BITS) | LIVE | stored(addr), Ordering::Release);
    }

    /// Marks the live object at `addr` as moving if nobody holds it and nobody has it pinned (`pins`
    /// is this slot's pin count, read only if its table's `gate` is open). Never waits.
    pub fn try_isolate(&self, gate: &PinGate, pins: &Pins, addr: usize) -> bool {
        let word = self.word.load(Ordering::Relaxed);
        if word & !GEN_BITS != LIVE | stored(addr) {
            return false;
        }
        if self
            .word
            .compare_exchange(word, word | MOVING, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        fence(Ordering::SeqCst);
        if gate.is_open() && pins.load(Ordering::SeqCst) != 0 {
            self.word.store(word, Ordering::Release);
            return false;
        }
        true
    }

    /// Completes a move: the object now lives at `new`.
    pub fn publish_move(&self, new: usize) {
        self.release_with(new);
    }

    /// Abandons a move: the object stays at `addr`.
    pub fn abort_move(&self, addr: usize) {
        self.release_with(addr);
    }

    /// Pins the object so it cannot move (for types read through interior mutability). Waits while a
    /// move is in progress. `None` if the slot no longer holds generation `gen`.
    pub fn pin(&self, gate: &PinGate, pins: &Pins, gen: u32) -> Option<usize> {
        gate.open();
        let mut spins = 0;
        loop {
            pins.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let word = self.word.load(Ordering::SeqCst);
            // The generation first: a vacant slot's low bits are not `MOVING` (see `PARKED`).
            if word & (GEN_BITS | LIVE) != with_gen(gen) | LIVE {
                Self::unpin(pins);
                return None;
            }
            if word & MOVING == 0 {
                return Some(address_in(word));
            }
            Self::unpin(pins);
            backoff(&mut spins);
        }
    }

    pub fn unpin(pins: &Pins) {
        pins.fetch_sub(1, Ordering::Release);
    }
}

impl Default for Slot {
    fn default() -> Self {
        Self::new()
    }
}

/// The generation after `gen`, within the counter bits.
pub(crate) fn next_generation(gen: u32) -> u32 {
    gen.wrapping_add(1) & GEN_COUNTER_MASK
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_one_word() {
        assert_eq!(std::mem::size_of::<Slot>(), 8);
    }

    #[test]
    fn life_cycle_and_generations() {
        let (slot, gate, pins) = (Slot::new(), PinGate::new(), Pins::new(0));
        assert_eq!(slot.read(0), None);
        slot.publish_new(0x1000);
        assert_eq!(slot.read(0), Some(0x1000));
        assert_eq!(slot.read(1), None);
        for foreign_tag in [1, 7, crate::MAX_CACHES as u64] {
            let gen = foreign_tag << GEN_COUNTER_BITS;
            assert_eq!(slot.read(gen), None, "another cache's handle never matches");
        }
        assert_eq!(slot.snapshot(), Some((0, 0x1000)));
        assert!(slot.try_isolate(&gate, &pins, 0x1000));
        assert_eq!(
            slot.read(0),
            Some(0x1000),
            "readers keep the old copy while it moves"
        );
        assert!(!slot.try_isolate(&gate, &pins, 0x1000), "isolated once");
        slot.publish_move(0x2008);
        assert_eq!(slot.read(0), Some(0x2008));
        assert!(
            !slot.try_isolate(&gate, &pins, 0x1000),
            "a stale address is refused"
        );
        assert_eq!(slot.pin(&gate, &pins, 0), Some(0x2008));
        assert!(
            !slot.try_isolate(&gate, &pins, 0x2008),
            "a pinned object is refused"
        );
        Slot::unpin(&pins);
        assert_eq!(slot.begin_remove(0), Some(0x2008));
        assert_eq!(slot.read(0), None);
        assert_eq!(slot.read(1), None, "vacant under the next generation");
        assert_eq!(slot.generation(), 1);
        slot.set_free_link(12345);
        assert_eq!(slot.free_link(), 12345);
        assert_eq!(slot.read(1), None, "a free link is not an address");
        assert_eq!(slot.begin_write(1), None);
        slot.publish_new(0x3000);
        assert_eq!(slot.read(1), Some(0x3000));
        assert_eq!(slot.read(0), None);
    }

    #[test]
    fn a_read_at_home_answers_as_a_read_does() {
        let (slot, gate, pins) = (Slot::new(), PinGate::new(), Pins::new(0));
        let home = 0x4000;
        assert_eq!(slot.read_at(0, home), None, "vacant");
        slot.publish_new(home);
        assert_eq!(slot.read_at(0, home), Some(home));
        assert_eq!(slot.read_at(1, home), None, "another generation");
        let foreign = (1 << GEN_COUNTER_BITS) as u64;
        assert_eq!(slot.read_at(foreign, home), None, "another cache's tag");
        assert!(slot.try_isolate(&gate, &pins, home));
        assert_eq!(
            slot.read_at(0, home),
            Some(home),
            "moving: read where it was"
        );
        slot.publish_move(0x8000);
        assert_eq!(slot.read_at(0, home), Some(0x8000), "moved away from home");
        assert_eq!(slot.begin_remove(0), Some(0x8000));
        assert!(!slot.is_free_home(), "on its way back");
        slot.park();
        assert!(slot.is_free_home() && slot.is_parked() && !slot.is_fresh());
        assert_eq!(slot.read_at(1, home), None, "parked is vacant");
        assert_eq!(slot.begin_write(1), None);
        assert_eq!(
            slot.pin(&gate, &pins, 1),
            None,
            "a pin does not wait on a parked slot"
        );
        slot.publish_new(home);
        assert_eq!(slot.read_at(1, home), Some(home));
    }

    #[test]
    fn the_generation_wraps_within_its_bits() {
        assert_eq!(next_generation(GEN_COUNTER_MASK), 0);
        let slot = Slot::new();
        slot.word
            .store(with_gen(GEN_COUNTER_MASK), Ordering::Relaxed);
        slot.publish_new(0x40);
        assert_eq!(slot.begin_remove(GEN_COUNTER_MASK), Some(0x40));
        assert_eq!(slot.generation(), 0);
    }

    #[test]
    fn only_aligned_addresses_below_16_tib_are_storable() {
        assert!(storable(0x0fff_ffff_fff8));
        assert!(storable(8));
        assert!(!storable(0x1000 | (1 << 44)), "above 16 TiB");
        assert!(!storable(0x1004));
        assert!(!storable(0x8000_0000_0000_0000));
        assert!(!storable(0));
    }
}
