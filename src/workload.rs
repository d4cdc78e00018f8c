//! Workloads decide which blocks each write covers and in what order.
//!
//! The default is the burst scheduler: bursts of `burst` writes submitted
//! together, scattered so that no two writes of a burst touch or adjoin each
//! other — the "burst of non-contiguous write IO in a very short period of
//! time" that broke VMware's SEsparse coalescing (KB 59216). Within a pass
//! every covered block is written exactly once (a bitmap, as fio's random
//! map), whatever the IO sizes; `--overwrite` adds re-hits of recently
//! written blocks on top, creating the newer generations a lost write needs
//! in order to show.
//!
//! Cost follows the writes, not the target: `--coverage F` picks its blocks
//! on a seeded jittered grid ([`Coverage`]), so the i-th covered block and
//! the rank of a block are each a few multiplications away; every order is
//! an order of those ranks (a keyed Feistel permutation for `random`), and
//! the bitmap has one bit per covered block. Writing 0.01% of a 1 TiB
//! target (27 thousand of its 268 million blocks) costs 27 thousand
//! choices and a 3 KiB bitmap.

use std::collections::VecDeque;

use crate::rng::{SplitMix64, mix64};

pub use crate::manifest::OpKind;

/// One IO: `block_count` consecutive blocks from `first_block`, written,
/// zeroed or discarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOp {
    pub first_block: u64,
    pub block_count: u32,
    pub kind: OpKind,
}

impl WriteOp {
    /// A write of `block_count` blocks from `first_block`.
    pub fn write(first_block: u64, block_count: u32) -> WriteOp {
        WriteOp {
            first_block,
            block_count,
            kind: OpKind::Write,
        }
    }

    pub fn end(&self) -> u64 {
        self.first_block + self.block_count as u64
    }

    /// Overlaps or adjoins `other`.
    fn touches(&self, other: &WriteOp) -> bool {
        self.first_block <= other.end() && other.first_block <= self.end()
    }
}

/// A source of bursts.
pub trait Workload {
    /// Fill `burst` with the next burst's writes; false when done.
    fn next_burst(&mut self, burst: &mut Vec<WriteOp>) -> bool;

    /// Passes finished so far.
    fn passes_completed(&self) -> u64 {
        0
    }
}

/// Where a burst's writes land.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scatter {
    /// A random permutation of the target.
    Random,
    /// Evenly spread across the target, walking by a stride coprime with its size.
    Stride,
    /// From the end of the target down, every other block first.
    Reverse,
    /// One sequential stream per write of the burst, streams spread across the
    /// target, each skipping a block between its writes.
    Interleave,
    /// In order, adjacent (the contrast baseline, `--workload sequential`).
    Sequential,
}

impl Scatter {
    pub fn parse(text: &str) -> Result<Scatter, String> {
        match text {
            "random" => Ok(Scatter::Random),
            "stride" => Ok(Scatter::Stride),
            "reverse" => Ok(Scatter::Reverse),
            "interleave" => Ok(Scatter::Interleave),
            "sequential" => Ok(Scatter::Sequential),
            _ => Err(format!(
                "bad --scatter '{text}': use random, stride, reverse or interleave"
            )),
        }
    }
}

/// Parameters of the burst scheduler.
#[derive(Clone, Debug)]
pub struct BurstPlan {
    pub block_count: u64,
    /// Writes per burst.
    pub burst: usize,
    pub scatter: Scatter,
    /// Blocks per write, inclusive range.
    pub io_blocks: (u32, u32),
    /// Fraction of writes that re-hit recently written blocks.
    pub overwrite: f64,
    /// Fraction of the blocks covered (chosen by `seed`, see [`Coverage`]).
    pub coverage: f64,
    /// Passes over the covered blocks; `None`: until stopped (time-based).
    pub passes: Option<u64>,
    pub seed: u64,
    /// Fraction of operations that discard their blocks instead (`--discard`).
    pub discard: f64,
    /// Fraction of operations that zero their blocks instead (`--write-zeroes`).
    pub zero: f64,
}

/// Recently written extents kept for overwrites.
const RECENT_WRITES: usize = 4096;

/// The burst scheduler.
pub struct BurstWorkload {
    plan: BurstPlan,
    rng: SplitMix64,
    coverage: Coverage,
    pass: u64,
    order: SlotOrder,
    position: u64,
    /// Covered blocks written in this pass (one bit per rank).
    written: Vec<u64>,
    /// Blocks whose turn came while they adjoined a write of the burst.
    deferred: VecDeque<u64>,
    recent: VecDeque<WriteOp>,
}

impl BurstWorkload {
    pub fn new(plan: BurstPlan) -> BurstWorkload {
        let coverage = Coverage::new(plan.block_count, plan.coverage, mix64(plan.seed ^ 0xc0ffee));
        let words = coverage.count().div_ceil(64) as usize;
        let order = SlotOrder::new(&plan, coverage.count(), 0);
        BurstWorkload {
            rng: SplitMix64(mix64(plan.seed ^ 0x5eed)),
            coverage,
            order,
            plan,
            pass: 0,
            position: 0,
            written: vec![0; words],
            deferred: VecDeque::new(),
            recent: VecDeque::new(),
        }
    }

    /// The blocks this workload writes in each pass.
    pub fn coverage(&self) -> &Coverage {
        &self.coverage
    }

    fn is_written(&self, rank: u64) -> bool {
        self.written[(rank / 64) as usize] & (1 << (rank % 64)) != 0
    }

    fn mark_written(&mut self, block: u64) {
        if let Some(rank) = self.coverage.rank(block) {
            self.written[(rank / 64) as usize] |= 1 << (rank % 64);
        }
    }

    /// Free this pass and covered: may start or extend a write.
    fn available(&self, block: u64) -> bool {
        self.coverage
            .rank(block)
            .is_some_and(|rank| !self.is_written(rank))
    }

    fn passes_done(&self) -> bool {
        self.plan.passes.is_some_and(|passes| self.pass >= passes)
    }

    /// Try to place a fresh write starting at `block` into the burst.
    fn place(&mut self, block: u64, burst: &mut Vec<WriteOp>) -> Placement {
        if !self.available(block) {
            return Placement::Skip;
        }
        let (low, high) = self.plan.io_blocks;
        let wanted = if low == high {
            low
        } else {
            low + (self.rng.next_u64() % (high - low + 1) as u64) as u32
        };
        let mut op = WriteOp::write(block, 1);
        op.kind = self.pick_kind();
        while op.block_count < wanted && self.available(op.end()) {
            op.block_count += 1;
        }
        let spread = self.plan.scatter != Scatter::Sequential;
        if spread && burst.iter().any(|other| op.touches(other)) {
            return Placement::Defer;
        }
        for b in op.first_block..op.end() {
            self.mark_written(b);
        }
        self.remember(op);
        burst.push(op);
        Placement::Placed
    }

    /// Write, zero or discard, in the plan's proportions. Draws nothing
    /// from the generator when the workload only writes, so a seed replays
    /// the bursts it always did.
    fn pick_kind(&mut self) -> OpKind {
        if self.plan.discard <= 0.0 && self.plan.zero <= 0.0 {
            return OpKind::Write;
        }
        let draw = self.rng.unit();
        if draw < self.plan.discard {
            OpKind::Discard
        } else if draw < self.plan.discard + self.plan.zero {
            OpKind::Zero
        } else {
            OpKind::Write
        }
    }

    fn remember(&mut self, op: WriteOp) {
        if self.plan.overwrite > 0.0 {
            if self.recent.len() == RECENT_WRITES {
                self.recent.pop_front();
            }
            self.recent.push_back(op);
        }
    }

    /// A re-hit of a recently written extent that touches nothing in the
    /// burst, if one is found quickly.
    fn overwrite(&mut self, burst: &[WriteOp]) -> Option<WriteOp> {
        for _ in 0..8 {
            let index = (self.rng.next_u64() % self.recent.len().max(1) as u64) as usize;
            let op = *self.recent.get(index)?;
            if !burst.iter().any(|other| op.touches(other)) {
                return Some(op);
            }
        }
        None
    }

    fn start_next_pass(&mut self) {
        self.pass += 1;
        self.position = 0;
        self.written.iter_mut().for_each(|w| *w = 0);
        self.order = SlotOrder::new(&self.plan, self.coverage.count(), self.pass);
    }
}

enum Placement {
    Placed,
    Defer,
    Skip,
}

impl Workload for BurstWorkload {
    fn next_burst(&mut self, burst: &mut Vec<WriteOp>) -> bool {
        burst.clear();
        if self.plan.block_count == 0 {
            return false;
        }
        // Blocks deferred from the last burst go first.
        let mut still_deferred = VecDeque::new();
        while let Some(block) = self.deferred.pop_front() {
            if burst.len() >= self.plan.burst {
                still_deferred.push_back(block);
                continue;
            }
            if let Placement::Defer = self.place(block, burst) {
                still_deferred.push_back(block);
            }
        }
        self.deferred = still_deferred;
        let mut attempts = 0;
        while burst.len() < self.plan.burst && !self.passes_done() {
            if self.plan.overwrite > 0.0
                && !self.recent.is_empty()
                && self.rng.unit() < self.plan.overwrite
                && let Some(mut op) = self.overwrite(burst)
            {
                op.kind = self.pick_kind();
                burst.push(op);
                continue;
            }
            if self.position >= self.order.len() {
                if self.deferred.is_empty() {
                    self.start_next_pass();
                    if burst.is_empty() {
                        continue;
                    }
                }
                break;
            }
            let slot = self.order.at(self.position);
            self.position += 1;
            attempts += 1;
            if let Some(block) = slot.map(|rank| self.coverage.block(rank))
                && let Placement::Defer = self.place(block, burst)
            {
                self.deferred.push_back(block);
            }
            // Guard against a pass whose slots are mostly taken already (by
            // multi-block writes): hand out what we have.
            if attempts > 64 * self.plan.burst && !burst.is_empty() {
                break;
            }
        }
        !burst.is_empty()
    }

    fn passes_completed(&self) -> u64 {
        self.pass
    }
}

/// The order in which a pass visits the covered blocks: index → rank (or
/// nothing). Ranks ascend with the blocks, so an order of ranks keeps its
/// shape (strided, reversed, interleaved, sequential) on the target.
#[derive(Clone, Debug)]
enum SlotOrder {
    Random(Permutation),
    Stride {
        n: u64,
        stride: u64,
        offset: u64,
    },
    Reverse {
        n: u64,
    },
    Interleave {
        n: u64,
        streams: u64,
        stream_len: u64,
    },
    Sequential {
        n: u64,
    },
}

impl SlotOrder {
    /// An order of `n` ranks for pass `pass`.
    fn new(plan: &BurstPlan, n: u64, pass: u64) -> SlotOrder {
        let key = mix64(plan.seed ^ pass.wrapping_mul(0x9e37_79b9));
        match plan.scatter {
            Scatter::Random => SlotOrder::Random(Permutation::new(n, key)),
            Scatter::Stride => {
                let mut stride = (n / plan.burst.max(1) as u64).max(2);
                while stride > 1 && gcd(stride, n) != 1 {
                    stride -= 1;
                }
                SlotOrder::Stride {
                    n,
                    stride,
                    offset: key % n.max(1),
                }
            }
            Scatter::Reverse => SlotOrder::Reverse { n },
            Scatter::Interleave => {
                let streams = (plan.burst as u64).clamp(1, n.max(1));
                SlotOrder::Interleave {
                    n,
                    streams,
                    stream_len: n.div_ceil(streams),
                }
            }
            Scatter::Sequential => SlotOrder::Sequential { n },
        }
    }

    fn len(&self) -> u64 {
        match self {
            SlotOrder::Random(p) => p.len(),
            SlotOrder::Stride { n, .. }
            | SlotOrder::Reverse { n }
            | SlotOrder::Sequential { n } => *n,
            SlotOrder::Interleave {
                streams,
                stream_len,
                ..
            } => streams * stream_len,
        }
    }

    fn at(&self, index: u64) -> Option<u64> {
        match *self {
            SlotOrder::Random(ref p) => Some(p.at(index)),
            SlotOrder::Stride { n, stride, offset } => Some((offset + index * stride) % n),
            SlotOrder::Reverse { n } => {
                let evens = n.div_ceil(2);
                Some(if index < evens {
                    n - 1 - 2 * index
                } else {
                    n - 2 - 2 * (index - evens)
                })
            }
            SlotOrder::Interleave {
                n,
                streams,
                stream_len,
            } => {
                let stream = index % streams;
                let step = index / streams;
                let start = stream * stream_len;
                let len = stream_len.min(n.saturating_sub(start));
                // Every other block of the stream, then the ones skipped.
                let within = if step < len.div_ceil(2) {
                    2 * step
                } else {
                    1 + 2 * (step - len.div_ceil(2))
                };
                (within < len).then_some(start + within)
            }
            SlotOrder::Sequential { .. } => Some(index),
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A bijection on `0..n` drawn from `key`: a 4-round Feistel network on the
/// smallest even-bit domain covering n, cycle-walked back into range.
#[derive(Clone, Debug)]
pub struct Permutation {
    n: u64,
    half_bits: u32,
    keys: [u64; 4],
}

impl Permutation {
    pub fn new(n: u64, key: u64) -> Permutation {
        let bits = 64 - n.saturating_sub(1).leading_zeros();
        let half_bits = bits.div_ceil(2).max(1);
        let keys = [
            mix64(key ^ 1),
            mix64(key ^ 2),
            mix64(key ^ 3),
            mix64(key ^ 4),
        ];
        Permutation { n, half_bits, keys }
    }

    pub fn len(&self) -> u64 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The `index`-th element of the permuted order.
    pub fn at(&self, index: u64) -> u64 {
        debug_assert!(index < self.n);
        let mut value = self.round_trip(index);
        while value >= self.n {
            value = self.round_trip(value);
        }
        value
    }

    fn round_trip(&self, value: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let mut left = value >> self.half_bits;
        let mut right = value & mask;
        for key in self.keys {
            let next = left ^ (mix64(right ^ key) & mask);
            left = right;
            right = next;
        }
        (left << self.half_bits) | right
    }
}

/// The blocks a run covers: `count` of the target's blocks on a jittered
/// grid. The target is cut into `count` strata of equal size (to a block);
/// stratum `rank` holds exactly one covered block, at a position drawn from
/// `key`. So the covered set is spread evenly yet irregularly, its size is
/// exactly the fraction asked for, and rank ↔ block are O(1) both ways in
/// no memory, ascending together.
#[derive(Clone, Debug)]
pub struct Coverage {
    block_count: u64,
    count: u64,
    key: u64,
}

impl Coverage {
    /// `fraction` of `block_count` blocks (at least one when there are any).
    pub fn new(block_count: u64, fraction: f64, key: u64) -> Coverage {
        let count = if fraction >= 1.0 {
            block_count
        } else {
            ((block_count as f64 * fraction).round() as u64).clamp(block_count.min(1), block_count)
        };
        Coverage {
            block_count,
            count,
            key,
        }
    }

    /// Covered blocks.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn is_full(&self) -> bool {
        self.count == self.block_count
    }

    /// First block of stratum `rank`.
    fn stratum_start(&self, rank: u64) -> u64 {
        (rank as u128 * self.block_count as u128 / self.count as u128) as u64
    }

    /// The `rank`-th covered block (`rank` < `count`), ascending with rank.
    pub fn block(&self, rank: u64) -> u64 {
        debug_assert!(rank < self.count);
        if self.is_full() {
            return rank;
        }
        let start = self.stratum_start(rank);
        let len = self.stratum_start(rank + 1) - start;
        start + ((mix64(rank ^ self.key) as u128 * len as u128) >> 64) as u64
    }

    /// The rank of `block` when it is covered.
    pub fn rank(&self, block: u64) -> Option<u64> {
        if block >= self.block_count {
            return None;
        }
        if self.is_full() {
            return Some(block);
        }
        // The stratum holding `block`: the last one starting at or before it.
        let rank =
            (((block as u128 + 1) * self.count as u128 - 1) / self.block_count as u128) as u64;
        (self.block(rank) == block).then_some(rank)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn plan(block_count: u64, scatter: Scatter) -> BurstPlan {
        BurstPlan {
            block_count,
            burst: 16,
            scatter,
            io_blocks: (1, 1),
            overwrite: 0.0,
            coverage: 1.0,
            passes: Some(1),
            seed: 3,
            discard: 0.0,
            zero: 0.0,
        }
    }

    fn drain(workload: &mut BurstWorkload) -> Vec<Vec<WriteOp>> {
        let mut bursts = Vec::new();
        let mut burst = Vec::new();
        while workload.next_burst(&mut burst) {
            bursts.push(burst.clone());
            assert!(bursts.len() < 1_000_000, "workload never ends");
        }
        bursts
    }

    #[test]
    fn permutations_are_bijections_and_not_sequential() {
        for n in [1u64, 2, 3, 7, 100, 1000, 4097] {
            let p = Permutation::new(n, 42);
            let seen: HashSet<u64> = (0..n).map(|i| p.at(i)).collect();
            assert_eq!(seen.len() as u64, n);
            assert!(seen.iter().all(|&v| v < n));
        }
        let p = Permutation::new(10_000, 1);
        let adjacent = (1..10_000)
            .filter(|&i| p.at(i).abs_diff(p.at(i - 1)) == 1)
            .count();
        assert!(adjacent < 50, "{adjacent} adjacent pairs");
    }

    #[test]
    fn every_scatter_writes_each_block_once_per_pass_and_no_burst_adjoins_itself() {
        for scatter in [
            Scatter::Random,
            Scatter::Stride,
            Scatter::Reverse,
            Scatter::Interleave,
        ] {
            for io_blocks in [(1, 1), (1, 4), (3, 3)] {
                let mut p = plan(1000, scatter);
                p.io_blocks = io_blocks;
                p.passes = Some(2);
                let mut workload = BurstWorkload::new(p);
                let bursts = drain(&mut workload);
                let mut counts = vec![0u32; 1000];
                let mut adjoining = 0;
                for burst in &bursts {
                    assert!(burst.len() <= 16);
                    for (i, op) in burst.iter().enumerate() {
                        assert!((io_blocks.0.min(1)..=io_blocks.1).contains(&op.block_count));
                        for b in op.first_block..op.end() {
                            counts[b as usize] += 1;
                        }
                        adjoining += burst[..i].iter().filter(|o| o.touches(op)).count();
                    }
                }
                assert!(counts.iter().all(|&c| c == 2), "{scatter:?} {io_blocks:?}");
                // Only the tail of a pass, when nothing else is left, may adjoin.
                assert!(
                    adjoining <= 8,
                    "{scatter:?} {io_blocks:?}: {adjoining} adjoining writes"
                );
                assert_eq!(workload.passes_completed(), 2);
            }
        }
    }

    #[test]
    fn sequential_writes_in_order() {
        let mut workload = BurstWorkload::new(plan(100, Scatter::Sequential));
        let order: Vec<u64> = drain(&mut workload)
            .concat()
            .iter()
            .map(|op| op.first_block)
            .collect();
        assert_eq!(order, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn io_sizes_vary_within_the_range() {
        let mut p = plan(4096, Scatter::Random);
        p.io_blocks = (1, 16);
        let sizes: HashSet<u32> = drain(&mut BurstWorkload::new(p))
            .concat()
            .iter()
            .map(|op| op.block_count)
            .collect();
        assert!(sizes.len() > 8, "{sizes:?}");
    }

    #[test]
    fn overwrites_rehit_written_blocks_and_never_collide_within_a_burst() {
        let mut p = plan(2000, Scatter::Random);
        p.overwrite = 0.5;
        let bursts = drain(&mut BurstWorkload::new(p));
        let mut counts = vec![0u32; 2000];
        for burst in &bursts {
            for (i, op) in burst.iter().enumerate() {
                counts[op.first_block as usize] += 1;
                assert!(
                    !burst[..i]
                        .iter()
                        .any(|o| o.touches(op) && o.first_block == op.first_block)
                );
            }
        }
        assert!(counts.iter().all(|&c| c >= 1));
        let rewritten = counts.iter().filter(|&&c| c > 1).count();
        assert!(rewritten > 500, "{rewritten} blocks re-hit");
    }

    #[test]
    fn coverage_selects_a_fraction() {
        let mut p = plan(10_000, Scatter::Random);
        p.coverage = 0.25;
        let written: usize = drain(&mut BurstWorkload::new(p)).concat().len();
        assert_eq!(written, 2500);
    }

    /// Every block written in a drained workload, with how often.
    fn block_counts(bursts: &[Vec<WriteOp>]) -> std::collections::HashMap<u64, u32> {
        let mut counts = std::collections::HashMap::new();
        for op in bursts.iter().flatten() {
            for block in op.first_block..op.end() {
                *counts.entry(block).or_default() += 1;
            }
        }
        counts
    }

    #[test]
    fn coverage_ranks_and_blocks_are_inverse_ascending_and_one_per_stratum() {
        for (n, fraction) in [
            (1u64, 0.5),
            (7, 0.3),
            (1000, 0.001),
            (1000, 0.999),
            (4097, 0.5),
        ] {
            let coverage = Coverage::new(n, fraction, 9);
            let blocks: Vec<u64> = (0..coverage.count()).map(|r| coverage.block(r)).collect();
            assert!(blocks.windows(2).all(|w| w[0] < w[1]), "{n} {fraction}");
            assert!(blocks.iter().all(|&b| b < n));
            for block in 0..n {
                let rank = coverage.rank(block);
                assert_eq!(rank.is_some(), blocks.binary_search(&block).is_ok());
                if let Some(rank) = rank {
                    assert_eq!(coverage.block(rank), block);
                }
            }
        }
    }

    #[test]
    fn coverage_of_a_huge_target_costs_only_its_covered_blocks() {
        // 1 TiB of 4 KiB blocks at 0.01%: the workload holds one bit per
        // covered block, and its pass is an order of those blocks alone.
        let mut p = plan(1 << 28, Scatter::Random);
        p.coverage = 0.0001;
        p.burst = 32;
        let mut workload = BurstWorkload::new(p);
        assert_eq!(workload.coverage().count(), 26844);
        assert_eq!(workload.written.len(), 26844usize.div_ceil(64));
        assert_eq!(workload.order.len(), 26844);
        let bursts = drain(&mut workload);
        let counts = block_counts(&bursts);
        assert_eq!(counts.len(), 26844);
        assert!(counts.values().all(|&c| c == 1));
        assert_eq!(workload.passes_completed(), 1);
        // Spread over the whole target, not bunched at its start.
        let high = counts.keys().filter(|&&b| b >= 1 << 27).count();
        assert!((12_000..15_000).contains(&high), "{high} in the upper half");
    }

    #[test]
    fn positional_scatters_keep_their_shape_under_coverage() {
        let mut p = plan(10_000, Scatter::Sequential);
        p.coverage = 0.1;
        let order: Vec<u64> = drain(&mut BurstWorkload::new(p.clone()))
            .concat()
            .iter()
            .map(|op| op.first_block)
            .collect();
        assert_eq!(order.len(), 1000);
        assert!(order.windows(2).all(|w| w[0] < w[1]), "sequential ascends");
        p.scatter = Scatter::Reverse;
        let reverse: Vec<u64> = drain(&mut BurstWorkload::new(p))
            .concat()
            .iter()
            .map(|op| op.first_block)
            .collect();
        // From the end down: the first half descends from the last block.
        assert_eq!(reverse[0], *order.last().unwrap());
        assert!(reverse[..500].windows(2).all(|w| w[0] > w[1]));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Within a pass every covered block is written exactly once and
        /// nothing else is; full coverage writes every block; the count is
        /// the fraction asked for.
        #[test]
        fn each_pass_writes_each_covered_block_once(
            block_count in 1u64..3000,
            coverage in proptest::prop_oneof![proptest::strategy::Just(1.0f64), 0.001f64..1.0],
            scatter in proptest::prop_oneof![
                proptest::strategy::Just(Scatter::Random),
                proptest::strategy::Just(Scatter::Stride),
                proptest::strategy::Just(Scatter::Reverse),
                proptest::strategy::Just(Scatter::Interleave),
                proptest::strategy::Just(Scatter::Sequential),
            ],
            io_high in 1u32..5,
            passes in 1u64..3,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let p = BurstPlan {
                block_count,
                burst: 8,
                scatter,
                io_blocks: (1, io_high),
                overwrite: 0.0,
                coverage,
                passes: Some(passes),
                seed,
                discard: 0.0,
                zero: 0.0,
            };
            let mut workload = BurstWorkload::new(p);
            let covered = workload.coverage().clone();
            let bursts = drain(&mut workload);
            let counts = block_counts(&bursts);
            let expected = if coverage >= 1.0 {
                block_count
            } else {
                ((block_count as f64 * coverage).round() as u64).max(1)
            };
            proptest::prop_assert_eq!(covered.count(), expected);
            proptest::prop_assert_eq!(counts.len() as u64, expected);
            for (&block, &count) in &counts {
                proptest::prop_assert!(covered.rank(block).is_some(), "block {} not covered", block);
                proptest::prop_assert_eq!(count as u64, passes, "block {}", block);
            }
            proptest::prop_assert_eq!(workload.passes_completed(), passes);
        }

        /// A seed replays the same bursts; another seed chooses others.
        #[test]
        fn a_seed_replays_the_same_bursts(
            block_count in 100u64..5000,
            coverage in 0.05f64..1.0,
            overwrite in 0.0f64..0.5,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let p = BurstPlan {
                block_count,
                burst: 8,
                scatter: Scatter::Random,
                io_blocks: (1, 4),
                overwrite,
                coverage,
                passes: Some(2),
                seed,
                discard: 0.0,
                zero: 0.0,
            };
            let first = drain(&mut BurstWorkload::new(p.clone()));
            proptest::prop_assert_eq!(&first, &drain(&mut BurstWorkload::new(p.clone())));
            let other = drain(&mut BurstWorkload::new(BurstPlan { seed: seed ^ 1, ..p }));
            proptest::prop_assert_ne!(&first, &other);
        }
    }

    #[test]
    fn time_based_runs_keep_going() {
        let mut p = plan(10, Scatter::Random);
        p.passes = None;
        let mut workload = BurstWorkload::new(p);
        let mut burst = Vec::new();
        for _ in 0..100 {
            assert!(workload.next_burst(&mut burst));
        }
        assert!(workload.passes_completed() > 10);
    }
}
