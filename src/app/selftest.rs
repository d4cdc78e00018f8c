//! `blockstamp selftest`: proof on this machine that the verifier catches
//! and classifies every kind of damage the contract names.
//!
//! Each run writes a scratch sparse image through the fault layer
//! ([`crate::sim::fault`]), which injects lost, misdirected, torn,
//! bit-flipped, zeroed and foreign writes, stale reads and unreadable
//! sectors, zeroings and discards that are lost, misdirected or torn or
//! that expose other data, and blocks written after a checkpoint that
//! verify checks against; then verifies through the same layer and
//! compares, block by block, what verify reported with what the layer says
//! must be reported. The table shows it by class, then by fault.
//! Exit 0 only when every injected fault was caught and classified exactly
//! and nothing else was reported.

use crate::sim::scenario::{ClassRow, Comparison, Scenario, run_scenario};
use crate::storage::DiscardReads;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::SelftestArgs;
use crate::config::{DEFAULT_BLOCK_SIZE, parse_block_size};
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::report::junit;
use crate::sim::fault::{Amount, FaultType};
use crate::units::format_size;
use crate::verify::FindingClass;

/// Validated selftest settings.
#[derive(Clone, Debug)]
pub struct SelftestConfig {
    pub block_sizes: Vec<u32>,
    pub seed: Option<u64>,
    pub dir: Option<PathBuf>,
    pub json: bool,
    pub junit: Option<PathBuf>,
}

impl SelftestConfig {
    pub fn from_args(args: &SelftestArgs) -> Result<SelftestConfig> {
        let mut block_sizes = Vec::new();
        for text in &args.block_size {
            let size = parse_block_size(text)?;
            if !block_sizes.contains(&size) {
                block_sizes.push(size);
            }
        }
        if block_sizes.is_empty() {
            block_sizes.push(DEFAULT_BLOCK_SIZE);
        }
        if let Some(dir) = &args.dir
            && !dir.is_dir()
        {
            return Err(Error::usage(format!(
                "bad --dir {}: not an existing directory; give one for the scratch image",
                dir.display()
            )));
        }
        if let Some(path) = &args.junit {
            crate::outfile::check_path("--junit", path)?;
        }
        Ok(SelftestConfig {
            block_sizes,
            seed: args.seed,
            dir: args.dir.clone(),
            json: args.json,
            junit: args.junit.clone(),
        })
    }
}

/// Faults of every type, three of each write fault (two stale reads, each
/// stale for one or two reads), two of each fault of zeroings and
/// discards; two blocks zeroed, two discarded and two zeroed then
/// discarded that must verify clean; three blocks written after the
/// checkpoint. Discards read zeros, as they do on the sparse image.
pub fn standard_scenario(block_size: u32, seed: u64) -> Scenario {
    let mut faults: Vec<(FaultType, Amount)> = FaultType::ALL
        .iter()
        .map(|&fault_type| (fault_type, Amount::Count(3)))
        .collect();
    for (fault_type, amount) in &mut faults {
        if *fault_type == FaultType::StaleRead || fault_type.space_op().is_some() {
            *amount = Amount::Count(2);
        }
    }
    Scenario {
        block_size,
        // 16 MiB at most, yet enough blocks for every fault at 1 MiB blocks.
        block_count: ((16u64 << 20) / block_size as u64).clamp(64, 1024),
        passes: 2,
        coverage: 1.0,
        queue_depth: 16,
        seed,
        faults,
        newer_generation: 3,
        zeroings: 2,
        discards: 2,
        zeroings_discarded: 2,
        discard_reads: DiscardReads::Zeroes,
    }
}

/// The classes a run at this block size must show (no `torn` at 512 B: a
/// one-sector block cannot tear, see docs/FORMAT.md).
pub fn classes_at(block_size: u32) -> Vec<FindingClass> {
    FindingClass::ALL
        .into_iter()
        .filter(|&c| c != FindingClass::Torn || FaultType::Torn.possible_at(block_size))
        .collect()
}

/// One fault type's line of the table: faults that struck, the findings
/// they must cause, and those verify reported exactly.
#[derive(Serialize)]
struct FaultLine {
    fault: &'static str,
    injected: u64,
    findings: u64,
    caught_exactly: u64,
}

#[derive(Serialize)]
struct RunReport {
    block_size: u32,
    block_count: u64,
    passes: u32,
    seed: u64,
    injected_faults: BTreeMap<&'static str, u64>,
    writes_after_checkpoint: u64,
    /// Blocks zeroed and discarded after the passes, victims included.
    zeroed_blocks: u64,
    discarded_blocks: u64,
    classes: Vec<ClassRow>,
    faults: Vec<FaultLine>,
    mismatches: Vec<String>,
    passed: bool,
    elapsed_s: f64,
}

#[derive(Serialize)]
struct SelftestReport {
    schema: &'static str,
    tool_version: &'static str,
    seed: u64,
    runs: Vec<RunReport>,
    passed: bool,
}

/// The `selftest` command.
pub fn run(args: &SelftestArgs) -> Result<ExitCode> {
    let config = SelftestConfig::from_args(args)?;
    let seed = config.seed.unwrap_or_else(crate::rng::random_u64);
    let base = config.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = ScratchDir::new(&base)?;
    let mut runs = Vec::new();
    let mut suites = Vec::new();
    for &block_size in &config.block_sizes {
        let started_unix_s = crate::manifest::unix_now_s();
        let scenario = standard_scenario(block_size, seed);
        let outcome = run_scenario(scratch.path(), &scenario)?;
        let comparison = outcome.compare();
        let every_class_shown = classes_at(block_size).iter().all(|class| {
            comparison
                .rows
                .iter()
                .any(|row| row.class == class.name() && row.injected > 0)
        });
        let mut mismatches = comparison.mismatches.clone();
        if !every_class_shown {
            mismatches.push("not every finding class was injected (target too small?)".into());
        }
        // Write faults and stale reads as they struck; unreadable sectors
        // are there from the start.
        let mut injected_faults = BTreeMap::new();
        for injection in &outcome.injections {
            *injected_faults
                .entry(injection.fault_type.name())
                .or_insert(0u64) += 1;
        }
        let unreadable = outcome.plan.count(FaultType::Unreadable) as u64;
        if unreadable > 0 {
            injected_faults.insert(FaultType::Unreadable.name(), unreadable);
        }
        let faults: Vec<FaultLine> = FaultType::ALL
            .iter()
            .filter(|fault| fault.possible_at(block_size))
            .map(|&fault| {
                let row = comparison
                    .faults
                    .iter()
                    .find(|row| row.fault == fault.name())
                    .cloned()
                    .unwrap_or_default();
                FaultLine {
                    fault: fault.name(),
                    injected: injected_faults.get(fault.name()).copied().unwrap_or(0),
                    findings: row.findings,
                    caught_exactly: row.caught_exactly,
                }
            })
            .collect();
        if let Some(missing) = faults.iter().find(|line| line.injected == 0) {
            mismatches.push(format!(
                "no {} fault struck (target too small?)",
                missing.fault
            ));
        }
        let report = RunReport {
            block_size,
            block_count: scenario.block_count,
            passes: scenario.passes,
            seed,
            injected_faults,
            writes_after_checkpoint: outcome.newer_blocks.len() as u64,
            zeroed_blocks: outcome.zeroed_blocks,
            discarded_blocks: outcome.discarded_blocks,
            classes: comparison.rows.clone(),
            faults,
            passed: mismatches.is_empty(),
            mismatches,
            elapsed_s: outcome.elapsed.as_secs_f64(),
        };
        if !config.json {
            emit(&render(&report))?;
        }
        suites.push(junit_suite(&report, started_unix_s));
        runs.push(report);
    }
    if let Some(path) = &config.junit {
        junit::TestSuites { suites }.write(path)?;
    }
    let passed = runs.iter().all(|r| r.passed);
    if config.json {
        let report = SelftestReport {
            schema: "blockstamp.selftest/1",
            tool_version: env!("CARGO_PKG_VERSION"),
            seed,
            runs,
            passed,
        };
        let json = serde_json::to_string_pretty(&report).expect("selftest report serialises");
        emit(&format!("{json}\n"))?;
    } else if passed {
        emit(&format!("selftest passed (seed {seed})\n"))?;
    } else {
        emit(&format!(
            "selftest FAILED; reproduce with: blockstamp selftest --seed {seed}\n"
        ))?;
    }
    Ok(if passed {
        ExitCode::Clean
    } else {
        ExitCode::Findings
    })
}

fn render(run: &RunReport) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "selftest: {} blocks, {} of them ({}), {} passes, seed {}",
        format_size(run.block_size as u64),
        run.block_count,
        format_size(run.block_count * run.block_size as u64),
        run.passes,
        run.seed
    );
    let injected: Vec<String> = run
        .injected_faults
        .iter()
        .map(|(name, count)| format!("{count} {name}"))
        .chain([
            format!("{} written after checkpoint", run.writes_after_checkpoint),
            format!(
                "{} blocks zeroed and {} discarded",
                run.zeroed_blocks, run.discarded_blocks
            ),
        ])
        .collect();
    let _ = writeln!(text, "faults injected: {}", injected.join(", "));
    let _ = writeln!(
        text,
        "{:<18} {:>8} {:>8} {:>20} {:>15}",
        "class", "injected", "detected", "classified correctly", "false positives"
    );
    let total = Comparison {
        rows: run.classes.clone(),
        faults: Vec::new(),
        mismatches: Vec::new(),
    }
    .total();
    for row in run.classes.iter().chain(std::iter::once(&total)) {
        let _ = writeln!(
            text,
            "{:<18} {:>8} {:>8} {:>20} {:>15}",
            row.class, row.injected, row.detected, row.classified_correctly, row.false_positives
        );
    }
    let _ = writeln!(
        text,
        "{:<22} {:>8} {:>8} {:>14}",
        "fault", "injected", "findings", "caught exactly"
    );
    for line in &run.faults {
        let _ = writeln!(
            text,
            "{:<22} {:>8} {:>8} {:>14}",
            line.fault, line.injected, line.findings, line.caught_exactly
        );
    }
    for mismatch in &run.mismatches {
        let _ = writeln!(text, "MISMATCH {mismatch}");
    }
    let _ = writeln!(
        text,
        "{} ({:.2} s)\n",
        if run.passed {
            "ok: every fault caught and classified correctly, no false positives"
        } else {
            "FAILED"
        },
        run.elapsed_s
    );
    text
}

/// One block size's run as a JUnit test suite: a test case per row of its
/// table (each class, then `all`, which carries every mismatch).
fn junit_suite(run: &RunReport, started_unix_s: u64) -> junit::TestSuite {
    let classname = junit::classname(&["selftest", &format!("block_size_{}", run.block_size)]);
    let possible = classes_at(run.block_size);
    let mut cases: Vec<junit::TestCase> = run
        .classes
        .iter()
        .map(|row| junit::TestCase {
            name: row.class.clone(),
            classname: classname.clone(),
            time_s: 0.0,
            outcome: row_outcome(row, run, &possible),
        })
        .collect();
    let all = junit::TestCase {
        name: "all".to_string(),
        classname,
        time_s: run.elapsed_s,
        outcome: if run.passed {
            junit::Outcome::Passed
        } else {
            junit::Outcome::Failed(junit::Failure {
                kind: "selftest".to_string(),
                message: format!(
                    "{} mismatch(es); reproduce with: blockstamp selftest --seed {} --block-size {}",
                    run.mismatches.len(),
                    run.seed,
                    run.block_size
                ),
                detail: run.mismatches.iter().map(|m| format!("{m}\n")).collect(),
            })
        },
    };
    cases.push(all);
    junit::TestSuite {
        name: format!("selftest {} blocks", format_size(run.block_size as u64)),
        hostname: crate::report::hostname(),
        started_unix_s: Some(started_unix_s),
        time_s: run.elapsed_s,
        properties: vec![
            ("seed".to_string(), run.seed.to_string()),
            ("block_size".to_string(), run.block_size.to_string()),
            ("block_count".to_string(), run.block_count.to_string()),
            (
                "tool_version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ],
        cases,
        system_out: None,
    }
}

/// A row passes when every injected fault of its class was detected and
/// classified correctly and no other block was reported as that class; a
/// class that cannot occur at this block size is skipped.
fn row_outcome(row: &ClassRow, run: &RunReport, possible: &[FindingClass]) -> junit::Outcome {
    let exact = row.detected == row.injected
        && row.classified_correctly == row.injected
        && row.false_positives == 0;
    if row.injected == 0 && !possible.iter().any(|c| c.name() == row.class) {
        return junit::Outcome::Skipped(format!(
            "{} cannot occur at {} blocks",
            row.class,
            format_size(run.block_size as u64)
        ));
    }
    if row.injected > 0 && exact {
        return junit::Outcome::Passed;
    }
    let message = if row.injected == 0 {
        format!("no {} fault was injected (target too small?)", row.class)
    } else {
        format!(
            "{} injected, {} detected, {} classified correctly, {} false positive(s)",
            row.injected, row.detected, row.classified_correctly, row.false_positives
        )
    };
    // The mismatches that name this class, as expected or as reported.
    let named = [
        format!("expected {} (", row.class),
        format!("reported {} (", row.class),
        format!("reported {}:", row.class),
    ];
    let detail = run
        .mismatches
        .iter()
        .filter(|m| named.iter().any(|n| m.contains(n.as_str())))
        .map(|m| format!("{m}\n"))
        .collect();
    junit::Outcome::Failed(junit::Failure {
        kind: row.class.clone(),
        message,
        detail,
    })
}

/// Print to stdout. A reader that went away (`selftest | head`) is not an
/// error: the verdict is still the exit status.
fn emit(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::run(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// A scratch directory of its own, removed when dropped.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn new(base: &Path) -> Result<ScratchDir> {
        let name = format!(
            "blockstamp-selftest-{}-{:08x}",
            std::process::id(),
            crate::rng::random_u64() as u32
        );
        let path = base.join(name);
        std::fs::create_dir(&path).map_err(|e| {
            Error::run(format!(
                "cannot create a scratch directory in {}: {e}",
                base.display()
            ))
        })?;
        Ok(ScratchDir { path })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Access, MAP_OFFSET, Manifest, ManifestHeader};
    use crate::sim::scenario::{Reported, WRITE_TIME_S};
    use crate::stamp::{SECTOR_BYTES, SectorContent, decode_sector};

    /// The header with what differs between two directories (the image's
    /// path) and what the manifest takes from the machine's clock (creation
    /// times) set aside.
    fn comparable(mut header: ManifestHeader) -> ManifestHeader {
        header.target.uri.clear();
        header.created_unix_s = 0;
        for checkpoint in &mut header.checkpoints {
            checkpoint.created_unix_s = 0;
        }
        header
    }

    #[test]
    fn a_seed_decides_every_byte_the_selftest_writes() {
        let block_size = 4096;
        let scenario = standard_scenario(block_size, 0x5eed_5e1f);
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let mut findings = Vec::new();
        for dir in &dirs {
            let outcome = run_scenario(dir.path(), &scenario).unwrap();
            assert!(outcome.compare().exact(), "{:#?}", outcome.compare());
            let mut reported: Vec<Reported> = outcome.findings.iter().map(Reported::from).collect();
            reported.sort_by_key(|r| r.block);
            findings.push(reported);
        }
        assert_eq!(findings[0], findings[1]);

        let image = format!("selftest-{block_size}.img");
        let manifest = format!("selftest-{block_size}.manifest");
        let read = |i: usize, name: &str| std::fs::read(dirs[i].path().join(name)).unwrap();
        let images = [read(0, &image), read(1, &image)];
        assert!(images[0] == images[1], "the images differ");
        let manifests = [read(0, &manifest), read(1, &manifest)];
        let map_offset = MAP_OFFSET as usize;
        assert!(
            manifests[0][map_offset..] == manifests[1][map_offset..],
            "the generation maps, journals or undo logs differ"
        );
        let headers = dirs.each_ref().map(|dir| {
            let manifest = Manifest::open(&dir.path().join(&manifest), Access::Read).unwrap();
            comparable(manifest.header().clone())
        });
        assert_eq!(headers[0], headers[1]);

        // Every stamp of the run carries the fixed clock's time, none the
        // machine's.
        let stamped_times: std::collections::BTreeSet<u32> = images[0]
            .chunks_exact(SECTOR_BYTES)
            .filter_map(|sector| match decode_sector(sector) {
                SectorContent::Stamp(stamp) if stamp.run_id == headers[0].run_id => {
                    Some(stamp.write_time_s)
                }
                _ => None,
            })
            .collect();
        assert_eq!(stamped_times, [WRITE_TIME_S as u32].into());
    }
}
