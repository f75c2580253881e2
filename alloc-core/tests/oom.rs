//! Out of memory: every allocation path returns null (never aborts, never unwinds) when the address
//! space runs out, and works again once memory is freed.
//!
//! Each test forks a child, which sets `RLIMIT_AS` to its current address-space size plus 256 MiB
//! (the harness's own mappings, thread stacks and malloc arenas already take some; a fixed 256 MiB
//! total could leave nothing), drives one path until it returns null, frees, and checks allocation
//! works again. The child uses only the allocator (called directly) and libc, and reports by exit
//! code through `_exit`; the parent checks the status (a crash, abort or hang fails the test).
//!
//! Paths: `small` (slabs), `large` (spans), `huge` (direct mappings), `realloc` (a failed grow keeps
//! the old block intact), `kept` (freed huge mappings kept for reuse go back when an allocation,
//! huge or small, finds no room), `zeroed` (`alloc_zeroed` on all three paths), `over_aligned` (small class
//! at page alignment, padded span, 4 MiB-aligned mapping).

mod common;

use alloc_core::SlabAlloc;
use std::alloc::{GlobalAlloc, Layout};
use std::time::Duration;

static A: SlabAlloc = SlabAlloc::new();
const BUDGET: usize = 256 << 20;

fn exit(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it skips atexit handlers inherited from the parent.
    unsafe { libc::_exit(code) }
}

fn ensure(ok: bool, code: i32) {
    if !ok {
        exit(code);
    }
}

/// The address-space size of this process in bytes, read without allocating.
fn vm_size() -> usize {
    let mut buf = [0u8; 128];
    // SAFETY: a NUL-terminated path; the fd is closed below.
    let fd = unsafe { libc::open(c"/proc/self/statm".as_ptr(), libc::O_RDONLY) };
    ensure(fd >= 0, 2);
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: `fd` is open.
    unsafe { libc::close(fd) };
    ensure(n > 0, 3);
    let pages = buf
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0, |acc, b| acc * 10 + (b - b'0') as usize);
    pages * alloc_core::page_size()
}

fn limit_address_space() {
    let limit = (vm_size() + BUDGET) as libc::rlim_t;
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: `rl` is a valid rlimit.
    ensure(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) } == 0, 4);
}

/// Live blocks of one layout, linked through their first word (no memory of its own).
struct Chain {
    head: *mut usize,
    count: usize,
    layout: Layout,
}

impl Chain {
    fn new(size: usize, align: usize) -> Self {
        let layout = Layout::from_size_align(size, align).unwrap_or_else(|_| exit(5));
        Chain {
            head: core::ptr::null_mut(),
            count: 0,
            layout,
        }
    }

    fn push(&mut self, p: *mut u8) {
        ensure(p as usize % self.layout.align() == 0, 6);
        let p = p.cast::<usize>();
        // SAFETY: a fresh block of at least 8 bytes, aligned to at least 8.
        unsafe { p.write(self.head as usize) };
        self.head = p;
        self.count += 1;
    }

    /// Allocates with `f` until it returns null (or `max` blocks); returns how many it got.
    fn fill_until_null(&mut self, max: usize, f: impl Fn(Layout) -> *mut u8) -> usize {
        let start = self.count;
        loop {
            let p = f(self.layout);
            if p.is_null() {
                return self.count - start;
            }
            self.push(p);
            ensure(self.count - start <= max, 7);
        }
    }

    fn free_all(&mut self) {
        while !self.head.is_null() {
            // SAFETY: every link was written by `push` to a live block.
            let next = unsafe { self.head.read() } as *mut usize;
            // SAFETY: allocated by `A` with this layout, freed once.
            unsafe { A.dealloc(self.head.cast(), self.layout) };
            self.head = next;
            self.count -= 1;
        }
    }
}

fn plain(layout: Layout) -> *mut u8 {
    // SAFETY: every layout used here has a non-zero size.
    unsafe { A.alloc(layout) }
}

fn zeroed(layout: Layout) -> *mut u8 {
    // SAFETY: as above.
    let p = unsafe { A.alloc_zeroed(layout) };
    if !p.is_null() {
        // SAFETY: the block is `layout.size()` bytes long.
        let bytes = unsafe { core::slice::from_raw_parts(p, layout.size()) };
        ensure(bytes.iter().all(|&b| b == 0), 8);
    }
    p
}

/// Exhausts memory with blocks of `size`/`align`, frees them, and checks that at least half as many
/// can be allocated again; then purges. Exit codes are `base + 0..3`.
fn exhaust_and_recover(size: usize, align: usize, f: fn(Layout) -> *mut u8, base: i32) {
    let max = 2 * BUDGET / size + 16;
    let mut chain = Chain::new(size, align);
    let first = chain.fill_until_null(max, f);
    ensure(first > 0, base);
    chain.free_all();
    let again = chain.fill_until_null(max, f);
    ensure(again >= first / 2 && again > 0, base + 1);
    chain.free_all();
    alloc_core::purge();
}

fn child(path: &str) -> ! {
    limit_address_space();
    match path {
        "small" => {
            exhaust_and_recover(64, 8, plain, 10);
            exhaust_and_recover(3000, 8, plain, 13);
        }
        "large" => {
            exhaust_and_recover(256 << 10, 8, plain, 20);
            exhaust_and_recover(900 << 10, 8, plain, 23);
        }
        "huge" => {
            exhaust_and_recover(8 << 20, 8, plain, 30);
            exhaust_and_recover(3 << 20, 8, plain, 33);
        }
        "realloc" => realloc_child(),
        "kept" => kept_child(),
        "zeroed" => {
            exhaust_and_recover(100, 8, zeroed, 50);
            exhaust_and_recover(300 << 10, 8, zeroed, 53);
            exhaust_and_recover(3 << 20, 8, zeroed, 56);
        }
        "over_aligned" => {
            exhaust_and_recover(100, 4096, plain, 60);
            exhaust_and_recover(100 << 10, 128 << 10, plain, 63);
            exhaust_and_recover(1 << 20, 4 << 20, plain, 66);
            exhaust_and_recover(200, 1 << 20, plain, 69);
        }
        _ => exit(1),
    }
    exit(0)
}

/// Freed huge mappings are kept for reuse (up to 32 MiB); an allocation that finds no address
/// space gives them back and tries again, on the huge path and on the small one.
fn kept_child() {
    let mut chain = Chain::new(4 << 20, 8);
    ensure(
        chain.fill_until_null(2 * BUDGET / (4 << 20) + 16, plain) > 0,
        80,
    );
    chain.free_all();
    ensure(alloc_core::stats().huge_cached_bytes > 0, 81);
    // More than is left beside the kept mappings.
    let big = Layout::from_size_align(BUDGET - (12 << 20), 8).unwrap_or_else(|_| exit(82));
    let p = plain(big);
    ensure(!p.is_null(), 83);
    // SAFETY: allocated with `big` just now.
    unsafe { A.dealloc(p, big) };
    alloc_core::purge();
    ensure(
        chain.fill_until_null(2 * BUDGET / (4 << 20) + 16, plain) > 0,
        84,
    );
    chain.free_all();
    ensure(alloc_core::stats().huge_cached_bytes > 0, 85);
    let mut small = Chain::new(3000, 8);
    ensure(small.fill_until_null(2 * BUDGET / 3000 + 16, plain) > 0, 86);
    ensure(alloc_core::stats().huge_cached_bytes == 0, 87);
    small.free_all();
}

fn realloc_child() {
    // Grow one block by doubling until realloc fails; the old block must be intact after the failure.
    let mut size = 1024;
    let layout = Layout::from_size_align(size, 8).unwrap_or_else(|_| exit(5));
    // SAFETY: non-zero size.
    let mut p = unsafe { A.alloc(layout) };
    ensure(!p.is_null(), 40);
    loop {
        // SAFETY: `p` is live and `size` bytes long.
        unsafe { p.write_bytes((size >> 10) as u8, size) };
        let old = Layout::from_size_align(size, 8).unwrap_or_else(|_| exit(5));
        // SAFETY: `p` is live with layout `old`; the new size is non-zero and fits isize.
        let q = unsafe { A.realloc(p, old, size * 2) };
        if q.is_null() {
            // SAFETY: after a failed realloc the old block is still live and `size` bytes long.
            let bytes = unsafe { core::slice::from_raw_parts(p, size) };
            ensure(bytes.iter().all(|&b| b == (size >> 10) as u8), 41);
            ensure(size >= 32 << 20, 42);
            // SAFETY: the old block is live with layout `old`.
            unsafe { A.dealloc(p, old) };
            break;
        }
        p = q;
        size *= 2;
        ensure(size <= 4 * BUDGET, 43);
    }
    // A small block cannot grow into a span or a mapping while memory is exhausted, and survives.
    let small = Layout::from_size_align(200, 8).unwrap_or_else(|_| exit(5));
    // SAFETY: non-zero size.
    let s = unsafe { A.alloc(small) };
    ensure(!s.is_null(), 44);
    // SAFETY: `s` is 200 bytes long.
    unsafe { s.write_bytes(0x77, 200) };
    let mut filler = Chain::new(1 << 20, 8);
    ensure(filler.fill_until_null(2 * BUDGET, plain) > 0, 45);
    // SAFETY: `s` is live with layout `small`.
    let grown = unsafe { A.realloc(s, small, 64 << 20) };
    ensure(grown.is_null(), 46);
    // SAFETY: the failed realloc left `s` live.
    ensure(
        unsafe { core::slice::from_raw_parts(s, 200) }
            .iter()
            .all(|&b| b == 0x77),
        47,
    );
    filler.free_all();
    alloc_core::purge();
    // SAFETY: `s` is live with layout `small`.
    let grown = unsafe { A.realloc(s, small, 64 << 20) };
    ensure(!grown.is_null(), 48);
    // SAFETY: the grown block keeps the first 200 bytes.
    ensure(
        unsafe { core::slice::from_raw_parts(grown, 200) }
            .iter()
            .all(|&b| b == 0x77),
        49,
    );
    // SAFETY: `grown` is live with this layout.
    unsafe {
        A.dealloc(
            grown,
            Layout::from_size_align(64 << 20, 8).unwrap_or_else(|_| exit(5)),
        )
    };
}

fn run(path: &'static str) {
    // Initialise the allocator (and `checked`'s chunk map) before forking, so the child's limit is
    // measured after those reservations.
    for size in [64, 100 << 10, 4 << 20] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: non-zero size; freed right away with the same layout.
        unsafe { A.dealloc(A.alloc(layout), layout) };
    }
    // SAFETY: the child only calls the allocator and libc, then `_exit`s (see `child`).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        child(path);
    }
    let status = common::wait_pid_timeout(pid, Duration::from_secs(120));
    let status = status.unwrap_or_else(|| panic!("oom child `{path}` hung and was killed"));
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "oom child `{path}` {} (see the exit codes in oom.rs)",
        common::describe_status(status)
    );
}

#[test]
fn small_path_returns_null_then_recovers() {
    run("small");
}

#[test]
fn large_span_path_returns_null_then_recovers() {
    run("large");
}

#[test]
fn huge_path_returns_null_then_recovers() {
    run("huge");
}

#[test]
fn kept_huge_mappings_go_back_when_memory_runs_out() {
    run("kept");
}

#[test]
fn failed_realloc_keeps_the_block() {
    run("realloc");
}

#[test]
fn alloc_zeroed_returns_null_then_recovers() {
    run("zeroed");
}

#[test]
fn over_aligned_paths_return_null_then_recover() {
    run("over_aligned");
}
