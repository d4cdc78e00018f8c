//! The figures of a run that go into the JSON report (its `metrics`
//! object) and into each line of the `--metrics` file.

use serde::{Deserialize, Serialize};

/// The `metrics` object of the JSON report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSummary {
    /// `null` when the run wrote nothing.
    pub write: Option<DirectionSummary>,
    /// `null` when the run read nothing through the engine.
    pub read: Option<DirectionSummary>,
    #[serde(default)]
    pub timeline: Vec<TimelinePoint>,
}

/// Totals of one direction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DirectionSummary {
    pub ios: u64,
    pub bytes: u64,
    /// Time with IO of this direction: from its first submission to its last
    /// completion, less pauses of over a second with nothing in flight.
    pub active_s: f64,
    /// `ios / active_s`.
    pub iops: f64,
    /// `bytes / active_s`.
    pub bytes_per_s: f64,
    pub latency_us: LatencyUs,
}

/// Latency percentiles, submission to completion, in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyUs {
    pub p50: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

/// One point of the timeline: one line of the `--metrics` file, one element
/// of the report's `metrics.timeline`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the run started (start of this point).
    pub t_s: u64,
    /// Length of this point: 1 for a whole second; less for the last one of
    /// a run; more for merged points of a long run's report.
    pub span_s: f64,
    /// Bytes written by writes that completed during the point.
    pub write_bytes: u64,
    /// Writes completed per second during the point.
    pub write_iops: f64,
    /// Latency percentiles of those writes (`null`: none completed).
    pub write_p50_us: Option<f64>,
    pub write_p99_us: Option<f64>,
    pub write_max_us: Option<f64>,
    pub read_bytes: u64,
    pub read_iops: f64,
    pub read_p50_us: Option<f64>,
    pub read_p99_us: Option<f64>,
    pub read_max_us: Option<f64>,
}

impl TimelinePoint {
    pub fn write_bytes_per_s(&self) -> f64 {
        self.write_bytes as f64 / self.span_s.max(1e-9)
    }

    pub fn read_bytes_per_s(&self) -> f64 {
        self.read_bytes as f64 / self.span_s.max(1e-9)
    }
}

/// The report's timeline keeps at most this many points; longer runs merge
/// neighbouring seconds (the JSON-lines file keeps every second).
pub const MAX_TIMELINE_POINTS: usize = 2_000;

/// Merge neighbouring points until at most `max_points` remain. A merged
/// point sums bytes, averages IOPS over its span, and keeps the worst of its
/// seconds' latencies (a spike stays visible).
pub fn coarsen(points: Vec<TimelinePoint>, max_points: usize) -> Vec<TimelinePoint> {
    if points.len() <= max_points || max_points == 0 {
        return points;
    }
    let per_point = points.len().div_ceil(max_points);
    points
        .chunks(per_point)
        .map(|group| {
            let span_s: f64 = group.iter().map(|p| p.span_s).sum();
            let ios = |iops: fn(&TimelinePoint) -> f64| -> f64 {
                group.iter().map(|p| iops(p) * p.span_s).sum::<f64>() / span_s
            };
            let worst = |field: fn(&TimelinePoint) -> Option<f64>| -> Option<f64> {
                group.iter().filter_map(field).reduce(f64::max)
            };
            TimelinePoint {
                t_s: group[0].t_s,
                span_s: round(span_s, 3),
                write_bytes: group.iter().map(|p| p.write_bytes).sum(),
                write_iops: round(ios(|p| p.write_iops), 1),
                write_p50_us: worst(|p| p.write_p50_us),
                write_p99_us: worst(|p| p.write_p99_us),
                write_max_us: worst(|p| p.write_max_us),
                read_bytes: group.iter().map(|p| p.read_bytes).sum(),
                read_iops: round(ios(|p| p.read_iops), 1),
                read_p50_us: worst(|p| p.read_p50_us),
                read_p99_us: worst(|p| p.read_p99_us),
                read_max_us: worst(|p| p.read_max_us),
            }
        })
        .collect()
}

/// Round to `decimals` places: the report's figures carry no false
/// precision.
pub(super) fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_timelines_are_merged_keeping_the_worst_latency() {
        let points: Vec<TimelinePoint> = (0..10)
            .map(|t| TimelinePoint {
                t_s: t,
                span_s: 1.0,
                write_bytes: 100,
                write_iops: 10.0,
                write_p50_us: Some(5.0),
                write_p99_us: Some(if t == 7 { 900.0 } else { 50.0 }),
                write_max_us: Some(60.0),
                read_bytes: 0,
                read_iops: 0.0,
                read_p50_us: None,
                read_p99_us: None,
                read_max_us: None,
            })
            .collect();
        let merged = coarsen(points, 4);
        assert_eq!(merged.len(), 4);
        assert_eq!(merged[2].t_s, 6);
        assert_eq!(merged[2].span_s, 3.0);
        assert_eq!(merged[2].write_bytes, 300);
        assert_eq!(merged[2].write_iops, 10.0);
        assert_eq!(merged[2].write_p99_us, Some(900.0));
        assert_eq!(merged[2].read_p99_us, None);
        assert_eq!(merged[3].span_s, 1.0);
    }
}
