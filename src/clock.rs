//! Time as the write path sees it: a monotonic clock for durations and
//! pauses, and wall time for the write time in every stamp. Injected (as
//! TigerBeetle injects its time), so tests and the selftest run the writer
//! on a clock that moves only when told, and the same seed writes the same
//! bytes.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time. Shared between threads (`Arc<dyn Clock>`).
pub trait Clock: Send + Sync + Debug {
    /// Monotonic time: only differences between readings mean anything.
    fn now(&self) -> Instant;

    /// Wall time in whole seconds since the Unix epoch.
    fn unix_now_s(&self) -> u64;

    /// Let `duration` pass (a pause between bursts).
    fn sleep(&self, duration: Duration);
}

/// The machine's clocks; what production runs on.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_now_s(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// A clock that moves only when told: by [`ManualClock::advance`], by
/// `sleep` (which returns at once), and by a fixed step after every reading
/// of `now` (none unless [`ManualClock::with_step`] sets one, so a
/// duration-bound run still ends after a known number of readings).
#[derive(Debug)]
pub struct ManualClock {
    origin: Instant,
    unix_origin_s: u64,
    elapsed_ns: AtomicU64,
    step_ns: u64,
}

impl ManualClock {
    /// A clock standing still at `unix_s` seconds since the Unix epoch.
    pub fn new(unix_s: u64) -> ManualClock {
        ManualClock {
            origin: Instant::now(),
            unix_origin_s: unix_s,
            elapsed_ns: AtomicU64::new(0),
            step_ns: 0,
        }
    }

    /// Move on by `step` after every reading of `now`.
    pub fn with_step(self, step: Duration) -> ManualClock {
        ManualClock {
            step_ns: duration_ns(step),
            ..self
        }
    }

    /// Move the clock on by `by`.
    pub fn advance(&self, by: Duration) {
        self.elapsed_ns
            .fetch_add(duration_ns(by), Ordering::Relaxed);
    }

    /// Time passed since the clock was made.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_ns.load(Ordering::Relaxed))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        let elapsed_ns = self.elapsed_ns.fetch_add(self.step_ns, Ordering::Relaxed);
        self.origin + Duration::from_nanos(elapsed_ns)
    }

    fn unix_now_s(&self) -> u64 {
        self.unix_origin_s + self.elapsed().as_secs()
    }

    fn sleep(&self, duration: Duration) {
        self.advance(duration);
    }
}

/// Nanoseconds, saturating (u64 nanoseconds last 584 years).
fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_700_000_000);
        let started = clock.now();
        assert_eq!(clock.now() - started, Duration::ZERO);
        assert_eq!(clock.unix_now_s(), 1_700_000_000);
        let slept = std::time::Instant::now();
        clock.sleep(Duration::from_secs(3600));
        assert!(slept.elapsed() < Duration::from_secs(1), "no real sleep");
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now() - started, Duration::from_millis(3_601_500));
        assert_eq!(clock.unix_now_s(), 1_700_003_601);
    }

    #[test]
    fn a_stepping_clock_moves_by_its_step_per_reading() {
        let clock = ManualClock::new(0).with_step(Duration::from_millis(10));
        let first = clock.now();
        let second = clock.now();
        let third = clock.now();
        assert_eq!(second - first, Duration::from_millis(10));
        assert_eq!(third - first, Duration::from_millis(20));
        assert_eq!(clock.elapsed(), Duration::from_millis(30));
    }

    #[test]
    fn the_system_clock_tells_the_time() {
        let clock = SystemClock;
        let before = clock.now();
        assert!(clock.now() >= before);
        assert!(clock.unix_now_s() > 1_600_000_000);
    }
}
