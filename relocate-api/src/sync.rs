//! The one place this crate's atomics (and the locks and `Arc`s of the protocols the loom models
//! check) come from: `core`'s and `std`'s normally, loom's under `--cfg loom`, so the loom models in
//! `loom-tests` check the real slot protocol (`slot.rs`) and the batched hand-over (`retire.rs`).

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{
    fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex};

/// Movable blocks lie below `2^MOVABLE_ADDRESS_BITS` (see `alloc_core::movable`), so slots keep that
/// many address bits (the loom models place their objects there too).
#[cfg(not(loom))]
pub(crate) const MOVABLE_ADDRESS_BITS: u32 = alloc_core::movable::MOVABLE_ADDRESS_BITS;
#[cfg(loom)]
pub(crate) const MOVABLE_ADDRESS_BITS: u32 = 44;
// The loom copy above must match alloc-core's (which is not built under loom).
#[cfg(not(loom))]
const _: () = assert!(MOVABLE_ADDRESS_BITS == 44);

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
