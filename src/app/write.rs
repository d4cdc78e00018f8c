//! `blockstamp write`: the write phase alone (with its scheduled
//! disruptions, if any).

use super::disruptions;
use super::on_finding;
use super::phases::{finish_metrics, prepare_write, start_recording, write_phase};
use crate::cli::WriteArgs;
use crate::config::{VerifyConfig, WriteConfig};
use crate::error::Result;
use crate::exit::ExitCode;

pub(super) fn write_command(args: &WriteArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let mut config = WriteConfig::from_flags(&args.write)?;
    let recording = start_recording(
        args.metrics.metrics.as_deref(),
        &config,
        "write",
        &args.target.target,
    )?;
    config.options.metrics = Some(recording.metrics());
    let (mut manifest, target) = prepare_write(&args.target, &config, None)?;
    recording.run_started(manifest.header().run_id);
    // The verify after each disruption; `--stop-on-finding` watches it and
    // the rolling read-back.
    let mut after_writes = VerifyConfig::after_writes();
    let _actions = on_finding::arm(
        &mut after_writes,
        Some(&mut config),
        &manifest,
        &target,
        started,
    );
    let schedule = disruptions::start(&mut config, &target, &manifest, &after_writes);
    let outcome = write_phase(&mut manifest, &target, &config).inspect_err(|_| {
        disruptions::abandon(&schedule);
    })?;
    let disrupted = disruptions::finish(schedule, &manifest)?;
    disruptions::print_summary(&disrupted);
    finish_metrics(recording);
    Ok(
        if outcome.rolling_findings.is_empty() && !disruptions::any_findings(&disrupted) {
            ExitCode::Clean
        } else {
            ExitCode::Findings
        },
    )
}
