//! `--jobs N`: the writes carried by N engines on N threads are what one
//! writer would leave: a clean verify, exact findings for injected damage,
//! a manifest that verify trusts after a kill -9, and bad values refused.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use blockstamp::engine::{self, EngineChoice};
use blockstamp::manifest::journal::journal_bytes_for;
use blockstamp::manifest::{Manifest, NewManifest, TargetRecord};
use blockstamp::rng::SplitMix64;
use blockstamp::sim::powercut::{PowerCutPlan, PowerCutTarget};
use blockstamp::stamp::PAYLOAD_BYTES;
use blockstamp::storage::file::FileTarget;
use blockstamp::storage::{OpenRequest, Target};
use blockstamp::workload::{BurstPlan, BurstWorkload, Scatter};
use blockstamp::writer::{self, SyncPolicy, WriteOptions};
use common::{Image, TestEnv, file_digest, finding_set};

const KIB4: u64 = 4096;

/// `run` on a fresh 4 MiB image with `jobs`, overwrites and writes of
/// `io_size`, reporting to stdout; asserts a clean exit 0 and returns the
/// report.
fn run_with_jobs(env: &TestEnv, jobs: &str, io_size: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "run",
        "disk.img",
        "--manifest",
        "m",
        "--size",
        "4MiB",
        "--passes",
        "2",
        "--overwrite",
        "0.3",
        "--io-size",
        io_size,
        "--jobs",
        jobs,
        "--json",
        "-",
    ];
    args.extend_from_slice(extra);
    let run = env.run(&args);
    run.assert_code(0);
    let report = run.report();
    assert_eq!(report["clean"], true, "{}", run.stdout);
    report
}

#[test]
fn a_run_with_two_jobs_is_clean_and_says_so() {
    let env = TestEnv::new();
    let mut args = vec![
        "run",
        "disk.img",
        "--manifest",
        "m",
        "--size",
        "4MiB",
        "--jobs",
        "2",
        "--json",
        "-",
    ];
    let run = env.run(&args);
    run.assert_code(0);
    assert!(
        run.stderr.contains(", 2 jobs, seed"),
        "the summary names the jobs: {}",
        run.stderr
    );
    let report = run.report();
    assert_eq!(report["write_jobs"], 2);
    assert_eq!(report["blocks"]["checked"], 1024);
    assert_eq!(report["blocks"]["ok"], 1024);
    // One job keeps the summary as it was.
    args[7] = "1";
    args[1] = "disk1.img";
    args[3] = "m1";
    let run = env.run(&args);
    run.assert_code(0);
    assert!(!run.stderr.contains("jobs"), "{}", run.stderr);
    assert_eq!(run.report()["write_jobs"], 1);
}

#[test]
fn overwrites_and_multi_block_writes_on_two_jobs_verify_clean_on_every_engine() {
    for engine in ["auto", "sync", "inline"] {
        let env = TestEnv::new();
        let report = run_with_jobs(&env, "2", "4KiB-16KiB", &["--engine", engine]);
        assert_eq!(report["write_jobs"], 2, "{engine}");
        assert_eq!(report["blocks"]["expected_written"], 1024, "{engine}");
    }
}

#[test]
fn jobs_auto_is_one_per_core() {
    let env = TestEnv::new();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let report = run_with_jobs(&env, "auto", "4KiB-16KiB", &[]);
    assert_eq!(report["write_jobs"], cores as u64);
}

#[test]
fn a_corrupt_block_written_by_two_jobs_is_found_exactly() {
    let env = TestEnv::new();
    run_with_jobs(&env, "2", "4KiB", &[]);
    let image = Image::open(&env.path("disk.img"), KIB4);
    image.flip_bit(77, 1000, 3);
    image.sync();
    let run = env.verify("disk.img", "m", &[]);
    run.assert_code(1);
    assert_eq!(
        finding_set(&run.report()),
        vec![(77, "corrupt".to_string())]
    );
}

#[test]
fn a_two_job_writer_killed_mid_write_leaves_a_manifest_that_verifies_clean() {
    let env = TestEnv::new();
    let mut rng = SplitMix64(0x10b5);
    for round in 0..6 {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_blockstamp"))
            .args(["write", "disk.img", "--manifest", "m", "--size", "8MiB"])
            .args(["--passes", "1000", "--overwrite", "0.3"])
            .args(["--io-size", "4KiB-16KiB", "--sync", "64", "--jobs", "2"])
            .current_dir(env.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start writer");
        std::thread::sleep(Duration::from_millis(150 + rng.next_u64() % 400));
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");
        let run = env.verify("disk.img", "m", &[]);
        run.assert_code(0);
        assert_eq!(finding_set(&run.report()), vec![], "round {round}");
    }
    // Continuing with two jobs reconciles the manifest and ends clean.
    env.write("disk.img", "m", &["--passes", "1", "--jobs", "2"]);
    let run = env.verify("disk.img", "m", &[]);
    run.assert_code(0);
    assert!(!run.stderr.contains("pending"), "{}", run.stderr);
}

#[test]
fn bad_job_counts_are_refused_before_anything_is_written() {
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "1MiB"]);
    let target = env.path("disk.img");
    for (jobs, says) in [
        ("0", "bad --jobs '0'"),
        ("x", "bad --jobs 'x'"),
        ("257", "bad --jobs '257'"),
    ] {
        for command in ["write", "run"] {
            let before = file_digest(&target);
            let args = [command, "disk.img", "--manifest", "m", "--jobs", jobs];
            let run = env.run(&args);
            run.assert_code(2);
            let message = run.stderr.trim();
            assert!(message.contains(says), "{message}");
            assert!(message.contains("or auto"), "says what to do: {message}");
            assert_eq!(message.lines().count(), 1, "{message}");
            assert_eq!(file_digest(&target), before, "{args:?} wrote");
            common::record_refusal(env.dir.path(), &args, 2, message);
        }
    }
}

/// Write two passes over 512 blocks on two jobs (each a sync engine)
/// through a target whose power fails as `plan` says; return the durable
/// writes a lying device dropped (the blocks), the manifest left as the
/// writer left it.
fn write_on_two_jobs_until_the_power_fails(
    env: &TestEnv,
    sync: SyncPolicy,
    fua: bool,
    plan: PowerCutPlan,
    io_blocks: (u32, u32),
) -> Vec<u64> {
    let blocks = 512u64;
    let inner: Arc<dyn Target> = Arc::new(
        FileTarget::open(
            &env.path("disk.img"),
            "disk.img",
            &OpenRequest {
                write: true,
                create_size: Some(blocks * KIB4),
                direct: true,
                force: false,
            },
        )
        .unwrap(),
    );
    let target = Arc::new(PowerCutTarget::new(inner, plan));
    let shared: Arc<dyn Target> = target.clone();
    let mut manifest = Manifest::create(
        &env.path("m"),
        NewManifest {
            run_id: 0xfeed,
            seed: 1,
            block_size: KIB4 as u32,
            random_bytes: PAYLOAD_BYTES as u16,
            dedup_permille: 0,
            target: TargetRecord::from_info(shared.info()),
            journal_bytes: journal_bytes_for(blocks),
        },
    )
    .unwrap();
    let (mut engine, _) =
        engine::build_jobs(EngineChoice::Sync, Arc::clone(&shared), 16, 0, 2, KIB4).unwrap();
    let mut workload = BurstWorkload::new(BurstPlan {
        block_count: blocks,
        burst: 16,
        scatter: Scatter::Random,
        io_blocks,
        overwrite: 0.0,
        coverage: 1.0,
        passes: Some(2),
        seed: 9,
    });
    let options = WriteOptions {
        sync,
        fua,
        ..WriteOptions::default()
    };
    let result = writer::write(&mut manifest, engine.as_mut(), &mut workload, &options);
    assert!(target.is_dead(), "the power cut happened");
    let error = result.expect_err("the write phase fails with the power");
    assert!(error.to_string().contains("failed"), "{error}");
    drop(engine);
    drop(manifest);
    let mut lost: Vec<u64> = target
        .lost_durable_writes()
        .iter()
        .map(|offset| offset / KIB4)
        .collect();
    lost.sort_unstable();
    lost
}

#[test]
fn after_a_power_cut_under_two_jobs_honest_storage_has_no_findings_under_every_sync_policy() {
    let policies = [
        (SyncPolicy::None, false),
        (SyncPolicy::Burst, false),
        (SyncPolicy::Every(40), false),
        (SyncPolicy::None, true),
    ];
    for (round, (sync, fua)) in policies.into_iter().enumerate() {
        for seed in 0..2u64 {
            let env = TestEnv::new();
            let plan = PowerCutPlan {
                cut_after_writes: 100 + seed * 37 + round as u64 * 23,
                seed: seed * 31 + round as u64,
                atomic_unit: 512,
                ..PowerCutPlan::default()
            };
            let lost = write_on_two_jobs_until_the_power_fails(&env, sync, fua, plan, (1, 4));
            assert!(lost.is_empty());
            let run = env.verify("disk.img", "m", &[]);
            run.assert_code(0);
            assert_eq!(
                finding_set(&run.report()),
                vec![],
                "{sync:?} fua={fua} seed {seed}"
            );
            assert!(run.stderr.contains("had writes pending"), "{}", run.stderr);
        }
    }
}

#[test]
fn after_a_power_cut_under_two_jobs_exactly_the_durable_writes_a_lying_device_dropped_are_reported()
{
    for seed in 0..2u64 {
        let env = TestEnv::new();
        let mut rng = SplitMix64(seed);
        let victims: HashSet<u64> = (0..24).map(|_| (rng.next_u64() % 512) * KIB4).collect();
        let plan = PowerCutPlan {
            cut_after_writes: 700 + seed * 50,
            seed,
            atomic_unit: 512,
            lie_on: victims,
            lie_after_writes: 512,
        };
        let lost =
            write_on_two_jobs_until_the_power_fails(&env, SyncPolicy::Burst, false, plan, (1, 1));
        assert!(!lost.is_empty(), "the device lied at least once");
        let run = env.verify("disk.img", "m", &[]);
        run.assert_code(1);
        let expected: Vec<(u64, String)> = lost
            .iter()
            .map(|&block| (block, "lost_write".to_string()))
            .collect();
        assert_eq!(finding_set(&run.report()), expected, "seed {seed}");
    }
}
