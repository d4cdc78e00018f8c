//! Incidents: a verify's findings grouped by the cause they share.
//!
//! A thousand findings are rarely a thousand problems. A snapshot format
//! that mishandles one burst of writes, a grain table or an L2 table that
//! points at the wrong clusters, a stripe an array rebuilt wrongly: each
//! damages many blocks, close together in write time or on the target.
//! This module groups findings into such incidents, deterministically, by
//! what each finding knows.
//!
//! What a finding knows about time: every stamp carries its write's
//! sequence number and time (see `stamp`).
//!
//! - A `torn`, `corrupt`, `misdirected` or `newer_generation` block holds
//!   the damaged (or unexpected) write itself: its *damaged write* is
//!   known exactly.
//! - A block whose write landed elsewhere (a `misdirected` finding names it
//!   in `found_block`) takes that misdirected write as its damaged write.
//! - A `lost_write` block holds an older write of itself: the write that
//!   did not persist left no trace, but it came after the older one. That
//!   older write is its *found write*.
//! - `zeroed`, `foreign` and `unreadable` blocks hold no write of this run:
//!   only their place on the target speaks for them.
//!
//! Two findings are in one incident when a chain of these links joins them:
//!
//! 1. **same write**: a `misdirected` finding and the finding at the block
//!    whose write it holds (the write landed here instead of there);
//! 2. **place**: findings of one class with at most [`PLACE_GAP_BYTES`]
//!    of other blocks between them;
//! 3. **time**: findings of one class whose damaged writes are at most the
//!    write gap apart in sequence number: the queue depth (or burst, if
//!    larger) of the session that issued the later write, the writes in
//!    flight together; [`DEFAULT_WRITE_GAP`] when the manifest does not
//!    record the session.
//!
//! Links are single-linkage, so a contiguous damaged extent or a run of
//! damaged bursts is one incident however long. Incidents are numbered
//! from 1: those whose damaged writes are known in write order, then the
//! others by their first block.
//!
//! For each incident: its classes, blocks (count and ranges), the regions
//! it touches at 1, 16 and 64 MiB (grain tables, L2 tables and stripes are
//! regions of such sizes), the span of its damaged writes (sequence numbers
//! and times), how many other writes numbered in that span survived (a
//! block of theirs checked out: see `survivors`), the workload sessions (burst size,
//! scatter, queue depth) that issued them, and for lost writes the span of
//! the older writes still in their place. docs/CONTRACT.md has the fields.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Finding, FindingClass, FoundWrite, Survivors};
use crate::manifest::WriteSession;

/// Findings of one class with at most this many bytes of other blocks
/// between them are linked.
pub const PLACE_GAP_BYTES: u64 = 1 << 20;
/// Write gap when no session records the queue depth: blockstamp's default
/// queue depth.
pub const DEFAULT_WRITE_GAP: u64 = 32;
/// The region sizes an incident is described at.
pub const REGION_BYTES: [u64; 3] = [1 << 20, 16 << 20, 64 << 20];
/// Block ranges and region extents kept per incident (the counts are
/// always complete).
pub const MAX_RANGES: usize = 64;

/// What the grouping knows of one finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    pub block: u64,
    pub class: FindingClass,
    pub expected_generation: u32,
    pub found_generation: Option<u32>,
    pub found_block: Option<u64>,
    pub found_write: Option<FoundWrite>,
    pub persistent: bool,
}

impl Evidence {
    pub fn of(finding: &Finding) -> Evidence {
        Evidence {
            block: finding.block,
            class: finding.classified.class,
            expected_generation: finding.expected_generation,
            found_generation: finding.classified.found_generation,
            found_block: finding.classified.found_block,
            found_write: finding.found_write,
            persistent: finding.persistent,
        }
    }

    /// The write the block holds that is itself the damage.
    fn holds_damaged_write(&self) -> bool {
        matches!(
            self.class,
            FindingClass::Torn
                | FindingClass::Corrupt
                | FindingClass::Misdirected
                | FindingClass::NewerGeneration
        )
    }
}

/// What the grouping needs besides the findings.
pub struct GroupingContext<'a> {
    pub block_size: u32,
    /// Workload sessions of the manifest, oldest first.
    pub sessions: &'a [WriteSession],
    /// The writes found intact, when known.
    pub survivors: Option<&'a Survivors>,
}

/// A span of writes: sequence numbers and times (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteSpan {
    /// Distinct writes in the span that the incident's blocks name.
    pub writes: u64,
    pub first_write_seq: u64,
    pub last_write_seq: u64,
    pub first_time_s: u64,
    pub last_time_s: u64,
}

/// The extents of one size an incident touches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionSpan {
    /// Extent size: extent i covers bytes `[i × region_bytes, (i+1) × region_bytes)`.
    pub region_bytes: u64,
    /// Distinct extents touched.
    pub count: u64,
    /// Inclusive ranges of extent indices, at most [`MAX_RANGES`].
    pub extents: Vec<[u64; 2]>,
}

/// One incident: findings that share a cause.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// From 1, in the order described in the module docs.
    pub id: u32,
    /// Finding class → blocks of that class.
    pub classes: BTreeMap<String, u64>,
    pub blocks: u64,
    /// Findings whose second read returned the same bytes.
    pub persistent: u64,
    pub first_block: u64,
    pub last_block: u64,
    /// Inclusive ranges of blocks, at most [`MAX_RANGES`].
    pub block_ranges: Vec<[u64; 2]>,
    /// More ranges than `block_ranges` holds.
    pub block_ranges_truncated: bool,
    pub regions: Vec<RegionSpan>,
    /// The damaged writes the blocks hold or name; null when none is known
    /// (only lost, zeroed, foreign or unreadable blocks).
    pub damaged_writes: Option<WriteSpan>,
    /// For lost writes: the older writes still in their place (the lost
    /// ones were issued after them).
    pub found_writes: Option<WriteSpan>,
    /// Writes numbered within `damaged_writes`' span.
    pub writes_in_span: Option<u64>,
    /// Of those, writes other than the damaged ones with a block that
    /// checked out (estimated when the survivors are sampled).
    pub surviving_writes: Option<u64>,
    /// The workload sessions that issued the writes of the spans.
    pub bursts: Vec<WriteSession>,
    /// The links that joined its findings: `same_write`, `place`, `time`.
    pub linked_by: Vec<String>,
}

impl Incident {
    /// The incident's classes, most blocks first (ties in the contract's order).
    pub fn classes_by_size(&self) -> Vec<(&str, u64)> {
        let mut classes: Vec<(&str, u64)> =
            self.classes.iter().map(|(c, n)| (c.as_str(), *n)).collect();
        let rank = |c: &str| FindingClass::ALL.iter().position(|k| k.name() == c);
        classes.sort_by(|a, b| b.1.cmp(&a.1).then(rank(a.0).cmp(&rank(b.0))));
        classes
    }

    /// Whether `block` is one of its blocks (as far as the ranges kept say).
    pub fn contains_block(&self, block: u64) -> bool {
        self.block_ranges
            .iter()
            .any(|r| r[0] <= block && block <= r[1])
    }
}

/// Incidents, and which one each finding belongs to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grouping {
    pub incidents: Vec<Incident>,
    /// The incident id of each finding, in the order they were given.
    pub incident_of: Vec<u32>,
}

/// Group findings into incidents.
pub fn group(findings: &[Evidence], context: &GroupingContext<'_>) -> Grouping {
    let count = findings.len();
    if count == 0 {
        return Grouping::default();
    }
    let block_size = context.block_size.max(1) as u64;
    let damaged = damaged_writes(findings);
    let mut sets = DisjointSets::new(count);
    let mut links: Vec<(usize, &'static str)> = Vec::new();
    let mut link = |sets: &mut DisjointSets, a: usize, b: usize, why: &'static str| {
        sets.union(a, b);
        links.push((a, why));
    };

    // 1. Same write: a misdirected write and the block it was meant for.
    let by_block: BTreeMap<u64, usize> = findings
        .iter()
        .enumerate()
        .map(|(i, f)| (f.block, i))
        .collect();
    for (i, finding) in findings.iter().enumerate() {
        if finding.class == FindingClass::Misdirected
            && let Some(&victim) = finding.found_block.and_then(|b| by_block.get(&b))
        {
            link(&mut sets, i, victim, "same_write");
        }
    }
    // 2. Place: neighbours of one class on the target.
    let mut order: Vec<usize> = (0..count).collect();
    order.sort_by_key(|&i| (findings[i].class, findings[i].block));
    for pair in order.windows(2) {
        let (a, b) = (&findings[pair[0]], &findings[pair[1]]);
        let between_bytes = (b.block - a.block)
            .saturating_sub(1)
            .saturating_mul(block_size);
        if a.class == b.class && between_bytes <= PLACE_GAP_BYTES {
            link(&mut sets, pair[0], pair[1], "place");
        }
    }
    // 3. Time: damaged writes of one class in the same stretch of bursts.
    let mut timed: Vec<usize> = (0..count).filter(|&i| damaged[i].is_some()).collect();
    timed.sort_by_key(|&i| (findings[i].class, damaged[i].map(|w| w.write_seq)));
    for pair in timed.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let (Some(wa), Some(wb)) = (damaged[a], damaged[b]) else {
            continue;
        };
        if findings[a].class == findings[b].class
            && wb.write_seq - wa.write_seq <= write_gap(context.sessions, wb.write_seq)
        {
            link(&mut sets, a, b, "time");
        }
    }

    // Collect the components.
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..count {
        members.entry(sets.find(i)).or_default().push(i);
    }
    let mut reasons: BTreeMap<usize, BTreeSet<&'static str>> = BTreeMap::new();
    for (i, why) in links {
        reasons.entry(sets.find(i)).or_default().insert(why);
    }
    let mut incidents: Vec<(usize, Incident)> = members
        .iter()
        .map(|(root, indices)| {
            let linked_by = ["same_write", "place", "time"]
                .iter()
                .filter(|why| reasons.get(root).is_some_and(|r| r.contains(*why)))
                .map(|why| why.to_string())
                .collect();
            (
                *root,
                describe(findings, &damaged, indices, context, linked_by),
            )
        })
        .collect();
    incidents.sort_by_key(|(_, incident)| {
        (
            incident.damaged_writes.is_none(),
            incident
                .damaged_writes
                .as_ref()
                .map_or(0, |w| w.first_write_seq),
            incident.first_block,
        )
    });
    let mut id_of_root: BTreeMap<usize, u32> = BTreeMap::new();
    for (index, (root, incident)) in incidents.iter_mut().enumerate() {
        incident.id = index as u32 + 1;
        id_of_root.insert(*root, incident.id);
    }
    Grouping {
        incident_of: (0..count).map(|i| id_of_root[&sets.find(i)]).collect(),
        incidents: incidents
            .into_iter()
            .map(|(_, incident)| incident)
            .collect(),
    }
}

/// The damaged write of each finding, where known (see the module docs).
fn damaged_writes(findings: &[Evidence]) -> Vec<Option<FoundWrite>> {
    let mut damaged: Vec<Option<FoundWrite>> = findings
        .iter()
        .map(|f| f.found_write.filter(|_| f.holds_damaged_write()))
        .collect();
    let by_block: BTreeMap<u64, usize> = findings
        .iter()
        .enumerate()
        .map(|(i, f)| (f.block, i))
        .collect();
    for finding in findings {
        if finding.class != FindingClass::Misdirected {
            continue;
        }
        let Some(&victim) = finding.found_block.and_then(|b| by_block.get(&b)) else {
            continue;
        };
        // The write that landed here is the victim's expected write.
        if damaged[victim].is_none()
            && finding.found_generation == Some(findings[victim].expected_generation)
        {
            damaged[victim] = finding.found_write;
        }
    }
    damaged
}

/// The write gap at `write_seq`: see the module docs.
pub fn write_gap(sessions: &[WriteSession], write_seq: u64) -> u64 {
    sessions
        .iter()
        .rev()
        .find(|s| s.first_write_seq <= write_seq)
        .map_or(DEFAULT_WRITE_GAP, |s| {
            (s.queue_depth.max(s.burst) as u64).max(1)
        })
}

fn describe(
    findings: &[Evidence],
    damaged: &[Option<FoundWrite>],
    indices: &[usize],
    context: &GroupingContext<'_>,
    linked_by: Vec<String>,
) -> Incident {
    let block_size = context.block_size.max(1) as u64;
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    let mut blocks: Vec<u64> = Vec::with_capacity(indices.len());
    let mut persistent = 0;
    let mut damaged_found = Vec::new();
    let mut older_found = Vec::new();
    for &i in indices {
        let finding = &findings[i];
        *classes.entry(finding.class.name().to_string()).or_default() += 1;
        blocks.push(finding.block);
        persistent += finding.persistent as u64;
        if let Some(write) = damaged[i] {
            damaged_found.push(write);
        } else if finding.class == FindingClass::LostWrite
            && let Some(write) = finding.found_write
        {
            older_found.push(write);
        }
    }
    blocks.sort_unstable();
    blocks.dedup();
    let (block_ranges, block_ranges_truncated) = ranges(blocks.iter().copied());
    let regions = REGION_BYTES
        .iter()
        .map(|&region_bytes| {
            let extents: BTreeSet<u64> = blocks
                .iter()
                .map(|b| b * block_size / region_bytes)
                .collect();
            RegionSpan {
                region_bytes,
                count: extents.len() as u64,
                extents: ranges(extents.into_iter()).0,
            }
        })
        .collect();
    let damaged_writes = span(&damaged_found);
    let found_writes = span(&older_found);
    let writes_in_span = damaged_writes
        .as_ref()
        .map(|w| w.last_write_seq - w.first_write_seq + 1);
    // The damaged writes themselves do not count, even where another
    // block of theirs checked out (a misdirected write's own block).
    let surviving_writes = match (&damaged_writes, context.survivors) {
        (Some(w), Some(survivors)) => {
            let damaged_seqs: BTreeSet<u64> = damaged_found.iter().map(|d| d.write_seq).collect();
            let damaged_surviving = damaged_seqs
                .iter()
                .filter(|&&seq| survivors.contains(seq))
                .count() as u64;
            Some(
                survivors
                    .count(w.first_write_seq, w.last_write_seq)
                    .saturating_sub(damaged_surviving * survivors.sampled_every()),
            )
        }
        _ => None,
    };
    let mut bursts: Vec<WriteSession> = Vec::new();
    for w in [&damaged_writes, &found_writes].into_iter().flatten() {
        for session in sessions_between(context.sessions, w.first_write_seq, w.last_write_seq) {
            if !bursts.contains(session) {
                bursts.push(session.clone());
            }
        }
    }
    bursts.sort_by_key(|s| s.first_write_seq);
    Incident {
        id: 0,
        classes,
        blocks: blocks.len() as u64,
        persistent,
        first_block: blocks[0],
        last_block: blocks[blocks.len() - 1],
        block_ranges,
        block_ranges_truncated,
        regions,
        damaged_writes,
        found_writes,
        writes_in_span,
        surviving_writes,
        bursts,
        linked_by,
    }
}

fn sessions_between(sessions: &[WriteSession], first: u64, last: u64) -> Vec<&WriteSession> {
    sessions
        .iter()
        .enumerate()
        .filter(|(i, session)| {
            let end = sessions
                .get(i + 1)
                .map_or(u64::MAX, |next| next.first_write_seq);
            session.first_write_seq <= last && first < end
        })
        .map(|(_, session)| session)
        .collect()
}

fn span(writes: &[FoundWrite]) -> Option<WriteSpan> {
    let first = writes.iter().min_by_key(|w| w.write_seq)?;
    let last = writes.iter().max_by_key(|w| w.write_seq)?;
    let distinct: BTreeSet<u64> = writes.iter().map(|w| w.write_seq).collect();
    Some(WriteSpan {
        writes: distinct.len() as u64,
        first_write_seq: first.write_seq,
        last_write_seq: last.write_seq,
        first_time_s: writes.iter().map(|w| w.write_time_s).min()? as u64,
        last_time_s: writes.iter().map(|w| w.write_time_s).max()? as u64,
    })
}

/// Inclusive ranges of ascending distinct numbers, at most [`MAX_RANGES`];
/// and whether there were more.
fn ranges(numbers: impl Iterator<Item = u64>) -> (Vec<[u64; 2]>, bool) {
    let mut out: Vec<[u64; 2]> = Vec::new();
    let mut truncated = false;
    for n in numbers {
        if let Some(range) = out.last_mut()
            && range[1] + 1 == n
        {
            range[1] = n;
        } else if out.len() == MAX_RANGES {
            truncated = true;
            break;
        } else {
            out.push([n, n]);
        }
    }
    (out, truncated)
}

/// Union-find over finding indices, by rank with path halving.
struct DisjointSets {
    parent: Vec<usize>,
    rank: Vec<u8>,
}

impl DisjointSets {
    fn new(count: usize) -> DisjointSets {
        DisjointSets {
            parent: (0..count).collect(),
            rank: vec![0; count],
        }
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        match self.rank[a].cmp(&self.rank[b]) {
            std::cmp::Ordering::Less => self.parent[a] = b,
            std::cmp::Ordering::Greater => self.parent[b] = a,
            std::cmp::Ordering::Equal => {
                self.parent[b] = a;
                self.rank[a] += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(block: u64, class: FindingClass, seq: Option<u64>) -> Evidence {
        Evidence {
            block,
            class,
            expected_generation: 2,
            found_generation: seq.map(|_| 2),
            found_block: None,
            found_write: seq.map(|write_seq| FoundWrite {
                write_seq,
                write_time_s: 1_700_000_000 + (write_seq / 1000) as u32,
            }),
            persistent: true,
        }
    }

    fn context() -> GroupingContext<'static> {
        GroupingContext {
            block_size: 4096,
            sessions: &[],
            survivors: None,
        }
    }

    fn blocks_of(incident: &Incident) -> Vec<[u64; 2]> {
        incident.block_ranges.clone()
    }

    #[test]
    fn neighbours_of_one_class_are_one_incident_and_a_clean_mib_splits_them() {
        use FindingClass::Zeroed;
        // Blocks 0-9 zeroed, 256 clean blocks (1 MiB), block 266: linked;
        // 333 clean blocks, block 600: not.
        let findings: Vec<Evidence> = (0..10)
            .chain([266, 600])
            .map(|b| finding(b, Zeroed, None))
            .collect();
        let incidents = group(&findings, &context()).incidents;
        assert_eq!(incidents.len(), 2);
        assert_eq!(blocks_of(&incidents[0]), vec![[0, 9], [266, 266]]);
        assert_eq!(blocks_of(&incidents[1]), vec![[600, 600]]);
        assert_eq!(incidents[0].linked_by, vec!["place"]);
        assert_eq!(incidents[0].damaged_writes, None);
    }

    #[test]
    fn damaged_writes_close_in_sequence_are_one_incident_wherever_they_landed() {
        use FindingClass::Torn;
        // A burst of torn writes scattered over the target (seq 100-103),
        // and a lone torn write much later.
        let findings = vec![
            finding(5, Torn, Some(100)),
            finding(90_000, Torn, Some(101)),
            finding(40_000, Torn, Some(103)),
            finding(70_000, Torn, Some(5000)),
        ];
        let incidents = group(&findings, &context()).incidents;
        assert_eq!(incidents.len(), 2);
        let burst = &incidents[0];
        assert_eq!(burst.blocks, 3);
        assert_eq!(burst.linked_by, vec!["time"]);
        let span = burst.damaged_writes.as_ref().unwrap();
        assert_eq!((span.first_write_seq, span.last_write_seq), (100, 103));
        assert_eq!(span.writes, 3);
        assert_eq!(burst.writes_in_span, Some(4));
        assert_eq!(incidents[1].first_block, 70_000);
        assert_eq!(
            burst.regions[0],
            RegionSpan {
                region_bytes: 1 << 20,
                count: 3,
                extents: vec![[0, 0], [156, 156], [351, 351]],
            }
        );
    }

    #[test]
    fn classes_are_not_mixed_by_place_or_time() {
        let findings = vec![
            finding(10, FindingClass::Torn, Some(100)),
            finding(11, FindingClass::Corrupt, Some(101)),
        ];
        assert_eq!(group(&findings, &context()).incidents.len(), 2);
    }

    #[test]
    fn a_misdirected_write_and_the_block_it_missed_are_one_incident() {
        // Block 7's generation-2 write landed on block 90000.
        let mut landed = finding(90_000, FindingClass::Misdirected, Some(555));
        landed.found_block = Some(7);
        let mut missed = finding(7, FindingClass::LostWrite, Some(12));
        missed.found_generation = Some(1);
        let grouping = group(&[missed, landed], &context());
        assert_eq!(grouping.incident_of, vec![1, 1]);
        let incidents = grouping.incidents;
        assert_eq!(incidents.len(), 1);
        let incident = &incidents[0];
        assert_eq!(incident.linked_by, vec!["same_write"]);
        assert_eq!(incident.classes.len(), 2);
        // Both name write 555: the missed block inherits it.
        let span = incident.damaged_writes.as_ref().unwrap();
        assert_eq!((span.writes, span.first_write_seq), (1, 555));
        assert_eq!(incident.found_writes, None);
    }

    #[test]
    fn lost_writes_keep_the_span_of_the_older_writes_in_their_place() {
        let mut a = finding(100, FindingClass::LostWrite, Some(40));
        let mut b = finding(101, FindingClass::LostWrite, Some(9));
        a.found_generation = Some(1);
        b.found_generation = Some(1);
        let incidents = group(&[a, b], &context()).incidents;
        assert_eq!(incidents.len(), 1);
        assert_eq!(incidents[0].damaged_writes, None);
        assert_eq!(incidents[0].surviving_writes, None);
        let older = incidents[0].found_writes.as_ref().unwrap();
        assert_eq!((older.first_write_seq, older.last_write_seq), (9, 40));
    }

    #[test]
    fn surviving_writes_count_the_span_and_sessions_set_the_gap() {
        let survivors = Survivors::new(10_000);
        for seq in 200..300 {
            if seq % 10 != 0 {
                survivors.record(seq);
            }
        }
        let session = |first_write_seq, queue_depth| WriteSession {
            first_write_seq,
            workload: "burst".into(),
            burst: 4,
            scatter: "random".into(),
            queue_depth,
            io_blocks: [1, 1],
            overwrite: 0.0,
            discard: 0.0,
            write_zeroes: 0.0,
        };
        let sessions = vec![session(1, 32), session(1000, 8)];
        let context = GroupingContext {
            block_size: 4096,
            sessions: &sessions,
            survivors: Some(&survivors),
        };
        // Every tenth write of 200-290 torn (gaps of 10 < 32): one
        // incident; at 2000 and 2010 the queue depth is 8: two.
        let mut findings: Vec<Evidence> = (200..300)
            .step_by(10)
            .map(|seq| finding(seq * 1000, FindingClass::Torn, Some(seq)))
            .collect();
        findings.push(finding(5_000_000, FindingClass::Torn, Some(2000)));
        findings.push(finding(7_000_000, FindingClass::Torn, Some(2010)));
        let incidents = group(&findings, &context).incidents;
        assert_eq!(incidents.len(), 3);
        let first = &incidents[0];
        assert_eq!(first.blocks, 10);
        assert_eq!(first.writes_in_span, Some(91));
        assert_eq!(first.surviving_writes, Some(81));
        assert_eq!(first.bursts, vec![sessions[0].clone()]);
        assert_eq!(incidents[1].bursts, vec![sessions[1].clone()]);
        assert_eq!(write_gap(&sessions, 999), 32);
        assert_eq!(write_gap(&[], 5), DEFAULT_WRITE_GAP);
    }

    #[test]
    fn the_grouping_does_not_depend_on_the_order_of_the_findings() {
        let mut findings: Vec<Evidence> = (0..200)
            .map(|i| {
                let class = FindingClass::ALL[i % 3];
                finding((i as u64 * 7919) % 50_000, class, Some(i as u64 * 13))
            })
            .collect();
        findings.sort_by_key(|f| f.block);
        findings.dedup_by_key(|f| f.block);
        let forward = group(&findings, &context());
        findings.reverse();
        let backward = group(&findings, &context());
        assert_eq!(backward.incidents, forward.incidents);
        let mut ids = backward.incident_of.clone();
        ids.reverse();
        assert_eq!(ids, forward.incident_of);
    }
}
