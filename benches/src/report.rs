//! The one-line, machine-readable result a workload binary prints and the runner parses:
//! `RESULT key=value key=value ...`, values without spaces.
//!
//! Keys every child prints: `workload`, `allocator`, `secs` (wall time of the timed phases),
//! `ops` (operations in them, 0 if not meaningful), `peak_rss` (bytes, `getrusage`), `rss_free`
//! (bytes resident after the free phase), `rss_release` (bytes resident after the release step),
//! `release` (`purge` or `idle`: what the release step was) and `corrupt` (blocks whose content
//! changed). Memory workloads add `live` (bytes the program holds at `rss_free`) and may add
//! `rss_end` and `live_end` (a later phase, which the release step follows).

use std::collections::BTreeMap;
use std::fmt::Display;

/// The word that starts a result line, so that other output on stdout is ignored.
pub const RESULT_PREFIX: &str = "RESULT";

/// An ordered list of `key=value` fields.
#[derive(Clone, Debug, Default)]
pub struct Report {
    fields: Vec<(String, String)>,
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value` (replacing an earlier value). Spaces in the value become `_`.
    pub fn set(&mut self, key: &str, value: impl Display) -> &mut Self {
        let value = value.to_string().replace(char::is_whitespace, "_");
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some(field) => field.1 = value,
            None => self.fields.push((key.to_owned(), value)),
        }
        self
    }

    /// The result line, without a newline.
    pub fn line(&self) -> String {
        let mut line = String::from(RESULT_PREFIX);
        for (key, value) in &self.fields {
            line.push(' ');
            line.push_str(key);
            line.push('=');
            line.push_str(value);
        }
        line
    }
}

/// A parsed result line.
pub type Record = BTreeMap<String, String>;

/// Finds the result line in a child's stdout and parses its fields.
pub fn parse_output(stdout: &str) -> Option<Record> {
    let line = stdout
        .lines()
        .find(|line| line.split_whitespace().next() == Some(RESULT_PREFIX))?;
    let record = line
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Some(record)
}

/// The numeric value of `key`, if present and a number.
pub fn number(record: &Record, key: &str) -> Option<f64> {
    record.get(key)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::{number, parse_output, Report};

    #[test]
    fn a_report_parses_back() {
        let mut report = Report::new();
        report
            .set("workload", "churn")
            .set("secs", 0.25)
            .set("ops", 10);
        report.set("secs", 0.5).set("note", "two words");
        let stdout = format!("some noise\n{}\n", report.line());
        let record = parse_output(&stdout).expect("a result line");
        assert_eq!(record["workload"], "churn");
        assert_eq!(number(&record, "secs"), Some(0.5));
        assert_eq!(number(&record, "ops"), Some(10.0));
        assert_eq!(record["note"], "two_words");
        assert_eq!(number(&record, "missing"), None);
    }

    #[test]
    fn output_without_a_result_line_is_none() {
        assert!(parse_output("thread panicked\n").is_none());
    }
}
