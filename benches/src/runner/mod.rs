//! The benchmark runner: runs the workload binaries of all peers side by side in one run,
//! interleaved, for several repetitions, and prints markdown tables of medians and of
//! per-repetition ratios to mimalloc.
//!
//! Interleaving: each repetition runs every workload on every peer before the next repetition
//! starts, and the order of the peers rotates with the repetition and the workload, so slow drift
//! of a noisy machine (other builds, thermal state) spreads over all peers instead of one.
//! Progress goes to stderr; stdout carries only the report, ready to paste.

mod args;
mod machine;
mod spawn;
mod stats;
mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::peer::Peer;
use crate::workloads::{self, Workload};
use args::Args;
use table::Results;

/// One row of a table: a run of a workload in one binary, as one allocator or one variant.
#[derive(Clone, Copy, Debug)]
struct Row {
    /// The allocator's or the variant's name.
    label: &'static str,
    /// The binary it runs in.
    peer: Peer,
    /// `--variant NAME`, for workloads that compare structures.
    variant: Option<&'static str>,
}

/// The rows of `workload` among the chosen allocators: one per allocator, or one per variant whose
/// binary is among them.
fn rows(workload: &Workload, peers: &[Peer]) -> Vec<Row> {
    if workload.variants.is_empty() {
        return peers
            .iter()
            .map(|&peer| Row {
                label: peer.name(),
                peer,
                variant: None,
            })
            .collect();
    }
    workload
        .variants
        .iter()
        .filter(|variant| peers.contains(&variant.peer))
        .map(|variant| Row {
            label: variant.name,
            peer: variant.peer,
            variant: Some(variant.name),
        })
        .collect()
}

/// Runs the benchmark as the command line asks (`--help` lists the options).
pub fn runner_main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("{problem}\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let binaries = match sibling_binaries(&args.peers) {
        Ok(binaries) => binaries,
        Err(problem) => {
            eprintln!("{problem}");
            return ExitCode::from(2);
        }
    };

    let plan: Vec<(&'static Workload, Vec<Row>)> = args
        .workloads
        .iter()
        .map(|workload| (*workload, rows(workload, &args.peers)))
        .collect();
    let mut results = Results::new(args.reps);
    let mut failures = Vec::new();
    for rep in 0..args.reps {
        for (workload_idx, (workload, rows)) in plan.iter().enumerate() {
            let mut order: Vec<&Row> = rows.iter().collect();
            if order.is_empty() {
                continue;
            }
            let shift = (rep + workload_idx) % order.len();
            order.rotate_left(shift);
            for row in order {
                let binary = &binaries[args.peers.iter().position(|p| *p == row.peer).unwrap_or(0)];
                let outcome =
                    spawn::run_child(binary, workload.name, row.variant, args.quick, args.timeout);
                match &outcome {
                    Ok(record) => eprintln!(
                        "[rep {}/{}] {:15} {:20} {} s",
                        rep + 1,
                        args.reps,
                        workload.name,
                        row.label,
                        record.get("secs").map_or("?", String::as_str)
                    ),
                    Err(problem) => {
                        eprintln!(
                            "[rep {}/{}] {} {} FAILED: {problem}",
                            rep + 1,
                            args.reps,
                            workload.name,
                            row.label
                        );
                        failures.push(format!(
                            "- rep {}, `{}` on {}: {problem}",
                            rep + 1,
                            workload.name,
                            row.label
                        ));
                    }
                }
                results.insert(workload.name, row.label, rep, outcome.ok());
            }
        }
    }

    println!("{}", machine::describe(&args));
    let tables: Vec<(&'static Workload, Vec<&'static str>)> = plan
        .iter()
        .map(|(workload, rows)| (*workload, rows.iter().map(|row| row.label).collect()))
        .collect();
    println!("{}", results.render(&tables));
    println!("{}", legend(&args.workloads));
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("Failed runs:\n{}", failures.join("\n"));
        ExitCode::from(1)
    }
}

/// The workload binary of each peer, looked for next to the runner itself.
fn sibling_binaries(peers: &[Peer]) -> Result<Vec<PathBuf>, String> {
    let exe = std::env::current_exe()
        .map_err(|error| format!("cannot find the runner's own path: {error}"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let binaries: Vec<PathBuf> = peers
        .iter()
        .map(|peer| dir.join(peer.binary_name()))
        .collect();
    let missing: Vec<String> = binaries
        .iter()
        .filter(|path| !path.is_file())
        .map(|path| path.display().to_string())
        .collect();
    if missing.is_empty() {
        warn_if_stale(&exe, &binaries);
        Ok(binaries)
    } else {
        Err(format!(
            "missing workload binaries: {}\nbuild them first (same profile as the runner): \
             cargo build --release -p benches",
            missing.join(", ")
        ))
    }
}

/// Warns (on stderr) about workload binaries built well before the runner: `cargo run --bin
/// bench-runner` rebuilds the runner only, so after a change they may measure the old code. One
/// `cargo build` links them all within seconds of each other.
fn warn_if_stale(runner: &Path, binaries: &[PathBuf]) {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let Some(runner_built) = modified(runner) else {
        return;
    };
    for binary in binaries {
        let older = modified(binary).and_then(|built| runner_built.duration_since(built).ok());
        if older.is_some_and(|by| by.as_secs() > 60) {
            eprintln!(
                "warning: {} was built before the runner; it may not hold the latest changes \
                 (cargo build --release -p benches)",
                binary.display()
            );
        }
    }
}

fn legend(workloads: &[&workloads::Workload]) -> String {
    let mut text = String::from(
        "Medians over repetitions; ×NAME columns are medians of per-repetition ratios to that \
         row in the same repetition (for times and memory lower is better, for rates higher). \
         RSS from /proc/self/statm, peak from getrusage.\n\n",
    );
    for workload in workloads {
        text.push_str(&format!("- `{}`: {}\n", workload.name, workload.about));
        for variant in workload.variants {
            text.push_str(&format!(
                "  - `{}` (in wl-{}): {}\n",
                variant.name,
                variant.peer.name(),
                variant.about
            ));
        }
    }
    text
}
