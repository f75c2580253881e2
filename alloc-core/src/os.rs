//! Platform layer: the only module that talks to the kernel.
//!
//! It holds OS facts and nothing else: how to reserve aligned address space, how to give pages back,
//! what the page size is. Policy (when to decommit, what to keep) lives in the arena layer.
//!
//! Facts this module relies on, each with its reason:
//! - Anonymous private mappings read as zero until written, and again after `MADV_DONTNEED`: that is
//!   what lets `alloc_zeroed` skip the memset on fresh or decommitted memory.
//! - `MADV_FREE` is cheaper but the pages keep counting in the resident set until the kernel is under
//!   pressure, and may read back old contents; so decommit uses `MADV_DONTNEED` (the resident set is what
//!   users measure) and `MADV_FREE` is offered only as `decommit_lazy`, with `MADV_DONTNEED` as fallback.
//! - A 2 MiB-aligned reservation is made by over-mapping and trimming both ends: `mmap` has no alignment
//!   argument, and trimming keeps the kernel's view exact.
//! - No `MAP_HUGETLB`: a hugetlb page cannot be partly given back (`MADV_DONTNEED` on less than the
//!   whole page fails), and the arena layer decommits 64 KiB units and counts on them reading as zero
//!   afterwards. Arenas that pay for huge pages get transparent ones instead (see `arena`).
//! - The page size is read at run time (`sysconf`), never assumed: 16 KiB and 64 KiB kernels exist.
//!
//! Nothing here allocates through the global allocator or panics; a failed call is a null return.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// 2 MiB: the arena size and the huge-page size this allocator is built around.
pub(crate) const ARENA_BYTES: usize = 2 << 20;

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// Starts loading the cache line at `addr` (a hint for loops whose next accesses are known but
/// scattered; nothing happens on targets without a prefetch instruction). Any address is fine: a
/// prefetch never faults.
#[inline(always)]
pub fn prefetch(addr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads no memory architecturally and cannot fault, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(addr.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// The kernel's page size in bytes (read once, then cached).
#[inline]
pub fn page_size() -> usize {
    let cached = PAGE_SIZE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    page_size_slow()
}

#[cold]
fn page_size_slow() -> usize {
    // SAFETY: sysconf has no preconditions.
    let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let size = if raw > 0 && (raw as usize).is_power_of_two() {
        raw as usize
    } else {
        4096
    };
    PAGE_SIZE.store(size, Ordering::Relaxed);
    size
}

/// The first byte of an environment variable's value, read without allocating (`getenv` returns a
/// pointer into the process environment). `None` when unset or empty.
pub(crate) fn env_first_byte(name_nul: &[u8]) -> Option<u8> {
    debug_assert_eq!(name_nul.last(), Some(&0));
    // SAFETY: `name_nul` is NUL-terminated (every caller passes a literal ending in `\0`); getenv
    // only reads it.
    let value = unsafe { libc::getenv(name_nul.as_ptr().cast()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: getenv returned a non-null pointer to a NUL-terminated string; we read its first byte.
    let first = unsafe { *value.cast::<u8>() };
    (first != 0).then_some(first)
}

/// Maps `bytes` of fresh, zeroed, readable and writable memory anywhere. Null on failure.
fn map_anywhere(bytes: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with a null hint has no preconditions; the result is
    // checked against MAP_FAILED before use.
    let addr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        addr.cast()
    }
}

/// Reserves `bytes` (a multiple of the page size) at an address aligned to `align` (a power of two,
/// at least the page size). The memory reads as zero. Null on failure.
pub(crate) fn map_aligned(bytes: usize, align: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && align >= page_size());
    debug_assert_eq!(bytes % page_size(), 0);
    let Some(over) = bytes.checked_add(align - page_size()) else {
        return ptr::null_mut();
    };
    let raw = map_anywhere(over);
    if raw.is_null() {
        return raw;
    }
    let start = (raw as usize).next_multiple_of(align);
    let head = start - raw as usize;
    let tail = over - head - bytes;
    if head > 0 {
        unmap(raw, head);
    }
    if tail > 0 {
        // `start + bytes` lies within the original mapping: head + bytes + tail == over.
        unmap(raw.wrapping_add(head + bytes), tail);
    }
    raw.wrapping_add(head)
}

/// Reserves `bytes` of address space that holds no memory and costs no commit charge (`PROT_NONE`),
/// at `hint` if that range is free (else where the kernel likes). Null on failure.
pub(crate) fn reserve(hint: usize, bytes: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping without MAP_FIXED never replaces an existing mapping; the
    // hint is only a hint. The result is checked against MAP_FAILED before use.
    let addr = unsafe {
        libc::mmap(
            hint as *mut libc::c_void,
            bytes,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        addr.cast()
    }
}

/// Replaces a part of one of our reservations with fresh memory: zeroed and writable (`writable`),
/// or inaccessible again, its pages freed. False on failure; the range may then be unmapped (a failed
/// `MAP_FIXED` can leave a hole), so the caller must not use it again.
///
/// # Safety
/// `addr..addr + bytes` is page-aligned, lies in a reservation of ours, and holds nothing live.
pub(crate) unsafe fn map_over(addr: *mut u8, bytes: usize, writable: bool) -> bool {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_NONE
    };
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED;
    // SAFETY: the caller's contract: MAP_FIXED replaces only a range of our own reservation that
    // holds nothing live.
    unsafe { libc::mmap(addr.cast(), bytes, prot, flags, -1, 0) != libc::MAP_FAILED }
}

/// Returns a mapping (or part of one) to the kernel.
pub(crate) fn unmap(addr: *mut u8, bytes: usize) {
    if bytes == 0 {
        return;
    }
    // SAFETY: callers pass a range they mapped with `map_aligned` and no longer use; munmap of such
    // a range has no other precondition, and failure only leaves the pages mapped.
    unsafe { libc::munmap(addr.cast(), bytes) };
}

/// `unmap`, saying whether the kernel did it (it may refuse to split a mapping when the process is
/// at its limit of mappings, `vm.max_map_count`).
pub(crate) fn try_unmap(addr: *mut u8, bytes: usize) -> bool {
    // SAFETY: as in `unmap`.
    bytes == 0 || unsafe { libc::munmap(addr.cast(), bytes) } == 0
}

/// Grows a mapping where it is, if the address space after it is free. No copying.
pub(crate) fn remap_in_place(addr: *mut u8, old_bytes: usize, new_bytes: usize) -> bool {
    // SAFETY: `addr..addr+old_bytes` is a whole mapping of ours; without MREMAP_MAYMOVE the kernel either
    // extends it in place or fails and leaves it untouched.
    let moved = unsafe { libc::mremap(addr.cast(), old_bytes, new_bytes, 0) };
    moved != libc::MAP_FAILED
}

/// Moves a mapping's pages to `target` (a reservation of `new_bytes` that it replaces) and grows it to
/// `new_bytes`. The page tables move; the contents are not copied. On failure both stay as they were.
pub(crate) fn remap_to(addr: *mut u8, old_bytes: usize, target: *mut u8, new_bytes: usize) -> bool {
    // SAFETY: both ranges are whole mappings of ours that nothing else uses; MREMAP_FIXED replaces the
    // reservation at `target` and unmaps the old range only on success.
    let moved = unsafe {
        libc::mremap(
            addr.cast(),
            old_bytes,
            new_bytes,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            target,
        )
    };
    moved != libc::MAP_FAILED
}

/// Asks for transparent huge pages on a 2 MiB-aligned range, or withdraws the request (a hint; errors
/// are ignored).
pub(crate) fn advise_hugepage(addr: *mut u8, bytes: usize, huge: bool) {
    let advice = if huge {
        libc::MADV_HUGEPAGE
    } else {
        libc::MADV_NOHUGEPAGE
    };
    // SAFETY: madvise with MADV_(NO)HUGEPAGE only changes the paging policy of a range we mapped.
    unsafe { libc::madvise(addr.cast(), bytes, advice) };
}

/// Makes a page-aligned range resident and writable in one call (`MADV_POPULATE_WRITE`, Linux 5.14),
/// instead of one page fault per page as it is first written. A hint: errors (older kernels, memory
/// pressure) are ignored, and the pages then fault in as usual.
pub(crate) fn populate(addr: *mut u8, bytes: usize) {
    // SAFETY: madvise on a range we mapped read-write; populating only faults its pages in.
    unsafe { libc::madvise(addr.cast(), bytes, libc::MADV_POPULATE_WRITE) };
}

/// Gives the physical pages of a page-aligned range back; the range stays mapped and reads as zero.
pub(crate) fn decommit(addr: *mut u8, bytes: usize) {
    debug_assert_eq!(addr as usize % page_size(), 0);
    debug_assert_eq!(bytes % page_size(), 0);
    if bytes == 0 {
        return;
    }
    // SAFETY: the range is page-aligned, mapped by us and holds no live object (the caller's
    // contract); MADV_DONTNEED on a private anonymous mapping just drops its pages.
    unsafe { libc::madvise(addr.cast(), bytes, libc::MADV_DONTNEED) };
}

/// Like `decommit`, but lets the kernel take the pages only under memory pressure (`MADV_FREE`).
/// The range may read back old contents afterwards, so it is never assumed zero.
pub fn decommit_lazy(addr: *mut u8, bytes: usize) {
    // SAFETY: as in `decommit`; MADV_FREE is the lazy variant and fails on kernels before 4.5.
    let rc = unsafe { libc::madvise(addr.cast(), bytes, libc::MADV_FREE) };
    if rc != 0 {
        decommit(addr, bytes);
    }
}

/// Monotonic milliseconds (coarse clock: a vDSO read, cheap enough for slow paths).
pub(crate) fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// Writes bytes to standard error without allocating (for abort messages).
#[cfg(feature = "checked")]
pub(crate) fn write_stderr(bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: `rest` is a valid readable slice; write(2) only reads it.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            return;
        }
        rest = &rest[n as usize..];
    }
}

/// Aborts the process (never unwinds: this is called from inside the allocator).
#[cfg(feature = "checked")]
pub(crate) fn abort() -> ! {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}
