//! Model: a removal handed to the epoch in a batch (`relocate_api::retire`), with the removed object's
//! slot reused at once and a reader that loaded the old address still using it; the real batch,
//! retired-list, slot and epoch code, all on loom's atomics and locks.
//!
//! Needs `--cfg crossbeam_loom` besides `--cfg loom`, as `tests/slot_retire.rs` does.
//!
//! A reader thread does what `RelocCache::get` does with a handle of the object's generation:
//! registers, pins, `read(gen)`s the address, reads the object, unpins. An owner thread does what a
//! remove and then an insert do: it pins, `begin_remove`s the object, retires its block and slot into
//! its guard's `OpenBatch` (with a drop function, as for a type with drop glue) and hands the batch
//! over as the guard is dropped; then, as the cache's next locked operation does, it takes what waits
//! on `Retired` (`may_hold_some` first, without the lock), links the slot back and publishes a new
//! object in it; then it flushes twice, taking and freeing what comes back each time. The main thread
//! joins them (the reader flushes once after unpinning, so it can run the owner's deferred function
//! while the owner takes), drops the collector (which runs the deferred functions still waiting) and takes the
//! rest, as a cache's drop does. Freeing poisons the block ([`Objects::free`]), a write that loom
//! checks against the reader's read. What it proves, for every interleaving up to the preemption
//! bound:
//! - the vacant slot is back on `Retired` as soon as the batch is handed over, before any epoch, and
//!   reusing it then is safe: the reader with the old generation gets the removed object, whole, or
//!   `None`, never the slot's new object;
//! - handing the block over after the removal (with the batch) still waits for the reader: the block's
//!   free happens-after the reader's last read of it;
//! - the removed value is dropped exactly once, before its block is queued; the block comes back
//!   through `Retired` exactly once, whether its deferred function ran on the owner's flush, on the
//!   reader's pin, or at the collector's teardown, and whether or not the owner's lock-free look at
//!   the count saw it (a stale zero only delays it).
#![cfg(all(loom, crossbeam_loom))]

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;

use crossbeam_epoch::Collector;
use loom::sync::Arc;
use loom::thread;
use loom_tests::support::Objects;
use loom_tests::Coverage;
use relocate_api::retire::{OpenBatch, Retired};
use relocate_api::slot::{tag_bits, Home, Slot};

const OLD: u64 = 7;
const NEW: u64 = 8;
/// The index of the model's one slot.
const INDEX: u32 = 0;
/// The owner's flushes after the reuse: each may advance the epoch by one, and a bag sealed in epoch
/// `e` runs in `e + 2`.
const FLUSHES: usize = 2;

static READ_OLD_AFTER_REUSE: Coverage = Coverage::new(
    "the reader loaded the removed object's address and read it after the slot was reused",
);
static REFUSED: Coverage = Coverage::new("the reader's generation no longer resolved");
static FREED_BY_OWNER: Coverage =
    Coverage::new("the block came back to the owner's take while the threads ran");
static FREED_AT_TEARDOWN: Coverage =
    Coverage::new("the block came back only after the collector was dropped");
static DROPPED_ON_READER: Coverage = Coverage::new(
    "the reader's flush ran the owner's deferred function (the drop and the queueing)",
);

/// Values dropped by `drop_value` in this execution (bookkeeping outside the model: loom runs one
/// thread at a time; a `fn` pointer cannot capture, hence a static).
static DROPPED: Mutex<Vec<usize>> = Mutex::new(Vec::new());
/// Whether the drop ran on the reader's thread (its `flush` ran the owner's deferred function).
static DROPPED_BY_READER: AtomicBool = AtomicBool::new(false);
static READER: Mutex<Option<thread::ThreadId>> = Mutex::new(None);

/// The batch's drop function: records the drop (a `RelocCache` drops the `T` there).
unsafe fn drop_value(block: usize) {
    DROPPED.lock().unwrap().push(block);
    if *READER.lock().unwrap() == Some(thread::current().id()) {
        DROPPED_BY_READER.store(true, Relaxed);
    }
}

struct Shared {
    objects: Objects,
    slot: Slot,
    retired: Arc<Retired>,
    gen: u32,
    first: usize,
    /// The object starts at its home block (the slot holds the home word).
    home: Home,
    /// Bookkeeping outside the model (std atomics: loom runs one thread at a time).
    reused: AtomicBool,
}

impl Shared {
    /// What `RelocCache::take_back` does with what waits: check the slots, free the blocks (after
    /// checking each was dropped first). Returns how many blocks it freed.
    fn take_back(&self) -> usize {
        if !self.retired.may_hold_some() {
            return 0;
        }
        let lists = self.retired.take();
        assert!(lists.slots.iter().all(|&index| index == INDEX));
        for &block in &lists.blocks {
            assert_eq!(block, self.first, "only the removed block is retired");
            assert!(
                DROPPED.lock().unwrap().contains(&block),
                "a block was queued before its value was dropped"
            );
            self.objects.free(block);
        }
        lists.blocks.len()
    }
}

#[test]
fn batched_removal_waits_for_readers_and_its_slot_is_reused_at_once() {
    loom_tests::model(|| {
        DROPPED.lock().unwrap().clear();
        DROPPED_BY_READER.store(false, Relaxed);
        let collector = Collector::new();
        let objects = Objects::new();
        let slot = Slot::new();
        let gen = slot.generation();
        let first = objects.alloc(OLD);
        let home = Home::new(first, INDEX, tag_bits(1));
        slot.publish_new(first, home);
        let shared = Arc::new(Shared {
            objects,
            slot,
            retired: Arc::new(Retired::default()),
            gen,
            first,
            home,
            reused: AtomicBool::new(false),
        });

        let reader = {
            let (s, collector) = (shared.clone(), collector.clone());
            thread::spawn(move || {
                *READER.lock().unwrap() = Some(thread::current().id());
                let local = collector.register();
                let guard = local.pin();
                let found = s.slot.read(s.home, s.gen);
                thread::yield_now();
                let after_reuse = s.reused.load(Relaxed);
                if let Some(addr) = found {
                    assert_eq!(
                        addr, s.first,
                        "the old generation resolved to another object"
                    );
                    assert_eq!(s.objects.read(addr), OLD);
                }
                drop(guard);
                // A reader that flushes too can run the owner's deferred function.
                thread::yield_now();
                local.pin().flush();
                (found.is_some(), after_reuse)
            })
        };

        let owner = {
            let (s, collector) = (shared.clone(), collector.clone());
            thread::spawn(move || {
                let local = collector.register();
                let batch = OpenBatch::default();
                let guard = local.pin();
                let addr = (s.slot.begin_remove(s.gen, s.home)).expect("nothing else removes it");
                // SAFETY: `begin_remove` emptied the slot; `drop_value` only records the address.
                unsafe { batch.retire(&guard, &s.retired, Some(drop_value), addr, Some(INDEX)) };
                // `Guard`'s drop: the batch goes to the epoch while the guard is still pinned.
                batch.hand_over(&guard);
                drop(guard);
                thread::yield_now();
                // The next insert: the slot is back at once (its own push, so the hint shows it).
                assert!(s.retired.may_hold_some(), "the slot waits on `Retired`");
                let mut freed = 0;
                let lists = s.retired.take();
                assert_eq!(
                    lists.slots,
                    [INDEX],
                    "the vacant slot came back with the batch"
                );
                for &block in &lists.blocks {
                    assert!(DROPPED.lock().unwrap().contains(&block));
                    s.objects.free(block);
                    freed += 1;
                }
                let new = s.objects.alloc(NEW);
                s.slot.publish_new(new, s.home);
                s.reused.store(true, Relaxed);
                for _ in 0..FLUSHES {
                    thread::yield_now();
                    local.pin().flush();
                    freed += s.take_back();
                }
                (new, freed)
            })
        };

        let (found, after_reuse) = reader.join().unwrap();
        let (new, freed_while_running) = owner.join().unwrap();
        drop(collector);
        // The collector's teardown ran every deferred function left; `join` and the teardown order
        // the pushes before this take, so the hint cannot be stale here.
        let freed_at_teardown = shared.take_back();
        assert_eq!(freed_while_running + freed_at_teardown, 1, "freed once");
        assert_eq!(*DROPPED.lock().unwrap(), [shared.first], "dropped once");
        assert_eq!(shared.retired.waiting(), 0);

        READ_OLD_AFTER_REUSE.record(found && after_reuse);
        REFUSED.record(!found);
        FREED_BY_OWNER.record(freed_while_running == 1);
        FREED_AT_TEARDOWN.record(freed_at_teardown == 1);
        DROPPED_ON_READER.record(DROPPED_BY_READER.load(Relaxed));

        assert_eq!(shared.slot.read(shared.home, shared.gen), None);
        assert_eq!(
            (shared.slot).read(shared.home, shared.slot.generation()),
            Some(new)
        );
        assert_eq!(shared.objects.read(new), NEW);
        shared.objects.assert_freed_all_but(&[new]);
    });
    READ_OLD_AFTER_REUSE.assert_reached();
    REFUSED.assert_reached();
    FREED_BY_OWNER.assert_reached();
    FREED_AT_TEARDOWN.assert_reached();
    DROPPED_ON_READER.assert_reached();
}
