//! Freed huge mappings are kept, briefly and within a bound, for the next huge allocations (which
//! take one that fits, or grow a smaller one), and given back after the decommit delay or at
//! `purge`.
//!
//! Each huge allocation was a fresh mapping whose pages faulted in again: a service that took a
//! 2 MB buffer per request paid about 400 µs for it, against 3 µs with mimalloc.
//!
//! One test in its own binary, with the allocator called directly (the harness runs on `System`),
//! so that nothing else moves the statistics or the address space between its readings.

use alloc_core::SlabAlloc;
use std::alloc::{GlobalAlloc, Layout};
use std::time::Duration;

static A: SlabAlloc = SlabAlloc::new();
const MIB: usize = 1 << 20;

/// The process's address space, from the kernel (`/proc/self/statm`, first field, in pages).
fn address_space_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// The minor page faults of this process so far (`getrusage`).
fn minor_faults() -> i64 {
    // SAFETY: an all-zero `rusage` is valid, and getrusage writes only into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    usage.ru_minflt
}

/// The process's resident set, from the kernel (`/proc/self/statm`, second field, in pages).
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// Allocates `layout` (zeroed if asked), checks it is zero if so, fills it with `byte`.
fn take(layout: Layout, zeroed: bool, byte: u8) -> *mut u8 {
    // SAFETY: a non-zero size.
    let p = unsafe {
        if zeroed {
            A.alloc_zeroed(layout)
        } else {
            A.alloc(layout)
        }
    };
    assert!(
        !p.is_null() && p as usize % layout.align() == 0,
        "{layout:?}"
    );
    // SAFETY: the block is `layout.size()` bytes, ours.
    let bytes = unsafe { std::slice::from_raw_parts_mut(p, layout.size()) };
    if zeroed {
        assert!(
            bytes.iter().all(|&b| b == 0),
            "a zeroed allocation reads zero"
        );
    }
    bytes.fill(byte);
    p
}

/// Checks the block still holds `byte` everywhere and frees it.
fn give(p: *mut u8, layout: Layout, byte: u8) {
    // SAFETY: allocated with `layout` by `take` and still live.
    let bytes = unsafe { std::slice::from_raw_parts(p, layout.size()) };
    assert!(bytes.iter().all(|&b| b == byte), "content kept");
    // SAFETY: as above; freed once.
    unsafe { A.dealloc(p, layout) };
}

#[test]
fn freed_huge_mappings_are_reused_within_bounds_and_given_back() {
    // The allocator's own first mappings (its registry of chunks, with `checked`) come first.
    give(take(layout(3 * MIB, 8), false, 1), layout(3 * MIB, 8), 1);
    alloc_core::purge();
    let before = (alloc_core::stats(), address_space_bytes());
    assert_eq!(
        before.0.huge_cached_bytes, 0,
        "purge gives every kept mapping back"
    );

    // A freed 3 MB mapping is kept, and the next allocation that fits takes it, zeroed if asked.
    let three = layout(3_000_000, 8);
    let first = take(three, false, 0xab);
    give(first, three, 0xab);
    let kept = alloc_core::stats();
    assert!(kept.huge_cached_bytes >= three.size(), "kept");
    assert_eq!(kept.huge_mapped_bytes, before.0.huge_mapped_bytes);
    // (Page faults show reuse where fresh mappings get 4 KiB pages: transparent huge pages set to
    // `madvise` or `never`, as here. With `always`, a fresh mapping faults in 2 MiB at a time.)
    let faults = minor_faults();
    let again = take(three, true, 0xcd);
    let faulted = minor_faults() - faults;
    assert_eq!(again, first, "the kept mapping is reused");
    // Its pages are still there: a fresh mapping of 3 MB faults in 733 pages of 4 KiB.
    assert!(faulted < 64, "{faulted} page faults");
    assert_eq!(alloc_core::stats().huge_cached_bytes, 0);
    give(again, three, 0xcd);

    // A much smaller one takes it too, and the tail beyond twice its size goes back; a different
    // alignment below 2 MiB puts the object further in.
    let two = layout(1_200_000, 64 << 10);
    let smaller = take(two, true, 0x5a);
    assert_eq!(
        smaller as usize & !(2 * MIB - 1),
        first as usize & !(2 * MIB - 1)
    );
    let mapped = alloc_core::stats().huge_mapped_bytes - before.0.huge_mapped_bytes;
    assert!(
        mapped <= 2 * 1_200_000 + (64 << 10),
        "the tail was unmapped: {mapped} bytes"
    );
    assert!(mapped >= 1_200_000 + (64 << 10), "{mapped} bytes");
    give(smaller, two, 0x5a);

    // A larger one grows the kept mapping: its pages move, only the new ones fault in.
    let larger = layout(5_000_000, 8);
    alloc_core::purge();
    give(take(three, false, 1), three, 1);
    let faults = minor_faults();
    let grown = take(larger, false, 0x77);
    let faulted = minor_faults() - faults;
    assert!(
        faulted < 600,
        "{faulted} page faults (2 MB more than the kept mapping: 489 pages; all of it: 1,221)"
    );
    assert_eq!(
        alloc_core::stats().huge_cached_bytes,
        0,
        "the kept mapping was taken, not a fresh one mapped"
    );
    give(grown, larger, 0x77);

    // A zeroed request far larger than any kept mapping is a fresh mapping, not a kept one grown
    // and cleared: its untouched pages stay out of the resident set.
    give(take(three, false, 2), three, 2);
    let sparse = layout(256 * MIB, 8);
    let resident = resident_bytes();
    // SAFETY: a non-zero size; freed below with the same layout.
    let p = unsafe { A.alloc_zeroed(sparse) };
    assert!(!p.is_null());
    // SAFETY: the block is 256 MiB; its first and last bytes are read.
    let ends = unsafe { (p.read(), p.add(sparse.size() - 1).read()) };
    assert_eq!(ends, (0, 0));
    let grew = resident_bytes().saturating_sub(resident);
    assert!(
        grew < 16 * MIB,
        "a sparse zeroed buffer made {grew} bytes resident"
    );
    // SAFETY: allocated just now with `sparse`.
    unsafe { A.dealloc(p, sparse) };

    // Objects aligned to 2 MiB have their own layout and are not kept.
    let aligned = layout(4 * MIB, 2 * MIB);
    let cached = alloc_core::stats().huge_cached_bytes;
    give(take(aligned, false, 7), aligned, 7);
    assert_eq!(alloc_core::stats().huge_cached_bytes, cached);

    // Ten 8 MiB buffers freed together: no more than the bound is kept.
    let eight = layout(8 * MIB, 8);
    let buffers: Vec<*mut u8> = (0..10).map(|i| take(eight, i % 2 == 0, i as u8)).collect();
    for (i, &p) in buffers.iter().enumerate() {
        give(p, eight, i as u8);
    }
    let bounded = (alloc_core::stats(), address_space_bytes());
    assert!(
        bounded.0.huge_cached_bytes <= 32 * MIB,
        "{} bytes kept",
        bounded.0.huge_cached_bytes
    );
    assert!(
        bounded.1 <= before.1 + 32 * MIB + 2 * MIB,
        "address space grew by {} bytes",
        bounded.1 - before.1
    );

    // After the decommit delay, a maintenance round gives them back.
    std::thread::sleep(Duration::from_millis(60));
    assert!(alloc_core::maintain() >= bounded.0.huge_cached_bytes);
    let after = (alloc_core::stats(), address_space_bytes());
    assert_eq!(after.0.huge_cached_bytes, 0);
    assert_eq!(after.0.huge_mapped_bytes, before.0.huge_mapped_bytes);
    assert_eq!(after.0.committed_bytes, before.0.committed_bytes);
    assert!(
        after.1 <= before.1,
        "address space {} bytes over",
        after.1 - before.1
    );

    // Frees of other sizes run the arenas' maintenance, which ages kept mappings out too.
    give(take(three, false, 4), three, 4);
    alloc_core::maintain();
    assert!(
        alloc_core::stats().huge_cached_bytes > 0,
        "not before the delay"
    );
    let span = layout(300 << 10, 8);
    let began = std::time::Instant::now();
    while alloc_core::stats().huge_cached_bytes > 0 && began.elapsed() < Duration::from_secs(5) {
        give(take(span, false, 5), span, 5);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        alloc_core::stats().huge_cached_bytes,
        0,
        "aged out by maintenance"
    );

    // And `purge` gives back at once.
    give(take(three, false, 3), three, 3);
    assert!(alloc_core::stats().huge_cached_bytes > 0);
    alloc_core::purge();
    assert_eq!(alloc_core::stats().huge_cached_bytes, 0);
}
