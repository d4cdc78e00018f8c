//! Fault plans: which faults the fault layer injects, and on which blocks.
//!
//! A plan is built from an explicit list ([`FaultPlan::new`]) or sampled
//! from a seed ([`FaultPlan::sample`]), by count or by rate per fault type.
//! Either way every block plays at most one part — the victim of one fault,
//! the landing place of one misdirected write, zeroing or discard, or the
//! block one discard exposes — so no two faults touch the same block and
//! the findings they cause can be predicted one by one.

use std::collections::HashSet;

use crate::manifest::OpKind;
use crate::rng::SplitMix64;
use crate::stamp::SECTOR_BYTES;

/// One fault, with its parameters. Write faults strike the block's final
/// write (see [`Geometry::final_write`]), so nothing overwrites them later;
/// faults of zeroings and discards strike the block's first zeroing or
/// discard after that write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The write is acknowledged but never reaches the medium.
    LostWrite,
    /// The write lands on block `to` instead of its own.
    Misdirected { to: u64 },
    /// Only the first `sectors` 512-byte sectors of the write land.
    Torn { sectors: u32 },
    /// The write lands, then these bits flip (bit offsets within the block).
    BitFlip { bits: Vec<u32> },
    /// The write lands as zeros: a discarded or unmapped extent.
    Zeroed,
    /// The write lands as other data, bytes that are no stamp at all.
    Foreign,
    /// The first `reads` reads of the block after its final write return
    /// the bytes it held before that write (a stale cache); later reads are
    /// right. One stale read is transient: verify's re-read sees the right
    /// bytes. Two or more make the stale bytes persistent as far as verify
    /// can tell.
    StaleRead { reads: u32 },
    /// Every read of these 512-byte sectors of the block fails with EIO (a
    /// latent sector error); writes to them succeed.
    Unreadable { sectors: Vec<u32> },
    /// The block's write-zeroes is acknowledged but never done.
    LostZeroing,
    /// The block's discard is acknowledged but never done.
    LostDiscard,
    /// The block's write-zeroes zeroes block `to` instead.
    MisdirectedZeroing { to: u64 },
    /// The block's discard discards block `to` instead.
    MisdirectedDiscard { to: u64 },
    /// Only the first `sectors` 512-byte sectors of the block's
    /// write-zeroes are zeroed.
    TornZeroing { sectors: u32 },
    /// After its discard the block reads what block `from` held then (a
    /// thin pool that hands the freed grain's mapping to another block).
    DiscardExposes { from: u64 },
    /// After its discard the block reads bytes that are no stamp (a freed
    /// grain reused for someone else's data).
    DiscardGarbage,
}

/// A fault type without its parameters: what a plan samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultType {
    LostWrite,
    Misdirected,
    Torn,
    BitFlip,
    Zeroed,
    Foreign,
    StaleRead,
    Unreadable,
    LostZeroing,
    LostDiscard,
    MisdirectedZeroing,
    MisdirectedDiscard,
    TornZeroing,
    DiscardExposes,
    DiscardGarbage,
}

impl FaultType {
    pub const ALL: [FaultType; 15] = [
        FaultType::LostWrite,
        FaultType::Misdirected,
        FaultType::Torn,
        FaultType::BitFlip,
        FaultType::Zeroed,
        FaultType::Foreign,
        FaultType::StaleRead,
        FaultType::Unreadable,
        FaultType::LostZeroing,
        FaultType::LostDiscard,
        FaultType::MisdirectedZeroing,
        FaultType::MisdirectedDiscard,
        FaultType::TornZeroing,
        FaultType::DiscardExposes,
        FaultType::DiscardGarbage,
    ];

    /// The fault types that strike a zeroing or a discard.
    pub const SPACE: [FaultType; 7] = [
        FaultType::LostZeroing,
        FaultType::LostDiscard,
        FaultType::MisdirectedZeroing,
        FaultType::MisdirectedDiscard,
        FaultType::TornZeroing,
        FaultType::DiscardExposes,
        FaultType::DiscardGarbage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultType::LostWrite => "lost_write",
            FaultType::Misdirected => "misdirected",
            FaultType::Torn => "torn",
            FaultType::BitFlip => "bit_flip",
            FaultType::Zeroed => "zeroed",
            FaultType::Foreign => "foreign",
            FaultType::StaleRead => "stale_read",
            FaultType::Unreadable => "unreadable",
            FaultType::LostZeroing => "lost_zeroing",
            FaultType::LostDiscard => "lost_discard",
            FaultType::MisdirectedZeroing => "misdirected_zeroing",
            FaultType::MisdirectedDiscard => "misdirected_discard",
            FaultType::TornZeroing => "torn_zeroing",
            FaultType::DiscardExposes => "discard_exposes_other",
            FaultType::DiscardGarbage => "discard_garbage",
        }
    }

    /// Torn writes and zeroings need a block of two sectors or more: a
    /// 512-byte block is one sector, and a device tears at sector
    /// granularity.
    pub fn possible_at(self, block_size: u32) -> bool {
        !matches!(self, FaultType::Torn | FaultType::TornZeroing)
            || block_size as usize > SECTOR_BYTES
    }

    /// The operation a victim of this fault type must get for the fault to
    /// strike: `None` for the faults of writes and reads.
    pub fn space_op(self) -> Option<OpKind> {
        match self {
            FaultType::LostZeroing | FaultType::MisdirectedZeroing | FaultType::TornZeroing => {
                Some(OpKind::Zero)
            }
            FaultType::LostDiscard
            | FaultType::MisdirectedDiscard
            | FaultType::DiscardExposes
            | FaultType::DiscardGarbage => Some(OpKind::Discard),
            _ => None,
        }
    }
}

/// A fault type serialises as its name.
impl serde::Serialize for FaultType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl FaultKind {
    pub fn fault_type(&self) -> FaultType {
        match self {
            FaultKind::LostWrite => FaultType::LostWrite,
            FaultKind::Misdirected { .. } => FaultType::Misdirected,
            FaultKind::Torn { .. } => FaultType::Torn,
            FaultKind::BitFlip { .. } => FaultType::BitFlip,
            FaultKind::Zeroed => FaultType::Zeroed,
            FaultKind::Foreign => FaultType::Foreign,
            FaultKind::StaleRead { .. } => FaultType::StaleRead,
            FaultKind::Unreadable { .. } => FaultType::Unreadable,
            FaultKind::LostZeroing => FaultType::LostZeroing,
            FaultKind::LostDiscard => FaultType::LostDiscard,
            FaultKind::MisdirectedZeroing { .. } => FaultType::MisdirectedZeroing,
            FaultKind::MisdirectedDiscard { .. } => FaultType::MisdirectedDiscard,
            FaultKind::TornZeroing { .. } => FaultType::TornZeroing,
            FaultKind::DiscardExposes { .. } => FaultType::DiscardExposes,
            FaultKind::DiscardGarbage => FaultType::DiscardGarbage,
        }
    }

    /// Faults that act on the final write (the others act on reads, or on
    /// a zeroing or discard).
    pub fn strikes_write(&self) -> bool {
        !matches!(
            self,
            FaultKind::StaleRead { .. } | FaultKind::Unreadable { .. }
        ) && self.fault_type().space_op().is_none()
    }

    /// The other block this fault involves: where a misdirected write or
    /// space operation lands, or whose data a discard exposes.
    pub fn other_block(&self) -> Option<u64> {
        match *self {
            FaultKind::Misdirected { to }
            | FaultKind::MisdirectedZeroing { to }
            | FaultKind::MisdirectedDiscard { to } => Some(to),
            FaultKind::DiscardExposes { from } => Some(from),
            _ => None,
        }
    }
}

/// A fault on one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub block: u64,
    pub kind: FaultKind,
}

/// The shape of the run the faults are planned for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub block_size: u32,
    pub block_count: u64,
    /// Which write of a block (1 = its first) the write faults strike: the
    /// workload's last write of every block (its number of passes), so no
    /// later write heals a fault before verify sees it.
    pub final_write: u32,
}

impl Geometry {
    pub fn sectors_per_block(&self) -> u32 {
        self.block_size / SECTOR_BYTES as u32
    }
}

/// How many victims of one fault type a sampled plan gets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    /// Exactly this many (fewer when the target runs out of free blocks).
    Count(u64),
    /// Each block independently, with this probability.
    Rate(f64),
}

/// The faults to inject, checked so that no two touch the same block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    geometry: Geometry,
    seed: u64,
    faults: Vec<Fault>,
}

impl FaultPlan {
    /// A plan from an explicit list. `seed` keys the bytes of `Foreign`
    /// writes. Refuses faults that would touch the same block, or whose
    /// parameters do not fit the geometry.
    pub fn new(geometry: Geometry, seed: u64, faults: Vec<Fault>) -> Result<FaultPlan, String> {
        if geometry.final_write == 0 {
            return Err("final_write counts writes from 1".to_string());
        }
        let sectors = geometry.sectors_per_block();
        let bits = geometry.block_size as u64 * 8;
        let mut used = HashSet::new();
        let mut claim = |block: u64| -> Result<(), String> {
            if block >= geometry.block_count {
                return Err(format!(
                    "block {block} is beyond the target's {} blocks",
                    geometry.block_count
                ));
            }
            if !used.insert(block) {
                return Err(format!("block {block} is touched by two faults"));
            }
            Ok(())
        };
        for fault in &faults {
            claim(fault.block)?;
            let block = fault.block;
            if let Some(other) = fault.kind.other_block() {
                claim(other)?;
            }
            match &fault.kind {
                FaultKind::Torn { sectors: written }
                | FaultKind::TornZeroing { sectors: written } => {
                    if *written == 0 || *written >= sectors {
                        return Err(format!(
                            "torn write of block {block}: {written} of {sectors} sectors is not a tear"
                        ));
                    }
                }
                FaultKind::BitFlip { bits: flips } => {
                    let distinct: HashSet<&u32> = flips.iter().collect();
                    if flips.is_empty()
                        || distinct.len() != flips.len()
                        || flips.iter().any(|&b| b as u64 >= bits)
                    {
                        return Err(format!(
                            "bit flips of block {block} must be distinct bits below {bits}"
                        ));
                    }
                }
                FaultKind::Unreadable { sectors: failing } => {
                    let distinct: HashSet<&u32> = failing.iter().collect();
                    if failing.is_empty()
                        || distinct.len() != failing.len()
                        || failing.iter().any(|&s| s >= sectors)
                    {
                        return Err(format!(
                            "unreadable sectors of block {block} must be distinct sectors below {sectors}"
                        ));
                    }
                }
                FaultKind::StaleRead { reads: 0 } => {
                    return Err(format!("stale read of block {block}: 0 reads is no fault"));
                }
                FaultKind::LostWrite
                | FaultKind::Misdirected { .. }
                | FaultKind::Zeroed
                | FaultKind::Foreign
                | FaultKind::StaleRead { .. }
                | FaultKind::LostZeroing
                | FaultKind::LostDiscard
                | FaultKind::MisdirectedZeroing { .. }
                | FaultKind::MisdirectedDiscard { .. }
                | FaultKind::DiscardExposes { .. }
                | FaultKind::DiscardGarbage => {}
            }
        }
        Ok(FaultPlan {
            geometry,
            seed,
            faults,
        })
    }

    /// A plan drawn from `seed`: for each fault type, `Count(n)` victims or
    /// every block with probability `Rate(p)`, all on distinct blocks. Types
    /// impossible at this block size (torn at 512 B) get none.
    pub fn sample(geometry: Geometry, seed: u64, amounts: &[(FaultType, Amount)]) -> FaultPlan {
        let mut rng = SplitMix64::new(seed);
        let mut used: HashSet<u64> = HashSet::new();
        let mut faults = Vec::new();
        let sectors = geometry.sectors_per_block();
        let bits = geometry.block_size * 8;
        for &(fault_type, amount) in amounts {
            if !fault_type.possible_at(geometry.block_size) {
                continue;
            }
            let wanted = match amount {
                Amount::Count(n) => n,
                Amount::Rate(p) => {
                    (0..geometry.block_count).filter(|_| rng.unit() < p).count() as u64
                }
            };
            for _ in 0..wanted {
                let Some(block) = free_block(&mut rng, &mut used, geometry.block_count) else {
                    break;
                };
                let kind = match fault_type {
                    FaultType::LostWrite => FaultKind::LostWrite,
                    FaultType::Misdirected => {
                        match free_block(&mut rng, &mut used, geometry.block_count) {
                            Some(to) => FaultKind::Misdirected { to },
                            None => break,
                        }
                    }
                    FaultType::MisdirectedZeroing => {
                        match free_block(&mut rng, &mut used, geometry.block_count) {
                            Some(to) => FaultKind::MisdirectedZeroing { to },
                            None => break,
                        }
                    }
                    FaultType::MisdirectedDiscard => {
                        match free_block(&mut rng, &mut used, geometry.block_count) {
                            Some(to) => FaultKind::MisdirectedDiscard { to },
                            None => break,
                        }
                    }
                    FaultType::DiscardExposes => {
                        match free_block(&mut rng, &mut used, geometry.block_count) {
                            Some(from) => FaultKind::DiscardExposes { from },
                            None => break,
                        }
                    }
                    FaultType::LostZeroing => FaultKind::LostZeroing,
                    FaultType::LostDiscard => FaultKind::LostDiscard,
                    FaultType::DiscardGarbage => FaultKind::DiscardGarbage,
                    FaultType::Torn => FaultKind::Torn {
                        sectors: 1 + rng.below(sectors as u64 - 1) as u32,
                    },
                    FaultType::TornZeroing => FaultKind::TornZeroing {
                        sectors: 1 + rng.below(sectors as u64 - 1) as u32,
                    },
                    FaultType::BitFlip => {
                        let count = 1 + rng.below(3) as usize;
                        let mut flips: Vec<u32> = Vec::new();
                        while flips.len() < count {
                            let bit = rng.below(bits as u64) as u32;
                            if !flips.contains(&bit) {
                                flips.push(bit);
                            }
                        }
                        FaultKind::BitFlip { bits: flips }
                    }
                    FaultType::Zeroed => FaultKind::Zeroed,
                    FaultType::Foreign => FaultKind::Foreign,
                    // Mostly the first read only; sometimes the re-read too.
                    FaultType::StaleRead => FaultKind::StaleRead {
                        reads: 1 + rng.below(2) as u32,
                    },
                    FaultType::Unreadable => {
                        // Latent sector errors come in clusters: a run of
                        // one to four neighbouring sectors.
                        let length = 1 + rng.below(sectors.min(4) as u64) as u32;
                        let first = rng.below((sectors - length + 1) as u64) as u32;
                        FaultKind::Unreadable {
                            sectors: (first..first + length).collect(),
                        }
                    }
                };
                faults.push(Fault { block, kind });
            }
        }
        FaultPlan::new(geometry, seed, faults).expect("a sampled plan is valid by construction")
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// Every block a fault touches: victims, landing places and the blocks
    /// a discard exposes.
    pub fn involved_blocks(&self) -> HashSet<u64> {
        let mut blocks = HashSet::new();
        for fault in &self.faults {
            blocks.insert(fault.block);
            blocks.extend(fault.kind.other_block());
        }
        blocks
    }

    /// How many faults of each type the plan holds.
    pub fn count(&self, fault_type: FaultType) -> usize {
        self.faults
            .iter()
            .filter(|f| f.kind.fault_type() == fault_type)
            .count()
    }
}

/// A block no fault touches yet, drawn at random; `None` when few are left.
fn free_block(rng: &mut SplitMix64, used: &mut HashSet<u64>, block_count: u64) -> Option<u64> {
    if used.len() as u64 >= block_count {
        return None;
    }
    // Rejection sampling while blocks are plentiful, a scan when they are not.
    for _ in 0..64 {
        let block = rng.below(block_count);
        if used.insert(block) {
            return Some(block);
        }
    }
    let block = (0..block_count).find(|b| !used.contains(b))?;
    used.insert(block);
    Some(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(block_size: u32) -> Geometry {
        Geometry {
            block_size,
            block_count: 100,
            final_write: 2,
        }
    }

    #[test]
    fn sampled_plans_are_deterministic_and_touch_each_block_once() {
        let amounts: Vec<(FaultType, Amount)> = FaultType::ALL
            .iter()
            .map(|&t| (t, Amount::Count(5)))
            .collect();
        let plan = FaultPlan::sample(geometry(4096), 7, &amounts);
        assert_eq!(plan, FaultPlan::sample(geometry(4096), 7, &amounts));
        assert_ne!(plan, FaultPlan::sample(geometry(4096), 8, &amounts));
        for fault_type in FaultType::ALL {
            assert_eq!(plan.count(fault_type), 5, "{fault_type:?}");
        }
        // 75 victims, and 5 landing places of misdirected writes, zeroings
        // and discards each, and 5 blocks discards expose: all distinct.
        assert_eq!(plan.involved_blocks().len(), 95);
    }

    #[test]
    fn torn_writes_are_not_planned_for_one_sector_blocks() {
        let plan = FaultPlan::sample(
            geometry(512),
            1,
            &[
                (FaultType::Torn, Amount::Count(3)),
                (FaultType::TornZeroing, Amount::Count(3)),
            ],
        );
        assert!(plan.faults().is_empty());
        let explicit = FaultPlan::new(
            geometry(512),
            0,
            vec![Fault {
                block: 1,
                kind: FaultKind::Torn { sectors: 1 },
            }],
        );
        assert!(explicit.is_err());
    }

    #[test]
    fn a_sample_runs_out_of_blocks_gracefully() {
        let small = Geometry {
            block_size: 4096,
            block_count: 5,
            final_write: 1,
        };
        let plan = FaultPlan::sample(small, 3, &[(FaultType::Misdirected, Amount::Count(10))]);
        assert_eq!(plan.count(FaultType::Misdirected), 2);
        assert_eq!(plan.involved_blocks().len(), 4);
    }

    #[test]
    fn explicit_plans_refuse_interacting_faults() {
        let fault = |block, kind| Fault { block, kind };
        let refused = [
            vec![fault(1, FaultKind::LostWrite), fault(1, FaultKind::Zeroed)],
            vec![
                fault(1, FaultKind::Misdirected { to: 2 }),
                fault(2, FaultKind::Foreign),
            ],
            vec![fault(1, FaultKind::Misdirected { to: 1 })],
            vec![fault(100, FaultKind::LostWrite)],
            vec![fault(3, FaultKind::BitFlip { bits: vec![] })],
            vec![fault(3, FaultKind::BitFlip { bits: vec![5, 5] })],
            vec![fault(
                3,
                FaultKind::BitFlip {
                    bits: vec![4096 * 8],
                },
            )],
            vec![fault(3, FaultKind::Unreadable { sectors: vec![8] })],
            vec![fault(3, FaultKind::Torn { sectors: 8 })],
            vec![fault(3, FaultKind::StaleRead { reads: 0 })],
            vec![fault(3, FaultKind::TornZeroing { sectors: 0 })],
            vec![
                fault(1, FaultKind::MisdirectedZeroing { to: 2 }),
                fault(3, FaultKind::DiscardExposes { from: 2 }),
            ],
            vec![fault(1, FaultKind::MisdirectedDiscard { to: 100 })],
        ];
        for faults in refused {
            assert!(
                FaultPlan::new(geometry(4096), 0, faults.clone()).is_err(),
                "{faults:?}"
            );
        }
    }

    #[test]
    fn rates_scale_with_the_target() {
        let big = Geometry {
            block_size: 4096,
            block_count: 10_000,
            final_write: 1,
        };
        let plan = FaultPlan::sample(big, 9, &[(FaultType::LostWrite, Amount::Rate(0.01))]);
        let count = plan.count(FaultType::LostWrite);
        assert!((50..150).contains(&count), "{count} lost writes at 1%");
    }
}
