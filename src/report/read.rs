//! Reading reports back from files (`load`, `parse`: a report checked
//! before any view uses it), and what the review views share: classes in
//! the contract's order, plain-text tables, output to a file or stdout.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

use super::{Report, SCHEMA};
use crate::error::{Error, Result};
use crate::verify::FindingClass;

/// Read and check one report file. Every error is a usage error (exit 2):
/// one line naming the file and what is wrong with it.
pub fn load(path: &Path) -> Result<Report> {
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

/// Read one report file, or a run over many targets
/// (`blockstamp.multi/1`): each report with the name it is shown under
/// (the file's path; `PATH#NAME` for a target of a multi-target report).
/// Targets of a multi-target report that failed before their verify
/// ended have no report and are left out.
pub fn load_all(path: &Path) -> Result<Vec<(String, Report)>> {
    let shown = path.display().to_string();
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(vec![(shown, load(path)?)]);
    };
    #[derive(Deserialize)]
    struct Multi {
        schema: String,
        targets: Vec<Section>,
    }
    #[derive(Deserialize)]
    struct Section {
        name: String,
        report: Option<serde_json::Value>,
    }
    let multi = match serde_json::from_str::<Multi>(&text) {
        Ok(multi) if multi.schema == super::MULTI_SCHEMA => multi,
        _ => return Ok(vec![(shown, load(path)?)]),
    };
    multi
        .targets
        .into_iter()
        .filter_map(|section| section.report.map(|report| (section.name, report)))
        .map(|(name, report)| {
            parse(&report.to_string())
                .map(|report| (format!("{shown}#{name}"), report))
                .map_err(|message| Error::usage(format!("{shown}: target {name}: {message}")))
        })
        .collect()
}

/// Parse a report's text; the error says what is wrong, for a person.
pub fn parse(text: &str) -> std::result::Result<Report, String> {
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
    let report: Report =
        serde_json::from_str(text).map_err(|e| format!("damaged {SCHEMA} report: {e}"))?;
    if report.blocks.ok > report.blocks.checked || report.blocks.checked > report.blocks.total {
        return Err(format!(
            "damaged {SCHEMA} report: blocks ok {} / checked {} / total {} do not add up",
            report.blocks.ok, report.blocks.checked, report.blocks.total
        ));
    }
    Ok(report)
}

/// Classes in the contract's order, then any this version does not know.
pub fn classes_in_order<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let present: BTreeSet<&String> = names.into_iter().collect();
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
                 "detail": "holds generation 1 of this block, expected 2: the newer write did not persist",
                 "found_write_seq": 17, "found_write_time_s": 1700000000u64, "incident": 4},
                {"block": 40, "offset": 163840, "class": "torn",
                 "expected_generation": 2, "found_generation": 2, "found_block": null, "persistent": true,
                 "detail": "torn: sectors 0-3 generation 2, sectors 4-7 generation 1 (expected generation 2)",
                 "torn_split": [{"first_sector": 0, "last_sector": 3, "generation": 2},
                                {"first_sector": 4, "last_sector": 7, "generation": 1}],
                 "found_write_seq": 262184, "found_write_time_s": 1700000011u64, "incident": 1},
                {"block": 99, "offset": 405504, "class": "corrupt",
                 "expected_generation": 2, "found_generation": 2, "found_block": null, "persistent": true,
                 "detail": "1 bit(s) in 1 byte(s) differ from generation 2 of this block",
                 "corruption": {"differing_bits": 1, "differing_bytes": 1, "byte_ranges": [[1000, 1001]],
                    "diff_rows": [{"offset": 992,
                        "expected": "00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff",
                        "found":    "00 11 22 33 44 55 66 77 89 99 aa bb cc dd ee ff"}]},
                 "found_write_seq": 262243, "found_write_time_s": 1700000011u64, "incident": 2},
                {"block": 200000, "offset": 819200000u64, "class": "misdirected",
                 "expected_generation": 1, "found_generation": 1, "found_block": 200001, "persistent": false,
                 "detail": "holds block 200001's stamp <generation 1>",
                 "found_write_seq": 400123, "found_write_time_s": 1700000018u64, "incident": 3}
            ],
            "incidents": [
                sample_incident(1, "torn", 40, Some((262184, 1700000011)), None),
                sample_incident(2, "corrupt", 99, Some((262243, 1700000011)), None),
                sample_incident(3, "misdirected", 200000, Some((400123, 1700000018)), None),
                sample_incident(4, "lost_write", 17, None, Some((17, 1700000000))),
            ],
            "incident_grouping": {"place_gap_bytes": 1048576, "default_write_gap": 32,
                                  "region_bytes": [1048576, 16777216, 67108864],
                                  "next_write_seq": 524289, "survivors_sampled_every": 1,
                                  "findings_grouped": 4},
            "findings_truncated": false,
            "clean": false,
            "elapsed_s": 1.9,
            "throughput_bytes_per_s": 565000000.0,
            "bytes_read": 1073741824u64,
            "direct_io": true,
            "engine": "sync",
            "notes": [],
            "on_finding": [
                {"command": "collect-array-logs --since 10m",
                 "trigger": {"class": "lost_write", "block": 17, "offset": 69632,
                             "detail": "holds generation 1 of this block, expected 2: the newer write did not persist",
                             "source": "rolling_verify"},
                 "started_at_s": 12.5, "exit_status": 0, "timed_out": false, "duration_s": 41.25,
                 "output_tail": ["collected 3 log bundle(s)", "uploaded to ticket 4711"]}
            ],
            "stopped_on_finding": {"class": "lost_write", "block": 17, "offset": 69632,
                                   "detail": "holds generation 1 of this block, expected 2: the newer write did not persist",
                                   "source": "rolling_verify"},
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

    /// One incident of one block, as the sample report has them.
    fn sample_incident(
        id: u32,
        class: &str,
        block: u64,
        damaged: Option<(u64, u64)>,
        found: Option<(u64, u64)>,
    ) -> serde_json::Value {
        let span = |(seq, time): (u64, u64)| {
            serde_json::json!({"writes": 1, "first_write_seq": seq, "last_write_seq": seq,
                               "first_time_s": time, "last_time_s": time})
        };
        let extent = |size: u64| {
            let index = block * 4096 / size;
            serde_json::json!({"region_bytes": size, "count": 1, "extents": [[index, index]]})
        };
        serde_json::json!({
            "id": id,
            "classes": {class: 1},
            "blocks": 1,
            "persistent": if class == "misdirected" { 0 } else { 1 },
            "first_block": block,
            "last_block": block,
            "block_ranges": [[block, block]],
            "block_ranges_truncated": false,
            "regions": [extent(1 << 20), extent(16 << 20), extent(64 << 20)],
            "damaged_writes": damaged.map(span),
            "found_writes": found.map(span),
            "writes_in_span": damaged.map(|_| 1),
            "surviving_writes": damaged.map(|_| 0),
            "bursts": [{"first_write_seq": 1, "workload": "burst", "burst": 4,
                        "scatter": "random", "queue_depth": 32, "io_blocks": [1, 1],
                        "overwrite": 0.0}],
            "linked_by": []
        })
    }

    pub fn sample() -> Report {
        parse(&sample_json().to_string()).expect("sample parses")
    }

    /// Disruption `index` of a run as `--disrupt` records it: the command
    /// at `started_at_s`, the target answering after `stall_s`, one
    /// reconnect and 3 failed IOs, a clean verify after it.
    pub fn sample_disruption(index: u64, started_at_s: f64, stall_s: f64) -> serde_json::Value {
        serde_json::json!({
            "index": index,
            "command": "systemctl restart iscsi-target",
            "recover_command": "multipath -r",
            "started_at_s": started_at_s,
            "command_s": stall_s - 0.25,
            "recover_s": 0.125,
            "answered_at_s": started_at_s + stall_s,
            "stall_s": stall_s,
            "baseline_write_bytes_per_s": 400e6,
            "recovered_after_s": stall_s + 1.5,
            "failed_ios": 3,
            "reconnects": 1,
            "verify_checked_blocks": 262144,
            "verify_s": 0.5,
            "findings_by_class": {},
            "findings": []
        })
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
        let runs = report.on_finding.as_ref().expect("on_finding read");
        assert_eq!(runs[0].exit_status, Some(0));
        assert_eq!(runs[0].trigger.source, "rolling_verify");
        assert_eq!(runs[0].output_tail.len(), 2);
        assert_eq!(report.stopped_on_finding.as_ref().unwrap().block, 17);
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
