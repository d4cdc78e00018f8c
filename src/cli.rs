//! The command line, as clap sees it: raw flags only. `config` turns these
//! into validated settings; nothing below the CLI sees a raw flag.

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
    /// Writes submitted together in one burst [default: the queue depth].
    #[arg(long, value_name = "N")]
    pub burst: Option<usize>,
    /// Idle time between bursts, e.g. 5ms.
    #[arg(long, value_name = "DURATION")]
    pub burst_gap: Option<String>,
    /// Stop writing after this long, e.g. 10m.
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
    /// Flush cadence: end (one flush at the end), burst, or a number of writes.
    #[arg(long, value_name = "POLICY", default_value = "end")]
    pub sync: String,
    /// Write with Force Unit Access.
    #[arg(long)]
    pub fua: bool,
    /// Write through the page cache instead of O_DIRECT.
    #[arg(long)]
    pub buffered: bool,
    /// Write to a block device even if it carries a partition table or filesystem.
    #[arg(long)]
    pub force: bool,
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
    /// Findings kept in detail (more are counted).
    #[arg(long, value_name = "N", default_value = "100000")]
    pub max_findings: usize,
    /// Findings shown in the summary on stdout.
    #[arg(long, value_name = "N", default_value = "10")]
    pub show: usize,
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub write: WriteFlags,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Verify against the state remembered as this checkpoint.
    #[arg(long, value_name = "CHECKPOINT")]
    pub at: Option<String>,
    #[command(flatten)]
    pub verify: VerifyFlags,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub write: WriteFlags,
    #[command(flatten)]
    pub verify: VerifyFlags,
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
}
