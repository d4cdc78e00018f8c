//! `blockstamp report`: views of JSON reports written earlier.
//!
//! `report RUN.json --html OUT.html` renders one run; `report compare` and
//! `report merge` are subcommands. A report file named `compare` or `merge`
//! is written `./compare`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
#[command(
    arg_required_else_help = true,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    override_usage = "blockstamp report RUN.json --html OUT.html\n       \
                      blockstamp report compare LAST.json TONIGHT.json [OPTIONS]\n       \
                      blockstamp report merge REPORT.json... [--json FILE] [--html FILE] [--junit FILE]"
)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub view: Option<ReportView>,
    /// A JSON report (verify --json, run --json) to render.
    #[arg(value_name = "RUN.json", required = true)]
    pub run: Option<PathBuf>,
    /// Write the run as one self-contained HTML page to this file (- for stdout).
    #[arg(long, value_name = "OUT.html", required = true)]
    pub html: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ReportView {
    /// Night over night: throughput, IOPS, latency and findings of two
    /// reports; exit 1 when a threshold is crossed.
    Compare(CompareArgs),
    /// A fleet view of many reports (hosts, targets, findings, worst
    /// latencies); exit 1 when any report has findings.
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The earlier report (last night).
    #[arg(value_name = "LAST.json")]
    pub last: PathBuf,
    /// The report to judge (tonight).
    #[arg(value_name = "TONIGHT.json")]
    pub tonight: PathBuf,
    /// Largest tolerated drop of write or read throughput.
    #[arg(long, value_name = "PERCENT", default_value = "10%")]
    pub max_throughput_drop: String,
    /// Largest tolerated rise of write or read p99 latency.
    #[arg(long, value_name = "PERCENT", default_value = "25%")]
    pub max_latency_rise: String,
    /// Most findings tolerated tonight that last night did not have (in the
    /// final verify, and after the disruptions).
    #[arg(long, value_name = "N", default_value = "0")]
    pub max_new_findings: u64,
    /// Largest tolerated rise of a disruption's stall (each disruption
    /// against the one of the same number last night, and the longest).
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    pub max_stall_rise: String,
    /// Also write the comparison as JSON to FILE (- for stdout; the table then goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub json: Option<String>,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// JSON reports, one per host and target.
    #[arg(value_name = "REPORT.json", required = true, num_args = 1..)]
    pub reports: Vec<PathBuf>,
    /// Also write the fleet view as JSON to FILE (- for stdout; the tables then go to stderr).
    #[arg(long, value_name = "FILE")]
    pub json: Option<String>,
    /// Also write the fleet view as one self-contained HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<String>,
    /// Also write every report's checks as JUnit XML to FILE (a test suite per report).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}
