//! Statistics: process-wide counters kept on slow paths only, and a snapshot that walks the arenas.
//!
//! The fast paths keep no counters. `allocated_bytes` in a snapshot is computed from the slabs' `used`
//! counts (which include blocks freed by other threads but not yet collected by the owner) plus the
//! large and huge counters, so it costs one walk over the arenas' descriptor arrays under the pool
//! lock: microseconds for a few hundred arenas, cheap enough for a metrics endpoint.

use crate::size_class::{CLASSES, NUM_CLASSES};
use crate::slab::KIND_SMALL;
use core::sync::atomic::{AtomicUsize, Ordering};

static MAPPED: AtomicUsize = AtomicUsize::new(0);
static COMMITTED: AtomicUsize = AtomicUsize::new(0);
static LARGE_BYTES: AtomicUsize = AtomicUsize::new(0);
static HUGE_BYTES: AtomicUsize = AtomicUsize::new(0);
static HUGE_REQUESTED: AtomicUsize = AtomicUsize::new(0);
static HUGE_CACHED: AtomicUsize = AtomicUsize::new(0);
static SLABS_CREATED: [AtomicUsize; NUM_CLASSES] = [const { AtomicUsize::new(0) }; NUM_CLASSES];

pub(crate) fn add_mapped(bytes: usize) {
    MAPPED.fetch_add(bytes, Ordering::Relaxed);
}
pub(crate) fn sub_mapped(bytes: usize) {
    MAPPED.fetch_sub(bytes, Ordering::Relaxed);
}
pub(crate) fn add_committed(bytes: usize) {
    COMMITTED.fetch_add(bytes, Ordering::Relaxed);
}
pub(crate) fn sub_committed(bytes: usize) {
    COMMITTED.fetch_sub(bytes, Ordering::Relaxed);
}
pub(crate) fn add_large(bytes: usize) {
    LARGE_BYTES.fetch_add(bytes, Ordering::Relaxed);
}
pub(crate) fn sub_large(bytes: usize) {
    LARGE_BYTES.fetch_sub(bytes, Ordering::Relaxed);
}
pub(crate) fn add_huge(bytes: usize) {
    HUGE_BYTES.fetch_add(bytes, Ordering::Relaxed);
    add_mapped(bytes);
    add_committed(bytes);
}
pub(crate) fn sub_huge(bytes: usize) {
    HUGE_BYTES.fetch_sub(bytes, Ordering::Relaxed);
    sub_mapped(bytes);
    sub_committed(bytes);
}
/// A freed huge mapping of `bytes` was kept for reuse (still mapped and resident).
pub(crate) fn cache_huge(bytes: usize) {
    HUGE_BYTES.fetch_sub(bytes, Ordering::Relaxed);
    HUGE_CACHED.fetch_add(bytes, Ordering::Relaxed);
}
/// A kept huge mapping of `bytes` left the cache (to be reused or unmapped).
pub(crate) fn uncache_huge(bytes: usize) {
    HUGE_CACHED.fetch_sub(bytes, Ordering::Relaxed);
}
/// A huge mapping of `bytes` that left the cache is an allocation's again.
pub(crate) fn reuse_huge(bytes: usize) {
    HUGE_BYTES.fetch_add(bytes, Ordering::Relaxed);
}
/// A huge mapping of `bytes` that left the cache was unmapped.
pub(crate) fn unmap_kept_huge(bytes: usize) {
    sub_mapped(bytes);
    sub_committed(bytes);
}
/// A huge allocation's requested size changed from `old` bytes to `new` (0 for none).
pub(crate) fn resize_huge_request(old: usize, new: usize) {
    HUGE_REQUESTED.fetch_add(new, Ordering::Relaxed);
    HUGE_REQUESTED.fetch_sub(old, Ordering::Relaxed);
}
pub(crate) fn slab_created(class: usize) {
    SLABS_CREATED[class].fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn slab_released(_class: usize) {}

/// Per size class.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClassStats {
    /// The class's block size. Movable slabs, whose blocks are of their cache's exact size, count
    /// under the smallest class that holds their blocks, or the largest class for blocks larger
    /// than any (up to `movable::MAX_MOVABLE_BYTES`): `used_blocks × block_bytes` is an estimate
    /// of the class's bytes, `Stats::small_allocated_bytes` the exact total.
    pub block_bytes: usize,
    /// Slabs of this class that exist now.
    pub slabs: usize,
    /// Blocks handed out (including remote frees not yet collected).
    pub used_blocks: usize,
    /// Slabs of this class made since the process started.
    pub slabs_created: usize,
}

/// Per heap (one per thread that allocated; heaps are reused after their thread exits).
#[derive(Clone, Copy, Debug, Default)]
pub struct HeapStats {
    pub slow_allocs: u64,
    pub slabs_taken: u64,
    pub slabs_returned: u64,
    /// Other threads' frees the heap took back in its collections and when it unparked a full
    /// slab. Those a slab takes when its free list runs dry (on the allocation path, which counts
    /// nothing) and those a purge's page release takes are not counted.
    pub remote_frees_collected: u64,
}

/// A snapshot of the allocator's state.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Address space mapped from the OS (arenas, huge mappings, heap structs).
    pub mapped_bytes: usize,
    /// Estimate of the memory not given back: units in use or dirty, minus pages released inside slabs.
    /// The OS's resident set can be lower (pages never touched).
    pub committed_bytes: usize,
    /// Bytes handed out: small blocks (by block size: the class's, or a movable heap's own), spans
    /// and huge allocations (by requested size).
    pub allocated_bytes: usize,
    pub small_allocated_bytes: usize,
    pub large_allocated_bytes: usize,
    /// Bytes requested of huge allocations (above `LARGE_MAX_BYTES`, each a mapping of its own).
    pub huge_allocated_bytes: usize,
    /// Bytes of huge allocations' mappings: their requested sizes rounded up to whole pages, a
    /// metadata page or two each, for an alignment above those pages but below 2 MiB, the padding
    /// up to it, and for an allocation that reused a kept mapping up to twice its size, the rest
    /// of that mapping.
    pub huge_mapped_bytes: usize,
    /// Bytes of freed huge mappings kept, resident, for the next huge allocations (at most 32 MiB,
    /// each for at most the decommit delay while the program allocates; `purge` unmaps them all).
    pub huge_cached_bytes: usize,
    pub arenas: usize,
    /// Units free in arenas (all kinds), and of those the ones still committed.
    pub free_units: usize,
    pub dirty_units: usize,
    pub classes: [ClassStats; NUM_CLASSES],
    pub heaps_created: usize,
    pub heaps_abandoned: usize,
    pub pooled_slabs: usize,
}

/// Takes a snapshot (walks the arenas under the pool lock).
pub fn stats() -> Stats {
    let mut classes = [ClassStats::default(); NUM_CLASSES];
    for (class, stats) in classes.iter_mut().enumerate() {
        stats.block_bytes = CLASSES[class].block_bytes as usize;
        stats.slabs_created = SLABS_CREATED[class].load(Ordering::Relaxed);
    }
    let mut free_units = 0;
    let mut dirty_units = 0;
    let mut small = 0;
    let arenas = {
        let pool = crate::arena::POOL.lock();
        pool.for_each(|_, meta| {
            free_units += meta.free_units().count_ones() as usize;
            dirty_units += meta.dirty_units().count_ones() as usize;
            for desc in meta.descs.iter() {
                if desc.kind.get() == KIND_SMALL && desc.head_delta.get() == 0 {
                    let c = &mut classes[desc.class.get() as usize];
                    c.slabs += 1;
                    c.used_blocks += desc.used() as usize;
                    // Movable slabs may have block sizes of their own (grouped under a class).
                    small += desc.used() as usize * desc.block_bytes.get() as usize;
                }
            }
        });
        pool.arena_count()
    };
    let large = LARGE_BYTES.load(Ordering::Relaxed);
    let huge = HUGE_REQUESTED.load(Ordering::Relaxed);
    let (heaps_created, heaps_abandoned) = crate::pool::heap_counts();
    Stats {
        mapped_bytes: MAPPED.load(Ordering::Relaxed),
        committed_bytes: COMMITTED.load(Ordering::Relaxed),
        allocated_bytes: small + large + huge,
        small_allocated_bytes: small,
        large_allocated_bytes: large,
        huge_allocated_bytes: huge,
        huge_mapped_bytes: HUGE_BYTES.load(Ordering::Relaxed),
        huge_cached_bytes: HUGE_CACHED.load(Ordering::Relaxed),
        arenas,
        free_units,
        dirty_units,
        classes,
        heaps_created,
        heaps_abandoned,
        pooled_slabs: crate::pool::pooled_slabs(),
    }
}

/// Calls `visit` with the counters of every heap.
pub fn for_each_heap(mut visit: impl FnMut(HeapStats)) {
    crate::pool::for_each_heap(|heap| {
        let c = &heap.counters;
        visit(HeapStats {
            slow_allocs: c.slow_allocs.load(Ordering::Relaxed),
            slabs_taken: c.slabs_taken.load(Ordering::Relaxed),
            slabs_returned: c.slabs_returned.load(Ordering::Relaxed),
            remote_frees_collected: c.remote_collected.load(Ordering::Relaxed),
        })
    });
}
