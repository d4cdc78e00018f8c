//! `blockstamp run`: write (with its scheduled disruptions, if any), then
//! verify.

use std::sync::Arc;

use super::disruptions;
use super::on_finding;
use super::phases::{
    emit_report, finish_metrics, prepare_write, start_recording, verify_report, write_phase,
};
use crate::cli::{RunArgs, TargetArgs};
use crate::config::{VerifyConfig, WriteConfig};
use crate::error::Result;
use crate::exit::ExitCode;
use crate::manifest::Manifest;
use crate::report::Report;
use crate::storage::Target;

pub(super) fn run_command(args: &RunArgs, target_args: &TargetArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let mut write_config = WriteConfig::from_flags(&args.write)?;
    let mut verify_config = VerifyConfig::from_flags(&args.verify)?;
    crate::signals::human_to_stderr(verify_config.json.as_deref() == Some("-"));
    let recording = start_recording(
        args.metrics.metrics.as_deref(),
        &write_config,
        "run",
        &target_args.target,
    )?;
    write_config.options.metrics = Some(recording.metrics());
    verify_config.options.metrics = Some(recording.metrics());
    let (mut manifest, target) =
        prepare_write(target_args, &write_config, Some(verify_config.engine))?;
    recording.run_started(manifest.header().run_id);
    let (report, _) = run_prepared(&mut manifest, target, write_config, &verify_config, started)?;
    let code = emit_report(&report, &verify_config)?;
    finish_metrics(recording);
    Ok(code)
}

/// The write (with its disruptions), then the verify, of a prepared
/// target: the report, and whether a signal stopped the writing early.
pub(super) fn run_prepared(
    manifest: &mut Manifest,
    target: Arc<dyn Target>,
    mut write_config: WriteConfig,
    verify_config: &VerifyConfig,
    started: std::time::Instant,
) -> Result<(Report, bool)> {
    let mut verify_config = verify_config.clone();
    let actions = on_finding::arm(
        &mut verify_config,
        Some(&mut write_config),
        manifest,
        &target,
        started,
    );
    let schedule = disruptions::start(&mut write_config, &target, manifest, &verify_config);
    let outcome = write_phase(manifest, &target, &write_config).inspect_err(|_| {
        disruptions::abandon(&schedule);
    })?;
    let disrupted = disruptions::finish(schedule, manifest)?;
    let mut report = verify_report(manifest, target, None, &verify_config)?;
    report.write_jobs = Some(write_config.jobs as u32);
    disruptions::add_to_report(&mut report, disrupted);
    on_finding::finish(&actions, &mut report);
    Ok((report, outcome.interrupted))
}
