//! Loom models of alloc-core's and relocate-api's lock-free protocols.
//!
//! The models live in `tests/`, one file per protocol, and are compiled only under `--cfg loom`,
//! when `alloc_core::remote` and `alloc_core::lock` are built on loom's atomics (through
//! alloc-core's `sync` shim), and so are `relocate_api::slot` and `relocate_api::retire` (through
//! relocate-api's `sync` shim): the models drive the real list, lock, slot and retire code, not a
//! copy of it. A plain `cargo test --workspace` compiles them to nothing. The epoch models
//! (`tests/slot_retire.rs`, `tests/batch_retire.rs`) also need crossbeam-epoch on loom's atomics,
//! which it is under `--cfg crossbeam_loom` (with its `loom` feature, which this crate turns on
//! under `cfg(loom)`). Run them all with
//!
//! ```text
//! RUSTFLAGS="--cfg loom --cfg crossbeam_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target-loom \
//!     cargo test -p loom-tests --release
//! ```
//!
//! (With `--cfg loom` alone every model but `slot_retire` and `batch_retire` runs.)
//!
//! | file | protocol | what the model proves |
//! |---|---|---|
//! | `tests/remote_free.rs` | `RemoteFreeList` push / take | concurrent pushes and takes lose and duplicate no block, and a freer's writes happen-before the owner's reuse |
//! | `tests/notify.rs` | `take_and_arm` / `disarm` / `Pushed::NotifyOwner` / `DelayedFreeList` | the notify flag is consumed exactly once per arming (by a remote free or by `disarm`), and its block reaches the owner through the delayed list |
//! | `tests/abandon.rs` | heap abandonment and adoption through a `SpinLock` list | remote frees into an abandoned heap are all collected by the adopter, and the adopter sees the owner-private state the abandoning thread wrote |
//! | `tests/spin_lock.rs` | `SpinLock` | mutual exclusion, and each critical section happens-before the next |
//! | `tests/slot.rs` | relocate-api's `Slot`: `read`, `begin_write`/`finish_write`, `begin_remove`, `pin`, `publish_new` vs. `try_isolate`/`publish_move` | a reader racing a move sees a whole object (old or new copy) and the right generation; a writer and the mover hold an object one at a time and no update is lost; a remove racing a move ends removed (generation bumped, nothing resolves, no block leaked or freed twice); a pinned object is never moved and its in-place write is never lost; a stale handle never resolves to the slot's next object |
//! | `tests/slot_retire.rs` | a move's old block retired through crossbeam-epoch (`guard.defer`) while a pinned reader holds it | the reader never reads a freed block, and the old block is freed exactly once (needs `--cfg crossbeam_loom`) |
//! | `tests/batch_retire.rs` | relocate-api's `retire`: a removal's block and slot in an `OpenBatch`, handed over with the guard, through the epoch to `Retired` and the next take | the slot is reusable at once and the old generation then resolves to the removed object or nothing; the block waits for the reader, is dropped once before it is queued, and comes back exactly once, whichever thread runs the deferred function (needs `--cfg crossbeam_loom`) |
//!
//! This library holds what the models share (under `cfg(loom)` only): test blocks and the remote-free
//! path, and the slot models' object heap `Objects` (`support`), a model runner with a default
//! preemption bound (`model`), and `Coverage`.
//!
//! Writing models that prove something:
//! - Put a `loom::thread::yield_now()` between an owner's steps. Loom's scheduler avoids preemption,
//!   and its DPOR tracks only the last access to each atomic, so a take that starts with a plain load
//!   can otherwise run before every push in every explored execution, and the model passes vacuously.
//! - Count the interesting executions with a `Coverage` and assert after the model that each was
//!   reached; check new models by mutation (weaken an ordering or split an RMW in a scratch copy of
//!   alloc-core and watch the model fail).
//! - At most one thread may wait for a held `SpinLock` at a time: loom has no fairness and will
//!   schedule two spinners against each other forever. And the lock must not store while it waits
//!   (a failed `swap(true)` does): loom orders concurrent stores only partially, so a spinner's own
//!   `true` can stay readable forever after the holder's releasing `false`, and the model hits
//!   loom's branch limit.

#[cfg(loom)]
pub mod support;

/// Runs `f` under loom, every interleaving up to the preemption bound, and reports on stderr how
/// many executions that took (visible with `--nocapture`).
///
/// The bound is `LOOM_MAX_PREEMPTIONS` when set, else 2 (the CI setting), so that a run without the
/// variable still finishes.
#[cfg(loom)]
pub fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    // A std atomic on purpose: the count is bookkeeping outside the model.
    let executions = Arc::new(AtomicUsize::new(0));
    let counter = executions.clone();
    let start = std::time::Instant::now();
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    });
    eprintln!(
        "loom: {} executions in {:.2?} (preemption bound {:?})",
        executions.load(Ordering::Relaxed),
        start.elapsed(),
        builder.preemption_bound,
    );
}

/// Counts the executions of a model that reached an interesting state, so that a model can assert it
/// was not vacuous (loom explores only what its scheduler reaches; a model whose racing operations
/// never overlap proves nothing about the race).
#[cfg(loom)]
pub struct Coverage {
    what: &'static str,
    // A std atomic on purpose: the count is bookkeeping outside the model.
    hits: std::sync::atomic::AtomicUsize,
}

#[cfg(loom)]
impl Coverage {
    /// A counter for executions in which `what` happened.
    pub const fn new(what: &'static str) -> Self {
        Self {
            what,
            hits: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Records one execution; `reached` says whether it reached the state.
    pub fn record(&self, reached: bool) {
        if reached {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Panics unless some execution reached the state; reports how many did.
    pub fn assert_reached(&self) {
        let hits = self.hits.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("coverage: {} in {hits} executions", self.what);
        assert!(hits > 0, "the model never reached: {}", self.what);
    }
}
