//! `blockstamp write`: the write phase alone (with its scheduled
//! disruptions, if any).

use std::sync::Arc;

use super::disruptions;
use super::on_finding;
use super::phases::{finish_metrics, prepare_write, start_recording, write_phase};
use crate::cli::{TargetArgs, WriteArgs};
use crate::config::{VerifyConfig, WriteConfig};
use crate::error::Result;
use crate::exit::ExitCode;
use crate::manifest::Manifest;
use crate::storage::Target;

pub(super) fn write_command(args: &WriteArgs, target_args: &TargetArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let mut config = WriteConfig::from_flags(&args.write)?;
    let recording = start_recording(
        args.metrics.metrics.as_deref(),
        &config,
        "write",
        &target_args.target,
    )?;
    config.options.metrics = Some(recording.metrics());
    let (mut manifest, target) = prepare_write(target_args, &config, None)?;
    recording.run_started(manifest.header().run_id);
    let (code, _) = write_prepared(&mut manifest, &target, config, started)?;
    finish_metrics(recording);
    Ok(code)
}

/// The write of a prepared target, with its disruptions, and its summary:
/// the verdict, and whether a signal stopped it early.
pub(super) fn write_prepared(
    manifest: &mut Manifest,
    target: &Arc<dyn Target>,
    mut config: WriteConfig,
    started: std::time::Instant,
) -> Result<(ExitCode, bool)> {
    // The verify after each disruption; `--stop-on-finding` watches it and
    // the rolling read-back.
    let mut after_writes = VerifyConfig::after_writes();
    let _actions = on_finding::arm(
        &mut after_writes,
        Some(&mut config),
        manifest,
        target,
        started,
    );
    let schedule = disruptions::start(&mut config, target, manifest, &after_writes);
    let outcome = write_phase(manifest, target, &config).inspect_err(|_| {
        disruptions::abandon(&schedule);
    })?;
    let disrupted = disruptions::finish(schedule, manifest)?;
    disruptions::print_summary(&disrupted);
    Ok((
        if outcome.rolling_findings.is_empty() && !disruptions::any_findings(&disrupted) {
            ExitCode::Clean
        } else {
            ExitCode::Findings
        },
        outcome.interrupted,
    ))
}
