//! Progress on a terminal: bytes, MB/s, IOPS, ETA. Nothing at all when
//! stdout is not a terminal (logs and pipes stay clean).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Counters the IO loops bump and the display reads.
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes: AtomicU64,
    pub ios: AtomicU64,
}

impl Counters {
    pub fn add(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.ios.fetch_add(1, Ordering::Relaxed);
    }
}

/// A progress line drawn by its own thread until dropped.
pub struct Display {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How far a phase will go: bytes, or time.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    Bytes(u64),
    Time(Duration),
}

impl Display {
    /// Start drawing `label` progress when stdout is a terminal.
    pub fn start(label: &str, goal: Goal, counters: Arc<Counters>) -> Option<Display> {
        if !std::io::stdout().is_terminal() || QUIET.load(Ordering::Relaxed) {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let label = label.to_string();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("bs-progress".into())
                .spawn(move || draw(&label, goal, &counters, &stop))
                .ok()?
        };
        Some(Display {
            stop,
            thread: Some(thread),
        })
    }
}

/// No progress lines from now on: several phases run at once (many
/// targets), and their lines would overwrite each other.
pub fn quiet() {
    QUIET.store(true, Ordering::Relaxed);
}

static QUIET: AtomicBool = AtomicBool::new(false);

fn draw(label: &str, goal: Goal, counters: &Counters, stop: &AtomicBool) {
    let (length, template) = match goal {
        Goal::Bytes(total) => (
            total,
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} ETA {eta}",
        ),
        Goal::Time(duration) => (
            duration.as_secs().max(1),
            "{prefix} [{bar:30}] {elapsed}/{len}s {msg}",
        ),
    };
    let bar = ProgressBar::new(length);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        let bytes = counters.bytes.load(Ordering::Relaxed);
        let ios = counters.ios.load(Ordering::Relaxed);
        let seconds = last.0.elapsed().as_secs_f64().max(1e-3);
        let rate = (bytes - last.1) as f64 / seconds;
        let iops = (ios - last.2) as f64 / seconds;
        last = (Instant::now(), bytes, ios);
        bar.set_message(format!(
            "{} {:.0} IOPS",
            crate::units::format_rate(rate),
            iops
        ));
        match goal {
            Goal::Bytes(_) => bar.set_position(bytes.min(length)),
            Goal::Time(_) => bar.set_position(started.elapsed().as_secs().min(length)),
        }
    }
    bar.finish_and_clear();
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
