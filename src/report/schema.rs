//! Reports: the JSON report of the contract (`blockstamp.report/1`) and the
//! human summary printed on stdout.

use std::fmt::Write as _;

use serde::Serialize;

use crate::metrics::MetricsSummary;
use crate::units::{format_rate, format_size};
use crate::verify::{Corruption, FindingClass, SectorSpan, VerifyOutcome};

pub const SCHEMA: &str = "blockstamp.report/1";

#[derive(Clone, Debug, Serialize)]
pub struct TargetSection {
    pub uri: String,
    pub kind: String,
    pub size_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BlocksSection {
    pub total: u64,
    pub expected_written: u64,
    pub checked: u64,
    pub ok: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FindingRecord {
    pub block: u64,
    pub offset: u64,
    pub class: FindingClass,
    pub expected_generation: u32,
    pub found_generation: Option<u32>,
    pub found_block: Option<u64>,
    pub persistent: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub torn_split: Option<Vec<SectorSpan>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corruption: Option<Corruption>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable_sectors: Vec<u32>,
}

/// The JSON report. Field and class names are stable; fields may be added.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub tool_version: &'static str,
    pub run_id: String,
    pub host: String,
    pub target: TargetSection,
    pub block_size: u32,
    pub checkpoint: Option<String>,
    pub blocks: BlocksSection,
    pub findings_by_class: std::collections::BTreeMap<&'static str, u64>,
    pub findings: Vec<FindingRecord>,
    /// More findings existed than were kept (see `--max-findings`).
    pub findings_truncated: bool,
    pub clean: bool,
    pub elapsed_s: f64,
    pub throughput_bytes_per_s: f64,
    pub bytes_read: u64,
    pub direct_io: bool,
    pub engine: String,
    pub notes: Vec<String>,
    /// The target was lost before every block was checked: why. Only the
    /// blocks in `blocks.checked` were judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_lost: Option<String>,
    /// The soak run this verify ended (`blockstamp soak`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<serde_json::Value>,
    /// Throughput, IOPS and latency of the run's writes and reads, with a
    /// per-second timeline (see `metrics`); absent when not recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSummary>,
}

/// Everything about the run the report needs besides the verify outcome.
pub struct ReportContext {
    pub run_id: u64,
    pub target: TargetSection,
    pub block_size: u32,
    pub checkpoint: Option<String>,
    pub direct_io: bool,
    pub engine: String,
    pub notes: Vec<String>,
}

impl FindingRecord {
    pub fn from_finding(f: &crate::verify::Finding) -> FindingRecord {
        FindingRecord {
            block: f.block,
            offset: f.offset,
            class: f.classified.class,
            expected_generation: f.expected_generation,
            found_generation: f.classified.found_generation,
            found_block: f.classified.found_block,
            persistent: f.persistent,
            detail: f.classified.detail.clone(),
            torn_split: f.classified.torn_split.clone(),
            corruption: f.classified.corruption.clone(),
            unreadable_sectors: f.unreadable_sectors.clone(),
        }
    }
}

impl Report {
    pub fn new(context: ReportContext, outcome: &VerifyOutcome) -> Report {
        let findings: Vec<FindingRecord> = outcome
            .findings
            .iter()
            .map(FindingRecord::from_finding)
            .collect();
        let total = outcome.total_findings();
        let elapsed_s = outcome.elapsed.as_secs_f64();
        Report {
            schema: SCHEMA,
            tool_version: env!("CARGO_PKG_VERSION"),
            run_id: format!("{:016x}", context.run_id),
            host: hostname(),
            target: context.target,
            block_size: context.block_size,
            checkpoint: context.checkpoint,
            blocks: BlocksSection {
                total: outcome.blocks.total,
                expected_written: outcome.blocks.expected_written,
                checked: outcome.blocks.checked,
                ok: outcome.blocks.ok,
            },
            findings_by_class: outcome
                .counts_by_class
                .iter()
                .map(|(c, n)| (c.name(), *n))
                .collect(),
            findings_truncated: (findings.len() as u64) < total,
            findings,
            clean: total == 0 && outcome.target_lost.is_none(),
            elapsed_s,
            throughput_bytes_per_s: outcome.bytes_read as f64 / elapsed_s.max(1e-9),
            bytes_read: outcome.bytes_read,
            direct_io: context.direct_io,
            engine: context.engine,
            notes: context.notes,
            target_lost: outcome.target_lost.clone(),
            soak: None,
            metrics: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serialises")
    }

    /// The summary for people: counts per class, then the first findings
    /// with expected vs found, and for corrupt blocks a hex diff of only the
    /// rows that differ.
    pub fn human_summary(&self, max_shown: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "verified {} at {} blocks: {} checked, {} ok, {} expected written{}",
            self.target.uri,
            format_size(self.block_size as u64),
            self.blocks.checked,
            self.blocks.ok,
            self.blocks.expected_written,
            match &self.checkpoint {
                Some(name) => format!(" (against checkpoint '{name}')"),
                None => String::new(),
            }
        );
        let _ = writeln!(
            out,
            "read {} in {:.2} s ({})",
            format_size(self.bytes_read),
            self.elapsed_s,
            format_rate(self.throughput_bytes_per_s)
        );
        if self.clean {
            let _ = writeln!(
                out,
                "CLEAN: every checked block holds exactly what was written"
            );
            return out;
        }
        let total: u64 = self.findings_by_class.values().sum();
        let _ = writeln!(out, "FINDINGS: {total} block(s) are not what was written");
        for class in FindingClass::ALL {
            if let Some(n) = self.findings_by_class.get(class.name()) {
                let _ = writeln!(out, "  {:<17} {n}", class.name());
            }
        }
        for finding in self.findings.iter().take(max_shown) {
            let _ = writeln!(
                out,
                "block {} (offset {}): {} [{}] expected generation {}, found {}{}",
                finding.block,
                finding.offset,
                finding.class.name(),
                if finding.persistent {
                    "persistent"
                } else {
                    "transient"
                },
                finding.expected_generation,
                finding
                    .found_generation
                    .map_or("-".to_string(), |g| g.to_string()),
                finding
                    .found_block
                    .map_or(String::new(), |b| format!(" (block {b}'s)")),
            );
            let _ = writeln!(out, "    {}", finding.detail);
            if let Some(corruption) = &finding.corruption {
                let _ = writeln!(
                    out,
                    "    {} bit(s) differ in bytes {}",
                    corruption.differing_bits,
                    corruption.ranges_text(8)
                );
                for row in corruption.diff_rows.iter().take(8) {
                    let _ = writeln!(out, "    {:08x}  expected {}", row.offset, row.expected);
                    let _ = writeln!(out, "    {:08x}  found    {}", row.offset, row.found);
                }
            }
        }
        if self.findings.len() > max_shown {
            let _ = writeln!(
                out,
                "… {} more finding(s) in the JSON report (--json)",
                total - max_shown as u64
            );
        }
        out
    }
}

/// The host name, for fleet views.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
