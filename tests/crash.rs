//! Crash consistency: a writer that dies at any moment, and storage that
//! loses power, leave a manifest that verify trusts exactly — no finding on
//! honest storage, and exactly the durable writes a lying device dropped.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use blockstamp::engine::sync::SyncEngine;
use blockstamp::engine::{self, EngineChoice};
use blockstamp::manifest::journal::journal_bytes_for;
use blockstamp::manifest::{Access, Manifest, NewManifest, TargetRecord};
use blockstamp::rng::SplitMix64;
use blockstamp::sim::powercut::{PowerCutPlan, PowerCutTarget};
use blockstamp::stamp::PAYLOAD_BYTES;
use blockstamp::storage::file::FileTarget;
use blockstamp::storage::{OpenRequest, Target};
use blockstamp::workload::{BurstPlan, BurstWorkload, Scatter};
use blockstamp::writer::{self, SyncPolicy, WriteOptions};
use common::{TestEnv, finding_set};

#[test]
fn a_writer_killed_at_random_moments_leaves_a_manifest_that_verifies_clean() {
    kill_the_writer_at_random_moments(&[], 12, 0x5151);
}

#[test]
fn a_two_job_writer_killed_at_random_moments_leaves_a_manifest_that_verifies_clean() {
    kill_the_writer_at_random_moments(&["--jobs", "2"], 6, 0x10b5);
}

/// SIGKILL a writer (with `extra` flags) `rounds` times at random moments
/// of its writing; each time verify finds nothing, and a write continuing
/// the manifest ends with nothing pending.
fn kill_the_writer_at_random_moments(extra: &[&str], rounds: u32, seed: u64) {
    let env = TestEnv::new();
    let mut rng = SplitMix64(seed);
    let binary = env!("CARGO_BIN_EXE_blockstamp");
    for round in 0..rounds {
        let mut child = std::process::Command::new(binary)
            .args([
                "write",
                "disk.img",
                "--manifest",
                "m",
                "--size",
                "8MiB",
                "--passes",
                "1000",
            ])
            .args([
                "--overwrite",
                "0.3",
                "--io-size",
                "4KiB-16KiB",
                "--sync",
                "64",
            ])
            .args(extra)
            .current_dir(env.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start writer");
        std::thread::sleep(Duration::from_millis(150 + rng.next_u64() % 400));
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");
        // Right after the kill, with the manifest as the writer left it.
        let run = env.verify("disk.img", "m", &[]);
        run.assert_code(0);
        assert_eq!(finding_set(&run.report()), vec![], "round {round}");
    }
    // Continuing the same manifest reconciles it and runs cleanly.
    let mut again = vec!["--passes", "1", "--overwrite", "0.2"];
    again.extend_from_slice(extra);
    env.write("disk.img", "m", &again);
    let run = env.verify("disk.img", "m", &[]);
    run.assert_code(0);
    assert!(
        !run.stderr.contains("pending"),
        "a clean finish leaves nothing pending: {}",
        run.stderr
    );
}

/// Write through a power-cut target in-process, the writes carried by
/// `jobs` sync engines (`--jobs`); return the lost durable blocks (ground
/// truth) and leave the manifest as the writer did.
fn write_until_the_power_fails(
    env: &TestEnv,
    jobs: usize,
    block_size: u32,
    (sync, fua): (SyncPolicy, bool),
    plan: PowerCutPlan,
    io_blocks: (u32, u32),
    passes: u64,
) -> Vec<u64> {
    let blocks = 512u64;
    let inner: Arc<dyn Target> = Arc::new(
        FileTarget::open(
            &env.path("disk.img"),
            "disk.img",
            &OpenRequest {
                write: true,
                create_size: Some(blocks * block_size as u64),
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
            block_size,
            random_bytes: PAYLOAD_BYTES as u16,
            dedup_permille: 0,
            target: TargetRecord::from_info(shared.info()),
            journal_bytes: journal_bytes_for(blocks),
        },
    )
    .unwrap();
    let (mut engine, _) = engine::build_jobs(
        EngineChoice::Sync,
        Arc::clone(&shared),
        16,
        0,
        jobs,
        block_size as u64,
    )
    .expect("sync engines");
    let mut workload = BurstWorkload::new(BurstPlan {
        block_count: blocks,
        burst: 16,
        scatter: Scatter::Random,
        io_blocks,
        overwrite: 0.0,
        coverage: 1.0,
        passes: Some(passes),
        seed: 9,
        discard: 0.0,
        zero: 0.0,
    });
    let options = WriteOptions {
        sync,
        fua,
        ..WriteOptions::default()
    };
    let result = writer::write(&mut manifest, engine.as_mut(), &mut workload, &options);
    assert!(target.is_dead(), "the power cut happened");
    let error = result
        .expect_err("the write phase fails when the power does")
        .to_string();
    assert!(error.contains("failed"), "{error}");
    drop(engine);
    drop(manifest);
    let mut lost: Vec<u64> = target
        .lost_durable_writes()
        .iter()
        .map(|o| o / block_size as u64)
        .collect();
    lost.sort_unstable();
    lost
}

#[test]
fn after_a_power_cut_honest_storage_has_no_findings_under_every_sync_policy() {
    honest_storage_after_power_cuts(1, 3);
}

#[test]
fn after_a_power_cut_under_two_jobs_honest_storage_has_no_findings_under_every_sync_policy() {
    honest_storage_after_power_cuts(2, 2);
}

/// Cut the power at `seeds` moments under each sync policy, the writes on
/// `jobs`: verify finds nothing, and continuing reconciles cleanly.
fn honest_storage_after_power_cuts(jobs: usize, seeds: u64) {
    let policies = [
        (SyncPolicy::None, false),
        (SyncPolicy::Burst, false),
        (SyncPolicy::Every(40), false),
        (SyncPolicy::None, true),
    ];
    for (round, (sync, fua)) in policies.into_iter().enumerate() {
        for seed in 0..seeds {
            let env = TestEnv::new();
            let plan = PowerCutPlan {
                cut_after_writes: 100 + seed * 37 + round as u64 * 23,
                seed: seed * 31 + round as u64,
                atomic_unit: 512,
                ..PowerCutPlan::default()
            };
            // Multi-block writes, so cuts tear inside writes and blocks.
            let lost = write_until_the_power_fails(&env, jobs, 4096, (sync, fua), plan, (1, 4), 2);
            assert!(lost.is_empty());
            let run = env.verify("disk.img", "m", &[]);
            run.assert_code(0);
            assert_eq!(
                finding_set(&run.report()),
                vec![],
                "{sync:?} fua={fua} seed {seed} jobs {jobs}"
            );
            assert!(run.stderr.contains("had writes pending"), "{}", run.stderr);
            // Continuing reconciles the pending blocks; the result verifies.
            env.write("disk.img", "m", &["--passes", "1"]);
            env.verify("disk.img", "m", &[]).assert_code(0);
        }
    }
}

#[test]
fn after_a_power_cut_exactly_the_durable_writes_a_lying_device_dropped_are_reported() {
    lying_device_after_power_cuts(1, 4);
}

#[test]
fn after_a_power_cut_under_two_jobs_exactly_the_durable_writes_a_lying_device_dropped_are_reported()
{
    lying_device_after_power_cuts(2, 2);
}

/// A device that drops flushed writes, cut at `seeds` moments with the
/// writes on `jobs`: exactly the dropped writes are found, as lost writes.
fn lying_device_after_power_cuts(jobs: usize, seeds: u64) {
    for seed in 0..seeds {
        let env = TestEnv::new();
        let mut rng = SplitMix64(seed);
        let victims: HashSet<u64> = (0..24).map(|_| (rng.next_u64() % 512) * 4096).collect();
        let plan = PowerCutPlan {
            // The second pass starts at write 512; cut late in it.
            cut_after_writes: 700 + seed * 50,
            seed,
            atomic_unit: 512,
            lie_on: victims,
            lie_after_writes: 512,
        };
        let lost = write_until_the_power_fails(
            &env,
            jobs,
            4096,
            (SyncPolicy::Burst, false),
            plan,
            (1, 1),
            2,
        );
        assert!(!lost.is_empty(), "the device lied at least once");
        let run = env.verify("disk.img", "m", &[]);
        run.assert_code(1);
        let report = run.report();
        let expected: Vec<(u64, String)> = lost
            .iter()
            .map(|&b| (b, "lost_write".to_string()))
            .collect();
        assert_eq!(finding_set(&report), expected, "seed {seed} jobs {jobs}");
        for finding in report["findings"].as_array().unwrap() {
            assert_eq!(finding["expected_generation"], 2);
            assert_eq!(finding["found_generation"], 1);
        }
        // Reconciling pending writes does not hide the real losses.
        env.write("disk.img", "m", &["--coverage", "0.01"]);
        let after = env.verify("disk.img", "m", &[]).report();
        let still: Vec<u64> = finding_set(&after).into_iter().map(|(b, _)| b).collect();
        assert!(
            still.iter().all(|b| lost.contains(b)),
            "no new findings: {still:?}"
        );
    }
}

#[test]
fn intents_logged_ahead_of_a_flush_hide_no_durable_write_a_lying_device_dropped() {
    // Three passes, the cut late in the second: the intents of the third
    // pass's first writes (generation 3) are logged ahead, and pending at
    // the cut, for blocks whose flushed generation 2 the device dropped.
    // They may let verify accept 2 or 3, never the 1 the device kept.
    for (seed, sync, fua) in [
        (0u64, SyncPolicy::Burst, false),
        (1, SyncPolicy::Every(64), false),
        (2, SyncPolicy::Every(200), false),
    ] {
        let env = TestEnv::new();
        let mut rng = SplitMix64(seed);
        let victims: HashSet<u64> = (0..48).map(|_| (rng.next_u64() % 512) * 4096).collect();
        let plan = PowerCutPlan {
            cut_after_writes: 1000,
            seed,
            atomic_unit: 512,
            lie_on: victims,
            lie_after_writes: 512,
        };
        let lost = write_until_the_power_fails(&env, 1, 4096, (sync, fua), plan, (1, 1), 3);
        assert!(!lost.is_empty(), "the device lied at least once");
        let manifest = Manifest::open(&env.path("m"), Access::Read).unwrap();
        let pending = manifest.pending_writes().unwrap();
        assert!(
            lost.iter()
                .any(|b| pending.get(b).is_some_and(|p| p.newest == 3)),
            "{sync:?} fua={fua}: some dropped block has an intent logged ahead"
        );
        drop(manifest);
        let run = env.verify("disk.img", "m", &[]);
        run.assert_code(1);
        let report = run.report();
        let expected: Vec<(u64, String)> = lost
            .iter()
            .map(|&b| (b, "lost_write".to_string()))
            .collect();
        assert_eq!(finding_set(&report), expected, "{sync:?} fua={fua}");
    }
}

/// Counts the writes sent to the target since its last completed flush.
struct UnflushedCounter {
    inner: Arc<PowerCutTarget>,
    since_flush: std::sync::atomic::AtomicU64,
}

impl Target for UnflushedCounter {
    fn info(&self) -> &blockstamp::storage::TargetInfo {
        self.inner.info()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> std::io::Result<()> {
        self.since_flush
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.write_at(buf, offset, fua)
    }

    fn flush(&self) -> std::io::Result<()> {
        self.inner.flush()?;
        self.since_flush
            .store(0, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn after_a_power_cut_only_the_unflushed_writes_and_two_intent_batches_are_pending() {
    // The intents logged ahead of the writes (two batches at most: a
    // quarter of this small journal each, see `Writer::batch_entries`)
    // accept nothing the target can hold; recovery reads their blocks.
    const AHEAD: u64 = 2 * 4096 / 4 + 16;
    const QUEUE_DEPTH: usize = 32;
    let blocks = 2048u64;
    let mut rng = SplitMix64(0x5eed);
    for round in 0..3 {
        let env = TestEnv::new();
        let inner: Arc<dyn Target> = Arc::new(
            FileTarget::open(
                &env.path("disk.img"),
                "disk.img",
                &OpenRequest {
                    write: true,
                    create_size: Some(blocks * 4096),
                    direct: false,
                    force: false,
                },
            )
            .unwrap(),
        );
        let cut_after_writes = 100 + rng.next_u64() % (2 * blocks - 200);
        let plan = PowerCutPlan {
            cut_after_writes,
            seed: round,
            atomic_unit: 512,
            ..PowerCutPlan::default()
        };
        let counter = Arc::new(UnflushedCounter {
            inner: Arc::new(PowerCutTarget::new(inner, plan)),
            since_flush: 0.into(),
        });
        let shared: Arc<dyn Target> = counter.clone();
        let mut manifest = Manifest::create(
            &env.path("m"),
            NewManifest {
                run_id: 0xfeed,
                seed: 1,
                block_size: 4096,
                random_bytes: PAYLOAD_BYTES as u16,
                dedup_permille: 0,
                target: TargetRecord::from_info(shared.info()),
                journal_bytes: journal_bytes_for(blocks),
            },
        )
        .unwrap();
        let mut engine = SyncEngine::new(Arc::clone(&shared), QUEUE_DEPTH);
        let mut workload = BurstWorkload::new(BurstPlan {
            block_count: blocks,
            burst: 16,
            scatter: Scatter::Random,
            io_blocks: (1, 1),
            overwrite: 0.0,
            coverage: 1.0,
            passes: Some(2),
            seed: round,
            discard: 0.0,
            zero: 0.0,
        });
        let options = WriteOptions {
            sync: SyncPolicy::Every(64),
            ..WriteOptions::default()
        };
        let result = writer::write(&mut manifest, &mut engine, &mut workload, &options);
        assert!(
            result.is_err(),
            "the power failed at write {cut_after_writes}"
        );
        drop(engine);
        drop(manifest);
        let unflushed = counter
            .since_flush
            .load(std::sync::atomic::Ordering::SeqCst);
        let manifest = Manifest::open(&env.path("m"), Access::Read).unwrap();
        let pending = manifest.pending_writes().unwrap().len() as u64;
        assert!(
            pending <= unflushed + AHEAD,
            "cut at write {cut_after_writes}: {pending} blocks pending, \
             {unflushed} writes after the last flush"
        );
        assert!(
            pending >= unflushed.min(1),
            "the unflushed writes are pending"
        );
    }
}
