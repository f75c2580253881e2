//! Model: the notify protocol that un-parks full slabs (`take_and_arm`, `disarm`,
//! `Pushed::NotifyOwner`, `DelayedFreeList`), as `Heap::park_full` / `unpark` / `drain_delayed` and
//! `global::free_remote` use it.
//!
//! The owner (the model's main thread) parks a slab it believes full: `take_and_arm`. If that returns
//! late remote frees, the slab is not full after all; the owner absorbs them and disarms (`park_full`).
//! Otherwise the slab stays parked and armed. Two other threads each free one block of the slab
//! remotely (`free_remote`: a push that finds the flag clears it and sends its block to the owner
//! heap's delayed list instead). Meanwhile the owner runs collection passes (`Heap::collect`: drain the
//! delayed list, take the slab's list, un-park with `disarm` when a parked slab received anything), and
//! after the freers finish, a final one.
//!
//! `notify_flag_is_consumed_exactly_once` arms once. It proves, for every interleaving up to the
//! preemption bound:
//! - every block is collected exactly once, and the freer's write to it happens-before the owner's read;
//! - the arming is consumed exactly once: either by a successful `disarm` or by exactly one remote free
//!   (`NotifyOwner`), whose block then arrives through the delayed list; so `NotifyOwner` results ==
//!   blocks through the delayed list <= 1, and that count + successful disarms == 1;
//! - when `take_and_arm` found the list empty, no `disarm` succeeds and exactly one block comes through
//!   the delayed list (the owner learns that its parked slab has room);
//! - the flag is clear and the slab un-parked at the end.
//!
//! `rearming_with_a_notification_in_flight` lets the owner park the slab again as soon as it has
//! un-parked it, so a `NotifyOwner` block of the first arming can still be on its way to the delayed
//! list when the second arming happens (the case `park_full` calls harmless). It proves that every
//! block is still collected exactly once and that each arming is consumed exactly once (NotifyOwner
//! results + successful disarms == armings, the owner disarming a slab still parked at the end).
#![cfg(loom)]

use core::mem;

use alloc_core::remote::{Block, DelayedFreeList, Pushed, RemoteFreeList};
use loom::sync::Arc;
use loom::thread;
use loom_tests::support::{assert_each_once, collect_list, free_remote, Owned};
use loom_tests::Coverage;

const FREERS: usize = 2;

static LATE_FREES: Coverage = Coverage::new("take_and_arm found late frees");
static REARMED_THEN_DELAYED: Coverage =
    Coverage::new("a block arrived through the delayed list after the owner re-armed");
static DISARM_LOST: Coverage = Coverage::new("disarm found the flag consumed by a free");
static DISARM_WON: Coverage = Coverage::new("disarm cleared the flag");
static DELAYED_WHILE_RUNNING: Coverage =
    Coverage::new("the owner's concurrent pass received a block through the delayed list");

fn contents_of(id: usize) -> usize {
    2000 + id
}

/// The owner's view of its slab and heap: what it collected and how.
struct Owner {
    slab: Arc<RemoteFreeList>,
    delayed: Arc<DelayedFreeList>,
    /// The slab is in the heap's full queue (armed when parked).
    parked: bool,
    collected: Vec<Owned>,
    /// Blocks that arrived through the delayed list.
    via_delayed: usize,
    /// `disarm` calls that returned true (the owner, not a free, consumed the flag).
    disarmed: usize,
    /// `disarm` calls in all.
    disarm_calls: usize,
    /// `take_and_arm` calls.
    arms: usize,
}

impl Owner {
    fn new() -> Self {
        Self {
            slab: Arc::new(RemoteFreeList::new()),
            delayed: Arc::new(DelayedFreeList::new()),
            parked: false,
            collected: Vec::new(),
            via_delayed: 0,
            disarmed: 0,
            disarm_calls: 0,
            arms: 0,
        }
    }

    /// Starts one freer thread per block; each returns what its `free_remote` did.
    fn spawn_freers(&self) -> Vec<thread::JoinHandle<Pushed>> {
        (0..FREERS)
            .map(|id| {
                let block = Owned::alloc(id);
                let (slab, delayed) = (self.slab.clone(), self.delayed.clone());
                thread::spawn(move || {
                    block.write_contents(contents_of(id));
                    free_remote(&slab, &delayed, block)
                })
            })
            .collect()
    }

    fn disarm(&mut self) {
        self.disarm_calls += 1;
        if self.slab.disarm() {
            self.disarmed += 1;
        }
    }

    /// Takes ownership of a list taken from the slab or the delayed list.
    fn absorb(&mut self, list: *mut Block) -> usize {
        // SAFETY: every block pushed in this model was made by `Owned::alloc` and given up by
        // `free_remote`; the caller took `list` from one of our lists, which hands it to us.
        let blocks = unsafe { collect_list(list) };
        let count = blocks.len();
        self.collected.extend(blocks);
        count
    }

    /// `Heap::park_full`.
    fn park_full(&mut self) {
        self.arms += 1;
        let late = self.slab.take_and_arm();
        if late.is_null() {
            self.parked = true;
        } else {
            self.absorb(late);
            self.disarm();
        }
    }

    /// `Heap::unpark`, called when a parked slab received a free.
    fn unpark_if_parked(&mut self) {
        if self.parked {
            self.disarm();
            self.parked = false;
        }
    }

    /// One pass of `Heap::collect` over this slab: `drain_delayed` (whose `free_owned` un-parks),
    /// then the slab's own list (un-parking a parked slab that received frees).
    fn collect_pass(&mut self) {
        let from_delayed = self.absorb(self.delayed.take());
        self.via_delayed += from_delayed;
        if from_delayed > 0 {
            self.unpark_if_parked();
        }
        if self.absorb(self.slab.take()) > 0 {
            self.unpark_if_parked();
        }
    }
}

/// Joins the freers; returns how many got `NotifyOwner`.
fn join_freers(freers: Vec<thread::JoinHandle<Pushed>>) -> usize {
    freers
        .into_iter()
        .map(|freer| freer.join().unwrap())
        .filter(|pushed| *pushed == Pushed::NotifyOwner)
        .count()
}

#[test]
fn notify_flag_is_consumed_exactly_once() {
    loom_tests::model(|| {
        let mut owner = Owner::new();
        let freers = owner.spawn_freers();

        owner.park_full();
        let late_was_empty = owner.parked;
        // The yields let loom run freers between the owner's steps without spending a preemption.
        thread::yield_now();
        owner.collect_pass();
        let delayed_while_running = owner.via_delayed > 0;
        thread::yield_now();

        let notified = join_freers(freers);
        owner.collect_pass();

        assert_each_once(mem::take(&mut owner.collected), FREERS, contents_of);
        assert_eq!(
            notified, owner.via_delayed,
            "each NotifyOwner block arrives through the delayed list"
        );
        assert!(notified <= 1, "the flag was consumed by {notified} frees");
        assert_eq!(
            owner.via_delayed + owner.disarmed,
            1,
            "the flag must be consumed exactly once (delayed {}, disarmed {})",
            owner.via_delayed,
            owner.disarmed
        );
        if late_was_empty {
            // Every free came after the arming, so the first one consumed the flag, its block came
            // through the delayed list, and the un-parking `disarm` found the flag clear.
            assert_eq!(owner.disarmed, 0);
            assert_eq!(owner.via_delayed, 1);
        }
        assert!(
            !owner.parked,
            "a parked slab that received frees is un-parked"
        );
        assert!(!owner.slab.is_armed());
        assert!(!owner.slab.has_blocks());

        LATE_FREES.record(!late_was_empty);
        DISARM_LOST.record(owner.disarm_calls > owner.disarmed);
        DISARM_WON.record(owner.disarmed > 0);
        DELAYED_WHILE_RUNNING.record(delayed_while_running);
    });
    for coverage in [
        &LATE_FREES,
        &DISARM_LOST,
        &DISARM_WON,
        &DELAYED_WHILE_RUNNING,
    ] {
        coverage.assert_reached();
    }
}

#[test]
fn rearming_with_a_notification_in_flight() {
    loom_tests::model(|| {
        let mut owner = Owner::new();
        let freers = owner.spawn_freers();

        owner.park_full();
        thread::yield_now();
        owner.collect_pass();
        let mut delayed_after_rearm = 0;
        if !owner.parked {
            // Un-parked (or never parked): the slab fills up again and is parked anew.
            owner.park_full();
            let before = owner.via_delayed;
            thread::yield_now();
            owner.collect_pass();
            delayed_after_rearm = owner.via_delayed - before;
        }

        let notified = join_freers(freers);
        let before = owner.via_delayed;
        owner.collect_pass();
        if owner.arms == 2 {
            delayed_after_rearm += owner.via_delayed - before;
        }
        if owner.parked {
            // No free reached the last arming: the owner takes the slab back itself.
            owner.disarm();
            owner.parked = false;
        }

        assert_each_once(mem::take(&mut owner.collected), FREERS, contents_of);
        assert_eq!(notified, owner.via_delayed);
        assert!(notified <= owner.arms);
        assert_eq!(
            notified + owner.disarmed,
            owner.arms,
            "each arming must be consumed exactly once (notified {notified}, disarmed {}, arms {})",
            owner.disarmed,
            owner.arms
        );
        assert!(!owner.slab.is_armed());
        assert!(!owner.slab.has_blocks());

        REARMED_THEN_DELAYED.record(delayed_after_rearm > 0);
    });
    REARMED_THEN_DELAYED.assert_reached();
}
