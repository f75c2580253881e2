//! One handle-table slot and its state machine: the protocol between readers, writers, removers and
//! the mover of one object.
//!
//! A slot is two words: `word` holds the object's address with two state bits in its low bits (blocks
//! are at least 16-byte aligned), `gen` the slot's generation (bumped when the object is removed, so
//! stale handles stop resolving). A third word counts *pins*, for types that may not be read during a
//! move (interior mutability).
//!
//! ```text
//!            insert                begin_write           finish_write(new)
//!   VACANT ----------> addr ------------------> addr|WRITING ---------------> new
//!     ^                 |  \   try_isolate        |
//!     |   begin_remove  |   `----------------> addr|MOVING --publish(new)--> new
//!     `-----------------'                          `--abort_move----------> addr
//! ```
//!
//! - Readers never write the slot: they check `gen`, load `word`, and check `gen` again; an object they
//!   reach stays valid until their epoch guard is dropped, because every old address is retired
//!   through the epoch (a move, an update or a remove never frees memory a pinned reader may hold).
//! - Writers, removers and movers take the object by a CAS on `word` from a state with no bit set, so
//!   at most one of them holds an object at a time; the others wait (writers, removers) or skip it
//!   (the mover never waits: it refuses busy objects).
//! - A pin (`pins += 1`, then `word` has no MOVING bit) and an isolation (`MOVING` set, then `pins == 0`)
//!   are ordered with `SeqCst` on both sides: of two such concurrent steps at least one sees the other,
//!   so a pinned object is never moved.

use crate::sync::{backoff, fence, AtomicU32, AtomicUsize, Ordering};

pub(crate) const MOVING: usize = 1;
pub(crate) const WRITING: usize = 2;
const STATE_BITS: usize = MOVING | WRITING;

/// What happens to a generation counter: it counts within `GEN_COUNTER_BITS`; the bits above belong
/// to the cache's tag.
pub(crate) const GEN_COUNTER_BITS: u32 = 20;
pub(crate) const GEN_COUNTER_MASK: u32 = (1 << GEN_COUNTER_BITS) - 1;

#[derive(Default)]
pub struct Slot {
    word: AtomicUsize,
    gen: AtomicU32,
    pins: AtomicU32,
}

impl Slot {
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            word: AtomicUsize::new(0),
            gen: AtomicU32::new(0),
            pins: AtomicU32::new(0),
        }
    }

    /// The generation counter now (to build a handle for a freshly published object).
    pub fn generation(&self) -> u32 {
        self.gen.load(Ordering::Acquire)
    }

    /// The object's address if the slot holds generation `gen` (readers; wait-free).
    #[inline]
    pub fn read(&self, gen: u32) -> Option<usize> {
        if self.gen.load(Ordering::Acquire) != gen {
            return None;
        }
        // Acquire: the object's contents, written before publication, are visible; and the second
        // generation load below cannot move above this one.
        let addr = self.word.load(Ordering::Acquire) & !STATE_BITS;
        if addr == 0 || self.gen.load(Ordering::Relaxed) != gen {
            return None;
        }
        Some(addr)
    }

    /// Publishes a new object in a vacant slot (the inserting thread owns the vacant slot).
    pub fn publish_new(&self, addr: usize) {
        debug_assert_eq!(addr & STATE_BITS, 0);
        debug_assert_eq!(self.word.load(Ordering::Relaxed), 0);
        self.word.store(addr, Ordering::Release);
    }

    /// Takes the object for writing; waits while another writer, remover or mover holds it.
    /// `None` when the slot no longer holds generation `gen`.
    pub fn begin_write(&self, gen: u32) -> Option<usize> {
        self.take(gen, WRITING)
    }

    /// Ends a write by publishing `new` (which may equal the old address).
    pub fn finish_write(&self, new: usize) {
        debug_assert_eq!(new & STATE_BITS, 0);
        self.word.store(new, Ordering::Release);
    }

    /// Empties the slot; waits while a writer or mover holds it. Returns the old address, after which
    /// the generation has moved on (so handles to it are stale). `None` if already stale.
    pub fn begin_remove(&self, gen: u32) -> Option<usize> {
        let addr = self.take(gen, WRITING)?;
        // Empty the word *before* publishing the next generation: whoever sees the new generation
        // (an `Acquire` load in `generation`) then also sees the slot empty, never the removed address
        // under the new generation (found by the loom model `generation_snapshot_vs_remove_and_reuse`).
        self.word.store(0, Ordering::Release);
        self.gen
            .store(next_generation(gen) & GEN_COUNTER_MASK, Ordering::Release);
        Some(addr)
    }

    fn take(&self, gen: u32, bit: usize) -> Option<usize> {
        let mut spins = 0;
        loop {
            if self.gen.load(Ordering::Acquire) != gen {
                return None;
            }
            let word = self.word.load(Ordering::Acquire);
            if word == 0 {
                return None;
            }
            if word & STATE_BITS != 0 {
                backoff(&mut spins);
                continue;
            }
            if self
                .word
                .compare_exchange_weak(word, word | bit, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                if self.gen.load(Ordering::Acquire) != gen {
                    // Removed and reused between our checks: give the newcomer back.
                    self.word.store(word, Ordering::Release);
                    return None;
                }
                return Some(word);
            }
        }
    }

    /// Marks the object at `addr` as moving if nobody holds it and nobody has it pinned. Never waits.
    pub fn try_isolate(&self, addr: usize) -> bool {
        if self
            .word
            .compare_exchange(addr, addr | MOVING, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        fence(Ordering::SeqCst);
        if self.pins.load(Ordering::SeqCst) != 0 {
            self.word.store(addr, Ordering::Release);
            return false;
        }
        true
    }

    /// Completes a move: the object now lives at `new`.
    pub fn publish_move(&self, new: usize) {
        debug_assert_eq!(new & STATE_BITS, 0);
        self.word.store(new, Ordering::Release);
    }

    /// Abandons a move: the object stays at `addr`.
    pub fn abort_move(&self, addr: usize) {
        self.word.store(addr, Ordering::Release);
    }

    /// Pins the object so it cannot move (for types read through interior mutability). Waits while a
    /// move is in progress. `None` if the slot no longer holds generation `gen`.
    pub fn pin(&self, gen: u32) -> Option<usize> {
        let mut spins = 0;
        loop {
            if self.gen.load(Ordering::Acquire) != gen {
                return None;
            }
            self.pins.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let word = self.word.load(Ordering::SeqCst);
            if word & MOVING == 0 {
                let addr = word & !STATE_BITS;
                if addr == 0 || self.gen.load(Ordering::Acquire) != gen {
                    self.unpin();
                    return None;
                }
                return Some(addr);
            }
            self.unpin();
            backoff(&mut spins);
        }
    }

    pub fn unpin(&self) {
        self.pins.fetch_sub(1, Ordering::Release);
    }

    /// The raw word (address and state bits), for the compactor's scan.
    pub fn address(&self) -> usize {
        self.word.load(Ordering::Acquire) & !STATE_BITS
    }
}

/// The generation after `gen`, within the counter bits.
pub(crate) fn next_generation(gen: u32) -> u32 {
    gen.wrapping_add(1) & GEN_COUNTER_MASK
}
