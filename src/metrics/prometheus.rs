//! The `--prometheus FILE` textfile: the run's counters and gauges in the
//! Prometheus text exposition format (0.0.4), as node_exporter's textfile
//! collector reads it (docs/CONTRACT.md, "Prometheus textfile"). The
//! metrics thread (`emit`) rewrites it every [`TEXTFILE_EVERY_S`] seconds
//! while the run goes on, and once more when it ends; every write replaces
//! the file whole (`outfile`), so the collector never reads half of one.
//!
//! No sample carries a timestamp (the textfile collector refuses them):
//! `blockstamp_last_update_timestamp_seconds` says when the file was
//! written, so a stale file can be alerted on. Every sample carries a
//! `target` label, so the files of runs on several targets of one host can
//! sit side by side in the collector's directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::record::{DirectionTotals, Metrics};

/// Seconds between two writes of the textfile while the run goes on.
pub const TEXTFILE_EVERY_S: u64 = 5;

/// The quantiles of the latency summaries.
const QUANTILES: [&str; 3] = ["0.5", "0.99", "0.999"];

/// What names the run in the textfile's labels.
#[derive(Clone, Debug)]
pub struct RunLabels {
    /// `write`, `run` or `soak`.
    pub command: &'static str,
    /// TARGET as given on the command line.
    pub target: String,
    pub host: String,
}

/// The textfile of one run: where it goes, what names the run, and the
/// little the app tells it besides the recorder's figures.
#[derive(Debug)]
pub struct Textfile {
    path: PathBuf,
    labels: RunLabels,
    /// Every finding class, in the contract's order: each gets a sample,
    /// 0 included, so a query never sees a class appear from nowhere.
    classes: Vec<&'static str>,
    started_unix_s: f64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// None until the run has begun (its manifest is open): nothing is
    /// written for a run refused before it started.
    run_id: Option<u64>,
    soak_interval: Option<u64>,
    /// The first write that failed, for a warning at the end.
    error: Option<String>,
}

/// Everything one rendering of the textfile shows.
#[derive(Clone, Debug)]
pub struct Snapshot<'a> {
    pub labels: &'a RunLabels,
    pub run_id: u64,
    pub running: bool,
    pub started_unix_s: f64,
    pub now_unix_s: f64,
    pub write: DirectionTotals,
    pub read: DirectionTotals,
    /// Every class with its count, in order.
    pub findings: Vec<(&'a str, u64)>,
    pub soak_interval: Option<u64>,
}

impl Textfile {
    pub fn new(path: &Path, labels: RunLabels, classes: &[&'static str]) -> Textfile {
        Textfile {
            path: path.to_path_buf(),
            labels,
            classes: classes.to_vec(),
            started_unix_s: unix_now_s(),
            state: Mutex::new(State::default()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The run has begun: from now on the file is written.
    pub fn set_run_id(&self, run_id: u64) {
        self.lock().run_id = Some(run_id);
    }

    /// The soak interval in progress, from 1.
    pub fn set_soak_interval(&self, interval: u64) {
        self.lock().soak_interval = Some(interval);
    }

    /// Render the figures now and replace the file with them; a failure is
    /// kept for [`Textfile::error`] (the run goes on). Nothing is written
    /// before the run has begun. The lock is held while writing, so the
    /// metrics thread and the end of the run never write at once.
    pub fn publish(&self, metrics: &Metrics, running: bool) {
        let mut state = self.lock();
        let Some(run_id) = state.run_id else {
            return;
        };
        let counted = metrics.findings();
        let mut findings: Vec<(&str, u64)> = self
            .classes
            .iter()
            .map(|&class| (class, counted.get(class).copied().unwrap_or(0)))
            .collect();
        for (&class, &count) in &counted {
            if !self.classes.contains(&class) {
                findings.push((class, count));
            }
        }
        let text = render(&Snapshot {
            labels: &self.labels,
            run_id,
            running,
            started_unix_s: self.started_unix_s,
            now_unix_s: unix_now_s(),
            write: metrics.write_totals(),
            read: metrics.read_totals(),
            findings,
            soak_interval: state.soak_interval,
        });
        if let Err(e) = crate::outfile::replace(&self.path, &text)
            && state.error.is_none()
        {
            state.error = Some(format!(
                "cannot write Prometheus textfile {}: {e}; it may be out of date",
                self.path.display()
            ));
        }
    }

    /// The first failed write, if any.
    pub fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn unix_now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The textfile's text: HELP and TYPE before each family, one sample per
/// line, a line break at the end.
pub fn render(snapshot: &Snapshot<'_>) -> String {
    let mut out = String::new();
    let target = [("target", snapshot.labels.target.as_str())];
    let run_id = format!("{:016x}", snapshot.run_id);

    family(
        &mut out,
        "blockstamp_run_info",
        "gauge",
        "The run this file describes: the manifest's run id, the command, the host and the blockstamp version; always 1.",
    );
    sample(
        &mut out,
        "blockstamp_run_info",
        &[
            ("target", snapshot.labels.target.as_str()),
            ("run_id", &run_id),
            ("command", snapshot.labels.command),
            ("host", &snapshot.labels.host),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        "1",
    );
    gauge(
        &mut out,
        "blockstamp_running",
        "1 while the run goes on, 0 once it has ended (this file is then final).",
        &target,
        if snapshot.running { "1" } else { "0" },
    );
    gauge(
        &mut out,
        "blockstamp_start_time_seconds",
        "When the run started, in Unix seconds.",
        &target,
        &number(snapshot.started_unix_s),
    );
    gauge(
        &mut out,
        "blockstamp_last_update_timestamp_seconds",
        "When this file was written, in Unix seconds.",
        &target,
        &number(snapshot.now_unix_s),
    );
    if let Some(interval) = snapshot.soak_interval {
        gauge(
            &mut out,
            "blockstamp_soak_interval",
            "The soak interval in progress, from 1 (each ends with a full verify).",
            &target,
            &interval.to_string(),
        );
    }

    for (name, help, value) in [
        (
            "blockstamp_writes_total",
            "Writes completed.",
            snapshot.write.ios,
        ),
        (
            "blockstamp_bytes_written_total",
            "Bytes written by completed writes.",
            snapshot.write.bytes,
        ),
        (
            "blockstamp_reads_total",
            "Reads completed (verifies and rolling read-backs).",
            snapshot.read.ios,
        ),
        (
            "blockstamp_bytes_read_total",
            "Bytes read by completed reads.",
            snapshot.read.bytes,
        ),
    ] {
        family(&mut out, name, "counter", help);
        sample(&mut out, name, &target, &value.to_string());
    }

    family(
        &mut out,
        "blockstamp_findings_total",
        "counter",
        "Findings reported by the run's verifies and rolling read-backs, by class (a block found by three interval verifies counts three times).",
    );
    for (class, count) in &snapshot.findings {
        sample(
            &mut out,
            "blockstamp_findings_total",
            &[
                ("target", snapshot.labels.target.as_str()),
                ("class", class),
            ],
            &count.to_string(),
        );
    }

    latency_summary(
        &mut out,
        "blockstamp_write_latency_seconds",
        "Write latency, submission to completion, over the whole run.",
        &snapshot.labels.target,
        &snapshot.write,
    );
    latency_summary(
        &mut out,
        "blockstamp_read_latency_seconds",
        "Read latency, submission to completion, over the whole run.",
        &snapshot.labels.target,
        &snapshot.read,
    );
    out
}

fn gauge(out: &mut String, name: &str, help: &str, labels: &[(&str, &str)], value: &str) {
    family(out, name, "gauge", help);
    sample(out, name, labels, value);
}

/// A summary: the quantiles (NaN before the first IO, as Prometheus'
/// own clients write an empty summary), the sum and the count.
fn latency_summary(
    out: &mut String,
    name: &str,
    help: &str,
    target: &str,
    totals: &DirectionTotals,
) {
    family(out, name, "summary", help);
    let values = [totals.p50_ns, totals.p99_ns, totals.p99_9_ns];
    for (quantile, ns) in QUANTILES.iter().zip(values) {
        let value = if totals.ios == 0 {
            "NaN".to_string()
        } else {
            number(ns as f64 / 1e9)
        };
        sample(
            out,
            name,
            &[("target", target), ("quantile", quantile)],
            &value,
        );
    }
    sample(
        out,
        &format!("{name}_sum"),
        &[("target", target)],
        &number(totals.latency_sum_ns as f64 / 1e9),
    );
    sample(
        out,
        &format!("{name}_count"),
        &[("target", target)],
        &totals.ios.to_string(),
    );
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `name{label="value",…} value`; label values escaped as the format wants
/// (backslash, double quote, line feed).
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: &str) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, text)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let text = text
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(out, "{label}=\"{text}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A float as Go's ParseFloat reads it (Rust never writes an exponent).
fn number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else {
        "NaN".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(target: &str) -> RunLabels {
        RunLabels {
            command: "soak",
            target: target.to_string(),
            host: "lab-3".to_string(),
        }
    }

    fn snapshot(labels: &RunLabels) -> Snapshot<'_> {
        Snapshot {
            labels,
            run_id: 0xbec9_f960_48a7_26de,
            running: true,
            started_unix_s: 1_700_000_000.0,
            now_unix_s: 1_700_000_005.25,
            write: DirectionTotals {
                ios: 1000,
                bytes: 4_096_000,
                latency_sum_ns: 150_000_000,
                p50_ns: 120_000,
                p99_ns: 900_000,
                p99_9_ns: 2_500_000,
            },
            read: DirectionTotals::default(),
            findings: vec![("lost_write", 0), ("torn", 2)],
            soak_interval: Some(3),
        }
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let labels = labels("disk.img");
        let text = render(&snapshot(&labels));
        let expected = [
            "# TYPE blockstamp_run_info gauge",
            "blockstamp_run_info{target=\"disk.img\",run_id=\"bec9f96048a726de\",command=\"soak\",host=\"lab-3\",version=\"",
            "blockstamp_running{target=\"disk.img\"} 1\n",
            "blockstamp_last_update_timestamp_seconds{target=\"disk.img\"} 1700000005.25\n",
            "blockstamp_soak_interval{target=\"disk.img\"} 3\n",
            "# TYPE blockstamp_writes_total counter\nblockstamp_writes_total{target=\"disk.img\"} 1000\n",
            "blockstamp_bytes_written_total{target=\"disk.img\"} 4096000\n",
            "blockstamp_findings_total{target=\"disk.img\",class=\"lost_write\"} 0\n",
            "blockstamp_findings_total{target=\"disk.img\",class=\"torn\"} 2\n",
            "# TYPE blockstamp_write_latency_seconds summary\n",
            "blockstamp_write_latency_seconds{target=\"disk.img\",quantile=\"0.99\"} 0.0009\n",
            "blockstamp_write_latency_seconds_sum{target=\"disk.img\"} 0.15\n",
            "blockstamp_write_latency_seconds_count{target=\"disk.img\"} 1000\n",
            "blockstamp_read_latency_seconds{target=\"disk.img\",quantile=\"0.5\"} NaN\n",
            "blockstamp_read_latency_seconds_count{target=\"disk.img\"} 0\n",
        ];
        for line in expected {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = declared.last().expect("a TYPE line first");
                assert!(name.starts_with(family.as_str()), "{name} under {family}");
            }
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn label_values_are_escaped() {
        let labels = labels("a\\b\"c\nd");
        let text = render(&snapshot(&labels));
        assert!(
            text.contains("blockstamp_running{target=\"a\\\\b\\\"c\\nd\"} 1\n"),
            "{text}"
        );
        assert_eq!(
            text.lines().filter(|l| !l.starts_with('#')).count(),
            text.matches("target=").count()
        );
    }

    #[test]
    fn nothing_is_written_before_the_run_begins_then_all_classes_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blockstamp.prom");
        let textfile = Textfile::new(&path, labels("disk.img"), &["lost_write", "torn"]);
        let metrics = Metrics::new();
        textfile.publish(&metrics, true);
        assert!(!path.exists());
        textfile.set_run_id(7);
        metrics.count_findings("torn", 4);
        metrics.record_write(std::time::Duration::from_micros(100), 4096);
        textfile.publish(&metrics, false);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("class=\"lost_write\"} 0\n"), "{text}");
        assert!(text.contains("class=\"torn\"} 4\n"), "{text}");
        assert!(text.contains("blockstamp_writes_total{target=\"disk.img\"} 1\n"));
        assert!(text.contains("blockstamp_running{target=\"disk.img\"} 0\n"));
        assert!(!text.contains("blockstamp_soak_interval"));
        assert_eq!(textfile.error(), None);
    }

    #[test]
    fn a_failed_write_is_kept_for_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone/blockstamp.prom");
        let textfile = Textfile::new(&path, labels("disk.img"), &[]);
        textfile.set_run_id(1);
        textfile.publish(&Metrics::new(), true);
        let error = textfile.error().expect("the write failed");
        assert!(error.contains("gone/blockstamp.prom"), "{error}");
    }
}
