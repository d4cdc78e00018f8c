//! Scheduled disruptions (`--disrupt CMD --disrupt-every D | --disrupt-at D`):
//! servers killed and restarted under a soak, a write cache that lies about
//! flushes, disruption commands that fail, hang or never let the target
//! come back, and the flags refused before anything is written.
//!
//! The servers are qemu-nbd and nbdkit started with `--fork` / as daemons
//! in the test's scratch dir (the disruption command must be able to kill
//! and restart them), on unix sockets there; [`ForkedServers`] kills what
//! is left of them when the test ends, also when it fails. The lying cache
//! is an NBD server in the test process (tests/common/lying_nbd.rs).
//! The power-cut lab under qcow2 is docs/WORKFLOWS.md's, run as written by
//! tests/qemu_chains.rs.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;
#[path = "common/lying_nbd.rs"]
mod lying_nbd;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::need::{Need, require};
use common::{Run, TestEnv, run_bounded};
use lying_nbd::LyingNbd;
use serde_json::Value;

const MIB: u64 = 1 << 20;
/// Longest any soak here may take before the test fails.
const LIMIT: Duration = Duration::from_secs(180);

/// Servers started as daemons, known by their pid files: each one still
/// running (and still the program it was) is killed on drop.
struct ForkedServers {
    servers: Vec<(PathBuf, &'static str)>,
}

impl ForkedServers {
    fn new() -> ForkedServers {
        ForkedServers {
            servers: Vec::new(),
        }
    }

    fn watch(&mut self, pid_file: PathBuf, program: &'static str) {
        self.servers.push((pid_file, program));
    }
}

impl Drop for ForkedServers {
    fn drop(&mut self) {
        for (pid_file, program) in &self.servers {
            let Some(pid) = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
            else {
                continue;
            };
            // Only if that pid is still the server: never a recycled pid.
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() != *program {
                continue;
            }
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// Run a shell script in the scratch dir; panics with its output if it fails.
fn sh(env: &TestEnv, script: &str) {
    let output = Command::new("sh")
        .args(["-euc", script])
        .current_dir(env.dir.path())
        .output()
        .expect("run sh");
    assert!(
        output.status.success(),
        "`{script}` failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `blockstamp ARGS` in the scratch dir, killed (and the test failed)
/// after [`LIMIT`].
fn blockstamp(env: &TestEnv, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_blockstamp"));
    command.args(args).current_dir(env.dir.path());
    run_bounded(command, LIMIT)
}

fn json(env: &TestEnv, name: &str) -> Value {
    let text = std::fs::read_to_string(env.path(name)).expect("the JSON report was written");
    serde_json::from_str(&text).expect("the report is JSON")
}

/// The last line on stderr: the one that says why the run ended.
fn last_line(run: &Run) -> &str {
    run.stderr.trim_end().lines().last().unwrap_or_default()
}

/// The (block, class) pairs of a findings list.
fn findings(list: &Value) -> BTreeSet<(u64, String)> {
    list.as_array()
        .expect("findings array")
        .iter()
        .map(|f| {
            (
                f["block"].as_u64().unwrap(),
                f["class"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// A write cache that lies about flushes.

/// Power cuts of the lying cache in one soak.
const CUTS: usize = 5;
/// The soak's queue depth.
const QUEUE_DEPTH: u64 = 32;

#[test]
fn a_cache_that_lies_about_flushes_gives_exactly_its_dropped_writes_as_lost_write() {
    let env = TestEnv::new();
    let liar = LyingNbd::start(4 * MIB);
    let cut = liar.cut_command();
    let power_on = liar.power_on_command();
    // No read but the verifies: no rolling verify, no interval verify.
    let run = blockstamp(
        &env,
        &[
            "soak",
            &liar.uri(),
            "-m",
            &env.p("m.bsm"),
            "--sync",
            "burst",
            "--queue-depth",
            &QUEUE_DEPTH.to_string(),
            "--duration",
            "16s",
            "--disrupt",
            &cut,
            "--recover",
            &power_on,
            "--disrupt-every",
            "3s",
            "--verify-every",
            "1h",
            "--verify-backlog",
            "1000000000",
            "--json",
            &env.p("r.json"),
        ],
    );
    run.assert_code(1);
    let report = json(&env, "r.json");
    let disruptions = report["disruptions"].as_array().expect("disruptions");
    assert_eq!(disruptions.len(), CUTS, "{:#}", report["disruptions"]);
    let expected = liar.expectations();
    // One verify after each power cut, and the soak's final verify.
    assert_eq!(expected.len(), CUTS + 1, "{expected:?}");
    let lost_write = |blocks: &BTreeSet<u64>| -> BTreeSet<(u64, String)> {
        blocks.iter().map(|&b| (b, "lost_write".into())).collect()
    };
    for (i, disruption) in disruptions.iter().enumerate() {
        let expectation = &expected[i];
        assert_eq!(expectation.cuts, i as u64 + 1, "{expectation:?}");
        assert!(
            !expectation.lost.is_empty(),
            "cut {} dropped nothing: the lie was not exercised",
            i + 1
        );
        assert_eq!(
            findings(&disruption["findings"]),
            lost_write(&expectation.lost),
            "disruption {}: the findings are not exactly the dropped durable writes",
            i + 1
        );
        assert_eq!(
            disruption["findings_by_class"],
            serde_json::json!({"lost_write": expectation.lost.len()})
        );
        assert!(disruption["reconnects"].as_u64().unwrap() >= 1);
        // Between the power-on and the verify the writer sent only what
        // the cut left in flight, and writes it made again: no new write
        // could have hidden a lost one.
        let writes = expectation.writes_since_power_on.expect("first verify");
        assert!(
            writes <= 2 * QUEUE_DEPTH,
            "disruption {}: {writes} writes between the power-on and the verify",
            i + 1
        );
        for finding in disruption["findings"].as_array().unwrap() {
            assert!(
                finding["found_generation"].as_u64().unwrap()
                    < finding["expected_generation"].as_u64().unwrap(),
                "{finding:#}"
            );
        }
    }
    // The final verify: what the last cut dropped and nothing wrote since.
    let last = expected.last().unwrap();
    assert_eq!(last.cuts, CUTS as u64);
    assert_eq!(findings(&report["findings"]), lost_write(&last.lost));
    let (flushes, lies) = liar.flushes_and_lies();
    assert!(
        lies > 0 && lies < flushes,
        "{lies} lies in {flushes} flushes"
    );
    eprintln!(
        "lost per cut: {:?}; final: {}; {lies} of {flushes} flushes lied; writes between power-on and verify: {:?}",
        expected[..CUTS]
            .iter()
            .map(|e| e.lost.len())
            .collect::<Vec<_>>(),
        last.lost.len(),
        expected[..CUTS]
            .iter()
            .map(|e| e.writes_since_power_on.unwrap_or_default())
            .collect::<Vec<_>>(),
    );
}

// ---------------------------------------------------------------------------
// Servers killed and restarted under a soak.

/// Kill the daemon of `pid_file` with SIGKILL, wait until it is gone (or
/// a zombie: it holds nothing then), and start it again with `start`.
fn restart_script(pid_file: &str, start: &str) -> String {
    format!(
        "pid=$(cat {pid_file}); kill -9 \"$pid\"; \
         while ps -o stat= -p \"$pid\" | grep -qv Z; do sleep 0.05; done; \
         rm -f nbd.sock; {start}"
    )
}

/// A soak of 8 s with a restart every 2 s: exactly 3, each measured, the
/// target reopened, every written block verified after it, all clean.
fn soak_across_three_restarts(env: &TestEnv, uri: &str, restart: &str) {
    let run = blockstamp(
        env,
        &[
            "soak",
            uri,
            "-m",
            &env.p("m.bsm"),
            "--duration",
            "8s",
            "--disrupt",
            restart,
            "--disrupt-every",
            "2s",
            "--json",
            &env.p("r.json"),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = json(env, "r.json");
    assert_eq!(report["clean"], true, "{report:#}");
    let written = report["blocks"]["expected_written"].as_u64().unwrap();
    assert_eq!(written, report["blocks"]["total"].as_u64().unwrap());
    let disruptions = report["disruptions"].as_array().expect("disruptions");
    assert_eq!(disruptions.len(), 3, "{:#}", report["disruptions"]);
    for (i, d) in disruptions.iter().enumerate() {
        assert_eq!(d["index"], i as u64 + 1);
        assert_eq!(d["command"], restart);
        assert!(d["stall_s"].as_f64().unwrap() > 0.0, "{d:#}");
        assert!(d["reconnects"].as_u64().unwrap() >= 1, "{d:#}");
        // The first pass over the 8 MiB took well under 2 s: every block
        // was written before the first restart.
        assert_eq!(
            d["verify_checked_blocks"].as_u64().unwrap(),
            written,
            "{d:#}"
        );
        assert_eq!(d["findings"], serde_json::json!([]), "{d:#}");
        assert_eq!(d["findings_by_class"], serde_json::json!({}), "{d:#}");
        let started = d["started_at_s"].as_f64().unwrap();
        assert!(d["answered_at_s"].as_f64().unwrap() >= started, "{d:#}");
    }
    assert!(
        run.stderr.matches("reconnected after").count() >= 3,
        "{}",
        run.stderr
    );
}

#[test]
fn a_soak_survives_three_qemu_nbd_restarts_clean_and_measures_each() {
    if !(require(Need::QemuNbd) && require(Need::QemuImg)) {
        return;
    }
    let env = TestEnv::new();
    let mut servers = ForkedServers::new();
    servers.watch(env.path("qemu-nbd.pid"), "qemu-nbd");
    let start = "qemu-nbd --fork --pid-file=qemu-nbd.pid --persistent \
                 --socket=\"$PWD/nbd.sock\" --format=raw disk.img";
    sh(
        &env,
        &format!("qemu-img create -q -f raw disk.img 8M; {start}"),
    );
    let uri = format!("nbd+unix:///?socket={}", env.p("nbd.sock"));
    soak_across_three_restarts(&env, &uri, &restart_script("qemu-nbd.pid", start));
}

#[test]
fn a_soak_survives_three_nbdkit_restarts_clean_and_measures_each() {
    if !require(Need::Nbdkit) {
        return;
    }
    let env = TestEnv::new();
    let mut servers = ForkedServers::new();
    servers.watch(env.path("nbdkit.pid"), "nbdkit");
    // The file plugin: what was written survives the server (the memory
    // plugin's would not).
    let start = "nbdkit -P nbdkit.pid -U \"$PWD/nbd.sock\" file disk.img";
    sh(&env, &format!("truncate -s 8M disk.img; {start}"));
    let uri = format!("nbd+unix:///?socket={}", env.p("nbd.sock"));
    soak_across_three_restarts(&env, &uri, &restart_script("nbdkit.pid", start));
}

// ---------------------------------------------------------------------------
// Disruptions that go wrong: exit 3 with one line, and a manifest a later
// verify trusts.

/// The run ended with exit 3, its last line on stderr is blockstamp's
/// `says`; a verify now (with the target back) is clean.
fn ends_with_exit_3_and_a_clean_verify(env: &TestEnv, run: &Run, target: &str, says: &str) {
    run.assert_code(3);
    let last = last_line(run);
    assert!(
        last.starts_with("blockstamp: ") && last.contains(says),
        "expected `blockstamp: …{says}…` as the last line: {}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("blockstamp: ").count(),
        1,
        "one error line: {}",
        run.stderr
    );
    let verify = blockstamp(
        env,
        &["verify", target, "-m", &env.p("m.bsm"), "--json", "-"],
    );
    verify.assert_code(0);
    let report = verify.report();
    assert_eq!(report["clean"], true, "{report:#}");
    assert!(report["blocks"]["checked"].as_u64().unwrap() > 0);
}

#[test]
fn a_disruption_command_that_fails_ends_the_soak_with_exit_3() {
    let env = TestEnv::new();
    let image = env.p("disk.img");
    let command = "echo the controller refused the failover >&2; exit 1";
    let run = blockstamp(
        &env,
        &[
            "soak",
            &image,
            "-m",
            &env.p("m.bsm"),
            "--size",
            "8MiB",
            "--duration",
            "30s",
            "--disrupt",
            command,
            "--disrupt-at",
            "1s",
        ],
    );
    // The command's own output is passed on, and its last line quoted.
    assert!(
        run.stderr
            .contains("disrupt: the controller refused the failover"),
        "{}",
        run.stderr
    );
    ends_with_exit_3_and_a_clean_verify(
        &env,
        &run,
        &image,
        &format!("disruption 1: --disrupt `{command}` exited with status 1 after "),
    );
    assert!(
        last_line(&run).ends_with(" s (last output: the controller refused the failover)"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_disruption_command_that_hangs_is_killed_after_its_timeout_and_ends_the_write_with_exit_3() {
    let env = TestEnv::new();
    let image = env.p("disk.img");
    let marker = env.path("survived");
    // A child left behind would touch the marker: the whole group is killed.
    let command = format!("(sleep 4; touch {}) & sleep 60", marker.display());
    let started = std::time::Instant::now();
    let run = blockstamp(
        &env,
        &[
            "write",
            &image,
            "-m",
            &env.p("m.bsm"),
            "--size",
            "8MiB",
            "--passes",
            "1000000",
            "--sync",
            "64",
            "--disrupt",
            &command,
            "--disrupt-at",
            "500ms",
            "--disrupt-timeout",
            "2s",
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    ends_with_exit_3_and_a_clean_verify(
        &env,
        &run,
        &image,
        &format!(
            "disruption 1: --disrupt `{command}` did not finish within --disrupt-timeout 2s; it was killed"
        ),
    );
    std::thread::sleep(Duration::from_secs(5).saturating_sub(started.elapsed()));
    assert!(!marker.exists(), "the command's child was left running");
}

#[test]
fn a_target_that_never_comes_back_ends_the_soak_with_exit_3_after_the_reconnect_timeout() {
    if !(require(Need::QemuNbd) && require(Need::QemuImg)) {
        return;
    }
    let env = TestEnv::new();
    let mut servers = ForkedServers::new();
    servers.watch(env.path("qemu-nbd.pid"), "qemu-nbd");
    let start = "qemu-nbd --fork --pid-file=qemu-nbd.pid --persistent \
                 --socket=\"$PWD/nbd.sock\" --format=raw disk.img";
    sh(
        &env,
        &format!("qemu-img create -q -f raw disk.img 8M; {start}"),
    );
    let uri = format!("nbd+unix:///?socket={}", env.p("nbd.sock"));
    let started = std::time::Instant::now();
    let run = blockstamp(
        &env,
        &[
            "soak",
            &uri,
            "-m",
            &env.p("m.bsm"),
            "--duration",
            "60s",
            "--disrupt",
            "kill -9 $(cat qemu-nbd.pid)",
            "--disrupt-at",
            "1s",
            "--reconnect-timeout",
            "2s",
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // The server back, as it was.
    sh(&env, &format!("rm -f nbd.sock; {start}"));
    ends_with_exit_3_and_a_clean_verify(
        &env,
        &run,
        &uri,
        "the server closed the connection; not back within --reconnect-timeout 2.0 s",
    );
}

#[test]
fn a_loop_device_cannot_be_detached_under_a_soak_so_that_disruption_fails_with_exit_3() {
    let Some(device) = loopdev::LoopDevice::attach(16 * MIB, &[]) else {
        return;
    };
    let env = TestEnv::new();
    let dev = device.uri();
    let file = device.backing_file.display().to_string();
    // What docs/WORKFLOWS.md says of a loop device as a stand-in: the
    // detach only waits for blockstamp to close it; attaching it again is
    // refused.
    let command = format!("losetup -d {dev} && sleep 0.5 && losetup {dev} {file}");
    let run = blockstamp(
        &env,
        &[
            "soak",
            dev,
            "-m",
            &env.p("m.bsm"),
            "--duration",
            "60s",
            "--sync",
            "burst",
            "--disrupt",
            &command,
            "--disrupt-at",
            "1s",
        ],
    );
    run.assert_code(3);
    assert!(
        last_line(&run).starts_with(&format!(
            "blockstamp: disruption 1: --disrupt `{command}` exited with status 1 after "
        )) && last_line(&run).contains("Device or resource busy"),
        "{}",
        run.stderr
    );
    // Closed by blockstamp, the device went: attached again now, it holds
    // what was written. (Should another process have taken the free
    // device meanwhile, it is not ours to detach: check the file instead.)
    let attached = Command::new("losetup")
        .args([dev, &file])
        .status()
        .is_ok_and(|status| status.success());
    let target = if attached { dev } else { file.as_str() };
    let verify = blockstamp(
        &env,
        &["verify", target, "-m", &env.p("m.bsm"), "--json", "-"],
    );
    if !attached {
        std::mem::forget(device);
    }
    verify.assert_code(0);
    assert_eq!(verify.report()["clean"], true);
}

// ---------------------------------------------------------------------------
// Bad input.

#[test]
fn disruption_flags_that_make_no_sense_are_refused_before_anything_is_written() {
    let env = TestEnv::new();
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "soak",
            &["--disrupt-every", "1m"],
            "--disrupt-every needs --disrupt CMD",
        ),
        (
            "write",
            &["--disrupt-at", "1m"],
            "--disrupt-at needs --disrupt CMD",
        ),
        (
            "run",
            &["--recover", "true"],
            "--recover needs --disrupt CMD",
        ),
        (
            "soak",
            &[
                "--disrupt",
                "true",
                "--disrupt-every",
                "1m",
                "--disrupt-at",
                "1m",
            ],
            "--disrupt-every and --disrupt-at exclude each other",
        ),
        ("soak", &["--disrupt", "true"], "--disrupt needs a time"),
        (
            "soak",
            &["--disrupt", "", "--disrupt-every", "1m"],
            "bad --disrupt: the command is empty",
        ),
        (
            "write",
            &["--disrupt", "  ", "--disrupt-at", "1m"],
            "bad --disrupt: the command is empty",
        ),
        (
            "soak",
            &[
                "--disrupt",
                "true",
                "--disrupt-every",
                "1m",
                "--recover",
                "",
            ],
            "bad --recover: the command is empty",
        ),
        (
            "soak",
            &["--disrupt", "true", "--disrupt-every", "0"],
            "bad --disrupt-every 0: give a time above zero",
        ),
        (
            "run",
            &["--disrupt", "true", "--disrupt-at", "0s"],
            "bad --disrupt-at 0s: give a time above zero",
        ),
        (
            "soak",
            &[
                "--disrupt",
                "true",
                "--disrupt-every",
                "1m",
                "--disrupt-timeout",
                "0",
            ],
            "bad --disrupt-timeout 0: give a time above zero",
        ),
        (
            "soak",
            &["--disrupt", "true", "--disrupt-every", "soon"],
            "--disrupt-every",
        ),
    ];
    for (command, flags, says) in cases {
        // Run in the scratch dir: the table shows the names as given.
        let mut args = vec![*command, "disk.img", "--manifest", "m"];
        args.extend(["--size", "1MiB"]);
        if *command == "soak" {
            args.extend(["--duration", "5s"]);
        }
        args.extend_from_slice(flags);
        let run = env.run(&args);
        run.assert_code(2);
        let message = run.stderr.trim();
        assert!(message.contains(says), "expected {says:?} in {message:?}");
        assert_eq!(message.lines().count(), 1, "one line: {message:?}");
        assert!(message.starts_with("blockstamp: "), "{message:?}");
        assert!(
            !env.path("disk.img").exists() && !env.path("m").exists(),
            "{args:?} wrote something"
        );
        common::record_refusal(env.dir.path(), &args, 2, message);
    }
}
