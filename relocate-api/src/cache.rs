//! `RelocCache<T>`: same-sized objects on movable slabs, reached through handles.
//!
//! Concurrency, in one paragraph: reads are wait-free (`get` checks the slot's generation and loads
//! its address, under an epoch guard of this cache's own collector; a [`View`] does the same for a
//! loop of gets under one guard). Everything that allocates or frees blocks or slots (insert,
//! compaction, the freeing of retired blocks, the linking of vacant slots) holds the cache's
//! `inner` lock; updates, removes and moves of one object are serialised by that object's slot (see
//! `slot`), and a remove never takes `inner` (only, once per batch, `retired`'s). Memory that a
//! pinned reader might still hold (an old copy after a move or an update, a removed object) is
//! retired through the epoch: the guard collects a batch of such blocks (and the vacant slots of
//! removed objects), hands the slots to `retired` and the blocks to one deferred function that
//! (drops the old values if it must and) queues them on `retired`; the next operation that holds
//! `inner` returns the blocks to the movable heap and takes the slots back (parks a home slot for
//! its block's next object, lists any other as free; see `home` and `free`). Deferred functions
//! never take `inner`, so they may run on any thread at any time without deadlock.

use crate::free::{FreeSlots, UNIT_SLOTS};
use crate::guard::{flush_until_quiet, next_epoch_id, Guard, Reader};
use crate::handle::Handle;
use crate::home::{HomeOf, Homes};
use crate::inner::{Counters, Inner, SPARE_CLAIM_SLOTS};
use crate::policy::{BitwiseMove, Relocatable, Relocator};
use crate::reentry;
use crate::retire::Retired;
pub(crate) use crate::slot::tag_bits;
use crate::slot::{self, Home, Slot, GEN_COUNTER_MASK, INDEX_BITS, TAG_BITS};
use crate::striped::StripedCounter;
use crate::table::SlotTable;
use crate::view::{read_many, View};
use alloc_core::movable::MovableHeap;
use crossbeam_epoch::Collector;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// At most this many inserts between two checks of whether a cache has grown into an arena group of
/// its own (see `Inner::arena_group`): each sums the striped removal counter. Fewer for large
/// objects, so that a check comes at least every quarter of an arena (see `join_check_mask`).
const JOIN_CHECK_INSERTS: usize = 256;

/// The mask of `Inner::inserted` at whose zeros a cache of `block_bytes` blocks checks whether it
/// joins its arena group: a power of two of inserts, at most `JOIN_CHECK_INSERTS`, filling at most
/// a quarter of an arena (a review found caches of 32 KiB objects filling 4 MiB of shared arenas
/// between two checks every 256 inserts).
fn join_check_mask(block_bytes: usize) -> usize {
    let quarter = alloc_core::movable::ARENA_BYTES / 4 / block_bytes.max(1);
    (1 << quarter.max(1).ilog2()).min(JOIN_CHECK_INSERTS) - 1
}

/// Why a cache could not be made or an operation could not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheError {
    /// `T`'s size rounded up to its alignment is over the largest movable block (36 KiB), as it is
    /// for every alignment above 32 KiB; or a blob is longer than [`crate::MAX_BLOB_BYTES`].
    TooLarge,
    /// Out of memory (slabs, handle-table pages), or the cache holds [`MAX_OBJECTS`] already (or
    /// has used every slot's generations, see [`MAX_OBJECTS`]).
    OutOfMemory,
    /// The call came from inside one of this cache's relocation callbacks, which would deadlock.
    Reentrant,
    /// The process has made as many caches as there are tags ([`MAX_CACHES`]); tags are never
    /// reused, so that no cache can accept another's (or a dropped cache's) handles.
    TooManyCaches,
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CacheError::TooLarge => {
                "too large for a movable block: a type over 36 KiB (or aligned above 32 KiB), or \
                 a blob over 36 KiB - 4 B"
            }
            CacheError::OutOfMemory => "out of memory",
            CacheError::Reentrant => "called from inside this cache's relocation callback",
            CacheError::TooManyCaches => "the process has made as many caches as there are tags",
        })
    }
}

impl std::error::Error for CacheError {}

/// Drops the `T` at `block` (the `drop_value` a cache hands [`OpenBatch::retire`]).
///
/// # Safety
/// `block` holds a valid `T` that nothing reads or drops again.
unsafe fn drop_block<T>(block: usize) {
    // SAFETY: the caller's contract.
    unsafe { ptr::drop_in_place(block as *mut T) };
}

/// Whether `slot` holds a live object of generation `counter` (whatever holds it: reliable when this
/// thread holds the slot, as only the holder changes it).
fn names_live(slot: &Slot, counter: u32, home: Home) -> bool {
    slot.snapshot(home).is_some_and(|(gen, _)| gen == counter)
}

/// A block for the object of slot `owner`, at an address a slot can hold (always, for alloc-core's
/// arenas; checked rather than assumed). `None` when memory is exhausted.
pub(crate) fn alloc_block(heap: &mut MovableHeap, owner: u32) -> Option<NonNull<u8>> {
    let block = heap.alloc(owner)?;
    if slot::storable(block.as_ptr() as usize) {
        return Some(block);
    }
    // SAFETY: allocated just now from this heap and never published.
    unsafe { heap.free(block) };
    None
}

/// How many objects a [`RelocCache`] can hold at once (its handle table is reserved for this many
/// slots up front: 3 GiB of address space, of which only the slots in use become memory).
///
/// A slot serves 2^18 generations and is then retired for good (a reused generation could let a
/// stale handle name a new object), so a cache accepts at least `MAX_OBJECTS × 2^18` = 2^46 inserts
/// in its life (a [`crate::BlobCache`] as many, over all its size classes, which share one table);
/// beyond that, inserts fail with `OutOfMemory`, and each retired slot keeps its 8 bytes.
pub const MAX_OBJECTS: usize = 1 << INDEX_BITS;

/// How many caches (a [`crate::BlobCache`] counts once) a process can make in its life: each takes a
/// tag that is never reused. A handle carries its cache's tag, which is how a handle from another
/// cache is refused.
pub const MAX_CACHES: usize = (1 << (TAG_BITS - 1)) - 1;

static NEXT_TAG: AtomicU32 = AtomicU32::new(1);

/// A tag no cache has had, from `counter`; `None` once all are taken.
fn take_tag(counter: &AtomicU32) -> Option<u32> {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tag| {
            (tag as usize <= MAX_CACHES).then_some(tag + 1)
        })
        .ok()
}

/// A fresh tag for a new cache.
pub(crate) fn next_tag() -> Result<u32, CacheError> {
    take_tag(&NEXT_TAG).ok_or(CacheError::TooManyCaches)
}

/// A cache of `T` on movable slabs, relocated by `R` (bytewise by default).
///
/// Its state that changes (`inner`, `removed`) lies behind boxes, so that the cache itself holds no
/// interior mutability (unless `R` does): the compiler then knows a `&RelocCache` read-only, and a
/// loop of `get`s keeps what each one reads from the cache (table and home bases, tag, collector
/// identity) in registers. Held inline, they were loaded again after every `get`'s `Acquire`
/// fence, which cost about a tenth of a `get` in the `handles` benchmark.
pub struct RelocCache<T, R = BitwiseMove> {
    pub(crate) table: SlotTable,
    /// Slots claimed from the table at a time.
    pub(crate) claim_slots: usize,
    pub(crate) inner: Box<Mutex<Inner>>,
    pub(crate) retired: Arc<Retired>,
    /// Objects removed (see [`RelocCache::live`]).
    pub(crate) removed: Box<StripedCounter>,
    collector: ManuallyDrop<Collector>,
    /// The collector's identity, carried by every guard of it.
    epoch: usize,
    pub(crate) relocator: R,
    /// Bytes of each object: `size_of::<T>()`, or more for the byte-blob classes, whose objects are a
    /// `T` header followed by bytes (see [`RelocCache::with_tail`]); a move copies all of them.
    pub(crate) object_bytes: usize,
    /// The cache's tag in the high bits of every generation it hands out.
    tag_bits: u64,
    /// Where each slot's object lives when it is at home (see `home`).
    pub(crate) homes: Homes,
    /// The size of the blocks objects occupy (fixed when the heap is made).
    block_bytes: usize,
    _type: PhantomData<T>,
    /// Last, so that it is dropped after the heap has returned the cache's slabs.
    release_on_drop: ReleaseArenasOnDrop,
}

/// Gives the wholly free movable arenas back to the OS as it is dropped, if the cache it ends held
/// slabs, but one, which stays mapped for the next slabs: a dropped cache's memory (and that of
/// caches dropped before it) goes back at once, not at alloc-core's next maintenance, which a
/// program that drops caches and then idles would not reach; and making and dropping caches one
/// after another costs no mapping and no page faults each time. (Units a dropped cache freed in
/// arenas that other caches still use go back after alloc-core's decommit delay, at its next
/// maintenance or a background compactor's round.) The last field of a cache, so it is dropped
/// after the cache's heap has returned its slabs.
pub(crate) struct ReleaseArenasOnDrop {
    /// Set as the cache is dropped, if it held slabs.
    armed: bool,
    /// False for a byte-blob class: its `BlobCache` releases once for all its classes.
    own: bool,
}

impl ReleaseArenasOnDrop {
    pub(crate) fn new(own: bool) -> Self {
        Self { armed: false, own }
    }

    /// Arms it as a cache is dropped that held slabs (`held_slabs`), or not.
    pub(crate) fn arm(&mut self, held_slabs: bool) {
        self.armed = self.own && held_slabs;
    }
}

impl Drop for ReleaseArenasOnDrop {
    fn drop(&mut self) {
        if self.armed {
            alloc_core::movable::release_free_arenas_but(1);
        }
    }
}

// SAFETY: objects are shared between threads through `&T` (needs `T: Sync`) and moved, dropped or
// handed out by value on any thread (needs `T: Send`); the slot protocol and the lock do the rest.
unsafe impl<T: Send + Sync, R: Send + Sync> Sync for RelocCache<T, R> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync, R: Send + Sync> Send for RelocCache<T, R> {}

impl<T: Send + Sync + 'static> RelocCache<T, BitwiseMove> {
    /// A cache that moves objects bytewise.
    pub fn new() -> Result<Self, CacheError> {
        Self::with_relocator(BitwiseMove)
    }

    /// A cache whose objects are a `T` followed by bytes, `object_bytes` in all, sharing `collector`
    /// and its identity `epoch`, `tag` and `table` with its siblings: the byte-blob classes. Moves
    /// copy every byte, so only bytewise moves are offered, and `T` must not need dropping (see
    /// `with_parts`).
    pub(crate) fn with_tail(
        collector: Collector,
        (epoch, tag): (usize, u32),
        table: SlotTable,
        object_bytes: usize,
    ) -> Result<Self, CacheError> {
        const { assert!(!std::mem::needs_drop::<T>()) };
        // Siblings claim small runs, so that a class with few objects holds few slots.
        const SIBLING_CLAIM_SLOTS: usize = UNIT_SLOTS as usize;
        Self::with_parts(
            BitwiseMove,
            collector,
            (epoch, || Ok(tag)),
            (table, SIBLING_CLAIM_SLOTS, false),
            object_bytes,
        )
    }
}

impl<T: Send + Sync + 'static, R: Relocator<T>> RelocCache<T, R> {
    /// A cache whose moves go through `relocator`.
    pub fn with_relocator(relocator: R) -> Result<Self, CacheError> {
        let table = SlotTable::new(MAX_OBJECTS).ok_or(CacheError::OutOfMemory)?;
        Self::with_parts(
            relocator,
            Collector::new(),
            (next_epoch_id(), next_tag),
            (table, SPARE_CLAIM_SLOTS, true),
            size_of::<T>(),
        )
    }

    /// A cache of objects of `object_bytes` (at least `size_of::<T>()`) that may share `collector`
    /// (whose identity is `epoch`), its tag (from `take_tag`, called only once nothing else can fail:
    /// tags are never reused, so a failed construction must not use one up) and its `table` (from which
    /// it claims `claim_slots` at a time) with others; if it `owns_table`, objects use their
    /// blocks' home slots (see `home`). A shared collector is only for types without
    /// drop glue: a sibling may keep the collector, and so this cache's pending deferred functions,
    /// alive after this cache is dropped. Siblings sharing a tag must share the table too, and must
    /// never be handed each other's handles: the byte-blob classes find a handle's class from its
    /// object's length first.
    fn with_parts(
        relocator: R,
        collector: Collector,
        (epoch, take_tag): (usize, impl FnOnce() -> Result<u32, CacheError>),
        (table, claim_slots, owns_table): (SlotTable, usize, bool),
        object_bytes: usize,
    ) -> Result<Self, CacheError> {
        debug_assert!(object_bytes >= size_of::<T>());
        let heap =
            MovableHeap::with_layout(object_bytes, align_of::<T>()).ok_or(CacheError::TooLarge)?;
        // Fail here, not at the first insert, if movable memory cannot be had (see `slot`).
        if !alloc_core::movable::reserve_movable_region() {
            return Err(CacheError::OutOfMemory);
        }
        let tag = take_tag()?;
        // A `get` finds homes with `HomeOf<T>`, the compile-time copy of this geometry.
        let homes = Some(Homes::of(&heap))
            .filter(|homes| owns_table && homes.is_that_of::<T>())
            .unwrap_or(Homes::NONE);
        let block_bytes = heap.block_bytes();
        Ok(Self {
            table,
            claim_slots,
            inner: Box::new(Mutex::new(Inner {
                heap,
                free: FreeSlots::default(),
                claimed: Vec::new(),
                fresh: 0..0,
                spare_floor: if homes.exist() { MAX_OBJECTS as u32 } else { 0 },
                home_units: Vec::new(),
                touched: 0,
                parked: 0,
                inserted: 0,
                listed: 0,
                listed_at_scan: 0,
                // A byte-blob class joins when its `BlobCache` as a whole fills an arena.
                arena_group: tag,
                joins_itself: owns_table,
                join_check_mask: join_check_mask(block_bytes),
                counters: Counters::default(),
            })),
            retired: Arc::default(),
            removed: Box::default(),
            collector: ManuallyDrop::new(collector),
            epoch,
            relocator,
            object_bytes,
            tag_bits: tag_bits(tag),
            homes,
            block_bytes,
            _type: PhantomData,
            // A cache that does not own its table is a byte-blob class, whose `BlobCache` gives
            // memory back for all its classes when dropped.
            release_on_drop: ReleaseArenasOnDrop::new(owns_table),
        })
    }

    /// Registers the calling thread with this cache's epoch collector.
    pub fn reader(&self) -> Reader<'_> {
        Reader::new(self.collector.register(), self.epoch)
    }

    /// The block size each object occupies.
    pub fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    #[inline]
    pub(crate) fn check_guard(&self, guard: &Guard) {
        guard.check(self.epoch);
    }

    /// The slot and generation counter a handle names, if it was made by this cache.
    #[inline]
    pub(crate) fn resolve(&self, handle: Handle<T>) -> Option<(&Slot, u32)> {
        // With this cache's tag the xor leaves the counter alone; with another tag, high bits.
        let counter = handle.gen() ^ self.tag_bits;
        if counter > u64::from(GEN_COUNTER_MASK) {
            return None;
        }
        Some((self.table.get(handle.index())?, counter as u32))
    }

    pub(crate) fn handle_for(&self, index: u32, counter: u32) -> Handle<T> {
        Handle::new(index, self.tag_bits | u64::from(counter))
    }

    /// Panics, for `with_pinned`, inside an update's closure of this object (a write through the pin
    /// would land in the old copy the update replaces, and be lost), or inside a relocation callback
    /// of this cache while this object is the one being moved (the pin would wait for this very
    /// thread). Nothing is lost: an update's closure that panics leaves its object as it was, and a
    /// callback's panic abandons its move.
    /// (`counter` is the handle's generation: a stale handle to the slot names another object.)
    fn refuse_pinning_itself(&self, slot: &Slot, counter: u32, home: Home) {
        if self.holds_object(slot, counter, home) {
            panic!("relocate-api: RelocCache::with_pinned of an object from inside its own update closure");
        }
        if self.in_own_callback() && slot.is_moving(home) && names_live(slot, counter, home) {
            panic!(
                "relocate-api: RelocCache::with_pinned of the object being moved, from inside its \
                 relocation callback"
            );
        }
    }

    /// Whether this thread holds `slot` for writing the object of generation `counter` (inside its
    /// update's closure). A stale handle to a slot this thread holds names no object: it gets a stale
    /// handle's answer, not a refusal.
    pub(crate) fn holds_object(&self, slot: &Slot, counter: u32, home: Home) -> bool {
        reentry::holds(slot) && names_live(slot, counter, home)
    }

    /// Whether this thread runs one of this cache's relocation callbacks (and so holds its lock, and
    /// is the one thread that moves its objects).
    pub(crate) fn in_own_callback(&self) -> bool {
        reentry::contains(&reentry::CALLBACKS, self as *const Self as usize)
    }

    /// Takes the cache lock for a call `what` that has no error to return: panics, rather than wait
    /// for itself, when called from inside one of this cache's relocation callbacks (a panic there
    /// abandons the move in progress, and is counted, see [`Relocator`]).
    pub(crate) fn lock_outside_callback(&self, what: &str) -> MutexGuard<'_, Inner> {
        self.lock().unwrap_or_else(|_| {
            panic!("relocate-api: RelocCache::{what} called from inside the cache's relocation callback")
        })
    }

    /// Takes the cache lock, refusing calls from inside this cache's own relocation callback.
    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Inner>, CacheError> {
        if self.in_own_callback() {
            return Err(CacheError::Reentrant);
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if self.retired.may_hold_some() {
            self.take_back(&mut inner);
        }
        Ok(inner)
    }

    /// Gives the runs of slots that are wholly vacant back to the table this cache shares (see
    /// `Inner::give_back_vacant_runs`); returns how many slots that was. Only for the byte-blob
    /// classes: `for_each` reads the claimed runs outside the lock, and would then visit slots
    /// another cache took meanwhile.
    ///
    /// With `only_if_sparse`, runs go back only when the class will not soon fill them again: when
    /// it claims more than twice the slots its live objects need (plus two runs), and slots coming
    /// back to its free lists since it last gave runs back number at least a quarter of its claimed
    /// slots (counted when they come back, after the epoch, not when their objects are removed),
    /// or the class is empty and some came back. A caller may ask often (the background compactor
    /// asks every round): a lock and a few comparisons when nothing is due. `None`: nothing was
    /// due. (A class claims runs of `UNIT_SLOTS`, the free lists' unit: see `with_tail`.)
    pub(crate) fn give_back_vacant_slots(
        &self,
        only_if_sparse: bool,
    ) -> Result<Option<usize>, CacheError> {
        let mut inner = self.lock()?;
        let run = UNIT_SLOTS as usize;
        if only_if_sparse {
            let claimed: usize = inner.claimed.iter().map(ExactSizeIterator::len).sum();
            let live = self.live(&inner);
            let sparse = claimed >= 2 * live + 2 * run;
            // Or the class emptied since: its last slots may have come back after a give-back,
            // fewer than a quarter (and a class that is empty keeps at most two runs after it).
            let listed_since = inner.listed - inner.listed_at_scan;
            let turned_over = listed_since >= claimed / 4 || (live == 0 && listed_since > 0);
            if !(sparse && turned_over) {
                return Ok(None);
            }
        }
        inner.listed_at_scan = inner.listed;
        let given = inner.give_back_vacant_runs(&self.table);
        inner.counters.returned_slots += given as u64;
        Ok(Some(given))
    }

    /// Frees the retired blocks and links the vacant slots that removals handed back (lock held).
    #[inline(never)]
    fn take_back(&self, inner: &mut Inner) {
        let retired = self.retired.take();
        for block in retired.blocks {
            // SAFETY: retired blocks were allocated by this heap and their epoch has passed.
            unsafe { inner.heap.free(NonNull::new_unchecked(block as *mut u8)) };
        }
        for index in retired.slots {
            if let Some(slot) = self.table.get(index) {
                inner.release_slot(index, slot);
            }
        }
    }

    /// Runs `f` with this thread marked as inside a callback of this cache.
    pub(crate) fn in_callback<U>(&self, f: impl FnOnce() -> U) -> U {
        reentry::within(&reentry::CALLBACKS, self as *const Self as usize, f)
    }

    /// The object a handle names, or `None` if it was removed, evicted, or is not from this cache.
    /// Wait-free; the reference lives as long as the guard. (For a loop of gets under one guard,
    /// [`view`](Self::view) checks the guard once and keeps what a get reads from the cache in
    /// registers.)
    #[inline]
    pub fn get<'g>(&'g self, handle: Handle<T>, guard: &'g Guard) -> Option<&'g T>
    where
        T: Relocatable,
    {
        self.view(guard).get(handle)
    }

    /// The cache as read under `guard`, for loops of gets: [`View::get`] is [`get`](Self::get)
    /// without the guard's check (done here, once) and with the cache's constants (table and home
    /// bases, tag) held in the view, a value the compiler keeps in registers. Through a shared
    /// reference to the cache they are loaded again after every get's `Acquire` fence, unless the
    /// compiler knows the reference read-only (a `&RelocCache` parameter of the looping function).
    /// The view borrows the guard: re-pinning it needs a new view.
    ///
    /// # Panics
    /// If `guard` was not pinned by a [`Reader`] of this cache (or of one sharing its collector).
    #[inline]
    pub fn view<'g>(&'g self, guard: &'g Guard) -> View<'g, T> {
        self.check_guard(guard);
        View::new(self.table.slots(), self.tag_bits, self.homes.base())
    }

    /// Reads the objects of many handles: calls `visit(i, object)` for each `handles[i]` in order,
    /// with what [`get`](Self::get) would return for it. For independent handles (a multi-get) it is
    /// faster than a `get` each: while it visits one object it loads the slots of the handles
    /// `SLOT_AHEAD` (16) further on and the objects of those `OBJECT_AHEAD` (8) further on, so that their
    /// cache misses overlap instead of following one another. (An object is looked up
    /// `OBJECT_AHEAD` handles before it is visited; under the guard that is as good as a `get` then:
    /// the reference stays valid and unchanged while the guard is pinned.)
    pub fn get_many<'g>(
        &'g self,
        handles: &[Handle<T>],
        guard: &'g Guard,
        mut visit: impl FnMut(usize, Option<&'g T>),
    ) where
        T: Relocatable,
    {
        self.check_guard(guard);
        read_many(
            self.table.slots(),
            (self.tag_bits, self.homes.base()),
            (handles.len(), |i| handles[i]),
            |i, addr| {
                // SAFETY: as in `get`: a published address, read under `guard`, which keeps the
                // object (or the old copy a move or an update left) valid and unchanged while it
                // is pinned.
                visit(i, addr.map(|addr| unsafe { &*(addr as *const T) }));
            },
        );
    }

    /// Runs `f` on the object with moves excluded (for types that are not [`Relocatable`], e.g. with
    /// atomics inside: no move copies the object while `f` writes through `&T`). `None` for a stale
    /// handle.
    ///
    /// A pin excludes moves only. An [`update`](Self::update) replaces the object with a new value
    /// made from the old one while pins may be writing to the old one, and a removal or eviction
    /// takes it away; a write through a pinned reference after that lands in the old copy and is
    /// lost with it. For such types, write in place through `with_pinned` and do not `update`
    /// objects that others are writing to (or order the two yourself).
    ///
    /// # Panics
    /// - If `guard` was not pinned by a [`Reader`] of this cache.
    /// - Inside the closure of an [`update`](Self::update) of the same object: a write through the
    ///   pin would land in the copy that the update is replacing, and be lost.
    /// - Inside one of this cache's relocation callbacks, for the object being moved: the pin would
    ///   wait for the move, which waits for the callback (that has the object already).
    pub fn with_pinned<U>(
        &self,
        handle: Handle<T>,
        guard: &Guard,
        f: impl FnOnce(&T) -> U,
    ) -> Option<U> {
        self.check_guard(guard);
        let (slot, counter) = self.resolve(handle)?;
        let pins = self.table.pins(handle.index());
        let home = self.home(handle.index());
        self.refuse_pinning_itself(slot, counter, home);
        let addr = slot.pin(self.table.pin_gate(), pins, counter, home)?;
        struct Unpin<'a>(&'a slot::Pins);
        impl Drop for Unpin<'_> {
            fn drop(&mut self) {
                Slot::unpin(self.0);
            }
        }
        let _unpin = Unpin(pins);
        // SAFETY: pinned, the object cannot move; removal retires it through the epoch `guard` holds.
        Some(f(unsafe { &*(addr as *const T) }))
    }

    /// Puts the cache's heap in the cache's own arena group (see `Inner::arena_group`) once its
    /// live objects fill an arena.
    pub(crate) fn join_arena_group_if_grown(&self, inner: &mut Inner) {
        if self.live(inner) * self.block_bytes >= alloc_core::movable::ARENA_BYTES {
            inner.join_arena_group();
        }
    }

    /// For a byte-blob class: puts its heap in its arena group now (its `BlobCache` as a whole
    /// filled an arena). Idempotent. (No user code runs under a class's lock: blobs move bytewise.)
    pub(crate) fn join_arena_group(&self) {
        (self.inner.lock().unwrap_or_else(|e| e.into_inner())).join_arena_group();
    }

    /// For a byte-blob class: its live objects' blocks, in bytes.
    pub(crate) fn live_block_bytes(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.live(&inner) * self.block_bytes
    }

    /// Objects in the cache: those inserted (less those taken) that were not removed since. Removals
    /// count without the lock; the lock holder's `inserted` counts every object a removal can name.
    pub(crate) fn live(&self, inner: &Inner) -> usize {
        // Every removal counted is of an object whose insert was (under the lock held here).
        inner.inserted.saturating_sub(self.removed.sum())
    }

    /// Retires the block of an object a reader may still hold: after the epoch, drops the `T` in it,
    /// then queues it to be freed. A removal hands back the object's vacant `slot` with it.
    ///
    /// # Safety
    /// - `addr` holds a `T` of this cache that was just taken out of its slot (removed, or replaced
    ///   by an update), under `guard`, and nothing else drops or frees it.
    pub(crate) unsafe fn retire(&self, guard: &Guard, addr: usize, slot: Option<u32>) {
        let drop_value = std::mem::needs_drop::<T>().then_some(drop_block::<T> as unsafe fn(usize));
        // SAFETY: no reader can newly reach `addr` (the caller's contract); `drop_block::<T>` drops
        // the `T` there, once; a guard lives no longer than its cache (it borrows it).
        unsafe {
            guard.retire(&self.retired, drop_value, addr, slot);
        }
    }

    /// Retires the old copies of moved objects (never dropped: the live copy moved on) in one deferred
    /// function, so a compaction pass pays for the epoch once, not once per move.
    pub(crate) fn retire_moved(&self, guard: &Guard, blocks: Vec<usize>) {
        if blocks.is_empty() {
            return;
        }
        let retired = Arc::clone(&self.retired);
        guard.defer(move || retired.push_blocks(&blocks));
    }

    /// Visits every live object (under `guard`).
    pub fn for_each<'g>(&'g self, guard: &'g Guard, mut visit: impl FnMut(Handle<T>, &'g T))
    where
        T: Relocatable,
    {
        self.check_guard(guard);
        let ranges = self
            .lock_outside_callback("for_each")
            .slot_ranges(&self.homes);
        for index in ranges.into_iter().flatten() {
            let Some(slot) = self.table.get(index) else {
                continue;
            };
            if let Some((counter, addr)) = slot.snapshot(self.home(index)) {
                // SAFETY: as in `get`.
                visit(self.handle_for(index, counter), unsafe {
                    &*(addr as *const T)
                });
            }
        }
    }

    /// Number of live objects.
    ///
    /// # Panics
    /// If called from inside one of this cache's relocation callbacks (as `is_empty`, `for_each` and
    /// `stats` do), whose thread holds the lock this needs.
    pub fn len(&self) -> usize {
        self.live(&self.lock_outside_callback("len"))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lets the epoch advance (the calling thread must not be pinned elsewhere) and frees every block
    /// whose readers are gone, so emptied slabs go back to their arenas.
    ///
    /// The collector runs a bounded number of deferred functions (each a batch of retired blocks) per
    /// flush, and only once the epoch has advanced twice past them (which can take a while to start),
    /// so this flushes until `QUIET_ROUNDS` rounds in a row retire nothing more. Other threads that
    /// stay pinned hold the epoch back; then it returns after a bounded number of rounds with those
    /// blocks still waiting. Batches still open in other threads' guards wait for those guards. A
    /// guard this thread holds (of this cache, or of one sharing its collector) holds the epoch
    /// back too: a flush under it frees nothing.
    ///
    /// # Panics
    /// If `reader` is not a reader of this cache (or of one sharing its collector).
    pub fn flush(&self, reader: &Reader<'_>) {
        flush_until_quiet(reader, self.epoch, || self.waiting());
        drop(self.lock());
    }

    /// Blocks retired and waiting to be taken back (see [`Retired::waiting`]).
    pub(crate) fn waiting(&self) -> usize {
        self.retired.waiting()
    }
}

impl<T, R> RelocCache<T, R> {
    /// Slot `index`'s home, for the slot steps that read or write a live object's word.
    #[inline]
    pub(crate) fn home(&self, index: u32) -> Home {
        if !self.homes.exist() {
            return Home::NONE;
        }
        Home::new(
            HomeOf::<T>::address(self.homes.base(), index),
            index,
            self.tag_bits,
        )
    }
}

impl<T, R> Drop for RelocCache<T, R> {
    /// Drops every live object. If one's drop panics, the others are dropped all the same (as a
    /// `Vec` does) and the first panic goes on once the cache is gone.
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        // The heap's slabs go back to their arenas as it is dropped, and then emptied arenas to
        // the OS.
        self.release_on_drop.arm(inner.heap.slab_count() > 0);
        let mut panic = None;
        for index in inner.slot_ranges(&self.homes).into_iter().flatten() {
            let Some(slot) = self.table.get(index) else {
                continue;
            };
            let addr = slot.address(self.home(index));
            if addr != 0 {
                // SAFETY: `&mut self`: no reader; the live object is dropped once (a drop that
                // panicked is not retried), its block freed by the heap's drop.
                let dropped = catch_unwind(AssertUnwindSafe(|| unsafe {
                    ptr::drop_in_place(addr as *mut T)
                }));
                match (dropped, &panic) {
                    (Err(payload), None) => panic = Some(payload),
                    // Not dropped: a payload whose own drop panics would unwind from here.
                    (Err(payload), Some(_)) => std::mem::forget(payload),
                    (Ok(()), _) => {}
                }
            }
        }
        // Dropping the collector (when this cache owns it; the byte-blob classes share one, and hold
        // nothing to drop) runs every pending deferred function (old values are dropped, blocks
        // queued); then the heap's drop returns all slabs.
        // SAFETY: dropped once, here; no reader (they borrow the cache) or guard is left.
        unsafe { ManuallyDrop::drop(&mut self.collector) };
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Budget;

    /// Objects inserted into a fresh cache sit in their blocks' home slots, so `get` finds them at
    /// the address it computed from the handle; once compaction moves them, at the address their
    /// slots hold. Either way each handle reads its own object.
    #[test]
    fn objects_are_read_at_home_until_they_move() {
        let cache: RelocCache<[u64; 8]> = RelocCache::new().unwrap();
        let reader = cache.reader();
        let handles: Vec<Handle<[u64; 8]>> = (0..20_000u64)
            .map(|i| cache.insert([i; 8]).unwrap())
            .collect();
        let guard = reader.pin();
        let at = |h: Handle<[u64; 8]>| cache.get(h, &guard).map(|o| o as *const _ as usize);
        for (i, &h) in handles.iter().enumerate() {
            assert_eq!(cache.get(h, &guard), Some(&[i as u64; 8]));
            assert_eq!(
                at(h),
                Some(cache.homes.address(h.index())),
                "object {i} not at home"
            );
        }
        let kept: Vec<(usize, Handle<[u64; 8]>)> = (handles.iter().copied().enumerate())
            .filter(|&(i, h)| i % 10 == 0 || !cache.remove(h, &guard))
            .collect();
        drop(guard);
        cache.flush(&reader);
        let guard = reader.pin();
        let report = cache.compact(&guard, Budget::Unlimited).unwrap();
        assert!(report.moved_objects > 0);
        let at = |h: Handle<[u64; 8]>| cache.get(h, &guard).map(|o| o as *const _ as usize);
        let mut away = 0;
        for &(i, h) in &kept {
            assert_eq!(cache.get(h, &guard), Some(&[i as u64; 8]));
            away += usize::from(at(h) != Some(cache.homes.address(h.index())));
        }
        assert_eq!(
            away, report.moved_objects,
            "moved objects read through their slots"
        );
        // A handle with another cache's tag never reads an object at home.
        let h = kept[0].1;
        let foreign = Handle::<[u64; 8]>::new(h.index(), h.gen() ^ tag_bits(1));
        assert_eq!(cache.get(foreign, &guard), None);
    }

    #[test]
    fn tags_run_out_rather_than_repeat() {
        let counter = AtomicU32::new(MAX_CACHES as u32 - 1);
        assert_eq!(take_tag(&counter), Some(MAX_CACHES as u32 - 1));
        assert_eq!(take_tag(&counter), Some(MAX_CACHES as u32));
        assert_eq!(take_tag(&counter), None);
        assert_eq!(take_tag(&counter), None, "exhaustion is permanent");
        // The largest tag, with the top bit every tag has, still fits above the generation.
        assert_eq!(
            tag_bits(MAX_CACHES as u32) << INDEX_BITS >> INDEX_BITS >> slot::GEN_COUNTER_BITS,
            MAX_CACHES as u64 | 1 << (TAG_BITS - 1)
        );
        assert_eq!(
            tag_bits(1) << INDEX_BITS >> 63,
            1,
            "a handle's top bit is set"
        );
    }
}
