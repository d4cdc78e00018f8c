//! `blockstamp verify`: check a target against its manifest (or one of its
//! checkpoints).

use super::on_finding;
use super::phases::{
    emit_report, finish_metrics, open_for_reading, refuse_manifest_on_target, verify_report,
};
use crate::cli::VerifyArgs;
use crate::config::VerifyConfig;
use crate::error::Result;
use crate::exit::ExitCode;
use crate::manifest::{Access, Manifest, ManifestState};
use crate::metrics::MetricsRecording;

pub(super) fn verify_command(args: &VerifyArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let mut config = VerifyConfig::from_flags(&args.verify)?;
    crate::signals::human_to_stderr(config.json.as_deref() == Some("-"));
    let loss = crate::config::loss_policy(&args.target_loss, std::time::Duration::ZERO)?;
    let manifest = Manifest::open(&args.target.manifest, Access::Read)?;
    if let Some(name) = &args.at {
        manifest.checkpoint(name)?;
    }
    refuse_manifest_on_target(&args.target)?;
    let target = open_for_reading(&args.target.target, &manifest, &loss)?;
    if manifest.header().state == ManifestState::Writing {
        eprintln!(
            "warning: manifest {} was not closed cleanly (its writer was killed, its target failed, or it is still running); \
             its journal says which writes may hold either generation",
            manifest.path().display()
        );
    }
    let recording = MetricsRecording::start(args.metrics.metrics.as_deref())?;
    config.options.metrics = Some(recording.metrics());
    let actions = on_finding::arm(&mut config, None, &manifest, &target, started);
    let mut report = verify_report(&manifest, target, args.at.as_deref(), &config)?;
    on_finding::finish(&actions, &mut report);
    let code = emit_report(&report, &config)?;
    finish_metrics(recording);
    Ok(code)
}
