//! `--disrupt` for the commands that write (write, run, soak): start the
//! schedule with the verify it runs after each disruption, and end it.

use std::sync::Arc;
use std::time::Duration;

use super::phases::verify_expected;
use crate::config::{VerifyConfig, WriteConfig};
use crate::disrupt::Disruptions;
use crate::error::Result;
use crate::manifest::Manifest;
use crate::report::{Disruption, Report};
use crate::storage::Target;
use crate::writer::PauseHook;

/// Added to the reconnect and NBD timeouts: how long the controller waits
/// for the target to answer after the commands, beyond what the target
/// itself waits before it gives up (which ends the run first, saying why).
const ANSWER_MARGIN: Duration = Duration::from_secs(30);

/// Start the disruptions `config` asks for, if any, and hand the writer
/// their pause. `verify`: the settings of the verify after each one.
pub(super) fn start(
    config: &mut WriteConfig,
    target: &Arc<dyn Target>,
    manifest: &Manifest,
    verify: &VerifyConfig,
) -> Option<Arc<Disruptions>> {
    let plan = config.disrupt.clone()?;
    let metrics = Arc::clone(
        config
            .options
            .metrics
            .get_or_insert_with(|| Arc::new(crate::metrics::Metrics::new())),
    );
    let verify = VerifyConfig {
        json: None,
        junit: None,
        show: 0,
        options: crate::verify::VerifyOptions {
            metrics: Some(Arc::clone(&metrics)),
            watch: verify
                .options
                .watch
                .as_ref()
                .map(|w| w.for_source("disruption_verify")),
            ..verify.options.clone()
        },
        ..verify.clone()
    };
    let loss = &config.target_loss;
    let answer_timeout = loss.reconnect_timeout.unwrap_or_default()
        + loss.nbd_request_timeout.unwrap_or_default()
        + ANSWER_MARGIN;
    let env = vec![
        ("BLOCKSTAMP_TARGET", target.info().uri.clone()),
        ("BLOCKSTAMP_MANIFEST", manifest.path().display().to_string()),
    ];
    let reader = Arc::clone(target);
    let disruptions = Disruptions::start(
        plan,
        metrics,
        target.loss_counters(),
        env,
        answer_timeout,
        config.options.duration,
        Box::new(move |manifest, pending| {
            let expected = manifest.expected_while_writing(pending);
            verify_expected(manifest, expected, Arc::clone(&reader), None, &verify)
        }),
    );
    config.options.pause = Some(PauseHook(Arc::clone(&disruptions) as _));
    Some(disruptions)
}

/// End the schedule after the last write phase (see
/// [`Disruptions::finish`]). The disruptions are shown by the report's
/// human summary (or, for `write`, by [`print_summary`]).
pub(super) fn finish(
    disruptions: Option<Arc<Disruptions>>,
    manifest: &Manifest,
) -> Result<Vec<Disruption>> {
    let Some(disruptions) = disruptions else {
        return Ok(Vec::new());
    };
    disruptions.finish(manifest)
}

/// The disruptions for people, where no report summary shows them
/// (`write`).
pub(super) fn print_summary(disruptions: &[Disruption]) {
    let summary = crate::report::disruptions_summary(disruptions, SHOWN_WITHOUT_REPORT);
    if !summary.is_empty() {
        crate::say!("{}", summary.trim_end());
    }
}

/// Findings of the disruptions' verifies shown by `write`, which has no
/// `--show`: the default of the commands that have it.
const SHOWN_WITHOUT_REPORT: usize = 10;

/// The run failed: stop the schedule without waiting for it.
pub(super) fn abandon(disruptions: &Option<Arc<Disruptions>>) {
    if let Some(disruptions) = disruptions {
        disruptions.abandon();
    }
}

/// File the disruptions in the report; their findings make it unclean.
pub(super) fn add_to_report(report: &mut Report, disruptions: Vec<Disruption>) {
    if any_findings(&disruptions) {
        report.clean = false;
    }
    report.disruptions = disruptions;
}

/// Whether any disruption's verify found something.
pub(super) fn any_findings(disruptions: &[Disruption]) -> bool {
    disruptions.iter().any(|d| d.total_findings() > 0)
}
