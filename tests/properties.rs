//! Properties over random inputs (proptest):
//!
//! - faults injected by the fault layer, at random, into random workloads
//!   are reported exactly: every finding the layer predicts, and no other;
//! - clean runs report nothing;
//! - stamps round-trip through encode and decode;
//! - the classifier never panics, on arbitrary bytes or on arbitrary mixes
//!   of valid, damaged and foreign sectors;
//! - the manifest loader never panics, on arbitrary bytes or on a real
//!   manifest with random damage.
//!
//! Case counts are kept small enough for the file to run in seconds.

mod common;

use std::path::Path;

use proptest::prelude::*;

use blockstamp::manifest::{Access, Manifest};
use blockstamp::sim::fault::{Amount, FaultType};
use blockstamp::sim::scenario::{Scenario, run_scenario};
use blockstamp::stamp::{self, PAYLOAD_BYTES, RunFormat, SECTOR_BYTES, SectorContent, WriteStamp};
use blockstamp::storage::DiscardReads;
use blockstamp::verify::{Expectation, FindingClass, classify};

const RUN_ID: u64 = 0x0123_4567_89ab_cdef;

fn block_size() -> impl Strategy<Value = u32> {
    prop_oneof![Just(512u32), Just(4096), Just(65536)]
}

/// A scenario on a small target: 512 B and 4 KiB blocks up to 96 of them,
/// 64 KiB blocks up to 32; with faults, some blocks zeroed and discarded
/// besides, under a random discard promise.
fn scenario(with_faults: bool) -> impl Strategy<Value = Scenario> {
    (
        block_size(),
        8u64..=96,
        1u32..=3,
        prop_oneof![Just(1.0f64), 0.3f64..1.0],
        1usize..=8,
        any::<u64>(),
        proptest::collection::vec(0u64..=2, FaultType::ALL.len()),
        0u64..=2,
        proptest::collection::vec(0u64..=3, 3),
        prop_oneof![
            Just(DiscardReads::Zeroes),
            Just(DiscardReads::Previous),
            Just(DiscardReads::Any)
        ],
    )
        .prop_map(
            move |(
                block_size,
                blocks,
                passes,
                coverage,
                queue_depth,
                seed,
                counts,
                newer,
                space,
                discard_reads,
            )| {
                let block_count = if block_size == 65536 {
                    blocks.min(32)
                } else {
                    blocks
                };
                let faults = if with_faults {
                    FaultType::ALL
                        .iter()
                        .zip(counts)
                        .map(|(&t, n)| (t, Amount::Count(n)))
                        .collect()
                } else {
                    Vec::new()
                };
                Scenario {
                    block_size,
                    block_count,
                    passes,
                    coverage,
                    queue_depth,
                    seed,
                    faults,
                    newer_generation: if with_faults { newer } else { 0 },
                    zeroings: if with_faults { space[0] } else { 0 },
                    discards: if with_faults { space[1] } else { 0 },
                    zeroings_discarded: if with_faults { space[2] } else { 0 },
                    discard_reads,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn injected_faults_are_reported_exactly(scenario in scenario(true)) {
        let dir = tempfile::tempdir().unwrap();
        let outcome = run_scenario(dir.path(), &scenario).unwrap();
        let mut expected: Vec<(u64, FindingClass, Option<u64>, bool)> = outcome
            .expected
            .iter()
            .map(|f| (f.block, f.class, f.found_block, f.persistent))
            .collect();
        let mut reported: Vec<(u64, FindingClass, Option<u64>, bool)> = outcome
            .findings
            .iter()
            .map(|f| (f.block, f.classified.class, f.classified.found_block, f.persistent))
            .collect();
        expected.sort();
        reported.sort();
        prop_assert_eq!(&reported, &expected, "{:#?}", outcome.compare().mismatches);
        prop_assert!(outcome.compare().exact(), "{:#?}", outcome.compare().mismatches);
        prop_assert_eq!(outcome.blocks_checked, scenario.block_count);
    }

    #[test]
    fn clean_runs_report_nothing(scenario in scenario(false)) {
        let dir = tempfile::tempdir().unwrap();
        let outcome = run_scenario(dir.path(), &scenario).unwrap();
        prop_assert!(outcome.expected.is_empty());
        prop_assert!(outcome.findings.is_empty(), "{:#?}", outcome.findings);
        prop_assert_eq!(outcome.blocks_checked, scenario.block_count);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn stamps_round_trip_their_header_fields(
        run_id in any::<u64>(),
        block_size_log2 in 9u32..=16,
        block in any::<u64>(),
        generation in 1u32..=0x7fff,
        write_seq in any::<u64>(),
        write_time_s in any::<u32>(),
        random_words in 0u16..=(PAYLOAD_BYTES as u16 / 8),
    ) {
        let format = RunFormat { run_id, block_size: 1 << block_size_log2, random_bytes: random_words * 8, dedup_permille: 0 };
        let write = WriteStamp { block, generation, write_seq, write_time_s };
        let mut bytes = vec![0u8; format.block_size as usize];
        stamp::build_block(&format, &write, &mut bytes);
        prop_assert!(stamp::block_is_intact(&format, block, generation, &bytes));
        for (index, sector) in bytes.chunks_exact(SECTOR_BYTES).enumerate() {
            let SectorContent::Stamp(header) = stamp::decode_sector(sector) else {
                return Err(TestCaseError::fail(format!("sector {index} does not decode")));
            };
            prop_assert_eq!(header.version, stamp::FORMAT_VERSION);
            prop_assert_eq!(header.block_size_log2 as u32, block_size_log2);
            prop_assert_eq!(header.sector_index as usize, index);
            prop_assert_eq!(header.run_id, run_id);
            prop_assert_eq!(header.block, block);
            prop_assert_eq!(header.generation, generation);
            prop_assert_eq!(header.random_bytes, format.random_bytes);
            prop_assert_eq!(header.flags, 0);
            prop_assert_eq!(header.write_seq, write_seq);
            prop_assert_eq!(header.write_time_s, write_time_s);
            // The payload past the random bytes is zero (compressible).
            let tail = &sector[stamp::HEADER_BYTES + format.random_bytes as usize..];
            prop_assert!(tail.iter().all(|&b| b == 0));
            prop_assert_eq!(&stamp::expected_sector(&format, &write, index as u16)[..], sector);
        }
        let verdict = classify(&format, Expectation { block, generation }, &bytes);
        prop_assert!(verdict.is_none(), "{:?}", verdict);
    }

    #[test]
    fn the_classifier_never_panics_on_arbitrary_bytes(
        sectors in 1usize..=8,
        seed in any::<u64>(),
        block in 0u64..64,
        generation in 0u32..=0x8000,
    ) {
        let format = RunFormat::new(RUN_ID, (sectors * SECTOR_BYTES).next_power_of_two() as u32);
        let mut bytes = vec![0u8; format.block_size as usize];
        let mut state = seed;
        for byte in bytes.iter_mut() {
            state = blockstamp::rng::mix64(state.wrapping_add(1));
            *byte = state as u8;
        }
        let _ = classify(&format, Expectation { block, generation }, &bytes);
    }

    #[test]
    fn the_classifier_never_panics_on_mixes_of_sectors(
        block_size in prop_oneof![Just(512u32), Just(2048), Just(4096)],
        recipes in proptest::collection::vec((0u8..8, 0u32..4, any::<u16>()), 8),
        block in 0u64..8,
        expected_generation in 0u32..4,
    ) {
        let format = RunFormat::new(RUN_ID, block_size);
        let bytes = mixed_block(&format, block, &recipes);
        if let Some(verdict) = classify(&format, Expectation { block, generation: expected_generation }, &bytes) {
            match verdict.class {
                FindingClass::Torn => prop_assert!(verdict.torn_split.is_some()),
                FindingClass::Corrupt => prop_assert!(verdict.corruption.is_some()),
                FindingClass::Misdirected => prop_assert!(verdict.found_block.is_some()),
                _ => {}
            }
            prop_assert!(!verdict.detail.contains('\n'));
        }
    }
}

/// A block whose sectors are built from recipes: (kind, generation, noise).
fn mixed_block(format: &RunFormat, block: u64, recipes: &[(u8, u32, u16)]) -> Vec<u8> {
    let mut bytes = vec![0u8; format.block_size as usize];
    let other_run = RunFormat::new(!RUN_ID, format.block_size);
    for (index, sector) in bytes.chunks_exact_mut(SECTOR_BYTES).enumerate() {
        let (kind, generation, noise) = recipes[index % recipes.len()];
        let write = |block| WriteStamp {
            block,
            generation,
            write_seq: 9,
            write_time_s: 1_700_000_000,
        };
        let index = index as u16;
        match kind {
            // This block's stamp at some generation (0 included).
            0 => stamp::build_sector(format, &write(block), index, sector),
            // Another block's.
            1 => stamp::build_sector(format, &write(block + 1 + noise as u64 % 3), index, sector),
            // Another run's.
            2 => stamp::build_sector(&other_run, &write(block), index, sector),
            // Zeros (left as they are).
            3 => {}
            // Garbage.
            4 => {
                for (i, byte) in sector.iter_mut().enumerate() {
                    *byte = blockstamp::rng::mix64(noise as u64 ^ i as u64) as u8;
                }
            }
            // This block's stamp with one bit flipped.
            5 => {
                stamp::build_sector(format, &write(block), index, sector);
                let bit = noise as usize % (SECTOR_BYTES * 8);
                sector[bit / 8] ^= 1 << (bit % 8);
            }
            // This block's stamp in the wrong sector slot.
            6 => stamp::build_sector(format, &write(block), index ^ 1, sector),
            // A valid CRC over header fields this run never writes: another
            // version, flags, payload length or reserved byte.
            _ => {
                stamp::build_sector(format, &write(block), index, sector);
                let field = [4usize, 30, 28, 31][noise as usize % 4];
                sector[field] ^= 1 + (noise >> 8) as u8 % 255;
                let sector: &mut [u8; SECTOR_BYTES] = sector.try_into().unwrap();
                let crc = stamp::sector_crc(sector);
                sector[44..48].copy_from_slice(&crc.to_le_bytes());
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_manifest_loader_refuses_arbitrary_bytes(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..4096),
            proptest::collection::vec(any::<u8>(), 65536..70000),
        ],
        magic in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let mut bytes = bytes;
        if magic && bytes.len() >= 8 {
            bytes[..8].copy_from_slice(b"BSTPMANI");
        }
        std::fs::write(&path, &bytes).unwrap();
        for access in [Access::Read, Access::Write] {
            prop_assert!(Manifest::open(&path, access).is_err());
        }
    }

    #[test]
    fn the_manifest_loader_never_panics_on_damage(
        damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        in_undo_log in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let undo_offset = real_manifest(&path);
        let mut bytes = std::fs::read(&path).unwrap();
        for (at, value) in damage {
            // Half the cases aim at the undo log, which carries no checksum.
            let at = if in_undo_log {
                undo_offset as usize + at.index(bytes.len() - undo_offset as usize)
            } else {
                at.index(bytes.len())
            };
            bytes[at] ^= value | 1;
        }
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(manifest) = Manifest::open(&path, Access::Read) {
            exercise(&manifest);
        }
    }
}

/// Everything a verify asks of an opened manifest.
fn exercise(manifest: &Manifest) {
    let mut names = vec![None];
    names.extend(
        manifest
            .header()
            .checkpoints
            .iter()
            .map(|c| Some(c.name.clone())),
    );
    for name in names {
        if let Ok(expected) = manifest.expected(name.as_deref()) {
            let _ = expected.count_written();
            for block in 0..manifest.block_count() {
                let _ = expected.generation(block);
            }
        }
    }
}

/// A manifest of 64 blocks with two checkpoints and undo entries; returns
/// where its undo log starts.
fn real_manifest(path: &Path) -> u64 {
    let mut manifest = common::manifest_of_64_blocks(path);
    manifest.add_checkpoint("first").unwrap();
    for block in (0..64).step_by(3) {
        manifest.set_generation(block, 2);
    }
    manifest.persist_undo().unwrap();
    manifest.add_checkpoint("second").unwrap();
    for block in (0..64).step_by(5) {
        manifest.set_generation(block, 3);
    }
    manifest.finish_write().unwrap();
    manifest.header().undo_offset
}
