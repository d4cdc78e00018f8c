//! Which writes survived: the write sequence numbers a verify found intact
//! on the target, one bit per write.
//!
//! A finding says which write is damaged; an incident also wants to know
//! how many writes of the same bursts came through (did the array lose a
//! whole burst, or one write in it?). Every block that checks out carries
//! the sequence number of the write that put it there (bytes 32..40 of its
//! first sector), so the checking threads set that write's bit as they go:
//! no extra read, one atomic OR per block.
//!
//! The bitmap costs one bit per write of the run, capped at
//! [`MAX_BITMAP_BYTES`]; a run with more writes than that keeps every k-th
//! write only (`sampled_every` = k) and counts scale by k, an estimate the
//! report labels as such.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::stamp::{MAGIC, RunFormat, SECTOR_BYTES};

/// The bitmap's memory cap: 64 MiB, exact for runs of up to 2^29 writes
/// (a 2 TiB target written once in 4 KiB blocks).
pub const MAX_BITMAP_BYTES: u64 = 64 << 20;

/// The surviving writes of one verify.
#[derive(Debug)]
pub struct Survivors {
    words: Vec<AtomicU64>,
    /// Writes numbered at or above this are not recorded (the manifest's
    /// next write sequence number when the verify began).
    end_seq: u64,
    /// Only writes whose sequence number is a multiple of this are kept.
    sampled_every: u64,
}

impl Survivors {
    /// Room for the writes numbered below `end_seq`.
    pub fn new(end_seq: u64) -> Survivors {
        let bits_cap = MAX_BITMAP_BYTES * 8;
        let sampled_every = end_seq.div_ceil(bits_cap).max(1);
        let bits = end_seq.div_ceil(sampled_every);
        Survivors {
            words: (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            end_seq,
            sampled_every,
        }
    }

    /// 1 when every write is recorded; k when only every k-th one is.
    pub fn sampled_every(&self) -> u64 {
        self.sampled_every
    }

    /// The first write sequence number not recorded.
    pub fn end_seq(&self) -> u64 {
        self.end_seq
    }

    /// The bit of `write_seq`, when the bitmap keeps that write.
    fn bit(&self, write_seq: u64) -> Option<u64> {
        (write_seq != 0 && write_seq < self.end_seq && write_seq.is_multiple_of(self.sampled_every))
            .then(|| write_seq / self.sampled_every)
    }

    /// Write `write_seq` has a block that checked out.
    pub fn record(&self, write_seq: u64) {
        if let Some(bit) = self.bit(write_seq) {
            self.words[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
    }

    /// Record the write a block that checked out holds: the sequence number
    /// in its first sector, when that sector is a stamp of this run (a
    /// block the run never wrote holds none; a shared dedup pattern carries
    /// write 0, which names no write).
    pub fn record_block(&self, format: &RunFormat, bytes: &[u8]) {
        if bytes.len() < SECTOR_BYTES
            || bytes[..4] != MAGIC.to_le_bytes()
            || bytes[8..16] != format.run_id.to_le_bytes()
        {
            return;
        }
        self.record(u64::from_le_bytes(
            bytes[32..40].try_into().expect("8 bytes"),
        ));
    }

    /// Whether `write_seq` has a block that checked out (false for writes
    /// the sampling does not keep).
    pub fn contains(&self, write_seq: u64) -> bool {
        self.bit(write_seq).is_some_and(|bit| {
            self.words[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0
        })
    }

    /// Writes numbered `first..=last` with a block that checked out;
    /// scaled by `sampled_every` when sampled.
    pub fn count(&self, first: u64, last: u64) -> u64 {
        let last = last.min(self.end_seq.saturating_sub(1));
        if first > last {
            return 0;
        }
        let k = self.sampled_every;
        let first_bit = first.div_ceil(k);
        let last_bit = last / k;
        if first_bit > last_bit {
            return 0;
        }
        let mut count = 0u64;
        let (first_word, last_word) = (first_bit / 64, last_bit / 64);
        for word in first_word..=last_word {
            let mut bits = self.words[word as usize].load(Ordering::Relaxed);
            if word == first_word {
                bits &= !0u64 << (first_bit % 64);
            }
            if word == last_word && last_bit % 64 != 63 {
                bits &= (1u64 << (last_bit % 64 + 1)) - 1;
            }
            count += bits.count_ones() as u64;
        }
        count * k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_exact_over_any_range() {
        let survivors = Survivors::new(1000);
        for seq in (1..1000).filter(|s| s % 3 == 0) {
            survivors.record(seq);
        }
        survivors.record(0);
        survivors.record(5000);
        assert_eq!(survivors.sampled_every(), 1);
        for (first, last) in [(1, 999), (3, 3), (4, 5), (60, 200), (63, 64), (0, 5000)] {
            let want = (first.max(1)..=last.min(999))
                .filter(|s| s % 3 == 0)
                .count() as u64;
            assert_eq!(survivors.count(first, last), want, "{first}..={last}");
        }
        assert_eq!(survivors.count(10, 9), 0);
        assert!(survivors.contains(999) && !survivors.contains(998));
    }

    #[test]
    fn a_run_too_long_for_the_cap_is_sampled_and_scaled() {
        let end = MAX_BITMAP_BYTES * 8 * 3 + 5;
        let survivors = Survivors::new(end);
        assert_eq!(survivors.sampled_every(), 4);
        for seq in 100..200 {
            survivors.record(seq);
        }
        assert_eq!(survivors.count(100, 199), 100);
        assert!(survivors.contains(100) && !survivors.contains(101));
    }

    #[test]
    fn a_block_records_the_write_in_its_first_sector() {
        let format = RunFormat::new(0xabc, 4096);
        let mut bytes = vec![0u8; 4096];
        crate::stamp::build_block(
            &format,
            &crate::stamp::WriteStamp {
                block: 3,
                generation: 1,
                write_seq: 42,
                write_time_s: 7,
            },
            &mut bytes,
        );
        let survivors = Survivors::new(100);
        survivors.record_block(&RunFormat::new(0xdef, 4096), &bytes);
        assert!(!survivors.contains(42), "another run's stamp");
        survivors.record_block(&format, &bytes);
        assert!(survivors.contains(42));
    }
}
