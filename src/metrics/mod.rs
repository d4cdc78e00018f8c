//! Performance metrics of a run: throughput and IOPS per second, and latency
//! histograms, for writes and reads.
//!
//! `record` is what the writer and the verifier call on each completed IO;
//! `summary` holds the figures that go into the JSON report; `prometheus`
//! renders them as a Prometheus textfile; `emit` is the thread that appends
//! one JSON line per second to `--metrics FILE`, and a line for each moment
//! marked on the timeline (`event`), and rewrites the `--prometheus FILE`
//! textfile every few seconds.

mod emit;
mod event;
pub mod prometheus;
mod record;
mod summary;

pub use self::emit::MetricsRecording;
pub use self::event::TimelineEvent;
pub use self::record::{DirectionTotals, Metrics};
pub use self::summary::{
    DirectionSummary, LatencyUs, MAX_TIMELINE_POINTS, MetricsSummary, TimelinePoint, coarsen,
};
