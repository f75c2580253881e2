//! A spin lock for the allocator's few shared structures: the fallback heap, the list of abandoned
//! heaps, the slab pool, the arena pool, the movable region, the heap store and the kept huge
//! mappings (their order is in `pool`). None of them is on the fast path.
//!
//! Why not `std::sync::Mutex`: the allocator must survive `fork()` while another thread holds a lock,
//! which needs a lock the `pthread_atfork` handlers can take and release without a guard object
//! (`lock_raw` / `unlock_raw`), and a lock that cannot poison. Waiting spins briefly, then yields the
//! CPU. Critical sections are mostly list and bitmask edits; the system calls made under a lock are
//! `mmap` when an arena or the region is made, and the arena pool's maintenance, which decommits and
//! unmaps under it every 25 ms at most (moving those calls out of the lock is not done yet).

use crate::sync::{spin_hint, AtomicBool, Ordering};
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out `&mut T` to one thread at a time (acquire on lock, release on unlock), so
// sharing the lock between threads is sound whenever `T` may be sent between them.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: owning the lock is owning the `T`.
unsafe impl<T: Send> Send for SpinLock<T> {}

pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> SpinLock<T> {
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    #[inline]
    pub fn lock(&self) -> SpinGuard<'_, T> {
        self.lock_raw();
        SpinGuard { lock: self }
    }

    /// Takes the lock if it is free right now.
    #[inline]
    pub fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        if self.locked.load(Ordering::Relaxed)
            || self
                .locked
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        Some(SpinGuard { lock: self })
    }

    /// Takes the lock without a guard (for `pthread_atfork`'s prepare handler).
    ///
    /// Acquisition is a `compare_exchange` rather than a `swap(true)`: a failed attempt then writes
    /// nothing, so a waiter never re-stores `true` over the holder's release (harmless on hardware,
    /// but under loom an unordered pair of writes that a spinning model never gets past).
    pub(crate) fn lock_raw(&self) {
        let mut spins = 0u32;
        loop {
            if self
                .locked
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            while self.locked.load(Ordering::Relaxed) {
                spins += 1;
                if spins < 64 {
                    spin_hint();
                } else {
                    yield_now();
                }
            }
        }
    }

    /// Releases a lock taken with `lock_raw`, or resets it in a forked child, whose other threads
    /// (the only possible holders) no longer exist.
    ///
    /// # Safety
    /// - The caller holds the lock through `lock_raw`, or is the only thread of a forked child.
    pub(crate) unsafe fn unlock_raw(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this thread holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while this thread holds the lock, so the access is exclusive.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard was created by `lock`, so this thread holds the lock.
        unsafe { self.lock.unlock_raw() };
    }
}

#[cfg(not(loom))]
fn yield_now() {
    // SAFETY: sched_yield has no preconditions.
    unsafe { libc::sched_yield() };
}

#[cfg(loom)]
fn yield_now() {
    loom::thread::yield_now();
}
