//! Arenas: 2 MiB-aligned, 2 MiB regions, whose metadata is found from any address inside them.
//!
//! Layout of an arena's metadata (offsets from its base):
//!
//! ```text
//! unit 0   [0, 4 KiB)    32 slab descriptors, one per 64 KiB unit (in a normal arena, 0 is unused)
//!          [4 KiB, ...)  the arena header (pool bookkeeping)
//!          [8 KiB, 40 KiB) liveness bitmap: 1 bit per 8-byte granule (movable arenas, `checked`)
//! units 1..9             movable arenas only: the back-map, one u32 owner per block (rows by block
//!                        index, columns by data unit; 512 KiB at most, used rows only)
//! ```
//!
//! A normal arena's metadata is its own first unit (found by masking an address to 2 MiB), and its
//! other 31 units hold slabs and spans. A movable arena's metadata is a piece of its own in the
//! movable region (see `region`), so all 32 units of its 2 MiB hold slabs and the whole arena can be
//! one transparent huge page. Either way a descriptor's address masked to 2 MiB is its metadata.
//!
//! Nothing about an object is stored next to it: an overflow past its end reaches the next object or
//! free memory, never metadata. Metadata pages are only touched when used, so an arena that holds a
//! few slabs has a few resident metadata pages.
//!
//! Arena classes, like the kernel's migrate types: `Normal` arenas hold the global allocator's slabs
//! and spans; `Movable` arenas hold only movable slabs (relocating caches), so evacuating them frees
//! whole arenas. A unit never changes arena class. Movable arenas are further split by group
//! ([`Placement`]): while an arena holds slabs, they are all of one group (one cache's).
//!
//! The pool of arenas is one [`SpinLock`]: units are taken and returned there, at most once per slab
//! (64 KiB..256 KiB of small objects) or per large allocation, never on the small-object fast path.
//! Policy of giving memory back, all under that lock:
//! - a freed unit stays committed ("dirty") so the next slab reuses it without page faults;
//! - dirty units are decommitted (`MADV_DONTNEED`) once they have been dirty for `DECOMMIT_DELAY_MS`;
//! - an arena whose units are all free is unmapped after the same delay;
//! - `purge` does both at once, whatever the age.
//!
//! "After the delay" means at the first maintenance pass after it: a slow-path free or slab release
//! that finds a pass due, `maintain`, `purge`, or the background purger's round. A program that stops
//! allocating and freeing, and runs no purger, keeps its dirty units until it calls one of them
//! (`start_background_purger` bounds the delay).

use crate::lock::{SpinGuard, SpinLock};
use crate::os;
use crate::size_class::{UNIT_BYTES, UNIT_SHIFT};
use crate::slab::{Slab, KIND_SMALL};
use core::ptr;
use core::sync::atomic::{AtomicU8, Ordering};

pub(crate) use crate::os::ARENA_BYTES;
pub(crate) const ARENA_MASK: usize = ARENA_BYTES - 1;
pub(crate) const UNITS_PER_ARENA: usize = ARENA_BYTES / UNIT_BYTES;
const ARENA_MAGIC: u64 = 0x5241_4c4c_4f43_4152; // "RALLOCAR"
/// How long freed memory stays committed before it goes back to the OS (mimalloc uses 10 ms; 50 ms
/// measured no slowdown on the churn and larson workloads and keeps churny resident sets low).
pub(crate) const DECOMMIT_DELAY_MS: u64 = 50;
const HEADER_OFFSET: usize = 4096;
pub(crate) const LIVE_BITMAP_OFFSET: usize = 8192;
/// One liveness bit per granule of this many bytes.
pub(crate) const LIVE_GRANULE: usize = 8;
/// Units of a normal arena reserved for its metadata; a movable arena's metadata (this many units, in
/// a piece of its own) leaves all its units to slabs.
const NORMAL_META_UNITS: usize = 1;
const MOVABLE_META_UNITS: usize = 9;
/// Back-map granule of movable arenas (the smallest movable block).
pub(crate) const BACKMAP_GRANULE: usize = 16;
/// The back-map of a movable arena starts at its metadata's second unit. It is a table of `u32`
/// entries with one row per block index and one column per data unit: entry `i` of the slab starting
/// at data unit `c` is at row `i`, column `c`. Slabs of few large blocks then share a few pages of
/// rows instead of touching a page each (see `movable`).
pub(crate) const BACKMAP_OFFSET: usize = UNIT_BYTES;
/// Back-map columns: the data units of a movable arena (all of them).
pub(crate) const BACKMAP_COLUMNS: usize = UNITS_PER_ARENA;
/// Back-map rows: the most blocks a movable slab holds (one unit of the smallest movable blocks).
pub(crate) const BACKMAP_ROWS: usize = UNIT_BYTES / BACKMAP_GRANULE;
/// The whole back-map's bytes.
const BACKMAP_BYTES: usize = BACKMAP_ROWS * BACKMAP_COLUMNS * 4;

const _: () = {
    assert!(core::mem::size_of::<[Slab; UNITS_PER_ARENA]>() == HEADER_OFFSET);
    assert!(core::mem::offset_of!(ArenaMeta, header) == HEADER_OFFSET);
    assert!(core::mem::size_of::<ArenaMeta>() <= LIVE_BITMAP_OFFSET);
    assert!(LIVE_BITMAP_OFFSET + ARENA_BYTES / LIVE_GRANULE / 8 <= UNIT_BYTES);
    assert!(BACKMAP_OFFSET + BACKMAP_ROWS * BACKMAP_COLUMNS * 4 <= MOVABLE_META_UNITS * UNIT_BYTES);
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ArenaKind {
    Normal = 0,
    Movable = 1,
}

const KINDS: usize = 2;

/// Transparent huge pages, chosen by `ALLOC_CORE_THP`: `0` never; `always` (or `2`) `MADV_HUGEPAGE` on
/// every arena when mapped; unset (the default) *growing*: on a movable arena when it opens for a
/// group that has filled an arena already (see [`Placement`]: the pool opens an arena only when none
/// of the group has room, and a cache's heaps join its own group once its live objects fill an
/// arena, so either way the group outgrew 2 MiB), and never on a normal arena.
/// With THP in `madvise` mode a hinted arena gets a 2 MiB page on its first touch, so it is resident
/// whole. A movable arena is all slab units (its metadata lives elsewhere), its heaps fill slabs in
/// order and compaction keeps them dense, so that costs little and saves a page fault per 4 KiB and
/// most TLB misses. A normal arena carries its metadata unit and slabs of many size classes filled
/// unevenly: a huge page would make their untouched pages resident.
/// Decommitting units of a huge-paged arena splits its page: the resident set drops at once, and the
/// kernel frees the split-off pages when it needs memory (its deferred split); an emptied arena is
/// unmapped whole. The hint is then withdrawn (`MADV_NOHUGEPAGE`), or khugepaged could collapse the
/// arena again and make the decommitted units resident; it is given again once every unit of the
/// arena holds a slab. A hinted arena that stops growing keeps its never-used units resident (the
/// huge page): after the decommit delay without growth they go back the same way.
const THP_NEVER: u8 = 1;
const THP_GROWING: u8 = 2;
const THP_ALWAYS: u8 = 3;
static THP_POLICY: AtomicU8 = AtomicU8::new(0);

fn thp_policy() -> u8 {
    match THP_POLICY.load(Ordering::Relaxed) {
        0 => read_thp_policy(),
        policy => policy,
    }
}

/// Reads `ALLOC_CORE_THP` (once, at initialisation; later calls re-read it harmlessly).
pub(crate) fn read_thp_policy() -> u8 {
    let policy = match os::env_first_byte(b"ALLOC_CORE_THP\0") {
        Some(b'0') | Some(b'n') => THP_NEVER,
        Some(b'a') | Some(b'2') => THP_ALWAYS,
        _ => THP_GROWING,
    };
    THP_POLICY.store(policy, Ordering::Relaxed);
    policy
}

/// The metadata of every arena: at the base of a normal arena (and of every huge mapping, whose
/// descriptors all say `Huge`, so that a free finds its way by the same masking), in a piece of its own
/// for a movable arena.
#[repr(C)]
pub(crate) struct ArenaMeta {
    pub(crate) descs: [Slab; UNITS_PER_ARENA],
    pub(crate) header: ArenaHeader,
    /// The order in which arenas were *opened* (from 1): mapped, or given a unit again after all of
    /// them were free, so that an arena's serial dates its oldest contents. Written under the pool
    /// lock while no unit of the arena is held, so a holder reads it without the lock
    /// (`serial_of`). Outside `header`, which the pool borrows mutably meanwhile.
    serial: u64,
}

/// Pool bookkeeping; every field is read and written under the pool lock.
#[repr(C)]
pub(crate) struct ArenaHeader {
    magic: u64,
    kind: ArenaKind,
    /// Bit i: unit i holds no slab or span.
    free_units: u32,
    /// Bit i: unit i is free and still committed.
    dirty_units: u32,
    /// Bit i: unit i reads as zero (never written since mapped or decommitted).
    zero_units: u32,
    /// Where the arena's units start: the metadata's own address in a normal arena, a data piece of
    /// the movable region in a movable one.
    base: usize,
    /// `MADV_HUGEPAGE` is in force on the arena (see `THP_GROWING`).
    huge: bool,
    /// The arena group whose slabs it holds (see [`Placement`]); set when the arena opens, and
    /// meaningful only while some unit of it is held.
    group: u32,
    /// When a unit was last taken while the arena was huge-paged with units free (see
    /// `maintain_kinds`: its never-used units are resident until it grows into them).
    grown_ms: u64,
    /// When the oldest dirty unit became dirty: they are decommitted the delay after.
    dirty_since_ms: u64,
    /// When the arena last became wholly free: it is unmapped the delay after (an arena that
    /// empties and fills again within the delay stays mapped).
    emptied_ms: u64,
    /// The pool list the arena is on: its longest run of free units (see [`KindList`]).
    bucket: u8,
    /// A movable arena's back-map rows that may be committed: the most blocks of any slab made in
    /// it since its back-map was last trimmed (see `decommit_unused_backmap`).
    backmap_rows: u32,
    next: *mut ArenaMeta,
    prev: *mut ArenaMeta,
}

/// Where the units a caller asks for may come from.
///
/// Movable heaps are grouped (relocate-api gives each cache a group of its own, which its heaps join
/// once its live objects fill an arena, see `MovableHeap::set_arena_group`): an arena holds the
/// slabs of one group only, so that evicting a cache's oldest arena evicts that cache's oldest
/// objects and frees the whole 2 MiB, and evacuating it does not wait for other caches' objects. A
/// request is served from an arena of its group with room, else from a wholly free arena (of any
/// group: it opens again for this one), else from a new one. Group 0 is shared: every normal
/// arena's, and that of small movable heaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) group: u32,
    /// An arena being evacuated, never used (its base; 0 for none).
    pub(crate) avoid: usize,
}

impl Placement {
    pub(crate) const SHARED: Self = Self { group: 0, avoid: 0 };
}

/// The units a caller received from the pool.
pub(crate) struct Units {
    pub(crate) arena: *mut ArenaMeta,
    pub(crate) first: usize,
    /// Every unit read as zero when handed out.
    pub(crate) zeroed: bool,
}

impl Units {
    pub(crate) fn start(&self) -> *mut u8 {
        // SAFETY: `arena` is a live arena (the caller holds its units).
        let base = unsafe { (*self.arena).header.base };
        (base + (self.first << UNIT_SHIFT)) as *mut u8
    }
}

/// The arenas of one kind, on lists by their longest run of free units (the list an arena is on is
/// its `ArenaHeader::bucket`: 0 when it is full, every data unit when it is wholly free). A request
/// for `count` units looks only at the arenas with a run that long (see `alloc_units` for which it
/// takes), and a wholly free arena is found at once. With one list of every arena, each new slab
/// or span walked them all under the pool lock: a review's program with 16,384 live 1 MiB spans
/// (each taking 16 of an arena's 31 units, so no second one fits) spent 1.85 ms an allocation.
struct KindList {
    buckets: [*mut ArenaMeta; BUCKETS],
    arenas: usize,
    /// Arenas of the shared group (0) that hold units: whether that group is growing (see
    /// `alloc_units`).
    shared_in_use: usize,
}

/// One list per length of a longest free run, 0 to every unit.
const BUCKETS: usize = UNITS_PER_ARENA + 1;

impl KindList {
    const fn new() -> Self {
        Self {
            buckets: [ptr::null_mut(); BUCKETS],
            arenas: 0,
            shared_in_use: 0,
        }
    }
}

pub(crate) struct ArenaPool {
    lists: [KindList; KINDS],
    last_maintenance_ms: u64,
    /// Arenas opened so far (the last one's `ArenaMeta::serial`).
    opened: u64,
}

// SAFETY: the raw pointers are to arenas owned by the pool; the pool is only reached through its lock.
unsafe impl Send for ArenaPool {}

/// Runs the periodic maintenance if it is due, with the pool lock `pool` (which it lets go), and
/// then ages out the kept huge mappings, outside the lock: their unmapping (up to 32 MiB, and a TLB
/// flush each) need not hold up other threads' slabs and spans.
pub(crate) fn maintain_if_due(mut pool: SpinGuard<'_, ArenaPool>, now_ms: u64) {
    let due = pool.maintenance_due(now_ms);
    if due {
        pool.maintain(now_ms, false);
    }
    drop(pool);
    if due {
        crate::huge_cache::release(now_ms, false);
    }
}

/// `maintain` now (everything free if `force`, else what aged past the delay), then the kept huge
/// mappings, outside the pool lock (as `maintain_if_due`); returns the bytes given back.
pub(crate) fn maintain_now(force: bool) -> usize {
    let now_ms = os::now_ms();
    let released = POOL.lock().maintain(now_ms, force);
    released + crate::huge_cache::release(now_ms, force)
}

pub(crate) static POOL: SpinLock<ArenaPool> = SpinLock::new(ArenaPool {
    lists: [KindList::new(), KindList::new()],
    last_maintenance_ms: 0,
    opened: 0,
});

/// Sets an arena's `ArenaMeta::serial`.
///
/// # Safety
/// `arena` is a mapped arena no unit of which is held (so that nothing reads the serial), and the
/// caller holds the pool lock.
unsafe fn set_serial(arena: *mut ArenaMeta, serial: u64) {
    // SAFETY: the caller's contract; no reference to the field is live.
    unsafe { ptr::addr_of_mut!((*arena).serial).write(serial) };
}

/// The `ArenaMeta::serial` of the arena holding `desc`, a descriptor of units its caller holds: the
/// order in which arenas were opened.
pub(crate) fn serial_of(desc: &Slab) -> u64 {
    let meta = meta_of(desc as *const Slab as usize);
    // A descriptor lies in its arena's `ArenaMeta` (a normal arena's first unit, or a movable arena's
    // metadata piece), which starts at the 2 MiB boundary below it. The pool borrows `header`, never
    // the whole `ArenaMeta`, so no reference covers `serial`.
    // SAFETY: the arena stays mapped while a unit of it is held, and `serial` is not written then.
    unsafe { ptr::addr_of!((*meta).serial).read() }
}

/// The arena metadata for an address inside a normal arena (or a huge mapping's first 2 MiB), or for
/// the address of any arena's descriptor.
#[inline]
pub(crate) fn meta_of(addr: usize) -> *mut ArenaMeta {
    (addr & !ARENA_MASK) as *mut ArenaMeta
}

/// The arena metadata for an address inside a movable arena.
#[inline]
pub(crate) fn movable_meta_of(addr: usize) -> *mut ArenaMeta {
    crate::region::meta_of_data(addr) as *mut ArenaMeta
}

/// Metadata units of an arena, counted as committed while it is mapped.
fn meta_units(kind: ArenaKind) -> usize {
    match kind {
        ArenaKind::Normal => NORMAL_META_UNITS,
        ArenaKind::Movable => MOVABLE_META_UNITS,
    }
}

/// The units that can hold slabs: all but a normal arena's metadata unit.
fn all_data_units(kind: ArenaKind) -> u32 {
    match kind {
        ArenaKind::Normal => u32::MAX << NORMAL_META_UNITS,
        ArenaKind::Movable => u32::MAX,
    }
}

/// The pool list of a kind's wholly free arenas (see [`KindList`]): their longest free run is
/// every data unit.
fn vacant_bucket(kind: ArenaKind) -> usize {
    all_data_units(kind).count_ones() as usize
}

/// Lowest index of a run of `count` set bits in `mask`.
fn find_run(mask: u32, count: usize) -> Option<usize> {
    let mut run = mask;
    for shift in 1..count {
        run &= mask >> shift;
    }
    if run == 0 {
        None
    } else {
        Some(run.trailing_zeros() as usize)
    }
}

/// The length of the longest run of set bits in `mask`.
fn longest_run(mask: u32) -> usize {
    let (mut rest, mut length) = (mask, 0);
    while rest != 0 {
        rest &= rest >> 1;
        length += 1;
    }
    length
}

fn run_mask(first: usize, count: usize) -> u32 {
    let ones = if count >= 32 {
        u32::MAX
    } else {
        (1u32 << count) - 1
    };
    ones << first
}

impl ArenaPool {
    /// Takes `count` contiguous units from an arena of `kind` as `placement` allows, mapping a new
    /// arena if none has room. `init` runs under the pool lock, so descriptors are never seen
    /// half-written by a stats walk.
    pub(crate) fn alloc_units(
        &mut self,
        kind: ArenaKind,
        count: usize,
        placement: Placement,
        init: impl FnOnce(&Units),
    ) -> Option<Units> {
        debug_assert!(count >= 1 && count <= UNITS_PER_ARENA - meta_units(kind));
        let vacant_bucket = vacant_bucket(kind);
        // An arena of the group with a run of `count` free units. A normal arena: the fullest that
        // has one (the tightest packing). A movable one: the newest (opened last), as when arenas
        // were found newest first, so that a cache's new objects go to its newest arena and its
        // oldest arena keeps its oldest objects (`reclaim_oldest` evicts them first); that looks
        // at every arena of the kind with such a run (a cache's arenas are mostly full).
        let newest_first = kind == ArenaKind::Movable;
        let mut newest: Option<(u64, *mut ArenaMeta)> = None;
        for bucket in count..vacant_bucket {
            let mut arena = self.lists[kind as usize].buckets[bucket];
            while !arena.is_null() {
                // SAFETY: arenas on the lists are mapped and their headers initialised.
                let header = unsafe { &(*arena).header };
                if header.group == placement.group && header.base != placement.avoid {
                    if !newest_first {
                        let first = find_run(header.free_units, count)?;
                        return Some(self.take(arena, first, count, init));
                    }
                    // SAFETY: as above; the serial is written only under the lock we hold.
                    let serial = unsafe { ptr::addr_of!((*arena).serial).read() };
                    if newest.is_none_or(|(newest, _)| serial > newest) {
                        newest = Some((serial, arena));
                    }
                }
                arena = header.next;
            }
        }
        if let Some((_, arena)) = newest {
            // SAFETY: as above.
            let first = find_run(unsafe { (*arena).header.free_units }, count)?;
            return Some(self.take(arena, first, count, init));
        }
        // Else a wholly free arena, opened (again) for this group, or a new one. A group's heaps
        // join it once they fill an arena (see `Placement`): its first is growth.
        let growing = placement.group != 0 || self.lists[kind as usize].shared_in_use > 0;
        let mut vacant = self.lists[kind as usize].buckets[vacant_bucket];
        // SAFETY: as above.
        while !vacant.is_null() && unsafe { (*vacant).header.base } == placement.avoid {
            // SAFETY: as above.
            vacant = unsafe { (*vacant).header.next };
        }
        let arena = if vacant.is_null() {
            let arena = map_arena(kind, growing)?;
            self.lists[kind as usize].arenas += 1;
            self.link(kind, arena);
            arena
        } else {
            // SAFETY: a live arena of the lists.
            let header = unsafe { &mut (*vacant).header };
            let huge = wants_huge_on_opening(kind, growing);
            if header.huge != huge {
                os::advise_hugepage(header.base as *mut u8, ARENA_BYTES, huge);
                header.huge = huge;
            }
            vacant
        };
        // The arena opens (again), for this group and as the newest.
        self.opened += 1;
        // SAFETY: no unit of the arena is held (it is new or wholly free), so nothing reads its
        // serial.
        unsafe { set_serial(arena, self.opened) };
        // SAFETY: as above.
        let header = unsafe { &mut (*arena).header };
        header.group = placement.group;
        let first = find_run(header.free_units, count)?;
        Some(self.take(arena, first, count, init))
    }

    /// Puts `arena` (on no list) on the list of its longest free run.
    fn link(&mut self, kind: ArenaKind, arena: *mut ArenaMeta) {
        // SAFETY: a live arena (the caller holds the pool lock), on no list.
        let header = unsafe { &mut (*arena).header };
        let bucket = longest_run(header.free_units);
        header.bucket = bucket as u8;
        let head = &mut self.lists[kind as usize].buckets[bucket];
        header.prev = ptr::null_mut();
        header.next = *head;
        if !head.is_null() {
            // SAFETY: the old head is a live arena on the same list.
            unsafe { (**head).header.prev = arena };
        }
        *head = arena;
    }

    /// Takes `arena` off its list.
    fn unlink(&mut self, kind: ArenaKind, arena: *mut ArenaMeta) {
        // SAFETY: `arena` is on the list of its bucket; its neighbours are live arenas on the same.
        unsafe {
            let header = &mut (*arena).header;
            let head = &mut self.lists[kind as usize].buckets[header.bucket as usize];
            if header.prev.is_null() {
                *head = header.next;
            } else {
                (*header.prev).header.next = header.next;
            }
            if !header.next.is_null() {
                (*header.next).header.prev = header.prev;
            }
        }
    }

    /// Moves `arena` to the list of its longest free run, after its free units changed; counts it
    /// in `shared_in_use` if it `was_vacant` and holds units now, or the other way round.
    fn free_units_changed(&mut self, arena: *mut ArenaMeta, was_vacant: bool) {
        // SAFETY: a live arena (the caller holds the pool lock).
        let header = unsafe { &(*arena).header };
        let kind = header.kind;
        let vacant = header.free_units == all_data_units(kind);
        if header.group == 0 && vacant != was_vacant {
            let in_use = &mut self.lists[kind as usize].shared_in_use;
            *in_use = if vacant { *in_use - 1 } else { *in_use + 1 };
        }
        if longest_run(header.free_units) != header.bucket as usize {
            self.unlink(kind, arena);
            self.link(kind, arena);
        }
    }

    fn take(
        &mut self,
        arena: *mut ArenaMeta,
        first: usize,
        count: usize,
        init: impl FnOnce(&Units),
    ) -> Units {
        // SAFETY: `arena` is a live arena of this pool (callers hold the lock).
        let header = unsafe { &mut (*arena).header };
        let mask = run_mask(first, count);
        debug_assert_eq!(header.free_units & mask, mask);
        let was_vacant = header.free_units == all_data_units(header.kind);
        header.free_units &= !mask;
        header.dirty_units &= !mask;
        if header.huge && header.free_units != 0 {
            header.grown_ms = os::now_ms();
        }
        if header.free_units == 0 && !header.huge && wants_huge_when_full(header.kind) {
            // Full: khugepaged may now collapse it without making free units resident.
            os::advise_hugepage(header.base as *mut u8, ARENA_BYTES, true);
            header.huge = true;
        }
        let zeroed = header.zero_units & mask == mask;
        crate::stats::add_committed(
            ((header.zero_units & mask).count_ones() as usize) << UNIT_SHIFT,
        );
        header.zero_units &= !mask;
        self.free_units_changed(arena, was_vacant);
        let units = Units {
            arena,
            first,
            zeroed,
        };
        init(&units);
        // SAFETY: as above.
        let header = unsafe { &mut (*arena).header };
        if header.kind == ArenaKind::Movable {
            // SAFETY: as above; `init` has set up the descriptor of the units' first.
            let capacity = unsafe { (*arena).descs[first].capacity.get() };
            header.backmap_rows = header.backmap_rows.max(capacity);
        }
        units
    }

    /// Takes the `count` units from `first` on in `arena` if they are all free (a span growing in place).
    pub(crate) fn take_following(
        &mut self,
        arena: *mut ArenaMeta,
        first: usize,
        count: usize,
    ) -> bool {
        if first + count > UNITS_PER_ARENA {
            return false;
        }
        // SAFETY: the caller holds a span in this live arena; we hold the lock.
        let header = unsafe { &*arena }.header.free_units;
        let mask = run_mask(first, count);
        if header & mask != mask {
            return false;
        }
        self.take(arena, first, count, |_| {});
        true
    }

    /// Returns units to their arena. `reset` runs under the lock first (descriptors back to free).
    pub(crate) fn free_units(
        &mut self,
        arena: *mut ArenaMeta,
        first: usize,
        count: usize,
        now_ms: u64,
    ) {
        // SAFETY: the caller returns units it took from this live arena.
        let header = unsafe { &mut (*arena).header };
        let mask = run_mask(first, count);
        debug_assert_eq!(header.free_units & mask, 0);
        if header.dirty_units == 0 {
            header.dirty_since_ms = now_ms;
        }
        header.free_units |= mask;
        if header.free_units == all_data_units(header.kind) {
            header.emptied_ms = now_ms;
        }
        header.dirty_units |= mask;
        self.free_units_changed(arena, false);
    }

    /// Gives back what has been free for longer than the delay (everything when `force`).
    /// Returns the number of bytes decommitted or unmapped.
    /// Callers then age out the freed huge mappings kept for reuse (`huge_cache::release`), once
    /// they have let go of the pool lock.
    pub(crate) fn maintain(&mut self, now_ms: u64, force: bool) -> usize {
        self.last_maintenance_ms = now_ms;
        self.maintain_kinds(&[ArenaKind::Normal, ArenaKind::Movable], now_ms, force)
    }

    /// `maintain` restricted to some arena kinds.
    pub(crate) fn maintain_kinds(
        &mut self,
        kinds: &[ArenaKind],
        now_ms: u64,
        force: bool,
    ) -> usize {
        let mut released = 0;
        for (&kind, bucket) in kinds.iter().flat_map(|k| (0..BUCKETS).map(move |b| (k, b))) {
            let mut arena = self.lists[kind as usize].buckets[bucket];
            while !arena.is_null() {
                // SAFETY: arenas on the lists are live; we hold the lock. Nothing below moves an
                // arena to another list (its free units stay), but unmapping takes it off.
                let header = unsafe { &mut (*arena).header };
                let next = header.next;
                let aged = |since: u64| force || now_ms.saturating_sub(since) >= DECOMMIT_DELAY_MS;
                if header.free_units == all_data_units(kind) && aged(header.emptied_ms) {
                    // SAFETY: a live arena of this list, wholly free; we hold the lock.
                    released += unsafe { self.unmap_free(kind, arena) };
                    arena = next;
                    continue;
                }
                if header.dirty_units != 0 && aged(header.dirty_since_ms) {
                    if header.huge && thp_policy() != THP_ALWAYS {
                        os::advise_hugepage(header.base as *mut u8, ARENA_BYTES, false);
                        header.huge = false;
                    }
                    released += decommit_units(arena, header.dirty_units, true);
                    if kind == ArenaKind::Movable {
                        released += decommit_unused_backmap(arena);
                    }
                    header.zero_units |= header.dirty_units;
                    header.dirty_units = 0;
                }
                // A cache's arena given the huge-page hint as it opened (`THP_GROWING`) and no longer
                // growing: the units it never used are resident all the same (the huge page), up to
                // 2 MiB less a slab per cache. They go back, splitting the page; the hint is given
                // again if the arena fills up. Only once it has not grown for the delay, even when
                // forced: an arena a compaction is filling right now would be split under it (more
                // page faults, and TLB shootdowns for the readers, each round of a compaction loop
                // that releases at once).
                let never_used = header.free_units & header.zero_units;
                if header.huge
                    && never_used != 0
                    && wants_huge_when_full(kind)
                    && now_ms.saturating_sub(header.grown_ms) >= DECOMMIT_DELAY_MS
                {
                    os::advise_hugepage(header.base as *mut u8, ARENA_BYTES, false);
                    header.huge = false;
                    // Never committed in the statistics: they were not written.
                    released += decommit_units(arena, never_used, false);
                }
                arena = next;
            }
        }
        released
    }

    /// Unmaps the wholly free arenas of `kind` but `keep` of them (left mapped, to be reused),
    /// whatever their age, and leaves the others alone. Returns the bytes given back.
    pub(crate) fn release_free_beyond(&mut self, kind: ArenaKind, keep: usize) -> usize {
        let (mut kept, mut released) = (0, 0);
        let vacant_bucket = vacant_bucket(kind);
        let mut arena = self.lists[kind as usize].buckets[vacant_bucket];
        while !arena.is_null() {
            // SAFETY: arenas on the lists are live; we hold the lock.
            let next = unsafe { (*arena).header.next };
            if kept < keep {
                kept += 1;
            } else {
                // SAFETY: a live arena of the list of wholly free ones; we hold the lock.
                released += unsafe { self.unmap_free(kind, arena) };
            }
            arena = next;
        }
        released
    }

    /// Unlinks and unmaps `arena`, returning its bytes.
    ///
    /// # Safety
    /// `arena` is a live arena on the list of `kind`, with every data unit free; its metadata is not
    /// touched again.
    unsafe fn unmap_free(&mut self, kind: ArenaKind, arena: *mut ArenaMeta) -> usize {
        self.unlink(kind, arena);
        self.lists[kind as usize].arenas -= 1;
        // SAFETY: the caller's contract: the arena is live until it is unmapped below.
        let (base, dirty_units) = unsafe { ((*arena).header.base, (*arena).header.dirty_units) };
        let committed = meta_units(kind) + (dirty_units.count_ones() as usize);
        match kind {
            ArenaKind::Normal => {
                crate::checked::unregister_chunk(arena as usize);
                os::unmap(arena.cast(), ARENA_BYTES);
            }
            // SAFETY: a movable arena is a piece of the region, and this one is empty (the caller's
            // contract); its metadata is not touched again.
            ArenaKind::Movable => unsafe { crate::region::unmap_piece(base as *mut u8) },
        }
        crate::stats::sub_mapped(mapped_bytes(kind));
        crate::stats::sub_committed(committed << UNIT_SHIFT);
        ARENA_BYTES
    }

    /// Whether a periodic `maintain` is due (see [`maintain_if_due`]).
    pub(crate) fn maintenance_due(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_maintenance_ms) >= DECOMMIT_DELAY_MS / 2
    }

    /// Visits every arena (for statistics), with the pool locked.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(ArenaKind, &ArenaMeta)) {
        for kind in [ArenaKind::Normal, ArenaKind::Movable] {
            for &head in &self.lists[kind as usize].buckets {
                let mut arena = head;
                while !arena.is_null() {
                    // SAFETY: arenas on the lists are live and we hold the lock.
                    let meta = unsafe { &*arena };
                    visit(kind, meta);
                    arena = meta.header.next;
                }
            }
        }
    }

    pub(crate) fn arena_count(&self) -> usize {
        self.lists.iter().map(|l| l.arenas).sum()
    }

    /// Checks the lists (tests): each arena is on the list of its longest free run, linked both
    /// ways, and the counts match.
    #[cfg(test)]
    fn check_lists(&self) {
        for kind in [ArenaKind::Normal, ArenaKind::Movable] {
            let list = &self.lists[kind as usize];
            let (mut arenas, mut shared_in_use) = (0, 0);
            for (bucket, &head) in list.buckets.iter().enumerate() {
                let (mut arena, mut prev) = (head, ptr::null_mut());
                while !arena.is_null() {
                    // SAFETY: arenas on the lists are live and we hold the lock.
                    let header = unsafe { &(*arena).header };
                    assert_eq!(longest_run(header.free_units), bucket);
                    assert_eq!(header.bucket as usize, bucket);
                    assert_eq!(header.prev, prev);
                    arenas += 1;
                    let vacant = header.free_units == all_data_units(kind);
                    shared_in_use += usize::from(header.group == 0 && !vacant);
                    (prev, arena) = (arena, header.next);
                }
            }
            assert_eq!((arenas, shared_in_use), (list.arenas, list.shared_in_use));
        }
    }
}

impl ArenaMeta {
    /// Free units (under the pool lock).
    pub(crate) fn free_units(&self) -> u32 {
        self.header.free_units
    }

    /// Committed-but-free units (under the pool lock).
    pub(crate) fn dirty_units(&self) -> u32 {
        self.header.dirty_units
    }
}

/// Decommits the back-map rows of a movable arena that no slab in it uses now (whole pages above the
/// largest capacity among its slabs) and that a slab may have used since the last time (up to
/// `backmap_rows`). Returns the bytes given back: only those, so that a pass does not count again
/// (as it used to, each time) pages that were decommitted already or never touched. Pool lock
/// held: slabs are created and released under it, so the descriptors read here are stable.
fn decommit_unused_backmap(arena: *mut ArenaMeta) -> usize {
    // SAFETY: a live arena; its descriptors are initialised and only change under the pool lock.
    let (descs, header) = unsafe { (&(*arena).descs, &mut (*arena).header) };
    let rows = descs
        .iter()
        .filter(|d| d.kind.get() == KIND_SMALL && d.head_delta.get() == 0)
        .map(|d| d.capacity.get())
        .max()
        .unwrap_or(0);
    let bytes = |rows: u32| (rows as usize * BACKMAP_COLUMNS * 4).next_multiple_of(os::page_size());
    let (used, touched) = (bytes(rows), bytes(header.backmap_rows).min(BACKMAP_BYTES));
    header.backmap_rows = rows;
    if used >= touched {
        return 0;
    }
    let start = (arena as usize) + BACKMAP_OFFSET + used;
    os::decommit(start as *mut u8, touched - used);
    touched - used
}

/// Decommits the units of `mask`, which were counted as committed if `counted`.
fn decommit_units(arena: *mut ArenaMeta, mask: u32, counted: bool) -> usize {
    // SAFETY: a live arena (the caller holds the pool lock).
    let base = unsafe { (*arena).header.base };
    let mut rest = mask;
    let mut bytes = 0;
    while rest != 0 {
        let first = rest.trailing_zeros() as usize;
        let len = (rest >> first).trailing_ones() as usize;
        os::decommit((base + (first << UNIT_SHIFT)) as *mut u8, len << UNIT_SHIFT);
        if counted {
            crate::stats::sub_committed(len << UNIT_SHIFT);
        }
        bytes += len << UNIT_SHIFT;
        rest &= !run_mask(first, len);
    }
    bytes
}

/// Whether an arena of `kind` that fills up gets the huge-page hint back (see `THP_GROWING`).
fn wants_huge_when_full(kind: ArenaKind) -> bool {
    kind == ArenaKind::Movable && thp_policy() == THP_GROWING
}

/// Address space an arena maps: a movable arena's metadata piece comes with it.
fn mapped_bytes(kind: ArenaKind) -> usize {
    match kind {
        ArenaKind::Normal => ARENA_BYTES,
        ArenaKind::Movable => 2 * ARENA_BYTES,
    }
}

/// Whether an arena of `kind` that opens for a `growing` group (one that filled an arena already)
/// gets the huge-page hint (see `THP_GROWING`).
fn wants_huge_on_opening(kind: ArenaKind, growing: bool) -> bool {
    match thp_policy() {
        THP_ALWAYS => true,
        THP_GROWING => kind == ArenaKind::Movable && growing,
        _ => false,
    }
}

/// Maps a new arena of `kind`, for a `growing` group (see `wants_huge_on_opening`).
fn map_arena(kind: ArenaKind, growing: bool) -> Option<*mut ArenaMeta> {
    let (base, meta) = match kind {
        ArenaKind::Normal => {
            let base = os::map_aligned(ARENA_BYTES, ARENA_BYTES);
            (base, base.cast::<ArenaMeta>())
        }
        ArenaKind::Movable => {
            let base = crate::region::map_piece();
            (base, movable_meta_of(base as usize))
        }
    };
    if base.is_null() {
        return None;
    }
    let huge = wants_huge_on_opening(kind, growing);
    if huge {
        // Before the first touch, so that the first fault maps the whole arena as one page.
        os::advise_hugepage(base, ARENA_BYTES, true);
    }
    crate::stats::add_mapped(mapped_bytes(kind));
    crate::stats::add_committed(meta_units(kind) << UNIT_SHIFT);
    let data = all_data_units(kind);
    // SAFETY: `meta` is fresh, zeroed, writable memory large enough for `ArenaMeta` (the arena's first
    // unit, or its metadata piece). Zeroed descriptors are valid free descriptors (every field of
    // `Slab` is valid as all-zero bytes).
    unsafe {
        let header = &mut (*meta).header;
        header.magic = ARENA_MAGIC;
        header.kind = kind;
        header.free_units = data;
        header.zero_units = data;
        header.base = base as usize;
        header.huge = huge;
        for desc in (*meta).descs.iter() {
            desc.init_unowned();
        }
    }
    if kind == ArenaKind::Normal {
        // Only the global allocator's chunks: a movable block handed to it is foreign.
        crate::checked::register_chunk(base as usize);
    }
    Some(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spans of 16 units leave 15 free in each arena they take: a request for 16 more opens a
    /// new arena (found without a walk of the others), one for 15 takes the rest of one of theirs.
    /// (All under one taking of the lock: other tests use the pool too.)
    #[test]
    fn arenas_are_found_by_their_longest_free_run() {
        let mut pool = POOL.lock();
        let mut take = |count| {
            let units = pool.alloc_units(ArenaKind::Normal, count, Placement::SHARED, |_| {});
            pool.check_lists();
            units.expect("memory for a test's units")
        };
        let spans: Vec<Units> = (0..8).map(|_| take(16)).collect();
        let rest = take(15);
        let arenas: Vec<usize> = spans.iter().map(|s| s.arena as usize).collect();
        for (i, a) in arenas.iter().enumerate() {
            assert!(!arenas[..i].contains(a), "two 16-unit spans in one arena");
        }
        assert!(
            arenas.contains(&(rest.arena as usize)),
            "a new arena for 15 units"
        );
        for (units, count) in spans.iter().map(|s| (s, 16)).chain([(&rest, 15)]) {
            pool.free_units(units.arena, units.first, count, os::now_ms());
            pool.check_lists();
        }
    }

    /// An arena that empties again and again within the decommit delay still has its dirty units
    /// decommitted the delay after they became dirty (a review found that resetting the dirty time
    /// at each emptying kept 32 units committed through 20 passes over 610 ms). It stays mapped:
    /// it is unmapped only the delay after it last emptied.
    #[test]
    fn an_arena_emptied_again_and_again_still_decommits() {
        let mut pool = POOL.lock();
        let placement = Placement {
            group: 0x5eed_0001,
            avoid: 0,
        };
        let halves = [16, 16].map(|count| {
            let units = pool.alloc_units(ArenaKind::Movable, count, placement, |_| {});
            units.expect("memory for a test's units")
        });
        let arena = halves[0].arena;
        assert_eq!(halves[1].arena, arena);
        let t0 = os::now_ms() + 1_000;
        for half in &halves {
            pool.free_units(arena, half.first, 16, t0);
        }
        for i in 1..=20u64 {
            let t = t0 + 30 * i;
            let one = pool.alloc_units(ArenaKind::Movable, 1, placement, |_| {});
            let one = one.expect("memory for a test's unit");
            assert_eq!(one.arena, arena);
            pool.maintain_kinds(&[ArenaKind::Movable], t + 5, false);
            pool.free_units(arena, one.first, 1, t + 10);
            pool.check_lists();
        }
        // SAFETY: a live arena (it emptied 20 ms before the last pass), and we hold the lock.
        let dirty = unsafe { (*arena).header.dirty_units };
        assert!(dirty.count_ones() <= 1, "{dirty:#x} still dirty");
        pool.maintain_kinds(&[ArenaKind::Movable], t0 + 30 * 20 + 100, false);
        pool.check_lists();
    }

    /// A movable group's new slab goes to its newest arena with room, not to a fuller, older one:
    /// a cache's oldest arena keeps its oldest objects, which `reclaim_oldest` evicts first.
    #[test]
    fn a_movable_group_fills_its_newest_arena_first() {
        let mut pool = POOL.lock();
        let placement = Placement {
            group: 0x5eed_0002,
            avoid: 0,
        };
        let mut take = |count| {
            let units = pool.alloc_units(ArenaKind::Movable, count, placement, |_| {});
            units.expect("memory for a test's units")
        };
        let (old, old_rest, new) = (take(16), take(16), take(12));
        assert_eq!((old.first, old_rest.arena), (0, old.arena));
        assert_ne!(new.arena, old.arena);
        let now = os::now_ms();
        pool.free_units(old.arena, 5, 1, now); // a hole in the older, fuller arena
        let next = pool.alloc_units(ArenaKind::Movable, 1, placement, |_| {});
        let next = next.expect("memory for a test's unit");
        let went_to = next.arena;
        pool.free_units(next.arena, next.first, 1, now);
        pool.free_units(old.arena, 0, 5, now);
        pool.free_units(old.arena, 6, 26, now);
        pool.free_units(new.arena, new.first, 12, now);
        pool.check_lists();
        assert_eq!(went_to, new.arena, "the new slab went to the older arena");
    }

    /// Random takes (both kinds, three groups, some avoiding an arena), frees, maintenance passes
    /// and releases keep every arena on the list of its longest free run.
    #[test]
    fn random_pool_operations_keep_the_lists() {
        let mut pool = POOL.lock();
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        let mut below = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut held: Vec<(*mut ArenaMeta, usize, usize)> = Vec::new();
        let mut now = os::now_ms();
        for _ in 0..20_000 {
            now += below(5);
            match below(10) {
                0..=4 => {
                    let kind = [ArenaKind::Normal, ArenaKind::Movable][below(2) as usize];
                    let most = (UNITS_PER_ARENA - meta_units(kind)) as u64;
                    let span = if below(4) == 0 { most } else { 4 };
                    let count = 1 + below(span) as usize;
                    let group = match kind {
                        ArenaKind::Movable => 0x7000_0000 + below(3) as u32,
                        ArenaKind::Normal => 0,
                    };
                    let avoid = match held.len() as u64 {
                        0 => 0,
                        // SAFETY: held arenas are live; we hold the lock.
                        n => unsafe { (*held[below(n) as usize].0).header.base },
                    };
                    let avoid = if below(3) == 0 { avoid } else { 0 };
                    let units = pool.alloc_units(kind, count, Placement { group, avoid }, |_| {});
                    let units = units.expect("memory for a test's units");
                    // SAFETY: as above.
                    assert_ne!(unsafe { (*units.arena).header.base }, avoid);
                    held.push((units.arena, units.first, count));
                }
                5..=8 if !held.is_empty() => {
                    let (arena, first, count) = held.swap_remove(below(held.len() as u64) as usize);
                    pool.free_units(arena, first, count, now);
                }
                9 => match below(3) {
                    0 => drop(pool.maintain_kinds(
                        &[ArenaKind::Normal, ArenaKind::Movable],
                        now,
                        false,
                    )),
                    1 => drop(pool.release_free_beyond(ArenaKind::Movable, below(3) as usize)),
                    _ => drop(pool.release_free_beyond(ArenaKind::Normal, below(3) as usize)),
                },
                _ => {}
            }
            pool.check_lists();
        }
        for (arena, first, count) in held {
            pool.free_units(arena, first, count, now);
        }
        pool.check_lists();
    }

    /// A back-map trim counts the pages it gives back once: a movable arena whose slabs never
    /// touched its back-map gives back nothing (each pass used to count the whole unused back-map,
    /// 512 KiB an arena), and one whose slab did gives its rows back once.
    #[test]
    fn back_map_trims_count_each_page_once() {
        let mut pool = POOL.lock();
        let placement = Placement {
            group: 0x5eed_0003,
            avoid: 0,
        };
        let units = pool.alloc_units(ArenaKind::Movable, 2, placement, |_| {});
        let units = units.expect("memory for a test's units");
        assert_eq!(
            decommit_unused_backmap(units.arena),
            0,
            "nothing was touched"
        );
        // SAFETY: a live arena; we hold the lock. As if a slab of 4,096 blocks had been made and
        // released: its rows may be committed.
        unsafe { (*units.arena).header.backmap_rows = 4096 };
        let rows_bytes = (4096 * BACKMAP_COLUMNS * 4).next_multiple_of(os::page_size());
        assert_eq!(decommit_unused_backmap(units.arena), rows_bytes);
        assert_eq!(decommit_unused_backmap(units.arena), 0, "counted again");
        pool.free_units(units.arena, units.first, 2, os::now_ms());
        pool.check_lists();
    }

    #[test]
    fn longest_runs() {
        assert_eq!(longest_run(0), 0);
        assert_eq!(longest_run(u32::MAX), 32);
        assert_eq!(longest_run(u32::MAX << 1), 31);
        assert_eq!(longest_run(0b1110_1101_1000), 3);
    }

    #[test]
    fn runs_are_found_lowest_first() {
        assert_eq!(find_run(0b1111_0110, 2), Some(1));
        assert_eq!(find_run(0b1111_0110, 3), Some(4));
        assert_eq!(find_run(0b1111_0110, 5), None);
        assert_eq!(find_run(u32::MAX << 1, 31), Some(1));
        assert_eq!(run_mask(3, 2), 0b11000);
        assert_eq!(all_data_units(ArenaKind::Normal).count_ones(), 31);
        assert_eq!(all_data_units(ArenaKind::Movable).count_ones(), 32);
    }
}
