//! A key-value cache that compacts: values of varied sizes live in a `BlobCache`, keys in a `HashMap`.
//! It fills the cache, deletes most entries at random (the fragmentation a long-running cache builds
//! up; in batches, each one `remove_many`), then compacts with a budget per step while a reader thread
//! keeps serving lookups (multi-gets of 1000 keys, each one `get_many`). Then the values change size
//! (a new generation of larger values replaces every entry) while a background compactor keeps the
//! cache within its target and gives the emptied size classes' handle-table slots to the growing
//! ones. It prints the resident set (from the OS) and the cache's own figures at each step.

use relocate_api::{start_compactor, BlobCache, BlobHandle, Budget, CompactorConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: alloc_core::SlabAlloc = alloc_core::SlabAlloc::new();

fn resident_mib() -> f64 {
    examples::mib(examples::resident_bytes())
}

fn value_for(key: u64) -> Vec<u8> {
    let len = 16 + (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize; // 16..1039 bytes
    (0..len).map(|i| (key as usize + i) as u8).collect()
}

fn report(step: &str, cache: &BlobCache) {
    let s = cache.stats();
    println!(
        "{step:<22} rss {:>7.1} MiB | {:>7} values, {:>6.1} MiB live in {:>5} slabs ({:>6.1} MiB), resident/live {:>5.2}, moved {}",
        resident_mib(),
        s.live_objects,
        s.live_bytes as f64 / (1 << 20) as f64,
        s.slabs,
        s.resident_bytes as f64 / (1 << 20) as f64,
        s.fragmentation,
        s.counters.moved_objects
    );
}

fn main() {
    let cache = Arc::new(BlobCache::new().expect("cache"));
    let index: Arc<RwLock<HashMap<u64, BlobHandle>>> = Arc::default();
    report("start", &cache);
    for key in 0..300_000u64 {
        let handle = cache.insert(&value_for(key)).expect("insert");
        index.write().unwrap().insert(key, handle);
    }
    report("after 300k inserts", &cache);
    {
        let reader = cache.reader();
        let guard = reader.pin();
        let mut index = index.write().unwrap();
        let mut doomed = Vec::new();
        index.retain(|key, handle| {
            let keep = key.wrapping_mul(0x2545_f491_4f6c_dd1d) % 10 == 0;
            if !keep {
                doomed.push(*handle);
            }
            keep
        });
        for batch in doomed.chunks(256) {
            assert_eq!(cache.remove_many(batch, &guard), batch.len());
        }
        drop(guard);
        cache.flush(&reader);
    }
    report("after deleting 90 %", &cache);

    // A reader keeps serving lookups (checking every value) while compaction runs.
    let stop = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicU64::new(0));
    let server = {
        let (cache, index, stop, lookups) =
            (cache.clone(), index.clone(), stop.clone(), lookups.clone());
        std::thread::spawn(move || {
            let reader = cache.reader();
            let keys: Vec<(u64, BlobHandle)> = index
                .read()
                .unwrap()
                .iter()
                .map(|(k, h)| (*k, *h))
                .collect();
            // Each request is a multi-get of 1000 keys, answered by one `get_many`.
            let keys = &keys[..keys.len().min(1000)];
            let handles: Vec<BlobHandle> = keys.iter().map(|&(_, handle)| handle).collect();
            while !stop.load(Ordering::Relaxed) {
                let guard = reader.pin();
                cache.get_many(&handles, &guard, |i, value| {
                    let value = value.expect("a live key vanished");
                    assert_eq!(
                        value,
                        value_for(keys[i].0).as_slice(),
                        "value changed under compaction"
                    );
                });
                lookups.fetch_add(handles.len() as u64, Ordering::Relaxed);
            }
        })
    };
    let started = Instant::now();
    let reader = cache.reader();
    let mut steps = 0;
    loop {
        let guard = reader.pin();
        let report = cache
            .compact(&guard, Budget::Bytes(4 << 20))
            .expect("compact");
        drop(guard);
        // Old copies go back once the reader has moved past them.
        cache.flush(&reader);
        steps += 1;
        if report.moved_objects == 0 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    server.join().expect("reader thread");
    cache.flush(&reader);
    alloc_core::purge();
    println!(
        "compacted in {steps} budgeted steps ({:?}) while the reader served {} lookups",
        started.elapsed(),
        lookups.load(Ordering::Relaxed)
    );
    report("after compaction", &cache);
    drift(&cache, &index);
}

/// Every value is replaced by a larger one (a new generation, 1–3 KiB), a quarter at a time, while
/// a background compactor works: the old size classes empty, the new ones grow, and the compactor
/// keeps the cache near its target and hands the old classes' handle-table slots over.
fn drift(cache: &Arc<BlobCache>, index: &RwLock<HashMap<u64, BlobHandle>>) {
    let compactor = start_compactor(
        cache.clone(),
        CompactorConfig {
            interval: Duration::from_millis(10),
            budget: Budget::Bytes(8 << 20),
            target_fragmentation: 1.2,
        },
    )
    .expect("compactor thread");
    let larger = |key: u64| -> Vec<u8> {
        let len = 1024 + (key.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 53) as usize; // 1–3 KiB
        (0..len).map(|i| (key as usize ^ i) as u8).collect()
    };
    let reader = cache.reader();
    let keys: Vec<u64> = index.read().unwrap().keys().copied().collect();
    let mut replaced = 0;
    for round in keys.chunks(keys.len().div_ceil(4)) {
        let guard = reader.pin();
        let mut index = index.write().unwrap();
        for &key in round {
            let handle = index.get_mut(&key).expect("a key of the index");
            // Another size class: the value moves there and gets a new handle.
            *handle = (cache.replace(*handle, &guard, &larger(key)))
                .expect("replace")
                .expect("a live key");
            replaced += 1;
        }
        drop(index);
        drop(guard);
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the compactor settle, then check every value.
    let settle = Instant::now() + Duration::from_secs(5);
    while cache.stats().fragmentation > 1.2 && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(20));
    }
    let background = compactor.stop();
    let guard = reader.pin();
    for (&key, &handle) in index.read().unwrap().iter() {
        let expected = match keys.iter().position(|&k| k == key) {
            Some(at) if at < replaced => larger(key),
            _ => value_for(key),
        };
        assert_eq!(cache.get(handle, &guard), Some(expected.as_slice()));
    }
    drop(guard);
    println!(
        "replaced {replaced} values by larger ones; the background compactor ran {} rounds, \
         compacted in {}, moved {} values and gave {} handle-table slots to other size classes",
        background.rounds,
        background.compactions,
        background.compacted.moved_objects,
        background.returned_slots
    );
    cache.flush(&reader);
    alloc_core::purge();
    report("after the size drift", cache);
}
