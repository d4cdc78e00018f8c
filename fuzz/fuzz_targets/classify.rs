//! The classifier on arbitrary blocks: raw bytes, or blocks built sector by
//! sector from recipes (this block's stamp at some generation, another
//! block's, another run's, zeros, raw input bytes, a stamp with input bytes
//! patched in, a stamp with a header field changed and its CRC made valid
//! again), so the fuzzer reaches the classifier's deep branches that need
//! valid CRCs. It must never panic, and its verdicts must be well formed.
#![no_main]

use libfuzzer_sys::fuzz_target;

use blockstamp::stamp::{self, RunFormat, SECTOR_BYTES, WriteStamp};
use blockstamp::verify::{Expectation, FindingClass, classify};

const RUN_ID: u64 = 0x0123_4567_89ab_cdef;
const BLOCK: u64 = 5;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    // Blocks of 512 B to 4 KiB: one to eight sectors.
    let block_size = 512u32 << (data[0] % 4);
    let expected_generation = u16::from_le_bytes([data[1], data[2]]) as u32 % 0x8001;
    let recipes = data[3] & 1 == 1;
    let input = &data[4..];
    let format = RunFormat::new(RUN_ID, block_size);
    let mut block = vec![0u8; block_size as usize];
    if recipes {
        build_from_recipes(&format, input, &mut block);
    } else {
        for (byte, value) in block.iter_mut().zip(input.iter().cycle()) {
            *byte = *value;
        }
    }
    for sector in block.chunks_exact(SECTOR_BYTES) {
        let _ = stamp::decode_sector(sector);
    }
    let expectation = Expectation {
        block: BLOCK,
        generation: expected_generation,
    };
    if let Some(verdict) = classify(&format, expectation, &block) {
        match verdict.class {
            FindingClass::Torn => assert!(verdict.torn_split.is_some()),
            FindingClass::Corrupt => assert!(verdict.corruption.is_some()),
            FindingClass::Misdirected => assert!(verdict.found_block.is_some()),
            FindingClass::Unreadable => panic!("bytes that were read are never unreadable"),
            _ => {}
        }
        assert!(!verdict.detail.contains('\n'), "{}", verdict.detail);
    } else {
        // "Intact" must mean exactly what the fast check says.
        assert!(
            expected_generation == 0
                || stamp::block_is_intact(&format, BLOCK, expected_generation, &block)
        );
    }
});

/// Each sector from 4 input bytes: kind, generation, two bytes of noise; raw
/// and patched sectors take more input after them.
fn build_from_recipes(format: &RunFormat, mut input: &[u8], block: &mut [u8]) {
    let other_run = RunFormat::new(!RUN_ID, format.block_size);
    for (index, sector) in block.chunks_exact_mut(SECTOR_BYTES).enumerate() {
        let Some((recipe, rest)) = input.split_first_chunk::<4>() else {
            return;
        };
        input = rest;
        let [kind, generation, noise_low, noise_high] = *recipe;
        let noise = u16::from_le_bytes([noise_low, noise_high]);
        let write = |block| WriteStamp {
            block,
            generation: generation as u32 % 8,
            write_seq: noise as u64,
            write_time_s: 1_700_000_000,
        };
        let index = index as u16;
        match kind % 9 {
            0 => stamp::build_sector(format, &write(BLOCK), index, sector),
            1 => stamp::build_sector(format, &write(noise as u64 % 16), index, sector),
            2 => stamp::build_sector(&other_run, &write(BLOCK), index, sector),
            3 => {} // zeros
            4 => {
                // Raw input bytes.
                let take = input.len().min(SECTOR_BYTES);
                sector[..take].copy_from_slice(&input[..take]);
                input = &input[take..];
            }
            5 => {
                // A stamp with input bytes patched in at `noise`.
                stamp::build_sector(format, &write(BLOCK), index, sector);
                let at = noise as usize % SECTOR_BYTES;
                let take = input.len().min(SECTOR_BYTES - at).min(8);
                sector[at..at + take].copy_from_slice(&input[..take]);
                input = &input[take..];
            }
            6 => stamp::build_sector(format, &write(BLOCK), index ^ (noise & 7), sector),
            7 => {
                // A valid CRC over a header byte this run never writes so.
                stamp::build_sector(format, &write(BLOCK), index, sector);
                let field = (noise as usize) % stamp::HEADER_BYTES;
                if !(44..48).contains(&field) {
                    sector[field] ^= (noise >> 8) as u8 | 1;
                }
                let sector: &mut [u8; SECTOR_BYTES] = sector.try_into().expect("sector");
                let crc = stamp::sector_crc(sector);
                sector[44..48].copy_from_slice(&crc.to_le_bytes());
            }
            _ => {
                // This block's stamp with a different block size in the header.
                let other_size = RunFormat::new(RUN_ID, format.block_size * 2);
                stamp::build_sector(&other_size, &write(BLOCK), index, sector);
            }
        }
    }
}
