//! A power-cut simulator: a target that loses what a real device with a
//! volatile write cache may lose when the power fails, and nothing else —
//! unless told to lie.
//!
//! Every write, zeroing and discard goes to the inner target at once, but
//! until a flush (or a write's own FUA) it is *volatile*: the bytes it
//! replaced are kept. At the
//! cut, each volatile write, newest first, is kept, undone, or torn (a
//! prefix of its atomic units kept, the rest undone), by a seeded choice;
//! after it, every IO fails as a dead device's would. A lying device
//! (`lie_on`) also undoes chosen writes at the flush that claims them
//! durable — a firmware that acknowledges a flush it did not do — and
//! records them: those, and only those, are losses verify must report.

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex};

use crate::buf::AlignedBuf;
use crate::rng::SplitMix64;
use crate::storage::{SpaceOps, Target, TargetInfo, ZeroFlags};

struct VolatileWrite {
    offset: u64,
    previous: AlignedBuf,
    /// The device will drop this write at the next flush.
    lie: bool,
}

struct State {
    volatile: Vec<VolatileWrite>,
    acknowledged: u64,
    dead: bool,
    rng: SplitMix64,
    /// Byte offsets of writes dropped after a flush claimed them durable.
    lost_durable: Vec<u64>,
}

/// How the simulated device behaves.
#[derive(Clone, Debug, Default)]
pub struct PowerCutPlan {
    /// The power fails when this many writes have been acknowledged.
    pub cut_after_writes: u64,
    pub seed: u64,
    /// Unit a write can be torn at (bytes); the inner target's logical
    /// sector when 0.
    pub atomic_unit: usize,
    /// Byte offsets whose next write (from `lie_after_writes` on) the
    /// device drops although a flush acknowledges it.
    pub lie_on: HashSet<u64>,
    pub lie_after_writes: u64,
}

pub struct PowerCutTarget {
    inner: Arc<dyn Target>,
    plan: PowerCutPlan,
    info: TargetInfo,
    state: Mutex<State>,
}

impl PowerCutTarget {
    pub fn new(inner: Arc<dyn Target>, plan: PowerCutPlan) -> PowerCutTarget {
        let mut info = inner.info().clone();
        info.supports_fua = true;
        let rng = SplitMix64(plan.seed);
        PowerCutTarget {
            inner,
            plan,
            info,
            state: Mutex::new(State {
                volatile: Vec::new(),
                acknowledged: 0,
                dead: false,
                rng,
                lost_durable: Vec::new(),
            }),
        }
    }

    /// Has the power failed?
    pub fn is_dead(&self) -> bool {
        self.state.lock().expect("power-cut state").dead
    }

    /// Offsets of writes the device dropped after acknowledging a flush.
    pub fn lost_durable_writes(&self) -> Vec<u64> {
        self.state
            .lock()
            .expect("power-cut state")
            .lost_durable
            .clone()
    }

    fn unit(&self) -> usize {
        if self.plan.atomic_unit > 0 {
            self.plan.atomic_unit
        } else {
            self.info.logical_sector_size as usize
        }
    }

    /// The power fails: volatile writes are kept, undone or torn.
    fn cut(&self, state: &mut State) -> io::Result<()> {
        state.dead = true;
        let unit = self.unit();
        while let Some(write) = state.volatile.pop() {
            let units = write.previous.len() / unit;
            let kept_units = match state.rng.next_u64() % 3 {
                0 => units,                                                 // persisted
                1 => 0,                                                     // lost
                _ => (state.rng.next_u64() % units.max(1) as u64) as usize, // torn
            };
            let undo = &write.previous[kept_units * unit..];
            if !undo.is_empty() {
                // The inner target may be O_DIRECT: undo from an aligned copy.
                let mut aligned = AlignedBuf::new(undo.len());
                aligned.copy_from_slice(undo);
                self.inner
                    .write_at(&aligned, write.offset + (kept_units * unit) as u64, false)?;
            }
        }
        self.inner.flush()
    }
}

fn dead() -> io::Error {
    io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error())
}

impl Target for PowerCutTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.is_dead() {
            return Err(dead());
        }
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.volatile_op(offset, buf.len(), fua, || {
            self.inner.write_at(buf, offset, false)
        })
    }

    /// Zeroings and discards are as volatile as writes: a cut keeps, undoes
    /// or tears them per atomic unit.
    fn space_ops(&self) -> SpaceOps {
        self.inner.space_ops()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.volatile_op(offset, len as usize, false, || {
            self.inner.discard(offset, len)
        })
    }

    fn write_zeroes(&self, offset: u64, len: u64, zero: ZeroFlags) -> io::Result<()> {
        self.volatile_op(offset, len as usize, false, || {
            self.inner.write_zeroes(offset, len, zero)
        })
    }

    fn flush(&self) -> io::Result<()> {
        let mut state = self.state.lock().expect("power-cut state");
        if state.dead {
            return Err(dead());
        }
        self.inner.flush()?;
        // Everything volatile is durable now, except what the device lies
        // about: those writes are undone, newest first.
        let volatile = std::mem::take(&mut state.volatile);
        for write in volatile.iter().rev().filter(|w| w.lie) {
            self.inner.write_at(&write.previous, write.offset, false)?;
            state.lost_durable.push(write.offset);
        }
        self.inner.flush()
    }
}

impl PowerCutTarget {
    /// Carry out `op` on `len` bytes at `offset` on the inner target,
    /// keeping what they held until a flush makes it durable (at once with
    /// `fua`), and cut the power when its turn comes.
    fn volatile_op(
        &self,
        offset: u64,
        len: usize,
        fua: bool,
        op: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        let mut state = self.state.lock().expect("power-cut state");
        if state.dead {
            return Err(dead());
        }
        let mut previous = AlignedBuf::new(len);
        self.inner.read_at(&mut previous, offset)?;
        op()?;
        let lie =
            state.acknowledged >= self.plan.lie_after_writes && self.plan.lie_on.contains(&offset);
        if !fua || lie {
            state.volatile.push(VolatileWrite {
                offset,
                previous,
                lie,
            });
        }
        state.acknowledged += 1;
        if state.acknowledged >= self.plan.cut_after_writes {
            // This write is acknowledged; the next IO finds the device dead.
            self.cut(&mut state)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sync::SyncEngine;
    use crate::manifest::journal::journal_bytes_for;
    use crate::manifest::{Access, BlockKind, Manifest, NewManifest, TargetRecord};
    use crate::stamp::PAYLOAD_BYTES;
    use crate::storage::file::FileTarget;
    use crate::storage::{DiscardReads, OpenRequest};
    use crate::verify::{self, VerifyOptions};
    use crate::workload::{BurstPlan, BurstWorkload, Scatter};
    use crate::writer::{self, SyncPolicy, WriteOptions};

    const BLOCKS: u64 = 256;
    const BLOCK_SIZE: u32 = 4096;

    fn open_image(path: &std::path::Path) -> Arc<dyn Target> {
        Arc::new(
            FileTarget::open(
                path,
                "disk.img",
                &OpenRequest {
                    write: true,
                    create_size: Some(BLOCKS * BLOCK_SIZE as u64),
                    direct: false,
                    force: false,
                },
            )
            .unwrap(),
        )
    }

    /// Random cuts through bursts that mix writes, zeroings and discards of
    /// one to four blocks, on a target whose discards read zeros: the
    /// manifest left behind verifies clean — every pending operation's
    /// blocks hold, per 512-byte unit, what they held before or after it.
    #[test]
    fn a_cut_through_pending_zeroings_and_discards_leaves_old_or_new_per_unit() {
        let mut rng = SplitMix64(0x2e70);
        let mut pending_space_ops = 0;
        for round in 0..8u64 {
            let dir = tempfile::tempdir().unwrap();
            let image = dir.path().join("disk.img");
            let cut_after_writes = 100 + rng.next_u64() % 250;
            let target = Arc::new(PowerCutTarget::new(
                open_image(&image),
                PowerCutPlan {
                    cut_after_writes,
                    seed: round,
                    atomic_unit: 512,
                    ..PowerCutPlan::default()
                },
            ));
            let shared: Arc<dyn Target> = target.clone();
            let manifest_path = dir.path().join("m");
            let mut manifest = Manifest::create(
                &manifest_path,
                NewManifest {
                    run_id: 0x2e70 + round,
                    seed: round,
                    block_size: BLOCK_SIZE,
                    random_bytes: PAYLOAD_BYTES as u16,
                    dedup_permille: 0,
                    target: TargetRecord::from_info(shared.info()),
                    journal_bytes: journal_bytes_for(BLOCKS),
                },
            )
            .unwrap();
            manifest.header_mut().discard_reads = Some(DiscardReads::Zeroes);
            let mut engine = crate::engine::inline::InlineEngine::new(Arc::clone(&shared), 16);
            let mut workload = BurstWorkload::new(BurstPlan {
                block_count: BLOCKS,
                burst: 16,
                scatter: Scatter::Random,
                io_blocks: (1, 4),
                overwrite: 0.3,
                coverage: 1.0,
                passes: Some(4),
                seed: round,
                discard: 0.2,
                zero: 0.2,
            });
            let options = WriteOptions {
                sync: if round % 2 == 0 {
                    SyncPolicy::Burst
                } else {
                    SyncPolicy::Every(40)
                },
                ..WriteOptions::default()
            };
            let result = writer::write(&mut manifest, &mut engine, &mut workload, &options);
            assert!(target.is_dead(), "round {round}: the power failed");
            assert!(result.is_err(), "round {round}: the write phase failed");
            drop(engine);
            drop(manifest);

            let manifest = Manifest::open(&manifest_path, Access::Read).unwrap();
            let expected = manifest.expected(None).unwrap();
            assert!(expected.pending_blocks() > 0, "round {round}");
            let kinds = (0..BLOCKS)
                .filter(|&b| expected.state(b).kind != BlockKind::Data)
                .count();
            assert!(kinds > 0, "round {round}: zeroings or discards recorded");
            pending_space_ops += (0..BLOCKS)
                .filter(|&b| expected.pending(b).is_some_and(|p| p.zeros))
                .count();
            let reader = open_image(&image);
            let mut verify_engine = SyncEngine::new(Arc::clone(&reader), 8);
            let outcome = verify::verify(
                reader,
                &manifest.format(),
                &expected,
                &mut verify_engine,
                &VerifyOptions::default(),
                None,
            )
            .unwrap();
            assert_eq!(outcome.blocks.checked, BLOCKS);
            assert!(
                outcome.findings.is_empty(),
                "round {round}, cut after {cut_after_writes}: {:#?}",
                outcome.findings
            );
        }
        assert!(
            pending_space_ops > 0,
            "some cut left a block pending that may read zeros"
        );
    }
}
