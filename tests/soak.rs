//! `blockstamp soak`: intervals of bursty writes closed by full verifies, a
//! rolling verify in between, and a clean stop on a signal.

mod common;

use std::time::{Duration, Instant};

use common::TestEnv;

#[test]
fn a_short_soak_verifies_every_interval_and_reports_them() {
    let env = TestEnv::new();
    let run = env.run(&[
        "soak",
        "disk.img",
        "--manifest",
        "m",
        "--size",
        "16MiB",
        "--duration",
        "3s",
        "--verify-every",
        "1s",
        "--overwrite",
        "0.3",
        "--json",
        "-",
    ]);
    run.assert_code(0);
    let report = run.report();
    assert_eq!(report["clean"], true);
    let soak = &report["soak"];
    let intervals = soak["intervals"].as_array().unwrap();
    assert!(
        (3..=4).contains(&intervals.len()),
        "{} intervals",
        intervals.len()
    );
    for interval in intervals {
        assert!(interval["writes"].as_u64().unwrap() > 0, "{interval}");
        assert_eq!(interval["verify_checked_blocks"], 4096, "{interval}");
        assert_eq!(interval["verify_findings"], 0);
    }
    assert!(soak["rolling_checked_blocks"].as_u64().unwrap() > 0);
    assert_eq!(soak["stopped_by_signal"], false);
    assert!(soak["duration_s"].as_f64().unwrap() >= 3.0);
}

#[test]
fn a_soak_on_an_image_file_keeps_io_uring_as_it_reconnects_only_when_asked() {
    use common::need::{Need, require};
    if !require(Need::IoUring) {
        return;
    }
    let env = TestEnv::new();
    let soak = |extra: &[&str]| {
        let mut args = vec![
            "soak",
            "disk.img",
            "--manifest",
            "m",
            "--size",
            "8MiB",
            "--duration",
            "1s",
        ];
        args.extend_from_slice(extra);
        let run = env.run(&args);
        run.assert_code(0);
        run.stdout
    };
    // The default for a file: no reopening target, so io_uring drives it.
    let out = soak(&[]);
    assert!(out.contains("engine uring"), "{out}");
    // Asked for: the reopening target has no descriptor for io_uring.
    let out = soak(&["--reconnect-timeout", "10s"]);
    assert!(out.contains("engine sync"), "{out}");
}

#[test]
fn sigint_stops_a_soak_cleanly_with_a_final_verify() {
    let env = TestEnv::new();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_blockstamp"))
        .args([
            "soak",
            "disk.img",
            "--manifest",
            "m",
            "--size",
            "16MiB",
            "--duration",
            "1h",
        ])
        .args(["--verify-every", "10m", "--json", "report.json"])
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start soak");
    std::thread::sleep(Duration::from_millis(1500));
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let started = Instant::now();
    let output = child.wait_with_output().expect("wait for soak");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "stopped promptly"
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("report.json")).unwrap()).unwrap();
    assert_eq!(report["clean"], true);
    assert_eq!(report["soak"]["stopped_by_signal"], true);
    assert_eq!(report["blocks"]["checked"], 4096, "the final verify ran");
    assert!(report["soak"]["writes"].as_u64().unwrap() > 0);
}

#[test]
fn soak_needs_a_duration() {
    let env = TestEnv::new();
    let run = env.run(&["soak", "disk.img", "--manifest", "m", "--size", "1MiB"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("soak needs --duration"),
        "{}",
        run.stderr
    );
    assert!(!env.path("disk.img").exists());
}

/// A soak whose full verifies take about two seconds and whose writes a
/// third of one: a 64 MiB image of real zeros (no holes for verify to
/// skip), read 4 KiB at a time by one thread, no rolling verify. Its stdout
/// lines arrive on the receiver with the moment each was read.
struct SlowVerifySoak {
    env: TestEnv,
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<(Instant, String)>,
}

const SLOW_SOAK_IMAGE_BYTES: u64 = 64 << 20;

impl SlowVerifySoak {
    fn start() -> SlowVerifySoak {
        let env = TestEnv::new();
        std::fs::write(
            env.path("disk.img"),
            vec![0u8; SLOW_SOAK_IMAGE_BYTES as usize],
        )
        .unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_blockstamp"))
            .args(["soak", "disk.img", "--manifest", "m", "--duration", "1h"])
            .args(["--verify-every", "300ms", "--verify-backlog", "1000000000"])
            .args(["--read-size", "4KiB", "--read-depth", "1", "--threads", "1"])
            .args(["--json", "report.json", "--metrics", "metrics.jsonl"])
            .current_dir(env.dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start soak");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        SlowVerifySoak { env, child, lines }
    }

    /// The next stdout line containing `text`, and when it came.
    fn wait_for(&self, text: &str) -> Instant {
        loop {
            let (at, line) = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("no line with {text:?}: {e}"));
            if line.contains(text) {
                return at;
            }
        }
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).expect("send signal");
    }

    /// Wait for the exit; the status and stderr, and the stdout lines not
    /// yet read.
    fn finish(&mut self) -> (Option<i32>, String, Vec<String>) {
        use std::io::Read;
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = self.child.wait().expect("wait for soak");
        let rest = self.lines.iter().map(|(_, line)| line).collect();
        (status.code(), stderr, rest)
    }
}

#[test]
fn sigint_during_an_interval_verify_runs_no_second_verify() {
    let mut soak = SlowVerifySoak::start();
    // The writes of interval 2 take 0.3 s, then its verify about 2 s:
    // 1.1 s after interval 1's line, interval 2's verify is half done.
    let first = soak.wait_for("soak interval 1: verify");
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(first.elapsed()));
    soak.signal(rustix::process::Signal::INT);
    let (code, stderr, after_signal) = soak.finish();
    assert_eq!(code, Some(0), "{stderr}");
    let interval_lines: Vec<&String> = after_signal
        .iter()
        .filter(|line| line.contains("soak interval"))
        .collect();
    assert_eq!(
        interval_lines.len(),
        1,
        "the signal came during interval 2's verify, which finished: {after_signal:?}"
    );
    assert!(interval_lines[0].contains("soak interval 2: verify"));
    // Two full verifies read the image twice; a third, final one would
    // read it again. Rolling verify is off, so every byte read is theirs.
    let read_bytes: u64 = std::fs::read_to_string(soak.env.path("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let point: serde_json::Value = serde_json::from_str(line).unwrap();
            point["read_bytes"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(
        read_bytes,
        2 * SLOW_SOAK_IMAGE_BYTES,
        "verifies run: {}",
        read_bytes as f64 / SLOW_SOAK_IMAGE_BYTES as f64
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(soak.env.path("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["soak"]["stopped_by_signal"], true);
    assert_eq!(report["clean"], true);
    let intervals = report["soak"]["intervals"].as_array().unwrap();
    assert_eq!(intervals.len(), 2, "{intervals:?}");
    assert_eq!(report["blocks"]["checked"], 16384);
}

/// A second signal while a soak stops (here: during its final verify) ends
/// it at once with the shell's status for that signal.
fn a_second_signal_exits_with(signal: rustix::process::Signal, code: i32) {
    let mut soak = SlowVerifySoak::start();
    // After the first write phase, stop; the final verify takes ~2 s.
    soak.wait_for("rolling verify");
    soak.signal(signal);
    std::thread::sleep(Duration::from_millis(200));
    soak.signal(signal);
    let started = Instant::now();
    let (status, stderr, _) = soak.finish();
    assert_eq!(status, Some(code), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(1), "ended at once");
}

#[test]
fn a_second_sigint_exits_130() {
    a_second_signal_exits_with(rustix::process::Signal::INT, 130);
}

#[test]
fn a_second_sigterm_exits_143() {
    a_second_signal_exits_with(rustix::process::Signal::TERM, 143);
}
