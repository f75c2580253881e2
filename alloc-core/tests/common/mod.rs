//! Helpers shared by the integration tests: a tiny PRNG, address-derived fill patterns, resident-set
//! reads, and running a child process (spawned or forked) under a timeout.
//!
//! Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// SplitMix64: a tiny, good-enough PRNG, seeded so runs are reproducible.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// Log-uniform in `lo..=hi` (lo >= 1): every power of two in between is equally likely.
    pub(crate) fn log_range(&mut self, lo: usize, hi: usize) -> usize {
        let lo_bits = usize::BITS - lo.leading_zeros();
        let hi_bits = usize::BITS - hi.leading_zeros();
        let bits = self.range(lo_bits as usize, hi_bits as usize);
        let top = (1usize << bits).min(hi);
        let bottom = (1usize << (bits - 1)).max(lo);
        self.range(bottom.min(top), top)
    }

    /// True with probability `n / d`.
    pub(crate) fn chance(&mut self, n: usize, d: usize) -> bool {
        self.below(d) < n
    }
}

/// The SplitMix64 finaliser.
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The pattern seed of a block: derived from its address and size, so a block that shows up at the
/// wrong address or with the wrong size fails its check.
pub(crate) fn seed_of(addr: usize, size: usize) -> u64 {
    mix(addr as u64 ^ (size as u64).rotate_left(40))
}

#[inline]
fn word_at(seed: u64, word_idx: usize) -> u64 {
    seed ^ (word_idx as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Fills `size` bytes at `p` with the pattern of `seed`.
///
/// # Safety
/// - `p` is valid for writes of `size` bytes.
pub(crate) unsafe fn fill(p: *mut u8, size: usize, seed: u64) {
    let words = size / 8;
    for i in 0..words {
        // SAFETY: the caller's contract; word `i` lies inside the block.
        unsafe { p.add(i * 8).cast::<u64>().write_unaligned(word_at(seed, i)) };
    }
    let tail = word_at(seed, words).to_le_bytes();
    for (j, byte) in tail.iter().enumerate().take(size % 8) {
        // SAFETY: the caller's contract; byte `words * 8 + j` lies inside the block.
        unsafe { *p.add(words * 8 + j) = *byte };
    }
}

/// Checks the pattern written by [`fill`]; returns the offset of the first wrong byte (rounded down
/// to its word) on failure.
///
/// # Safety
/// - `p` is valid for reads of `size` bytes.
pub(crate) unsafe fn check(p: *const u8, size: usize, seed: u64) -> Result<(), usize> {
    let words = size / 8;
    for i in 0..words {
        // SAFETY: the caller's contract; word `i` lies inside the block.
        if unsafe { p.add(i * 8).cast::<u64>().read_unaligned() } != word_at(seed, i) {
            return Err(i * 8);
        }
    }
    let tail = word_at(seed, words).to_le_bytes();
    for (j, byte) in tail.iter().enumerate().take(size % 8) {
        // SAFETY: the caller's contract; byte `words * 8 + j` lies inside the block.
        if unsafe { *p.add(words * 8 + j) } != *byte {
            return Err(words * 8);
        }
    }
    Ok(())
}

/// Blocks larger than this are filled and checked sparsely by [`fill_sparse`] / [`check_sparse`].
pub(crate) const SPARSE_ABOVE: usize = 256 << 10;

/// Like [`fill`] for small blocks; for blocks over [`SPARSE_ABOVE`] writes the first and last 64 KiB
/// and one 64-byte run per 4 KiB in between (cheap, yet any misplaced copy of a range shows up).
///
/// # Safety
/// - `p` is valid for writes of `size` bytes.
pub(crate) unsafe fn fill_sparse(p: *mut u8, size: usize, seed: u64) {
    for (offset, len) in sparse_ranges(size) {
        // SAFETY: every range lies inside the block (see `sparse_ranges`).
        unsafe { fill(p.add(offset), len, seed ^ offset as u64) };
    }
}

/// Checks what [`fill_sparse`] wrote over the first `size` bytes of a block of `size` or more bytes.
///
/// # Safety
/// - `p` is valid for reads of `size` bytes.
pub(crate) unsafe fn check_sparse(p: *const u8, size: usize, seed: u64) -> Result<(), usize> {
    for (offset, len) in sparse_ranges(size) {
        // SAFETY: every range lies inside the block.
        unsafe { check(p.add(offset), len, seed ^ offset as u64) }.map_err(|e| offset + e)?;
    }
    Ok(())
}

fn sparse_ranges(size: usize) -> Vec<(usize, usize)> {
    const EDGE: usize = 64 << 10;
    if size <= SPARSE_ABOVE {
        return vec![(0, size)];
    }
    let mut ranges = vec![(0, EDGE)];
    let mut offset = EDGE;
    while offset + 64 <= size - EDGE {
        ranges.push((offset, 64));
        offset += 4096;
    }
    ranges.push((size - EDGE, EDGE));
    ranges
}

/// Resident set of this process in bytes, from `/proc/self/statm` (what the OS says, not the
/// allocator's counters).
pub(crate) fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * alloc_core::page_size()
}

/// What a child process did.
pub(crate) struct ChildOutput {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs the current test binary again, running only `test_name`, with `key=value` in its environment
/// (the test recognises its child role by it). Kills the child and panics after `timeout`.
pub(crate) fn run_self(test_name: &str, key: &str, value: &str, timeout: Duration) -> ChildOutput {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(key, value)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the test binary");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "child {test_name} ({key}={value}) timed out after {timeout:?}; stderr:\n{}",
                err_reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    ChildOutput {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Waits for a forked child for at most `timeout`; on timeout kills it (SIGKILL) and returns `None`.
/// Otherwise returns the raw wait status.
pub(crate) fn wait_pid_timeout(pid: libc::pid_t, timeout: Duration) -> Option<libc::c_int> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return Some(status);
        }
        assert!(
            rc == 0,
            "waitpid failed: {}",
            std::io::Error::last_os_error()
        );
        if Instant::now() > deadline {
            // SAFETY: `pid` is our child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above; reaps the killed child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Describes a raw wait status for assertion messages.
pub(crate) fn describe_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("raw status {status:#x}")
    }
}
