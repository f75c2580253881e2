//! `lru`: the cache workload the compaction literature uses (Mesh, Alaska, Redis's own
//! fragmentation test): a cache with a 100 MB budget and Redis-style approximate LRU eviction.
//!
//! Inserts 700,000 values of 240 B, then 170,000 values of 492 B, under keys 0, 1, 2, .... Before
//! each insert, while the values' bytes plus the new value would pass the budget, it evicts: it
//! samples [`SAMPLES`] random keys and evicts the one with the oldest access time on a coarse clock
//! (one tick per [`CLOCK_TICK_INSERTS`] inserts, as Redis's LRU clock ticks once a second). The
//! coarse clock and the sampling are what make it fragment: evictions land all over the older part
//! of the heap, so when the value size changes, the freed 240 B holes are scattered among
//! survivors. An exact LRU would evict in insertion order and free whole pages.
//!
//! The index is the cache's own: a `HashMap<u64, Entry>` (value, clock, position in the key array)
//! and a key array to sample from. Both are sized up front for the most values the budget can hold,
//! as Redis's incremental rehash avoids a stop-the-world rehash, so the longest pause measures the
//! values' memory management rather than a table resize. Its bytes are overhead the table reports
//! separately: `index_rss`, read from the OS at the end (below), and `index_bytes`, an estimate from
//! the tables' capacities.
//!
//! Variants ([`VARIANTS`]): values boxed on the global allocator (`Box<[u8]>`) under mimalloc,
//! jemalloc, glibc and alloc-core; or values in a relocate-api [`BlobCache`] (handles in the index),
//! with budgeted compaction while inserting (every [`COMPACT_EVERY`] inserts, when the cache's
//! resident / live is above [`COMPACT_ABOVE`], a [`Budget::Bytes`] pass, then `flush`), or without.
//!
//! Reported: `secs` (both insert phases), `max_pause_ns` (the longest single insert, evictions,
//! compaction steps and index updates included; the index's occasional rehash, when deletions' tombstones
//! fill it, dominates it for every variant), `max_value_pause_ns` (the longest time one insert spent in
//! the values' memory: allocating, freeing the evicted, compaction steps), `live` (the values' bytes at the end), `index_bytes`, `rss_end`
//! (after the last insert), then the release step: boxed variants call the allocator's purge; the
//! cache variants compact everything (not `-nocompact`), `flush`, return empty movable arenas and
//! call `alloc_core::purge()`; `rss_release` after it, `release_ns` how long it took.
//! Last, the index's resident size from the OS (`index_rss`): every survivor is checked and freed,
//! the values' memory released again, the resident set read, then the index dropped and the
//! allocator purged; `index_rss` is how far the resident set fell.
//! Every value carries its key in its first 8 bytes and last byte, checked when it is evicted.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use relocate_api::{BlobCache, BlobHandle, Budget, Reader};

use crate::block::note_corrupt;
use crate::peer::Peer;
use crate::report::Report;
use crate::rng::Rng;
use crate::rss::current_rss_bytes;
use crate::workloads::{Ctx, Variant};

/// The row the ratios divide by.
pub(crate) const BASELINE: &str = "boxed-mimalloc";

/// Boxed values under each global allocator, and the relocating cache with and without compaction.
pub(crate) const VARIANTS: &[Variant] = &[
    Variant {
        name: "boxed-mimalloc",
        peer: Peer::Mimalloc,
        about: "Box<[u8]> values in the index, on mimalloc",
    },
    Variant {
        name: "boxed-jemalloc",
        peer: Peer::Jemalloc,
        about: "Box<[u8]> values on jemalloc",
    },
    Variant {
        name: "boxed-system",
        peer: Peer::System,
        about: "Box<[u8]> values on glibc malloc",
    },
    Variant {
        name: "boxed-ours",
        peer: Peer::Ours,
        about: "Box<[u8]> values on alloc-core as global allocator",
    },
    Variant {
        name: "blobcache",
        peer: Peer::Ours,
        about: "values in a relocate-api BlobCache, budgeted compaction while inserting",
    },
    Variant {
        name: "blobcache-nocompact",
        peer: Peer::Ours,
        about: "values in a BlobCache, never compacted (flush and release only)",
    },
];

/// The cache's budget for the values' bytes.
const BUDGET_BYTES: usize = 100_000_000;
/// (values, bytes each) of the two insert phases.
const PHASES: [(usize, usize); 2] = [(700_000, 240), (170_000, 492)];
/// Keys sampled per eviction (Redis's `maxmemory-samples` default).
const SAMPLES: usize = 5;
/// Inserts per tick of the coarse LRU clock.
const CLOCK_TICK_INSERTS: usize = 16 << 10;
/// How often (in inserts) the cache variant considers a compaction step.
const COMPACT_EVERY: usize = 4096;
/// The cache's own resident / live (slab bytes over chunk bytes) above which a step runs.
const COMPACT_ABOVE: f64 = 1.05;
/// What one compaction step may move.
const COMPACT_STEP_BYTES: usize = 4 << 20;

/// A hasher for integer keys: the 64-bit finaliser of MurmurHash3 (keys are consecutive).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        z = (z ^ (z >> 33)).wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        z ^ (z >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 ^= value;
    }
}

/// One indexed value.
struct Entry<V> {
    value: V,
    /// The coarse clock at the last access (here: the insert).
    clock: u32,
    /// Position of the key in the key array.
    pos: u32,
}

/// Where the values live: boxed on the global allocator, or in the relocating cache.
trait Values {
    type Value;
    /// Stores a copy of `bytes`.
    fn store(&mut self, bytes: &[u8]) -> Self::Value;
    /// Checks that `value` still holds `key`'s content, frees it and returns its length.
    fn evict(&mut self, key: u64, value: Self::Value) -> usize;
    /// Called after every insert with the number of inserts so far (compaction steps).
    fn maintain(&mut self, _inserts: usize) {}
    /// Returns what it can to the OS at the end (before the allocator's purge).
    fn release(&mut self) {}
}

/// The content of a value: the key in the first 8 bytes and the last byte, a fixed filler between.
fn fill(scratch: &mut [u8], key: u64) {
    scratch[..8].copy_from_slice(&key.to_le_bytes());
    if let Some(last) = scratch.last_mut() {
        *last = key as u8;
    }
}

fn check(bytes: &[u8], key: u64) {
    let ok =
        bytes.len() >= 8 && bytes[..8] == key.to_le_bytes() && bytes.last() == Some(&(key as u8));
    if !ok {
        note_corrupt(format_args!("lru value of key {key}"));
    }
}

struct Boxed;

impl Values for Boxed {
    type Value = Box<[u8]>;

    fn store(&mut self, bytes: &[u8]) -> Box<[u8]> {
        Box::from(bytes)
    }

    fn evict(&mut self, key: u64, value: Box<[u8]>) -> usize {
        check(&value, key);
        value.len()
    }
}

struct Cached<'c> {
    cache: &'c BlobCache,
    reader: Reader<'c>,
    compact: bool,
    /// The cache's statistics after the release step (before the survivors are checked and freed).
    released: Option<relocate_api::CacheStats>,
}

impl Values for Cached<'_> {
    type Value = BlobHandle;

    fn store(&mut self, bytes: &[u8]) -> BlobHandle {
        self.cache
            .insert(bytes)
            .unwrap_or_else(|error| panic!("BlobCache insert of {} B: {error}", bytes.len()))
    }

    fn evict(&mut self, key: u64, handle: BlobHandle) -> usize {
        let guard = self.reader.pin();
        let len = match self.cache.get(handle, &guard) {
            Some(bytes) => {
                check(bytes, key);
                bytes.len()
            }
            None => {
                note_corrupt(format_args!("lru handle of key {key} does not resolve"));
                0
            }
        };
        self.cache.remove(handle, &guard);
        len
    }

    fn maintain(&mut self, inserts: usize) {
        if !self.compact || inserts % COMPACT_EVERY != 0 {
            return;
        }
        if self.cache.stats().fragmentation <= COMPACT_ABOVE {
            return;
        }
        let guard = self.reader.pin();
        // An error (out of memory) leaves the cache as it was; the next step tries again.
        let _ = self
            .cache
            .compact(&guard, Budget::Bytes(COMPACT_STEP_BYTES));
        drop(guard);
        self.cache.flush(&self.reader);
    }

    fn release(&mut self) {
        if self.compact {
            let guard = self.reader.pin();
            let _ = self.cache.compact(&guard, Budget::Unlimited);
        }
        self.cache.flush(&self.reader);
        self.cache.release_empty_arenas();
        self.released.get_or_insert_with(|| self.cache.stats());
    }
}

pub(crate) fn run(ctx: &Ctx, report: &mut Report) {
    let variant = ctx.variant.map_or(BASELINE, |v| v.name);
    report.set("rss_start", current_rss_bytes());
    match variant {
        "blobcache" | "blobcache-nocompact" => {
            let cache = BlobCache::new().expect("a BlobCache");
            let mut values = Cached {
                cache: &cache,
                reader: cache.reader(),
                compact: variant == "blobcache",
                released: None,
            };
            run_with(ctx, report, &mut values);
            if let Some(stats) = values.released {
                report
                    .set("moved_bytes", stats.counters.moved_bytes)
                    .set("cache_resident", stats.resident_bytes)
                    .set("cache_table", stats.table_bytes);
            }
        }
        _ => run_with(ctx, report, &mut Boxed),
    }
}

fn run_with<V: Values>(ctx: &Ctx, report: &mut Report, values: &mut V) {
    let budget = ctx.scaled(BUDGET_BYTES);
    let smallest = PHASES.iter().map(|&(_, bytes)| bytes).min().unwrap_or(1);
    let most_entries = budget / smallest + 1;
    let mut index: HashMap<u64, Entry<V::Value>, BuildHasherDefault<KeyHasher>> =
        HashMap::with_capacity_and_hasher(most_entries, BuildHasherDefault::default());
    let mut keys: Vec<u64> = Vec::with_capacity(most_entries);
    let mut scratch = vec![0xA5u8; PHASES.iter().map(|&(_, b)| b).max().unwrap_or(8)];
    let mut rng = Rng::new(0x1_2C0);
    let mut used = 0usize;
    let mut inserts = 0usize;
    let mut max_pause_ns = 0u64;
    let mut max_value_pause_ns = 0u64;
    let mut evicted = 0usize;

    let start = Instant::now();
    for &(count, bytes) in &PHASES {
        for _ in 0..ctx.scaled(count) {
            let began = Instant::now();
            let mut in_values = std::time::Duration::ZERO;
            while used + bytes > budget && !keys.is_empty() {
                // Redis's approximation: the oldest of a few random keys.
                let mut victim = (0usize, u32::MAX);
                for _ in 0..SAMPLES {
                    let pos = rng.below(keys.len());
                    let clock = index.get(&keys[pos]).map_or(u32::MAX, |e| e.clock);
                    if clock < victim.1 {
                        victim = (pos, clock);
                    }
                }
                let key = keys.swap_remove(victim.0);
                if let Some(&moved) = keys.get(victim.0) {
                    if let Some(entry) = index.get_mut(&moved) {
                        entry.pos = victim.0 as u32;
                    }
                }
                let Some(entry) = index.remove(&key) else {
                    note_corrupt(format_args!("lru key {key} missing from the index"));
                    continue;
                };
                let evicting = Instant::now();
                used -= values.evict(key, entry.value);
                in_values += evicting.elapsed();
                evicted += 1;
            }
            let key = inserts as u64;
            fill(&mut scratch[..bytes], key);
            let storing = Instant::now();
            let value = values.store(&scratch[..bytes]);
            in_values += storing.elapsed();
            index.insert(
                key,
                Entry {
                    value,
                    clock: (inserts / CLOCK_TICK_INSERTS) as u32,
                    pos: keys.len() as u32,
                },
            );
            keys.push(key);
            used += bytes;
            inserts += 1;
            let maintaining = Instant::now();
            values.maintain(inserts);
            in_values += maintaining.elapsed();
            max_pause_ns = max_pause_ns.max(began.elapsed().as_nanos() as u64);
            max_value_pause_ns = max_value_pause_ns.max(in_values.as_nanos() as u64);
        }
    }
    let secs = start.elapsed().as_secs_f64();

    // hashbrown: `capacity` is 7/8 of the buckets (less after deletions left tombstones); each
    // bucket holds one (key, entry) and one control byte, plus one group of trailing control bytes.
    let buckets = (index.capacity() * 8 / 7).next_power_of_two();
    let index_bytes = buckets * (std::mem::size_of::<(u64, Entry<V::Value>)>() + 1)
        + 16
        + keys.capacity() * std::mem::size_of::<u64>();
    report
        .set("secs", secs)
        .set("ops", inserts + evicted)
        .set("evicted", evicted)
        .set("max_pause_ns", max_pause_ns)
        .set("max_value_pause_ns", max_value_pause_ns)
        .set("live", used)
        .set("index_bytes", index_bytes)
        .set("rss_end", current_rss_bytes());

    let released = Instant::now();
    values.release();
    ctx.release(report);
    report.set("release_ns", released.elapsed().as_nanos());

    // Check every survivor's content on the way out (untimed), then measure what the index itself
    // holds resident: the fall of the resident set when it goes, with the values already gone.
    for (key, entry) in index.drain() {
        values.evict(key, entry.value);
    }
    values.release();
    ctx.peer.purge();
    let with_index = current_rss_bytes();
    drop(index);
    drop(keys);
    ctx.peer.purge();
    report.set("index_rss", with_index.saturating_sub(current_rss_bytes()));
}
