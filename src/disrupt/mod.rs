//! Scheduled disruptions (`--disrupt CMD`): the user's command runs while
//! IO runs — it kills and restarts a server, fails over a controller,
//! updates firmware — and each one is measured and checked:
//!
//! 1. At the scheduled time the command (then `--recover`, if given) runs
//!    in a process group of its own, with a time limit ([`command`]). The
//!    writer keeps going; a target that goes away is reopened by the
//!    reconnecting target (`--reconnect-timeout`), and IOs it lost are
//!    issued again.
//! 2. Once the commands are done, the writer submits no new write (one
//!    could overwrite, and so hide, a durable write the disruption lost):
//!    it pauses ([`crate::writer::Pause`]) as soon as the IOs in flight
//!    have completed. The first IO completion after the commands (one of
//!    those, or the verify's first read) says the target answers again;
//!    the longest time without any completion since the disruption began
//!    is its stall.
//! 3. With nothing in flight, every block written so far is verified — a
//!    write not yet durable may read old or new, every other must read
//!    exactly: a durable write lost across the disruption is a `lost_write`
//!    of this disruption. Then the writer makes its writes durable again
//!    (writing again those whose connection was replaced) and resumes.
//! 4. The time until a second of writes reaches 80% of the throughput
//!    before the disruption is its recovery time.
//!
//! A command that fails or outlives `--disrupt-timeout`, or a target that
//! does not answer, ends the run with exit 3 and one line; the manifest's
//! journal then covers every write not yet durable, as after a crash.

pub mod command;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::metrics::{Metrics, TimelineEvent};
use crate::report::{Disruption, Report};
use crate::storage::LossCounters;
use crate::writer::Pause;

/// When the disruptions happen, counted from the start of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// At every multiple of this time.
    Every(Duration),
    /// Once, this long into the run.
    At(Duration),
}

impl Schedule {
    /// When the disruption number `index` (0 for the first) is due.
    fn time_of(self, index: u64) -> Option<Duration> {
        match self {
            Schedule::Every(every) => Some(every * (index as u32 + 1)),
            Schedule::At(at) => (index == 0).then_some(at),
        }
    }
}

/// `--disrupt` and its companions, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisruptPlan {
    pub command: String,
    pub recover: Option<String>,
    pub schedule: Schedule,
    /// Longest each command may run.
    pub command_timeout: Duration,
}

/// The verify after a disruption: every block of the manifest, the given
/// writes not yet durable accepting old or new.
pub type Checker =
    Box<dyn Fn(&Manifest, HashMap<u64, crate::manifest::Pending>) -> Result<Report> + Send + Sync>;

/// Fraction of the write throughput before a disruption that counts as
/// recovered.
const RECOVERED_FRACTION: f64 = 0.8;
/// The window the throughput before a disruption is taken over.
const BASELINE_WINDOW: Duration = Duration::from_secs(5);
/// How often the controller samples the metrics.
const TICK: Duration = Duration::from_millis(50);

/// The scheduled disruptions of one run: a thread that runs them, and the
/// [`Pause`] the writer asks between bursts.
pub struct Disruptions {
    plan: DisruptPlan,
    metrics: Arc<Metrics>,
    loss: Option<Arc<LossCounters>>,
    env: Vec<(&'static str, String)>,
    /// How long to wait for an IO completion after the commands ended.
    answer_timeout: Duration,
    /// No disruption starts this long into the run or later (the run's
    /// planned duration).
    until: Option<Duration>,
    check: Checker,
    state: Mutex<State>,
    changed: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    /// The run is ending: start no more disruptions.
    shutdown: bool,
    /// A disruption is under way (from its command to the writer's resume;
    /// a duration reached meanwhile waits for it).
    busy: bool,
    /// The commands of a disruption ended: the writer should pause.
    due: bool,
    /// When they ended (run time).
    commands_ended: Duration,
    /// The target answered after them (`current` has the figures).
    answered: bool,
    /// The writer paused and resumed after the disruption in `current`.
    resumed: bool,
    failure: Option<String>,
    /// The disruption under way.
    current: Option<Disruption>,
    /// Time spent in the verify of `current`.
    verify_time: Duration,
    done: Vec<Disruption>,
}

impl Disruptions {
    /// Start the schedule now; `metrics` must be the run's recorder (its
    /// second 0 is the run's start), `loss` the target's counters.
    pub fn start(
        plan: DisruptPlan,
        metrics: Arc<Metrics>,
        loss: Option<Arc<LossCounters>>,
        env: Vec<(&'static str, String)>,
        answer_timeout: Duration,
        until: Option<Duration>,
        check: Checker,
    ) -> Arc<Disruptions> {
        let disruptions = Arc::new(Disruptions {
            plan,
            metrics,
            loss,
            env,
            answer_timeout,
            until,
            check,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            thread: Mutex::new(None),
        });
        let runner = Arc::clone(&disruptions);
        let handle = std::thread::Builder::new()
            .name("disrupt".into())
            .spawn(move || runner.run())
            .expect("spawn the disruption thread");
        *lock(&disruptions.thread) = Some(handle);
        disruptions
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Sleep until `until` (run time) or the run ends; false when it ends.
    fn sleep_until(&self, until: Duration) -> bool {
        let mut state = self.state();
        loop {
            if state.shutdown {
                return false;
            }
            let now = self.metrics.elapsed();
            if now >= until {
                return true;
            }
            state = self
                .changed
                .wait_timeout(state, (until - now).min(Duration::from_secs(1)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn run(&self) {
        let mut samples: VecDeque<(Duration, u64)> = VecDeque::new();
        for index in 0.. {
            let Some(at) = self
                .plan
                .schedule
                .time_of(index)
                .filter(|&at| self.until.is_none_or(|until| at < until))
            else {
                break;
            };
            // Sample the write throughput while waiting, for the baseline.
            loop {
                let now = self.metrics.elapsed();
                push_sample(&mut samples, now, self.metrics.bytes_completed().0);
                if now >= at {
                    break;
                }
                if !self.sleep_until((now + TICK).min(at)) {
                    return;
                }
            }
            if let Err(why) = self.disrupt(index + 1, &samples) {
                let mut state = self.state();
                state.failure = Some(why);
                state.busy = false;
                self.changed.notify_all();
                return;
            }
            if !self.watch_recovery(index, &mut samples) {
                return;
            }
        }
    }

    /// Run disruption `number` up to the writer's resume.
    fn disrupt(
        &self,
        number: u64,
        samples: &VecDeque<(Duration, u64)>,
    ) -> std::result::Result<(), String> {
        let started = self.metrics.elapsed();
        let baseline = rate_over(samples, started, BASELINE_WINDOW);
        let (epoch_before, failed_before) = self.loss_figures();
        self.metrics.begin_stall_watch();
        self.metrics.mark(TimelineEvent::DisruptionStart {
            index: number,
            t_s: started.as_secs_f64(),
        });
        {
            let mut state = self.state();
            state.busy = true;
            state.resumed = false;
            state.answered = false;
            state.verify_time = Duration::ZERO;
            state.current = Some(Disruption {
                index: number,
                command: self.plan.command.clone(),
                recover_command: self.plan.recover.clone(),
                started_at_s: started.as_secs_f64(),
                command_s: 0.0,
                recover_s: None,
                answered_at_s: 0.0,
                stall_s: 0.0,
                baseline_write_bytes_per_s: baseline,
                recovered_after_s: None,
                failed_ios: 0,
                reconnects: 0,
                verify_checked_blocks: 0,
                verify_s: 0.0,
                findings_by_class: BTreeMap::new(),
                findings: Vec::new(),
            });
        }
        crate::say!(
            "disruption {number}: running `{}` ({:.1} s into the run)",
            self.plan.command,
            started.as_secs_f64()
        );
        let mut env = self.env.clone();
        env.push(("BLOCKSTAMP_DISRUPTION", number.to_string()));
        let fail = |e: command::CommandFailed| format!("disruption {number}: {}", e.0);
        let ran = command::run(
            "disrupt",
            &self.plan.command,
            &env,
            self.plan.command_timeout,
        )
        .map_err(fail)?;
        let recovered = match &self.plan.recover {
            Some(recover) => Some(
                command::run("recover", recover, &env, self.plan.command_timeout).map_err(fail)?,
            ),
            None => None,
        };
        let commands_ended = self.metrics.elapsed();
        {
            let mut state = self.state();
            let current = state.current.as_mut().expect("a disruption under way");
            current.command_s = ran.as_secs_f64();
            current.recover_s = recovered.map(|r| r.as_secs_f64());
            state.commands_ended = commands_ended;
            state.due = true;
            self.changed.notify_all();
        }
        // The target answers when an IO completes after the commands.
        let deadline = Instant::now() + self.answer_timeout;
        loop {
            {
                let mut state = self.state();
                if state.answered {
                    break;
                }
                if self.metrics.last_completion() > commands_ended || state.shutdown {
                    // (At a shutdown the run's last flush came back.)
                    self.note_answer(&mut state);
                    break;
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "disruption {number}: the target did not answer within {} after the commands ended",
                    crate::units::format_duration(self.answer_timeout)
                ));
            }
            std::thread::sleep(TICK);
        }
        // Wait for the writer's pause (the verify) and resume.
        let mut state = self.state();
        while !state.resumed && !state.shutdown {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(state);
        let (epoch_after, failed_after) = self.loss_figures();
        let mut state = self.state();
        if let Some(current) = state.current.as_mut() {
            current.reconnects = epoch_after - epoch_before;
            current.failed_ios = failed_after - failed_before;
        }
        Ok(())
    }

    /// After the resume: time until the writes are back to most of the
    /// baseline; then file the disruption. False when the run ended.
    fn watch_recovery(&self, index: u64, samples: &mut VecDeque<(Duration, u64)>) -> bool {
        let next = self.plan.schedule.time_of(index + 1);
        let (baseline, started, verify_time) = {
            let state = self.state();
            let Some(current) = state.current.as_ref() else {
                return false;
            };
            if !state.resumed {
                // The run ended first: `finish` verifies and files it.
                return false;
            }
            (
                current.baseline_write_bytes_per_s,
                Duration::from_secs_f64(current.started_at_s),
                state.verify_time,
            )
        };
        let resumed_at = self.metrics.elapsed();
        samples.clear();
        {
            // Watching the throughput come back holds nothing up.
            let mut state = self.state();
            state.busy = false;
            self.changed.notify_all();
        }
        let mut recovered = None;
        let mut ended = false;
        loop {
            let now = self.metrics.elapsed();
            push_sample(samples, now, self.metrics.bytes_completed().0);
            if now >= resumed_at + Duration::from_secs(1)
                && rate_over(samples, now, Duration::from_secs(1)) >= RECOVERED_FRACTION * baseline
            {
                recovered = Some(now.saturating_sub(started).saturating_sub(verify_time));
                break;
            }
            if next.is_some_and(|next| now >= next) {
                break;
            }
            if !self.sleep_until(now + TICK) {
                ended = true;
                break;
            }
        }
        let mut state = self.state();
        if let Some(mut record) = state.current.take() {
            record.recovered_after_s = recovered.map(|r| r.as_secs_f64());
            state.done.push(record);
        }
        state.busy = false;
        self.changed.notify_all();
        !ended
    }

    /// The target answered after the commands of the disruption under
    /// way: its answer time and stall, once.
    fn note_answer(&self, state: &mut State) {
        if state.answered {
            return;
        }
        state.answered = true;
        let answered = self.metrics.last_completion().max(state.commands_ended);
        let stall = self.metrics.longest_stall();
        if let Some(current) = state.current.as_mut() {
            current.answered_at_s = answered.as_secs_f64();
            current.stall_s = stall.as_secs_f64();
            self.metrics.mark(TimelineEvent::DisruptionAnswered {
                index: current.index,
                t_s: answered.as_secs_f64(),
                stall_s: stall.as_secs_f64(),
            });
        }
    }

    fn loss_figures(&self) -> (u64, u64) {
        self.loss
            .as_ref()
            .map_or((0, 0), |l| (l.epoch(), l.failed_ios()))
    }

    /// End the schedule: wait for a disruption's commands still running
    /// (never kill them: it may be a firmware update), run the verify of
    /// one the writer did not pause for, and return every disruption. An
    /// error when one failed.
    pub fn finish(&self, manifest: &Manifest) -> Result<Vec<Disruption>> {
        let waiting = {
            let mut state = self.state();
            state.shutdown = true;
            self.changed.notify_all();
            state.busy && !state.due
        };
        if waiting {
            eprintln!(
                "note: waiting for the disruption under way to finish (a second signal ends at once)"
            );
        }
        if let Some(handle) = lock(&self.thread).take() {
            let _ = handle.join();
        }
        let mut state = self.state();
        if let Some(why) = state.failure.clone() {
            return Err(Error::run(why));
        }
        if state.current.is_some() && !state.resumed {
            drop(state);
            self.check(manifest, HashMap::new())?;
            state = self.state();
        }
        if let Some(record) = state.current.take() {
            state.done.push(record);
        }
        Ok(std::mem::take(&mut state.done))
    }

    /// Stop without waiting (the run failed): a command still running is
    /// left to finish on its own.
    pub fn abandon(&self) {
        let mut state = self.state();
        state.shutdown = true;
        if state.busy && !state.due {
            eprintln!("note: the disruption command under way is left running");
        }
        self.changed.notify_all();
    }

    /// The post-disruption verify, filed with the disruption under way.
    fn check(
        &self,
        manifest: &Manifest,
        pending: HashMap<u64, crate::manifest::Pending>,
    ) -> Result<()> {
        let started = Instant::now();
        let report = (self.check)(manifest, pending)?;
        let took = started.elapsed();
        if let Some(why) = &report.target_lost {
            return Err(Error::run(format!(
                "the verify after a disruption lost the target: {why}"
            )));
        }
        let found: u64 = report.findings_by_class.values().sum();
        let mut state = self.state();
        state.verify_time += took;
        if state.due && self.metrics.last_completion() > state.commands_ended {
            // Nothing was in flight: the verify's reads were the answer.
            self.note_answer(&mut state);
        }
        let Some(current) = state.current.as_mut() else {
            return Ok(());
        };
        current.verify_checked_blocks = report.blocks.checked;
        current.verify_s = took.as_secs_f64();
        current.findings_by_class = report.findings_by_class.clone();
        current.findings = report.findings.clone();
        crate::say!(
            "disruption {}: the target answered after a {:.2} s stall; verify of {} block(s) after it: {} finding(s)",
            current.index,
            current.stall_s,
            report.blocks.checked,
            found
        );
        Ok(())
    }
}

impl Pause for Disruptions {
    fn due(&self) -> bool {
        let state = self.state();
        state.due || state.failure.is_some()
    }

    fn busy(&self) -> bool {
        self.state().busy
    }

    fn paused(
        &self,
        manifest: &Manifest,
        pending: HashMap<u64, crate::manifest::Pending>,
    ) -> Result<()> {
        {
            let mut state = self.state();
            if let Some(why) = state.failure.clone() {
                return Err(Error::run(why));
            }
            // The IOs in flight completed after the commands: the target
            // answered then, not when the verify's reads end.
            if self.metrics.last_completion() > state.commands_ended {
                self.note_answer(&mut state);
            }
        }
        self.check(manifest, pending)
    }

    fn resumed(&self) {
        let mut state = self.state();
        state.due = false;
        state.resumed = true;
        self.changed.notify_all();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keep (time, bytes) samples of the last few seconds.
fn push_sample(samples: &mut VecDeque<(Duration, u64)>, now: Duration, bytes: u64) {
    samples.push_back((now, bytes));
    while samples
        .front()
        .is_some_and(|&(t, _)| now.saturating_sub(t) > BASELINE_WINDOW + Duration::from_secs(1))
    {
        samples.pop_front();
    }
}

/// Bytes per second over the `window` before `now` (or as much of it as
/// the samples cover).
fn rate_over(samples: &VecDeque<(Duration, u64)>, now: Duration, window: Duration) -> f64 {
    let Some(&(_, last)) = samples.back() else {
        return 0.0;
    };
    let from = now.saturating_sub(window);
    let Some(&(t0, first)) = samples.iter().find(|&&(t, _)| t >= from) else {
        return 0.0;
    };
    let span = now.saturating_sub(t0).as_secs_f64();
    if span < 0.05 {
        return 0.0;
    }
    (last - first) as f64 / span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_give_their_times() {
        let every = Schedule::Every(Duration::from_secs(10));
        assert_eq!(every.time_of(0), Some(Duration::from_secs(10)));
        assert_eq!(every.time_of(2), Some(Duration::from_secs(30)));
        let at = Schedule::At(Duration::from_secs(7));
        assert_eq!(at.time_of(0), Some(Duration::from_secs(7)));
        assert_eq!(at.time_of(1), None);
    }

    #[test]
    fn the_rate_is_taken_over_the_window() {
        let mut samples = VecDeque::new();
        for tenth in 0..=100u64 {
            // 1 MB/s for 5 s, then 3 MB/s for 5 s.
            let bytes = if tenth <= 50 {
                tenth * 100_000
            } else {
                5_000_000 + (tenth - 50) * 300_000
            };
            push_sample(&mut samples, Duration::from_millis(tenth * 100), bytes);
        }
        let now = Duration::from_secs(10);
        let rate = rate_over(&samples, now, Duration::from_secs(1));
        assert!((rate - 3_000_000.0).abs() < 1.0, "{rate}");
        let rate = rate_over(&samples, now, Duration::from_secs(5));
        assert!((rate - 3_000_000.0).abs() < 1.0, "{rate}");
    }
}
