//! The command line, as clap sees it: raw flags only. `config` turns these
//! into validated settings; nothing below the CLI sees a raw flag.

pub mod report;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "blockstamp",
    version,
    about = "Write-integrity verifier for block devices and disk images",
    long_about = "Writes self-describing, checksummed blocks with bursty, non-contiguous IO, \
remembers what it wrote in a manifest, and later verifies every block, classifying each bad one: \
lost_write, newer_generation, misdirected, torn, corrupt, zeroed, foreign, unreadable.\n\n\
Exit status: 0 clean, 1 integrity findings, 2 bad usage or input (nothing written), 3 run failed."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write stamped blocks to TARGET and record them in the manifest.
    Write(WriteArgs),
    /// Check every block of TARGET against the manifest.
    Verify(VerifyArgs),
    /// Write, then verify.
    Run(RunArgs),
    /// Remember the current expected state under NAME (or list checkpoints).
    Checkpoint(CheckpointArgs),
    /// Decode one block: expected vs found, sector by sector.
    Inspect(InspectArgs),
    /// Bursty writes for --duration, a full verify every --verify-every,
    /// a rolling verify in between; a final verify and report at the end.
    Soak(SoakArgs),
    /// Views of JSON reports: one run as HTML, two nights compared, a fleet merged.
    Report(report::ReportArgs),
    /// Prove the verifier on this machine: inject every kind of fault into a
    /// scratch image, verify, and check that each is caught and classified.
    Selftest(SelftestArgs),
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Image file, block device, or nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH.
    pub target: String,
    /// The manifest file (never on the target).
    #[arg(long, short = 'm', value_name = "M")]
    pub manifest: PathBuf,
}

/// The targets of `write`, `verify`, `run` and `soak`: one with its
/// `--manifest`, or several with `--manifest-dir` (docs/CONTRACT.md, "Many
/// targets in one run").
#[derive(Debug, Args)]
pub struct TargetsArgs {
    /// Image file, block device, or nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH;
    /// several with --manifest-dir, run at once.
    #[arg(value_name = "TARGET", required = true, num_args = 1..)]
    pub targets: Vec<String>,
    /// The manifest file (never on the target).
    #[arg(
        long,
        short = 'm',
        value_name = "M",
        required_unless_present = "manifest_dir",
        conflicts_with = "manifest_dir"
    )]
    pub manifest: Option<PathBuf>,
    /// Directory of the manifests, one per target, named after the target
    /// (for several targets in one run).
    #[arg(long, value_name = "DIR")]
    pub manifest_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WriteFlags {
    /// Target size; creates or extends an image file (sparse). E.g. 1GiB.
    #[arg(long, value_name = "S")]
    pub size: Option<String>,
    /// Block size: a power of two from 512 B to 1 MiB [default: 4KiB].
    #[arg(long, value_name = "B")]
    pub block_size: Option<String>,
    /// Seed of the workload's random choices [default: random, printed].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Write every covered block this many times.
    #[arg(long, value_name = "N", default_value = "1")]
    pub passes: u64,
    /// Fraction of the blocks to write, chosen at random (0.25 or 25%).
    #[arg(long, value_name = "F", default_value = "1")]
    pub coverage: String,
    /// Writes kept in flight.
    #[arg(long, value_name = "N", default_value = "32")]
    pub queue_depth: usize,
    /// Writes submitted together in one burst [default: an eighth of the queue depth, at least 2].
    #[arg(long, value_name = "N")]
    pub burst: Option<usize>,
    /// Idle time between bursts, e.g. 5ms.
    #[arg(long, value_name = "DURATION")]
    pub burst_gap: Option<String>,
    /// Where a burst's writes land: random, stride, reverse, interleave.
    #[arg(long, value_name = "MODE", default_value = "random")]
    pub scatter: String,
    /// burst (scattered bursts), or sequential (the contrast baseline).
    #[arg(long, value_name = "KIND", default_value = "burst")]
    pub workload: String,
    /// Bytes per write, fixed or a range like 4KiB-64KiB [default: the block size].
    #[arg(long, value_name = "SIZE")]
    pub io_size: Option<String>,
    /// Fraction of writes that re-hit written blocks (new generations).
    #[arg(long, value_name = "F", default_value = "0")]
    pub overwrite: String,
    /// Fraction of operations that discard their blocks (trim, unmap, hole punch) instead of writing them.
    #[arg(long, value_name = "F", default_value = "0")]
    pub discard: String,
    /// Fraction of operations that zero their blocks (write-zeroes) instead of writing them.
    #[arg(long = "write-zeroes", value_name = "F", default_value = "0")]
    pub write_zeroes: String,
    /// What a read of a discarded block may return: zeroes, previous or any [default: what the target promises, else any].
    #[arg(long = "discard-reads", value_name = "PROMISE")]
    pub discard_reads: Option<String>,
    /// Stop writing after this long, e.g. 10m (runs passes until then).
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
    /// Flush cadence: none (only at the end), burst, or a number of writes.
    #[arg(long, value_name = "POLICY", default_value = "none")]
    pub sync: String,
    /// Data compressibility for arrays that compress: 1 = incompressible, 2 = halves, …
    #[arg(long, value_name = "R", default_value = "1")]
    pub compress_ratio: String,
    /// Data deduplicability for arrays that dedup: 1 = all unique, 2 = half the writes shared, …
    #[arg(long, value_name = "D", default_value = "1")]
    pub dedup_ratio: String,
    /// IO engine: auto (io_uring where it works), uring, sync, inline.
    #[arg(long, value_name = "ENGINE", default_value = "auto")]
    pub engine: String,
    /// While writing, read back the blocks of every N completed writes.
    #[arg(long, value_name = "N")]
    pub verify_backlog: Option<u64>,
    /// Write without the write-ahead journal (only to measure its cost: a
    /// crash then leaves a manifest verify cannot fully trust).
    #[arg(long)]
    pub no_journal: bool,
    /// Write with Force Unit Access.
    #[arg(long)]
    pub fua: bool,
    /// Write through the page cache instead of O_DIRECT.
    #[arg(long)]
    pub buffered: bool,
    /// Write to a block device even if it carries a partition table or filesystem.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub target_loss: TargetLossFlags,
    #[command(flatten)]
    pub disrupt: DisruptFlags,
    /// Keep FILE up to date as a Prometheus textfile (node_exporter's
    /// textfile collector): counters, gauges and latency quantiles, replaced
    /// every 5 s and at the end.
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,
    /// End the writing at the first confirmed (persistent) finding of the
    /// rolling read-back or a post-disruption verify, keeping the evidence;
    /// turns on --verify-backlog 1024 when it is not given.
    #[arg(long)]
    pub stop_on_finding: bool,
    /// Writer jobs: threads each carrying its share of every burst on an
    /// IO engine of its own (an io_uring ring each); a number, or auto (one
    /// per core).
    #[arg(long, value_name = "N", default_value = "1")]
    pub jobs: String,
}

#[derive(Debug, Args)]
pub struct TargetLossFlags {
    /// When the target is lost (its NBD server gone or silent, its device
    /// vanished), keep reopening it for this long, then carry on; 0 ends the
    /// run at once (exit 3) [default: 0; 2m for soak over NBD and with --disrupt].
    #[arg(long, value_name = "DURATION")]
    pub reconnect_timeout: Option<String>,
    /// An NBD request unanswered for this long counts as the server lost.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub nbd_timeout: String,
}

/// Scheduled disruptions of the target while IO runs (docs/CONTRACT.md).
#[derive(Debug, Args)]
pub struct DisruptFlags {
    /// Shell command that disrupts the target while IO runs: kill and
    /// restart a server, fail over a controller, update firmware.
    #[arg(long, value_name = "CMD")]
    pub disrupt: Option<String>,
    /// Run --disrupt every DURATION of the run.
    #[arg(long, value_name = "DURATION")]
    pub disrupt_every: Option<String>,
    /// Run --disrupt once, DURATION into the run.
    #[arg(long, value_name = "DURATION")]
    pub disrupt_at: Option<String>,
    /// Shell command run after each --disrupt (bring back what it stopped).
    #[arg(long, value_name = "CMD")]
    pub recover: Option<String>,
    /// Longest each of those commands may run; past it, it is killed and
    /// the run ends (exit 3).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub disrupt_timeout: String,
}

#[derive(Debug, Args)]
pub struct VerifyFlags {
    /// Write the JSON report to FILE (- for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<String>,
    /// Threads checking blocks [default: one per core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Read chunks in flight during verify.
    #[arg(long = "read-depth", value_name = "N", default_value = "8")]
    pub read_depth: usize,
    /// Bytes per verify read.
    #[arg(long, value_name = "SIZE", default_value = "1MiB")]
    pub read_size: String,
    /// IO engine for verify reads: auto, uring, sync, inline.
    #[arg(long = "read-engine", value_name = "ENGINE", default_value = "auto")]
    pub read_engine: String,
    /// Findings kept in detail (more are counted).
    #[arg(long, value_name = "N", default_value = "100000")]
    pub max_findings: usize,
    /// Findings shown in the summary on stdout.
    #[arg(long, value_name = "N", default_value = "10")]
    pub show: usize,
    /// Write the checks as JUnit XML to FILE (a test case per finding class,
    /// for CI systems).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Hold discarded blocks to this promise: zeroes, previous or any [default: the one the write recorded].
    #[arg(long = "discard-reads", value_name = "PROMISE")]
    pub discard_reads: Option<String>,
    #[command(flatten)]
    pub on_finding: OnFindingFlags,
}

#[derive(Debug, Args)]
pub struct MetricsFlags {
    /// Write throughput, IOPS and latency to FILE as JSON lines, one per second.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    #[command(flatten)]
    pub targets: TargetsArgs,
    #[command(flatten)]
    pub write: WriteFlags,
    #[command(flatten)]
    pub metrics: MetricsFlags,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub targets: TargetsArgs,
    /// Verify against the state remembered as this checkpoint.
    #[arg(long, value_name = "CHECKPOINT")]
    pub at: Option<String>,
    #[command(flatten)]
    pub verify: VerifyFlags,
    #[command(flatten)]
    pub target_loss: TargetLossFlags,
    #[command(flatten)]
    pub metrics: MetricsFlags,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub targets: TargetsArgs,
    #[command(flatten)]
    pub write: WriteFlags,
    #[command(flatten)]
    pub verify: VerifyFlags,
    #[command(flatten)]
    pub metrics: MetricsFlags,
}

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// The manifest file.
    #[arg(long, short = 'm', value_name = "M")]
    pub manifest: PathBuf,
    /// Name of the checkpoint to record.
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,
    /// List the manifest's checkpoints instead.
    #[arg(long)]
    pub list: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Block number to decode.
    #[arg(long, value_name = "N")]
    pub block: u64,
    /// Compare with the state of this checkpoint.
    #[arg(long, value_name = "CHECKPOINT")]
    pub at: Option<String>,
    /// Print the block's story as JSON (blockstamp.inspect/1) on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SoakArgs {
    #[command(flatten)]
    pub targets: TargetsArgs,
    /// Full verification pass at this interval, e.g. 10m.
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub verify_every: String,
    #[command(flatten)]
    pub write: WriteFlags,
    #[command(flatten)]
    pub verify: VerifyFlags,
    #[command(flatten)]
    pub metrics: MetricsFlags,
}

#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// Block size to test; repeat for several (e.g. 512, 4KiB, 64KiB) [default: 4KiB].
    #[arg(long, value_name = "B")]
    pub block_size: Vec<String>,
    /// Seed of the fault plan and the workload [default: random, printed].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Directory for the scratch image and manifest [default: the system temp dir].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write the results as JUnit XML to FILE (a test case per row of the table).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// A command run as soon as a finding is confirmed (docs/CONTRACT.md).
#[derive(Debug, Args)]
pub struct OnFindingFlags {
    /// Shell command run (sh -c) as soon as the first persistent finding is
    /// confirmed, with the finding in BLOCKSTAMP_* variables, while the
    /// verify goes on; it never changes the verdict.
    #[arg(long, value_name = "CMD")]
    pub on_finding: Option<String>,
    /// Run --on-finding once per finding class and 64 MiB region of the
    /// target, instead of once.
    #[arg(long)]
    pub on_finding_each: bool,
    /// Longest one run of --on-finding may take; past it, its process group
    /// is killed [default: 5m].
    #[arg(long, value_name = "DURATION")]
    pub on_finding_timeout: Option<String>,
}
