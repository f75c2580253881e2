//! Compaction, evacuation and eviction: the operations that make memory go back.
//!
//! - **Footprint compaction** ([`RelocCache::compact`]): with `n` live objects and `c` per slab, only
//!   `ceil(n / c)` slabs are needed. The densest of them are targets; every live object in the others
//!   (arena by arena, those whose source slabs are sparsest on average first, and sparsest slab
//!   first) is moved into a target, so the sources empty and go back to their arenas.
//! - **Fragmentation compaction** ([`RelocCache::evacuate_arena`]): every object in one 2 MiB arena is
//!   moved elsewhere (new slabs never come from that arena meanwhile), so the whole arena is freed.
//! - **Eviction** ([`RelocCache::reclaim`]): for re-creatable data, the arena with the fewest live
//!   objects is emptied by removing (not moving) its objects; an eviction callback hears of each one.
//!   [`RelocCache::reclaim_oldest`] empties the arena opened earliest instead (first in, first out).
//!
//! Each move: mark the slot moving (refused if a writer, remover or pin holds it) → `isolate` (may
//! refuse) → allocate the target outside the slabs being emptied (they are *draining*: allocation
//! skips them at no cost per move) → `migrate` (copy, fix pointers) →
//! publish the new address → retire the old block through the epoch. A panicking callback abandons
//! that move and leaves the object where it was. In footprint compaction, the first object of a
//! source slab that stays (refused, or its move abandoned) ends that slab's moves: the slab cannot
//! be freed this pass, and the pass goes on to the next. The whole pass holds the cache lock, so
//! inserts wait for it; reads never do. Old blocks are freed only after the epoch: call
//! [`RelocCache::flush`] (or let the next operation do it) to see the memory come back.

use crate::cache::{alloc_block, CacheError, RelocCache};
use crate::guard::Guard;
use crate::handle::Handle;
use crate::inner::{Counters, Inner};
use crate::policy::{Isolation, Relocator, MOVE_BATCH};
use crate::slot::{Home, Slot};
use alloc_core::movable::{self, SlabView};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::Mutex;
use std::time::Instant;

/// How much one call may move. Only moves made count: objects that refuse, or whose callbacks
/// panic, cost nothing, so that they cannot keep every call from reaching the objects behind them.
/// A call that works in several classes or arenas spends one budget across them.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    Unlimited,
    Objects(usize),
    /// Moves until this many bytes (of whole blocks) have moved: the last move may cross the
    /// bound, so that a budget smaller than one object still moves one.
    Bytes(usize),
}

impl Budget {
    /// What is left of this budget once the moves `report` made are spent, for a call that runs
    /// several passes (classes, arenas) on one budget; `None` when nothing is.
    pub(crate) fn less(self, report: &CompactReport) -> Option<Budget> {
        match self {
            Budget::Unlimited => Some(Budget::Unlimited),
            Budget::Objects(n) => n
                .checked_sub(report.moved_objects)
                .filter(|&n| n > 0)
                .map(Budget::Objects),
            Budget::Bytes(n) => n
                .checked_sub(report.moved_bytes)
                .filter(|&n| n > 0)
                .map(Budget::Bytes),
        }
    }
}

/// What one compaction, evacuation or reclaim did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    pub moved_objects: usize,
    pub moved_bytes: usize,
    /// Objects left in place because a writer, a pin or the callback refused.
    pub refused: usize,
    /// Callbacks that panicked (their moves were abandoned).
    pub panics: usize,
    /// Objects removed by a reclaim.
    pub evicted: usize,
    /// Slabs the pass tried to empty.
    pub source_slabs: usize,
    /// The budget ran out before every source was empty.
    pub budget_exhausted: bool,
}

impl CompactReport {
    /// Adds another pass's figures to these.
    pub fn merge(&mut self, other: CompactReport) {
        self.moved_objects += other.moved_objects;
        self.moved_bytes += other.moved_bytes;
        self.refused += other.refused;
        self.panics += other.panics;
        self.evicted += other.evicted;
        self.source_slabs += other.source_slabs;
        self.budget_exhausted |= other.budget_exhausted;
    }
}

/// A snapshot of one cache.
#[derive(Clone, Copy, Debug)]
pub struct CacheStats {
    pub live_objects: usize,
    /// `live_objects` × `size_of::<T>()` (0 for a zero-sized `T`); for a
    /// [`BlobCache`](crate::BlobCache), the live blobs' whole blocks.
    pub live_bytes: usize,
    pub slabs: usize,
    /// Bytes of slab memory the cache holds (slabs × slab size): what compaction can shrink.
    pub resident_bytes: usize,
    /// `resident_bytes` over the bytes of the live objects' blocks (`live_bytes` but for the rounding
    /// of each object up to its block: 8 bytes and alignment, and 16 bytes at least), so that a cache
    /// without holes is at 1.0 (but for its last slab's) whatever its type: what compaction can bring
    /// down. 1.0 when the cache holds no slab, and infinite when it holds slabs but no live object
    /// (its removed objects' blocks waiting for the epoch, say), which is as far above any target as
    /// a cache can be.
    pub fragmentation: f64,
    /// Bytes of handle table resident, as the kernel reports them (`mincore`): the pages that hold a
    /// slot this cache used, 8 bytes a slot (and of pin counts, 4 bytes a slot, for caches that pin).
    /// It does not shrink, as handles must stay valid.
    pub table_bytes: usize,
    /// Bytes of handle table made writable: the 128 KiB chunks of slots that hold a slot this cache
    /// used (for a cache with homes, those of its home slots and of its spares, see `home`). Address
    /// space, not memory, except where `table_bytes` says.
    pub table_committed_bytes: usize,
    pub counters: Counters,
}

struct Pass {
    report: CompactReport,
    /// Moves the budget still allows: a cache's objects are all of one size, so a budget in bytes
    /// is one in objects (rounded up: see [`Budget::Bytes`]). Only moves made spend it (a move refused, abandoned by a panic or with
    /// nothing to move does not), or a pass would spend every round's budget on the same objects
    /// that refuse, and never reach the ones behind them.
    remaining: usize,
    /// Whether a source slab is worth emptying only whole (footprint compaction: a slab that keeps
    /// one object is not freed, so its other moves would gain nothing), rather than object by object
    /// (evacuation, which moves all it can out of the arena it was asked to free).
    whole_slabs: bool,
    /// Old copies of the objects moved so far, retired together when the pass ends.
    moved_from: Vec<usize>,
}

impl Pass {
    fn new(budget: Budget, object_bytes: usize, whole_slabs: bool) -> Self {
        let remaining = match budget {
            Budget::Unlimited => usize::MAX,
            Budget::Objects(n) => n,
            Budget::Bytes(n) => n.div_ceil(object_bytes.max(1)),
        };
        Self {
            report: CompactReport::default(),
            remaining,
            whole_slabs,
            moved_from: Vec::new(),
        }
    }

    /// How many of `objects` the budget lets this pass move.
    fn objects_within(&self, objects: usize) -> usize {
        objects.min(self.remaining)
    }

    /// Whether the budget allows another move; false (and the report says so) when it is spent.
    fn may_move(&mut self) -> bool {
        if self.remaining == 0 {
            self.report.budget_exhausted = true;
            return false;
        }
        true
    }

    /// Counts a move made against the budget.
    fn moved(&mut self, bytes: usize, old: usize) {
        self.remaining -= 1;
        self.moved_from.push(old);
        self.report.moved_objects += 1;
        self.report.moved_bytes += bytes;
    }
}

/// What became of one object a pass came to.
enum Step {
    /// Moved, or nothing to move.
    Done,
    /// It stays where it is: held, pinned, or refused by its callback.
    Kept,
    /// The pass must stop: its budget is spent, or memory is.
    Stop,
}

/// A move whose callback is running: what to undo if the callback panics.
struct InFlight<'t> {
    slot: &'t Slot,
    home: Home,
    old: usize,
    /// The new block, once allocated (`migrate` is running).
    target: Option<NonNull<u8>>,
}

impl<T: Send + Sync + 'static, R: Relocator<T>> RelocCache<T, R> {
    /// Footprint compaction within `budget`: moves objects out of the sparsest slabs into the
    /// densest, so the emptied slabs go back to their arenas once the epoch lets the old copies go
    /// ([`flush`](Self::flush)). The resident set does not shrink until emptied arenas go to the
    /// OS: at once with [`release_empty_arenas`](Self::release_empty_arenas), after the decommit
    /// delay with [`release_aged_arenas`](Self::release_aged_arenas) or a background compactor, or
    /// at alloc-core's next maintenance (`alloc_core::purge`, its background purger, or its next
    /// slow-path free after the delay).
    ///
    /// A removed object's block counts as live until the epoch lets it go: compacting right after
    /// removals, under the guard they were made under or before a [`flush`](Self::flush), finds their
    /// blocks still in place and moves little. Drop (or re-pin) that guard and flush first.
    pub fn compact(&self, guard: &Guard, budget: Budget) -> Result<CompactReport, CacheError> {
        self.check_guard(guard);
        let started = Instant::now();
        let mut inner = self.lock()?;
        let mut slabs: Vec<SlabView> = inner.heap.slabs().collect();
        let mut pass = Pass::new(budget, self.object_bytes, true);
        if let Some(per_slab) = slabs.first().map(|s| s.capacity) {
            let live: usize = slabs.iter().map(|s| s.live).sum();
            let needed = live.div_ceil(per_slab).max(1);
            if slabs.len() > needed {
                // Targets: the densest slabs of the densest arenas, so that whole arenas empty and
                // their metadata goes back too. Sources: the rest.
                let mut arena_live: Vec<(usize, usize)> = Vec::new();
                for slab in &slabs {
                    add_to_arena(&mut arena_live, slab.arena, slab.live);
                }
                slabs.sort_by_cached_key(|s| {
                    std::cmp::Reverse((arena_total(&arena_live, s.arena), s.arena, s.live))
                });
                let mut sources: Vec<SlabView> = slabs.split_off(needed);
                // Arena by arena: those whose source slabs are sparsest on average first (so a
                // budgeted pass frees about as many slabs per move as taking the sparsest slabs one
                // by one would), and an arena's slabs sparsest first, one after another: they share
                // the rows of the arena's back-map (a slab's owners are a column of it), so each row
                // read for one slab serves the next ones from the cache.
                let (mut source_live, mut source_slabs) = (Vec::new(), Vec::new());
                for slab in &sources {
                    add_to_arena(&mut source_live, slab.arena, slab.live);
                    add_to_arena(&mut source_slabs, slab.arena, 1);
                }
                sources.sort_by_cached_key(|s| {
                    let per_slab = arena_total(&source_live, s.arena) * 1024
                        / arena_total(&source_slabs, s.arena).max(1);
                    (per_slab, s.arena, s.live)
                });
                let mut source_starts: Vec<usize> = sources.iter().map(|s| s.start).collect();
                source_starts.sort_unstable();
                pass.report.source_slabs = sources.len();
                // Draining sources keeps every move's allocation off them at constant cost.
                inner
                    .heap
                    .begin_drain(|s| source_starts.binary_search(&s.start).is_ok());
                self.move_sources(&mut inner.heap, &mut pass, &sources);
            }
        }
        Ok(self.finish(guard, &mut inner.counters, pass, started))
    }

    /// Moves every object out of the 2 MiB arena at `arena` (an address inside it will do), within
    /// `budget`, so that the arena can be unmapped once the epoch passes.
    pub fn evacuate_arena(
        &self,
        guard: &Guard,
        arena: usize,
        budget: Budget,
    ) -> Result<CompactReport, CacheError> {
        self.check_guard(guard);
        let started = Instant::now();
        let arena = arena & !(arena_bytes() - 1);
        let mut inner = self.lock()?;
        let sources: Vec<SlabView> = inner.heap.slabs().filter(|s| s.arena == arena).collect();
        let mut pass = Pass::new(budget, self.object_bytes, false);
        pass.report.source_slabs = sources.len();
        inner.heap.set_avoid_arena(Some(arena));
        inner.heap.begin_drain(|s| s.arena == arena);
        self.move_sources(&mut inner.heap, &mut pass, &sources);
        inner.heap.set_avoid_arena(None);
        Ok(self.finish(guard, &mut inner.counters, pass, started))
    }

    /// Evacuates the `k` arenas with the fewest live objects (the most fragmented ones to keep),
    /// one after another, within one `budget` for them all.
    pub fn evacuate_sparsest(
        &self,
        guard: &Guard,
        k: usize,
        budget: Budget,
    ) -> Result<CompactReport, CacheError> {
        let arenas = self.arenas_by_live()?;
        evacuate_in_turn(
            arenas.into_iter().take(k).map(|(arena, _)| arena),
            budget,
            |arena, budget| self.evacuate_arena(guard, arena, budget),
        )
    }

    /// (arena, live objects) for every arena holding this cache's slabs, fewest live first.
    fn arenas_by_live(&self) -> Result<Vec<(usize, usize)>, CacheError> {
        let inner = self.lock()?;
        let mut arenas: Vec<(usize, usize)> = Vec::new();
        for slab in inner.heap.slabs() {
            add_to_arena(&mut arenas, slab.arena, slab.live);
        }
        arenas.sort_by_key(|&(arena, live)| (live, arena));
        Ok(arenas)
    }

    /// Eviction for re-creatable data: removes every object in the arena with the fewest live objects,
    /// telling `on_evict` of each (handle and value, before it is dropped). Their handles resolve to
    /// `None` at once; the memory goes back after the epoch ([`RelocCache::flush`]). Until then the
    /// evicted objects' blocks still count in their arena, so flush between two reclaims, or the
    /// second may pick the same arena and find nothing left to evict.
    ///
    /// Eviction works an arena at a time (2 MiB of the cache's slabs, or the cache's share of an
    /// arena shared by small caches): a cache holding less than 2 MiB loses every object in one
    /// reclaim. An arena is 2 MiB of slabs, not of live objects: one left sparse by removals frees
    /// its 2 MiB but evicts only what it still holds.
    ///
    /// If `on_evict` panics, the panic comes out of the reclaim: the objects it was told of (the
    /// one whose callback panicked too) are gone and counted, the arena's others stay, and the
    /// cache stays usable (a later reclaim takes them).
    ///
    /// The fewest live objects are the least data lost per arena freed. But in a cache that holds
    /// itself to a budget by reclaiming each time it grows past it, that arena is the one it just
    /// opened for its newest objects, so it keeps its first contents and loses every new object
    /// (the `zcache` example): such a cache wants [`reclaim_oldest`](Self::reclaim_oldest).
    pub fn reclaim(
        &self,
        guard: &Guard,
        on_evict: impl FnMut(Handle<T>, &T),
    ) -> Result<CompactReport, CacheError> {
        self.check_guard(guard);
        let sparsest = self.arenas_by_live()?.first().map(|&(arena, _)| arena);
        self.reclaim_arena(guard, sparsest, on_evict)
    }

    /// Eviction as [`reclaim`](Self::reclaim) does it, of the arena opened earliest among those
    /// holding this cache's objects (mapped, or given a slab again after it was wholly free): first
    /// in, first out, for a cache that holds itself to a budget by reclaiming. Past its first 2 MiB
    /// of slabs (which share arenas with other small caches), a cache's arenas hold its own objects
    /// only, so that arena holds the cache's oldest objects, unless newer ones went into room it had
    /// left (free blocks of its slabs, or free units while the cache's other arenas were full); those
    /// go with it. While it holds a share of a shared arena, that share goes (its oldest objects all
    /// the same), and the arena's 2 MiB go back once the other caches' shares do.
    ///
    /// So it is first in, first out by arena, not by object: in a cache whose objects are removed
    /// and replaced, new objects fill the holes the removals leave in old arenas, and go with them.
    /// In a user review's session store (byte blobs replaced and removed at random, held to a
    /// budget), 15–18 % of the values evicted were among the newest tenth, and each reclaim evicted
    /// about 220 KiB of values from an oldest arena mostly made of holes.
    pub fn reclaim_oldest(
        &self,
        guard: &Guard,
        on_evict: impl FnMut(Handle<T>, &T),
    ) -> Result<CompactReport, CacheError> {
        self.check_guard(guard);
        let oldest = self.oldest_arena()?.map(|(_, arena)| arena);
        self.reclaim_arena(guard, oldest, on_evict)
    }

    /// The arena opened earliest among those holding this cache's slabs, with its serial (see
    /// `SlabView::arena_serial`).
    pub(crate) fn oldest_arena(&self) -> Result<Option<(u64, usize)>, CacheError> {
        let inner = self.lock()?;
        Ok(inner.heap.slabs().map(|s| (s.arena_serial, s.arena)).min())
    }

    fn reclaim_arena(
        &self,
        guard: &Guard,
        arena: Option<usize>,
        mut on_evict: impl FnMut(Handle<T>, &T),
    ) -> Result<CompactReport, CacheError> {
        let Some(arena) = arena else {
            return Ok(CompactReport::default());
        };
        // A cache that owns its table owns every object its slots name.
        let all_ours = |_| true;
        self.evict_in_arena(guard, arena, all_ours, |handle, addr| {
            // SAFETY: the address of a live object of this cache, read before it is dropped.
            on_evict(handle, unsafe { &*(addr as *const T) })
        })
    }

    /// Live bytes of this cache per arena.
    pub(crate) fn live_bytes_by_arena(&self) -> Result<Vec<(usize, usize)>, CacheError> {
        let size = self.object_bytes;
        Ok(self
            .arenas_by_live()?
            .into_iter()
            .map(|(a, live)| (a, live * size))
            .collect())
    }

    /// Removes every object of this cache in `arena`, telling `on_evict` of each (handle and the
    /// object's address, which stays valid during the call).
    ///
    /// The blocks are listed under the lock and removed after it, through their slots, each if its
    /// slot still names it and `is_ours(address)`: for a byte-blob class, whose table is shared,
    /// whether the object is the class's own. Meanwhile a block may have been freed and taken again,
    /// with its slot: by this cache (a new object in the arena, evicted with the rest), or, in a
    /// shared table, by another class, whose object this cache must not remove (it would take the
    /// block into its own heap).
    pub(crate) fn evict_in_arena(
        &self,
        guard: &Guard,
        arena: usize,
        is_ours: impl Fn(usize) -> bool,
        mut on_evict: impl FnMut(Handle<T>, usize),
    ) -> Result<CompactReport, CacheError> {
        let started = Instant::now();
        let blocks: Vec<(NonNull<u8>, u32)> = {
            let inner = self.lock()?;
            let slabs: Vec<SlabView> = inner.heap.slabs().filter(|s| s.arena == arena).collect();
            slabs
                .iter()
                .flat_map(|slab| live_blocks(&inner.heap, slab))
                .collect()
        };
        let mut tally = EvictionTally {
            cache: &self.inner,
            evicted: 0,
            started,
        };
        for (block, index) in blocks {
            let Some(slot) = self.table.get(index) else {
                continue;
            };
            let Some((counter, addr)) = slot.snapshot(self.home(index)) else {
                continue;
            };
            if addr != block.as_ptr() as usize || !is_ours(addr) {
                continue;
            }
            if crate::reentry::holds(slot) {
                // Held by this thread's own update (reclaim from inside its closure): it stays.
                continue;
            }
            let handle = self.handle_for(index, counter);
            // Only if it is still in the arena: an update or a move may take it elsewhere meanwhile.
            self.remove_at(handle, guard, Some(addr), |addr| {
                tally.evicted += 1;
                on_evict(handle, addr);
            });
        }
        Ok(CompactReport {
            source_slabs: 0,
            evicted: tally.evicted,
            ..Default::default()
        })
    }

    /// Moves the objects of `sources` (already draining) within the pass's budget, then ends the drain.
    /// The free blocks the moves will fill are first re-linked in address order.
    fn move_sources(&self, heap: &mut movable::MovableHeap, pass: &mut Pass, sources: &[SlabView]) {
        let moving: usize = sources.iter().map(|s| s.live).sum();
        let within = pass.objects_within(moving);
        // Sized once: growing it move by move would fault in fresh pages during the pass.
        pass.moved_from.reserve(within);
        heap.order_free_lists(within);
        for slab in sources {
            if !self.move_slab(heap, pass, slab) {
                break;
            }
        }
        heap.end_drain();
    }

    /// Moves every live object out of `slab`; false when the pass must stop. In a pass that empties
    /// whole slabs only, the first object that stays (refused, or its move abandoned by a panic)
    /// ends the slab's moves: the slab cannot be freed this pass.
    ///
    /// The moves run in batches of up to `MOVE_BATCH` objects, each inside the relocator's `batch`
    /// and under one `catch_unwind` and one re-entrancy mark, not one per callback (they cost more
    /// than a bitwise move). A panic abandons the move in flight (recorded in `in_flight`: the object
    /// stays where it was, its new block is freed) and the next batch starts with the next object. A
    /// batch that made no move at all (its `batch` did not run the moves, or panicked first) has its
    /// objects counted as refused, so that the pass always gets on. A panic's payload is forgotten,
    /// not dropped: its drop could panic in turn, out of the pass.
    ///
    /// The slots are in handle order, random with respect to the slab's blocks, and a sparse slab's
    /// live blocks are far apart: both are prefetched a few moves ahead so that their cache misses
    /// overlap the moves before.
    fn move_slab(&self, heap: &mut movable::MovableHeap, pass: &mut Pass, slab: &SlabView) -> bool {
        const AHEAD: usize = 8;
        let blocks = live_blocks(heap, slab);
        let prefetch = |&(block, owner): &(NonNull<u8>, u32)| {
            self.table.prefetch(owner);
            alloc_core::os::prefetch(block.as_ptr());
        };
        blocks.iter().take(AHEAD).for_each(prefetch);
        let mut next = 0;
        // Whether an object stays in the slab (then, in a whole-slabs pass, the slab's moves end).
        let mut kept = false;
        let whole = pass.whole_slabs;
        while next < blocks.len() && !(whole && kept) {
            let (start, end) = (next, (next + MOVE_BATCH).min(blocks.len()));
            let mut in_flight: Option<InFlight<'_>> = None;
            let mut stop = false;
            // Moves a panic interrupted, including any whose panic `batch` caught before it ran the
            // moves again (or returned): each is undone before anything else happens.
            let mut interrupted = 0;
            let batch = self.in_callback(|| {
                catch_unwind(AssertUnwindSafe(|| {
                    self.relocator.batch(&mut || {
                        interrupted += usize::from(abandon(heap, in_flight.take()));
                        kept |= interrupted > 0;
                        while next < end && !stop && !(whole && kept) {
                            let (block, owner) = blocks[next];
                            next += 1;
                            blocks.get(next + AHEAD - 1).map(prefetch);
                            match self.move_one(heap, pass, block, owner, &mut in_flight) {
                                Step::Done => {}
                                Step::Kept => kept = true,
                                Step::Stop => stop = true,
                            }
                        }
                    })
                }))
            });
            interrupted += usize::from(abandon(heap, in_flight.take()));
            let panicked = batch.is_err();
            if let Err(payload) = batch {
                std::mem::forget(payload);
            }
            pass.report.panics += interrupted.max(usize::from(panicked));
            kept |= interrupted > 0 || panicked;
            if stop {
                return false;
            }
            if next == start {
                // Nothing ran: the batch's objects stay, refused.
                pass.report.refused += end - start;
                next = end;
                kept = true;
            }
        }
        true
    }

    /// Moves one object (`owner` is its slot index); its old copy joins `pass.moved_from`, retired
    /// through the epoch when the pass ends. While a callback runs, `in_flight` says what to undo if
    /// it panics.
    fn move_one<'t>(
        &'t self,
        heap: &mut movable::MovableHeap,
        pass: &mut Pass,
        block: NonNull<u8>,
        owner: u32,
        in_flight: &mut Option<InFlight<'t>>,
    ) -> Step {
        let bytes = self.object_bytes;
        if !pass.may_move() {
            return Step::Stop;
        }
        let old = block.as_ptr() as usize;
        let Some(slot) = self.table.get(owner) else {
            return Step::Done;
        };
        let home = self.home(owner);
        if !slot.try_isolate(self.table.pin_gate(), self.table.pins(owner), old, home) {
            if slot.address(home) == old {
                // Held by a writer, a remover, a pin or another move.
                pass.report.refused += 1;
                return Step::Kept;
            }
            // Not the object's copy: an old one waiting for the epoch (the object was moved,
            // updated or removed under a guard still pinned), or an update's new one not yet
            // published. Nothing to move.
            return Step::Done;
        }
        let handle = self.handle_for(owner, slot.generation());
        // SAFETY: the slot is isolated: the object is live at `old` and nobody can retire it.
        let object = unsafe { &*(old as *const T) };
        *in_flight = Some(InFlight {
            slot,
            home,
            old,
            target: None,
        });
        let verdict = self.relocator.isolate(object, handle);
        if verdict == Isolation::Busy {
            *in_flight = None;
            slot.abort_move(old, home);
            pass.report.refused += 1;
            return Step::Kept;
        }
        // Still in flight: were the allocation to unwind, the move would be undone all the same.
        let Some(target) = alloc_block(heap, owner) else {
            *in_flight = None;
            slot.abort_move(old, home);
            return Step::Stop;
        };
        let new = target.as_ptr().cast::<T>();
        *in_flight = Some(InFlight {
            slot,
            home,
            old,
            target: Some(target),
        });
        if bytes == size_of::<T>() {
            // SAFETY: `old` is a live `T` that stays readable until the epoch passes; `new` is a
            // fresh, aligned block for one `T`.
            unsafe { self.relocator.migrate(old as *const T, new, handle) };
        } else {
            // A `T` with a tail (only `with_tail` caches, whose moves are bytewise): copy it all.
            // SAFETY: both blocks hold `bytes`; the old one stays readable until the epoch passes.
            unsafe { std::ptr::copy_nonoverlapping(old as *const u8, new.cast::<u8>(), bytes) };
        }
        *in_flight = None;
        slot.publish_move(new as usize, home);
        pass.moved(bytes, old);
        Step::Done
    }

    fn finish(
        &self,
        guard: &Guard,
        counters: &mut Counters,
        pass: Pass,
        started: Instant,
    ) -> CompactReport {
        self.retire_moved(guard, pass.moved_from);
        let report = pass.report;
        counters.moved_objects += report.moved_objects as u64;
        counters.moved_bytes += report.moved_bytes as u64;
        counters.refused_moves += report.refused as u64;
        counters.callback_panics += report.panics as u64;
        counters.compaction_nanos += started.elapsed().as_nanos() as u64;
        report
    }

    /// Returns the arenas that compaction or eviction emptied to the OS now, rather than after the
    /// decommit delay. Returns the bytes given back (shared by every movable cache in the process).
    ///
    /// Each arena given back costs every other running thread of the process a TLB shootdown (an
    /// interrupt: about 10 µs of a reader's time on the machine of `benches/README.md`). To give
    /// memory back often, as a compaction loop does, prefer
    /// [`release_aged_arenas`](Self::release_aged_arenas).
    pub fn release_empty_arenas(&self) -> usize {
        self.count_released(movable::release_free_arenas)
    }

    /// What [`release_empty_arenas`](Self::release_empty_arenas) does, for the movable arenas that
    /// have had free memory for alloc-core's decommit delay (50 ms) only, as alloc-core's own
    /// maintenance and the background compactor (every round) do. Memory comes back up to one delay
    /// later, and an arena that empties and is needed again soon is reused rather than unmapped and
    /// mapped again, sparing the other threads those TLB shootdowns. Returns the bytes given back
    /// (shared by every movable cache in the process).
    pub fn release_aged_arenas(&self) -> usize {
        self.count_released(movable::release_aged_arenas)
    }

    /// Runs `release` and counts what it gave back; from inside one of this cache's relocation
    /// callbacks, refused like every call that takes the lock: releases nothing and returns 0.
    fn count_released(&self, release: impl FnOnce() -> usize) -> usize {
        let Ok(mut inner) = self.lock() else {
            return 0;
        };
        let released = release();
        inner.counters.released_bytes += released as u64;
        released
    }

    /// Statistics of this cache.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            table_committed_bytes: self.table.committed()
                * std::mem::size_of::<crate::slot::Slot>(),
            table_bytes: self.table.resident_bytes(),
            ..self.slab_stats()
        }
    }

    /// Statistics of this cache but its handle table (which a byte-blob class shares with the
    /// others: the `BlobCache` reads it once for all).
    pub(crate) fn slab_stats(&self) -> CacheStats {
        let inner = self.lock_outside_callback("stats");
        // Every slab of a heap has the same length: counted, not walked (a walk reads every slab's
        // descriptor, a cache miss each: 1.7 ms for a `BlobCache` of 1.5 GB).
        let slabs = inner.heap.slab_count();
        let resident = slabs * slab_bytes(inner.heap.slab_capacity(), inner.heap.block_bytes());
        debug_assert_eq!(
            (slabs, resident),
            (inner.heap.slabs()).fold((0, 0), |(n, bytes), s| (
                n + 1,
                bytes + slab_bytes(s.capacity, s.block_bytes)
            ))
        );
        let live = self.live(&inner);
        CacheStats {
            live_objects: live,
            live_bytes: live * self.object_bytes,
            slabs,
            resident_bytes: resident,
            table_committed_bytes: 0,
            table_bytes: 0,
            fragmentation: fragmentation(resident, live * self.block_bytes()),
            counters: Counters {
                drop_panics: self.retired.drop_panics() as u64,
                ..inner.counters
            },
        }
    }
}

/// Undoes a move a callback's panic interrupted, if there is one (`in_flight`): its new block, if
/// any, is freed and the object stays where it was. Returns whether there was one.
fn abandon(heap: &mut movable::MovableHeap, in_flight: Option<InFlight<'_>>) -> bool {
    let Some(InFlight {
        slot,
        home,
        old,
        target,
    }) = in_flight
    else {
        return false;
    };
    if let Some(target) = target {
        // SAFETY: allocated by this move from this heap; `migrate` panicked, so the block holds no
        // value that needs dropping.
        unsafe { heap.free(target) };
    }
    slot.abort_move(old, home);
    true
}

/// `resident / live_bytes` as [`CacheStats::fragmentation`] defines it.
pub(crate) fn fragmentation(resident: usize, live_bytes: usize) -> f64 {
    match (resident, live_bytes) {
        (0, _) => 1.0,
        (_, 0) => f64::INFINITY,
        _ => resident as f64 / live_bytes as f64,
    }
}

/// A reclaim's evictions so far: added to its cache's counters when dropped, so that an `on_evict`
/// that panics leaves the evictions made before it counted (each was made when it was counted).
struct EvictionTally<'c> {
    cache: &'c Mutex<Inner>,
    evicted: usize,
    started: Instant,
}

impl Drop for EvictionTally<'_> {
    fn drop(&mut self) {
        // The mutex itself: the reclaim has passed `RelocCache::lock`'s check for reentry.
        let mut inner = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        inner.counters.evicted_objects += self.evicted as u64;
        inner.counters.compaction_nanos += self.started.elapsed().as_nanos() as u64;
    }
}

/// Evacuates `arenas` one after another with `evacuate`, within one `budget` for them all (each
/// gets what the ones before it left); the report says the budget ran out if arenas were left.
pub(crate) fn evacuate_in_turn(
    arenas: impl IntoIterator<Item = usize>,
    budget: Budget,
    mut evacuate: impl FnMut(usize, Budget) -> Result<CompactReport, CacheError>,
) -> Result<CompactReport, CacheError> {
    let mut total = CompactReport::default();
    let mut left = Some(budget);
    for arena in arenas {
        let Some(budget) = left else {
            total.budget_exhausted = true;
            break;
        };
        let report = evacuate(arena, budget)?;
        total.merge(report);
        left = budget.less(&report);
    }
    Ok(total)
}

/// Adds `amount` to `arena`'s total in `totals` (a short list: a cache spans few arenas).
pub(crate) fn add_to_arena(totals: &mut Vec<(usize, usize)>, arena: usize, amount: usize) {
    match totals.iter_mut().find(|(a, _)| *a == arena) {
        Some((_, total)) => *total += amount,
        None => totals.push((arena, amount)),
    }
}

/// `arena`'s total in `totals` (as [`add_to_arena`] keeps them), 0 if it has none.
fn arena_total(totals: &[(usize, usize)], arena: usize) -> usize {
    totals
        .iter()
        .find(|(a, _)| *a == arena)
        .map_or(0, |(_, t)| *t)
}

/// The bytes of a slab of `capacity` blocks of `block_bytes` (whole 64 KiB units).
fn slab_bytes(capacity: usize, block_bytes: usize) -> usize {
    (capacity * block_bytes).next_multiple_of(64 << 10)
}

/// alloc-core's arena size.
fn arena_bytes() -> usize {
    movable::ARENA_BYTES
}

fn live_blocks(heap: &movable::MovableHeap, slab: &SlabView) -> Vec<(NonNull<u8>, u32)> {
    let mut blocks = Vec::with_capacity(slab.live);
    heap.for_each_live(slab, |block, owner| blocks.push((block, owner)));
    blocks
}
