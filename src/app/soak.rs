//! `blockstamp soak`: hours of bursty writes with a full verification pass
//! at every interval and a rolling verify of recent writes in between; a
//! clean stop on SIGINT/SIGTERM ends with a final verify and the report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::disruptions;
use super::on_finding;
use super::phases::{emit_report, prepare_write, start_recording, verify_report, write_phase};
use crate::cli::{SoakArgs, TargetArgs};
use crate::config::{VerifyConfig, WriteConfig};
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::manifest::Manifest;
use crate::metrics::MetricsRecording;
use crate::report::{FindingRecord, Interval, Report, SoakSection};
use crate::storage::Target;
use crate::units::parse_duration;
use crate::writer::WriteOutcome;

pub fn soak_command(args: &SoakArgs, target_args: &TargetArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let SoakSettings {
        mut write,
        mut verify,
        duration,
        verify_every,
    } = SoakSettings::from_args(args)?;
    reconnect_by_default(&mut write, args, &target_args.target);
    let recording = start_recording(
        args.metrics.metrics.as_deref(),
        &write,
        "soak",
        &target_args.target,
    )?;
    write.options.metrics = Some(recording.metrics());
    verify.options.metrics = Some(recording.metrics());
    let (mut manifest, target) = prepare_write(target_args, &write, Some(verify.engine))?;
    recording.run_started(manifest.header().run_id);
    let (report, any_earlier_findings) = soak_prepared(
        &recording,
        &mut manifest,
        &target,
        write,
        &verify,
        (duration, verify_every),
        started,
    )?;
    let code = emit_report(&report, &verify)?;
    if let Some(warning) = recording.finish() {
        eprintln!("warning: {warning}");
    }
    Ok(if any_earlier_findings {
        ExitCode::Findings
    } else {
        code
    })
}

/// A soak's flags, checked: the write and verify settings, how long, and
/// how often the full verify runs.
pub(super) struct SoakSettings {
    pub(super) write: WriteConfig,
    pub(super) verify: VerifyConfig,
    pub(super) duration: Duration,
    pub(super) verify_every: Duration,
}

impl SoakSettings {
    pub(super) fn from_args(args: &SoakArgs) -> Result<SoakSettings> {
        let mut write = WriteConfig::from_flags(&args.write)?;
        let verify = VerifyConfig::from_flags(&args.verify)?;
        crate::signals::human_to_stderr(verify.json.as_deref() == Some("-"));
        let Some(duration) = write.options.duration else {
            return Err(Error::usage("soak needs --duration, e.g. --duration 8h"));
        };
        let verify_every = parse_duration(&args.verify_every)
            .map_err(|e| Error::usage(format!("--verify-every: {e}")))?;
        if verify_every.is_zero() {
            return Err(Error::usage(
                "bad --verify-every 0: give an interval such as 10m",
            ));
        }
        if write.options.verify_backlog.is_none() {
            // Rolling verify is part of a soak: by default, read back every
            // 1024 writes.
            write.options.verify_backlog = Some(1024);
        }
        Ok(SoakSettings {
            write,
            verify,
            duration,
            verify_every,
        })
    }
}

/// A soak over NBD is meant to outlive a server restart: it reconnects by
/// default. A file or device is reopened only when asked (or with
/// --disrupt): the reopening target drives IO through the sync engine, as
/// io_uring holds a descriptor a reopen replaces.
pub(super) fn reconnect_by_default(config: &mut WriteConfig, args: &SoakArgs, uri: &str) {
    if args.write.target_loss.reconnect_timeout.is_none() && crate::storage::is_nbd_uri(uri) {
        config.target_loss.reconnect_timeout = Some(crate::config::DEFAULT_SOAK_RECONNECT);
    }
}

/// The soak of a prepared target, with its disruptions and
/// `--on-finding`: the final report (its `soak` section filled in), and
/// whether a check before the final verify found anything.
pub(super) fn soak_prepared(
    recording: &MetricsRecording,
    manifest: &mut Manifest,
    target: &Arc<dyn Target>,
    mut write_config: WriteConfig,
    verify_config: &VerifyConfig,
    (duration, verify_every): (Duration, Duration),
    started: Instant,
) -> Result<(Report, bool)> {
    let mut verify_config = verify_config.clone();
    crate::signals::install();
    let actions = on_finding::arm(
        &mut verify_config,
        Some(&mut write_config),
        manifest,
        target,
        started,
    );
    let schedule = disruptions::start(&mut write_config, target, manifest, &verify_config);
    let result = soak_loop(
        recording,
        manifest,
        target,
        &write_config,
        &verify_config,
        duration,
        verify_every,
    );
    let (mut report, soak) = match result {
        Ok(done) => done,
        Err(error) => {
            disruptions::abandon(&schedule);
            return Err(error);
        }
    };
    let disrupted = disruptions::finish(schedule, manifest)?;
    let any_earlier_findings = !soak.rolling_findings.is_empty() || soak.interval_findings > 0;
    if any_earlier_findings {
        report.clean = false;
        crate::say!(
            "soak: {} rolling-verify finding(s), {} finding(s) in interval verifies",
            soak.rolling_findings.len(),
            soak.interval_findings
        );
    }
    report.soak = Some(soak);
    report.write_jobs = Some(write_config.jobs as u32);
    disruptions::add_to_report(&mut report, disrupted);
    on_finding::finish(&actions, &mut report);
    Ok((report, any_earlier_findings))
}

/// The soak's write intervals and their verifies, and the final verify:
/// its report and the soak section.
fn soak_loop(
    recording: &MetricsRecording,
    manifest: &mut Manifest,
    target: &Arc<dyn Target>,
    write_config: &WriteConfig,
    verify_config: &VerifyConfig,
    duration: Duration,
    verify_every: Duration,
) -> Result<(Report, SoakSection)> {
    let mut interval_verify = VerifyConfig {
        json: None,
        ..verify_config.clone()
    };
    interval_verify.options.watch = verify_config
        .options
        .watch
        .as_ref()
        .map(|w| w.for_source("interval_verify"));
    // `--stop-on-finding`: ends the soak as a signal does, but is no signal.
    let finding_stop = &write_config.options.finding_stop;
    let stop_requested = || crate::signals::stop_requested() || finding_stop.stop_requested();
    let started = Instant::now();
    let mut intervals = Vec::new();
    let mut rolling = Vec::new();
    let (mut writes, mut bytes_written, mut rolling_checked, mut interval_findings) = (0, 0, 0, 0);
    // Zeroings, blocks zeroed, discards, blocks discarded.
    let mut space_ops = [0u64; 4];
    // The last interval's verify while nothing has been written since: if
    // the soak ends now (its time is up, or a signal came while that verify
    // ran), that verify is the final one; a second would check the same.
    let mut unwritten_since: Option<Report> = None;
    loop {
        let remaining = duration.saturating_sub(started.elapsed());
        if remaining.is_zero() || stop_requested() {
            break;
        }
        unwritten_since = None;
        recording.set_soak_interval(intervals.len() as u64 + 1);
        let mut interval_config = write_config.clone();
        interval_config.options.duration = Some(remaining.min(verify_every));
        let mut outcome = write_phase(manifest, target, &interval_config)?;
        writes += outcome.writes;
        bytes_written += outcome.bytes_written;
        for (total, count) in space_ops.iter_mut().zip([
            outcome.zeroings,
            outcome.blocks_zeroed,
            outcome.discards,
            outcome.blocks_discarded,
        ]) {
            *total += count;
        }
        rolling_checked += outcome.rolling_checked_blocks;
        // Confirmed by the writer as they were found.
        let found_rolling = std::mem::take(&mut outcome.rolling_findings);
        let rolling_count = found_rolling.len() as u64;
        rolling.extend(found_rolling);
        if stop_requested() || started.elapsed() >= duration {
            // The final verify below closes this interval.
            intervals.push(interval(
                intervals.len() as u64,
                started,
                &outcome,
                rolling_count,
                None,
            ));
            break;
        }
        let report = verify_report(manifest, Arc::clone(target), None, &interval_verify)?;
        let found: u64 = report.findings_by_class.values().sum();
        interval_findings += found;
        crate::say!(
            "soak interval {}: verify {} blocks, {} finding(s), {}",
            intervals.len() + 1,
            report.blocks.checked,
            found,
            crate::units::format_rate(report.throughput_bytes_per_s)
        );
        intervals.push(interval(
            intervals.len() as u64,
            started,
            &outcome,
            rolling_count,
            Some(&report),
        ));
        unwritten_since = Some(report);
    }
    let stopped_by_signal = crate::signals::stop_requested();
    let stopped_on_finding = finding_stop.stop_requested() && !stopped_by_signal;
    let report = match unwritten_since {
        Some(report) => {
            if stopped_by_signal {
                eprintln!(
                    "note: stopped on a signal during an interval verify; that verify is the final one"
                );
            } else if stopped_on_finding {
                eprintln!(
                    "note: stopped on a finding of an interval verify; that verify is the final one"
                );
            }
            report
        }
        None => {
            if stopped_by_signal {
                eprintln!(
                    "note: stopping on a signal: final verify (a second signal ends at once)"
                );
            } else if stopped_on_finding {
                eprintln!("note: stopped on a finding: final verify");
            }
            verify_report(manifest, Arc::clone(target), None, verify_config)?
        }
    };
    if let Some(last) = intervals.last_mut()
        && last.verify_checked_blocks == 0
    {
        last.verify_checked_blocks = report.blocks.checked;
        last.verify_findings = report.findings_by_class.values().sum();
        last.verify_bytes_per_s = report.throughput_bytes_per_s;
        last.t_s = started.elapsed().as_secs_f64();
    }
    let rolling_records: Vec<FindingRecord> =
        rolling.iter().map(FindingRecord::from_finding).collect();
    let soak = SoakSection {
        duration_s: started.elapsed().as_secs_f64(),
        planned_duration_s: duration.as_secs_f64(),
        verify_every_s: verify_every.as_secs_f64(),
        stopped_by_signal,
        intervals,
        writes,
        bytes_written,
        zeroings: space_ops[0],
        blocks_zeroed: space_ops[1],
        discards: space_ops[2],
        blocks_discarded: space_ops[3],
        rolling_checked_blocks: rolling_checked,
        rolling_findings: rolling_records,
        interval_findings,
    };
    Ok((report, soak))
}

fn interval(
    index: u64,
    started: Instant,
    outcome: &WriteOutcome,
    rolling_findings: u64,
    verify: Option<&Report>,
) -> Interval {
    Interval {
        index,
        t_s: started.elapsed().as_secs_f64(),
        writes: outcome.writes,
        bytes_written: outcome.bytes_written,
        write_bytes_per_s: outcome.bytes_per_second(),
        write_iops: outcome.iops(),
        rolling_checked_blocks: outcome.rolling_checked_blocks,
        rolling_findings,
        verify_checked_blocks: verify.map_or(0, |r| r.blocks.checked),
        verify_findings: verify.map_or(0, |r| r.findings_by_class.values().sum()),
        verify_bytes_per_s: verify.map_or(0.0, |r| r.throughput_bytes_per_s),
    }
}
