//! Checkpoints and the undo log: named expected states, and what verify
//! expects of each block at the latest one or at a checkpoint.
//!
//! The first write of a block after a checkpoint appends the block's
//! previous generation to the undo log, so a checkpoint costs nothing up
//! front and space only for the blocks that change after it.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

use super::{BlockState, Manifest, ManifestState, Pending, unix_now_s};
use crate::error::{Error, Result};
use crate::storage::DiscardReads;

/// Marks an undo entry as written: the log ends at the first entry without.
const UNDO_VALID: u64 = 1 << 63;

/// A named expected state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub name: String,
    pub created_unix_s: u64,
    /// Write sequence number when it was taken: writes below it are in it.
    pub write_seq: u64,
    /// Generations written when it was taken.
    pub blocks_written: u64,
    /// First undo-log entry that belongs to it.
    pub undo_start: u64,
}

/// The undo entry saying `block` held `generation` before its first write
/// since the latest checkpoint.
pub(super) fn undo_entry(block: u64, generation: u32) -> u64 {
    UNDO_VALID | block << 16 | generation as u64
}

/// The (block, generation) an undo entry records.
fn undo_fields(entry: u64) -> (u64, u32) {
    ((entry >> 16) & ((1 << 47) - 1), (entry & 0x7fff) as u32)
}

impl Manifest {
    /// Write out undo entries built since the last call, sync them, then
    /// let the map entries that wait for them into the map.
    pub fn persist_undo(&mut self) -> Result<()> {
        if !self.pending_undo.is_empty() {
            let mut bytes = Vec::with_capacity(self.pending_undo.len() * 8);
            for entry in &self.pending_undo {
                bytes.extend_from_slice(&entry.to_le_bytes());
            }
            let at = self.header.undo_offset + self.header.undo_entries * 8;
            self.file
                .write_all_at(&bytes, at)
                .map_err(|e| self.io_error("write undo log of", e))?;
            self.header.undo_entries += self.pending_undo.len() as u64;
            self.pending_undo.clear();
        }
        if !self.deferred.is_empty() {
            // The undo entries reach storage before the map entries that
            // rely on them can.
            super::sync_point(&self.path);
            self.file
                .sync_data()
                .map_err(|e| self.io_error("sync undo log of", e))?;
            self.apply_deferred();
        }
        Ok(())
    }

    /// After a crash the header's undo count can lag the entries that were
    /// written; entries carry a valid bit, so count them from the file.
    pub(super) fn recover_undo_tail(&mut self) -> Result<()> {
        let mut entry = [0u8; 8];
        loop {
            let at = self.header.undo_offset + self.header.undo_entries * 8;
            match self.file.read_exact_at(&mut entry, at) {
                Ok(()) if u64::from_le_bytes(entry) & UNDO_VALID != 0 => {
                    self.header.undo_entries += 1
                }
                _ => return Ok(()),
            }
        }
    }

    /// Remember the current expected state under `name`.
    pub fn add_checkpoint(&mut self, name: &str) -> Result<()> {
        validate_checkpoint_name(name)?;
        if self.header.checkpoints.iter().any(|c| c.name == name) {
            return Err(Error::usage(format!(
                "checkpoint '{name}' already exists in manifest {}; choose another name",
                self.path.display()
            )));
        }
        self.persist_undo()?;
        self.recover_undo_tail()?;
        // Clearing the bits changes the map under its checksum, and the
        // kernel may write any of its pages back at any moment: say durably
        // that the map is changing first, so a crash in between leaves a
        // map that opens. Its generations do not change, only the bits; a
        // bit cleared without the checkpoint recorded only makes the next
        // write of its block log a second undo entry for the previous
        // checkpoint, after the first one, and the oldest entry wins.
        if self.header.map_crc32c.is_some() {
            self.header.map_crc32c = None;
            self.store_header()?;
        }
        self.clear_dirty_bits();
        let blocks_written = self.count_written();
        let checkpoint = Checkpoint {
            name: name.to_string(),
            created_unix_s: unix_now_s(),
            write_seq: self.header.next_write_seq,
            blocks_written,
            undo_start: self.header.undo_entries,
        };
        self.header.checkpoints.push(checkpoint);
        self.flush_map()?;
        self.header.map_crc32c = Some(self.map_crc());
        self.store_header()
    }

    /// The checkpoint called `name`, or a usage error listing the ones there are.
    pub fn checkpoint(&self, name: &str) -> Result<&Checkpoint> {
        if let Some(checkpoint) = self.header.checkpoints.iter().find(|c| c.name == name) {
            return Ok(checkpoint);
        }
        let known: Vec<&str> = self
            .header
            .checkpoints
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        Err(Error::usage(format!(
            "manifest {} has no checkpoint '{name}' (it has: {})",
            self.path.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )))
    }

    /// The latest state while a writer holds the manifest, with the blocks
    /// whose latest writes it does not yet know durable: for each, the
    /// oldest and newest such generation (the one before the oldest, or any
    /// up to the newest, may be found; see [`Expected::pending`]).
    pub fn expected_while_writing(&self, pending: HashMap<u64, Pending>) -> Expected<'_> {
        let mut expected = Expected::new(self, None, None, Some(pending).filter(|p| !p.is_empty()));
        expected.backing = self.latest_checkpoint_states().unwrap_or_default();
        expected
    }

    /// The states of the blocks changed since the latest checkpoint, as of
    /// it (none without one): what a discard in an overlay taken at that
    /// checkpoint may expose of its backing image.
    /// Only runs that discarded need them. An undo log damaged past the
    /// target's blocks is refused by a verify `--at` a checkpoint; here it
    /// only leaves the backing contents out (the latest state does not
    /// rest on the undo log).
    fn latest_checkpoint_states(&self) -> Result<HashMap<u64, u32>> {
        let Some(latest) = self.header.checkpoints.last() else {
            return Ok(HashMap::new());
        };
        if self.header.discard_reads.is_none() {
            return Ok(HashMap::new());
        }
        Ok(self.undo_overrides(latest.undo_start).unwrap_or_default())
    }

    /// Each block's value as of the checkpoint whose undo entries start at
    /// `start`, for the blocks changed since.
    fn undo_overrides(&self, start: u64) -> Result<HashMap<u64, u32>> {
        let entries = self.read_undo_from(start)?;
        // Applying the entries newest first leaves, for each block, the
        // oldest entry after the checkpoint: its value at that moment.
        let mut overrides = HashMap::new();
        for &entry in entries.iter().rev() {
            let (block, generation) = undo_fields(entry);
            // The undo log has no checksum: an entry beyond the map is damage.
            if block >= self.header.block_count {
                return Err(Error::usage(format!(
                    "manifest {} is damaged: its undo log names block {block}, beyond the target's {} blocks",
                    self.path.display(),
                    self.header.block_count
                )));
            }
            overrides.insert(block, generation);
        }
        Ok(overrides)
    }

    /// The expected state: the latest, or as of a checkpoint.
    pub fn expected(&self, checkpoint: Option<&str>) -> Result<Expected<'_>> {
        let Some(name) = checkpoint else {
            // After a crash, writes the storage never promised to keep may
            // hold their old or their new generation.
            let pending = if self.header.state == ManifestState::Writing {
                Some(self.pending_writes()?).filter(|p| !p.is_empty())
            } else {
                None
            };
            let mut expected = Expected::new(self, None, None, pending);
            expected.backing = self.latest_checkpoint_states()?;
            return Ok(expected);
        };
        let start = self.checkpoint(name)?.undo_start;
        let overrides = self.undo_overrides(start)?;
        Ok(Expected::new(
            self,
            Some(overrides),
            Some(name.to_string()),
            None,
        ))
    }

    /// Undo entries from index `start` to the end of the log (the first
    /// entry without its valid bit), then those not yet persisted.
    fn read_undo_from(&self, start: u64) -> Result<Vec<u64>> {
        let mut entries = Vec::new();
        let mut index = start;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let at = self.header.undo_offset + index * 8;
            let got =
                read_some_at(&self.file, &mut chunk, at).map_err(|e| self.io_error("read", e))?;
            let mut ended = got < chunk.len();
            for word in chunk[..got - got % 8].chunks_exact(8) {
                let entry = u64::from_le_bytes(word.try_into().expect("8 bytes"));
                if entry & UNDO_VALID == 0 {
                    ended = true;
                    break;
                }
                entries.push(entry);
                index += 1;
            }
            if ended {
                break;
            }
        }
        entries.extend_from_slice(&self.pending_undo);
        Ok(entries)
    }
}

/// The generation each block should hold, for verify.
pub struct Expected<'m> {
    manifest: &'m Manifest,
    overrides: Option<HashMap<u64, u32>>,
    checkpoint: Option<String>,
    pending: Option<HashMap<u64, Pending>>,
    /// For the latest state: the values at the latest checkpoint of the
    /// blocks changed since (a discarded block may read as it was then).
    backing: HashMap<u64, u32>,
    /// What a discarded block may read as.
    discard_reads: DiscardReads,
    /// The blocks whose expectation the map alone does not give (overridden
    /// by the checkpoint, pending, or deferred), ascending.
    exceptions: Vec<u64>,
    /// The runs of the map that may hold entries, found once for every
    /// scan of a piece of it.
    map_runs: std::sync::OnceLock<Vec<std::ops::Range<u64>>>,
}

impl<'m> Expected<'m> {
    fn new(
        manifest: &'m Manifest,
        overrides: Option<HashMap<u64, u32>>,
        checkpoint: Option<String>,
        pending: Option<HashMap<u64, Pending>>,
    ) -> Expected<'m> {
        let mut exceptions: Vec<u64> = manifest.deferred.keys().copied().collect();
        exceptions.extend(overrides.iter().flat_map(|o| o.keys().copied()));
        exceptions.extend(pending.iter().flat_map(|p| p.keys().copied()));
        exceptions.sort_unstable();
        exceptions.dedup();
        Expected {
            manifest,
            overrides,
            checkpoint,
            pending,
            backing: HashMap::new(),
            discard_reads: manifest.header.discard_reads.unwrap_or(DiscardReads::Any),
            exceptions,
            map_runs: std::sync::OnceLock::new(),
        }
    }
}

impl Expected<'_> {
    /// The generation of `block`'s latest data write (0: none); see
    /// [`Expected::state`] for whether the block should still hold it.
    pub fn generation(&self, block: u64) -> u32 {
        self.state(block).generation
    }

    /// `block`'s expected state.
    pub fn state(&self, block: u64) -> BlockState {
        BlockState::from_value(self.value(block))
    }

    fn value(&self, block: u64) -> u32 {
        if let Some(overrides) = &self.overrides
            && let Some(&value) = overrides.get(&block)
        {
            return value;
        }
        self.manifest.value(block)
    }

    /// What `block` held at the latest checkpoint, when it changed since:
    /// what a discard in an overlay may expose of the backing image.
    pub fn backing_state(&self, block: u64) -> Option<BlockState> {
        self.backing.get(&block).map(|&v| BlockState::from_value(v))
    }

    /// The promise a discarded block is held to.
    pub fn discard_reads(&self) -> DiscardReads {
        self.discard_reads
    }

    /// Hold discarded blocks to `promise` (`--discard-reads` at verify).
    pub fn set_discard_reads(&mut self, promise: DiscardReads) {
        self.discard_reads = promise;
    }

    pub fn checkpoint(&self) -> Option<&str> {
        self.checkpoint.as_deref()
    }

    /// For a block with writes pending at a crash: the oldest and newest
    /// pending generation (0: the first; before it, `journal::generation_before_pending`).
    pub fn pending(&self, block: u64) -> Option<Pending> {
        self.pending.as_ref()?.get(&block).copied()
    }

    /// Blocks with writes pending at a crash.
    pub fn pending_blocks(&self) -> u64 {
        self.pending.as_ref().map_or(0, |p| p.len() as u64)
    }

    /// Bytes the target writes atomically (its logical sector): a pending
    /// write may leave each such unit old or new, never a mix within one.
    pub fn atomic_unit(&self) -> usize {
        (self.manifest.header.target.logical_sector_size as usize).max(crate::stamp::SECTOR_BYTES)
    }

    pub fn block_count(&self) -> u64 {
        self.manifest.block_count()
    }

    /// The next write sequence number the run would hand out: every write
    /// on the target is numbered below it.
    pub fn next_write_seq(&self) -> u64 {
        self.manifest.header.next_write_seq
    }

    /// The blocks of `blocks` expected to hold a stamp or with a pending
    /// write, ascending, in `out` (replacing what it held): what a reader
    /// must look at even where the target reports a hole. Costs a scan of
    /// the range's map entries, and nothing per block of the target beyond.
    pub fn stamped_or_pending_in(&self, blocks: std::ops::Range<u64>, out: &mut Vec<u64>) {
        out.clear();
        let runs = self.map_runs.get_or_init(|| {
            self.manifest
                .entries_with_data(0..self.manifest.header.block_count)
        });
        self.manifest.mapped_written_in(blocks.clone(), runs, out);
        let from = self.exceptions.partition_point(|&b| b < blocks.start);
        let mapped = out.len();
        out.extend(
            self.exceptions[from..]
                .iter()
                .take_while(|&&b| b < blocks.end),
        );
        if out.len() > mapped {
            out.sort_unstable();
            out.dedup();
        }
        out.retain(|&b| self.value(b) != 0 || self.pending(b).is_some());
    }

    /// Blocks expected to hold a stamp.
    pub fn count_written(&self) -> u64 {
        let mut count = self.manifest.count_written();
        if let Some(overrides) = &self.overrides {
            for (&block, &value) in overrides {
                let now = self.manifest.value(block) != 0;
                let then = value != 0;
                count = count + then as u64 - now as u64;
            }
        }
        count
    }
}

fn validate_checkpoint_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "bad checkpoint name '{name}': use 1 to 64 letters, digits or - _ . : @"
        )))
    }
}

/// Read into `buf` until it is full or the file ends; the bytes read.
fn read_some_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], at + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use crate::manifest::testing::new_manifest;
    use crate::manifest::{Access, Manifest};

    #[test]
    fn checkpoints_restore_the_generations_of_their_moment() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = new_manifest(dir.path());
        m.begin_write().unwrap();
        m.set_generation(1, 1);
        m.set_generation(2, 1);
        m.add_checkpoint("base").unwrap();
        m.set_generation(1, 2);
        m.set_generation(1, 3);
        m.set_generation(5, 1);
        m.persist_undo().unwrap();
        m.add_checkpoint("second").unwrap();
        m.set_generation(2, 2);
        m.set_generation(1, 4);
        m.finish_write().unwrap();
        drop(m);
        let m = Manifest::open(&dir.path().join("m"), Access::Read).unwrap();
        let at_base = m.expected(Some("base")).unwrap();
        assert_eq!([1, 2, 5].map(|b| at_base.generation(b)), [1, 1, 0]);
        assert_eq!(at_base.count_written(), 2);
        let at_second = m.expected(Some("second")).unwrap();
        assert_eq!([1, 2, 5].map(|b| at_second.generation(b)), [3, 1, 1]);
        let latest = m.expected(None).unwrap();
        assert_eq!([1, 2, 5].map(|b| latest.generation(b)), [4, 2, 1]);
        assert!(m.expected(Some("nope")).is_err());
    }

    #[test]
    fn the_stamped_blocks_of_a_range_are_those_of_the_expected_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = new_manifest(dir.path());
        m.begin_write().unwrap();
        for block in [1, 6, 7, 200] {
            m.set_generation(block, 1);
        }
        m.add_checkpoint("base").unwrap();
        m.set_generation(5, 1);
        m.set_generation(200, 2);
        m.finish_write().unwrap();
        drop(m);
        let m = Manifest::open(&dir.path().join("m"), Access::Read).unwrap();
        for (checkpoint, stamped) in [
            (None, vec![1, 5, 6, 7, 200]),
            (Some("base"), vec![1, 6, 7, 200]),
        ] {
            let expected = m.expected(checkpoint).unwrap();
            let mut out = vec![99];
            for range in [0..256, 2..201, 5..7, 7..8, 8..200] {
                expected.stamped_or_pending_in(range.clone(), &mut out);
                let want: Vec<u64> = stamped
                    .iter()
                    .copied()
                    .filter(|b| range.contains(b))
                    .collect();
                assert_eq!(out, want, "{checkpoint:?} {range:?}");
            }
        }
    }
}
