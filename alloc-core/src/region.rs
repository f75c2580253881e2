//! The movable region: one reservation of address space from which every movable arena is carved.
//!
//! The region lies below `2^MOVABLE_ADDRESS_BITS` (16 TiB), so every movable block's address fits in
//! that many bits: a relocating cache's handle slot (relocate-api) stores the address in 44 bits and
//! spends the rest on generations. Below 16 TiB, rather than anywhere in a 16 TiB window, so that a
//! read takes the address as it is: adding a window base back cost a load and an `or` on every `get`
//! (about 15 % in a scratch `get` loop over 1M objects).
//!
//! The region is reserved on the first movable arena, inaccessible (`PROT_NONE`: no memory, no commit
//! charge): `REGION_BYTES` (but at most a sixteenth of the address space), or half as much as often as
//! the kernel refuses, down to `MIN_REGION_BYTES`,
//! at one of a few hints below 16 TiB (on x86-64 and AArch64 Linux, mappings go near the top of the
//! address space unless asked, so this range is free; with a smaller address space everything is below
//! it). If no placement works (a sanitizer's shadow memory can fill that range), movable memory cannot
//! be had and making a relocating cache fails (each later attempt tries again). An arena is a 2 MiB piece mapped writable over the
//! reservation, and is given back by mapping the piece inaccessible again, which frees its pages.
//! Freed pieces wait on a stack (in a mapping of its own, touched only as deep as it gets) and are
//! reused before untouched ones.
//!
//! Invariants: every piece handed out lies in the region, below `2^MOVABLE_ADDRESS_BITS`. All state is
//! under `REGION`'s lock, which is taken inside the pool lock and takes no other lock.

use crate::lock::SpinLock;
use crate::os::{self, ARENA_BYTES};
use core::ptr;

/// Every movable block's address is below `2^MOVABLE_ADDRESS_BITS`.
pub const MOVABLE_ADDRESS_BITS: u32 = 44;
const ADDRESS_LIMIT: usize = 1 << MOVABLE_ADDRESS_BITS;
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
}

// SAFETY: the raw pointer is a mapping owned by the region, only touched under the lock.
unsafe impl Send for Region {}

static REGION: SpinLock<Region> = SpinLock::new(Region {
    start: 0,
    end: 0,
    next: 0,
    free: ptr::null_mut(),
    free_len: 0,
});

/// Reserves the region now if it is not yet (idempotent). False if it cannot be had: then no movable
/// arena can be made.
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
    /// Whether the region is reserved, reserving it now if not. A refusal is not final: a later call
    /// tries again (the kernel may have had a passing shortage).
    fn ready(&mut self) -> bool {
        self.start != 0 || self.reserve()
    }

    /// Reserves the region and the free stack; false if the kernel refuses every size. The region
    /// takes at most a sixteenth of the address space (judged from where the stack lies, near its top),
    /// so that on a small one (39-bit AArch64: 512 GiB) it leaves room for everything else.
    fn reserve(&mut self) -> bool {
        let local = 0u8;
        let address_space = (core::ptr::addr_of!(local) as usize).next_power_of_two();
        let mut bytes = REGION_BYTES.min(address_space / 16).max(MIN_REGION_BYTES);
        while bytes >= MIN_REGION_BYTES {
            if let Some(base) = reserve_low(bytes) {
                let pieces = bytes / ARENA_BYTES;
                let stack_bytes = (pieces * 4).next_multiple_of(os::page_size());
                let stack = os::map_aligned(stack_bytes, os::page_size());
                if stack.is_null() {
                    os::unmap(base as *mut u8, bytes);
                    bytes /= 2;
                    continue;
                }
                self.start = base.next_multiple_of(ARENA_BYTES);
                self.end = (base + bytes) & !(ARENA_BYTES - 1);
                self.next = self.start;
                self.free = stack.cast();
                return true;
            }
            bytes /= 2;
        }
        false
    }
}

/// Reserves `bytes` below `ADDRESS_LIMIT`: at a hint there (1 TiB first), or where the kernel puts
/// it if that is low enough. The base address, or `None`.
fn reserve_low(bytes: usize) -> Option<usize> {
    let hints = [1 << 40, 1 << 41, 1 << 42, 1 << 43, 1 << 36, 0];
    for hint in hints {
        if hint + bytes > ADDRESS_LIMIT {
            continue;
        }
        let base = os::reserve(hint, bytes);
        if base.is_null() {
            return None;
        }
        if base as usize + bytes <= ADDRESS_LIMIT {
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
    fn pieces_lie_low_and_are_reused() {
        let first = map_piece();
        assert!(!first.is_null());
        assert!((first as usize) < ADDRESS_LIMIT);
        assert_eq!(first as usize % ARENA_BYTES, 0);
        // SAFETY: a fresh writable piece.
        unsafe {
            assert_eq!(first.read(), 0);
            first.write(7);
            unmap_piece(first);
        }
        let again = map_piece();
        assert!((again as usize) < ADDRESS_LIMIT);
        // SAFETY: a fresh writable piece (the freed one if no other test took it meanwhile).
        unsafe {
            assert_eq!(again.read(), 0, "a reused piece reads as zero");
            unmap_piece(again);
        }
    }
}
