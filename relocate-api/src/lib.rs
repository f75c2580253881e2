//! relocate-api: handle-based caches whose objects the allocator can move.
//!
//! A [`RelocCache<T>`] keeps same-sized objects on alloc-core's *movable* slabs, which live in arenas
//! of their own. Users hold [`Handle`]s (8 bytes, copyable, stale-safe) and read through an epoch guard
//! from the cache's own collector. Compaction moves live objects out of sparse slabs (footprint) or out
//! of a chosen 2 MiB arena (fragmentation) while readers keep running: each move marks the object's
//! slot *moving*, copies it (or calls the cache's [`Relocator`]), publishes the new address and
//! retires the old block through the epoch, so a reader that loaded the old address keeps reading valid,
//! unchanged memory until it unpins.
//!
//! ```
//! use relocate_api::{Budget, RelocCache};
//! # fn main() -> Result<(), relocate_api::CacheError> {
//! let cache: RelocCache<[u64; 8]> = RelocCache::new()?;
//! let reader = cache.reader();
//! let handle = cache.insert([1; 8]).map_err(|(_, e)| e)?;
//! {
//!     let guard = reader.pin();
//!     assert_eq!(cache.get(handle, &guard), Some(&[1; 8]));
//!     cache.update(handle, &guard, |old| old.map(|x| x + 1))?;
//!     assert_eq!(cache.get(handle, &guard), Some(&[2; 8]));
//!     cache.compact(&guard, Budget::Objects(10_000))?;
//! }
//! {
//!     // A loop of gets under one guard: a view checks the guard once and keeps the cache's
//!     // constants in registers.
//!     let guard = reader.pin();
//!     let view = cache.view(&guard);
//!     assert_eq!(view.get(handle).map(|x| x[0]), Some(2));
//! }
//! cache.flush(&reader);
//! cache.release_empty_arenas();
//! # Ok(())
//! # }
//! ```
//!
//! Module map: `slot` (the per-object state machine, loom-checked), `retire` (removed blocks and
//! vacant slots handed back in batches through the epoch, loom-checked), `table` (slots that never
//! move), `home` (slot indices that name a block's place, so a read need not wait for the slot),
//! `handle`, `policy` (the [`Relocatable`] contract and callbacks), `guard` (readers and epoch
//! guards), `view` (the read path: one slot load per get), `cache` (the cache, its lock and its
//! read API), `write` (insert, update, remove), `inner` (a cache's state under its lock: slot
//! bookkeeping and totals), `free` (vacant slots listed per run of 256, so wholly vacant runs go
//! back cheaply), `compact` (moves, evacuation, eviction, statistics), `blob` (the byte-blob
//! flavour), `background` (the compactor thread), `reentry` (what a thread is in the middle of,
//! so that calls that would wait for their own thread are refused), `striped` (counters many
//! threads bump without sharing a cache line), `sync` (the atomics, loom's under `--cfg loom`).

mod sync;

// Public for loom-tests, which model them; not part of the API.
#[doc(hidden)]
pub mod retire;
#[doc(hidden)]
pub mod slot;

#[cfg(not(loom))]
mod background;
#[cfg(not(loom))]
mod blob;
#[cfg(not(loom))]
mod cache;
#[cfg(not(loom))]
mod compact;
#[cfg(not(loom))]
mod free;
#[cfg(not(loom))]
mod guard;
#[cfg(not(loom))]
mod handle;
#[cfg(not(loom))]
mod home;
#[cfg(not(loom))]
mod inner;
#[cfg(not(loom))]
mod policy;
#[cfg(not(loom))]
mod reentry;
#[cfg(not(loom))]
mod striped;
#[cfg(not(loom))]
mod table;
#[cfg(not(loom))]
mod view;
#[cfg(not(loom))]
mod write;

#[cfg(not(loom))]
pub use background::{start_compactor, BackgroundReport, Compactable, Compactor, CompactorConfig};
#[cfg(not(loom))]
pub use blob::{BlobCache, BlobHandle, MAX_BLOB_BYTES};
#[cfg(not(loom))]
pub use cache::{CacheError, RelocCache, MAX_CACHES, MAX_OBJECTS};
#[cfg(not(loom))]
pub use compact::{Budget, CacheStats, CompactReport};
#[cfg(not(loom))]
pub use guard::{Guard, Reader};
#[cfg(not(loom))]
pub use handle::Handle;
#[cfg(not(loom))]
pub use inner::Counters;
#[cfg(not(loom))]
pub use policy::{BitwiseMove, FnRelocator, Isolation, Relocatable, Relocator, MOVE_BATCH};
/// `#[derive(Relocatable)]`: see [`trait@Relocatable`].
#[cfg(not(loom))]
pub use relocate_derive::Relocatable;
#[cfg(not(loom))]
pub use view::View;
