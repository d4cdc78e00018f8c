//! The manifest loader on arbitrary files. Three shapes of input:
//!
//! - input starting with `{`: a header JSON, wrapped in a valid header slot
//!   (magic, sequence, length, CRC) over a zeroed map, so the fuzzer works
//!   on the header's fields rather than on the checksum;
//! - input starting with `#`: overrides of the numeric fields of a real
//!   header (9 bytes each: which field, then its value), wrapped the same
//!   way, so the fuzzer reaches the arithmetic on offsets and counts;
//! - anything else: the whole file, as is.
//!
//! Opening must never panic; a manifest that opens must answer everything a
//! verify or a continued write asks of it without panicking.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

use blockstamp::manifest::{Access, Manifest};

/// Header slots and the map start: see docs/FORMAT.md.
const SLOT_BYTES: usize = 32 * 1024;
const MAP_OFFSET: usize = 2 * SLOT_BYTES;
/// Room after the map offset for a small map, journal and undo log.
const BODY_BYTES: usize = 64 * 1024;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("blockstamp-fuzz-manifest-{}", std::process::id()))
    })
}

/// A real header (of fuzz/seeds/manifest_open/real-manifest).
const TEMPLATE: &str = include_str!("../seeds/manifest_open/header.json");

/// Numeric fields the `#` inputs override, as JSON pointers.
const FIELDS: [&str; 16] = [
    "/format_version",
    "/block_size",
    "/block_count",
    "/random_bytes",
    "/next_write_seq",
    "/map_crc32c",
    "/journal_offset",
    "/journal_bytes",
    "/undo_offset",
    "/undo_entries",
    "/target/size_bytes",
    "/target/logical_sector_size",
    "/checkpoints/0/undo_start",
    "/checkpoints/0/write_seq",
    "/checkpoints/0/blocks_written",
    "/state",
];

fn overridden(data: &[u8]) -> Vec<u8> {
    let mut header: serde_json::Value = serde_json::from_str(TEMPLATE).expect("template parses");
    for chunk in data.chunks_exact(9) {
        let field = FIELDS[chunk[0] as usize % FIELDS.len()];
        let value = u64::from_le_bytes(chunk[1..9].try_into().expect("8 bytes"));
        let new = if field == "/state" {
            serde_json::Value::from(if value % 2 == 0 { "clean" } else { "writing" })
        } else {
            serde_json::Value::from(value)
        };
        if let Some(slot) = header.pointer_mut(field) {
            *slot = new;
        }
    }
    serde_json::to_vec(&header).expect("header serialises")
}

fuzz_target!(|data: &[u8]| {
    let bytes = match data.first() {
        Some(b'{') if data.len() <= SLOT_BYTES - 24 => enveloped(data),
        Some(b'#') => enveloped(&overridden(&data[1..])),
        _ => data.to_vec(),
    };
    let path = scratch();
    std::fs::write(path, &bytes).expect("write scratch manifest");
    if let Ok(manifest) = Manifest::open(path, Access::Read) {
        exercise(&manifest);
    }
    if let Ok(mut manifest) = Manifest::open(path, Access::Write) {
        exercise(&manifest);
        // What a continued write does first and last.
        if manifest.begin_write().is_ok() {
            let _ = manifest.finish_write();
        }
    }
});

fn enveloped(json: &[u8]) -> Vec<u8> {
    let mut file = vec![0u8; MAP_OFFSET + BODY_BYTES];
    file[..8].copy_from_slice(b"BSTPMANI");
    file[8..16].copy_from_slice(&1u64.to_le_bytes());
    file[16..20].copy_from_slice(&(json.len() as u32).to_le_bytes());
    let crc = crc32c(&file[8..20], json);
    file[20..24].copy_from_slice(&crc.to_le_bytes());
    file[24..24 + json.len()].copy_from_slice(json);
    file
}

/// CRC-32C (Castagnoli) of `a` then `b`, bit by bit: the fuzz crate needs
/// no CRC dependency of its own for a few kilobytes.
fn crc32c(a: &[u8], b: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in a.iter().chain(b) {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn exercise(manifest: &Manifest) {
    let _ = manifest.format();
    let _ = manifest.count_written();
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
            for block in 0..manifest.block_count().min(4096) {
                let _ = expected.generation(block);
            }
        }
    }
}
