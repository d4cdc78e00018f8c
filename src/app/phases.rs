//! The phases the commands share: open and check everything a write needs
//! (before anything is written), the write phase, the verify phase and its
//! report, and the checks that a target is the one a manifest was written
//! for.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use crate::buf::AlignedBuf;
use crate::cli::TargetArgs;
use crate::config::{DEFAULT_BLOCK_SIZE, VerifyConfig, WriteConfig};
use crate::engine::{self, EngineChoice};
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::manifest::Expected;
use crate::manifest::{Access, Manifest, ManifestState, NewManifest, TargetRecord, WriteSession};
use crate::metrics::MetricsRecording;
use crate::metrics::prometheus::{RunLabels, Textfile};
use crate::progress::Goal;
use crate::report::{Report, ReportContext, TargetSection, junit};
use crate::rng::random_u64;
use crate::stamp;
use crate::storage::{self, DiscardReads, OpenRequest, Target};
use crate::units::{format_rate, format_size};
use crate::verify::{self, Classified, Finding, FindingClass};
use crate::workload::{BurstPlan, BurstWorkload, Scatter};
use crate::writer::{self, RollingConfirm, WriteOptions, WriteOutcome};

/// A write's flags resolved against the manifest it continues (if any):
/// everything that can be checked without changing the target or the
/// manifest. As in ripgrep's low → high args split, nothing acts on a flag
/// before every flag has been checked.
pub(super) struct WritePlan {
    pub(super) existing: Option<Manifest>,
    block_size: u32,
    /// What the image file is created or extended to (block devices: the
    /// part of the device the run uses).
    pub(super) create_size: Option<u64>,
    max_io_bytes: usize,
}

/// Check every flag of a write against the manifest it continues and the
/// engines it asks for; changes nothing.
pub(super) fn plan_write(
    args: &TargetArgs,
    config: &WriteConfig,
    read_engine: Option<EngineChoice>,
) -> Result<WritePlan> {
    refuse_manifest_on_target(args)?;
    let existing = if args.manifest.exists() {
        let manifest = Manifest::open(&args.manifest, Access::Write)?;
        check_flags_against_manifest(&manifest, config)?;
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
    let max_io_bytes =
        io_blocks(config.io_size, block_size as u64)?.1 as usize * block_size as usize;
    check_engine_available(config.engine, &args.target, "--engine")?;
    if let Some(choice) = read_engine {
        check_engine_available(choice, &args.target, "--read-engine")?;
    }
    // A block device written with --size is used only up to that size; a
    // continued run keeps the manifest's limit.
    let create_size = match (&existing, config.size_bytes) {
        (Some(manifest), None) if is_block_device(&args.target) => {
            Some(manifest.header().target.size_bytes)
        }
        (_, size) => size,
    };
    Ok(WritePlan {
        existing,
        block_size,
        create_size,
        max_io_bytes,
    })
}

/// A continued manifest keeps its size, block size and data-reduction
/// settings; flags that ask for others are refused.
fn check_flags_against_manifest(manifest: &Manifest, config: &WriteConfig) -> Result<()> {
    let header = manifest.header();
    let path = manifest.path().display();
    if let Some(size) = config.size_bytes
        && size != header.target.size_bytes
    {
        return Err(Error::usage(format!(
            "manifest {path} was written for a target of {} bytes; --size asks for {size} (use a new manifest for a new size)",
            header.target.size_bytes
        )));
    }
    if let Some(block_size) = config.block_size
        && block_size != header.block_size
    {
        return Err(Error::usage(format!(
            "manifest {path} uses {} blocks; --block-size asks for {} (use a new manifest for another block size)",
            format_size(header.block_size as u64),
            format_size(block_size as u64)
        )));
    }
    let random_bytes = crate::config::random_bytes_for(config.compress_ratio);
    let dedup_permille = crate::config::dedup_permille_for(config.dedup_ratio);
    if config.dedup_ratio != 1.0 && dedup_permille != header.dedup_permille {
        return Err(Error::usage(format!(
            "manifest {path} was written with another --dedup-ratio; continue it without the flag or use a new manifest"
        )));
    }
    if config.compress_ratio != 1.0 && random_bytes != header.random_bytes {
        return Err(Error::usage(format!(
            "manifest {path} was written with another --compress-ratio; continue it without the flag or use a new manifest"
        )));
    }
    Ok(())
}

/// Blocks per write (fewest, most) for `--io-size`: whole blocks, at most
/// 64 MiB per write.
fn io_blocks(io_size: Option<(u64, u64)>, block_size: u64) -> Result<(u32, u32)> {
    let Some((low, high)) = io_size else {
        return Ok((1, 1));
    };
    if low % block_size != 0 || high % block_size != 0 {
        let sizes = if low == high {
            format!("{low} bytes is not a whole number of")
        } else {
            format!("{low} and {high} bytes are not both whole numbers of")
        };
        return Err(Error::usage(format!(
            "bad --io-size: {sizes} {} blocks",
            format_size(block_size)
        )));
    }
    if high > 64 << 20 {
        return Err(Error::usage("bad --io-size: at most 64 MiB per write"));
    }
    Ok(((low / block_size) as u32, (high / block_size) as u32))
}

/// Refuse an engine that cannot drive this target, decided without opening
/// it: only an explicit `uring` is ever refused (no io_uring here, or an NBD
/// target, which has no file descriptor for it).
fn check_engine_available(choice: EngineChoice, uri: &str, flag: &str) -> Result<()> {
    if choice != EngineChoice::Uring {
        return Ok(());
    }
    let has_fd = !storage::is_nbd_uri(uri);
    let probed = if has_fd {
        engine::uring::probe()
    } else {
        Ok(())
    };
    match engine::choose(choice, probed, has_fd) {
        engine::Decision::Refuse(message) => Err(Error::usage(format!(
            "{flag} uring: target {uri}: {message}"
        ))),
        _ => Ok(()),
    }
}

/// Open and check everything a write needs, then open (creating or
/// extending an image file) the target and create the manifest. Every
/// usage error is raised before the first of those changes; recovery of an
/// unfinished manifest waits for the write phase.
pub(super) fn prepare_write(
    args: &TargetArgs,
    config: &WriteConfig,
    read_engine: Option<EngineChoice>,
) -> Result<(Manifest, Arc<dyn Target>)> {
    let plan = plan_write(args, config, read_engine)?;
    let target = open_planned(args, config, &plan)?;
    let manifest = manifest_for(args, config, plan, &target)?;
    Ok((manifest, target))
}

/// Open the target of a checked plan for writing (creating or extending
/// an image file) and check it against the plan; the manifest is not
/// touched yet.
pub(super) fn open_planned(
    args: &TargetArgs,
    config: &WriteConfig,
    plan: &WritePlan,
) -> Result<Arc<dyn Target>> {
    let block_size = plan.block_size;
    let request = OpenRequest {
        write: true,
        create_size: plan.create_size,
        direct: config.direct,
        force: config.force,
    };
    // For an image file this may create or extend it; none of the checks
    // below can refuse a writable image file (512-byte sectors, any size
    // the plan accepted).
    let target = storage::open_with(&args.target, &request, &config.target_loss)?;
    let info = target.info().clone();
    if info.read_only {
        return Err(Error::usage(format!(
            "target {} is read-only; it cannot be written",
            info.uri
        )));
    }
    check_block_size(block_size, &info)?;
    if let Some(manifest) = &plan.existing {
        check_same_target(manifest, &info)?;
    } else if info.size_bytes < block_size as u64 {
        return Err(Error::usage(format!(
            "target {} has {} bytes, less than one {} block; pass --size to create or extend an image",
            info.uri,
            info.size_bytes,
            format_size(block_size as u64)
        )));
    }
    check_space_ops(config, target.as_ref(), block_size)?;
    if config.engine == EngineChoice::Uring {
        // The probe above said io_uring works; building the engine proves
        // it for this target before the manifest changes.
        engine::build(
            config.engine,
            Arc::clone(&target),
            config.queue_depth,
            plan.max_io_bytes,
        )
        .map_err(Error::usage)?;
    }
    if config.direct && !info.direct_io {
        eprintln!(
            "note: {} does not support O_DIRECT (tmpfs?); writing through the page cache, and verify drops cached pages before reading",
            info.uri
        );
    }
    Ok(target)
}

/// The manifest a plan continues, or a new one for `target`.
pub(super) fn manifest_for(
    args: &TargetArgs,
    config: &WriteConfig,
    plan: WritePlan,
    target: &Arc<dyn Target>,
) -> Result<Manifest> {
    let block_size = plan.block_size;
    let info = target.info();
    let manifest = match plan.existing {
        Some(manifest) => manifest,
        None => {
            let mut record = TargetRecord::from_info(info);
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
    Ok(manifest)
}

/// `--discard` and `--write-zeroes` need a target that carries them out,
/// in whole units of its discard granularity.
fn check_space_ops(config: &WriteConfig, target: &dyn Target, block_size: u32) -> Result<()> {
    let space = target.space_ops();
    let uri = &target.info().uri;
    if config.discard > 0.0 {
        if !space.discard {
            return Err(Error::usage(format!(
                "target {uri} does not support discard; drop --discard"
            )));
        }
        if space.discard_granularity > 0
            && !(block_size as u64).is_multiple_of(space.discard_granularity)
        {
            return Err(Error::usage(format!(
                "target {uri} discards in units of {}, more than (or not dividing) the {} block: use --block-size {} or larger",
                format_size(space.discard_granularity),
                format_size(block_size as u64),
                format_size(space.discard_granularity)
            )));
        }
    }
    if config.zero > 0.0 && !space.write_zeroes {
        return Err(Error::usage(format!(
            "target {uri} does not support write-zeroes; drop --write-zeroes"
        )));
    }
    Ok(())
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
    // Checked by prepare_write before anything changed.
    let io_blocks = io_blocks(config.io_size, block_size)?;
    let max_io_bytes = io_blocks.1 as usize * block_size as usize;
    let (mut engine, note) = engine::build_jobs(
        config.engine,
        Arc::clone(target),
        config.queue_depth,
        max_io_bytes,
        config.jobs,
        block_size,
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
        discard: config.discard,
        zero: config.zero,
    });
    manifest.header_mut().record_session(WriteSession {
        first_write_seq: 0,
        workload: if config.scatter == Scatter::Sequential {
            "sequential"
        } else {
            "burst"
        }
        .to_string(),
        burst: config.burst as u32,
        scatter: scatter_name(config.scatter).to_string(),
        queue_depth: config.queue_depth as u32,
        io_blocks: [io_blocks.0, io_blocks.1],
        overwrite: config.overwrite,
        discard: config.discard,
        write_zeroes: config.zero,
    });
    if config.discard > 0.0 || config.zero > 0.0 {
        // What the verify holds discarded blocks to: the user's word, else
        // the target's, else either zeros or the previous contents.
        let promise = config
            .discard_reads
            .or(target.space_ops().discard_reads)
            .unwrap_or(DiscardReads::Any);
        manifest.header_mut().discard_reads = Some(promise);
    }
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
        loss: target.loss_counters(),
        fast_zero: target.space_ops().fast_zero,
        // Rolling-verify findings are re-read at once, before any later
        // write of their blocks.
        confirm: config.options.confirm.clone().or_else(|| {
            Some(RollingConfirm {
                target: Arc::clone(target),
                watch: None,
            })
        }),
        ..config.options.clone()
    };
    let outcome = writer::write(manifest, engine.as_mut(), &mut workload, &options);
    drop(display);
    let outcome = outcome?;
    if let Some(metrics) = &config.options.metrics {
        for finding in &outcome.rolling_findings {
            metrics.count_findings(finding.classified.class.name(), 1);
        }
    }
    crate::say!(
        "wrote {} block(s) in {} writes, {} in {:.2} s: {}, {:.0} IOPS (queue depth {}, engine {}{}, seed {seed})",
        outcome.blocks_written,
        outcome.writes,
        format_size(outcome.bytes_written),
        outcome.elapsed.as_secs_f64(),
        format_rate(outcome.bytes_per_second()),
        outcome.iops(),
        engine.queue_depth(),
        engine.name(),
        jobs_phrase(config.jobs),
    );
    if outcome.zeroings + outcome.discards > 0 {
        crate::say!(
            "{} block(s) zeroed in {} write-zeroes, {} block(s) discarded in {} discards",
            outcome.blocks_zeroed,
            outcome.zeroings,
            outcome.blocks_discarded,
            outcome.discards,
        );
    }
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
    } else if outcome.stopped_on_finding {
        crate::say!(
            "stopped early on a finding (--stop-on-finding); the manifest records every completed write"
        );
    }
    if outcome.rewrites > 0 {
        crate::say!(
            "wrote {} write(s) again: they completed on a connection to the target that was replaced before a flush covered them",
            outcome.rewrites
        );
    }
    if config.options.verify_backlog.is_some() {
        crate::say!(
            "rolling verify: {} block(s) read back while writing, {} finding(s)",
            outcome.rolling_checked_blocks,
            outcome.rolling_findings.len()
        );
        for finding in outcome.rolling_findings.iter().take(10) {
            crate::say!(
                "  block {}: {} [{}]: {}",
                finding.block,
                finding.classified.class.name(),
                if finding.persistent {
                    "persistent"
                } else {
                    "transient"
                },
                finding.classified.detail
            );
        }
    }
    Ok(outcome)
}

/// ", N jobs" after the engine's name in the summary (nothing for one).
fn jobs_phrase(jobs: usize) -> String {
    if jobs > 1 {
        format!(", {jobs} jobs")
    } else {
        String::new()
    }
}

/// The name `--scatter` takes for a scatter.
fn scatter_name(scatter: Scatter) -> &'static str {
    match scatter {
        Scatter::Random => "random",
        Scatter::Stride => "stride",
        Scatter::Reverse => "reverse",
        Scatter::Interleave => "interleave",
        Scatter::Sequential => "sequential",
    }
}

/// Verify and build the report, printing only notes.
pub(super) fn verify_report(
    manifest: &Manifest,
    target: Arc<dyn Target>,
    checkpoint: Option<&str>,
    config: &VerifyConfig,
) -> Result<Report> {
    let expected = manifest.expected(checkpoint)?;
    verify_expected(manifest, expected, target, checkpoint, config)
}

/// Verify the blocks of `expected` (the state of `checkpoint`, or the
/// latest) and build the report, printing only notes.
pub(super) fn verify_expected(
    manifest: &Manifest,
    expected: Expected<'_>,
    target: Arc<dyn Target>,
    checkpoint: Option<&str>,
    config: &VerifyConfig,
) -> Result<Report> {
    let mut expected = expected;
    if let Some(promise) = config.options.discard_reads {
        expected.set_discard_reads(promise);
    }
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
            "{} block(s) had writes pending (the writer had not made them durable); for those, the old or the new generation is accepted",
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
    // A truncated copy (open_for_reading let it through): check what it
    // holds, report the written blocks past its end.
    let target_bytes = target.info().size_bytes;
    let blocks_on_target = target_bytes / format.block_size as u64;
    let truncated = blocks_on_target < manifest.block_count();
    if truncated {
        let note = format!(
            "the target has {target_bytes} bytes, the manifest {}: blocks {blocks_on_target} to {} were not checked; those the run wrote are unreadable findings",
            manifest.header().target.size_bytes,
            manifest.block_count() - 1
        );
        eprintln!("note: {note}");
        notes.push(note);
    }
    let options = verify::VerifyOptions {
        chunk_bytes,
        block_limit: truncated.then_some(blocks_on_target),
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
    let mut outcome = outcome?;
    if let Some(why) = &outcome.target_lost {
        notes.push(format!(
            "the target was lost after {} of {} block(s) were checked ({why}); the rest were not judged",
            outcome.blocks.checked, outcome.blocks.total
        ));
    }
    if truncated {
        let mut beyond = 0;
        for finding in beyond_the_end_findings(
            &expected,
            &format,
            blocks_on_target,
            target_bytes,
            manifest.header().target.size_bytes,
        ) {
            beyond += 1;
            if let Some(watch) = &options.watch
                && watch.wants(&finding)
            {
                watch.confirmed(&finding);
            }
            if outcome.findings.len() < options.max_findings {
                outcome.findings.push(finding);
            }
        }
        if beyond > 0 {
            match outcome
                .counts_by_class
                .iter_mut()
                .find(|(class, _)| *class == FindingClass::Unreadable)
            {
                Some((_, count)) => *count += beyond,
                None => outcome
                    .counts_by_class
                    .push((FindingClass::Unreadable, beyond)),
            }
        }
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
    if let Some(metrics) = &options.metrics {
        for (class, count) in &outcome.counts_by_class {
            metrics.count_findings(class.name(), *count);
        }
        report.metrics = Some(metrics.summary());
    }
    report.group_incidents(&outcome, &manifest.header().sessions);
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
    emit_summary_and_json(&summary, config.json.as_deref(), || report.to_json())?;
    if let Some(path) = &config.junit {
        junit::TestSuites::of_report(report, crate::manifest::unix_now_s()).write(path)?;
    }
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

/// The human summary on stdout and the JSON report to `json`; with
/// `--json -` the report takes stdout and the summary goes to stderr.
pub(super) fn emit_summary_and_json(
    summary: &str,
    json: Option<&str>,
    report_json: impl FnOnce() -> String,
) -> Result<()> {
    match json {
        Some("-") => {
            eprint!("{summary}");
            println!("{}", report_json());
        }
        Some(path) => {
            std::fs::write(path, report_json() + "\n")
                .map_err(|e| Error::run(format!("cannot write JSON report {path}: {e}")))?;
            print!("{summary}");
        }
        None => print!("{summary}"),
    }
    let _ = std::io::stdout().flush();
    Ok(())
}

/// Start recording a write's metrics, keeping its `--prometheus` textfile
/// (if asked for) up to date; `command` and `target` name the run there.
pub(super) fn start_recording(
    metrics_path: Option<&Path>,
    config: &WriteConfig,
    command: &'static str,
    target: &str,
) -> Result<MetricsRecording> {
    let textfile = config.prometheus.as_deref().map(|path| {
        let classes: Vec<&'static str> = FindingClass::ALL.iter().map(|c| c.name()).collect();
        Textfile::new(
            path,
            RunLabels {
                command,
                target: target.to_string(),
                host: crate::report::hostname(),
            },
            &classes,
        )
    });
    MetricsRecording::start_with(metrics_path, textfile)
}

/// Write the last seconds of the `--metrics` file and the final textfile;
/// a failure there is a warning, not the run's verdict.
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
    let info = target.info();
    let header = manifest.header();
    let block_size = header.block_size as u64;
    let blocks_on_target = info.size_bytes / block_size;
    if blocks_on_target > 0 && blocks_on_target < manifest.block_count() {
        check_block_size(header.block_size, info)?;
        if holds_stamps_of_this_run(manifest, target.as_ref(), blocks_on_target) {
            // A truncated copy (a restore cut short): verify what is there;
            // the written blocks past its end become findings (verify_report
            // notes it).
            warn_if_other_device(manifest, info);
            return Ok(target);
        }
    }
    check_same_target(manifest, target.info())?;
    Ok(target)
}

/// Blocks of the manifest sampled to tell a truncated copy of the target
/// from another target that is merely shorter.
const TRUNCATED_COPY_SAMPLES: u64 = 64;

/// Whether any of up to 64 blocks the manifest says were written, spread
/// over the first `blocks_on_target` blocks, holds a stamp of this run.
fn holds_stamps_of_this_run(
    manifest: &Manifest,
    target: &dyn Target,
    blocks_on_target: u64,
) -> bool {
    let format = manifest.format();
    let mut buf = AlignedBuf::new(format.block_size as usize);
    let stride = blocks_on_target.div_ceil(TRUNCATED_COPY_SAMPLES).max(1);
    (0..blocks_on_target).step_by(stride as usize).any(|start| {
        let end = (start + stride).min(blocks_on_target);
        let Some(block) = (start..end).find(|&b| manifest.generation(b) != 0) else {
            return false;
        };
        target
            .read_at(&mut buf, block * format.block_size as u64)
            .is_ok()
            && buf.chunks_exact(stamp::SECTOR_BYTES).any(|sector| {
                matches!(stamp::decode_sector(sector),
                    stamp::SectorContent::Stamp(h) if h.run_id == format.run_id)
            })
    })
}

/// The written blocks of a truncated target past its end, as `unreadable`
/// findings: the data the run wrote there is gone from this copy.
fn beyond_the_end_findings(
    expected: &Expected<'_>,
    format: &stamp::RunFormat,
    blocks_on_target: u64,
    target_bytes: u64,
    manifest_bytes: u64,
) -> impl Iterator<Item = Finding> {
    (blocks_on_target..expected.block_count()).filter_map(move |block| {
        let generation = expected.generation(block);
        (generation != 0).then(|| {
            let mut finding = Finding::from_read(
                block,
                format.block_size,
                generation,
                &[],
                Classified {
                    class: FindingClass::Unreadable,
                    found_generation: None,
                    found_block: None,
                    detail: format!(
                        "beyond the end of the target (target has {target_bytes} bytes, the manifest {manifest_bytes})"
                    ),
                    torn_split: None,
                    corruption: None,
                },
            );
            finding.unreadable_sectors = (0..format.sectors_per_block() as u32).collect();
            finding.persistent = true;
            finding
        })
    })
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
    warn_if_other_device(manifest, info);
    Ok(())
}

fn warn_if_other_device(manifest: &Manifest, info: &storage::TargetInfo) {
    let recorded = manifest.header().target.identity();
    if recorded != info.identity && recorded != Default::default() {
        eprintln!(
            "warning: {} does not look like the device the manifest was written on (recorded {:?}, found {:?})",
            info.uri, recorded, info.identity
        );
    }
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
