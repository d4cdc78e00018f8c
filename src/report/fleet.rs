//! A fleet view over many reports (one per host and target, typically
//! fetched back by the soak playbook): hosts, targets, findings per host and
//! class, the worst latencies and lowest throughputs, the disruptions and
//! the longest stall of each target, one verdict.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::{Report, classes_in_order, longest_stall, text_table};
use crate::metrics::DirectionSummary;
use crate::units::{format_latency_us, format_rate};

pub const FLEET_SCHEMA: &str = "blockstamp.fleet/1";

/// The merged view, as `report merge --json` writes it.
#[derive(Clone, Debug, Serialize)]
pub struct Fleet {
    pub schema: &'static str,
    /// No report has a finding.
    pub clean: bool,
    pub report_count: usize,
    pub host_count: usize,
    pub reports_with_findings: usize,
    /// Every report's findings, added up per class.
    pub findings_by_class: BTreeMap<String, u64>,
    pub hosts: Vec<HostRow>,
    pub worst: Worst,
    pub reports: Vec<FleetReport>,
}

/// One report in the fleet.
#[derive(Clone, Debug, Serialize)]
pub struct FleetReport {
    /// The file it was read from.
    pub path: String,
    pub host: String,
    pub run_id: String,
    pub target: String,
    pub target_kind: String,
    pub size_bytes: u64,
    pub block_size: u32,
    pub clean: bool,
    pub findings: u64,
    pub findings_by_class: BTreeMap<String, u64>,
    pub write: Option<DirectionSummary>,
    pub read: Option<DirectionSummary>,
    /// The metrics' read throughput, or the verify's where the report has
    /// no metrics.
    pub read_bytes_per_s: f64,
    /// Scheduled disruptions of the run (`--disrupt`).
    pub disruptions: usize,
    /// The longest of their stalls; `null` without disruptions.
    pub longest_stall_s: Option<f64>,
    /// Findings of the verifies after the disruptions.
    pub disruption_findings: u64,
}

/// One host: every report that names it.
#[derive(Clone, Debug, Serialize)]
pub struct HostRow {
    pub host: String,
    pub reports: usize,
    pub targets: Vec<String>,
    pub clean: bool,
    pub findings: u64,
    pub findings_by_class: BTreeMap<String, u64>,
}

/// Where the fleet is slowest.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Worst {
    pub write_p99_us: Option<Extreme>,
    pub write_max_us: Option<Extreme>,
    pub read_p99_us: Option<Extreme>,
    pub read_max_us: Option<Extreme>,
    pub lowest_write_bytes_per_s: Option<Extreme>,
    pub lowest_read_bytes_per_s: Option<Extreme>,
    pub longest_stall_s: Option<Extreme>,
}

/// What a figure measures: latency in µs or a stall in seconds (worse
/// when higher), or throughput (worse when lower).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    Latency,
    Throughput,
    Stall,
}

impl Measure {
    pub fn format(self, value: f64) -> String {
        match self {
            Measure::Latency => format_latency_us(value),
            Measure::Throughput => format_rate(value),
            Measure::Stall => format!("{value:.2} s"),
        }
    }

    fn worse(self, a: f64, b: f64) -> bool {
        match self {
            Measure::Latency | Measure::Stall => a > b,
            Measure::Throughput => a < b,
        }
    }
}

/// One figure of a report in the fleet's tables, and where the fleet's
/// worst value of it is kept.
pub struct Column {
    /// `write`, `read p99`, …
    pub header: &'static str,
    pub measure: Measure,
    pub value: fn(&FleetReport) -> Option<f64>,
    pub worst: fn(&Worst) -> &Option<Extreme>,
    worst_mut: fn(&mut Worst) -> &mut Option<Extreme>,
}

impl Column {
    /// `lowest write throughput`, `worst read p99`.
    pub fn extreme_label(&self) -> String {
        match self.measure {
            Measure::Throughput => format!("lowest {} throughput", self.header),
            Measure::Latency => format!("worst {}", self.header),
            Measure::Stall => self.header.to_string(),
        }
    }
}

/// The figures of every report, in table order.
pub static COLUMNS: [Column; 7] = [
    Column {
        header: "write",
        measure: Measure::Throughput,
        value: |r| r.write.as_ref().map(|w| w.bytes_per_s),
        worst: |w| &w.lowest_write_bytes_per_s,
        worst_mut: |w| &mut w.lowest_write_bytes_per_s,
    },
    Column {
        header: "read",
        measure: Measure::Throughput,
        value: |r| Some(r.read_bytes_per_s),
        worst: |w| &w.lowest_read_bytes_per_s,
        worst_mut: |w| &mut w.lowest_read_bytes_per_s,
    },
    Column {
        header: "write p99",
        measure: Measure::Latency,
        value: |r| r.write.as_ref().map(|w| w.latency_us.p99),
        worst: |w| &w.write_p99_us,
        worst_mut: |w| &mut w.write_p99_us,
    },
    Column {
        header: "write max",
        measure: Measure::Latency,
        value: |r| r.write.as_ref().map(|w| w.latency_us.max),
        worst: |w| &w.write_max_us,
        worst_mut: |w| &mut w.write_max_us,
    },
    Column {
        header: "read p99",
        measure: Measure::Latency,
        value: |r| r.read.as_ref().map(|w| w.latency_us.p99),
        worst: |w| &w.read_p99_us,
        worst_mut: |w| &mut w.read_p99_us,
    },
    Column {
        header: "read max",
        measure: Measure::Latency,
        value: |r| r.read.as_ref().map(|w| w.latency_us.max),
        worst: |w| &w.read_max_us,
        worst_mut: |w| &mut w.read_max_us,
    },
    Column {
        header: "longest stall",
        measure: Measure::Stall,
        value: |r| r.longest_stall_s,
        worst: |w| &w.longest_stall_s,
        worst_mut: |w| &mut w.longest_stall_s,
    },
];

/// The column named `header`; a name not in [`COLUMNS`] is a bug.
pub fn column(header: &str) -> &'static Column {
    COLUMNS
        .iter()
        .find(|c| c.header == header)
        .unwrap_or_else(|| panic!("no fleet column {header:?}"))
}

/// A value and the report it comes from.
#[derive(Clone, Debug, Serialize)]
pub struct Extreme {
    pub value: f64,
    pub host: String,
    pub target: String,
    pub path: String,
}

/// Merge `reports` (path, report) into one view.
pub fn merge(reports: &[(String, Report)]) -> Fleet {
    let rows: Vec<FleetReport> = reports
        .iter()
        .map(|(path, r)| FleetReport {
            path: path.clone(),
            host: r.host_name().to_string(),
            run_id: r.run_id.clone(),
            target: r.target.uri.clone(),
            target_kind: r.target.kind.clone(),
            size_bytes: r.target.size_bytes,
            block_size: r.block_size,
            clean: r.clean,
            findings: r.total_findings(),
            findings_by_class: r.findings_by_class.clone(),
            write: r.write_metrics().cloned(),
            read: r.read_metrics().cloned(),
            read_bytes_per_s: r.read_bytes_per_s(),
            disruptions: r.disruptions.len(),
            longest_stall_s: longest_stall(&r.disruptions).map(|d| d.stall_s),
            disruption_findings: r.findings_after_disruptions(),
        })
        .collect();

    let mut hosts: BTreeMap<String, HostRow> = BTreeMap::new();
    let mut findings_by_class: BTreeMap<String, u64> = BTreeMap::new();
    for row in &rows {
        let host = hosts.entry(row.host.clone()).or_insert_with(|| HostRow {
            host: row.host.clone(),
            reports: 0,
            targets: Vec::new(),
            clean: true,
            findings: 0,
            findings_by_class: BTreeMap::new(),
        });
        host.reports += 1;
        if !host.targets.contains(&row.target) {
            host.targets.push(row.target.clone());
        }
        host.clean &= row.clean;
        host.findings += row.findings;
        for (class, n) in &row.findings_by_class {
            *host.findings_by_class.entry(class.clone()).or_default() += n;
            *findings_by_class.entry(class.clone()).or_default() += n;
        }
    }

    let mut worst = Worst::default();
    for column in &COLUMNS {
        // The first report wins a tie.
        *(column.worst_mut)(&mut worst) = rows
            .iter()
            .filter_map(|r| (column.value)(r).map(|v| (v, r)))
            .reduce(|a, b| if column.measure.worse(b.0, a.0) { b } else { a })
            .map(|(value, r)| Extreme {
                value,
                host: r.host.clone(),
                target: r.target.clone(),
                path: r.path.clone(),
            });
    }
    let reports_with_findings = rows.iter().filter(|r| !r.clean).count();
    Fleet {
        schema: FLEET_SCHEMA,
        clean: reports_with_findings == 0,
        report_count: rows.len(),
        host_count: hosts.len(),
        reports_with_findings,
        findings_by_class,
        hosts: hosts.into_values().collect(),
        worst,
        reports: rows,
    }
}

impl FleetReport {
    /// `3`, or `3 (2 findings after)`; `-` without disruptions.
    pub fn disruptions_text(&self) -> String {
        match (self.disruptions, self.disruption_findings) {
            (0, _) => "-".to_string(),
            (n, 0) => n.to_string(),
            (n, found) => format!("{n} ({found} findings after)"),
        }
    }
}

impl Fleet {
    /// One line: the fleet's verdict.
    pub fn verdict(&self) -> String {
        if self.clean {
            format!(
                "CLEAN: {} report(s) from {} host(s), no findings",
                self.report_count, self.host_count
            )
        } else {
            let hosts: Vec<&str> = self
                .hosts
                .iter()
                .filter(|h| !h.clean)
                .map(|h| h.host.as_str())
                .collect();
            let total: u64 = self.findings_by_class.values().sum();
            let after: u64 = self.reports.iter().map(|r| r.disruption_findings).sum();
            format!(
                "FINDINGS: {total} finding(s){} in {} of {} report(s), on {}",
                if after > 0 {
                    format!(" and {after} after disruptions")
                } else {
                    String::new()
                },
                self.reports_with_findings,
                self.report_count,
                hosts.join(", ")
            )
        }
    }

    /// The tables for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "fleet: {} report(s) from {} host(s)\n",
            self.report_count, self.host_count
        );
        let rows: Vec<Vec<String>> = self
            .reports
            .iter()
            .map(|r| {
                let mut row = vec![
                    r.host.clone(),
                    r.target.clone(),
                    r.run_id.clone(),
                    if r.clean { "clean" } else { "FINDINGS" }.to_string(),
                    r.findings.to_string(),
                ];
                row.extend(
                    COLUMNS
                        .iter()
                        .map(|c| (c.value)(r).map_or("-".to_string(), |v| c.measure.format(v))),
                );
                row.push(r.disruptions_text());
                row
            })
            .collect();
        let mut header = vec!["host", "target", "run", "verdict", "findings"];
        header.extend(COLUMNS.iter().map(|c| c.header));
        header.push("disruptions");
        let mut right = vec![false; header.len()];
        right[4..].fill(true);
        out.push_str(&text_table(&header, &rows, &right));
        let classes = classes_in_order(self.findings_by_class.keys());
        if !classes.is_empty() {
            out.push('\n');
            let mut header = vec!["findings by host"];
            header.extend(classes.iter().map(String::as_str));
            header.push("total");
            let rows: Vec<Vec<String>> = self
                .hosts
                .iter()
                .map(|h| {
                    let mut row = vec![h.host.clone()];
                    row.extend(
                        classes
                            .iter()
                            .map(|c| h.findings_by_class.get(c).copied().unwrap_or(0).to_string()),
                    );
                    row.push(h.findings.to_string());
                    row
                })
                .collect();
            let mut right = vec![true; header.len()];
            right[0] = false;
            out.push_str(&text_table(&header, &rows, &right));
        }
        out.push('\n');
        let worst_rows: Vec<Vec<String>> = COLUMNS
            .iter()
            .filter_map(|c| (c.worst)(&self.worst).as_ref().map(|e| (c, e)))
            .map(|(c, e)| {
                vec![
                    c.extreme_label(),
                    c.measure.format(e.value),
                    format!("{} {} ({})", e.host, e.target, e.path),
                ]
            })
            .collect();
        out.push_str(&text_table(
            &["extremes", "value", "where"],
            &worst_rows,
            &[false, true, false],
        ));
        out.push('\n');
        let _ = writeln!(out, "{}", self.verdict());
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("fleet serialises") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::parse;
    use crate::report::tests::sample_json;

    fn report(host: &str, edit: impl FnOnce(&mut serde_json::Value)) -> (String, Report) {
        let mut json = sample_json();
        json["host"] = serde_json::json!(host);
        edit(&mut json);
        (format!("{host}.json"), parse(&json.to_string()).unwrap())
    }

    fn clean(json: &mut serde_json::Value) {
        json["findings"] = serde_json::json!([]);
        json["findings_by_class"] = serde_json::json!({});
        json["clean"] = serde_json::json!(true);
    }

    #[test]
    fn a_clean_fleet_is_clean() {
        let fleet = merge(&[report("a", clean), report("b", clean)]);
        assert!(fleet.clean);
        assert_eq!(fleet.host_count, 2);
        assert_eq!(
            fleet.verdict(),
            "CLEAN: 2 report(s) from 2 host(s), no findings"
        );
    }

    #[test]
    fn findings_are_added_up_per_host_and_class() {
        let fleet = merge(&[
            report("a", clean),
            report("b", |_| {}),
            report("b", |j| {
                j["target"]["uri"] = serde_json::json!("/dev/sdc");
                j["findings_by_class"] = serde_json::json!({"zeroed": 7});
            }),
        ]);
        assert!(!fleet.clean);
        assert_eq!(fleet.report_count, 3);
        assert_eq!(fleet.reports_with_findings, 2);
        let b = fleet.hosts.iter().find(|h| h.host == "b").unwrap();
        assert_eq!(b.reports, 2);
        assert_eq!(b.targets, vec!["disk.img", "/dev/sdc"]);
        assert_eq!(b.findings_by_class["zeroed"], 7);
        assert_eq!(b.findings_by_class["torn"], 1);
        assert_eq!(fleet.findings_by_class["zeroed"], 7);
        assert!(fleet.hosts.iter().find(|h| h.host == "a").unwrap().clean);
        assert_eq!(
            fleet.verdict(),
            "FINDINGS: 11 finding(s) in 2 of 3 report(s), on b"
        );
        let text = fleet.to_text();
        assert!(text.contains("findings by host"), "{text}");
    }

    #[test]
    fn the_worst_latencies_and_lowest_throughputs_are_named() {
        let fleet = merge(&[
            report("fast", clean),
            report("slow", |j| {
                clean(j);
                j["metrics"]["write"]["latency_us"]["p99"] = serde_json::json!(50_000.0);
                j["metrics"]["write"]["bytes_per_s"] = serde_json::json!(1e6);
                j["metrics"]["read"]["latency_us"]["max"] = serde_json::json!(1e6);
            }),
            report("old", |j| {
                clean(j);
                j.as_object_mut().unwrap().remove("metrics");
                j["throughput_bytes_per_s"] = serde_json::json!(5e6);
            }),
        ]);
        let worst = &fleet.worst;
        assert_eq!(worst.write_p99_us.as_ref().unwrap().host, "slow");
        assert_eq!(worst.write_p99_us.as_ref().unwrap().value, 50_000.0);
        assert_eq!(worst.read_max_us.as_ref().unwrap().host, "slow");
        assert_eq!(
            worst.lowest_write_bytes_per_s.as_ref().unwrap().host,
            "slow"
        );
        let lowest_read = worst.lowest_read_bytes_per_s.as_ref().unwrap();
        assert_eq!((lowest_read.host.as_str(), lowest_read.value), ("old", 5e6));
        let json: serde_json::Value = serde_json::from_str(&fleet.to_json()).unwrap();
        assert_eq!(json["schema"], FLEET_SCHEMA);
        assert_eq!(json["worst"]["write_p99_us"]["path"], "slow.json");
        assert!(json["reports"][2]["write"].is_null());
    }

    #[test]
    fn each_target_shows_its_disruptions_and_longest_stall() {
        use crate::report::tests::sample_disruption;
        let fleet = merge(&[
            report("calm", clean),
            report("flappy", |j| {
                clean(j);
                j["disruptions"] = serde_json::json!([
                    sample_disruption(1, 10.0, 1.5),
                    sample_disruption(2, 20.0, 7.25),
                    sample_disruption(3, 30.0, 2.0),
                ]);
            }),
            report("steady", |j| {
                clean(j);
                j["disruptions"] = serde_json::json!([sample_disruption(1, 10.0, 0.5)]);
                j["disruptions"][0]["findings_by_class"] = serde_json::json!({"lost_write": 2});
                j["clean"] = serde_json::json!(false);
            }),
        ]);
        let figures: Vec<(usize, Option<f64>, u64)> = fleet
            .reports
            .iter()
            .map(|r| (r.disruptions, r.longest_stall_s, r.disruption_findings))
            .collect();
        assert_eq!(
            figures,
            [(0, None, 0), (3, Some(7.25), 0), (1, Some(0.5), 2)]
        );
        let longest = fleet
            .worst
            .longest_stall_s
            .as_ref()
            .expect("a longest stall");
        assert_eq!((longest.host.as_str(), longest.value), ("flappy", 7.25));
        let text = fleet.to_text();
        assert!(
            text.lines().any(|l| l.starts_with("longest stall")
                && l.ends_with("7.25 s  flappy disk.img (flappy.json)")),
            "{text}"
        );
        assert!(text.contains("1 (2 findings after)"), "{text}");
        assert_eq!(
            fleet.verdict(),
            "FINDINGS: 0 finding(s) and 2 after disruptions in 1 of 3 report(s), on steady"
        );
        let json: serde_json::Value = serde_json::from_str(&fleet.to_json()).unwrap();
        assert_eq!(json["reports"][1]["disruptions"], 3);
        assert!(json["reports"][0]["longest_stall_s"].is_null());
    }
}
