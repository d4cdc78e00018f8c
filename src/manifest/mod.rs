//! The manifest: what a run wrote, kept off the target.
//!
//! Layout (docs/FORMAT.md has the byte table):
//!
//! ```text
//! 0        header slot A   (32 KiB: magic, sequence, length, CRC32C, JSON)
//! 32 KiB   header slot B
//! 64 KiB   generation map  (2 bytes per block, memory-mapped)
//! …        journal ring    (fixed size, write-ahead intents; may be empty)
//! …        undo log        (append-only, for checkpoints)
//! ```
//!
//! The header is updated by writing the older slot with a higher sequence
//! number and syncing: a crash mid-update leaves the other slot intact, and a
//! slot that does not checksum is ignored. The map carries a CRC32C in the
//! header whenever the manifest is closed cleanly, so a damaged map is caught
//! before it can make a verify report wrong findings.
//!
//! Each map entry holds a 15-bit generation (0 = never written) and, in the
//! top bit, "written since the latest checkpoint". The first write of a block
//! after a checkpoint appends the block's previous generation to the undo
//! log, so a checkpoint costs nothing up front and space only for the blocks
//! that change after it.

pub mod journal;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapMut, MmapOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stamp::RunFormat;
use crate::storage::{TargetIdentity, TargetInfo, TargetKind};
use journal::Journal;

/// Format version of the manifest file.
pub const MANIFEST_VERSION: u32 = 1;
const SLOT_MAGIC: &[u8; 8] = b"BSTPMANI";
const SLOT_BYTES: u64 = 32 * 1024;
const SLOT_PREFIX: usize = 8 + 8 + 4 + 4;
/// Where the generation map starts.
pub const MAP_OFFSET: u64 = 2 * SLOT_BYTES;
/// Largest generation a map entry holds; the next write after it is 1 again.
pub const GENERATION_MAX: u32 = 0x7fff;
const DIRTY_BIT: u16 = 0x8000;
const UNDO_VALID: u64 = 1 << 63;

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
}

/// What a new manifest records.
#[derive(Clone, Debug)]
pub struct NewManifest {
    pub run_id: u64,
    pub seed: u64,
    pub block_size: u32,
    pub random_bytes: u16,
    pub dedup_permille: u16,
    pub target: TargetRecord,
    pub journal_bytes: u64,
}

/// How a manifest is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

enum MapView {
    Read(Mmap),
    Write(MmapMut),
}

impl MapView {
    fn bytes(&self) -> &[u8] {
        match self {
            MapView::Read(map) => map,
            MapView::Write(map) => map,
        }
    }
}

/// An open manifest.
pub struct Manifest {
    path: PathBuf,
    file: File,
    header: ManifestHeader,
    header_seq: u64,
    map: MapView,
    /// Undo entries built since the last `persist_undo`.
    pending_undo: Vec<u64>,
    journal: Option<Journal>,
}

impl Manifest {
    /// Create a new manifest; refuses to overwrite an existing file.
    pub fn create(path: &Path, new: NewManifest) -> Result<Manifest> {
        let block_count = new.target.size_bytes / new.block_size as u64;
        let map_bytes = (block_count * 2).next_multiple_of(4096);
        let journal_offset = MAP_OFFSET + map_bytes;
        let undo_offset = journal_offset + new.journal_bytes;
        let header = ManifestHeader {
            format_version: MANIFEST_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            run_id: new.run_id,
            seed: new.seed,
            created_unix_s: unix_now_s(),
            block_size: new.block_size,
            block_count,
            random_bytes: new.random_bytes,
            dedup_permille: new.dedup_permille,
            target: new.target,
            state: ManifestState::Clean,
            next_write_seq: 1,
            writes_completed: 0,
            passes_completed: 0,
            map_crc32c: None,
            journal_offset,
            journal_bytes: new.journal_bytes,
            undo_offset,
            undo_entries: 0,
            checkpoints: Vec::new(),
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::run(format!("cannot create manifest {}: {e}", path.display())))?;
        lock(&file, path, Access::Write)?;
        file.set_len(undo_offset)
            .map_err(|e| Error::run(format!("cannot size manifest {}: {e}", path.display())))?;
        if header.journal_bytes > 0 {
            // Allocate the journal now, so its synced appends never wait for
            // the filesystem to allocate blocks (best effort).
            let _ = rustix::fs::fallocate(
                &file,
                rustix::fs::FallocateFlags::empty(),
                header.journal_offset,
                header.journal_bytes,
            );
        }
        let map = map_view(&file, path, &header, Access::Write)?;
        let journal = load_journal(&file, path, &header, Access::Write)?;
        let mut manifest = Manifest {
            path: path.to_path_buf(),
            file,
            header,
            header_seq: 0,
            map,
            pending_undo: Vec::new(),
            journal,
        };
        manifest.header.map_crc32c = Some(manifest.map_crc());
        manifest.store_header()?;
        manifest.store_header()?; // both slots valid from the start
        Ok(manifest)
    }

    /// Open an existing manifest, checking everything that can be checked
    /// without the target. Every problem is a usage error (exit 2).
    pub fn open(path: &Path, access: Access) -> Result<Manifest> {
        let display = path.display();
        let file = match access {
            Access::Read => File::open(path),
            Access::Write => OpenOptions::new().read(true).write(true).open(path),
        }
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::usage(format!(
                "manifest {display} does not exist; run 'blockstamp write' first, or check the path"
            )),
            _ => Error::usage(format!("cannot open manifest {display}: {e}")),
        })?;
        let meta = file
            .metadata()
            .map_err(|e| Error::usage(format!("cannot stat manifest {display}: {e}")))?;
        if meta.is_dir() {
            return Err(Error::usage(format!(
                "manifest {display} is a directory; give a file path"
            )));
        }
        lock(&file, path, access)?;
        let length = meta.len();
        if length < MAP_OFFSET {
            if length >= 8 && !starts_with_magic(&file) {
                return Err(not_a_manifest(path));
            }
            return Err(Error::usage(format!(
                "manifest {display} is truncated ({length} bytes; a manifest has at least {MAP_OFFSET}); it cannot be used"
            )));
        }
        let (header, header_seq) = read_header(&file, path)?;
        if header.format_version != MANIFEST_VERSION {
            return Err(Error::usage(format!(
                "manifest {display} has format version {}; this blockstamp reads version {MANIFEST_VERSION}",
                header.format_version
            )));
        }
        validate_header(&header, path)?;
        if length < header.undo_offset {
            return Err(Error::usage(format!(
                "manifest {display} is truncated ({length} bytes, its header says at least {}); it cannot be used",
                header.undo_offset
            )));
        }
        let map = map_view(&file, path, &header, access)?;
        let journal = load_journal(&file, path, &header, access)?;
        let manifest = Manifest {
            path: path.to_path_buf(),
            file,
            header,
            header_seq,
            map,
            pending_undo: Vec::new(),
            journal,
        };
        if manifest.header.state == ManifestState::Clean
            && let Some(expected) = manifest.header.map_crc32c
            && expected != manifest.map_crc()
        {
            return Err(Error::usage(format!(
                "manifest {display} is damaged: its generation map does not match its checksum"
            )));
        }
        Ok(manifest)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &ManifestHeader {
        &self.header
    }

    pub fn header_mut(&mut self) -> &mut ManifestHeader {
        &mut self.header
    }

    pub fn format(&self) -> RunFormat {
        RunFormat {
            run_id: self.header.run_id,
            block_size: self.header.block_size,
            random_bytes: self.header.random_bytes,
            dedup_permille: self.header.dedup_permille,
        }
    }

    pub fn block_count(&self) -> u64 {
        self.header.block_count
    }

    /// Current expected generation of `block` (0: never written).
    pub fn generation(&self, block: u64) -> u32 {
        (self.raw_entry(block) & !DIRTY_BIT) as u32
    }

    fn raw_entry(&self, block: u64) -> u16 {
        let at = block as usize * 2;
        let bytes = self.map.bytes();
        u16::from_le_bytes([bytes[at], bytes[at + 1]])
    }

    fn map_bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.map {
            MapView::Write(map) => map,
            MapView::Read(_) => panic!("manifest opened read-only was written"),
        }
    }

    /// Record that `block` now holds `generation`.
    pub fn set_generation(&mut self, block: u64, generation: u32) {
        debug_assert!(generation <= GENERATION_MAX);
        let old = self.raw_entry(block);
        let mut new = generation as u16;
        if !self.header.checkpoints.is_empty() {
            if old & DIRTY_BIT == 0 {
                // First change since the latest checkpoint: remember what
                // the checkpoint expects here.
                self.pending_undo
                    .push(UNDO_VALID | block << 16 | (old & !DIRTY_BIT) as u64);
            }
            new |= DIRTY_BIT;
        }
        let at = block as usize * 2;
        self.map_bytes_mut()[at..at + 2].copy_from_slice(&new.to_le_bytes());
    }

    /// Write out undo entries built since the last call (to the page cache:
    /// they survive the process being killed; `finish_write` syncs them).
    pub fn persist_undo(&mut self) -> Result<()> {
        if self.pending_undo.is_empty() {
            return Ok(());
        }
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
        Ok(())
    }

    /// Mark the manifest as held by a writer, durably, before the first
    /// byte goes to the target.
    pub fn begin_write(&mut self) -> Result<()> {
        self.recover_undo_tail()?;
        self.header.state = ManifestState::Writing;
        self.header.map_crc32c = None;
        self.store_header()
    }

    /// Make the map durable and mark the manifest clean.
    pub fn finish_write(&mut self) -> Result<()> {
        self.persist_undo()?;
        if let Some(journal) = &mut self.journal {
            // Every write the map records was flushed: nothing is pending.
            let tail = journal.tail();
            journal
                .release(&self.file, tail)
                .map_err(|e| Error::run(format!("cannot write manifest journal: {e}")))?;
            journal
                .store_durable(&self.file)
                .map_err(|e| Error::run(format!("cannot sync manifest journal: {e}")))?;
        }
        if let MapView::Write(map) = &self.map {
            map.flush().map_err(|e| self.io_error("sync", e))?;
        }
        self.file
            .sync_data()
            .map_err(|e| self.io_error("sync", e))?;
        self.header.map_crc32c = Some(self.map_crc());
        self.header.state = ManifestState::Clean;
        self.store_header()
    }

    /// Persist the header as it is now (e.g. counters during a long run).
    pub fn store_header(&mut self) -> Result<()> {
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
            .map_err(|e| self.io_error("write", e))?;
        self.file
            .sync_data()
            .map_err(|e| self.io_error("sync", e))?;
        Ok(())
    }

    fn map_crc(&self) -> u32 {
        let length = self.header.block_count as usize * 2;
        crc32c::crc32c(&self.map.bytes()[..length])
    }

    fn io_error(&self, what: &str, e: io::Error) -> Error {
        Error::run(format!(
            "cannot {what} manifest {}: {e}",
            self.path.display()
        ))
    }

    /// After a crash the header's undo count can lag the entries that were
    /// written; entries carry a valid bit, so count them from the file.
    fn recover_undo_tail(&mut self) -> Result<()> {
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

    /// The journal, when the manifest has one.
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// Record write intents. They become durable in the background; call
    /// [`Manifest::journal_wait`] with the returned position before
    /// submitting the writes they describe.
    pub fn journal_append(&mut self, entries: &[(u64, u32)]) -> Result<u64> {
        let Some(journal) = &mut self.journal else {
            return Ok(0);
        };
        journal
            .append_in_background(&self.file, entries)
            .map_err(|e| self.journal_error(e))
    }

    /// Wait until the intents before journal `position` are durable.
    pub fn journal_wait(&mut self, position: u64) -> Result<()> {
        let Some(journal) = &mut self.journal else {
            return Ok(());
        };
        journal
            .wait_durable(position)
            .map_err(|e| self.journal_error(e))
    }

    fn journal_error(&self, e: std::io::Error) -> Error {
        Error::run(format!(
            "cannot write manifest journal of {}: {e}",
            self.path.display()
        ))
    }

    /// Every journal entry before `position` describes a durable write.
    pub fn journal_release(&mut self, position: u64) -> Result<()> {
        let Some(journal) = &mut self.journal else {
            return Ok(());
        };
        journal
            .release(&self.file, position)
            .map_err(|e| self.journal_error(e))
    }

    /// Pending writes per block: the oldest and newest pending generation.
    pub fn pending_writes(&self) -> Result<HashMap<u64, (u32, u32)>> {
        let mut pending: HashMap<u64, (u32, u32)> = HashMap::new();
        let Some(journal) = &self.journal else {
            return Ok(pending);
        };
        let entries = journal
            .pending(&self.file)
            .map_err(|e| self.io_error("read journal of", e))?;
        for (block, generation) in entries {
            if block >= self.header.block_count {
                continue;
            }
            pending
                .entry(block)
                .and_modify(|(oldest, newest)| {
                    if compare_generations(generation, *oldest).is_lt() {
                        *oldest = generation;
                    }
                    if compare_generations(generation, *newest).is_gt() {
                        *newest = generation;
                    }
                })
                .or_insert((generation, generation));
        }
        Ok(pending)
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
        self.recover_undo_tail()?;
        // Clear the "changed since the latest checkpoint" bits. Only entries
        // that have the bit are rewritten, so the pages touched are those of
        // blocks written since the previous checkpoint.
        let length = self.header.block_count as usize * 2;
        let map = self.map_bytes_mut();
        for entry in map[..length].chunks_exact_mut(2) {
            if entry[1] & 0x80 != 0 {
                entry[1] &= 0x7f;
            }
        }
        let blocks_written = self.count_written();
        let checkpoint = Checkpoint {
            name: name.to_string(),
            created_unix_s: unix_now_s(),
            write_seq: self.header.next_write_seq,
            blocks_written,
            undo_start: self.header.undo_entries,
        };
        self.header.checkpoints.push(checkpoint);
        if let MapView::Write(map) = &self.map {
            map.flush().map_err(|e| self.io_error("sync", e))?;
        }
        self.header.map_crc32c = Some(self.map_crc());
        self.store_header()
    }

    /// Blocks with a non-zero expected generation.
    pub fn count_written(&self) -> u64 {
        let length = self.header.block_count as usize * 2;
        self.map.bytes()[..length]
            .chunks_exact(2)
            .filter(|e| u16::from_le_bytes([e[0], e[1]]) & !DIRTY_BIT != 0)
            .count() as u64
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
            return Ok(Expected {
                manifest: self,
                overrides: None,
                checkpoint: None,
                pending,
            });
        };
        let start = self.checkpoint(name)?.undo_start;
        let entries = self.read_undo_from(start)?;
        // Applying the entries newest first leaves, for each block, the
        // oldest entry after the checkpoint: its generation at that moment.
        let mut overrides = HashMap::new();
        for entry in entries.iter().rev() {
            let block = (entry >> 16) & ((1 << 47) - 1);
            // The undo log has no checksum: an entry beyond the map is damage.
            if block >= self.header.block_count {
                return Err(Error::usage(format!(
                    "manifest {} is damaged: its undo log names block {block}, beyond the target's {} blocks",
                    self.path.display(),
                    self.header.block_count
                )));
            }
            overrides.insert(block, (entry & 0x7fff) as u32);
        }
        Ok(Expected {
            manifest: self,
            overrides: Some(overrides),
            checkpoint: Some(name.to_string()),
            pending: None,
        })
    }

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
    pending: Option<HashMap<u64, (u32, u32)>>,
}

impl Expected<'_> {
    pub fn generation(&self, block: u64) -> u32 {
        if let Some(overrides) = &self.overrides
            && let Some(&generation) = overrides.get(&block)
        {
            return generation;
        }
        self.manifest.generation(block)
    }

    pub fn checkpoint(&self) -> Option<&str> {
        self.checkpoint.as_deref()
    }

    /// For a block with writes pending at a crash: the oldest and newest
    /// pending generation (0: the first; before it, `journal::generation_before_pending`).
    pub fn pending(&self, block: u64) -> Option<(u32, u32)> {
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

    /// Blocks expected to hold a stamp.
    pub fn count_written(&self) -> u64 {
        let mut count = self.manifest.count_written();
        if let Some(overrides) = &self.overrides {
            for (&block, &generation) in overrides {
                let now = self.manifest.generation(block) != 0;
                let then = generation != 0;
                count = count + then as u64 - now as u64;
            }
        }
        count
    }
}

/// Compare generations with wrap-around (serial-number arithmetic over the
/// 15-bit space): negative when `found` is older than `expected`.
pub fn compare_generations(found: u32, expected: u32) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    if found == expected {
        return Ordering::Equal;
    }
    if found == 0 {
        return Ordering::Less;
    }
    if expected == 0 {
        return Ordering::Greater;
    }
    let span = GENERATION_MAX as i64;
    let diff = (found as i64 - expected as i64).rem_euclid(span);
    if diff != 0 && diff <= span / 2 {
        Ordering::Greater
    } else {
        Ordering::Less
    }
}

/// The generation after `generation`.
pub fn next_generation(generation: u32) -> u32 {
    if generation >= GENERATION_MAX {
        1
    } else {
        generation + 1
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

fn validate_header(header: &ManifestHeader, path: &Path) -> Result<()> {
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
    if header.block_count >= 1 << 47 {
        return bad("its block count is impossibly large");
    }
    // The header is checksummed, not trusted: offsets and counts that
    // overflow would wrap around into regions that overlap.
    let map_end = MAP_OFFSET + (header.block_count * 2).next_multiple_of(4096);
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

fn load_journal(
    file: &File,
    path: &Path,
    header: &ManifestHeader,
    access: Access,
) -> Result<Option<Journal>> {
    if header.journal_bytes == 0 {
        return Ok(None);
    }
    let appender = match access {
        Access::Read => None,
        Access::Write => {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .write(true)
                .custom_flags(rustix::fs::OFlags::DSYNC.bits() as i32)
                .open(path)
                .ok()
        }
    };
    Journal::load(file, header.journal_offset, header.journal_bytes)
        .map(|journal| Some(journal.with_appender(appender)))
        .map_err(|e| {
            Error::usage(format!(
                "manifest {} is damaged: its journal cannot be read ({e})",
                path.display()
            ))
        })
}

fn lock(file: &File, path: &Path, access: Access) -> Result<()> {
    use rustix::fs::{FlockOperation, flock};
    let operation = match access {
        Access::Read => FlockOperation::NonBlockingLockShared,
        Access::Write => FlockOperation::NonBlockingLockExclusive,
    };
    flock(file, operation).map_err(|_| {
        Error::run(format!(
            "manifest {} is in use by another blockstamp process; wait for it to finish",
            path.display()
        ))
    })
}

fn map_view(file: &File, path: &Path, header: &ManifestHeader, access: Access) -> Result<MapView> {
    let length = ((header.block_count * 2).next_multiple_of(4096)).max(4096) as usize;
    let mut options = MmapOptions::new();
    options.offset(MAP_OFFSET).len(length);
    // SAFETY: the manifest file is locked (flock) against other blockstamp
    // processes for the life of the mapping; the mapped range lies inside
    // the file (checked against the header's offsets before mapping).
    let result = unsafe {
        match access {
            Access::Read => options.map(file).map(MapView::Read),
            Access::Write => options.map_mut(file).map(MapView::Write),
        }
    };
    result.map_err(|e| Error::run(format!("cannot map manifest {}: {e}", path.display())))
}

fn starts_with_magic(file: &File) -> bool {
    let mut magic = [0u8; 8];
    file.read_exact_at(&mut magic, 0).is_ok() && &magic == SLOT_MAGIC
}

fn not_a_manifest(path: &Path) -> Error {
    Error::usage(format!(
        "{} is not a blockstamp manifest (no manifest header); check the --manifest path",
        path.display()
    ))
}

fn read_header(file: &File, path: &Path) -> Result<(ManifestHeader, u64)> {
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

pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Kind names as the manifest stores them.
pub fn kind_name(kind: TargetKind) -> String {
    kind.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(size_bytes: u64) -> TargetRecord {
        TargetRecord {
            uri: "disk.img".into(),
            kind: "file".into(),
            size_bytes,
            logical_sector_size: 512,
            physical_sector_size: 4096,
            model: None,
            serial: None,
            wwn: None,
        }
    }

    fn new_manifest(dir: &Path) -> Manifest {
        Manifest::create(
            &dir.join("m"),
            NewManifest {
                run_id: 7,
                seed: 1,
                block_size: 4096,
                random_bytes: 464,
                dedup_permille: 0,
                target: record(1 << 20),
                journal_bytes: 0,
            },
        )
        .unwrap()
    }

    #[test]
    fn generations_survive_reopen_and_map_is_two_bytes_per_block() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = new_manifest(dir.path());
        m.begin_write().unwrap();
        m.set_generation(3, 2);
        m.set_generation(255, 1);
        m.finish_write().unwrap();
        drop(m);
        let m = Manifest::open(&dir.path().join("m"), Access::Read).unwrap();
        assert_eq!(m.generation(3), 2);
        assert_eq!(m.generation(255), 1);
        assert_eq!(m.generation(4), 0);
        assert_eq!(m.count_written(), 2);
        let len = std::fs::metadata(dir.path().join("m")).unwrap().len();
        assert_eq!(len, MAP_OFFSET + 4096);
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
    fn generation_order_wraps() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_generations(1, 2), Less);
        assert_eq!(compare_generations(3, 2), Greater);
        assert_eq!(compare_generations(1, GENERATION_MAX), Greater);
        assert_eq!(compare_generations(GENERATION_MAX, 1), Less);
        assert_eq!(compare_generations(0, 5), Less);
        assert_eq!(next_generation(GENERATION_MAX), 1);
    }
}
