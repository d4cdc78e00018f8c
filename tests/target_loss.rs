//! A target lost in the middle of a run: the run fails (exit 3) and never
//! blames the blocks it could not read on the medium; with
//! `--reconnect-timeout` it reconnects and finishes.
//!
//! qemu-nbd serves a raw image on a unix socket; each test kills it
//! (SIGKILL), freezes it (SIGSTOP) or restarts it while `blockstamp` runs.
//! Tests skip without qemu-nbd (and fail under CI=true, see nbd_server).

mod common;
#[path = "common/nbd_server.rs"]
mod nbd_server;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Run, TestEnv};
use nbd_server::NbdServer;
use serde_json::Value;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 256 * MIB;

/// Small reads at low depth: verify takes seconds, so the loss lands in it.
const SLOW_VERIFY: [&str; 6] = [
    "--read-size",
    "16KiB",
    "--read-depth",
    "2",
    "--threads",
    "1",
];

/// Half the image written, through the server.
fn written_server(env: &TestEnv) -> Option<NbdServer> {
    let server = NbdServer::qemu_nbd_raw(SIZE, &[])?;
    env.run(&[
        "write",
        &server.uri(""),
        "-m",
        &env.p("m.bsm"),
        "--coverage",
        "0.5",
    ])
    .assert_code(0);
    Some(server)
}

fn spawn(env: &TestEnv, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_blockstamp"))
        .args(args)
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start blockstamp")
}

/// Wait until the server has moved `bytes` to or from its image (`rchar`
/// for reads, `wchar` for writes, from /proc/PID/io), so that `child`'s
/// verify or write is in the middle of its work.
fn wait_until_server_moved(server: &NbdServer, child: &mut Child, field: &str, bytes: u64) {
    let started = Instant::now();
    let prefix = format!("{field}: ");
    let moved = || {
        let io = std::fs::read_to_string(format!("/proc/{}/io", server.pid())).unwrap_or_default();
        io.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Counted from now: the server may have served an earlier command.
    let before = moved();
    loop {
        if moved() >= before + bytes {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("blockstamp ended ({status}) before the server had moved {bytes} bytes");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the server never moved {bytes} bytes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait for `child` (at most 60 s) and collect what it printed.
fn finish(child: Child) -> Run {
    let output = child.wait_with_output().expect("wait for blockstamp");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn report(env: &TestEnv) -> Value {
    let text = std::fs::read_to_string(env.path("r.json")).expect("the JSON report was written");
    serde_json::from_str(&text).expect("the report is JSON")
}

fn verify_args<'a>(
    env: &'a TestEnv,
    uri: &'a str,
    json: &'a str,
    extra: &[&'a str],
) -> Vec<String> {
    let mut args: Vec<String> = ["verify", uri, "-m"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(env.p("m.bsm"));
    args.extend(["--json".to_string(), json.to_string()]);
    args.extend(SLOW_VERIFY.iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A lost target fails the verify and leaves a partial report that blames
/// no block: nothing `unreadable`, fewer blocks checked than exist.
fn assert_lost_without_findings(run: &Run, report: &Value) {
    run.assert_code(3);
    let last = run.stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.contains("the target was lost"), "{}", run.stderr);
    assert_eq!(
        report["findings_by_class"],
        serde_json::json!({}),
        "{report:#}"
    );
    assert_eq!(report["findings"], serde_json::json!([]));
    assert_eq!(report["clean"], false);
    let checked = report["blocks"]["checked"].as_u64().unwrap();
    let total = report["blocks"]["total"].as_u64().unwrap();
    assert!(
        checked > 0 && checked < total,
        "checked {checked} of {total}"
    );
    assert_eq!(report["blocks"]["ok"].as_u64().unwrap(), checked);
    assert!(report["target_lost"].is_string(), "{report:#}");
    assert!(
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("the target was lost")),
        "{report:#}"
    );
}

#[test]
fn server_killed_during_verify_is_exit_3_and_no_block_is_unreadable() {
    let env = TestEnv::new();
    let Some(mut server) = written_server(&env) else {
        return;
    };
    let uri = server.uri("");
    let json = env.p("r.json");
    let mut child = spawn(
        &env,
        &verify_args(&env, &uri, &json, &[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    wait_until_server_moved(&server, &mut child, "rchar", 16 * MIB);
    server.kill();
    let run = finish(child);
    assert_lost_without_findings(&run, &report(&env));
}

#[test]
fn server_that_stops_answering_during_verify_is_exit_3_after_the_nbd_timeout() {
    let env = TestEnv::new();
    let Some(server) = written_server(&env) else {
        return;
    };
    let uri = server.uri("");
    let json = env.p("r.json");
    let args = verify_args(&env, &uri, &json, &["--nbd-timeout", "2s"]);
    let mut child = spawn(&env, &args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_until_server_moved(&server, &mut child, "rchar", 16 * MIB);
    let stopped = Instant::now();
    server.signal(rustix::process::Signal::STOP);
    let run = finish(child);
    let waited = stopped.elapsed();
    server.signal(rustix::process::Signal::CONT);
    assert_lost_without_findings(&run, &report(&env));
    assert!(run.stderr.contains("did not answer"), "{}", run.stderr);
    assert!(waited < Duration::from_secs(15), "took {waited:?}");
}

#[test]
fn verify_reconnects_to_a_restarted_server_and_finishes_clean() {
    let env = TestEnv::new();
    let Some(mut server) = written_server(&env) else {
        return;
    };
    let uri = server.uri("");
    let json = env.p("r.json");
    let args = verify_args(&env, &uri, &json, &["--reconnect-timeout", "20s"]);
    let mut child = spawn(&env, &args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_until_server_moved(&server, &mut child, "rchar", 16 * MIB);
    server.kill();
    std::thread::sleep(Duration::from_secs(1));
    server.restart_qemu_nbd("raw", &[]);
    let run = finish(child);
    run.assert_code(0);
    assert!(run.stderr.contains("reconnected after"), "{}", run.stderr);
    let report = report(&env);
    assert_eq!(report["clean"], true, "{report:#}");
    assert_eq!(report["blocks"]["checked"], report["blocks"]["total"]);
}

#[test]
fn verify_gives_up_when_the_server_is_not_back_within_the_reconnect_timeout() {
    let env = TestEnv::new();
    let Some(mut server) = written_server(&env) else {
        return;
    };
    let uri = server.uri("");
    let json = env.p("r.json");
    let args = verify_args(&env, &uri, &json, &["--reconnect-timeout", "1s"]);
    let mut child = spawn(&env, &args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_until_server_moved(&server, &mut child, "rchar", 16 * MIB);
    server.kill();
    let run = finish(child);
    assert_lost_without_findings(&run, &report(&env));
    assert!(run.stderr.contains("--reconnect-timeout"), "{}", run.stderr);
}

#[test]
fn write_reconnects_to_a_restarted_server_and_verifies_clean() {
    let env = TestEnv::new();
    let Some(mut server) = NbdServer::qemu_nbd_raw(SIZE, &[]) else {
        return;
    };
    let uri = server.uri("");
    let manifest = env.p("m.bsm");
    let mut child = spawn(
        &env,
        &["write", &uri, "-m", &manifest, "--reconnect-timeout", "20s"],
    );
    wait_until_server_moved(&server, &mut child, "wchar", 32 * MIB);
    server.kill();
    std::thread::sleep(Duration::from_secs(1));
    server.restart_qemu_nbd("raw", &[]);
    let run = finish(child);
    run.assert_code(0);
    assert!(run.stderr.contains("reconnected after"), "{}", run.stderr);
    let verify = env.run(&["verify", &uri, "-m", &manifest, "--json", "-"]);
    verify.assert_code(0);
    let report = verify.report();
    assert_eq!(report["clean"], true, "{report:#}");
    assert_eq!(
        report["blocks"]["expected_written"],
        report["blocks"]["total"]
    );
}

#[test]
fn write_without_reconnect_fails_with_exit_3_when_the_server_dies() {
    let env = TestEnv::new();
    let Some(mut server) = NbdServer::qemu_nbd_raw(SIZE, &[]) else {
        return;
    };
    let uri = server.uri("");
    let manifest = env.p("m.bsm");
    let mut child = spawn(&env, &["write", &uri, "-m", &manifest]);
    wait_until_server_moved(&server, &mut child, "wchar", 32 * MIB);
    server.kill();
    finish(child).assert_code(3);
}

#[test]
fn a_bad_reconnect_timeout_is_refused_before_anything_is_opened() {
    let env = TestEnv::new();
    for (command, flag) in [
        ("write", "--reconnect-timeout"),
        ("verify", "--reconnect-timeout"),
        ("run", "--reconnect-timeout"),
        ("verify", "--nbd-timeout"),
    ] {
        let run = env.run(&[
            command,
            &env.p("img"),
            "-m",
            &env.p("m.bsm"),
            "--size",
            "1MiB",
            flag,
            "soon",
        ]);
        if command == "verify" {
            // verify has no --size: clap refuses that first, also exit 2.
            run.assert_code(2);
            let run = env.run(&[command, &env.p("img"), "-m", &env.p("m.bsm"), flag, "soon"]);
            run.assert_code(2);
            assert!(run.stderr.contains(flag), "{}", run.stderr);
        } else {
            run.assert_code(2);
            assert!(run.stderr.contains(flag), "{}", run.stderr);
        }
        assert!(!env.path("img").exists() && !env.path("m.bsm").exists());
    }
}
