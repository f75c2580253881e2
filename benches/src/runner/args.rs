//! The runner's command line.

use std::time::Duration;

use crate::peer::Peer;
use crate::workloads::{self, Workload};

/// How to call the runner.
pub(crate) const USAGE: &str =
    "usage: bench-runner [--reps N] [--quick] [--workload NAME[,NAME..]]... \
[--allocators NAME[,NAME..]] [--timeout SECS]
  --reps N           repetitions (default 5)
  --quick            a short smoke run (workloads divided by 10)
  --workload NAMES   only these workloads (repeatable; default all)
  --allocators NAMES only these of ours, mimalloc, jemalloc, system (default all)
  --timeout SECS     kill a run after this long (default 300)";

/// What the runner was asked to do.
#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) reps: usize,
    pub(crate) quick: bool,
    pub(crate) workloads: Vec<&'static Workload>,
    pub(crate) peers: Vec<Peer>,
    pub(crate) timeout: Duration,
}

impl Args {
    /// Parses the arguments after the program name; `Ok(None)` after printing help or the list.
    pub(crate) fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Self>, String> {
        let mut parsed = Args {
            reps: 5,
            quick: false,
            workloads: Vec::new(),
            peers: Vec::new(),
            timeout: Duration::from_secs(300),
        };
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--reps" => parsed.reps = number(&value()?)?.max(1),
                "--quick" => parsed.quick = true,
                "--timeout" => parsed.timeout = Duration::from_secs(number(&value()?)? as u64),
                "--workload" => {
                    for name in value()?.split(',') {
                        let workload =
                            workloads::find(name).ok_or_else(|| format!("no workload {name:?}"))?;
                        parsed.workloads.push(workload);
                    }
                }
                "--allocators" => {
                    for name in value()?.split(',') {
                        parsed.peers.push(
                            Peer::from_name(name)
                                .ok_or_else(|| format!("no allocator {name:?}"))?,
                        );
                    }
                }
                "--help" | "-h" => {
                    println!("{USAGE}");
                    return Ok(None);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if parsed.workloads.is_empty() {
            parsed.workloads = workloads::ALL.iter().collect();
        }
        if parsed.peers.is_empty() {
            parsed.peers = Peer::ALL.to_vec();
        }
        Ok(Some(parsed))
    }
}

fn number(text: &str) -> Result<usize, String> {
    text.parse().map_err(|_| format!("not a number: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::Args;
    use crate::peer::Peer;

    fn parse(line: &str) -> Result<Option<Args>, String> {
        Args::parse(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn defaults_and_filters() {
        let all = parse("").unwrap().unwrap();
        assert_eq!((all.reps, all.quick), (5, false));
        assert_eq!(all.peers, Peer::ALL.to_vec());
        let some = parse("--reps 3 --quick --workload churn,frag --allocators ours,mimalloc")
            .unwrap()
            .unwrap();
        assert_eq!((some.reps, some.quick), (3, true));
        assert_eq!(
            some.workloads.iter().map(|w| w.name).collect::<Vec<_>>(),
            ["churn", "frag"]
        );
        assert_eq!(some.peers, [Peer::Ours, Peer::Mimalloc]);
    }

    #[test]
    fn errors_are_reported() {
        assert!(parse("--reps").is_err());
        assert!(parse("--reps x").is_err());
        assert!(parse("--workload nope").is_err());
        assert!(parse("--bogus").is_err());
    }
}
