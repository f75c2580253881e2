//! Quick end-to-end checks of the allocator called directly (the harness itself runs on `System`).

use alloc_core::SlabAlloc;
use std::alloc::{GlobalAlloc, Layout};

static A: SlabAlloc = SlabAlloc::new();

fn fill(p: *mut u8, size: usize, seed: usize) {
    for i in 0..size {
        // SAFETY: test code; `p` has `size` bytes.
        unsafe { *p.add(i) = (seed.wrapping_mul(31).wrapping_add(i) & 0xff) as u8 };
    }
}

fn check(p: *mut u8, size: usize, seed: usize) {
    for i in 0..size {
        // SAFETY: test code; `p` has `size` bytes.
        let byte = unsafe { *p.add(i) };
        assert_eq!(
            byte,
            (seed.wrapping_mul(31).wrapping_add(i) & 0xff) as u8,
            "byte {i} of {size}"
        );
    }
}

#[test]
fn many_sizes_round_trip() {
    let mut live = Vec::new();
    for size in (1..70_000).step_by(97).chain([3 << 20, 5 << 20]) {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { A.alloc(layout) };
        assert!(!p.is_null());
        fill(p, size, size);
        live.push((p, layout));
    }
    for &(p, layout) in &live {
        check(p, layout.size(), layout.size());
        // SAFETY: allocated above with this layout.
        unsafe { A.dealloc(p, layout) };
    }
    alloc_core::purge();
}

#[test]
fn threads_free_each_others_blocks() {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<usize>>();
    let producer = std::thread::spawn(move || {
        for round in 0..50 {
            let mut batch = Vec::new();
            for i in 0..1000 {
                let size = 8 + (i * 13 + round) % 2000;
                // SAFETY: non-zero size.
                let p = unsafe { A.alloc(Layout::from_size_align(size, 8).unwrap()) };
                fill(p, size, i);
                batch.push(p as usize);
                batch.push(size);
                batch.push(i);
            }
            tx.send(batch).unwrap();
        }
    });
    for batch in rx {
        for chunk in batch.chunks(3) {
            let (p, size, seed) = (chunk[0] as *mut u8, chunk[1], chunk[2]);
            check(p, size, seed);
            // SAFETY: allocated by the producer with this layout.
            unsafe { A.dealloc(p, Layout::from_size_align(size, 8).unwrap()) };
        }
    }
    producer.join().unwrap();
}
