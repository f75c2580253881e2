//! Model: heap abandonment and adoption (`pool::abandon_heap` / `acquire_heap`) with a remote freer
//! racing both, on the real `SpinLock` and the real remote-free lists.
//!
//! The model heap has what the protocol touches: its `DelayedFreeList`, one slab's `RemoteFreeList`,
//! and owner-private state in loom `UnsafeCell`s (the slab's local free list and parked bit, and a word
//! standing for the rest of the heap's `Cell`s). Thread A owns the heap: it writes the private word,
//! parks the slab as full (`take_and_arm`; absorbing and disarming if frees raced in), and abandons the
//! heap by pushing it onto the `SpinLock`-protected abandoned list. Thread B frees three blocks of the
//! slab remotely (`free_remote`), racing A's parking and abandonment. Thread C adopts a heap from the
//! list if there is one (lock, pop; it looks twice), which makes it the owner: it reads and updates the
//! private word and collects both lists. After all three finish, the main thread, which now owns the heap (from C,
//! or from the list if C found it empty), collects what is left. What it proves, for every interleaving
//! up to the preemption bound:
//! - every remote free is collected exactly once, whether it landed before A parked, while the heap was
//!   abandoned, or after C adopted it, and whether it went through the slab list or the delayed list;
//! - ownership moves through the lock: everything A wrote to the owner-private state happens-before
//!   C's accesses after adoption (loom panics on any unordered access to the `UnsafeCell`s), and C sees
//!   A's values;
//! - the notify flag is consumed exactly once (by a successful `disarm` or by one remote free).
//!
//! Only A and C ever wait for the lock at the same time (the main thread locks after joining them):
//! loom has no fairness, and with two threads spinning on a held lock it can schedule the spinners
//! against each other forever.
#![cfg(loom)]

use core::mem;

use alloc_core::lock::SpinLock;
use alloc_core::remote::{Block, DelayedFreeList, Pushed, RemoteFreeList};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use loom_tests::support::{assert_each_once, collect_list, free_remote, Owned};
use loom_tests::Coverage;

const BLOCKS: usize = 3;
const WRITTEN_BY_A: u64 = 0xA;
const WRITTEN_BY_C: u64 = 0xC;
/// How often C looks for an abandoned heap before giving up.
const ADOPT_ATTEMPTS: usize = 2;

static ADOPTED: Coverage = Coverage::new("C adopted the heap");
static ADOPTER_COLLECTED: Coverage = Coverage::new("C collected a remote free after adopting");
static LATE_FREES: Coverage = Coverage::new("A's park_full found late frees");

fn contents_of(id: usize) -> usize {
    3000 + id
}

/// The parts of a heap (with one slab) that the abandonment protocol touches.
struct ModelHeap {
    /// Blocks of this heap's parked slabs, freed by other threads (any thread pushes).
    delayed: DelayedFreeList,
    /// The slab's remote-free list (any thread pushes; the owner takes).
    remote: RemoteFreeList,
    /// Owner-private: the slab's collected blocks (`Slab::local_free`).
    local_free: UnsafeCell<Vec<Owned>>,
    /// Owner-private: the slab is in the full queue (armed).
    parked: UnsafeCell<bool>,
    /// Owner-private: stands for the rest of the heap's `Cell`s.
    private: UnsafeCell<u64>,
    /// Owner-private: successful `disarm` calls, for the flag accounting.
    disarmed: UnsafeCell<usize>,
}

// SAFETY: as for alloc-core's `Heap`: the `UnsafeCell`s are touched only by the heap's single owner
// (the thread holding it, or the abandoned list's lock holder), and ownership passes through the lock
// or a thread join; other threads only push to the atomic lists.
unsafe impl Sync for ModelHeap {}

impl ModelHeap {
    fn new() -> Self {
        Self {
            delayed: DelayedFreeList::new(),
            remote: RemoteFreeList::new(),
            local_free: UnsafeCell::new(Vec::new()),
            parked: UnsafeCell::new(false),
            private: UnsafeCell::new(0),
            disarmed: UnsafeCell::new(0),
        }
    }

    // The owner-only accessors below are where the single-owner argument is made: each is called only
    // by the heap's current owner, and loom checks that ownership transfers order these accesses.

    fn with_private<R>(&self, f: impl FnOnce(&mut u64) -> R) -> R {
        // SAFETY: owner only (see above); loom checks the access.
        self.private.with_mut(|p| f(unsafe { &mut *p }))
    }

    fn set_parked(&self, parked: bool) -> bool {
        // SAFETY: owner only (see above); loom checks the access.
        self.parked
            .with_mut(|p| core::mem::replace(unsafe { &mut *p }, parked))
    }

    /// Owner only: takes ownership of a list taken from `remote` or `delayed`.
    fn absorb(&self, list: *mut Block) -> usize {
        // SAFETY: the model pushes only blocks made by `Owned::alloc` and given up by `free_remote`;
        // the caller took `list` from one of this heap's lists, which hands the blocks to us.
        let blocks = unsafe { collect_list(list) };
        let count = blocks.len();
        // SAFETY: owner only (see above); loom checks the access.
        self.local_free
            .with_mut(|local| unsafe { &mut *local }.extend(blocks));
        count
    }

    /// Owner only.
    fn disarm(&self) {
        if self.remote.disarm() {
            // SAFETY: owner only (see above); loom checks the access.
            self.disarmed.with_mut(|d| unsafe { *d += 1 });
        }
    }

    /// Owner only: `Heap::park_full`. Returns whether late frees kept the slab from parking.
    fn park_full(&self) -> bool {
        let late = self.remote.take_and_arm();
        if late.is_null() {
            self.set_parked(true);
            false
        } else {
            self.absorb(late);
            self.disarm();
            true
        }
    }

    /// Owner only: `Heap::collect` for this heap's one slab (drain the delayed list, take the slab's
    /// list, un-park a parked slab that received frees).
    /// Returns how many blocks it collected.
    fn collect(&self) -> usize {
        let received = self.absorb(self.delayed.take()) + self.absorb(self.remote.take());
        if received > 0 && self.set_parked(false) {
            self.disarm();
        }
        received
    }
}

/// The abandoned-heap list (`pool::ABANDONED`).
type Abandoned = SpinLock<Vec<Arc<ModelHeap>>>;

#[test]
fn abandoned_heap_is_adopted_with_its_state_and_frees() {
    loom_tests::model(|| {
        let abandoned: Arc<Abandoned> = Arc::new(SpinLock::new(Vec::new()));
        let heap = Arc::new(ModelHeap::new());

        let freer = {
            let blocks: Vec<Owned> = (0..BLOCKS).map(Owned::alloc).collect();
            let heap = heap.clone();
            thread::spawn(move || {
                blocks
                    .into_iter()
                    .map(|block| {
                        block.write_contents(contents_of(block.id()));
                        free_remote(&heap.remote, &heap.delayed, block)
                    })
                    .filter(|pushed| *pushed == Pushed::NotifyOwner)
                    .count()
            })
        };

        let owner_a = {
            let abandoned = abandoned.clone();
            thread::spawn(move || {
                heap.with_private(|p| *p = WRITTEN_BY_A);
                let late_frees = heap.park_full();
                // Lets loom run the others here without spending a preemption.
                thread::yield_now();
                // `abandon_heap`: after this, the lock holder owns the heap.
                abandoned.lock().push(heap);
                late_frees
            })
        };

        let adopter_c = {
            let abandoned = abandoned.clone();
            thread::spawn(move || {
                for _ in 0..ADOPT_ATTEMPTS {
                    // `acquire_heap`.
                    let Some(heap) = abandoned.lock().pop() else {
                        thread::yield_now();
                        continue;
                    };
                    // We own the heap now.
                    heap.with_private(|p| {
                        assert_eq!(*p, WRITTEN_BY_A, "adopter must see the abandoner's writes");
                        *p = WRITTEN_BY_C;
                    });
                    let collected = heap.collect();
                    return Some((heap, collected));
                }
                None
            })
        };

        let notified = freer.join().unwrap();
        let late_frees = owner_a.join().unwrap();
        let adopted = adopter_c.join().unwrap();
        let adopted_by_c = adopted.is_some();
        ADOPTED.record(adopted_by_c);
        ADOPTER_COLLECTED.record(
            adopted
                .as_ref()
                .is_some_and(|(_, collected)| *collected > 0),
        );
        LATE_FREES.record(late_frees);
        let heap = adopted
            .map(|(heap, _)| heap)
            .or_else(|| abandoned.lock().pop())
            .expect("the heap is either adopted by C or still abandoned");
        assert!(abandoned.lock().is_empty());

        heap.collect();
        let expected_private = if adopted_by_c {
            WRITTEN_BY_C
        } else {
            WRITTEN_BY_A
        };
        heap.with_private(|p| assert_eq!(*p, expected_private));
        // SAFETY: all threads are joined and the heap is ours; nothing else touches the cell.
        let disarmed = heap.disarmed.with(|d| unsafe { *d });
        assert!(notified <= 1, "the flag was consumed by {notified} frees");
        assert_eq!(
            notified + disarmed,
            1,
            "the flag must be consumed exactly once"
        );
        assert!(!heap.remote.is_armed());
        assert!(heap.delayed.take().is_null());
        // SAFETY: as above.
        let collected = heap
            .local_free
            .with_mut(|local| mem::take(unsafe { &mut *local }));
        assert_each_once(collected, BLOCKS, contents_of);
    });
    for coverage in [&ADOPTED, &ADOPTER_COLLECTED, &LATE_FREES] {
        coverage.assert_reached();
    }
}
