//! The workloads, each written once and run on whichever allocator the binary installed.
//!
//! Every workload is sized to take roughly 0.3–2 s on one core with a fast allocator; `--quick`
//! divides the work by [`QUICK_DIVISOR`] for a smoke run. Each fills a [`Report`] with the keys
//! documented in [`crate::report`]; the shared steps (measure after the free phase, then release)
//! are [`Ctx::after_free`] and [`Ctx::release`].
//!
//! Most workloads run once per allocator. The relocate-api workloads (`lru`, `handles`) compare
//! data structures rather than allocators, so they list [`Variant`]s instead: each variant names the
//! structure (`--variant NAME` on the workload binary) and the allocator binary it runs in, and the
//! runner prints one row per variant in a table of its own ([`Table`]).

mod buffers;
mod churn;
mod frag;
mod handles;
mod json;
mod larson;
mod lru;
mod realloc;
mod survivors;
mod xthread;

use std::time::Duration;

use crate::peer::Peer;
use crate::report::Report;
use crate::rss::current_rss_bytes;

/// How much smaller a `--quick` run is.
pub const QUICK_DIVISOR: usize = 10;

/// What the release step after the free phase is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Call the peer's purge ([`Peer::purge`]).
    Purge,
    /// Call nothing and sleep this long; the allocator may give memory back on its own (ours with
    /// its background purger, started at the start of `main`).
    Idle(Duration),
}

/// One workload.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// The name used on the command line and in the tables.
    pub name: &'static str,
    /// One line on what it does.
    pub about: &'static str,
    /// The release step after its free phase.
    pub release: Release,
    /// Runs the workload and fills the report.
    pub run: fn(&Ctx, &mut Report),
    /// The structures it compares; empty: one row per allocator, no `--variant`.
    pub variants: &'static [Variant],
    /// Which table the runner prints it in.
    pub table: Table,
}

/// One row of a workload that compares structures: what to run, and in which allocator's binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    /// The name given with `--variant` and printed in the table.
    pub name: &'static str,
    /// The binary (global allocator) it runs in.
    pub peer: Peer,
    /// One line on what it is.
    pub about: &'static str,
}

/// The table a workload's results go to, and the row its ratios are taken against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// Speed and memory per allocator, ratios to mimalloc.
    Allocators,
    /// The LRU cache: resident set, resident / live with and without the index, longest pause.
    Lru,
    /// Handle-based structures: insert/remove/get speed, resident / live, compaction.
    Handles,
}

impl Table {
    /// The row (allocator or variant name) the ratio columns divide by.
    pub fn baseline(self) -> &'static str {
        match self {
            Table::Allocators => Peer::BASELINE.name(),
            Table::Lru => lru::BASELINE,
            Table::Handles => handles::BASELINE,
        }
    }
}

/// Every workload, in table order.
pub const ALL: &[Workload] = &[
    Workload {
        name: "churn",
        about: "mixed-size alloc/free churn in a window of live objects, one thread",
        release: Release::Purge,
        run: churn::run,
        variants: &[],
        table: Table::Allocators,
    },
    Workload {
        name: "xthread",
        about: "producer/consumer: one thread allocates batches, another frees them",
        release: Release::Purge,
        run: xthread::run,
        variants: &[],
        table: Table::Allocators,
    },
    Workload {
        name: "buffers",
        about: "2 threads take, fill and free request buffers of 256 KiB-4 MiB, 4 live each",
        release: Release::Purge,
        run: buffers::run,
        variants: &[],
        table: Table::Allocators,
    },
    Workload {
        name: "larson",
        about: "larson-style slot replacement; arrays pass to new threads every round",
        release: Release::Purge,
        run: larson::run,
        variants: &[],
        table: Table::Allocators,
    },
    Workload {
        name: "realloc",
        about: "Vec<u32>/String growth one push at a time, up to 4 MiB",
        release: Release::Purge,
        run: realloc::run,
        variants: &[],
        table: Table::Allocators,
    },
    Workload {
        name: "json",
        about:
            "build, print, parse and re-print a ~25 MB JSON document; HashMap/BTreeMap of strings",
        release: Release::Purge,
        run: json::run,
        variants: &[],
        table: Table::Allocators,
    },
    Workload {
        name: "frag",
        about:
            "2M objects of 16-512 B, free a random 90 %, then 1-2 KiB objects of the freed bytes",
        release: Release::Purge,
        run: frag::run,
        variants: &[],
        table: Table::Allocators,
    },
    Workload {
        name: "survivors",
        about: "4 threads allocate 1 GiB of 32 B-4 KiB blocks, keep 1 in 16, exit; then purge",
        release: Release::Purge,
        run: survivors::run,
        variants: &[],
        table: Table::Allocators,
    },
    Workload {
        name: "survivors-idle",
        about: "as survivors, but no purge call: idle 2 s (ours runs its background purger)",
        release: Release::Idle(Duration::from_secs(2)),
        run: survivors::run,
        variants: &[],
        table: Table::Allocators,
    },
    Workload {
        name: "lru",
        about:
            "100 MB cache, approximate LRU (oldest of 5 sampled): 700k x 240 B, then 170k x 492 B",
        release: Release::Purge,
        run: lru::run,
        variants: lru::VARIANTS,
        table: Table::Lru,
    },
    Workload {
        name: "handles",
        about:
            "1M objects of 64 B behind handles: insert, get, chase, 2 readers, remove 90 %, compact",
        release: Release::Purge,
        run: handles::run,
        variants: handles::VARIANTS,
        table: Table::Handles,
    },
];

/// The workload called `name`, if any.
pub fn find(name: &str) -> Option<&'static Workload> {
    ALL.iter().find(|workload| workload.name == name)
}

impl Workload {
    /// The variant called `name`, if this workload has one.
    pub fn variant(&self, name: &str) -> Option<&'static Variant> {
        self.variants.iter().find(|variant| variant.name == name)
    }
}

/// What a workload needs to know about the run.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    /// The allocator this binary installed.
    pub peer: Peer,
    /// The release step to perform.
    pub release: Release,
    /// A short smoke run.
    pub quick: bool,
    /// The structure to run, for workloads with [`Variant`]s.
    pub variant: Option<&'static Variant>,
}

impl Ctx {
    /// `full`, or `full / QUICK_DIVISOR` (at least 1) in a quick run.
    pub fn scaled(&self, full: usize) -> usize {
        if self.quick {
            (full / QUICK_DIVISOR).max(1)
        } else {
            full
        }
    }

    /// Records the resident set after the free phase.
    pub fn after_free(&self, report: &mut Report) {
        report.set("rss_free", current_rss_bytes());
    }

    /// Performs the release step and records the resident set after it.
    pub fn release(&self, report: &mut Report) {
        match self.release {
            Release::Purge => {
                self.peer.purge();
                report.set("release", "purge");
            }
            Release::Idle(pause) => {
                std::thread::sleep(pause);
                report.set("release", "idle");
            }
        }
        report.set("rss_release", current_rss_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::{find, ALL};

    #[test]
    fn names_are_unique_and_found() {
        for workload in ALL {
            assert_eq!(find(workload.name).map(|w| w.name), Some(workload.name));
        }
        assert!(find("nope").is_none());
    }

    #[test]
    fn variants_are_unique_and_found() {
        for workload in ALL {
            for variant in workload.variants {
                assert_eq!(workload.variant(variant.name), Some(variant));
            }
            if !workload.variants.is_empty() {
                assert!(workload.variant(workload.table.baseline()).is_some());
            }
        }
    }
}
