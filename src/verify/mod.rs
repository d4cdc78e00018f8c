//! The verify phase: read the whole target back at depth, check every block
//! against the manifest in parallel, classify each one that is wrong, and
//! re-read every finding once to tell persistent from transient.
//!
//! Reads are large and aligned (1 MiB by default) and kept in flight by an
//! engine; each completed chunk is checked on the rayon pool while the next
//! reads are in flight. Memory is bounded by the chunks in flight and in
//! checking, not by the target's size.
//!
//! On a target that reports its holes (a sparse image), only what must be
//! looked at is read ([`ReadPlan`]): the data extents, and the blocks the run
//! wrote that now lie in a hole (each one a finding to classify), coalesced
//! while the bytes read stay within 5/4 of the bytes needed. A block in a hole
//! that the run never wrote reads as zeros, which is what it must hold: it is
//! counted as checked without a read.

pub mod classify;
pub mod incidents;
pub mod survivors;
pub mod watch;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use crate::buf::AlignedBuf;
use crate::engine::{Engine, Io, IoKind};
use crate::error::{Error, Result};
use crate::manifest::{BlockKind, BlockState, Expected};
use crate::metrics::Metrics;
use crate::stamp::{self, MAGIC, RunFormat, SECTOR_BYTES};
use crate::storage::{self, DiscardReads, Target};
pub use classify::{
    Classified, Corruption, Expectation, FindingClass, SectorSpan, classify, classify_zeroing,
};
use std::fmt::Write as _;
pub use survivors::Survivors;
pub use watch::{FindingWatch, Watcher};

/// One block that is not what was expected.
#[derive(Clone, Debug)]
pub struct Finding {
    pub block: u64,
    pub offset: u64,
    pub expected_generation: u32,
    pub classified: Classified,
    /// Failing sectors (index within the block) of an unreadable block.
    pub unreadable_sectors: Vec<u32>,
    /// The second read returned the same bytes (or failed again).
    pub persistent: bool,
    /// The write whose stamp the block holds, as its sectors say (see
    /// [`found_write`]); None when no sector names one.
    pub found_write: Option<FoundWrite>,
    /// CRC32C of the bytes first read (None when the read failed).
    first_read_crc: Option<u32>,
    /// The second read was made (`persistent` says what it found).
    reread: bool,
}

/// The write sequence number and time a found stamp carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoundWrite {
    pub write_seq: u64,
    pub write_time_s: u32,
}

/// The write whose stamp a damaged block holds: the first intact sector of
/// this run whose block and generation are those the verdict names
/// (`found_block`, or the block itself, at `found_generation`). For a torn
/// or corrupt block that is the damaged write itself; for a misdirected one
/// the write that landed here; for a lost write the older write still in
/// place. None when the verdict names no generation (zeroed, foreign,
/// unreadable) or only a shared dedup pattern is there (write 0).
pub fn found_write(
    format: &RunFormat,
    block: u64,
    classified: &Classified,
    bytes: &[u8],
) -> Option<FoundWrite> {
    let generation = classified.found_generation?;
    let stamp_block = classified.found_block.unwrap_or(block);
    bytes
        .chunks_exact(SECTOR_BYTES)
        .find_map(|sector| match stamp::decode_sector(sector) {
            stamp::SectorContent::Stamp(h)
                if h.run_id == format.run_id
                    && h.block == stamp_block
                    && h.generation == generation
                    && h.write_seq != 0 =>
            {
                Some(FoundWrite {
                    write_seq: h.write_seq,
                    write_time_s: h.write_time_s,
                })
            }
            _ => None,
        })
}

impl Finding {
    /// A finding from a read made outside `verify` (the writer's rolling
    /// verify); `persistent` is left false until re-read. Empty `bytes`:
    /// the read failed.
    pub fn from_read(
        block: u64,
        block_size: u32,
        expected_generation: u32,
        bytes: &[u8],
        classified: Classified,
    ) -> Finding {
        Finding {
            block,
            offset: block * block_size as u64,
            expected_generation,
            // Rolling read-backs are not grouped into incidents.
            found_write: None,
            classified,
            unreadable_sectors: Vec::new(),
            persistent: false,
            first_read_crc: (!bytes.is_empty()).then(|| crc32c::crc32c(bytes)),
            reread: false,
        }
    }

    /// Read the block a second time: `persistent` when it returned the same
    /// bytes (or, for a failed read, failed again). Done once: a finding
    /// already re-read keeps its answer.
    pub fn confirm(&mut self, target: &dyn Target, format: &RunFormat) {
        if !self.reread {
            self.persistent = reread_matches(target, format, self);
            self.reread = true;
        }
    }
}

/// Confirm at once the findings `watch` wants, and tell it of those that
/// are persistent.
fn confirm_watched(
    findings: &mut [Finding],
    target: &dyn Target,
    format: &RunFormat,
    watch: &Watcher,
) {
    for finding in findings {
        if watch.wants(finding) {
            finding.confirm(target, format);
            if finding.persistent {
                watch.confirmed(finding);
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Threads checking blocks.
    pub threads: usize,
    /// Read chunks kept in flight.
    pub queue_depth: usize,
    /// Bytes per read (rounded to whole blocks).
    pub chunk_bytes: usize,
    /// Findings kept with their details; more are counted only.
    pub max_findings: usize,
    /// Where completed reads' latencies and bytes are recorded.
    pub metrics: Option<Arc<Metrics>>,
    /// Check only the blocks before this one (a target shorter than its
    /// manifest: the caller reports the rest); None: every block.
    pub block_limit: Option<u64>,
    /// Told of each persistent finding as soon as it is confirmed
    /// (`--on-finding`, `--stop-on-finding`).
    pub watch: Option<Watcher>,
    /// `--discard-reads`: the promise discarded blocks are held to, over
    /// the one the manifest recorded.
    pub discard_reads: Option<DiscardReads>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            queue_depth: 8,
            chunk_bytes: 1 << 20,
            max_findings: 100_000,
            metrics: None,
            block_limit: None,
            watch: None,
            discard_reads: None,
        }
    }
}

/// Counts of blocks, as the report's `blocks` object.
#[derive(Clone, Debug, Default)]
pub struct BlockCounts {
    pub total: u64,
    pub expected_written: u64,
    pub checked: u64,
    pub ok: u64,
}

/// The result of a verify.
#[derive(Clone, Debug)]
pub struct VerifyOutcome {
    pub blocks: BlockCounts,
    /// Findings kept, ordered by block.
    pub findings: Vec<Finding>,
    /// Per class, counting every finding (also those not kept).
    pub counts_by_class: Vec<(FindingClass, u64)>,
    pub bytes_read: u64,
    pub elapsed: Duration,
    /// Blocks skipped without reading because the target reports them as
    /// holes and the run never wrote them.
    pub blocks_in_holes: u64,
    /// The target was lost before every block was checked: why. Blocks it
    /// took with it are neither checked nor findings.
    pub target_lost: Option<String>,
    /// The writes found intact (for the incidents' surviving writes).
    pub survivors: Arc<Survivors>,
}

impl VerifyOutcome {
    pub fn total_findings(&self) -> u64 {
        self.counts_by_class.iter().map(|(_, n)| n).sum()
    }
}

struct Chunk {
    first_block: u64,
    block_count: u64,
}

struct ChunkResult {
    findings: Vec<Finding>,
    ok: u64,
    checked: u64,
    buf: Option<AlignedBuf>,
    /// The target was lost while this chunk was read: nothing in it counts.
    lost: Option<String>,
    /// A block of the chunk that read as expected.
    ok_block: Option<u64>,
}

/// Verify every block of the target against `expected`.
pub fn verify(
    target: Arc<dyn Target>,
    format: &RunFormat,
    expected: &Expected<'_>,
    engine: &mut dyn Engine,
    options: &VerifyOptions,
    progress: Option<&crate::progress::Counters>,
) -> Result<VerifyOutcome> {
    let started = Instant::now();
    let block_size = format.block_size as u64;
    let block_count = options.block_limit.map_or(expected.block_count(), |limit| {
        limit.min(expected.block_count())
    });
    let blocks_per_chunk = (options.chunk_bytes as u64 / block_size).max(1);
    let survivors = Survivors::new(expected.next_write_seq());
    let survivors_ref = &survivors;
    let mut plan = ReadPlan::new(
        expected,
        block_count,
        blocks_per_chunk,
        target.data_ranges().as_deref(),
        block_size,
    );

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads.max(1))
        .thread_name(|i| format!("bs-check-{i}"))
        .build()
        .map_err(|e| Error::run(format!("cannot start checking threads: {e}")))?;
    let max_buffers = options.queue_depth.max(1) + options.threads.max(1) * 2;
    let mut free_buffers: Vec<AlignedBuf> = Vec::new();
    let mut buffers_out = 0usize;
    let mut tally = Tally {
        counts: BlockCounts {
            total: expected.block_count(),
            expected_written: expected.count_written(),
            ..Default::default()
        },
        findings: Vec::new(),
        class_counts: Default::default(),
        max_findings: options.max_findings,
        lost: None,
        last_good_offset: None,
        block_size,
    };
    let mut bytes_read = 0u64;
    let mut blocks_in_holes = 0u64;
    let mut chunks: std::collections::HashMap<u64, Chunk> = Default::default();

    let (sender, receiver) = channel::<ChunkResult>();
    let mut checking = 0usize;
    let mut next_chunk = 0u64;
    let mut planned_all = false;
    let take_back =
        |result: ChunkResult, tally: &mut Tally, free: &mut Vec<AlignedBuf>, out: &mut usize| {
            if let Some(buf) = tally.merge(result) {
                free.push(buf);
                *out -= 1;
            }
        };

    pool.in_place_scope(|scope| -> Result<()> {
        loop {
            // Keep reads in flight.
            while tally.lost.is_none()
                && !planned_all
                && engine.in_flight() < engine.queue_depth()
                && buffers_out < max_buffers
            {
                let chunk = match plan.next_step() {
                    None => {
                        planned_all = true;
                        break;
                    }
                    Some(Step::Skip(blocks)) => {
                        // Never written and not allocated: reads as zeros.
                        let skipped = blocks.end - blocks.start;
                        tally.counts.checked += skipped;
                        tally.counts.ok += skipped;
                        blocks_in_holes += skipped;
                        if let Some(p) = progress {
                            p.bytes.fetch_add(skipped * block_size, Ordering::Relaxed);
                        }
                        continue;
                    }
                    Some(Step::Read(blocks)) => Chunk {
                        first_block: blocks.start,
                        block_count: blocks.end - blocks.start,
                    },
                };
                let chunk_index = next_chunk;
                next_chunk += 1;
                let first_block = chunk.first_block;
                let range =
                    first_block * block_size..(first_block + chunk.block_count) * block_size;
                let mut buf = free_buffers.pop().unwrap_or_else(|| {
                    engine.take_buffer((blocks_per_chunk * block_size) as usize)
                });
                buffers_out += 1;
                buf.set_len((range.end - range.start) as usize);
                engine
                    .submit(Io {
                        id: chunk_index,
                        kind: IoKind::Read {
                            offset: range.start,
                        },
                        buf,
                        stamps: None,
                    })
                    .map_err(|e| Error::run(format!("read engine failed: {e}")))?;
                chunks.insert(chunk_index, chunk);
            }
            engine
                .kick()
                .map_err(|e| Error::run(format!("read engine failed: {e}")))?;

            let idle = (planned_all || tally.lost.is_some()) && engine.in_flight() == 0;
            if idle && checking == 0 {
                break;
            }
            if engine.in_flight() > 0 {
                let completions = engine
                    .complete(1)
                    .map_err(|e| Error::run(format!("read engine failed: {e}")))?;
                for completion in completions {
                    let chunk = chunks
                        .remove(&completion.id)
                        .expect("completion for a submitted chunk");
                    if let Err(error) = &completion.result
                        && storage::is_target_lost(error)
                    {
                        tally.lost.get_or_insert_with(|| error.to_string());
                    }
                    if tally.lost.is_some() {
                        // Lost with the target (or read after it was lost):
                        // not checked, and never a finding.
                        free_buffers.push(completion.buf);
                        buffers_out -= 1;
                        continue;
                    }
                    bytes_read += completion.buf.len() as u64;
                    if let Some(metrics) = &options.metrics {
                        metrics.record_read(completion.latency, completion.buf.len() as u64);
                    }
                    if let Some(p) = progress {
                        p.add(completion.buf.len() as u64);
                    }
                    let read_ok = completion.result.is_ok();
                    if read_ok
                        && chunk.block_count < blocks_per_chunk
                        && chunk.block_count * block_size <= INLINE_CHECK_BYTES
                    {
                        // A small read of a sparse target (a data extent):
                        // checked here, as handing it to the pool costs more
                        // than checking it and wakes idle threads to spin.
                        let mut result =
                            check_chunk(format, expected, &chunk, completion.buf, survivors_ref);
                        if let Some(watch) = &options.watch {
                            confirm_watched(&mut result.findings, target.as_ref(), format, watch);
                        }
                        take_back(result, &mut tally, &mut free_buffers, &mut buffers_out);
                        continue;
                    }
                    let sender = sender.clone();
                    let target = Arc::clone(&target);
                    let buf = completion.buf;
                    let watch = options.watch.clone();
                    let last_good_offset = tally.last_good_offset;
                    checking += 1;
                    scope.spawn(move |_| {
                        let mut result = if read_ok {
                            check_chunk(format, expected, &chunk, buf, survivors_ref)
                        } else {
                            // The chunk read failed: find the failing
                            // blocks and sectors, and check the rest.
                            let mut result = check_blocks_one_by_one(
                                target.as_ref(),
                                format,
                                expected,
                                &chunk,
                                last_good_offset,
                                survivors_ref,
                            );
                            result.buf = Some(buf);
                            result
                        };
                        if let Some(watch) = &watch {
                            confirm_watched(&mut result.findings, target.as_ref(), format, watch);
                        }
                        let _ = sender.send(result);
                    });
                }
            } else if checking > 0 {
                // Every buffer is being checked: wait for one back.
                let result = receiver.recv().expect("checking thread result");
                checking -= 1;
                take_back(result, &mut tally, &mut free_buffers, &mut buffers_out);
            }
            while let Ok(result) = receiver.try_recv() {
                checking -= 1;
                take_back(result, &mut tally, &mut free_buffers, &mut buffers_out);
            }
        }
        Ok(())
    })?;

    let Tally {
        counts,
        mut findings,
        class_counts,
        lost,
        ..
    } = tally;
    findings.sort_by_key(|f| f.block);
    // Re-read each finding once (those a watch wanted already were): the
    // same bytes again means the medium holds them; different bytes point
    // at the read path or a cache. (Not on a lost target: the re-reads
    // would only fail.)
    if lost.is_none() {
        pool.install(|| {
            use rayon::prelude::*;
            findings
                .par_iter_mut()
                .for_each(|finding| finding.confirm(target.as_ref(), format));
        });
    }

    Ok(VerifyOutcome {
        blocks: counts,
        findings,
        counts_by_class: class_counts.into_iter().collect(),
        bytes_read,
        elapsed: started.elapsed(),
        blocks_in_holes,
        target_lost: lost,
        survivors: Arc::new(survivors),
    })
}

struct Tally {
    counts: BlockCounts,
    findings: Vec<Finding>,
    class_counts: std::collections::BTreeMap<FindingClass, u64>,
    max_findings: usize,
    /// Why the target was lost, once it was.
    lost: Option<String>,
    /// A block that read as expected: after a failed read, a sector there
    /// that now fails too says the target failed, not the sectors read. (A
    /// block found as expected, so that probing it disturbs no finding: a
    /// stale cache would serve a finding's re-read differently.)
    last_good_offset: Option<u64>,
    block_size: u64,
}

impl Tally {
    /// Add a checked chunk's results; hands back its buffer.
    fn merge(&mut self, result: ChunkResult) -> Option<AlignedBuf> {
        if let Some(why) = result.lost {
            self.lost.get_or_insert(why);
            return result.buf;
        }
        if let Some(block) = result.ok_block {
            self.last_good_offset = Some(block * self.block_size);
        }
        self.counts.ok += result.ok;
        self.counts.checked += result.checked;
        for finding in result.findings {
            *self
                .class_counts
                .entry(finding.classified.class)
                .or_default() += 1;
            if self.findings.len() < self.max_findings {
                self.findings.push(finding);
            }
        }
        result.buf
    }
}

/// What verify does with a run of blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// Blocks in a hole the run never wrote: they read as zeros, which is
    /// what they must hold.
    Skip(Range<u64>),
    /// Blocks to read and check (at most a chunk).
    Read(Range<u64>),
}

/// Reads up to this size that are smaller than a chunk are checked on the
/// reading thread.
const INLINE_CHECK_BYTES: u64 = 64 << 10;

/// Map entries scanned at a time for written blocks inside a hole.
const HOLE_SCAN_BLOCKS: u64 = 1 << 16;

/// The reads of a verify, in block order. Without holes: the target in
/// chunks. With them: the blocks that must be looked at — those overlapping
/// a data extent, and those the manifest says hold a stamp (or have a
/// pending write) wherever they lie — coalesced into reads of at most a
/// chunk, a gap joining a read only while the read's blocks stay within
/// 5/4 of the blocks needed in it. One pass over the extents and, inside
/// holes, one pass over the map: linear in both, never per chunk × extent.
struct ReadPlan<'e, 'm> {
    expected: &'e Expected<'m>,
    block_count: u64,
    max_read_blocks: u64,
    /// Data extents in blocks (rounded outwards), ascending, disjoint and
    /// apart; `None`: the target reports no holes.
    data: Option<Vec<Range<u64>>>,
    /// First extent not entirely before the block being planned.
    data_index: usize,
    /// The part of a hole whose map was scanned last, and the blocks found
    /// in it that must be read.
    scanned: Range<u64>,
    found: Vec<u64>,
    found_index: usize,
    /// First block not yet planned.
    next: u64,
}

impl<'e, 'm> ReadPlan<'e, 'm> {
    fn new(
        expected: &'e Expected<'m>,
        block_count: u64,
        max_read_blocks: u64,
        data_bytes: Option<&[Range<u64>]>,
        block_size: u64,
    ) -> ReadPlan<'e, 'm> {
        let data = data_bytes.map(|ranges| {
            let mut blocks: Vec<Range<u64>> = ranges
                .iter()
                .map(|r| r.start / block_size..r.end.div_ceil(block_size).min(block_count))
                .filter(|r| r.start < r.end)
                .collect();
            blocks.sort_by_key(|r| r.start);
            let mut merged: Vec<Range<u64>> = Vec::with_capacity(blocks.len());
            for range in blocks {
                match merged.last_mut() {
                    Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
                    _ => merged.push(range),
                }
            }
            merged
        });
        ReadPlan {
            expected,
            block_count,
            max_read_blocks: max_read_blocks.max(1),
            data,
            data_index: 0,
            scanned: 0..0,
            found: Vec::new(),
            found_index: 0,
            next: 0,
        }
    }

    fn next_step(&mut self) -> Option<Step> {
        let start = self.next;
        if start >= self.block_count {
            return None;
        }
        if self.data.is_none() {
            let end = (start + self.max_read_blocks).min(self.block_count);
            self.next = end;
            return Some(Step::Read(start..end));
        }
        let Some(first) = self.next_needed(start) else {
            self.next = self.block_count;
            return Some(Step::Skip(start..self.block_count));
        };
        if first.start > start {
            self.next = first.start;
            return Some(Step::Skip(start..first.start));
        }
        let limit = start + self.max_read_blocks;
        let mut end = first.end.min(limit);
        let mut needed = end - start;
        while end < limit {
            let Some(more) = self.next_needed(end).filter(|more| more.start < limit) else {
                break;
            };
            let more_end = more.end.min(limit);
            let more_needed = needed + (more_end - more.start);
            // Bytes read ≤ 5/4 of the bytes needed.
            if (more_end - start) * 4 > more_needed * 5 {
                break;
            }
            end = more_end;
            needed = more_needed;
        }
        self.next = end;
        Some(Step::Read(start..end))
    }

    /// The first run of blocks at or after `from` that must be read,
    /// starting no earlier than `from`. `from` never decreases between calls.
    fn next_needed(&mut self, from: u64) -> Option<Range<u64>> {
        let data = self.data.as_deref().unwrap_or_default();
        while self.data_index < data.len() && data[self.data_index].end <= from {
            self.data_index += 1;
        }
        let extent = data.get(self.data_index).map(|d| d.start.max(from)..d.end);
        let hole_end = extent.as_ref().map_or(self.block_count, |d| d.start);
        match self.stamped_in_hole(from, hole_end) {
            Some(block) => Some(block..block + 1),
            None => extent,
        }
    }

    /// The first block of `from..hole_end` (a hole) that the manifest says
    /// holds a stamp or has a pending write.
    fn stamped_in_hole(&mut self, from: u64, hole_end: u64) -> Option<u64> {
        let mut at = from;
        while at < hole_end {
            if !self.scanned.contains(&at) {
                let end = (at + HOLE_SCAN_BLOCKS).min(hole_end);
                self.expected
                    .stamped_or_pending_in(at..end, &mut self.found);
                self.found_index = 0;
                self.scanned = at..end;
            }
            while self.found.get(self.found_index).is_some_and(|&b| b < at) {
                self.found_index += 1;
            }
            if let Some(&block) = self.found.get(self.found_index) {
                return Some(block);
            }
            at = self.scanned.end;
        }
        None
    }
}

/// Check every block of a chunk that was read whole.
fn check_chunk(
    format: &RunFormat,
    expected: &Expected<'_>,
    chunk: &Chunk,
    buf: AlignedBuf,
    survivors: &Survivors,
) -> ChunkResult {
    let block_size = format.block_size as usize;
    let mut findings = Vec::new();
    let mut ok = 0;
    let mut ok_block = None;
    for (i, bytes) in buf.chunks_exact(block_size).enumerate() {
        let block = chunk.first_block + i as u64;
        match check_block(format, expected, block, bytes) {
            None => {
                ok += 1;
                survivors.record_block(format, bytes);
                ok_block.get_or_insert(block);
            }
            Some(finding) => findings.push(finding),
        }
    }
    ChunkResult {
        findings,
        ok,
        checked: chunk.block_count,
        buf: Some(buf),
        lost: None,
        ok_block,
    }
}

/// Check one block's bytes; `None` when it is what the manifest expects.
pub fn check_block(
    format: &RunFormat,
    expected: &Expected<'_>,
    block: u64,
    bytes: &[u8],
) -> Option<Finding> {
    let state = expected.state(block);
    let generation = state.generation;
    if let Some(pending) = expected.pending(block)
        && pending_write_explains(
            format,
            block,
            (
                crate::manifest::journal::generation_before_pending(pending.oldest, generation),
                pending.newest,
            ),
            pending.zeros,
            expected.atomic_unit(),
            bytes,
        )
    {
        return None;
    }
    let classified = match state.kind {
        BlockKind::Data => check_data(format, block, generation, bytes)?,
        _ => check_space_op(format, expected, block, state, bytes)?,
    };
    Some(Finding {
        block,
        offset: block * format.block_size as u64,
        expected_generation: generation,
        found_write: found_write(format, block, &classified, bytes),
        classified,
        unreadable_sectors: Vec::new(),
        persistent: false,
        first_read_crc: Some(crc32c::crc32c(bytes)),
        reread: false,
    })
}

/// A block whose latest operation wrote `generation` (0: none).
fn check_data(format: &RunFormat, block: u64, generation: u32, bytes: &[u8]) -> Option<Classified> {
    if generation != 0 {
        if stamp::holds(format, block, generation, bytes) {
            return None;
        }
    } else if !bytes
        .chunks_exact(SECTOR_BYTES)
        .any(|s| s[..4] == MAGIC.to_le_bytes())
    {
        // Never written, and no sector even starts like a stamp.
        return None;
    }
    classify(format, Expectation { block, generation }, bytes)
}

/// A block last zeroed or discarded (docs/CONTRACT.md, discard and
/// write-zeroes): a zeroed block reads all zeros; a discarded one reads
/// zeros or its previous contents, as the target promised, and in an
/// overlay what it held at the latest checkpoint.
fn check_space_op(
    format: &RunFormat,
    expected: &Expected<'_>,
    block: u64,
    state: BlockState,
    bytes: &[u8],
) -> Option<Classified> {
    let zeros = || bytes.iter().all(|&b| b == 0);
    // What the backing image held at the checkpoint the overlay was taken.
    let backing = || {
        expected.backing_state(block).is_some_and(|then| {
            then.is_data() && stamp::holds(format, block, then.generation, bytes)
        })
    };
    let generation = state.generation;
    let promise = expected.discard_reads();
    match state.kind {
        BlockKind::Data => unreachable!("a data block"),
        BlockKind::Zeroed => {
            classify_zeroing(format, block, generation, ("zeroed", "zeroing"), bytes)
        }
        BlockKind::DiscardedZeros => {
            if promise != DiscardReads::Zeroes && backing() {
                return None;
            }
            classify_zeroing(
                format,
                block,
                generation,
                ("discarded after a zeroing", "discard"),
                bytes,
            )
        }
        BlockKind::Discarded => {
            match promise {
                DiscardReads::Zeroes => {
                    return classify_zeroing(
                        format,
                        block,
                        generation,
                        ("discarded, and the target's discards read zeros", "discard"),
                        bytes,
                    );
                }
                DiscardReads::Any if zeros() => return None,
                _ => {}
            }
            if backing() {
                return None;
            }
            // The previous contents: the latest data write's stamp (or,
            // never written, whatever was there before the run).
            let mut classified = check_data(format, block, generation, bytes)?;
            let _ = write!(
                classified.detail,
                "; the block was discarded (the target's discards read {})",
                match promise {
                    DiscardReads::Previous => "its previous contents",
                    _ => "zeros or its previous contents",
                }
            );
            Some(classified)
        }
    }
}

/// A block whose writes were pending at a crash may hold, in each unit the
/// target writes atomically, any generation from `before` (what it held
/// before the oldest pending write: see
/// [`crate::manifest::journal::generation_before_pending`]) to
/// `newest` (or, when `before` is 0, what was there before the run wrote it:
/// anything that is not a stamp of this run). A mix inside one unit, or
/// anything else, is not explained.
pub fn pending_write_explains(
    format: &RunFormat,
    block: u64,
    (before, newest): (u32, u32),
    zeros: bool,
    atomic_unit: usize,
    bytes: &[u8],
) -> bool {
    use crate::manifest::GENERATION_MAX;
    use crate::stamp::{SectorContent, decode_sector};
    // Steps of `next_generation` from `before` to `g`: the acceptable
    // generations are the first steps up to `newest`, across a wrap.
    let steps_from_before = |g: u32| match before {
        0 => g as i64,
        _ => (g as i64 - before as i64).rem_euclid(GENERATION_MAX as i64),
    };
    let allowed = |g: u32| g != 0 && steps_from_before(g) <= steps_from_before(newest);
    let unit = atomic_unit.clamp(SECTOR_BYTES, bytes.len().max(SECTOR_BYTES));
    // The acceptable generations, for matching shared dedup patterns.
    let mut acceptable = Vec::new();
    if format.dedup_permille > 0 {
        if before != 0 {
            acceptable.push(before);
        }
        let mut g = before;
        while g != newest {
            g = crate::manifest::next_generation(g);
            acceptable.push(g);
        }
    }
    bytes
        .chunks(unit)
        .enumerate()
        .all(|(unit_index, unit_bytes)| {
            let mut unit_generation: Option<u32> = None;
            unit_bytes
                .chunks_exact(SECTOR_BYTES)
                .enumerate()
                .all(|(i, sector)| {
                    let index = (unit_index * unit / SECTOR_BYTES + i) as u16;
                    let generation = match decode_sector(sector) {
                        SectorContent::Stamp(h)
                            if h.run_id == format.run_id
                                && h.block == block
                                && h.sector_index == index =>
                        {
                            h.generation
                        }
                        // A shared dedup pattern: one of the acceptable writes?
                        SectorContent::Stamp(h)
                            if h.run_id == format.run_id
                                && h.block >= crate::stamp::DEDUP_PATTERN_BASE
                                && h.sector_index == index =>
                        {
                            let pattern = crate::stamp::Content::Pattern(
                                h.block - crate::stamp::DEDUP_PATTERN_BASE,
                            );
                            match acceptable
                                .iter()
                                .find(|&&g| format.content(block, g) == pattern)
                            {
                                Some(&g) => g,
                                None => return false,
                            }
                        }
                        SectorContent::Stamp(h) if h.run_id == format.run_id => return false,
                        // A pending zeroing or discard, or zeros before.
                        SectorContent::Zero if zeros => ZERO_UNIT,
                        // Not a stamp of this run: the target's earlier contents.
                        _ => 0,
                    };
                    if generation == ZERO_UNIT {
                        return *unit_generation.get_or_insert(ZERO_UNIT) == ZERO_UNIT;
                    }
                    if generation == 0 && before != 0 {
                        return false;
                    }
                    let same = *unit_generation.get_or_insert(generation) == generation;
                    same && (generation == 0 || allowed(generation))
                })
        })
}

/// A unit of zero sectors, where a pending zeroing explains it.
const ZERO_UNIT: u32 = u32::MAX;

/// The target is lost: a chunk's result that counts nothing.
fn lost_chunk(why: String) -> ChunkResult {
    ChunkResult {
        findings: Vec::new(),
        ok: 0,
        checked: 0,
        buf: None,
        lost: Some(why),
        ok_block: None,
    }
}

/// After a failed chunk read: read block by block, and for a block that
/// fails, sector by sector, so only the failing sectors are `unreadable`.
/// When the target turns out to be lost rather than some of its sectors
/// unreadable (an IO fails as lost, or a sector at `last_good_offset`, a
/// block that read as expected before, fails now), nothing in the chunk
/// counts.
fn check_blocks_one_by_one(
    target: &dyn Target,
    format: &RunFormat,
    expected: &Expected<'_>,
    chunk: &Chunk,
    last_good_offset: Option<u64>,
    survivors: &Survivors,
) -> ChunkResult {
    let block_size = format.block_size as usize;
    let sector_size = (target.info().logical_sector_size as usize).max(SECTOR_BYTES);
    let mut sector = AlignedBuf::new(sector_size);
    if let Some(offset) = last_good_offset
        && let Err(error) = target.read_at(&mut sector, offset)
    {
        return lost_chunk(if storage::is_target_lost(&error) {
            error.to_string()
        } else {
            format!("a sector at offset {offset} that read fine earlier now fails too ({error})")
        });
    }
    let mut buf = AlignedBuf::new(block_size);
    let mut findings = Vec::new();
    let mut ok = 0;
    let mut ok_block = None;
    for i in 0..chunk.block_count {
        let block = chunk.first_block + i;
        let offset = block * block_size as u64;
        match target.read_at(&mut buf, offset) {
            Ok(()) => match check_block(format, expected, block, &buf) {
                None => {
                    ok += 1;
                    survivors.record_block(format, &buf);
                    ok_block.get_or_insert(block);
                }
                Some(finding) => findings.push(finding),
            },
            Err(error) if storage::is_target_lost(&error) => return lost_chunk(error.to_string()),
            Err(error) => {
                let mut failing = Vec::new();
                for s in 0..block_size / sector_size {
                    match target.read_at(&mut sector, offset + (s * sector_size) as u64) {
                        Ok(()) => {}
                        Err(e) if storage::is_target_lost(&e) => return lost_chunk(e.to_string()),
                        Err(_) => failing.push((s * sector_size / SECTOR_BYTES) as u32),
                    }
                }
                let detail = if failing.is_empty() {
                    format!("the block read failed ({error}) but each sector read alone succeeded")
                } else {
                    format!(
                        "read failed ({error}) in 512-byte sector(s) {}",
                        describe_sectors(&failing)
                    )
                };
                findings.push(Finding {
                    block,
                    offset,
                    expected_generation: expected.generation(block),
                    found_write: None,
                    classified: Classified {
                        class: FindingClass::Unreadable,
                        found_generation: None,
                        found_block: None,
                        detail,
                        torn_split: None,
                        corruption: None,
                    },
                    unreadable_sectors: failing,
                    persistent: false,
                    first_read_crc: None,
                    reread: false,
                });
            }
        }
    }
    ChunkResult {
        findings,
        ok,
        checked: chunk.block_count,
        buf: None,
        lost: None,
        ok_block,
    }
}

fn describe_sectors(sectors: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = sectors.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(", ")
}

fn reread_matches(target: &dyn Target, format: &RunFormat, finding: &Finding) -> bool {
    let mut buf = AlignedBuf::new(format.block_size as usize);
    match (
        target.read_at(&mut buf, finding.offset),
        finding.first_read_crc,
    ) {
        (Err(_), None) => true,
        (Ok(()), Some(crc)) => crc32c::crc32c(&buf) == crc,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;
    use crate::stamp::{WriteStamp, build_block};

    /// A manifest of `block_count` 4 KiB blocks with `written` at generation 1.
    fn manifest_with(dir: &std::path::Path, block_count: u64, written: &[u64]) -> Manifest {
        let mut manifest = crate::manifest::testing::new_manifest_of(dir, block_count);
        manifest.begin_write().unwrap();
        for &block in written {
            manifest.set_generation(block, 1);
        }
        manifest.finish_write().unwrap();
        manifest
    }

    fn plan_steps(
        manifest: &Manifest,
        max_read_blocks: u64,
        data_bytes: Option<&[Range<u64>]>,
    ) -> Vec<Step> {
        let expected = manifest.expected(None).unwrap();
        let mut plan = ReadPlan::new(
            &expected,
            manifest.block_count(),
            max_read_blocks,
            data_bytes,
            4096,
        );
        std::iter::from_fn(|| plan.next_step()).collect()
    }

    #[test]
    fn a_sparse_target_reads_its_extents_and_the_written_blocks_in_its_holes() {
        let dir = tempfile::tempdir().unwrap();
        // Written: 3 and 4 (in an extent), 40 (in a hole: must be read),
        // 200 (in an extent). Extents in bytes, not block-aligned at 100.
        let manifest = manifest_with(dir.path(), 256, &[3, 4, 40, 200]);
        let data = [
            3 * 4096..5 * 4096,
            100 * 4096 + 512..101 * 4096,
            200 * 4096..201 * 4096,
        ];
        assert_eq!(
            plan_steps(&manifest, 256, Some(&data)),
            vec![
                Step::Skip(0..3),
                Step::Read(3..5),
                Step::Skip(5..40),
                Step::Read(40..41),
                Step::Skip(41..100),
                Step::Read(100..101),
                Step::Skip(101..200),
                Step::Read(200..201),
                Step::Skip(201..256),
            ]
        );
        // Without holes: the whole target, a chunk at a time.
        assert_eq!(
            plan_steps(&manifest, 100, None),
            vec![
                Step::Read(0..100),
                Step::Read(100..200),
                Step::Read(200..256)
            ]
        );
        // A hole with nothing written in it: nothing to read at all.
        let other = tempfile::tempdir().unwrap();
        let empty = manifest_with(other.path(), 256, &[]);
        assert_eq!(plan_steps(&empty, 16, Some(&[])), vec![Step::Skip(0..256)]);
    }

    #[test]
    fn small_gaps_are_read_through_while_the_reads_stay_within_five_fourths() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = manifest_with(dir.path(), 64, &[]);
        let extent = |blocks: Range<u64>| blocks.start * 4096..blocks.end * 4096;
        // 4 needed, a gap of 1: 5 read for 4 needed (5/4) is allowed;
        // then a gap of 2 before 1 more: 8 for 5 is not.
        let data = [extent(0..2), extent(3..5), extent(7..8)];
        assert_eq!(
            plan_steps(&manifest, 64, Some(&data)),
            vec![
                Step::Read(0..5),
                Step::Skip(5..7),
                Step::Read(7..8),
                Step::Skip(8..64)
            ]
        );
        // A read never exceeds a chunk.
        assert_eq!(
            plan_steps(&manifest, 4, Some(&[extent(0..10)])),
            vec![
                Step::Read(0..4),
                Step::Read(4..8),
                Step::Read(8..10),
                Step::Skip(10..64)
            ]
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// The steps cover the target once, in order; every block in an
        /// extent or written is read; no read exceeds a chunk, starts or
        /// ends on a block it need not read, or reads more than 5/4 of
        /// what it needs.
        #[test]
        fn the_read_plan_reads_what_it_must_and_little_else(
            block_count in 1u64..600,
            extents in proptest::collection::vec((0u64..600 * 4096, 1u64..40_000), 0..12),
            written in proptest::collection::vec(0u64..600, 0..40),
            max_read_blocks in 1u64..64,
            holes in proptest::prelude::any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let written: Vec<u64> = written.into_iter().filter(|&b| b < block_count).collect();
            let manifest = manifest_with(dir.path(), block_count, &written);
            let size = block_count * 4096;
            let data: Vec<Range<u64>> = extents
                .iter()
                .map(|&(start, len)| start.min(size)..(start + len).min(size))
                .collect();
            let steps = plan_steps(&manifest, max_read_blocks, holes.then_some(&data[..]));
            let needed = |block: u64| {
                !holes
                    || written.contains(&block)
                    || data.iter().any(|d| d.start < (block + 1) * 4096 && block * 4096 < d.end)
            };
            let mut next = 0;
            for step in &steps {
                match step {
                    Step::Skip(blocks) => {
                        proptest::prop_assert_eq!(blocks.start, next);
                        proptest::prop_assert!(blocks.start < blocks.end);
                        proptest::prop_assert!(blocks.clone().all(|b| !needed(b)), "{:?}", step);
                        next = blocks.end;
                    }
                    Step::Read(blocks) => {
                        proptest::prop_assert_eq!(blocks.start, next);
                        proptest::prop_assert!(blocks.end - blocks.start <= max_read_blocks);
                        proptest::prop_assert!(needed(blocks.start) && needed(blocks.end - 1));
                        let useful = blocks.clone().filter(|&b| needed(b)).count() as u64;
                        proptest::prop_assert!((blocks.end - blocks.start) * 4 <= useful * 5, "{:?}", step);
                        next = blocks.end;
                    }
                }
            }
            proptest::prop_assert_eq!(next, block_count);
        }
    }

    fn block_of(format: &RunFormat, block: u64, generation: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; format.block_size as usize];
        if generation > 0 {
            build_block(
                format,
                &WriteStamp {
                    block,
                    generation,
                    write_seq: generation as u64,
                    write_time_s: 1,
                },
                &mut bytes,
            );
        }
        bytes
    }

    fn mix(a: &[u8], b: &[u8], split: usize) -> Vec<u8> {
        [&a[..split], &b[split..]].concat()
    }

    /// What each zeroed or discarded state, under each promise, makes of
    /// what the block holds (docs/CONTRACT.md, discard and write-zeroes).
    #[test]
    fn zeroed_and_discarded_blocks_are_classified_by_state_promise_and_content() {
        use crate::manifest::BlockState;
        use DiscardReads::{Any, Previous, Zeroes};
        use FindingClass::*;
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = crate::manifest::testing::new_manifest_of(dir.path(), 16);
        let state = |kind| BlockState {
            kind,
            generation: 2,
        };
        manifest.begin_write().unwrap();
        manifest.set_state(1, state(BlockKind::Zeroed));
        manifest.set_state(2, state(BlockKind::Discarded));
        manifest.set_state(3, state(BlockKind::DiscardedZeros));
        manifest.finish_write().unwrap();
        let format = manifest.format();
        let zeros = vec![0u8; 4096];
        let own = |block| block_of(&format, block, 2);
        let class = |promise, block, bytes: &[u8]| {
            let mut expected = manifest.expected(None).unwrap();
            expected.set_discard_reads(promise);
            check_block(&format, &expected, block, bytes)
                .map(|f| (f.classified.class, f.classified.found_block))
        };
        /// Promise, block, what it holds, and the class and found block.
        type Case = (
            DiscardReads,
            u64,
            Vec<u8>,
            Option<(FindingClass, Option<u64>)>,
        );
        let cases: [Case; 14] = [
            // Zeroed: all zeros, whatever the promise.
            (Any, 1, zeros.clone(), None),
            (Any, 1, own(1), Some((LostZeroing, None))),
            (
                Zeroes,
                1,
                block_of(&format, 1, 1),
                Some((LostZeroing, None)),
            ),
            (Any, 1, own(7), Some((Misdirected, Some(7)))),
            (Any, 1, mix(&zeros, &own(1), 2048), Some((Torn, None))),
            // Discarded, promise any: zeros or the previous contents.
            (Any, 2, zeros.clone(), None),
            (Any, 2, own(2), None),
            (Any, 2, block_of(&format, 2, 1), Some((LostWrite, None))),
            // Discarded, promise previous: the previous contents only.
            (Previous, 2, zeros.clone(), Some((Zeroed, None))),
            (Previous, 2, own(2), None),
            // Discarded, promise zeroes: zeros only.
            (Zeroes, 2, own(2), Some((LostZeroing, None))),
            (Zeroes, 2, zeros.clone(), None),
            // Discarded after a zeroing: its previous contents were zeros.
            (Previous, 3, own(3), Some((LostZeroing, None))),
            (Any, 3, zeros.clone(), None),
        ];
        for (promise, block, bytes, want) in cases {
            assert_eq!(
                class(promise, block, &bytes),
                want,
                "block {block} under {promise:?}"
            );
        }
    }

    #[test]
    fn a_pending_write_may_leave_each_atomic_unit_old_or_new_but_not_mixed() {
        let format = RunFormat::new(7, 8192);
        let (g2, g3, g4) = (
            block_of(&format, 5, 2),
            block_of(&format, 5, 3),
            block_of(&format, 5, 4),
        );
        let explains = |bytes: &[u8], unit: usize| {
            pending_write_explains(&format, 5, (2, 4), false, unit, bytes)
        };
        // Whole generations from before the oldest pending write to the newest.
        for whole in [&g2, &g3, &g4] {
            assert!(explains(whole, 512));
        }
        assert!(
            !explains(&block_of(&format, 5, 1), 512),
            "older than the last durable write"
        );
        assert!(
            !explains(&vec![0u8; 8192], 512),
            "zeros where a durable write was"
        );
        // Torn at a 512-byte boundary: fine on a 512-byte device, not on a
        // 4096-byte one unless the boundary is a 4096-byte one too.
        assert!(explains(&mix(&g4, &g2, 512), 512));
        assert!(!explains(&mix(&g4, &g2, 512), 4096));
        assert!(explains(&mix(&g4, &g2, 4096), 4096));
        // A first write pending: the old content was whatever was there.
        let first = |bytes: &[u8]| pending_write_explains(&format, 5, (0, 1), false, 512, bytes);
        assert!(first(&vec![0u8; 8192]));
        assert!(first(&mix(&block_of(&format, 5, 1), &[0x77u8; 8192], 1024)));
        assert!(
            !first(&block_of(&format, 6, 1)),
            "another block's stamp is never explained"
        );
    }

    #[test]
    fn a_pending_zeroing_may_leave_each_atomic_unit_old_or_zeros_but_not_mixed() {
        use crate::manifest::{BlockKind, BlockState, Pending};
        let format = RunFormat::new(7, 8192);
        let g3 = block_of(&format, 5, 3);
        let zeros = vec![0u8; 8192];
        // A write of 3 durable, then a zeroing pending (journal value).
        let zeroed = BlockState {
            kind: BlockKind::Zeroed,
            generation: 3,
        };
        let pending = Pending::of_intent(zeroed.value());
        assert!(pending.zeros);
        let before =
            crate::manifest::journal::generation_before_pending(pending.oldest, zeroed.generation);
        let explains = |bytes: &[u8], unit: usize| {
            pending_write_explains(&format, 5, (before, pending.newest), true, unit, bytes)
        };
        assert!(explains(&g3, 512), "the zeroing was lost: old");
        assert!(explains(&zeros, 512), "the zeroing landed: new");
        assert!(explains(&mix(&zeros, &g3, 4096), 4096), "per 4 KiB unit");
        assert!(
            !explains(&mix(&zeros, &g3, 512), 4096),
            "a mix inside a unit"
        );
        assert!(
            !explains(&block_of(&format, 5, 2), 512),
            "older than the durable write"
        );
        assert!(
            !explains(&block_of(&format, 6, 3), 512),
            "another block's stamp"
        );
        // Without a zeroing pending, zeros where a durable write was are
        // not explained.
        let write = Pending::of_intent(4);
        assert!(!write.zeros);
        assert!(!pending_write_explains(
            &format,
            5,
            (3, 4),
            write.zeros,
            512,
            &zeros
        ));
    }

    #[test]
    fn a_pending_1_after_a_wrap_is_explained_by_32767_or_1_never_by_zeros() {
        use crate::manifest::GENERATION_MAX;
        use crate::manifest::journal::generation_before_pending;
        let format = RunFormat::new(7, 8192);
        // The journal reports no first write; the map says written.
        let before = generation_before_pending(1, 1);
        let explains =
            |bytes: &[u8]| pending_write_explains(&format, 5, (before, 1), false, 512, bytes);
        assert!(explains(&block_of(&format, 5, GENERATION_MAX)));
        assert!(explains(&block_of(&format, 5, 1)));
        assert!(!explains(&vec![0u8; 8192]), "zeros where 32767 was");
        assert!(!explains(&[0x77u8; 8192]), "foreign data where 32767 was");
        assert!(!explains(&block_of(&format, 5, GENERATION_MAX - 1)));
        // A first write: the journal reports a pending 0 before the 1.
        let fresh = generation_before_pending(0, 1);
        let explains =
            |bytes: &[u8]| pending_write_explains(&format, 5, (fresh, 1), false, 512, bytes);
        assert!(explains(&vec![0u8; 8192]));
        assert!(explains(&block_of(&format, 5, 1)));
        assert!(!explains(&block_of(&format, 5, GENERATION_MAX)));
    }
}
