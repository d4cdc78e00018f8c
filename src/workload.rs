//! Workloads decide which blocks each write covers and in what order.
//!
//! The writer asks for one burst at a time; a burst's writes are submitted
//! together. Orders come from a keyed Feistel permutation over the block
//! numbers, so a random, non-contiguous order over a 1 TiB target costs no
//! memory.

use crate::stamp::mix64;

/// One write IO: `block_count` consecutive blocks from `first_block`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOp {
    pub first_block: u64,
    pub block_count: u32,
}

/// A source of bursts.
pub trait Workload {
    /// Fill `burst` with the next burst's writes; false when done.
    fn next_burst(&mut self, burst: &mut Vec<WriteOp>) -> bool;

    /// True when the writer must let every IO in flight complete before the
    /// next burst (the end of a pass: the next pass writes the same blocks).
    fn at_barrier(&self) -> bool {
        false
    }

    /// Passes finished so far.
    fn passes_completed(&self) -> u64 {
        0
    }
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

/// Is `block` among the `coverage` fraction chosen by `key`?
pub fn covered(block: u64, coverage: f64, key: u64) -> bool {
    if coverage >= 1.0 {
        return true;
    }
    let threshold = (coverage * u64::MAX as f64) as u64;
    mix64(block ^ key) < threshold
}

/// The core workload: every covered block written once per pass, in a fresh
/// random order each pass; `burst` writes per burst.
pub struct PassWorkload {
    block_count: u64,
    passes: u64,
    coverage: f64,
    seed: u64,
    burst: usize,
    pass: u64,
    order: Permutation,
    position: u64,
    barrier: bool,
}

impl PassWorkload {
    pub fn new(
        block_count: u64,
        passes: u64,
        coverage: f64,
        seed: u64,
        burst: usize,
    ) -> PassWorkload {
        PassWorkload {
            block_count,
            passes,
            coverage,
            seed,
            burst: burst.max(1),
            pass: 0,
            order: Permutation::new(block_count, mix64(seed)),
            position: 0,
            barrier: false,
        }
    }

    fn coverage_key(&self) -> u64 {
        mix64(self.seed ^ 0xc0ffee)
    }
}

impl Workload for PassWorkload {
    fn next_burst(&mut self, burst: &mut Vec<WriteOp>) -> bool {
        burst.clear();
        self.barrier = false;
        let key = self.coverage_key();
        while burst.len() < self.burst {
            if self.pass >= self.passes {
                break;
            }
            if self.position >= self.block_count {
                self.pass += 1;
                self.position = 0;
                self.order = Permutation::new(
                    self.block_count,
                    mix64(self.seed ^ self.pass.wrapping_mul(0x9e37)),
                );
                self.barrier = true;
                break;
            }
            let block = self.order.at(self.position);
            self.position += 1;
            if covered(block, self.coverage, key) {
                burst.push(WriteOp {
                    first_block: block,
                    block_count: 1,
                });
            }
        }
        !burst.is_empty() || (self.pass < self.passes && self.block_count > 0) || self.barrier
    }

    fn at_barrier(&self) -> bool {
        self.barrier
    }

    fn passes_completed(&self) -> u64 {
        self.pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

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
    fn passes_write_each_covered_block_once_per_pass() {
        let mut workload = PassWorkload::new(500, 3, 0.5, 9, 16);
        let mut burst = Vec::new();
        let mut counts = vec![0u32; 500];
        while workload.next_burst(&mut burst) {
            for op in &burst {
                counts[op.first_block as usize] += 1;
            }
        }
        let written = counts.iter().filter(|&&c| c > 0).count();
        assert!(counts.iter().all(|&c| c == 0 || c == 3));
        assert!((200..300).contains(&written), "{written} blocks covered");
        assert_eq!(workload.passes_completed(), 3);
    }
}
