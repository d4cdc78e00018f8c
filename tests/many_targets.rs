//! Many targets in one run (docs/CONTRACT.md, "Many targets in one run"):
//! `T1 T2 … --manifest-dir DIR` writes and verifies every target at once,
//! with a manifest per target named after it, one report with a section
//! per target and one exit status; bad input of any target writes nothing
//! to any of them.

mod common;
#[path = "common/nbd_server.rs"]
mod nbd_server;

use common::{Image, TestEnv, finding_set};
use nbd_server::NbdServer;
use serde_json::Value;

const KIB4: u64 = 4096;
const IMAGES: [&str; 3] = ["a.img", "b.img", "c.img"];

fn read_json(env: &TestEnv, name: &str) -> Value {
    let text = std::fs::read_to_string(env.path(name)).expect("read JSON report");
    serde_json::from_str(&text).expect("JSON report parses")
}

/// The section of `name` in a multi-target report.
fn section<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["targets"]
        .as_array()
        .expect("targets array")
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no section {name} in {report}"))
}

/// Each file's bytes hashed (None: the file does not exist).
fn digests(env: &TestEnv, names: &[&str]) -> Vec<Option<u32>> {
    names
        .iter()
        .map(|n| std::fs::read(env.path(n)).ok().map(|b| crc32c::crc32c(&b)))
        .collect()
}

/// `run a.img b.img c.img --manifest-dir man`: 4 MiB sparse images.
fn run_three(env: &TestEnv) -> Value {
    std::fs::create_dir(env.path("man")).expect("create manifest dir");
    let mut args = vec!["run"];
    args.extend(IMAGES);
    args.extend([
        "--manifest-dir",
        "man",
        "--size",
        "4MiB",
        "--json",
        "run.json",
    ]);
    let run = env.run(&args);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("3 target(s): 3 clean, 0 with findings, 0 failed"),
        "{}",
        run.stdout
    );
    read_json(env, "run.json")
}

#[test]
fn a_run_over_three_images_writes_a_manifest_each_and_one_report_with_three_sections() {
    let env = TestEnv::new();
    let report = run_three(&env);
    assert_eq!(report["schema"], "blockstamp.multi/1");
    assert_eq!(report["command"], "run");
    assert_eq!(report["exit_status"], 0);
    assert_eq!(report["clean"], true);
    assert_eq!(report["target_count"], 3);
    let sections = report["targets"].as_array().expect("targets");
    assert_eq!(sections.len(), 3);
    for (section, image) in sections.iter().zip(IMAGES) {
        assert_eq!(section["name"], image);
        assert_eq!(section["target"], image);
        assert_eq!(section["outcome"], "clean");
        assert_eq!(section["report"]["schema"], "blockstamp.report/1");
        assert_eq!(section["report"]["target"]["uri"], image);
        assert_eq!(section["report"]["blocks"]["ok"], 1024);
        assert!(
            env.path(&format!("man/{image}.manifest")).is_file(),
            "manifest of {image}"
        );
    }
    let mut manifests: Vec<String> = std::fs::read_dir(env.path("man"))
        .expect("list manifests")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    manifests.sort();
    assert_eq!(
        manifests,
        ["a.img.manifest", "b.img.manifest", "c.img.manifest"]
    );
    // Each target has its own run, and the report views read the sections.
    let run_ids: std::collections::BTreeSet<&str> = sections
        .iter()
        .map(|s| s["report"]["run_id"].as_str().expect("run_id"))
        .collect();
    assert_eq!(run_ids.len(), 3, "a run id per target");
    let merged = env.run(&["report", "merge", "run.json", "--json", "fleet.json"]);
    merged.assert_code(0);
    let fleet = read_json(&env, "fleet.json");
    assert_eq!(fleet["report_count"], 3);
    assert_eq!(fleet["reports"][1]["path"], "run.json#b.img");
    env.run(&["report", "run.json", "--html", "run.html"])
        .assert_code(0);
    let page = std::fs::read_to_string(env.path("run.html")).expect("page");
    assert!(page.contains("c.img"), "the page shows every target");
}

#[test]
fn a_corrupt_block_of_one_target_is_one_finding_in_that_targets_section_alone() {
    let env = TestEnv::new();
    run_three(&env);
    let image = Image::open(&env.path("b.img"), KIB4);
    // Garbage over block 700, written with plain file IO.
    image.write_block(700, &vec![0x5a; KIB4 as usize]);
    image.sync();
    let mut args = vec!["verify"];
    args.extend(IMAGES);
    args.extend(["--manifest-dir", "man", "--json", "-"]);
    let run = env.run(&args);
    run.assert_code(1);
    let report = run.report();
    assert_eq!(report["exit_status"], 1);
    assert_eq!(report["clean"], false);
    assert_eq!(report["targets_with_findings"], 1);
    let findings = section(&report, "b.img");
    assert_eq!(findings["outcome"], "findings");
    assert_eq!(findings["exit_status"], 1);
    assert_eq!(
        finding_set(&findings["report"]),
        [(700, "foreign".to_string())]
    );
    for clean in ["a.img", "c.img"] {
        let section = section(&report, clean);
        assert_eq!(section["outcome"], "clean", "{clean}");
        assert_eq!(finding_set(&section["report"]), [], "{clean}");
    }
    assert_eq!(
        report["findings_by_class"],
        serde_json::json!({"foreign": 1})
    );
}

#[test]
fn a_write_over_two_targets_is_verified_by_a_verify_over_the_same_two() {
    let env = TestEnv::new();
    std::fs::create_dir(env.path("man")).expect("create manifest dir");
    let write = env.run(&[
        "write",
        "a.img",
        "b.img",
        "--manifest-dir",
        "man",
        "--size",
        "2MiB",
        "--prometheus",
        "bs.prom",
    ]);
    write.assert_code(0);
    assert!(
        write.stdout.contains("== a.img: clean\nwritten\n"),
        "{}",
        write.stdout
    );
    for name in ["a.img", "b.img"] {
        let textfile = std::fs::read_to_string(env.path(&format!("bs.{name}.prom")))
            .unwrap_or_else(|e| panic!("textfile of {name}: {e}"));
        assert!(
            textfile.contains(&format!("target=\"{name}\"")),
            "{textfile}"
        );
    }
    let verify = env.run(&[
        "verify",
        "b.img",
        "a.img",
        "--manifest-dir",
        "man",
        "--json",
        "-",
    ]);
    verify.assert_code(0);
    let report = verify.report();
    assert_eq!(report["command"], "verify");
    assert_eq!(report["targets"][0]["name"], "b.img");
    assert_eq!(report["targets"][1]["report"]["blocks"]["ok"], 512);
}

#[test]
fn a_manifest_dir_that_is_not_there_is_refused() {
    let env = TestEnv::new();
    let run = env.run(&[
        "run",
        "a.img",
        "b.img",
        "--manifest-dir",
        "nowhere",
        "--size",
        "1MiB",
    ]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("bad --manifest-dir nowhere: not a directory"),
        "{}",
        run.stderr
    );
    assert_eq!(digests(&env, &["a.img", "b.img"]), [None, None]);
}

#[test]
fn several_targets_without_manifest_dir_are_refused() {
    let env = TestEnv::new();
    let run = env.run(&["run", "a.img", "b.img", "-m", "m", "--size", "1MiB"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("2 targets need --manifest-dir DIR"),
        "{}",
        run.stderr
    );
    assert_eq!(digests(&env, &["a.img", "b.img", "m"]), [None, None, None]);
}

#[test]
fn manifest_and_manifest_dir_exclude_each_other() {
    let env = TestEnv::new();
    std::fs::create_dir(env.path("man")).expect("create manifest dir");
    let run = env.run(&[
        "run",
        "a.img",
        "-m",
        "m",
        "--manifest-dir",
        "man",
        "--size",
        "1MiB",
    ]);
    run.assert_code(2);
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
    assert_eq!(digests(&env, &["a.img", "m"]), [None, None]);
}

#[test]
fn one_target_with_manifest_dir_is_a_run_over_one() {
    let env = TestEnv::new();
    std::fs::create_dir(env.path("man")).expect("create manifest dir");
    let run = env.run(&[
        "run",
        "./one.img",
        "--manifest-dir",
        "man",
        "--size",
        "1MiB",
        "--json",
        "-",
    ]);
    run.assert_code(0);
    let report = run.report();
    assert_eq!(report["schema"], "blockstamp.multi/1");
    assert_eq!(section(&report, "one.img")["outcome"], "clean");
    assert!(env.path("man/one.img.manifest").is_file());
}

#[test]
fn a_target_given_twice_is_refused_and_nothing_is_written() {
    let env = TestEnv::new();
    run_three(&env);
    let before = digests(&env, &IMAGES);
    let same_path = env.run(&["run", "a.img", "b.img", "./a.img", "--manifest-dir", "man"]);
    same_path.assert_code(2);
    assert!(
        same_path
            .stderr
            .contains("targets a.img and ./a.img are the same target"),
        "{}",
        same_path.stderr
    );
    std::os::unix::fs::symlink(env.path("b.img"), env.path("link.img")).expect("symlink");
    let same_file = env.run(&["write", "b.img", "link.img", "--manifest-dir", "man"]);
    same_file.assert_code(2);
    assert!(
        same_file.stderr.contains("are the same target"),
        "{}",
        same_file.stderr
    );
    let same_text = env.run(&["verify", "c.img", "c.img", "--manifest-dir", "man"]);
    same_text.assert_code(2);
    assert!(
        same_text.stderr.contains("target c.img is given twice"),
        "{}",
        same_text.stderr
    );
    assert_eq!(digests(&env, &IMAGES), before, "no target was modified");
}

#[test]
fn a_nonexistent_target_of_a_verify_is_refused_before_any_target_is_read() {
    let env = TestEnv::new();
    run_three(&env);
    let before = digests(&env, &IMAGES);
    let run = env.run(&[
        "verify",
        "a.img",
        "b.img",
        "missing.img",
        "--manifest-dir",
        "man",
        "--json",
        "v.json",
    ]);
    run.assert_code(2);
    assert!(
        run.stderr.starts_with("blockstamp: target missing.img: "),
        "{}",
        run.stderr
    );
    assert!(!env.path("v.json").exists(), "no report");
    assert_eq!(run.stdout, "", "nothing was verified");
    assert_eq!(digests(&env, &IMAGES), before);
}

#[test]
fn one_refused_target_leaves_every_target_of_a_write_as_it_was() {
    let env = TestEnv::new();
    run_three(&env);
    let names = [
        "a.img",
        "b.img",
        "c.img",
        "man/a.img.manifest",
        "man/b.img.manifest",
        "man/c.img.manifest",
        "new.img",
        "man/new.img.manifest",
    ];
    let before = digests(&env, &names);
    // new.img would be created, a.img and b.img continued; c.img's
    // manifest was written for 4 MiB, so --size 8MiB is refused for it
    // (and for the others alike) before anything is written.
    let run = env.run(&[
        "write",
        "new.img",
        "a.img",
        "b.img",
        "c.img",
        "--manifest-dir",
        "man",
        "--size",
        "8MiB",
    ]);
    run.assert_code(2);
    assert!(run.stderr.contains("--size asks for"), "{}", run.stderr);
    assert_eq!(digests(&env, &names), before, "nothing was written");
    // A target refused only once the targets before it were opened: a.img
    // grew to 6 MiB since its manifest was written for 4 MiB. new.img,
    // created by its open, is removed again; small.img, extended by its
    // open, gets its 1 MiB back.
    std::fs::OpenOptions::new()
        .write(true)
        .open(env.path("a.img"))
        .and_then(|f| f.set_len(6 << 20))
        .expect("grow a.img");
    std::fs::write(env.path("small.img"), vec![7u8; 1 << 20]).expect("write small.img");
    let names = [&names[..], &["small.img"]].concat();
    let before = digests(&env, &names);
    let refused = env.run(&[
        "write",
        "new.img",
        "small.img",
        "a.img",
        "--manifest-dir",
        "man",
        "--size",
        "4MiB",
    ]);
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("target a.img: manifest"),
        "{}",
        refused.stderr
    );
    assert_eq!(digests(&env, &names), before, "nothing was written");
}

#[test]
fn a_soak_over_two_targets_ends_with_a_report_with_both_sections() {
    let env = TestEnv::new();
    std::fs::create_dir(env.path("man")).expect("create manifest dir");
    let run = env.run(&[
        "soak",
        "a.img",
        "b.img",
        "--manifest-dir",
        "man",
        "--size",
        "2MiB",
        "--duration",
        "1s",
        "--verify-every",
        "400ms",
        "--json",
        "soak.json",
        "--metrics",
        "m.jsonl",
    ]);
    run.assert_code(0);
    let report = read_json(&env, "soak.json");
    assert_eq!(report["command"], "soak");
    for name in ["a.img", "b.img"] {
        let section = section(&report, name);
        assert_eq!(section["outcome"], "clean", "{name}");
        let soak = &section["report"]["soak"];
        assert!(
            soak["intervals"].as_array().is_some_and(|i| i.len() >= 2),
            "{name}: {soak}"
        );
        assert!(soak["writes"].as_u64().unwrap() > 0, "{name}");
        assert!(
            env.path(&format!("m.{name}.jsonl")).is_file(),
            "metrics of {name}"
        );
    }
    assert!(
        run.stdout.contains("[a.img] ") && run.stdout.contains("[b.img] "),
        "each target's lines name it: {}",
        run.stdout
    );
}

#[test]
fn a_signal_stops_the_writing_of_every_target_and_each_is_verified() {
    let env = TestEnv::new();
    std::fs::create_dir(env.path("man")).expect("create manifest dir");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_blockstamp"))
        .args([
            "run",
            "a.img",
            "b.img",
            "--manifest-dir",
            "man",
            "--size",
            "64MiB",
            "--passes",
            "1000",
            "--json",
            "run.json",
        ])
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start blockstamp");
    // Both writers are under way once both manifests exist.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !(env.path("man/a.img.manifest").exists() && env.path("man/b.img.manifest").exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("send SIGINT");
    let output = child.wait_with_output().expect("wait for blockstamp");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let report = read_json(&env, "run.json");
    assert_eq!(report["interrupted"], true);
    for name in ["a.img", "b.img"] {
        let section = section(&report, name);
        assert_eq!(section["interrupted"], true, "{name}");
        assert_eq!(section["outcome"], "clean", "{name}");
        assert!(
            section["report"]["blocks"]["checked"].as_u64() > Some(0),
            "{name} was verified"
        );
    }
    assert!(
        stdout.contains("the writing was stopped early by a signal"),
        "{stdout}"
    );
}

#[test]
fn disrupt_is_refused_with_manifest_dir() {
    let env = TestEnv::new();
    std::fs::create_dir(env.path("man")).expect("create manifest dir");
    let run = env.run(&[
        "run",
        "a.img",
        "b.img",
        "--manifest-dir",
        "man",
        "--size",
        "1MiB",
        "--disrupt",
        "true",
        "--disrupt-at",
        "1s",
    ]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("--disrupt is not supported with --manifest-dir"),
        "{}",
        run.stderr
    );
    assert_eq!(digests(&env, &["a.img", "b.img"]), [None, None]);
}

#[test]
fn an_image_and_an_nbd_export_run_together() {
    let Some(server) = NbdServer::nbdkit(&["memory", "4M"]) else {
        return;
    };
    let env = TestEnv::new();
    std::fs::create_dir(env.path("man")).expect("create manifest dir");
    let uri = server.uri("");
    let run = env.run(&[
        "run",
        "disk.img",
        &uri,
        "--manifest-dir",
        "man",
        "--size",
        "4MiB",
        "--json",
        "both.json",
        "--junit",
        "both.xml",
    ]);
    run.assert_code(0);
    let report = read_json(&env, "both.json");
    let sections = report["targets"].as_array().expect("targets");
    assert_eq!(sections.len(), 2);
    assert_eq!(sections[0]["name"], "disk.img");
    assert_eq!(sections[1]["target"], uri.as_str());
    assert_eq!(sections[1]["report"]["target"]["kind"], "nbd");
    let name = blockstamp::app::target_name(&uri);
    assert_eq!(sections[1]["name"], name.as_str());
    assert!(env.path(&format!("man/{name}.manifest")).is_file());
    for section in sections {
        assert_eq!(section["outcome"], "clean", "{section}");
        assert_eq!(section["report"]["blocks"]["ok"], 1024);
    }
    let junit = std::fs::read_to_string(env.path("both.xml")).expect("JUnit file");
    assert_eq!(junit.matches("<testsuite ").count(), 2, "{junit}");
}

#[test]
fn a_target_that_fails_is_failed_the_others_finish_and_the_exit_status_is_3() {
    let Some(server) = NbdServer::nbdkit(&[
        "--filter=error",
        "memory",
        "4M",
        "error-pwrite=EIO",
        "error-pwrite-rate=100%",
    ]) else {
        return;
    };
    let env = TestEnv::new();
    std::fs::create_dir(env.path("man")).expect("create manifest dir");
    let uri = server.uri("");
    let run = env.run(&[
        "run",
        "disk.img",
        &uri,
        "--manifest-dir",
        "man",
        "--size",
        "4MiB",
        "--json",
        "r.json",
    ]);
    run.assert_code(3);
    assert!(
        run.stderr
            .contains(&format!("blockstamp: target {uri}: write of block")),
        "{}",
        run.stderr
    );
    let report = read_json(&env, "r.json");
    assert_eq!(report["exit_status"], 3);
    assert_eq!(report["failed_targets"], 1);
    let image = section(&report, "disk.img");
    assert_eq!(image["outcome"], "clean");
    assert_eq!(image["report"]["blocks"]["ok"], 1024);
    let failed = &report["targets"][1];
    assert_eq!(failed["outcome"], "failed");
    assert_eq!(failed["exit_status"], 3);
    assert!(failed["report"].is_null(), "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("Input/output error")),
        "{failed}"
    );
}

#[path = "common/loopdev.rs"]
mod loopdev;

/// An MBR with one Linux partition of `sectors` 512-byte sectors at 1 MiB.
fn write_mbr(image: &std::fs::File, sectors: u32) {
    use std::os::unix::fs::FileExt;
    let mut entry = [0u8; 16];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    image.write_all_at(&entry, 446).unwrap();
    image.write_all_at(&[0x55, 0xAA], 510).unwrap();
}

#[test]
fn a_disk_with_its_partition_or_a_loop_device_with_its_backing_file_is_refused() {
    let Some(device) = loopdev::LoopDevice::attach_prepared(16 << 20, &["--partscan"], |image| {
        write_mbr(image, 8192)
    }) else {
        return;
    };
    let Some(()) = device.add_partitions() else {
        return;
    };
    let env = TestEnv::new();
    std::fs::create_dir(env.path("man")).expect("create manifest dir");
    let backing = device.backing_file.to_str().unwrap().to_string();
    let partition = format!("{}p1", device.uri());
    let other = env.p("other.img");
    let before = device.contents();
    for pair in [
        [backing.as_str(), device.uri()],
        [device.uri(), partition.as_str()],
        [partition.as_str(), backing.as_str()],
    ] {
        let args = [
            "write",
            &other,
            pair[0],
            pair[1],
            "--manifest-dir",
            "man",
            "--size",
            "4MiB",
            "--force",
        ];
        let run = env.run(&args);
        run.assert_code(2);
        let expected = format!("targets {} and {} share storage", pair[0], pair[1]);
        assert!(run.stderr.contains(&expected), "{}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    }
    assert!(
        device.contents() == before,
        "the refusals changed the device"
    );
    assert!(!env.path("other.img").exists(), "no image was created");
    let manifests = std::fs::read_dir(env.path("man")).unwrap().count();
    assert_eq!(manifests, 0, "no manifest was made");
    // Two partitions' worth of one disk that do not meet are not refused
    // for it: the image beside the device's backing file is its own.
    let apart = env.run(&[
        "write",
        &other,
        &partition,
        "--manifest-dir",
        "man",
        "--size",
        "4MiB",
        "--force",
    ]);
    apart.assert_code(0);
}
