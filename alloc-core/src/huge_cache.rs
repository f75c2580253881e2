//! Freed huge mappings, kept resident for a short while for the next huge allocation.
//!
//! A huge allocation (above `LARGE_MAX_BYTES`) is a mapping of its own, and a fresh mapping faults
//! every page in again: a loop that allocated, filled and freed a 2 MB buffer took about 400 µs an
//! iteration, against 3 µs with mimalloc or glibc, which keep freed memory for reuse. So a freed
//! mapping waits here, whole and resident, and an allocation takes the smallest that fits instead
//! of mapping anew (whole up to twice the size it needs, its tail unmapped beyond: a tail kept
//! resident is the price of reuse, at most the allocation's own size), or, if none fits, the
//! largest if it has at least half the size needed, grown by `mremap` (its pages move with it;
//! only the new ones fault in). A zeroed allocation clears only the bytes an earlier allocation
//! may have written.
//!
//! Bounds, so that the cache costs little memory: at most `SLOTS` mappings and `MAX_BYTES` in all
//! (a mapping of more than half that is not kept; the oldest go first to make room), and a mapping
//! older than the arenas' decommit delay is unmapped by the next huge allocation or free, after
//! the arenas' maintenance (which frees of slabs and spans run when 25 ms have passed since the
//! last, and the background purger every round), by `purge` (all of them), or by an allocation
//! that finds no memory (all of them, and it tries again). A program that stops allocating and
//! runs no purger can so keep up to `MAX_BYTES` until it does.
//!
//! Only mappings of the ordinary layout come here: 2 MiB-aligned, their metadata in the first page,
//! the object after it (alignment below 2 MiB). System calls are made outside the lock (and
//! outside the arena pool's: see `arena::maintain_if_due`).

use crate::arena::{ARENA_BYTES, DECOMMIT_DELAY_MS};
use crate::lock::SpinLock;
use crate::os;

/// Mappings kept at most.
const SLOTS: usize = 8;
/// Bytes kept at most, over all mappings.
pub(crate) const MAX_BYTES: usize = 32 << 20;

#[derive(Clone, Copy)]
struct Kept {
    base: usize,
    bytes: usize,
    freed_ms: u64,
}

struct Cache {
    kept: [Kept; SLOTS],
    len: usize,
    bytes: usize,
}

static CACHE: SpinLock<Cache> = SpinLock::new(Cache {
    kept: [Kept {
        base: 0,
        bytes: 0,
        freed_ms: 0,
    }; SLOTS],
    len: 0,
    bytes: 0,
});

/// Mappings taken out of the cache under its lock, to unmap after it (at most all it held).
struct Going {
    mappings: [(usize, usize); SLOTS],
    len: usize,
}

impl Going {
    const fn new() -> Self {
        Self {
            mappings: [(0, 0); SLOTS],
            len: 0,
        }
    }

    fn push(&mut self, base: usize, bytes: usize) {
        self.mappings[self.len] = (base, bytes);
        self.len += 1;
    }

    /// Unmaps them; returns their bytes.
    fn unmap(self) -> usize {
        let mut bytes = 0;
        for &(base, size) in &self.mappings[..self.len] {
            os::unmap(base as *mut u8, size);
            crate::stats::unmap_kept_huge(size);
            bytes += size;
        }
        bytes
    }
}

impl Cache {
    /// Takes mapping `at` out (it stays mapped: the caller reuses or unmaps it).
    fn remove(&mut self, at: usize) -> Kept {
        let kept = self.kept[at];
        self.len -= 1;
        self.kept[at] = self.kept[self.len];
        self.bytes -= kept.bytes;
        crate::stats::uncache_huge(kept.bytes);
        kept
    }

    /// Takes out the mappings older than the decommit delay (all of them if `force`).
    fn expire(&mut self, now_ms: u64, force: bool, going: &mut Going) {
        let mut at = 0;
        while at < self.len {
            if force || now_ms.saturating_sub(self.kept[at].freed_ms) >= DECOMMIT_DELAY_MS {
                let kept = self.remove(at);
                going.push(kept.base, kept.bytes);
            } else {
                at += 1;
            }
        }
    }
}

/// Whether a mapping of `base` (where its metadata starts) may be kept.
pub(crate) fn keeps(base: usize, bytes: usize) -> bool {
    base % ARENA_BYTES == 0 && bytes <= MAX_BYTES / 2
}

/// Keeps the freed mapping `base..base + bytes` (which `keeps` accepted) for reuse, making room by
/// unmapping the oldest kept ones, and unmaps the expired ones.
pub(crate) fn put(base: usize, bytes: usize) {
    let now = os::now_ms();
    let mut going = Going::new();
    {
        let mut cache = CACHE.lock();
        cache.expire(now, false, &mut going);
        while cache.len == SLOTS || cache.bytes + bytes > MAX_BYTES {
            let Some(oldest) = (0..cache.len).min_by_key(|&at| cache.kept[at].freed_ms) else {
                break; // (`keeps` bounds `bytes` to half the cache, so this cannot be)
            };
            let kept = cache.remove(oldest);
            going.push(kept.base, kept.bytes);
        }
        let len = cache.len;
        cache.kept[len] = Kept {
            base,
            bytes,
            freed_ms: now,
        };
        cache.len += 1;
        cache.bytes += bytes;
        crate::stats::cache_huge(bytes);
    }
    going.unmap();
}

/// The smallest kept mapping of at least `bytes`, or else the largest if it has at least half of
/// them (for the caller to grow), taken out of the cache (its base and size), after unmapping the
/// expired ones; `None` if there is none.
pub(crate) fn take(bytes: usize) -> Option<(usize, usize)> {
    let now = os::now_ms();
    let mut going = Going::new();
    let taken = {
        let mut cache = CACHE.lock();
        cache.expire(now, false, &mut going);
        let fits = (0..cache.len)
            .filter(|&at| cache.kept[at].bytes >= bytes)
            .min_by_key(|&at| cache.kept[at].bytes);
        // A mapping under half the request would save few page faults for its system calls.
        let largest = (0..cache.len)
            .max_by_key(|&at| cache.kept[at].bytes)
            .filter(|&at| cache.kept[at].bytes >= bytes / 2);
        let best = fits.or(largest);
        best.map(|at| {
            let kept = cache.remove(at);
            crate::stats::reuse_huge(kept.bytes);
            (kept.base, kept.bytes)
        })
    };
    going.unmap();
    taken
}

/// Gives every kept mapping back (for an allocation that found no memory); whether there was any.
pub(crate) fn release_all() -> bool {
    release(os::now_ms(), true) > 0
}

/// Unmaps the kept mappings older than the decommit delay, or all of them if `force`; returns the
/// bytes given back.
pub(crate) fn release(now_ms: u64, force: bool) -> usize {
    let mut going = Going::new();
    CACHE.lock().expire(now_ms, force, &mut going);
    going.unmap()
}

/// `pthread_atfork` support (see `pool::lock_all_for_fork`).
pub(crate) fn lock_for_fork() {
    CACHE.lock_raw();
}

/// # Safety
/// - After `lock_for_fork`, once, in the parent or in the child.
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: the caller's contract.
    unsafe { CACHE.unlock_raw() };
}
