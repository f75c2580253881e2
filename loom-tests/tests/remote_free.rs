//! Model: the remote-free list (`RemoteFreeList::push` / `take`), with no notify flag involved.
//!
//! Two threads each free two blocks into one slab's list while the slab's owner takes the list
//! concurrently; after both freers finish, the owner takes once more. What it proves, for every
//! interleaving up to the preemption bound:
//! - no block is lost and none is collected twice (a push racing a take lands either in that take or
//!   in a later one, never in both and never nowhere);
//! - every push returns `Pushed::OnSlab` (no flag was ever set);
//! - the freer's last write to a block happens-before the owner reads it after a take (the push's
//!   release CAS pairs with the take's acquire `fetch_and`), which loom checks on each block's contents.
#![cfg(loom)]

use alloc_core::remote::{Pushed, RemoteFreeList};
use loom::sync::Arc;
use loom::thread;
use loom_tests::support::{assert_each_once, collect_list, free_remote, Owned};
use loom_tests::Coverage;

const FREERS: usize = 2;
const BLOCKS_PER_FREER: usize = 3;
const OWNER_TAKES: usize = 2;

static TAKEN_CONCURRENTLY: Coverage =
    Coverage::new("an owner take collected blocks while freers ran");

fn contents_of(id: usize) -> usize {
    1000 + id
}

#[test]
fn remote_free_list_loses_and_duplicates_nothing() {
    loom_tests::model(|| {
        let slab = Arc::new(RemoteFreeList::new());
        // Unused by pushes that find no flag; present because `free_remote` takes the owner's list.
        let delayed = Arc::new(alloc_core::remote::DelayedFreeList::new());

        let freers: Vec<_> = (0..FREERS)
            .map(|t| {
                let blocks: Vec<Owned> = (0..BLOCKS_PER_FREER)
                    .map(|i| Owned::alloc(t * BLOCKS_PER_FREER + i))
                    .collect();
                let (slab, delayed) = (slab.clone(), delayed.clone());
                thread::spawn(move || {
                    for block in blocks {
                        block.write_contents(contents_of(block.id()));
                        assert_eq!(free_remote(&slab, &delayed, block), Pushed::OnSlab);
                    }
                })
            })
            .collect();

        // The owner collects while the freers run. The yield lets loom run a freer before the next
        // take without spending a preemption.
        let mut collected = Vec::new();
        for _ in 0..OWNER_TAKES {
            // SAFETY: every block pushed was made by `Owned::alloc` and given up by `free_remote`;
            // `take` hands the whole list to us.
            collected.extend(unsafe { collect_list(slab.take()) });
            thread::yield_now();
        }
        TAKEN_CONCURRENTLY.record(!collected.is_empty());

        for freer in freers {
            freer.join().unwrap();
        }
        // SAFETY: as above.
        collected.extend(unsafe { collect_list(slab.take()) });

        assert!(!slab.has_blocks());
        assert!(!slab.is_armed());
        assert!(delayed.take().is_null());
        assert_each_once(collected, FREERS * BLOCKS_PER_FREER, contents_of);
    });
    TAKEN_CONCURRENTLY.assert_reached();
}
