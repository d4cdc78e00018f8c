//! Resolved configuration: the raw flags of `cli`, parsed and validated.
//! Every error here is a usage error (exit 2) raised before any target is
//! opened, so bad input never writes a byte.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{DisruptFlags, OnFindingFlags, TargetLossFlags, VerifyFlags, WriteFlags};
use crate::disrupt::{DisruptPlan, Schedule};
use crate::engine::EngineChoice;
use crate::error::{Error, Result};
use crate::on_finding::OnFindingPlan;
use crate::storage::{DiscardReads, LossPolicy};
use crate::units::{parse_duration, parse_fraction, parse_size};
use crate::verify::VerifyOptions;
use crate::workload::Scatter;
use crate::writer::{SyncPolicy, WriteOptions};

pub const DEFAULT_BLOCK_SIZE: u32 = 4096;
pub const MIN_BLOCK_SIZE: u64 = 512;
pub const MAX_BLOCK_SIZE: u64 = 1 << 20;

/// Settings of a write phase.
#[derive(Clone, Debug)]
pub struct WriteConfig {
    pub size_bytes: Option<u64>,
    /// None: the manifest's (or the default for a new one).
    pub block_size: Option<u32>,
    pub seed: Option<u64>,
    pub passes: u64,
    pub coverage: f64,
    pub queue_depth: usize,
    pub burst: usize,
    pub scatter: Scatter,
    /// Bytes per write (inclusive range); None: one block.
    pub io_size: Option<(u64, u64)>,
    pub overwrite: f64,
    /// Fractions of operations that discard or zero instead of writing.
    pub discard: f64,
    pub zero: f64,
    /// `--discard-reads`: what a discarded block may read as.
    pub discard_reads: Option<DiscardReads>,
    pub compress_ratio: f64,
    pub dedup_ratio: f64,
    pub engine: EngineChoice,
    pub direct: bool,
    pub force: bool,
    pub target_loss: LossPolicy,
    /// Scheduled disruptions (`--disrupt`), checked.
    pub disrupt: Option<DisruptPlan>,
    pub options: WriteOptions,
    /// `--prometheus FILE`: the textfile kept up to date while writing.
    pub prometheus: Option<PathBuf>,
    /// `--stop-on-finding`: end the writing at the first confirmed finding.
    pub stop_on_finding: bool,
    /// `--jobs`: engines, each on a thread of its own, carrying the writes.
    pub jobs: usize,
}

/// `--reconnect-timeout` when not given, for `soak` and runs with
/// `--disrupt`: a run meant to survive disruptions reconnects by default.
pub const DEFAULT_SOAK_RECONNECT: Duration = Duration::from_secs(120);

impl WriteConfig {
    pub fn from_flags(flags: &WriteFlags) -> Result<WriteConfig> {
        let size_bytes = flags
            .size
            .as_deref()
            .map(parse_size)
            .transpose()
            .map_err(|e| usage("--size", e))?;
        if let Some(size) = size_bytes
            && size == 0
        {
            return Err(Error::usage(
                "bad --size '0': a target needs at least one block",
            ));
        }
        if let Some(size) = size_bytes
            && size > i64::MAX as u64
        {
            return Err(Error::usage(format!(
                "bad --size {size}: larger than any file or device can be (8 EiB)"
            )));
        }
        let block_size = flags
            .block_size
            .as_deref()
            .map(parse_block_size)
            .transpose()?;
        if flags.passes == 0 {
            return Err(Error::usage("bad --passes 0: write at least one pass"));
        }
        let coverage = parse_fraction(&flags.coverage).map_err(|e| usage("--coverage", e))?;
        if coverage == 0.0 {
            return Err(Error::usage(
                "bad --coverage 0: nothing would be written; give a fraction above 0",
            ));
        }
        if flags.queue_depth == 0 || flags.queue_depth > 4096 {
            return Err(Error::usage(format!(
                "bad --queue-depth {}: use 1 to 4096",
                flags.queue_depth
            )));
        }
        // An eighth of the queue depth (at least 2) by default: each burst
        // reaches the device as one batch of scattered writes, and a new one
        // goes out as soon as that much of the queue is free, so the device
        // always holds nearly the whole queue depth. Larger bursts drain the
        // queue further between batches; on the virtio disks measured, a
        // burst of half the queue depth cost a third of the IOPS (README).
        let burst = flags
            .burst
            .unwrap_or((flags.queue_depth / 8).max(2).min(flags.queue_depth));
        if burst == 0 {
            return Err(Error::usage(
                "bad --burst 0: a burst has at least one write",
            ));
        }
        let burst_gap = flags
            .burst_gap
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| usage("--burst-gap", e))?
            .unwrap_or(Duration::ZERO);
        let duration = flags
            .duration
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| usage("--duration", e))?;
        if duration.is_some_and(|d| d.is_zero()) {
            return Err(Error::usage(
                "bad --duration 0: give a positive duration such as 10m",
            ));
        }
        let sync = parse_sync(&flags.sync)?;
        let scatter = match flags.workload.as_str() {
            "burst" => Scatter::parse(&flags.scatter).map_err(Error::usage)?,
            "sequential" => Scatter::Sequential,
            other => {
                return Err(Error::usage(format!(
                    "bad --workload '{other}': use burst or sequential"
                )));
            }
        };
        let io_size = flags
            .io_size
            .as_deref()
            .map(crate::units::parse_size_range)
            .transpose()
            .map_err(|e| usage("--io-size", e))?;
        if let Some((low, _)) = io_size
            && low == 0
        {
            return Err(Error::usage(
                "bad --io-size: a write has at least one block",
            ));
        }
        let overwrite = parse_fraction(&flags.overwrite).map_err(|e| usage("--overwrite", e))?;
        let discard = parse_fraction(&flags.discard).map_err(|e| usage("--discard", e))?;
        let zero = parse_fraction(&flags.write_zeroes).map_err(|e| usage("--write-zeroes", e))?;
        if discard + zero > 1.0 + 1e-9 {
            return Err(Error::usage(format!(
                "bad --discard {} with --write-zeroes {}: together they are more than every operation",
                flags.discard, flags.write_zeroes
            )));
        }
        let discard_reads = flags
            .discard_reads
            .as_deref()
            .map(DiscardReads::parse)
            .transpose()
            .map_err(Error::usage)?;
        let compress_ratio = parse_ratio(
            &flags.compress_ratio,
            "--compress-ratio",
            "1 (incompressible)",
        )?;
        let dedup_ratio = parse_ratio(&flags.dedup_ratio, "--dedup-ratio", "1 (all unique)")?;
        let engine = parse_engine(&flags.engine, "--engine")?;
        let disrupt = disrupt_plan(&flags.disrupt)?;
        if let Some(path) = &flags.prometheus {
            crate::outfile::check_path("--prometheus", path)?;
        }
        Ok(WriteConfig {
            size_bytes,
            block_size,
            seed: flags.seed,
            passes: flags.passes,
            coverage,
            queue_depth: flags.queue_depth,
            burst,
            scatter,
            io_size,
            overwrite,
            discard,
            zero,
            discard_reads,
            compress_ratio,
            dedup_ratio,
            engine,
            direct: !flags.buffered,
            force: flags.force,
            target_loss: loss_policy(
                &flags.target_loss,
                if disrupt.is_some() {
                    DEFAULT_SOAK_RECONNECT
                } else {
                    Duration::ZERO
                },
            )?,
            disrupt,
            options: WriteOptions {
                sync,
                fua: flags.fua,
                duration,
                burst_gap,
                journal: !flags.no_journal,
                verify_backlog: match flags.verify_backlog {
                    Some(0) => {
                        return Err(Error::usage(
                            "bad --verify-backlog 0: read back after at least one write",
                        ));
                    }
                    // Stopping on a finding needs something that finds
                    // while writing: the rolling read-back, as in a soak.
                    None if flags.stop_on_finding => Some(STOP_ON_FINDING_BACKLOG),
                    other => other,
                },
                // No progress or metrics until a command asks; the system
                // clock, and a stop token the write phase replaces with the
                // one signals fire.
                ..WriteOptions::default()
            },
            prometheus: flags.prometheus.clone(),
            stop_on_finding: flags.stop_on_finding,
            jobs: parse_jobs(&flags.jobs)?,
        })
    }
}

/// Most `--jobs`: more threads than this only take turns on the cores.
pub const MAX_JOBS: usize = 256;

/// `--jobs`: a number of writer jobs from 1 to [`MAX_JOBS`], or `auto` (one
/// per core).
pub fn parse_jobs(text: &str) -> Result<usize> {
    if text == "auto" {
        return Ok(std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_JOBS));
    }
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_JOBS).contains(n))
        .ok_or_else(|| {
            Error::usage(format!(
                "bad --jobs '{text}': give a number of writer jobs from 1 to {MAX_JOBS}, or auto (one per core)"
            ))
        })
}

/// `--verify-backlog` that `--stop-on-finding` turns on when not given
/// (the soak's default).
pub const STOP_ON_FINDING_BACKLOG: u64 = 1024;

/// What to do when the target is lost: `--reconnect-timeout` (0: nothing,
/// the run ends; not given: `default`) and `--nbd-timeout`.
pub fn loss_policy(flags: &TargetLossFlags, default: Duration) -> Result<LossPolicy> {
    let reconnect_timeout = match &flags.reconnect_timeout {
        Some(text) => parse_duration(text).map_err(|e| usage("--reconnect-timeout", e))?,
        None => default,
    };
    let nbd_timeout = parse_duration(&flags.nbd_timeout).map_err(|e| usage("--nbd-timeout", e))?;
    if nbd_timeout.is_zero() {
        return Err(Error::usage(
            "bad --nbd-timeout 0: give how long a request may go unanswered, e.g. 30s",
        ));
    }
    Ok(LossPolicy {
        reconnect_timeout: (!reconnect_timeout.is_zero()).then_some(reconnect_timeout),
        nbd_request_timeout: Some(nbd_timeout),
    })
}

fn usage(flag: &str, message: String) -> Error {
    Error::usage(format!("{flag}: {message}"))
}

/// A block size: power of two, 512 B to 1 MiB.
pub fn parse_block_size(text: &str) -> Result<u32> {
    let size = parse_size(text).map_err(|e| usage("--block-size", e))?;
    if !size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&size) {
        return Err(Error::usage(format!(
            "bad --block-size '{text}' ({size} bytes): use a power of two from 512 B to 1 MiB, e.g. 4KiB"
        )));
    }
    Ok(size as u32)
}

/// A data-reduction ratio: a number from 1 to 100.
fn parse_ratio(text: &str, flag: &str, one_means: &str) -> Result<f64> {
    text.parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && (1.0..=100.0).contains(r))
        .ok_or_else(|| {
            Error::usage(format!(
                "bad {flag} '{text}': use a number from {one_means} to 100"
            ))
        })
}

pub fn parse_engine(text: &str, flag: &str) -> Result<EngineChoice> {
    match text {
        "auto" => Ok(EngineChoice::Auto),
        "uring" | "io_uring" => Ok(EngineChoice::Uring),
        "sync" => Ok(EngineChoice::Sync),
        "inline" => Ok(EngineChoice::Inline),
        _ => Err(Error::usage(format!(
            "bad {flag} '{text}': use auto, uring, sync or inline"
        ))),
    }
}

/// Pseudo-random payload bytes per sector for a compress ratio: a sector
/// then compresses to about 1/ratio of its size (the 48-byte header is
/// counted as incompressible).
pub fn random_bytes_for(compress_ratio: f64) -> u16 {
    let sector = crate::stamp::SECTOR_BYTES as f64;
    let header = crate::stamp::HEADER_BYTES as f64;
    let random = (sector / compress_ratio - header).max(8.0);
    (random as usize).min(crate::stamp::PAYLOAD_BYTES) as u16 & !7
}

/// Per mille of writes with shared content for a dedup ratio D: an array
/// that deduplicates stores about 1/D of what was written (plus the few
/// shared patterns).
pub fn dedup_permille_for(dedup_ratio: f64) -> u16 {
    ((1.0 - 1.0 / dedup_ratio) * 1000.0)
        .round()
        .clamp(0.0, 1000.0) as u16
}

fn parse_sync(text: &str) -> Result<SyncPolicy> {
    match text {
        "none" => Ok(SyncPolicy::None),
        "burst" => Ok(SyncPolicy::Burst),
        number => match number.parse::<u64>() {
            Ok(n) if n > 0 => Ok(SyncPolicy::Every(n)),
            _ => Err(Error::usage(format!(
                "bad --sync '{text}': use none, burst, or a number of writes between flushes"
            ))),
        },
    }
}

/// Settings of a verify phase.
#[derive(Clone, Debug)]
pub struct VerifyConfig {
    pub json: Option<String>,
    /// `--junit FILE`: the checks as JUnit XML, written with the report.
    pub junit: Option<PathBuf>,
    pub show: usize,
    pub engine: EngineChoice,
    pub options: VerifyOptions,
    /// `--on-finding`: the command run on confirmed findings, checked.
    pub on_finding: Option<OnFindingPlan>,
}

impl VerifyConfig {
    /// The verify a write runs after each disruption, when the command
    /// has no verify flags of its own: the defaults.
    pub fn after_writes() -> VerifyConfig {
        VerifyConfig {
            json: None,
            junit: None,
            show: 10,
            engine: EngineChoice::Auto,
            options: VerifyOptions::default(),
            on_finding: None,
        }
    }

    pub fn from_flags(flags: &VerifyFlags) -> Result<VerifyConfig> {
        let mut options = VerifyOptions::default();
        if let Some(threads) = flags.threads {
            if threads == 0 || threads > 1024 {
                return Err(Error::usage(format!(
                    "bad --threads {threads}: use 1 to 1024"
                )));
            }
            options.threads = threads;
        }
        if flags.read_depth == 0 || flags.read_depth > 1024 {
            return Err(Error::usage(format!(
                "bad --read-depth {}: use 1 to 1024",
                flags.read_depth
            )));
        }
        options.queue_depth = flags.read_depth;
        let read_size = parse_size(&flags.read_size).map_err(|e| usage("--read-size", e))?;
        if !read_size.is_power_of_two() || !(4096..=64 << 20).contains(&read_size) {
            return Err(Error::usage(format!(
                "bad --read-size '{}': use a power of two from 4 KiB to 64 MiB",
                flags.read_size
            )));
        }
        options.chunk_bytes = read_size as usize;
        let engine = parse_engine(&flags.read_engine, "--read-engine")?;
        options.max_findings = flags.max_findings;
        options.discard_reads = flags
            .discard_reads
            .as_deref()
            .map(DiscardReads::parse)
            .transpose()
            .map_err(Error::usage)?;
        if let Some(path) = &flags.json
            && path.is_empty()
        {
            return Err(Error::usage(
                "bad --json '': give a file path, or - for stdout",
            ));
        }
        // Checked before verify reads anything: a typo here must not cost
        // the hours of a verify whose report then cannot be written.
        if let Some(path) = flags.json.as_deref().filter(|p| *p != "-")
            && let Some(parent) = std::path::Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(Error::usage(format!(
                "bad --json {path}: directory {} does not exist",
                parent.display()
            )));
        }
        if let Some(path) = &flags.junit {
            crate::outfile::check_path("--junit", path)?;
        }
        let on_finding = on_finding_plan(&flags.on_finding)?;
        Ok(VerifyConfig {
            json: flags.json.clone(),
            junit: flags.junit.clone(),
            show: flags.show,
            engine,
            options,
            on_finding,
        })
    }
}

/// `--disrupt` and its companions, checked: a command, one schedule, and
/// positive times.
pub fn disrupt_plan(flags: &DisruptFlags) -> Result<Option<DisruptPlan>> {
    let duration = |flag: &str, text: &str| -> Result<Duration> {
        let value = parse_duration(text).map_err(|e| usage(flag, e))?;
        if value.is_zero() {
            return Err(Error::usage(format!(
                "bad {flag} {text}: give a time above zero, e.g. 5m"
            )));
        }
        Ok(value)
    };
    let Some(command) = &flags.disrupt else {
        for (flag, given) in [
            ("--disrupt-every", flags.disrupt_every.is_some()),
            ("--disrupt-at", flags.disrupt_at.is_some()),
            ("--recover", flags.recover.is_some()),
        ] {
            if given {
                return Err(Error::usage(format!(
                    "{flag} needs --disrupt CMD, the command that disrupts the target"
                )));
            }
        }
        return Ok(None);
    };
    if command.trim().is_empty() {
        return Err(Error::usage(
            "bad --disrupt: the command is empty; give a shell command, e.g. --disrupt 'systemctl restart tgt'",
        ));
    }
    if flags
        .recover
        .as_deref()
        .is_some_and(|r| r.trim().is_empty())
    {
        return Err(Error::usage(
            "bad --recover: the command is empty; leave the flag out or give a shell command",
        ));
    }
    let schedule = match (&flags.disrupt_every, &flags.disrupt_at) {
        (Some(every), None) => Schedule::Every(duration("--disrupt-every", every)?),
        (None, Some(at)) => Schedule::At(duration("--disrupt-at", at)?),
        (Some(_), Some(_)) => {
            return Err(Error::usage(
                "--disrupt-every and --disrupt-at exclude each other: disrupt on a schedule or once",
            ));
        }
        (None, None) => {
            return Err(Error::usage(
                "--disrupt needs a time: --disrupt-every DURATION, or --disrupt-at DURATION for once",
            ));
        }
    };
    Ok(Some(DisruptPlan {
        command: command.clone(),
        recover: flags.recover.clone(),
        schedule,
        command_timeout: duration("--disrupt-timeout", &flags.disrupt_timeout)?,
    }))
}

/// `--on-finding` and its companions, checked: a command, and a time limit
/// above zero.
pub fn on_finding_plan(flags: &OnFindingFlags) -> Result<Option<OnFindingPlan>> {
    let Some(command) = &flags.on_finding else {
        for (flag, given) in [
            ("--on-finding-each", flags.on_finding_each),
            ("--on-finding-timeout", flags.on_finding_timeout.is_some()),
        ] {
            if given {
                return Err(Error::usage(format!(
                    "{flag} needs --on-finding CMD, the command to run on a finding"
                )));
            }
        }
        return Ok(None);
    };
    if command.trim().is_empty() {
        return Err(Error::usage(
            "bad --on-finding: the command is empty; give a shell command, e.g. --on-finding 'collect-array-logs'",
        ));
    }
    let timeout = match &flags.on_finding_timeout {
        Some(text) => {
            let timeout = parse_duration(text).map_err(|e| usage("--on-finding-timeout", e))?;
            if timeout.is_zero() {
                return Err(Error::usage(format!(
                    "bad --on-finding-timeout {text}: give a time above zero, e.g. 5m"
                )));
            }
            timeout
        }
        None => crate::on_finding::DEFAULT_TIMEOUT,
    };
    Ok(Some(OnFindingPlan {
        command: command.clone(),
        timeout,
        each: flags.on_finding_each,
    }))
}
