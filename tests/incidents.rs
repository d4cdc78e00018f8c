//! Incidents: findings made by distinct injected causes come out grouped by
//! cause, with the spans the fault layer's ground truth says (see
//! docs/CONTRACT.md, "Incidents").
//!
//! The run: a 64 MiB image written twice over (random scatter, bursts of 4,
//! queue depth 32) through the fault layer, on a clock that ticks every 64
//! readings. Two causes strike the second pass:
//!
//! - early, a lost-write burst in 8-12 MiB: the first 250 writes of the
//!   pass that land there never persist (`lost_write`);
//! - later, a corruption in 48-52 MiB: the last 250 writes that land there
//!   get a bit flipped (`corrupt`).
//!
//! 500 findings, two incidents: exactly their blocks, the span of the
//! corrupted writes, the span of the older writes the lost blocks still
//! hold, the writes of the corrupted span that survived.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use blockstamp::clock::Clock;
use blockstamp::engine::inline::InlineEngine;
use blockstamp::engine::sync::SyncEngine;
use blockstamp::manifest::{Manifest, NewManifest, TargetRecord, WriteSession};
use blockstamp::sim::fault::{Fault, FaultKind, FaultPlan, FaultTarget, Geometry};
use blockstamp::storage::file::FileTarget;
use blockstamp::storage::{OpenRequest, Target};
use blockstamp::verify::incidents::{self, Evidence, GroupingContext};
use blockstamp::verify::{self, FindingClass, VerifyOptions};
use blockstamp::workload::{BurstPlan, BurstWorkload, Scatter, Workload};
use blockstamp::writer::{self, WriteOptions};
use common::TestEnv;
use serde_json::Value;

const BLOCK_SIZE: u32 = 4096;
const BLOCKS: u64 = 16_384; // 64 MiB
const QUEUE_DEPTH: usize = 32;
const BURST: usize = 4;
const SEED: u64 = 0x1ac1_de47;
const START_S: u64 = 1_700_000_000;
/// Region A (8-12 MiB) and region B (48-52 MiB).
const REGION_A: std::ops::Range<u64> = 2048..3072;
const REGION_B: std::ops::Range<u64> = 12_288..13_312;
const PER_CAUSE: usize = 250;

/// Wall time that moves one second every 64 readings: writes far apart in
/// the run carry different times.
#[derive(Debug, Default)]
struct TickingClock {
    readings: AtomicU64,
}

impl Clock for TickingClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_now_s(&self) -> u64 {
        START_S + self.readings.fetch_add(1, Ordering::Relaxed) / 64
    }

    fn sleep(&self, _: Duration) {}
}

fn plan() -> BurstPlan {
    BurstPlan {
        block_count: BLOCKS,
        burst: BURST,
        scatter: Scatter::Random,
        io_blocks: (1, 1),
        overwrite: 0.0,
        coverage: 1.0,
        passes: Some(2),
        seed: SEED,
        discard: 0.0,
        zero: 0.0,
    }
}

/// The blocks of the second pass in the order it writes them (the
/// workload is a pure function of its plan).
fn second_pass_order() -> Vec<u64> {
    let mut workload = BurstWorkload::new(plan());
    let mut burst = Vec::new();
    let mut order = Vec::new();
    while workload.next_burst(&mut burst) {
        order.extend(burst.iter().map(|op| op.first_block));
    }
    assert_eq!(order.len() as u64, 2 * BLOCKS);
    order.split_off(BLOCKS as usize)
}

struct Scene {
    env: TestEnv,
    layer: Arc<FaultTarget>,
    lost: BTreeSet<u64>,
    corrupted: BTreeSet<u64>,
    session: WriteSession,
}

/// Write the scene through the fault layer; the damage stays on the image.
fn write_scene() -> Scene {
    let order = second_pass_order();
    let lost: BTreeSet<u64> = order
        .iter()
        .copied()
        .filter(|b| REGION_A.contains(b))
        .take(PER_CAUSE)
        .collect();
    let corrupted: BTreeSet<u64> = order
        .iter()
        .rev()
        .copied()
        .filter(|b| REGION_B.contains(b))
        .take(PER_CAUSE)
        .collect();
    let mut faults: Vec<Fault> = lost
        .iter()
        .map(|&block| Fault {
            block,
            kind: FaultKind::LostWrite,
        })
        .collect();
    // One bit in the payload of sector 0: the other sectors keep the
    // write's stamp intact.
    faults.extend(corrupted.iter().map(|&block| Fault {
        block,
        kind: FaultKind::BitFlip {
            bits: vec![8 * 300],
        },
    }));
    let geometry = Geometry {
        block_size: BLOCK_SIZE,
        block_count: BLOCKS,
        final_write: 2,
    };
    let plan_of_faults = FaultPlan::new(geometry, SEED, faults).expect("a valid plan");

    let env = TestEnv::new();
    let image = env.path("disk.img");
    let file = FileTarget::open(
        &image,
        &env.p("disk.img"),
        &OpenRequest {
            write: true,
            create_size: Some(BLOCKS * BLOCK_SIZE as u64),
            direct: true,
            force: false,
        },
    )
    .expect("image");
    let mut record = TargetRecord::from_info(file.info());
    record.size_bytes = BLOCKS * BLOCK_SIZE as u64;
    let mut manifest = Manifest::create(
        &env.path("m"),
        NewManifest {
            run_id: 0x1c1d_e475,
            seed: SEED,
            block_size: BLOCK_SIZE,
            random_bytes: blockstamp::stamp::PAYLOAD_BYTES as u16,
            dedup_permille: 0,
            journal_bytes: blockstamp::manifest::journal::journal_bytes_for(BLOCKS),
            target: record,
        },
    )
    .expect("manifest");
    let session = WriteSession {
        first_write_seq: 1,
        workload: "burst".into(),
        burst: BURST as u32,
        scatter: "random".into(),
        queue_depth: QUEUE_DEPTH as u32,
        io_blocks: [1, 1],
        overwrite: 0.0,
        discard: 0.0,
        write_zeroes: 0.0,
    };
    manifest.header_mut().record_session(session.clone());
    let layer = Arc::new(FaultTarget::new(Arc::new(file), plan_of_faults));
    let target: Arc<dyn Target> = layer.clone();
    let mut engine = InlineEngine::new(Arc::clone(&target), QUEUE_DEPTH);
    let options = WriteOptions {
        clock: Arc::new(TickingClock::default()),
        ..WriteOptions::default()
    };
    writer::write(
        &mut manifest,
        &mut engine,
        &mut BurstWorkload::new(plan()),
        &options,
    )
    .expect("write");
    layer.settle().expect("settle");
    Scene {
        env,
        layer,
        lost,
        corrupted,
        session,
    }
}

/// (first, last) write sequence number and (first, last) time of write
/// `write` of `blocks`, as the fault layer saw them go through.
fn truth_span(layer: &FaultTarget, blocks: &BTreeSet<u64>, write: u32) -> ((u64, u64), (u64, u64)) {
    let stamps: Vec<(u64, u32)> = blocks
        .iter()
        .map(|&b| {
            layer
                .write_stamp(b, write)
                .expect("the layer saw the write")
        })
        .collect();
    let seqs = stamps.iter().map(|s| s.0);
    let times = stamps.iter().map(|s| s.1 as u64);
    (
        (seqs.clone().min().unwrap(), seqs.max().unwrap()),
        (times.clone().min().unwrap(), times.max().unwrap()),
    )
}

#[test]
fn a_lost_burst_early_and_a_corruption_later_are_two_incidents_with_their_spans() {
    let scene = write_scene();
    let layer = &scene.layer;
    let manifest =
        Manifest::open(&scene.env.path("m"), blockstamp::manifest::Access::Read).expect("manifest");
    let expected_state = manifest.expected(None).expect("expected state");
    let target: Arc<dyn Target> = layer.clone();
    let options = VerifyOptions::default();
    let mut engine = SyncEngine::new(Arc::clone(&target), options.queue_depth);
    let outcome = verify::verify(
        Arc::clone(&target),
        &manifest.format(),
        &expected_state,
        &mut engine,
        &options,
        None,
    )
    .expect("verify");

    // Exactly the 500 findings the two causes make.
    let found: BTreeMap<u64, FindingClass> = outcome
        .findings
        .iter()
        .map(|f| (f.block, f.classified.class))
        .collect();
    let mut want: BTreeMap<u64, FindingClass> = BTreeMap::new();
    want.extend(scene.lost.iter().map(|&b| (b, FindingClass::LostWrite)));
    want.extend(scene.corrupted.iter().map(|&b| (b, FindingClass::Corrupt)));
    assert_eq!(found, want);
    assert_eq!(outcome.findings.len(), 2 * PER_CAUSE);

    let evidence: Vec<Evidence> = outcome.findings.iter().map(Evidence::of).collect();
    let grouping = incidents::group(
        &evidence,
        &GroupingContext {
            block_size: BLOCK_SIZE,
            sessions: &manifest.header().sessions,
            survivors: Some(&outcome.survivors),
        },
    );
    assert_eq!(grouping.incidents.len(), 2, "{:#?}", grouping.incidents);
    let blocks_of = |id: u32| -> BTreeSet<u64> {
        outcome
            .findings
            .iter()
            .zip(&grouping.incident_of)
            .filter(|(_, of)| **of == id)
            .map(|(f, _)| f.block)
            .collect()
    };
    // Incidents with known damaged writes come first: the corruption.
    let (corruption, lost) = (&grouping.incidents[0], &grouping.incidents[1]);
    assert_eq!(blocks_of(corruption.id), scene.corrupted);
    assert_eq!(blocks_of(lost.id), scene.lost);
    assert_eq!(
        corruption.classes,
        BTreeMap::from([("corrupt".to_string(), PER_CAUSE as u64)])
    );
    assert_eq!(
        lost.classes,
        BTreeMap::from([("lost_write".to_string(), PER_CAUSE as u64)])
    );

    // The corruption: the span of the corrupted writes, all 250 of them.
    let ((first, last), (first_time, last_time)) = truth_span(layer, &scene.corrupted, 2);
    let damaged = corruption.damaged_writes.as_ref().expect("damaged writes");
    assert_eq!(
        (damaged.first_write_seq, damaged.last_write_seq),
        (first, last)
    );
    assert_eq!(
        (damaged.first_time_s, damaged.last_time_s),
        (first_time, last_time)
    );
    assert_eq!(damaged.writes, PER_CAUSE as u64);
    assert_eq!(corruption.writes_in_span, Some(last - first + 1));
    // Every other write numbered in that span survived, but the lost ones
    // that fall in it (none: the lost burst was early).
    let lost_in_span = scene
        .lost
        .iter()
        .filter(|&&b| (first..=last).contains(&layer.write_stamp(b, 2).unwrap().0))
        .count() as u64;
    assert_eq!(lost_in_span, 0, "the scene: the lost burst is early");
    assert_eq!(
        corruption.surviving_writes,
        Some(last - first + 1 - PER_CAUSE as u64)
    );
    assert_eq!(corruption.found_writes, None);

    // The lost writes: no trace of their own; the older writes (the first
    // pass's) still in their place, and the lost ones came early in the
    // second pass, before the corruption's writes.
    assert_eq!(lost.damaged_writes, None);
    assert_eq!(lost.surviving_writes, None);
    let ((older_first, older_last), (older_first_time, older_last_time)) =
        truth_span(layer, &scene.lost, 1);
    let older = lost.found_writes.as_ref().expect("older writes in place");
    assert_eq!(
        (older.first_write_seq, older.last_write_seq),
        (older_first, older_last)
    );
    assert_eq!(
        (older.first_time_s, older.last_time_s),
        (older_first_time, older_last_time)
    );
    let ((lost_first, lost_last), _) = truth_span(layer, &scene.lost, 2);
    assert!(older_last < lost_first && lost_last < first);

    // Where: 8-12 MiB and 48-52 MiB, one 16 MiB extent each.
    assert_eq!(lost.regions[0].region_bytes, 1 << 20);
    assert!(
        lost.regions[0]
            .extents
            .iter()
            .all(|r| r[0] >= 8 && r[1] < 12)
    );
    assert_eq!(lost.regions[1].extents, vec![[0, 0]]);
    assert_eq!(corruption.regions[1].extents, vec![[3, 3]]);
    for incident in [corruption, lost] {
        assert_eq!(incident.bursts, vec![scene.session.clone()]);
        assert!(incident.linked_by.contains(&"place".to_string()));
        assert_eq!(incident.persistent, PER_CAUSE as u64);
    }
}

/// The same scene through the command line: the report's `incidents`, each
/// finding's `incident`, the summary's INCIDENTS block above the block list.
#[test]
fn the_report_and_the_summary_show_the_incidents_first() {
    let scene = write_scene();
    let env = &scene.env;
    let run = env.verify("disk.img", "m", &["--show", "3"]);
    run.assert_code(1);
    let report = run.report();
    let incidents = report["incidents"].as_array().expect("incidents");
    assert_eq!(incidents.len(), 2);
    assert_eq!(incidents[0]["classes"]["corrupt"], PER_CAUSE as u64);
    assert_eq!(incidents[1]["classes"]["lost_write"], PER_CAUSE as u64);
    assert_eq!(incidents[1]["damaged_writes"], Value::Null);
    let ((first, last), _) = truth_span(&scene.layer, &scene.corrupted, 2);
    assert_eq!(incidents[0]["damaged_writes"]["first_write_seq"], first);
    assert_eq!(incidents[0]["damaged_writes"]["last_write_seq"], last);
    assert_eq!(report["incident_grouping"]["survivors_sampled_every"], 1);
    assert_eq!(
        report["incident_grouping"]["next_write_seq"],
        2 * BLOCKS + 1
    );
    for finding in report["findings"].as_array().unwrap() {
        let block = finding["block"].as_u64().unwrap();
        let want = if scene.corrupted.contains(&block) {
            1
        } else {
            2
        };
        assert_eq!(finding["incident"], want, "block {block}");
        assert!(finding["found_write_seq"].as_u64().is_some());
    }
    // The summary (on stderr with --json -): incidents before the blocks.
    let summary = &run.stderr;
    let incidents_at = summary.find("INCIDENTS: 2").expect(summary);
    let first_block_at = summary.find("\nblock ").expect(summary);
    assert!(incidents_at < first_block_at, "{summary}");
    assert!(
        summary.contains(&format!("#1 corrupt {PER_CAUSE}")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("#2 lost_write {PER_CAUSE}")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("damaged writes {first}-{last}")),
        "{summary}"
    );
    assert!(
        summary.contains("bursts of 4 writes, random scatter, queue depth 32"),
        "{summary}"
    );
}
