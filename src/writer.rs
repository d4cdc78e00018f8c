//! The write phase: takes bursts from a workload, decides the stamp of
//! every block of every IO (the engine builds it in the thread that sends
//! the IO), carries them through an engine and records each completed
//! write in the manifest.
//!
//! Two invariants are defended here:
//!
//! - No two writes touching one block are ever in flight together. fio's
//!   verify can report false corruption when an overwrite races an earlier
//!   write of the same block (its issues #334 and #792); here a write waits
//!   until every earlier write of its blocks has completed, so the order of
//!   generations in the manifest is the order the device saw.
//! - Write-ahead: before a write is submitted, its intent is durable in the
//!   manifest's journal; an intent is released only once the write is
//!   durable on the target (FUA, or a flush after it completed). After a
//!   crash, verify knows exactly which writes the storage was free to lose.
//!   Intents are logged a batch of bursts ahead, one synced append per
//!   batch made on the journal's own thread while the batch before runs,
//!   so the IO thread rarely waits for it and the journal costs little
//!   throughput, whatever the sync policy: an intent of a write not yet
//!   submitted lets verify accept nothing the target could hold (see
//!   [`Writer::batch_entries`]). Releases (sync the map, then move the
//!   head) run on that thread too, so a flush costs the IO thread the
//!   target's flush and nothing of the manifest's.
//!
//! The writer's time and its stop request come in its options: a
//! [`Clock`] (the system's, or a manual one in tests and the selftest) and
//! a [`StopToken`] (the one signals fire, or one nobody fires).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::engine::{Completion, Engine, Io, IoKind};
use crate::error::{Error, Result};
use crate::manifest::journal::{BEFORE_ZEROS, FIRST_WRITE};
use crate::manifest::{
    BlockKind, BlockState, GENERATION_MAX, Manifest, OpKind, Pending, VALUE_MASK,
};
use crate::signals::StopToken;
use crate::stamp::WriteStamps;
use crate::storage::LossCounters;
use crate::storage::ZeroFlags;
use crate::workload::{Workload, WriteOp};

/// When writes are made durable (the README states the promise per policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// No flush while writing (unless the journal fills); one at the end.
    None,
    /// A flush after every burst has completed.
    Burst,
    /// A flush after every N writes.
    Every(u64),
}

#[derive(Clone, Debug)]
pub struct WriteOptions {
    pub sync: SyncPolicy,
    /// Write with Force Unit Access.
    pub fua: bool,
    /// Stop submitting after this long (time-based runs).
    pub duration: Option<Duration>,
    /// Pause between bursts.
    pub burst_gap: Duration,
    /// Use the write-ahead journal (off only to measure its cost).
    pub journal: bool,
    /// Read back the blocks of every N completed writes while writing
    /// (fio's verify_backlog; no read ever overlaps a write of its blocks).
    pub verify_backlog: Option<u64>,
    pub progress: Option<Arc<crate::progress::Counters>>,
    /// Where completed IOs' latencies and bytes are recorded.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Stop submitting once this fires (the outcome says `interrupted`).
    pub stop: StopToken,
    /// Time for the duration goal, burst gaps, header stores and the
    /// write time in every stamp.
    pub clock: Arc<dyn Clock>,
    /// The counters of a target that reconnects when lost: a write that
    /// completed on a connection since replaced is made durable only by
    /// writing it again (the old connection's volatile cache may have died
    /// with it), never by a flush on the new one.
    pub loss: Option<Arc<LossCounters>>,
    /// Asked before each new write whether to pause (a disruption that
    /// ended).
    pub pause: Option<PauseHook>,
    /// Where the rolling verify's findings are re-read as soon as they are
    /// found (before any later write of their blocks), and who is told of
    /// the persistent ones. None: left unconfirmed.
    pub confirm: Option<RollingConfirm>,
    /// Stop submitting once this fires, as for `stop`, but the outcome says
    /// `stopped_on_finding` (`--stop-on-finding`: a finding, not a signal).
    pub finding_stop: StopToken,
    /// The target offers fast write-zeroes (NBD `FAST_ZERO`): some of the
    /// workload's zeroings ask for it.
    pub fast_zero: bool,
}

/// The target the rolling verify's findings are re-read on, and the watch
/// told of the persistent ones.
#[derive(Clone)]
pub struct RollingConfirm {
    pub target: Arc<dyn crate::storage::Target>,
    pub watch: Option<crate::verify::Watcher>,
}

impl std::fmt::Debug for RollingConfirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RollingConfirm({:?})", self.watch)
    }
}

/// A pause asked for from outside the writer: a scheduled disruption of
/// the target that has ended (see [`crate::disrupt`]). Once it is due, no
/// new write is submitted (a burst under way waits) until it is over.
pub trait Pause: Send + Sync {
    /// Stop submitting and settle now?
    fn due(&self) -> bool;
    /// Something is under way the writer should not end before (a
    /// disruption's commands): a duration goal reached meanwhile waits.
    fn busy(&self) -> bool {
        false
    }
    /// Called with no IO in flight and every completed write recorded in
    /// the manifest. `pending`: the blocks whose latest writes the target
    /// has not yet made durable, with the oldest and newest such generation
    /// (the generation before the oldest, or any up to the newest, may be
    /// found). An error ends the write phase with it.
    fn paused(&self, manifest: &Manifest, pending: HashMap<u64, Pending>) -> Result<()>;
    /// Called once every write is durable again, before the next burst.
    fn resumed(&self);
}

/// A [`Pause`] in the options (which are `Clone` and `Debug`).
#[derive(Clone)]
pub struct PauseHook(pub Arc<dyn Pause>);

impl std::fmt::Debug for PauseHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PauseHook")
    }
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            sync: SyncPolicy::None,
            fua: false,
            duration: None,
            burst_gap: Duration::ZERO,
            journal: true,
            verify_backlog: None,
            progress: None,
            metrics: None,
            stop: StopToken::new(),
            clock: Arc::new(SystemClock),
            loss: None,
            pause: None,
            confirm: None,
            finding_stop: StopToken::new(),
            fast_zero: false,
        }
    }
}

/// What the write phase did.
#[derive(Clone, Debug, Default)]
pub struct WriteOutcome {
    pub writes: u64,
    pub blocks_written: u64,
    pub bytes_written: u64,
    /// Write-zeroes and discards completed, and the blocks they covered.
    pub zeroings: u64,
    pub blocks_zeroed: u64,
    pub discards: u64,
    pub blocks_discarded: u64,
    pub flushes: u64,
    /// Syncs of the manifest journal (one per batch of intents).
    pub journal_syncs: u64,
    pub elapsed: Duration,
    pub passes_completed: u64,
    pub interrupted: bool,
    /// `finding_stop` fired: the writing ended at a confirmed finding.
    pub stopped_on_finding: bool,
    /// Writes sent again because the connection they completed on was
    /// replaced before a flush covered them.
    pub rewrites: u64,
    /// Blocks read back by the rolling verify, and what it found.
    pub rolling_checked_blocks: u64,
    pub rolling_findings: Vec<crate::verify::Finding>,
}

impl WriteOutcome {
    pub fn bytes_per_second(&self) -> f64 {
        self.bytes_written as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn iops(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Maps keyed by block numbers and IO ids, which no one chooses to collide:
/// SipHash (std's default, built against hostile keys) cost more per IO
/// than the rest of the bookkeeping on page-cache targets.
type IntMap<V> = HashMap<u64, V, BuildHasherDefault<IntHasher>>;
type IntSet = HashSet<u64, BuildHasherDefault<IntHasher>>;

/// SplitMix64's finaliser over a u64 key: every bit of the key reaches the
/// low bits the table indexes by, so strided block numbers spread too.
#[derive(Default)]
struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        crate::rng::mix64(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// Intents logged per journal sync, at least (a batch is whole bursts,
/// however small they are: each sync is a flush of the manifest's
/// filesystem, which stalls the target's queue when both share a disk).
/// A big batch widens nothing (see [`Writer::batch_entries`]).
const INTENT_BATCH_ENTRIES: usize = 4096;

/// The most a batch grows to, in multiples of [`INTENT_BATCH_ENTRIES`],
/// where the journal's syncs are slow (see [`Writer::batch_entries`]).
const MAX_BATCH_SCALE: usize = 16;

/// Completed writes kept waiting for a flush, at most: past this the writer
/// flushes (without a journal, which bounds them otherwise, and without a
/// sync policy, nothing would), so what it remembers to write again after a
/// reconnect stays small.
const MAX_UNFLUSHED_WRITES: usize = 1 << 18;

/// A submitted write not yet known durable.
struct Submitted {
    /// Journal position just after its entries.
    journal_end: u64,
    /// Durable (a FUA write that completed).
    durable: bool,
    /// The target's connection (see [`LossCounters::epoch`]) it was last
    /// sent on.
    epoch: u64,
    op: WriteOp,
    /// Each block's intent, as [`Planned::generations`]; kept only where
    /// the writer may need them again (a target that reconnects, whose
    /// stale writes are sent again, or pauses, told what is not yet
    /// durable), else empty: one allocation less per write.
    generations: Vec<u32>,
    write_seq: u64,
    write_time_s: u32,
}

/// A write whose generations are decided and whose intent is logged.
struct Planned {
    op: WriteOp,
    /// Each block's journal intent: its state value after this operation
    /// (for a write, the generation it stamps; see [`BlockState::value`]),
    /// or'ed with the flags [`FIRST_WRITE`] (never written before) and
    /// [`BEFORE_ZEROS`] (it may have read zeros before). [`VALUE_MASK`]
    /// takes the value.
    generations: Vec<u32>,
    /// Journal position just after this write's entries.
    journal_end: u64,
    /// Its intents are still to be logged.
    unjournaled: bool,
}

enum InFlight {
    /// A write, and its slot among the submitted ones.
    Write(Planned, u64),
    /// A completed write sent again after its connection was replaced.
    Rewrite { op: WriteOp, slot: u64 },
    /// A rolling-verify read of blocks written earlier in this run, on
    /// connection `epoch`.
    Read {
        op: WriteOp,
        generations: Vec<u32>,
        epoch: u64,
    },
}

struct Writer<'a> {
    manifest: &'a mut Manifest,
    engine: &'a mut dyn Engine,
    options: &'a WriteOptions,
    outcome: WriteOutcome,
    in_flight: IntMap<InFlight>,
    blocks_in_flight: IntSet,
    /// Newest generation planned for a block whose write has not completed.
    planned_generation: IntMap<u32>,
    /// Every write submitted since the last flush, in submission order;
    /// [`Writer::submitted_base`] is the slot of the first.
    submitted: VecDeque<Submitted>,
    submitted_base: u64,
    next_id: u64,
    failure: Option<Error>,
    /// Completed writes not yet read back by the rolling verify, with the
    /// connection they were written on.
    backlog: Vec<(WriteOp, Vec<u32>, u64)>,
    /// Blocks of the planned writes not yet submitted ...
    planned_entries: usize,
    /// ... and of those whose intents are not yet logged.
    unjournaled_entries: usize,
    /// Batches are this many times [`INTENT_BATCH_ENTRIES`] (see
    /// [`Writer::batch_entries`]).
    batch_scale: usize,
}

/// Run the write phase to the end of the workload (or the duration, or
/// until the options' stop token fires).
pub fn write(
    manifest: &mut Manifest,
    engine: &mut dyn Engine,
    workload: &mut dyn Workload,
    options: &WriteOptions,
) -> Result<WriteOutcome> {
    let clock = options.clock.as_ref();
    let started = clock.now();
    manifest.begin_write()?;
    let mut writer = Writer {
        manifest,
        engine,
        options,
        outcome: WriteOutcome::default(),
        in_flight: IntMap::default(),
        blocks_in_flight: IntSet::default(),
        planned_generation: IntMap::default(),
        submitted: VecDeque::new(),
        submitted_base: 0,
        next_id: 0,
        failure: None,
        backlog: Vec::new(),
        planned_entries: 0,
        unjournaled_entries: 0,
        batch_scale: 1,
    };
    let mut planned: VecDeque<Vec<Planned>> = VecDeque::new();
    let mut burst = Vec::new();
    let mut workload_done = false;
    let mut writes_since_flush = 0u64;
    let mut last_header_store = clock.now();

    loop {
        let interrupted = options.stop.stop_requested();
        let on_finding = options.finding_stop.stop_requested();
        let pause = options.pause.as_ref().map(|p| p.0.as_ref());
        let time_up = options.duration.is_some_and(|d| clock.now() - started >= d)
            && !pause.is_some_and(|p| p.busy() || p.due());
        if interrupted || on_finding || time_up {
            writer.outcome.interrupted = interrupted;
            writer.outcome.stopped_on_finding = on_finding;
            break;
        }
        if let Some(pause) = pause
            && pause.due()
        {
            writer.pause(pause)?;
            if writer.failure.is_some() {
                break;
            }
            writes_since_flush = 0;
        }
        // Keep a batch planned ahead of the writes going out: its intents
        // become durable in the background while the batch before it runs.
        if !workload_done && writer.wants_batch() {
            workload_done = writer.plan_batch(workload, &mut burst, &mut planned)?;
        }
        if planned
            .front()
            .is_some_and(|b| b.iter().any(|w| w.unjournaled))
        {
            writer.journal_planned(&mut planned, true)?;
        }
        let Some(this_burst) = planned.pop_front() else {
            break;
        };
        writer.planned_entries -= this_burst
            .iter()
            .map(|w| w.generations.len())
            .sum::<usize>();
        let writes_in_burst = this_burst.len() as u64;
        // A burst goes out together: wait for room for all of it. The
        // previous burst is still on the submission queue: the engine sends
        // it with the same enter that waits (one system call per burst, as
        // fio makes one per IO), or right away when there is room already,
        // so two bursts never merge into one.
        let room_needed = this_burst.len().min(writer.engine.queue_depth());
        let free = |w: &Writer| w.engine.queue_depth() - w.engine.in_flight();
        loop {
            // Wait for exactly the completions still missing: one wait.
            writer.reap(room_needed.saturating_sub(free(&writer)))?;
            if free(&writer) >= room_needed || writer.failure.is_some() {
                break;
            }
        }
        let mut writes = this_burst.into_iter();
        let mut held = false;
        while let Some(write) = writes.next() {
            writer.wait_for_room(write.op)?;
            if writer.failure.is_some() {
                break;
            }
            if pause.is_some_and(|p| p.due()) {
                // A disruption ended: no new write goes out before its
                // verify (one could hide a durable write the disruption
                // lost). The rest of the burst waits for the pause.
                let rest: Vec<Planned> = std::iter::once(write).chain(writes).collect();
                writer.planned_entries += rest.iter().map(|w| w.generations.len()).sum::<usize>();
                planned.push_front(rest);
                held = true;
                break;
            }
            writer.submit(write)?;
            if writer.failure.is_some() {
                break;
            }
        }
        if held {
            continue;
        }
        writer.read_back_if_due()?;

        let flush_now = match options.sync {
            SyncPolicy::Burst => true,
            SyncPolicy::Every(n) => {
                writes_since_flush += writes_in_burst;
                writes_since_flush >= n
            }
            SyncPolicy::None => false,
        };
        let flush_now = flush_now || writer.submitted.len() >= MAX_UNFLUSHED_WRITES;
        if flush_now && writer.failure.is_none() {
            // Log the next batch now: its journal sync overlaps the flush.
            if !workload_done && writer.wants_batch() {
                workload_done = writer.plan_batch(workload, &mut burst, &mut planned)?;
            }
            writer.drain()?;
            writer.flush()?;
            writes_since_flush = 0;
        }
        if writer.failure.is_some() {
            break;
        }
        let now = clock.now();
        if now - last_header_store >= Duration::from_secs(5) {
            writer.manifest.persist_undo()?;
            writer.manifest.store_header()?;
            last_header_store = now;
        }
        if !options.burst_gap.is_zero() {
            writer.engine.kick().map_err(engine_error)?;
            clock.sleep(options.burst_gap);
        }
    }
    writer.drain()?;
    if let Some(error) = writer.failure.take() {
        // The target failed under us: leave the manifest marked as being
        // written, so its journal tells verify what may be missing.
        writer.manifest.persist_undo()?;
        writer.manifest.store_header()?;
        return Err(error);
    }
    writer.flush()?;
    let mut outcome = writer.outcome;
    outcome.elapsed = clock.now() - started;
    outcome.passes_completed = workload.passes_completed();
    manifest.header_mut().passes_completed += outcome.passes_completed;
    manifest.finish_write()?;
    Ok(outcome)
}

fn engine_error(e: std::io::Error) -> Error {
    Error::run(format!("IO engine failed: {e}"))
}

impl Writer<'_> {
    /// Take bursts from the workload until a batch is full, decide their
    /// generations and log their intents (see [`Writer::journal_planned`]).
    /// Returns true when the workload has no more.
    fn plan_batch(
        &mut self,
        workload: &mut dyn Workload,
        burst: &mut Vec<WriteOp>,
        planned: &mut VecDeque<Vec<Planned>>,
    ) -> Result<bool> {
        let journaling = self.journaling();
        let mut entries = 0usize;
        let mut done = false;
        while entries < self.batch_entries() {
            if !workload.next_burst(burst) {
                done = true;
                break;
            }
            let mut writes = Vec::with_capacity(burst.len());
            for op in burst.iter().copied() {
                let generations: Vec<u32> = (op.first_block..op.end())
                    .map(|block| {
                        let current = BlockState::from_value(
                            self.planned_generation
                                .get(&block)
                                .copied()
                                .unwrap_or_else(|| self.manifest.value(block)),
                        );
                        let mut flag = 0;
                        if current.generation == 0 {
                            flag |= FIRST_WRITE;
                        }
                        if current.kind != BlockKind::Data {
                            flag |= BEFORE_ZEROS;
                        }
                        let next = current.after(op.kind).value();
                        self.planned_generation.insert(block, next);
                        next | flag
                    })
                    .collect();
                entries += generations.len();
                writes.push(Planned {
                    op,
                    generations,
                    journal_end: 0,
                    unjournaled: journaling,
                });
            }
            planned.push_back(writes);
        }
        self.planned_entries += entries;
        if journaling {
            self.unjournaled_entries += entries;
            self.journal_planned(planned, false)?;
        }
        Ok(done)
    }

    fn journaling(&self) -> bool {
        self.options.journal && self.manifest.journal().is_some()
    }

    /// Intents per batch: [`INTENT_BATCH_ENTRIES`], or a quarter of a small
    /// journal, so a batch can be logged while the one before it is still
    /// pending.
    ///
    /// The same whatever the sync policy: an intent logged for a write not
    /// yet submitted names a generation the target cannot hold, so after a
    /// crash it lets verify accept nothing the block could show but its
    /// durable generation (and for a first write, what a never-written
    /// block may hold anyway). Logging far ahead of the flushes widens no
    /// window; logging only as far as the queue depth cost a synced append
    /// per few dozen writes, which on a disk with 50 ms flushes cost more
    /// than the writes. This holds for stamped writes only: an operation
    /// that leaves no stamp (write-zeroes, discard) lets verify accept the
    /// zeros it leaves, which a block can hold without it. Those intents go
    /// in the same batches all the same, and after a crash the blocks of
    /// zeroings logged but never sent (two batches at most) accept zeros
    /// (docs/FORMAT.md, "Log ahead"; docs/CONTRACT.md on crashes).
    ///
    /// Where a sync of the manifest takes longer than a batch's writes (a
    /// disk whose flushes cost tens of milliseconds, under a fast target),
    /// the writer would wait for every batch: each time it waits, batches
    /// double, up to [`MAX_BATCH_SCALE`] times, so the journal's syncs fall
    /// behind no more.
    fn batch_entries(&self) -> usize {
        let capacity = self.manifest.journal().map_or(u64::MAX, |j| j.capacity());
        (INTENT_BATCH_ENTRIES * self.batch_scale).min((capacity / 4).max(1) as usize)
    }

    /// Time to plan (and log) another batch? While less than a batch is
    /// planned, so the next batch's intents become durable while the one
    /// before it runs.
    fn wants_batch(&self) -> bool {
        self.planned_entries < self.batch_entries()
    }

    /// Log the intents of the planned writes not yet in the journal; the
    /// journal makes them durable in the background, and `submit` waits for
    /// that before each write. When the journal has no room, `must` makes
    /// room: every submitted write is completed and flushed, which releases
    /// its intent. Without `must` the intents wait for a later call.
    fn journal_planned(&mut self, planned: &mut VecDeque<Vec<Planned>>, must: bool) -> Result<()> {
        if self.unjournaled_entries == 0 {
            return Ok(());
        }
        let room = self
            .manifest
            .journal()
            .is_some_and(|j| j.has_room(self.unjournaled_entries as u64));
        if !room {
            if !must {
                return Ok(());
            }
            // The journal is full of writes not yet known durable: make
            // them durable so their intents can go.
            self.drain()?;
            self.flush()?;
        }
        let mut entries: Vec<(u64, u32)> = Vec::with_capacity(self.unjournaled_entries);
        for write in planned.iter().flatten().filter(|w| w.unjournaled) {
            let blocks = write.op.first_block..write.op.end();
            entries.extend(blocks.zip(write.generations.iter().copied()));
        }
        let mut position = self.manifest.journal().map_or(0, |j| j.tail());
        self.manifest.journal_append(&entries)?;
        self.outcome.journal_syncs += 1;
        for write in planned.iter_mut().flatten().filter(|w| w.unjournaled) {
            position += write.op.block_count as u64;
            write.journal_end = position;
            write.unjournaled = false;
        }
        self.unjournaled_entries = 0;
        Ok(())
    }

    /// Reap until the queue has room and no IO of `op`'s blocks is in
    /// flight (or an IO failed).
    fn wait_for_room(&mut self, op: WriteOp) -> Result<()> {
        while self.engine.in_flight() >= self.engine.queue_depth()
            || (op.first_block..op.end()).any(|b| self.blocks_in_flight.contains(&b))
        {
            self.reap(1)?;
            if self.failure.is_some() {
                return Ok(());
            }
        }
        Ok(())
    }

    fn submit(&mut self, mut write: Planned) -> Result<()> {
        let op = write.op;
        self.wait_for_room(op)?;
        if self.failure.is_some() {
            return Ok(());
        }
        // Its intent is durable before the write goes out (write-ahead).
        // The first batch is always waited for; a later wait means the
        // journal's syncs are slower than a batch of writes.
        if self.manifest.journal_wait(write.journal_end)? && self.outcome.writes > 0 {
            self.batch_scale = (self.batch_scale * 2).min(MAX_BATCH_SCALE);
        }
        let write_seq = self.manifest.header().next_write_seq;
        self.manifest.header_mut().next_write_seq += 1;
        let write_time_s = self.options.clock.unix_now_s() as u32;
        let slot = self.submitted_base + self.submitted.len() as u64;
        self.submitted.push_back(Submitted {
            journal_end: write.journal_end,
            durable: false,
            epoch: self.epoch(),
            op,
            generations: if self.options.loss.is_some() || self.options.pause.is_some() {
                write.generations.clone()
            } else {
                Vec::new()
            },
            write_seq,
            write_time_s,
        });
        // A write's generations travel with it as its stamps and come back
        // in its completion.
        let stamps = (op.kind == OpKind::Write).then(|| {
            let intents = std::mem::take(&mut write.generations);
            self.stamps(op, intents, write_seq, write_time_s)
        });
        let buf = self.io_buffer(op);
        self.send(op, buf, stamps, InFlight::Write(write, slot))
    }

    /// The stamps of write `op` whose blocks' intents are `intents`, for
    /// the engine to build in the thread that sends it (a zeroing or
    /// discard carries no data, and no stamps).
    fn stamps(
        &self,
        op: WriteOp,
        mut intents: Vec<u32>,
        write_seq: u64,
        write_time_s: u32,
    ) -> WriteStamps {
        for intent in &mut intents {
            *intent &= GENERATION_MAX;
        }
        WriteStamps {
            format: self.manifest.format(),
            first_block: op.first_block,
            generations: intents,
            write_seq,
            write_time_s,
        }
    }

    /// A buffer for all of `op`'s blocks (none for a zeroing or discard).
    fn io_buffer(&mut self, op: WriteOp) -> crate::buf::AlignedBuf {
        if op.kind != OpKind::Write {
            return crate::buf::AlignedBuf::new(0);
        }
        let length = self.manifest.header().block_size as usize * op.block_count as usize;
        let mut buf = self.engine.take_buffer(length);
        buf.set_len(length);
        buf
    }

    /// Claim `op`'s blocks (no other IO touches them until this one
    /// completes) and hand the IO to the engine.
    fn send(
        &mut self,
        op: WriteOp,
        buf: crate::buf::AlignedBuf,
        stamps: Option<WriteStamps>,
        entry: InFlight,
    ) -> Result<()> {
        let block_size = self.manifest.header().block_size as u64;
        let offset = op.first_block * block_size;
        let len = op.block_count as u64 * block_size;
        let kind = match (&entry, op.kind) {
            (InFlight::Read { .. }, _) => IoKind::Read { offset },
            (_, OpKind::Write) => IoKind::Write {
                offset,
                fua: self.options.fua,
            },
            (_, OpKind::Discard) => IoKind::Discard { offset, len },
            (_, OpKind::Zero) => IoKind::Zero {
                offset,
                len,
                zero: self.zero_flags(),
            },
        };
        self.blocks_in_flight.extend(op.first_block..op.end());
        let id = self.next_id;
        self.next_id += 1;
        self.engine
            .submit(Io {
                id,
                kind,
                buf,
                stamps,
            })
            .map_err(engine_error)?;
        self.in_flight.insert(id, entry);
        Ok(())
    }

    /// How the next zeroing is asked for: with and without leave to
    /// deallocate, and fast where the target offers it, in turn from the
    /// IO ids so a seed replays them.
    fn zero_flags(&self) -> ZeroFlags {
        let draw = crate::rng::mix64(self.next_id ^ self.manifest.header().run_id);
        ZeroFlags {
            unmap: draw & 1 == 0,
            fast: self.options.fast_zero && draw & 2 == 0,
        }
    }

    fn reap(&mut self, min: usize) -> Result<()> {
        let done = self.engine.complete(min).map_err(engine_error)?;
        self.absorb(done)
    }

    fn drain(&mut self) -> Result<()> {
        while self.engine.in_flight() > 0 {
            let count = self.engine.in_flight();
            self.reap(count)?;
        }
        Ok(())
    }

    /// The target's connection now (0 for one that cannot reconnect).
    fn epoch(&self) -> u64 {
        self.options.loss.as_ref().map_or(0, |l| l.epoch())
    }

    /// Make every write submitted so far durable (callers drain first) and
    /// release its intent: flush, and while a write was sent on a
    /// connection since replaced, write it again and flush again.
    fn flush(&mut self) -> Result<()> {
        loop {
            self.flush_target()?;
            let epoch = self.epoch();
            // Each stale write's blocks that no later write superseded
            // (that one is in the list itself), in runs of neighbours.
            let mut any_stale = false;
            let mut stale: Vec<(u64, WriteOp)> = Vec::new();
            for (i, entry) in self.submitted.iter_mut().enumerate() {
                if entry.durable || entry.epoch == epoch {
                    continue;
                }
                any_stale = true;
                // Sent again below on this connection; if it is lost too,
                // the epoch moves on and the next round sends it again.
                entry.epoch = epoch;
                let slot = self.submitted_base + i as u64;
                for (j, &intent) in entry.generations.iter().enumerate() {
                    let block = entry.op.first_block + j as u64;
                    if self.manifest.value(block) != intent & VALUE_MASK {
                        continue;
                    }
                    match stale.last_mut() {
                        Some((last, run)) if *last == slot && run.end() == block => {
                            run.block_count += 1;
                        }
                        _ => stale.push((
                            slot,
                            WriteOp {
                                first_block: block,
                                block_count: 1,
                                kind: entry.op.kind,
                            },
                        )),
                    }
                }
            }
            if !any_stale {
                break;
            }
            for (slot, run) in stale {
                self.rewrite(slot, run)?;
                if self.failure.is_some() {
                    break;
                }
            }
            self.drain()?;
            if let Some(error) = self.failure.take() {
                return Err(error);
            }
        }
        if let Some(last) = self.submitted.back() {
            self.manifest.journal_release(last.journal_end)?;
        }
        self.submitted_base += self.submitted.len() as u64;
        self.submitted.clear();
        Ok(())
    }

    /// Send the blocks `op` of the write in `slot` again, byte for byte,
    /// on the connection in use now.
    fn rewrite(&mut self, slot: u64, op: WriteOp) -> Result<()> {
        self.wait_for_room(op)?;
        if self.failure.is_some() {
            return Ok(());
        }
        // Reaping may have released durable writes ahead of it (FUA).
        let index = (slot - self.submitted_base) as usize;
        let buf = self.io_buffer(op);
        let entry = &self.submitted[index];
        let skip = (op.first_block - entry.op.first_block) as usize;
        // A zeroing or discard is issued again as it was (no buffer).
        let stamps = (op.kind == OpKind::Write).then(|| {
            let intents = entry.generations[skip..skip + op.block_count as usize].to_vec();
            self.stamps(op, intents, entry.write_seq, entry.write_time_s)
        });
        self.outcome.rewrites += 1;
        self.send(op, buf, stamps, InFlight::Rewrite { op, slot })
    }

    /// Blocks whose latest writes are not yet durable, with the oldest and
    /// newest such generation (see [`Pause::paused`]).
    fn not_yet_durable(&self) -> HashMap<u64, Pending> {
        let mut pending: HashMap<u64, Pending> = HashMap::new();
        for entry in self.submitted.iter().filter(|s| !s.durable) {
            for (i, &intent) in entry.generations.iter().enumerate() {
                let mut one = Pending::of_intent(intent);
                if intent & FIRST_WRITE != 0 {
                    one.merge(Pending::of_intent(0));
                }
                pending
                    .entry(entry.op.first_block + i as u64)
                    .and_modify(|p| p.merge(one))
                    .or_insert(one);
            }
        }
        pending
    }

    /// Settle for a pause: nothing in flight, the hook told what is not yet
    /// durable, then every write made durable (written again where its
    /// connection was replaced) before the next burst.
    fn pause(&mut self, pause: &dyn Pause) -> Result<()> {
        self.drain()?;
        if self.failure.is_some() {
            return Ok(());
        }
        let pending = self.not_yet_durable();
        if let Err(error) = pause.paused(self.manifest, pending) {
            // Ends the phase as a failed IO would: the journal keeps every
            // write not yet durable pending.
            self.failure = Some(error);
            return Ok(());
        }
        self.flush()?;
        pause.resumed();
        Ok(())
    }

    /// One flush of the target.
    fn flush_target(&mut self) -> Result<()> {
        let buf = self.engine.take_buffer(0);
        self.engine
            .submit(Io {
                id: u64::MAX,
                kind: IoKind::Flush,
                buf,
                stamps: None,
            })
            .map_err(engine_error)?;
        for completion in self.engine.complete(1).map_err(engine_error)? {
            if completion.id != u64::MAX {
                self.absorb(vec![completion])?;
                continue;
            }
            if let Err(e) = completion.result {
                return Err(Error::run(format!("flush failed: {e}")));
            }
            self.engine.recycle(completion.buf);
        }
        self.outcome.flushes += 1;
        Ok(())
    }

    /// Every `verify_backlog` completed writes, read their blocks back.
    /// A block written again since is skipped (its newer write will be
    /// checked in its turn), and while a read is in flight no write of its
    /// blocks is submitted: no read ever races a write.
    fn read_back_if_due(&mut self) -> Result<()> {
        let Some(every) = self.options.verify_backlog else {
            return Ok(());
        };
        if (self.backlog.len() as u64) < every || self.failure.is_some() {
            return Ok(());
        }
        for (op, generations, epoch) in std::mem::take(&mut self.backlog) {
            // Written on a connection since replaced: it may be lost
            // without fault, and is written again at the next flush.
            let current = epoch == self.epoch()
                && (op.first_block..op.end()).zip(&generations).all(|(b, &g)| {
                    self.manifest.value(b) == g && !self.blocks_in_flight.contains(&b)
                });
            if !current {
                continue;
            }
            while self.engine.in_flight() >= self.engine.queue_depth() {
                self.reap(1)?;
            }
            let buf = self.io_buffer(op);
            self.send(
                op,
                buf,
                None,
                InFlight::Read {
                    op,
                    generations,
                    epoch,
                },
            )?;
        }
        self.engine.kick().map_err(engine_error)
    }

    fn check_read_back(
        &mut self,
        op: WriteOp,
        generations: &[u32],
        epoch: u64,
        completion: Completion,
    ) {
        use crate::verify::{Classified, Expectation, Finding, FindingClass, classify};
        let format = self.manifest.format();
        let block_size = format.block_size as usize;
        for block in op.first_block..op.end() {
            self.blocks_in_flight.remove(&block);
        }
        if epoch != self.epoch() {
            // The connection the blocks were written on was replaced while
            // the read was out: what it read is no evidence either way.
            self.engine.recycle(completion.buf);
            return;
        }
        self.outcome.rolling_checked_blocks += op.block_count as u64;
        if let Some(metrics) = &self.options.metrics {
            metrics.record_read(completion.latency, completion.buf.len() as u64);
        }
        if let Err(e) = &completion.result {
            for (i, &generation) in generations.iter().enumerate() {
                let classified = Classified {
                    class: FindingClass::Unreadable,
                    found_generation: None,
                    found_block: None,
                    detail: format!("rolling verify read failed: {e}"),
                    torn_split: None,
                    corruption: None,
                };
                let block = op.first_block + i as u64;
                let finding =
                    Finding::from_read(block, format.block_size, generation, &[], classified);
                self.file_rolling_finding(finding);
            }
        } else {
            for (i, bytes) in completion.buf.chunks_exact(block_size).enumerate() {
                let block = op.first_block + i as u64;
                let generation = generations[i];
                if let Some(classified) =
                    classify(&format, Expectation { block, generation }, bytes)
                {
                    let finding =
                        Finding::from_read(block, format.block_size, generation, bytes, classified);
                    self.file_rolling_finding(finding);
                }
            }
        }
        self.engine.recycle(completion.buf);
    }

    /// Keep a rolling-verify finding, confirmed first: nothing writes its
    /// block before this returns (the read-back held it, and nothing is
    /// submitted meanwhile), so the re-read sees what the medium holds.
    fn file_rolling_finding(&mut self, mut finding: crate::verify::Finding) {
        if let Some(confirm) = &self.options.confirm {
            finding.confirm(confirm.target.as_ref(), &self.manifest.format());
            if finding.persistent
                && let Some(watch) = &confirm.watch
            {
                watch.confirmed(&finding);
            }
        }
        self.outcome.rolling_findings.push(finding);
    }

    /// The connection the write in `slot` was last sent on.
    fn submitted_epoch(&self, slot: u64) -> u64 {
        slot.checked_sub(self.submitted_base)
            .and_then(|i| self.submitted.get(i as usize))
            .map_or_else(|| self.epoch(), |s| s.epoch)
    }

    /// A FUA write in `slot` completed: durable. Release the journal up to
    /// the first write still outstanding.
    fn mark_durable(&mut self, slot: u64, released: &mut Option<u64>) {
        if let Some(entry) = slot
            .checked_sub(self.submitted_base)
            .and_then(|i| self.submitted.get_mut(i as usize))
        {
            entry.durable = true;
        }
        while self.submitted.front().is_some_and(|s| s.durable) {
            let entry = self.submitted.pop_front().expect("front exists");
            *released = Some(entry.journal_end);
            self.submitted_base += 1;
        }
    }

    fn fail_write(&mut self, op: WriteOp, e: std::io::Error) {
        if self.failure.is_none() {
            let block_size = self.manifest.header().block_size as u64;
            self.failure = Some(Error::run(format!(
                "write of block {} (offset {}) failed: {e}; the run stopped, and verify will accept either generation for writes that were in flight",
                op.first_block,
                op.first_block * block_size
            )));
        }
    }

    /// Record completed writes in the manifest.
    fn absorb(&mut self, completions: Vec<Completion>) -> Result<()> {
        let mut released = None;
        for completion in completions {
            let (mut write, slot) = match self.in_flight.remove(&completion.id) {
                Some(InFlight::Write(write, slot)) => (write, slot),
                Some(InFlight::Read {
                    op,
                    generations,
                    epoch,
                }) => {
                    self.check_read_back(op, &generations, epoch, completion);
                    continue;
                }
                Some(InFlight::Rewrite { op, slot }) => {
                    for block in op.first_block..op.end() {
                        self.blocks_in_flight.remove(&block);
                    }
                    match completion.result {
                        Ok(()) => {
                            if self.options.fua {
                                self.mark_durable(slot, &mut released);
                            }
                            self.engine.recycle(completion.buf);
                        }
                        Err(e) => self.fail_write(op, e),
                    }
                    continue;
                }
                None => continue,
            };
            if let Some(stamps) = completion.stamps {
                write.generations = stamps.generations;
            }
            let op = write.op;
            for block in op.first_block..op.end() {
                self.blocks_in_flight.remove(&block);
            }
            match completion.result {
                Ok(()) => {
                    for (i, intent) in write.generations.iter_mut().enumerate() {
                        // The value alone from here on (the read-back's).
                        *intent &= VALUE_MASK;
                        let block = op.first_block + i as u64;
                        self.manifest.set_generation(block, *intent);
                        if self.planned_generation.get(&block) == Some(intent) {
                            self.planned_generation.remove(&block);
                        }
                    }
                    self.manifest.header_mut().writes_completed += 1;
                    match op.kind {
                        OpKind::Write => {
                            if self.options.verify_backlog.is_some() {
                                let epoch = self.submitted_epoch(slot);
                                self.backlog.push((op, write.generations.clone(), epoch));
                            }
                            self.outcome.writes += 1;
                            self.outcome.blocks_written += op.block_count as u64;
                            self.outcome.bytes_written += completion.buf.len() as u64;
                            if let Some(progress) = &self.options.progress {
                                progress.add(completion.buf.len() as u64);
                            }
                            if let Some(metrics) = &self.options.metrics {
                                metrics
                                    .record_write(completion.latency, completion.buf.len() as u64);
                            }
                        }
                        OpKind::Zero => {
                            self.outcome.zeroings += 1;
                            self.outcome.blocks_zeroed += op.block_count as u64;
                        }
                        OpKind::Discard => {
                            self.outcome.discards += 1;
                            self.outcome.blocks_discarded += op.block_count as u64;
                        }
                    }
                    if self.options.fua {
                        self.mark_durable(slot, &mut released);
                    }
                    self.engine.recycle(completion.buf);
                }
                Err(e) => self.fail_write(op, e),
            }
        }
        if let Some(end) = released.filter(|&end| end > 0) {
            self.manifest.journal_release(end)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;
    use std::time::Instant;

    use super::*;
    use crate::clock::ManualClock;
    use crate::engine::inline::InlineEngine;
    use crate::manifest::journal::journal_bytes_for;
    use crate::manifest::{NewManifest, TargetRecord};
    use crate::stamp::{PAYLOAD_BYTES, SECTOR_BYTES, SectorContent, decode_sector};
    use crate::storage::file::FileTarget;
    use crate::storage::{OpenRequest, Target};
    use crate::workload::{BurstPlan, BurstWorkload, Scatter};

    const BLOCK_SIZE: u32 = 4096;
    const BLOCKS: u64 = 64;
    const BURST: usize = 4;
    const RUN_ID: u64 = 0x7e57;

    /// A scratch image and its manifest, written on the inline engine.
    struct Scratch {
        _dir: tempfile::TempDir,
        image: PathBuf,
        manifest: Manifest,
        engine: InlineEngine,
    }

    fn scratch() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("img");
        let request = OpenRequest {
            write: true,
            create_size: Some(BLOCKS * BLOCK_SIZE as u64),
            direct: false,
            force: false,
        };
        let target: Arc<dyn Target> = Arc::new(FileTarget::open(&image, "img", &request).unwrap());
        let manifest = Manifest::create(
            &dir.path().join("manifest"),
            NewManifest {
                run_id: RUN_ID,
                seed: 1,
                block_size: BLOCK_SIZE,
                random_bytes: PAYLOAD_BYTES as u16,
                dedup_permille: 0,
                journal_bytes: journal_bytes_for(BLOCKS),
                target: TargetRecord::from_info(target.info()),
            },
        )
        .unwrap();
        Scratch {
            _dir: dir,
            image,
            manifest,
            engine: InlineEngine::new(target, 8),
        }
    }

    /// Every block once per pass (forever with `passes` None), in bursts of
    /// [`BURST`] single-block writes.
    fn workload(passes: Option<u64>) -> BurstWorkload {
        BurstWorkload::new(BurstPlan {
            block_count: BLOCKS,
            burst: BURST,
            scatter: Scatter::Random,
            io_blocks: (1, 1),
            overwrite: 0.0,
            coverage: 1.0,
            passes,
            seed: 7,
            discard: 0.0,
            zero: 0.0,
        })
    }

    impl Scratch {
        fn write(&mut self, workload: &mut dyn Workload, options: &WriteOptions) -> WriteOutcome {
            write(&mut self.manifest, &mut self.engine, workload, options).unwrap()
        }

        /// The write time of every stamp of this run on the image.
        fn stamped_times(&self) -> BTreeSet<u32> {
            std::fs::read(&self.image)
                .unwrap()
                .chunks_exact(SECTOR_BYTES)
                .filter_map(|sector| match decode_sector(sector) {
                    SectorContent::Stamp(stamp) if stamp.run_id == RUN_ID => {
                        Some(stamp.write_time_s)
                    }
                    _ => None,
                })
                .collect()
        }
    }

    /// Hands out bursts, and fires `stop` once it has handed out `bursts`.
    struct StopAfter {
        inner: BurstWorkload,
        stop: StopToken,
        bursts: u64,
    }

    impl Workload for StopAfter {
        fn next_burst(&mut self, burst: &mut Vec<WriteOp>) -> bool {
            if self.bursts == 0 {
                self.stop.stop();
            }
            self.bursts = self.bursts.saturating_sub(1);
            self.inner.next_burst(burst)
        }
    }

    #[test]
    fn a_stop_fired_before_the_first_burst_writes_nothing_and_says_interrupted() {
        let mut scratch = scratch();
        let options = WriteOptions {
            stop: StopToken::new(),
            ..WriteOptions::default()
        };
        options.stop.stop();
        let outcome = scratch.write(&mut workload(Some(1)), &options);
        assert!(outcome.interrupted);
        assert_eq!((outcome.writes, outcome.bytes_written), (0, 0));
        assert_eq!(scratch.manifest.count_written(), 0);
        assert!(
            std::fs::read(&scratch.image)
                .unwrap()
                .iter()
                .all(|&b| b == 0),
            "nothing reached the image"
        );
    }

    #[test]
    fn a_stop_fired_mid_run_ends_it_with_every_completed_write_recorded() {
        let mut scratch = scratch();
        let stop = StopToken::new();
        let options = WriteOptions {
            stop: stop.clone(),
            ..WriteOptions::default()
        };
        let mut workload = StopAfter {
            inner: workload(Some(1)),
            stop,
            bursts: 2,
        };
        let outcome = scratch.write(&mut workload, &options);
        assert!(outcome.interrupted);
        assert!(outcome.writes > 0 && outcome.writes < BLOCKS, "{outcome:?}");
        assert_eq!(scratch.manifest.count_written(), outcome.blocks_written);
    }

    #[test]
    fn no_one_fires_the_default_token() {
        let mut scratch = scratch();
        let outcome = scratch.write(&mut workload(Some(2)), &WriteOptions::default());
        assert!(!outcome.interrupted);
        assert_eq!(outcome.writes, 2 * BLOCKS);
        assert_eq!(outcome.passes_completed, 2);
    }

    #[test]
    fn a_duration_run_ends_when_the_clock_says() {
        let mut scratch = scratch();
        // Each reading of the clock moves it a second on: the 10 s goal is
        // reached after a handful of bursts, in no time at all.
        let clock = Arc::new(ManualClock::new(1_700_000_000).with_step(Duration::from_secs(1)));
        let options = WriteOptions {
            duration: Some(Duration::from_secs(10)),
            clock: clock.clone(),
            ..WriteOptions::default()
        };
        let really_started = Instant::now();
        let outcome = scratch.write(&mut workload(None), &options);
        assert!(really_started.elapsed() < Duration::from_secs(60));
        assert!(!outcome.interrupted, "the goal is not an interruption");
        assert!(
            outcome.writes > 0 && outcome.writes < 10 * BURST as u64,
            "{outcome:?}"
        );
        assert!(outcome.elapsed >= Duration::from_secs(10), "{outcome:?}");
    }

    #[test]
    fn burst_gaps_pass_on_the_clock_and_stamps_carry_its_time() {
        let mut scratch = scratch();
        let clock = Arc::new(ManualClock::new(1_700_000_000));
        let gap = Duration::from_secs(3600);
        let options = WriteOptions {
            burst_gap: gap,
            clock: clock.clone(),
            ..WriteOptions::default()
        };
        let really_started = Instant::now();
        let outcome = scratch.write(&mut workload(Some(1)), &options);
        assert!(
            really_started.elapsed() < Duration::from_secs(60),
            "an hour's gap between bursts is not slept for real"
        );
        let bursts = BLOCKS / BURST as u64;
        assert_eq!(outcome.writes, BLOCKS);
        assert_eq!(clock.elapsed(), gap * bursts as u32);
        assert_eq!(outcome.elapsed, gap * bursts as u32);
        // Burst k is stamped k hours after the first.
        let expected: BTreeSet<u32> = (0..bursts as u32)
            .map(|k| 1_700_000_000 + 3600 * k)
            .collect();
        assert_eq!(scratch.stamped_times(), expected);
    }

    /// A target with a volatile write cache: writes reach `durable` only
    /// on a flush (or with FUA); a power cut drops the cache and, as a
    /// reconnecting target does, starts a new connection epoch.
    struct VolatileTarget {
        info: crate::storage::TargetInfo,
        durable: std::sync::Mutex<Vec<u8>>,
        cache: std::sync::Mutex<HashMap<u64, Vec<u8>>>,
        counters: Arc<LossCounters>,
        /// Writes until the power is cut (never at `u64::MAX`).
        cut_in: std::sync::atomic::AtomicU64,
        /// Writes the cut dropped.
        lost: std::sync::atomic::AtomicUsize,
    }

    impl VolatileTarget {
        fn new(bytes: u64, cut_in: u64) -> VolatileTarget {
            VolatileTarget {
                info: crate::storage::TargetInfo {
                    uri: "volatile".into(),
                    kind: crate::storage::TargetKind::File,
                    size_bytes: bytes,
                    logical_sector_size: 512,
                    physical_sector_size: 512,
                    direct_io: true,
                    read_only: false,
                    supports_fua: true,
                    identity: Default::default(),
                },
                durable: std::sync::Mutex::new(vec![0; bytes as usize]),
                cache: std::sync::Mutex::new(HashMap::new()),
                counters: Arc::new(LossCounters::default()),
                cut_in: std::sync::atomic::AtomicU64::new(cut_in),
                lost: std::sync::atomic::AtomicUsize::new(0),
            }
        }

        /// Power cut: the cache is gone; the target comes back at once.
        fn cut(&self) {
            let lost = std::mem::take(&mut *self.cache.lock().unwrap());
            self.counters.next_epoch();
            self.lost
                .fetch_add(lost.len(), std::sync::atomic::Ordering::SeqCst);
        }

        /// The generation each block durably holds (0: none of this run).
        fn durable_generations(&self) -> Vec<u32> {
            self.durable
                .lock()
                .unwrap()
                .chunks_exact(BLOCK_SIZE as usize)
                .map(|block| match decode_sector(&block[..SECTOR_BYTES]) {
                    SectorContent::Stamp(stamp) if stamp.run_id == RUN_ID => stamp.generation,
                    _ => 0,
                })
                .collect()
        }
    }

    impl Target for VolatileTarget {
        fn info(&self) -> &crate::storage::TargetInfo {
            &self.info
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            let start = offset as usize;
            buf.copy_from_slice(&self.durable.lock().unwrap()[start..start + buf.len()]);
            for (block, bytes) in self.cache.lock().unwrap().iter() {
                let at = (*block * BLOCK_SIZE as u64) as usize;
                if at >= start && at < start + buf.len() {
                    buf[at - start..at - start + bytes.len()].copy_from_slice(bytes);
                }
            }
            Ok(())
        }
        fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> std::io::Result<()> {
            use std::sync::atomic::Ordering::SeqCst;
            // One cut, before write number `cut_in`; then never again.
            match self.cut_in.load(SeqCst) {
                0 => {
                    self.cut_in.store(u64::MAX, SeqCst);
                    self.cut();
                }
                u64::MAX => {}
                n => self.cut_in.store(n - 1, SeqCst),
            }
            for (i, block) in buf.chunks_exact(BLOCK_SIZE as usize).enumerate() {
                let number = offset / BLOCK_SIZE as u64 + i as u64;
                if fua {
                    let at = (number * BLOCK_SIZE as u64) as usize;
                    self.durable.lock().unwrap()[at..at + block.len()].copy_from_slice(block);
                    self.cache.lock().unwrap().remove(&number);
                } else {
                    self.cache.lock().unwrap().insert(number, block.to_vec());
                }
            }
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            let cache = std::mem::take(&mut *self.cache.lock().unwrap());
            let mut durable = self.durable.lock().unwrap();
            for (number, block) in cache {
                let at = (number * BLOCK_SIZE as u64) as usize;
                durable[at..at + block.len()].copy_from_slice(&block);
            }
            Ok(())
        }
        fn loss_counters(&self) -> Option<Arc<LossCounters>> {
            Some(Arc::clone(&self.counters))
        }
    }

    /// Write two passes over a volatile target whose power is cut before
    /// its write number `cut_in`; the durable generations, the manifest's,
    /// the outcome and how many writes the cut dropped.
    fn write_across_a_power_cut(
        fua: bool,
        cut_in: u64,
    ) -> (Vec<u32>, Vec<u32>, WriteOutcome, usize) {
        let dir = tempfile::tempdir().unwrap();
        let target = Arc::new(VolatileTarget::new(BLOCKS * BLOCK_SIZE as u64, cut_in));
        let mut manifest = Manifest::create(
            &dir.path().join("manifest"),
            NewManifest {
                run_id: RUN_ID,
                seed: 1,
                block_size: BLOCK_SIZE,
                random_bytes: PAYLOAD_BYTES as u16,
                dedup_permille: 0,
                journal_bytes: journal_bytes_for(BLOCKS),
                target: TargetRecord::from_info(target.info()),
            },
        )
        .unwrap();
        let mut engine = InlineEngine::new(Arc::clone(&target) as Arc<dyn Target>, 8);
        let mut workload = workload(Some(2));
        let options = WriteOptions {
            fua,
            loss: target.loss_counters(),
            ..WriteOptions::default()
        };
        let outcome = write(&mut manifest, &mut engine, &mut workload, &options).unwrap();
        let expected = (0..BLOCKS).map(|b| manifest.generation(b)).collect();
        (
            target.durable_generations(),
            expected,
            outcome,
            target.lost.load(std::sync::atomic::Ordering::SeqCst),
        )
    }

    #[test]
    fn writes_a_power_cut_dropped_from_a_volatile_cache_are_written_again() {
        // Cut mid-way through the second pass: every block was written, and
        // the writes since the start (no flush yet) sat in the cache.
        let (durable, expected, outcome, lost) = write_across_a_power_cut(false, 100);
        assert!(lost > 0, "the cut dropped writes");
        assert_eq!(
            durable, expected,
            "every block durably holds its latest write"
        );
        assert_eq!(lost as u64, BLOCKS, "nothing was flushed before the cut");
        // Writes 0..=100 were sent before the cut (the cut came inside
        // write 100, which then landed on the new connection); the 27 after
        // it rewrote 27 blocks of the second pass. The other 37 blocks'
        // latest writes are the ones sent again, once each.
        let sent_after = 2 * BLOCKS - 101;
        assert_eq!(outcome.rewrites, BLOCKS - sent_after, "{outcome:?}");
        assert_eq!(
            outcome.writes,
            2 * BLOCKS,
            "rewrites are not counted as writes"
        );
    }

    #[test]
    fn fua_writes_are_durable_when_they_complete_and_never_written_again() {
        let (durable, expected, outcome, lost) = write_across_a_power_cut(true, 100);
        assert_eq!(lost, 0, "FUA writes never sit in the cache");
        assert_eq!(durable, expected);
        assert_eq!(outcome.rewrites, 0);
    }

    #[test]
    fn without_a_cut_nothing_is_written_again() {
        let (durable, expected, outcome, _) = write_across_a_power_cut(false, u64::MAX);
        assert_eq!(durable, expected);
        assert_eq!(outcome.rewrites, 0);
    }

    /// Due from its `at`-th question until the writer resumes; remembers
    /// how many blocks were written when the writer paused.
    struct PauseAt {
        asked: std::sync::atomic::AtomicU64,
        at: u64,
        resumed: std::sync::atomic::AtomicBool,
        written_at_pause: std::sync::Mutex<Vec<u64>>,
    }

    impl Pause for PauseAt {
        fn due(&self) -> bool {
            use std::sync::atomic::Ordering::SeqCst;
            !self.resumed.load(SeqCst) && self.asked.fetch_add(1, SeqCst) + 1 >= self.at
        }

        fn paused(&self, manifest: &Manifest, pending: HashMap<u64, Pending>) -> Result<()> {
            assert!(pending.values().all(|p| p.oldest <= p.newest));
            self.written_at_pause
                .lock()
                .unwrap()
                .push(manifest.count_written());
            Ok(())
        }

        fn resumed(&self) {
            self.resumed
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Writes to an image file, with one block corrupted by every write
    /// that reaches it (a byte of its payload flipped on the way).
    struct CorruptingTarget {
        inner: Arc<dyn Target>,
        block: u64,
    }

    impl Target for CorruptingTarget {
        fn info(&self) -> &crate::storage::TargetInfo {
            self.inner.info()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            self.inner.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> std::io::Result<()> {
            let at = self.block * BLOCK_SIZE as u64;
            if (offset..offset + buf.len() as u64).contains(&at) {
                let mut bytes = buf.to_vec();
                bytes[(at - offset) as usize + 1000] ^= 0xff;
                return self.inner.write_at(&bytes, offset, fua);
            }
            self.inner.write_at(buf, offset, fua)
        }
        fn flush(&self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }

    /// A watch that fires `stop` at every confirmed finding it is told of.
    struct StopOnFinding {
        stop: StopToken,
        told: std::sync::Mutex<Vec<(u64, &'static str)>>,
    }

    impl crate::verify::FindingWatch for StopOnFinding {
        fn wants(&self, _: &crate::verify::Finding, _: &'static str) -> bool {
            true
        }
        fn confirmed(&self, finding: &crate::verify::Finding, source: &'static str) {
            self.told.lock().unwrap().push((finding.block, source));
            self.stop.stop();
        }
    }

    #[test]
    fn a_pause_due_in_the_middle_of_a_burst_is_taken_before_the_next_write() {
        let mut scratch = scratch();
        // Asked at the top of the loop, then before each write: the third
        // question comes after the first write of the first burst.
        let pause = Arc::new(PauseAt {
            asked: Default::default(),
            at: 3,
            resumed: Default::default(),
            written_at_pause: Default::default(),
        });
        let options = WriteOptions {
            pause: Some(PauseHook(pause.clone())),
            ..WriteOptions::default()
        };
        let outcome = scratch.write(&mut workload(Some(1)), &options);
        let written_at_pause = pause.written_at_pause.lock().unwrap().clone();
        assert_eq!(written_at_pause.len(), 1, "paused once");
        assert!(
            (1..BURST as u64).contains(&written_at_pause[0]),
            "the burst went on after the pause was due: {written_at_pause:?} block(s) written at the pause"
        );
        // The rest of the burst went out after the pause: nothing skipped.
        assert_eq!(outcome.writes, BLOCKS);
        assert_eq!(scratch.manifest.count_written(), BLOCKS);
    }

    /// Moves the target to a new connection (as a reconnect would) at its
    /// `at`-th question: the writer asks before each write; never due.
    struct ReconnectAt {
        asked: std::sync::atomic::AtomicU64,
        at: u64,
        loss: Arc<LossCounters>,
    }

    impl Pause for ReconnectAt {
        fn due(&self) -> bool {
            if self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.at {
                self.loss.next_epoch();
            }
            false
        }

        fn paused(&self, _: &Manifest, _: HashMap<u64, Pending>) -> Result<()> {
            unreachable!("never due")
        }

        fn resumed(&self) {}
    }

    #[test]
    fn writes_sent_again_after_a_reconnect_never_take_a_block_back_to_an_older_generation() {
        let mut scratch = scratch();
        let loss = Arc::new(LossCounters::default());
        // Two passes and no flush before the end: the first pass goes out
        // on the first connection, the second on the next (asked once at
        // the top of the loop and once per write: 5 questions a burst).
        let bursts = BLOCKS / BURST as u64;
        let reconnect = ReconnectAt {
            asked: Default::default(),
            at: bursts * (BURST as u64 + 1) + 1,
            loss: Arc::clone(&loss),
        };
        let options = WriteOptions {
            loss: Some(loss),
            pause: Some(PauseHook(Arc::new(reconnect))),
            ..WriteOptions::default()
        };
        let outcome = scratch.write(&mut workload(Some(2)), &options);
        let image = std::fs::read(&scratch.image).unwrap();
        for (block, bytes) in image.chunks_exact(BLOCK_SIZE as usize).enumerate() {
            let generations: BTreeSet<u32> = bytes
                .chunks_exact(SECTOR_BYTES)
                .map(|sector| match decode_sector(sector) {
                    SectorContent::Stamp(stamp) => stamp.generation,
                    _ => panic!("block {block}: not a stamp"),
                })
                .collect();
            assert_eq!(
                generations,
                BTreeSet::from([2]),
                "block {block} holds an older write than its newest ({} rewrites)",
                outcome.rewrites
            );
        }
        // The second pass, sent on the new connection, superseded the
        // first block by block: nothing needed sending again.
        assert_eq!(outcome.rewrites, 0, "{outcome:?}");
    }

    #[test]
    fn a_confirmed_rolling_finding_fires_the_finding_stop_and_the_write_ends_cleanly() {
        let mut scratch = scratch();
        let file: Arc<dyn Target> = Arc::new(
            FileTarget::open(
                &scratch.image,
                "img",
                &OpenRequest {
                    write: true,
                    create_size: None,
                    direct: false,
                    force: false,
                },
            )
            .unwrap(),
        );
        let target: Arc<dyn Target> = Arc::new(CorruptingTarget {
            inner: file,
            block: 5,
        });
        let mut engine = InlineEngine::new(Arc::clone(&target), 8);
        let finding_stop = StopToken::new();
        let watch = Arc::new(StopOnFinding {
            stop: finding_stop.clone(),
            told: Default::default(),
        });
        let options = WriteOptions {
            verify_backlog: Some(4),
            confirm: Some(RollingConfirm {
                target: Arc::clone(&target),
                watch: Some(crate::verify::Watcher::new(watch.clone(), "rolling_verify")),
            }),
            finding_stop,
            ..WriteOptions::default()
        };
        let outcome = write(
            &mut scratch.manifest,
            &mut engine,
            &mut workload(Some(4)),
            &options,
        )
        .unwrap();
        assert!(outcome.stopped_on_finding && !outcome.interrupted);
        assert!(outcome.writes < 4 * BLOCKS, "stopped early: {outcome:?}");
        assert_eq!(*watch.told.lock().unwrap(), [(5, "rolling_verify")]);
        let found: Vec<(u64, crate::verify::FindingClass, bool)> = outcome
            .rolling_findings
            .iter()
            .map(|f| (f.block, f.classified.class, f.persistent))
            .collect();
        assert_eq!(found, [(5, crate::verify::FindingClass::Corrupt, true)]);
        // Stopped as on a signal: every completed write recorded, the
        // manifest closed.
        assert_eq!(scratch.manifest.count_written(), outcome.blocks_written);
        assert_eq!(
            scratch.manifest.header().state,
            crate::manifest::ManifestState::Clean
        );
    }
}
