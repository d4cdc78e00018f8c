//! Performance metrics of a run: throughput and IOPS per second, and latency
//! histograms, for writes and reads.
//!
//! `record` is what the writer and the verifier call on each completed IO;
//! `summary` holds the figures that go into the JSON report; `emit` is the
//! `--metrics FILE` thread that appends one JSON line per second, and a
//! line for each moment marked on the timeline (`event`).

mod emit;
mod event;
mod record;
mod summary;

pub use self::emit::MetricsRecording;
pub use self::event::TimelineEvent;
pub use self::record::Metrics;
pub use self::summary::{
    DirectionSummary, LatencyUs, MAX_TIMELINE_POINTS, MetricsSummary, TimelinePoint, coarsen,
};
