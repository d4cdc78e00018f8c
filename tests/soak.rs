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
