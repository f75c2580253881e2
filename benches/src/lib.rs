//! Whole-workload benchmarks of alloc-core side by side with its peers (glibc, mimalloc,
//! jemalloc), and the runner that compares them.
//!
//! The shape follows the house rule "whole workloads as separate binaries per allocator; results
//! as ratios from one run":
//!
//! - [`workloads`] holds every workload once, generic over the process's global allocator and over
//!   a [`Peer`] that knows how to ask that allocator to give free memory back.
//! - `src/bin/wl-{ours,system,mimalloc,jemalloc}.rs` each install one `#[global_allocator]` and
//!   call [`child::child_main`], which runs one workload and prints one `key=value` line
//!   ([`report`]).
//! - `src/bin/bench-runner.rs` calls [`runner::runner_main`], which runs the four binaries
//!   interleaved for several repetitions and prints markdown tables of medians and of per-repetition
//!   ratios to mimalloc.
//!
//! Resident memory is read from the OS ([`rss`]), never from an allocator's own counters, and every
//! object a workload allocates carries a tag that is checked when it is freed ([`block`]), so a
//! wrong-content bug shows up as `corrupt=N` in the output rather than as a fast number.

pub mod block;
pub mod child;
pub mod peer;
pub mod report;
pub mod rng;
pub mod rss;
pub mod runner;
pub mod workloads;

pub use peer::Peer;
