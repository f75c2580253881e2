//! Misuse detection (`--features checked`): each scenario runs in a child process (this test binary
//! again, with `ALLOC_CORE_CHECKED_SCENARIO` naming it), which prints the address it is about to
//! misuse and then misuses it. The parent proves the child died of `SIGABRT`, and that stderr
//! carries the allocator's message with that exact address.
//!
//! Scenarios: a local double free; a remote double free (freed twice by threads that do not own
//! the block); a double free after a remote free of a block whose owner then frees it; a large-span
//! double free; a huge-mapping double free, also once its kept mapping was reused with the object
//! elsewhere; a foreign pointer (from `System`); an interior pointer, into a block and into a huge
//! allocation; the base of an arena (2 MiB-aligned, like a huge object, but never handed out).
//! `valid_frees_do_not_abort` proves the checks are quiet on correct use.
//!
//! Run with `cargo test -p alloc-core --features checked --test checked`.
#![cfg(feature = "checked")]

mod common;

use alloc_core::SlabAlloc;
use std::alloc::{GlobalAlloc, Layout, System};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

static A: SlabAlloc = SlabAlloc::new();
const ROLE: &str = "ALLOC_CORE_CHECKED_SCENARIO";

fn alloc(size: usize) -> (usize, Layout) {
    let layout = Layout::from_size_align(size, 8).unwrap();
    // SAFETY: non-zero size.
    let p = unsafe { A.alloc(layout) };
    assert!(!p.is_null());
    (p as usize, layout)
}

fn free(p: usize, layout: Layout) {
    // SAFETY: deliberately not always sound: the scenarios free twice to trigger the checks, which
    // abort before anything is corrupted.
    unsafe { A.dealloc(p as *mut u8, layout) };
}

/// Announces the address that will be misused, so the parent can look for it in the message.
fn announce(p: usize) {
    println!("MISUSE {p:#018x}");
}

fn scenario(name: &str) {
    match name {
        "local" => {
            let (p, l) = alloc(48);
            free(p, l);
            announce(p);
            free(p, l);
        }
        "remote" => {
            let (p, l) = alloc(48);
            // Keep the owner's slab busy so the block's slab stays owned.
            let _keep = alloc(48);
            std::thread::spawn(move || free(p, l)).join().unwrap();
            announce(p);
            std::thread::spawn(move || free(p, l)).join().unwrap();
        }
        "remote_then_owner" => {
            let (p, l) = alloc(200);
            let _keep = alloc(200);
            std::thread::spawn(move || free(p, l)).join().unwrap();
            announce(p);
            free(p, l);
        }
        "large" => {
            let (p, l) = alloc(200 << 10);
            free(p, l);
            announce(p);
            free(p, l);
        }
        "huge" => {
            let (p, l) = alloc(3 << 20);
            free(p, l);
            announce(p);
            free(p, l);
        }
        "foreign" => {
            let layout = Layout::from_size_align(64, 8).unwrap();
            // SAFETY: non-zero size; this block is never freed (the child aborts).
            let p = unsafe { System.alloc(layout) };
            announce(p as usize);
            free(p as usize, layout);
        }
        "huge_reused" => {
            // The freed mapping is kept, and the next huge allocation (aligned otherwise) reuses
            // it with its object elsewhere: the stale pointer must not free that one.
            let (p, l) = alloc(5 << 20);
            free(p, l);
            let aligned = Layout::from_size_align(3 << 20, 1 << 20).unwrap();
            // SAFETY: non-zero size; never freed (the child aborts).
            let q = unsafe { A.alloc(aligned) } as usize;
            assert_eq!(
                q & !((2 << 20) - 1),
                p & !((2 << 20) - 1),
                "the kept mapping"
            );
            announce(p);
            free(p, l);
        }
        "huge_interior" => {
            let (p, l) = alloc(3 << 20);
            announce(p + 4096);
            free(p + 4096, l);
        }
        "aligned_huge_interior" => {
            // A 2 MiB-aligned object's chunk holds the user's bytes, not descriptors.
            let layout = Layout::from_size_align(64, 2 << 20).unwrap();
            // SAFETY: non-zero size; never freed (the child aborts).
            let p = unsafe { A.alloc(layout) } as usize;
            // SAFETY: the block is 64 bytes; a byte that reads as a huge descriptor's kind.
            unsafe { std::ptr::write_bytes(p as *mut u8, 0xff, 64) };
            announce(p + 16);
            free(p + 16, layout);
        }
        "arena_base" => {
            // The base of the arena a small block lies in: 2 MiB-aligned, registered, never
            // handed out (the arena's descriptors are there).
            let (p, l) = alloc(256);
            let base = p & !((2 << 20) - 1);
            announce(base);
            free(base, l);
        }
        "interior" => {
            let (p, l) = alloc(256);
            announce(p + 8);
            free(p + 8, l);
        }
        _ => panic!("unknown scenario {name}"),
    }
    // Reaching here means the misuse went unnoticed.
    std::process::exit(3);
}

fn expect_abort(test_name: &str, scenario_name: &str, message: &str) {
    let out = common::run_self(test_name, ROLE, scenario_name, Duration::from_secs(60));
    let addr = out
        .stdout
        .split("MISUSE ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{scenario_name}: child announced nothing:\n{}", out.stdout))
        .to_string();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{scenario_name}: child was not aborted ({:?})\nstderr:\n{}",
        out.status,
        out.stderr
    );
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("alloc-core: "))
        .unwrap_or_else(|| panic!("{scenario_name}: no message; stderr:\n{}", out.stderr));
    assert!(
        line.contains(message),
        "{scenario_name}: wrong message: {line}"
    );
    assert!(
        line.contains(&addr),
        "{scenario_name}: message lacks {addr}: {line}"
    );
}

macro_rules! misuse_test {
    ($name:ident, $scenario:literal, $message:literal) => {
        #[test]
        fn $name() {
            match std::env::var(ROLE).as_deref() {
                Ok($scenario) => scenario($scenario),
                Ok(_) => {}
                Err(_) => expect_abort(stringify!($name), $scenario, $message),
            }
        }
    };
}

misuse_test!(local_double_free_aborts, "local", "double free");
misuse_test!(remote_double_free_aborts, "remote", "double free");
misuse_test!(
    owner_free_after_remote_free_aborts,
    "remote_then_owner",
    "double free"
);
misuse_test!(large_double_free_aborts, "large", "double free");
misuse_test!(huge_double_free_aborts, "huge", "does not own");
misuse_test!(foreign_pointer_aborts, "foreign", "does not own");
misuse_test!(
    huge_double_free_into_a_reused_mapping_aborts,
    "huge_reused",
    "not the start of a huge allocation"
);
misuse_test!(
    aligned_huge_interior_pointer_aborts,
    "aligned_huge_interior",
    "not the start of a huge allocation"
);
misuse_test!(
    huge_interior_pointer_aborts,
    "huge_interior",
    "not the start of a huge allocation"
);
misuse_test!(arena_base_pointer_aborts, "arena_base", "does not own");
misuse_test!(
    interior_pointer_aborts,
    "interior",
    "not the start of a block"
);

#[test]
fn valid_frees_do_not_abort() {
    if std::env::var_os(ROLE).is_some() {
        return;
    }
    let mut blocks: Vec<(usize, Layout)> = [8, 48, 4000, 200 << 10, 3 << 20]
        .iter()
        .flat_map(|&s| (0..50).map(move |_| s))
        .map(alloc)
        .collect();
    // Half freed on another thread, half here, each once.
    let remote = blocks.split_off(blocks.len() / 2);
    std::thread::spawn(move || remote.into_iter().for_each(|(p, l)| free(p, l)))
        .join()
        .unwrap();
    blocks.into_iter().for_each(|(p, l)| free(p, l));
    // Freed addresses can be handed out and freed again.
    for _ in 0..3 {
        let (p, l) = alloc(48);
        free(p, l);
    }
}
