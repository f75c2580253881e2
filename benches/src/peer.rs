//! [`Peer`]: which allocator a workload binary runs on, and how to ask that allocator to give its
//! free memory back to the OS.
//!
//! The library links all four allocators, but a binary only ever calls the purge of the one it
//! installed as `#[global_allocator]`; the others stay idle. jemalloc's symbols are prefixed
//! (`_rjem_`) and mimalloc's are `mi_*`, so neither replaces glibc's `malloc` in a binary that did
//! not choose it.

use std::time::Duration;

/// One allocator under comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// alloc-core's `SlabAlloc`.
    Ours,
    /// `std::alloc::System`, i.e. glibc malloc.
    System,
    /// mimalloc through the `mimalloc` crate.
    Mimalloc,
    /// jemalloc through `tikv-jemallocator`.
    Jemalloc,
}

impl Peer {
    /// Every peer, in the order the tables list them.
    pub const ALL: [Peer; 4] = [Peer::Ours, Peer::Mimalloc, Peer::Jemalloc, Peer::System];

    /// The peer every ratio is taken against.
    pub const BASELINE: Peer = Peer::Mimalloc;

    /// The short name used on the command line and in the output.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Ours => "ours",
            Peer::System => "system",
            Peer::Mimalloc => "mimalloc",
            Peer::Jemalloc => "jemalloc",
        }
    }

    /// The peer called `name`, if any.
    pub fn from_name(name: &str) -> Option<Peer> {
        Self::ALL.into_iter().find(|peer| peer.name() == name)
    }

    /// The file name of the workload binary that installs this peer.
    pub fn binary_name(self) -> String {
        format!("wl-{}", self.name())
    }

    /// Asks the allocator to return everything it holds free to the OS now, the way a service
    /// would after a burst: `alloc_core::purge()`, `malloc_trim(0)`, `mi_collect(true)`, or
    /// jemalloc's `thread.tcache.flush` followed by `arena.<all>.purge`.
    ///
    /// Call it only in a binary whose global allocator is this peer.
    pub fn purge(self) {
        match self {
            Peer::Ours => {
                alloc_core::purge();
            }
            Peer::System => {
                // SAFETY: malloc_trim has no preconditions; it only walks glibc's own arenas.
                unsafe { libc::malloc_trim(0) };
            }
            Peer::Mimalloc => {
                // SAFETY: mi_collect has no preconditions; `force` also collects abandoned pages.
                unsafe { libmimalloc_sys::mi_collect(true) };
            }
            Peer::Jemalloc => {
                jemalloc_command(c"thread.tcache.flush");
                // 4096 is MALLCTL_ARENAS_ALL: purge the dirty pages of every arena.
                jemalloc_command(c"arena.4096.purge");
            }
        }
    }

    /// Starts the allocator's opt-in background release, for workloads that measure what a
    /// service gets without ever calling purge itself. Only alloc-core has one to start here
    /// (`start_background_purger`, every 100 ms); the others run on their defaults (mimalloc
    /// purges on a delay from its own allocation path; glibc trims the heap top on free; jemalloc
    /// decays from its own allocation path, since its background thread is off by default).
    pub fn start_background_release(self) {
        if self == Peer::Ours {
            alloc_core::start_background_purger(Duration::from_millis(100));
        }
    }
}

/// Runs a jemalloc `mallctl` command that takes neither an old nor a new value.
fn jemalloc_command(name: &std::ffi::CStr) {
    // SAFETY: `name` is NUL-terminated; null old/new pointers with zero lengths are what jemalloc
    // expects of a command (NEITHER_READ_NOR_WRITE), so nothing is read or written through them.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        eprintln!("jemalloc mallctl {name:?} failed: error {rc}");
    }
}

#[cfg(test)]
mod tests {
    use super::Peer;

    #[test]
    fn names_round_trip() {
        for peer in Peer::ALL {
            assert_eq!(Peer::from_name(peer.name()), Some(peer));
        }
        assert_eq!(Peer::from_name("tcmalloc"), None);
    }
}
