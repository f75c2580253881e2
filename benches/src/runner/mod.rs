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
use crate::workloads;
use args::Args;
use table::Results;

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

    let workload_names: Vec<&'static str> = args.workloads.iter().map(|w| w.name).collect();
    let mut results = Results::new(args.reps);
    let mut failures = Vec::new();
    for rep in 0..args.reps {
        for (workload_idx, workload) in args.workloads.iter().enumerate() {
            let mut order: Vec<(Peer, &PathBuf)> =
                args.peers.iter().copied().zip(&binaries).collect();
            let shift = (rep + workload_idx) % order.len();
            order.rotate_left(shift);
            for (peer, binary) in order {
                let outcome = spawn::run_child(binary, workload.name, args.quick, args.timeout);
                match &outcome {
                    Ok(record) => eprintln!(
                        "[rep {}/{}] {:15} {:9} {} s",
                        rep + 1,
                        args.reps,
                        workload.name,
                        peer.name(),
                        record.get("secs").map_or("?", String::as_str)
                    ),
                    Err(problem) => {
                        eprintln!(
                            "[rep {}/{}] {} {} FAILED: {problem}",
                            rep + 1,
                            args.reps,
                            workload.name,
                            peer.name()
                        );
                        failures.push(format!(
                            "- rep {}, `{}` on {}: {problem}",
                            rep + 1,
                            workload.name,
                            peer.name()
                        ));
                    }
                }
                results.insert(workload.name, peer, rep, outcome.ok());
            }
        }
    }

    println!("{}", machine::describe(&args));
    println!("{}", results.render(&workload_names, &args.peers));
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
        Ok(binaries)
    } else {
        Err(format!(
            "missing workload binaries: {}\nbuild them first (same profile as the runner): \
             cargo build --release -p benches",
            missing.join(", ")
        ))
    }
}

fn legend(workloads: &[&workloads::Workload]) -> String {
    let mut text = String::from(
        "Medians over repetitions; ×mimalloc columns are medians of per-repetition ratios \
         (lower is better). RSS from /proc/self/statm, peak from getrusage.\n\n",
    );
    for workload in workloads {
        text.push_str(&format!("- `{}`: {}\n", workload.name, workload.about));
    }
    text
}
