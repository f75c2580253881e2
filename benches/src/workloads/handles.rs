//! `handles`: handle-based object stores side by side with raw `Box` pointers, for 1M objects of
//! 64 B (`[u64; 8]`).
//!
//! Every structure ([`VARIANTS`]) runs the same phases on the same random choices, and its figures
//! are quoted as ratios to `box-mimalloc` (raw `Box<[u64; 8]>` pointers on mimalloc) of the same
//! repetition:
//!
//! 1. insert the objects (`insert_mops`); object `i` holds `[next(i), i, i, ...]`, where `next` is one
//!    random cycle through all objects, and its key (handle, slotmap key, slab index or pointer) goes
//!    to `keys[i]`;
//! 2. independent gets: [`GETS`] lookups of `keys[i]` for random `i` (`get_ns` per get), in runs of
//!    [`REPIN_EVERY`] between which the relocating cache re-pins its guard (every phase reads in such
//!    runs); for the relocating cache the same gets again through a `View` taken at each re-pin
//!    (`view_get_ns`: the way to write a loop of gets under one guard, see `RelocCache::view`); then the
//!    same number again as multi-gets of [`MULTI_GET`] random keys at a time (`multi_get_ns` per
//!    get): the relocating cache answers each with one `get_many`, which overlaps the lookups' cache
//!    misses; every other structure (the raw pointers too) with a plain loop of gets;
//! 3. a dependent chase: follow `next` from object 0 for [`CHASE_STEPS`] steps, each step a get of
//!    `keys[next]` (`chase_ns` per get);
//! 4. two reader threads doing independent gets at once (`readers2_mgets`, total gets per second);
//!    for the relocating cache, again through views (`readers2_view_mgets`);
//! 5. remove a random 90 % in random order, the first half one at a time (`remove_mops`), the second
//!    half as multi-removes of [`MULTI_GET`] keys (`multi_remove_mops`: the relocating cache answers
//!    each with one `remove_many`, which overlaps the removals' cache misses; every other structure
//!    with a plain loop of removals); then let the structure and the allocator give back what they
//!    can, and read the resident set (`rss_removed` over `live`, the survivors' bytes);
//! 6. the idle p99: a reader times batches of [`BATCH`] random gets of survivors (`p99_idle_ns`, per
//!    get); and for the relocating cache only:
//! 7. footprint compaction, timed on one core (`compact_gbs` = moved bytes / compaction time), then
//!    `flush`, `release_empty_arenas` and the peer's purge (`alloc_core::purge()` in `wl-ours`,
//!    `mi_collect` in `wl-mimalloc`) (`rss_compacted`);
//!    then the idle p99 again on the compacted layout (`p99_compacted_idle_ns`), whose objects
//!    mostly lie away from their home blocks;
//! 8. the p99 while compacting: the same reader while another thread evacuates the sparsest arena
//!    and flushes, over and over, giving memory back as the background compactor does, on
//!    alloc-core's decommit delay (`release_aged_arenas`: `p99_compact_ns`; `moved_reading` bytes
//!    moved meanwhile); then again giving each emptied arena back at once (`release_empty_arenas`:
//!    `p99_compact_forced_ns`, `moved_reading_forced`). Each arena given back at once costs the
//!    reader a TLB shootdown (an interrupt), which the second figure shows.
//!
//! Resident figures are `/proc/self/statm` minus the resident set before the first insert, which
//! already holds the key array and the random choices, so they count the structure and its
//! allocator only. For the relocating cache, `table_bytes` is its handle table (one 8-byte slot per
//! handle live at once at most; the table never shrinks), so the table can show the slabs' share alone.
//! Every get checks that the object it reached carries the expected index.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use relocate_api::{Budget, Guard, Handle, Reader, RelocCache};
use slotmap::{DefaultKey, DenseSlotMap, Key, KeyData, SlotMap};

use crate::block::note_corrupt;
use crate::peer::Peer;
use crate::report::Report;
use crate::rng::Rng;
use crate::rss::current_rss_bytes;
use crate::workloads::{Ctx, Variant};

/// The row the ratios divide by.
pub(crate) const BASELINE: &str = "box-mimalloc";

/// The structures compared. The handle maps run on mimalloc, like the baseline, so only the
/// structure differs; the relocating cache runs with alloc-core as global allocator (`reloc`) and
/// with mimalloc (`reloc-mimalloc`): its objects live on alloc-core's movable slabs in any binary,
/// while the benchmark's own arrays (keys, random choices) come from the global allocator, and
/// mimalloc backs them with huge pages where alloc-core does not.
pub(crate) const VARIANTS: &[Variant] = &[
    Variant {
        name: "box-mimalloc",
        peer: Peer::Mimalloc,
        about: "raw Box<[u64; 8]> pointers on mimalloc (the baseline)",
    },
    Variant {
        name: "box-jemalloc",
        peer: Peer::Jemalloc,
        about: "raw Box<[u64; 8]> pointers on jemalloc",
    },
    Variant {
        name: "box-ours",
        peer: Peer::Ours,
        about: "raw Box<[u64; 8]> pointers on alloc-core",
    },
    Variant {
        name: "reloc",
        peer: Peer::Ours,
        about: "relocate-api RelocCache<[u64; 8]>, guard re-pinned every 256 gets",
    },
    Variant {
        name: "reloc-mimalloc",
        peer: Peer::Mimalloc,
        about: "the same RelocCache in the mimalloc binary: only the structure differs from the baseline",
    },
    Variant {
        name: "slotmap",
        peer: Peer::Mimalloc,
        about: "slotmap::SlotMap on mimalloc",
    },
    Variant {
        name: "denseslotmap",
        peer: Peer::Mimalloc,
        about: "slotmap::DenseSlotMap on mimalloc",
    },
    Variant {
        name: "sharded-slab",
        peer: Peer::Mimalloc,
        about: "sharded_slab::Slab on mimalloc (get takes a ref-counted guard)",
    },
];

/// Objects in a full run.
const OBJECTS: usize = 1_000_000;
/// Independent gets.
const GETS: usize = 4_000_000;
/// Steps of the dependent chase.
const CHASE_STEPS: usize = 2_000_000;
/// Keys per multi-get.
const MULTI_GET: usize = 256;
/// Gets of each of the two concurrent readers.
const READER_GETS: usize = 2_000_000;
/// Of every hundred objects, how many are removed.
const REMOVED_PERCENT: usize = 90;
/// Gets per timed batch of the p99 reader.
const BATCH: usize = 64;
/// Batches the p99 reader times.
const BATCHES: usize = 20_000;
/// Gets between two re-pins of the relocating cache's reader guard.
const REPIN_EVERY: u32 = 256;

type Obj = [u64; 8];

/// What each structure offers the phases: a per-thread read session, gets, bulk insert and removal.
trait Structure: Sync {
    /// Per-thread state for reading (the relocating cache's pinned guard).
    type Session<'a>
    where
        Self: 'a;
    fn session(&self) -> Self::Session<'_>;
    /// Called by every phase between runs of at most [`REPIN_EVERY`] gets: the relocating cache
    /// re-pins its reader's guard there, so that the epoch (and retired memory) can move on.
    fn repin(&self, _session: &mut Self::Session<'_>) {}
    /// Words 0 and 1 of the object `key` names, if it is there.
    fn get(&self, session: &mut Self::Session<'_>, key: u64) -> Option<(u64, u64)>;
    /// `get` of every key of `keys`, in order, handed to `found` with its position.
    fn get_each(
        &self,
        session: &mut Self::Session<'_>,
        keys: &[u64],
        found: &mut dyn FnMut(usize, Option<(u64, u64)>),
    ) {
        for (i, &key) in keys.iter().enumerate() {
            found(i, self.get(session, key));
        }
    }
    /// [`random_gets`] through another single-get path the structure offers for loops of gets, if
    /// any (the relocating cache's `View`); false if it has none.
    fn view_gets(&self, _keys: &[u64], _among: &[u32], _gets: usize, _seed: u64) -> bool {
        false
    }
    /// Inserts `make(i)` for every `i`, writing its key to `keys[i]`.
    fn insert_all(&mut self, keys: &mut [u64], make: &dyn Fn(usize) -> Obj);
    /// Removes the objects `keys[i]` for `i` in `order`.
    fn remove_all(&mut self, keys: &[u64], order: &[u32]);
    /// `remove_all`, in batches of up to [`MULTI_GET`] keys where the structure can remove a batch.
    fn remove_batched(&mut self, keys: &[u64], order: &[u32]) {
        self.remove_all(keys, order);
    }
    /// Returns what removal left behind to the allocator (the cache: flush and release arenas).
    fn settle(&mut self) {}
}

/// Raw pointers: the key is the `Box`'s address.
struct Boxes;

impl Structure for Boxes {
    type Session<'a> = ();
    fn session(&self) {}

    #[inline]
    fn get(&self, _: &mut (), key: u64) -> Option<(u64, u64)> {
        // SAFETY: every key the phases pass is a pointer from `Box::into_raw` in `insert_all` that
        // `remove_all` has not freed (gets only name live objects).
        let obj = unsafe { &*(key as *const Obj) };
        Some((obj[0], obj[1]))
    }

    fn insert_all(&mut self, keys: &mut [u64], make: &dyn Fn(usize) -> Obj) {
        for (i, key) in keys.iter_mut().enumerate() {
            *key = Box::into_raw(Box::new(make(i))) as u64;
        }
    }

    fn remove_all(&mut self, keys: &[u64], order: &[u32]) {
        for &i in order {
            // SAFETY: `keys[i]` came from `Box::into_raw` and each index is removed once.
            drop(unsafe { Box::from_raw(keys[i as usize] as *mut Obj) });
        }
    }
}

struct Reloc {
    cache: RelocCache<Obj>,
}

/// A reader of the relocating cache: its guard is re-pinned between runs of gets
/// ([`Structure::repin`]).
struct RelocSession<'a> {
    guard: Guard<'a>,
    _reader: Reader<'a>,
}

impl Structure for Reloc {
    type Session<'a> = RelocSession<'a>;

    fn session(&self) -> RelocSession<'_> {
        let reader = self.cache.reader();
        RelocSession {
            guard: reader.pin(),
            _reader: reader,
        }
    }

    fn repin(&self, session: &mut RelocSession<'_>) {
        session.guard.repin();
    }

    #[inline]
    fn get(&self, session: &mut RelocSession<'_>, key: u64) -> Option<(u64, u64)> {
        let obj = self.cache.get(Handle::from_bits(key), &session.guard)?;
        Some((obj[0], obj[1]))
    }

    fn get_each(
        &self,
        session: &mut RelocSession<'_>,
        keys: &[u64],
        found: &mut dyn FnMut(usize, Option<(u64, u64)>),
    ) {
        session.guard.repin();
        let mut handles = [Handle::from_bits(0); MULTI_GET];
        for (handle, &key) in handles.iter_mut().zip(keys) {
            *handle = Handle::from_bits(key);
        }
        let handles = &handles[..keys.len().min(MULTI_GET)];
        self.cache.get_many(handles, &session.guard, |i, obj| {
            found(i, obj.map(|obj| (obj[0], obj[1])));
        });
    }

    /// The same gets as `random_gets`, in the same runs between re-pins, each run through a `View`.
    fn view_gets(&self, keys: &[u64], among: &[u32], gets: usize, seed: u64) -> bool {
        let reader = self.cache.reader();
        let mut guard = reader.pin();
        let mut rng = Rng::new(seed);
        for run in runs(gets) {
            guard.repin();
            let view = self.cache.view(&guard);
            for _ in 0..run {
                let i = among[rng.below(among.len())] as usize;
                let obj = view.get(Handle::from_bits(keys[i]));
                check(obj.map(|obj| (obj[0], obj[1])), i);
            }
        }
        true
    }

    fn insert_all(&mut self, keys: &mut [u64], make: &dyn Fn(usize) -> Obj) {
        for (i, key) in keys.iter_mut().enumerate() {
            *key = match self.cache.insert(make(i)) {
                Ok(handle) => handle.to_bits(),
                Err((_, error)) => panic!("RelocCache insert: {error}"),
            };
        }
    }

    fn remove_all(&mut self, keys: &[u64], order: &[u32]) {
        let reader = self.cache.reader();
        let mut guard = reader.pin();
        for (n, &i) in order.iter().enumerate() {
            if n % REPIN_EVERY as usize == 0 {
                guard.repin();
            }
            if !self
                .cache
                .remove(Handle::from_bits(keys[i as usize]), &guard)
            {
                note_corrupt(format_args!("reloc remove of object {i} found nothing"));
            }
        }
    }

    fn remove_batched(&mut self, keys: &[u64], order: &[u32]) {
        let reader = self.cache.reader();
        let mut guard = reader.pin();
        let mut handles = [Handle::from_bits(0); MULTI_GET];
        for batch in order.chunks(MULTI_GET) {
            guard.repin();
            for (handle, &i) in handles.iter_mut().zip(batch) {
                *handle = Handle::from_bits(keys[i as usize]);
            }
            let removed = self.cache.remove_many(&handles[..batch.len()], &guard);
            if removed != batch.len() {
                note_corrupt(format_args!(
                    "reloc remove_many removed {removed} of {}",
                    batch.len()
                ));
            }
        }
    }

    fn settle(&mut self) {
        let reader = self.cache.reader();
        self.cache.flush(&reader);
        self.cache.release_empty_arenas();
    }
}

/// `SlotMap` and `DenseSlotMap` share their API.
macro_rules! slot_map {
    ($name:ident, $map:ident) => {
        struct $name($map<DefaultKey, Obj>);

        impl Structure for $name {
            type Session<'a> = ();
            fn session(&self) {}

            #[inline]
            fn get(&self, _: &mut (), key: u64) -> Option<(u64, u64)> {
                let obj = self.0.get(DefaultKey::from(KeyData::from_ffi(key)))?;
                Some((obj[0], obj[1]))
            }

            fn insert_all(&mut self, keys: &mut [u64], make: &dyn Fn(usize) -> Obj) {
                for (i, key) in keys.iter_mut().enumerate() {
                    *key = self.0.insert(make(i)).data().as_ffi();
                }
            }

            fn remove_all(&mut self, keys: &[u64], order: &[u32]) {
                for &i in order {
                    let key = DefaultKey::from(KeyData::from_ffi(keys[i as usize]));
                    if self.0.remove(key).is_none() {
                        note_corrupt(format_args!("slotmap remove of object {i} found nothing"));
                    }
                }
            }
        }
    };
}

slot_map!(Slots, SlotMap);
slot_map!(DenseSlots, DenseSlotMap);

struct Sharded(sharded_slab::Slab<Obj>);

impl Structure for Sharded {
    type Session<'a> = ();
    fn session(&self) {}

    #[inline]
    fn get(&self, _: &mut (), key: u64) -> Option<(u64, u64)> {
        let obj = self.0.get(key as usize)?;
        Some((obj[0], obj[1]))
    }

    fn insert_all(&mut self, keys: &mut [u64], make: &dyn Fn(usize) -> Obj) {
        for (i, key) in keys.iter_mut().enumerate() {
            *key = self.0.insert(make(i)).expect("sharded-slab has room") as u64;
        }
    }

    fn remove_all(&mut self, keys: &[u64], order: &[u32]) {
        for &i in order {
            if !self.0.remove(keys[i as usize] as usize) {
                note_corrupt(format_args!(
                    "sharded-slab remove of object {i} found nothing"
                ));
            }
        }
    }
}

pub(crate) fn run(ctx: &Ctx, report: &mut Report) {
    match ctx.variant.map_or(BASELINE, |v| v.name) {
        "reloc" | "reloc-mimalloc" => {
            let cache = RelocCache::new().expect("a RelocCache of [u64; 8]");
            let mut reloc = Reloc { cache };
            let mut plan = Plan::new(ctx);
            phases(ctx, report, &mut plan, &mut reloc);
            compaction(ctx, report, &plan, &reloc);
        }
        "slotmap" => phases(ctx, report, &mut Plan::new(ctx), &mut Slots(SlotMap::new())),
        "denseslotmap" => phases(
            ctx,
            report,
            &mut Plan::new(ctx),
            &mut DenseSlots(DenseSlotMap::new()),
        ),
        "sharded-slab" => phases(
            ctx,
            report,
            &mut Plan::new(ctx),
            &mut Sharded(sharded_slab::Slab::new()),
        ),
        _ => phases(ctx, report, &mut Plan::new(ctx), &mut Boxes),
    }
}

/// The random choices every structure shares and the key array, made before the first insert.
struct Plan {
    objects: usize,
    /// `next[i]`: one random cycle through every object (Sattolo's algorithm).
    next: Vec<u32>,
    /// A random permutation: the first 90 % are removed in this order, the rest survive.
    order: Vec<u32>,
    /// Every index, `0..objects`.
    all: Vec<u32>,
    /// `keys[i]`: the key of object `i` in the structure.
    keys: Vec<u64>,
    /// The resident set with all of the above in place, before the first insert.
    rss_base: usize,
}

impl Plan {
    fn new(ctx: &Ctx) -> Self {
        let objects = ctx.scaled(OBJECTS);
        let mut rng = Rng::new(0x4A4D);
        let mut next: Vec<u32> = (0..objects as u32).collect();
        for i in (1..objects).rev() {
            let j = rng.below(i);
            next.swap(i, j);
        }
        let mut order: Vec<u32> = (0..objects as u32).collect();
        rng.shuffle(&mut order);
        // `vec![0; n]` may come zeroed and untouched from the OS: fill it, so that it is resident
        // before the base is read.
        let keys = vec![u64::MAX; objects];
        Self {
            objects,
            next,
            order,
            all: (0..objects as u32).collect(),
            keys,
            rss_base: current_rss_bytes(),
        }
    }

    fn removed(&self) -> &[u32] {
        &self.order[..self.objects * REMOVED_PERCENT / 100]
    }

    fn survivors(&self) -> &[u32] {
        &self.order[self.objects * REMOVED_PERCENT / 100..]
    }

    fn resident(&self) -> usize {
        current_rss_bytes().saturating_sub(self.rss_base)
    }
}

fn per_get_ns(elapsed: Duration, gets: usize) -> f64 {
    elapsed.as_nanos() as f64 / gets.max(1) as f64
}

fn check(found: Option<(u64, u64)>, index: usize) -> Option<u64> {
    match found {
        Some((next, tag)) if tag == index as u64 => Some(next),
        _ => {
            note_corrupt(format_args!("handles object {index}: {found:?}"));
            None
        }
    }
}

/// `total` gets as runs of [`REPIN_EVERY`] (the last one shorter).
fn runs(total: usize) -> impl Iterator<Item = usize> {
    let run = REPIN_EVERY as usize;
    (0..total.div_ceil(run)).map(move |k| run.min(total - k * run))
}

/// `gets` independent gets of random objects of `among` (indices into `keys`).
fn random_gets<S: Structure>(s: &S, keys: &[u64], among: &[u32], gets: usize, seed: u64) {
    let mut session = s.session();
    let mut rng = Rng::new(seed);
    for run in runs(gets) {
        s.repin(&mut session);
        for _ in 0..run {
            let i = among[rng.below(among.len())] as usize;
            check(s.get(&mut session, keys[i]), i);
        }
    }
}

/// `gets` gets of random objects of `among`, as multi-gets of [`MULTI_GET`] keys.
fn multi_gets<S: Structure>(s: &S, keys: &[u64], among: &[u32], gets: usize, seed: u64) {
    let mut session = s.session();
    let mut rng = Rng::new(seed);
    let mut picked = [0usize; MULTI_GET];
    let mut batch = [0u64; MULTI_GET];
    for _ in 0..gets / MULTI_GET {
        for (i, key) in picked.iter_mut().zip(batch.iter_mut()) {
            *i = among[rng.below(among.len())] as usize;
            *key = keys[*i];
        }
        s.get_each(&mut session, &batch, &mut |at, found| {
            check(found, picked[at]);
        });
    }
}

/// The p99 over `BATCHES` timed batches of random gets of `among`, in ns per get. The reader
/// re-pins every [`REPIN_EVERY`] gets, at the start of a batch, inside its timing.
fn p99_ns<S: Structure>(s: &S, keys: &[u64], among: &[u32], batches: usize, seed: u64) -> f64 {
    let mut session = s.session();
    let mut rng = Rng::new(seed);
    let mut times: Vec<u64> = Vec::with_capacity(batches);
    let repin_every = (REPIN_EVERY as usize / BATCH).max(1);
    for batch in 0..batches {
        let began = Instant::now();
        if batch % repin_every == 0 {
            s.repin(&mut session);
        }
        for _ in 0..BATCH {
            let i = among[rng.below(among.len())] as usize;
            check(s.get(&mut session, keys[i]), i);
        }
        times.push(began.elapsed().as_nanos() as u64);
    }
    times.sort_unstable();
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    p99 as f64 / BATCH as f64
}

/// Phases 1–6 (see the module doc); fills the report and leaves the survivors in `s`.
fn phases<S: Structure>(ctx: &Ctx, report: &mut Report, plan: &mut Plan, s: &mut S) {
    let n = plan.objects;
    let mut keys = std::mem::take(&mut plan.keys);
    let next = &plan.next;
    let make = |i: usize| -> Obj {
        let i64 = i as u64;
        [u64::from(next[i]), i64, i64, i64, i64, i64, i64, i64]
    };
    let began = Instant::now();
    s.insert_all(&mut keys, &make);
    let insert = began.elapsed();
    plan.keys = keys;
    let plan: &Plan = plan;
    let (keys, all) = (&plan.keys, &plan.all);
    report
        .set("insert_mops", n as f64 / insert.as_secs_f64() / 1e6)
        .set("rss_full", plan.resident())
        .set("live_full", n * std::mem::size_of::<Obj>());

    let gets = ctx.scaled(GETS);
    let began = Instant::now();
    random_gets(s, keys, all, gets, 1);
    let get = began.elapsed();
    report.set("get_ns", per_get_ns(get, gets));

    let began = Instant::now();
    if s.view_gets(keys, all, gets, 5) {
        report.set("view_get_ns", per_get_ns(began.elapsed(), gets));
    }

    let began = Instant::now();
    multi_gets(s, keys, all, gets, 4);
    let multi = began.elapsed();
    report.set(
        "multi_get_ns",
        per_get_ns(multi, gets / MULTI_GET * MULTI_GET),
    );

    let steps = ctx.scaled(CHASE_STEPS);
    let began = Instant::now();
    {
        let mut session = s.session();
        let mut at = 0usize;
        for run in runs(steps) {
            s.repin(&mut session);
            for _ in 0..run {
                at = check(s.get(&mut session, keys[at]), at).unwrap_or(0) as usize;
            }
        }
    }
    let chase = began.elapsed();
    report.set("chase_ns", per_get_ns(chase, steps));

    let reader_gets = ctx.scaled(READER_GETS);
    let began = Instant::now();
    {
        let shared: &S = s;
        std::thread::scope(|scope| {
            for seed in [2, 3] {
                scope.spawn(move || random_gets(shared, keys, all, reader_gets, seed));
            }
        });
    }
    let two = began.elapsed();
    report.set(
        "readers2_mgets",
        (2 * reader_gets) as f64 / two.as_secs_f64() / 1e6,
    );

    let began = Instant::now();
    let mut views = true;
    {
        let shared: &S = s;
        std::thread::scope(|scope| {
            let readers = [2, 3]
                .map(|seed| scope.spawn(move || shared.view_gets(keys, all, reader_gets, seed)));
            for reader in readers {
                views &= reader.join().unwrap_or(false);
            }
        });
    }
    if views {
        let two = began.elapsed();
        report.set(
            "readers2_view_mgets",
            (2 * reader_gets) as f64 / two.as_secs_f64() / 1e6,
        );
    }

    let removed = plan.removed();
    let (singly, batched) = removed.split_at(removed.len() / 2);
    let began = Instant::now();
    s.remove_all(keys, singly);
    let remove_singly = began.elapsed();
    let began = Instant::now();
    s.remove_batched(keys, batched);
    let remove_batched = began.elapsed();
    let remove = remove_singly + remove_batched;
    s.settle();
    ctx.peer.purge();
    let live = plan.survivors().len() * std::mem::size_of::<Obj>();
    report
        .set(
            "remove_mops",
            singly.len() as f64 / remove_singly.as_secs_f64() / 1e6,
        )
        .set(
            "multi_remove_mops",
            batched.len() as f64 / remove_batched.as_secs_f64() / 1e6,
        )
        .set("live", live)
        .set("rss_removed", plan.resident());

    let batches = ctx.scaled(BATCHES);
    report.set("p99_idle_ns", p99_ns(s, keys, plan.survivors(), batches, 4));
    let total = insert + get + chase + two + remove;
    report
        .set("secs", total.as_secs_f64())
        .set("ops", n + gets + steps + 2 * reader_gets + removed.len());
}

/// Phases 7 and 8, the relocating cache only.
fn compaction(ctx: &Ctx, report: &mut Report, plan: &Plan, reloc: &Reloc) {
    let cache = &reloc.cache;
    let reader = cache.reader();
    let guard = reader.pin();
    let began = Instant::now();
    let compacted = cache.compact(&guard, Budget::Unlimited);
    let secs = began.elapsed().as_secs_f64();
    drop(guard);
    let moved = compacted.map_or(0, |r| r.moved_bytes);
    cache.flush(&reader);
    cache.release_empty_arenas();
    ctx.peer.purge();
    report
        .set("compact_gbs", moved as f64 / secs / 1e9)
        .set("compact_moved", moved)
        .set("rss_compacted", plan.resident())
        .set("table_bytes", cache.stats().table_bytes);

    // The idle p99 again, on the compacted layout that phase 8 reads: most survivors now lie away
    // from their home blocks, so a get waits for the slot before the object (see `home`). Phase 8's
    // ratio to this figure is what a running compactor costs readers; to `p99_idle_ns`, that and the
    // move away from home together.
    let batches = ctx.scaled(BATCHES);
    report.set(
        "p99_compacted_idle_ns",
        p99_ns(reloc, &plan.keys, plan.survivors(), batches, 4),
    );

    // Phase 8: a reader times batches while another thread evacuates arenas without pause, giving
    // memory back on alloc-core's delay (as the background compactor does), then at once.
    let batches = ctx.scaled(BATCHES);
    let (p99, moved) = p99_while_evacuating(reloc, plan, batches, |cache| {
        cache.release_aged_arenas();
    });
    report
        .set("p99_compact_ns", p99)
        .set("moved_reading", moved);
    let (p99, moved) = p99_while_evacuating(reloc, plan, batches, |cache| {
        cache.release_empty_arenas();
    });
    report
        .set("p99_compact_forced_ns", p99)
        .set("moved_reading_forced", moved);
}

/// The p99 of `batches` timed batches of gets of the survivors while another thread evacuates the
/// sparsest arena over and over, each time flushing and then calling `release`; with the bytes that
/// thread moved meanwhile.
fn p99_while_evacuating(
    reloc: &Reloc,
    plan: &Plan,
    batches: usize,
    release: impl Fn(&RelocCache<Obj>) + Sync,
) -> (f64, usize) {
    let cache = &reloc.cache;
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let compactor = scope.spawn(|| {
            let reader = cache.reader();
            let mut moved = 0usize;
            while !done.load(Ordering::Relaxed) {
                let guard = reader.pin();
                if let Ok(r) = cache.evacuate_sparsest(&guard, 1, Budget::Unlimited) {
                    moved += r.moved_bytes;
                }
                drop(guard);
                cache.flush(&reader);
                release(cache);
            }
            moved
        });
        // Let the compactor start before timing.
        std::thread::sleep(Duration::from_millis(5));
        let p99 = p99_ns(reloc, &plan.keys, plan.survivors(), batches, 4);
        done.store(true, Ordering::Relaxed);
        (p99, compactor.join().unwrap_or(0))
    })
}
