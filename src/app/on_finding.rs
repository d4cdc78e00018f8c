//! `--on-finding` and `--stop-on-finding` for the commands: the actions,
//! with the run's environment, handed to every check the command runs
//! (its verifies, the rolling read-back, the verify after each
//! disruption), and filed in its report at the end.

use std::sync::Arc;
use std::time::Instant;

use crate::config::{VerifyConfig, WriteConfig};
use crate::manifest::Manifest;
use crate::on_finding::Actions;
use crate::report::Report;
use crate::signals::StopToken;
use crate::storage::Target;
use crate::writer::RollingConfirm;

/// Start what `verify` (`--on-finding`) and `write` (`--stop-on-finding`)
/// ask to do on confirmed findings, and arm their checks with it: the
/// verify of `verify` (named `verify`) and the rolling read-back of
/// `write`. `started`: when the command started. None when nothing was
/// asked.
pub(super) fn arm(
    verify: &mut VerifyConfig,
    write: Option<&mut WriteConfig>,
    manifest: &Manifest,
    target: &Arc<dyn Target>,
    started: Instant,
) -> Option<Arc<Actions>> {
    let stop = write
        .as_ref()
        .is_some_and(|w| w.stop_on_finding)
        .then(StopToken::new);
    let report = verify
        .json
        .as_deref()
        .filter(|path| *path != "-")
        .map(|path| {
            std::path::absolute(path)
                .unwrap_or_else(|_| path.into())
                .display()
                .to_string()
        })
        .unwrap_or_default();
    let env = vec![
        ("BLOCKSTAMP_TARGET", target.info().uri.clone()),
        ("BLOCKSTAMP_MANIFEST", manifest.path().display().to_string()),
        (
            "BLOCKSTAMP_RUN_ID",
            format!("{:016x}", manifest.header().run_id),
        ),
        ("BLOCKSTAMP_REPORT", report),
    ];
    let actions = Actions::new(verify.on_finding.clone(), stop.clone(), env, started)?;
    verify.options.watch = Some(actions.watcher("verify"));
    if let Some(write) = write {
        write.options.confirm = Some(RollingConfirm {
            target: Arc::clone(target),
            watch: Some(actions.watcher("rolling_verify")),
        });
        if let Some(stop) = stop {
            write.options.finding_stop = stop;
        }
    }
    Some(actions)
}

/// Wait for the `--on-finding` runs still going and file them, and the
/// stop, in `report`.
pub(super) fn finish(actions: &Option<Arc<Actions>>, report: &mut Report) {
    if let Some(actions) = actions {
        actions.finish_into(report);
    }
}
