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
use crate::manifest::journal::generation_before_pending;
use crate::manifest::{BlockKind, BlockState, Manifest, Pending, next_generation};
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
    let mut blocks: Vec<(u64, Pending)> = pending.into_iter().collect();
    blocks.sort_unstable_by_key(|&(block, _)| block);
    for (block, pending) in blocks {
        let Pending {
            oldest,
            newest,
            zeros,
        } = pending;
        let offset = block * block_size;
        target.read_at(&mut buf, offset).map_err(|e| {
            Error::run(format!(
                "cannot read block {block} to recover the manifest: {e}"
            ))
        })?;
        // What the block held before its oldest pending write: 0 (never
        // written) or, after a wrap, 32767 before a pending 1.
        let before = generation_before_pending(oldest, manifest.generation(block));
        let mut candidates = vec![before];
        let mut generation = before;
        while generation != newest {
            generation = next_generation(generation);
            candidates.push(generation);
        }
        if zeros && buf.iter().all(|&b| b == 0) {
            // A pending zeroing or discard (or what the block held before
            // its pending writes) left zeros: expect zeros from now on.
            manifest.set_state(
                block,
                BlockState {
                    kind: BlockKind::Zeroed,
                    generation: newest,
                },
            );
            recovery.kept_new += 1;
            continue;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::manifest::journal::{FIRST_WRITE, journal_bytes_for};
    use crate::manifest::{GENERATION_MAX, NewManifest, TargetRecord};
    use crate::stamp::PAYLOAD_BYTES;
    use crate::storage::OpenRequest;
    use crate::storage::file::FileTarget;

    const BLOCK_SIZE: u32 = 4096;
    const BLOCK: u64 = 3;

    /// A manifest left mid-write with one intent for `BLOCK` pending, the
    /// map saying `recorded`, and the block holding `held` (0: zeros).
    fn crashed(recorded: u32, intent: u32, held: u32) -> (tempfile::TempDir, Manifest, FileTarget) {
        let dir = tempfile::tempdir().unwrap();
        let request = OpenRequest {
            write: true,
            create_size: Some(8 * BLOCK_SIZE as u64),
            direct: false,
            force: false,
        };
        let target = FileTarget::open(&dir.path().join("img"), "img", &request).unwrap();
        let mut manifest = Manifest::create(
            &dir.path().join("m"),
            NewManifest {
                run_id: 0xabc,
                seed: 1,
                block_size: BLOCK_SIZE,
                random_bytes: PAYLOAD_BYTES as u16,
                dedup_permille: 0,
                journal_bytes: journal_bytes_for(8),
                target: TargetRecord::from_info(target.info()),
            },
        )
        .unwrap();
        manifest.begin_write().unwrap();
        manifest.set_generation(BLOCK, recorded);
        let end = manifest.journal_append(&[(BLOCK, intent)]).unwrap();
        manifest.journal_wait(end).unwrap();
        let mut buf = AlignedBuf::new(BLOCK_SIZE as usize);
        if held != 0 {
            let stamp = WriteStamp {
                block: BLOCK,
                generation: held,
                write_seq: 1,
                write_time_s: 1,
            };
            stamp::build_write(&manifest.format(), &stamp, &mut buf);
        }
        target
            .write_at(&buf, BLOCK * BLOCK_SIZE as u64, false)
            .unwrap();
        (dir, manifest, target)
    }

    fn recovered(recorded: u32, intent: u32, held: u32) -> (Recovery, u32) {
        let (_dir, mut manifest, target) = crashed(recorded, intent, held);
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_700_000_000));
        let recovery = recover(&mut manifest, &target, clock.as_ref()).unwrap();
        assert_eq!(recovery.pending_blocks, 1);
        (recovery, manifest.generation(BLOCK))
    }

    #[test]
    fn a_pending_1_after_a_wrap_keeps_32767_or_1_and_rewrites_zeros() {
        let (kept, generation) = recovered(GENERATION_MAX, 1, GENERATION_MAX);
        assert_eq!((kept.kept_old, generation), (1, GENERATION_MAX));
        let (kept, generation) = recovered(GENERATION_MAX, 1, 1);
        assert_eq!((kept.kept_new, generation), (1, 1));
        // The write of 1 completed (the map says so) but was not flushed.
        let (kept, generation) = recovered(1, 1, GENERATION_MAX);
        assert_eq!((kept.kept_old, generation), (1, GENERATION_MAX));
        // Zeros were never this block's content since the run wrote it.
        let (rewritten, generation) = recovered(1, 1, 0);
        assert_eq!((rewritten.rewritten, generation), (1, 2));
        let (rewritten, _) = recovered(GENERATION_MAX, 1, GENERATION_MAX - 1);
        assert_eq!(rewritten.rewritten, 1, "older than the last durable write");
    }

    #[test]
    fn a_pending_first_write_keeps_zeros_or_1() {
        let (kept, generation) = recovered(0, 1 | FIRST_WRITE, 0);
        assert_eq!((kept.kept_old, generation), (1, 0));
        // Its write completed but was not flushed, and then was lost.
        let (kept, generation) = recovered(1, 1 | FIRST_WRITE, 0);
        assert_eq!((kept.kept_old, generation), (1, 0));
        let (kept, generation) = recovered(1, 1 | FIRST_WRITE, 1);
        assert_eq!((kept.kept_new, generation), (1, 1));
        let (rewritten, _) = recovered(1, 1 | FIRST_WRITE, GENERATION_MAX);
        assert_eq!(rewritten.rewritten, 1, "a stamp never written to it");
    }
}
