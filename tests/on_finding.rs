//! `--on-finding CMD` and `--stop-on-finding`: the user's command runs as
//! soon as a persistent finding is confirmed, with the finding in its
//! environment, and is recorded in the report without changing the
//! verdict; a write, run or soak stops at its first confirmed finding with
//! a clean manifest.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Image, TestEnv, finding, finding_set, run_bounded};
use serde_json::Value;

const KIB4: u64 = 4096;

/// A hook that appends its BLOCKSTAMP_* variables to hook.log, one run
/// after another, separated by `---`.
const LOG_ENV: &str = "{ env | grep '^BLOCKSTAMP_' | sort; echo ---; } >> hook.log";

/// The BLOCKSTAMP_* variables of each run of [`LOG_ENV`], in order.
fn hook_runs(env: &TestEnv) -> Vec<BTreeMap<String, String>> {
    let Ok(log) = std::fs::read_to_string(env.path("hook.log")) else {
        return Vec::new();
    };
    log.split("---\n")
        .filter(|run| !run.trim().is_empty())
        .map(|run| {
            run.lines()
                .filter_map(|line| line.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn read_json(env: &TestEnv, name: &str) -> Value {
    let text = std::fs::read_to_string(env.path(name)).expect("read report");
    serde_json::from_str(&text).expect("report is JSON")
}

/// A 1 MiB image written once, with block 5 corrupt and blocks 9 and 200
/// zeroed.
fn damaged_env() -> TestEnv {
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "1MiB"]);
    let image = Image::open(&env.path("disk.img"), KIB4);
    image.flip_bit(5, 1000, 2);
    image.zero_block(9);
    image.zero_block(200);
    image.sync();
    env
}

fn damage_set() -> Vec<(u64, String)> {
    vec![
        (5, "corrupt".to_string()),
        (9, "zeroed".to_string()),
        (200, "zeroed".to_string()),
    ]
}

#[test]
fn a_verify_with_damage_runs_the_hook_once_with_the_finding_in_its_environment() {
    let env = damaged_env();
    let run = env.run(&[
        "verify",
        "disk.img",
        "--manifest",
        "m",
        "--json",
        "report.json",
        "--on-finding",
        LOG_ENV,
    ]);
    run.assert_code(1);
    let report = read_json(&env, "report.json");
    assert_eq!(finding_set(&report), damage_set());
    let runs = hook_runs(&env);
    assert_eq!(runs.len(), 1, "three findings, one run: {runs:?}");
    let hook = &runs[0];
    let block: u64 = hook["BLOCKSTAMP_BLOCK"].parse().unwrap();
    let found = finding(&report, block);
    assert_eq!(hook["BLOCKSTAMP_CLASS"], found["class"].as_str().unwrap());
    assert_eq!(hook["BLOCKSTAMP_OFFSET"], (block * KIB4).to_string());
    assert_eq!(hook["BLOCKSTAMP_DETAIL"], found["detail"].as_str().unwrap());
    assert_eq!(hook["BLOCKSTAMP_TARGET"], "disk.img");
    assert_eq!(hook["BLOCKSTAMP_MANIFEST"], "m");
    assert_eq!(hook["BLOCKSTAMP_SOURCE"], "verify");
    assert_eq!(
        hook["BLOCKSTAMP_RUN_ID"],
        report["run_id"].as_str().unwrap()
    );
    let report_path = env.path("report.json");
    assert_eq!(
        std::path::Path::new(&hook["BLOCKSTAMP_REPORT"])
            .canonicalize()
            .ok(),
        report_path.canonicalize().ok()
    );
    let recorded = report["on_finding"].as_array().expect("on_finding");
    assert_eq!(recorded.len(), 1);
    let recorded = &recorded[0];
    assert_eq!(recorded["command"], LOG_ENV);
    assert_eq!(recorded["exit_status"], 0);
    assert_eq!(recorded["timed_out"], false);
    assert_eq!(recorded["trigger"]["block"], block);
    assert_eq!(recorded["trigger"]["class"], found["class"]);
    assert_eq!(recorded["trigger"]["offset"], block * KIB4);
    assert_eq!(recorded["trigger"]["source"], "verify");
    assert!(found["persistent"].as_bool().unwrap());
}

#[test]
fn a_clean_verify_never_runs_the_hook() {
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "1MiB"]);
    let run = env.verify("disk.img", "m", &["--on-finding", LOG_ENV]);
    run.assert_code(0);
    assert!(!env.path("hook.log").exists(), "the hook ran");
    assert_eq!(run.report()["on_finding"], serde_json::json!([]));
    assert_eq!(run.report()["clean"], true);
}

#[test]
fn a_failing_hook_is_a_warning_and_the_verdict_stands() {
    let env = damaged_env();
    let run = env.verify("disk.img", "m", &["--on-finding", "echo oops; exit 7"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("warning: --on-finding `echo oops; exit 7` exited with status 7"),
        "{}",
        run.stderr
    );
    let report = run.report();
    assert_eq!(finding_set(&report), damage_set());
    assert_eq!(report["clean"], false);
    let recorded = &report["on_finding"][0];
    assert_eq!(recorded["exit_status"], 7);
    assert_eq!(recorded["timed_out"], false);
    assert_eq!(recorded["output_tail"], serde_json::json!(["oops"]));
}

#[test]
fn a_hook_past_its_timeout_is_killed_and_recorded_as_timed_out() {
    let env = damaged_env();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_blockstamp"));
    command
        .args(["verify", "disk.img", "--manifest", "m", "--json", "-"])
        .args(["--on-finding", "echo started; sleep 60"])
        .args(["--on-finding-timeout", "1s"])
        .current_dir(env.dir.path());
    let run = run_bounded(command, Duration::from_secs(30));
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("did not finish within --on-finding-timeout"),
        "{}",
        run.stderr
    );
    let report = run.report();
    assert_eq!(finding_set(&report), damage_set());
    let recorded = &report["on_finding"][0];
    assert_eq!(recorded["timed_out"], true);
    assert_eq!(recorded["exit_status"], Value::Null);
    let took = recorded["duration_s"].as_f64().unwrap();
    assert!((1.0..30.0).contains(&took), "{took}");
    assert_eq!(recorded["output_tail"], serde_json::json!(["started"]));
}

#[test]
fn the_hook_runs_while_the_verify_still_reads() {
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "32MiB"]);
    Image::open(&env.path("disk.img"), KIB4).flip_bit(0, 1000, 1);
    // One 4 KiB read at a time: the verify reads for a while after block 0.
    let run = env.verify(
        "disk.img",
        "m",
        &[
            "--read-size",
            "4KiB",
            "--read-depth",
            "1",
            "--threads",
            "1",
            "--on-finding",
            "true",
        ],
    );
    run.assert_code(1);
    let report = run.report();
    let started_at = report["on_finding"][0]["started_at_s"].as_f64().unwrap();
    let verify_took = report["elapsed_s"].as_f64().unwrap();
    // `started_at_s` counts from the command's start, before the verify's:
    // it can only overstate how far into the verify the hook started.
    assert!(
        started_at < verify_took,
        "the hook started {started_at} s in, the verify took {verify_took} s"
    );
}

/// Blocks of an image file that hold anything but zeros.
fn written_blocks(path: &std::path::Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .chunks_exact(KIB4 as usize)
        .enumerate()
        .filter(|(_, block)| block.iter().any(|&b| b != 0))
        .map(|(i, _)| i as u64)
        .collect()
}

#[test]
fn on_finding_each_runs_once_per_class_and_region() {
    const REGION_BLOCKS: u64 = (64 << 20) / KIB4;
    let env = TestEnv::new();
    // 128 MiB, sparse: two 64 MiB regions, a few hundred written blocks.
    env.write(
        "disk.img",
        "m",
        &["--size", "128MiB", "--coverage", "0.01", "--seed", "3"],
    );
    let written = written_blocks(&env.path("disk.img"));
    let (first, second): (Vec<u64>, Vec<u64>) = written.iter().partition(|&&b| b < REGION_BLOCKS);
    assert!(first.len() >= 3 && !second.is_empty(), "{written:?}");
    let image = Image::open(&env.path("disk.img"), KIB4);
    image.zero_block(first[0]);
    image.zero_block(first[1]);
    image.flip_bit(first[2], 1000, 0);
    image.zero_block(second[0]);
    image.sync();
    let run = env.verify(
        "disk.img",
        "m",
        &["--on-finding", LOG_ENV, "--on-finding-each"],
    );
    run.assert_code(1);
    let report = run.report();
    let mut expected = vec![
        (first[0], "zeroed".to_string()),
        (first[1], "zeroed".to_string()),
        (first[2], "corrupt".to_string()),
        (second[0], "zeroed".to_string()),
    ];
    expected.sort();
    assert_eq!(finding_set(&report), expected);
    let mut keys: Vec<(String, u64)> = hook_runs(&env)
        .iter()
        .map(|run| {
            let offset: u64 = run["BLOCKSTAMP_OFFSET"].parse().unwrap();
            (run["BLOCKSTAMP_CLASS"].clone(), offset / (64 << 20))
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("corrupt".to_string(), 0),
            ("zeroed".to_string(), 0),
            ("zeroed".to_string(), 1)
        ],
        "one run per class and region"
    );
    assert_eq!(report["on_finding"].as_array().unwrap().len(), 3);
}

/// The block the corrupter damages while a command writes.
const VICTIM: u64 = 100;

/// Run blockstamp with `args` while another thread keeps scribbling over
/// 17 payload bytes of block [`VICTIM`] of disk.img (through the page
/// cache, as blockstamp writes with `--buffered`: the two never race
/// below it). Every write blockstamp makes of the block is damaged a
/// moment later, so its rolling read-back soon catches one; the
/// scribbling stops when blockstamp has exited.
fn run_while_corrupting(env: &TestEnv, args: &[&str]) -> common::Run {
    let image = env.path("disk.img");
    let done = Arc::new(AtomicBool::new(false));
    let corrupter = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let at = VICTIM * KIB4 + 1000;
            while !done.load(Ordering::Relaxed) {
                if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&image)
                    && file.metadata().is_ok_and(|m| m.len() > at)
                {
                    let _ = file.write_all_at(b"CORRUPTED-BY-TEST", at);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_blockstamp"));
    command.args(args).current_dir(env.dir.path());
    let run = run_bounded(command, Duration::from_secs(120));
    done.store(true, Ordering::Relaxed);
    corrupter.join().unwrap();
    run
}

/// The flags that make a write stop at the corrupter's first damage.
const STOP_FLAGS: [&str; 10] = [
    "--size",
    "1MiB",
    "--duration",
    "1m",
    "--buffered",
    "--verify-backlog",
    "8",
    "--stop-on-finding",
    "--on-finding",
    LOG_ENV,
];

/// A verify after the command: the same single finding, and a manifest
/// closed cleanly.
fn a_later_verify_finds_the_victim(env: &TestEnv) {
    let later = env.verify("disk.img", "m", &[]);
    later.assert_code(1);
    assert_eq!(
        finding_set(&later.report()),
        [(VICTIM, "corrupt".to_string())]
    );
    assert!(
        !later.stderr.contains("not closed cleanly"),
        "{}",
        later.stderr
    );
}

fn stopped_at_the_victim(report: &Value) {
    let stopped = &report["stopped_on_finding"];
    assert_eq!(stopped["block"], VICTIM, "{stopped}");
    assert_eq!(stopped["class"], "corrupt");
    assert_eq!(stopped["source"], "rolling_verify");
    assert_eq!(report["clean"], false);
    assert_eq!(finding_set(report), [(VICTIM, "corrupt".to_string())]);
}

fn the_hook_ran_once_for_the_victim(env: &TestEnv) {
    let runs = hook_runs(env);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["BLOCKSTAMP_BLOCK"], VICTIM.to_string());
    assert_eq!(runs[0]["BLOCKSTAMP_SOURCE"], "rolling_verify");
}

#[test]
fn soak_stop_on_finding_ends_at_a_rolling_verify_finding_with_a_clean_manifest() {
    let env = TestEnv::new();
    let mut args = vec!["soak", "disk.img", "--manifest", "m"];
    args.extend(STOP_FLAGS);
    args.extend(["--verify-every", "1h", "--json", "report.json"]);
    let run = run_while_corrupting(&env, &args);
    run.assert_code(1);
    let report = read_json(&env, "report.json");
    stopped_at_the_victim(&report);
    let soak = &report["soak"];
    assert_eq!(soak["stopped_by_signal"], false, "a finding is no signal");
    assert!(soak["duration_s"].as_f64().unwrap() < 60.0, "{soak}");
    let rolling = soak["rolling_findings"].as_array().unwrap();
    assert!(
        rolling
            .iter()
            .all(|f| f["block"] == VICTIM && f["class"] == "corrupt"),
        "{rolling:?}"
    );
    assert!(rolling.iter().any(|f| f["persistent"] == true));
    assert_eq!(report["on_finding"][0]["trigger"]["block"], VICTIM);
    the_hook_ran_once_for_the_victim(&env);
    a_later_verify_finds_the_victim(&env);
}

#[test]
fn run_stop_on_finding_ends_the_writing_then_verifies() {
    let env = TestEnv::new();
    let mut args = vec!["run", "disk.img", "--manifest", "m"];
    args.extend(STOP_FLAGS);
    args.extend(["--json", "report.json"]);
    let run = run_while_corrupting(&env, &args);
    run.assert_code(1);
    assert!(
        run.stdout.contains("stopped early on a finding"),
        "{}",
        run.stdout
    );
    stopped_at_the_victim(&read_json(&env, "report.json"));
    the_hook_ran_once_for_the_victim(&env);
    a_later_verify_finds_the_victim(&env);
}

#[test]
fn write_stop_on_finding_ends_the_write_with_exit_1() {
    let env = TestEnv::new();
    let args = [
        "write",
        "disk.img",
        "--manifest",
        "m",
        "--size",
        "1MiB",
        "--duration",
        "1m",
        "--buffered",
        "--verify-backlog",
        "8",
        "--stop-on-finding",
    ];
    let run = run_while_corrupting(&env, &args);
    run.assert_code(1);
    assert!(
        run.stdout.contains("stopped early on a finding"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("block {VICTIM}: corrupt [persistent]")),
        "{}",
        run.stdout
    );
    a_later_verify_finds_the_victim(&env);
}

#[test]
fn a_finding_of_the_verify_after_a_disruption_runs_the_hook_and_stops_the_run() {
    let env = TestEnv::new();
    // Which blocks a run with this seed and coverage writes, and which it
    // never does: a probe run on another image.
    let shape = ["--size", "1MiB", "--seed", "7", "--coverage", "0.5"];
    env.write("probe.img", "probe.m", &shape);
    let written = written_blocks(&env.path("probe.img"));
    let never = (0..256).find(|b| !written.contains(b)).unwrap();
    // The disruption copies a written block over one the run never
    // writes: the verify after it finds that block misdirected, and no
    // later write heals it.
    let disrupt = format!(
        "dd if=disk.img of=disk.img bs=4096 skip={} seek={never} count=1 conv=notrunc status=none",
        written[0]
    );
    let mut args = vec!["run", "disk.img", "--manifest", "m"];
    args.extend(shape);
    args.extend(["--duration", "1m", "--disrupt-at", "300ms", "--disrupt"]);
    args.push(&disrupt);
    args.extend(["--stop-on-finding", "--on-finding", LOG_ENV]);
    args.extend(["--json", "report.json"]);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_blockstamp"));
    command.args(&args).current_dir(env.dir.path());
    let run = run_bounded(command, Duration::from_secs(120));
    run.assert_code(1);
    let report = read_json(&env, "report.json");
    let stopped = &report["stopped_on_finding"];
    assert_eq!(
        (stopped["block"].as_u64(), stopped["source"].as_str()),
        (Some(never), Some("disruption_verify")),
        "{stopped}"
    );
    assert_eq!(finding_set(&report), [(never, "misdirected".to_string())]);
    let runs = hook_runs(&env);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["BLOCKSTAMP_SOURCE"], "disruption_verify");
    assert_eq!(runs[0]["BLOCKSTAMP_CLASS"], "misdirected");
    assert_eq!(report["disruptions"].as_array().unwrap().len(), 1);
}

/// 64 blocks at generation 1 in memory; every read of `damaged` returns
/// it with a byte flipped, and only the first read covering `flaky` does.
struct FlakyTarget {
    info: blockstamp::storage::TargetInfo,
    bytes: Vec<u8>,
    damaged: u64,
    flaky: u64,
    flaky_reads: std::sync::atomic::AtomicU64,
}

impl blockstamp::storage::Target for FlakyTarget {
    fn info(&self) -> &blockstamp::storage::TargetInfo {
        &self.info
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = offset as usize;
        buf.copy_from_slice(&self.bytes[start..start + buf.len()]);
        let range = offset..offset + buf.len() as u64;
        let flip = |buf: &mut [u8], block: u64| {
            buf[(block * KIB4 - offset) as usize + 1000] ^= 0x10;
        };
        if range.contains(&(self.damaged * KIB4)) {
            flip(buf, self.damaged);
        }
        if range.contains(&(self.flaky * KIB4))
            && self.flaky_reads.fetch_add(1, Ordering::SeqCst) == 0
        {
            flip(buf, self.flaky);
        }
        Ok(())
    }
    fn write_at(&self, _: &[u8], _: u64, _: bool) -> std::io::Result<()> {
        Err(std::io::Error::other("read-only"))
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Records what it is told.
#[derive(Default)]
struct Told(std::sync::Mutex<Vec<(u64, &'static str)>>);

impl blockstamp::verify::FindingWatch for Told {
    fn wants(&self, _: &blockstamp::verify::Finding, _: &'static str) -> bool {
        true
    }
    fn confirmed(&self, finding: &blockstamp::verify::Finding, source: &'static str) {
        self.0.lock().unwrap().push((finding.block, source));
    }
}

#[test]
fn only_persistent_findings_are_confirmed_to_the_watch() {
    use blockstamp::verify::{FindingClass, VerifyOptions, Watcher, verify};
    let dir = tempfile::tempdir().unwrap();
    let manifest = common::manifest_of_64_blocks(&dir.path().join("m"));
    let format = manifest.format();
    let mut bytes = vec![0u8; 64 * KIB4 as usize];
    for (block, bytes) in bytes.chunks_exact_mut(KIB4 as usize).enumerate() {
        let stamp = blockstamp::stamp::WriteStamp {
            block: block as u64,
            generation: 1,
            write_seq: block as u64,
            write_time_s: 1_700_000_000,
        };
        blockstamp::stamp::build_block(&format, &stamp, bytes);
    }
    let target = Arc::new(FlakyTarget {
        info: blockstamp::storage::TargetInfo {
            uri: "memory".into(),
            kind: blockstamp::storage::TargetKind::File,
            size_bytes: 64 * KIB4,
            logical_sector_size: 512,
            physical_sector_size: 512,
            direct_io: true,
            read_only: true,
            supports_fua: false,
            identity: Default::default(),
        },
        bytes,
        damaged: 9,
        flaky: 7,
        flaky_reads: Default::default(),
    });
    let told = Arc::new(Told::default());
    let options = VerifyOptions {
        threads: 2,
        watch: Some(Watcher::new(told.clone(), "verify")),
        ..VerifyOptions::default()
    };
    let mut engine = blockstamp::engine::inline::InlineEngine::new(target.clone(), 4);
    let outcome = verify(
        target,
        &format,
        &manifest.expected(None).unwrap(),
        &mut engine,
        &options,
        None,
    )
    .unwrap();
    let found: Vec<(u64, FindingClass, bool)> = outcome
        .findings
        .iter()
        .map(|f| (f.block, f.classified.class, f.persistent))
        .collect();
    assert_eq!(
        found,
        [
            (7, FindingClass::Corrupt, false),
            (9, FindingClass::Corrupt, true)
        ]
    );
    assert_eq!(
        *told.0.lock().unwrap(),
        [(9, "verify")],
        "the transient finding set nothing off"
    );
}
