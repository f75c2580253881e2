//! The movable region: one reservation of address space from which every movable arena is carved.
//!
//! Every movable block then lies in one *window*, `2^MOVABLE_WINDOW_BITS` bytes aligned to its size,
//! so its address is the window's fixed high bits plus a `MOVABLE_WINDOW_BITS`-bit offset. A
//! relocating cache's handle slot (relocate-api) stores only the offset, and spends the bits that
//! saves on generations.
//!
//! The region is reserved on the first movable arena, inaccessible (`PROT_NONE`: no memory, no commit
//! charge): `REGION_BYTES`, or half as much as often as the kernel refuses, down to `MIN_REGION_BYTES`,
//! placed so that it does not cross a window boundary (where the kernel put it, or else at a
//! window-aligned hint). An arena is a 2 MiB piece mapped writable over the reservation, and is given
//! back by mapping the piece inaccessible again, which frees its pages. Freed pieces wait on a stack
//! (in a mapping of its own, touched only as deep as it gets) and are reused before untouched ones.
//!
//! Invariants: the window's base is written once, before the first piece is handed out, and never
//! changes; every piece handed out lies in the region. All other state is under `REGION`'s lock,
//! which is taken inside the pool lock and takes no other lock.

use crate::lock::SpinLock;
use crate::os::{self, ARENA_BYTES};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Every movable block's address is the window base plus an offset below `2^MOVABLE_WINDOW_BITS`.
pub const MOVABLE_WINDOW_BITS: u32 = 44;
const WINDOW_BYTES: usize = 1 << MOVABLE_WINDOW_BITS;
/// The reservation asked for first (all the movable memory a process can have), and the least taken.
const REGION_BYTES: usize = 1 << 40;
const MIN_REGION_BYTES: usize = 1 << 30;

struct Region {
    /// First piece (2 MiB-aligned) and end of the usable reservation; both 0 until reserved.
    start: usize,
    end: usize,
    /// Pieces below this address have been handed out at least once.
    next: usize,
    /// Stack of freed piece numbers (`(piece - start) / ARENA_BYTES`), `free_len` deep.
    free: *mut u32,
    free_len: usize,
    /// Reserving failed: movable arenas cannot be had.
    failed: bool,
}

// SAFETY: the raw pointer is a mapping owned by the region, only touched under the lock.
unsafe impl Send for Region {}

static REGION: SpinLock<Region> = SpinLock::new(Region {
    start: 0,
    end: 0,
    next: 0,
    free: ptr::null_mut(),
    free_len: 0,
    failed: false,
});

/// The window's base (`0` until the region is reserved; it may also be 0 for good, when the region lies
/// below `2^MOVABLE_WINDOW_BITS`).
static WINDOW_BASE: AtomicUsize = AtomicUsize::new(0);

/// The high address bits every movable block shares: a movable block's address is this plus an
/// offset below `2^MOVABLE_WINDOW_BITS`. Constant once any movable block exists.
#[inline]
pub fn movable_window_base() -> usize {
    WINDOW_BASE.load(Ordering::Relaxed)
}

/// Reserves the region now if it is not yet (idempotent). False if it cannot be had: then no movable
/// arena can be made. Once it returns true, [`movable_window_base`] never changes.
pub fn reserve_movable_region() -> bool {
    REGION.lock().ready()
}

/// A fresh, zeroed, writable 2 MiB-aligned piece of the region for an arena; null when the region is
/// exhausted or cannot be reserved.
pub(crate) fn map_piece() -> *mut u8 {
    let mut region = REGION.lock();
    if !region.ready() {
        return ptr::null_mut();
    }
    let piece = if region.free_len > 0 {
        region.free_len -= 1;
        // SAFETY: entries below `free_len` were written by `unmap_piece`.
        let number = unsafe { *region.free.add(region.free_len) } as usize;
        region.start + number * ARENA_BYTES
    } else if region.next + ARENA_BYTES <= region.end {
        region.next += ARENA_BYTES;
        region.next - ARENA_BYTES
    } else {
        return ptr::null_mut();
    };
    // SAFETY: the piece lies in our reservation and holds nothing (never handed out, or freed).
    if unsafe { os::map_over(piece as *mut u8, ARENA_BYTES, true) } {
        piece as *mut u8
    } else {
        // A failed MAP_FIXED may have left a hole that another mapping can take: never reuse it.
        ptr::null_mut()
    }
}

/// Gives a piece's memory back to the kernel and keeps the piece for reuse.
///
/// # Safety
/// `piece` came from `map_piece` and nothing in it is used any more.
pub(crate) unsafe fn unmap_piece(piece: *mut u8) {
    let mut region = REGION.lock();
    debug_assert!((region.start..region.end).contains(&(piece as usize)));
    // SAFETY: the caller's contract: a piece of our reservation that holds nothing live.
    if !unsafe { os::map_over(piece, ARENA_BYTES, false) } {
        // The piece may still be mapped (then drop its pages) or be a hole: never reuse it.
        os::decommit(piece, ARENA_BYTES);
        return;
    }
    let number = (piece as usize - region.start) / ARENA_BYTES;
    let depth = region.free_len;
    // SAFETY: the stack holds one entry per piece of the region, and a piece is on it at most once.
    unsafe { *region.free.add(depth) = number as u32 };
    region.free_len = depth + 1;
}

impl Region {
    /// Whether the region is reserved, reserving it on the first call.
    fn ready(&mut self) -> bool {
        if self.start == 0 && !self.failed && !self.reserve() {
            self.failed = true;
        }
        !self.failed
    }

    /// Reserves the region and the free stack; false if the kernel refuses every size.
    fn reserve(&mut self) -> bool {
        let mut bytes = REGION_BYTES;
        while bytes >= MIN_REGION_BYTES {
            if let Some(base) = reserve_in_one_window(bytes) {
                let pieces = bytes / ARENA_BYTES;
                let stack_bytes = (pieces * 4).next_multiple_of(os::page_size());
                let stack = os::map_aligned(stack_bytes, os::page_size());
                if stack.is_null() {
                    os::unmap(base as *mut u8, bytes);
                    return false;
                }
                self.start = base.next_multiple_of(ARENA_BYTES);
                self.end = (base + bytes) & !(ARENA_BYTES - 1);
                self.next = self.start;
                self.free = stack.cast();
                WINDOW_BASE.store(base & !(WINDOW_BYTES - 1), Ordering::Relaxed);
                return true;
            }
            bytes /= 2;
        }
        false
    }
}

/// Reserves `bytes` inside one window: where the kernel puts it if that fits, else at a
/// window-aligned hint. The base address, or `None`.
fn reserve_in_one_window(bytes: usize) -> Option<usize> {
    let fits =
        |base: usize| base >> MOVABLE_WINDOW_BITS == (base + bytes - 1) >> MOVABLE_WINDOW_BITS;
    let hints = (1..16).map(|window| window << MOVABLE_WINDOW_BITS);
    for hint in core::iter::once(0).chain(hints) {
        let base = os::reserve(hint, bytes);
        if base.is_null() {
            return None;
        }
        if fits(base as usize) {
            return Some(base as usize);
        }
        os::unmap(base, bytes);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_lie_in_one_window_and_are_reused() {
        let first = map_piece();
        assert!(!first.is_null());
        let base = movable_window_base();
        assert_eq!(first as usize & !(WINDOW_BYTES - 1), base);
        assert_eq!(first as usize % ARENA_BYTES, 0);
        // SAFETY: a fresh writable piece.
        unsafe {
            assert_eq!(first.read(), 0);
            first.write(7);
            unmap_piece(first);
        }
        let again = map_piece();
        assert_eq!(again as usize & !(WINDOW_BYTES - 1), base);
        // SAFETY: a fresh writable piece (the freed one if no other test took it meanwhile).
        unsafe {
            assert_eq!(again.read(), 0, "a reused piece reads as zero");
            unmap_piece(again);
        }
    }
}
