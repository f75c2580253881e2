//! `fork()` while other threads allocate: the child inherits no held lock.
//!
//! `fork_while_threads_allocate` proves that across many forks taken while four threads hammer
//! every path (small blocks, spans, huge mappings, remote frees, `purge`), the child can allocate on
//! every path, free, purge, start a thread that allocates, and exit cleanly. A child that deadlocks
//! on an inherited lock is killed after a timeout and fails the test instead of hanging it.
//!
//! `a_forked_child_can_start_its_own_purger`: a purger the parent started does not survive `fork`,
//! and the child can start one of its own, which gives its freed memory back.
//!
//! This binary's global allocator is ours, so the child's thread creation runs on it as well.

mod common;

use alloc_core::SlabAlloc;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static A: SlabAlloc = SlabAlloc::new();

const FORKS: usize = 60;

fn churn(id: u64, stop: &AtomicBool, ops: &AtomicUsize, handoff: &std::sync::Mutex<Vec<usize>>) {
    let mut rng = common::Rng::new(id);
    let mut live: Vec<(usize, Layout)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let size = match rng.below(100) {
            0..90 => rng.range(1, 2000),
            90..99 => rng.range(40 << 10, 900 << 10),
            _ => rng.range(2 << 20, 5 << 20),
        };
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { A.alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: `p` is at least one byte long.
        unsafe { p.write(1) };
        live.push((p as usize, layout));
        if live.len() > 64 {
            let (p, layout) = live.swap_remove(rng.below(live.len()));
            if rng.chance(1, 3) {
                // Hand it to another thread (remote free).
                let mut shared = handoff.lock().unwrap();
                shared.push(p);
                shared.push(layout.size());
            } else {
                // SAFETY: allocated above with this layout, freed once.
                unsafe { A.dealloc(p as *mut u8, layout) };
            }
        }
        let taken: Vec<usize> = std::mem::take(&mut *handoff.lock().unwrap());
        for pair in taken.chunks(2) {
            let layout = Layout::from_size_align(pair[1], 8).unwrap();
            // SAFETY: handed off by its allocating thread with this size; freed once.
            unsafe { A.dealloc(pair[0] as *mut u8, layout) };
        }
        if rng.chance(1, 500) {
            alloc_core::purge();
        }
        ops.fetch_add(1, Ordering::Relaxed);
    }
    for (p, layout) in live {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { A.dealloc(p as *mut u8, layout) };
    }
}

/// What the child does: every path, then a thread, then `_exit(0)`. Any failure is a distinct code.
fn child() -> ! {
    let code = std::panic::catch_unwind(|| {
        let mut blocks = Vec::new();
        for size in [8, 100, 4000, 32 << 10, 100 << 10, 1 << 20, 3 << 20] {
            for align in [8, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero size.
                let p = unsafe { A.alloc(layout) };
                if p.is_null() {
                    return 10;
                }
                // SAFETY: `p` is `size` bytes long.
                unsafe { p.write_bytes(0xab, size) };
                blocks.push((p, layout));
            }
        }
        for (p, layout) in blocks {
            // SAFETY: allocated above with this layout.
            unsafe { A.dealloc(p, layout) };
        }
        alloc_core::purge();
        let t = std::thread::spawn(|| {
            let v: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; i % 300 + 1]).collect();
            v.iter()
                .enumerate()
                .all(|(i, b)| b.len() == i % 300 + 1 && b[0] == i as u8)
        });
        match t.join() {
            Ok(true) => 0,
            _ => 11,
        }
    });
    // SAFETY: _exit has no preconditions; it skips the parent's atexit handlers.
    unsafe { libc::_exit(code.unwrap_or(12)) }
}

#[test]
fn fork_while_threads_allocate() {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicUsize::new(0));
    let handoff = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|id| {
            let (stop, ops, handoff) = (stop.clone(), ops.clone(), handoff.clone());
            std::thread::spawn(move || churn(id, &stop, &ops, &handoff))
        })
        .collect();
    for i in 0..FORKS {
        // Let the workers get going (and into the slow paths) between forks.
        let seen = ops.load(Ordering::Relaxed);
        while ops.load(Ordering::Relaxed) < seen + 200 {
            std::thread::yield_now();
        }
        // SAFETY: the child runs only code that is fork-safe given the allocator's atfork handlers
        // (the allocator, a fresh thread) and ends in `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            child();
        }
        let status = common::wait_pid_timeout(pid, Duration::from_secs(30));
        let Some(status) = status else {
            stop.store(true, Ordering::Relaxed);
            panic!("fork {i}: child deadlocked (killed after 30 s)");
        };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "fork {i}: child {}",
            common::describe_status(status)
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(ops.load(Ordering::Relaxed) >= FORKS * 200);
}

/// A purger started in the parent does not come along into a forked child (no thread does), so the
/// child may start its own, and that one gives memory back.
#[test]
fn a_forked_child_can_start_its_own_purger() {
    alloc_core::start_background_purger(Duration::from_millis(10));
    // SAFETY: the child runs only the allocator and a fresh thread, and ends in `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(|| {
            if !alloc_core::start_background_purger(Duration::from_millis(10)) {
                return 20;
            }
            // 64 MiB of 256 KiB spans, freed: the child's purger gives their units back.
            let layout = Layout::from_size_align(256 << 10, 8).unwrap();
            let blocks: Vec<*mut u8> = (0..256)
                .map(|_| {
                    // SAFETY: non-zero size; the block is written whole below.
                    let p = unsafe { A.alloc(layout) };
                    // SAFETY: `p` is 256 KiB long (or null, caught by the check after).
                    unsafe { p.write_bytes(0x5a, layout.size()) };
                    p
                })
                .collect();
            let peak = common::resident_bytes();
            for p in blocks {
                // SAFETY: allocated above with this layout, freed once.
                unsafe { A.dealloc(p, layout) };
            }
            // The decommit delay is 50 ms; the purger runs every 10 ms.
            for _ in 0..200 {
                std::thread::sleep(Duration::from_millis(10));
                if common::resident_bytes() + (48 << 20) < peak {
                    return 0;
                }
            }
            21
        });
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(code.unwrap_or(22)) }
    }
    let status = common::wait_pid_timeout(pid, Duration::from_secs(30)).expect("child hung");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child {} (20: purger not started, 21: memory not given back)",
        common::describe_status(status)
    );
}
