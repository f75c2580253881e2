//! The one place atomics come from.
//!
//! Normal builds use `core`'s atomics; under `--cfg loom` the same names are loom's, so the loom models
//! in `loom-tests` check the real protocol code rather than a copy of it. Only the protocol modules
//! (`remote`, `lock`) are compiled under loom: the global allocator's statics need `const`
//! constructors, which loom's atomics do not have.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};
#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};

pub(crate) use core::sync::atomic::Ordering;

/// Spin-wait hint; under loom a yield so the model can schedule the thread we wait for.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}
