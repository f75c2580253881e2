//! Memory: insert 1 million 64-byte objects, remove a random 90 %, compact; the resident set read from
//! the OS falls to within 1.3 × the live bytes plus a fixed metadata allowance.
//!
//! The allowance, stated: the handle table (8 bytes per slot ever used: 1 M slots = 8 MiB, which does
//! not shrink: the survivors' slots are spread over all of it), this test's own vector of the kept
//! handles (16 bytes per entry), the movable arenas' metadata (header, descriptors, liveness bitmap and
//! back-map pages of the arenas still in use: at most 128 KiB each for 64-byte blocks), and 4 MiB of
//! slack for the test harness. This file holds one test so that it runs in a process of its own, and runs on
//! alloc-core as its global allocator, so that memory the epoch machinery used transiently (crossbeam's
//! deferred-function bags) is given back by `alloc_core::purge()` before the resident set is read.

use relocate_api::{Budget, Handle, RelocCache};

#[global_allocator]
static ALLOC: alloc_core::SlabAlloc = alloc_core::SlabAlloc::new();

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * alloc_core::page_size()
}

#[test]
fn compaction_brings_resident_memory_near_live_bytes() {
    const OBJECTS: usize = 1_000_000;
    let start = resident_bytes();
    let cache: RelocCache<[u64; 8]> = RelocCache::new().unwrap();
    let reader = cache.reader();
    let mut handles: Vec<Handle<[u64; 8]>> = Vec::with_capacity(OBJECTS);
    for i in 0..OBJECTS as u64 {
        handles.push(cache.insert([i; 8]).unwrap());
    }
    let full = resident_bytes();
    // Remove a pseudo-random 90 % (splitmix64 of the index decides).
    let mut kept = Vec::new();
    {
        let guard = reader.pin();
        for (i, handle) in handles.iter().enumerate() {
            let mut z = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            if (z ^ (z >> 31)) % 10 == 0 {
                kept.push((i as u64, *handle));
            } else {
                assert!(cache.remove(*handle, &guard));
            }
        }
    }
    drop(handles);
    cache.flush(&reader);
    alloc_core::purge();
    let after_remove = resident_bytes();
    {
        let guard = reader.pin();
        let report = cache.compact(&guard, Budget::Unlimited).unwrap();
        assert!(report.moved_objects > 0);
    }
    cache.flush(&reader);
    cache.release_empty_arenas();
    alloc_core::purge();
    let after_compact = resident_bytes();

    let live_bytes = kept.len() * 64;
    let table_bytes = OBJECTS * std::mem::size_of::<relocate_api::slot::Slot>();
    let kept_bytes = kept.capacity() * std::mem::size_of::<(u64, Handle<[u64; 8]>)>();
    let arenas = cache.stats().slabs.div_ceil(20);
    let metadata_bytes = arenas * 128 * 1024;
    let allowance = table_bytes + kept_bytes + metadata_bytes + (4 << 20);
    let grown = after_compact.saturating_sub(start);
    println!(
        "start {} MiB, full {} MiB, after remove {} MiB, after compact {} MiB; live {} MiB; stats {:?}",
        start >> 20,
        full >> 20,
        after_remove >> 20,
        after_compact >> 20,
        live_bytes >> 20,
        cache.stats()
    );
    assert!(
        grown as f64 <= 1.3 * live_bytes as f64 + allowance as f64,
        "resident growth {grown} > 1.3 × {live_bytes} + {allowance}"
    );
    assert!(after_compact < after_remove, "compaction gave nothing back");
    // Every kept object is intact.
    let guard = reader.pin();
    for (i, handle) in &kept {
        assert_eq!(cache.get(*handle, &guard), Some(&[*i; 8]));
    }
}
