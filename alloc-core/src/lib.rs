//! alloc-core: a slab allocator on 2 MiB arenas with out-of-line metadata, usable as the process's
//! `#[global_allocator]`.
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOC: alloc_core::SlabAlloc = alloc_core::SlabAlloc::new();
//! ```
//!
//! Layers, each calling only the one below (see `DESIGN.md`):
//!
//! | layer | module | owns |
//! |---|---|---|
//! | platform | `os` | mmap/munmap/madvise, page size, aligned reservations |
//! | arenas | `arena`, `region` | 2 MiB arenas, units, the arena pool, decommit policy; the one reservation movable arenas are carved from |
//! | size classes | `size_class` | the const class table |
//! | slabs | `slab`, `remote` | out-of-line descriptors, free lists, lock-free remote frees |
//! | heaps | `heap`, `pool` | per-thread heaps, abandonment and adoption, the shared slab pool |
//! | large | `large`, `huge_cache` | page spans inside arenas, direct mappings for huge allocations, freed ones kept briefly for reuse |
//! | front | `global`, `thread`, `stats` | `SlabAlloc: GlobalAlloc`, thread heaps and fork, purge, statistics |
//!
//! Under `--cfg loom` only the lock-free protocol modules are built, with loom's atomics, so that
//! `loom-tests` can check them.

#![cfg_attr(not(test), warn(missing_docs))]
#![allow(missing_docs)]

mod sync;

pub mod lock;
pub mod remote;

#[cfg(not(loom))]
mod arena;
#[cfg(not(loom))]
mod checked;
#[cfg(not(loom))]
mod global;
#[cfg(not(loom))]
mod heap;
#[cfg(not(loom))]
mod huge_cache;
#[cfg(not(loom))]
mod large;
#[cfg(not(loom))]
pub mod movable;
#[cfg(not(loom))]
pub mod os;
#[cfg(not(loom))]
mod pool;
#[cfg(not(loom))]
mod region;
#[cfg(not(loom))]
pub mod size_class;
#[cfg(not(loom))]
mod slab;
#[cfg(not(loom))]
mod stats;
#[cfg(not(loom))]
mod thread;

#[cfg(all(not(loom), any(test, feature = "invariants")))]
pub use global::check_thread_heap_invariants;
#[cfg(not(loom))]
pub use global::{maintain, purge, start_background_purger, SlabAlloc};
#[cfg(not(loom))]
pub use large::LARGE_MAX_BYTES;
#[cfg(not(loom))]
pub use os::page_size;
#[cfg(not(loom))]
pub use stats::{for_each_heap, stats, ClassStats, HeapStats, Stats};
