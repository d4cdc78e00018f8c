//! The metrics thread: appends one JSON line per ended second to the
//! `--metrics FILE` while the run goes on, rewrites the `--prometheus FILE`
//! textfile every few seconds, and writes the rest of both when the run
//! ends (or when the command returns early with an error). The moments
//! marked on the timeline ([`TimelineEvent`]) go between the JSON lines in
//! time order: an event of second N follows the line of second N.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use super::event::TimelineEvent;
use super::prometheus::{TEXTFILE_EVERY_S, Textfile};
use super::record::Metrics;
use super::summary::TimelinePoint;
use crate::error::{Error, Result};

/// A run's metrics, with the thread that writes them out when a
/// `--metrics FILE` or a `--prometheus FILE` was asked for.
pub struct MetricsRecording {
    metrics: Arc<Metrics>,
    emitter: Option<Emitter>,
    textfile: Option<Arc<Textfile>>,
}

struct Emitter {
    /// The JSON-lines file, if asked for.
    path: Option<PathBuf>,
    stop: Sender<()>,
    thread: JoinHandle<EmitterEnd>,
}

/// What the emitter thread hands back: its JSON-lines file, the next second
/// to write, the events not yet written, and the first write error, if any.
struct EmitterEnd {
    out: Option<BufWriter<File>>,
    next_second: u64,
    /// Events taken from the recorder so far.
    next_event: usize,
    /// Events taken but not written: their second has not ended.
    held: Vec<TimelineEvent>,
    error: Option<std::io::Error>,
}

impl MetricsRecording {
    /// Start recording; with `path`, create that file now (a usage error,
    /// before anything is written, when it cannot be created) and start the
    /// emitter.
    pub fn start(path: Option<&Path>) -> Result<MetricsRecording> {
        MetricsRecording::start_with(path, None)
    }

    /// As [`MetricsRecording::start`], and with `textfile`, keep it up to
    /// date (from [`MetricsRecording::run_started`] on).
    pub fn start_with(path: Option<&Path>, textfile: Option<Textfile>) -> Result<MetricsRecording> {
        let metrics = Arc::new(Metrics::new());
        let textfile = textfile.map(Arc::new);
        let out = match path {
            None => None,
            Some(path) => Some(BufWriter::new(File::create(path).map_err(|e| {
                Error::usage(format!(
                    "cannot create metrics file {}: {e}; give a writable path to --metrics",
                    path.display()
                ))
            })?)),
        };
        let emitter = if out.is_none() && textfile.is_none() {
            None
        } else {
            let (stop, stopped) = channel::<()>();
            let thread_metrics = Arc::clone(&metrics);
            let thread_textfile = textfile.clone();
            let thread = std::thread::Builder::new()
                .name("bs-metrics".to_string())
                .spawn(move || {
                    let mut end = EmitterEnd {
                        out,
                        next_second: 0,
                        next_event: 0,
                        held: Vec::new(),
                        error: None,
                    };
                    loop {
                        let elapsed = thread_metrics.started.elapsed();
                        let next_tick = Duration::from_secs(elapsed.as_secs() + 1);
                        match stopped.recv_timeout(next_tick - elapsed) {
                            Err(RecvTimeoutError::Timeout) => {}
                            Ok(()) | Err(RecvTimeoutError::Disconnected) => return end,
                        }
                        if end.out.is_some() {
                            let (points, next) = thread_metrics.ended_seconds(end.next_second);
                            end.next_second = next;
                            end.take_events(&thread_metrics);
                            end.write(&points, Some(next));
                        }
                        let second = thread_metrics.started.elapsed().as_secs();
                        if let Some(textfile) = &thread_textfile
                            && second.is_multiple_of(TEXTFILE_EVERY_S)
                        {
                            textfile.publish(&thread_metrics, true);
                        }
                    }
                })
                .map_err(|e| Error::run(format!("cannot start the metrics thread: {e}")))?;
            Some(Emitter {
                path: path.map(Path::to_path_buf),
                stop,
                thread,
            })
        };
        Ok(MetricsRecording {
            metrics,
            emitter,
            textfile,
        })
    }

    /// The recorder, for `WriteOptions` / `VerifyOptions`.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The run has begun (its manifest is open): the textfile, if any, is
    /// written now and from now on.
    pub fn run_started(&self, run_id: u64) {
        if let Some(textfile) = &self.textfile {
            textfile.set_run_id(run_id);
            textfile.publish(&self.metrics, true);
        }
    }

    /// A soak's interval `interval` (from 1) has begun.
    pub fn set_soak_interval(&self, interval: u64) {
        if let Some(textfile) = &self.textfile {
            textfile.set_soak_interval(interval);
        }
    }

    /// Stop the emitter, write the remaining seconds (the partial last one
    /// included) and the final textfile. A file that could not be written
    /// is worth a warning, not the run's verdict: the message is returned
    /// for the caller to print.
    pub fn finish(mut self) -> Option<String> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Option<String> {
        let mut warnings = Vec::new();
        if let Some(emitter) = self.emitter.take() {
            let _ = emitter.stop.send(());
            match emitter.thread.join() {
                Ok(mut end) => {
                    if end.out.is_some() {
                        let points = self.metrics.remaining_seconds(end.next_second);
                        end.take_events(&self.metrics);
                        end.write(&points, None);
                    }
                    if end.error.is_none()
                        && let Some(Err(e)) = end.out.as_mut().map(BufWriter::flush)
                    {
                        end.error = Some(e);
                    }
                    if let (Some(e), Some(path)) = (end.error, &emitter.path) {
                        warnings.push(format!(
                            "cannot write metrics file {}: {e}; its lines may be incomplete",
                            path.display()
                        ));
                    }
                }
                Err(_) => warnings.push("the metrics thread panicked".to_string()),
            }
        }
        if let Some(textfile) = self.textfile.take() {
            textfile.publish(&self.metrics, false);
            warnings.extend(textfile.error());
        }
        (!warnings.is_empty()).then(|| warnings.join("; "))
    }
}

/// A command that returns early (the target lost, a write failed) still
/// leaves its files complete: the textfile then says the run has ended.
impl Drop for MetricsRecording {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl EmitterEnd {
    fn take_events(&mut self, metrics: &Metrics) {
        let (events, next) = metrics.events_since(self.next_event);
        self.next_event = next;
        self.held.extend(events);
        // Stable: events of the same instant keep the order they were marked in.
        self.held.sort_by(|a, b| a.t_s().total_cmp(&b.t_s()));
    }

    /// Write `points`, each after the held events of earlier seconds, then
    /// the held events before second `until` (all of them without one).
    fn write(&mut self, points: &[TimelinePoint], until: Option<u64>) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        if self.error.is_some() {
            return;
        }
        let mut lines = Vec::new();
        let mut held = std::mem::take(&mut self.held).into_iter().peekable();
        for point in points {
            while let Some(event) = held.next_if(|e| e.t_s() < point.t_s as f64) {
                lines.push(serde_json::to_string(&event).expect("timeline event serialises"));
            }
            lines.push(serde_json::to_string(point).expect("timeline point serialises"));
        }
        while let Some(event) = held.next_if(|e| until.is_none_or(|until| e.t_s() < until as f64)) {
            lines.push(serde_json::to_string(&event).expect("timeline event serialises"));
        }
        self.held = held.collect();
        for line in lines {
            if let Err(e) = writeln!(out, "{line}") {
                self.error = Some(e);
                return;
            }
        }
        if let Err(e) = out.flush() {
            self.error = Some(e);
        }
    }
}
#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
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

    fn writes_total(textfile: &str) -> u64 {
        let line = textfile
            .lines()
            .find(|l| l.starts_with("blockstamp_writes_total{"))
            .expect("a writes_total sample");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn the_textfile_is_rewritten_while_running_and_final_when_dropped() {
        use crate::metrics::prometheus::{RunLabels, Textfile};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blockstamp.prom");
        let labels = RunLabels {
            command: "write",
            target: "disk.img".to_string(),
            host: "h".to_string(),
        };
        let textfile = Textfile::new(&path, labels, &["torn"]);
        let recording = MetricsRecording::start_with(None, Some(textfile)).unwrap();
        let metrics = recording.metrics();
        recording.run_started(0x42);
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(first.contains("blockstamp_writes_total{target=\"disk.img\"} 0\n"));
        assert!(first.contains("blockstamp_running{target=\"disk.img\"} 1\n"));
        let started = Instant::now();
        while started.elapsed() < ms(5_500) {
            metrics.record_write(Duration::from_micros(30), 4096);
            std::thread::sleep(ms(20));
        }
        // The thread has rewritten it at the 5th second, without being asked.
        let while_running = std::fs::read_to_string(&path).unwrap();
        assert!(writes_total(&while_running) > 0, "{while_running}");
        assert!(while_running.contains("blockstamp_running{target=\"disk.img\"} 1\n"));
        metrics.record_write(Duration::from_micros(30), 4096);
        let ios = metrics.write_totals().ios;
        drop(recording);
        let last = std::fs::read_to_string(&path).unwrap();
        assert_eq!(writes_total(&last), ios);
        assert!(last.contains("blockstamp_running{target=\"disk.img\"} 0\n"));
    }

    #[test]
    fn events_are_written_in_time_order_among_the_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let recording = MetricsRecording::start(Some(&path)).unwrap();
        let metrics = recording.metrics();
        let started = Instant::now();
        let mut marked = 0;
        while started.elapsed() < ms(2_500) {
            metrics.record_write(Duration::from_micros(30), 4096);
            let now = metrics.elapsed().as_secs_f64();
            if marked == 0 && now >= 0.5 {
                metrics.mark(TimelineEvent::DisruptionStart { index: 1, t_s: now });
                marked += 1;
            }
            if marked == 1 && now >= 1.2 {
                // Marked late, as the controller does: the completion it
                // names came a little earlier.
                metrics.mark(TimelineEvent::DisruptionAnswered {
                    index: 1,
                    t_s: now - 0.05,
                    stall_s: 0.7,
                });
                marked += 1;
            }
            std::thread::sleep(ms(5));
        }
        // An event of the second in progress waits for the end.
        metrics.mark(TimelineEvent::DisruptionStart {
            index: 2,
            t_s: metrics.elapsed().as_secs_f64(),
        });
        assert_eq!(recording.finish(), None);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        let shape: Vec<String> = lines
            .iter()
            .map(|line| match line["event"].as_str() {
                Some(event) => format!("{event} {}", line["index"]),
                None => format!("second {}", line["t_s"]),
            })
            .collect();
        assert_eq!(
            shape,
            [
                "second 0",
                "disruption_start 1",
                "second 1",
                "disruption_answered 1",
                "second 2",
                "disruption_start 2",
            ]
        );
        assert_eq!(lines[3]["stall_s"], 0.7);
        let times: Vec<f64> = lines.iter().map(|l| l["t_s"].as_f64().unwrap()).collect();
        assert!(times.is_sorted(), "{times:?}");
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
