//! A fault-injecting target, in the spirit of TigerBeetle's testing
//! storage: it wraps any target, injects the faults of a seeded
//! [`FaultPlan`] deterministically, and keeps the ground truth — a ledger of
//! what every block really holds — so that a test can compute exactly which
//! findings verify must report, and assert that it reports those and no
//! others.
//!
//! Write faults strike a block's final write (the plan's
//! [`Geometry::final_write`]), so no later write of the workload heals them:
//!
//! | fault | what the medium ends up holding | expected finding(s) | persistent |
//! |---|---|---|---|
//! | lost write | the block's previous write | `lost_write` (`zeroed` if it was the first write) | yes |
//! | misdirected write | the intended block: its previous write; the landing block: the misdirected stamp | `lost_write` (or `zeroed`) at the intended block and `misdirected` with `found_block` = intended block at the landing block | yes |
//! | torn write | the first N sectors of the new write, the older write after them | `torn` (a later generation torn over zeros: `corrupt`) | yes |
//! | bit flip | the write with 1–3 bits flipped | `corrupt` | yes |
//! | zeroed extent | zeros | `zeroed` | yes |
//! | foreign write | bytes that are no stamp | `foreign` | yes |
//! | stale read | the right data, but the first read (or the first N) returns what the block held before the final write | `lost_write` (or `zeroed`) | no when only the first read is stale (the re-read is right); yes when the re-read is stale too |
//! | unreadable | the right data, but reads of some sectors fail with EIO, every time | `unreadable` with those sectors | yes |
//! | lost zeroing | the block's write-zeroes is acknowledged, not done: its last write | `lost_zeroing` | yes |
//! | lost discard | the block's discard is acknowledged, not done: its last write | `lost_zeroing` where discards read zeros; nothing where they may read the previous contents | yes |
//! | misdirected zeroing / discard | the intended block: its last write; the landing block: zeros (or, a discard on a target that keeps discarded data, what it held) | `lost_zeroing` (as a lost discard) at the intended block, `zeroed` at a landing block that holds data | yes |
//! | torn zeroing | the first N sectors zeroed, the last write after them | `torn` | yes |
//! | discard exposes another block | after the discard, what another block held then | `misdirected` with `found_block` = that block (nothing if it held zeros) | yes |
//! | discard garbage | after the discard, bytes that are no stamp | `foreign` | yes |
//!
//! A misdirected write lands after the landing block's own final write (it
//! is held back until then), so the landing block is not healed by it.
//! Faults of zeroings and discards strike the victim's first operation of
//! their kind after its final write, and act at once; the ledger follows
//! whatever comes after.
//! Reads of a stale block return the old bytes on the first read that
//! succeeds; a read that fails on an unreadable sector returns nothing and
//! does not use up the stale read.
//!
//! The layer reports no file descriptor ([`Target::raw_fd`] is `None`), so
//! every engine, io_uring included, goes through it rather than around it.

mod plan;
mod truth;

pub use plan::{Amount, Fault, FaultKind, FaultPlan, FaultType, Geometry};
pub use truth::{Content, ExpectedFinding, class_of, generation_of_write};

use std::collections::{HashMap, HashSet};
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::buf::AlignedBuf;
use crate::manifest::{BlockState, OpKind};
use crate::rng::SplitMix64;
use crate::stamp::SECTOR_BYTES;
use crate::storage::{DiscardReads, SpaceOps, Target, TargetInfo, ZeroFlags};
use crate::verify::FindingClass;

/// One fault as it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    pub block: u64,
    pub fault_type: FaultType,
    /// The write of the block it struck (0 for read faults).
    pub write: u32,
}

/// A target that injects the faults of a plan into another target.
pub struct FaultTarget {
    inner: Arc<dyn Target>,
    info: TargetInfo,
    plan: FaultPlan,
    /// Victim block → its fault.
    victims: HashMap<u64, FaultKind>,
    /// Landing block of a misdirected write → the victim whose write it is.
    landings: HashMap<u64, u64>,
    /// Every block a fault involves → the fault's type (whose findings
    /// there are the fault's).
    parts: HashMap<u64, FaultType>,
    /// Byte ranges of the unreadable sectors, ascending.
    unreadable: Vec<Range<u64>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Blocks written so far: how often, and what they hold now.
    blocks: HashMap<u64, BlockRecord>,
    /// Misdirected writes waiting for their landing block's final write.
    held_back: HashMap<u64, HeldBack>,
    /// What stale-read victims held before their final write.
    stale: HashMap<u64, Stale>,
    injections: Vec<Injection>,
    /// (block, write) → the write sequence number and time its stamp carried.
    write_stamps: HashMap<(u64, u32), (u64, u32)>,
    /// Victims whose zeroing or discard fault has struck.
    space_struck: HashSet<u64>,
}

#[derive(Clone, Debug)]
struct BlockRecord {
    /// Data writes (zeroings and discards not counted).
    writes: u32,
    content: Content,
}

struct HeldBack {
    bytes: AlignedBuf,
    from: u64,
    write: u32,
}

struct Stale {
    bytes: AlignedBuf,
    content: Content,
    reads_left: u32,
}

impl FaultTarget {
    pub fn new(inner: Arc<dyn Target>, plan: FaultPlan) -> FaultTarget {
        let geometry = plan.geometry();
        let mut victims = HashMap::new();
        let mut landings = HashMap::new();
        let mut parts = HashMap::new();
        let mut unreadable = Vec::new();
        for fault in plan.faults() {
            victims.insert(fault.block, fault.kind.clone());
            parts.insert(fault.block, fault.kind.fault_type());
            if let Some(other) = fault.kind.other_block() {
                parts.insert(other, fault.kind.fault_type());
            }
            match &fault.kind {
                FaultKind::Misdirected { to } => {
                    landings.insert(*to, fault.block);
                }
                FaultKind::Unreadable { sectors } => {
                    let base = fault.block * geometry.block_size as u64;
                    for &sector in sectors {
                        let start = base + sector as u64 * SECTOR_BYTES as u64;
                        unreadable.push(start..start + SECTOR_BYTES as u64);
                    }
                }
                _ => {}
            }
        }
        unreadable.sort_by_key(|r| r.start);
        FaultTarget {
            info: inner.info().clone(),
            inner,
            plan,
            victims,
            landings,
            parts,
            unreadable,
            state: Mutex::new(State::default()),
        }
    }

    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// The faults injected so far, in the order they struck.
    pub fn injections(&self) -> Vec<Injection> {
        self.lock().injections.clone()
    }

    /// What `block` holds now, as far as the layer knows.
    pub fn content(&self, block: u64) -> Content {
        self.lock()
            .blocks
            .get(&block)
            .map(|r| r.content.clone())
            .unwrap_or(Content::Original)
    }

    /// The write sequence number and time that write `write` (from 1) of
    /// `block` carried in its stamp as it came through the layer, whatever
    /// a fault then did with it: the ground truth of when each write was
    /// issued.
    pub fn write_stamp(&self, block: u64, write: u32) -> Option<(u64, u32)> {
        self.lock().write_stamps.get(&(block, write)).copied()
    }

    /// Times `block` was written through the layer.
    pub fn writes(&self, block: u64) -> u32 {
        self.lock().blocks.get(&block).map_or(0, |r| r.writes)
    }

    /// Land the misdirected writes still held back because their landing
    /// block never had its final write (a workload that does not write it):
    /// call once the write phase is over.
    pub fn settle(&self) -> io::Result<()> {
        let mut state = self.lock();
        let mut waiting: Vec<u64> = state.held_back.keys().copied().collect();
        waiting.sort_unstable();
        for landing in waiting {
            self.land_held_back(&mut state, landing)?;
        }
        Ok(())
    }

    /// The findings verify must report, given the state it expects of each
    /// block (the manifest's, or a checkpoint's) and what it accepts of a
    /// discarded block (`promise`). Ordered by block.
    pub fn expected_findings(
        &self,
        expected_state: &dyn Fn(u64) -> BlockState,
        promise: DiscardReads,
    ) -> Result<Vec<ExpectedFinding>, String> {
        let state = self.lock();
        let mut findings = Vec::new();
        for block in 0..self.plan.geometry().block_count {
            let expected = expected_state(block);
            let fault = self.parts.get(&block).copied();
            if let Some(FaultKind::Unreadable { sectors }) = self.victims.get(&block) {
                let mut sectors = sectors.clone();
                sectors.sort_unstable();
                findings.push(ExpectedFinding {
                    block,
                    class: FindingClass::Unreadable,
                    found_block: None,
                    persistent: true,
                    unreadable_sectors: sectors,
                    cause: "latent sector error (EIO on read)".to_string(),
                    fault,
                });
                continue;
            }
            let current = state
                .blocks
                .get(&block)
                .map(|r| r.content.clone())
                .unwrap_or(Content::Original);
            // A stale read not yet used up: verify's first read returns the
            // old bytes; its re-read returns them again only if more than
            // one stale read is left.
            let (content, persistent, stale) = match state.stale.get(&block) {
                Some(stale) if stale.reads_left > 0 => {
                    (stale.content.clone(), stale.reads_left >= 2, true)
                }
                _ => (current, true, false),
            };
            if let Some((class, found_block, cause)) = class_of(&content, block, expected, promise)?
            {
                findings.push(ExpectedFinding {
                    block,
                    class,
                    found_block,
                    persistent,
                    unreadable_sectors: Vec::new(),
                    cause: if stale {
                        format!("stale read: {cause}")
                    } else {
                        cause
                    },
                    fault,
                });
            }
        }
        Ok(findings)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the ledger as it was at the
        // panic; the test that panicked reports it, others may read on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn block_size(&self) -> u64 {
        self.plan.geometry().block_size as u64
    }

    fn involved(&self, block: u64) -> bool {
        self.victims.contains_key(&block) || self.landings.contains_key(&block)
    }

    /// Write one block of a write IO, with its fault if this is the write
    /// the fault strikes. Called with the state locked.
    fn write_block(&self, state: &mut State, block: u64, data: &[u8], fua: bool) -> io::Result<()> {
        let offset = block * self.block_size();
        let record = state.blocks.entry(block).or_insert(BlockRecord {
            writes: 0,
            content: Content::Original,
        });
        let write = record.writes + 1;
        let previous = record.content.clone();
        if let Some(first) = data.first_chunk::<SECTOR_BYTES>() {
            let header = crate::stamp::parse_header(first);
            state
                .write_stamps
                .insert((block, write), (header.write_seq, header.write_time_s));
        }
        let final_write = write == self.plan.geometry().final_write;
        let fault = self
            .victims
            .get(&block)
            .filter(|kind| final_write && kind.strikes_write())
            .cloned();
        let stale_reads = match self.victims.get(&block) {
            Some(FaultKind::StaleRead { reads }) if final_write => *reads,
            _ => 0,
        };
        let content = match fault {
            None => {
                if stale_reads > 0 {
                    let mut bytes = AlignedBuf::new(data.len());
                    self.inner.read_at(&mut bytes, offset)?;
                    state.stale.insert(
                        block,
                        Stale {
                            bytes,
                            content: previous,
                            reads_left: stale_reads,
                        },
                    );
                    state.injections.push(Injection {
                        block,
                        fault_type: FaultType::StaleRead,
                        write,
                    });
                }
                self.inner.write_at(data, offset, fua)?;
                Content::Write { block, write }
            }
            Some(kind) => {
                let content = self.inject(state, &kind, block, write, previous, data, fua)?;
                state.injections.push(Injection {
                    block,
                    fault_type: kind.fault_type(),
                    write,
                });
                content
            }
        };
        let record = state.blocks.get_mut(&block).expect("record made above");
        record.writes = write;
        record.content = content;
        if final_write && state.held_back.contains_key(&block) {
            self.land_held_back(state, block)?;
        }
        Ok(())
    }

    /// Carry out a write fault; returns what the block holds afterwards.
    #[allow(clippy::too_many_arguments)]
    fn inject(
        &self,
        state: &mut State,
        kind: &FaultKind,
        block: u64,
        write: u32,
        previous: Content,
        data: &[u8],
        fua: bool,
    ) -> io::Result<Content> {
        let offset = block * self.block_size();
        Ok(match kind {
            FaultKind::LostWrite => previous,
            FaultKind::Misdirected { to } => {
                let landing_done = state
                    .blocks
                    .get(to)
                    .is_some_and(|r| r.writes >= self.plan.geometry().final_write);
                let bytes = copy_aligned(data);
                state.held_back.insert(
                    *to,
                    HeldBack {
                        bytes,
                        from: block,
                        write,
                    },
                );
                if landing_done {
                    self.land_held_back(state, *to)?;
                }
                previous
            }
            FaultKind::Torn { sectors } => {
                // The new write's first sectors over the old block's rest,
                // written as one whole block: sub-block writes would fail
                // under O_DIRECT on a device with 4 KiB logical sectors.
                let prefix = *sectors as usize * SECTOR_BYTES;
                let mut bytes = AlignedBuf::new(data.len());
                self.inner.read_at(&mut bytes, offset)?;
                bytes[..prefix].copy_from_slice(&data[..prefix]);
                self.inner.write_at(&bytes, offset, fua)?;
                Content::Torn {
                    write,
                    sectors: *sectors,
                    under: Box::new(previous),
                }
            }
            FaultKind::BitFlip { bits } => {
                let mut bytes = copy_aligned(data);
                for &bit in bits {
                    bytes[bit as usize / 8] ^= 1 << (bit % 8);
                }
                self.inner.write_at(&bytes, offset, fua)?;
                Content::Flipped { write }
            }
            FaultKind::Zeroed => {
                self.inner
                    .write_at(&AlignedBuf::new(data.len()), offset, fua)?;
                Content::Zeroed
            }
            FaultKind::Foreign => {
                self.inner
                    .write_at(&self.garbage(block, data.len()), offset, fua)?;
                Content::Foreign
            }
            _ => unreachable!("faults of reads, zeroings and discards do not strike writes"),
        })
    }

    /// A zeroing or discard of whole blocks, with the fault of any victim
    /// among them whose fault it is.
    fn space_op(&self, op: OpKind, offset: u64, len: u64, zero: ZeroFlags) -> io::Result<()> {
        let block_size = self.block_size();
        if !offset.is_multiple_of(block_size) || !len.is_multiple_of(block_size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the fault layer zeroes and discards whole {block_size}-byte blocks; got {len} bytes at offset {offset}"
                ),
            ));
        }
        let first = offset / block_size;
        let blocks = first..first + len / block_size;
        let mut state = self.lock();
        if !blocks.clone().any(|b| self.victims.contains_key(&b)) {
            self.inner_space_op(&mut state, op, first, blocks.end - first, zero)?;
            return Ok(());
        }
        for block in blocks {
            let fault = self
                .victims
                .get(&block)
                .filter(|kind| kind.fault_type().space_op() == Some(op))
                .filter(|_| {
                    state.blocks.get(&block).map_or(0, |r| r.writes)
                        >= self.plan.geometry().final_write
                        && !state.space_struck.contains(&block)
                })
                .cloned();
            match fault {
                None => self.inner_space_op(&mut state, op, block, 1, zero)?,
                Some(kind) => {
                    self.inject_space(&mut state, &kind, block, zero)?;
                    state.space_struck.insert(block);
                    let write = state.blocks.get(&block).map_or(0, |r| r.writes);
                    state.injections.push(Injection {
                        block,
                        fault_type: kind.fault_type(),
                        write,
                    });
                }
            }
        }
        Ok(())
    }

    /// Zero or discard `count` blocks from `first` on the inner target, and
    /// record what they hold afterwards: zeros after a zeroing; after a
    /// discard, what a read shows (zeros, or the contents kept).
    fn inner_space_op(
        &self,
        state: &mut State,
        op: OpKind,
        first: u64,
        count: u64,
        zero: ZeroFlags,
    ) -> io::Result<()> {
        let block_size = self.block_size();
        let (offset, len) = (first * block_size, count * block_size);
        match op {
            OpKind::Zero => self.inner.write_zeroes(offset, len, zero)?,
            OpKind::Discard => self.inner.discard(offset, len)?,
            OpKind::Write => unreachable!("a write is no space operation"),
        }
        let mut bytes = AlignedBuf::new(block_size as usize);
        for block in first..first + count {
            let reads_zeros = op == OpKind::Zero || {
                self.inner.read_at(&mut bytes, block * block_size)?;
                bytes.iter().all(|&b| b == 0)
            };
            let record = state.blocks.entry(block).or_insert(BlockRecord {
                writes: 0,
                content: Content::Original,
            });
            if reads_zeros {
                record.content = Content::Zeroed;
            }
        }
        Ok(())
    }

    /// Carry out the fault of a zeroing or discard of `block`.
    fn inject_space(
        &self,
        state: &mut State,
        kind: &FaultKind,
        block: u64,
        zero: ZeroFlags,
    ) -> io::Result<()> {
        let block_size = self.block_size();
        let offset = block * block_size;
        let previous = state
            .blocks
            .get(&block)
            .map_or(Content::Original, |r| r.content.clone());
        let content = match kind {
            FaultKind::LostZeroing | FaultKind::LostDiscard => previous,
            FaultKind::MisdirectedZeroing { to } => {
                self.inner_space_op(state, OpKind::Zero, *to, 1, zero)?;
                previous
            }
            FaultKind::MisdirectedDiscard { to } => {
                self.inner_space_op(state, OpKind::Discard, *to, 1, zero)?;
                previous
            }
            FaultKind::TornZeroing { sectors } => {
                // Whole-block IO, as for a torn write.
                let mut bytes = AlignedBuf::new(block_size as usize);
                self.inner.read_at(&mut bytes, offset)?;
                bytes[..*sectors as usize * SECTOR_BYTES].fill(0);
                self.inner.write_at(&bytes, offset, false)?;
                Content::ZeroTorn {
                    sectors: *sectors,
                    under: Box::new(previous),
                }
            }
            FaultKind::DiscardExposes { from } => {
                let mut bytes = AlignedBuf::new(block_size as usize);
                self.inner.read_at(&mut bytes, from * block_size)?;
                self.inner.write_at(&bytes, offset, false)?;
                state
                    .blocks
                    .get(from)
                    .map_or(Content::Original, |r| r.content.clone())
            }
            FaultKind::DiscardGarbage => {
                self.inner
                    .write_at(&self.garbage(block, block_size as usize), offset, false)?;
                Content::Foreign
            }
            _ => unreachable!("faults of writes and reads do not strike space operations"),
        };
        let record = state.blocks.entry(block).or_insert(BlockRecord {
            writes: 0,
            content: Content::Original,
        });
        record.content = content;
        Ok(())
    }

    /// Bytes that are no stamp, the same for a block on every run of a seed.
    fn garbage(&self, block: u64, len: usize) -> AlignedBuf {
        let mut bytes = AlignedBuf::new(len);
        let mut rng = SplitMix64::new(self.plan.seed() ^ block.rotate_left(32));
        for word in bytes.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        bytes
    }

    fn land_held_back(&self, state: &mut State, landing: u64) -> io::Result<()> {
        let Some(held) = state.held_back.remove(&landing) else {
            return Ok(());
        };
        self.inner
            .write_at(&held.bytes, landing * self.block_size(), false)?;
        let record = state.blocks.entry(landing).or_insert(BlockRecord {
            writes: 0,
            content: Content::Original,
        });
        record.content = Content::Write {
            block: held.from,
            write: held.write,
        };
        Ok(())
    }
}

fn copy_aligned(data: &[u8]) -> AlignedBuf {
    let mut bytes = AlignedBuf::new(data.len());
    bytes.copy_from_slice(data);
    bytes
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error())
}

impl Target for FaultTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        if self
            .unreadable
            .iter()
            .any(|bad| bad.start < end && offset < bad.end)
        {
            return Err(eio());
        }
        self.inner.read_at(buf, offset)?;
        let mut state = self.lock();
        if state.stale.is_empty() {
            return Ok(());
        }
        let block_size = self.block_size();
        for (&block, stale) in state.stale.iter_mut() {
            let start = block * block_size;
            let overlap = start.max(offset)..(start + block_size).min(end);
            if stale.reads_left == 0 || overlap.is_empty() {
                continue;
            }
            stale.reads_left -= 1;
            let within_buf = (overlap.start - offset) as usize..(overlap.end - offset) as usize;
            let within_block = (overlap.start - start) as usize..(overlap.end - start) as usize;
            buf[within_buf].copy_from_slice(&stale.bytes[within_block]);
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        let block_size = self.block_size();
        if !offset.is_multiple_of(block_size) || !(buf.len() as u64).is_multiple_of(block_size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the fault layer takes whole {block_size}-byte blocks; got {} bytes at offset {offset}",
                    buf.len()
                ),
            ));
        }
        let first = offset / block_size;
        let blocks = first..first + buf.len() as u64 / block_size;
        if !blocks.clone().any(|b| self.involved(b)) {
            // Nothing to inject: write through, then record the writes.
            self.inner.write_at(buf, offset, fua)?;
            let mut state = self.lock();
            for block in blocks {
                let record = state.blocks.entry(block).or_insert(BlockRecord {
                    writes: 0,
                    content: Content::Original,
                });
                record.writes += 1;
                record.content = Content::Write {
                    block,
                    write: record.writes,
                };
            }
            return Ok(());
        }
        // A fault's blocks are handled under the lock, one block at a time,
        // so a misdirected write and its landing block's own write are
        // ordered the same way whatever the engine's threads do.
        let mut state = self.lock();
        for (index, data) in buf.chunks_exact(block_size as usize).enumerate() {
            self.write_block(&mut state, first + index as u64, data, fua)?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }

    fn data_ranges(&self) -> Option<Vec<Range<u64>>> {
        // Unreadable sectors are on allocated media: verify must read them.
        let mut ranges = self.inner.data_ranges()?;
        let block_size = self.block_size();
        for bad in &self.unreadable {
            let start = bad.start / block_size * block_size;
            ranges.push(start..start + block_size);
        }
        ranges.sort_by_key(|r| r.start);
        Some(ranges)
    }

    fn space_ops(&self) -> SpaceOps {
        self.inner.space_ops()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.space_op(OpKind::Discard, offset, len, ZeroFlags::default())
    }

    fn write_zeroes(&self, offset: u64, len: u64, zero: ZeroFlags) -> io::Result<()> {
        self.space_op(OpKind::Zero, offset, len, zero)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{TargetIdentity, TargetKind};

    /// A target in memory, for the layer's own tests. Its discards zero
    /// the range, or, with `discard_keeps`, leave it as it was (a target
    /// that ignores discards).
    pub(crate) struct Memory {
        info: TargetInfo,
        bytes: Mutex<Vec<u8>>,
        discard_keeps: bool,
    }

    impl Memory {
        pub(crate) fn new(size_bytes: u64) -> Memory {
            Memory {
                discard_keeps: false,
                info: TargetInfo {
                    uri: "memory".into(),
                    kind: TargetKind::File,
                    size_bytes,
                    logical_sector_size: 512,
                    physical_sector_size: 512,
                    direct_io: true,
                    read_only: false,
                    supports_fua: true,
                    identity: TargetIdentity::default(),
                },
                bytes: Mutex::new(vec![0; size_bytes as usize]),
            }
        }
    }

    impl Target for Memory {
        fn info(&self) -> &TargetInfo {
            &self.info
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let bytes = self.bytes.lock().unwrap();
            buf.copy_from_slice(&bytes[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
        fn write_at(&self, buf: &[u8], offset: u64, _fua: bool) -> io::Result<()> {
            let mut bytes = self.bytes.lock().unwrap();
            bytes[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
        fn space_ops(&self) -> SpaceOps {
            SpaceOps {
                discard: true,
                write_zeroes: true,
                discard_reads: Some(if self.discard_keeps {
                    DiscardReads::Previous
                } else {
                    DiscardReads::Zeroes
                }),
                ..SpaceOps::default()
            }
        }
        fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
            if !self.discard_keeps {
                self.write_zeroes(offset, len, ZeroFlags::default())?;
            }
            Ok(())
        }
        fn write_zeroes(&self, offset: u64, len: u64, _zero: ZeroFlags) -> io::Result<()> {
            let mut bytes = self.bytes.lock().unwrap();
            bytes[offset as usize..(offset + len) as usize].fill(0);
            Ok(())
        }
    }

    const BLOCK: usize = 1024;

    fn layer(faults: Vec<Fault>) -> (Arc<Memory>, FaultTarget) {
        let memory = Arc::new(Memory::new(16 * BLOCK as u64));
        let geometry = Geometry {
            block_size: BLOCK as u32,
            block_count: 16,
            final_write: 2,
        };
        let plan = FaultPlan::new(geometry, 5, faults).unwrap();
        let target = FaultTarget::new(memory.clone(), plan);
        (memory, target)
    }

    fn fill(value: u8) -> Vec<u8> {
        vec![value; BLOCK]
    }

    fn read(target: &dyn Target, block: u64) -> Vec<u8> {
        let mut buf = vec![0u8; BLOCK];
        target.read_at(&mut buf, block * BLOCK as u64).unwrap();
        buf
    }

    fn write(target: &FaultTarget, block: u64, value: u8) {
        target
            .write_at(&fill(value), block * BLOCK as u64, false)
            .unwrap();
    }

    #[test]
    fn faults_strike_the_final_write_only() {
        let (memory, target) = layer(vec![Fault {
            block: 3,
            kind: FaultKind::LostWrite,
        }]);
        write(&target, 3, 1);
        assert_eq!(read(memory.as_ref(), 3), fill(1));
        write(&target, 3, 2);
        assert_eq!(read(memory.as_ref(), 3), fill(1), "second write lost");
        assert_eq!(target.content(3), Content::Write { block: 3, write: 1 });
        write(&target, 3, 3);
        assert_eq!(read(memory.as_ref(), 3), fill(3), "a third write lands");
        assert_eq!(target.writes(3), 3);
    }

    #[test]
    fn a_misdirected_write_waits_for_its_landing_blocks_final_write() {
        let (memory, target) = layer(vec![Fault {
            block: 1,
            kind: FaultKind::Misdirected { to: 9 },
        }]);
        write(&target, 1, 1);
        write(&target, 1, 2);
        assert_eq!(read(memory.as_ref(), 9), fill(0), "held back");
        write(&target, 9, 7);
        assert_eq!(read(memory.as_ref(), 9), fill(7), "block 9's first write");
        write(&target, 9, 8);
        assert_eq!(read(memory.as_ref(), 9), fill(2), "landed over block 9");
        assert_eq!(read(memory.as_ref(), 1), fill(1));
        assert_eq!(target.content(9), Content::Write { block: 1, write: 2 });
        assert_eq!(target.content(1), Content::Write { block: 1, write: 1 });
    }

    #[test]
    fn settle_lands_writes_whose_landing_block_is_never_written() {
        let (memory, target) = layer(vec![Fault {
            block: 1,
            kind: FaultKind::Misdirected { to: 9 },
        }]);
        write(&target, 1, 1);
        write(&target, 1, 2);
        target.settle().unwrap();
        assert_eq!(read(memory.as_ref(), 9), fill(2));
    }

    #[test]
    fn torn_flipped_zeroed_and_foreign_writes_change_the_medium_as_planned() {
        let (memory, target) = layer(vec![
            Fault {
                block: 2,
                kind: FaultKind::Torn { sectors: 1 },
            },
            Fault {
                block: 4,
                kind: FaultKind::BitFlip {
                    bits: vec![9, 8000],
                },
            },
            Fault {
                block: 5,
                kind: FaultKind::Zeroed,
            },
            Fault {
                block: 6,
                kind: FaultKind::Foreign,
            },
        ]);
        for block in [2, 4, 5, 6] {
            write(&target, block, 1);
            write(&target, block, 2);
        }
        let torn = read(memory.as_ref(), 2);
        assert_eq!(&torn[..512], &fill(2)[..512]);
        assert_eq!(&torn[512..], &fill(1)[512..]);
        let mut flipped = fill(2);
        flipped[1] ^= 2;
        flipped[1000] ^= 1;
        assert_eq!(read(memory.as_ref(), 4), flipped);
        assert_eq!(read(memory.as_ref(), 5), fill(0));
        let foreign = read(memory.as_ref(), 6);
        assert!(foreign != fill(2) && foreign != fill(1) && foreign != fill(0));
        assert_eq!(target.injections().len(), 4);
    }

    #[test]
    fn a_stale_read_returns_the_old_bytes_as_often_as_planned() {
        let (_memory, target) = layer(vec![Fault {
            block: 3,
            kind: FaultKind::StaleRead { reads: 2 },
        }]);
        write(&target, 3, 1);
        write(&target, 3, 2);
        let only_block_3 = |block| BlockState::data(if block == 3 { 2 } else { 0 });
        let expected = target
            .expected_findings(&only_block_3, DiscardReads::Zeroes)
            .unwrap();
        assert!(expected[0].persistent, "the re-read is stale too");
        assert_eq!(read(&target, 3), fill(1));
        assert_eq!(read(&target, 3), fill(1));
        assert_eq!(read(&target, 3), fill(2));
        assert!(
            target
                .expected_findings(&only_block_3, DiscardReads::Zeroes)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_stale_read_returns_the_old_bytes_once() {
        let (_memory, target) = layer(vec![Fault {
            block: 7,
            kind: FaultKind::StaleRead { reads: 1 },
        }]);
        write(&target, 7, 1);
        write(&target, 7, 2);
        let expected = target
            .expected_findings(
                &|block| BlockState::data(if block == 7 { 2 } else { 0 }),
                DiscardReads::Zeroes,
            )
            .unwrap();
        assert_eq!(
            (expected[0].block, expected[0].class, expected[0].persistent),
            (7, FindingClass::LostWrite, false)
        );
        // A read of several blocks gets the old bytes for block 7 only.
        let mut wide = vec![0u8; 3 * BLOCK];
        target.read_at(&mut wide, 6 * BLOCK as u64).unwrap();
        assert_eq!(&wide[BLOCK..2 * BLOCK], &fill(1)[..]);
        assert_eq!(read(&target, 7), fill(2), "the second read is right");
    }

    #[test]
    fn unreadable_sectors_fail_every_read_that_touches_them() {
        let (_memory, target) = layer(vec![Fault {
            block: 8,
            kind: FaultKind::Unreadable { sectors: vec![1] },
        }]);
        write(&target, 8, 1);
        let mut sector = vec![0u8; 512];
        assert!(target.read_at(&mut sector, 8 * BLOCK as u64).is_ok());
        for _ in 0..2 {
            let error = target
                .read_at(&mut sector, 8 * BLOCK as u64 + 512)
                .unwrap_err();
            assert_eq!(
                error.raw_os_error(),
                Some(rustix::io::Errno::IO.raw_os_error())
            );
        }
        let mut wide = vec![0u8; 4 * BLOCK];
        assert!(target.read_at(&mut wide, 6 * BLOCK as u64).is_err());
    }

    #[test]
    fn partial_block_writes_are_refused() {
        let (_memory, target) = layer(vec![]);
        let error = target.write_at(&[0u8; 512], 0, false).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn the_truth_follows_the_ledger() {
        let (_memory, target) = layer(vec![
            Fault {
                block: 1,
                kind: FaultKind::Misdirected { to: 9 },
            },
            Fault {
                block: 2,
                kind: FaultKind::LostWrite,
            },
            Fault {
                block: 8,
                kind: FaultKind::Unreadable {
                    sectors: vec![1, 0],
                },
            },
        ]);
        for block in 0..16 {
            write(&target, block, 1);
            write(&target, block, 2);
        }
        let expected = target
            .expected_findings(&|_| BlockState::data(2), DiscardReads::Zeroes)
            .unwrap();
        let summary: Vec<(u64, FindingClass, Option<u64>)> = expected
            .iter()
            .map(|f| (f.block, f.class, f.found_block))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, FindingClass::LostWrite, None),
                (2, FindingClass::LostWrite, None),
                (8, FindingClass::Unreadable, None),
                (9, FindingClass::Misdirected, Some(1)),
            ]
        );
        assert_eq!(expected[2].unreadable_sectors, vec![0, 1]);
        // Checked against generation 1 (a checkpoint after the first pass),
        // every other block holds a newer write.
        let at_first = target
            .expected_findings(&|_| BlockState::data(1), DiscardReads::Zeroes)
            .unwrap();
        assert_eq!(
            at_first
                .iter()
                .filter(|f| f.class == FindingClass::NewerGeneration)
                .count(),
            12
        );
    }

    /// Blocks 0–15 written twice, then: zeroed 1 3 4 12, discarded 2 5 6 7
    /// 13, and 14 zeroed then discarded.
    fn space_faults_on(memory: Arc<Memory>) -> FaultTarget {
        let geometry = Geometry {
            block_size: BLOCK as u32,
            block_count: 16,
            final_write: 2,
        };
        let faults = vec![
            Fault {
                block: 1,
                kind: FaultKind::LostZeroing,
            },
            Fault {
                block: 2,
                kind: FaultKind::LostDiscard,
            },
            Fault {
                block: 3,
                kind: FaultKind::MisdirectedZeroing { to: 9 },
            },
            Fault {
                block: 4,
                kind: FaultKind::TornZeroing { sectors: 1 },
            },
            Fault {
                block: 5,
                kind: FaultKind::DiscardExposes { from: 10 },
            },
            Fault {
                block: 6,
                kind: FaultKind::DiscardGarbage,
            },
            Fault {
                block: 7,
                kind: FaultKind::MisdirectedDiscard { to: 11 },
            },
        ];
        let target = FaultTarget::new(memory, FaultPlan::new(geometry, 5, faults).unwrap());
        for pass in 1..=2 {
            for block in 0..16 {
                write(&target, block, block as u8 * 4 + pass);
            }
        }
        let at = |block: u64| block * BLOCK as u64;
        let len = BLOCK as u64;
        for block in [1, 3, 4, 12, 14] {
            target
                .write_zeroes(at(block), len, ZeroFlags::default())
                .unwrap();
        }
        for block in [2, 5, 6, 7, 13, 14] {
            target.discard(at(block), len).unwrap();
        }
        target
    }

    fn state_after_space_ops(block: u64) -> BlockState {
        let data = BlockState::data(2);
        match block {
            1 | 3 | 4 | 12 => data.after(OpKind::Zero),
            2 | 5 | 6 | 7 | 13 => data.after(OpKind::Discard),
            14 => data.after(OpKind::Zero).after(OpKind::Discard),
            _ => data,
        }
    }

    fn summary(
        target: &FaultTarget,
        promise: DiscardReads,
    ) -> Vec<(u64, FindingClass, Option<u64>)> {
        target
            .expected_findings(&state_after_space_ops, promise)
            .unwrap()
            .iter()
            .map(|f| (f.block, f.class, f.found_block))
            .collect()
    }

    #[test]
    fn faults_of_zeroings_and_discards_change_the_medium_as_planned() {
        let memory = Arc::new(Memory::new(16 * BLOCK as u64));
        let target = space_faults_on(memory.clone());
        let second = |block: u64| fill(block as u8 * 4 + 2);
        assert_eq!(read(memory.as_ref(), 1), second(1), "zeroing lost");
        assert_eq!(read(memory.as_ref(), 2), second(2), "discard lost");
        assert_eq!(read(memory.as_ref(), 3), second(3), "zeroing went to 9");
        assert_eq!(read(memory.as_ref(), 9), fill(0));
        let torn = read(memory.as_ref(), 4);
        assert_eq!(&torn[..512], &fill(0)[..512]);
        assert_eq!(&torn[512..], &second(4)[512..]);
        assert_eq!(read(memory.as_ref(), 5), second(10), "block 10 exposed");
        let garbage = read(memory.as_ref(), 6);
        assert!(garbage != fill(0) && garbage != second(6));
        assert_eq!(read(memory.as_ref(), 7), second(7), "discard went to 11");
        assert_eq!(read(memory.as_ref(), 11), fill(0));
        for block in [12, 13, 14] {
            assert_eq!(read(memory.as_ref(), block), fill(0), "block {block}");
        }
        let struck: Vec<(u64, FaultType)> = target
            .injections()
            .iter()
            .map(|i| (i.block, i.fault_type))
            .collect();
        assert_eq!(
            struck,
            vec![
                (1, FaultType::LostZeroing),
                (3, FaultType::MisdirectedZeroing),
                (4, FaultType::TornZeroing),
                (2, FaultType::LostDiscard),
                (5, FaultType::DiscardExposes),
                (6, FaultType::DiscardGarbage),
                (7, FaultType::MisdirectedDiscard),
            ]
        );
        // A second zeroing of a victim is carried out.
        target
            .write_zeroes(BLOCK as u64, BLOCK as u64, ZeroFlags::default())
            .unwrap();
        assert_eq!(read(memory.as_ref(), 1), fill(0));
        assert_eq!(target.content(1), Content::Zeroed);
    }

    #[test]
    fn the_truth_of_zeroings_and_discards_follows_the_promise() {
        use FindingClass::*;
        let memory = Arc::new(Memory::new(16 * BLOCK as u64));
        let target = space_faults_on(memory);
        // Discards read zeros: a discard that did not happen is a lost
        // zeroing, as is a zeroing that did not.
        let zeroes = vec![
            (1, LostZeroing, None),
            (2, LostZeroing, None),
            (3, LostZeroing, None),
            (4, Torn, None),
            (5, Misdirected, Some(10)),
            (6, Foreign, None),
            (7, LostZeroing, None),
            (9, Zeroed, None),
            (11, Zeroed, None),
        ];
        assert_eq!(summary(&target, DiscardReads::Zeroes), zeroes);
        // Discards may read zeros or the previous contents: the lost and
        // the misdirected discard (blocks 2 and 7) are no finding.
        let mut any = zeroes.clone();
        any.retain(|f| f.0 != 2 && f.0 != 7);
        assert_eq!(summary(&target, DiscardReads::Any), any);
        // Discards keep the previous contents: the discard that did happen
        // on a block with data (13; it reads zeros here) is a finding too.
        let mut previous = any;
        previous.push((13, Zeroed, None));
        assert_eq!(summary(&target, DiscardReads::Previous), previous);
        let faults: Vec<Option<FaultType>> = target
            .expected_findings(&state_after_space_ops, DiscardReads::Zeroes)
            .unwrap()
            .iter()
            .map(|f| f.fault)
            .collect();
        assert_eq!(faults[0], Some(FaultType::LostZeroing));
        assert_eq!(faults[7], Some(FaultType::MisdirectedZeroing), "block 9");
        assert_eq!(faults[8], Some(FaultType::MisdirectedDiscard), "block 11");
    }

    #[test]
    fn on_a_target_that_ignores_discards_the_ledger_keeps_the_data() {
        let mut memory = Memory::new(16 * BLOCK as u64);
        memory.discard_keeps = true;
        let target = space_faults_on(Arc::new(memory));
        assert_eq!(
            target.content(13),
            Content::Write {
                block: 13,
                write: 2
            }
        );
        assert_eq!(target.content(14), Content::Zeroed, "zeroed, then kept");
        assert_eq!(
            target.content(11),
            Content::Write {
                block: 11,
                write: 2
            }
        );
        let previous = summary(&target, DiscardReads::Previous);
        assert!(
            !previous.iter().any(|f| [2, 7, 11, 13, 14].contains(&f.0)),
            "{previous:?}"
        );
        let zeroes = summary(&target, DiscardReads::Zeroes);
        assert!(
            zeroes.contains(&(13, FindingClass::LostZeroing, None)),
            "{zeroes:?}"
        );
    }
}
