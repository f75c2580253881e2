//! Concurrency stress: reader threads verify every object they read (its id and a checksum stored in
//! it, and that its version never goes backwards) while a compactor thread moves objects continuously
//! (footprint compaction and arena evacuation) and writer threads update objects (read-copy-update).
//! Passes only with zero torn or foreign reads, zero lost updates, and every handle resolving to its
//! own object throughout.

use relocate_api::{Budget, Handle, RelocCache};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

type Object = [u64; 8];

fn checksum(o: &Object) -> u64 {
    o[..7].iter().fold(0xcbf2_9ce4_8422_2325u64, |h, w| {
        (h ^ w).wrapping_mul(0x0100_0000_01b3)
    })
}

fn make(id: u64, version: u64) -> Object {
    let mut o = [
        id,
        version,
        id ^ version,
        id.rotate_left(7),
        !id,
        version.wrapping_mul(3),
        id + version,
        0,
    ];
    o[7] = checksum(&o);
    o
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn readers_see_whole_objects_while_compaction_and_writers_run() {
    let objects: u64 = if cfg!(debug_assertions) {
        20_000
    } else {
        100_000
    };
    let reads_per_reader: u64 = if cfg!(debug_assertions) {
        200_000
    } else {
        3_000_000
    };
    let updates_per_writer: u64 = if cfg!(debug_assertions) {
        20_000
    } else {
        200_000
    };
    let cache: Arc<RelocCache<Object>> = Arc::new(RelocCache::new().unwrap());

    // Insert twice as many as we keep, and remove every other one, so slabs start half empty.
    let mut handles: Vec<Handle<Object>> = Vec::new();
    {
        let reader = cache.reader();
        let guard = reader.pin();
        for id in 0..objects * 2 {
            let h = cache.insert(make(id, 0)).unwrap();
            if id % 2 == 0 {
                handles.push(h);
            } else {
                assert!(cache.remove(h, &guard));
            }
        }
    }
    let handles = Arc::new(handles);
    // The version each object must end at: writers own disjoint halves of the handles.
    let final_versions: Arc<Vec<AtomicU64>> =
        Arc::new((0..objects).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));

    let compactor = {
        let (cache, stop) = (cache.clone(), stop.clone());
        std::thread::spawn(move || {
            let reader = cache.reader();
            let mut moved = 0;
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let guard = reader.pin();
                let report = if rounds % 4 == 3 {
                    cache
                        .evacuate_sparsest(&guard, 1, Budget::Objects(5_000))
                        .unwrap()
                } else {
                    cache.compact(&guard, Budget::Objects(5_000)).unwrap()
                };
                moved += report.moved_objects;
                drop(guard);
                rounds += 1;
                if rounds % 8 == 0 {
                    cache.flush(&reader);
                }
            }
            moved
        })
    };
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (cache, handles, finals) = (cache.clone(), handles.clone(), final_versions.clone());
            std::thread::spawn(move || {
                let reader = cache.reader();
                let mut rng = Rng(0x1234_5678 + w);
                for _ in 0..updates_per_writer {
                    let index = (rng.next() % objects) as usize;
                    if index as u64 % 2 != w {
                        continue;
                    }
                    let guard = reader.pin();
                    let updated = cache
                        .update(handles[index], &guard, |old| {
                            assert_eq!(checksum(old), old[7], "writer saw a torn object");
                            make(old[0], old[1] + 1)
                        })
                        .unwrap();
                    assert!(updated, "update of a live handle failed");
                    finals[index].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2u64)
        .map(|r| {
            let (cache, handles) = (cache.clone(), handles.clone());
            std::thread::spawn(move || {
                let reader = cache.reader();
                let mut rng = Rng(0xdead_beef + r);
                let mut last_seen = vec![0u64; objects as usize];
                let mut check = |index: usize, o: Option<&Object>| {
                    let o = o.expect("a live handle resolved to None");
                    assert_eq!(
                        o[0],
                        index as u64 * 2,
                        "a handle resolved to another object"
                    );
                    assert_eq!(checksum(o), o[7], "torn read");
                    assert!(o[1] >= last_seen[index], "version went backwards");
                    last_seen[index] = o[1];
                };
                // Reader 0 reads with `get`, reader 1 with `get_many`, 64 handles a guard.
                let mut indices = Vec::with_capacity(64);
                let mut batch = Vec::with_capacity(64);
                for _ in 0..reads_per_reader / 64 {
                    let guard = reader.pin();
                    indices.clear();
                    indices.extend((0..64).map(|_| (rng.next() % objects) as usize));
                    if r == 0 {
                        for &index in &indices {
                            check(index, cache.get(handles[index], &guard));
                        }
                    } else {
                        batch.clear();
                        batch.extend(indices.iter().map(|&index| handles[index]));
                        cache.get_many(&batch, &guard, |i, o| check(indices[i], o));
                    }
                }
            })
        })
        .collect();
    for t in readers.into_iter().chain(writers) {
        t.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let moved = compactor.join().unwrap();
    assert!(moved > 0, "the compactor moved nothing");
    let reader = cache.reader();
    let guard = reader.pin();
    for (index, handle) in handles.iter().enumerate() {
        let o = cache.get(*handle, &guard).unwrap();
        assert_eq!(o[0], index as u64 * 2);
        assert_eq!(
            o[1],
            final_versions[index].load(Ordering::Relaxed),
            "lost update"
        );
        assert_eq!(checksum(o), o[7]);
    }
    println!(
        "moved {moved} objects during the run; stats {:?}",
        cache.stats()
    );
}

/// Churn: two threads insert objects (one an `insert` each, the other `insert_many` 100 at a time)
/// and remove their oldest (checking each removed object's content and that its handle is then
/// stale; one thread a `remove` each, the other `remove_many` 64 or more at a time), so removals on
/// one thread hand slots back in batches that inserts on both reuse, while a compactor moves objects
/// and a reader resolves handles ever issued, live or stale. A handle that resolves must name its own object, whole; none may name a newer
/// object in a reused slot. At the end the live count is exact.
#[test]
fn handles_stay_their_own_through_concurrent_insert_and_remove() {
    let per_thread: u64 = if cfg!(debug_assertions) {
        20_000
    } else {
        200_000
    };
    const WINDOW: usize = 1_000;
    /// The second thread removes its oldest objects this many at a time (or more), with one
    /// `remove_many`.
    const BATCH: usize = 64;
    /// The second thread inserts this many objects at a time, with one `insert_many` (which takes
    /// the cache lock once per 64).
    const INSERT_RUN: usize = 100;
    fn remove_oldest(
        cache: &RelocCache<Object>,
        guard: &relocate_api::Guard,
        window: &mut std::collections::VecDeque<(Handle<Object>, u64)>,
        keep: usize,
    ) {
        let count = window.len() - keep;
        let oldest: Vec<(Handle<Object>, u64)> = window.drain(..count).collect();
        let handles: Vec<Handle<Object>> = oldest.iter().map(|&(h, _)| h).collect();
        cache.get_many(&handles, guard, |i, object| {
            let object = object.expect("a live handle did not resolve");
            assert_eq!(
                object[0], oldest[i].1,
                "a handle resolved to another object"
            );
            assert_eq!(checksum(object), object[7], "torn object");
        });
        assert_eq!(cache.remove_many(&handles, guard), count);
        cache.get_many(&handles, guard, |_, object| {
            assert!(object.is_none(), "a removed handle resolved");
        });
    }
    let cache: RelocCache<Object> = RelocCache::new().unwrap();
    // Every handle ever made, with its object's id (written once, read by the checker).
    let issued = std::sync::Mutex::new(Vec::<(u64, u64)>::new());
    let stop = AtomicBool::new(false);
    let resolved = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let churners: Vec<_> = (0..2u64)
            .map(|t| {
                let (cache, issued) = (&cache, &issued);
                scope.spawn(move || {
                    let reader = cache.reader();
                    let mut window = std::collections::VecDeque::new();
                    let mut guard = reader.pin();
                    let (mut values, mut handles) = (Vec::new(), Vec::new());
                    for seq in 0..per_thread {
                        let id = (t << 32) | seq;
                        if t == 0 {
                            let handle = cache.insert(make(id, 0)).unwrap();
                            issued.lock().unwrap().push((handle.to_bits(), id));
                            window.push_back((handle, id));
                        } else {
                            values.push(make(id, 0));
                            if values.len() == INSERT_RUN || seq + 1 == per_thread {
                                let first = id + 1 - values.len() as u64;
                                cache.insert_many(&mut values, &mut handles).unwrap();
                                let mut issued = issued.lock().unwrap();
                                for (handle, id) in handles.drain(..).zip(first..) {
                                    issued.push((handle.to_bits(), id));
                                    window.push_back((handle, id));
                                }
                            }
                        }
                        if t == 0 && window.len() > WINDOW {
                            let (old, old_id) = window.pop_front().unwrap();
                            let seen =
                                cache.remove_with(old, &guard, |o| (o[0], checksum(o) == o[7]));
                            assert_eq!(seen, Some((old_id, true)), "removed the wrong object");
                            assert!(
                                cache.get(old, &guard).is_none(),
                                "a removed handle resolved"
                            );
                        }
                        if t == 1 && (window.len() >= WINDOW + BATCH || seq + 1 == per_thread) {
                            remove_oldest(cache, &guard, &mut window, WINDOW);
                        }
                        if seq % 100 == 0 {
                            guard.repin();
                        }
                    }
                })
            })
            .collect();
        let compactor = scope.spawn(|| {
            let reader = cache.reader();
            let mut moved = 0;
            while !stop.load(Ordering::Relaxed) {
                let guard = reader.pin();
                moved += cache
                    .compact(&guard, Budget::Objects(2_000))
                    .unwrap()
                    .moved_objects;
            }
            moved
        });
        let checker = scope.spawn(|| {
            let reader = cache.reader();
            let mut rng = Rng(0x5eed);
            while !stop.load(Ordering::Relaxed) {
                let sample: Vec<(u64, u64)> = {
                    let issued = issued.lock().unwrap();
                    if issued.is_empty() {
                        continue;
                    }
                    (0..256)
                        .map(|_| issued[(rng.next() % issued.len() as u64) as usize])
                        .collect()
                };
                let guard = reader.pin();
                for (bits, id) in sample {
                    if let Some(object) = cache.get(Handle::from_bits(bits), &guard) {
                        assert_eq!(object[0], id, "a handle resolved to another object");
                        assert_eq!(checksum(object), object[7], "torn object");
                        resolved.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        // Stop the others before a churner's failure is raised, or the scope would wait for them.
        let churned: Vec<_> = churners.into_iter().map(|churner| churner.join()).collect();
        stop.store(true, Ordering::Relaxed);
        let moved = compactor.join().unwrap();
        checker.join().unwrap();
        for outcome in churned {
            outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
        eprintln!(
            "moved {moved}, checker resolved {}",
            resolved.load(Ordering::Relaxed)
        );
    });
    assert_eq!(cache.len(), 2 * WINDOW);
    let handles = issued.into_inner().unwrap();
    let mut slots: Vec<u64> = handles
        .iter()
        .map(|&(bits, _)| bits & (relocate_api::MAX_OBJECTS as u64 - 1))
        .collect();
    slots.sort_unstable();
    slots.dedup();
    assert!(
        slots.len() < 4 * WINDOW + 256,
        "{} slots for {} live objects: removed slots were not reused",
        slots.len(),
        2 * WINDOW
    );
}
