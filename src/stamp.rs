//! The block stamp: the self-describing on-disk format of every block
//! blockstamp writes. Documented byte by byte in docs/FORMAT.md.
//!
//! Every 512-byte sector of a block carries its own 48-byte header (which
//! run, which block, which sector of it, which generation, which write) and
//! its own CRC32C, followed by 464 bytes of pseudo-random payload that is a
//! pure function of (run, block, generation, sector). Per-sector identity is
//! what makes torn writes decidable at sector granularity and lets a block
//! whose first bytes are damaged still be recognised by its other sectors
//! (vdbench's choice); the generation in every sector is what catches the
//! stale block after an overwrite that fio's per-block header misses (fio
//! issue #1067). The payload needs no storage: verify regenerates it from the
//! manifest to show a damaged block byte by byte against what was written.
//!
//! This module knows nothing about IO.

use crate::rng::mix64;

/// Every stamp is built from 512-byte sectors, the smallest unit a device
/// can tear a write into.
pub const SECTOR_BYTES: usize = 512;
/// Bytes of header at the start of every sector.
pub const HEADER_BYTES: usize = 48;
/// Bytes of payload after the header.
pub const PAYLOAD_BYTES: usize = SECTOR_BYTES - HEADER_BYTES;
/// "BSTP", little-endian, at byte 0 of every sector.
pub const MAGIC: u32 = u32::from_le_bytes(*b"BSTP");
/// Version of this layout, at byte 4.
pub const FORMAT_VERSION: u8 = 1;

/// Header byte offsets (see docs/FORMAT.md).
mod offset {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const BLOCK_SIZE_LOG2: usize = 5;
    pub const SECTOR_INDEX: usize = 6;
    pub const RUN_ID: usize = 8;
    pub const BLOCK: usize = 16;
    pub const GENERATION: usize = 24;
    pub const RANDOM_BYTES: usize = 28;
    pub const FLAGS: usize = 30;
    pub const WRITE_SEQ: usize = 32;
    pub const WRITE_TIME: usize = 40;
    pub const CRC: usize = 44;
}

/// Byte ranges of the header fields that verify cannot regenerate from the
/// manifest alone (they describe the write, not the block): the write's
/// sequence number, its time and the CRC that covers them.
pub const WRITE_FIELDS: std::ops::Range<usize> = offset::WRITE_SEQ..HEADER_BYTES;

/// The parameters every stamp of one run shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunFormat {
    /// Random identity of the run (one manifest = one run).
    pub run_id: u64,
    /// Block size in bytes: a power of two, 512 to 1 MiB.
    pub block_size: u32,
    /// Pseudo-random bytes at the start of each sector's payload; the rest of
    /// the payload is zero. `PAYLOAD_BYTES` (the default) is incompressible;
    /// less gives arrays a compressible stream (`--compress-ratio`).
    pub random_bytes: u16,
    /// Per mille of writes whose content is one of a few shared patterns
    /// instead of unique (`--dedup-ratio`); 0: every write unique.
    pub dedup_permille: u16,
}

/// Block numbers at and above this, in a stamp, name a dedup pattern.
pub const DEDUP_PATTERN_BASE: u64 = 1 << 62;
/// Distinct dedup patterns of a run.
pub const DEDUP_PATTERNS: u64 = 64;

/// What a write of (block, generation) puts on the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// This block's own stamp at this generation.
    Unique,
    /// Shared pattern `k`: the same bytes wherever it is written, so an
    /// array's deduplication finds it. Consecutive generations of a block
    /// never share a pattern (the pattern's parity is the generation's), so
    /// a single lost write is always visible.
    Pattern(u64),
}

impl RunFormat {
    pub fn new(run_id: u64, block_size: u32) -> RunFormat {
        RunFormat {
            run_id,
            block_size,
            random_bytes: PAYLOAD_BYTES as u16,
            dedup_permille: 0,
        }
    }

    /// What the write of (block, generation) holds.
    pub fn content(&self, block: u64, generation: u32) -> Content {
        if self.dedup_permille == 0 || generation == 0 {
            return Content::Unique;
        }
        let h = mix64(self.run_id ^ mix64(block ^ ((generation as u64) << 48) ^ 0xd3d0_0d3d));
        if (h % 1000) as u16 >= self.dedup_permille {
            return Content::Unique;
        }
        let half = DEDUP_PATTERNS / 2;
        Content::Pattern(2 * ((h >> 20) % half) + (generation as u64 & 1))
    }

    /// The stamp identity (block field, generation field) of that write.
    pub fn stamp_identity(&self, block: u64, generation: u32) -> (u64, u32) {
        match self.content(block, generation) {
            Content::Unique => (block, generation),
            Content::Pattern(k) => (DEDUP_PATTERN_BASE + k, 1),
        }
    }

    pub fn sectors_per_block(&self) -> usize {
        self.block_size as usize / SECTOR_BYTES
    }

    fn block_size_log2(&self) -> u8 {
        self.block_size.trailing_zeros() as u8
    }
}

/// What distinguishes one write of a block from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteStamp {
    /// Block number: byte offset / block size.
    pub block: u64,
    /// How many times this run has written the block (1 = first write).
    pub generation: u32,
    /// Sequence number of the write IO within the run.
    pub write_seq: u64,
    /// Seconds since the Unix epoch when the write was built.
    pub write_time_s: u32,
}

/// A sector header as found on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectorHeader {
    pub version: u8,
    pub block_size_log2: u8,
    pub sector_index: u16,
    pub run_id: u64,
    pub block: u64,
    pub generation: u32,
    pub random_bytes: u16,
    pub flags: u8,
    pub write_seq: u64,
    pub write_time_s: u32,
    pub crc: u32,
}

/// What one sector holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectorContent {
    /// A stamp sector whose magic and CRC are intact.
    Stamp(SectorHeader),
    /// 512 zero bytes.
    Zero,
    /// Anything else: damaged stamp or foreign data.
    Other,
}

/// Fill `block` with what `write` puts there: its own stamp, or (with
/// dedup) a shared pattern. Seq and time of a pattern are zero, so the
/// pattern's bytes are the same wherever it is written.
pub fn build_write(format: &RunFormat, write: &WriteStamp, block: &mut [u8]) {
    match format.content(write.block, write.generation) {
        Content::Unique => build_block(format, write, block),
        Content::Pattern(k) => build_block(
            format,
            &WriteStamp {
                block: DEDUP_PATTERN_BASE + k,
                generation: 1,
                write_seq: 0,
                write_time_s: 0,
            },
            block,
        ),
    }
}

/// The stamps of one write of consecutive blocks, built into its buffer by
/// whichever thread sends it (an engine, see `engine::Io::stamps`): with
/// many jobs, each job's thread stamps its own share of the writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteStamps {
    pub format: RunFormat,
    pub first_block: u64,
    /// Each block's generation, in order from `first_block`.
    pub generations: Vec<u32>,
    pub write_seq: u64,
    pub write_time_s: u32,
}

impl WriteStamps {
    /// Fill `buf` (one `format.block_size` per generation) with the write.
    pub fn build(&self, buf: &mut [u8]) {
        let block_size = self.format.block_size as usize;
        debug_assert_eq!(buf.len(), block_size * self.generations.len());
        for (i, (chunk, &generation)) in buf
            .chunks_exact_mut(block_size)
            .zip(&self.generations)
            .enumerate()
        {
            build_write(
                &self.format,
                &WriteStamp {
                    block: self.first_block + i as u64,
                    generation,
                    write_seq: self.write_seq,
                    write_time_s: self.write_time_s,
                },
                chunk,
            );
        }
    }
}

/// Does `bytes` hold exactly what the write of (block, generation) put there?
pub fn holds(format: &RunFormat, block: u64, generation: u32, bytes: &[u8]) -> bool {
    let (stamp_block, stamp_generation) = format.stamp_identity(block, generation);
    block_is_intact(format, stamp_block, stamp_generation, bytes)
}

/// Fill `block` (exactly `format.block_size` bytes) with the stamp of `write`.
pub fn build_block(format: &RunFormat, write: &WriteStamp, block: &mut [u8]) {
    debug_assert_eq!(block.len(), format.block_size as usize);
    for (index, sector) in block.chunks_exact_mut(SECTOR_BYTES).enumerate() {
        let sector: &mut [u8; SECTOR_BYTES] = sector.try_into().expect("512-byte sector");
        write_header_fields(format, write, index as u16, sector);
        fill_payload(
            payload_key(format.run_id, write.block, write.generation, index as u16),
            format.random_bytes as usize,
            &mut sector[HEADER_BYTES..],
        );
    }
    let mut crcs = Vec::with_capacity(block.len() / SECTOR_BYTES);
    crc::for_each_sector(block, |_, crc| {
        crcs.push(crc);
        true
    });
    for (sector, crc) in block.chunks_exact_mut(SECTOR_BYTES).zip(crcs) {
        put_u32(sector, offset::CRC, crc);
    }
}

/// Fill one 512-byte sector of a block.
pub fn build_sector(format: &RunFormat, write: &WriteStamp, sector_index: u16, sector: &mut [u8]) {
    let sector: &mut [u8; SECTOR_BYTES] = sector.try_into().expect("512-byte sector");
    write_header_fields(format, write, sector_index, sector);
    let (_, payload) = sector.split_at_mut(HEADER_BYTES);
    fill_payload(
        payload_key(format.run_id, write.block, write.generation, sector_index),
        format.random_bytes as usize,
        payload,
    );
    let crc = sector_crc(sector);
    put_u32(sector, offset::CRC, crc);
}

fn write_header_fields(
    format: &RunFormat,
    write: &WriteStamp,
    sector_index: u16,
    sector: &mut [u8; SECTOR_BYTES],
) {
    put_u32(sector, offset::MAGIC, MAGIC);
    sector[offset::VERSION] = FORMAT_VERSION;
    sector[offset::BLOCK_SIZE_LOG2] = format.block_size_log2();
    sector[offset::SECTOR_INDEX..offset::SECTOR_INDEX + 2]
        .copy_from_slice(&sector_index.to_le_bytes());
    put_u64(sector, offset::RUN_ID, format.run_id);
    put_u64(sector, offset::BLOCK, write.block);
    put_u32(sector, offset::GENERATION, write.generation);
    sector[offset::RANDOM_BYTES..offset::RANDOM_BYTES + 2]
        .copy_from_slice(&format.random_bytes.to_le_bytes());
    sector[offset::FLAGS] = 0;
    sector[offset::FLAGS + 1] = 0;
    put_u64(sector, offset::WRITE_SEQ, write.write_seq);
    put_u32(sector, offset::WRITE_TIME, write.write_time_s);
}

/// The exact sector a write of (block, generation) put at `sector_index`,
/// given the write's sequence number and time (which the manifest does not
/// keep; verify takes them from the block's intact sectors).
pub fn expected_sector(
    format: &RunFormat,
    write: &WriteStamp,
    sector_index: u16,
) -> [u8; SECTOR_BYTES] {
    let mut sector = [0u8; SECTOR_BYTES];
    build_sector(format, write, sector_index, &mut sector);
    sector
}

/// CRC32C of a sector, over everything but the CRC field itself.
pub fn sector_crc(sector: &[u8; SECTOR_BYTES]) -> u32 {
    crc::sector_crcs([sector])[0]
}

/// CRC32C of sectors, several at once.
///
/// The crc32 instruction has a latency of three cycles and a throughput of
/// one, so a single 512-byte sector cannot use more than a third of it;
/// interleaving four sectors' CRCs keeps it busy. Same values as the
/// `crc32c` crate (standard CRC-32C), which is the fallback.
mod crc {
    use super::{HEADER_BYTES, SECTOR_BYTES, offset};

    pub fn sector_crcs<const N: usize>(sectors: [&[u8; SECTOR_BYTES]; N]) -> [u32; N] {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("sse4.2") {
                // SAFETY: the CPU has SSE4.2 (checked just above).
                return unsafe { sector_crcs_sse42(sectors) };
            }
        }
        sectors.map(|sector| {
            let head = crc32c::crc32c(&sector[..offset::CRC]);
            crc32c::crc32c_append(head, &sector[HEADER_BYTES..])
        })
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse4.2")]
    unsafe fn sector_crcs_sse42<const N: usize>(sectors: [&[u8; SECTOR_BYTES]; N]) -> [u32; N] {
        use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64};
        let word = |sector: &[u8; SECTOR_BYTES], at: usize| {
            u64::from_le_bytes(sector[at..at + 8].try_into().expect("8 bytes"))
        };
        let mut state = [!0u64; N];
        // Bytes 0..40, then 40..44 (the CRC field at 44..48 is skipped).
        for at in (0..40).step_by(8) {
            for lane in 0..N {
                state[lane] = _mm_crc32_u64(state[lane], word(sectors[lane], at));
            }
        }
        for lane in 0..N {
            let tail = u32::from_le_bytes(sectors[lane][40..44].try_into().expect("4 bytes"));
            state[lane] = _mm_crc32_u32(state[lane] as u32, tail) as u64;
        }
        for at in (HEADER_BYTES..SECTOR_BYTES).step_by(8) {
            for lane in 0..N {
                state[lane] = _mm_crc32_u64(state[lane], word(sectors[lane], at));
            }
        }
        state.map(|s| !(s as u32))
    }

    /// Call `each(sector_index, crc)` for every sector of a block.
    pub fn for_each_sector(block: &[u8], mut each: impl FnMut(usize, u32) -> bool) -> bool {
        let mut groups = block.chunks_exact(4 * SECTOR_BYTES);
        let mut index = 0;
        for group in groups.by_ref() {
            let s = |i: usize| -> &[u8; SECTOR_BYTES] {
                group[i * SECTOR_BYTES..(i + 1) * SECTOR_BYTES]
                    .try_into()
                    .expect("sector")
            };
            let crcs = sector_crcs([s(0), s(1), s(2), s(3)]);
            for crc in crcs {
                if !each(index, crc) {
                    return false;
                }
                index += 1;
            }
        }
        for sector in groups.remainder().chunks_exact(SECTOR_BYTES) {
            if !each(index, sector_crcs([sector.try_into().expect("sector")])[0]) {
                return false;
            }
            index += 1;
        }
        true
    }
}

/// Decode what a sector holds.
pub fn decode_sector(sector: &[u8]) -> SectorContent {
    let sector: &[u8; SECTOR_BYTES] = match sector.try_into() {
        Ok(s) => s,
        Err(_) => return SectorContent::Other,
    };
    if get_u32(sector, offset::MAGIC) == MAGIC {
        let header = parse_header(sector);
        if header.crc == sector_crc(sector) {
            return SectorContent::Stamp(header);
        }
        return SectorContent::Other;
    }
    if is_zero(sector) {
        return SectorContent::Zero;
    }
    SectorContent::Other
}

/// Read the header fields of a sector without checking anything: for
/// describing damaged sectors.
pub fn parse_header(sector: &[u8; SECTOR_BYTES]) -> SectorHeader {
    SectorHeader {
        version: sector[offset::VERSION],
        block_size_log2: sector[offset::BLOCK_SIZE_LOG2],
        sector_index: u16::from_le_bytes([
            sector[offset::SECTOR_INDEX],
            sector[offset::SECTOR_INDEX + 1],
        ]),
        run_id: get_u64(sector, offset::RUN_ID),
        block: get_u64(sector, offset::BLOCK),
        generation: get_u32(sector, offset::GENERATION),
        random_bytes: u16::from_le_bytes([
            sector[offset::RANDOM_BYTES],
            sector[offset::RANDOM_BYTES + 1],
        ]),
        flags: sector[offset::FLAGS],
        write_seq: get_u64(sector, offset::WRITE_SEQ),
        write_time_s: get_u32(sector, offset::WRITE_TIME),
        crc: get_u32(sector, offset::CRC),
    }
}

/// The fast path of verify: does `block` hold exactly the stamp of
/// (`block_number`, `generation`) of this run, in every sector?
///
/// Checks each sector's identity fields and CRC; the CRC covers the payload,
/// so an intact CRC over the right identity means the right bytes.
pub fn block_is_intact(
    format: &RunFormat,
    block_number: u64,
    generation: u32,
    block: &[u8],
) -> bool {
    // The first 32 header bytes are fixed for a given (run, block, generation)
    // except the sector index; compare them as words.
    let mut expected = [0u8; 32];
    put_u32(&mut expected, offset::MAGIC, MAGIC);
    expected[offset::VERSION] = FORMAT_VERSION;
    expected[offset::BLOCK_SIZE_LOG2] = format.block_size_log2();
    put_u64(&mut expected, offset::RUN_ID, format.run_id);
    put_u64(&mut expected, offset::BLOCK, block_number);
    put_u32(&mut expected, offset::GENERATION, generation);
    expected[offset::RANDOM_BYTES..offset::RANDOM_BYTES + 2]
        .copy_from_slice(&format.random_bytes.to_le_bytes());
    let expected_words = [
        get_u64(&expected, 0),
        get_u64(&expected, 8),
        get_u64(&expected, 16),
        get_u64(&expected, 24),
    ];
    block
        .chunks_exact(SECTOR_BYTES)
        .enumerate()
        .all(|(index, sector)| {
            let sector: &[u8; SECTOR_BYTES] = sector.try_into().expect("512-byte sector");
            let first_word = expected_words[0] | ((index as u64) << 48);
            get_u64(sector, 0) == first_word
                && get_u64(sector, 8) == expected_words[1]
                && get_u64(sector, 16) == expected_words[2]
                && get_u64(sector, 24) == expected_words[3]
                && get_u32(sector, offset::CRC) == sector_crc(sector)
        })
}

/// Key of the payload stream of one sector: distinct for every
/// (run, block, generation, sector).
pub fn payload_key(run_id: u64, block: u64, generation: u32, sector_index: u16) -> u64 {
    let a = mix64(run_id ^ 0x9e37_79b9_7f4a_7c15);
    let b = mix64(a ^ block);
    mix64(b ^ ((generation as u64) << 16 | sector_index as u64))
}

/// Fill a payload: `random_bytes` pseudo-random bytes (rounded to 8), zeros
/// after. Counter-based (word i depends only on key and i), so any sector is
/// regenerated without generating the ones before it.
pub fn fill_payload(key: u64, random_bytes: usize, payload: &mut [u8]) {
    let random_bytes = random_bytes.min(payload.len()) & !7;
    let (random, fill) = payload.split_at_mut(random_bytes);
    let mut counter = key;
    for word in random.chunks_exact_mut(8) {
        counter = counter.wrapping_add(0xa076_1d64_78bd_642f);
        word.copy_from_slice(&wymix(counter).to_le_bytes());
    }
    fill.fill(0);
}

/// wyrand's output function: one 64×64→128-bit multiply per 8 bytes.
#[inline(always)]
fn wymix(counter: u64) -> u64 {
    let product = (counter as u128).wrapping_mul((counter ^ 0xe703_7ed1_a0b4_28db) as u128);
    (product as u64) ^ ((product >> 64) as u64)
}

pub fn is_zero(bytes: &[u8]) -> bool {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    words
        .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
        .fold(0, |acc, w| acc | w)
        == 0
        && tail.iter().all(|&b| b == 0)
}

#[inline(always)]
fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[inline(always)]
fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

#[inline(always)]
fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

#[inline(always)]
fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(block_size: u32) -> RunFormat {
        RunFormat::new(0x1234_5678_9abc_def0, block_size)
    }

    fn write(block: u64, generation: u32) -> WriteStamp {
        WriteStamp {
            block,
            generation,
            write_seq: 77,
            write_time_s: 1_700_000_000,
        }
    }

    #[test]
    fn a_built_block_is_intact_and_decodes_in_every_sector() {
        for block_size in [512u32, 4096, 65536] {
            let f = format(block_size);
            let mut block = vec![0u8; block_size as usize];
            build_block(&f, &write(42, 3), &mut block);
            assert!(block_is_intact(&f, 42, 3, &block));
            assert!(!block_is_intact(&f, 42, 2, &block));
            assert!(!block_is_intact(&f, 43, 3, &block));
            for (index, sector) in block.chunks_exact(SECTOR_BYTES).enumerate() {
                match decode_sector(sector) {
                    SectorContent::Stamp(h) => {
                        assert_eq!(
                            (h.block, h.generation, h.sector_index as usize),
                            (42, 3, index)
                        );
                        assert_eq!(h.run_id, f.run_id);
                        assert_eq!(h.write_seq, 77);
                    }
                    other => panic!("sector {index}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn any_flipped_bit_breaks_the_sector() {
        let f = format(512);
        let mut block = vec![0u8; 512];
        build_block(&f, &write(1, 1), &mut block);
        for bit in (0..512 * 8).step_by(13) {
            let mut damaged = block.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(!block_is_intact(&f, 1, 1, &damaged), "bit {bit}");
        }
    }

    #[test]
    fn payloads_are_unique_per_run_block_generation_and_sector() {
        let key = payload_key(1, 2, 3, 4);
        assert_ne!(key, payload_key(2, 2, 3, 4));
        assert_ne!(key, payload_key(1, 3, 3, 4));
        assert_ne!(key, payload_key(1, 2, 4, 4));
        assert_ne!(key, payload_key(1, 2, 3, 5));
        let mut a = [0u8; PAYLOAD_BYTES];
        let mut b = [0u8; PAYLOAD_BYTES];
        fill_payload(key, PAYLOAD_BYTES, &mut a);
        fill_payload(payload_key(1, 2, 4, 4), PAYLOAD_BYTES, &mut b);
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(same < PAYLOAD_BYTES / 16, "{same} equal bytes");
    }

    #[test]
    fn compressible_payload_has_a_zero_tail() {
        let mut payload = [0xffu8; PAYLOAD_BYTES];
        fill_payload(9, 200, &mut payload);
        assert!(payload[200..].iter().all(|&b| b == 0));
        assert!(payload[..200].iter().filter(|&&b| b == 0).count() < 10);
    }

    #[test]
    fn interleaved_crcs_equal_the_crc32c_crate() {
        let mut block = vec![0u8; 4096 + 1024];
        for (i, byte) in block.iter_mut().enumerate() {
            *byte = (i * 7 + i / 13) as u8;
        }
        let mut seen = 0;
        crc::for_each_sector(&block, |index, crc| {
            let sector = &block[index * SECTOR_BYTES..(index + 1) * SECTOR_BYTES];
            let reference = crc32c::crc32c_append(crc32c::crc32c(&sector[..44]), &sector[48..]);
            assert_eq!(crc, reference, "sector {index}");
            seen += 1;
            true
        });
        assert_eq!(seen, 10);
    }

    #[test]
    fn zero_and_garbage_sectors() {
        assert_eq!(decode_sector(&[0u8; 512]), SectorContent::Zero);
        assert_eq!(decode_sector(&[7u8; 512]), SectorContent::Other);
        assert_eq!(decode_sector(&[0u8; 100]), SectorContent::Other);
    }
}
