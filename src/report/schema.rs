//! The JSON report of the contract (`blockstamp.report/1`): one set of types
//! that verify writes and the review views read back.
//!
//! Reading is tolerant: unknown fields are ignored (fields may be added),
//! fields that older reports lack are defaulted (`host`, `metrics`, `soak`,
//! …), and finding classes stay strings, so a report that names a class this
//! version does not know is still shown.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::manifest::WriteSession;
use crate::metrics::{DirectionSummary, MetricsSummary};
use crate::verify::incidents::{self, GroupingContext, Incident};
use crate::verify::{Corruption, SectorSpan, VerifyOutcome};

pub const SCHEMA: &str = "blockstamp.report/1";

/// The JSON report. Field and class names are stable; fields may be added.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    #[serde(default)]
    pub tool_version: String,
    pub run_id: String,
    #[serde(default)]
    pub host: String,
    pub target: TargetSection,
    pub block_size: u32,
    #[serde(default)]
    pub checkpoint: Option<String>,
    pub blocks: BlocksSection,
    #[serde(default)]
    pub findings_by_class: BTreeMap<String, u64>,
    #[serde(default)]
    pub findings: Vec<FindingRecord>,
    /// The findings grouped by the cause they share (see
    /// `verify::incidents`); empty when clean.
    #[serde(default)]
    pub incidents: Vec<Incident>,
    /// How `incidents` were grouped; absent in reports without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_grouping: Option<IncidentGrouping>,
    /// More findings existed than were kept (see `--max-findings`).
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
    /// The target was lost before every block was checked: why. Only the
    /// blocks in `blocks.checked` were judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_lost: Option<String>,
    /// The soak run this verify ended (`blockstamp soak`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakSection>,
    /// The scheduled disruptions of the run (`--disrupt`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disruptions: Vec<Disruption>,
    /// Throughput, IOPS and latency of the run's writes and reads, with a
    /// per-second timeline (see `metrics`); absent when not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSummary>,
    /// The runs of the `--on-finding` command, in the order they started;
    /// absent without `--on-finding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_finding: Option<Vec<OnFindingRun>>,
    /// The finding `--stop-on-finding` ended the writing at; absent when it
    /// did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_on_finding: Option<FindingTrigger>,
    /// The writer jobs (`--jobs`) of the write phase of `run` and `soak`;
    /// absent from `verify` reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_jobs: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetSection {
    pub uri: String,
    #[serde(default)]
    pub kind: String,
    pub size_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlocksSection {
    pub total: u64,
    pub expected_written: u64,
    pub checked: u64,
    pub ok: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FindingRecord {
    pub block: u64,
    pub offset: u64,
    /// A `FindingClass` name; a string so that classes added by later
    /// versions are still read and shown.
    pub class: String,
    pub expected_generation: u32,
    pub found_generation: Option<u32>,
    pub found_block: Option<u64>,
    pub persistent: bool,
    #[serde(default)]
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torn_split: Option<Vec<SectorSpan>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corruption: Option<Corruption>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable_sectors: Vec<u32>,
    /// Sequence number of the write whose stamp the block holds (see
    /// `verify::found_write`), where a sector names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_write_seq: Option<u64>,
    /// That write's time, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_write_time_s: Option<u64>,
    /// The id of the incident the finding belongs to (see `incidents`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<u32>,
}

/// The rules and inputs behind a report's `incidents`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentGrouping {
    /// Findings of one class with at most this many bytes between them are linked.
    pub place_gap_bytes: u64,
    /// Write gap when the manifest records no session.
    pub default_write_gap: u64,
    /// Region sizes each incident is described at.
    pub region_bytes: Vec<u64>,
    /// Writes of the run are numbered below this.
    pub next_write_seq: u64,
    /// 1: surviving writes are exact; k: every k-th write was kept and
    /// counts are scaled by k.
    pub survivors_sampled_every: u64,
    /// Findings grouped: those kept in `findings`.
    pub findings_grouped: u64,
}

/// The `soak` section: the soak run a report's verify ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SoakSection {
    pub duration_s: f64,
    pub planned_duration_s: f64,
    pub verify_every_s: f64,
    pub stopped_by_signal: bool,
    pub intervals: Vec<Interval>,
    pub writes: u64,
    pub bytes_written: u64,
    /// Write-zeroes and discards completed (`--write-zeroes`, `--discard`),
    /// and the blocks they covered (0 in reports from before them).
    #[serde(default)]
    pub zeroings: u64,
    #[serde(default)]
    pub blocks_zeroed: u64,
    #[serde(default)]
    pub discards: u64,
    #[serde(default)]
    pub blocks_discarded: u64,
    pub rolling_checked_blocks: u64,
    /// Findings of the rolling verify, as the verify report lists findings.
    pub rolling_findings: Vec<FindingRecord>,
    /// Findings of the interval verifies (the final one is the report's own).
    pub interval_findings: u64,
}

/// One scheduled disruption (`--disrupt`) and what it did to the run.
/// Times in seconds; `*_at_s` count from the run's start, as the metrics
/// timeline does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Disruption {
    /// 1 for the first.
    pub index: u64,
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover_command: Option<String>,
    /// When the disruption command started.
    pub started_at_s: f64,
    /// How long the disruption command ran, and the recover command.
    pub command_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover_s: Option<f64>,
    /// When an IO completed again after the commands ended: the target
    /// answered.
    pub answered_at_s: f64,
    /// The longest time without any IO completion, from the start of the
    /// disruption until the target answered.
    pub stall_s: f64,
    /// Write throughput over the 5 s before the disruption.
    pub baseline_write_bytes_per_s: f64,
    /// From the start of the disruption until a second of writes reached
    /// 80% of the baseline again, not counting the post-disruption verify;
    /// absent when it did not before the run ended or the next disruption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_after_s: Option<f64>,
    /// IOs that failed because the target was lost (each issued again).
    pub failed_ios: u64,
    /// Times the target was reopened.
    pub reconnects: u64,
    /// Blocks checked by the verify after the disruption: every block
    /// written before it (writes not yet durable accept old or new).
    pub verify_checked_blocks: u64,
    pub verify_s: f64,
    pub findings_by_class: BTreeMap<String, u64>,
    /// The post-disruption verify's findings (at most `--max-findings`).
    pub findings: Vec<FindingRecord>,
}

/// One write interval of a soak and the verify that closed it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Interval {
    pub index: u64,
    /// Seconds since the soak started, at the end of the interval's verify.
    pub t_s: f64,
    pub writes: u64,
    pub bytes_written: u64,
    pub write_bytes_per_s: f64,
    pub write_iops: f64,
    pub rolling_checked_blocks: u64,
    pub rolling_findings: u64,
    pub verify_checked_blocks: u64,
    pub verify_findings: u64,
    pub verify_bytes_per_s: f64,
}

/// A confirmed finding that set something off (`--on-finding`,
/// `--stop-on-finding`), and which check found it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FindingTrigger {
    pub class: String,
    pub block: u64,
    pub offset: u64,
    #[serde(default)]
    pub detail: String,
    /// `verify`, `interval_verify`, `rolling_verify` or `disruption_verify`.
    pub source: String,
}

/// One run of the `--on-finding` command.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OnFindingRun {
    pub command: String,
    pub trigger: FindingTrigger,
    /// Seconds from the start of the blockstamp command to its start.
    pub started_at_s: f64,
    /// Its exit status; null when it did not exit by itself (killed at the
    /// time limit, or by a signal) or could not be started.
    pub exit_status: Option<i32>,
    /// Killed (with its process group) at `--on-finding-timeout`.
    pub timed_out: bool,
    pub duration_s: f64,
    /// Its last lines of output, stdout and stderr as they came.
    pub output_tail: Vec<String>,
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
            class: f.classified.class.name().to_string(),
            expected_generation: f.expected_generation,
            found_generation: f.classified.found_generation,
            found_block: f.classified.found_block,
            persistent: f.persistent,
            detail: f.classified.detail.clone(),
            torn_split: f.classified.torn_split.clone(),
            corruption: f.classified.corruption.clone(),
            unreadable_sectors: f.unreadable_sectors.clone(),
            found_write_seq: f.found_write.map(|w| w.write_seq),
            found_write_time_s: f.found_write.map(|w| w.write_time_s as u64),
            incident: None,
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
            schema: SCHEMA.to_string(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
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
                .map(|(c, n)| (c.name().to_string(), *n))
                .collect(),
            findings_truncated: (findings.len() as u64) < total,
            findings,
            incidents: Vec::new(),
            incident_grouping: None,
            clean: total == 0 && outcome.target_lost.is_none(),
            elapsed_s,
            throughput_bytes_per_s: outcome.bytes_read as f64 / elapsed_s.max(1e-9),
            bytes_read: outcome.bytes_read,
            direct_io: context.direct_io,
            engine: context.engine,
            notes: context.notes,
            target_lost: outcome.target_lost.clone(),
            disruptions: Vec::new(),
            soak: None,
            metrics: None,
            on_finding: None,
            stopped_on_finding: None,
            write_jobs: None,
        }
    }

    /// Group the findings of `outcome` (those kept) into incidents, with
    /// the sessions of the manifest that issued the writes.
    pub fn group_incidents(&mut self, outcome: &VerifyOutcome, sessions: &[WriteSession]) {
        let evidence: Vec<incidents::Evidence> = outcome
            .findings
            .iter()
            .map(incidents::Evidence::of)
            .collect();
        let grouping = incidents::group(
            &evidence,
            &GroupingContext {
                block_size: self.block_size,
                sessions,
                survivors: Some(&outcome.survivors),
            },
        );
        // `findings` holds the outcome's findings in the same order.
        for (record, id) in self.findings.iter_mut().zip(&grouping.incident_of) {
            record.incident = Some(*id);
        }
        self.incidents = grouping.incidents;
        self.incident_grouping = Some(IncidentGrouping {
            place_gap_bytes: incidents::PLACE_GAP_BYTES,
            default_write_gap: incidents::DEFAULT_WRITE_GAP,
            region_bytes: incidents::REGION_BYTES.to_vec(),
            next_write_seq: outcome.survivors.end_seq(),
            survivors_sampled_every: outcome.survivors.sampled_every(),
            findings_grouped: evidence.len() as u64,
        });
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serialises")
    }

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

    /// Findings of the verifies after the disruptions, all added up (a
    /// block lost across a disruption may be counted again by the final
    /// verify).
    pub fn findings_after_disruptions(&self) -> u64 {
        self.disruptions
            .iter()
            .map(Disruption::total_findings)
            .sum()
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

impl Disruption {
    /// Findings of the verify after this disruption, by class (also those
    /// not kept in detail).
    pub fn total_findings(&self) -> u64 {
        let counted: u64 = self.findings_by_class.values().sum();
        counted.max(self.findings.len() as u64)
    }
}

/// The disruption with the longest stall (the first of equals); `None`
/// without disruptions.
pub fn longest_stall(disruptions: &[Disruption]) -> Option<&Disruption> {
    disruptions
        .iter()
        .reduce(|a, b| if b.stall_s > a.stall_s { b } else { a })
}

/// The host name, for fleet views.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use crate::report::parse;
    use crate::report::tests::sample_json;

    /// The sample report with the `soak` section `blockstamp soak` adds.
    fn soak_report_json() -> serde_json::Value {
        let mut json = sample_json();
        let rolling = json["findings"][0].clone();
        json["soak"] = serde_json::json!({
            "duration_s": 2.039932202,
            "planned_duration_s": 2.0,
            "verify_every_s": 1.0,
            "stopped_by_signal": false,
            "intervals": [
                {"index": 0, "t_s": 1.047789518, "writes": 20484, "bytes_written": 83902464,
                 "write_bytes_per_s": 83091648.8767455, "write_iops": 20286.047089049196,
                 "rolling_checked_blocks": 17733, "rolling_findings": 1,
                 "verify_checked_blocks": 1024, "verify_findings": 0,
                 "verify_bytes_per_s": 490658109.1987282},
                {"index": 1, "t_s": 2.039932052, "writes": 17740, "bytes_written": 72663040,
                 "write_bytes_per_s": 75527330.00401115, "write_iops": 18439.289551760536,
                 "rolling_checked_blocks": 16428, "rolling_findings": 0,
                 "verify_checked_blocks": 1024, "verify_findings": 0,
                 "verify_bytes_per_s": 688328911.3785783}
            ],
            "writes": 38224,
            "bytes_written": 156565504,
            "zeroings": 12, "blocks_zeroed": 12, "discards": 9, "blocks_discarded": 10,
            "rolling_checked_blocks": 34161,
            "rolling_findings": [rolling],
            "interval_findings": 0
        });
        json["findings"][3]["unreadable_sectors"] = serde_json::json!([2, 3]);
        json
    }

    #[test]
    fn a_report_written_read_and_written_again_is_the_same_json() {
        let contract = soak_report_json();
        let report = parse(&contract.to_string()).expect("the sample parses");
        let written = report.to_json();
        let value: serde_json::Value = serde_json::from_str(&written).expect("written is JSON");
        assert_eq!(
            value, contract,
            "every field written as the contract has it"
        );
        let again = parse(&written).expect("written parses").to_json();
        assert_eq!(again, written);
    }

    #[test]
    fn optional_sections_are_left_out_not_written_as_null() {
        let mut json = sample_json();
        json.as_object_mut().unwrap().remove("metrics");
        json.as_object_mut().unwrap().remove("on_finding");
        json.as_object_mut().unwrap().remove("stopped_on_finding");
        json["findings"][2]
            .as_object_mut()
            .unwrap()
            .remove("corruption");
        let written = parse(&json.to_string()).unwrap().to_json();
        let value: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(value, json);
        assert!(!written.contains("\"soak\"") && !written.contains("\"metrics\""));
        assert!(!written.contains("\"on_finding\"") && !written.contains("\"stopped_on_finding\""));
        // `checkpoint` is the exception: the contract writes it as null.
        assert_eq!(value["checkpoint"], serde_json::Value::Null);
    }

    #[test]
    fn a_soak_section_is_read_typed() {
        let report = parse(&soak_report_json().to_string()).unwrap();
        let soak = report.soak.expect("soak section read");
        assert_eq!(soak.intervals.len(), 2);
        assert_eq!(soak.intervals[0].rolling_findings, 1);
        assert_eq!(soak.rolling_findings[0].class, "lost_write");
    }

    #[test]
    fn a_class_this_version_does_not_know_is_kept() {
        let mut json = sample_json();
        json["findings"][0]["class"] = serde_json::json!("zzz_new");
        json["findings_by_class"] = serde_json::json!({"zzz_new": 1, "torn": 3});
        let report = parse(&json.to_string()).unwrap();
        assert_eq!(report.findings[0].class, "zzz_new");
        assert_eq!(report.total_findings(), 4);
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(value, json);
    }
}

pub const MULTI_SCHEMA: &str = "blockstamp.multi/1";

/// The JSON report of a run over many targets (`T1 T2 … --manifest-dir
/// DIR --json FILE`, docs/CONTRACT.md "Many targets in one run"): the
/// verdict of the whole run, and a section per target holding that
/// target's own `blockstamp.report/1`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MultiReport {
    pub schema: String,
    #[serde(default)]
    pub tool_version: String,
    #[serde(default)]
    pub host: String,
    /// `verify`, `run` or `soak`.
    pub command: String,
    /// Every target verified clean.
    pub clean: bool,
    /// The run's exit status: the worst of the targets'.
    pub exit_status: u8,
    pub target_count: usize,
    pub targets_with_findings: usize,
    pub failed_targets: usize,
    /// A signal stopped the writing early.
    #[serde(default)]
    pub interrupted: bool,
    /// Every target's findings, added up per class.
    #[serde(default)]
    pub findings_by_class: BTreeMap<String, u64>,
    pub targets: Vec<TargetRun>,
}

/// One target of a [`MultiReport`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetRun {
    /// The name derived from the target; its manifest is `NAME.manifest`.
    pub name: String,
    /// The target as given on the command line.
    pub target: String,
    pub manifest: String,
    /// `clean`, `findings` or `failed`.
    pub outcome: String,
    /// What the exit status would be for this target alone.
    pub exit_status: u8,
    /// A signal stopped this target's writing early.
    #[serde(default)]
    pub interrupted: bool,
    /// Why the target failed (`outcome` `failed`).
    #[serde(default)]
    pub error: Option<String>,
    /// The target's report; absent when it failed before its verify ended
    /// (a target lost during its verify keeps its partial report).
    #[serde(default)]
    pub report: Option<Report>,
}

impl MultiReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serialises")
    }
}
