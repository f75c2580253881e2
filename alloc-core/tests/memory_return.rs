//! Memory goes back to the OS: measured by the kernel (`/proc/self/statm`), in a child process of its
//! own so that no other test's memory is counted. This binary's global allocator is ours, so the
//! child runs entirely on it.
//!
//! - `one_gib_of_small_objects_goes_back`: the child allocates 1 GiB in small objects (mixed classes),
//!   frees everything, calls `purge()`, and its resident set is back within 64 MiB of where it started.
//! - `one_gib_freed_remotely_goes_back`: the same, but another thread (which then exits) frees half of
//!   the objects, so the memory comes back through remote frees and an abandoned heap.
//! - `a_shrunk_huge_allocation_gives_its_tail_back`: a 256 MiB allocation shrunk in place to 160 MiB
//!   keeps its first 160 MiB and gives the rest back at once.
//! - `what_threads_free_after_their_heap_is_gone_goes_back`: two threads at once allocate and free
//!   400,000 boxes each from a thread-local destructor that runs after the allocator's own (they then
//!   allocate from the shared fallback heap, and free into its slabs as remote frees); `purge` gives
//!   it back (before it collected the fallback heap, 88 MiB stayed resident).
//! - `what_others_free_into_a_running_thread_goes_back_when_asked` and `..._unasked`: a worker
//!   allocates 256 MiB of 1000-byte objects, another thread frees them all (and, when asked, calls
//!   `purge`, which asks the worker to collect), and the worker goes on allocating objects of the
//!   same class, a few live at a time, then waits; `purge` then finds the memory back. (Before a
//!   heap collected itself whole, the worker reused one slab and the others, emptied by remote
//!   frees nobody collected, stayed with it: 256 MiB resident until the worker exited.)
//! - `..._after_a_small_job`: the same, but the worker allocates only 1,000 objects, and this
//!   thread waits out the decommit delay and runs one background maintenance round, which forces
//!   nothing. The worker's first slow path takes the frees others made into its full slabs and
//!   returns the slabs they emptied (before, it took only the first free of each, and the rest
//!   stayed on the slabs until a whole-heap collection: the 256 MiB stayed resident).

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

/// Runs `child` if this process is the child of role `role`, spawns that child (test `test_name`
/// of this binary) and checks it if this is the parent, and does nothing in another test's child.
fn run_as(test_name: &str, role: &str, child: impl FnOnce()) {
    match std::env::var(ROLE).as_deref() {
        Ok(r) if r == role => child(),
        Ok(_) => {}
        Err(_) => parent(test_name, role),
    }
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
    run_as("one_gib_of_small_objects_goes_back", "local", || {
        child(false)
    });
}

#[test]
fn one_gib_freed_remotely_goes_back() {
    run_as("one_gib_freed_remotely_goes_back", "remote", || child(true));
}

/// 256 MiB, written whole, shrunk with `realloc` to 160 MiB (more than half: kept in place).
fn shrink_child() {
    alloc_core::purge();
    let before = common::resident_bytes();
    let (big, small) = (256 << 20, 160 << 20);
    let old = Layout::from_size_align(big, 8).unwrap();
    // SAFETY: non-zero size.
    let p = unsafe { ALLOC.alloc(old) };
    assert!(!p.is_null());
    // SAFETY: `p` is `big` bytes long.
    unsafe { common::fill(p, big, 7) };
    let peak = common::resident_bytes();
    // SAFETY: `p` was allocated with `old`; the new size is non-zero.
    let q = unsafe { ALLOC.realloc(p, old, small) };
    assert!(!q.is_null());
    let after = common::resident_bytes();
    // SAFETY: `q` holds the first `small` bytes of what `fill` wrote (a prefix of the pattern).
    let intact = unsafe { common::check(q, small, 7) };
    println!(
        "CHILD objects=1 before={before} peak={peak} after={after} moved={}",
        p != q
    );
    assert!(
        peak >= before + big,
        "peak resident set only {} MiB",
        peak >> 20
    );
    assert!(
        after + (big - small) <= peak + SLACK,
        "shrinking left {} MiB resident (peak {} MiB)",
        after >> 20,
        peak >> 20
    );
    // SAFETY: `q` is live with the new layout.
    unsafe { ALLOC.dealloc(q, Layout::from_size_align(small, 8).unwrap()) };
    assert!(
        intact.is_ok(),
        "contents changed at byte {:?}",
        intact.err()
    );
}

/// Set once the allocator's own thread-exit key exists, so that ours, made after it, runs after it.
static LATE_KEY: std::sync::OnceLock<libc::pthread_key_t> = std::sync::OnceLock::new();

extern "C" fn late_destructor(_: *mut libc::c_void) {
    // The allocator's destructor has run: this thread's allocations come from the fallback heap,
    // and its frees reach that heap's slabs as remote frees.
    let boxes: Vec<Box<[u8; 100]>> = (0..400_000).map(|i| Box::new([i as u8; 100])).collect();
    assert!(boxes.iter().enumerate().all(|(i, b)| b[99] == i as u8));
    drop(boxes);
}

fn late_child() {
    drop(vec![0u8; 64]);
    let key = *LATE_KEY.get_or_init(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: a valid out-pointer and a destructor with the right signature.
        let made = unsafe { libc::pthread_key_create(&mut key, Some(late_destructor)) };
        assert_eq!(made, 0);
        key
    });
    alloc_core::purge();
    let before = common::resident_bytes();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                drop(vec![0u8; 100]);
                // SAFETY: the key is live; a non-null value makes the destructor run at thread
                // exit.
                unsafe { libc::pthread_setspecific(key, std::ptr::dangling()) };
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let joined = common::resident_bytes();
    let released = alloc_core::purge();
    let after = common::resident_bytes();
    println!("CHILD objects=2 before={before} joined={joined} after={after} released={released}");
    assert!(
        after <= before + SLACK,
        "resident set grew from {} MiB to {} MiB",
        before >> 20,
        after >> 20
    );
}

#[test]
fn a_shrunk_huge_allocation_gives_its_tail_back() {
    run_as(
        "a_shrunk_huge_allocation_gives_its_tail_back",
        "shrink",
        shrink_child,
    );
}

#[test]
fn what_threads_free_after_their_heap_is_gone_goes_back() {
    run_as(
        "what_threads_free_after_their_heap_is_gone_goes_back",
        "late",
        late_child,
    );
}

/// How the memory others freed into a running worker's slabs is to come back.
#[derive(Clone, Copy)]
enum Settle {
    /// The worker allocates 4M objects of the class, at most 64 live; this thread then purges.
    /// With `asked`, this thread also purges right after its frees, which asks the worker to
    /// collect its heap.
    LongJobThenPurge { asked: bool },
    /// The worker allocates 1,000 objects of the class, at most 64 live; this thread waits out the
    /// decommit delay and runs one round of background maintenance (no heap is asked to collect
    /// at once, nothing is forced).
    SmallJobThenMaintain,
}

/// A worker thread allocates 256 MiB of 1000-byte objects and hands them over; this thread frees
/// them (remote frees into the worker's slabs). The worker then allocates objects of the same
/// class and waits (alive) while this thread settles as `settle` says and measures.
fn running_owner_child(settle: Settle) {
    const OBJECT: usize = 1000;
    const BYTES: usize = 256 << 20;
    alloc_core::purge();
    let before = common::resident_bytes();
    let (to_main, from_worker) = std::sync::mpsc::channel::<SendChain>();
    let (to_worker, from_main) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        let mut chain = Chain {
            head: std::ptr::null_mut(),
            bytes: 0,
        };
        while chain.bytes < BYTES {
            // SAFETY: a non-zero size.
            let p = unsafe { ALLOC.alloc(layout(OBJECT)) }.cast::<usize>();
            assert!(!p.is_null());
            // SAFETY: the block is 1000 bytes, 8-aligned.
            unsafe {
                p.write(chain.head as usize);
                p.add(1).write(OBJECT);
            }
            chain.head = p;
            chain.bytes += OBJECT;
        }
        to_main.send(SendChain(chain)).unwrap();
        let job = match settle {
            Settle::LongJobThenPurge { .. } => 4_000_000u64,
            Settle::SmallJobThenMaintain => 1_000,
        };
        from_main.recv().unwrap();
        let mut live = Vec::with_capacity(64);
        for i in 0..job {
            if live.len() == 64 {
                live.clear();
            }
            live.push(Box::new([i; OBJECT / 8]));
        }
        drop(live);
        to_main
            .send(SendChain(Chain {
                head: std::ptr::null_mut(),
                bytes: 0,
            }))
            .unwrap();
        from_main.recv().unwrap();
    });
    let chain = from_worker.recv().unwrap().into_inner();
    let peak = common::resident_bytes();
    let objects = free_chain(chain);
    if let Settle::LongJobThenPurge { asked: true } = settle {
        alloc_core::purge();
    }
    to_worker.send(()).unwrap();
    from_worker.recv().unwrap();
    let released = match settle {
        Settle::LongJobThenPurge { .. } => alloc_core::purge(),
        Settle::SmallJobThenMaintain => {
            std::thread::sleep(Duration::from_millis(100));
            alloc_core::maintain()
        }
    };
    let after = common::resident_bytes();
    to_worker.send(()).unwrap();
    worker.join().unwrap();
    println!(
        "CHILD objects={objects} before={before} peak={peak} after={after} released={released}"
    );
    assert!(
        peak >= before + BYTES,
        "peak resident set only {} MiB",
        peak >> 20
    );
    assert!(
        after <= before + SLACK,
        "resident set with the worker alive: {} MiB, from {} MiB",
        after >> 20,
        before >> 20
    );
}

#[test]
fn what_others_free_into_a_running_thread_goes_back_when_asked() {
    run_as(
        "what_others_free_into_a_running_thread_goes_back_when_asked",
        "owner-asked",
        || running_owner_child(Settle::LongJobThenPurge { asked: true }),
    );
}

#[test]
fn what_others_free_into_a_running_thread_goes_back_unasked() {
    run_as(
        "what_others_free_into_a_running_thread_goes_back_unasked",
        "owner-unasked",
        || running_owner_child(Settle::LongJobThenPurge { asked: false }),
    );
}

#[test]
fn what_others_free_into_a_running_thread_goes_back_after_a_small_job() {
    run_as(
        "what_others_free_into_a_running_thread_goes_back_after_a_small_job",
        "owner-small-job",
        || running_owner_child(Settle::SmallJobThenMaintain),
    );
}
