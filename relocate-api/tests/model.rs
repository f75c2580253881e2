//! Model-based test: random sequences of insert (one or many) / get / update / remove / compact /
//! evacuate / reclaim (either kind) against a plain `HashMap`, with the whole contents compared after
//! every step (through `get`, a `View` and `get_many`). Also: stale and foreign handles resolve to `None` (through `get`
//! and `get_many`), `remove_many` removes what a `remove` of each handle would, and a type too large
//! for a slab is refused (the largest that fits works).

use relocate_api::{Budget, CacheError, Handle, RelocCache};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// splitmix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

type Value = (u64, [u64; 5]);

fn value_for(key: u64, version: u64) -> Value {
    (
        key,
        [
            version,
            key ^ version,
            key.wrapping_mul(31),
            !version,
            key + version,
        ],
    )
}

fn check_all(
    cache: &RelocCache<Value>,
    model: &HashMap<Handle<Value>, Value>,
    guard: &relocate_api::Guard,
) {
    let view = cache.view(guard);
    for (handle, expected) in model {
        assert_eq!(
            cache.get(*handle, guard),
            Some(expected),
            "handle {handle:?}"
        );
        assert_eq!(view.get(*handle), Some(expected), "handle {handle:?}");
    }
    let handles: Vec<Handle<Value>> = model.keys().copied().collect();
    let mut visited = 0;
    cache.get_many(&handles, guard, |i, value| {
        assert_eq!(i, visited, "visited in order");
        assert_eq!(
            value,
            model.get(&handles[i]),
            "get_many of {:?}",
            handles[i]
        );
        visited += 1;
    });
    assert_eq!(visited, handles.len());
    let mut seen = 0;
    cache.for_each(guard, |handle, value| {
        assert_eq!(model.get(&handle), Some(value));
        seen += 1;
    });
    assert_eq!(seen, model.len());
    assert_eq!(cache.len(), model.len());
}

#[test]
fn random_operations_match_a_hashmap() {
    let cache: RelocCache<Value> = RelocCache::new().unwrap();
    let reader = cache.reader();
    let mut model: HashMap<Handle<Value>, Value> = HashMap::new();
    let mut dead: Vec<Handle<Value>> = Vec::new();
    let mut rng = Rng(42);
    let steps = if cfg!(debug_assertions) {
        3_000
    } else {
        20_000
    };
    for step in 0..steps {
        let guard = reader.pin();
        let keys: Vec<Handle<Value>> = model.keys().copied().collect();
        match rng.below(100) {
            40..=44 => {
                // A batch, sometimes longer than the values stored under one taking of the lock.
                let keys: Vec<u64> = (0..rng.below(150)).map(|_| rng.next()).collect();
                let mut values: Vec<Value> = keys.iter().map(|&k| value_for(k, 0)).collect();
                let mut handles = vec![Handle::from_bits(0)];
                cache.insert_many(&mut values, &mut handles).unwrap();
                assert!(values.is_empty());
                assert_eq!(handles.len(), keys.len() + 1, "handles are appended");
                for (&handle, &key) in handles[1..].iter().zip(&keys) {
                    assert!(
                        model.insert(handle, value_for(key, 0)).is_none(),
                        "handle reused while live"
                    );
                }
            }
            0..=39 => {
                let key = rng.next();
                let handle = cache.insert(value_for(key, 0)).map_err(|(_, e)| e).unwrap();
                assert!(
                    model.insert(handle, value_for(key, 0)).is_none(),
                    "handle reused while live"
                );
            }
            45..=64 if !keys.is_empty() => {
                let handle = keys[rng.below(keys.len())];
                let version = step as u64;
                assert!(cache
                    .update(handle, &guard, |old| value_for(old.0, version))
                    .unwrap());
                let old = model[&handle].0;
                model.insert(handle, value_for(old, version));
            }
            65..=79 if !keys.is_empty() => {
                let handle = keys[rng.below(keys.len())];
                let removed = cache.remove_with(handle, &guard, |v| *v);
                assert_eq!(removed, model.remove(&handle));
                dead.push(handle);
            }
            80..=84 if !keys.is_empty() => {
                // Live handles (some twice) and removed ones, in one batch.
                let mut batch: Vec<Handle<Value>> = (0..rng.below(40))
                    .map(|_| keys[rng.below(keys.len())])
                    .collect();
                batch.extend(dead.iter().rev().take(rng.below(4)));
                let expected = batch.iter().filter(|&h| model.remove(h).is_some()).count();
                assert_eq!(cache.remove_many(&batch, &guard), expected);
                dead.extend(batch);
            }
            85..=90 => {
                let budget = if rng.below(2) == 0 {
                    Budget::Unlimited
                } else {
                    Budget::Objects(50)
                };
                cache.compact(&guard, budget).unwrap();
            }
            91..=94 if !keys.is_empty() => {
                let handle = keys[rng.below(keys.len())];
                let addr = cache.get(handle, &guard).unwrap() as *const Value as usize;
                cache
                    .evacuate_arena(&guard, addr, Budget::Unlimited)
                    .unwrap();
            }
            95 => {
                let mut evicted = Vec::new();
                let on_evict = |handle, value: &Value| evicted.push((handle, *value));
                if rng.below(2) == 0 {
                    cache.reclaim(&guard, on_evict).unwrap();
                } else {
                    cache.reclaim_oldest(&guard, on_evict).unwrap();
                }
                for (handle, value) in evicted {
                    assert_eq!(model.remove(&handle), Some(value));
                    dead.push(handle);
                }
            }
            _ => {
                drop(guard);
                cache.flush(&reader);
                continue;
            }
        }
        for handle in dead.iter().rev().take(20) {
            assert_eq!(cache.get(*handle, &guard), None, "stale handle resolved");
            assert!(!cache.remove(*handle, &guard));
        }
        if step % 50 == 0 {
            check_all(&cache, &model, &guard);
        }
    }
    let guard = reader.pin();
    check_all(&cache, &model, &guard);
}

#[test]
fn foreign_and_forged_handles_resolve_to_none() {
    let a: RelocCache<u64> = RelocCache::new().unwrap();
    let b: RelocCache<u64> = RelocCache::new().unwrap();
    let (ra, rb) = (a.reader(), b.reader());
    let (ga, gb) = (ra.pin(), rb.pin());
    let ha = a.insert(7).unwrap();
    let hb = b.insert(9).unwrap();
    assert_eq!(a.get(ha, &ga), Some(&7));
    assert_eq!(b.get(ha, &gb), None, "a handle from another cache resolved");
    assert_eq!(a.get(hb, &ga), None, "a handle from another cache resolved");
    // With this cache's own tag and generation: indices past the slots in use (slots that read as
    // vacant, or past the reservation) resolve to nothing.
    let own = ha.to_bits() & !(relocate_api::MAX_OBJECTS as u64 - 1);
    for bits in [
        0u64,
        u64::MAX,
        1 << 40,
        ha.to_bits() + 1,
        ha.to_bits() ^ (1 << 63),
        own | 1,
        own | 5_000_000,
        own | (relocate_api::MAX_OBJECTS as u64 - 1),
        own | (1 << 27) | 12_345,
    ] {
        assert_eq!(
            a.get(Handle::from_bits(bits), &ga),
            None,
            "forged handle {bits:#x} resolved"
        );
    }
}

#[test]
fn get_many_answers_as_get_does() {
    let cache: RelocCache<u64> = RelocCache::new().unwrap();
    let other: RelocCache<u64> = RelocCache::new().unwrap();
    let reader = cache.reader();
    let guard = reader.pin();
    let live: Vec<Handle<u64>> = (0..300).map(|i| cache.insert(i).unwrap()).collect();
    let removed: Vec<Handle<u64>> = (0..50).map(|i| cache.insert(1_000 + i).unwrap()).collect();
    for &handle in &removed {
        assert!(cache.remove(handle, &guard));
    }
    let foreign = other.insert(5).unwrap();
    // Live, removed, foreign and forged handles mixed, in batches shorter and longer than the
    // look-ahead.
    let mut mixed = Vec::new();
    for (i, &handle) in live.iter().enumerate() {
        mixed.push(handle);
        match i % 7 {
            0 => mixed.push(removed[i % removed.len()]),
            3 => mixed.push(foreign),
            5 => mixed.push(Handle::from_bits(u64::MAX - i as u64)),
            _ => {}
        }
    }
    for len in [0, 1, 2, 7, 8, 9, 15, 16, 17, 33, mixed.len()] {
        let batch = &mixed[..len];
        let mut visited = Vec::new();
        cache.get_many(batch, &guard, |i, value| visited.push((i, value.copied())));
        let expected: Vec<(usize, Option<u64>)> = (batch.iter().enumerate())
            .map(|(i, &handle)| (i, cache.get(handle, &guard).copied()))
            .collect();
        assert_eq!(visited, expected, "a batch of {len}");
    }
    assert!(mixed.iter().any(|&h| cache.get(h, &guard).is_none()));
}

#[test]
fn remove_many_removes_as_remove_does() {
    let cache: RelocCache<u64> = RelocCache::new().unwrap();
    let other: RelocCache<u64> = RelocCache::new().unwrap();
    let reader = cache.reader();
    let guard = reader.pin();
    let foreign = other.insert(5).unwrap();
    // Batches shorter and longer than the look-ahead, each of fresh live handles mixed with handles
    // removed before, a live handle named twice, foreign and forged handles.
    for len in [0, 1, 2, 15, 16, 17, 33, 300] {
        let live: Vec<Handle<u64>> = (0..len as u64).map(|i| cache.insert(i).unwrap()).collect();
        let kept = cache.insert(u64::MAX).unwrap();
        let stale = cache.insert(7).unwrap();
        assert!(cache.remove(stale, &guard));
        let mut batch = Vec::new();
        for (i, &handle) in live.iter().enumerate() {
            batch.push(handle);
            match i % 5 {
                0 => batch.push(stale),
                1 => batch.push(foreign),
                2 => batch.push(Handle::from_bits(u64::MAX - i as u64)),
                3 => batch.push(handle),
                _ => {}
            }
        }
        let before = cache.len();
        assert_eq!(cache.remove_many(&batch, &guard), len, "a batch of {len}");
        assert_eq!(cache.len(), before - len);
        for &handle in &batch {
            assert_eq!(cache.get(handle, &guard), None, "a removed handle resolved");
        }
        assert_eq!(cache.get(kept, &guard), Some(&u64::MAX));
        assert!(cache.remove(kept, &guard));
    }
    assert_eq!(other.get(foreign, &other.reader().pin()), Some(&5));
    assert_eq!(cache.len(), 0);
}

#[test]
#[should_panic(expected = "guard from another cache")]
fn remove_many_refuses_a_guard_from_another_cache() {
    let a: RelocCache<u64> = RelocCache::new().unwrap();
    let b: RelocCache<u64> = RelocCache::new().unwrap();
    let handle = a.insert(1).unwrap();
    let rb = b.reader();
    a.remove_many(&[handle], &rb.pin());
}

#[test]
#[should_panic(expected = "guard from another cache")]
fn get_many_refuses_a_guard_from_another_cache() {
    let a: RelocCache<u64> = RelocCache::new().unwrap();
    let b: RelocCache<u64> = RelocCache::new().unwrap();
    let handle = a.insert(1).unwrap();
    let rb = b.reader();
    a.get_many(&[handle], &rb.pin(), |_, _| {});
}

#[test]
#[should_panic(expected = "guard from another cache")]
fn a_guard_from_another_cache_is_refused() {
    let a: RelocCache<u64> = RelocCache::new().unwrap();
    let b: RelocCache<u64> = RelocCache::new().unwrap();
    let handle = a.insert(1).unwrap();
    let rb = b.reader();
    let _ = a.get(handle, &rb.pin());
}

#[test]
#[should_panic(expected = "guard from another cache")]
fn a_view_refuses_a_guard_from_another_cache() {
    let a: RelocCache<u64> = RelocCache::new().unwrap();
    let b: RelocCache<u64> = RelocCache::new().unwrap();
    let rb = b.reader();
    let _ = a.view(&rb.pin());
}

#[test]
fn a_type_too_large_for_a_slab_is_refused() {
    assert_eq!(
        RelocCache::<[u8; (36 << 10) + 1]>::new().err(),
        Some(CacheError::TooLarge)
    );
    // The largest type: its objects survive removals around them and a compaction.
    let cache: RelocCache<[u8; 36 << 10]> = RelocCache::new().unwrap();
    let reader = cache.reader();
    let guard = reader.pin();
    let handles: Vec<_> = (0..40u8)
        .map(|i| cache.insert([i; 36 << 10]).ok().unwrap())
        .collect();
    for &handle in handles.iter().step_by(3) {
        assert!(cache.remove(handle, &guard));
    }
    drop(guard);
    cache.flush(&reader);
    let report = cache.compact(&reader.pin(), Budget::Unlimited).unwrap();
    assert!(report.moved_objects > 0, "{report:?}");
    let guard = reader.pin();
    for (i, &handle) in handles.iter().enumerate() {
        let expected = (i % 3 != 0).then_some([i as u8; 36 << 10]);
        assert_eq!(cache.get(handle, &guard), expected.as_ref());
    }
}

/// Objects take blocks of their own size (rounded to 8 bytes and to their alignment), not of the
/// global allocator's size classes: a 72-byte object does not pay for an 80-byte block.
#[test]
fn blocks_are_the_size_of_the_type() {
    #[repr(align(64))]
    struct Aligned([u8; 65]);
    assert_eq!(RelocCache::<[u8; 72]>::new().unwrap().block_bytes(), 72);
    assert_eq!(RelocCache::<[u8; 1001]>::new().unwrap().block_bytes(), 1008);
    assert_eq!(RelocCache::<u8>::new().unwrap().block_bytes(), 16);
    let aligned = RelocCache::<Aligned>::new().unwrap();
    assert_eq!(aligned.block_bytes(), 128);
    let h = aligned.insert(Aligned([7; 65])).ok().unwrap();
    let reader = aligned.reader();
    let guard = reader.pin();
    let object = aligned.with_pinned(h, &guard, |a| (a.0[64], a as *const Aligned as usize));
    assert_eq!(object.map(|(last, addr)| (last, addr % 64)), Some((7, 0)));
}

/// Boxed strings and slices, and tuples of up to six fields, are `Relocatable`: read with `get`, they
/// survive removals and a compaction that moves them.
#[test]
fn boxed_slices_and_wide_tuples_move_and_read_back() {
    type Row = (Box<str>, Box<[u32]>, u8, u16, Option<u64>, (char,));
    let row = |i: u32| -> Row {
        let text = format!("row {i}").into_boxed_str();
        (
            text,
            (0..i % 7).collect(),
            i as u8,
            i as u16,
            Some(u64::from(i)),
            ('r',),
        )
    };
    let cache = RelocCache::<Row>::new().unwrap();
    let handles: Vec<_> = (0..20_000)
        .map(|i| cache.insert(row(i)).ok().unwrap())
        .collect();
    let reader = cache.reader();
    for (i, &h) in handles.iter().enumerate() {
        if i % 5 != 0 {
            assert!(cache.remove(h, &reader.pin()));
        }
    }
    // The removed blocks are free once no guard can hold them.
    cache.flush(&reader);
    let guard = reader.pin();
    let report = cache.compact(&guard, Budget::Unlimited).unwrap();
    assert!(report.moved_objects > 0, "nothing moved");
    for (i, &h) in handles.iter().enumerate().step_by(5) {
        assert_eq!(cache.get(h, &guard), Some(&row(i as u32)));
    }
}

/// Zero-sized objects each take a 16-byte block (a handle needs a place) but count no live bytes,
/// and compact as others do.
#[test]
fn zero_sized_objects_take_blocks_but_no_live_bytes() {
    let cache = RelocCache::<()>::new().unwrap();
    assert_eq!(cache.block_bytes(), 16);
    let handles: Vec<_> = (0..10_000).map(|_| cache.insert(()).unwrap()).collect();
    let reader = cache.reader();
    let guard = reader.pin();
    for &h in handles.iter().skip(1).step_by(2) {
        assert!(cache.remove(h, &guard));
    }
    drop(guard);
    cache.flush(&reader);
    let report = cache.compact(&reader.pin(), Budget::Unlimited).unwrap();
    assert!(report.moved_objects > 0);
    assert_eq!(report.moved_bytes, 0);
    let stats = cache.stats();
    assert_eq!((stats.live_objects, stats.live_bytes), (5_000, 0));
    let guard = reader.pin();
    for (i, &h) in handles.iter().enumerate() {
        assert_eq!(cache.get(h, &guard).is_some(), i % 2 == 0);
    }
}

/// An update of a stale handle answers `false` and leaves the cache as it was: a cache whose objects
/// are all gone holds no slab after it.
#[test]
fn a_stale_update_answers_false_and_leaves_no_slab() {
    let cache = RelocCache::<[u64; 8]>::new().unwrap();
    let handle = cache.insert([1; 8]).unwrap();
    let reader = cache.reader();
    assert!(cache.remove(handle, &reader.pin()));
    cache.flush(&reader);
    assert_eq!(cache.stats().slabs, 0);
    assert_eq!(cache.update(handle, &reader.pin(), |_| [2; 8]), Ok(false));
    assert_eq!(cache.stats().slabs, 0);
}

/// A budget bounds what one pass moves, in objects or in bytes (whole objects, the last crossing the
/// bound), and the report says when it ran out.
#[test]
fn a_budget_bounds_what_one_pass_moves() {
    let cache: RelocCache<[u64; 8]> = RelocCache::new().unwrap();
    let size = cache.block_bytes();
    assert_eq!(size, 64);
    let reader = cache.reader();
    let handles: Vec<_> = (0..20_000u64)
        .map(|i| cache.insert([i; 8]).unwrap())
        .collect();
    let guard = reader.pin();
    for (i, h) in handles.iter().enumerate() {
        if i % 8 != 0 {
            assert!(cache.remove(*h, &guard));
        }
    }
    drop(guard);
    cache.flush(&reader);
    let guard = reader.pin();
    for (budget, moves) in [
        (Budget::Objects(10), 10),
        (Budget::Bytes(10 * size), 10),
        // The last move may cross a byte bound, so a budget under one object moves one.
        (Budget::Bytes(10 * size + 1), 11),
        (Budget::Bytes(size - 1), 1),
        (Budget::Bytes(0), 0),
        (Budget::Objects(0), 0),
    ] {
        let report = cache.compact(&guard, budget).unwrap();
        assert_eq!(report.moved_objects, moves, "{budget:?}: {report:?}");
        assert_eq!(report.moved_bytes, moves * size, "{budget:?}: {report:?}");
        assert!(report.budget_exhausted, "{budget:?}: {report:?}");
    }
    let report = cache.compact(&guard, Budget::Unlimited).unwrap();
    assert!(
        report.moved_objects > 0 && !report.budget_exhausted,
        "{report:?}"
    );
    // The arena of a survivor ("the sparsest" could be one holding only old copies, which the
    // pinned guard keeps).
    let arena = cache.get(handles[0], &guard).unwrap() as *const [u64; 8] as usize;
    let budgeted = cache
        .evacuate_arena(&guard, arena, Budget::Objects(3))
        .unwrap();
    assert_eq!(budgeted.moved_objects, 3, "{budgeted:?}");
    assert!(budgeted.budget_exhausted);
    // One budget for all the arenas evacuated.
    let several = cache
        .evacuate_sparsest(&guard, 4, Budget::Objects(5))
        .unwrap();
    assert_eq!(several.moved_objects, 5, "{several:?}");
    assert!(several.budget_exhausted);
    for (i, h) in handles.iter().enumerate().step_by(8) {
        assert_eq!(cache.get(*h, &guard), Some(&[i as u64; 8]));
    }
}

/// A value that counts its drops in the counter it names.
struct Counted(u64, &'static AtomicUsize);

impl Drop for Counted {
    fn drop(&mut self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

// SAFETY: nothing in the value's own bytes can change through a shared reference (the counter it
// names lives outside it, so a move copies nothing a reader could write), and no self-reference.
unsafe impl relocate_api::Relocatable for Counted {}

#[test]
fn take_returns_the_value_and_drops_happen_once() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    let counted = |value| Counted(value, &DROPS);
    let mut cache: RelocCache<Counted> = RelocCache::new().unwrap();
    let handles: Vec<_> = (0..100)
        .map(|i| cache.insert(counted(i)).ok().unwrap())
        .collect();
    let taken = cache.take(handles[0]).unwrap();
    assert_eq!(taken.0, 0);
    assert!(cache.take(handles[0]).is_none());
    drop(taken);
    assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    {
        let reader = cache.reader();
        let guard = reader.pin();
        for h in &handles[1..50] {
            assert!(cache
                .update(*h, &guard, |old| counted(old.0 + 1000))
                .unwrap());
        }
        for h in &handles[50..60] {
            assert!(cache.remove(*h, &guard));
        }
        cache.compact(&guard, Budget::Unlimited).unwrap();
    }
    // The guard handed its removals (59, past one batch) to the epoch when it was dropped: once the
    // epoch moves on, the old and removed values are dropped, with the cache still alive.
    cache.flush(&cache.reader());
    assert_eq!(DROPS.load(Ordering::SeqCst), 1 + 49 + 10);
    assert_eq!(cache.len(), 89);
    drop(cache);
    // 100 values inserted + 49 made by updates, each dropped exactly once.
    assert_eq!(DROPS.load(Ordering::SeqCst), 149);
}

#[test]
fn the_background_compactor_brings_fragmentation_down() {
    use relocate_api::{start_compactor, CompactorConfig};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let cache: Arc<RelocCache<[u64; 4]>> = Arc::new(RelocCache::new().unwrap());
    let reader = cache.reader();
    let handles: Vec<_> = (0..50_000u64)
        .map(|i| cache.insert([i; 4]).unwrap())
        .collect();
    {
        let guard = reader.pin();
        for (i, h) in handles.iter().enumerate() {
            if i % 8 != 0 {
                assert!(cache.remove(*h, &guard));
            }
        }
    }
    cache.flush(&reader);
    let before = cache.stats();
    assert!(before.fragmentation > 4.0, "{before:?}");
    let compactor = start_compactor(
        cache.clone(),
        CompactorConfig {
            interval: Duration::from_millis(5),
            budget: Budget::Objects(500),
            target_fragmentation: 1.5,
        },
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    // 6,250 objects of 32 B need 4 slabs of 64 KiB: 1.31 is the floor here.
    while cache.stats().fragmentation > 1.5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = compactor.stop();
    let moved = report.compacted.moved_objects;
    let after = cache.stats();
    // What the compactor reports doing is what the cache counted.
    assert_eq!(moved as u64, after.counters.moved_objects, "{report:?}");
    assert!(report.compactions >= 1 && report.rounds >= report.compactions);
    assert_eq!(report.returned_slots, 0, "a RelocCache gives no slots back");
    assert!(
        after.fragmentation <= 1.5,
        "before {before:?} after {after:?}"
    );
    assert!(moved > 0);
    let guard = reader.pin();
    for (i, h) in handles.iter().enumerate().step_by(8) {
        assert_eq!(cache.get(*h, &guard), Some(&[i as u64; 4]));
    }
}

const GENERATIONS: usize = 1 << 18;

fn slot_index(handle: Handle<u64>) -> u64 {
    handle.to_bits() & (relocate_api::MAX_OBJECTS as u64 - 1)
}

/// Fills a slab (one 64 KiB unit of 16-byte blocks), then `take`s one object: that frees its block
/// and slot at once, so the next insert gets the block just freed and, with it, the same home slot,
/// which so serves every object from then on. Inserts and takes `objects` objects that way, each
/// checked, and records every handle made in `seen` (a handle made twice fails) and every use of a
/// slot in `uses`. Returns the keepers (the slab's other objects).
fn cycle_one_block(
    cache: &mut RelocCache<u64>,
    objects: usize,
    seen: &mut std::collections::HashSet<u64>,
    uses: &mut HashMap<u64, usize>,
) -> Vec<Handle<u64>> {
    let keepers: Vec<Handle<u64>> = (0..(64 << 10) / cache.block_bytes())
        .map(|_| cache.insert(u64::MAX).unwrap())
        .collect();
    for &keeper in &keepers {
        assert!(seen.insert(keeper.to_bits()));
        *uses.entry(slot_index(keeper)).or_default() += 1;
    }
    assert_eq!(cache.take(keepers[0]), Some(u64::MAX));
    for value in 0..objects as u64 {
        let handle = cache.insert(value).unwrap();
        assert!(
            seen.insert(handle.to_bits()),
            "handle {handle:?} made twice"
        );
        *uses.entry(slot_index(handle)).or_default() += 1;
        let reader = cache.reader();
        assert_eq!(cache.get(handle, &reader.pin()), Some(&value));
        drop(reader);
        assert_eq!(cache.take(handle), Some(value));
        assert_eq!(cache.get(handle, &cache.reader().pin()), None);
    }
    keepers
}

/// A slot serves 2^18 generations, then is retired rather than wrap: no handle ever made can name a
/// later object, however often slots are reused.
#[test]
fn a_slot_is_retired_before_its_generation_wraps() {
    let mut cache: RelocCache<u64> = RelocCache::new().unwrap();
    let (mut seen, mut uses) = Default::default();
    let keepers = cycle_one_block(&mut cache, GENERATIONS + 100, &mut seen, &mut uses);
    // One slot served all its generations and was retired; none served more.
    let worn: Vec<u64> = (uses.iter())
        .filter(|&(_, &n)| n == GENERATIONS)
        .map(|(&i, _)| i)
        .collect();
    assert_eq!(worn.len(), 1, "{:?}", uses.values().max());
    assert!(uses.values().all(|&n| n <= GENERATIONS));
    assert_eq!(cache.stats().counters.retired_slots, 1);
    for value in 0..100 {
        let after = cache.insert(value).unwrap();
        assert_ne!(slot_index(after), worn[0], "a retired slot was handed out");
    }
    assert_eq!(cache.len(), keepers.len() + 99);
}

/// The removal of a slot's last generation retires it at once, not when the slot comes back to the
/// cache. The case that needs it: the last object has left its home block (an update moved it), and
/// is removed under a guard, so its slot waits in the guard's batch while its home block is free. An
/// insert that gets that block looks at the block's home slot: it must not see a slot never used,
/// and hand out generation 0 again (a handle from 2^18 uses ago would then read the new object, and
/// the new object would be lost when the slot came back and was retired under it).
#[test]
fn a_slot_whose_last_object_left_home_is_not_taken_again() {
    let mut cache: RelocCache<u64> = RelocCache::new().unwrap();
    let (mut seen, mut uses) = Default::default();
    // The slot's first object was the keeper taken to free the block: it has one generation left.
    let keepers = cycle_one_block(&mut cache, GENERATIONS - 2, &mut seen, &mut uses);
    let last = cache.insert(7).unwrap();
    assert!(seen.insert(last.to_bits()));
    assert_eq!(uses.get(&slot_index(last)), Some(&(GENERATIONS - 1)));
    let reader = cache.reader();
    {
        let guard = reader.pin();
        assert_eq!(cache.update(last, &guard, |v| v + 1), Ok(true));
    }
    cache.flush(&reader); // the home block is free
    let guard = reader.pin();
    assert!(cache.remove(last, &guard));
    // Enough inserts to fill the slab the update opened and come back to the first one's free block.
    let fresh: Vec<(Handle<u64>, u64)> = (0..2 * keepers.len() as u64)
        .map(|value| {
            let handle = cache.insert(value).unwrap();
            assert!(
                seen.insert(handle.to_bits()),
                "handle {handle:?} made twice"
            );
            (handle, value)
        })
        .collect();
    assert!(
        fresh
            .iter()
            .all(|(h, _)| slot_index(*h) != slot_index(last)),
        "the worn slot was handed out again"
    );
    drop(guard);
    cache.flush(&reader);
    let guard = reader.pin();
    for (handle, value) in &fresh {
        assert_eq!(cache.get(*handle, &guard), Some(value));
    }
    assert_eq!(cache.get(last, &guard), None);
    assert_eq!(cache.stats().counters.retired_slots, 1);
    assert_eq!(cache.len(), keepers.len() - 1 + fresh.len());
}

/// Removals under one long-lived guard hand their slots back a batch at a time, but their blocks wait
/// for the epoch, so new objects go to other blocks and, while the cache uses fewer than its bound of
/// slots (one and a half per object plus a run of 256), to those blocks' home slots. Past the bound
/// they take the vacant slots: a cache that inserts and removes in turn uses at most a few hundred
/// slots rather than growing its table, and counts each removal at once.
#[test]
fn slots_come_back_while_a_guard_stays_pinned() {
    let cache: RelocCache<u64> = RelocCache::new().unwrap();
    let reader = cache.reader();
    let guard = reader.pin();
    let mut slots = std::collections::HashSet::new();
    for value in 0..100_000u64 {
        let handle = cache.insert(value).unwrap();
        slots.insert(handle.to_bits() & (relocate_api::MAX_OBJECTS as u64 - 1));
        assert_eq!(cache.len(), 1);
        assert!(cache.remove(handle, &guard));
        assert_eq!(cache.len(), 0);
    }
    assert!(slots.len() <= 256 + 64, "{} slots used", slots.len());
    // The slots lie in the home slots of the few units used before the bound, a page or two of
    // table each, and the spares' page: less than the 128 KiB chunk a table grows by.
    let table = cache.stats().table_bytes;
    assert!(table <= 64 << 10, "{table} bytes of table resident");
}

/// A `remove_with` whose function panics still removes the object: it is counted at once, its value
/// is dropped once the epoch moves on, and nothing leaks.
#[test]
fn a_panicking_remove_function_loses_nothing() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    let counted = |value| Counted(value, &DROPS);
    let cache: RelocCache<Counted> = RelocCache::new().unwrap();
    let doomed = cache.insert(counted(1)).ok().unwrap();
    let kept = cache.insert(counted(2)).ok().unwrap();
    let reader = cache.reader();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let guard = reader.pin();
        cache.remove_with(doomed, &guard, |_| -> () { panic!("the callback fails") })
    }));
    assert!(outcome.is_err());
    assert_eq!(cache.len(), 1);
    assert!(cache.get(doomed, &reader.pin()).is_none());
    assert!(cache.get(kept, &reader.pin()).is_some());
    cache.flush(&reader);
    assert_eq!(
        DROPS.load(Ordering::SeqCst),
        1,
        "the removed value was dropped once"
    );
    drop(reader);
    drop(cache);
    assert_eq!(DROPS.load(Ordering::SeqCst), 2);
}
