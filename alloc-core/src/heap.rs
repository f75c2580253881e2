//! Per-thread heaps: the small-object fast path and everything behind it.
//!
//! A heap owns slabs, per size class, in two intrusive lists: `avail` (slabs that may have free blocks;
//! the class's `current` slab is one of them) and `full` (slabs parked because they had none; each is
//! *armed*, so the first remote free into it hands its block to this heap's `delayed` list, which
//! un-parks it). Exactly one thread owns a heap at a time: the thread whose thread-local pointer holds
//! it, or whoever holds the abandoned-heap lock while the heap is on that list. Only the owner touches
//! the heap's `Cell`s and its slabs' owner fields.
//!
//! Fast paths (inlined into the front): allocation pops `current[class].free`; a free whose slab's
//! `local_key` is this heap pushes onto `local_free`. Everything else is `#[cold]` here: refilling,
//! parking and un-parking, taking slabs from the shared pool or the arenas, and returning slabs.
//!
//! Hoard-style bound: a slab that empties goes back to its arena (unless it is the class's current
//! slab), and at thread exit the heap gives its sparse slabs to the shared pool, so that one thread's
//! frees cannot pin memory another thread could use. (`purge` on a running thread keeps its slabs,
//! which that thread is likely to fill again, and decommits their free pages.)
//!
//! Frees by other threads wait in their slabs' remote lists until the owner collects them. A parked
//! slab's first remote free reaches the owner through `delayed`, at its next slow path, which then
//! takes the slab's other remote frees too and returns it if they emptied it (so a thread whose
//! full slabs other threads emptied gives them back at its first slow path). Otherwise the slow
//! path only looks at the slabs of the class it allocates, up to the first with a free block.
//! So the owner also collects its whole heap (every class: remote frees gathered, emptied slabs
//! returned) every `max(COLLECT_EVERY, 4 × slabs owned)` slow paths, and sooner when another
//! thread's `purge` or the background purger asked ([`Heap::request_collect`]), but never within
//! `slabs owned / ASKED_SPACING` slow paths of the last time: otherwise a thread that keeps
//! allocating would keep, for every class it ever used, the slabs other threads' frees emptied.
//! A walk visits every slab (a cache miss each), so it costs a quarter of a slab visit per slow
//! path on average unasked, and at most `ASKED_SPACING` however often others ask. It returns the
//! slabs that were empty at the previous collection too and have not been their class's current
//! slab since (`FLAG_IDLE`), so that a producer whose slabs a consumer empties keeps those it
//! takes up again; after a `purge` asked, every empty slab. (It does not decommit pages inside the
//! slabs it keeps, which means scanning their free blocks: only the thread's own `purge` does that.)

use crate::arena::{ArenaKind, Placement, POOL};
use crate::os;
use crate::pool;
use crate::remote::{Block, DelayedFreeList};
use crate::size_class::{CLASSES, NUM_CLASSES};
#[cfg(any(test, feature = "invariants"))]
use crate::slab::KIND_SMALL;
use crate::slab::{Slab, FLAG_FULL, FLAG_IDLE, UNOWNED};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use core::cell::Cell;
use core::ptr;

/// A slab at most this fraction used is *sparse*: an abandoned heap hands it to the shared pool.
const SPARSE_FRACTION: u32 = 4;

/// Slow paths between two collections of a whole heap, at least (see the module doc).
const COLLECT_EVERY: usize = 10_000;

/// A heap asked to collect itself does so only once `slabs owned / ASKED_SPACING` slow paths went by
/// since it last did (see the module doc).
const ASKED_SPACING: usize = 8;

/// What another thread asked of a heap ([`Heap::request_collect`]), strongest last: nothing, to
/// return the idle empty slabs, to return every empty slab.
const NO_REQUEST: u32 = 0;
const RETURN_IDLE: u32 = 1;
const RETURN_EMPTY: u32 = 2;

/// The slab every empty heap slot points at; its `free` is null forever.
pub(crate) static EMPTY_SLAB: Slab = Slab::empty();

pub(crate) fn empty_slab() -> *mut Slab {
    ptr::addr_of!(EMPTY_SLAB) as *mut Slab
}

/// Intrusive doubly linked list of slabs through `Slab::next` / `prev`.
pub(crate) struct SlabList {
    head: Cell<*mut Slab>,
}

impl SlabList {
    pub(crate) const fn new() -> Self {
        Self {
            head: Cell::new(ptr::null_mut()),
        }
    }

    pub(crate) fn head(&self) -> *mut Slab {
        self.head.get()
    }

    pub(crate) fn push(&self, slab: &Slab) {
        let old = self.head.get();
        slab.prev.set(ptr::null_mut());
        slab.next.set(old);
        if !old.is_null() {
            // SAFETY: list members are live descriptors owned by the list's owner.
            unsafe { (*old).prev.set(slab as *const Slab as *mut Slab) };
        }
        self.head.set(slab as *const Slab as *mut Slab);
    }

    pub(crate) fn remove(&self, slab: &Slab) {
        let (prev, next) = (slab.prev.get(), slab.next.get());
        if prev.is_null() {
            self.head.set(next);
        } else {
            // SAFETY: `prev` is a member of the same list.
            unsafe { (*prev).next.set(next) };
        }
        if !next.is_null() {
            // SAFETY: `next` is a member of the same list.
            unsafe { (*next).prev.set(prev) };
        }
        slab.next.set(ptr::null_mut());
        slab.prev.set(ptr::null_mut());
    }
}

/// Relaxed counters the owner writes and a statistics snapshot reads.
pub(crate) struct HeapCounters {
    pub(crate) slow_allocs: AtomicU64,
    pub(crate) slabs_taken: AtomicU64,
    pub(crate) slabs_returned: AtomicU64,
    pub(crate) remote_collected: AtomicU64,
}

impl HeapCounters {
    const fn new() -> Self {
        Self {
            slow_allocs: AtomicU64::new(0),
            slabs_taken: AtomicU64::new(0),
            slabs_returned: AtomicU64::new(0),
            remote_collected: AtomicU64::new(0),
        }
    }

    fn bump(counter: &AtomicU64, by: u64) {
        counter.store(counter.load(Ordering::Relaxed) + by, Ordering::Relaxed);
    }
}

#[repr(C)]
pub(crate) struct Heap {
    /// Per class: the slab the fast path pops from (`EMPTY_SLAB` when none).
    pub(crate) current: [Cell<*mut Slab>; NUM_CLASSES],
    avail: [SlabList; NUM_CLASSES],
    full: [SlabList; NUM_CLASSES],
    /// Blocks of this heap's parked slabs, freed by other threads.
    pub(crate) delayed: DelayedFreeList,
    /// Link in the abandoned-heap list.
    pub(crate) next_abandoned: Cell<*mut Heap>,
    /// Link in the list of every heap ever made (fixed once set).
    pub(crate) next_all: Cell<*mut Heap>,
    /// Slabs on `avail` and `full`.
    owned_slabs: Cell<usize>,
    /// Slow paths since the heap was last collected whole.
    slow_since_collect: Cell<usize>,
    /// `NO_REQUEST`, `RETURN_IDLE` or `RETURN_EMPTY`, set by other threads.
    collect_requested: AtomicU32,
    pub(crate) counters: HeapCounters,
}

// SAFETY: a heap is owned by one thread at a time (module doc); other threads only push to `delayed`
// (atomic) and read the relaxed counters.
unsafe impl Sync for Heap {}

impl Heap {
    pub(crate) const fn new() -> Self {
        Self {
            current: [const { Cell::new(ptr::addr_of!(EMPTY_SLAB) as *mut Slab) }; NUM_CLASSES],
            avail: [const { SlabList::new() }; NUM_CLASSES],
            full: [const { SlabList::new() }; NUM_CLASSES],
            delayed: DelayedFreeList::new(),
            next_abandoned: Cell::new(ptr::null_mut()),
            next_all: Cell::new(ptr::null_mut()),
            owned_slabs: Cell::new(0),
            slow_since_collect: Cell::new(0),
            collect_requested: AtomicU32::new(NO_REQUEST),
            counters: HeapCounters::new(),
        }
    }

    #[inline]
    pub(crate) fn addr(&self) -> usize {
        self as *const Heap as usize
    }

    /// The fast path: pop from the current slab of `class`.
    #[inline(always)]
    pub(crate) fn alloc_small(&self, class: usize) -> *mut u8 {
        // SAFETY: `current` always points at a live descriptor: EMPTY_SLAB or a slab this heap owns.
        let slab = unsafe { &*self.current[class].get() };
        if slab.free.get().is_null() {
            return self.alloc_small_slow(class);
        }
        // SAFETY: we own the slab and its free list is non-empty.
        unsafe { slab.pop_unchecked().cast() }
    }

    /// Refills or replaces the current slab of `class`; null when memory is exhausted.
    #[cold]
    #[inline(never)]
    pub(crate) fn alloc_small_slow(&self, class: usize) -> *mut u8 {
        if let Some(redirect) = crate::thread::uninitialised_heap_redirect(self, class) {
            return redirect;
        }
        HeapCounters::bump(&self.counters.slow_allocs, 1);
        self.collect_if_due();
        self.drain_delayed();
        let mut slab = self.avail[class].head();
        while !slab.is_null() {
            // SAFETY: slabs on our lists are live and owned by us.
            let s = unsafe { &*slab };
            let next = s.next.get();
            if s.refill() {
                self.make_current(class, s);
                // SAFETY: `refill` returned true, so `free` is non-empty.
                return unsafe { s.pop_unchecked().cast() };
            }
            self.park_full(s);
            slab = next;
        }
        loop {
            let next = self.next_slab(class);
            // Out of memory while freed huge mappings are kept: give them back, try once more.
            let next = next.or_else(|| {
                crate::huge_cache::release_all()
                    .then(|| self.next_slab(class))
                    .flatten()
            });
            let Some(slab) = next else {
                self.current[class].set(empty_slab());
                return ptr::null_mut();
            };
            // SAFETY: the slab was just handed to this heap.
            let s = unsafe { &*slab };
            HeapCounters::bump(&self.counters.slabs_taken, 1);
            self.owned_slabs.set(self.owned_slabs.get() + 1);
            self.avail[class].push(s);
            if s.refill() {
                self.make_current(class, s);
                // SAFETY: `refill` returned true.
                return unsafe { s.pop_unchecked().cast() };
            }
            // A pooled slab that filled up through late allocations of its former owner.
            self.park_full(s);
        }
    }

    /// Makes `slab` (of this heap's `avail` list) the one `class` allocates from: not idle.
    fn make_current(&self, class: usize, slab: &Slab) {
        slab.flags.set(slab.flags.get() & !FLAG_IDLE);
        self.current[class].set(slab as *const Slab as *mut Slab);
    }

    /// A slab for `class`: from the shared pool, else (after giving abandoned heaps' slabs to the pool
    /// when that is due) from the pool again, else fresh units from the arenas.
    fn next_slab(&self, class: usize) -> Option<*mut Slab> {
        if let Some(slab) = pool::take_slab(class, self.addr()) {
            return Some(slab);
        }
        if pool::reclaim_abandoned_if_due() {
            if let Some(slab) = pool::take_slab(class, self.addr()) {
                return Some(slab);
            }
        }
        self.new_slab(class)
    }

    fn new_slab(&self, class: usize) -> Option<*mut Slab> {
        let units = CLASSES[class].slab_units as usize;
        let owner = self.addr();
        let taken = POOL
            .lock()
            .alloc_units(ArenaKind::Normal, units, Placement::SHARED, |u| {
                // SAFETY: the units were just taken from a live arena under the pool lock.
                let descs = unsafe { &(*u.arena).descs };
                descs[u.first].init_small(
                    &descs[u.first + 1..u.first + units],
                    u.start(),
                    class,
                    owner,
                    false,
                );
            })?;
        crate::stats::slab_created(class);
        // SAFETY: `alloc_units` initialised this descriptor.
        Some(unsafe { &(*taken.arena).descs[taken.first] } as *const Slab as *mut Slab)
    }

    /// Parks a slab that had no free block in the full list and arms its notify flag.
    fn park_full(&self, slab: &Slab) {
        let class = slab.class.get() as usize;
        let late = slab.remote.take_and_arm();
        if !late.is_null() {
            // Remote frees raced in: not full after all. Disarming may fail if another one consumed
            // the flag; its block then reaches us through `delayed`, which is harmless.
            slab.absorb(late);
            slab.remote.disarm();
            return;
        }
        self.avail[class].remove(slab);
        if ptr::eq(self.current[class].get(), slab) {
            self.current[class].set(empty_slab());
        }
        slab.flags.set(slab.flags.get() | FLAG_FULL);
        slab.local_key.store(self.addr() | 1, Ordering::Relaxed);
        self.full[class].push(slab);
    }

    /// Moves a parked slab back to `avail` (it received a free).
    fn unpark(&self, slab: &Slab) {
        let class = slab.class.get() as usize;
        slab.remote.disarm();
        slab.flags.set(slab.flags.get() & !FLAG_FULL);
        slab.local_key.store(self.addr(), Ordering::Relaxed);
        self.full[class].remove(slab);
        self.avail[class].push(slab);
    }

    /// Frees a block of a slab this heap owns, from a slow path (parked slab, delayed list).
    pub(crate) fn free_owned(&self, slab: &Slab, block: *mut Block) {
        if slab.is_full_parked() {
            self.unpark(slab);
            // Only the first remote free into a parked slab reaches us; the others since wait on
            // its remote list. Take them now (as mimalloc does for a full page), so that a slab
            // that other threads emptied goes back to its arena at this heap's next slow path,
            // not at its next whole-heap collection: a thread pool whose results another thread
            // frees would otherwise keep its peak while its threads run small jobs.
            let collected = slab.collect_remote();
            HeapCounters::bump(&self.counters.remote_collected, collected as u64);
        }
        // SAFETY: we own the slab and the block was handed out from it.
        let used = unsafe { slab.push_local(block) };
        if used == 0 {
            self.slab_emptied(slab);
        }
    }

    /// A slab's last block came back: keep it if it is the class's current slab, else return it.
    #[cold]
    #[inline(never)]
    pub(crate) fn slab_emptied(&self, slab: &Slab) {
        let class = slab.class.get() as usize;
        if ptr::eq(self.current[class].get(), slab) {
            return;
        }
        self.avail[class].remove(slab);
        self.release_slab(slab);
    }

    fn release_slab(&self, slab: &Slab) {
        HeapCounters::bump(&self.counters.slabs_returned, 1);
        self.owned_slabs.set(self.owned_slabs.get() - 1);
        release_slab_to_arena(slab);
    }

    /// Asks the heap's owner to collect the whole heap soon, at an allocation slow path, returning
    /// every empty slab if `every_empty` (else only the idle ones; see the module doc). Any thread
    /// may ask.
    pub(crate) fn request_collect(&self, every_empty: bool) {
        let request = if every_empty {
            RETURN_EMPTY
        } else {
            RETURN_IDLE
        };
        self.collect_requested.fetch_max(request, Ordering::Relaxed);
    }

    /// Forgets what other threads asked (for a heap that has just collected itself).
    pub(crate) fn clear_collect_request(&self) {
        self.collect_requested.store(NO_REQUEST, Ordering::Relaxed);
    }

    /// Collects the whole heap when it is due (see the module doc).
    fn collect_if_due(&self) {
        let since = self.slow_since_collect.get() + 1;
        let owned = self.owned_slabs.get();
        let asked = self.collect_requested.load(Ordering::Relaxed) != NO_REQUEST;
        if since < COLLECT_EVERY.max(4 * owned) && !(asked && since >= owned / ASKED_SPACING) {
            self.slow_since_collect.set(since);
            return;
        }
        self.slow_since_collect.set(0);
        let request = self.collect_requested.swap(NO_REQUEST, Ordering::Relaxed);
        self.collect_with(false, false, request != RETURN_EMPTY);
    }

    /// Takes the blocks other threads handed us for our parked slabs.
    pub(crate) fn drain_delayed(&self) {
        let mut block = self.delayed.take();
        while !block.is_null() {
            // SAFETY: blocks on the delayed list were freed to us and carry a link.
            let next = unsafe { (*block).next };
            // SAFETY: a delayed block lies in a live slab (its block keeps the slab from being released).
            let slab = unsafe { crate::global::slab_of(block as usize) };
            if slab.owner.load(Ordering::Relaxed) == self.addr() {
                self.free_owned(slab, block);
            } else {
                // Ownership moved after the freeing thread read it; send it on.
                // SAFETY: we own the block (taken from our delayed list).
                unsafe { crate::global::free_remote(slab, block) };
            }
            block = next;
        }
    }

    /// Collects every remote free, returns empty slabs and, when `release_pages`, decommits free pages
    /// inside the slabs it keeps. When `to_pool` (an abandoned heap: nobody allocates from it, so
    /// unchanged slabs are not rescanned), gives its sparse slabs (at most 1/`SPARSE_FRACTION` used) to
    /// the shared pool, where any heap can fill them; the fuller ones stay for whoever adopts the heap.
    /// Caller: the owner (its own heap, or an abandoned heap under the abandoned-list lock).
    pub(crate) fn collect(&self, release_pages: bool, to_pool: bool) -> usize {
        self.collect_with(release_pages, to_pool, false)
    }

    /// [`collect`](Self::collect); if `idle_only`, an empty slab is returned only if it was idle
    /// (`FLAG_IDLE`), and marked idle otherwise.
    fn collect_with(&self, release_pages: bool, to_pool: bool, idle_only: bool) -> usize {
        self.drain_delayed();
        let mut released = 0;
        for class in 0..NUM_CLASSES {
            let mut slab = self.full[class].head();
            while !slab.is_null() {
                // SAFETY: members of our lists are live slabs we own.
                let s = unsafe { &*slab };
                let next = s.next.get();
                let collected = s.collect_remote();
                if collected > 0 {
                    HeapCounters::bump(&self.counters.remote_collected, collected as u64);
                    self.unpark(s);
                }
                slab = next;
            }
            let mut slab = self.avail[class].head();
            while !slab.is_null() {
                // SAFETY: as above.
                let s = unsafe { &*slab };
                let next = s.next.get();
                let collected = s.collect_remote();
                HeapCounters::bump(&self.counters.remote_collected, collected as u64);
                // Empty now: idle from now on, and returned if it was idle already or may be
                // returned at once.
                let (flags, empty) = (s.flags.get(), s.used() == 0);
                s.flags.set(if empty {
                    flags | FLAG_IDLE
                } else {
                    flags & !FLAG_IDLE
                });
                if empty && (!idle_only || flags & FLAG_IDLE != 0) {
                    if self.current[class].get() == slab {
                        self.current[class].set(empty_slab());
                    }
                    self.avail[class].remove(s);
                    self.release_slab(s);
                } else if to_pool && s.used() <= s.capacity.get() / SPARSE_FRACTION {
                    if self.current[class].get() == slab {
                        self.current[class].set(empty_slab());
                    }
                    self.avail[class].remove(s);
                    if release_pages {
                        released += s.release_free_pages(to_pool);
                    }
                    self.owned_slabs.set(self.owned_slabs.get() - 1);
                    pool::give_slab(s);
                } else if release_pages {
                    released += s.release_free_pages(to_pool);
                }
                slab = next;
            }
        }
        released
    }

    /// Visits every slab this heap owns (for invariant checks).
    #[cfg(any(test, feature = "invariants"))]
    pub(crate) fn check_invariants(&self) {
        let mut slabs = 0;
        for class in 0..NUM_CLASSES {
            let current = self.current[class].get();
            let mut current_listed = ptr::eq(current, empty_slab());
            for (list, parked) in [(&self.avail[class], false), (&self.full[class], true)] {
                let mut slab = list.head();
                while !slab.is_null() {
                    // SAFETY: members of our lists are live slabs we own.
                    let s = unsafe { &*slab };
                    assert_eq!(s.kind.get(), KIND_SMALL);
                    assert_eq!(s.class.get() as usize, class);
                    assert_eq!(s.owner.load(Ordering::Relaxed), self.addr());
                    assert_eq!(s.is_full_parked(), parked);
                    // The owner frees into it locally exactly when it is not parked.
                    let key = if parked { self.addr() | 1 } else { self.addr() };
                    assert_eq!(s.local_key.load(Ordering::Relaxed), key);
                    // Only a parked slab waits for a first remote free to hand over.
                    assert!(parked || !s.remote.is_armed());
                    current_listed |= !parked && ptr::eq(slab, current);
                    s.check_invariants();
                    slabs += 1;
                    slab = s.next.get();
                }
            }
            assert!(
                current_listed,
                "class {class}'s current slab is not on its avail list"
            );
        }
        assert_eq!(self.owned_slabs.get(), slabs);
    }
}

/// Returns an empty slab's units to its arena.
pub(crate) fn release_slab_to_arena(slab: &Slab) {
    debug_assert_eq!(slab.used(), 0);
    debug_assert!(!slab.remote.has_blocks() && !slab.remote.is_armed());
    let class = slab.class.get() as usize;
    let units = slab.units.get() as usize;
    // Pages decommitted inside the slab count as committed again once the unit is merely dirty.
    let released = slab.released.get().count_ones() as usize * os::page_size();
    crate::stats::add_committed(released);
    let head = slab as *const Slab;
    let arena = crate::arena::meta_of(head as usize);
    // SAFETY: the descriptor lies in its arena's descriptor array, which starts at the arena base.
    let first = unsafe { head.offset_from(ptr::addr_of!((*arena).descs).cast::<Slab>()) } as usize;
    let now = os::now_ms();
    let mut pool = POOL.lock();
    // SAFETY: the arena is live (it holds this slab) and we hold the pool lock.
    let descs = unsafe { &(*arena).descs };
    for desc in &descs[first..first + units] {
        desc.init_unowned();
    }
    slab.owner.store(UNOWNED, Ordering::Relaxed);
    pool.free_units(arena, first, units, now);
    crate::arena::maintain_if_due(pool, now);
    crate::stats::slab_released(class);
}
