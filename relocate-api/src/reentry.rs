//! What this thread is in the middle of, so that a call that would wait for its own thread is
//! answered at once instead of waiting forever.
//!
//! Two stack-linked lists per thread, each of *frames*: a key (an address) registered for the length
//! of a call and unlinked when it returns or unwinds:
//! - [`CALLBACKS`]: the caches whose relocation callbacks this thread runs (a callback of one cache
//!   may compact another, so there may be several). Their lock is held by this thread, and the
//!   objects they have marked moving are this thread's to finish.
//! - [`HELD`]: the slots this thread holds for writing while an update's closure runs.
//!
//! Invariant: frames are unlinked in the reverse order of linking, which scoped calls guarantee for
//! threads, panics and nested calls (a frame lives in the frame of [`within`] that linked it, and
//! nothing outside this module can reach it). Code that suspends a stack in the middle of a callback
//! or an update closure and resumes another (stackful coroutines) would break that order: the unlink
//! checks it.

use crate::slot::Slot;
use core::cell::Cell;
use core::ptr;
use std::thread::LocalKey;

/// One entry of a list: a key and the entry it was linked in front of.
pub(crate) struct Frame {
    key: usize,
    outer: *const Frame,
}

/// The innermost frame of a list on this thread (null: empty).
pub(crate) type List = LocalKey<Cell<*const Frame>>;

thread_local! {
    /// The caches whose relocation callbacks this thread is running.
    pub(crate) static CALLBACKS: Cell<*const Frame> = const { Cell::new(ptr::null()) };
    /// The slots this thread holds for writing while an update's closure runs.
    pub(crate) static HELD: Cell<*const Frame> = const { Cell::new(ptr::null()) };
}

/// Runs `f` with `key` linked into `list` as its innermost frame.
pub(crate) fn within<U>(list: &'static List, key: usize, f: impl FnOnce() -> U) -> U {
    let frame = Frame {
        key,
        outer: list.with(Cell::get),
    };
    list.with(|l| l.set(&frame));
    /// Unlinks `frame` when dropped, also on unwinding (declared after it, so dropped before it).
    struct Unlink<'a>(&'static List, &'a Frame);
    impl Drop for Unlink<'_> {
        fn drop(&mut self) {
            let innermost = self.0.with(|l| l.replace(self.1.outer));
            // Out of order only if a frame outlived its call (a coroutine switched stacks inside
            // one): a later `contains` would read a dead frame. One compare; never in a sound run.
            assert!(ptr::eq(innermost, self.1), "frames unlinked out of order");
        }
    }
    let _unlink = Unlink(list, &frame);
    f()
}

/// Runs `f` with `slot` marked as held for writing by this thread.
pub(crate) fn holding<U>(slot: &Slot, f: impl FnOnce() -> U) -> U {
    within(&HELD, slot as *const Slot as usize, f)
}

/// Whether this thread holds `slot` for writing (inside an update's closure of its object).
pub(crate) fn holds(slot: &Slot) -> bool {
    contains(&HELD, slot as *const Slot as usize)
}

/// Whether `key` is linked in `list` on this thread.
pub(crate) fn contains(list: &'static List, key: usize) -> bool {
    let mut frame = list.with(Cell::get);
    while !frame.is_null() {
        // SAFETY: linked frames live in the frames of `within` calls still running on this thread,
        // which unlink them before they end (the module's invariant).
        let linked = unsafe { &*frame };
        if linked.key == key {
            return true;
        }
        frame = linked.outer;
    }
    false
}
