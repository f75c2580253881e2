//! A `BlobCache` eviction that meets another class's blob in a slot and block it listed as its own.
//!
//! A class's eviction lists its blocks in the arena under its lock and removes them after it. In
//! between, another thread may flush (a block removed earlier comes back and its slab empties), give
//! back vacant slot runs, and insert a blob of another class, which takes the same slot and, in a
//! new slab in the same unit, the same block. The eviction then found its slot naming its block and
//! removed the other class's blob through its own class: the block was freed into the wrong heap,
//! which then handed blocks out twice, and the class counted more removals than inserts. Now the
//! eviction leaves it to its own class (which evicts it in turn: it is in the arena).
//!
//! Alone in its test binary: the layout it builds (which slab and block each blob gets) needs a
//! process whose movable arenas nothing else uses.

use relocate_api::{BlobCache, BlobHandle, MAX_OBJECTS};
use std::cell::Cell;

fn slot_of(h: BlobHandle) -> u64 {
    h.to_bits() & (MAX_OBJECTS as u64 - 1)
}

/// A blob of class X (208-byte blocks, 315 a slab), numbered.
fn x(i: u32) -> Vec<u8> {
    let mut v = vec![0xAA; 200];
    v[..4].copy_from_slice(&i.to_le_bytes());
    v
}

/// The address of a blob's block (its length comes first).
fn block_of(cache: &BlobCache, h: BlobHandle) -> usize {
    let reader = cache.reader();
    let guard = reader.pin();
    cache.get(h, &guard).unwrap().as_ptr() as usize - 4
}

#[test]
fn an_eviction_leaves_another_class_blob_in_its_old_slot_and_block_alone() {
    const PER_SLAB: u32 = 315;
    let cache = BlobCache::new().unwrap();
    let reader = cache.reader();
    // Slab 1: `t` (slot 0, the slab's first block) and 314 more; slab 2: 315; slab 3: one.
    let first: Vec<BlobHandle> = (0..PER_SLAB)
        .map(|i| cache.insert(&x(i)).unwrap())
        .collect();
    let second: Vec<BlobHandle> = (PER_SLAB..2 * PER_SLAB)
        .map(|i| cache.insert(&x(i)).unwrap())
        .collect();
    cache.insert(&x(2 * PER_SLAB)).unwrap();
    // Seven blobs of class Z (1 KiB blocks), to remove before `t`.
    let z: Vec<BlobHandle> = (0..7)
        .map(|_| cache.insert(&[0x5A; 1000]).unwrap())
        .collect();
    let t = first[0];
    let t_block = block_of(&cache, t);
    // Slab 1 keeps only `t`; slab 2 loses one blob, which puts it first in its class's list.
    {
        let guard = reader.pin();
        for &h in first[1..].iter().chain([&second[1]]) {
            assert!(cache.remove(h, &guard));
        }
    }
    cache.flush(&reader);
    // `t` goes on a thread that removes the Z blobs first, under a guard each: the eighth guard to
    // hand removals over flushes its thread's bag to the collector, which moves one epoch on. So
    // `t`'s block waits for one more epoch, which the guard below (pinned after it) does not hold
    // up: a flush while that guard is pinned frees it.
    std::thread::scope(|s| {
        s.spawn(|| {
            let remover = cache.reader();
            for &h in z.iter().chain([&t]) {
                assert!(cache.remove(h, &remover.pin()));
            }
        });
    });
    let guard = reader.pin();
    let y = Cell::new(None);
    let mut evicted = Vec::new();
    cache
        .reclaim_oldest(&guard, |h, _| {
            evicted.push(h);
            if y.get().is_some() {
                return;
            }
            // What another thread may do meanwhile: `t`'s block comes back (slab 1 empties), class X
            // gives back its first run of slots, and a blob of class Y (512-byte blocks) takes slot 0
            // and, in a new slab, `t`'s old block.
            cache.flush(&reader);
            assert!(cache.release_vacant_slots() >= 256);
            let hy = cache.insert(&[0x77; 500]).unwrap();
            assert_eq!(
                (slot_of(hy), block_of(&cache, hy)),
                (slot_of(t), t_block),
                "the layout this test builds: Y's blob takes t's slot and block"
            );
            y.set(Some(hy));
        })
        .unwrap();
    let y = y.get().unwrap();
    assert_eq!(evicted.iter().filter(|&&h| h == y).count(), 1);
    assert_eq!(
        evicted.len(),
        PER_SLAB as usize + 1,
        "slab 2's, slab 3's and Y's"
    );
    drop(guard);
    cache.flush(&reader);
    let stats = cache.stats();
    assert_eq!((stats.live_objects, stats.slabs), (0, 0), "{stats:?}");
    // Every block is handed out once: new blobs of both classes read back, none overlapping.
    let guard = reader.pin();
    let ys: Vec<(BlobHandle, Vec<u8>)> = (0..400u32)
        .map(|i| vec![i as u8; 500])
        .map(|v| (cache.insert(&v).unwrap(), v))
        .collect();
    let xs: Vec<(BlobHandle, Vec<u8>)> = (0..400u32)
        .map(|i| x(10_000 + i))
        .map(|v| (cache.insert(&v).unwrap(), v))
        .collect();
    let mut spans = Vec::new();
    for (h, v) in ys.iter().chain(&xs) {
        let got = cache.get(*h, &guard).unwrap();
        assert_eq!(got, &v[..]);
        spans.push((got.as_ptr() as usize, got.len()));
    }
    spans.sort_unstable();
    assert!(spans.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0));
}
