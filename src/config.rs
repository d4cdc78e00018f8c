//! Resolved configuration: the raw flags of `cli`, parsed and validated.
//! Every error here is a usage error (exit 2) raised before any target is
//! opened, so bad input never writes a byte.

use std::time::Duration;

use crate::cli::{VerifyFlags, WriteFlags};
use crate::error::{Error, Result};
use crate::units::{parse_duration, parse_fraction, parse_size};
use crate::verify::VerifyOptions;
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
    pub direct: bool,
    pub force: bool,
    pub options: WriteOptions,
}

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
        let burst = flags.burst.unwrap_or(flags.queue_depth);
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
        Ok(WriteConfig {
            size_bytes,
            block_size,
            seed: flags.seed,
            passes: flags.passes,
            coverage,
            queue_depth: flags.queue_depth,
            burst,
            direct: !flags.buffered,
            force: flags.force,
            options: WriteOptions {
                sync,
                fua: flags.fua,
                duration,
                burst_gap,
            },
        })
    }
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

fn parse_sync(text: &str) -> Result<SyncPolicy> {
    match text {
        "end" | "none" => Ok(SyncPolicy::End),
        "burst" => Ok(SyncPolicy::Burst),
        number => match number.parse::<u64>() {
            Ok(n) if n > 0 => Ok(SyncPolicy::Every(n)),
            _ => Err(Error::usage(format!(
                "bad --sync '{text}': use end, burst, or a number of writes between flushes"
            ))),
        },
    }
}

/// Settings of a verify phase.
#[derive(Clone, Debug)]
pub struct VerifyConfig {
    pub json: Option<String>,
    pub show: usize,
    pub options: VerifyOptions,
}

impl VerifyConfig {
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
        options.max_findings = flags.max_findings;
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
        Ok(VerifyConfig {
            json: flags.json.clone(),
            show: flags.show,
            options,
        })
    }
}
