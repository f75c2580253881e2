//! Resident memory as the OS sees it: the current resident set from `/proc/self/statm` and the
//! peak from `getrusage`. Neither asks the allocator under test anything.

use std::fs::File;
use std::io::Read;

/// Bytes resident now: the second field of `/proc/self/statm` (pages) times the page size.
/// Returns 0 if the file cannot be read (not Linux).
pub fn current_rss_bytes() -> usize {
    // A stack buffer keeps the measurement from allocating through the allocator being measured.
    let mut buf = [0u8; 128];
    let Ok(mut file) = File::open("/proc/self/statm") else {
        return 0;
    };
    let Ok(len) = file.read(&mut buf) else {
        return 0;
    };
    let text = std::str::from_utf8(&buf[..len]).unwrap_or("");
    let pages: usize = text
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    pages * page_size()
}

/// The peak resident set of this process so far (`ru_maxrss`, which Linux reports in KiB).
pub fn peak_rss_bytes() -> usize {
    // SAFETY: `rusage` is plain old data; all-zero is a valid value for every field.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage` for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return 0;
    }
    usize::try_from(usage.ru_maxrss).unwrap_or(0) * 1024
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::{current_rss_bytes, peak_rss_bytes};

    #[test]
    fn rss_is_reported_and_peak_bounds_current() {
        let now = current_rss_bytes();
        let peak = peak_rss_bytes();
        assert!(now > 0);
        assert!(peak >= now / 2, "peak {peak} vs now {now}");
    }
}
