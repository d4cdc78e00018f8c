//! Reconciling a manifest with its target after the writer died.
//!
//! A writer killed (or a target that failed) mid-run leaves the manifest
//! marked as being written, with the intents of the writes it had not yet
//! made durable in the journal. Before a run continues, each such block is
//! read back: if it holds one of the generations the pending writes allow,
//! the manifest adopts it; if it holds a mix (a torn pending write), it is
//! rewritten at a new generation and flushed. Then the journal is cleared,
//! and the manifest once more says exactly what the target holds.

use crate::buf::AlignedBuf;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::manifest::{Manifest, next_generation};
use crate::stamp::{self, WriteStamp};
use crate::storage::Target;
use crate::verify::{Expectation, classify};

/// What recovery did.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    pub pending_blocks: u64,
    /// Blocks that held the newest pending generation.
    pub kept_new: u64,
    /// Blocks that held an older generation (a pending write was lost).
    pub kept_old: u64,
    /// Blocks rewritten because they held a mix.
    pub rewritten: u64,
}

/// Reconcile `manifest` with `target`; a rewritten block's stamp carries
/// `clock`'s wall time, as the writer's do.
pub fn recover(
    manifest: &mut Manifest,
    target: &dyn Target,
    clock: &dyn Clock,
) -> Result<Recovery> {
    let pending = manifest.pending_writes()?;
    let format = manifest.format();
    let block_size = format.block_size as u64;
    let mut recovery = Recovery {
        pending_blocks: pending.len() as u64,
        ..Default::default()
    };
    let mut buf = AlignedBuf::new(block_size as usize);
    let mut blocks: Vec<(u64, (u32, u32))> = pending.into_iter().collect();
    blocks.sort_unstable();
    for (block, (oldest, newest)) in blocks {
        let offset = block * block_size;
        target.read_at(&mut buf, offset).map_err(|e| {
            Error::run(format!(
                "cannot read block {block} to recover the manifest: {e}"
            ))
        })?;
        let before = oldest.saturating_sub(1);
        let mut candidates = vec![before];
        let mut generation = oldest;
        loop {
            candidates.push(generation);
            if generation == newest {
                break;
            }
            generation = next_generation(generation);
        }
        let held = candidates.iter().rev().copied().find(|&g| {
            if g == 0 {
                classify(
                    &format,
                    Expectation {
                        block,
                        generation: 0,
                    },
                    &buf,
                )
                .is_none()
            } else {
                stamp::holds(&format, block, g, &buf)
            }
        });
        match held {
            Some(g) => {
                if g == newest {
                    recovery.kept_new += 1;
                } else {
                    recovery.kept_old += 1;
                }
                manifest.set_generation(block, g);
            }
            None => {
                let generation = next_generation(newest);
                let write_seq = manifest.header().next_write_seq;
                manifest.header_mut().next_write_seq += 1;
                stamp::build_write(
                    &format,
                    &WriteStamp {
                        block,
                        generation,
                        write_seq,
                        write_time_s: clock.unix_now_s() as u32,
                    },
                    &mut buf,
                );
                target.write_at(&buf, offset, false).map_err(|e| {
                    Error::run(format!(
                        "cannot rewrite block {block} to recover the manifest: {e}"
                    ))
                })?;
                manifest.set_generation(block, generation);
                recovery.rewritten += 1;
            }
        }
    }
    target
        .flush()
        .map_err(|e| Error::run(format!("cannot flush the target after recovery: {e}")))?;
    let tail = manifest.journal().map_or(0, |j| j.tail());
    manifest.journal_release(tail)?;
    manifest.persist_undo()?;
    manifest.store_header()?;
    Ok(recovery)
}
