//! Model: retiring the old block of a move through crossbeam-epoch, with a reader that loaded the old
//! address still using it; the real slot code and the real epoch code, both on loom's atomics.
//!
//! Needs `--cfg crossbeam_loom` besides `--cfg loom` (crossbeam-epoch and crossbeam-utils switch to loom
//! only under that cfg, with their `loom` feature on, which loom-tests' `Cargo.toml` turns on); under
//! `--cfg loom` alone this file compiles to nothing.
//!
//! The model has its own `crossbeam_epoch::Collector` (as each `RelocCache` has), made inside the
//! execution. A reader thread does what `RelocCache::get` does: registers, pins, `read(gen)`s the
//! address, reads the object, unpins. A mover thread does what `move_one` + `retire` do: pins,
//! `try_isolate`s the object, copies it, `publish_move`s the copy and `guard.defer`s freeing the old
//! block; then it unpins and flushes twice (pin + `flush`, which seals its bag, tries to advance the
//! epoch and runs expired bags), enough to free the old block when no reader holds it back. The
//! deferred free poisons the block ([`Objects::free`]), a write that loom checks against the reader's
//! read. What it proves, for every interleaving up to the preemption bound:
//! - a reader never reads a freed block: whatever address it loaded, the free of that block
//!   happens-after the reader's unpin (loom reports a read concurrent with the poisoning write, and a
//!   read ordered after it finds the poison);
//! - the reader always sees a whole object with the right value, old copy or new;
//! - the old block is freed exactly once and the copy never (no leak, no double free), whether the
//!   deferred free ran on the mover's flush, on the reader's pin, or when the collector was dropped.
//!
//! `Coverage` checks that the reader held the old address while the move was published, and that the
//! old block was freed while the threads ran (so the epoch really held it back, rather than every
//! free waiting for the collector's teardown).
#![cfg(all(loom, crossbeam_loom))]

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use crossbeam_epoch::Collector;
use loom::sync::Arc;
use loom::thread;
use loom_tests::support::Objects;
use loom_tests::Coverage;
use relocate_api::slot::{tag_bits, Home, PinGate, Pins, Slot};

const VALUE: u64 = 7;
/// The mover's flushes after the move: each may advance the epoch by one, and a bag sealed in epoch
/// `e` runs in `e + 2`.
const FLUSHES: usize = 2;

static HELD_OLD_ACROSS_PUBLISH: Coverage =
    Coverage::new("the reader loaded the old address and read it after the move was published");
static READ_NEW: Coverage = Coverage::new("the reader read the new copy");
static FREED_WHILE_RUNNING: Coverage =
    Coverage::new("the old block was freed before the collector was dropped");
static HELD_OLD_THEN_FREED: Coverage = Coverage::new(
    "the reader read the old block after the publish, and the block was freed before teardown",
);

struct Shared {
    objects: Objects,
    slot: Slot,
    /// The table's pin gate, and the slot's pin count (beside the slot, as in the handle table).
    gate: PinGate,
    pins: Pins,
    gen: u32,
    first: usize,
    /// The object starts at its home block (the slot holds the home word).
    home: Home,
    /// Bookkeeping outside the model (std atomics: loom runs one thread at a time).
    published: AtomicBool,
    freed: AtomicBool,
}

#[test]
fn retire_waits_for_readers() {
    loom_tests::model(|| {
        let collector = Collector::new();
        let objects = Objects::new();
        let slot = Slot::new();
        let gen = slot.generation();
        let first = objects.alloc(VALUE);
        let home = Home::new(first, 0, tag_bits(1));
        slot.publish_new(first, home);
        let shared = Arc::new(Shared {
            objects,
            slot,
            gate: PinGate::new(),
            pins: Pins::new(0),
            gen,
            first,
            home,
            published: AtomicBool::new(false),
            freed: AtomicBool::new(false),
        });

        let reader = {
            let (s, collector) = (shared.clone(), collector.clone());
            thread::spawn(move || {
                let local = collector.register();
                let guard = local.pin();
                let addr = (s.slot.read(s.home, s.gen)).expect("the object is never removed");
                thread::yield_now();
                let after_publish = s.published.load(Relaxed);
                assert_eq!(s.objects.read(addr), VALUE);
                drop(guard);
                (addr, after_publish)
            })
        };

        let mover = {
            let (s, collector) = (shared.clone(), collector.clone());
            thread::spawn(move || {
                let local = collector.register();
                let guard = local.pin();
                assert!(
                    s.slot.try_isolate(&s.gate, &s.pins, s.first, s.home),
                    "nothing else holds the object"
                );
                let new = s.objects.alloc(s.objects.read(s.first));
                s.slot.publish_move(new, s.home);
                s.published.store(true, Relaxed);
                // `RelocCache::retire`: free the old block once no pinned reader can hold it.
                let retired = s.clone();
                guard.defer(move || {
                    retired.objects.free(retired.first);
                    retired.freed.store(true, Relaxed);
                });
                drop(guard);
                for _ in 0..FLUSHES {
                    thread::yield_now();
                    local.pin().flush();
                }
                new
            })
        };

        let (addr, after_publish) = reader.join().unwrap();
        let new = mover.join().unwrap();
        let freed_while_running = shared.freed.load(Relaxed);
        drop(collector);
        // The collector's teardown ran every deferred function that had not run.
        assert!(shared.freed.load(Relaxed));

        assert!(addr == shared.first || addr == new);
        let held_old = addr == shared.first && after_publish;
        HELD_OLD_ACROSS_PUBLISH.record(held_old);
        READ_NEW.record(addr == new);
        FREED_WHILE_RUNNING.record(freed_while_running);
        HELD_OLD_THEN_FREED.record(held_old && freed_while_running);

        assert_eq!(shared.slot.read(shared.home, shared.gen), Some(new));
        assert_eq!(shared.objects.read(new), VALUE);
        shared.objects.assert_freed_all_but(&[new]);
    });
    HELD_OLD_ACROSS_PUBLISH.assert_reached();
    READ_NEW.assert_reached();
    FREED_WHILE_RUNNING.assert_reached();
    HELD_OLD_THEN_FREED.assert_reached();
}
