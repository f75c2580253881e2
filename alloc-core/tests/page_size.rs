//! The page size is read from the kernel at run time, and what the allocator gives back is counted
//! in whole pages of that size (nothing assumes 4 KiB).
//!
//! - `page_size_matches_sysconf`: `alloc_core::page_size()` equals `sysconf(_SC_PAGESIZE)`.
//! - `page_multiples_are_in_run_time_pages`: blocks aligned to one and several pages are aligned,
//!   and `purge`'s released bytes and the committed counter are whole multiples of that page size.

use alloc_core::SlabAlloc;
use std::alloc::{GlobalAlloc, Layout};

static A: SlabAlloc = SlabAlloc::new();

#[test]
fn page_size_matches_sysconf() {
    // SAFETY: sysconf has no preconditions.
    let sys = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    assert!(sys > 0);
    assert_eq!(alloc_core::page_size(), sys as usize);
    assert!(alloc_core::page_size().is_power_of_two());
}

#[test]
fn page_multiples_are_in_run_time_pages() {
    let page = alloc_core::page_size();
    let mut blocks = Vec::new();
    for pages in [1, 2, 3, 16, 300] {
        for align in [page, 2 * page] {
            let layout = Layout::from_size_align(pages * page, align).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { A.alloc(layout) };
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "{pages} pages at align {align}");
            // SAFETY: the block is live and `pages * page` bytes long.
            unsafe { p.write_bytes(0x5a, layout.size()) };
            blocks.push((p, layout));
        }
    }
    // Dirty some small blocks too, so purge has slab pages to give back.
    let small = Layout::from_size_align(256, 8).unwrap();
    let smalls: Vec<*mut u8> = (0..20_000)
        .map(|_| {
            // SAFETY: non-zero size.
            let p = unsafe { A.alloc(small) };
            assert!(!p.is_null());
            // SAFETY: live, 256 bytes.
            unsafe { p.write_bytes(1, 256) };
            p
        })
        .collect();
    for (i, &p) in smalls.iter().enumerate() {
        if i % 4 != 0 {
            // SAFETY: allocated above with `small`, freed once.
            unsafe { A.dealloc(p, small) };
        }
    }
    for (p, layout) in blocks {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { A.dealloc(p, layout) };
    }
    let released = alloc_core::purge();
    assert!(released > 0, "purge released nothing");
    assert_eq!(released % page, 0, "purge released {released} bytes");
    assert_eq!(alloc_core::stats().committed_bytes % page, 0);
    for (i, &p) in smalls.iter().enumerate() {
        if i % 4 == 0 {
            // SAFETY: still live, allocated with `small`.
            unsafe { A.dealloc(p, small) };
        }
    }
}
