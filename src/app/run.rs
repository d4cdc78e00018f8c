//! `blockstamp run`: write (with its scheduled disruptions, if any), then
//! verify.

use super::disruptions;
use super::on_finding;
use super::phases::{
    emit_report, finish_metrics, prepare_write, start_recording, verify_report, write_phase,
};
use crate::cli::RunArgs;
use crate::config::{VerifyConfig, WriteConfig};
use crate::error::Result;
use crate::exit::ExitCode;

pub(super) fn run_command(args: &RunArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let mut write_config = WriteConfig::from_flags(&args.write)?;
    let mut verify_config = VerifyConfig::from_flags(&args.verify)?;
    crate::signals::human_to_stderr(verify_config.json.as_deref() == Some("-"));
    let recording = start_recording(
        args.metrics.metrics.as_deref(),
        &write_config,
        "run",
        &args.target.target,
    )?;
    write_config.options.metrics = Some(recording.metrics());
    verify_config.options.metrics = Some(recording.metrics());
    let (mut manifest, target) =
        prepare_write(&args.target, &write_config, Some(verify_config.engine))?;
    recording.run_started(manifest.header().run_id);
    let actions = on_finding::arm(
        &mut verify_config,
        Some(&mut write_config),
        &manifest,
        &target,
        started,
    );
    let schedule = disruptions::start(&mut write_config, &target, &manifest, &verify_config);
    write_phase(&mut manifest, &target, &write_config).inspect_err(|_| {
        disruptions::abandon(&schedule);
    })?;
    let disrupted = disruptions::finish(schedule, &manifest)?;
    let mut report = verify_report(&manifest, target, None, &verify_config)?;
    report.write_jobs = Some(write_config.jobs as u32);
    disruptions::add_to_report(&mut report, disrupted);
    on_finding::finish(&actions, &mut report);
    let code = emit_report(&report, &verify_config)?;
    finish_metrics(recording);
    Ok(code)
}
