//! Memory goes back to the OS: measured by the kernel (`/proc/self/statm`), in a child process of its
//! own so that no other test's memory is counted. This binary's global allocator is ours, so the
//! child runs entirely on it.
//!
//! - `one_gib_of_small_objects_goes_back`: the child allocates 1 GiB in small objects (mixed classes),
//!   frees everything, calls `purge()`, and its resident set is back within 64 MiB of where it started.
//! - `one_gib_freed_remotely_goes_back`: the same, but another thread (which then exits) frees half of
//!   the objects, so the memory comes back through remote frees and an abandoned heap.

mod common;

use alloc_core::SlabAlloc;
use std::alloc::{GlobalAlloc, Layout};
use std::time::Duration;

#[global_allocator]
static ALLOC: SlabAlloc = SlabAlloc::new();

const ROLE: &str = "ALLOC_CORE_MEMORY_RETURN_CHILD";
const GIB: usize = 1 << 30;
const SLACK: usize = 64 << 20;

/// A singly linked list threaded through the objects themselves, so that remembering 1 GiB of
/// objects costs no memory of its own. Word 0 links to the next object, word 1 holds the size.
struct Chain {
    head: *mut usize,
    bytes: usize,
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn build_chain(bytes: usize, seed: u64) -> Chain {
    let mut rng = common::Rng::new(seed);
    let mut chain = Chain {
        head: std::ptr::null_mut(),
        bytes: 0,
    };
    while chain.bytes < bytes {
        let size = rng.log_range(16, 2048) & !7;
        // SAFETY: the size is non-zero.
        let p = unsafe { ALLOC.alloc(layout(size)) }.cast::<usize>();
        assert!(!p.is_null(), "out of memory after {} bytes", chain.bytes);
        // SAFETY: the block is at least 16 bytes and 8-aligned.
        unsafe {
            p.write(chain.head as usize);
            p.add(1).write(size);
        }
        chain.head = p;
        chain.bytes += size;
    }
    chain
}

/// Frees every object of `chain` and returns how many there were.
fn free_chain(chain: Chain) -> usize {
    let mut p = chain.head;
    let mut count = 0;
    while !p.is_null() {
        // SAFETY: every link was written by `build_chain` and points to a live object.
        let (next, size) = unsafe { (p.read() as *mut usize, p.add(1).read()) };
        // SAFETY: allocated with this layout, freed once.
        unsafe { ALLOC.dealloc(p.cast(), layout(size)) };
        p = next;
        count += 1;
    }
    count
}

struct SendChain(Chain);
// SAFETY: the chain's objects are owned by whoever holds the chain; the allocator allows freeing
// them on any thread.
unsafe impl Send for SendChain {}

impl SendChain {
    fn into_inner(self) -> Chain {
        self.0
    }
}

fn child(remote: bool) {
    alloc_core::purge();
    let before = common::resident_bytes();
    let (objects, peak) = if remote {
        let half = SendChain(build_chain(GIB / 2, 2));
        let other = std::thread::spawn(move || {
            let mine = build_chain(GIB / 2, 3);
            let peak = common::resident_bytes();
            (SendChain(mine), free_chain(half.into_inner()), peak)
        });
        let (mine, freed, peak) = other.join().unwrap();
        (freed + free_chain(mine.into_inner()), peak)
    } else {
        let chain = build_chain(GIB, 1);
        let peak = common::resident_bytes();
        (free_chain(chain), peak)
    };
    let released = alloc_core::purge();
    let after = common::resident_bytes();
    println!(
        "CHILD objects={objects} before={before} peak={peak} after={after} released={released}"
    );
    assert!(objects > GIB / 2048, "too few objects: {objects}");
    // The objects really were resident, so getting back below the slack means something.
    assert!(
        peak >= before + GIB,
        "peak resident set only {} MiB",
        peak >> 20
    );
    assert!(
        after <= before + SLACK,
        "resident set grew from {} MiB to {} MiB",
        before >> 20,
        after >> 20
    );
}

fn parent(test_name: &str, role: &str) {
    let out = common::run_self(test_name, ROLE, role, Duration::from_secs(300));
    assert!(
        out.status.success() && out.stdout.contains("CHILD objects="),
        "child failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    let at = out.stdout.find("CHILD objects=").unwrap();
    let line = out.stdout[at..].lines().next().unwrap();
    eprintln!("{test_name}: {line}");
}

#[test]
fn one_gib_of_small_objects_goes_back() {
    match std::env::var(ROLE).as_deref() {
        Ok("local") => child(false),
        Ok(_) => {}
        Err(_) => parent("one_gib_of_small_objects_goes_back", "local"),
    }
}

#[test]
fn one_gib_freed_remotely_goes_back() {
    match std::env::var(ROLE).as_deref() {
        Ok("remote") => child(true),
        Ok(_) => {}
        Err(_) => parent("one_gib_freed_remotely_goes_back", "remote"),
    }
}
