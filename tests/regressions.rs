//! Inputs that once made blockstamp panic, found by the property tests
//! (tests/properties.rs) and the fuzz targets (fuzz/). Each stays here as a
//! plain test so the normal suite keeps them fixed.

mod common;

use blockstamp::error::Error;
use blockstamp::manifest::{Access, Manifest};
use blockstamp::stamp::{self, RunFormat, SECTOR_BYTES, WriteStamp};
use blockstamp::verify::{Expectation, FindingClass, classify};

const RUN_ID: u64 = 0x0123_4567_89ab_cdef;

/// This block's stamp at `generation` in every sector, with byte `field` of
/// each header changed and the CRC made valid again: a stamp this run never
/// writes, yet one whose identity and checksum are right.
fn restamped(block_size: u32, generation: u32, field: usize) -> (RunFormat, Vec<u8>) {
    let format = RunFormat::new(RUN_ID, block_size);
    let mut bytes = vec![0u8; block_size as usize];
    let write = WriteStamp {
        block: 0,
        generation,
        write_seq: 9,
        write_time_s: 1_700_000_000,
    };
    stamp::build_block(&format, &write, &mut bytes);
    for sector in bytes.chunks_exact_mut(SECTOR_BYTES) {
        sector[field] ^= 1;
        let sector: &mut [u8; SECTOR_BYTES] = sector.try_into().unwrap();
        let crc = stamp::sector_crc(sector);
        sector[44..48].copy_from_slice(&crc.to_le_bytes());
    }
    (format, bytes)
}

/// Found by `the_classifier_never_panics_on_mixes_of_sectors`: a valid
/// stamp of the expected generation whose version byte differs reached an
/// `unreachable!` ("an intact block passed the fast check").
#[test]
fn a_stamp_with_a_foreign_version_at_the_expected_generation_is_corrupt() {
    // Version (byte 4), payload length (28), flags (30), reserved (31).
    for field in [4, 28, 30, 31] {
        for block_size in [512, 4096] {
            let (format, bytes) = restamped(block_size, 3, field);
            let verdict = classify(
                &format,
                Expectation {
                    block: 0,
                    generation: 3,
                },
                &bytes,
            )
            .expect("not what this run wrote");
            assert_eq!(verdict.class, FindingClass::Corrupt, "byte {field}");
            let corruption = verdict.corruption.unwrap();
            assert!(
                corruption
                    .byte_ranges
                    .iter()
                    .any(|r| (r[0]..r[1]).contains(&(field as u32))),
                "byte {field} is named: {:?}",
                corruption.byte_ranges
            );
        }
    }
}

/// 64 blocks at generation 1, checkpoint "first", then block 5 rewritten.
fn manifest_with_checkpoint(path: &std::path::Path) -> u64 {
    let mut manifest = common::manifest_of_64_blocks(path);
    manifest.add_checkpoint("first").unwrap();
    manifest.set_generation(5, 2);
    manifest.finish_write().unwrap();
    manifest.header().undo_offset
}

/// Found by `the_manifest_loader_never_panics_on_damage`: the undo log has
/// no checksum, and an entry naming a block beyond the map made
/// `verify --at` index past the end of the generation map.
#[test]
fn an_undo_entry_beyond_the_target_is_refused_as_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    let undo_offset = manifest_with_checkpoint(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = undo_offset as usize;
    let entry = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    assert_eq!((entry >> 16) & 0xffff, 5, "the entry of block 5");
    let damaged = entry | 1 << 40; // block 2^24 + 5, far beyond 64 blocks
    bytes[at..at + 8].copy_from_slice(&damaged.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let manifest = Manifest::open(&path, Access::Read).unwrap();
    match manifest.expected(Some("first")) {
        Err(Error::Usage(message)) => {
            assert!(message.contains("is damaged"), "{message}");
            assert!(message.contains("16777221"), "{message}");
        }
        Err(other) => panic!("expected a usage error, got {other:?}"),
        Ok(expected) => panic!(
            "damage accepted: {} blocks written",
            expected.count_written()
        ),
    }
    // The latest state does not use the undo log.
    assert_eq!(manifest.expected(None).unwrap().generation(5), 2);
}

/// Rewrite the JSON of both header slots of a manifest with `change`, and
/// make their checksums valid again: a header damaged in a way no checksum
/// catches (a bug, or a hand edit).
fn rewrite_header(path: &std::path::Path, change: impl Fn(&mut serde_json::Value)) {
    let mut bytes = std::fs::read(path).unwrap();
    for slot in [0usize, 32 * 1024] {
        let length = u32::from_le_bytes(bytes[slot + 16..slot + 20].try_into().unwrap()) as usize;
        let mut header: serde_json::Value =
            serde_json::from_slice(&bytes[slot + 24..slot + 24 + length]).unwrap();
        change(&mut header);
        let json = serde_json::to_vec(&header).unwrap();
        bytes[slot + 16..slot + 20].copy_from_slice(&(json.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[slot + 8..slot + 20]), &json);
        bytes[slot + 20..slot + 24].copy_from_slice(&crc.to_le_bytes());
        bytes[slot + 24..slot + 24 + json.len()].copy_from_slice(&json);
    }
    std::fs::write(path, &bytes).unwrap();
}

fn refused_as_damaged(change: impl Fn(&mut serde_json::Value)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    manifest_with_checkpoint(&path);
    rewrite_header(&path, change);
    for access in [Access::Read, Access::Write] {
        match Manifest::open(&path, access) {
            Err(Error::Usage(message)) if message.contains("is damaged") => {}
            Err(other) => panic!("expected 'is damaged', got {other:?}"),
            Ok(_) => panic!("a header whose offsets overflow was accepted"),
        }
    }
    match Manifest::open(&path, Access::Read) {
        Err(error) => error.to_string(),
        Ok(_) => unreachable!(),
    }
}

/// Found by the `manifest_open` fuzz target (its `#` overrides): offsets
/// and counts of a checksummed header were added and multiplied unchecked,
/// which panics with overflow checks on, and with them off wraps around
/// to pass the region checks with regions that overlap.
#[test]
fn header_offsets_that_overflow_are_refused_as_damage() {
    // journal_offset + journal_bytes wraps to an undo log inside the map.
    let message = refused_as_damaged(|h| {
        let journal_offset = h["journal_offset"].as_u64().unwrap();
        h["journal_bytes"] = (u64::MAX - 4095).into();
        h["undo_offset"] = (journal_offset - 4096).into();
    });
    assert!(message.contains("its regions overlap"), "{message}");
    // undo_offset + 8 × undo_entries wraps.
    let message = refused_as_damaged(|h| {
        h["undo_entries"] = ((1u64 << 61) + 1).into();
        h["state"] = "writing".into();
    });
    assert!(message.contains("undo log"), "{message}");
    // A checkpoint whose undo log starts past the log's end.
    let message = refused_as_damaged(|h| {
        h["checkpoints"][0]["undo_start"] = (1u64 << 61).into();
    });
    assert!(message.contains("checkpoint"), "{message}");
}

/// Found by the `classify` fuzz target: a valid stamp of this run whose block
/// number lies in the dedup-pattern range, in a block the run never wrote,
/// was reported `misdirected` without a `found_block`. Without dedup such a
/// number is just another block's; with dedup an unattributable shared
/// pattern is `foreign`, never a `misdirected` that cannot say from where.
#[test]
fn a_stamp_numbered_like_a_dedup_pattern_is_classified_with_its_block() {
    for dedup_permille in [0u16, 500] {
        let format = RunFormat {
            dedup_permille,
            ..RunFormat::new(RUN_ID, 512)
        };
        let mut bytes = vec![0u8; 512];
        let write = WriteStamp {
            block: stamp::DEDUP_PATTERN_BASE + 3,
            generation: 1,
            write_seq: 0,
            write_time_s: 0,
        };
        stamp::build_block(&format, &write, &mut bytes);
        let verdict = classify(
            &format,
            Expectation {
                block: 5,
                generation: 0,
            },
            &bytes,
        )
        .expect("a stamp of this run in a block it never wrote is a finding");
        match verdict.class {
            FindingClass::Misdirected => {
                assert_eq!(dedup_permille, 0);
                assert_eq!(verdict.found_block, Some(stamp::DEDUP_PATTERN_BASE + 3));
            }
            FindingClass::Foreign => assert_eq!(dedup_permille, 500, "{}", verdict.detail),
            other => panic!("{other:?}: {}", verdict.detail),
        }
    }
}
