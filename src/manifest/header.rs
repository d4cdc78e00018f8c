//! The manifest header: a JSON record kept in two checksummed slots (A/B).
//!
//! The header is updated by writing the older slot with a higher sequence
//! number and syncing: a crash mid-update leaves the other slot intact, and a
//! slot that does not checksum is ignored.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Manifest;
use super::checkpoint::Checkpoint;
use super::journal;
use crate::error::{Error, Result};
use crate::storage::{TargetIdentity, TargetInfo};

/// Format version of the manifest file.
pub const MANIFEST_VERSION: u32 = 2;

/// The version before map entries carried a block's kind (zeroed,
/// discarded) in bits 13–14: read as version 2 when no entry uses them.
pub const MANIFEST_VERSION_1: u32 = 1;
const SLOT_MAGIC: &[u8; 8] = b"BSTPMANI";
/// Bytes of one header slot; the map starts after two of them.
pub(super) const SLOT_BYTES: u64 = 32 * 1024;

/// Where the generation map starts: after the two header slots.
pub const MAP_OFFSET: u64 = 2 * SLOT_BYTES;

/// Bytes the map of `block_count` blocks takes in the file (whole pages).
pub(super) fn map_region_bytes(block_count: u64) -> u64 {
    (block_count * 2).next_multiple_of(4096)
}

/// Magic, sequence number, JSON length, CRC32C.
const SLOT_PREFIX: usize = 8 + 8 + 4 + 4;

/// Whether the last writer closed the manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManifestState {
    /// Every write the map records is complete and was flushed.
    Clean,
    /// A writer holds it, or died holding it.
    Writing,
}

/// The target as it was when the run began.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub uri: String,
    pub kind: String,
    pub size_bytes: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
}

impl TargetRecord {
    pub fn from_info(info: &TargetInfo) -> TargetRecord {
        TargetRecord {
            uri: info.uri.clone(),
            kind: info.kind.to_string(),
            size_bytes: info.size_bytes,
            logical_sector_size: info.logical_sector_size,
            physical_sector_size: info.physical_sector_size,
            model: info.identity.model.clone(),
            serial: info.identity.serial.clone(),
            wwn: info.identity.wwn.clone(),
        }
    }

    pub fn identity(&self) -> TargetIdentity {
        TargetIdentity {
            model: self.model.clone(),
            serial: self.serial.clone(),
            wwn: self.wwn.clone(),
        }
    }
}

/// The manifest header, stored as JSON in a checksummed slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestHeader {
    pub format_version: u32,
    pub tool_version: String,
    pub run_id: u64,
    pub seed: u64,
    pub created_unix_s: u64,
    pub block_size: u32,
    pub block_count: u64,
    /// Pseudo-random payload bytes per sector (see `stamp::RunFormat`).
    pub random_bytes: u16,
    /// Per mille of writes with shared (deduplicable) content.
    #[serde(default)]
    pub dedup_permille: u16,
    pub target: TargetRecord,
    pub state: ManifestState,
    /// Next write sequence number to hand out.
    pub next_write_seq: u64,
    pub writes_completed: u64,
    pub passes_completed: u64,
    /// CRC32C of the generation map, valid when `state` is clean.
    pub map_crc32c: Option<u32>,
    pub journal_offset: u64,
    pub journal_bytes: u64,
    pub undo_offset: u64,
    /// Undo-log entries known to be written (more may follow after a crash;
    /// entries are self-marking).
    pub undo_entries: u64,
    pub checkpoints: Vec<Checkpoint>,
    /// The workload shape of each stretch of writes, oldest first (absent
    /// in manifests from before it was recorded).
    #[serde(default)]
    pub sessions: Vec<WriteSession>,
    /// What the target promised a read of a discarded block returns, as
    /// the run that discarded decided it (absent: no discards; verify then
    /// accepts zeros or the previous contents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discard_reads: Option<crate::storage::DiscardReads>,
}

/// How the writes from `first_write_seq` on were issued (until the next
/// session): what an incident can say about the bursts it struck.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriteSession {
    pub first_write_seq: u64,
    /// `burst` or `sequential`.
    pub workload: String,
    /// Writes submitted together.
    pub burst: u32,
    /// `random`, `stride`, `reverse`, `interleave` or `sequential`.
    pub scatter: String,
    /// Writes kept in flight.
    pub queue_depth: u32,
    /// Blocks per write, fewest and most.
    pub io_blocks: [u32; 2],
    /// Fraction of writes that re-hit written blocks.
    pub overwrite: f64,
    /// Fractions of operations that discarded or zeroed instead of writing
    /// (absent in older manifests: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub discard: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub write_zeroes: f64,
}

fn is_zero(fraction: &f64) -> bool {
    *fraction == 0.0
}

/// Sessions a header keeps; older ones are dropped first (the header slot
/// is 32 KiB). Consecutive sessions of the same shape are one.
const MAX_SESSIONS: usize = 64;

impl WriteSession {
    fn same_shape(&self, other: &WriteSession) -> bool {
        WriteSession {
            first_write_seq: other.first_write_seq,
            ..self.clone()
        } == *other
    }
}

impl ManifestHeader {
    /// Record that writes from the next write sequence number on follow
    /// `session`'s shape (its `first_write_seq` is set here). Stored with
    /// the next header store.
    pub fn record_session(&mut self, mut session: WriteSession) {
        session.first_write_seq = self.next_write_seq;
        if self
            .sessions
            .last()
            .is_some_and(|last| last.same_shape(&session))
        {
            return;
        }
        // A session that never wrote is replaced by its successor.
        if self
            .sessions
            .last()
            .is_some_and(|last| last.first_write_seq == session.first_write_seq)
        {
            self.sessions.pop();
            if self
                .sessions
                .last()
                .is_some_and(|last| last.same_shape(&session))
            {
                return;
            }
        }
        self.sessions.push(session);
        if self.sessions.len() > MAX_SESSIONS {
            self.sessions.remove(0);
        }
    }
}

impl Manifest {
    /// Persist the header as it is now (e.g. counters during a long run).
    pub fn store_header(&mut self) -> Result<()> {
        self.write_header()?;
        super::sync_point(&self.path);
        self.file
            .sync_data()
            .map_err(|e| self.io_error("sync", e))?;
        Ok(())
    }

    /// Write the header to its next slot, leaving it to a later sync.
    pub(super) fn write_header(&mut self) -> Result<()> {
        self.header_seq += 1;
        let json = serde_json::to_vec(&self.header).expect("manifest header serialises");
        if json.len() + SLOT_PREFIX > SLOT_BYTES as usize {
            return Err(Error::usage(format!(
                "manifest {} header is full (too many checkpoints); start a new manifest",
                self.path.display()
            )));
        }
        let mut slot = Vec::with_capacity(SLOT_PREFIX + json.len());
        slot.extend_from_slice(SLOT_MAGIC);
        slot.extend_from_slice(&self.header_seq.to_le_bytes());
        slot.extend_from_slice(&(json.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&slot[8..20]), &json);
        slot.extend_from_slice(&crc.to_le_bytes());
        slot.extend_from_slice(&json);
        let at = (self.header_seq % 2) * SLOT_BYTES;
        self.file
            .write_all_at(&slot, at)
            .map_err(|e| self.io_error("write", e))
    }
}

/// The current header and its sequence number: the valid slot with the
/// higher sequence number.
pub(super) fn read_header(file: &File, path: &Path) -> Result<(ManifestHeader, u64)> {
    let mut best: Option<(ManifestHeader, u64)> = None;
    let mut any_magic = false;
    let mut parse_error = None;
    for slot in 0..2u64 {
        let mut bytes = vec![0u8; SLOT_BYTES as usize];
        if file.read_exact_at(&mut bytes, slot * SLOT_BYTES).is_err() {
            continue;
        }
        if &bytes[..8] != SLOT_MAGIC {
            continue;
        }
        any_magic = true;
        let seq = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let length = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
        if length > bytes.len() - SLOT_PREFIX {
            continue;
        }
        let json = &bytes[SLOT_PREFIX..SLOT_PREFIX + length];
        if crc32c::crc32c_append(crc32c::crc32c(&bytes[8..20]), json) != crc {
            continue;
        }
        match serde_json::from_slice::<ManifestHeader>(json) {
            Ok(header) => {
                if best.as_ref().is_none_or(|(_, best_seq)| seq > *best_seq) {
                    best = Some((header, seq));
                }
            }
            Err(e) => parse_error = Some(e.to_string()),
        }
    }
    match best {
        Some(found) => Ok(found),
        None if !any_magic => Err(not_a_manifest(path)),
        None => Err(Error::usage(match parse_error {
            Some(e) => format!(
                "manifest {} is damaged or from an incompatible version: {e}",
                path.display()
            ),
            None => format!(
                "manifest {} is damaged: its header does not match its checksum",
                path.display()
            ),
        })),
    }
}

/// Refuse a header whose values cannot describe a manifest.
pub(super) fn validate_header(header: &ManifestHeader, path: &Path) -> Result<()> {
    let display = path.display();
    let bad = |what: &str| {
        Err(Error::usage(format!(
            "manifest {display} is damaged: {what}"
        )))
    };
    if !header.block_size.is_power_of_two() || !(512..=1 << 20).contains(&header.block_size) {
        return bad("its block size is not a power of two from 512 B to 1 MiB");
    }
    if header.block_count != header.target.size_bytes / header.block_size as u64 {
        return bad("its block count does not match its target size");
    }
    if header.block_count >= 1 << 45 {
        return bad("its block count is impossibly large");
    }
    // The header is checksummed, not trusted: offsets and counts that
    // overflow would wrap around into regions that overlap.
    let map_end = MAP_OFFSET + map_region_bytes(header.block_count);
    if header.journal_offset != map_end
        || header.journal_offset.checked_add(header.journal_bytes) != Some(header.undo_offset)
    {
        return bad("its regions overlap");
    }
    if header
        .undo_entries
        .checked_mul(8)
        .and_then(|bytes| bytes.checked_add(header.undo_offset))
        .is_none()
    {
        return bad("its undo log is impossibly long");
    }
    if header
        .checkpoints
        .iter()
        .any(|c| c.undo_start > header.undo_entries)
    {
        return bad("a checkpoint starts beyond the end of its undo log");
    }
    if header.journal_bytes != 0 && header.journal_bytes < journal::ENTRIES_OFFSET + 8 * 16 {
        return bad("its journal region is too small");
    }
    if header.random_bytes as usize > crate::stamp::PAYLOAD_BYTES || header.dedup_permille > 1000 {
        return bad("its payload settings are out of range");
    }
    Ok(())
}

/// Whether the file begins like a header slot (to tell a truncated manifest
/// from some other file).
pub(super) fn starts_with_magic(file: &File) -> bool {
    let mut magic = [0u8; 8];
    file.read_exact_at(&mut magic, 0).is_ok() && &magic == SLOT_MAGIC
}

pub(super) fn not_a_manifest(path: &Path) -> Error {
    Error::usage(format!(
        "{} is not a blockstamp manifest (no manifest header); check the --manifest path",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use super::*;
    use crate::manifest::Access;
    use crate::manifest::testing::new_manifest;

    fn session(burst: u32) -> WriteSession {
        WriteSession {
            first_write_seq: 0,
            workload: "burst".into(),
            burst,
            scatter: "random".into(),
            queue_depth: 32,
            io_blocks: [1, 1],
            overwrite: 0.0,
            discard: 0.0,
            write_zeroes: 0.0,
        }
    }

    #[test]
    fn sessions_record_where_each_workload_shape_begins() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = new_manifest(dir.path());
        let header = m.header_mut();
        header.record_session(session(4));
        header.next_write_seq = 100;
        header.record_session(session(4)); // the same shape: one session
        header.record_session(session(8));
        header.record_session(session(16)); // replaces 8, which never wrote
        header.next_write_seq = 200;
        header.record_session(session(4));
        let starts: Vec<(u64, u32)> = header
            .sessions
            .iter()
            .map(|s| (s.first_write_seq, s.burst))
            .collect();
        assert_eq!(starts, vec![(1, 4), (100, 16), (200, 4)]);
        for i in 0..100u32 {
            header.next_write_seq += 1;
            header.record_session(session(i % 2 + 1));
        }
        assert_eq!(header.sessions.len(), MAX_SESSIONS);
        assert_eq!(header.sessions.last().unwrap().burst, 2);
        m.store_header().unwrap();
        drop(m);
        let m = Manifest::open(&dir.path().join("m"), Access::Read).unwrap();
        assert_eq!(m.header().sessions.len(), MAX_SESSIONS);
    }

    #[test]
    fn a_torn_header_update_falls_back_to_the_other_slot() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = new_manifest(dir.path());
        m.header_mut().passes_completed = 5;
        m.store_header().unwrap();
        let newest_slot = m.header_seq % 2;
        drop(m);
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join("m"))
            .unwrap();
        file.write_all_at(b"garbage!", newest_slot * SLOT_BYTES + 30)
            .unwrap();
        let m = Manifest::open(&dir.path().join("m"), Access::Read).unwrap();
        assert_eq!(m.header().passes_completed, 0, "older slot is used");
    }
}
