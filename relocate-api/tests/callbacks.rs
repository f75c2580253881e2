//! Relocation callbacks: an intrusive doubly linked list whose nodes live in a cache. The nodes'
//! links are atomics (interior mutability), so the type is *not* `Relocatable`: it is read through
//! `with_pinned`, and its relocator fixes the neighbours' pointers (and the list head) on every move.
//! After compaction the list is intact and traversable, every link points at the node's current copy,
//! and a callback that refuses or panics leaves its object where it was. A relocator that takes the
//! list's lock once per batch of moves sees every `migrate` under it, and one whose batches run no
//! moves (or panic first) moves nothing and does not stall compaction.

use relocate_api::{
    Budget, FnRelocator, Guard, Handle, Isolation, RelocCache, Relocator, MOVE_BATCH,
};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

struct Node {
    prev: AtomicPtr<Node>,
    next: AtomicPtr<Node>,
    value: AtomicU64,
}

type IsolateFn = Box<dyn Fn(&Node, Handle<Node>) -> Isolation + Send + Sync>;
type MigrateFn = Box<dyn Fn(*const Node, *mut Node, Handle<Node>) + Send + Sync>;
type ListRelocator = FnRelocator<IsolateFn, MigrateFn>;

fn list_cache(
    head: Arc<AtomicPtr<Node>>,
    refuse_odd: Arc<AtomicBool>,
    panic_on: Arc<AtomicU64>,
) -> RelocCache<Node, ListRelocator> {
    let isolate: IsolateFn = Box::new(move |node, _| {
        if refuse_odd.load(Ordering::Relaxed) && node.value.load(Ordering::Relaxed) % 2 == 1 {
            Isolation::Busy
        } else {
            Isolation::Ready
        }
    });
    let migrate: MigrateFn = Box::new(move |old, new, _| {
        if panic_on.swap(u64::MAX, Ordering::Relaxed) == 0 {
            // SAFETY: the cache passes a live node at `old`.
            let value = unsafe { (*old).value.load(Ordering::Acquire) };
            panic!("test: migrate panics once (value {value})");
        }
        // SAFETY: as `move_node` requires: the cache's arguments to `migrate`.
        unsafe { move_node(old, new, &head) };
    });
    // SAFETY: `migrate` either panics before it touches anything or moves the node with
    // `move_node`, which leaves a valid node at `new` and the one at `old` as it was.
    let relocator = unsafe { FnRelocator::new(isolate, migrate) };
    RelocCache::with_relocator(relocator).unwrap()
}

/// Moves a list node from `old` to `new` and points its neighbours (or the head) at `new`.
///
/// # Safety
/// - `old` is a live node and `new` room for one; the compactor moves one node at a time, so the
///   neighbours are live and stay put meanwhile.
unsafe fn move_node(old: *const Node, new: *mut Node, head: &AtomicPtr<Node>) {
    // SAFETY: the caller's contract.
    unsafe {
        let (prev, next) = (
            (*old).prev.load(Ordering::Acquire),
            (*old).next.load(Ordering::Acquire),
        );
        new.write(Node {
            prev: AtomicPtr::new(prev),
            next: AtomicPtr::new(next),
            value: AtomicU64::new((*old).value.load(Ordering::Acquire)),
        });
        match prev.is_null() {
            true => head.store(new, Ordering::Release),
            false => (*prev).next.store(new, Ordering::Release),
        }
        if !next.is_null() {
            (*next).prev.store(new, Ordering::Release);
        }
    }
}

/// Appends nodes `0..n` to the list at `head` (empty), returning their handles.
fn build_list<R: Relocator<Node>>(
    cache: &RelocCache<Node, R>,
    guard: &Guard,
    head: &AtomicPtr<Node>,
    n: u64,
) -> Vec<Handle<Node>> {
    let mut handles = Vec::new();
    let mut tail: *mut Node = ptr::null_mut();
    for value in 0..n {
        let node = Node {
            prev: AtomicPtr::new(tail),
            next: AtomicPtr::new(ptr::null_mut()),
            value: AtomicU64::new(value),
        };
        let handle = cache.insert(node).ok().unwrap();
        let addr = cache
            .with_pinned(handle, guard, |n| n as *const Node as *mut Node)
            .unwrap();
        match tail.is_null() {
            true => head.store(addr, Ordering::Release),
            // SAFETY: `tail` is the live previous node.
            false => unsafe { (*tail).next.store(addr, Ordering::Release) },
        }
        tail = addr;
        handles.push(handle);
    }
    handles
}

/// Unlinks and removes every node whose value is not a multiple of 10 (no compaction runs
/// meanwhile), and returns the values left, in list order.
fn thin_list<R: Relocator<Node>>(
    cache: &RelocCache<Node, R>,
    guard: &Guard,
    head: &AtomicPtr<Node>,
    handles: &[Handle<Node>],
) -> Vec<u64> {
    for (value, handle) in handles.iter().enumerate() {
        if value % 10 != 0 {
            cache
                .with_pinned(*handle, guard, |n| {
                    let (prev, next) = (
                        n.prev.load(Ordering::Acquire),
                        n.next.load(Ordering::Acquire),
                    );
                    // SAFETY: neighbours are live nodes (no compaction runs during this loop).
                    unsafe {
                        match prev.is_null() {
                            true => head.store(next, Ordering::Release),
                            false => (*prev).next.store(next, Ordering::Release),
                        }
                        if !next.is_null() {
                            (*next).prev.store(prev, Ordering::Release);
                        }
                    }
                })
                .unwrap();
            assert!(cache.remove(*handle, guard));
        }
    }
    (0..handles.len() as u64).filter(|v| v % 10 == 0).collect()
}

/// Every link of the list points at the current copy the cache resolves each kept handle to.
fn links_are_current<R: Relocator<Node>>(
    cache: &RelocCache<Node, R>,
    guard: &Guard,
    head: &AtomicPtr<Node>,
    handles: &[Handle<Node>],
) {
    let mut node = head.load(Ordering::Acquire);
    for handle in handles.iter().step_by(10) {
        let current = cache
            .with_pinned(*handle, guard, |n| n as *const Node as *mut Node)
            .unwrap();
        assert_eq!(current, node);
        // SAFETY: live node.
        node = unsafe { (*node).next.load(Ordering::Acquire) };
    }
    assert!(node.is_null());
}

/// Walks the list from the head: values in order, links consistent both ways.
fn walk(head: &AtomicPtr<Node>) -> Vec<u64> {
    let mut values = Vec::new();
    let mut prev: *mut Node = ptr::null_mut();
    let mut node = head.load(Ordering::Acquire);
    while !node.is_null() {
        // SAFETY: list nodes are live cache objects; no move runs during the walk.
        let n = unsafe { &*node };
        assert_eq!(n.prev.load(Ordering::Acquire), prev, "back link broken");
        values.push(n.value.load(Ordering::Acquire));
        prev = node;
        node = n.next.load(Ordering::Acquire);
    }
    values
}

#[test]
fn a_linked_list_survives_compaction() {
    let head = Arc::new(AtomicPtr::new(ptr::null_mut()));
    let refuse_odd = Arc::new(AtomicBool::new(false));
    let panic_on = Arc::new(AtomicU64::new(u64::MAX));
    let cache = list_cache(head.clone(), refuse_odd.clone(), panic_on.clone());
    let reader = cache.reader();
    let guard = reader.pin();
    let handles = build_list(&cache, &guard, &head, 20_000);
    let expected = thin_list(&cache, &guard, &head, &handles);
    assert_eq!(walk(&head), expected);
    drop(guard);
    cache.flush(&reader);
    let before = cache.stats();

    // Compaction whose `migrate` panics on its first call (that node must stay where it was).
    panic_on.store(0, Ordering::Relaxed);
    let guard = reader.pin();
    let report = cache.compact(&guard, Budget::Unlimited).unwrap();
    drop(guard);
    cache.flush(&reader);
    let after = cache.stats();
    assert!(report.moved_objects > 0, "{report:?}");
    assert_eq!(report.panics, 1, "{report:?}");
    assert!(
        after.slabs < before.slabs,
        "before {before:?} after {after:?}"
    );
    assert_eq!(walk(&head), expected, "the list is broken after compaction");

    links_are_current(&cache, &reader.pin(), &head, &handles);
}

#[test]
fn refused_moves_leave_objects_in_place() {
    let head = Arc::new(AtomicPtr::new(ptr::null_mut()));
    let refuse_odd = Arc::new(AtomicBool::new(true));
    let cache = list_cache(head, refuse_odd, Arc::new(AtomicU64::new(u64::MAX)));
    let reader = cache.reader();
    let guard = reader.pin();
    let mut handles = Vec::new();
    for value in 0..5_000u64 {
        let node = Node {
            prev: AtomicPtr::new(ptr::null_mut()),
            next: AtomicPtr::new(ptr::null_mut()),
            value: AtomicU64::new(value),
        };
        handles.push(cache.insert(node).ok().unwrap());
    }
    for (value, handle) in handles.iter().enumerate() {
        if value % 4 >= 2 {
            assert!(cache.remove(*handle, &guard));
        }
    }
    drop(guard);
    cache.flush(&reader);
    let guard = reader.pin();
    let odd_before: Vec<(u64, usize)> = handles
        .iter()
        .filter_map(|h| {
            cache.with_pinned(*h, &guard, |n| {
                (n.value.load(Ordering::Relaxed), n as *const Node as usize)
            })
        })
        .filter(|(v, _)| v % 2 == 1)
        .collect();
    let report = cache.compact(&guard, Budget::Unlimited).unwrap();
    assert!(report.refused > 0, "{report:?}");
    for (value, addr) in odd_before {
        let now = cache
            .with_pinned(handles[value as usize], &guard, |n| {
                n as *const Node as usize
            })
            .unwrap();
        assert_eq!(now, addr, "a refused object moved");
    }
}

/// A relocator for the list that takes the list's lock once per batch of moves (its `migrate` then
/// finds it held), counts what it does, and can be told to misbehave.
struct BatchingList {
    head: Arc<AtomicPtr<Node>>,
    /// The list's lock: taken by `batch`, held while its moves run.
    lock: Mutex<()>,
    held: AtomicBool,
    batches: AtomicUsize,
    migrations: AtomicUsize,
    /// Moves made while the lock was not held (must stay 0).
    unlocked_moves: AtomicUsize,
    /// `batch` returns at once without running the moves.
    skip: AtomicBool,
    /// `batch` panics before running the moves.
    panic_first: AtomicBool,
    /// Every this many `migrate` calls one panics, before it touches anything (0: never) ...
    panic_every: AtomicUsize,
    panics: AtomicUsize,
    /// ... and `batch` catches the panic and runs the moves again.
    catch: AtomicBool,
}

struct Batching(Arc<BatchingList>);

// SAFETY: `migrate` either panics before it touches anything or moves the node with `move_node`,
// which leaves a valid node at `new` and the one at `old` as it was.
unsafe impl Relocator<Node> for Batching {
    fn batch(&self, moves: &mut dyn FnMut()) {
        let list = &self.0;
        if list.skip.load(Ordering::Relaxed) {
            return;
        }
        if list.panic_first.load(Ordering::Relaxed) {
            panic!("test: batch panics before its moves");
        }
        let _locked = list.lock.lock().unwrap_or_else(|e| e.into_inner());
        list.batches.fetch_add(1, Ordering::Relaxed);
        list.held.store(true, Ordering::Relaxed);
        if list.catch.load(Ordering::Relaxed) {
            // Runs the moves again after each caught panic (the next call goes on after it).
            while catch_unwind(AssertUnwindSafe(&mut *moves)).is_err() {}
        } else {
            moves();
        }
        list.held.store(false, Ordering::Relaxed);
    }

    unsafe fn migrate(&self, old: *const Node, new: *mut Node, _: Handle<Node>) {
        let list = &self.0;
        if !list.held.load(Ordering::Relaxed) || list.lock.try_lock().is_ok() {
            list.unlocked_moves.fetch_add(1, Ordering::Relaxed);
        }
        let call = list.migrations.fetch_add(1, Ordering::Relaxed) + 1;
        let every = list.panic_every.load(Ordering::Relaxed);
        if every != 0 && call % every == 0 {
            list.panics.fetch_add(1, Ordering::Relaxed);
            panic!("test: migrate call {call} panics");
        }
        // SAFETY: the cache's arguments to `migrate`.
        unsafe { move_node(old, new, &list.head) };
    }
}

fn batching_list() -> (Arc<BatchingList>, BatchingCache) {
    let list = Arc::new(BatchingList {
        head: Arc::new(AtomicPtr::new(ptr::null_mut())),
        lock: Mutex::new(()),
        held: AtomicBool::new(false),
        batches: AtomicUsize::new(0),
        migrations: AtomicUsize::new(0),
        unlocked_moves: AtomicUsize::new(0),
        skip: AtomicBool::new(false),
        panic_first: AtomicBool::new(false),
        panic_every: AtomicUsize::new(0),
        panics: AtomicUsize::new(0),
        catch: AtomicBool::new(false),
    });
    let cache = RelocCache::with_relocator(Batching(list.clone())).unwrap();
    (list, cache)
}

type BatchingCache = RelocCache<Node, Batching>;

/// A batching list of `n` nodes, thinned to every tenth (`thin_list`), with the removed nodes'
/// memory back: the list, its cache, the handles of all `n` nodes and the values left in order.
fn thinned_batching_list(
    n: u64,
) -> (
    Arc<BatchingList>,
    BatchingCache,
    Vec<Handle<Node>>,
    Vec<u64>,
) {
    let (list, cache) = batching_list();
    let reader = cache.reader();
    let guard = reader.pin();
    let handles = build_list(&cache, &guard, &list.head, n);
    let expected = thin_list(&cache, &guard, &list.head, &handles);
    drop(guard);
    cache.flush(&reader);
    drop(reader);
    (list, cache, handles, expected)
}

/// Moves come in batches of up to `MOVE_BATCH` objects: the relocator takes its lock once per
/// batch, every `migrate` runs with it held, and the list is intact after compaction.
#[test]
fn moves_come_in_batches_under_one_lock() {
    let (list, cache, handles, expected) = thinned_batching_list(20_000);
    let reader = cache.reader();
    let report = cache.compact(&reader.pin(), Budget::Unlimited).unwrap();
    let (moved, batches) = (report.moved_objects, list.batches.load(Ordering::Relaxed));
    assert!(moved > 1_000, "{report:?}");
    assert_eq!(list.migrations.load(Ordering::Relaxed), moved);
    assert_eq!(list.unlocked_moves.load(Ordering::Relaxed), 0);
    // Each source slab's live objects go in batches of `MOVE_BATCH`, the last one partial.
    assert!(batches >= moved.div_ceil(MOVE_BATCH), "{batches} batches");
    assert!(
        batches <= moved / MOVE_BATCH + report.source_slabs,
        "{batches} batches for {moved} moves from {} slabs",
        report.source_slabs
    );
    assert_eq!(walk(&list.head), expected);
    links_are_current(&cache, &reader.pin(), &list.head, &handles);
}

/// A relocator whose `batch` does not run the moves, or panics before them, moves nothing: every
/// object stays where it was, counted as refused (or the batch as a panic), and compaction ends.
#[test]
fn a_batch_that_runs_no_moves_refuses_them() {
    let (list, cache, handles, expected) = thinned_batching_list(5_000);
    let reader = cache.reader();
    let addresses = |guard: &Guard| -> Vec<usize> {
        (handles.iter().step_by(10))
            .map(|&h| {
                cache
                    .with_pinned(h, guard, |n| n as *const Node as usize)
                    .unwrap()
            })
            .collect()
    };
    let before = addresses(&reader.pin());
    list.skip.store(true, Ordering::Relaxed);
    let skipped = cache.compact(&reader.pin(), Budget::Unlimited).unwrap();
    list.skip.store(false, Ordering::Relaxed);
    list.panic_first.store(true, Ordering::Relaxed);
    let panicked = cache.compact(&reader.pin(), Budget::Unlimited).unwrap();
    for report in [skipped, panicked] {
        assert_eq!(report.moved_objects, 0, "{report:?}");
        assert!(report.refused > 0, "{report:?}");
    }
    assert_eq!(skipped.panics, 0);
    assert!(panicked.panics > 0 && panicked.panics >= panicked.refused.div_ceil(MOVE_BATCH));
    assert_eq!(list.migrations.load(Ordering::Relaxed), 0);
    assert_eq!(addresses(&reader.pin()), before, "an object moved");
    assert_eq!(walk(&list.head), expected);
    // Well behaved again, it compacts.
    list.panic_first.store(false, Ordering::Relaxed);
    let report = cache.compact(&reader.pin(), Budget::Unlimited).unwrap();
    assert!(report.moved_objects > 0, "{report:?}");
    assert_eq!(walk(&list.head), expected);
    links_are_current(&cache, &reader.pin(), &list.head, &handles);
}

/// A `migrate` that panics, inside a `batch` that catches the panic and runs the moves again: each
/// interrupted move is still undone (the object stays where it was, not locked), counted as a
/// panic, and an evacuation (which moves all it can) goes on with the next object.
#[test]
fn a_panic_that_batch_catches_still_abandons_its_move() {
    let (list, cache, handles, expected) = thinned_batching_list(20_000);
    let reader = cache.reader();
    list.panic_every.store(7, Ordering::Relaxed);
    list.catch.store(true, Ordering::Relaxed);
    let report = cache
        .evacuate_sparsest(&reader.pin(), 1, Budget::Unlimited)
        .unwrap();
    let panics = list.panics.load(Ordering::Relaxed);
    assert!(panics > 10, "{report:?}");
    assert_eq!(report.panics, panics, "{report:?}");
    assert_eq!(
        report.moved_objects + panics,
        list.migrations.load(Ordering::Relaxed)
    );
    assert_eq!(walk(&list.head), expected);
    // Every object is reachable (none left locked), and the links name the current copies.
    links_are_current(&cache, &reader.pin(), &list.head, &handles);
    for (i, &handle) in handles.iter().enumerate().step_by(10) {
        let value = cache.with_pinned(handle, &reader.pin(), |n| n.value.load(Ordering::Relaxed));
        assert_eq!(value, Some(i as u64));
    }
    cache.flush(&reader);
    list.panic_every.store(0, Ordering::Relaxed);
    let again = cache.compact(&reader.pin(), Budget::Unlimited).unwrap();
    assert_eq!(again.panics, 0);
    assert_eq!(walk(&list.head), expected);
    links_are_current(&cache, &reader.pin(), &list.head, &handles);
}
