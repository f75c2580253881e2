//! The workload binaries run to completion on every allocator and report intact content.
//!
//! A correctness check, not a measurement: it runs the cheaper workloads in `--quick` mode and
//! checks the exit status and the result line (never a time). The memory-heavy workloads
//! (`frag`, `survivors`) are left to the runner.

use std::process::Command;

use benches::report::{number, parse_output};

const BINARIES: [&str; 4] = [
    env!("CARGO_BIN_EXE_wl-ours"),
    env!("CARGO_BIN_EXE_wl-system"),
    env!("CARGO_BIN_EXE_wl-mimalloc"),
    env!("CARGO_BIN_EXE_wl-jemalloc"),
];

fn run_quick(binary: &str, workload: &str) {
    let output = Command::new(binary)
        .args(["--workload", workload, "--quick"])
        .output()
        .expect("the workload binary starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{binary} {workload}: {}\n{stderr}",
        output.status
    );
    let record = parse_output(&stdout)
        .unwrap_or_else(|| panic!("{binary} {workload}: no result in {stdout:?}"));
    assert_eq!(record["workload"], workload);
    assert_eq!(number(&record, "corrupt"), Some(0.0), "{binary} {workload}");
    for key in ["secs", "ops", "peak_rss", "rss_free", "rss_release"] {
        assert!(
            number(&record, key).is_some_and(|v| v > 0.0),
            "{binary} {workload}: {key} in {stdout}"
        );
    }
}

#[test]
fn churn_runs_on_every_allocator() {
    BINARIES
        .iter()
        .for_each(|binary| run_quick(binary, "churn"));
}

#[test]
fn cross_thread_frees_run_on_every_allocator() {
    BINARIES
        .iter()
        .for_each(|binary| run_quick(binary, "xthread"));
}

#[test]
fn realloc_growth_runs_on_every_allocator() {
    BINARIES
        .iter()
        .for_each(|binary| run_quick(binary, "realloc"));
}

#[test]
fn unknown_workload_is_a_usage_error() {
    let status = Command::new(BINARIES[0])
        .args(["--workload", "nope"])
        .status()
        .expect("the workload binary starts");
    assert_eq!(status.code(), Some(2));
}

/// Runs one variant of a structure-comparing workload in quick mode and checks its result line.
fn run_variant(binary: &str, workload: &str, variant: &str, keys: &[&str]) {
    let output = Command::new(binary)
        .args(["--workload", workload, "--variant", variant, "--quick"])
        .output()
        .expect("the workload binary starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{binary} {workload} {variant}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let record = parse_output(&stdout)
        .unwrap_or_else(|| panic!("{workload} {variant}: no result in {stdout:?}"));
    assert_eq!(record["variant"], variant);
    assert_eq!(
        number(&record, "corrupt"),
        Some(0.0),
        "{workload} {variant}"
    );
    for key in keys {
        assert!(
            number(&record, key).is_some_and(|v| v > 0.0),
            "{workload} {variant}: {key} in {stdout}"
        );
    }
}

#[test]
fn lru_runs_boxed_and_in_the_blob_cache() {
    let keys = ["secs", "live", "index_bytes", "rss_end", "rss_release"];
    run_variant(BINARIES[2], "lru", "boxed-mimalloc", &keys);
    run_variant(BINARIES[0], "lru", "blobcache", &keys);
}

#[test]
fn handles_run_on_every_structure() {
    let keys = [
        "insert_mops",
        "get_ns",
        "chase_ns",
        "readers2_mgets",
        "p99_idle_ns",
    ];
    run_variant(BINARIES[2], "handles", "box-mimalloc", &keys);
    run_variant(BINARIES[2], "handles", "slotmap", &keys);
    run_variant(BINARIES[2], "handles", "denseslotmap", &keys);
    run_variant(BINARIES[2], "handles", "sharded-slab", &keys);
    let reloc = [&keys[..], &["compact_moved", "p99_compact_ns"]].concat();
    run_variant(BINARIES[0], "handles", "reloc", &reloc);
}

#[test]
fn a_variant_runs_only_in_its_binary() {
    let status = Command::new(BINARIES[2])
        .args(["--workload", "handles", "--variant", "reloc", "--quick"])
        .status()
        .expect("the workload binary starts");
    assert_eq!(status.code(), Some(2));
}
