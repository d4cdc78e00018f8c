//! Moments of a run marked on the timeline — a disruption began, the
//! target answered again — written by `--metrics` as lines of their own
//! between the per-second points (see docs/CONTRACT.md, "The metrics
//! section").

use serde::{Deserialize, Serialize};

/// One marked moment; `t_s` counts from the timeline's second 0, like the
/// report's `disruptions[].started_at_s`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TimelineEvent {
    /// Disruption `index` (1 for the first) ran its command.
    DisruptionStart { index: u64, t_s: f64 },
    /// After disruption `index`'s commands, an IO completed again: the
    /// target answered, after the longest stall `stall_s`.
    DisruptionAnswered { index: u64, t_s: f64, stall_s: f64 },
}

impl TimelineEvent {
    /// When it happened, in seconds since second 0.
    pub fn t_s(&self) -> f64 {
        match self {
            TimelineEvent::DisruptionStart { t_s, .. }
            | TimelineEvent::DisruptionAnswered { t_s, .. } => *t_s,
        }
    }
}
