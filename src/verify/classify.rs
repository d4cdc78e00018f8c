//! Classification of one block against what the manifest expects.
//!
//! Pure: bytes in, verdict out. Each 512-byte sector is decoded on its own
//! (see `stamp`), then the block's verdict follows from the mix of sectors:
//!
//! - every sector this block's stamp at the expected generation → intact;
//! - every sector zero → `zeroed`;
//! - every sector this block's stamp at one other generation → `lost_write`
//!   (older) or `newer_generation` (newer);
//! - this block's sectors from more than one write (or a first write with
//!   zero sectors after it) → `torn`, with the split;
//! - this block's stamp, with sectors that are damaged or hold other data →
//!   `corrupt`, with the differing bits and byte ranges;
//! - another block's stamp of this run → `misdirected`, naming that block;
//! - anything else → `foreign` (another run's stamp is named as such).
//!
//! A sector whose header is damaged still counts as this block's when its
//! bytes are mostly those this block's stamp would have there: a bit flip
//! in the first bytes of a block is `corrupt`, not `foreign`.

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::manifest::compare_generations;
use crate::stamp::{
    self, HEADER_BYTES, RunFormat, SECTOR_BYTES, SectorContent, SectorHeader, WRITE_FIELDS,
    WriteStamp,
};

/// The finding classes of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingClass {
    LostWrite,
    NewerGeneration,
    Misdirected,
    Torn,
    Corrupt,
    Zeroed,
    Foreign,
    Unreadable,
    /// A block last zeroed (or discarded where discards read zeros) still
    /// holds this block's stamp from before.
    LostZeroing,
}

impl FindingClass {
    pub const ALL: [FindingClass; 9] = [
        FindingClass::LostWrite,
        FindingClass::NewerGeneration,
        FindingClass::Misdirected,
        FindingClass::Torn,
        FindingClass::Corrupt,
        FindingClass::Zeroed,
        FindingClass::Foreign,
        FindingClass::Unreadable,
        FindingClass::LostZeroing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FindingClass::LostWrite => "lost_write",
            FindingClass::NewerGeneration => "newer_generation",
            FindingClass::Misdirected => "misdirected",
            FindingClass::Torn => "torn",
            FindingClass::Corrupt => "corrupt",
            FindingClass::Zeroed => "zeroed",
            FindingClass::Foreign => "foreign",
            FindingClass::Unreadable => "unreadable",
            FindingClass::LostZeroing => "lost_zeroing",
        }
    }
}

/// A run of consecutive sectors that came from one write (or are zero).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectorSpan {
    pub first_sector: u32,
    pub last_sector: u32,
    /// Generation of this block found there; `None` for zero sectors.
    pub generation: Option<u32>,
}

/// One row of a hex diff: 16 bytes at `offset` within the block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffRow {
    pub offset: u32,
    pub expected: String,
    pub found: String,
}

/// How a corrupt block differs from the stamp it should be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Corruption {
    pub differing_bits: u64,
    pub differing_bytes: u64,
    /// Half-open byte ranges within the block, `[start, end)`.
    pub byte_ranges: Vec<[u32; 2]>,
    /// The 16-byte rows that differ (at most `MAX_DIFF_ROWS`).
    pub diff_rows: Vec<DiffRow>,
}

impl Corruption {
    /// The first `max` byte ranges as `1000..1001, 2100..2101`, and `, …`
    /// when there are more.
    pub fn ranges_text(&self, max: usize) -> String {
        let ranges: Vec<String> = self
            .byte_ranges
            .iter()
            .take(max)
            .map(|r| format!("{}..{}", r[0], r[1]))
            .collect();
        let more = if self.byte_ranges.len() > max {
            ", …"
        } else {
            ""
        };
        format!("{}{more}", ranges.join(", "))
    }
}

/// Rows of hex diff kept per finding.
pub const MAX_DIFF_ROWS: usize = 32;

/// Verdict on one block that is not what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified {
    pub class: FindingClass,
    pub found_generation: Option<u32>,
    pub found_block: Option<u64>,
    pub detail: String,
    pub torn_split: Option<Vec<SectorSpan>>,
    pub corruption: Option<Corruption>,
}

/// What the verifier expects of a block.
#[derive(Clone, Copy, Debug)]
pub struct Expectation {
    pub block: u64,
    /// 0: the run never wrote it (it must hold none of the run's stamps).
    pub generation: u32,
}

/// Per-sector reading of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sector {
    /// This block's stamp, right sector, at a generation.
    Own {
        generation: u32,
        write_seq: u64,
        write_time_s: u32,
    },
    /// A stamp of this run for another block (or another sector slot).
    OtherBlock {
        block: u64,
        generation: u32,
        sector_index: u16,
    },
    /// A stamp of another run.
    OtherRun(SectorHeader),
    Zero,
    /// A dedup pattern of this run that no nearby generation of this block
    /// wrote (a misdirected write of a shared pattern).
    Pattern(u64),
    /// Not a valid stamp and not zero.
    Damaged,
}

/// Older generations searched for a dedup pattern (newer: a few).
const PATTERN_SEARCH_OLDER: u32 = 64;
const PATTERN_SEARCH_NEWER: u32 = 8;

/// The generation of `block` nearest to `around` whose write was `pattern`:
/// one of its earlier writes (a lost write), or one of the next few (a
/// checkpoint verified against a newer state). A shared pattern is the
/// same bytes wherever it lands, so a misdirected write of a pattern this
/// block also had may be reported as that generation of this block.
fn generation_with_pattern(
    format: &RunFormat,
    block: u64,
    around: u32,
    pattern: u64,
) -> Option<u32> {
    use crate::manifest::next_generation;
    let wanted = stamp::Content::Pattern(pattern);
    let mut older = around;
    for _ in 0..PATTERN_SEARCH_OLDER {
        if older == 0 {
            break;
        }
        if format.content(block, older) == wanted {
            return Some(older);
        }
        older -= 1;
    }
    let mut newer = around;
    for _ in 0..PATTERN_SEARCH_NEWER {
        newer = next_generation(newer);
        if format.content(block, newer) == wanted {
            return Some(newer);
        }
    }
    None
}

/// Classify a block whose fast check failed (or any block). `None` when it
/// holds exactly what is expected.
pub fn classify(format: &RunFormat, expect: Expectation, block: &[u8]) -> Option<Classified> {
    if expect.generation != 0 && stamp::holds(format, expect.block, expect.generation, block) {
        return None;
    }
    let sectors: Vec<Sector> = block
        .chunks_exact(SECTOR_BYTES)
        .enumerate()
        .map(|(index, bytes)| read_sector(format, expect, index as u16, bytes))
        .collect();
    if expect.generation == 0 {
        return classify_unwritten(expect, &sectors);
    }
    classify_written(format, expect, block, &sectors)
}

/// Classify a block that should read all zeros: zeroed (`what` says how,
/// and `op` names the operation that did not persist, for the detail),
/// after its data write `generation` (0: none). `None` when it is all
/// zeros.
pub fn classify_zeroing(
    format: &RunFormat,
    block: u64,
    generation: u32,
    (what, op): (&str, &str),
    bytes: &[u8],
) -> Option<Classified> {
    if bytes.iter().all(|&b| b == 0) {
        return None;
    }
    let expect = Expectation {
        block,
        generation: generation.max(1),
    };
    let sectors: Vec<Sector> = bytes
        .chunks_exact(SECTOR_BYTES)
        .enumerate()
        .map(|(index, bytes)| read_sector(format, expect, index as u16, bytes))
        .collect();
    let own: Vec<Option<u32>> = sectors
        .iter()
        .map(|s| match s {
            Sector::Own { generation, .. } => Some(*generation),
            _ => None,
        })
        .collect();
    let zeros = sectors.iter().filter(|s| **s == Sector::Zero).count();
    let own_count = own.iter().flatten().count();
    if own_count > 0 && own_count + zeros == sectors.len() {
        let mut generations: Vec<u32> = own.iter().flatten().copied().collect();
        generations.sort_unstable();
        generations.dedup();
        let newest = generations
            .iter()
            .copied()
            .max_by(|a, b| compare_generations(*a, *b));
        if zeros > 0 {
            // Some sectors zeroed, others not: a partial zeroing.
            let split = sector_spans(&own);
            return Some(Classified {
                class: FindingClass::Torn,
                found_generation: newest,
                found_block: None,
                detail: format!(
                    "torn {what}: {} (expected all zeros)",
                    describe_split(&split)
                ),
                torn_split: Some(split),
                corruption: None,
            });
        }
        let found = newest.expect("own sectors");
        if generation != 0
            && generations.len() == 1
            && compare_generations(found, generation) == Ordering::Greater
        {
            return Some(Classified {
                class: FindingClass::NewerGeneration,
                found_generation: Some(found),
                found_block: None,
                detail: format!(
                    "holds generation {found} of this block, newer than any it was written with before it was {what} (expected all zeros)"
                ),
                torn_split: None,
                corruption: None,
            });
        }
        return Some(Classified {
            class: FindingClass::LostZeroing,
            found_generation: Some(found),
            found_block: None,
            detail: format!(
                "should read all zeros ({what}) but still holds generation {found} of this block: the {op} did not persist"
            ),
            torn_split: None,
            corruption: None,
        });
    }
    let mut classified = classify(format, expect, bytes)?;
    let _ = write!(classified.detail, "; expected all zeros ({what})");
    Some(classified)
}

fn read_sector(format: &RunFormat, expect: Expectation, index: u16, bytes: &[u8]) -> Sector {
    let block = expect.block;
    match stamp::decode_sector(bytes) {
        SectorContent::Stamp(header)
            if format.dedup_permille > 0
                && header.run_id == format.run_id
                && header.block >= stamp::DEDUP_PATTERN_BASE
                && header.sector_index == index =>
        {
            // A shared dedup pattern: which generation of this block, near
            // the expected one, wrote this pattern?
            let pattern = header.block - stamp::DEDUP_PATTERN_BASE;
            match generation_with_pattern(format, block, expect.generation, pattern) {
                Some(generation) => Sector::Own {
                    generation,
                    write_seq: 0,
                    write_time_s: 0,
                },
                None => Sector::Pattern(pattern),
            }
        }
        SectorContent::Zero => Sector::Zero,
        SectorContent::Other => Sector::Damaged,
        SectorContent::Stamp(header) => {
            if header.run_id != format.run_id
                || header.block_size_log2 as u32 != format.block_size.trailing_zeros()
            {
                Sector::OtherRun(header)
            } else if header.block == block && header.sector_index == index {
                Sector::Own {
                    generation: header.generation,
                    write_seq: header.write_seq,
                    write_time_s: header.write_time_s,
                }
            } else {
                Sector::OtherBlock {
                    block: header.block,
                    generation: header.generation,
                    sector_index: header.sector_index,
                }
            }
        }
    }
}

/// A block the run never wrote: anything but this run's stamps is fine
/// (the target's previous contents).
fn classify_unwritten(expect: Expectation, sectors: &[Sector]) -> Option<Classified> {
    if let Some(generation) = sectors.iter().find_map(|s| match s {
        Sector::Own { generation, .. } => Some(*generation),
        _ => None,
    }) {
        return Some(Classified {
            class: FindingClass::NewerGeneration,
            found_generation: Some(generation),
            found_block: None,
            detail: format!(
                "block was never written by this run but holds its own stamp, generation {generation}"
            ),
            torn_split: None,
            corruption: None,
        });
    }
    if let Some((block, generation)) = dominant_other_block(sectors) {
        return Some(Classified {
            class: FindingClass::Misdirected,
            found_generation: Some(generation),
            found_block: Some(block),
            detail: format!(
                "block was never written by this run but holds block {block}'s stamp (generation {generation})"
            ),
            torn_split: None,
            corruption: None,
        });
    }
    if let Some(pattern) = sectors.iter().find_map(|s| match s {
        Sector::Pattern(k) => Some(*k),
        _ => None,
    }) {
        return Some(Classified {
            class: FindingClass::Foreign,
            found_generation: None,
            found_block: None,
            detail: format!(
                "block {} was never written by this run but holds its shared dedup pattern {pattern} (which block's write cannot be told)",
                expect.block
            ),
            torn_split: None,
            corruption: None,
        });
    }
    None
}

fn classify_written(
    format: &RunFormat,
    expect: Expectation,
    block: &[u8],
    sectors: &[Sector],
) -> Option<Classified> {
    let count = sectors.len();
    let zeros = sectors.iter().filter(|s| **s == Sector::Zero).count();
    if zeros == count {
        return Some(Classified {
            class: FindingClass::Zeroed,
            found_generation: None,
            found_block: None,
            detail: format!(
                "all {} bytes are zero (expected generation {})",
                block.len(),
                expect.generation
            ),
            torn_split: None,
            corruption: None,
        });
    }

    let own_generations: Vec<Option<u32>> = sectors
        .iter()
        .map(|s| match s {
            Sector::Own { generation, .. } => Some(*generation),
            _ => None,
        })
        .collect();
    let own_count = own_generations.iter().flatten().count();
    let other_count = count - own_count - zeros;

    // Damaged sectors that are still recognisably this block's (a bit flip,
    // a scribble): compare them with what the stamp would be there.
    let reference = reference_write(sectors, expect, block);
    let mut reference_bytes = vec![0u8; block.len()];
    stamp::build_write(format, &reference, &mut reference_bytes);
    let near_own = (0..count)
        .filter(|&i| sectors[i] == Sector::Damaged)
        .filter(|&i| {
            let range = i * SECTOR_BYTES..(i + 1) * SECTOR_BYTES;
            is_near(&reference_bytes[range.clone()], &block[range])
        })
        .count();

    if own_count == 0 && near_own == 0 {
        return Some(classify_not_own(expect, sectors, block.len()));
    }

    let mut generations: Vec<u32> = own_generations.iter().flatten().copied().collect();
    generations.sort_unstable();
    generations.dedup();
    // Every sector a valid stamp of this block at the expected generation,
    // yet the fast check failed: a header field differs from what this run
    // writes (version, flags, payload length). Not what was written: corrupt.
    let restamped = other_count == 0 && zeros == 0 && generations == [expect.generation];

    if other_count == 0 && !restamped {
        // Only this block's stamps (and perhaps zero sectors).
        if zeros == 0 && generations.len() == 1 {
            let found = generations[0];
            let class = match compare_generations(found, expect.generation) {
                Ordering::Less => FindingClass::LostWrite,
                Ordering::Greater => FindingClass::NewerGeneration,
                Ordering::Equal => unreachable!("an intact block passed the fast check"),
            };
            let detail = match class {
                FindingClass::LostWrite => format!(
                    "holds generation {found} of this block, expected {}: the newer write did not persist",
                    expect.generation
                ),
                _ => format!(
                    "holds generation {found} of this block, newer than the expected {}",
                    expect.generation
                ),
            };
            return Some(Classified {
                class,
                found_generation: Some(found),
                found_block: None,
                detail,
                torn_split: None,
                corruption: None,
            });
        }
        // A first write torn over a never-written (zero) block leaves zero
        // sectors; a later generation over zeros means data vanished.
        let zeros_are_prior_content =
            generations.len() > 1 || generations.iter().all(|&g| g == 1) || zeros == 0;
        if zeros == 0 || zeros_are_prior_content {
            let split = sector_spans(&own_generations);
            let newest = generations
                .iter()
                .copied()
                .max_by(|a, b| compare_generations(*a, *b));
            return Some(Classified {
                class: FindingClass::Torn,
                found_generation: newest,
                found_block: None,
                detail: format!(
                    "torn: {} (expected generation {})",
                    describe_split(&split),
                    expect.generation
                ),
                torn_split: Some(split),
                corruption: None,
            });
        }
    }

    // This block's stamp with bytes that are not: corrupt.
    let corruption = diff_against(format, &reference, block);
    let found_generation = Some(reference.generation);
    let mut detail = format!(
        "{} bit(s) in {} byte(s) differ from generation {} of this block",
        corruption.differing_bits, corruption.differing_bytes, reference.generation
    );
    if reference.generation != expect.generation {
        let _ = write!(detail, " (expected generation {})", expect.generation);
    }
    if let Some((other, generation)) = dominant_other_block(sectors) {
        let _ = write!(
            detail,
            "; some sectors hold block {other}'s stamp (generation {generation})"
        );
    }
    Some(Classified {
        class: FindingClass::Corrupt,
        found_generation,
        found_block: None,
        detail,
        torn_split: None,
        corruption: Some(corruption),
    })
}

/// A block with nothing of its own: misdirected or foreign.
fn classify_not_own(expect: Expectation, sectors: &[Sector], block_len: usize) -> Classified {
    if let Some((block, generation)) = dominant_other_block(sectors) {
        return Classified {
            class: FindingClass::Misdirected,
            found_generation: Some(generation),
            found_block: Some(block),
            detail: format!(
                "holds block {block}'s stamp (generation {generation}) instead of generation {} of block {}",
                expect.generation, expect.block
            ),
            torn_split: None,
            corruption: None,
        };
    }
    let other_run = sectors.iter().find_map(|s| match s {
        Sector::OtherRun(header) => Some(*header),
        _ => None,
    });
    let detail = match other_run {
        Some(h) => format!(
            "holds a stamp of another run ({:016x}, block {}, generation {}); expected generation {}",
            h.run_id, h.block, h.generation, expect.generation
        ),
        None => match sectors.iter().find_map(|s| match s {
            Sector::Pattern(k) => Some(*k),
            _ => None,
        }) {
            Some(pattern) => format!(
                "holds shared dedup pattern {pattern} of this run, which no nearby generation of this block wrote; expected generation {}",
                expect.generation
            ),
            None => format!(
                "holds {block_len} bytes that are not a stamp of this run; expected generation {}",
                expect.generation
            ),
        },
    };
    Classified {
        class: FindingClass::Foreign,
        found_generation: other_run.map(|h| h.generation),
        found_block: None,
        detail,
        torn_split: None,
        corruption: None,
    }
}

/// The block of this run most sectors belong to, if any sector does.
fn dominant_other_block(sectors: &[Sector]) -> Option<(u64, u32)> {
    let mut tally: Vec<((u64, u32), usize)> = Vec::new();
    for sector in sectors {
        if let Sector::OtherBlock {
            block, generation, ..
        } = sector
        {
            match tally
                .iter_mut()
                .find(|(key, _)| *key == (*block, *generation))
            {
                Some((_, n)) => *n += 1,
                None => tally.push(((*block, *generation), 1)),
            }
        }
    }
    tally
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(key, _)| key)
}

/// The write a damaged block is compared with: the generation most of its
/// intact sectors carry (or the expected one), with that write's sequence
/// number and time from an intact sector when there is one.
fn reference_write(sectors: &[Sector], expect: Expectation, block: &[u8]) -> WriteStamp {
    let mut tally: Vec<(u32, u64, u32, usize)> = Vec::new();
    for sector in sectors {
        if let Sector::Own {
            generation,
            write_seq,
            write_time_s,
        } = sector
        {
            match tally.iter_mut().find(|t| t.0 == *generation) {
                Some(t) => t.3 += 1,
                None => tally.push((*generation, *write_seq, *write_time_s, 1)),
            }
        }
    }
    if let Some((generation, write_seq, write_time_s, _)) = tally.into_iter().max_by_key(|t| t.3) {
        return WriteStamp {
            block: expect.block,
            generation,
            write_seq,
            write_time_s,
        };
    }
    // No intact sector: take the write fields from the damaged bytes as
    // found (they cannot be regenerated), everything else from the manifest.
    let first: &[u8; SECTOR_BYTES] = block[..SECTOR_BYTES].try_into().expect("512-byte sector");
    let header = stamp::parse_header(first);
    WriteStamp {
        block: expect.block,
        generation: expect.generation,
        write_seq: header.write_seq,
        write_time_s: header.write_time_s,
    }
}

/// Is a damaged sector mostly what this block's stamp has there? The
/// payloads of different writes agree on about 1 byte in 256, so "fewer
/// than half the bytes differ" separates damage from other data widely.
fn is_near(expected: &[u8], found: &[u8]) -> bool {
    let differing = expected.iter().zip(found).filter(|(a, b)| a != b).count();
    differing < SECTOR_BYTES / 2
}

/// Compare a block with the reference write, byte by byte.
fn diff_against(format: &RunFormat, reference: &WriteStamp, block: &[u8]) -> Corruption {
    let mut expected = vec![0u8; block.len()];
    stamp::build_write(format, reference, &mut expected);
    // A single-sector block whose write fields are damaged was rebuilt with
    // the damaged values; find the one-bit repair that makes its CRC valid,
    // so the diff shows the flipped bit rather than a CRC mismatch.
    if block.len() == SECTOR_BYTES {
        repair_write_fields(&mut expected, block);
    }
    let mut differing_bits = 0u64;
    let mut differing_bytes = 0u64;
    let mut byte_ranges: Vec<[u32; 2]> = Vec::new();
    for (at, (a, b)) in expected.iter().zip(block).enumerate() {
        if a != b {
            differing_bits += (a ^ b).count_ones() as u64;
            differing_bytes += 1;
            match byte_ranges.last_mut() {
                Some(range) if range[1] == at as u32 => range[1] += 1,
                _ => byte_ranges.push([at as u32, at as u32 + 1]),
            }
        }
    }
    let diff_rows = expected
        .chunks(16)
        .zip(block.chunks(16))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .take(MAX_DIFF_ROWS)
        .map(|(row, (a, b))| DiffRow {
            offset: (row * 16) as u32,
            expected: hex(a),
            found: hex(b),
        })
        .collect();
    Corruption {
        differing_bits,
        differing_bytes,
        byte_ranges,
        diff_rows,
    }
}

fn repair_write_fields(expected: &mut [u8], found: &[u8]) {
    let expected: &mut [u8; SECTOR_BYTES] = expected.try_into().expect("512-byte sector");
    let found_crc = u32::from_le_bytes(found[44..48].try_into().expect("4 bytes"));
    if stamp::sector_crc(expected) == found_crc {
        return;
    }
    // The write fields were rebuilt from damaged bytes: find the single-bit
    // repair of them that matches the CRC the sector was written with.
    for bit in WRITE_FIELDS.start * 8..(HEADER_BYTES - 4) * 8 {
        let mut candidate = *expected;
        candidate[bit / 8] ^= 1 << (bit % 8);
        if stamp::sector_crc(&candidate) == found_crc {
            candidate[44..48].copy_from_slice(&found_crc.to_le_bytes());
            *expected = candidate;
            return;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 3);
    for (i, byte) in bytes.iter().enumerate() {
        if i > 0 {
            text.push(' ');
        }
        let _ = write!(text, "{byte:02x}");
    }
    text
}

fn sector_spans(generations: &[Option<u32>]) -> Vec<SectorSpan> {
    let mut spans: Vec<SectorSpan> = Vec::new();
    for (index, generation) in generations.iter().enumerate() {
        match spans.last_mut() {
            Some(span) if span.generation == *generation => span.last_sector = index as u32,
            _ => spans.push(SectorSpan {
                first_sector: index as u32,
                last_sector: index as u32,
                generation: *generation,
            }),
        }
    }
    spans
}

/// "sectors 0-3 generation 2, sectors 4-7 zero".
pub fn describe_split(spans: &[SectorSpan]) -> String {
    spans
        .iter()
        .map(|span| {
            let range = if span.first_sector == span.last_sector {
                format!("sector {}", span.first_sector)
            } else {
                format!("sectors {}-{}", span.first_sector, span.last_sector)
            };
            match span.generation {
                Some(generation) => format!("{range} generation {generation}"),
                None => format!("{range} zero"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
