//! The phases the commands share: open and check everything a write needs
//! (before anything is written), the write phase, the verify phase and its
//! report, and the checks that a target is the one a manifest was written
//! for.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use crate::cli::TargetArgs;
use crate::config::{DEFAULT_BLOCK_SIZE, VerifyConfig, WriteConfig};
use crate::engine;
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::manifest::{Access, Manifest, ManifestState, NewManifest, TargetRecord};
use crate::metrics::MetricsRecording;
use crate::progress::Goal;
use crate::report::{Report, ReportContext, TargetSection};
use crate::rng::random_u64;
use crate::storage::{self, OpenRequest, Target};
use crate::units::{format_rate, format_size};
use crate::verify;
use crate::workload::{BurstPlan, BurstWorkload};
use crate::writer::{self, WriteOptions, WriteOutcome};

/// Open and check everything a write needs, before anything is written.
pub(super) fn prepare_write(
    args: &TargetArgs,
    config: &WriteConfig,
) -> Result<(Manifest, Arc<dyn Target>)> {
    refuse_manifest_on_target(args)?;
    let existing = if args.manifest.exists() {
        let manifest = Manifest::open(&args.manifest, Access::Write)?;
        let header = manifest.header();
        if let Some(size) = config.size_bytes
            && size != header.target.size_bytes
        {
            return Err(Error::usage(format!(
                "manifest {} was written for a target of {} bytes; --size asks for {size} (use a new manifest for a new size)",
                args.manifest.display(),
                header.target.size_bytes
            )));
        }
        if let Some(block_size) = config.block_size
            && block_size != header.block_size
        {
            return Err(Error::usage(format!(
                "manifest {} uses {} blocks; --block-size asks for {} (use a new manifest for another block size)",
                args.manifest.display(),
                format_size(header.block_size as u64),
                format_size(block_size as u64)
            )));
        }
        let random_bytes = crate::config::random_bytes_for(config.compress_ratio);
        let dedup_permille = crate::config::dedup_permille_for(config.dedup_ratio);
        if config.dedup_ratio != 1.0 && dedup_permille != header.dedup_permille {
            return Err(Error::usage(format!(
                "manifest {} was written with another --dedup-ratio; continue it without the flag or use a new manifest",
                args.manifest.display()
            )));
        }
        if config.compress_ratio != 1.0 && random_bytes != header.random_bytes {
            return Err(Error::usage(format!(
                "manifest {} was written with another --compress-ratio; continue it without the flag or use a new manifest",
                args.manifest.display()
            )));
        }
        Some(manifest)
    } else {
        let parent = args
            .manifest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(Error::usage(format!(
                "cannot create manifest {}: directory {} does not exist",
                args.manifest.display(),
                parent.display()
            )));
        }
        None
    };
    let block_size = config
        .block_size
        .or(existing.as_ref().map(|m| m.header().block_size))
        .unwrap_or(DEFAULT_BLOCK_SIZE);
    if let Some(size) = config.size_bytes
        && size < block_size as u64
    {
        return Err(Error::usage(format!(
            "bad --size {size}: smaller than one {} block",
            format_size(block_size as u64)
        )));
    }
    // A block device written with --size is used only up to that size; a
    // continued run keeps the manifest's limit.
    let create_size = match (&existing, config.size_bytes) {
        (Some(manifest), None) if is_block_device(&args.target) => {
            Some(manifest.header().target.size_bytes)
        }
        (_, size) => size,
    };
    let request = OpenRequest {
        write: true,
        create_size,
        direct: config.direct,
        force: config.force,
    };
    let target = storage::open_with(&args.target, &request, &config.target_loss)?;
    let info = target.info().clone();
    if info.read_only {
        return Err(Error::usage(format!(
            "target {} is read-only; it cannot be written",
            info.uri
        )));
    }
    check_block_size(block_size, &info)?;
    if config.direct && !info.direct_io {
        eprintln!(
            "note: {} does not support O_DIRECT (tmpfs?); writing through the page cache, and verify drops cached pages before reading",
            info.uri
        );
    }
    let manifest = match existing {
        Some(manifest) => {
            check_same_target(&manifest, &info)?;
            manifest
        }
        None => {
            if info.size_bytes < block_size as u64 {
                return Err(Error::usage(format!(
                    "target {} has {} bytes, less than one {} block; pass --size to create or extend an image",
                    info.uri,
                    info.size_bytes,
                    format_size(block_size as u64)
                )));
            }
            let mut record = TargetRecord::from_info(&info);
            // Only whole blocks are used; the manifest records that size.
            record.size_bytes = info.size_bytes / block_size as u64 * block_size as u64;
            Manifest::create(
                &args.manifest,
                NewManifest {
                    run_id: random_u64(),
                    seed: config.seed.unwrap_or_else(random_u64),
                    block_size,
                    random_bytes: crate::config::random_bytes_for(config.compress_ratio),
                    dedup_permille: crate::config::dedup_permille_for(config.dedup_ratio),
                    journal_bytes: crate::manifest::journal::journal_bytes_for(
                        record.size_bytes / block_size as u64,
                    ),
                    target: record,
                },
            )?
        }
    };
    Ok((manifest, target))
}

pub(super) fn write_phase(
    manifest: &mut Manifest,
    target: &Arc<dyn Target>,
    config: &WriteConfig,
) -> Result<WriteOutcome> {
    let stop = crate::signals::install();
    if manifest.header().state == ManifestState::Writing {
        let recovery =
            crate::recovery::recover(manifest, target.as_ref(), config.options.clock.as_ref())?;
        eprintln!(
            "note: the last write of this manifest did not finish; reconciled {} block(s) with pending writes \
             ({} held the new generation, {} the old, {} torn and rewritten)",
            recovery.pending_blocks, recovery.kept_new, recovery.kept_old, recovery.rewritten
        );
    }
    let seed = match config.seed {
        Some(seed) => seed,
        None if manifest.header().writes_completed == 0 => manifest.header().seed,
        None => random_u64(),
    };
    let block_size = manifest.header().block_size as u64;
    let io_blocks = match config.io_size {
        None => (1, 1),
        Some((low, high)) => {
            if low % block_size != 0 || high % block_size != 0 {
                return Err(Error::usage(format!(
                    "bad --io-size: {} and {} must be whole {} blocks",
                    low,
                    high,
                    format_size(block_size)
                )));
            }
            (
                (low / block_size) as u32,
                (high / block_size).min(u32::MAX as u64) as u32,
            )
        }
    };
    let max_io_bytes = io_blocks.1 as usize * block_size as usize;
    if max_io_bytes > 64 << 20 {
        return Err(Error::usage("bad --io-size: at most 64 MiB per write"));
    }
    let (mut engine, note) = engine::build(
        config.engine,
        Arc::clone(target),
        config.queue_depth,
        max_io_bytes,
    )
    .map_err(Error::usage)?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    let mut workload = BurstWorkload::new(BurstPlan {
        block_count: manifest.block_count(),
        burst: config.burst,
        scatter: config.scatter,
        io_blocks,
        overwrite: config.overwrite,
        coverage: config.coverage,
        passes: if config.options.duration.is_some() {
            None
        } else {
            Some(config.passes)
        },
        seed,
    });
    let counters = Arc::new(crate::progress::Counters::default());
    let goal = match config.options.duration {
        Some(duration) => Goal::Time(duration),
        None => Goal::Bytes(
            (manifest.block_count() as f64
                * block_size as f64
                * config.coverage
                * config.passes as f64
                / (1.0 - config.overwrite).max(0.01)) as u64,
        ),
    };
    let display = crate::progress::Display::start("write", goal, Arc::clone(&counters));
    let options = WriteOptions {
        progress: Some(counters),
        stop,
        ..config.options.clone()
    };
    let outcome = writer::write(manifest, engine.as_mut(), &mut workload, &options);
    drop(display);
    let outcome = outcome?;
    crate::say!(
        "wrote {} block(s) in {} writes, {} in {:.2} s: {}, {:.0} IOPS (queue depth {}, engine {}, seed {seed})",
        outcome.blocks_written,
        outcome.writes,
        format_size(outcome.bytes_written),
        outcome.elapsed.as_secs_f64(),
        format_rate(outcome.bytes_per_second()),
        outcome.iops(),
        engine.queue_depth(),
        engine.name(),
    );
    crate::say!(
        "manifest {}: run {:016x}, {} of {} blocks written, {} flush(es), {} journal sync(s)",
        manifest.path().display(),
        manifest.header().run_id,
        manifest.count_written(),
        manifest.block_count(),
        outcome.flushes,
        outcome.journal_syncs,
    );
    if outcome.interrupted {
        crate::say!("stopped early by a signal; the manifest records every completed write");
    }
    if config.options.verify_backlog.is_some() {
        crate::say!(
            "rolling verify: {} block(s) read back while writing, {} finding(s)",
            outcome.rolling_checked_blocks,
            outcome.rolling_findings.len()
        );
        for finding in outcome.rolling_findings.iter().take(10) {
            crate::say!(
                "  block {}: {}: {}",
                finding.block,
                finding.classified.class.name(),
                finding.classified.detail
            );
        }
    }
    Ok(outcome)
}

pub(super) fn verify_phase(
    manifest: &Manifest,
    target: Arc<dyn Target>,
    checkpoint: Option<&str>,
    config: &VerifyConfig,
) -> Result<ExitCode> {
    let report = verify_report(manifest, target, checkpoint, config)?;
    emit_report(&report, config)
}

/// Verify and build the report, printing only notes.
pub(super) fn verify_report(
    manifest: &Manifest,
    target: Arc<dyn Target>,
    checkpoint: Option<&str>,
    config: &VerifyConfig,
) -> Result<Report> {
    let expected = manifest.expected(checkpoint)?;
    let format = manifest.format();
    let mut notes = Vec::new();
    if !target.info().direct_io {
        let note = format!(
            "{} does not support O_DIRECT; reads went through the page cache after dropping its cached pages",
            target.info().uri
        );
        eprintln!("note: {note}");
        notes.push(note);
    }
    let chunk_bytes = config.options.chunk_bytes.max(format.block_size as usize);
    // Reads from a memory-backed target keep a queue too: the checking
    // threads then overlap the copying.
    let read_engine = match config.engine {
        engine::EngineChoice::Auto => engine::EngineChoice::AutoQueued,
        other => other,
    };
    let (mut engine, note) = engine::build(
        read_engine,
        Arc::clone(&target),
        config.options.queue_depth,
        chunk_bytes,
    )
    .map_err(Error::usage)?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    if expected.pending_blocks() > 0 {
        let note = format!(
            "the writer did not finish: {} block(s) had writes pending (not yet durable); for those, the old or the new generation is accepted",
            expected.pending_blocks()
        );
        eprintln!("note: {note}");
        notes.push(note);
    }
    let counters = Arc::new(crate::progress::Counters::default());
    let display = crate::progress::Display::start(
        "verify",
        Goal::Bytes(manifest.block_count() * format.block_size as u64),
        Arc::clone(&counters),
    );
    let options = verify::VerifyOptions {
        chunk_bytes,
        ..config.options.clone()
    };
    let outcome = verify::verify(
        Arc::clone(&target),
        &format,
        &expected,
        engine.as_mut(),
        &options,
        Some(&counters),
    );
    drop(display);
    let outcome = outcome?;
    if let Some(why) = &outcome.target_lost {
        notes.push(format!(
            "the target was lost after {} of {} block(s) were checked ({why}); the rest were not judged",
            outcome.blocks.checked, outcome.blocks.total
        ));
    }
    let info = target.info();
    let mut report = Report::new(
        ReportContext {
            run_id: manifest.header().run_id,
            target: TargetSection {
                uri: info.uri.clone(),
                kind: info.kind.to_string(),
                size_bytes: manifest.header().target.size_bytes,
            },
            block_size: format.block_size,
            checkpoint: checkpoint.map(str::to_string),
            direct_io: info.direct_io,
            engine: engine.name().to_string(),
            notes,
        },
        &outcome,
    );
    report.metrics = options.metrics.as_ref().map(|m| m.summary());
    Ok(report)
}

/// Print the summary and write the JSON report where asked; the exit code.
/// A verify that lost its target still writes its partial report, then
/// fails the run (exit 3) with why.
pub(super) fn emit_report(report: &Report, config: &VerifyConfig) -> Result<ExitCode> {
    let summary = match &report.target_lost {
        Some(_) => String::new(),
        None => report.human_summary(config.show),
    };
    match config.json.as_deref() {
        Some("-") => {
            eprint!("{summary}");
            println!("{}", report.to_json());
        }
        Some(path) => {
            std::fs::write(path, report.to_json() + "\n")
                .map_err(|e| Error::run(format!("cannot write JSON report {path}: {e}")))?;
            print!("{summary}");
        }
        None => print!("{summary}"),
    }
    let _ = std::io::stdout().flush();
    if let Some(why) = &report.target_lost {
        return Err(Error::run(format!(
            "verify stopped: the target was lost after {} of {} block(s) were checked: {why}",
            report.blocks.checked, report.blocks.total
        )));
    }
    Ok(if report.clean {
        ExitCode::Clean
    } else {
        ExitCode::Findings
    })
}

/// Write the last seconds of the `--metrics` file; a failure there is a
/// warning, not the run's verdict.
pub(super) fn finish_metrics(recording: MetricsRecording) {
    if let Some(warning) = recording.finish() {
        eprintln!("warning: {warning}");
    }
}

pub(super) fn open_for_reading(
    uri: &str,
    manifest: &Manifest,
    loss: &storage::LossPolicy,
) -> Result<Arc<dyn Target>> {
    // Only the first `size_bytes` of a block device belong to the run.
    let create_size = is_block_device(uri).then_some(manifest.header().target.size_bytes);
    let request = OpenRequest {
        write: false,
        create_size,
        direct: true,
        force: false,
    };
    let target = storage::open_with(uri, &request, loss)?;
    check_same_target(manifest, target.info())?;
    Ok(target)
}

/// The target must be the size the manifest was written for; a different
/// identity is worth a warning (a verify on another host sees other paths).
pub(super) fn check_same_target(manifest: &Manifest, info: &storage::TargetInfo) -> Result<()> {
    let header = manifest.header();
    let usable = info.size_bytes / header.block_size as u64 * header.block_size as u64;
    if usable != header.target.size_bytes {
        return Err(Error::usage(format!(
            "manifest {} was written for a target of {} bytes; {} has {} bytes",
            manifest.path().display(),
            header.target.size_bytes,
            info.uri,
            info.size_bytes
        )));
    }
    check_block_size(header.block_size, info)?;
    let recorded = header.target.identity();
    if recorded != info.identity && recorded != Default::default() {
        eprintln!(
            "warning: {} does not look like the device the manifest was written on (recorded {:?}, found {:?})",
            info.uri, recorded, info.identity
        );
    }
    Ok(())
}

pub(super) fn check_block_size(block_size: u32, info: &storage::TargetInfo) -> Result<()> {
    if !block_size.is_multiple_of(info.logical_sector_size) {
        return Err(Error::usage(format!(
            "block size {} is not a multiple of {}'s logical sector size ({} bytes)",
            format_size(block_size as u64),
            info.uri,
            info.logical_sector_size
        )));
    }
    Ok(())
}

pub(super) fn is_block_device(uri: &str) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(uri).is_ok_and(|m| m.file_type().is_block_device())
}

/// The manifest never lives on the target.
pub(super) fn refuse_manifest_on_target(args: &TargetArgs) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(a), Ok(b)) = (
        std::fs::metadata(&args.manifest),
        std::fs::metadata(&args.target),
    ) {
        let same = a.dev() == b.dev() && a.ino() == b.ino();
        if same {
            return Err(Error::usage(format!(
                "the manifest {} is the target itself; keep the manifest off the target",
                args.manifest.display()
            )));
        }
    }
    if args.manifest.as_os_str() == args.target.as_str() {
        return Err(Error::usage(
            "the manifest and the target are the same path; keep the manifest off the target",
        ));
    }
    Ok(())
}
