//! One write → zero and discard → verify run through the fault layer, and
//! the comparison of what verify found with what the layer says it must
//! find. The writes go out on the inline engine under a clock standing
//! still, so a seed decides every byte written to the image and the
//! manifest's map and journal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::clock::{Clock, ManualClock};
use crate::engine::inline::InlineEngine;
use crate::engine::sync::SyncEngine;
use crate::error::{Error, Result};
use crate::manifest::{Manifest, NewManifest, OpKind, TargetRecord};
use crate::rng::{SplitMix64, mix64};
use crate::sim::fault::{
    Amount, ExpectedFinding, FaultPlan, FaultTarget, FaultType, Geometry, Injection,
};
use crate::stamp::PAYLOAD_BYTES;
use crate::storage::file::FileTarget;
use crate::storage::{DiscardReads, OpenRequest, Target};
use crate::verify::{self, Finding, FindingClass, VerifyOptions};
use crate::workload::{BurstPlan, BurstWorkload, Scatter, Workload, WriteOp};
use crate::writer::{self, WriteOptions};

/// Name of the checkpoint taken before the writes the manifest's checked
/// state does not know.
pub const CHECKPOINT: &str = "selftest";

/// The wall time every selftest write is stamped with (Unix seconds).
pub const WRITE_TIME_S: u64 = 1_700_000_000;

/// A run to make: the target, the workload, and the faults.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub block_size: u32,
    pub block_count: u64,
    /// Every covered block is written this many times; write faults strike
    /// the last of them.
    pub passes: u32,
    /// Fraction of the blocks the workload writes.
    pub coverage: f64,
    pub queue_depth: usize,
    /// Keys the fault plan, the workload's order and the run's identity.
    pub seed: u64,
    pub faults: Vec<(FaultType, Amount)>,
    /// Blocks written once more after a checkpoint, and verify checks the
    /// checkpoint: each must show as `newer_generation` (a snapshot revert
    /// that did not revert). With 0 there is no checkpoint.
    pub newer_generation: u64,
    /// Blocks no fault touches that are zeroed, discarded, and zeroed then
    /// discarded after the passes (the victims of the faults of zeroings
    /// and discards get theirs too): each must verify clean.
    pub zeroings: u64,
    pub discards: u64,
    pub zeroings_discarded: u64,
    /// What the manifest records a discarded block reads (the target
    /// itself, a sparse file, reads zeros).
    pub discard_reads: DiscardReads,
}

/// What a scenario did and found.
pub struct ScenarioOutcome {
    pub plan: FaultPlan,
    pub injections: Vec<Injection>,
    /// Blocks written after the checkpoint.
    pub newer_blocks: Vec<u64>,
    /// Blocks zeroed and discarded after the passes (a block zeroed then
    /// discarded counts in both).
    pub zeroed_blocks: u64,
    pub discarded_blocks: u64,
    /// What verify must report, by block.
    pub expected: Vec<ExpectedFinding>,
    /// What verify reported, by block.
    pub findings: Vec<Finding>,
    pub blocks_checked: u64,
    pub elapsed: Duration,
}

impl ScenarioOutcome {
    pub fn compare(&self) -> Comparison {
        let reported: Vec<Reported> = self.findings.iter().map(Reported::from).collect();
        compare(&self.expected, &reported)
    }
}

/// The parts of a verify finding the comparison looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reported {
    pub block: u64,
    pub class: FindingClass,
    pub found_block: Option<u64>,
    pub persistent: bool,
    pub unreadable_sectors: Vec<u32>,
    pub detail: String,
}

impl From<&Finding> for Reported {
    fn from(finding: &Finding) -> Reported {
        Reported {
            block: finding.block,
            class: finding.classified.class,
            found_block: finding.classified.found_block,
            persistent: finding.persistent,
            unreadable_sectors: finding.unreadable_sectors.clone(),
            detail: finding.classified.detail.clone(),
        }
    }
}

/// Write the scenario to a sparse image in `dir` through the fault layer,
/// verify it through the same layer, and compute the expected findings.
pub fn run_scenario(dir: &Path, scenario: &Scenario) -> Result<ScenarioOutcome> {
    let started = Instant::now();
    let block_size = scenario.block_size;
    let size_bytes = scenario.block_count * block_size as u64;
    let image = dir.join(format!("selftest-{block_size}.img"));
    let manifest_path = dir.join(format!("selftest-{block_size}.manifest"));
    let uri = image.to_string_lossy().into_owned();
    let file = FileTarget::open(
        &image,
        &uri,
        &OpenRequest {
            write: true,
            create_size: Some(size_bytes),
            direct: true,
            force: false,
        },
    )?;
    let mut record = TargetRecord::from_info(file.info());
    record.size_bytes = size_bytes;
    let mut manifest = Manifest::create(
        &manifest_path,
        NewManifest {
            run_id: mix64(scenario.seed ^ 0x5e1f_7e57),
            seed: scenario.seed,
            block_size,
            random_bytes: PAYLOAD_BYTES as u16,
            dedup_permille: 0,
            journal_bytes: crate::manifest::journal::journal_bytes_for(scenario.block_count),
            target: record,
        },
    )?;

    let geometry = Geometry {
        block_size,
        block_count: scenario.block_count,
        final_write: scenario.passes,
    };
    let plan = FaultPlan::sample(geometry, scenario.seed, &scenario.faults);
    let layer = Arc::new(FaultTarget::new(Arc::new(file), plan.clone()));
    let target: Arc<dyn Target> = layer.clone();

    let queue_depth = scenario.queue_depth.max(1);
    let mut workload = BurstWorkload::new(BurstPlan {
        block_count: scenario.block_count,
        burst: queue_depth,
        scatter: Scatter::Random,
        io_blocks: (1, 1),
        overwrite: 0.0,
        coverage: scenario.coverage,
        passes: Some(scenario.passes as u64),
        seed: scenario.seed,
        discard: 0.0,
        zero: 0.0,
    });
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(WRITE_TIME_S));
    write_through(&mut manifest, &target, queue_depth, &clock, &mut workload)?;
    layer
        .settle()
        .map_err(|e| Error::run(format!("fault layer: {e}")))?;

    // Zeroings and discards: the victims of their faults, and blocks no
    // fault touches; then discards of some zeroed blocks.
    let mut taken = plan.involved_blocks();
    let mut space_ops: Vec<WriteOp> = plan
        .faults()
        .iter()
        .filter_map(|fault| {
            let kind = fault.kind.fault_type().space_op()?;
            Some(space_op(fault.block, kind))
        })
        .collect();
    let extra = |count: u64, salt: u64, taken: &mut HashSet<u64>| {
        let blocks = pick_blocks(scenario.seed ^ salt, scenario.block_count, count, taken);
        taken.extend(&blocks);
        blocks
    };
    let zeroed = extra(scenario.zeroings, 0x2e50, &mut taken);
    let discarded = extra(scenario.discards, 0xd15c, &mut taken);
    let zeroed_discarded = extra(scenario.zeroings_discarded, 0x2ed1, &mut taken);
    space_ops.extend(zeroed.iter().map(|&b| space_op(b, OpKind::Zero)));
    space_ops.extend(discarded.iter().map(|&b| space_op(b, OpKind::Discard)));
    space_ops.extend(zeroed_discarded.iter().map(|&b| space_op(b, OpKind::Zero)));
    let then_discarded: Vec<WriteOp> = zeroed_discarded
        .iter()
        .map(|&b| space_op(b, OpKind::Discard))
        .collect();
    let count = |kind: OpKind| {
        space_ops
            .iter()
            .chain(&then_discarded)
            .filter(|op| op.kind == kind)
            .count() as u64
    };
    let (zeroed_blocks, discarded_blocks) = (count(OpKind::Zero), count(OpKind::Discard));
    if !space_ops.is_empty() {
        manifest.header_mut().discard_reads = Some(scenario.discard_reads);
        for ops in [space_ops, then_discarded] {
            let mut list = OpList {
                ops,
                position: 0,
                burst: queue_depth,
            };
            write_through(&mut manifest, &target, queue_depth, &clock, &mut list)?;
        }
    }

    // Blocks nothing else touches, written again after a checkpoint.
    let newer_blocks = if scenario.newer_generation > 0 {
        manifest.add_checkpoint(CHECKPOINT)?;
        let blocks = pick_blocks(
            scenario.seed,
            scenario.block_count,
            scenario.newer_generation,
            &taken,
        );
        let mut again = OpList {
            ops: blocks.iter().map(|&b| WriteOp::write(b, 1)).collect(),
            position: 0,
            burst: queue_depth,
        };
        write_through(&mut manifest, &target, queue_depth, &clock, &mut again)?;
        blocks
    } else {
        Vec::new()
    };

    let checkpoint = (scenario.newer_generation > 0).then_some(CHECKPOINT);
    let expected_state = manifest.expected(checkpoint)?;
    let format = manifest.format();
    let options = VerifyOptions {
        // Several chunks even on a small target, so failed chunk reads and
        // stale blocks meet the chunked read path.
        chunk_bytes: (256 * 1024).max(block_size as usize),
        ..VerifyOptions::default()
    };
    let mut engine = SyncEngine::new(Arc::clone(&target), options.queue_depth);
    let expected = layer
        .expected_findings(
            &|block| expected_state.state(block),
            expected_state.discard_reads(),
        )
        .map_err(|e| Error::run(format!("fault layer cannot predict: {e}")))?;
    let outcome = verify::verify(
        Arc::clone(&target),
        &format,
        &expected_state,
        &mut engine,
        &options,
        None,
    )?;
    Ok(ScenarioOutcome {
        injections: layer.injections(),
        plan,
        newer_blocks,
        zeroed_blocks,
        discarded_blocks,
        expected,
        findings: outcome.findings,
        blocks_checked: outcome.blocks.checked,
        elapsed: started.elapsed(),
    })
}

/// Write `workload` in this thread, in submission order (the inline
/// engine), so the fault layer sees the same writes in the same order on
/// every run of a seed.
fn write_through(
    manifest: &mut Manifest,
    target: &Arc<dyn Target>,
    queue_depth: usize,
    clock: &Arc<dyn Clock>,
    workload: &mut dyn Workload,
) -> Result<()> {
    let mut engine = InlineEngine::new(Arc::clone(target), queue_depth);
    let options = WriteOptions {
        clock: Arc::clone(clock),
        ..WriteOptions::default()
    };
    writer::write(manifest, &mut engine, workload, &options)?;
    Ok(())
}

/// `count` distinct blocks outside `taken`, drawn from `seed`.
fn pick_blocks(seed: u64, block_count: u64, count: u64, taken: &HashSet<u64>) -> Vec<u64> {
    let mut rng = SplitMix64::new(seed ^ 0x6e_6577_6572);
    let free: Vec<u64> = (0..block_count).filter(|b| !taken.contains(b)).collect();
    let mut chosen: Vec<u64> = Vec::new();
    let mut pool = free;
    while (chosen.len() as u64) < count && !pool.is_empty() {
        let index = rng.below(pool.len() as u64) as usize;
        chosen.push(pool.swap_remove(index));
    }
    chosen.sort_unstable();
    chosen
}

/// A zeroing or discard of one block.
fn space_op(block: u64, kind: OpKind) -> WriteOp {
    WriteOp {
        kind,
        ..WriteOp::write(block, 1)
    }
}

/// A workload that issues the listed operations (on distinct blocks), in
/// order.
struct OpList {
    ops: Vec<WriteOp>,
    position: usize,
    burst: usize,
}

impl Workload for OpList {
    fn next_burst(&mut self, burst: &mut Vec<WriteOp>) -> bool {
        burst.clear();
        while burst.len() < self.burst && self.position < self.ops.len() {
            burst.push(self.ops[self.position]);
            self.position += 1;
        }
        !burst.is_empty()
    }
}

/// One line of the selftest table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClassRow {
    pub class: String,
    /// Findings the injected faults must cause.
    pub injected: u64,
    /// Of those, blocks verify reported at all.
    pub detected: u64,
    /// Of those, reported with the right class, `found_block`,
    /// `persistent` and failing sectors.
    pub classified_correctly: u64,
    /// Findings of this class verify reported that no fault explains.
    pub false_positives: u64,
}

/// The findings one fault type must cause, and how many verify reported
/// exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FaultRow {
    pub fault: String,
    /// Findings the faults of this type must cause (a lost discard on a
    /// target whose discards may keep the data causes none).
    pub findings: u64,
    /// Of those, reported with the right class, `found_block`,
    /// `persistent` and failing sectors.
    pub caught_exactly: u64,
}

/// Expected findings against reported ones.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub rows: Vec<ClassRow>,
    /// By fault type, in [`FaultType::ALL`] order.
    pub faults: Vec<FaultRow>,
    /// One line per disagreement.
    pub mismatches: Vec<String>,
}

impl Comparison {
    /// Every expected finding reported exactly, and nothing else.
    pub fn exact(&self) -> bool {
        self.mismatches.is_empty()
    }

    pub fn total(&self) -> ClassRow {
        let mut total = ClassRow {
            class: "all".to_string(),
            ..ClassRow::default()
        };
        for row in &self.rows {
            total.injected += row.injected;
            total.detected += row.detected;
            total.classified_correctly += row.classified_correctly;
            total.false_positives += row.false_positives;
        }
        total
    }
}

/// Match expected findings with reported ones, block by block.
pub fn compare(expected: &[ExpectedFinding], found: &[Reported]) -> Comparison {
    let mut rows: BTreeMap<FindingClass, ClassRow> = FindingClass::ALL
        .iter()
        .map(|&class| {
            (
                class,
                ClassRow {
                    class: class.name().to_string(),
                    ..ClassRow::default()
                },
            )
        })
        .collect();
    let mut faults: BTreeMap<FaultType, FaultRow> = FaultType::ALL
        .iter()
        .map(|&fault| {
            (
                fault,
                FaultRow {
                    fault: fault.name().to_string(),
                    ..FaultRow::default()
                },
            )
        })
        .collect();
    let reported: HashMap<u64, &Reported> = found.iter().map(|f| (f.block, f)).collect();
    let wanted: HashMap<u64, &ExpectedFinding> = expected.iter().map(|e| (e.block, e)).collect();
    let mut mismatches = Vec::new();
    for want in expected {
        let row = rows.get_mut(&want.class).expect("every class has a row");
        row.injected += 1;
        let mut fault_row = want
            .fault
            .map(|f| faults.get_mut(&f).expect("every fault has a row"));
        if let Some(fault_row) = fault_row.as_mut() {
            fault_row.findings += 1;
        }
        let Some(got) = reported.get(&want.block) else {
            mismatches.push(format!(
                "block {}: expected {} ({}), verify reported nothing",
                want.block,
                want.class.name(),
                want.cause
            ));
            continue;
        };
        row.detected += 1;
        let same = got.class == want.class
            && got.found_block == want.found_block
            && got.persistent == want.persistent
            && got.unreadable_sectors == want.unreadable_sectors;
        if same {
            row.classified_correctly += 1;
            if let Some(fault_row) = fault_row {
                fault_row.caught_exactly += 1;
            }
        } else {
            mismatches.push(format!(
                "block {}: expected {} (found_block {:?}, persistent {}; {}), verify reported {} (found_block {:?}, persistent {}): {}",
                want.block,
                want.class.name(),
                want.found_block,
                want.persistent,
                want.cause,
                got.class.name(),
                got.found_block,
                got.persistent,
                got.detail
            ));
        }
    }
    for got in found {
        let explained = wanted
            .get(&got.block)
            .is_some_and(|want| want.class == got.class);
        if !explained {
            let row = rows.get_mut(&got.class).expect("every class has a row");
            row.false_positives += 1;
            if !wanted.contains_key(&got.block) {
                mismatches.push(format!(
                    "block {}: no fault there, verify reported {}: {}",
                    got.block,
                    got.class.name(),
                    got.detail
                ));
            }
        }
    }
    Comparison {
        rows: rows.into_values().collect(),
        faults: faults.into_values().collect(),
        mismatches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(block: u64, class: FindingClass) -> ExpectedFinding {
        ExpectedFinding {
            block,
            class,
            found_block: None,
            persistent: true,
            unreadable_sectors: Vec::new(),
            cause: "test".into(),
            fault: None,
        }
    }

    fn got(block: u64, class: FindingClass) -> Reported {
        Reported {
            block,
            class,
            found_block: None,
            persistent: true,
            unreadable_sectors: Vec::new(),
            detail: "test".into(),
        }
    }

    fn row(comparison: &Comparison, class: FindingClass) -> (u64, u64, u64, u64) {
        let row = comparison
            .rows
            .iter()
            .find(|r| r.class == class.name())
            .unwrap();
        (
            row.injected,
            row.detected,
            row.classified_correctly,
            row.false_positives,
        )
    }

    #[test]
    fn an_exact_match_passes() {
        let expected = [want(1, FindingClass::Torn), want(5, FindingClass::Zeroed)];
        let found = [got(1, FindingClass::Torn), got(5, FindingClass::Zeroed)];
        let comparison = compare(&expected, &found);
        assert!(comparison.exact());
        assert_eq!(row(&comparison, FindingClass::Torn), (1, 1, 1, 0));
        assert_eq!(comparison.total().classified_correctly, 2);
    }

    #[test]
    fn misses_misclassifications_and_extras_are_all_counted() {
        let mut transient = want(7, FindingClass::LostWrite);
        transient.persistent = false;
        let expected = [
            want(1, FindingClass::Torn),
            want(2, FindingClass::Corrupt),
            transient,
        ];
        let found = [
            got(2, FindingClass::Foreign),   // misclassified
            got(7, FindingClass::LostWrite), // persistent wrongly
            got(9, FindingClass::Zeroed),    // no fault there
        ];
        let comparison = compare(&expected, &found);
        assert!(!comparison.exact());
        assert_eq!(row(&comparison, FindingClass::Torn), (1, 0, 0, 0));
        assert_eq!(row(&comparison, FindingClass::Corrupt), (1, 1, 0, 0));
        assert_eq!(row(&comparison, FindingClass::Foreign), (0, 0, 0, 1));
        assert_eq!(row(&comparison, FindingClass::LostWrite), (1, 1, 0, 0));
        assert_eq!(row(&comparison, FindingClass::Zeroed), (0, 0, 0, 1));
        assert_eq!(
            comparison.mismatches.len(),
            4,
            "{:#?}",
            comparison.mismatches
        );
    }

    /// The faults of zeroings and discards on the sparse image (whose
    /// discards read zeros), verified under each promise a manifest can
    /// record: reported exactly, with the classes the promise decides.
    #[test]
    fn faults_of_zeroings_and_discards_are_reported_exactly_under_every_promise() {
        for promise in [
            DiscardReads::Zeroes,
            DiscardReads::Previous,
            DiscardReads::Any,
        ] {
            let scenario = Scenario {
                block_size: 4096,
                block_count: 128,
                passes: 2,
                coverage: 1.0,
                queue_depth: 8,
                seed: 77,
                faults: FaultType::SPACE
                    .iter()
                    .map(|&t| (t, Amount::Count(2)))
                    .collect(),
                newer_generation: 0,
                zeroings: 3,
                discards: 3,
                zeroings_discarded: 3,
                discard_reads: promise,
            };
            let dir = tempfile::tempdir().unwrap();
            let outcome = run_scenario(dir.path(), &scenario).unwrap();
            let comparison = outcome.compare();
            assert!(
                comparison.exact(),
                "{promise:?}: {:#?}",
                comparison.mismatches
            );
            assert_eq!(outcome.injections.len(), 14, "{promise:?}");
            let class = |class: FindingClass| row(&comparison, class).0;
            let fault = |fault: FaultType| {
                comparison
                    .faults
                    .iter()
                    .find(|r| r.fault == fault.name())
                    .unwrap()
                    .findings
            };
            let zeroes = promise == DiscardReads::Zeroes;
            // Lost and misdirected zeroings miss their blocks; so do lost and
            // misdirected discards where discards must read zeros.
            assert_eq!(class(FindingClass::LostZeroing), if zeroes { 8 } else { 4 });
            assert_eq!(fault(FaultType::LostDiscard), if zeroes { 2 } else { 0 });
            // Misdirected zeroings and discards zero their landing blocks;
            // where discards keep the data, the discards that did happen
            // are findings too.
            let previous = promise == DiscardReads::Previous;
            assert_eq!(class(FindingClass::Zeroed), if previous { 7 } else { 4 });
            assert_eq!(class(FindingClass::Torn), 2);
            assert_eq!(class(FindingClass::Misdirected), 2);
            assert_eq!(class(FindingClass::Foreign), 2);
            assert_eq!(outcome.zeroed_blocks, 2 * 3 + 3 + 3);
            assert_eq!(outcome.discarded_blocks, 4 * 2 + 3 + 3);
        }
    }
}
