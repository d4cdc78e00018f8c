//! Performance metrics of a run: throughput and IOPS per second, and latency
//! histograms, for writes and reads.
//!
//! The writer and the verifier each reap completions on one thread and call
//! [`Metrics::record_write`] / [`Metrics::record_read`] once per completed
//! IO. Each direction has its own lock, so the two never wait for each
//! other; the only other taker is the once-a-second JSON-lines emitter.
//!
//! Latencies go into HdrHistograms in nanoseconds (3 significant digits, up
//! to an hour): one for the whole run, and one for the second in progress,
//! which is reduced to p50/p99/max and reset when the second ends, so memory
//! does not grow with the number of IOs — only by one small sample per
//! second.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest latency told apart; longer ones count as this long.
const MAX_LATENCY_NS: u64 = 3_600 * 1_000_000_000;

/// A pause longer than this with nothing in flight is not counted in a
/// direction's active time (a soak that stops writing while it verifies).
const IDLE_GAP_NS: u64 = 1_000_000_000;

/// The report's timeline keeps at most this many points; longer runs merge
/// neighbouring seconds (the JSON-lines file keeps every second).
pub const MAX_TIMELINE_POINTS: usize = 2_000;

/// Records every completed IO of a run. Cheap to call from the loops that
/// reap completions; see the module docs for the threading.
pub struct Metrics {
    started: Instant,
    write: Mutex<Direction>,
    read: Mutex<Direction>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("elapsed", &self.started.elapsed())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A recorder whose second 0 starts now.
    pub fn new() -> Metrics {
        Metrics {
            started: Instant::now(),
            write: Mutex::new(Direction::new()),
            read: Mutex::new(Direction::new()),
        }
    }

    /// A write of `bytes` completed after `latency` (submission to completion).
    pub fn record_write(&self, latency: Duration, bytes: u64) {
        let now = self.started.elapsed();
        lock(&self.write).record(now, latency, bytes);
    }

    /// A read of `bytes` completed after `latency`.
    pub fn record_read(&self, latency: Duration, bytes: u64) {
        let now = self.started.elapsed();
        lock(&self.read).record(now, latency, bytes);
    }

    /// Totals and the timeline so far (the second in progress is the last,
    /// partial, point). At most [`MAX_TIMELINE_POINTS`] points.
    pub fn summary(&self) -> MetricsSummary {
        let now = self.started.elapsed();
        let write = lock(&self.write);
        let read = lock(&self.read);
        let points = timeline(&write, &read, 0..now.as_secs() + 1, now);
        MetricsSummary {
            write: write.summary(),
            read: read.summary(),
            timeline: coarsen(points, MAX_TIMELINE_POINTS),
        }
    }

    /// The points of whole seconds in `from..` that have ended by now:
    /// closes them, and returns them with the next second to ask for.
    fn ended_seconds(&self, from: u64) -> (Vec<TimelinePoint>, u64) {
        let now = self.started.elapsed();
        let until = now.as_secs();
        let mut write = lock(&self.write);
        let mut read = lock(&self.read);
        write.roll_to(until);
        read.roll_to(until);
        (timeline(&write, &read, from..until, now), until)
    }

    /// Every point from second `from` on, the second in progress last.
    fn remaining_seconds(&self, from: u64) -> Vec<TimelinePoint> {
        let now = self.started.elapsed();
        let write = lock(&self.write);
        let read = lock(&self.read);
        timeline(&write, &read, from..now.as_secs() + 1, now)
    }
}

/// A poisoned lock only means another recorder panicked mid-update; the
/// figures are still worth having.
fn lock(direction: &Mutex<Direction>) -> MutexGuard<'_, Direction> {
    direction
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One direction's recorder.
struct Direction {
    total: Histogram<u64>,
    /// Latencies of the second in progress.
    second: Histogram<u64>,
    open_second: u64,
    open_bytes: u64,
    open_ios: u64,
    open_max_ns: u64,
    /// Seconds that have ended and had IO, in order.
    closed: Vec<SecondSample>,
    ios: u64,
    bytes: u64,
    max_ns: u64,
    /// Active time before the current stretch of activity.
    active_ns: u64,
    /// The current stretch of activity, from its first submission to its
    /// latest completion (ns since the recorder started).
    stretch: Option<(u64, u64)>,
}

/// One ended second of one direction.
#[derive(Clone, Copy, Debug)]
struct SecondSample {
    t_s: u64,
    bytes: u64,
    ios: u64,
    p50_ns: u64,
    p99_ns: u64,
    max_ns: u64,
}

impl Direction {
    fn new() -> Direction {
        let histogram =
            || Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds");
        Direction {
            total: histogram(),
            second: histogram(),
            open_second: 0,
            open_bytes: 0,
            open_ios: 0,
            open_max_ns: 0,
            closed: Vec::new(),
            ios: 0,
            bytes: 0,
            max_ns: 0,
            active_ns: 0,
            stretch: None,
        }
    }

    fn record(&mut self, now: Duration, latency: Duration, bytes: u64) {
        // A completion reaped late by another thread stays in the open
        // second rather than reopening an ended one.
        self.roll_to(now.as_secs());
        let latency_ns = (latency.as_nanos() as u64).clamp(1, MAX_LATENCY_NS);
        self.total.saturating_record(latency_ns);
        self.second.saturating_record(latency_ns);
        self.open_ios += 1;
        self.open_bytes += bytes;
        self.open_max_ns = self.open_max_ns.max(latency_ns);
        self.ios += 1;
        self.bytes += bytes;
        self.max_ns = self.max_ns.max(latency_ns);

        let end = now.as_nanos() as u64;
        let start = end.saturating_sub(latency_ns);
        self.stretch = Some(match self.stretch {
            Some((first, last)) if start <= last + IDLE_GAP_NS => (first.min(start), last.max(end)),
            Some((first, last)) => {
                self.active_ns += last - first;
                (start, end)
            }
            None => (start, end),
        });
    }

    /// End the open second if `second` is later.
    fn roll_to(&mut self, second: u64) {
        if second <= self.open_second {
            return;
        }
        if self.open_ios > 0 {
            self.closed.push(self.open_sample());
            self.second.reset();
            self.open_bytes = 0;
            self.open_ios = 0;
            self.open_max_ns = 0;
        }
        self.open_second = second;
    }

    fn open_sample(&self) -> SecondSample {
        SecondSample {
            t_s: self.open_second,
            bytes: self.open_bytes,
            ios: self.open_ios,
            p50_ns: quantile(&self.second, 0.50, self.open_max_ns),
            p99_ns: quantile(&self.second, 0.99, self.open_max_ns),
            max_ns: self.open_max_ns,
        }
    }

    /// The sample of second `t_s`, ended or open; `None` when it had no IO.
    fn sample(&self, t_s: u64) -> Option<SecondSample> {
        if t_s == self.open_second && self.open_ios > 0 {
            return Some(self.open_sample());
        }
        self.closed
            .binary_search_by_key(&t_s, |s| s.t_s)
            .ok()
            .map(|i| self.closed[i])
    }

    fn active_s(&self) -> f64 {
        let current = self.stretch.map_or(0, |(first, last)| last - first);
        (self.active_ns + current) as f64 / 1e9
    }

    fn summary(&self) -> Option<DirectionSummary> {
        if self.ios == 0 {
            return None;
        }
        let active_s = self.active_s().max(1e-9);
        Some(DirectionSummary {
            ios: self.ios,
            bytes: self.bytes,
            active_s: round(active_s, 3),
            iops: round(self.ios as f64 / active_s, 1),
            bytes_per_s: round(self.bytes as f64 / active_s, 0),
            latency_us: LatencyUs {
                p50: us(quantile(&self.total, 0.50, self.max_ns)),
                p99: us(quantile(&self.total, 0.99, self.max_ns)),
                p99_9: us(quantile(&self.total, 0.999, self.max_ns)),
                max: us(self.max_ns),
            },
        })
    }
}

/// A histogram answers with the top of the value's bucket (within 0.1%);
/// never more than the exact maximum.
fn quantile(histogram: &Histogram<u64>, quantile: f64, max_ns: u64) -> u64 {
    histogram.value_at_quantile(quantile).min(max_ns)
}

fn us(ns: u64) -> f64 {
    round(ns as f64 / 1e3, 1)
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// The points of `seconds`, zero where neither direction had IO. The
/// second `now` falls in is partial: its `span_s` says how long it was.
fn timeline(
    write: &Direction,
    read: &Direction,
    seconds: std::ops::Range<u64>,
    now: Duration,
) -> Vec<TimelinePoint> {
    seconds
        .map(|t_s| {
            let span_s = if t_s == now.as_secs() {
                round(now.as_secs_f64() - t_s as f64, 3).max(0.001)
            } else {
                1.0
            };
            let w = write.sample(t_s);
            let r = read.sample(t_s);
            TimelinePoint {
                t_s,
                span_s,
                write_bytes: w.map_or(0, |s| s.bytes),
                write_iops: round(w.map_or(0, |s| s.ios) as f64 / span_s, 1),
                write_p50_us: w.map(|s| us(s.p50_ns)),
                write_p99_us: w.map(|s| us(s.p99_ns)),
                write_max_us: w.map(|s| us(s.max_ns)),
                read_bytes: r.map_or(0, |s| s.bytes),
                read_iops: round(r.map_or(0, |s| s.ios) as f64 / span_s, 1),
                read_p50_us: r.map(|s| us(s.p50_ns)),
                read_p99_us: r.map(|s| us(s.p99_ns)),
                read_max_us: r.map(|s| us(s.max_ns)),
            }
        })
        .collect()
}

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

/// A run's metrics, with the `--metrics FILE` emitter when one was asked
/// for: a thread that appends one JSON line per ended second.
pub struct MetricsRecording {
    metrics: Arc<Metrics>,
    emitter: Option<Emitter>,
}

struct Emitter {
    path: PathBuf,
    stop: Sender<()>,
    thread: JoinHandle<EmitterEnd>,
}

/// What the emitter thread hands back: its file, the next second to write,
/// and the first write error, if any.
struct EmitterEnd {
    out: BufWriter<File>,
    next_second: u64,
    error: Option<std::io::Error>,
}

impl MetricsRecording {
    /// Start recording; with `path`, create that file now (a usage error,
    /// before anything is written, when it cannot be created) and start the
    /// emitter.
    pub fn start(path: Option<&Path>) -> Result<MetricsRecording> {
        let metrics = Arc::new(Metrics::new());
        let emitter = match path {
            None => None,
            Some(path) => {
                let file = File::create(path).map_err(|e| {
                    Error::usage(format!(
                        "cannot create metrics file {}: {e}; give a writable path to --metrics",
                        path.display()
                    ))
                })?;
                let (stop, stopped) = channel::<()>();
                let thread_metrics = Arc::clone(&metrics);
                let thread = std::thread::Builder::new()
                    .name("bs-metrics".to_string())
                    .spawn(move || {
                        let mut end = EmitterEnd {
                            out: BufWriter::new(file),
                            next_second: 0,
                            error: None,
                        };
                        loop {
                            let elapsed = thread_metrics.started.elapsed();
                            let next_tick = Duration::from_secs(elapsed.as_secs() + 1);
                            match stopped.recv_timeout(next_tick - elapsed) {
                                Err(RecvTimeoutError::Timeout) => {}
                                Ok(()) | Err(RecvTimeoutError::Disconnected) => return end,
                            }
                            let (points, next) = thread_metrics.ended_seconds(end.next_second);
                            end.next_second = next;
                            end.write(&points);
                        }
                    })
                    .map_err(|e| Error::run(format!("cannot start the metrics thread: {e}")))?;
                Some(Emitter {
                    path: path.to_path_buf(),
                    stop,
                    thread,
                })
            }
        };
        Ok(MetricsRecording { metrics, emitter })
    }

    /// The recorder, for `WriteOptions` / `VerifyOptions`.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Stop the emitter and write the remaining seconds, the partial last
    /// one included. A file that could not be written is worth a warning,
    /// not the run's verdict: the message is returned for the caller to print.
    pub fn finish(self) -> Option<String> {
        let emitter = self.emitter?;
        let _ = emitter.stop.send(());
        let mut end = match emitter.thread.join() {
            Ok(end) => end,
            Err(_) => return Some("the metrics thread panicked".to_string()),
        };
        let points = self.metrics.remaining_seconds(end.next_second);
        end.write(&points);
        if end.error.is_none()
            && let Err(e) = end.out.flush()
        {
            end.error = Some(e);
        }
        end.error.map(|e| {
            format!(
                "cannot write metrics file {}: {e}; its lines may be incomplete",
                emitter.path.display()
            )
        })
    }
}

impl EmitterEnd {
    fn write(&mut self, points: &[TimelinePoint]) {
        if self.error.is_some() {
            return;
        }
        for point in points {
            let line = serde_json::to_string(point).expect("timeline point serialises");
            if let Err(e) = writeln!(self.out, "{line}") {
                self.error = Some(e);
                return;
            }
        }
        if let Err(e) = self.out.flush() {
            self.error = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at(direction: &mut Direction, now_ms: u64, latency_us: u64, bytes: u64) {
        direction.record(ms(now_ms), Duration::from_micros(latency_us), bytes);
    }

    #[test]
    fn percentiles_and_max_of_a_direction() {
        let mut d = Direction::new();
        // 1000 writes of 100 µs and 10 of 10 ms in the first second.
        for i in 0..1000 {
            at(&mut d, i / 2, 100, 4096);
        }
        for i in 0..10 {
            at(&mut d, 600 + i, 10_000, 4096);
        }
        let s = d.summary().expect("writes recorded");
        assert_eq!(s.ios, 1010);
        assert_eq!(s.bytes, 1010 * 4096);
        assert!((s.latency_us.p50 - 100.0).abs() < 0.2, "{:?}", s.latency_us);
        assert!(
            (s.latency_us.p99_9 - 10_000.0).abs() < 10.0,
            "{:?}",
            s.latency_us
        );
        assert_eq!(s.latency_us.max, 10_000.0);
    }

    #[test]
    fn seconds_are_bucketed_and_idle_seconds_are_zero() {
        let mut w = Direction::new();
        let r = Direction::new();
        at(&mut w, 100, 50, 4096);
        at(&mut w, 900, 150, 4096);
        at(&mut w, 2_500, 80, 8192);
        w.roll_to(3);
        let points = timeline(&w, &r, 0..3, Duration::from_secs(10));
        assert_eq!(points.len(), 3);
        assert_eq!(points[0].write_bytes, 8192);
        assert_eq!(points[0].write_iops, 2.0);
        assert_eq!(points[0].write_max_us, Some(150.0));
        assert_eq!(points[1].write_bytes, 0);
        assert_eq!(points[1].write_p99_us, None);
        assert_eq!(points[2].write_bytes, 8192);
        assert_eq!(points[2].read_bytes, 0);
        assert_eq!(points[2].read_p50_us, None);
    }

    #[test]
    fn the_second_in_progress_is_a_partial_point() {
        let mut w = Direction::new();
        let r = Direction::new();
        at(&mut w, 1_100, 10, 1000);
        at(&mut w, 1_200, 10, 1000);
        let now = ms(1_250);
        let points = timeline(&w, &r, 0..2, now);
        assert_eq!(points[1].span_s, 0.25);
        assert_eq!(points[1].write_bytes, 2000);
        assert_eq!(points[1].write_iops, 8.0);
        assert_eq!(points[1].write_bytes_per_s(), 8000.0);
    }

    #[test]
    fn pauses_with_nothing_in_flight_are_not_active_time() {
        let mut d = Direction::new();
        // 1 s of writes, 10 s idle, 1 s of writes.
        for t in (0..=1_000).step_by(100) {
            at(&mut d, t, 1_000, 4096);
        }
        for t in (11_000..=12_000).step_by(100) {
            at(&mut d, t, 1_000, 4096);
        }
        let s = d.summary().unwrap();
        assert!((s.active_s - 2.001).abs() < 1e-6, "{}", s.active_s);
        assert!((s.iops - 22.0 / 2.001).abs() < 0.1, "{}", s.iops);
    }

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

    #[test]
    fn summary_without_io_has_no_directions() {
        let metrics = Metrics::new();
        let summary = metrics.summary();
        assert_eq!(summary.write, None);
        assert_eq!(summary.read, None);
        assert_eq!(summary.timeline.len(), 1, "the second in progress");
        let json = serde_json::to_value(&summary).unwrap();
        assert!(json["write"].is_null());
    }

    #[test]
    fn the_recorder_is_shared_between_threads() {
        let metrics = Arc::new(Metrics::new());
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let metrics = Arc::clone(&metrics);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if i == 0 {
                            metrics.record_write(Duration::from_micros(20), 4096);
                        } else {
                            metrics.record_read(Duration::from_micros(40), 1 << 20);
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let summary = metrics.summary();
        assert_eq!(summary.write.unwrap().ios, 1000);
        assert_eq!(summary.read.unwrap().bytes, 1000 << 20);
        let timeline_writes: u64 = summary.timeline.iter().map(|p| p.write_bytes).sum();
        assert_eq!(timeline_writes, 1000 * 4096);
    }

    #[test]
    fn the_emitter_writes_one_json_line_per_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let recording = MetricsRecording::start(Some(&path)).unwrap();
        let metrics = recording.metrics();
        let started = Instant::now();
        while started.elapsed() < ms(2_300) {
            metrics.record_write(Duration::from_micros(30), 4096);
            std::thread::sleep(ms(5));
        }
        // Two whole seconds are on disk before the run ends.
        let lines_while_running = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines_while_running >= 2, "{lines_while_running} lines");
        assert_eq!(recording.finish(), None);
        let text = std::fs::read_to_string(&path).unwrap();
        let points: Vec<TimelinePoint> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is a point"))
            .collect();
        assert_eq!(points.len(), 3);
        assert_eq!(
            points.iter().map(|p| p.t_s).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(points[0].span_s, 1.0);
        assert!(points[2].span_s < 1.0);
        assert!(points.iter().all(|p| p.write_bytes > 0));
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        for key in [
            "t_s",
            "write_bytes",
            "write_iops",
            "write_p99_us",
            "read_iops",
        ] {
            assert!(line.get(key).is_some(), "{key} in {line}");
        }
    }

    #[test]
    fn an_uncreatable_metrics_file_is_a_usage_error() {
        let error = MetricsRecording::start(Some(Path::new("/nonexistent/dir/m.jsonl")))
            .err()
            .expect("refused");
        assert!(matches!(error, Error::Usage(_)));
        assert!(error.to_string().contains("/nonexistent/dir/m.jsonl"));
    }
}
