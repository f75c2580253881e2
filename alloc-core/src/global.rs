//! The front: `SlabAlloc`, the `GlobalAlloc` implementation, purge.
//!
//! Allocation: a request that fits a size class at the default alignment goes straight to the thread
//! heap's fast path; everything else (over-alignment, spans, huge mappings, zeroing) is `#[cold]`.
//!
//! Free: the block's arena is found by masking its address, its descriptor by indexing, and one
//! comparison (`local_key == this thread's heap`) picks the fast path. A block at offset 0 of its 2 MiB
//! chunk can only be a 2 MiB-aligned huge allocation (arena offset 0 is metadata).
//!
//! Which heap a thread allocates from is `thread`'s business. Frees never need the thread's own heap: a
//! free into a slab owned by another heap (or none) is a lock-free remote free.

use crate::heap::Heap;
use crate::large::{self, LARGE_MAX_BYTES};
use crate::remote::{Block, Pushed};
use crate::size_class::{class_for, class_of, MAX_SMALL_BYTES, MIN_ALIGN, UNIT_SHIFT};
use crate::slab::{Slab, KIND_HUGE, KIND_LARGE, KIND_SMALL, UNOWNED};
use crate::sync::Ordering;
use crate::thread::{ensure_init, is_real_heap, thread_heap};
use crate::{arena, checked, pool};
use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::AtomicU8;

/// The allocator. Install it with
/// `#[global_allocator] static ALLOC: alloc_core::SlabAlloc = alloc_core::SlabAlloc::new();`
/// or call it directly; all instances share the same process-wide state.
#[derive(Clone, Copy, Debug, Default)]
pub struct SlabAlloc;

impl SlabAlloc {
    pub const fn new() -> Self {
        SlabAlloc
    }
}

// ---------------------------------------------------------------------------------------------------
// Addresses to descriptors.

/// The head descriptor of the slab or span holding `addr` (which must not be at chunk offset 0).
///
/// # Safety
/// - `addr` lies in a live arena or in the first 2 MiB of a live huge mapping.
#[inline(always)]
pub(crate) unsafe fn slab_of(addr: usize) -> &'static Slab {
    let meta = arena::meta_of(addr);
    let unit = (addr & arena::ARENA_MASK) >> UNIT_SHIFT;
    // SAFETY: the caller's contract: the chunk starts with a descriptor array of UNITS_PER_ARENA
    // entries, and `unit` is below that.
    let desc = unsafe { &*ptr::addr_of!((*meta).descs).cast::<Slab>().add(unit) };
    desc.head()
}

// ---------------------------------------------------------------------------------------------------
// Allocation.

#[inline(always)]
fn alloc_impl(size: usize, align: usize) -> *mut u8 {
    if align <= MIN_ALIGN && size <= MAX_SMALL_BYTES {
        let block = thread_heap().alloc_small(class_of(size));
        checked::on_alloc(block);
        return block;
    }
    alloc_slow(size, align, false)
}

#[cold]
#[inline(never)]
fn alloc_slow(size: usize, align: usize, zero: bool) -> *mut u8 {
    if let Some(class) = class_for(size, align) {
        let block = thread_heap().alloc_small(class);
        checked::on_alloc(block);
        if zero && !block.is_null() {
            // SAFETY: the block is ours and at least `size` bytes long.
            unsafe { ptr::write_bytes(block, 0, size) };
        }
        return block;
    }
    ensure_init();
    let span = size <= LARGE_MAX_BYTES
        && align <= LARGE_MAX_BYTES
        && large::span_units(size, align) < arena::UNITS_PER_ARENA;
    let alloc = || {
        if span {
            large::alloc_span(size, align, zero)
        } else {
            large::alloc_huge(size, align, zero)
        }
    };
    let object = alloc();
    // Out of memory (or address space) while freed huge mappings are kept: give them back, and
    // try once more.
    if object.is_null() && crate::huge_cache::release_all() {
        return alloc();
    }
    object
}

// ---------------------------------------------------------------------------------------------------
// Free.

#[inline(always)]
unsafe fn dealloc_impl(object: *mut u8) {
    checked::on_free(object);
    if object as usize & arena::ARENA_MASK == 0 {
        // SAFETY: offset 0 of a chunk is never an arena block, so this is a 2 MiB-aligned huge object.
        return unsafe { large::free_huge(object) };
    }
    // SAFETY: `object` was returned by this allocator (the GlobalAlloc contract), so it lies in an arena
    // or in the first chunk of a huge mapping.
    let slab = unsafe { slab_of(object as usize) };
    let heap = thread_heap();
    if slab.local_key.load(Ordering::Relaxed) == heap.addr() {
        // SAFETY: `local_key` equals our heap only for slabs we own that are not parked, and `object`
        // is a block of that slab.
        let used = unsafe { slab.push_local(object.cast()) };
        if used == 0 {
            heap.slab_emptied(slab);
        }
        return;
    }
    // SAFETY: forwarded contract.
    unsafe { dealloc_slow(slab, object, heap) }
}

#[cold]
#[inline(never)]
unsafe fn dealloc_slow(slab: &Slab, object: *mut u8, heap: &Heap) {
    match slab.kind.get() {
        KIND_SMALL => {
            if slab.owner.load(Ordering::Relaxed) == heap.addr() {
                heap.free_owned(slab, object.cast());
            } else {
                // SAFETY: the caller gives up `object`, a block of `slab`.
                unsafe { free_remote(slab, object.cast()) };
            }
        }
        KIND_LARGE => large::free_span(slab),
        // SAFETY: a huge descriptor means `object` is a live huge allocation being freed.
        KIND_HUGE => unsafe { large::free_huge(object) },
        _ => checked::report(b"free of an address in no live allocation", object, slab),
    }
}

/// Frees a block of a slab this thread does not own (lock-free).
///
/// # Safety
/// - `block` is a live block of `slab`, given up by the caller.
pub(crate) unsafe fn free_remote(slab: &Slab, block: *mut Block) {
    loop {
        // SAFETY: the caller owns the block.
        match unsafe { slab.remote.push(block) } {
            Pushed::OnSlab => return,
            Pushed::NotifyOwner => {
                let owner = slab.owner.load(Ordering::Acquire);
                if owner != UNOWNED {
                    // SAFETY: owners are heap addresses, and heaps are immortal. Our block keeps the slab
                    // alive until the owner drains it.
                    unsafe { (*(owner as *const Heap)).delayed.push(block) };
                    return;
                }
                // Nobody to notify any more: the flag is now clear, push normally.
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Reallocation.

unsafe fn realloc_impl(object: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    let align = layout.align();
    let in_place = if object as usize & arena::ARENA_MASK == 0 {
        // SAFETY: a 2 MiB-aligned huge object (see `dealloc_impl`).
        unsafe { resize_huge(object, new_size) }
    } else {
        // SAFETY: `object` is live and ours (GlobalAlloc contract).
        let slab = unsafe { slab_of(object as usize) };
        match slab.kind.get() {
            KIND_SMALL => {
                let block = slab.block_bytes.get() as usize;
                new_size <= block && (block <= 64 || new_size > block / 2)
            }
            KIND_LARGE => {
                new_size > MAX_SMALL_BYTES
                    && new_size <= LARGE_MAX_BYTES
                    && large::resize_span_in_place(slab, new_size)
            }
            // SAFETY: a huge descriptor: `object` is a live huge allocation.
            KIND_HUGE => unsafe { resize_huge(object, new_size) },
            _ => false,
        }
    };
    if in_place {
        return object;
    }
    if new_size > LARGE_MAX_BYTES && align < arena::ARENA_BYTES && is_huge(object) {
        // SAFETY: `object` is a live huge allocation.
        let moved = unsafe { large::grow_huge(object, new_size) };
        if !moved.is_null() {
            return moved;
        }
    }
    let new = if align <= MIN_ALIGN && new_size <= MAX_SMALL_BYTES {
        alloc_impl(new_size, align)
    } else {
        alloc_slow(new_size, align, false)
    };
    if !new.is_null() {
        // SAFETY: both blocks are live, distinct, and at least min(old, new) bytes long.
        unsafe { ptr::copy_nonoverlapping(object, new, layout.size().min(new_size)) };
        // SAFETY: `object` is live and ours; the caller gives it up on success.
        unsafe { dealloc_impl(object) };
    }
    new
}

/// Whether a live block of ours is a huge allocation.
fn is_huge(object: *mut u8) -> bool {
    // SAFETY: `object` is live and ours; offset 0 in a chunk is only ever a huge allocation.
    object as usize & arena::ARENA_MASK == 0
        || unsafe { slab_of(object as usize) }.kind.get() == KIND_HUGE
}

/// # Safety
/// - `object` is a live huge allocation.
unsafe fn resize_huge(object: *mut u8, new_size: usize) -> bool {
    // SAFETY: the caller's contract.
    let capacity = unsafe { large::huge_capacity(object) };
    if new_size <= capacity && new_size > capacity / 2 && new_size > LARGE_MAX_BYTES {
        // SAFETY: as above, and the size fits the mapping.
        unsafe { large::set_huge_size(object, new_size) };
        return true;
    }
    false
}

// SAFETY: every method upholds the GlobalAlloc contract: returned blocks are at least `size` bytes,
// aligned to `align`, disjoint from every other live block, and null on failure (never a panic).
unsafe impl GlobalAlloc for SlabAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        alloc_impl(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn dealloc(&self, object: *mut u8, _layout: Layout) {
        // SAFETY: the caller's GlobalAlloc contract: `object` is a live block from this allocator.
        unsafe { dealloc_impl(object) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        alloc_slow(layout.size(), layout.align(), true)
    }

    #[inline]
    unsafe fn realloc(&self, object: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded GlobalAlloc contract.
        unsafe { realloc_impl(object, layout, new_size) }
    }
}

// ---------------------------------------------------------------------------------------------------
// Giving memory back.

/// Releases everything free now: collects frees on the calling thread's heap, on abandoned heaps and
/// in the shared slab pool, returns empty slabs, decommits free pages inside partly used slabs and
/// free units, and unmaps empty arenas and the freed huge mappings kept for reuse. Returns the
/// bytes given back to the OS.
///
/// Live heaps of other threads are not touched (their owners are running): a slab returns to its
/// arena when it empties in its owner's hands, and frees made by other threads reach the owner when
/// it collects them. A slab that was full is collected at the owner's next allocation slow path
/// (its first remote free tells the owner); the others when the owner collects its whole heap,
/// every so often on its slow path, sooner after a `purge` (or a round of the background purger)
/// asked it to, and in its own `purge`. So memory that other threads free into the slabs of a
/// thread that neither allocates nor exits stays with that thread until it does one or the other.
pub fn purge() -> usize {
    ensure_init();
    let heap = thread_heap();
    let mut released = 0;
    pool::request_collect(true);
    if is_real_heap(heap) {
        released += heap.collect(true, false);
        heap.clear_collect_request();
    }
    released += crate::thread::collect_fallback();
    released += pool::collect_abandoned(true);
    released += pool::collect_pool(true);
    released += arena::maintain_now(true);
    released
}

/// One round of the background purger: what `purge` does for abandoned heaps and the pool, and the
/// delayed (not forced) decommit of free units, empty arenas and kept huge mappings; it asks live
/// threads' heaps to collect themselves soon, at an allocation slow path, and return their idle
/// empty slabs.
pub fn maintain() -> usize {
    pool::request_collect(false);
    let mut released = crate::thread::collect_fallback();
    released += pool::collect_abandoned(true);
    released += pool::collect_pool(true);
    released += arena::maintain_now(false);
    released
}

static PURGER_STARTED: AtomicU8 = AtomicU8::new(0);

/// In a child process made by `fork`: the purger thread, if the parent had one, did not come along,
/// so the child may start its own.
pub(crate) fn forget_purger_after_fork() {
    PURGER_STARTED.store(0, Ordering::Relaxed);
}

/// Starts a background thread that calls [`maintain`] every `interval`, so that memory freed by
/// exited threads and free arenas goes back to the OS within about `interval` plus the decommit delay
/// even if the program never allocates again. Call it from `main`; returns false if it was already
/// running or the thread could not be spawned. A child process made by `fork` has no purger (threads
/// do not survive `fork`), whatever its parent had: call this again in the child to have one.
pub fn start_background_purger(interval: std::time::Duration) -> bool {
    if PURGER_STARTED.swap(1, Ordering::AcqRel) != 0 {
        return false;
    }
    let spawned = std::thread::Builder::new()
        .name("alloc-core-purger".into())
        .spawn(move || loop {
            std::thread::sleep(interval);
            maintain();
        });
    if spawned.is_err() {
        // Nothing runs: a later call may try again.
        PURGER_STARTED.store(0, Ordering::Release);
        return false;
    }
    true
}

/// Recounts the counter invariants of every slab the calling thread's heap owns (tests and the
/// `invariants` feature). Panics with the broken invariant.
#[cfg(any(test, feature = "invariants"))]
pub fn check_thread_heap_invariants() {
    let heap = thread_heap();
    if is_real_heap(heap) {
        heap.check_invariants();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded random walk of allocations and frees on this thread, with the slab counters recounted
    /// after every step.
    #[test]
    fn random_walk_keeps_slab_invariants() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut live: Vec<(*mut u8, Layout)> = Vec::new();
        for step in 0..20_000 {
            if live.len() < 500 && next() % 3 != 0 {
                let size = 1 + (next() % 3000) as usize;
                let align = 1 << (next() % 7);
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero size.
                let p = unsafe { SlabAlloc.alloc(layout) };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                // SAFETY: `p` has `size` bytes.
                unsafe { p.write_bytes(step as u8, size) };
                live.push((p, layout));
            } else if !live.is_empty() {
                let (p, layout) = live.swap_remove((next() as usize) % live.len());
                // SAFETY: allocated above with this layout, freed once.
                unsafe { SlabAlloc.dealloc(p, layout) };
            }
            check_thread_heap_invariants();
        }
        for (p, layout) in live {
            // SAFETY: as above.
            unsafe { SlabAlloc.dealloc(p, layout) };
        }
        check_thread_heap_invariants();
        purge();
        check_thread_heap_invariants();
    }

    /// Huge allocations grow by moving page tables (`mremap`), keeping contents and alignment.
    #[test]
    fn huge_realloc_keeps_contents() {
        let mut layout = Layout::from_size_align(3 << 20, 64).unwrap();
        // SAFETY: non-zero size.
        let mut p = unsafe { SlabAlloc.alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: `p` has `layout.size()` bytes; each step below keeps that true.
        unsafe {
            for i in 0..layout.size() / 8 {
                p.cast::<u64>().add(i).write(i as u64);
            }
            for new_size in [50 << 20, 51 << 20, 200 << 20, 4 << 20] {
                p = SlabAlloc.realloc(p, layout, new_size);
                assert!(!p.is_null());
                assert_eq!(p as usize % 64, 0);
                layout = Layout::from_size_align(new_size, 64).unwrap();
                for i in (0..(3 << 20) / 8).step_by(4099) {
                    assert_eq!(p.cast::<u64>().add(i).read(), i as u64);
                }
            }
            SlabAlloc.dealloc(p, layout);
        }
    }
}
