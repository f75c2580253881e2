//! Shared state behind the heaps: where heaps come from, where they go when their thread exits, and
//! the pool of partly used slabs no heap owns.
//!
//! - Heap structs are carved from OS pages and never unmapped, so a pointer to a heap stays valid for
//!   the life of the process (remote frees rely on this: they may push to a heap that was abandoned).
//! - A thread that exits *abandons* its heap: the heap is put, slabs and all, on the abandoned list. A
//!   new thread *adopts* an abandoned heap before it makes a new one. While a heap is on the list, the
//!   holder of the list's lock owns it; `purge` and the background purger use that to collect it.
//! - The slab pool holds partly used slabs with no owner (`owner == UNOWNED`); any heap that needs a
//!   slab of that class takes one before it asks the arenas for fresh units.
//!
//! Lock order: `FALLBACK` → `ABANDONED` → `SLAB_POOL` → arena `POOL` → `REGION` (movable region)
//! → `STORE` → the huge cache's. No lock is held while calling into the heap fast paths.

use crate::heap::{release_slab_to_arena, Heap, SlabList};
use crate::lock::SpinLock;
use crate::os;
use crate::size_class::NUM_CLASSES;
use crate::slab::{Slab, UNOWNED};
use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

struct HeapStore {
    /// Next unused heap slot in the current chunk, and the chunk's end.
    bump: usize,
    end: usize,
    /// Every heap ever made, linked through `next_all`.
    all: *mut Heap,
    made: usize,
}

struct Abandoned {
    head: *mut Heap,
    count: usize,
}

struct PooledSlabs {
    lists: [SlabList; NUM_CLASSES],
    count: usize,
}

// SAFETY: these hold raw pointers to heap structs and descriptors that live for the whole process; they
// are only reached through their spin locks.
unsafe impl Send for HeapStore {}
// SAFETY: as above.
unsafe impl Send for Abandoned {}
// SAFETY: as above.
unsafe impl Send for PooledSlabs {}

static STORE: SpinLock<HeapStore> = SpinLock::new(HeapStore {
    bump: 0,
    end: 0,
    all: ptr::null_mut(),
    made: 0,
});
static ABANDONED: SpinLock<Abandoned> = SpinLock::new(Abandoned {
    head: ptr::null_mut(),
    count: 0,
});
static SLAB_POOL: SpinLock<PooledSlabs> = SpinLock::new(PooledSlabs {
    lists: [const { SlabList::new() }; NUM_CLASSES],
    count: 0,
});

/// `Abandoned::count`, readable without the lock (a hint for `reclaim_abandoned_if_due`).
static ABANDONED_COUNT: AtomicUsize = AtomicUsize::new(0);

const HEAP_CHUNK_BYTES: usize = 256 << 10;

/// A heap for a new thread: an abandoned one if any, else a fresh one. None when out of memory.
pub(crate) fn acquire_heap() -> Option<&'static Heap> {
    {
        let mut abandoned = ABANDONED.lock();
        let heap = abandoned.head;
        if !heap.is_null() {
            // SAFETY: heaps on the list are live; holding the lock, we take ownership of this one.
            let heap = unsafe { &*heap };
            abandoned.head = heap.next_abandoned.replace(ptr::null_mut());
            abandoned.count -= 1;
            ABANDONED_COUNT.store(abandoned.count, Ordering::Relaxed);
            return Some(heap);
        }
    }
    new_heap()
}

fn new_heap() -> Option<&'static Heap> {
    let size = core::mem::size_of::<Heap>();
    let mut store = STORE.lock();
    if store.bump + size > store.end {
        let chunk = os::map_aligned(HEAP_CHUNK_BYTES, os::page_size());
        if chunk.is_null() {
            return None;
        }
        crate::stats::add_mapped(HEAP_CHUNK_BYTES);
        store.bump = chunk as usize;
        store.end = chunk as usize + HEAP_CHUNK_BYTES;
    }
    let slot = store.bump as *mut Heap;
    store.bump += size.next_multiple_of(64);
    // SAFETY: `slot` is inside a fresh mapping we own, suitably aligned (page-aligned chunk, 64-byte
    // steps) and large enough for a `Heap`.
    unsafe { slot.write(Heap::new()) };
    // SAFETY: just written; it is never freed, so 'static.
    let heap = unsafe { &*slot };
    heap.next_all.set(store.all);
    store.all = slot;
    store.made += 1;
    Some(heap)
}

/// Abandons a heap whose thread is exiting: returns what it can and puts it on the abandoned list.
pub(crate) fn abandon_heap(heap: &'static Heap) {
    heap.collect(false, true);
    let mut abandoned = ABANDONED.lock();
    heap.next_abandoned.set(abandoned.head);
    abandoned.head = heap as *const Heap as *mut Heap;
    abandoned.count += 1;
    ABANDONED_COUNT.store(abandoned.count, Ordering::Relaxed);
}

/// Collects every abandoned heap (under the list lock, which makes this thread their owner).
pub(crate) fn collect_abandoned(release_pages: bool) -> usize {
    let abandoned = ABANDONED.lock();
    let mut released = 0;
    let mut heap = abandoned.head;
    while !heap.is_null() {
        // SAFETY: heaps on the list are live and owned by the lock holder.
        let h = unsafe { &*heap };
        released += h.collect(release_pages, true);
        heap = h.next_abandoned.get();
    }
    released
}

/// Gives the partly used and empty slabs of abandoned heaps back (to the pool and the arenas), at most
/// once per `RECLAIM_INTERVAL_MS` and only if nobody else is doing it. Called by a heap about to ask
/// the arenas for fresh units, so that frees into slabs of exited threads are reused rather than pinned.
/// Returns whether it ran.
pub(crate) fn reclaim_abandoned_if_due() -> bool {
    const RECLAIM_INTERVAL_MS: u64 = 10;
    static LAST_RECLAIM_MS: AtomicU64 = AtomicU64::new(0);
    if ABANDONED_COUNT.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let now = os::now_ms();
    if now.saturating_sub(LAST_RECLAIM_MS.load(Ordering::Relaxed)) < RECLAIM_INTERVAL_MS {
        return false;
    }
    let Some(abandoned) = ABANDONED.try_lock() else {
        return false;
    };
    LAST_RECLAIM_MS.store(now, Ordering::Relaxed);
    let mut heap = abandoned.head;
    while !heap.is_null() {
        // SAFETY: heaps on the list are live and owned by the lock holder.
        let h = unsafe { &*heap };
        h.collect(false, true);
        heap = h.next_abandoned.get();
    }
    true
}

/// Number of heaps made and of heaps currently abandoned.
pub(crate) fn heap_counts() -> (usize, usize) {
    let made = STORE.lock().made;
    let abandoned = ABANDONED.lock().count;
    (made, abandoned)
}

/// Visits every heap ever made (statistics; reads relaxed counters only).
pub(crate) fn for_each_heap(mut visit: impl FnMut(&Heap)) {
    let mut heap = STORE.lock().all;
    while !heap.is_null() {
        // SAFETY: heaps are never freed; `next_all` is fixed once set.
        let h = unsafe { &*heap };
        visit(h);
        heap = h.next_all.get();
    }
}

/// Asks every heap's owner to collect its heap soon ([`Heap::request_collect`]).
pub(crate) fn request_collect(every_empty: bool) {
    for_each_heap(|heap| heap.request_collect(every_empty));
}

/// Gives a partly used slab (already off its heap's lists) to the shared pool.
pub(crate) fn give_slab(slab: &Slab) {
    debug_assert!(!slab.is_full_parked());
    let class = slab.class.get() as usize;
    slab.owner.store(UNOWNED, Ordering::Relaxed);
    slab.local_key.store(UNOWNED, Ordering::Relaxed);
    let mut pool = SLAB_POOL.lock();
    pool.lists[class].push(slab);
    pool.count += 1;
}

/// Takes a pooled slab of `class` for the heap at `owner`.
pub(crate) fn take_slab(class: usize, owner: usize) -> Option<*mut Slab> {
    let mut pool = SLAB_POOL.lock();
    let slab = pool.lists[class].head();
    if slab.is_null() {
        return None;
    }
    // SAFETY: pooled slabs are live and owned by the pool lock holder.
    let s = unsafe { &*slab };
    pool.lists[class].remove(s);
    pool.count -= 1;
    drop(pool);
    s.owner.store(owner, Ordering::Relaxed);
    s.local_key.store(owner, Ordering::Relaxed);
    Some(slab)
}

/// Collects remote frees into pooled slabs, returns the empty ones to their arenas and, when
/// `release_pages`, decommits free pages of the rest.
pub(crate) fn collect_pool(release_pages: bool) -> usize {
    let mut pool = SLAB_POOL.lock();
    let mut released = 0;
    for class in 0..NUM_CLASSES {
        let mut slab = pool.lists[class].head();
        while !slab.is_null() {
            // SAFETY: pooled slabs are live and owned by the pool lock holder.
            let s = unsafe { &*slab };
            let next = s.next.get();
            s.collect_remote();
            if s.used() == 0 {
                pool.lists[class].remove(s);
                pool.count -= 1;
                release_slab_to_arena(s);
            } else if release_pages {
                released += s.release_free_pages(true);
            }
            slab = next;
        }
    }
    released
}

pub(crate) fn pooled_slabs() -> usize {
    SLAB_POOL.lock().count
}

/// `pthread_atfork` support: take every lock before `fork`, release in both processes after.
pub(crate) fn lock_all_for_fork() {
    crate::thread::FALLBACK.lock_raw();
    ABANDONED.lock_raw();
    SLAB_POOL.lock_raw();
    crate::arena::POOL.lock_raw();
    crate::region::lock_for_fork();
    STORE.lock_raw();
    crate::huge_cache::lock_for_fork();
}

/// # Safety
/// - Called once after `lock_all_for_fork`, in the parent or in the child.
pub(crate) unsafe fn unlock_all_after_fork() {
    // SAFETY: the caller took every lock in `lock_all_for_fork` (in the child, the only thread).
    unsafe {
        crate::huge_cache::unlock_after_fork();
        STORE.unlock_raw();
        crate::region::unlock_after_fork();
        crate::arena::POOL.unlock_raw();
        SLAB_POOL.unlock_raw();
        ABANDONED.unlock_raw();
        crate::thread::FALLBACK.unlock_raw();
    }
}
