//! `blockstamp inspect`: one block's story, for the engineer on call. What
//! the manifest expects of it now, at each checkpoint (the undo log) and
//! after a crash (the journal's pending writes); what each of its sectors
//! holds on the target (whose stamp, which generation, which write, when,
//! and where that write falls among the checkpoints and workload sessions);
//! the verdict; and the incident it belongs to, from a verify of the 16 MiB
//! extent around it. Printed for people, or with `--json` as
//! `blockstamp.inspect/1` (docs/CONTRACT.md).

use std::sync::Arc;

use serde::Serialize;

use super::phases::{open_for_reading, refuse_manifest_on_target};
use crate::buf::AlignedBuf;
use crate::cli::InspectArgs;
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::manifest::journal::generation_before_pending;
use crate::manifest::{Access, Expected, Manifest, ManifestState, WriteSession};
use crate::report::FindingRecord;
use crate::report::incidents as words;
use crate::stamp::{self, RunFormat, SECTOR_BYTES, SectorContent};
use crate::storage::Target;
use crate::units::{format_size, format_unix_time};
use crate::verify::incidents::{self, Evidence, GroupingContext, Incident, REGION_BYTES};
use crate::verify::{self, Finding, FindingClass, Survivors};

/// The extent verified around the block to find its incident: the middle
/// of the region sizes incidents are described at.
pub const NEIGHBOURHOOD_BYTES: u64 = 16 << 20;

pub const SCHEMA: &str = "blockstamp.inspect/1";

/// Everything `inspect` tells about a block.
#[derive(Debug, Serialize)]
struct Story {
    schema: &'static str,
    run_id: String,
    block: u64,
    offset: u64,
    block_size: u32,
    /// The extent index of the block at each region size.
    regions: Vec<RegionOf>,
    /// `clean`, or `writing` when the writer did not finish.
    manifest_state: &'static str,
    /// The checkpoint the block is checked against (`--at`), or null.
    checked_against: Option<String>,
    /// The generation the verdict expects (now, or at `checked_against`).
    expected_generation: u32,
    /// What the block's latest operation was, as of the check: `data`,
    /// `zeroed`, `discarded` or `discarded_after_zeroing`.
    expected_kind: &'static str,
    /// The generation the manifest expects now.
    expected_now: u32,
    /// The kind of the block's latest operation now.
    kind_now: &'static str,
    checkpoints: Vec<CheckpointGeneration>,
    /// Writes of the block pending when the writer stopped (null if none).
    pending: Option<Pending>,
    /// What the target holds, in runs of sectors alike.
    sectors: Vec<SectorRun>,
    /// Why the block could not be read, when it could not.
    read_error: Option<String>,
    verdict: Verdict,
    /// The block's finding, as the JSON report has it.
    finding: Option<FindingRecord>,
    neighbourhood: Option<Neighbourhood>,
    /// The incident of the neighbourhood the block belongs to.
    incident: Option<Incident>,
}

#[derive(Debug, Serialize)]
struct RegionOf {
    region_bytes: u64,
    extent: u64,
}

#[derive(Debug, Serialize)]
struct CheckpointGeneration {
    name: String,
    created_unix_s: u64,
    /// Writes numbered below this are in the checkpoint.
    write_seq: u64,
    generation: u32,
}

#[derive(Debug, Serialize)]
struct Pending {
    /// What the block held before its oldest pending write (0: nothing of
    /// this run).
    before: u32,
    newest: u32,
    /// Each unit of this many bytes may hold any of them, never a mix.
    atomic_unit_bytes: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct SectorRun {
    first_sector: u32,
    last_sector: u32,
    /// `stamp`, `zero`, or `other` (a damaged stamp or foreign data).
    content: &'static str,
    /// For stamps: the stamp's fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    stamp: Option<SectorStamp>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct SectorStamp {
    run_id: String,
    this_run: bool,
    block: u64,
    generation: u32,
    write_seq: u64,
    write_time_s: u64,
    /// Every sector of the run carries its own index in its block.
    in_place: bool,
}

#[derive(Debug, Serialize)]
struct Verdict {
    /// The finding class, or null when the block is as expected.
    class: Option<String>,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Neighbourhood {
    first_block: u64,
    last_block: u64,
    checked: u64,
    /// Blocks whose read failed (not judged here).
    unread: u64,
    findings: u64,
    incidents: Vec<Incident>,
}

pub(super) fn inspect_command(args: &InspectArgs) -> Result<ExitCode> {
    let manifest = Manifest::open(&args.target.manifest, Access::Read)?;
    let expected = manifest.expected(args.at.as_deref())?;
    if args.block >= manifest.block_count() {
        return Err(Error::usage(format!(
            "bad --block {}: the target has {} blocks (0 to {})",
            args.block,
            manifest.block_count(),
            manifest.block_count().saturating_sub(1)
        )));
    }
    refuse_manifest_on_target(&args.target)?;
    let target = open_for_reading(&args.target.target, &manifest, &Default::default())?;
    let story = tell(&manifest, &expected, target, args.block)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&story).expect("story serialises")
        );
    } else {
        print!("{}", render(&story, &manifest.header().sessions));
    }
    Ok(
        if story.verdict.class.is_none() && story.read_error.is_none() {
            ExitCode::Clean
        } else {
            ExitCode::Findings
        },
    )
}

fn tell(
    manifest: &Manifest,
    expected: &Expected<'_>,
    target: Arc<dyn Target>,
    block: u64,
) -> Result<Story> {
    let format = manifest.format();
    let header = manifest.header();
    let offset = block * format.block_size as u64;
    let state_now = if expected.checkpoint().is_some() {
        manifest.expected(None)?.state(block)
    } else {
        expected.state(block)
    };
    let expected_now = state_now.generation;
    let checkpoints = header
        .checkpoints
        .iter()
        .map(|checkpoint| {
            Ok(CheckpointGeneration {
                name: checkpoint.name.clone(),
                created_unix_s: checkpoint.created_unix_s,
                write_seq: checkpoint.write_seq,
                generation: manifest.expected(Some(&checkpoint.name))?.generation(block),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let pending = if header.state == ManifestState::Writing && expected.checkpoint().is_none() {
        manifest
            .pending_writes()?
            .get(&block)
            .map(|&pending| Pending {
                before: generation_before_pending(pending.oldest, manifest.generation(block)),
                newest: pending.newest,
                atomic_unit_bytes: expected.atomic_unit(),
            })
    } else {
        None
    };
    let mut story = Story {
        schema: SCHEMA,
        run_id: format!("{:016x}", header.run_id),
        block,
        offset,
        block_size: format.block_size,
        regions: REGION_BYTES
            .iter()
            .map(|&region_bytes| RegionOf {
                region_bytes,
                extent: offset / region_bytes,
            })
            .collect(),
        manifest_state: match header.state {
            ManifestState::Clean => "clean",
            ManifestState::Writing => "writing",
        },
        checked_against: expected.checkpoint().map(str::to_string),
        expected_generation: expected.generation(block),
        expected_kind: kind_name(expected.state(block).kind),
        expected_now,
        kind_now: kind_name(state_now.kind),
        checkpoints,
        pending,
        sectors: Vec::new(),
        read_error: None,
        verdict: Verdict {
            class: None,
            detail: String::new(),
        },
        finding: None,
        neighbourhood: None,
        incident: None,
    };
    let target_bytes = target.info().size_bytes;
    if offset + format.block_size as u64 > target_bytes {
        // A truncated copy of the target (open_for_reading let it through).
        story.read_error = Some(format!(
            "beyond the end of the target (target has {target_bytes} bytes, the manifest {})",
            header.target.size_bytes
        ));
        story.verdict = Verdict {
            class: Some(FindingClass::Unreadable.name().to_string()),
            detail: story.read_error.clone().unwrap_or_default(),
        };
        return Ok(story);
    }
    let mut buf = AlignedBuf::new(format.block_size as usize);
    if let Err(e) = target.read_at(&mut buf, offset) {
        story.read_error = Some(e.to_string());
        story.verdict = Verdict {
            class: Some(FindingClass::Unreadable.name().to_string()),
            detail: format!("the read failed: {e}"),
        };
    } else {
        story.sectors = sector_runs(&format, &buf);
        match verify::check_block(&format, expected, block, &buf) {
            None => {
                story.verdict.detail = if story.expected_kind != "data" {
                    format!(
                        "ok: the block reads as its latest operation ({}) allows",
                        story.expected_kind
                    )
                } else if stamp::holds(&format, block, story.expected_generation, &buf)
                    || story.expected_generation == 0
                {
                    "ok: the block holds exactly what was expected".to_string()
                } else {
                    "ok: what it holds is one of the outcomes its pending writes allow".to_string()
                };
            }
            Some(mut finding) => {
                finding.confirm(target.as_ref(), &format);
                story.verdict = Verdict {
                    class: Some(finding.classified.class.name().to_string()),
                    detail: finding.classified.detail.clone(),
                };
                story.finding = Some(FindingRecord::from_finding(&finding));
            }
        }
    }
    let (neighbourhood, incident) = neighbourhood(manifest, expected, target.as_ref(), block)?;
    if let (Some(incident), Some(finding)) = (&incident, &mut story.finding) {
        finding.incident = Some(incident.id);
    }
    story.neighbourhood = Some(neighbourhood);
    story.incident = incident;
    Ok(story)
}

/// The JSON name of a block kind.
fn kind_name(kind: crate::manifest::BlockKind) -> &'static str {
    use crate::manifest::BlockKind;
    match kind {
        BlockKind::Data => "data",
        BlockKind::Zeroed => "zeroed",
        BlockKind::Discarded => "discarded",
        BlockKind::DiscardedZeros => "discarded_after_zeroing",
    }
}

/// The sectors of a block in runs of sectors that hold the same thing.
fn sector_runs(format: &RunFormat, bytes: &[u8]) -> Vec<SectorRun> {
    let mut runs: Vec<SectorRun> = Vec::new();
    for (index, sector) in bytes.chunks_exact(SECTOR_BYTES).enumerate() {
        let (content, stamp) = match stamp::decode_sector(sector) {
            SectorContent::Zero => ("zero", None),
            SectorContent::Other => ("other", None),
            SectorContent::Stamp(h) => (
                "stamp",
                Some(SectorStamp {
                    run_id: format!("{:016x}", h.run_id),
                    this_run: h.run_id == format.run_id,
                    block: h.block,
                    generation: h.generation,
                    write_seq: h.write_seq,
                    write_time_s: h.write_time_s as u64,
                    in_place: h.sector_index as usize == index,
                }),
            ),
        };
        let index = index as u32;
        match runs.last_mut() {
            Some(run) if run.content == content && run.stamp == stamp => run.last_sector = index,
            _ => runs.push(SectorRun {
                first_sector: index,
                last_sector: index,
                content,
                stamp,
            }),
        }
    }
    runs
}

/// Verify the [`NEIGHBOURHOOD_BYTES`] extent around `block` and group its
/// findings; the incident `block` belongs to, if it is a finding.
fn neighbourhood(
    manifest: &Manifest,
    expected: &Expected<'_>,
    target: &dyn Target,
    block: u64,
) -> Result<(Neighbourhood, Option<Incident>)> {
    let format = manifest.format();
    let block_size = format.block_size as u64;
    let per_extent = (NEIGHBOURHOOD_BYTES / block_size).max(1);
    let first_block = block / per_extent * per_extent;
    let on_target = (target.info().size_bytes / block_size).min(manifest.block_count());
    let end_block = (first_block + per_extent).min(on_target);
    let survivors = Survivors::new(expected.next_write_seq());
    let mut findings: Vec<Finding> = Vec::new();
    let (mut checked, mut unread) = (0u64, 0u64);
    let chunk_blocks = ((1u64 << 20) / block_size).max(1);
    let mut start = first_block;
    while start < end_block {
        let count = chunk_blocks.min(end_block - start);
        let mut buf = AlignedBuf::new((count * block_size) as usize);
        let chunk_ok = target.read_at(&mut buf, start * block_size).is_ok();
        for i in 0..count {
            let b = start + i;
            let mut one = AlignedBuf::new(block_size as usize);
            let bytes: &[u8] = if chunk_ok {
                &buf[(i * block_size) as usize..((i + 1) * block_size) as usize]
            } else if target.read_at(&mut one, b * block_size).is_ok() {
                &one
            } else {
                unread += 1;
                continue;
            };
            checked += 1;
            match verify::check_block(&format, expected, b, bytes) {
                None => survivors.record_block(&format, bytes),
                Some(mut finding) => {
                    finding.confirm(target, &format);
                    findings.push(finding);
                }
            }
        }
        start += count;
    }
    let evidence: Vec<Evidence> = findings.iter().map(Evidence::of).collect();
    let grouping = incidents::group(
        &evidence,
        &GroupingContext {
            block_size: format.block_size,
            sessions: &manifest.header().sessions,
            survivors: Some(&survivors),
        },
    );
    let incident = findings
        .iter()
        .position(|f| f.block == block)
        .map(|i| grouping.incident_of[i])
        .and_then(|id| grouping.incidents.iter().find(|x| x.id == id).cloned());
    Ok((
        Neighbourhood {
            first_block,
            last_block: end_block.saturating_sub(1),
            checked,
            unread,
            findings: findings.len() as u64,
            incidents: grouping.incidents,
        },
        incident,
    ))
}

/// Where write `write_seq` falls among the checkpoints.
fn among_checkpoints(story: &Story, write_seq: u64) -> String {
    let after = story
        .checkpoints
        .iter()
        .filter(|c| c.write_seq <= write_seq)
        .max_by_key(|c| c.write_seq);
    let before = story
        .checkpoints
        .iter()
        .filter(|c| write_seq < c.write_seq)
        .min_by_key(|c| c.write_seq);
    match (after, before) {
        (None, None) => String::new(),
        (None, Some(b)) => format!("before checkpoint '{}'", b.name),
        (Some(a), None) => format!("after checkpoint '{}'", a.name),
        (Some(a), Some(b)) => format!("after checkpoint '{}', before '{}'", a.name, b.name),
    }
}

/// The session that issued write `write_seq`.
fn session_of(sessions: &[WriteSession], write_seq: u64) -> Option<&WriteSession> {
    sessions
        .iter()
        .rev()
        .find(|s| s.first_write_seq <= write_seq)
}

fn render(story: &Story, sessions: &[WriteSession]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let extents: Vec<String> = story
        .regions
        .iter()
        .map(|r| format!("{} extent {}", format_size(r.region_bytes), r.extent))
        .collect();
    let _ = writeln!(
        out,
        "block {} at offset {} ({}), {} block; {}",
        story.block,
        story.offset,
        format_size(story.offset),
        format_size(story.block_size as u64),
        extents.join(", ")
    );
    let _ = writeln!(out, "expected (manifest of run {})", story.run_id);
    let describe = |generation: u32| match generation {
        0 => "never written by this run".to_string(),
        g => format!("generation {g}"),
    };
    let kind = match story.kind_now {
        "data" => String::new(),
        "zeroed" => ", then zeroed (reads all zeros)".to_string(),
        "discarded" => {
            ", then discarded (reads zeros or that generation, as the target promised)".to_string()
        }
        other => format!(", then {}", other.replace('_', " ")),
    };
    let _ = writeln!(
        out,
        "  now: {}{kind}{}",
        describe(story.expected_now),
        if story.checked_against.is_none() {
            "  <- checked against"
        } else {
            ""
        }
    );
    for checkpoint in &story.checkpoints {
        let _ = writeln!(
            out,
            "  at checkpoint '{}' (taken {}, writes before {}): {}{}",
            checkpoint.name,
            format_unix_time(checkpoint.created_unix_s),
            checkpoint.write_seq,
            describe(checkpoint.generation),
            if story.checked_against.as_deref() == Some(checkpoint.name.as_str()) {
                "  <- checked against"
            } else {
                ""
            }
        );
    }
    let pending = match (&story.pending, story.manifest_state) {
        (Some(p), _) => format!(
            "writes of this block were in flight when the writer stopped: anything from {} to generation {} is accepted, whole per {} bytes",
            if p.before == 0 {
                "what was there before the run".to_string()
            } else {
                format!("generation {}", p.before)
            },
            p.newest,
            p.atomic_unit_bytes
        ),
        (None, "writing") if story.checked_against.is_none() => {
            "none for this block (the writer did not finish; the journal names no write of it in flight)".to_string()
        }
        (None, "writing") => "not applied when checking a checkpoint".to_string(),
        _ => "none (the manifest was closed cleanly)".to_string(),
    };
    let _ = writeln!(out, "  pending after a crash: {pending}");

    let _ = writeln!(out, "found on the target");
    if let Some(error) = &story.read_error {
        let _ = writeln!(out, "  read failed: {error}");
    }
    for run in &story.sectors {
        let sectors = if run.first_sector == run.last_sector {
            format!("sector {}", run.first_sector)
        } else {
            format!("sectors {}-{}", run.first_sector, run.last_sector)
        };
        let what = match (&run.content, &run.stamp) {
            (_, Some(s)) => {
                let whose = if !s.this_run {
                    format!("a stamp of another run ({})", s.run_id)
                } else if s.block >= stamp::DEDUP_PATTERN_BASE {
                    format!(
                        "shared dedup pattern {} of this run",
                        s.block - stamp::DEDUP_PATTERN_BASE
                    )
                } else if s.block == story.block {
                    "this block".to_string()
                } else {
                    format!("block {}'s stamp", s.block)
                };
                let mut text = format!("{whose}, generation {}", s.generation);
                if s.this_run && s.write_seq != 0 {
                    let _ = write!(
                        text,
                        ", write {} at {}",
                        s.write_seq,
                        format_unix_time(s.write_time_s)
                    );
                    let place = among_checkpoints(story, s.write_seq);
                    if !place.is_empty() {
                        let _ = write!(text, " ({place})");
                    }
                }
                if !s.in_place {
                    text.push_str(" — sectors out of their place in the block");
                }
                text
            }
            (&"zero", None) => "zeros".to_string(),
            _ => "not a valid stamp (damaged, or foreign data)".to_string(),
        };
        let _ = writeln!(out, "  {sectors}: {what}");
    }
    let first_write = story
        .sectors
        .iter()
        .filter_map(|r| r.stamp.as_ref())
        .find(|s| s.this_run && s.write_seq != 0);
    if let Some(session) = first_write.and_then(|s| session_of(sessions, s.write_seq)) {
        let _ = writeln!(out, "  written by {}", words::session_text(session));
    }
    match &story.verdict.class {
        None => {
            let _ = writeln!(out, "verdict: {}", story.verdict.detail);
        }
        Some(class) => {
            let persistent = story.finding.as_ref().map_or("", |f| {
                if f.persistent {
                    " [persistent: read again, the same bytes]"
                } else {
                    " [transient: read again, other bytes]"
                }
            });
            let _ = writeln!(
                out,
                "verdict: {class}{persistent}: {}",
                story.verdict.detail
            );
        }
    }
    if let Some(corruption) = story.finding.as_ref().and_then(|f| f.corruption.as_ref()) {
        for row in &corruption.diff_rows {
            let _ = writeln!(out, "  {:08x}  expected {}", row.offset, row.expected);
            let _ = writeln!(out, "  {:08x}  found    {}", row.offset, row.found);
        }
    }
    if let Some(n) = &story.neighbourhood {
        let _ = writeln!(
            out,
            "neighbourhood: blocks {}-{} ({} around the block) verified: {} checked{}, {} finding(s) in {} incident(s)",
            n.first_block,
            n.last_block,
            format_size(NEIGHBOURHOOD_BYTES),
            n.checked,
            if n.unread > 0 {
                format!(", {} unreadable", n.unread)
            } else {
                String::new()
            },
            n.findings,
            n.incidents.len()
        );
        match &story.incident {
            Some(incident) => {
                let _ = writeln!(
                    out,
                    "incident: this block is in {}",
                    words::headline(incident)
                );
                for line in words::detail_lines(incident, story.block_size) {
                    let _ = writeln!(out, "      {line}");
                }
                let _ = writeln!(
                    out,
                    "  (from this extent only: `blockstamp verify` groups the whole target, where findings elsewhere may join it by write time)"
                );
            }
            None => {
                for incident in n.incidents.iter().take(5) {
                    let _ = writeln!(out, "  nearby: {}", words::headline(incident));
                }
                if n.incidents.len() > 5 {
                    let _ = writeln!(out, "  … {} more", n.incidents.len() - 5);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_alike_are_told_as_one_run() {
        let format = RunFormat::new(7, 4096);
        let mut bytes = vec![0u8; 4096];
        stamp::build_block(
            &format,
            &stamp::WriteStamp {
                block: 3,
                generation: 2,
                write_seq: 99,
                write_time_s: 1_700_000_000,
            },
            &mut bytes,
        );
        bytes[3 * 512 + 100] ^= 1; // sector 3 damaged
        bytes[6 * 512..].fill(0); // sectors 6-7 zero
        let runs = sector_runs(&format, &bytes);
        let shape: Vec<(u32, u32, &str)> = runs
            .iter()
            .map(|r| (r.first_sector, r.last_sector, r.content))
            .collect();
        assert_eq!(
            shape,
            vec![
                (0, 2, "stamp"),
                (3, 3, "other"),
                (4, 5, "stamp"),
                (6, 7, "zero")
            ]
        );
        let stamp = runs[0].stamp.as_ref().unwrap();
        assert_eq!((stamp.block, stamp.generation, stamp.write_seq), (3, 2, 99));
        assert!(stamp.this_run && stamp.in_place);
    }
}
