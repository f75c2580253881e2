//! The one place this crate's atomics come from: `core`'s normally, loom's under `--cfg loom`, so the
//! loom models in `loom-tests` check the real slot protocol (`slot.rs`).

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};

/// The high address bits every movable block shares (see `alloc_core::movable`); slots store the rest.
/// Under loom, where no movable memory exists, the models' addresses are stored whole.
#[inline]
pub(crate) fn movable_window_base() -> usize {
    #[cfg(not(loom))]
    return alloc_core::movable::movable_window_base();
    #[cfg(loom)]
    return LOOM_WINDOW.load(std::sync::atomic::Ordering::Relaxed) & !1;
}

/// Under loom, the models' objects come from the system allocator, and the first object's window is
/// the window (see `slot::use_window_of`); bit 0 marks it chosen. A plain atomic, outside the model.
#[cfg(loom)]
pub(crate) static LOOM_WINDOW: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// Bits of a movable block's offset in its window.
#[cfg(not(loom))]
pub(crate) const MOVABLE_WINDOW_BITS: u32 = alloc_core::movable::MOVABLE_WINDOW_BITS;
#[cfg(loom)]
pub(crate) const MOVABLE_WINDOW_BITS: u32 = 44;

/// Waiting for a writer or mover of one object: spin briefly, then yield.
pub(crate) fn backoff(spins: &mut u32) {
    *spins += 1;
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    {
        if *spins < 64 {
            core::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}
