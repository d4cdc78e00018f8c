//! Acting on a finding the moment it is confirmed (docs/CONTRACT.md,
//! "Acting on findings"). `--on-finding CMD` runs the user's command — pull
//! the array's logs before they rotate, snapshot the VM, page someone —
//! with the finding in its environment, on a thread of its own while the
//! verify goes on; `--stop-on-finding` ends the writing, keeping the
//! evidence. Neither changes the verdict or the exit status.
//!
//! "Confirmed" is what verify means by `persistent`: the block read a
//! second time returned the same bytes (or failed again). Transient
//! findings set nothing off.

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::disrupt::command;
use crate::report::{FindingTrigger, OnFindingRun, Report};
use crate::signals::StopToken;
use crate::verify::{Finding, FindingClass, FindingWatch, Watcher};

/// `--on-finding` and its companions, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnFindingPlan {
    pub command: String,
    /// Longest one run may take; then its process group is killed.
    pub timeout: Duration,
    /// `--on-finding-each`: a run per finding class and region, not one.
    pub each: bool,
}

/// `--on-finding-timeout` when not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The regions of `--on-finding-each`: 64 MiB extents of the target (the
/// size of a qcow2 L2 table's reach at 64 KiB clusters, and of many
/// arrays' stripes and snapshot grain tables).
pub const EACH_REGION_BYTES: u64 = 64 << 20;

/// The most runs of the command one blockstamp command makes (with
/// `--on-finding-each`, a target damaged everywhere would otherwise run
/// it thousands of times).
pub const MAX_RUNS: usize = 100;

/// What one run of the command stands for: findings with the same key
/// share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TriggerKey {
    /// The first confirmed finding of the command.
    First,
    /// A finding class within one [`EACH_REGION_BYTES`] extent.
    ClassRegion(FindingClass, u64),
}

/// The key of `finding`: one for every finding, or with
/// `--on-finding-each` its class and region. This is the one place to
/// change when findings can be grouped into incidents while the verify
/// still runs.
fn trigger_key(finding: &Finding, each: bool) -> TriggerKey {
    if each {
        TriggerKey::ClassRegion(finding.classified.class, finding.offset / EACH_REGION_BYTES)
    } else {
        TriggerKey::First
    }
}

/// The check that ends a `run` or `soak`: its findings stop nothing, the
/// writing is over by then.
const FINAL_VERIFY: &str = "verify";

/// What a command does on confirmed findings: its `--on-finding` command
/// and its `--stop-on-finding` stop, shared by every check of the command
/// (verifies, rolling read-back, post-disruption verifies).
pub struct Actions {
    hook: Option<Hook>,
    /// Fired at the first confirmed finding (`--stop-on-finding`).
    stop: Option<StopToken>,
    /// When the blockstamp command started (runs' `started_at_s`).
    started: Instant,
    state: Mutex<State>,
    worker: Mutex<Worker>,
}

struct Hook {
    plan: OnFindingPlan,
    /// What every run gets: target, manifest, run id, report path.
    env: Vec<(&'static str, String)>,
}

#[derive(Default)]
struct State {
    fired: HashSet<TriggerKey>,
    runs_started: usize,
    stopped_on: Option<FindingTrigger>,
}

/// The thread that runs the command, one run after another (never two at
/// once against the same array), and the queue that feeds it.
#[derive(Default)]
struct Worker {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<Vec<OnFindingRun>>>,
}

struct Job {
    trigger: FindingTrigger,
    env: Vec<(&'static str, String)>,
}

impl Actions {
    /// The actions asked for, or None when there are none. `env`: the
    /// variables of every run (the finding's are added per run).
    pub fn new(
        plan: Option<OnFindingPlan>,
        stop: Option<StopToken>,
        env: Vec<(&'static str, String)>,
        started: Instant,
    ) -> Option<Arc<Actions>> {
        if plan.is_none() && stop.is_none() {
            return None;
        }
        Some(Arc::new(Actions {
            hook: plan.map(|plan| Hook { plan, env }),
            stop,
            started,
            state: Mutex::new(State::default()),
            worker: Mutex::new(Worker::default()),
        }))
    }

    /// The watch for the check named `source`.
    pub fn watcher(self: &Arc<Self>, source: &'static str) -> Watcher {
        Watcher::new(Arc::clone(self) as Arc<dyn FindingWatch>, source)
    }

    /// The finding `--stop-on-finding` stopped at, if it did.
    pub fn stopped_on(&self) -> Option<FindingTrigger> {
        lock(&self.state).stopped_on.clone()
    }

    /// Wait for the runs of the command still going (each within its
    /// timeout), then file them, and the stop, in `report`. A stop makes the
    /// report unclean: the run did not do what it was asked.
    pub fn finish_into(&self, report: &mut Report) {
        let (jobs, thread) = {
            let mut worker = lock(&self.worker);
            (worker.jobs.take(), worker.thread.take())
        };
        drop(jobs);
        let runs = match thread {
            Some(thread) => {
                if !thread.is_finished()
                    && let Some(hook) = &self.hook
                {
                    eprintln!(
                        "note: waiting for the --on-finding command to finish (at most {} per run)",
                        crate::units::format_duration(hook.plan.timeout)
                    );
                }
                thread.join().unwrap_or_default()
            }
            None => Vec::new(),
        };
        let state = lock(&self.state);
        if self.hook.is_some() {
            if state.runs_started >= MAX_RUNS {
                report.notes.push(format!(
                    "--on-finding ran its command {MAX_RUNS} times, its most; later findings did not run it"
                ));
            }
            report.on_finding = Some(runs);
        }
        if let Some(trigger) = &state.stopped_on {
            report.stopped_on_finding = Some(trigger.clone());
            report.clean = false;
        }
    }

    /// Queue a run of the command for `trigger`, starting the worker.
    fn queue(&self, hook: &Hook, trigger: FindingTrigger) {
        let mut env = hook.env.clone();
        env.extend([
            ("BLOCKSTAMP_CLASS", trigger.class.clone()),
            ("BLOCKSTAMP_BLOCK", trigger.block.to_string()),
            ("BLOCKSTAMP_OFFSET", trigger.offset.to_string()),
            ("BLOCKSTAMP_DETAIL", trigger.detail.clone()),
            ("BLOCKSTAMP_SOURCE", trigger.source.clone()),
        ]);
        let mut worker = lock(&self.worker);
        if worker.jobs.is_none() && worker.thread.is_none() {
            let (sender, receiver) = channel();
            let plan = hook.plan.clone();
            let started = self.started;
            worker.jobs = Some(sender);
            worker.thread = std::thread::Builder::new()
                .name("on-finding".into())
                .spawn(move || run_jobs(&plan, started, receiver))
                .ok();
        }
        if let Some(jobs) = &worker.jobs {
            let _ = jobs.send(Job { trigger, env });
        }
    }
}

impl FindingWatch for Actions {
    fn wants(&self, finding: &Finding, source: &'static str) -> bool {
        let state = lock(&self.state);
        let stop_wants =
            self.stop.is_some() && state.stopped_on.is_none() && source != FINAL_VERIFY;
        let hook_wants = self.hook.as_ref().is_some_and(|hook| {
            state.runs_started < MAX_RUNS
                && !state.fired.contains(&trigger_key(finding, hook.plan.each))
        });
        stop_wants || hook_wants
    }

    fn confirmed(&self, finding: &Finding, source: &'static str) {
        let trigger = FindingTrigger {
            class: finding.classified.class.name().to_string(),
            block: finding.block,
            offset: finding.offset,
            detail: finding.classified.detail.clone(),
            source: source.to_string(),
        };
        let mut state = lock(&self.state);
        if let Some(stop) = &self.stop
            && state.stopped_on.is_none()
            && source != FINAL_VERIFY
        {
            state.stopped_on = Some(trigger.clone());
            stop.stop();
            crate::say!(
                "stopping on a finding (--stop-on-finding): block {} is {} ({}); finishing the writes in flight",
                trigger.block,
                trigger.class,
                trigger.source
            );
        }
        if let Some(hook) = &self.hook
            && state.runs_started < MAX_RUNS
            && state.fired.insert(trigger_key(finding, hook.plan.each))
        {
            state.runs_started += 1;
            drop(state);
            self.queue(hook, trigger);
        }
    }
}

/// The worker: run each queued job in turn until the queue closes.
fn run_jobs(plan: &OnFindingPlan, started: Instant, jobs: Receiver<Job>) -> Vec<OnFindingRun> {
    let mut runs = Vec::new();
    for job in jobs {
        crate::say!(
            "on-finding: running `{}` for block {} ({}, found by {})",
            plan.command,
            job.trigger.block,
            job.trigger.class,
            job.trigger.source
        );
        let started_at_s = started.elapsed().as_secs_f64();
        let run = match command::execute("on-finding", &plan.command, &job.env, plan.timeout) {
            Ok(ran) => {
                if let Some(failure) = ran.failure(
                    "on-finding",
                    &plan.command,
                    plan.timeout,
                    "--on-finding-timeout",
                ) {
                    eprintln!("warning: {failure}; the verdict does not change");
                } else {
                    crate::say!(
                        "on-finding: `{}` exited 0 after {:.1} s",
                        plan.command,
                        ran.duration.as_secs_f64()
                    );
                }
                OnFindingRun {
                    command: plan.command.clone(),
                    trigger: job.trigger,
                    started_at_s,
                    exit_status: ran.status.and_then(|s| s.code()),
                    timed_out: ran.timed_out(),
                    duration_s: ran.duration.as_secs_f64(),
                    output_tail: ran.tail,
                }
            }
            Err(command::CommandFailed(why)) => {
                eprintln!("warning: {why}; the verdict does not change");
                OnFindingRun {
                    command: plan.command.clone(),
                    trigger: job.trigger,
                    started_at_s,
                    exit_status: None,
                    timed_out: false,
                    duration_s: 0.0,
                    output_tail: vec![why],
                }
            }
        };
        runs.push(run);
    }
    runs
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Classified;

    fn finding(block: u64, class: FindingClass) -> Finding {
        let mut finding = Finding::from_read(
            block,
            4096,
            1,
            &[0u8; 4096],
            Classified {
                class,
                found_generation: None,
                found_block: None,
                detail: "test".into(),
                torn_split: None,
                corruption: None,
            },
        );
        finding.persistent = true;
        finding
    }

    #[test]
    fn each_means_once_per_class_and_64_mib_region() {
        let blocks_per_region = EACH_REGION_BYTES / 4096;
        let key = |block, class| trigger_key(&finding(block, class), true);
        assert_eq!(
            key(0, FindingClass::Zeroed),
            key(blocks_per_region - 1, FindingClass::Zeroed)
        );
        assert_ne!(
            key(0, FindingClass::Zeroed),
            key(blocks_per_region, FindingClass::Zeroed)
        );
        assert_ne!(key(0, FindingClass::Zeroed), key(0, FindingClass::Corrupt));
        assert_eq!(
            trigger_key(&finding(0, FindingClass::Zeroed), false),
            trigger_key(&finding(blocks_per_region * 9, FindingClass::Torn), false)
        );
    }

    #[test]
    fn the_first_confirmed_finding_fires_the_stop_once_and_is_remembered() {
        let stop = StopToken::new();
        let actions = Actions::new(None, Some(stop.clone()), Vec::new(), Instant::now()).unwrap();
        let watch = actions.watcher("rolling_verify");
        assert!(watch.wants(&finding(3, FindingClass::Torn)));
        watch.confirmed(&finding(3, FindingClass::Torn));
        assert!(stop.stop_requested());
        assert!(
            !watch.wants(&finding(4, FindingClass::Corrupt)),
            "nothing more to confirm early"
        );
        watch.confirmed(&finding(4, FindingClass::Corrupt));
        let stopped = actions.stopped_on().unwrap();
        assert_eq!(
            (
                stopped.block,
                stopped.class.as_str(),
                stopped.source.as_str()
            ),
            (3, "torn", "rolling_verify")
        );
    }

    #[test]
    fn findings_of_the_final_verify_stop_nothing() {
        let stop = StopToken::new();
        let actions = Actions::new(None, Some(stop.clone()), Vec::new(), Instant::now()).unwrap();
        let watch = actions.watcher("verify");
        assert!(!watch.wants(&finding(3, FindingClass::Torn)));
        watch.confirmed(&finding(3, FindingClass::Torn));
        assert!(!stop.stop_requested());
        assert!(actions.stopped_on().is_none());
    }
}
