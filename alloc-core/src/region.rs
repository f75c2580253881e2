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
//! the kernel refuses, down to `MIN_REGION_BYTES`, at one of a few hints below 16 TiB (on x86-64 and
//! AArch64 Linux, mappings go near the top of the address space unless asked, so this range is free;
//! with a smaller address space everything is below it). If no placement works (a sanitizer's shadow
//! memory can fill that range), movable memory cannot be had and making a relocating cache fails (each
//! later attempt tries again).
//!
//! The region has two halves. An arena's data is a 2 MiB *piece* of the lower half and its metadata
//! (descriptors, header, liveness bitmap, back-map) the piece at the same offset in the upper half,
//! `META_OFFSET` bytes on. Out of the data piece, the metadata leaves the whole piece to slabs, and a
//! piece can be one transparent huge page whose every byte is data: with metadata inside, a huge page
//! would make the metadata's untouched pages resident too (9 of 32 units). Metadata pieces stay on
//! 4 KiB pages, resident only as far as they are written. Both pieces are 2 MiB-aligned, so a
//! descriptor's address masked to 2 MiB is its arena's metadata, as in a normal arena.
//!
//! A piece is mapped writable over the reservation (data and metadata together), and is given back by
//! mapping both inaccessible again, which frees their pages. Freed pieces wait on a stack (in a mapping
//! of its own, touched only as deep as it gets) and are reused before untouched ones.
//!
//! Invariants: every data piece handed out lies in the lower half, below `2^MOVABLE_ADDRESS_BITS`;
//! `DATA_START`, `DATA_END` and `META_OFFSET` are written once, before the first piece is handed out,
//! and never change. All other state is under `REGION`'s lock, which is taken inside the pool lock and
//! takes no other lock.

use crate::lock::SpinLock;
use crate::os::{self, ARENA_BYTES};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Every movable block's address is below `2^MOVABLE_ADDRESS_BITS`.
pub const MOVABLE_ADDRESS_BITS: u32 = 44;
const ADDRESS_LIMIT: usize = 1 << MOVABLE_ADDRESS_BITS;
/// The reservation asked for first (all the movable memory a process can have), and the least taken.
const REGION_BYTES: usize = 1 << 40;
const MIN_REGION_BYTES: usize = 1 << 30;

/// The lower half (data pieces), and how far above a data piece its metadata piece lies; 0 until the
/// region is reserved, then fixed.
static DATA_START: AtomicUsize = AtomicUsize::new(0);
static DATA_END: AtomicUsize = AtomicUsize::new(0);
static META_OFFSET: AtomicUsize = AtomicUsize::new(0);

struct Region {
    /// First data piece (2 MiB-aligned) and end of the data half; both 0 until reserved.
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

/// `pthread_atfork` support (see `pool::lock_all_for_fork`): a fork while another thread reserves
/// the region (which holds this lock across its `mmap` attempts, outside the pool lock) must not
/// leave the child with the lock held.
pub(crate) fn lock_for_fork() {
    REGION.lock_raw();
}

/// # Safety
/// - After `lock_for_fork`, once, in the parent or in the child.
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: the caller's contract.
    unsafe { REGION.unlock_raw() };
}

/// Reserves the region now if it is not yet (idempotent). False if it cannot be had: then no movable
/// arena can be made.
pub fn reserve_movable_region() -> bool {
    REGION.lock().ready()
}

/// The start of the region's data half (2 MiB-aligned), or 0 while the region is not reserved. It never
/// changes once set.
pub fn data_start() -> usize {
    DATA_START.load(Ordering::Acquire)
}

/// Whether `addr` lies in a movable arena's data (a piece of the region's lower half).
#[inline]
pub(crate) fn is_data(addr: usize) -> bool {
    // Acquire pairs with the release that publishes the start after the end; the bounds are written
    // once, before any piece (so any movable address) exists. While the start is 0 the end may be
    // set already (the reservation under way), and every address below it would pass.
    let start = DATA_START.load(Ordering::Acquire);
    start != 0 && addr.wrapping_sub(start) < DATA_END.load(Ordering::Relaxed) - start
}

/// The metadata piece of the arena holding `addr`, a movable arena's data address.
#[inline]
pub(crate) fn meta_of_data(addr: usize) -> usize {
    debug_assert!(is_data(addr));
    (addr & !(ARENA_BYTES - 1)) + META_OFFSET.load(Ordering::Relaxed)
}

/// A fresh, zeroed, writable 2 MiB-aligned data piece of the region for an arena, its metadata piece
/// (`meta_of_data`) zeroed and writable too; null when the region is exhausted or cannot be reserved.
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
    let meta = meta_of_data(piece);
    // SAFETY: both pieces lie in our reservation and hold nothing (never handed out, or freed).
    if unsafe {
        os::map_over(piece as *mut u8, ARENA_BYTES, true)
            && os::map_over(meta as *mut u8, ARENA_BYTES, true)
    } {
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
    let meta = meta_of_data(piece as usize) as *mut u8;
    // SAFETY: the caller's contract: a data piece of our reservation that holds nothing live, and its
    // metadata piece, which nothing reads once the arena is off the pool's lists.
    if !unsafe { os::map_over(piece, ARENA_BYTES, false) && os::map_over(meta, ARENA_BYTES, false) }
    {
        // The pieces may still be mapped (then drop their pages) or be holes: never reuse them.
        os::decommit(piece, ARENA_BYTES);
        os::decommit(meta, ARENA_BYTES);
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
                let pieces = bytes / ARENA_BYTES / 2;
                let stack_bytes = (pieces * 4).next_multiple_of(os::page_size());
                let stack = os::map_aligned(stack_bytes, os::page_size());
                if stack.is_null() {
                    os::unmap(base as *mut u8, bytes);
                    bytes /= 2;
                    continue;
                }
                let start = base.next_multiple_of(ARENA_BYTES);
                let half = ((base + bytes - start) / 2) & !(ARENA_BYTES - 1);
                self.start = start;
                self.end = start + half;
                self.next = self.start;
                self.free = stack.cast();
                META_OFFSET.store(half, Ordering::Relaxed);
                DATA_END.store(start + half, Ordering::Relaxed);
                DATA_START.store(start, Ordering::Release);
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
        let meta = meta_of_data(first as usize + 12345) as *mut u8;
        assert_eq!(meta as usize % ARENA_BYTES, 0);
        assert!(is_data(first as usize) && is_data(first as usize + ARENA_BYTES - 1));
        assert!(
            !is_data(meta as usize),
            "metadata pieces lie outside the data half"
        );
        assert!(!is_data(0) && !is_data(usize::MAX));
        // SAFETY: fresh writable data and metadata pieces.
        unsafe {
            assert_eq!(first.read(), 0);
            assert_eq!(meta.add(ARENA_BYTES - 1).read(), 0);
            first.write(7);
            meta.write(7);
            unmap_piece(first);
        }
        let again = map_piece();
        assert!((again as usize) < ADDRESS_LIMIT);
        let meta = meta_of_data(again as usize) as *mut u8;
        // SAFETY: fresh writable pieces (the freed ones if no other test took them meanwhile).
        unsafe {
            assert_eq!(again.read(), 0, "a reused piece reads as zero");
            assert_eq!(meta.read(), 0, "a reused metadata piece reads as zero");
            unmap_piece(again);
        }
    }
}
