//! scripts/ansible/soak.yml against this machine: two or three inventory
//! hosts, all `ansible_connection=local`, each soaking its own 64 MiB image
//! for 2 s. Needs ansible-core (`pip install ansible-core`; scripts/test.sh
//! installs it); skipped with a message where it is missing, a failure
//! under CI=true. Each playbook run is bounded (killed after 5 minutes).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::need::{Need, ansible_playbook, require};
use common::{Run, TestEnv, run_bounded};
use serde_json::Value;

fn playbook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ansible/soak.yml")
}

/// An inventory of local hosts; `extra` is YAML added under each host.
fn inventory(env: &TestEnv, hosts: &[(&str, &str)]) -> PathBuf {
    let mut text = String::from("blockstamp:\n  hosts:\n");
    for (host, extra) in hosts {
        text.push_str(&format!(
            "    {host}:\n      soak_dir: {}\n",
            env.path(host).display()
        ));
        for line in extra.lines().filter(|l| !l.trim().is_empty()) {
            text.push_str(&format!("      {line}\n"));
        }
    }
    text.push_str(
        "  vars:\n    ansible_connection: local\n    ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n    soak_size: 64MiB\n    soak_duration: 2s\n    soak_poll_s: 1\n",
    );
    let path = env.path("inventory.yml");
    std::fs::write(&path, text).expect("write inventory");
    path
}

fn play(ansible: &Path, env: &TestEnv, inventory: &Path) -> Run {
    let bin = env!("CARGO_BIN_EXE_blockstamp");
    let mut command = Command::new(ansible);
    command
        .arg("-i")
        .arg(inventory)
        .arg(playbook())
        .arg("-e")
        .arg(format!("blockstamp_bin={bin}"))
        .arg("-e")
        .arg(format!("blockstamp_local_bin={bin}"))
        .arg("-e")
        .arg(format!("reports_dir={}", env.path("reports").display()))
        .current_dir(env.dir.path())
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .env("ANSIBLE_LOCAL_TEMP", env.path("ansible-local"))
        .env("ANSIBLE_REMOTE_TEMP", env.path("ansible-remote"))
        .env("ANSIBLE_ASYNC_DIR", env.path("ansible-async"));
    run_bounded(command, Duration::from_secs(300))
}

fn json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// ansible-playbook, or `None` after `common::need` said why the test is
/// skipped (a failure in CI).
fn ansible_or_skip() -> Option<PathBuf> {
    if !require(Need::Ansible) {
        return None;
    }
    ansible_playbook()
}

#[test]
fn the_playbook_soaks_every_host_and_merges_their_reports() {
    let Some(ansible) = ansible_or_skip() else {
        return;
    };
    let env = TestEnv::new();
    let inventory = inventory(&env, &[("node-a", ""), ("node-b", "")]);
    let run = play(&ansible, &env, &inventory);
    assert_eq!(
        run.code, 0,
        "playbook failed\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let reports = env.path("reports");
    for host in ["node-a", "node-b"] {
        let report = json(reports.join(format!("{host}.json")));
        assert_eq!(report["clean"], true);
        assert_eq!(report["target"]["size_bytes"], 64 << 20);
        assert!(report["metrics"]["write"]["ios"].as_u64().unwrap() > 0);
        let timeline = std::fs::read_to_string(reports.join(format!("{host}.metrics.jsonl")))
            .expect("metrics fetched");
        assert!(timeline.lines().count() >= 2, "{timeline}");
    }
    let fleet = json(reports.join("fleet.json"));
    assert_eq!(fleet["report_count"], 2);
    assert_eq!(fleet["clean"], true);
    let html = std::fs::read_to_string(reports.join("fleet.html")).expect("fleet page");
    assert!(html.contains("node-a.json") && html.contains("node-b.json"));
    assert!(run.stdout.contains("CLEAN: 2 report(s)"), "{}", run.stdout);
}

#[test]
fn the_playbook_fails_on_findings_and_on_hosts_without_a_report() {
    let Some(ansible) = ansible_or_skip() else {
        return;
    };
    let env = TestEnv::new();
    // node-b's storage flips a byte after the write; node-c's target is
    // missing, so its soak fails (exit 3) and it has no report.
    let damaged = "soak_command: >-\n  {{ blockstamp_bin }} write {{ soak_target }} --manifest {{ soak_manifest }} --size 64MiB\n  && printf x | dd of={{ soak_target }} bs=1 seek=70000 conv=notrunc status=none\n  && {{ blockstamp_bin }} verify {{ soak_target }} --manifest {{ soak_manifest }} --json {{ soak_report }}";
    let failing = "soak_command: \"{{ blockstamp_bin }} run {{ soak_dir }}/missing.img --manifest {{ soak_manifest }} --json {{ soak_report }}\"";
    let inventory = inventory(
        &env,
        &[("node-a", ""), ("node-b", damaged), ("node-c", failing)],
    );
    let run = play(&ansible, &env, &inventory);
    assert_ne!(run.code, 0, "the play must fail\n{}", run.stdout);
    assert!(
        run.stdout
            .contains("no report from node-c: their soak failed or they were unreachable"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("findings: FINDINGS: 1 finding(s) in 1 of 2 report(s)"),
        "{}",
        run.stdout
    );
    let fleet = json(env.path("reports").join("fleet.json"));
    assert_eq!(fleet["report_count"], 2);
    assert_eq!(fleet["reports_with_findings"], 1);
    assert_eq!(fleet["findings_by_class"]["corrupt"], 1);
    let damaged_report = json(env.path("reports").join("node-b.json"));
    assert_eq!(damaged_report["findings"][0]["block"], 17);
}
