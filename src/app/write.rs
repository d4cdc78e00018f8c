//! `blockstamp write`: the write phase alone.

use super::phases::{finish_metrics, prepare_write, start_recording, write_phase};
use crate::cli::WriteArgs;
use crate::config::WriteConfig;
use crate::error::Result;
use crate::exit::ExitCode;

pub(super) fn write_command(args: &WriteArgs) -> Result<ExitCode> {
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
    let outcome = write_phase(&mut manifest, &target, &config)?;
    finish_metrics(recording);
    Ok(if outcome.rolling_findings.is_empty() {
        ExitCode::Clean
    } else {
        ExitCode::Findings
    })
}
