//! The shared `main` of the workload binaries `wl-ours`, `wl-system`, `wl-mimalloc` and
//! `wl-jemalloc`: each installs its allocator as `#[global_allocator]` and calls
//! [`child_main`] with the matching [`Peer`].
//!
//! Usage: `wl-<peer> --workload NAME [--variant NAME] [--quick]` runs one workload and prints one
//! result line ([`crate::report`]); `wl-<peer> --list` lists the workloads and their variants.
//! Workloads that compare structures (`lru`, `handles`) need `--variant`; the runner starts each
//! variant in the binary the variant names. One workload per process keeps
//! each peak RSS (`getrusage` is per process) and each heap state separate.

use std::process::ExitCode;

use crate::block::corrupt_objects;
use crate::peer::Peer;
use crate::report::Report;
use crate::rss::peak_rss_bytes;
use crate::workloads::{self, Ctx};

/// Exit status of a run that completed but found corrupted objects.
const EXIT_CORRUPT: u8 = 3;
/// Exit status for a command-line error.
const EXIT_USAGE: u8 = 2;

/// Runs the workload named on the command line on `peer`, which must be the allocator this
/// binary installed as `#[global_allocator]`.
pub fn child_main(peer: Peer) -> ExitCode {
    let mut workload_name = None;
    let mut variant_name = None;
    let mut quick = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--workload" => workload_name = args.next(),
            "--variant" => variant_name = args.next(),
            "--quick" => quick = true,
            "--list" => {
                for workload in workloads::ALL {
                    println!("{:16} {}", workload.name, workload.about);
                    for variant in workload.variants {
                        println!(
                            "  --variant {:20} (in wl-{}) {}",
                            variant.name,
                            variant.peer.name(),
                            variant.about
                        );
                    }
                }
                return ExitCode::SUCCESS;
            }
            other => return usage(peer, &format!("unknown argument {other:?}")),
        }
    }
    let Some(name) = workload_name else {
        return usage(peer, "missing --workload NAME");
    };
    let Some(workload) = workloads::find(&name) else {
        return usage(peer, &format!("no workload {name:?} (see --list)"));
    };
    let variant = match (variant_name, workload.variants.is_empty()) {
        (None, true) => None,
        (Some(name), false) => match workload.variant(&name) {
            Some(variant) if variant.peer == peer => Some(variant),
            Some(variant) => {
                return usage(
                    peer,
                    &format!("variant {name:?} runs in wl-{}", variant.peer.name()),
                )
            }
            None => return usage(peer, &format!("no variant {name:?} (see --list)")),
        },
        (None, false) => return usage(peer, &format!("{name} needs --variant (see --list)")),
        (Some(_), true) => return usage(peer, &format!("{name} has no variants")),
    };

    // A service starts its background release first thing in main, before any work.
    if matches!(workload.release, workloads::Release::Idle(_)) {
        peer.start_background_release();
    }
    let ctx = Ctx {
        peer,
        release: workload.release,
        quick,
        variant,
    };
    let mut report = Report::new();
    report
        .set("workload", workload.name)
        .set("allocator", peer.name());
    if let Some(variant) = variant {
        report.set("variant", variant.name);
    }
    (workload.run)(&ctx, &mut report);
    let corrupt = corrupt_objects();
    report
        .set("peak_rss", peak_rss_bytes())
        .set("corrupt", corrupt);
    println!("{}", report.line());

    if corrupt == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CORRUPT)
    }
}

fn usage(peer: Peer, problem: &str) -> ExitCode {
    eprintln!(
        "{problem}\nusage: {} --workload NAME [--variant NAME] [--quick] | --list",
        peer.binary_name()
    );
    ExitCode::from(EXIT_USAGE)
}
