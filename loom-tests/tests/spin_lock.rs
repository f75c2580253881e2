//! Model: `SpinLock` mutual exclusion.
//!
//! Two threads each increment a counter in a loom `UnsafeCell` under the real `SpinLock` (`lock`, the
//! guard's `Deref`, unlock on drop); the main thread joins them and reads the counter under the lock.
//! Two contenders, not more: with two threads spinning on a held lock, loom (which has no fairness)
//! can schedule the two spinners against each other forever. What it proves, for every interleaving
//! up to the preemption bound:
//! - no two critical sections overlap, and each happens-before the next one (loom panics on any
//!   concurrent or unordered access to the cell: lock's acquire swap pairs with unlock's release store);
//! - no increment is lost, and the lock is free again at the end (a final `lock` does not spin forever).
#![cfg(loom)]

use alloc_core::lock::SpinLock;
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use loom_tests::Coverage;

const SPAWNED: usize = 2;

static CONTENDED: Coverage =
    Coverage::new("a thread waited in lock() while the other held the lock");

/// Threads between the start of their `lock()` and the end of their critical section. A std atomic on
/// purpose: loom runs one thread at a time, so this is the true state of the execution, outside the
/// model.
type InLock = std::sync::Arc<std::sync::atomic::AtomicUsize>;

fn increment(lock: &SpinLock<UnsafeCell<usize>>, in_lock: &InLock) {
    use std::sync::atomic::Ordering::SeqCst;
    in_lock.fetch_add(1, SeqCst);
    let guard = lock.lock();
    // Holding the lock, any other thread counted here is inside `lock()`, waiting for us.
    CONTENDED.record(in_lock.load(SeqCst) == SPAWNED);
    guard.with_mut(|count| {
        // SAFETY: we hold the lock, so this is the only access to the counter; loom checks that.
        unsafe { *count += 1 }
    });
    in_lock.fetch_sub(1, SeqCst);
}

#[test]
fn spin_lock_excludes_and_orders_critical_sections() {
    loom_tests::model(|| {
        let lock = Arc::new(SpinLock::new(UnsafeCell::new(0)));
        let in_lock = InLock::default();
        let threads: Vec<_> = (0..SPAWNED)
            .map(|_| {
                let (lock, in_lock) = (lock.clone(), in_lock.clone());
                thread::spawn(move || increment(&lock, &in_lock))
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let guard = lock.lock();
        // SAFETY: we hold the lock and every other thread has finished.
        let count = guard.with(|count| unsafe { *count });
        assert_eq!(count, SPAWNED);
    });
    CONTENDED.assert_reached();
}
