//! Collecting the children's records by workload, row (allocator or variant) and repetition, and
//! printing them as markdown tables of medians with ratios to the workload's baseline row
//! ([`Table::baseline`]: mimalloc for the allocator workloads) taken per repetition.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::report::{number, Record};
use crate::runner::stats::{median, median_ratio};
use crate::workloads::{Table, Workload};

/// Bytes in a MiB.
const MIB: f64 = 1024.0 * 1024.0;

/// Every record, by (workload name, row label), one slot per repetition (`None`: that run failed).
#[derive(Debug, Default)]
pub(crate) struct Results {
    reps: usize,
    runs: BTreeMap<(&'static str, &'static str), Vec<Option<Record>>>,
}

/// One column of figures: how to get its value from a record and how to print it.
struct Column {
    header: &'static str,
    value: fn(&Record) -> Option<f64>,
    decimals: usize,
    /// Whether a "× baseline" column follows.
    with_ratio: bool,
}

/// A ratio of two keys of one record.
fn ratio(r: &Record, numerator: &str, denominator: &str) -> Option<f64> {
    positive(number(r, numerator)? / number(r, denominator)?)
}

const LRU: &[Column] = &[
    Column {
        header: "insert s",
        value: |r| number(r, "secs"),
        decimals: 2,
        with_ratio: true,
    },
    Column {
        header: "longest pause ms",
        value: |r| Some(number(r, "max_pause_ns")? / 1e6),
        decimals: 2,
        with_ratio: true,
    },
    Column {
        header: "longest pause in values ms",
        value: |r| Some(number(r, "max_value_pause_ns")? / 1e6),
        decimals: 2,
        with_ratio: true,
    },
    Column {
        header: "live MiB",
        value: |r| Some(number(r, "live")? / MIB),
        decimals: 1,
        with_ratio: false,
    },
    Column {
        header: "index MiB",
        value: |r| Some(number(r, "index_rss")? / MIB),
        decimals: 1,
        with_ratio: false,
    },
    Column {
        header: "peak RSS MiB",
        value: |r| Some(number(r, "peak_rss")? / MIB),
        decimals: 1,
        with_ratio: true,
    },
    Column {
        header: "RSS end MiB",
        value: |r| Some(number(r, "rss_end")? / MIB),
        decimals: 1,
        with_ratio: true,
    },
    Column {
        header: "RSS after release MiB",
        value: |r| Some(number(r, "rss_release")? / MIB),
        decimals: 1,
        with_ratio: true,
    },
    Column {
        header: "end: RSS/live",
        value: |r| ratio(r, "rss_end", "live"),
        decimals: 2,
        with_ratio: false,
    },
    Column {
        header: "released: RSS/live",
        value: |r| ratio(r, "rss_release", "live"),
        decimals: 2,
        with_ratio: true,
    },
    Column {
        header: "index/live",
        value: |r| ratio(r, "index_rss", "live"),
        decimals: 2,
        with_ratio: false,
    },
    Column {
        header: "released: (RSS−index)/live",
        value: |r| {
            positive((number(r, "rss_release")? - number(r, "index_rss")?) / number(r, "live")?)
        },
        decimals: 2,
        with_ratio: true,
    },
];

const HANDLES_SPEED: &[Column] = &[
    Column {
        header: "insert Mops/s",
        value: |r| positive(number(r, "insert_mops")?),
        decimals: 1,
        with_ratio: true,
    },
    Column {
        header: "remove Mops/s",
        value: |r| positive(number(r, "remove_mops")?),
        decimals: 1,
        with_ratio: true,
    },
    Column {
        header: "multi-remove Mops/s",
        value: |r| positive(number(r, "multi_remove_mops")?),
        decimals: 1,
        with_ratio: true,
    },
    Column {
        header: "get ns",
        value: |r| positive(number(r, "get_ns")?),
        decimals: 1,
        with_ratio: true,
    },
    Column {
        header: "get through a view ns (get where none)",
        value: |r| positive(number(r, "view_get_ns").or_else(|| number(r, "get_ns"))?),
        decimals: 1,
        with_ratio: true,
    },
    Column {
        header: "multi-get ns",
        value: |r| positive(number(r, "multi_get_ns")?),
        decimals: 1,
        with_ratio: true,
    },
    Column {
        header: "chased get ns",
        value: |r| positive(number(r, "chase_ns")?),
        decimals: 1,
        with_ratio: true,
    },
    Column {
        header: "2 readers Mgets/s",
        value: |r| positive(number(r, "readers2_mgets")?),
        decimals: 1,
        with_ratio: true,
    },
    Column {
        header: "2 readers through views Mgets/s (readers where none)",
        value: |r| {
            positive(number(r, "readers2_view_mgets").or_else(|| number(r, "readers2_mgets"))?)
        },
        decimals: 1,
        with_ratio: true,
    },
];

const HANDLES_MEMORY: &[Column] = &[
    Column {
        header: "live MiB",
        value: |r| Some(number(r, "live")? / MIB),
        decimals: 1,
        with_ratio: false,
    },
    Column {
        header: "full: RSS/live",
        value: |r| ratio(r, "rss_full", "live_full"),
        decimals: 2,
        with_ratio: false,
    },
    Column {
        header: "90 % removed: RSS/live",
        value: |r| ratio(r, "rss_removed", "live"),
        decimals: 2,
        with_ratio: true,
    },
    Column {
        header: "compacted: RSS/live",
        value: |r| ratio(r, "rss_compacted", "live"),
        decimals: 2,
        with_ratio: false,
    },
    Column {
        header: "compacted, without slot table: RSS/live",
        value: |r| {
            positive((number(r, "rss_compacted")? - number(r, "table_bytes")?) / number(r, "live")?)
        },
        decimals: 2,
        with_ratio: false,
    },
    Column {
        header: "compaction GB/s",
        value: |r| positive(number(r, "compact_gbs")?),
        decimals: 3,
        with_ratio: false,
    },
    Column {
        header: "p99 idle ns/get",
        value: |r| positive(number(r, "p99_idle_ns")?),
        decimals: 1,
        with_ratio: true,
    },
    Column {
        header: "p99 idle, compacted ns/get",
        value: |r| positive(number(r, "p99_compacted_idle_ns")?),
        decimals: 1,
        with_ratio: false,
    },
    Column {
        header: "p99 compacting ns/get",
        value: |r| positive(number(r, "p99_compact_ns")?),
        decimals: 1,
        with_ratio: false,
    },
    Column {
        header: "compacting/idle p99",
        value: |r| ratio(r, "p99_compact_ns", "p99_idle_ns"),
        decimals: 2,
        with_ratio: false,
    },
    Column {
        header: "compacting/idle p99, same layout",
        value: |r| ratio(r, "p99_compact_ns", "p99_compacted_idle_ns"),
        decimals: 2,
        with_ratio: false,
    },
    Column {
        header: "moved while reading MiB",
        value: |r| Some(number(r, "moved_reading")? / MIB),
        decimals: 1,
        with_ratio: false,
    },
    Column {
        header: "p99 compacting, forced release ns/get",
        value: |r| positive(number(r, "p99_compact_forced_ns")?),
        decimals: 1,
        with_ratio: false,
    },
    Column {
        header: "forced release: compacting/idle p99, same layout",
        value: |r| ratio(r, "p99_compact_forced_ns", "p99_compacted_idle_ns"),
        decimals: 2,
        with_ratio: false,
    },
    Column {
        header: "moved while reading, forced release MiB",
        value: |r| Some(number(r, "moved_reading_forced")? / MIB),
        decimals: 1,
        with_ratio: false,
    },
];

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
        label: &'static str,
        rep: usize,
        record: Option<Record>,
    ) {
        let slots = self
            .runs
            .entry((workload, label))
            .or_insert_with(|| vec![None; self.reps]);
        slots[rep] = record;
    }

    /// The per-repetition values of `column` for one workload and row.
    fn series(&self, workload: &'static str, label: &str, column: &Column) -> Vec<Option<f64>> {
        self.runs
            .iter()
            .find(|((w, l), _)| *w == workload && *l == label)
            .map(|(_, slots)| {
                slots
                    .iter()
                    .map(|slot| slot.as_ref().and_then(column.value))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// For each kind of table, the tables of the workloads of that kind, each workload with the
    /// labels of its rows in order: speed and memory for the allocator workloads (then resident /
    /// live for those that report live bytes), and the relocate-api tables.
    pub(crate) fn render(&self, workloads: &[(&'static Workload, Vec<&'static str>)]) -> String {
        let mut out = String::new();
        let of_kind = |table: Table| -> Vec<(&'static str, &[&'static str])> {
            workloads
                .iter()
                .filter(|(w, _)| w.table == table)
                .map(|(w, labels)| (w.name, labels.as_slice()))
                .collect()
        };
        let allocators = of_kind(Table::Allocators);
        if !allocators.is_empty() {
            out.push_str(&self.table(&allocators, Table::Allocators, SPEED_AND_MEMORY));
            let with_live: Vec<(&'static str, &[&'static str])> = allocators
                .iter()
                .copied()
                .filter(|(w, labels)| {
                    labels.iter().any(|l| {
                        self.series(w, l, &RESIDENT_PER_LIVE[0])
                            .iter()
                            .any(Option::is_some)
                    })
                })
                .collect();
            if !with_live.is_empty() {
                out.push('\n');
                out.push_str(&self.table(&with_live, Table::Allocators, RESIDENT_PER_LIVE));
            }
        }
        for (table, parts) in [
            (Table::Lru, &[LRU][..]),
            (Table::Handles, &[HANDLES_SPEED, HANDLES_MEMORY][..]),
        ] {
            let rows = of_kind(table);
            if rows.is_empty() {
                continue;
            }
            for columns in parts {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&self.table(&rows, table, columns));
            }
        }
        out
    }

    fn table(
        &self,
        workloads: &[(&'static str, &[&'static str])],
        kind: Table,
        columns: &[Column],
    ) -> String {
        let baseline = kind.baseline();
        let first = if kind == Table::Allocators {
            "allocator"
        } else {
            "variant"
        };
        let mut header = vec!["workload".to_owned(), first.to_owned()];
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
        for (workload, labels) in workloads {
            for label in *labels {
                let ok = self
                    .runs
                    .get(&(*workload, *label))
                    .map_or(0, |slots| slots.iter().filter(|s| s.is_some()).count());
                let mut cells = vec![workload.to_string(), row_label(label, ok, self.reps)];
                for column in columns {
                    let values = self.series(workload, label, column);
                    let base = self.series(workload, baseline, column);
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

fn row_label(label: &str, ok: usize, reps: usize) -> String {
    if ok == reps {
        label.to_owned()
    } else {
        format!("{label} ({ok}/{reps} ok)")
    }
}

fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn row(out: &mut String, cells: &[String]) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}
