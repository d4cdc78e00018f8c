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
/// [`Disruptions::finish`]), printing a line per disruption.
pub(super) fn finish(
    disruptions: Option<Arc<Disruptions>>,
    manifest: &Manifest,
) -> Result<Vec<Disruption>> {
    let Some(disruptions) = disruptions else {
        return Ok(Vec::new());
    };
    let done = disruptions.finish(manifest)?;
    for d in &done {
        crate::say!("{}", summary_line(d));
    }
    Ok(done)
}

/// The run failed: stop the schedule without waiting for it.
pub(super) fn abandon(disruptions: &Option<Arc<Disruptions>>) {
    if let Some(disruptions) = disruptions {
        disruptions.abandon();
    }
}

/// One line per disruption for the human summary.
pub fn summary_line(d: &Disruption) -> String {
    let found: u64 = d.findings_by_class.values().sum();
    let recovered = match d.recovered_after_s {
        Some(s) => format!("throughput back after {s:.1} s"),
        None => "throughput not back before the run ended".to_string(),
    };
    let classes = if found == 0 {
        String::new()
    } else {
        let list: Vec<String> = d
            .findings_by_class
            .iter()
            .map(|(class, n)| format!("{n} {class}"))
            .collect();
        format!(" ({})", list.join(", "))
    };
    format!(
        "disruption {} at {:.1} s: stall {:.2} s, {recovered}, {} reconnect(s), {} failed IO(s); verify of {} block(s) after it: {found} finding(s){classes}",
        d.index, d.started_at_s, d.stall_s, d.reconnects, d.failed_ios, d.verify_checked_blocks
    )
}

/// File the disruptions in the report; their findings make it unclean.
pub(super) fn add_to_report(report: &mut Report, disruptions: Vec<Disruption>) {
    if disruptions
        .iter()
        .any(|d| d.findings_by_class.values().sum::<u64>() > 0)
    {
        report.clean = false;
    }
    report.disruptions = disruptions;
}

/// Whether any disruption's verify found something.
pub(super) fn any_findings(disruptions: &[Disruption]) -> bool {
    disruptions
        .iter()
        .any(|d| d.findings_by_class.values().sum::<u64>() > 0)
}
