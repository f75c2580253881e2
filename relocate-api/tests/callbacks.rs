//! Relocation callbacks: an intrusive doubly linked list whose nodes live in a cache. The nodes'
//! links are atomics (interior mutability), so the type is *not* `Relocatable`: it is read through
//! `with_pinned`, and its relocator fixes the neighbours' pointers (and the list head) on every move.
//! After compaction the list is intact and traversable, every link points at the node's current copy,
//! and a callback that refuses or panics leaves its object where it was.

use relocate_api::{Budget, FnRelocator, Handle, Isolation, RelocCache};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;

struct Node {
    prev: AtomicPtr<Node>,
    next: AtomicPtr<Node>,
    value: AtomicU64,
}

type IsolateFn = Box<dyn Fn(&Node, Handle<Node>) -> Isolation + Send + Sync>;
type MigrateFn = Box<dyn Fn(*const Node, *mut Node, Handle<Node>) + Send + Sync>;
type Relocator = FnRelocator<IsolateFn, MigrateFn>;

fn list_cache(
    head: Arc<AtomicPtr<Node>>,
    refuse_odd: Arc<AtomicBool>,
    panic_on: Arc<AtomicU64>,
) -> RelocCache<Node, Relocator> {
    let isolate: IsolateFn = Box::new(move |node, _| {
        if refuse_odd.load(Ordering::Relaxed) && node.value.load(Ordering::Relaxed) % 2 == 1 {
            Isolation::Busy
        } else {
            Isolation::Ready
        }
    });
    let migrate: MigrateFn = Box::new(move |old, new, _| {
        // SAFETY: the cache passes a live node at `old` and room for one node at `new`; the compactor
        // moves one node at a time, so the neighbours are live and stay put meanwhile.
        unsafe {
            let (prev, next) = (
                (*old).prev.load(Ordering::Acquire),
                (*old).next.load(Ordering::Acquire),
            );
            let value = (*old).value.load(Ordering::Acquire);
            if panic_on.swap(u64::MAX, Ordering::Relaxed) == 0 {
                panic!("test: migrate panics once (value {value})");
            }
            new.write(Node {
                prev: AtomicPtr::new(prev),
                next: AtomicPtr::new(next),
                value: AtomicU64::new(value),
            });
            match prev.is_null() {
                true => head.store(new, Ordering::Release),
                false => (*prev).next.store(new, Ordering::Release),
            }
            if !next.is_null() {
                (*next).prev.store(new, Ordering::Release);
            }
        }
    });
    RelocCache::with_relocator(FnRelocator { isolate, migrate }).unwrap()
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
    // Build a list of 20,000 nodes, appending at the tail.
    let mut handles = Vec::new();
    let mut tail: *mut Node = ptr::null_mut();
    for value in 0..20_000u64 {
        let node = Node {
            prev: AtomicPtr::new(tail),
            next: AtomicPtr::new(ptr::null_mut()),
            value: AtomicU64::new(value),
        };
        let handle = cache.insert(node).ok().unwrap();
        let addr = cache
            .with_pinned(handle, &guard, |n| n as *const Node as *mut Node)
            .unwrap();
        match tail.is_null() {
            true => head.store(addr, Ordering::Release),
            // SAFETY: `tail` is the live previous node.
            false => unsafe { (*tail).next.store(addr, Ordering::Release) },
        }
        tail = addr;
        handles.push(handle);
    }
    // Unlink and remove every node whose value is not a multiple of 10.
    for (value, handle) in handles.iter().enumerate() {
        if value % 10 != 0 {
            cache
                .with_pinned(*handle, &guard, |n| {
                    let (prev, next) = (
                        n.prev.load(Ordering::Acquire),
                        n.next.load(Ordering::Acquire),
                    );
                    // SAFETY: neighbours are live nodes (nothing moves while we hold the pin... and no
                    // compaction runs during this loop).
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
            assert!(cache.remove(*handle, &guard));
        }
    }
    let expected: Vec<u64> = (0..20_000).filter(|v| v % 10 == 0).collect();
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

    // Every link points at the current copy the cache resolves each handle to.
    let guard = reader.pin();
    let mut node = head.load(Ordering::Acquire);
    for handle in handles.iter().step_by(10) {
        let current = cache
            .with_pinned(*handle, &guard, |n| n as *const Node as *mut Node)
            .unwrap();
        assert_eq!(current, node);
        // SAFETY: live node.
        node = unsafe { (*node).next.load(Ordering::Acquire) };
    }
    assert!(node.is_null());
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
