//! The `GlobalAlloc` contract, with the allocator called directly (the harness runs on `System`).
//!
//! What each test proves:
//! - `every_size_to_64k`: every size from 1 B to 1 KiB and a sample up to 64 KiB (all class
//!   boundaries ±1 included) returns a non-null, aligned block that holds its full size and overlaps
//!   no other live block.
//! - `powers_of_two_to_256_mib`: sizes 2^0..=2^28 (small, span and huge paths) are usable end to end.
//! - `every_alignment_to_4_mib`: every power-of-two alignment 1 B..=4 MiB, with sizes below, at and
//!   above it, is honoured on all three paths and blocks stay disjoint.
//! - `alloc_zeroed_*`: zeroed memory is zero even when it reuses dirtied memory: freed small blocks,
//!   freed spans, slabs returned to their arena as dirty units, tails given back by a shrinking span,
//!   and memory reused after `purge`.
//! - `realloc_*`: growing and shrinking preserve the common prefix and the alignment across every
//!   class boundary and the small/large/huge thresholds.

mod common;

use alloc_core::size_class::{CLASSES, MAX_SMALL_BYTES};
use alloc_core::{SlabAlloc, LARGE_MAX_BYTES};
use common::{check, check_sparse, fill_sparse, seed_of};
use std::alloc::{GlobalAlloc, Layout};

static A: SlabAlloc = SlabAlloc::new();
const MIB: usize = 1 << 20;

struct Block {
    ptr: *mut u8,
    layout: Layout,
}

fn alloc_filled(size: usize, align: usize) -> Block {
    let layout = Layout::from_size_align(size, align).unwrap();
    // SAFETY: the size is non-zero.
    let ptr = unsafe { A.alloc(layout) };
    assert!(!ptr.is_null(), "alloc({size}, {align}) returned null");
    assert_eq!(ptr as usize % align, 0, "alloc({size}, {align}) misaligned");
    // SAFETY: the block is live and `size` bytes long.
    unsafe { fill_sparse(ptr, size, seed_of(ptr as usize, size)) };
    Block { ptr, layout }
}

fn check_and_free(block: Block) {
    let size = block.layout.size();
    // SAFETY: the block is live and `size` bytes long.
    let result = unsafe { check_sparse(block.ptr, size, seed_of(block.ptr as usize, size)) };
    assert_eq!(
        result,
        Ok(()),
        "block {:p} of {size} B was overwritten",
        block.ptr
    );
    // SAFETY: allocated by `A` with this layout, freed once.
    unsafe { A.dealloc(block.ptr, block.layout) };
}

fn assert_disjoint(blocks: &[Block]) {
    let mut ranges: Vec<(usize, usize)> = blocks
        .iter()
        .map(|b| (b.ptr as usize, b.ptr as usize + b.layout.size()))
        .collect();
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "blocks overlap: {pair:x?}");
    }
}

/// Every class boundary ±1, the thresholds between paths ±1, sorted.
fn boundary_sizes() -> Vec<usize> {
    let mut sizes = vec![1, 2, 7];
    for info in CLASSES.iter() {
        let b = info.block_bytes as usize;
        sizes.extend([b - 1, b, b + 1]);
    }
    for t in [64 << 10, LARGE_MAX_BYTES, 2 * MIB, 4 * MIB] {
        sizes.extend([t - 1, t, t + 1]);
    }
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

#[test]
fn every_size_to_64k() {
    for align in [1, 16] {
        let small: Vec<Block> = (1..=1024).map(|s| alloc_filled(s, align)).collect();
        assert_disjoint(&small);
        let sampled: Vec<usize> = (1025..=64 << 10)
            .step_by(97)
            .chain(boundary_sizes().into_iter().filter(|&s| s <= 64 << 10))
            .chain([64 << 10])
            .collect();
        for batch in sampled.chunks(128) {
            let mut blocks: Vec<Block> = batch.iter().map(|&s| alloc_filled(s, align)).collect();
            assert_disjoint(&blocks);
            blocks.sort_by_key(|b| b.ptr as usize);
            blocks.into_iter().for_each(check_and_free);
        }
        small.into_iter().for_each(check_and_free);
    }
}

#[test]
fn powers_of_two_to_256_mib() {
    let mut blocks = Vec::new();
    for shift in 0..=28 {
        let size = 1usize << shift;
        blocks.push(alloc_filled(size, 8));
        if size >= 64 << 20 {
            // Keep at most one of the biggest live at a time.
            check_and_free(blocks.pop().unwrap());
        }
    }
    assert_disjoint(&blocks);
    blocks.into_iter().for_each(check_and_free);
}

#[test]
fn every_alignment_to_4_mib() {
    for shift in 0..=22 {
        let align = 1usize << shift;
        let mut sizes = vec![1, 8, 24, 1000, 40_000, LARGE_MAX_BYTES + 1, 3 * MIB];
        sizes.extend([
            align / 2,
            align.saturating_sub(1),
            align,
            align + 1,
            align * 3 / 2,
        ]);
        sizes.retain(|&s| s > 0);
        // Three of each, so that consecutive over-aligned blocks from one slab or span are seen.
        let blocks: Vec<Block> = sizes
            .iter()
            .flat_map(|&s| [s, s, s])
            .map(|s| alloc_filled(s, align))
            .collect();
        assert_disjoint(&blocks);
        blocks.into_iter().for_each(check_and_free);
    }
}

/// Allocates `count` blocks zeroed and checks every byte.
fn alloc_zeroed_checked(size: usize, align: usize, count: usize) -> Vec<Block> {
    let layout = Layout::from_size_align(size, align).unwrap();
    (0..count)
        .map(|_| {
            // SAFETY: the size is non-zero.
            let ptr = unsafe { A.alloc_zeroed(layout) };
            assert!(
                !ptr.is_null(),
                "alloc_zeroed({size}, {align}) returned null"
            );
            assert_eq!(ptr as usize % align, 0);
            // SAFETY: the block is live and `size` bytes long.
            let bytes = unsafe { std::slice::from_raw_parts(ptr, size) };
            if let Some(i) = bytes.iter().position(|&b| b != 0) {
                panic!(
                    "alloc_zeroed({size}, {align}) at {ptr:p}: byte {i} is {:#x}",
                    bytes[i]
                );
            }
            Block { ptr, layout }
        })
        .collect()
}

fn free_all(blocks: Vec<Block>) {
    for b in blocks {
        // SAFETY: allocated by `A` with this layout, freed once.
        unsafe { A.dealloc(b.ptr, b.layout) };
    }
}

fn dirty(size: usize, align: usize, count: usize) -> Vec<Block> {
    (0..count)
        .map(|_| {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: the size is non-zero.
            let ptr = unsafe { A.alloc(layout) };
            assert!(!ptr.is_null());
            // SAFETY: the block is live and `size` bytes long.
            unsafe { ptr.write_bytes(0xa5, size) };
            Block { ptr, layout }
        })
        .collect()
}

#[test]
fn alloc_zeroed_is_zero_after_reuse() {
    let mut sizes: Vec<usize> = CLASSES.iter().map(|c| c.block_bytes as usize).collect();
    sizes.extend([
        3,
        100,
        5000,
        40 << 10,
        64 << 10,
        100 << 10,
        LARGE_MAX_BYTES,
        3 * MIB,
    ]);
    let mut reused = 0;
    for &size in &sizes {
        for align in [8, 64, 4096] {
            let count = if size > MAX_SMALL_BYTES { 2 } else { 8 };
            for _round in 0..3 {
                let dirtied = dirty(size, align, count);
                let addrs: Vec<usize> = dirtied.iter().map(|b| b.ptr as usize).collect();
                free_all(dirtied);
                let zeroed = alloc_zeroed_checked(size, align, count);
                reused += zeroed
                    .iter()
                    .filter(|b| addrs.contains(&(b.ptr as usize)))
                    .count();
                free_all(zeroed);
            }
        }
    }
    // The test is only meaningful if dirty memory was actually handed out again.
    assert!(
        reused > 100,
        "only {reused} zeroed blocks reused dirty memory"
    );
}

#[test]
fn alloc_zeroed_span_over_units_of_dirty_slabs() {
    // 16 MiB of dirty 1 KiB blocks: their slabs go back to the arenas as dirty units when emptied.
    for (size, span) in [
        (1024, 960 << 10),
        (32 << 10, LARGE_MAX_BYTES),
        (48, 200 << 10),
    ] {
        let count = (16 * MIB) / size;
        free_all(dirty(size, 8, count));
        free_all(alloc_zeroed_checked(span, 8, 16));
        free_all(alloc_zeroed_checked(span, 64 << 10, 8));
    }
}

#[test]
fn alloc_zeroed_span_over_tail_given_back_by_shrink() {
    for _ in 0..4 {
        let mut big = dirty(LARGE_MAX_BYTES, 8, 4);
        for b in &mut big {
            // SAFETY: live block of this layout; the new size is non-zero.
            let p = unsafe { A.realloc(b.ptr, b.layout, 70 << 10) };
            assert!(!p.is_null());
            *b = Block {
                ptr: p,
                layout: Layout::from_size_align(70 << 10, 8).unwrap(),
            };
        }
        let zeroed = alloc_zeroed_checked(512 << 10, 8, 8);
        free_all(zeroed);
        free_all(big);
    }
}

#[test]
fn alloc_zeroed_after_purge() {
    for size in [64, 4000, 32 << 10, 300 << 10, 3 * MIB] {
        free_all(dirty(size, 8, (8 * MIB / size).max(2)));
        alloc_core::purge();
        free_all(alloc_zeroed_checked(size, 8, (8 * MIB / size).max(2)));
    }
}

/// Reallocates `block` to `new_size`, checking the prefix and alignment, and refills it.
fn realloc_checked(block: Block, new_size: usize) -> Block {
    let old_size = block.layout.size();
    let align = block.layout.align();
    let old_seed = seed_of(block.ptr as usize, old_size);
    // SAFETY: a live block of this layout; the new size is non-zero and fits isize.
    let ptr = unsafe { A.realloc(block.ptr, block.layout, new_size) };
    assert!(
        !ptr.is_null(),
        "realloc {old_size} -> {new_size} (align {align}) failed"
    );
    assert_eq!(
        ptr as usize % align,
        0,
        "realloc {old_size} -> {new_size} lost alignment {align}"
    );
    let kept = old_size.min(new_size);
    // SAFETY: the new block holds at least `kept` bytes. A sparse pattern is checked only where it was
    // written, which is where both sizes agree: within the first `kept` bytes, fully for small
    // blocks, and at the shared leading ranges for big ones.
    let result = unsafe {
        if old_size <= common::SPARSE_ABOVE {
            check(ptr, kept, old_seed)
        } else {
            check(ptr, kept.min(64 << 10), old_seed)
        }
    };
    assert_eq!(
        result,
        Ok(()),
        "realloc {old_size} -> {new_size} (align {align}) lost data"
    );
    // SAFETY: the block is live and `new_size` bytes long.
    unsafe { fill_sparse(ptr, new_size, seed_of(ptr as usize, new_size)) };
    Block {
        ptr,
        layout: Layout::from_size_align(new_size, align).unwrap(),
    }
}

#[test]
fn realloc_walks_every_class_boundary_up_and_down() {
    let sizes = boundary_sizes();
    for align in [1, 8, 16, 64, 4096, 64 << 10] {
        let mut block = alloc_filled(sizes[0], align);
        for &s in &sizes[1..] {
            block = realloc_checked(block, s);
        }
        for &s in sizes.iter().rev().skip(1) {
            block = realloc_checked(block, s);
        }
        check_and_free(block);
    }
}

#[test]
fn realloc_between_thresholds_in_every_direction() {
    let thresholds = [
        1,
        64,
        65,
        MAX_SMALL_BYTES - 1,
        MAX_SMALL_BYTES,
        MAX_SMALL_BYTES + 1,
        (64 << 10) + 1,
        LARGE_MAX_BYTES - 1,
        LARGE_MAX_BYTES,
        LARGE_MAX_BYTES + 1,
        2 * MIB + 1,
        5 * MIB,
    ];
    for align in [8, 4096, 256 << 10, 2 * MIB, 4 * MIB] {
        for &from in &thresholds {
            for &to in &thresholds {
                // A neighbour stays live so the allocator cannot always grow into free space.
                let neighbour = alloc_filled(from, align);
                let block = realloc_checked(alloc_filled(from, align), to);
                check_and_free(realloc_checked(block, from));
                check_and_free(neighbour);
            }
        }
    }
}

#[test]
fn realloc_growth_chain_like_a_vec() {
    for align in [8, 16, 4096, 2 * MIB] {
        let mut size = 1;
        let mut block = alloc_filled(size, align);
        while size < 16 * MIB {
            size = size * 3 / 2 + 1;
            block = realloc_checked(block, size);
        }
        while size > 1 {
            size = size * 2 / 3;
            block = realloc_checked(block, size.max(1));
        }
        check_and_free(block);
    }
}
