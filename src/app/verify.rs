//! `blockstamp verify`: check a target against its manifest (or one of its
//! checkpoints).

use std::sync::Arc;

use super::on_finding;
use super::phases::{
    emit_report, finish_metrics, open_for_reading, refuse_manifest_on_target, verify_report,
};
use crate::cli::{TargetArgs, VerifyArgs};
use crate::config::VerifyConfig;
use crate::error::Result;
use crate::exit::ExitCode;
use crate::manifest::{Access, Manifest, ManifestState};
use crate::metrics::MetricsRecording;
use crate::report::Report;
use crate::storage::Target;

pub(super) fn verify_command(args: &VerifyArgs, target_args: &TargetArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let mut config = VerifyConfig::from_flags(&args.verify)?;
    crate::signals::human_to_stderr(config.json.as_deref() == Some("-"));
    let loss = crate::config::loss_policy(&args.target_loss, std::time::Duration::ZERO)?;
    let (manifest, target) = open_checked(args, target_args, &loss)?;
    let recording = MetricsRecording::start(args.metrics.metrics.as_deref())?;
    config.options.metrics = Some(recording.metrics());
    let report = verify_opened(&manifest, target, args.at.as_deref(), &config, started)?;
    let code = emit_report(&report, &config)?;
    finish_metrics(recording);
    Ok(code)
}

/// Open the manifest (and check its checkpoint) and the target it was
/// written for; reads only.
pub(super) fn open_checked(
    args: &VerifyArgs,
    target_args: &TargetArgs,
    loss: &crate::storage::LossPolicy,
) -> Result<(Manifest, Arc<dyn Target>)> {
    let manifest = Manifest::open(&target_args.manifest, Access::Read)?;
    if let Some(name) = &args.at {
        manifest.checkpoint(name)?;
    }
    refuse_manifest_on_target(target_args)?;
    let target = open_for_reading(&target_args.target, &manifest, loss)?;
    if manifest.header().state == ManifestState::Writing {
        eprintln!(
            "warning: manifest {} was not closed cleanly (its writer was killed, its target failed, or it is still running); \
             its journal says which writes may hold either generation",
            manifest.path().display()
        );
    }
    Ok((manifest, target))
}

/// The verify of an opened target, with `--on-finding`: its report.
pub(super) fn verify_opened(
    manifest: &Manifest,
    target: Arc<dyn Target>,
    at: Option<&str>,
    config: &VerifyConfig,
    started: std::time::Instant,
) -> Result<Report> {
    let mut config = config.clone();
    let actions = on_finding::arm(&mut config, None, manifest, &target, started);
    let mut report = verify_report(manifest, target, at, &config)?;
    on_finding::finish(&actions, &mut report);
    Ok(report)
}
