//! Helpers shared by the example programs.

/// The process's resident set in bytes, read from the OS (`/proc/self/statm`, second field, in pages).
pub fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    pages * alloc_core::page_size()
}

/// Bytes as MiB, for printing.
pub fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}
