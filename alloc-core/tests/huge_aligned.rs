//! Huge allocations aligned to 2 MiB or more hold no more address space than their pages and their
//! metadata, and the statistics count them by their requested size.
//!
//! The mapping used to keep the whole alignment in front of the object (2 MiB of address space for
//! a 4 KiB buffer aligned to 2 MiB, 1 GiB for one aligned to 1 GiB), and `allocated_bytes` and
//! `committed_bytes` counted it: 1,000 such buffers were 2 GB in the statistics.
//!
//! One test in its own binary, with the allocator called directly (the harness runs on `System`),
//! so that nothing else moves the statistics or the address space between its readings.

use alloc_core::SlabAlloc;
use std::alloc::{GlobalAlloc, Layout};

static A: SlabAlloc = SlabAlloc::new();
const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// The process's address space, from the kernel (`/proc/self/statm`, first field, in pages).
fn address_space_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

#[test]
fn aligned_huge_allocations_map_and_count_what_they_use() {
    const N: usize = 200;
    // The allocator's own first mappings (its registry of chunks, with `checked`) come first.
    let warm_up = Layout::from_size_align(4 * KIB, 2 * MIB).unwrap();
    // SAFETY: a non-zero size; freed at once with its layout.
    unsafe { A.dealloc(A.alloc(warm_up), warm_up) };
    let before = (alloc_core::stats(), address_space_bytes());
    let mut blocks: Vec<(*mut u8, Layout)> = Vec::new();
    for i in 0..N {
        // 4 KiB to 2 MiB + 4 KiB, aligned to 2 MiB; and two at 1 GiB.
        let size = if i % 2 == 0 {
            4 * KIB
        } else {
            2 * MIB + 4 * KIB
        };
        let align = if i < 2 { 1 << 30 } else { 2 * MIB };
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { A.alloc(layout) };
        assert!(!p.is_null() && p as usize % align == 0, "{layout:?}");
        // SAFETY: the block is `size` bytes.
        unsafe { p.write_bytes(i as u8, size) };
        blocks.push((p, layout));
    }
    let requested: usize = blocks.iter().map(|(_, l)| l.size()).sum();
    let during = (alloc_core::stats(), address_space_bytes());
    let mapped = during.0.huge_mapped_bytes - before.0.huge_mapped_bytes;
    assert_eq!(
        during.0.huge_allocated_bytes - before.0.huge_allocated_bytes,
        requested
    );
    assert_eq!(
        during.0.allocated_bytes - before.0.allocated_bytes,
        requested
    );
    // Each: its pages and at most 64 KiB of metadata (a page or two in fact).
    assert!(
        mapped >= requested && mapped <= requested + N * 64 * KIB,
        "{mapped} bytes mapped for {requested}"
    );
    assert!(during.0.committed_bytes - before.0.committed_bytes <= mapped);
    // What the kernel sees: the same, not N times the alignment (400 MiB, and 2 GiB for the two
    // aligned to 1 GiB); a little room for whatever the harness maps meanwhile.
    let grew = during.1 - before.1;
    assert!(
        grew <= mapped + 8 * MIB,
        "address space grew {grew} for {mapped}"
    );

    // Shrinking in place and growing (by copy, as for every 2 MiB-aligned block) keep the count.
    let (p, layout) = blocks[3];
    // SAFETY: a live block of this layout.
    let p = unsafe { A.realloc(p, layout, MIB + 8 * KIB) };
    assert!(!p.is_null() && p as usize % layout.align() == 0);
    let layout = Layout::from_size_align(MIB + 8 * KIB, layout.align()).unwrap();
    // SAFETY: as above.
    let p = unsafe { A.realloc(p, layout, 5 * MIB) };
    assert!(!p.is_null() && p as usize % layout.align() == 0);
    // SAFETY: the first bytes came along both times.
    assert_eq!(unsafe { *p.add(MIB) }, 3);
    blocks[3] = (p, Layout::from_size_align(5 * MIB, layout.align()).unwrap());
    let requested: usize = blocks.iter().map(|(_, l)| l.size()).sum();
    let stats = alloc_core::stats();
    assert_eq!(
        stats.huge_allocated_bytes - before.0.huge_allocated_bytes,
        requested
    );

    for (p, layout) in blocks {
        // SAFETY: live blocks of these layouts, freed once.
        unsafe { A.dealloc(p, layout) };
    }
    let after = alloc_core::stats();
    assert_eq!(after.huge_allocated_bytes, before.0.huge_allocated_bytes);
    assert_eq!(after.huge_mapped_bytes, before.0.huge_mapped_bytes);
}
