//! Collecting the children's records by workload, allocator and repetition, and printing them as
//! markdown tables of medians with ratios to the baseline peer (mimalloc) taken per repetition.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::peer::Peer;
use crate::report::{number, Record};
use crate::runner::stats::{median, median_ratio};

/// Bytes in a MiB.
const MIB: f64 = 1024.0 * 1024.0;

/// Every record, by (workload name, peer), one slot per repetition (`None`: that run failed).
#[derive(Debug, Default)]
pub(crate) struct Results {
    reps: usize,
    runs: BTreeMap<(&'static str, Peer), Vec<Option<Record>>>,
}

/// One column of figures: how to get its value from a record and how to print it.
struct Column {
    header: &'static str,
    value: fn(&Record) -> Option<f64>,
    decimals: usize,
    /// Whether a "× mimalloc" column follows.
    with_ratio: bool,
}

const SPEED_AND_MEMORY: &[Column] = &[
    Column {
        header: "time ms",
        value: |r| Some(number(r, "secs")? * 1e3),
        decimals: 0,
        with_ratio: true,
    },
    Column {
        header: "Mops/s",
        value: |r| positive(number(r, "ops")? / number(r, "secs")? / 1e6),
        decimals: 2,
        with_ratio: false,
    },
    Column {
        header: "peak RSS MiB",
        value: |r| Some(number(r, "peak_rss")? / MIB),
        decimals: 1,
        with_ratio: true,
    },
    Column {
        header: "RSS after free MiB",
        value: |r| Some(number(r, "rss_free")? / MIB),
        decimals: 1,
        with_ratio: true,
    },
    Column {
        header: "RSS after purge/idle MiB",
        value: |r| Some(number(r, "rss_release")? / MIB),
        decimals: 1,
        with_ratio: true,
    },
];

const RESIDENT_PER_LIVE: &[Column] = &[
    Column {
        header: "live MiB",
        value: |r| Some(number(r, "live")? / MIB),
        decimals: 1,
        with_ratio: false,
    },
    Column {
        header: "after free: RSS/live",
        value: |r| Some(number(r, "rss_free")? / number(r, "live")?),
        decimals: 2,
        with_ratio: true,
    },
    Column {
        header: "end: RSS/live",
        value: |r| Some(number(r, "rss_end")? / number(r, "live_end")?),
        decimals: 2,
        with_ratio: true,
    },
    Column {
        header: "after purge/idle: RSS/live",
        value: |r| {
            let live = number(r, "live_end").or_else(|| number(r, "live"))?;
            Some(number(r, "rss_release")? / live)
        },
        decimals: 2,
        with_ratio: true,
    },
];

fn positive(value: f64) -> Option<f64> {
    (value.is_finite() && value > 0.0).then_some(value)
}

impl Results {
    /// Room for `reps` repetitions of every run.
    pub(crate) fn new(reps: usize) -> Self {
        Self {
            reps,
            runs: BTreeMap::new(),
        }
    }

    /// Stores the outcome of one run.
    pub(crate) fn insert(
        &mut self,
        workload: &'static str,
        peer: Peer,
        rep: usize,
        record: Option<Record>,
    ) {
        let slots = self
            .runs
            .entry((workload, peer))
            .or_insert_with(|| vec![None; self.reps]);
        slots[rep] = record;
    }

    /// The per-repetition values of `column` for one workload and peer.
    fn series(&self, workload: &'static str, peer: Peer, column: &Column) -> Vec<Option<f64>> {
        self.runs
            .get(&(workload, peer))
            .map(|slots| {
                slots
                    .iter()
                    .map(|slot| slot.as_ref().and_then(column.value))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The table of speed and memory for every workload, then the resident/live table for the
    /// workloads that report live bytes.
    pub(crate) fn render(&self, workloads: &[&'static str], peers: &[Peer]) -> String {
        let mut out = String::new();
        out.push_str(&self.table(workloads, peers, SPEED_AND_MEMORY));
        let with_live: Vec<&'static str> = workloads
            .iter()
            .copied()
            .filter(|w| {
                peers.iter().any(|p| {
                    self.series(w, *p, &RESIDENT_PER_LIVE[0])
                        .iter()
                        .any(Option::is_some)
                })
            })
            .collect();
        if !with_live.is_empty() {
            out.push('\n');
            out.push_str(&self.table(&with_live, peers, RESIDENT_PER_LIVE));
        }
        out
    }

    fn table(&self, workloads: &[&'static str], peers: &[Peer], columns: &[Column]) -> String {
        let baseline = Peer::BASELINE.name();
        let mut header = vec!["workload".to_owned(), "allocator".to_owned()];
        for column in columns {
            header.push(column.header.to_owned());
            if column.with_ratio {
                header.push(format!("×{baseline}"));
            }
        }
        let mut out = String::new();
        row(&mut out, &header);
        row(
            &mut out,
            &header
                .iter()
                .enumerate()
                .map(|(i, _)| if i < 2 { "---" } else { "---:" }.to_owned())
                .collect::<Vec<_>>(),
        );
        for workload in workloads {
            for peer in peers {
                let runs = self.series(workload, *peer, &columns[0]);
                let ok = runs.iter().filter(|v| v.is_some()).count();
                let mut cells = vec![workload.to_string(), peer_label(*peer, ok, self.reps)];
                for column in columns {
                    let values = self.series(workload, *peer, column);
                    let base = self.series(workload, Peer::BASELINE, column);
                    cells.push(cell(
                        median(values.iter().flatten().copied().collect()),
                        column.decimals,
                    ));
                    if column.with_ratio {
                        cells.push(cell(median_ratio(&values, &base), 2));
                    }
                }
                row(&mut out, &cells);
            }
        }
        out
    }
}

fn peer_label(peer: Peer, ok: usize, reps: usize) -> String {
    if ok == reps {
        peer.name().to_owned()
    } else {
        format!("{} ({ok}/{reps} ok)", peer.name())
    }
}

fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn row(out: &mut String, cells: &[String]) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}
