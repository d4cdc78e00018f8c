//! The write phase: takes bursts from a workload, stamps every block of
//! every IO, carries them through an engine and records each completed
//! write in the manifest.
//!
//! Invariant defended here: no two writes touching one block are ever in
//! flight together. fio's verify can report false corruption when an
//! overwrite races an earlier write of the same block (its issues #334 and
//! #792); here a write waits until every earlier write of its blocks has
//! completed, so the manifest's generation order is the device's order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{Completion, Engine, Io, IoKind};
use crate::error::{Error, Result};
use crate::manifest::{Manifest, next_generation, unix_now_s};
use crate::metrics::Metrics;
use crate::stamp::{self, WriteStamp};
use crate::workload::{Workload, WriteOp};

/// When writes are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// One flush at the end of the run.
    End,
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
    /// Where completed writes' latencies and bytes are recorded.
    pub metrics: Option<Arc<Metrics>>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            sync: SyncPolicy::End,
            fua: false,
            duration: None,
            burst_gap: Duration::ZERO,
            metrics: None,
        }
    }
}

/// What the write phase did.
#[derive(Clone, Debug, Default)]
pub struct WriteOutcome {
    pub writes: u64,
    pub blocks_written: u64,
    pub bytes_written: u64,
    pub flushes: u64,
    pub elapsed: Duration,
    pub passes_completed: u64,
    pub interrupted: bool,
}

impl WriteOutcome {
    pub fn bytes_per_second(&self) -> f64 {
        self.bytes_written as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn iops(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Pending {
    op: WriteOp,
    /// Generation written to each block of the op.
    generations: Vec<u32>,
}

/// Run the write phase to the end of the workload (or the duration).
pub fn write(
    manifest: &mut Manifest,
    engine: &mut dyn Engine,
    workload: &mut dyn Workload,
    options: &WriteOptions,
) -> Result<WriteOutcome> {
    let format = manifest.format();
    let block_size = format.block_size as usize;
    let started = Instant::now();
    let mut outcome = WriteOutcome::default();
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut blocks_in_flight: HashSet<u64> = HashSet::new();
    let mut next_id = 0u64;
    let mut writes_since_flush = 0u64;
    let mut burst = Vec::new();
    let mut last_header_store = Instant::now();
    let mut failure: Option<Error> = None;

    manifest.begin_write()?;
    'bursts: while workload.next_burst(&mut burst) {
        for op in burst.iter().copied() {
            if crate::signals::stop_requested()
                || options.duration.is_some_and(|d| started.elapsed() >= d)
            {
                outcome.interrupted = crate::signals::stop_requested();
                break 'bursts;
            }
            // Wait for room in the queue and for earlier writes of these blocks.
            while engine.in_flight() >= engine.queue_depth()
                || (op.first_block..op.first_block + op.block_count as u64)
                    .any(|b| blocks_in_flight.contains(&b))
            {
                let done = engine.complete(1).map_err(engine_error)?;
                absorb(
                    manifest,
                    engine,
                    done,
                    &mut pending,
                    &mut blocks_in_flight,
                    &mut outcome,
                    &mut failure,
                    options.metrics.as_deref(),
                );
            }
            if failure.is_some() {
                break 'bursts;
            }
            let write_seq = manifest.header().next_write_seq;
            manifest.header_mut().next_write_seq += 1;
            let write_time_s = unix_now_s() as u32;
            let mut buf = engine.take_buffer(block_size * op.block_count as usize);
            buf.set_len(block_size * op.block_count as usize);
            let mut generations = Vec::with_capacity(op.block_count as usize);
            for (i, chunk) in buf.chunks_exact_mut(block_size).enumerate() {
                let block = op.first_block + i as u64;
                let generation = next_generation(manifest.generation(block));
                stamp::build_block(
                    &format,
                    &WriteStamp {
                        block,
                        generation,
                        write_seq,
                        write_time_s,
                    },
                    chunk,
                );
                generations.push(generation);
                blocks_in_flight.insert(block);
            }
            let id = next_id;
            next_id += 1;
            let offset = op.first_block * block_size as u64;
            engine
                .submit(Io {
                    id,
                    kind: IoKind::Write {
                        offset,
                        fua: options.fua,
                    },
                    buf,
                })
                .map_err(engine_error)?;
            pending.insert(id, Pending { op, generations });
        }
        engine.kick().map_err(engine_error)?;
        let done = engine.complete(0).map_err(engine_error)?;
        absorb(
            manifest,
            engine,
            done,
            &mut pending,
            &mut blocks_in_flight,
            &mut outcome,
            &mut failure,
            options.metrics.as_deref(),
        );

        let barrier = workload.at_barrier();
        let flush_now = match options.sync {
            SyncPolicy::Burst => true,
            SyncPolicy::Every(n) => {
                writes_since_flush += burst.len() as u64;
                writes_since_flush >= n
            }
            SyncPolicy::End => false,
        };
        if barrier || flush_now {
            drain(
                manifest,
                engine,
                &mut pending,
                &mut blocks_in_flight,
                &mut outcome,
                &mut failure,
                options.metrics.as_deref(),
            )?;
        }
        if flush_now {
            flush(engine, &mut outcome)?;
            writes_since_flush = 0;
        }
        if failure.is_some() {
            break;
        }
        if last_header_store.elapsed() >= Duration::from_secs(5) {
            manifest.persist_undo()?;
            manifest.store_header()?;
            last_header_store = Instant::now();
        }
        if !options.burst_gap.is_zero() {
            std::thread::sleep(options.burst_gap);
        }
    }
    drain(
        manifest,
        engine,
        &mut pending,
        &mut blocks_in_flight,
        &mut outcome,
        &mut failure,
        options.metrics.as_deref(),
    )?;
    flush(engine, &mut outcome)?;
    outcome.elapsed = started.elapsed();
    outcome.passes_completed = workload.passes_completed();
    manifest.header_mut().passes_completed += outcome.passes_completed;
    manifest.finish_write()?;
    match failure {
        Some(error) => Err(error),
        None => Ok(outcome),
    }
}

fn engine_error(e: std::io::Error) -> Error {
    Error::run(format!("IO engine failed: {e}"))
}

fn drain(
    manifest: &mut Manifest,
    engine: &mut dyn Engine,
    pending: &mut HashMap<u64, Pending>,
    blocks_in_flight: &mut HashSet<u64>,
    outcome: &mut WriteOutcome,
    failure: &mut Option<Error>,
    metrics: Option<&Metrics>,
) -> Result<()> {
    while engine.in_flight() > 0 {
        let done = engine.complete(engine.in_flight()).map_err(engine_error)?;
        absorb(
            manifest,
            engine,
            done,
            pending,
            blocks_in_flight,
            outcome,
            failure,
            metrics,
        );
    }
    Ok(())
}

fn flush(engine: &mut dyn Engine, outcome: &mut WriteOutcome) -> Result<()> {
    let buf = engine.take_buffer(0);
    engine
        .submit(Io {
            id: u64::MAX,
            kind: IoKind::Flush,
            buf,
        })
        .map_err(engine_error)?;
    for completion in engine.complete(1).map_err(engine_error)? {
        if let Err(e) = completion.result {
            return Err(Error::run(format!("flush failed: {e}")));
        }
    }
    outcome.flushes += 1;
    Ok(())
}

/// Record completed writes in the manifest (and in the metrics).
#[allow(clippy::too_many_arguments)]
fn absorb(
    manifest: &mut Manifest,
    engine: &mut dyn Engine,
    completions: Vec<Completion>,
    pending: &mut HashMap<u64, Pending>,
    blocks_in_flight: &mut HashSet<u64>,
    outcome: &mut WriteOutcome,
    failure: &mut Option<Error>,
    metrics: Option<&Metrics>,
) {
    for completion in completions {
        let Some(write) = pending.remove(&completion.id) else {
            continue;
        };
        for i in 0..write.op.block_count as u64 {
            blocks_in_flight.remove(&(write.op.first_block + i));
        }
        match completion.result {
            Ok(()) => {
                for (i, generation) in write.generations.iter().enumerate() {
                    manifest.set_generation(write.op.first_block + i as u64, *generation);
                }
                outcome.writes += 1;
                outcome.blocks_written += write.op.block_count as u64;
                outcome.bytes_written += completion.buf.len() as u64;
                if let Some(metrics) = metrics {
                    metrics.record_write(completion.latency, completion.buf.len() as u64);
                }
                manifest.header_mut().writes_completed += 1;
                engine.recycle(completion.buf);
            }
            Err(e) => {
                if failure.is_none() {
                    let block_size = manifest.header().block_size as u64;
                    *failure = Some(Error::run(format!(
                        "write of block {} (offset {}) failed: {e}; the run stopped, and verify may report the blocks of failed writes",
                        write.op.first_block,
                        write.op.first_block * block_size
                    )));
                }
            }
        }
    }
}
