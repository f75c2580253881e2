//! One handle-table slot and its state machine: the protocol between readers, writers, removers and
//! the mover of one object.
//!
//! A slot is one 64-bit word, so that a read is one load and the table costs 8 bytes per handle. It
//! has two forms. The *normal* form holds any state:
//!
//! ```text
//!   63   62       45   44   43                                3   2       1       0
//!  | 0 | generation | LIVE |  address (8-aligned, below 2^44)   |   -   | WRITING | MOVING |
//! ```
//!
//! Every movable block is 8-aligned and lies below 16 TiB (alloc-core carves movable arenas from one
//! reservation there, see `alloc_core::movable`), so bits 3..43 of the word hold its address and the
//! generation gets the 18 bits above `LIVE`. A vacant slot has `LIVE` clear; its address bits then
//! hold the cache's free-slot link (see [`Slot::free_link`]). Its generation is the one the next
//! object will get: removal bumps it in the same store that clears `LIVE`, so no state pairs an old
//! generation with a new object or a new generation with an old one.
//!
//! The *home* form holds one state only, an object live at its home block (see `home`) and held by
//! nobody, and it is the bits of the object's handle itself:
//!
//! ```text
//!   63   62          46   45          28   27            0
//!  | 1 |   cache tag   |  generation  |   slot index    |
//! ```
//!
//! Every cache's tag has its top bit set ([`tag_bits`]), so a handle's bit 63, and a home word's, is 1
//! and a normal word's 0. A reader compares the word with its handle: if they are equal, the object
//! is live at the home the reader computed from the handle's index, under the handle's generation
//! and the cache's tag, all checked by one compare. Otherwise it reads the normal form. Whoever
//! takes or changes the object reads a home word as the normal word it stands for ([`Home`]) and
//! always writes held states in the normal form; releasing an object at its home writes the home
//! form again.
//!
//! A *pin* count, for types that may not be read during a move (interior mutability), lives beside
//! the slot in a [`Pins`] counter of its own (untouched, and so never resident, for caches that do
//! not pin).
//!
//! ```text
//!            insert                 begin_write            finish_write(new)
//!   vacant ----------> addr|LIVE ---------------> +WRITING ----------------> new|LIVE
//!     ^                 |     \   try_isolate
//!     |   begin_remove  |      `----------------> +MOVING --publish_move--> new|LIVE
//!     `-----------------'                            `--abort_move--------> addr|LIVE
//! ```
//!
//! (Each `addr|LIVE` above is written as the home word when `addr` is the slot's home.)
//!
//! - Readers never write the slot: one load (and an `Acquire` fence once it matches) gives the
//!   generation, `LIVE` and the address (or the home) at once. An object they reach stays valid
//!   until their epoch guard is dropped, because every old address is retired through the epoch (a
//!   move, an update or a remove never frees memory a pinned reader may hold).
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

/// What [`Slot::try_begin_remove`] did (and, within this module, what taking a slot did).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryRemove {
    /// The slot is vacant now (taken, within this module); the object was at this address.
    Removed(usize),
    /// The slot no longer holds the generation.
    Stale,
    /// A writer or mover holds the slot: nothing was done.
    Held,
}

pub(crate) const MOVING: u64 = 1;
pub(crate) const WRITING: u64 = 2;
/// The free-slot link of the last slot on a list: links are indices + 1 (at most `2^INDEX_BITS`), and
/// a vacant slot whose link bits are all clear is on no list (see [`Slot::is_listed`]).
const LINK_END: u32 = u32::MAX;
/// In a vacant slot (`LIVE` clear), the low bits mark what the cache's lock holder keeps it for: a
/// *parked* home slot waits for the next object its home block gets (see `home`); a *retired* slot's
/// generation wrapped, and it is never used again. Readers ignore both (they look at `LIVE`).
const PARKED: u64 = 1;
const RETIRED: u64 = 2;
const LIVE_SHIFT: u32 = MOVABLE_ADDRESS_BITS;
pub(crate) const LIVE: u64 = 1 << LIVE_SHIFT;
const HELD: u64 = MOVING | WRITING;

/// Bits of the generation counter kept in the slot (and in the low bits of a handle's generation;
/// the bits above are the cache's tag). The top bit of the word stays clear in the normal form.
pub(crate) const GEN_COUNTER_BITS: u32 = 63 - GEN_SHIFT;
pub(crate) const GEN_COUNTER_MASK: u32 = (1 << GEN_COUNTER_BITS) - 1;
const GEN_SHIFT: u32 = LIVE_SHIFT + 1;
const GEN_BITS: u64 = (GEN_COUNTER_MASK as u64) << GEN_SHIFT;
/// The address bits: 8-aligned addresses below 2^44 (where alloc-core puts every movable block).
pub(crate) const ADDR_MASK: u64 = ((1 << LIVE_SHIFT) - 1) & !7;

/// Bits of a handle's slot index (the low bits of a handle, and of a home word): a table holds at
/// most `2^INDEX_BITS` slots.
pub const INDEX_BITS: u32 = 28;
/// Bits of a cache's tag, the top bits of a handle (the highest always set, see [`tag_bits`]).
pub(crate) const TAG_BITS: u32 = 64 - INDEX_BITS - GEN_COUNTER_BITS;
/// The bit that tells a home word from a normal one.
const HOME_FORM: u64 = 1 << 63;
/// A home word's generation bits.
const HOME_GEN_BITS: u64 = (GEN_COUNTER_MASK as u64) << INDEX_BITS;

/// Tag `tag` (below `2^(TAG_BITS - 1)`) as it sits in the high bits of a handle's generation, with
/// the top bit set, so that every handle (and home word) has bit 63 set.
pub fn tag_bits(tag: u32) -> u64 {
    debug_assert!(tag < 1 << (TAG_BITS - 1));
    (u64::from(tag) | 1 << (TAG_BITS - 1)) << GEN_COUNTER_BITS
}

/// One slot's home: the block its object may live at (0: none), and the bits its handles share
/// (index and tag), from which its home words are made. Writers pass it to every step that reads or
/// writes a live object's word, so that a home word reads as the normal word it stands for, and an
/// object released at its home is written in the home form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Home {
    addr: usize,
    name: u64,
}

impl Home {
    /// For a slot whose objects have no home (its words are all normal). Its handle bits have bit 63
    /// set, as every handle's, so they never equal a normal word.
    pub const NONE: Home = Home {
        addr: 0,
        name: HOME_FORM,
    };

    /// The home of slot `index` of a cache with tag `tag_bits` ([`tag_bits`]), at `addr` (0 for none).
    pub fn new(addr: usize, index: u32, tag_bits: u64) -> Self {
        debug_assert!(index >> INDEX_BITS == 0 && (tag_bits << INDEX_BITS) & HOME_FORM != 0);
        if addr == 0 {
            return Self::NONE;
        }
        // A spare slot's "home" may lie past the region (even past what a slot can store): no
        // block is there, so its words are all normal.
        Self {
            addr,
            name: tag_bits << INDEX_BITS | u64::from(index),
        }
    }

    /// The home block's address (0 for none).
    pub fn addr(self) -> usize {
        self.addr
    }

    /// The bits of this slot's handle of generation `gen`, which is also its home word then.
    pub fn handle_bits(self, gen: u32) -> u64 {
        self.name | u64::from(gen & GEN_COUNTER_MASK) << INDEX_BITS
    }

    /// The word of a live object of generation `gen` at `addr`, held by nobody.
    fn live_word(self, gen: u32, addr: usize) -> u64 {
        debug_assert!(storable(addr));
        if addr == self.addr {
            self.handle_bits(gen)
        } else {
            with_gen(gen) | LIVE | stored(addr)
        }
    }

    /// `raw` in the normal form: a home word as the live, unheld object at home it stands for.
    #[inline]
    fn normal(self, raw: u64) -> u64 {
        if raw & HOME_FORM == 0 {
            return raw;
        }
        debug_assert!(self.addr != 0 && raw & !HOME_GEN_BITS == self.name);
        with_gen(home_gen(raw)) | LIVE | stored(self.addr)
    }
}

/// The generation of a home word.
fn home_gen(raw: u64) -> u32 {
    (raw >> INDEX_BITS) as u32 & GEN_COUNTER_MASK
}

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
        let raw = self.word.load(Ordering::Acquire);
        if raw & HOME_FORM != 0 {
            home_gen(raw)
        } else {
            gen_of(raw)
        }
    }

    /// Whether the slot holds an object (lock holder; a snapshot otherwise).
    pub fn is_live(&self) -> bool {
        is_live(self.word.load(Ordering::Relaxed))
    }

    /// The object's address if the slot holds a live object named by `handle_bits` (readers; one
    /// load): `home` if the slot holds the home word `handle_bits`; else the address a normal word
    /// holds if it is live under the handle's generation, with the cache's tag (`tag_bits`, see
    /// [`tag_bits`]) xor-ed out; else `None`. `home` is computed from the handle's index alone, so
    /// the object's load need not wait for the slot's (the branch is predicted; the compare then
    /// confirms it).
    ///
    /// Bits without bit 63 set are no handle (every tag has its top bit set) and could equal a
    /// normal word: they are refused first. Another cache's tag leaves high bits in the generation,
    /// which never passes the normal word's test, nor does a home word.
    ///
    /// The load is `Relaxed` because the slot may lie in the table's read-only part, where only
    /// relaxed atomic loads are allowed; the `Acquire` fence after a match makes the object's
    /// contents, written before its publication, visible (it is free on x86-64). ThreadSanitizer
    /// does not model fences, so it reports a reader's read of a published object as a race with
    /// the writes before the publication (a review's run of the concurrency tests: 87 such
    /// reports, and none with this load made `Acquire`).
    #[inline]
    pub fn read_at(&self, handle_bits: u64, tag_bits: u64, home: usize) -> Option<usize> {
        if handle_bits & HOME_FORM == 0 {
            return None;
        }
        let word = self.word.load(Ordering::Relaxed);
        if word == handle_bits {
            fence(Ordering::Acquire);
            return Some(home);
        }
        read_normal(word, (handle_bits >> INDEX_BITS) ^ tag_bits)
    }

    /// [`Self::read_at`] with the handle of generation `gen` of the slot whose home is `home`.
    #[inline]
    pub fn read(&self, home: Home, gen: u32) -> Option<usize> {
        let handle_bits = home.handle_bits(gen);
        let tag_bits = (handle_bits >> INDEX_BITS) & !u64::from(GEN_COUNTER_MASK);
        self.read_at(handle_bits, tag_bits, home.addr)
    }

    /// The generation and address of the live object, if any, from one load.
    pub fn snapshot(&self, home: Home) -> Option<(u32, usize)> {
        let word = home.normal(self.word.load(Ordering::Acquire));
        (word & LIVE != 0).then_some((gen_of(word), address_in(word)))
    }

    /// The live object's address, or 0 if vacant.
    pub fn address(&self, home: Home) -> usize {
        self.snapshot(home).map_or(0, |(_, addr)| addr)
    }

    /// Publishes a new object in a vacant slot (the inserting thread owns the vacant slot), under the
    /// slot's current generation.
    pub fn publish_new(&self, addr: usize, home: Home) {
        let word = self.word.load(Ordering::Relaxed);
        debug_assert!(!is_live(word));
        self.word
            .store(home.live_word(gen_of(word), addr), Ordering::Release);
    }

    /// The free-slot link a vacant slot holds: the next slot's index + 1, or 0 (the last on its
    /// list, or on none).
    pub fn free_link(&self) -> u32 {
        let word = self.word.load(Ordering::Relaxed);
        debug_assert!(!is_live(word));
        match ((word & ADDR_MASK) >> 3) as u32 {
            LINK_END => 0,
            link => link,
        }
    }

    /// Puts a vacant slot on a free list before the slot `link` names (index + 1; 0: it is the
    /// last). Its owner, the cache's lock holder, does this; readers ignore vacant slots whatever
    /// their address bits.
    pub fn set_free_link(&self, link: u32) {
        let word = self.word.load(Ordering::Relaxed);
        debug_assert!(!is_live(word));
        let link = if link == 0 { LINK_END } else { link };
        self.word.store(
            (word & GEN_BITS) | (u64::from(link) << 3 & ADDR_MASK),
            Ordering::Relaxed,
        );
    }

    /// Takes a vacant slot off its free list: clears its link (lock holder only).
    pub fn clear_free_link(&self) {
        let word = self.word.load(Ordering::Relaxed);
        debug_assert!(!is_live(word));
        self.word.store(word & GEN_BITS, Ordering::Relaxed);
    }

    /// Whether a vacant slot is on a free list: its link was set since it became vacant (a
    /// removal, `park` and `clear_free_link` all leave the link bits clear, and
    /// the last slot of a list holds `LINK_END`, not 0). Lock holder only.
    pub fn is_listed(&self) -> bool {
        let word = self.word.load(Ordering::Relaxed);
        !is_live(word) && word & ADDR_MASK != 0
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
        let word = self.word.load(Ordering::Relaxed);
        !is_live(word) && word & PARKED != 0
    }

    /// Parks a vacant slot that came back from a removal (lock holder only; see `is_free_home`).
    pub fn park(&self) {
        let word = self.word.load(Ordering::Relaxed);
        debug_assert!(!is_live(word));
        self.word
            .store((word & GEN_BITS) | PARKED, Ordering::Relaxed);
    }

    /// Whether the slot served its last generation and is never used again: the removal that would
    /// have wrapped its generation retired it. Lock holder only.
    pub fn is_retired(&self) -> bool {
        self.word.load(Ordering::Relaxed) == RETIRED
    }

    /// Takes the object for writing; waits while another writer, remover or mover holds it.
    /// `None` when the slot no longer holds generation `gen`.
    pub fn begin_write(&self, gen: u32, home: Home) -> Option<usize> {
        match self.take(gen, home, true, None) {
            TryRemove::Removed(addr) => Some(addr),
            _ => None,
        }
    }

    /// Ends a write by publishing `new` (which may equal the old address).
    pub fn finish_write(&self, new: usize, home: Home) {
        self.release_with(new, home);
    }

    /// Empties the slot; waits while a writer or mover holds it. Returns the old address; the slot is
    /// then vacant under the next generation, so handles to it are stale. `None` if already stale.
    pub fn begin_remove(&self, gen: u32, home: Home) -> Option<usize> {
        match self.begin_remove_if(gen, home, true, None) {
            TryRemove::Removed(addr) => Some(addr),
            _ => None,
        }
    }

    /// [`begin_remove`](Self::begin_remove) that never waits (for a thread that a holder of the
    /// slot may be waiting for).
    pub fn try_begin_remove(&self, gen: u32, home: Home) -> TryRemove {
        self.begin_remove_if(gen, home, false, None)
    }

    /// [`begin_remove`](Self::begin_remove) if `wait`, else
    /// [`try_begin_remove`](Self::try_begin_remove); given `at`, of the object only while it is
    /// there: once moved (or updated) elsewhere it is answered `Stale`, as if removed (for an
    /// eviction, which removes the objects of one arena).
    pub fn begin_remove_if(
        &self,
        gen: u32,
        home: Home,
        wait: bool,
        at: Option<usize>,
    ) -> TryRemove {
        let taken = self.take(gen, home, wait, at);
        if let TryRemove::Removed(_) = taken {
            // One store clears `LIVE` and bumps the generation: no reader can pair either
            // generation with the other state. A generation that wraps retires the slot in the
            // same store: as generation 0 with no link, the word would be 0, which says "never
            // used", and an insert could take it as its block's free home slot before the lock
            // holder sees it come back, handing out generation 0 again.
            let next = next_generation(gen);
            let vacant = if next == 0 { RETIRED } else { with_gen(next) };
            self.word.store(vacant, Ordering::Release);
        }
        taken
    }

    /// Sets `WRITING` on the slot of the live object of generation `gen` (`Removed` then carries the
    /// object's address), waiting while another holder has it (`wait`) or giving up (`Held`); if
    /// `at` is given, only while the object is at that address (`Stale` once it is not).
    fn take(&self, gen: u32, home: Home, wait: bool, at: Option<usize>) -> TryRemove {
        let expected = with_gen(gen) | LIVE;
        let mut spins = 0;
        loop {
            let raw = self.word.load(Ordering::Acquire);
            let word = home.normal(raw);
            if word & (GEN_BITS | LIVE) != expected {
                return TryRemove::Stale;
            }
            if word & HELD != 0 {
                if !wait {
                    return TryRemove::Held;
                }
                backoff(&mut spins);
                continue;
            }
            if at.is_some_and(|at| address_in(word) != at) {
                return TryRemove::Stale;
            }
            if self
                .word
                .compare_exchange_weak(raw, word | WRITING, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return TryRemove::Removed(address_in(word));
            }
        }
    }

    /// Ends a hold (write, move) by publishing `addr` as the live object's address.
    fn release_with(&self, addr: usize, home: Home) {
        // Only the holder changes a held word (always normal): the relaxed load sees our own CAS.
        let word = self.word.load(Ordering::Relaxed);
        debug_assert!(word & HOME_FORM == 0 && word & HELD != 0);
        self.word
            .store(home.live_word(gen_of(word), addr), Ordering::Release);
    }

    /// Marks the live object at `addr` as moving if nobody holds it and nobody has it pinned (`pins`
    /// is this slot's pin count, read only if its table's `gate` is open). Never waits.
    pub fn try_isolate(&self, gate: &PinGate, pins: &Pins, addr: usize, home: Home) -> bool {
        let raw = self.word.load(Ordering::Relaxed);
        let word = home.normal(raw);
        if word & !GEN_BITS != LIVE | stored(addr) {
            return false;
        }
        if self
            .word
            .compare_exchange(raw, word | MOVING, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        fence(Ordering::SeqCst);
        if gate.is_open() && pins.load(Ordering::SeqCst) != 0 {
            self.word.store(raw, Ordering::Release);
            return false;
        }
        true
    }

    /// Whether a move of the live object holds the slot now (reliable for the one thread that moves
    /// the cache's objects, the holder of its lock).
    pub fn is_moving(&self, home: Home) -> bool {
        home.normal(self.word.load(Ordering::Relaxed)) & (LIVE | MOVING) == LIVE | MOVING
    }

    /// Completes a move: the object now lives at `new`.
    pub fn publish_move(&self, new: usize, home: Home) {
        self.release_with(new, home);
    }

    /// Abandons a move: the object stays at `addr`.
    pub fn abort_move(&self, addr: usize, home: Home) {
        self.release_with(addr, home);
    }

    /// Pins the object so it cannot move (for types read through interior mutability). Waits while a
    /// move is in progress. `None` if the slot no longer holds generation `gen`.
    pub fn pin(&self, gate: &PinGate, pins: &Pins, gen: u32, home: Home) -> Option<usize> {
        gate.open();
        let mut spins = 0;
        loop {
            pins.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let word = home.normal(self.word.load(Ordering::SeqCst));
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

/// `read_at`'s answer for a word that is not the handle's home word: the address if `word` is a
/// normal word live under generation `gen` (one that is wider than the counter never is).
#[inline]
#[cold]
fn read_normal(word: u64, gen: u64) -> Option<usize> {
    if gen > u64::from(GEN_COUNTER_MASK) || word >> LIVE_SHIFT != (gen << 1) | 1 {
        return None;
    }
    fence(Ordering::Acquire);
    Some(address_in(word))
}

/// Whether a word (of either form) holds an object.
fn is_live(word: u64) -> bool {
    word & (HOME_FORM | LIVE) != 0
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

    const NONE: Home = Home::NONE;

    #[test]
    fn a_vacant_slot_tells_whether_it_is_on_a_free_list() {
        let slot = Slot::new();
        assert!(!slot.is_listed(), "fresh");
        slot.set_free_link(0);
        assert!(slot.is_listed(), "the last slot of a list");
        assert_eq!(slot.free_link(), 0);
        let last_link = (1 << INDEX_BITS) as u32;
        slot.set_free_link(last_link);
        assert!(slot.is_listed());
        assert_eq!(
            slot.free_link(),
            last_link,
            "the largest link (index + 1) survives"
        );
        slot.clear_free_link();
        assert!(!slot.is_listed(), "taken off its list");
        assert_eq!(slot.free_link(), 0);
        slot.set_free_link(7);
        slot.publish_new(0x1000, NONE);
        assert!(!slot.is_listed(), "live");
        assert_eq!(slot.begin_remove(0, NONE), Some(0x1000));
        assert!(!slot.is_listed(), "removed, not yet linked");
        assert_eq!(
            slot.generation(),
            1,
            "publishing over a link kept the generation"
        );
        slot.set_free_link(3);
        slot.park();
        assert!(!slot.is_listed(), "parked");
    }

    /// A foreign handle of slot `home`'s index, generation `gen`: another cache's tag.
    fn foreign(home: Home, gen: u32, tag: u32) -> u64 {
        Home::new(0x40, 5, tag_bits(tag)).handle_bits(gen) & !((1 << INDEX_BITS) - 1)
            | home.handle_bits(gen) & ((1 << INDEX_BITS) - 1)
    }

    #[test]
    fn life_cycle_and_generations() {
        let (slot, gate, pins) = (Slot::new(), PinGate::new(), Pins::new(0));
        assert_eq!(slot.read(NONE, 0), None);
        assert_eq!(
            slot.read_at(0, 0, 0x9000),
            None,
            "bits equal to a vacant word are no handle"
        );
        slot.publish_new(0x1000, NONE);
        assert_eq!(slot.read(NONE, 0), Some(0x1000));
        let normal = slot.word.load(Ordering::Relaxed);
        for tag in [0, tag_bits(0), tag_bits(1)] {
            assert_eq!(
                slot.read_at(normal, tag, 0x9000),
                None,
                "bits equal to a normal word are no handle"
            );
        }
        assert_eq!(slot.read(NONE, 1), None);
        // `NONE`'s handles carry tag 0.
        for foreign_tag in [1, 7, crate::MAX_CACHES as u32] {
            let bits = tag_bits(foreign_tag) << INDEX_BITS;
            assert_eq!(
                slot.read_at(bits, tag_bits(0), 0x9000),
                None,
                "another cache's handle never matches"
            );
        }
        assert_eq!(slot.snapshot(NONE), Some((0, 0x1000)));
        assert!(slot.try_isolate(&gate, &pins, 0x1000, NONE));
        assert_eq!(
            slot.read(NONE, 0),
            Some(0x1000),
            "readers keep the old copy while it moves"
        );
        assert!(
            !slot.try_isolate(&gate, &pins, 0x1000, NONE),
            "isolated once"
        );
        slot.publish_move(0x2008, NONE);
        assert_eq!(slot.read(NONE, 0), Some(0x2008));
        assert!(
            !slot.try_isolate(&gate, &pins, 0x1000, NONE),
            "a stale address is refused"
        );
        assert_eq!(slot.pin(&gate, &pins, 0, NONE), Some(0x2008));
        assert!(
            !slot.try_isolate(&gate, &pins, 0x2008, NONE),
            "a pinned object is refused"
        );
        Slot::unpin(&pins);
        assert_eq!(slot.begin_remove(0, NONE), Some(0x2008));
        assert_eq!(slot.read(NONE, 0), None);
        assert_eq!(slot.read(NONE, 1), None, "vacant under the next generation");
        assert_eq!(slot.generation(), 1);
        slot.set_free_link(12345);
        assert_eq!(slot.free_link(), 12345);
        assert_eq!(slot.read(NONE, 1), None, "a free link is not an address");
        assert_eq!(slot.begin_write(1, NONE), None);
        slot.publish_new(0x3000, NONE);
        assert_eq!(slot.read(NONE, 1), Some(0x3000));
        assert_eq!(slot.read(NONE, 0), None);
    }

    #[test]
    fn an_object_at_home_has_its_handle_in_its_slot() {
        let (slot, gate, pins) = (Slot::new(), PinGate::new(), Pins::new(0));
        let home = Home::new(0x4000, 77, tag_bits(3));
        assert_eq!(slot.read(home, 0), None, "vacant");
        slot.publish_new(home.addr(), home);
        assert_eq!(slot.word.load(Ordering::Relaxed), home.handle_bits(0));
        assert!(slot.is_live() && !slot.is_parked() && !slot.is_free_home());
        assert_eq!(slot.read(home, 0), Some(0x4000));
        assert_eq!(slot.read(home, 1), None, "another generation");
        for tag in [1, 2, 4, 5, crate::MAX_CACHES as u32] {
            assert_eq!(
                slot.read_at(foreign(home, 0, tag), tag_bits(3), 0x4000),
                None,
                "another cache's tag {tag}"
            );
        }
        assert_eq!(slot.generation(), 0);
        assert_eq!(slot.snapshot(home), Some((0, 0x4000)));
        assert!(!slot.try_isolate(&gate, &pins, 0x8000, home), "not there");
        assert!(slot.try_isolate(&gate, &pins, 0x4000, home));
        assert_eq!(
            slot.read(home, 0),
            Some(0x4000),
            "moving: read where it was, in the normal form"
        );
        assert_eq!(slot.word.load(Ordering::Relaxed) & HOME_FORM, 0);
        slot.abort_move(0x4000, home);
        assert_eq!(
            slot.word.load(Ordering::Relaxed),
            home.handle_bits(0),
            "an abandoned move leaves the object at home, in the home form"
        );
        assert!(slot.try_isolate(&gate, &pins, 0x4000, home));
        slot.publish_move(0x8000, home);
        assert_eq!(slot.read(home, 0), Some(0x8000), "moved away from home");
        assert_eq!(slot.begin_write(0, home), Some(0x8000));
        slot.finish_write(0x4000, home);
        assert_eq!(slot.read(home, 0), Some(0x4000), "written back at home");
        assert_eq!(slot.word.load(Ordering::Relaxed), home.handle_bits(0));
        assert_eq!(slot.pin(&gate, &pins, 0, home), Some(0x4000));
        assert!(!slot.try_isolate(&gate, &pins, 0x4000, home), "pinned");
        assert_eq!(
            slot.word.load(Ordering::Relaxed),
            home.handle_bits(0),
            "a refused isolation puts the home word back"
        );
        Slot::unpin(&pins);
        assert_eq!(slot.pin(&gate, &pins, 1, home), None);
        assert_eq!(slot.begin_remove(1, home), None, "stale");
        assert_eq!(slot.begin_remove(0, home), Some(0x4000));
        assert_eq!(slot.read(home, 0), None);
        assert!(!slot.is_live() && !slot.is_free_home(), "on its way back");
        slot.park();
        assert!(slot.is_free_home() && slot.is_parked() && !slot.is_fresh());
        assert_eq!(slot.read(home, 1), None, "parked is vacant");
        assert_eq!(slot.begin_write(1, home), None);
        assert_eq!(
            slot.pin(&gate, &pins, 1, home),
            None,
            "a pin does not wait on a parked slot"
        );
        slot.publish_new(0x4000, home);
        assert_eq!(slot.read(home, 1), Some(0x4000));
        assert_eq!(slot.generation(), 1);
    }

    #[test]
    fn a_home_no_block_can_be_at_keeps_the_normal_form() {
        // A spare slot's computed home can lie past anything a slot can store.
        let (slot, home) = (Slot::new(), Home::new(1 << 45, 3, tag_bits(1)));
        slot.publish_new(0x1000, home);
        assert_eq!(slot.word.load(Ordering::Relaxed) & HOME_FORM, 0);
        assert_eq!(slot.read(home, 0), Some(0x1000));
        assert_eq!(slot.snapshot(home), Some((0, 0x1000)));
    }

    #[test]
    fn a_home_word_is_never_read_as_a_normal_one() {
        // For each home word, the one reader generation whose normal-form test it would pass were it
        // not for the bound (`LIVE` and the generation are the word's top 20 bits): it must get
        // nothing, whatever handle bits and tag give it.
        let slot = Slot::new();
        let mut tested = 0;
        for tag in [1, 2, 3, 0x5555, crate::MAX_CACHES as u32] {
            for gen in [0x1_0000, 0x3_0000, GEN_COUNTER_MASK] {
                let home = Home::new(0x1_0000, 0x0aa_aaaa, tag_bits(tag));
                let word = home.handle_bits(gen);
                assert_ne!(word & LIVE, 0, "bit 44 of these home words is set");
                slot.word.store(word, Ordering::Relaxed);
                let reader_gen = word >> GEN_SHIFT;
                for handle_bits in [u64::MAX, HOME_FORM | reader_gen << INDEX_BITS, word ^ 8] {
                    let tag = (handle_bits >> INDEX_BITS) ^ reader_gen;
                    assert_eq!(slot.read_at(handle_bits, tag, 0x1_0000), None);
                    tested += 1;
                }
            }
        }
        assert_eq!(tested, 45);
    }

    #[test]
    fn a_removal_at_an_address_refuses_an_object_that_moved() {
        let slot = Slot::new();
        let home = Home::new(0x40, 1, tag_bits(1));
        slot.publish_new(0x40, home);
        let gen = slot.generation();
        // An update moves the object from its home to 0x80.
        assert_eq!(slot.begin_write(gen, home), Some(0x40));
        slot.finish_write(0x80, home);
        assert_eq!(
            slot.begin_remove_if(gen, home, true, Some(0x40)),
            TryRemove::Stale
        );
        assert_eq!(slot.read(home, gen), Some(0x80), "still live, untouched");
        assert_eq!(
            slot.begin_remove_if(gen, home, false, Some(0x80)),
            TryRemove::Removed(0x80)
        );
        assert_eq!(slot.read(home, gen), None);
    }

    #[test]
    fn the_removal_of_the_last_generation_retires_the_slot() {
        assert_eq!(next_generation(GEN_COUNTER_MASK), 0);
        let slot = Slot::new();
        let home = Home::new(0x40, 1, tag_bits(1));
        for at in [0x40, 0x80] {
            slot.word
                .store(with_gen(GEN_COUNTER_MASK), Ordering::Relaxed);
            slot.publish_new(at, home);
            assert_eq!(slot.generation(), GEN_COUNTER_MASK);
            assert_eq!(slot.begin_remove(GEN_COUNTER_MASK, home), Some(at));
            // Not the all-zero word of a slot never used, which an insert may take as a free home.
            assert!(slot.is_retired());
            assert!(!slot.is_fresh() && !slot.is_free_home() && !slot.is_listed());
            assert_eq!(slot.read(home, 0), None);
        }
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
