//! Reviewing runs after the fact: JSON reports (`blockstamp.report/1`) read
//! back from files, and the views built on them — one run as an HTML page
//! (`html`), two nights side by side (`compare`), a fleet of hosts in one
//! view (`fleet`).
//!
//! The model here is the reading side of `report::Report`: every field the
//! contract fixes, tolerant of fields added later (unknown fields are
//! ignored) and of fields that older reports lack (`host`, `metrics`).
//! Finding classes stay strings, so a report that names a class this
//! version does not know is still shown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::metrics::{DirectionSummary, MetricsSummary};
use crate::report::SCHEMA;
use crate::verify::{Corruption, FindingClass, SectorSpan};

/// A JSON report read back.
#[derive(Clone, Debug, Deserialize)]
pub struct ReportFile {
    pub schema: String,
    #[serde(default)]
    pub tool_version: String,
    pub run_id: String,
    #[serde(default)]
    pub host: String,
    pub target: TargetFile,
    pub block_size: u32,
    #[serde(default)]
    pub checkpoint: Option<String>,
    pub blocks: BlocksFile,
    #[serde(default)]
    pub findings_by_class: BTreeMap<String, u64>,
    #[serde(default)]
    pub findings: Vec<FindingFile>,
    #[serde(default)]
    pub findings_truncated: bool,
    pub clean: bool,
    #[serde(default)]
    pub elapsed_s: f64,
    #[serde(default)]
    pub throughput_bytes_per_s: f64,
    #[serde(default)]
    pub bytes_read: u64,
    #[serde(default)]
    pub direct_io: bool,
    #[serde(default)]
    pub engine: String,
    #[serde(default)]
    pub notes: Vec<String>,
    #[serde(default)]
    pub metrics: Option<MetricsSummary>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct TargetFile {
    pub uri: String,
    #[serde(default)]
    pub kind: String,
    pub size_bytes: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct BlocksFile {
    pub total: u64,
    pub expected_written: u64,
    pub checked: u64,
    pub ok: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct FindingFile {
    pub block: u64,
    pub offset: u64,
    pub class: String,
    pub expected_generation: u32,
    pub found_generation: Option<u32>,
    pub found_block: Option<u64>,
    pub persistent: bool,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub torn_split: Option<Vec<SectorSpan>>,
    #[serde(default)]
    pub corruption: Option<Corruption>,
    #[serde(default)]
    pub unreadable_sectors: Vec<u32>,
}

/// Read and check one report file. Every error is a usage error (exit 2):
/// one line naming the file and what is wrong with it.
pub fn load(path: &Path) -> Result<ReportFile> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::usage(format!("cannot read report {}: {e}", path.display())))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        Error::usage(format!(
            "{}: not a JSON report (binary data, not text); give a file written by verify --json",
            path.display()
        ))
    })?;
    parse(text).map_err(|message| Error::usage(format!("{}: {message}", path.display())))
}

/// Parse a report's text; the error says what is wrong, for a person.
pub fn parse(text: &str) -> std::result::Result<ReportFile, String> {
    // The schema first, so a JSON file of another kind is named as such
    // rather than as a report missing some field.
    #[derive(Deserialize)]
    struct Schema {
        schema: Option<serde_json::Value>,
    }
    let schema: Schema = serde_json::from_str(text)
        .map_err(|e| format!("not a JSON report ({e}); give a file written by verify --json"))?;
    match schema.schema {
        Some(serde_json::Value::String(s)) if s == SCHEMA => {}
        Some(other) => {
            return Err(format!(
                "not a {SCHEMA} report (its schema is {other}); give a file written by verify --json"
            ));
        }
        None => {
            return Err(format!(
                "not a {SCHEMA} report (no \"schema\" field); give a file written by verify --json"
            ));
        }
    }
    let report: ReportFile =
        serde_json::from_str(text).map_err(|e| format!("damaged {SCHEMA} report: {e}"))?;
    if report.blocks.ok > report.blocks.checked || report.blocks.checked > report.blocks.total {
        return Err(format!(
            "damaged {SCHEMA} report: blocks ok {} / checked {} / total {} do not add up",
            report.blocks.ok, report.blocks.checked, report.blocks.total
        ));
    }
    Ok(report)
}

impl ReportFile {
    /// Every finding, counted by class (also those not kept in detail).
    pub fn total_findings(&self) -> u64 {
        let counted: u64 = self.findings_by_class.values().sum();
        counted.max(self.findings.len() as u64)
    }

    pub fn write_metrics(&self) -> Option<&DirectionSummary> {
        self.metrics.as_ref().and_then(|m| m.write.as_ref())
    }

    pub fn read_metrics(&self) -> Option<&DirectionSummary> {
        self.metrics.as_ref().and_then(|m| m.read.as_ref())
    }

    /// Read throughput: the metrics' (time with reads in flight) when
    /// recorded, else the verify's `throughput_bytes_per_s` (whole verify).
    pub fn read_bytes_per_s(&self) -> f64 {
        self.read_metrics()
            .map_or(self.throughput_bytes_per_s, |r| r.bytes_per_s)
    }

    /// "host" as the report names it, or a stand-in for older reports.
    pub fn host_name(&self) -> &str {
        if self.host.is_empty() {
            "(unknown host)"
        } else {
            &self.host
        }
    }
}

/// Classes in the contract's order, then any this version does not know.
pub fn classes_in_order<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let present: std::collections::BTreeSet<&String> = names.into_iter().collect();
    let mut ordered: Vec<String> = FindingClass::ALL
        .iter()
        .map(|c| c.name().to_string())
        .filter(|n| present.contains(n))
        .collect();
    for name in present {
        if !ordered.contains(name) {
            ordered.push(name.clone());
        }
    }
    ordered
}

/// Columns of a plain-text table: left-aligned text, right-aligned numbers.
pub fn text_table(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let columns = header.len();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if right.get(i).copied().unwrap_or(false) {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// Write `text` to `path`, or stdout for `-`. A failure is the command's
/// failure (exit 3), naming the file.
pub fn write_output(path: &str, what: &str, text: &str) -> Result<()> {
    use std::io::Write as _;
    if path == "-" {
        let mut stdout = std::io::stdout().lock();
        return stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|e| Error::run(format!("cannot write {what} to stdout: {e}")));
    }
    std::fs::write(path, text).map_err(|e| Error::run(format!("cannot write {what} {path}: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A report as `verify --json` writes it, with one finding of each
    /// kind of detail and a metrics timeline.
    pub fn sample_json() -> serde_json::Value {
        let timeline: Vec<serde_json::Value> = (0..30)
            .map(|t| {
                let wave = ((t as f64) / 4.0).sin();
                serde_json::json!({
                    "t_s": t, "span_s": 1.0,
                    "write_bytes": if t < 20 { (400e6 + 80e6 * wave) as u64 } else { 0 },
                    "write_iops": if t < 20 { 100_000.0 + 20_000.0 * wave } else { 0.0 },
                    "write_p50_us": if t < 20 { serde_json::json!(200.0) } else { serde_json::Value::Null },
                    "write_p99_us": if t < 20 { serde_json::json!(900.0 + 300.0 * wave) } else { serde_json::Value::Null },
                    "write_max_us": if t < 20 { serde_json::json!(4000.0) } else { serde_json::Value::Null },
                    "read_bytes": if t >= 20 { 1_500_000_000u64 } else { 0 },
                    "read_iops": if t >= 20 { 1430.0 } else { 0.0 },
                    "read_p50_us": if t >= 20 { serde_json::json!(5000.0) } else { serde_json::Value::Null },
                    "read_p99_us": if t >= 20 { serde_json::json!(9000.0) } else { serde_json::Value::Null },
                    "read_max_us": if t >= 20 { serde_json::json!(12000.0) } else { serde_json::Value::Null },
                })
            })
            .collect();
        serde_json::json!({
            "schema": "blockstamp.report/1",
            "tool_version": "0.1.0",
            "run_id": "93ed9d825dd8e5a6",
            "host": "storage-lab-3",
            "target": {"uri": "disk.img", "kind": "file", "size_bytes": 1073741824u64},
            "block_size": 4096,
            "checkpoint": null,
            "blocks": {"total": 262144, "expected_written": 262144, "checked": 262144, "ok": 262140},
            "findings_by_class": {"corrupt": 1, "lost_write": 1, "misdirected": 1, "torn": 1},
            "findings": [
                {"block": 17, "offset": 69632, "class": "lost_write",
                 "expected_generation": 2, "found_generation": 1,
                 "found_block": null, "persistent": true,
                 "detail": "holds generation 1 of this block, expected 2: the newer write did not persist"},
                {"block": 40, "offset": 163840, "class": "torn",
                 "expected_generation": 2, "found_generation": 2, "found_block": null, "persistent": true,
                 "detail": "torn: sectors 0-3 generation 2, sectors 4-7 generation 1 (expected generation 2)",
                 "torn_split": [{"first_sector": 0, "last_sector": 3, "generation": 2},
                                {"first_sector": 4, "last_sector": 7, "generation": 1}]},
                {"block": 99, "offset": 405504, "class": "corrupt",
                 "expected_generation": 2, "found_generation": 2, "found_block": null, "persistent": true,
                 "detail": "1 bit(s) in 1 byte(s) differ from generation 2 of this block",
                 "corruption": {"differing_bits": 1, "differing_bytes": 1, "byte_ranges": [[1000, 1001]],
                    "diff_rows": [{"offset": 992,
                        "expected": "00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff",
                        "found":    "00 11 22 33 44 55 66 77 89 99 aa bb cc dd ee ff"}]}},
                {"block": 200000, "offset": 819200000u64, "class": "misdirected",
                 "expected_generation": 1, "found_generation": 1, "found_block": 200001, "persistent": false,
                 "detail": "holds block 200001's stamp <generation 1>"}
            ],
            "findings_truncated": false,
            "clean": false,
            "elapsed_s": 1.9,
            "throughput_bytes_per_s": 565000000.0,
            "bytes_read": 1073741824u64,
            "direct_io": true,
            "engine": "sync",
            "notes": [],
            "metrics": {
                "write": {"ios": 2000000, "bytes": 8192000000u64, "active_s": 20.0, "iops": 100000.0,
                          "bytes_per_s": 409600000.0,
                          "latency_us": {"p50": 200.0, "p99": 1100.0, "p99_9": 2500.0, "max": 4000.0}},
                "read": {"ios": 1024, "bytes": 1073741824u64, "active_s": 0.7, "iops": 1462.0,
                         "bytes_per_s": 1533916891.0,
                         "latency_us": {"p50": 5000.0, "p99": 9000.0, "p99_9": 11000.0, "max": 12000.0}},
                "timeline": timeline
            }
        })
    }

    pub fn sample() -> ReportFile {
        parse(&sample_json().to_string()).expect("sample parses")
    }

    #[test]
    fn a_report_of_the_contract_is_read_back() {
        let report = sample();
        assert_eq!(report.host, "storage-lab-3");
        assert_eq!(report.findings.len(), 4);
        assert_eq!(report.total_findings(), 4);
        let corrupt = &report.findings[2];
        assert_eq!(
            corrupt.corruption.as_ref().unwrap().diff_rows[0].offset,
            992
        );
        assert_eq!(report.metrics.as_ref().unwrap().timeline.len(), 30);
        assert_eq!(report.read_bytes_per_s(), 1533916891.0);
    }

    #[test]
    fn older_reports_without_host_or_metrics_are_read() {
        let mut json = sample_json();
        let object = json.as_object_mut().unwrap();
        object.remove("host");
        object.remove("metrics");
        object.insert("a_field_added_later".into(), serde_json::json!({"x": 1}));
        let report = parse(&json.to_string()).unwrap();
        assert_eq!(report.host_name(), "(unknown host)");
        assert!(report.metrics.is_none());
        assert_eq!(report.read_bytes_per_s(), 565000000.0);
    }

    #[test]
    fn bad_report_files_are_named_in_one_line() {
        let cases = [
            ("", "not a JSON report"),
            (
                "{\"schema\": \"blockstamp.fleet/1\"}",
                "its schema is \"blockstamp.fleet/1\"",
            ),
            ("[1, 2]", "not a JSON report"),
            ("{\"run_id\": \"x\"}", "no \"schema\" field"),
            (
                "{\"schema\": \"blockstamp.report/1\", \"run_id\": \"x\"}",
                "damaged blockstamp.report/1 report: missing field",
            ),
        ];
        for (text, says) in cases {
            let message = parse(text).unwrap_err();
            assert!(message.contains(says), "{text:?}: {message}");
            assert_eq!(message.lines().count(), 1, "{message}");
        }
        let mut json = sample_json();
        json["blocks"]["ok"] = serde_json::json!(999_999_999);
        assert!(
            parse(&json.to_string())
                .unwrap_err()
                .contains("do not add up")
        );
    }

    #[test]
    fn unknown_classes_follow_the_contracts() {
        let names: Vec<String> = ["zzz_new", "torn", "lost_write"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            classes_in_order(&names),
            vec!["lost_write", "torn", "zzz_new"]
        );
    }

    #[test]
    fn text_tables_align_columns() {
        let table = text_table(
            &["host", "MB/s"],
            &[
                vec!["a".into(), "1.0".into()],
                vec!["long-host".into(), "100.0".into()],
            ],
            &[false, true],
        );
        assert_eq!(
            table,
            "host        MB/s\na            1.0\nlong-host  100.0\n"
        );
    }
}
