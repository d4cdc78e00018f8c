//! Night over night: two reports of the same soak side by side — throughput,
//! IOPS, latency percentiles, findings per class and the disruptions'
//! stalls — and whether tonight crossed one of the thresholds (throughput
//! drop, p99 latency rise, new findings, longer stalls).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use serde::Serialize;

use super::{Disruption, Report, classes_in_order, longest_stall, text_table};
use crate::metrics::DirectionSummary;
use crate::units::{format_count, format_latency_us, format_rate};

pub const COMPARE_SCHEMA: &str = "blockstamp.compare/1";

/// How much worse tonight may be than last night.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// Largest tolerated drop of write or read throughput (0.10: 10%).
    pub max_throughput_drop: f64,
    /// Largest tolerated rise of write or read p99 latency (0.25: 25%).
    pub max_latency_rise: f64,
    /// Most findings tonight that last night did not have (in the final
    /// verify; and, separately, after the disruptions).
    pub max_new_findings: u64,
    /// Largest tolerated rise of a disruption's stall, in seconds: of each
    /// disruption over the one of the same number last night, and of the
    /// longest stall. Absolute, not relative: a failover's stall is judged
    /// against what the storage's users can stand, and a 0.2 s stall that
    /// doubles is no news.
    pub max_stall_rise_s: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_throughput_drop: 0.10,
            max_latency_rise: 0.25,
            max_new_findings: 0,
            max_stall_rise_s: 2.0,
        }
    }
}

/// The comparison, as `report compare --json` writes it.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub schema: &'static str,
    pub last: Side,
    pub tonight: Side,
    pub thresholds: ThresholdsSection,
    /// Throughput, IOPS and latency, write then read.
    pub figures: Vec<FigureRow>,
    pub findings: FindingsComparison,
    /// The disruptions (`--disrupt`) of both nights; absent when neither
    /// night had any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disruptions: Option<DisruptionsComparison>,
    /// What could not be compared, and why.
    pub notes: Vec<String>,
    /// One line per threshold crossed.
    pub regressions: Vec<String>,
    pub regressed: bool,
}

/// One of the two reports.
#[derive(Clone, Debug, Serialize)]
pub struct Side {
    pub path: String,
    pub host: String,
    pub run_id: String,
    pub target: String,
    pub block_size: u32,
    pub clean: bool,
    pub findings: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ThresholdsSection {
    pub max_throughput_drop_pct: f64,
    pub max_latency_rise_pct: f64,
    pub max_new_findings: u64,
    pub max_stall_rise_s: f64,
}

/// One figure on both nights.
#[derive(Clone, Debug, Serialize)]
pub struct FigureRow {
    /// `write_bytes_per_s`, `read_p99_us`, …
    pub name: &'static str,
    pub last: Option<f64>,
    pub tonight: Option<f64>,
    /// Tonight against last night, in percent (`null` when either is missing or last is 0).
    pub change_pct: Option<f64>,
    /// The threshold on this figure, in percent: negative for the largest
    /// drop allowed, positive for the largest rise; `null` when none.
    pub limit_pct: Option<f64>,
    pub crossed: bool,
    #[serde(skip)]
    kind: FigureKind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum FigureKind {
    Throughput,
    Iops,
    Latency { thresholded: bool },
}

#[derive(Clone, Debug, Serialize)]
pub struct FindingsComparison {
    pub by_class: BTreeMap<String, ClassCounts>,
    pub last_total: u64,
    pub tonight_total: u64,
    /// Findings tonight that last night did not have (see `new_counted_by`).
    pub new: u64,
    /// `blocks`: same run on both nights, findings compared block by block;
    /// `class_counts`: same run but a findings list was truncated, so the
    /// rise of each class's count; `all`: different runs, so every finding
    /// tonight is new.
    pub new_counted_by: &'static str,
    pub crossed: bool,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct ClassCounts {
    pub last: u64,
    pub tonight: u64,
}

/// The disruptions of both nights: each against the one of the same
/// number, and the longest stall of each night.
#[derive(Clone, Debug, Serialize)]
pub struct DisruptionsComparison {
    pub last_count: usize,
    pub tonight_count: usize,
    /// One row per disruption number on either night.
    pub by_index: Vec<DisruptionRow>,
    /// The longest stall of each night, wherever it was.
    pub longest_stall: StallRow,
    /// Findings of the verifies after the disruptions, all added up.
    pub last_findings: u64,
    pub tonight_findings: u64,
    /// Findings after disruptions tonight that last night did not have:
    /// every one for another run, the rise of the total for the same run.
    pub new_findings: u64,
    /// `new_findings` is over `max_new_findings`.
    pub new_findings_crossed: bool,
    /// A stall rose more than the limit, or `new_findings_crossed`.
    pub crossed: bool,
}

/// Disruption `index` on both nights (`null` on a night that had fewer).
#[derive(Clone, Debug, Serialize)]
pub struct DisruptionRow {
    pub index: u64,
    pub last: Option<DisruptionFigures>,
    pub tonight: Option<DisruptionFigures>,
    pub stall: StallRow,
}

/// What a disruption cost, as compared.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct DisruptionFigures {
    pub stall_s: f64,
    pub recovered_after_s: Option<f64>,
    pub reconnects: u64,
    pub failed_ios: u64,
    pub findings: u64,
}

/// A stall on both nights and its rise.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct StallRow {
    pub last_s: Option<f64>,
    pub tonight_s: Option<f64>,
    /// Tonight less last night, in seconds (`null` when either is missing).
    pub rise_s: Option<f64>,
    pub crossed: bool,
}

impl StallRow {
    fn new(last_s: Option<f64>, tonight_s: Option<f64>, limit_s: f64) -> StallRow {
        let rise_s = last_s.zip(tonight_s).map(|(l, t)| t - l);
        StallRow {
            last_s,
            tonight_s,
            rise_s,
            crossed: rise_s.is_some_and(|rise| rise > limit_s),
        }
    }
}

/// Compare tonight's report with last night's.
pub fn compare(
    last: (&str, &Report),
    tonight: (&str, &Report),
    thresholds: Thresholds,
) -> Comparison {
    let (last_path, last) = last;
    let (tonight_path, tonight) = tonight;
    let mut notes = Vec::new();
    if last.target.uri != tonight.target.uri || last.target.size_bytes != tonight.target.size_bytes
    {
        notes.push(format!(
            "the reports are of different targets ({} {} B, {} {} B): figures may not be comparable",
            last.target.uri, last.target.size_bytes, tonight.target.uri, tonight.target.size_bytes
        ));
    }
    if last.block_size != tonight.block_size {
        notes.push(format!(
            "the block sizes differ ({} and {} bytes): IOPS and latency are not comparable",
            last.block_size, tonight.block_size
        ));
    }

    let mut figures = Vec::new();
    let both_write = last.write_metrics().is_some() && tonight.write_metrics().is_some();
    if !both_write {
        notes.push(format!(
            "write figures not compared: {}",
            lacking(
                "write metrics",
                (last_path, last),
                (tonight_path, tonight),
                |r| { r.write_metrics().is_some() }
            )
        ));
    }
    direction_rows(
        &mut figures,
        "write",
        last.write_metrics(),
        tonight.write_metrics(),
        None,
    );
    // Read throughput: the metrics' on both nights, else the verify's
    // throughput on both, so like is compared with like.
    let both_read = last.read_metrics().is_some() && tonight.read_metrics().is_some();
    let verify_throughput =
        (!both_read).then_some((last.throughput_bytes_per_s, tonight.throughput_bytes_per_s));
    if !both_read {
        notes.push(format!(
            "read IOPS and latency not compared: {}; read throughput is the verify's throughput_bytes_per_s",
            lacking("read metrics", (last_path, last), (tonight_path, tonight), |r| {
                r.read_metrics().is_some()
            })
        ));
    }
    direction_rows(
        &mut figures,
        "read",
        last.read_metrics(),
        tonight.read_metrics(),
        verify_throughput,
    );

    let mut regressions = Vec::new();
    for row in &mut figures {
        let drop_limit = -thresholds.max_throughput_drop * 100.0;
        let rise_limit = thresholds.max_latency_rise * 100.0;
        row.limit_pct = match row.kind {
            FigureKind::Throughput => Some(drop_limit),
            FigureKind::Latency { thresholded: true } => Some(rise_limit),
            _ => None,
        };
        let (Some(change), Some(limit)) = (row.change_pct, row.limit_pct) else {
            continue;
        };
        row.crossed = match row.kind {
            FigureKind::Throughput => change < limit,
            _ => change > limit,
        };
        if row.crossed {
            regressions.push(format!(
                "{} {} {:.1}% (limit {:.0}%)",
                label(row.name),
                if change < 0.0 { "dropped" } else { "rose" },
                change.abs(),
                limit.abs()
            ));
        }
    }

    let findings = compare_findings(last, tonight, thresholds.max_new_findings);
    if findings.crossed {
        regressions.push(format!(
            "{} new finding(s) (limit {})",
            findings.new, thresholds.max_new_findings
        ));
    }
    let disruptions = compare_disruptions(
        (last_path, last),
        (tonight_path, tonight),
        thresholds,
        &mut regressions,
        &mut notes,
    );
    let side = |path: &str, report: &Report| Side {
        path: path.to_string(),
        host: report.host_name().to_string(),
        run_id: report.run_id.clone(),
        target: report.target.uri.clone(),
        block_size: report.block_size,
        clean: report.clean,
        findings: report.total_findings(),
    };
    Comparison {
        schema: COMPARE_SCHEMA,
        last: side(last_path, last),
        tonight: side(tonight_path, tonight),
        thresholds: ThresholdsSection {
            max_throughput_drop_pct: thresholds.max_throughput_drop * 100.0,
            max_latency_rise_pct: thresholds.max_latency_rise * 100.0,
            max_new_findings: thresholds.max_new_findings,
            max_stall_rise_s: thresholds.max_stall_rise_s,
        },
        figures,
        regressed: !regressions.is_empty(),
        findings,
        disruptions,
        notes,
        regressions,
    }
}

/// "last.json has no write metrics", "neither report has write metrics".
fn lacking(
    what: &str,
    last: (&str, &Report),
    tonight: (&str, &Report),
    has: impl Fn(&Report) -> bool,
) -> String {
    match (has(last.1), has(tonight.1)) {
        (false, false) => format!("neither report has {what}"),
        (false, true) => format!("{} has no {what}", last.0),
        _ => format!("{} has no {what}", tonight.0),
    }
}

fn direction_rows(
    rows: &mut Vec<FigureRow>,
    direction: &str,
    last: Option<&DirectionSummary>,
    tonight: Option<&DirectionSummary>,
    throughput_instead: Option<(f64, f64)>,
) {
    let write = direction == "write";
    let pick = |name_write, name_read| if write { name_write } else { name_read };
    type Get = fn(&DirectionSummary) -> f64;
    let figures: [(&'static str, FigureKind, Get); 6] = [
        (
            pick("write_bytes_per_s", "read_bytes_per_s"),
            FigureKind::Throughput,
            |d| d.bytes_per_s,
        ),
        (pick("write_iops", "read_iops"), FigureKind::Iops, |d| {
            d.iops
        }),
        (
            pick("write_p50_us", "read_p50_us"),
            FigureKind::Latency { thresholded: false },
            |d| d.latency_us.p50,
        ),
        (
            pick("write_p99_us", "read_p99_us"),
            FigureKind::Latency { thresholded: true },
            |d| d.latency_us.p99,
        ),
        (
            pick("write_p99_9_us", "read_p99_9_us"),
            FigureKind::Latency { thresholded: false },
            |d| d.latency_us.p99_9,
        ),
        (
            pick("write_max_us", "read_max_us"),
            FigureKind::Latency { thresholded: false },
            |d| d.latency_us.max,
        ),
    ];
    for (name, kind, get) in figures {
        let (last_value, tonight_value) = match (kind, throughput_instead) {
            (FigureKind::Throughput, Some((l, t))) => (Some(l), Some(t)),
            _ => (last.map(get), tonight.map(get)),
        };
        let change_pct = match (last_value, tonight_value) {
            (Some(l), Some(t)) if l > 0.0 => Some((t - l) / l * 100.0),
            _ => None,
        };
        rows.push(FigureRow {
            name,
            last: last_value,
            tonight: tonight_value,
            change_pct,
            limit_pct: None,
            crossed: false,
            kind,
        });
    }
}

fn compare_findings(last: &Report, tonight: &Report, max_new: u64) -> FindingsComparison {
    let mut by_class: BTreeMap<String, ClassCounts> = BTreeMap::new();
    for (class, n) in &last.findings_by_class {
        by_class
            .entry(class.clone())
            .or_insert(ClassCounts {
                last: 0,
                tonight: 0,
            })
            .last = *n;
    }
    for (class, n) in &tonight.findings_by_class {
        by_class
            .entry(class.clone())
            .or_insert(ClassCounts {
                last: 0,
                tonight: 0,
            })
            .tonight = *n;
    }
    let same_run = last.run_id == tonight.run_id && last.target.uri == tonight.target.uri;
    let (new, new_counted_by) = if !same_run {
        (tonight.total_findings(), "all")
    } else if !last.findings_truncated && !tonight.findings_truncated {
        let before: HashSet<(u64, &str)> = last
            .findings
            .iter()
            .map(|f| (f.block, f.class.as_str()))
            .collect();
        let new = tonight
            .findings
            .iter()
            .filter(|f| !before.contains(&(f.block, f.class.as_str())))
            .count() as u64;
        (new, "blocks")
    } else {
        let rise = by_class
            .values()
            .map(|c| c.tonight.saturating_sub(c.last))
            .sum();
        (rise, "class_counts")
    };
    FindingsComparison {
        last_total: last.total_findings(),
        tonight_total: tonight.total_findings(),
        by_class,
        new,
        new_counted_by,
        crossed: new > max_new,
    }
}

/// Disruption i tonight against disruption i last night, and the longest
/// stalls; a regression line per stall risen beyond the limit and for new
/// findings after disruptions, a note per rise of reconnects or failed IOs.
fn compare_disruptions(
    last: (&str, &Report),
    tonight: (&str, &Report),
    thresholds: Thresholds,
    regressions: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Option<DisruptionsComparison> {
    let (last_path, last) = last;
    let (tonight_path, tonight) = tonight;
    let (before, now) = (&last.disruptions, &tonight.disruptions);
    if before.is_empty() && now.is_empty() {
        return None;
    }
    let limit = thresholds.max_stall_rise_s;
    match (before.is_empty(), now.is_empty()) {
        (true, _) => notes.push(format!(
            "stalls not compared: {last_path} has no disruptions, {tonight_path} has {}",
            now.len()
        )),
        (_, true) => notes.push(format!(
            "stalls not compared: {tonight_path} has no disruptions, {last_path} has {}",
            before.len()
        )),
        _ if before.len() != now.len() => notes.push(format!(
            "the nights had {} and {} disruptions: those of one night only count in the longest stall",
            before.len(),
            now.len()
        )),
        _ => {}
    }
    let figures = |d: &Disruption| DisruptionFigures {
        stall_s: d.stall_s,
        recovered_after_s: d.recovered_after_s,
        reconnects: d.reconnects,
        failed_ios: d.failed_ios,
        findings: d.total_findings(),
    };
    let mut by_index = Vec::new();
    for i in 0..before.len().max(now.len()) {
        let (l, t) = (before.get(i), now.get(i));
        let index = t.or(l).map_or(i as u64 + 1, |d| d.index);
        let stall = StallRow::new(l.map(|d| d.stall_s), t.map(|d| d.stall_s), limit);
        if let (Some(l), Some(t), Some(rise)) = (l, t, stall.rise_s) {
            if stall.crossed {
                regressions.push(format!(
                    "disruption {index} stalled {rise:.2} s longer ({:.2} s, last night {:.2} s; limit {})",
                    t.stall_s,
                    l.stall_s,
                    seconds(limit)
                ));
            }
            for (what, was, is) in [
                ("reconnects", l.reconnects, t.reconnects),
                ("failed IOs", l.failed_ios, t.failed_ios),
            ] {
                if is > was {
                    notes.push(format!(
                        "disruption {index} had more {what}: {is}, last night {was}"
                    ));
                }
            }
        }
        by_index.push(DisruptionRow {
            index,
            last: l.map(figures),
            tonight: t.map(figures),
            stall,
        });
    }
    let longest = |list: &[Disruption]| longest_stall(list).map(|d| d.stall_s);
    let longest_row = StallRow::new(longest(before), longest(now), limit);
    if let (true, Some(rise)) = (longest_row.crossed, longest_row.rise_s) {
        regressions.push(format!(
            "the longest stall rose {rise:.2} s ({:.2} s, last night {:.2} s; limit {})",
            longest_row.tonight_s.unwrap_or_default(),
            longest_row.last_s.unwrap_or_default(),
            seconds(limit)
        ));
    }
    let (last_findings, tonight_findings) = (
        last.findings_after_disruptions(),
        tonight.findings_after_disruptions(),
    );
    let same_run = last.run_id == tonight.run_id && last.target.uri == tonight.target.uri;
    let new_findings = if same_run {
        tonight_findings.saturating_sub(last_findings)
    } else {
        tonight_findings
    };
    let findings_crossed = new_findings > thresholds.max_new_findings;
    if findings_crossed {
        regressions.push(format!(
            "{new_findings} new finding(s) after disruptions (limit {})",
            thresholds.max_new_findings
        ));
    }
    Some(DisruptionsComparison {
        last_count: before.len(),
        tonight_count: now.len(),
        crossed: findings_crossed
            || longest_row.crossed
            || by_index.iter().any(|row| row.stall.crossed),
        by_index,
        longest_stall: longest_row,
        last_findings,
        tonight_findings,
        new_findings,
        new_findings_crossed: findings_crossed,
    })
}

/// `2 s`, `0.5 s`: a limit in seconds, without needless decimals.
fn seconds(value: f64) -> String {
    let text = format!("{value:.2}");
    format!("{} s", text.trim_end_matches('0').trim_end_matches('.'))
}

fn label(name: &str) -> String {
    let (direction, figure) = name.split_once('_').unwrap_or(("", name));
    let figure = match figure {
        "bytes_per_s" => "throughput",
        "iops" => "IOPS",
        "p50_us" => "latency p50",
        "p99_us" => "latency p99",
        "p99_9_us" => "latency p99.9",
        "max_us" => "latency max",
        other => other,
    };
    format!("{direction} {figure}")
}

fn format_figure(kind: FigureKind, value: Option<f64>) -> String {
    match (kind, value) {
        (_, None) => "-".to_string(),
        (FigureKind::Throughput, Some(v)) => format_rate(v),
        (FigureKind::Iops, Some(v)) => format_count(v),
        (FigureKind::Latency { .. }, Some(v)) => format_latency_us(v),
    }
}

fn describe_side(side: &Side) -> String {
    format!(
        "{}: host {}, run {}, target {}, {}",
        side.path,
        side.host,
        side.run_id,
        side.target,
        if side.clean {
            "clean".to_string()
        } else {
            format!("{} finding(s)", side.findings)
        }
    )
}

impl Comparison {
    /// The table for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "last     {}", describe_side(&self.last));
        let _ = writeln!(out, "tonight  {}", describe_side(&self.tonight));
        out.push('\n');
        let rows: Vec<Vec<String>> = self
            .figures
            .iter()
            .map(|row| {
                vec![
                    label(row.name),
                    format_figure(row.kind, row.last),
                    format_figure(row.kind, row.tonight),
                    row.change_pct
                        .map_or("-".to_string(), |c| format!("{c:+.1}%")),
                    row.limit_pct.map_or(String::new(), |l| format!("{l:+.0}%")),
                    if row.crossed {
                        "CROSSED".to_string()
                    } else if row.limit_pct.is_some() && row.change_pct.is_some() {
                        "ok".to_string()
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        out.push_str(&text_table(
            &["figure", "last", "tonight", "change", "limit", ""],
            &rows,
            &[false, true, true, true, true, false],
        ));
        out.push('\n');
        let classes = classes_in_order(self.findings.by_class.keys());
        let mut rows: Vec<Vec<String>> = classes
            .iter()
            .map(|class| {
                let counts = self.findings.by_class[class];
                vec![
                    class.clone(),
                    counts.last.to_string(),
                    counts.tonight.to_string(),
                    format!("{:+}", counts.tonight as i64 - counts.last as i64),
                ]
            })
            .collect();
        rows.push(vec![
            "total".to_string(),
            self.findings.last_total.to_string(),
            self.findings.tonight_total.to_string(),
            format!(
                "{:+}",
                self.findings.tonight_total as i64 - self.findings.last_total as i64
            ),
        ]);
        out.push_str(&text_table(
            &["findings", "last", "tonight", "change"],
            &rows,
            &[false, true, true, true],
        ));
        let _ = writeln!(
            out,
            "new findings: {} (limit {}; {}){}",
            self.findings.new,
            self.thresholds.max_new_findings,
            match self.findings.new_counted_by {
                "all" => "another run: every finding tonight counts as new",
                "blocks" => "same run: findings at blocks that had none of that class last night",
                _ => "same run, findings lists truncated: the rise of each class's count",
            },
            if self.findings.crossed {
                "  CROSSED"
            } else {
                ""
            }
        );
        if let Some(disruptions) = &self.disruptions {
            out.push('\n');
            out.push_str(&disruptions.to_text(self.thresholds.max_stall_rise_s));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "note: {note}");
            }
        }
        out.push('\n');
        if self.regressed {
            let _ = writeln!(out, "REGRESSION: {}", self.regressions.join("; "));
        } else {
            let _ = writeln!(
                out,
                "OK: no threshold crossed (throughput drop up to {:.0}%, p99 latency rise up to {:.0}%, new findings up to {}{})",
                self.thresholds.max_throughput_drop_pct,
                self.thresholds.max_latency_rise_pct,
                self.thresholds.max_new_findings,
                if self.disruptions.is_some() {
                    format!(
                        ", stall rise up to {}",
                        seconds(self.thresholds.max_stall_rise_s)
                    )
                } else {
                    String::new()
                }
            );
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("comparison serialises") + "\n"
    }
}

impl DisruptionsComparison {
    /// The stalls table and the findings after disruptions, for people.
    fn to_text(&self, limit_s: f64) -> String {
        let stall = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s:.2} s"));
        let pair = |f: fn(&DisruptionFigures) -> u64, row: &DisruptionRow| match (
            row.last.as_ref(),
            row.tonight.as_ref(),
        ) {
            (Some(l), Some(t)) => format!("{} → {}", f(l), f(t)),
            (Some(l), None) => format!("{} → -", f(l)),
            (None, Some(t)) => format!("- → {}", f(t)),
            (None, None) => "-".to_string(),
        };
        let verdict = |row: &StallRow| {
            if row.crossed {
                "CROSSED"
            } else if row.rise_s.is_some() {
                "ok"
            } else {
                ""
            }
        };
        let stall_cells = |row: &StallRow| {
            vec![
                stall(row.last_s),
                stall(row.tonight_s),
                row.rise_s.map_or("-".to_string(), |r| format!("{r:+.2} s")),
                format!("+{}", seconds(limit_s)),
                verdict(row).to_string(),
            ]
        };
        let mut rows: Vec<Vec<String>> = self
            .by_index
            .iter()
            .map(|row| {
                let mut cells = vec![format!("disruption {}", row.index)];
                cells.extend(stall_cells(&row.stall));
                cells.push(pair(|f| f.reconnects, row));
                cells.push(pair(|f| f.failed_ios, row));
                cells.push(pair(|f| f.findings, row));
                cells
            })
            .collect();
        let mut longest = vec!["longest stall".to_string()];
        longest.extend(stall_cells(&self.longest_stall));
        rows.push(longest);
        let mut out = text_table(
            &[
                "stall",
                "last",
                "tonight",
                "change",
                "limit",
                "",
                "reconnects",
                "failed IOs",
                "findings after",
            ],
            &rows,
            &[false, true, true, true, true, false, true, true, true],
        );
        let _ = writeln!(
            out,
            "findings after disruptions: {} last night, {} tonight; new {}{}",
            self.last_findings,
            self.tonight_findings,
            self.new_findings,
            if self.new_findings_crossed {
                "  CROSSED"
            } else {
                ""
            }
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::parse;
    use crate::report::tests::{sample, sample_disruption, sample_json};

    fn night(edit: impl FnOnce(&mut serde_json::Value)) -> Report {
        let mut json = sample_json();
        edit(&mut json);
        parse(&json.to_string()).unwrap()
    }

    fn clean_night(edit: impl FnOnce(&mut serde_json::Value)) -> Report {
        night(|json| {
            json["findings"] = serde_json::json!([]);
            json["findings_by_class"] = serde_json::json!({});
            json["clean"] = serde_json::json!(true);
            json["blocks"]["ok"] = json["blocks"]["checked"].clone();
            edit(json);
        })
    }

    fn row<'a>(comparison: &'a Comparison, name: &str) -> &'a FigureRow {
        comparison
            .figures
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no row {name}"))
    }

    #[test]
    fn the_same_figures_cross_nothing() {
        let last = clean_night(|_| {});
        let comparison = compare(("a", &last), ("b", &last), Thresholds::default());
        assert!(!comparison.regressed, "{:?}", comparison.regressions);
        assert_eq!(row(&comparison, "write_bytes_per_s").change_pct, Some(0.0));
        assert!(comparison.to_text().contains("OK: no threshold crossed"));
    }

    #[test]
    fn a_throughput_drop_beyond_the_limit_is_a_regression() {
        let last = clean_night(|_| {});
        let tonight = clean_night(|j| {
            j["metrics"]["write"]["bytes_per_s"] = serde_json::json!(409600000.0 * 0.85);
        });
        let comparison = compare(("a", &last), ("b", &tonight), Thresholds::default());
        let write = row(&comparison, "write_bytes_per_s");
        assert!(write.crossed);
        assert_eq!(write.limit_pct, Some(-10.0));
        assert!((write.change_pct.unwrap() + 15.0).abs() < 1e-9);
        assert!(comparison.regressed);
        assert_eq!(
            comparison.regressions,
            vec!["write throughput dropped 15.0% (limit 10%)"]
        );
        // A 20% limit lets it through.
        let lenient = Thresholds {
            max_throughput_drop: 0.20,
            ..Thresholds::default()
        };
        assert!(!compare(("a", &last), ("b", &tonight), lenient).regressed);
    }

    #[test]
    fn a_p99_rise_beyond_the_limit_is_a_regression_other_percentiles_are_shown() {
        let last = clean_night(|_| {});
        let tonight = clean_night(|j| {
            j["metrics"]["read"]["latency_us"]["p99"] = serde_json::json!(9000.0 * 1.3);
            j["metrics"]["read"]["latency_us"]["max"] = serde_json::json!(12000.0 * 5.0);
        });
        let comparison = compare(("a", &last), ("b", &tonight), Thresholds::default());
        assert!(row(&comparison, "read_p99_us").crossed);
        assert!(!row(&comparison, "read_max_us").crossed);
        assert_eq!(row(&comparison, "read_max_us").change_pct, Some(400.0));
        assert_eq!(
            comparison.regressions,
            vec!["read latency p99 rose 30.0% (limit 25%)"]
        );
        // Faster is never a regression.
        let faster = clean_night(|j| {
            j["metrics"]["read"]["latency_us"]["p99"] = serde_json::json!(10.0);
            j["metrics"]["write"]["bytes_per_s"] = serde_json::json!(9e9);
        });
        assert!(!compare(("a", &last), ("b", &faster), Thresholds::default()).regressed);
    }

    #[test]
    fn findings_of_another_run_are_all_new() {
        let last = clean_night(|_| {});
        let tonight = night(|j| j["run_id"] = serde_json::json!("0000000000000001"));
        let comparison = compare(("a", &last), ("b", &tonight), Thresholds::default());
        assert_eq!(comparison.findings.new, 4);
        assert_eq!(comparison.findings.new_counted_by, "all");
        assert!(comparison.findings.crossed);
        assert_eq!(comparison.findings.by_class["torn"].tonight, 1);
        assert_eq!(comparison.findings.by_class["torn"].last, 0);
        assert!(
            comparison
                .regressions
                .contains(&"4 new finding(s) (limit 0)".to_string())
        );
        let allowed = Thresholds {
            max_new_findings: 4,
            ..Thresholds::default()
        };
        assert!(!compare(("a", &last), ("b", &tonight), allowed).regressed);
    }

    #[test]
    fn findings_of_the_same_run_are_new_only_at_new_blocks() {
        let last = night(|_| {});
        let tonight = night(|j| {
            j["findings"][0]["block"] = serde_json::json!(18);
        });
        let comparison = compare(("a", &last), ("b", &tonight), Thresholds::default());
        assert_eq!(comparison.findings.new_counted_by, "blocks");
        assert_eq!(
            comparison.findings.new, 1,
            "block 18 is new, the rest known"
        );
        let same = compare(("a", &last), ("b", &last), Thresholds::default());
        assert_eq!(same.findings.new, 0);
        assert!(!same.regressed);
    }

    #[test]
    fn reports_without_metrics_compare_the_verify_throughput_and_say_so() {
        let last = clean_night(|j| {
            j.as_object_mut().unwrap().remove("metrics");
        });
        let tonight = clean_night(|j| {
            j["throughput_bytes_per_s"] = serde_json::json!(565000000.0 * 0.5);
        });
        let comparison = compare(("last.json", &last), ("b", &tonight), Thresholds::default());
        let read = row(&comparison, "read_bytes_per_s");
        assert_eq!(read.last, Some(565000000.0));
        assert!(read.crossed);
        let write = row(&comparison, "write_bytes_per_s");
        assert_eq!(write.change_pct, None);
        assert!(!write.crossed);
        assert!(
            comparison
                .notes
                .iter()
                .any(|n| n == "write figures not compared: last.json has no write metrics"),
            "{:?}",
            comparison.notes
        );
        let text = comparison.to_text();
        assert!(
            text.contains("REGRESSION: read throughput dropped 50.0% (limit 10%)"),
            "{text}"
        );
    }

    #[test]
    fn the_json_names_every_figure() {
        let last = clean_night(|_| {});
        let json: serde_json::Value = serde_json::from_str(
            &compare(("a", &last), ("b", &last), Thresholds::default()).to_json(),
        )
        .unwrap();
        assert_eq!(json["schema"], COMPARE_SCHEMA);
        let names: Vec<&str> = json["figures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 12);
        assert!(names.contains(&"write_p99_9_us") && names.contains(&"read_iops"));
        assert_eq!(json["thresholds"]["max_latency_rise_pct"], 25.0);
        assert_eq!(json["regressed"], false);
    }

    /// A clean night with disruptions of these stalls, 5 s apart.
    fn disrupted_night(stalls: &[f64]) -> Report {
        clean_night(|j| {
            let list: Vec<serde_json::Value> = stalls
                .iter()
                .enumerate()
                .map(|(i, &stall)| sample_disruption(i as u64 + 1, 2.0 + 5.0 * i as f64, stall))
                .collect();
            j["disruptions"] = serde_json::json!(list);
        })
    }

    #[test]
    fn a_stall_longer_than_last_nights_by_more_than_the_limit_is_a_regression() {
        let last = disrupted_night(&[1.0, 1.25]);
        let tonight = disrupted_night(&[1.5, 4.0]);
        let comparison = compare(("a", &last), ("b", &tonight), Thresholds::default());
        let disruptions = comparison.disruptions.as_ref().expect("compared");
        let crossed: Vec<bool> = disruptions
            .by_index
            .iter()
            .map(|row| row.stall.crossed)
            .collect();
        assert_eq!(crossed, [false, true]);
        assert_eq!(disruptions.by_index[1].stall.rise_s, Some(2.75));
        assert!(disruptions.longest_stall.crossed);
        assert!(comparison.regressed);
        assert_eq!(
            comparison.regressions,
            [
                "disruption 2 stalled 2.75 s longer (4.00 s, last night 1.25 s; limit 2 s)",
                "the longest stall rose 2.75 s (4.00 s, last night 1.25 s; limit 2 s)"
            ]
        );
        let text = comparison.to_text();
        assert!(text.contains("disruption 2"), "{text}");
        assert!(text.contains("+2.75 s"), "{text}");
        // A 3 s limit lets it through.
        let lenient = Thresholds {
            max_stall_rise_s: 3.0,
            ..Thresholds::default()
        };
        assert!(!compare(("a", &last), ("b", &tonight), lenient).regressed);
    }

    #[test]
    fn a_small_rise_of_the_stalls_is_no_regression() {
        let last = disrupted_night(&[1.0, 1.25]);
        let tonight = disrupted_night(&[2.5, 3.0]);
        let comparison = compare(("a", &last), ("b", &tonight), Thresholds::default());
        assert!(!comparison.regressed, "{:?}", comparison.regressions);
        let disruptions = comparison.disruptions.as_ref().unwrap();
        assert_eq!(disruptions.longest_stall.rise_s, Some(1.75));
        assert!(!disruptions.crossed);
        assert!(
            comparison.to_text().contains("stall rise up to 2 s"),
            "{}",
            comparison.to_text()
        );
        // Shorter stalls never are.
        let faster = disrupted_night(&[0.5, 0.5]);
        assert!(!compare(("a", &tonight), ("b", &faster), Thresholds::default()).regressed);
    }

    #[test]
    fn more_reconnects_and_failed_ios_are_notes_not_regressions() {
        let last = disrupted_night(&[1.0]);
        let mut tonight = disrupted_night(&[1.0]);
        tonight.disruptions[0].reconnects = 4;
        tonight.disruptions[0].failed_ios = 40;
        let comparison = compare(("a", &last), ("b", &tonight), Thresholds::default());
        assert!(!comparison.regressed);
        assert_eq!(
            comparison.notes,
            [
                "disruption 1 had more reconnects: 4, last night 1",
                "disruption 1 had more failed IOs: 40, last night 3"
            ]
        );
        assert!(comparison.to_text().contains("1 → 4"));
    }

    #[test]
    fn a_night_with_more_disruptions_is_judged_by_its_longest_stall() {
        let last = disrupted_night(&[1.0]);
        let tonight = disrupted_night(&[1.0, 3.5]);
        let comparison = compare(("a", &last), ("b", &tonight), Thresholds::default());
        let disruptions = comparison.disruptions.as_ref().unwrap();
        assert_eq!(disruptions.by_index.len(), 2);
        assert!(disruptions.by_index[1].last.is_none());
        assert!(
            !disruptions.by_index[1].stall.crossed,
            "nothing to compare with"
        );
        assert_eq!(
            comparison.regressions,
            ["the longest stall rose 2.50 s (3.50 s, last night 1.00 s; limit 2 s)"]
        );
        assert!(
            comparison
                .notes
                .iter()
                .any(|n| n.contains("had 1 and 2 disruptions")),
            "{:?}",
            comparison.notes
        );
        // A night without disruptions is not compared, and says so.
        let calm = clean_night(|_| {});
        let comparison = compare(("last.json", &calm), ("b", &tonight), Thresholds::default());
        assert!(!comparison.regressed);
        assert!(
            comparison.notes.contains(
                &"stalls not compared: last.json has no disruptions, b has 2".to_string()
            )
        );
        // Neither night: no section at all.
        let json: serde_json::Value = serde_json::from_str(
            &compare(("a", &calm), ("b", &calm), Thresholds::default()).to_json(),
        )
        .unwrap();
        assert!(json.get("disruptions").is_none());
    }

    #[test]
    fn findings_after_a_disruption_are_new_findings() {
        let last = disrupted_night(&[1.0]);
        let mut tonight = disrupted_night(&[1.0]);
        tonight.run_id = "0000000000000002".to_string();
        let lost = sample().findings[0].clone();
        tonight.disruptions[0].findings = vec![lost];
        tonight.disruptions[0]
            .findings_by_class
            .insert("lost_write".to_string(), 1);
        let comparison = compare(("a", &last), ("b", &tonight), Thresholds::default());
        assert_eq!(
            comparison.regressions,
            ["1 new finding(s) after disruptions (limit 0)"]
        );
        let json: serde_json::Value = serde_json::from_str(&comparison.to_json()).unwrap();
        assert_eq!(json["disruptions"]["new_findings"], 1);
        assert_eq!(json["disruptions"]["by_index"][0]["tonight"]["findings"], 1);
        assert_eq!(json["thresholds"]["max_stall_rise_s"], 2.0);
    }
}
