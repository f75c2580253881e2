//! The byte-blob flavour: variable-size values (0 B to `MAX_BLOB_BYTES`, which is 36 KiB − 4 B)
//! stored by size class, as zsmalloc stores compressed pages.
//!
//! A blob is stored as a 4-byte length and its bytes, in the smallest of [`NUM_CLASSES`] block sizes
//! that holds them: 16-byte steps up to 512 B (zsmalloc's own spacing), then 16 sizes per doubling up
//! to 4 KiB and 8 per doubling up to 32 KiB, and one of 36 KiB (alloc-core's largest movable
//! block, so that a 32 KiB value and its length fit one), so a blob wastes at most 15 bytes, or
//! 1/16 (1/8 above 4 KiB) of its block. Movable slabs take exact block sizes, so nothing else
//! rounds.
//!
//! Each class is a [`RelocCache`] whose objects are a length followed by bytes
//! ([`RelocCache::with_tail`]), made when the first blob of its size arrives. All classes share one
//! epoch collector, so one guard covers every class; one tag, so a `BlobCache` takes one of the
//! process's [`crate::MAX_CACHES`] tags however many classes it uses; and one handle table, from which
//! each class claims runs of slots that stay its own until it gives them back. A [`BlobHandle`] is a
//! class's handle as it is: reading it needs no class, and the class that owns it is the class of its
//! blob's length (a blob keeps its class for life: `replace` with a length of another class makes a
//! new blob). So the classes together have the whole index space and its generations
//! ([`crate::MAX_OBJECTS`]). A class keeps the runs it claimed (its vacant slots wait for its own next
//! blobs) until [`BlobCache::release_vacant_slots`] gives the wholly vacant ones back to the table
//! for any class (which an insert that finds the table full does first, an insert that made a
//! class claim slots does for one class where it may pay, and a background compactor's rounds for
//! all of those). Compaction, evacuation and eviction are the class caches' own, applied to every
//! class in turn.

use crate::cache::{next_tag, tag_bits, CacheError, ReleaseArenasOnDrop, RelocCache};
use crate::compact::{add_to_arena, evacuate_in_turn, Budget, CacheStats, CompactReport};
use crate::guard::{flush_until_quiet, next_epoch_id, Guard, Reader};
use crate::handle::Handle;
use crate::policy::{BitwiseMove, Relocatable};
use crate::striped::StripedCounter;
use crate::table::SlotTable;
use crate::view::{read_many, read_slot};
use alloc_core::movable::MAX_MOVABLE_BYTES;
use crossbeam_epoch::Collector;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Bytes of the length in front of every blob.
const LEN_BYTES: usize = 4;
/// The largest blob: the largest movable block minus the length.
pub const MAX_BLOB_BYTES: usize = MAX_MOVABLE_BYTES - LEN_BYTES;
/// Number of blob classes (block sizes).
const NUM_CLASSES: usize = 105;

/// Block size of a class: 32 classes of 16-byte steps to 512, 48 of 16 per doubling to 4 KiB, 24 of
/// 8 per doubling to 32 KiB, and the next step, 36 KiB ([`MAX_MOVABLE_BYTES`]).
const fn class_bytes(class: usize) -> usize {
    if class < 32 {
        (class + 1) * 16
    } else if class < 80 {
        let p = 9 + (class - 32) / 16;
        (1 << p) + ((class - 32) % 16 + 1) * (1 << (p - 4))
    } else {
        let p = 12 + (class - 80) / 8;
        (1 << p) + ((class - 80) % 8 + 1) * (1 << (p - 3))
    }
}

/// The smallest class whose blocks hold `bytes` (length included); `None` above 36 KiB.
fn class_of(bytes: usize) -> Option<usize> {
    let last = bytes.max(1) - 1;
    if last < 512 {
        return Some(last / 16);
    }
    if last >= MAX_MOVABLE_BYTES {
        return None;
    }
    let p = (usize::BITS - 1 - last.leading_zeros()) as usize;
    Some(if p < 12 {
        32 + (p - 9) * 16 + ((last >> (p - 4)) & 15)
    } else {
        80 + (p - 12) * 8 + ((last >> (p - 3)) & 7)
    })
}

/// A handle to a blob: a slot index and a generation, in 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobHandle(u64);

impl BlobHandle {
    pub fn to_bits(self) -> u64 {
        self.0
    }

    /// Any value is safe: a wrong one resolves to `None`.
    pub fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    fn of(handle: Handle<BlobLen>) -> Self {
        Self(handle.to_bits())
    }

    fn inner(self) -> Handle<BlobLen> {
        Handle::from_bits(self.0)
    }
}

/// The head of a stored blob: its length; the bytes follow in the same block.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct BlobLen(u32);

// SAFETY: a plain integer: no interior mutability, no self-reference.
unsafe impl Relocatable for BlobLen {}

type Class = RelocCache<BlobLen, BitwiseMove>;

/// Writes `value` (length, then bytes) into a class block.
///
/// # Safety
/// - `block` is a fresh block of a class whose blocks hold `LEN_BYTES + value.len()` bytes.
unsafe fn write_blob(block: NonNull<u8>, value: &[u8]) {
    let len = (value.len() as u32).to_ne_bytes();
    // SAFETY: the caller's contract: the block holds the length and the bytes.
    unsafe {
        block
            .as_ptr()
            .copy_from_nonoverlapping(len.as_ptr(), LEN_BYTES);
        block
            .as_ptr()
            .add(LEN_BYTES)
            .copy_from_nonoverlapping(value.as_ptr(), value.len());
    }
}

/// The bytes of the blob stored at `addr`.
///
/// # Safety
/// - `addr` holds a blob written by `write_blob` that stays valid and unchanged for `'a`.
unsafe fn blob_at<'a>(addr: usize) -> &'a [u8] {
    // SAFETY: the caller's contract; the length was written with the bytes.
    unsafe {
        let len = (addr as *const u32).read() as usize;
        std::slice::from_raw_parts((addr + LEN_BYTES) as *const u8, len)
    }
}

/// A relocating cache of byte strings of any size up to [`MAX_BLOB_BYTES`].
pub struct BlobCache {
    /// One cache per class, made when its first blob arrives.
    classes: Box<[OnceLock<Class>]>,
    /// The handle table the classes share.
    table: SlotTable,
    collector: Collector,
    /// The collector's identity and the tag, shared by the classes (one guard serves them all).
    epoch: usize,
    tag: u32,
    /// What changes, boxed so that the cache holds no interior mutability: a loop of gets then
    /// keeps what it reads from the cache in registers (see `RelocCache`).
    counts: Box<BlobCounts>,
    /// Last, so that it is dropped after every class has returned its slabs: once for all classes.
    release_on_drop: ReleaseArenasOnDrop,
}

impl Drop for BlobCache {
    fn drop(&mut self) {
        let held_slabs = (self.made()).any(|(_, class)| class.slab_stats().slabs > 0);
        self.release_on_drop.arm(held_slabs);
    }
}

/// A [`BlobCache`]'s counters.
struct BlobCounts {
    /// Bytes `release_empty_arenas` and `release_aged_arenas` gave back.
    released: AtomicU64,
    /// Blobs removed or evicted so far, and how many there had been when an insert into a full
    /// table last found no vacant run to take back: until more go, a full table refuses at once
    /// rather than scan the classes again.
    removals: StripedCounter,
    fruitless_at: AtomicUsize,
    /// The table's `claims_made` when an insert last saw it, and the class after the one whose
    /// runs an insert last gave back (see [`BlobCache::insert`]).
    claims_seen: AtomicUsize,
    next_to_scan: AtomicUsize,
    /// The class after the one where a compaction's budget ran out: where the next one starts
    /// (see `in_every_class`).
    next_to_compact: AtomicUsize,
    /// Background compactors running on this cache: while there is one, its rounds give slot runs
    /// back and inserts leave it to them.
    background: AtomicUsize,
    /// The classes are in the cache's arena group (see `join_arena_group_if_grown`); classes made
    /// later join as they are made.
    joined: AtomicBool,
}

impl BlobCache {
    pub fn new() -> Result<Self, CacheError> {
        Self::with_table_slots(crate::MAX_OBJECTS)
    }

    /// A cache whose classes share a table of `max_slots` slots (tests fill a small one).
    fn with_table_slots(max_slots: usize) -> Result<Self, CacheError> {
        Ok(Self {
            classes: (0..NUM_CLASSES).map(|_| OnceLock::new()).collect(),
            table: SlotTable::new(max_slots).ok_or(CacheError::OutOfMemory)?,
            collector: Collector::new(),
            epoch: next_epoch_id(),
            tag: next_tag()?,
            counts: Box::new(BlobCounts {
                released: AtomicU64::new(0),
                removals: StripedCounter::default(),
                fruitless_at: AtomicUsize::new(usize::MAX),
                claims_seen: AtomicUsize::new(0),
                next_to_scan: AtomicUsize::new(0),
                next_to_compact: AtomicUsize::new(0),
                background: AtomicUsize::new(0),
                joined: AtomicBool::new(false),
            }),
            release_on_drop: ReleaseArenasOnDrop::new(true),
        })
    }

    /// Registers the calling thread; one reader's guards serve every class.
    pub fn reader(&self) -> Reader<'_> {
        Reader::new(self.collector.register(), self.epoch)
    }

    /// The classes made so far, with their numbers.
    fn made(&self) -> impl Iterator<Item = (usize, &Class)> {
        (self.classes.iter().enumerate()).filter_map(|(i, c)| Some((i, c.get()?)))
    }

    /// The class cache of `class`, made now if this is its first blob.
    fn class_or_make(&self, class: usize) -> Result<&Class, CacheError> {
        let cell = &self.classes[class];
        if let Some(cache) = cell.get() {
            return Ok(cache);
        }
        let made = Class::with_tail(
            self.collector.clone(),
            (self.epoch, self.tag),
            self.table.share(),
            class_bytes(class),
        );
        // Another thread may have made it meanwhile: then ours is dropped unused (or our failure
        // does not matter).
        let class = match (made, cell.get()) {
            (_, Some(cache)) => cache,
            (Ok(made), None) => cell.get_or_init(|| made),
            (Err(e), None) => return Err(e),
        };
        // After the class is published, so that a join running meanwhile either sees the class or
        // has set the flag: a store-then-load on each side, which needs a `SeqCst` fence between
        // the two on both (`OnceLock` publishes with release only). Were both missed, the class
        // would stay in the shared arenas: where its slabs go, nothing more.
        fence(Ordering::SeqCst);
        if self.counts.joined.load(Ordering::Relaxed) {
            class.join_arena_group();
        }
        Ok(class)
    }

    /// Stores a copy of `value`. `TooLarge` above [`MAX_BLOB_BYTES`].
    ///
    /// When the shared handle table is full, the classes first give back their vacant runs of slots
    /// ([`BlobCache::release_vacant_slots`]) and the insert is tried once more, so that a table
    /// filled at one class's peak does not refuse another class's blobs while the first holds
    /// wholly vacant runs. And an insert after which some class had to claim slots from the table
    /// (a run of 256) has one class that holds more than twice the slots it needs, a quarter of
    /// them back since it was last scanned, give its vacant runs back (see
    /// [`release_vacant_slots`](Self::release_vacant_slots)), so that claims take those rather than
    /// grow the table: when value sizes drift, the table stays near what the live blobs need
    /// instead of reaching the sum of every class's peak. One class per claim; a class keeps its
    /// vacant slots listed per run, so a give-back costs the runs it gives, not a pass over the
    /// class's slots (in `benches`' `blob-slots`, phases of 500,000 blobs of which one in 300
    /// stays, with a table of 2.9 million slots, the inserts that gave runs back took at most
    /// 0.1-0.5 ms, against 3.1-4.0 ms with one list and a pass). While a background compactor
    /// ([`crate::start_compactor`]) runs on the cache, inserts leave this to its rounds.
    pub fn insert(&self, value: &[u8]) -> Result<BlobHandle, CacheError> {
        let class = class_of(LEN_BYTES + value.len()).ok_or(CacheError::TooLarge)?;
        let cache = self.class_or_make(class)?;
        let insert = || {
            // SAFETY: the class's blocks hold the length and the bytes; copying cannot panic.
            unsafe { cache.insert_with(|block| write_blob(block, value)) }
        };
        let inserted = match insert() {
            Err(CacheError::OutOfMemory) if self.took_back_slots() => insert(),
            inserted => inserted,
        };
        let inserted = inserted.map(|(handle, join_due)| {
            if join_due {
                self.join_arena_group_if_grown();
            }
            BlobHandle::of(handle)
        });
        let claims = self.table.claims_made();
        if self.counts.background.load(Ordering::Relaxed) == 0
            && self.counts.claims_seen.load(Ordering::Relaxed) != claims
            && self.counts.claims_seen.swap(claims, Ordering::Relaxed) != claims
        {
            self.give_back_one_class();
        }
        inserted
    }

    /// Has the first class (from the one after the class asked last) that holds more than twice the
    /// slots it needs, and has had a quarter of them come back since its last scan, give its
    /// vacant runs back (see [`insert`](Self::insert)).
    fn give_back_one_class(&self) {
        let start = self.counts.next_to_scan.load(Ordering::Relaxed);
        for number in (start..NUM_CLASSES).chain(0..start) {
            let Some(class) = self.classes[number].get() else {
                continue;
            };
            if let Ok(Some(_)) = class.give_back_vacant_slots(true) {
                self.counts
                    .next_to_scan
                    .store((number + 1) % NUM_CLASSES, Ordering::Relaxed);
                return;
            }
        }
    }

    /// Puts every class in the cache's arena group once the blobs of all classes together fill an
    /// arena (see `Inner::arena_group`): a cache of many small classes would otherwise never leave
    /// the shared arenas (a review's cache, one large class and many small ones held to 16 MiB by
    /// `reclaim_oldest`, kept evicting the same shared arena's newest blobs and grew to 253 MiB).
    /// Asked by inserts when a class's own cadence makes a check due (no class lock held here).
    fn join_arena_group_if_grown(&self) {
        if self.counts.joined.load(Ordering::Relaxed) {
            return;
        }
        let live: usize = self.made().map(|(_, class)| class.live_block_bytes()).sum();
        if live >= alloc_core::movable::ARENA_BYTES {
            self.counts.joined.store(true, Ordering::Relaxed);
            // See `class_or_make`: the store, then the classes' load, across a `SeqCst` fence.
            fence(Ordering::SeqCst);
            for (_, class) in self.made() {
                class.join_arena_group();
            }
        }
    }

    /// Counts a background compactor's thread starting (`true`) or ending.
    pub(crate) fn upkept_in_background(&self, running: bool) {
        if running {
            self.counts.background.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counts.background.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// After an insert ran out of memory: whether the table is full and the classes gave back
    /// vacant runs (no class lock is held here; the give-back takes each in turn). It scans only if
    /// blobs went since the last scan that found nothing.
    fn took_back_slots(&self) -> bool {
        let removals = self.counts.removals.sum();
        if !self.table.is_full() || self.counts.fruitless_at.load(Ordering::Relaxed) == removals {
            return false;
        }
        let given = self.release_vacant_slots();
        if given == 0 {
            self.counts.fruitless_at.store(removals, Ordering::Relaxed);
        }
        given > 0
    }

    /// The bytes a handle names, or `None` (stale, removed, evicted, foreign).
    pub fn get<'g>(&'g self, handle: BlobHandle, guard: &'g Guard) -> Option<&'g [u8]> {
        guard.check(self.epoch);
        let addr = read_slot(self.table.slots(), (tag_bits(self.tag), 0), handle.inner())?;
        // SAFETY: a published blob; the epoch keeps it (and any old copy) unchanged while `guard` is
        // pinned.
        Some(unsafe { blob_at(addr) })
    }

    /// A multi-get: calls `visit(i, bytes)` for each `handles[i]` in order, with what
    /// [`get`](Self::get) would return for it, overlapping the lookups' cache misses as
    /// [`RelocCache::get_many`] does.
    pub fn get_many<'g>(
        &'g self,
        handles: &[BlobHandle],
        guard: &'g Guard,
        mut visit: impl FnMut(usize, Option<&'g [u8]>),
    ) {
        guard.check(self.epoch);
        read_many(
            self.table.slots(),
            (tag_bits(self.tag), 0),
            (handles.len(), |i| handles[i].inner()),
            |i, addr| {
                // SAFETY: as in `get`: a published blob, read under `guard`.
                visit(i, addr.map(|addr| unsafe { blob_at(addr) }));
            },
        );
    }

    /// Calls `visit` with the handle and bytes of every live blob, class by class. A blob inserted
    /// or removed meanwhile may or may not be visited; every other one is visited once.
    ///
    /// # Panics
    /// If `guard` was not pinned by a [`Reader`] of this cache.
    pub fn for_each<'g>(&'g self, guard: &'g Guard, mut visit: impl FnMut(BlobHandle, &'g [u8])) {
        guard.check(self.epoch);
        for (number, class) in self.made() {
            class.for_each(guard, |handle, header| {
                // SAFETY: a published blob, read under `guard`, as in `get`.
                let blob = unsafe { blob_at(header as *const BlobLen as usize) };
                // A slot of a run that went to another class since this one listed its runs holds
                // that class's blob: it is visited there.
                if class_of(LEN_BYTES + blob.len()) == Some(number) {
                    visit(BlobHandle::of(handle), blob);
                }
            });
        }
    }

    /// Number of live blobs, over every size class.
    pub fn len(&self) -> usize {
        self.made().map(|(_, class)| class.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The class that owns a handle's live blob, with its number, or `None` (stale, foreign). A slot
    /// belongs to the class that claimed it until that class gives it back vacant, and only its owner
    /// stores blobs in it, all of a length of that class: so the class of a live blob's length is the
    /// slot's. (Handing a handle to another class would free its block into the wrong heap.)
    fn owner(&self, handle: BlobHandle, guard: &Guard) -> Option<(usize, &Class)> {
        self.class_holding(self.get(handle, guard)?)
    }

    /// The class that stores blobs of `blob`'s length, with its number.
    fn class_holding(&self, blob: &[u8]) -> Option<(usize, &Class)> {
        let class = class_of(LEN_BYTES + blob.len())?;
        Some((class, self.classes[class].get()?))
    }

    /// Replaces a value. In place (same handle) when it fits the same class; otherwise the value moves
    /// to another class and the new handle is returned (the old one becomes stale). `None`: stale handle.
    /// A reader that took the old handle from an index before the index was given the new one gets
    /// `None` for it: on `None`, look the key up again before treating it as gone.
    pub fn replace(
        &self,
        handle: BlobHandle,
        guard: &Guard,
        value: &[u8],
    ) -> Result<Option<BlobHandle>, CacheError> {
        let Some((class, cache)) = self.owner(handle, guard) else {
            return Ok(None);
        };
        let inner = handle.inner();
        if class_of(LEN_BYTES + value.len()) == Some(class) {
            // SAFETY: the class's blocks hold the length and the bytes; copying cannot panic.
            let replaced = unsafe {
                cache.update_with(inner, guard, |_| (), |(), block| write_blob(block, value))?
            };
            return Ok(replaced.then_some(handle));
        }
        let new = self.insert(value)?;
        if !self.remove(handle, guard) {
            self.remove(new, guard);
            return Ok(None);
        }
        Ok(Some(new))
    }

    /// Removes a value (freed after the epoch). False for a stale handle.
    pub fn remove(&self, handle: BlobHandle, guard: &Guard) -> bool {
        // The owner found from a blob that is then removed (or replaced) first can only refuse the
        // handle: the slot's generation has moved on.
        let removed = self
            .owner(handle, guard)
            .is_some_and(|(_, c)| c.remove_at(handle.inner(), guard, None, |_| ()).is_some());
        if removed {
            self.counts.removals.add(1);
        }
        removed
    }

    /// Removes the values of many handles, as a [`remove`](Self::remove) of each in order would, and
    /// returns how many it removed. Each removal first reads its blob's length (to find the class),
    /// so the slots and blobs of the handles further on are loaded meanwhile, as in
    /// [`get_many`](Self::get_many).
    pub fn remove_many(&self, handles: &[BlobHandle], guard: &Guard) -> usize {
        guard.check(self.epoch);
        let mut removed = 0;
        read_many(
            self.table.slots(),
            (tag_bits(self.tag), 0),
            (handles.len(), |i| handles[i].inner()),
            |i, addr| {
                // SAFETY: as in `get`: a published blob, read under `guard` (if an earlier handle
                // of the batch named it too, it was retired under `guard`, and is still whole).
                let Some(blob) = addr.map(|addr| unsafe { blob_at(addr) }) else {
                    return;
                };
                // As in `remove`: a blob removed since it was read only makes the generation refuse.
                if let Some((_, class)) = self.class_holding(blob) {
                    removed += usize::from(
                        class
                            .remove_at(handles[i].inner(), guard, None, |_| ())
                            .is_some(),
                    );
                }
            },
        );
        self.counts.removals.add(removed);
        removed
    }

    /// Footprint compaction of every class, within one `budget` for the whole cache: the classes
    /// spend it one after another, each call starting after the class where the last one's ran
    /// out (so a small budget, a background compactor's round, reaches every class in turn). As with
    /// [`RelocCache::compact`], the resident set shrinks only once emptied arenas go back.
    ///
    /// # Panics
    /// If `guard` was not pinned by a [`Reader`] of this cache.
    pub fn compact(&self, guard: &Guard, budget: Budget) -> Result<CompactReport, CacheError> {
        guard.check(self.epoch);
        let resume = Some(&self.counts.next_to_compact);
        self.in_every_class(budget, resume, |class, budget| class.compact(guard, budget))
    }

    /// Moves every blob out of one 2 MiB arena, within one `budget` for all classes.
    ///
    /// # Panics
    /// If `guard` was not pinned by a [`Reader`] of this cache.
    pub fn evacuate_arena(
        &self,
        guard: &Guard,
        arena: usize,
        budget: Budget,
    ) -> Result<CompactReport, CacheError> {
        guard.check(self.epoch);
        self.in_every_class(budget, None, |class, budget| {
            class.evacuate_arena(guard, arena, budget)
        })
    }

    /// Evacuates the `k` arenas holding the fewest live bytes of blobs, one after another, within
    /// one `budget` for them all (see [`RelocCache::evacuate_sparsest`]).
    ///
    /// # Panics
    /// If `guard` was not pinned by a [`Reader`] of this cache.
    pub fn evacuate_sparsest(
        &self,
        guard: &Guard,
        k: usize,
        budget: Budget,
    ) -> Result<CompactReport, CacheError> {
        guard.check(self.epoch);
        let mut arenas = self.live_bytes_by_arena()?;
        arenas.sort_by_key(|&(arena, bytes)| (bytes, arena));
        evacuate_in_turn(
            arenas.into_iter().take(k).map(|(arena, _)| arena),
            budget,
            |arena, budget| self.evacuate_arena(guard, arena, budget),
        )
    }

    /// Runs `pass` in every class made, spending one `budget` across them: each class gets what
    /// the ones before it left. With a `resume` cursor, starts at the class after the one where
    /// the last call's budget ran out, so that every class has its turn first: a class that always
    /// has a budget's worth to move (churn) would otherwise take it all, call after call, and the
    /// classes after it would never be compacted (a review's test: none of 600 moved).
    fn in_every_class(
        &self,
        budget: Budget,
        resume: Option<&AtomicUsize>,
        mut pass: impl FnMut(&Class, Budget) -> Result<CompactReport, CacheError>,
    ) -> Result<CompactReport, CacheError> {
        let made: Vec<(usize, &Class)> = self.made().collect();
        let start = resume.map_or(0, |cursor| cursor.load(Ordering::Relaxed));
        let first = made.iter().position(|&(i, _)| i >= start).unwrap_or(0);
        let mut total = CompactReport::default();
        let mut left = budget;
        for k in 0..made.len() {
            let (number, class) = made[(first + k) % made.len()];
            let report = pass(class, left)?;
            total.merge(report);
            match left.less(&report) {
                Some(rest) => left = rest,
                None => {
                    if let Some(cursor) = resume {
                        cursor.store(number + 1, Ordering::Relaxed);
                    }
                    total.budget_exhausted |= k + 1 < made.len();
                    break;
                }
            }
        }
        Ok(total)
    }

    /// (arena, live bytes of blobs) for every arena holding blobs of this cache, in no order.
    fn live_bytes_by_arena(&self) -> Result<Vec<(usize, usize)>, CacheError> {
        let mut arenas: Vec<(usize, usize)> = Vec::new();
        for (_, class) in self.made() {
            for (arena, bytes) in class.live_bytes_by_arena()? {
                add_to_arena(&mut arenas, arena, bytes);
            }
        }
        Ok(arenas)
    }

    /// Eviction: removes every blob in the arena holding the fewest live bytes, telling `on_evict`.
    /// A cache held to a budget by reclaiming wants [`reclaim_oldest`](Self::reclaim_oldest) (see
    /// [`RelocCache::reclaim`], also for what a panicking `on_evict` does). The report counts the blobs evicted. (The error `RelocCache`'s
    /// reclaims give from inside the cache's own relocation callback cannot arise: blobs move
    /// bytewise, with no callback. The `Result` keeps the two caches' eviction alike.)
    pub fn reclaim(
        &self,
        guard: &Guard,
        on_evict: impl FnMut(BlobHandle, &[u8]),
    ) -> Result<CompactReport, CacheError> {
        let arenas = self.live_bytes_by_arena()?;
        let sparsest = (arenas.iter())
            .min_by_key(|&&(a, bytes)| (bytes, a))
            .map(|&(a, _)| a);
        self.reclaim_arena(guard, sparsest, on_evict)
    }

    /// Eviction of the arena opened earliest among those holding blobs: first in, first out (see
    /// [`RelocCache::reclaim_oldest`]), reported as [`reclaim`](Self::reclaim) does.
    pub fn reclaim_oldest(
        &self,
        guard: &Guard,
        on_evict: impl FnMut(BlobHandle, &[u8]),
    ) -> Result<CompactReport, CacheError> {
        let mut oldest: Option<(u64, usize)> = None;
        for (_, class) in self.made() {
            if let Some(arena) = class.oldest_arena()? {
                oldest = Some(oldest.map_or(arena, |o| o.min(arena)));
            }
        }
        self.reclaim_arena(guard, oldest.map(|(_, arena)| arena), on_evict)
    }

    /// Removes every blob in `arena` (if any), telling `on_evict`.
    fn reclaim_arena(
        &self,
        guard: &Guard,
        arena: Option<usize>,
        mut on_evict: impl FnMut(BlobHandle, &[u8]),
    ) -> Result<CompactReport, CacheError> {
        // Before any blob is read under it.
        guard.check(self.epoch);
        let mut total = CompactReport::default();
        let Some(arena) = arena else {
            return Ok(total);
        };
        for (number, class) in self.made() {
            // The slot's object under `guard`: a blob of this class or, if the slot's run went to
            // another class meanwhile, of that one (whose blob its length tells).
            let is_ours = |addr| {
                // SAFETY: a published blob, read under `guard`, as in `get`.
                let blob = unsafe { blob_at(addr) };
                class_of(LEN_BYTES + blob.len()) == Some(number)
            };
            let report = class.evict_in_arena(guard, arena, is_ours, |handle, addr| {
                // Counted before `on_evict` runs, which may panic: the blob is gone all the same.
                self.counts.removals.add(1);
                // SAFETY: a live blob of this class, valid during the callback.
                on_evict(BlobHandle::of(handle), unsafe { blob_at(addr) });
            });
            total.merge(report?);
        }
        Ok(total)
    }

    /// Frees what the epoch allows, in every class. The classes share one collector, so it is flushed
    /// until none of them sees more blocks come back (once for all, not once per class), and each
    /// class then takes its blocks back.
    ///
    /// # Panics
    /// If `reader` is not a reader of this cache.
    pub fn flush(&self, reader: &Reader<'_>) {
        flush_until_quiet(reader, self.epoch, || {
            self.made().map(|(_, c)| c.waiting()).sum()
        });
        for (_, class) in self.made() {
            drop(class.lock());
        }
    }

    /// Lets other classes reuse the handle-table slots a class no longer needs: every run of slots
    /// a class claimed whose slots are all vacant goes back to the shared table, and the next class
    /// to need slots takes it before the table grows. Returns the number of slots given back. (A
    /// removed blob's slot is vacant once the guard it was removed under is dropped or re-pinned.)
    ///
    /// Otherwise a class keeps its runs for its own next blobs, so when the sizes of the values
    /// drift, the table would hold the sum of every class's peak: an insert after which a class
    /// had to claim slots asks for this for one class that holds over twice the slots it needs,
    /// and a background compactor's every round for all of those. Removals at random leave few
    /// runs wholly vacant (a run is 256 slots); a class that empties gives back all but its last
    /// run. Each class is locked in turn while its wholly vacant runs are found (a class lists its
    /// vacant slots per run, so that is a look at each run with a vacant slot) and unlinked (a
    /// write to each slot that goes): 0.12-0.16 ms for a table of 2.9 million slots, where a pass
    /// over the slots took 10.5-12.4 ms (`benches`' `blob-slots`).
    ///
    /// A background compactor ([`crate::start_compactor`]) does this every round for the classes
    /// where it may pay (see `release_sparse_classes_slots`).
    pub fn release_vacant_slots(&self) -> usize {
        self.give_back_runs(false)
    }

    /// [`release_vacant_slots`](Self::release_vacant_slots) for the classes that claim more than
    /// twice the slots their blobs need and have had a quarter of their claimed slots come back
    /// vacant since they were last scanned: cheap enough to ask for often (a lock and a few
    /// comparisons per class when nothing is due), and it leaves a class that is not sparse the
    /// runs it will fill again.
    pub(crate) fn release_sparse_classes_slots(&self) -> usize {
        self.give_back_runs(true)
    }

    /// Every class's `give_back_vacant_slots(only_if_sparse)`, summed (a class inside one of its
    /// own callbacks, which refuses, gives nothing).
    fn give_back_runs(&self, only_if_sparse: bool) -> usize {
        (self.made())
            .filter_map(|(_, class)| class.give_back_vacant_slots(only_if_sparse).ok().flatten())
            .sum()
    }

    /// Returns the arenas that compaction or eviction emptied to the OS now, rather than after the
    /// decommit delay. Returns the bytes given back (shared by every movable cache in the process).
    /// As for [`RelocCache::release_empty_arenas`], prefer
    /// [`release_aged_arenas`](Self::release_aged_arenas) to give memory back often.
    pub fn release_empty_arenas(&self) -> usize {
        self.count_released(alloc_core::movable::release_free_arenas())
    }

    /// What [`release_empty_arenas`](Self::release_empty_arenas) does, for the movable arenas that
    /// have had free memory for alloc-core's decommit delay (50 ms) only, as the background compactor
    /// does every round (see [`RelocCache::release_aged_arenas`]).
    pub fn release_aged_arenas(&self) -> usize {
        self.count_released(alloc_core::movable::release_aged_arenas())
    }

    fn count_released(&self, released: usize) -> usize {
        self.counts
            .released
            .fetch_add(released as u64, Ordering::Relaxed);
        released
    }

    /// Statistics summed over the size classes (`live_bytes` counts whole blocks).
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            table_committed_bytes: self.table.committed() * size_of::<crate::slot::Slot>(),
            table_bytes: self.table.resident_bytes(),
            ..self.slab_stats()
        }
    }

    /// [`stats`](Self::stats) but the handle table's (whose residency takes a system call).
    pub(crate) fn slab_stats(&self) -> CacheStats {
        let mut total = CacheStats {
            live_objects: 0,
            live_bytes: 0,
            slabs: 0,
            resident_bytes: 0,
            fragmentation: 1.0,
            table_committed_bytes: 0,
            table_bytes: 0,
            counters: Default::default(),
        };
        // The arenas go back for the whole cache (its classes never release any themselves).
        total.counters.released_bytes = self.counts.released.load(Ordering::Relaxed);
        for (_, class) in self.made() {
            let s = class.slab_stats();
            total.live_objects += s.live_objects;
            total.live_bytes += s.live_bytes;
            total.slabs += s.slabs;
            total.resident_bytes += s.resident_bytes;
            total.counters += s.counters;
        }
        total.fragmentation = crate::compact::fragmentation(total.resident_bytes, total.live_bytes);
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan for the background compactor runs only where it may pay: a class that claims more
    /// than twice the slots it needs, with a quarter of its claimed slots back on its free list
    /// since the last scan.
    #[test]
    fn sparse_classes_are_scanned_once_enough_slots_came_back() {
        const N: usize = 20_000;
        let cache = BlobCache::new().unwrap();
        let reader = cache.reader();
        let blobs: Vec<BlobHandle> = (0..N)
            .map(|i| cache.insert(&[i as u8; 100]).unwrap())
            .collect();
        let remove = |range: &mut dyn Iterator<Item = usize>| {
            let guard = reader.pin();
            for i in range {
                assert!(cache.remove(blobs[i], &guard));
            }
            drop(guard);
            cache.flush(&reader);
        };
        assert_eq!(cache.release_sparse_classes_slots(), 0, "not sparse");
        // One blob stays in every run of 256: sparse, and scanned (once), but no run can go.
        remove(&mut (0..N).filter(|i| i % 256 != 0));
        assert_eq!(
            cache.release_sparse_classes_slots(),
            0,
            "a blob in every run"
        );
        // The survivors of runs 0 to 9 go: 10 slots back, too few for another scan yet, though a
        // full one gives the runs back.
        remove(&mut (0..10).map(|run| run * 256));
        assert_eq!(cache.release_sparse_classes_slots(), 0, "too few came back");
        assert_eq!(cache.release_vacant_slots(), 10 * 256);
        // Another 20,000 blobs come (into the vacant slots, then into runs 0 to 9 claimed again)
        // and all but one go: the next scan gives back runs 0 to 9 but the one that blob is in,
        // all a full scan would find.
        let more: Vec<BlobHandle> = (0..N)
            .map(|i| cache.insert(&[i as u8; 100]).unwrap())
            .collect();
        let guard = reader.pin();
        for &handle in &more[1..] {
            assert!(cache.remove(handle, &guard));
        }
        drop(guard);
        cache.flush(&reader);
        assert!(cache.release_sparse_classes_slots() >= 9 * 256);
        assert_eq!(cache.release_vacant_slots(), 0);
        // The class empties: its last 70 slots come back, far fewer than a quarter of its claimed
        // ones, and yet the next scan runs, and gives back every run it still held but the last.
        let guard = reader.pin();
        assert!(cache.remove(more[0], &guard));
        drop(guard);
        remove(&mut (10..N.div_ceil(256)).map(|run| run * 256));
        assert_eq!(cache.stats().live_objects, 0);
        assert!(cache.release_sparse_classes_slots() >= 60 * 256);
        assert_eq!(cache.release_vacant_slots(), 0);
    }

    #[test]
    fn a_full_table_takes_back_vacant_runs_before_refusing_an_insert() {
        let cache = BlobCache::with_table_slots(1).unwrap();
        let slots = crate::table::CHUNK_SLOTS;
        let reader = cache.reader();
        let small: Vec<BlobHandle> = (0..slots)
            .map(|i| cache.insert(&(i as u64).to_ne_bytes()).unwrap())
            .collect();
        assert_eq!(
            cache.insert(&[1; 100]),
            Err(CacheError::OutOfMemory),
            "every slot in use"
        );
        let guard = reader.pin();
        // One blob stays in the first run; the rest go.
        for &handle in &small[1..] {
            assert!(cache.remove(handle, &guard));
        }
        drop(guard);
        let large: Vec<BlobHandle> = (0..slots - 256)
            .map(|i| cache.insert(&[i as u8; 100]).expect("a slot given back"))
            .collect();
        assert_eq!(cache.insert(&[1; 100]), Err(CacheError::OutOfMemory));
        assert_eq!(
            cache.stats().counters.returned_slots,
            (slots - 256) as u64,
            "every run but the first"
        );
        let guard = reader.pin();
        assert_eq!(cache.get(small[0], &guard), Some(&0u64.to_ne_bytes()[..]));
        assert!(large
            .iter()
            .enumerate()
            .all(|(i, &h)| cache.get(h, &guard) == Some(&[i as u8; 100][..])));
        assert!(small[1..].iter().all(|&h| cache.get(h, &guard).is_none()));
    }

    #[test]
    fn classes_increase_to_the_largest_slab_block() {
        for class in 1..NUM_CLASSES {
            assert!(class_bytes(class) > class_bytes(class - 1));
            assert_eq!(class_bytes(class) % 16, 0);
        }
        assert_eq!(class_bytes(NUM_CLASSES - 1), MAX_BLOB_BYTES + LEN_BYTES);
    }

    #[test]
    fn class_of_is_the_smallest_that_holds_and_wastes_little() {
        for bytes in 0..=MAX_BLOB_BYTES + LEN_BYTES {
            let class = class_of(bytes).unwrap();
            let block = class_bytes(class);
            assert!(block >= bytes, "{bytes} B in class {class}");
            assert!(
                class == 0 || class_bytes(class - 1) < bytes,
                "{bytes} B not tight"
            );
            let slack = if block <= 4096 { block / 16 } else { block / 8 };
            assert!(block - bytes.max(1) < slack.max(16), "{bytes} B in {block}");
        }
        assert_eq!(class_of(MAX_BLOB_BYTES + LEN_BYTES + 1), None);
    }
}
