//! Thread heaps: which heap a thread uses, process-wide initialisation, thread exit and `fork`.
//!
//! The thread-local pointer is `const`-initialised to `EMPTY_HEAP`, whose slabs are all the empty
//! sentinel, so a thread's first allocation falls into the slow path, which adopts or makes a real heap.
//! Thread exit is heard through a `pthread_key_create` destructor (registering it does not allocate);
//! it abandons the heap and points the thread at `DEAD_HEAP`, whose allocations are served from a shared
//! fallback heap under a lock, so allocating during and after thread-local destruction keeps working.
//! `pthread_atfork` handlers take every allocator lock before `fork` and release them in both
//! processes, so a child never inherits a lock held by a thread that does not exist in it. The
//! heaps of the parent's other threads are left alone in the child, owned by no thread: one may
//! have been copied halfway through a change its owner was making (heaps take no lock), so its
//! slabs and the memory they hold stay as they are, and frees into them wait for good.

use crate::heap::Heap;
use crate::lock::SpinLock;
use crate::sync::Ordering;
use crate::{arena, checked, os, pool};
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicU8, AtomicUsize};

static EMPTY_HEAP: Heap = Heap::new();
static DEAD_HEAP: Heap = Heap::new();
/// The heap that serves threads whose own heap is gone (allocation during thread teardown).
pub(crate) static FALLBACK: SpinLock<FallbackHeap> = SpinLock::new(FallbackHeap(ptr::null()));

pub(crate) struct FallbackHeap(*const Heap);
// SAFETY: the pointer is to an immortal heap, used only under the FALLBACK lock.
unsafe impl Send for FallbackHeap {}

thread_local! {
    static THREAD_HEAP: Cell<*const Heap> = const { Cell::new(ptr::addr_of!(EMPTY_HEAP)) };
}

#[inline(always)]
pub(crate) fn thread_heap() -> &'static Heap {
    // SAFETY: the cell only ever holds EMPTY_HEAP, DEAD_HEAP or a heap from `pool`, all immortal.
    // `with` cannot fail: the key is const-initialised and has no destructor.
    unsafe { &*THREAD_HEAP.with(|h| h.get()) }
}

pub(crate) fn is_real_heap(heap: &Heap) -> bool {
    !ptr::eq(heap, &EMPTY_HEAP) && !ptr::eq(heap, &DEAD_HEAP)
}

// ---------------------------------------------------------------------------------------------------
// Process-wide initialisation and thread exit.

const INIT_NONE: u8 = 0;
const INIT_RUNNING: u8 = 1;
const INIT_DONE: u8 = 2;
static INIT: AtomicU8 = AtomicU8::new(INIT_NONE);
static THREAD_KEY: AtomicUsize = AtomicUsize::new(0);

#[cold]
pub(crate) fn ensure_init() {
    if INIT.load(Ordering::Acquire) == INIT_DONE {
        return;
    }
    if INIT
        .compare_exchange(
            INIT_NONE,
            INIT_RUNNING,
            Ordering::Acquire,
            Ordering::Acquire,
        )
        .is_err()
    {
        while INIT.load(Ordering::Acquire) != INIT_DONE {
            crate::sync::spin_hint();
        }
        return;
    }
    os::page_size();
    arena::read_thp_policy();
    checked::init();
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; the destructor is an `extern "C"` fn that never unwinds.
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } == 0 {
        THREAD_KEY.store(key as usize + 1, Ordering::Relaxed);
    }
    INIT.store(INIT_DONE, Ordering::Release);
    // Registered last: glibc may allocate here, and the allocator is usable by now.
    // SAFETY: the handlers are `extern "C"` fns that take and release our locks and never unwind.
    unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
}

extern "C" fn fork_prepare() {
    pool::lock_all_for_fork();
}

extern "C" fn fork_parent() {
    // SAFETY: `fork_prepare` took every lock in this process.
    unsafe { pool::unlock_all_after_fork() };
}

extern "C" fn fork_child() {
    // SAFETY: the child is single-threaded and inherited the locks `fork_prepare` took.
    unsafe { pool::unlock_all_after_fork() };
    crate::global::forget_purger_after_fork();
}

/// The thread-exit destructor registered with `pthread_key_create`.
extern "C" fn thread_exit(value: *mut libc::c_void) {
    let heap = value as *const Heap;
    if heap.is_null() {
        return;
    }
    let _ = THREAD_HEAP.try_with(|h| h.set(ptr::addr_of!(DEAD_HEAP)));
    // SAFETY: the value was set by `init_thread_heap` to this thread's heap, which is immortal and,
    // with the thread now pointing at DEAD_HEAP, used by nobody else.
    pool::abandon_heap(unsafe { &*heap });
}

#[cold]
fn init_thread_heap() -> Option<&'static Heap> {
    ensure_init();
    let heap = pool::acquire_heap()?;
    THREAD_HEAP.with(|h| h.set(heap));
    let key = THREAD_KEY.load(Ordering::Relaxed);
    if key != 0 {
        // Set after the thread-local, so an allocation made by pthread_setspecific itself finds a heap.
        // SAFETY: the key was created by `ensure_init`; the value is an immortal heap.
        unsafe {
            libc::pthread_setspecific(
                (key - 1) as libc::pthread_key_t,
                heap as *const Heap as *const _,
            )
        };
    }
    Some(heap)
}

/// Collects the fallback heap, if there is one: the frees other threads made into its slabs (threads
/// past their thread-local destructors allocate from it, and their blocks are freed anywhere), empty
/// slabs back to their arenas, sparse ones to the shared pool, free pages decommitted. For `purge`
/// and `maintain`: the heap's own slow path collects only when it runs out.
pub(crate) fn collect_fallback() -> usize {
    let fallback = FALLBACK.lock();
    if fallback.0.is_null() {
        return 0;
    }
    // SAFETY: the fallback heap is immortal and owned by the FALLBACK lock holder.
    unsafe { &*fallback.0 }.collect(true, true)
}

/// Called by a heap's slow path: serves the two sentinel heaps (`None` for a real heap).
pub(crate) fn uninitialised_heap_redirect(heap: &Heap, class: usize) -> Option<*mut u8> {
    if ptr::eq(heap, &EMPTY_HEAP) {
        return Some(match init_thread_heap() {
            Some(real) => real.alloc_small(class),
            None => ptr::null_mut(),
        });
    }
    if ptr::eq(heap, &DEAD_HEAP) {
        let mut fallback = FALLBACK.lock();
        if fallback.0.is_null() {
            match pool::acquire_heap() {
                Some(h) => fallback.0 = h,
                None => return Some(ptr::null_mut()),
            }
        }
        // SAFETY: the fallback heap is immortal and owned by the FALLBACK lock holder.
        return Some(unsafe { &*fallback.0 }.alloc_small(class));
    }
    None
}
