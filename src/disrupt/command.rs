//! Running a user's command (a disruption, its recovery, an `--on-finding`
//! command): `sh -c CMD` in a process group of its own (so the terminal's
//! Ctrl-C meant for blockstamp never interrupts a firmware update
//! half-way), its output passed on to stderr line by line and its tail
//! kept for the error message and the report, and a time limit after which
//! the whole group is killed.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines of output kept: the last one names a failure; the report of an
/// `--on-finding` command keeps them all.
pub const TAIL_LINES: usize = 20;
/// Characters kept of each line of that tail.
const TAIL_LINE_CHARS: usize = 500;

/// How a command ended when it did not succeed: one line for the user.
#[derive(Debug)]
pub struct CommandFailed(pub String);

/// How a command that started ended.
#[derive(Debug)]
pub struct Ran {
    /// How it exited; `None` when it outlived its time and was killed.
    pub status: Option<std::process::ExitStatus>,
    /// From its start until it exited (or was killed).
    pub duration: Duration,
    /// Its last lines of output, stdout and stderr as they came, at most
    /// [`TAIL_LINES`].
    pub tail: Vec<String>,
}

impl Ran {
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// One line saying how the command failed, or `None` when it exited 0.
    /// `timeout_flag` names the flag that set its time limit.
    pub fn failure(
        &self,
        what: &str,
        command: &str,
        timeout: Duration,
        timeout_flag: &str,
    ) -> Option<String> {
        let last = self
            .tail
            .last()
            .map(|line| format!(" (last output: {line})"))
            .unwrap_or_default();
        match self.status {
            None => Some(format!(
                "--{what} `{command}` did not finish within {timeout_flag} {}; it was killed{last}",
                crate::units::format_duration(timeout)
            )),
            Some(status) if status.success() => None,
            Some(status) => {
                let how = match (
                    status.code(),
                    std::os::unix::process::ExitStatusExt::signal(&status),
                ) {
                    (Some(code), _) => format!("exited with status {code}"),
                    (None, Some(signal)) => format!("was killed by signal {signal}"),
                    (None, None) => format!("ended with {status}"),
                };
                Some(format!(
                    "--{what} `{command}` {how} after {:.1} s{last}",
                    self.duration.as_secs_f64()
                ))
            }
        }
    }
}

/// Run `command` with `env` set; Ok with how long it ran when it exited 0
/// within `timeout` (`--disrupt-timeout`). `what` names it in the lines it
/// prints ("disrupt", "recover").
pub fn run(
    what: &str,
    command: &str,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<Duration, CommandFailed> {
    let ran = execute(what, command, env, timeout)?;
    match ran.failure(what, command, timeout, "--disrupt-timeout") {
        Some(message) => Err(CommandFailed(message)),
        None => Ok(ran.duration),
    }
}

/// Run `command` with `env` set until it exits or `timeout` passes (then
/// its whole process group is killed), passing its output on to stderr,
/// each line prefixed `what: `. An error only when it could not be started
/// or waited for.
pub fn execute(
    what: &str,
    command: &str,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<Ran, CommandFailed> {
    use std::os::unix::process::CommandExt;
    let started = Instant::now();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| CommandFailed(format!("--{what} `{command}` could not start: {e}")))?;
    let tail = Arc::new(Mutex::new(Vec::<String>::new()));
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        let tail = Arc::clone(&tail);
        let what = what.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                eprintln!("{what}: {line}");
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == TAIL_LINES {
                    tail.remove(0);
                }
                tail.push(line.chars().take(TAIL_LINE_CHARS).collect());
            }
        })
    })
    .collect();
    let group = child.id() as i32;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= timeout => {
                kill_group(group);
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                kill_group(group);
                let _ = child.wait();
                return Err(CommandFailed(format!(
                    "--{what} `{command}`: cannot wait for it: {e}"
                )));
            }
        }
    };
    let duration = started.elapsed();
    // The group's other processes may hold the pipes open (a server the
    // command started in the background): never wait for them.
    let deadline = Instant::now() + Duration::from_millis(200);
    for reader in readers {
        while !reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let tail = tail.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(Ran {
        status,
        duration,
        tail,
    })
}

/// Kill every process of the command's group (it may have started more).
fn kill_group(group: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(group) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_succeeds_returns_how_long_it_ran() {
        let ran = run("disrupt", "sleep 0.2", &[], Duration::from_secs(10)).unwrap();
        assert!(ran >= Duration::from_millis(200), "{ran:?}");
    }

    #[test]
    fn the_environment_reaches_the_command() {
        let env = [("BLOCKSTAMP_DISRUPTION", "7".to_string())];
        let error = run(
            "disrupt",
            "echo index=$BLOCKSTAMP_DISRUPTION; exit 4",
            &env,
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert_eq!(
            error.0.split(" after ").next().unwrap(),
            "--disrupt `echo index=$BLOCKSTAMP_DISRUPTION; exit 4` exited with status 4"
        );
        assert!(error.0.ends_with("(last output: index=7)"), "{}", error.0);
    }

    #[test]
    fn a_command_past_its_time_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child-survived");
        // The child outlives the shell unless the whole group is killed.
        let command = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let started = Instant::now();
        let error = run("recover", &command, &[], Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            error.0.contains("did not finish within --disrupt-timeout"),
            "{}",
            error.0
        );
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!marker.exists(), "the command's child was left running");
    }
}
