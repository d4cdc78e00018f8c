//! The recorder: what the writer and the verifier call once per completed
//! IO, and the per-second timeline it keeps.
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
//!
//! The recorder also counts the findings the run's verifies and rolling
//! read-backs reported, per class, for the Prometheus textfile; the app
//! adds them as each verify ends ([`Metrics::count_findings`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::event::TimelineEvent;
use super::summary::{
    DirectionSummary, LatencyUs, MAX_TIMELINE_POINTS, MetricsSummary, TimelinePoint, coarsen, round,
};

/// Longest latency told apart; longer ones count as this long.
const MAX_LATENCY_NS: u64 = 3_600 * 1_000_000_000;

/// A pause longer than this with nothing in flight is not counted in a
/// direction's active time (a soak that stops writing while it verifies).
const IDLE_GAP_NS: u64 = 1_000_000_000;

/// Records every completed IO of a run. Cheap to call from the loops that
/// reap completions; see the module docs for the threading.
pub struct Metrics {
    pub(super) started: Instant,
    write: Mutex<Direction>,
    read: Mutex<Direction>,
    activity: Activity,
    /// Findings reported so far, by class name.
    findings: Mutex<BTreeMap<&'static str, u64>>,
    /// Moments marked on the timeline, in the order they were marked.
    events: Mutex<Vec<TimelineEvent>>,
}

/// Lock-free figures a disruption is measured by: when the last IO
/// completed, the longest wait between two completions since the last
/// [`Metrics::begin_stall_watch`], and the bytes completed so far.
#[derive(Default)]
struct Activity {
    last_completion_ns: AtomicU64,
    longest_gap_ns: AtomicU64,
    write_bytes: AtomicU64,
    read_bytes: AtomicU64,
}

/// One direction's figures since the start, for exporters that keep their
/// own time series (the Prometheus textfile).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionTotals {
    pub ios: u64,
    pub bytes: u64,
    /// The latencies of every IO added up.
    pub latency_sum_ns: u64,
    /// Quantiles of the whole run, as the report's `latency_us` has them.
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p99_9_ns: u64,
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
            activity: Activity::default(),
            findings: Mutex::new(BTreeMap::new()),
            events: Mutex::new(Vec::new()),
        }
    }

    /// Mark a moment on the timeline (a disruption's start, the target
    /// answering): `--metrics` writes it among the per-second lines.
    pub fn mark(&self, event: TimelineEvent) {
        lock(&self.events).push(event);
    }

    /// The events marked since the first `from`, and how many there are now.
    pub(super) fn events_since(&self, from: usize) -> (Vec<TimelineEvent>, usize) {
        let events = lock(&self.events);
        (
            events.get(from..).unwrap_or_default().to_vec(),
            events.len(),
        )
    }

    /// Time since second 0 of the timeline.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// When (since second 0) the last IO completed.
    pub fn last_completion(&self) -> Duration {
        Duration::from_nanos(self.activity.last_completion_ns.load(Ordering::Acquire))
    }

    /// Start measuring the longest time without a completion from now (the
    /// time since the last completion counts as part of the first gap).
    pub fn begin_stall_watch(&self) {
        self.activity.longest_gap_ns.store(0, Ordering::Release);
    }

    /// The longest time without any IO completion since
    /// [`Metrics::begin_stall_watch`], including a gap still open now.
    pub fn longest_stall(&self) -> Duration {
        let now = self.started.elapsed().as_nanos() as u64;
        let open = now.saturating_sub(self.activity.last_completion_ns.load(Ordering::Acquire));
        Duration::from_nanos(
            self.activity
                .longest_gap_ns
                .load(Ordering::Acquire)
                .max(open),
        )
    }

    /// Bytes written and read by completed IOs so far.
    pub fn bytes_completed(&self) -> (u64, u64) {
        (
            self.activity.write_bytes.load(Ordering::Relaxed),
            self.activity.read_bytes.load(Ordering::Relaxed),
        )
    }

    fn note_completion(&self, now: Duration, bytes: u64, counter: &AtomicU64) {
        let now_ns = now.as_nanos() as u64;
        let before = self
            .activity
            .last_completion_ns
            .fetch_max(now_ns, Ordering::AcqRel);
        self.activity
            .longest_gap_ns
            .fetch_max(now_ns.saturating_sub(before), Ordering::AcqRel);
        counter.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A verify or rolling read-back reported `count` findings of `class`
    /// (a finding class name).
    pub fn count_findings(&self, class: &'static str, count: u64) {
        let mut findings = self
            .findings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *findings.entry(class).or_default() += count;
    }

    /// Findings counted so far, by class name (classes without any are
    /// absent).
    pub fn findings(&self) -> BTreeMap<&'static str, u64> {
        self.findings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Writes since the start.
    pub fn write_totals(&self) -> DirectionTotals {
        lock(&self.write).totals()
    }

    /// Reads since the start.
    pub fn read_totals(&self) -> DirectionTotals {
        lock(&self.read).totals()
    }

    /// A write of `bytes` completed after `latency` (submission to completion).
    pub fn record_write(&self, latency: Duration, bytes: u64) {
        let now = self.started.elapsed();
        self.note_completion(now, bytes, &self.activity.write_bytes);
        lock(&self.write).record(now, latency, bytes);
    }

    /// A read of `bytes` completed after `latency`.
    pub fn record_read(&self, latency: Duration, bytes: u64) {
        let now = self.started.elapsed();
        self.note_completion(now, bytes, &self.activity.read_bytes);
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
    pub(super) fn ended_seconds(&self, from: u64) -> (Vec<TimelinePoint>, u64) {
        let now = self.started.elapsed();
        let until = now.as_secs();
        let mut write = lock(&self.write);
        let mut read = lock(&self.read);
        write.roll_to(until);
        read.roll_to(until);
        (timeline(&write, &read, from..until, now), until)
    }

    /// Every point from second `from` on, the second in progress last.
    pub(super) fn remaining_seconds(&self, from: u64) -> Vec<TimelinePoint> {
        let now = self.started.elapsed();
        let write = lock(&self.write);
        let read = lock(&self.read);
        timeline(&write, &read, from..now.as_secs() + 1, now)
    }
}

/// A poisoned lock only means another recorder panicked mid-update; the
/// figures are still worth having.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
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
    latency_sum_ns: u64,
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
            latency_sum_ns: 0,
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
        self.latency_sum_ns = self.latency_sum_ns.saturating_add(latency_ns);

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

    fn totals(&self) -> DirectionTotals {
        DirectionTotals {
            ios: self.ios,
            bytes: self.bytes,
            latency_sum_ns: self.latency_sum_ns,
            p50_ns: quantile(&self.total, 0.50, self.max_ns),
            p99_ns: quantile(&self.total, 0.99, self.max_ns),
            p99_9_ns: quantile(&self.total, 0.999, self.max_ns),
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
    fn totals_agree_with_the_summary_and_add_up_latencies() {
        let metrics = Metrics::new();
        for latency_us in [10, 20, 30, 1_000] {
            metrics.record_write(Duration::from_micros(latency_us), 4096);
        }
        metrics.record_read(Duration::from_micros(50), 1 << 20);
        let write = metrics.write_totals();
        assert_eq!(write.ios, 4);
        assert_eq!(write.bytes, 4 * 4096);
        assert_eq!(write.latency_sum_ns, 1_060_000);
        let summary = metrics.summary().write.unwrap();
        assert_eq!(us(write.p50_ns), summary.latency_us.p50);
        assert_eq!(us(write.p99_ns), summary.latency_us.p99);
        assert_eq!(us(write.p99_9_ns), summary.latency_us.p99_9);
        assert_eq!(metrics.read_totals().ios, 1);
        assert_eq!(Metrics::new().read_totals(), DirectionTotals::default());
    }

    #[test]
    fn findings_are_counted_by_class() {
        let metrics = Metrics::new();
        assert!(metrics.findings().is_empty());
        metrics.count_findings("torn", 2);
        metrics.count_findings("zeroed", 1);
        metrics.count_findings("torn", 3);
        assert_eq!(
            metrics.findings(),
            BTreeMap::from([("torn", 5), ("zeroed", 1)])
        );
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
}
