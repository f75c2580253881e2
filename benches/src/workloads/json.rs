//! `json`: a real program's allocation pattern.
//!
//! Builds a `serde_json::Value` of 90 000 user records (about 25 MB printed), prints it, parses
//! the text back into a `Value`, prints that again and checks the two texts are equal; then builds
//! a `HashMap<String, String>` and a `BTreeMap<String, String>` of 300 000 entries each, looks
//! every key up once and drops them. All of it is timed; the free phase is dropping the last map.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde_json::{json, Value};

use crate::block::note_corrupt;
use crate::report::Report;
use crate::rng::Rng;
use crate::workloads::Ctx;

/// Records in the document in a full run.
const RECORDS: usize = 90_000;
/// Entries in each map in a full run.
const MAP_ENTRIES: usize = 300_000;

fn record(id: usize, rng: &mut Rng) -> Value {
    let tags: Vec<String> = (0..rng.between(0, 6))
        .map(|_| format!("tag-{}", rng.below(500)))
        .collect();
    let history: Vec<Value> = (0..rng.between(0, 4))
        .map(|i| json!({"t": 1_700_000_000 + i * 3600, "v": rng.below(1000)}))
        .collect();
    json!({
        "id": id,
        "name": format!("user-{id}"),
        "email": format!("user{id}@example.com"),
        "active": rng.percent(70),
        "score": rng.below(100_000) as f64 / 8.0,
        "tags": tags,
        "address": {
            "city": format!("city-{}", rng.below(2000)),
            "zip": format!("{:05}", rng.below(100_000)),
            "geo": [rng.below(18_000) as f64 / 100.0 - 90.0, rng.below(36_000) as f64 / 100.0 - 180.0],
        },
        "history": history,
    })
}

/// Document round trip; returns the printed size in bytes.
fn document_round_trip(records: usize) -> usize {
    let mut rng = Rng::new(0x15_0E);
    let document = Value::Array((0..records).map(|id| record(id, &mut rng)).collect());
    let text = document.to_string();
    drop(document);
    match serde_json::from_str::<Value>(&text) {
        Ok(parsed) => {
            // Printed again (not compared as `Value == String`, which would compare against a
            // JSON string value): the round trip must reproduce the text byte for byte.
            let reprinted = parsed.to_string();
            if reprinted != text {
                note_corrupt(format_args!(
                    "JSON document changed in a parse/print round trip"
                ));
            }
        }
        Err(error) => note_corrupt(format_args!("JSON document failed to parse: {error}")),
    }
    text.len()
}

fn entry(i: usize, rng: &mut Rng) -> (String, String) {
    let value_len = rng.log_uniform(4, 256);
    (format!("key-{i:08}"), "v".repeat(value_len))
}

/// Builds, probes and drops both maps; returns how many lookups failed (should be none).
fn maps(entries: usize) -> usize {
    let mut rng = Rng::new(0x3A95);
    let hash: HashMap<String, String> = (0..entries).map(|i| entry(i, &mut rng)).collect();
    let tree: BTreeMap<String, String> = (0..entries).map(|i| entry(i, &mut rng)).collect();
    let missing = (0..entries)
        .map(|i| format!("key-{i:08}"))
        .filter(|key| !hash.contains_key(key) || !tree.contains_key(key))
        .count();
    drop(hash);
    drop(tree);
    missing
}

pub(crate) fn run(ctx: &Ctx, report: &mut Report) {
    let records = ctx.scaled(RECORDS);
    let entries = ctx.scaled(MAP_ENTRIES);

    let start = Instant::now();
    let document_bytes = document_round_trip(records);
    let missing = maps(entries);
    report.set("secs", start.elapsed().as_secs_f64());
    report.set("ops", records + 2 * entries);
    report.set("document_bytes", document_bytes);
    if missing != 0 {
        note_corrupt(format_args!("{missing} map keys not found"));
    }

    ctx.after_free(report);
    ctx.release(report);
}
