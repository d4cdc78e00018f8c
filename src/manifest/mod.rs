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
//! One file per region: `header` (the A/B slots), `map` (the generation
//! map), `journal` (the ring), `checkpoint` (checkpoints, the undo log and
//! the expected state verify reads); `generation` is the arithmetic of the
//! generations the map holds. This file opens, creates and closes the
//! manifest and ties the journal to it.

mod checkpoint;
mod generation;
mod header;
pub mod journal;
mod map;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::stamp::RunFormat;
use journal::Journal;
use map::MapView;

pub use checkpoint::{Checkpoint, Expected};
pub use generation::{
    BlockKind, BlockState, GENERATION_MAX, OpKind, VALUE_MASK, compare_generations, next_generation,
};
pub use header::MAP_OFFSET;
pub use header::{MANIFEST_VERSION, ManifestHeader, ManifestState, TargetRecord, WriteSession};

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

/// An open manifest.
pub struct Manifest {
    path: PathBuf,
    file: File,
    header: ManifestHeader,
    header_seq: u64,
    map: MapView,
    /// Undo entries built since the last `persist_undo`.
    pending_undo: Vec<u64>,
    /// Map entries waiting for their undo entries to be durable: the kernel
    /// may write a map page back at any moment, and a page that says
    /// "written since the checkpoint" without the undo entry on storage
    /// would lose the checkpoint's generation to a power cut.
    deferred: HashMap<u64, u16>,
    journal: Option<Journal>,
}

impl Manifest {
    /// Create a new manifest; refuses to overwrite an existing file.
    pub fn create(path: &Path, new: NewManifest) -> Result<Manifest> {
        let block_count = new.target.size_bytes / new.block_size as u64;
        let journal_offset = MAP_OFFSET + header::map_region_bytes(block_count);
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
            sessions: Vec::new(),
            discard_reads: None,
        };
        // Built under a temporary name and renamed into place only when
        // complete: a manifest that cannot be created (full disk, a crash)
        // leaves no file that later runs would refuse as "not a manifest".
        let temp_path = temp_path_for(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp_path)
            .map_err(|e| Error::run(format!("cannot create manifest {}: {e}", path.display())))?;
        let built = Manifest::build(file, path, &temp_path, header).and_then(|manifest| {
            publish(&temp_path, path)?;
            Ok(manifest)
        });
        if built.is_err() {
            let _ = std::fs::remove_file(&temp_path);
        }
        built
    }

    /// Lay out a new manifest in `file` (at `temp_path`, to become `path`).
    fn build(
        file: File,
        path: &Path,
        temp_path: &Path,
        header: ManifestHeader,
    ) -> Result<Manifest> {
        lock(&file, path, Access::Write)?;
        file.set_len(header.undo_offset)
            .map_err(|e| Error::run(format!("cannot size manifest {}: {e}", path.display())))?;
        // Reserved, so that no store through the mapping can fault for want
        // of space (SIGBUS), and the journal's synced appends never wait for
        // the filesystem to allocate blocks.
        reserve(&file, path, &header)?;
        let map = map::map_view(&file, path, &header, Access::Write)?;
        // The appender opens the file by its temporary name; its syncs are
        // the manifest's, under the name it will have.
        let journal = load_journal(&file, temp_path, &header, Access::Write)?
            .map(|journal| journal.at_path(path));
        let mut manifest = Manifest {
            path: path.to_path_buf(),
            file,
            header,
            header_seq: 0,
            map,
            pending_undo: Vec::new(),
            deferred: HashMap::new(),
            journal,
        };
        manifest.header.map_crc32c = Some(manifest.map_crc());
        // Both slots valid from the start, synced once: nobody sees the
        // file before it is renamed into place.
        manifest.write_header()?;
        manifest.store_header()?;
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
            if length >= 8 && !header::starts_with_magic(&file) {
                return Err(header::not_a_manifest(path));
            }
            return Err(Error::usage(format!(
                "manifest {display} is truncated ({length} bytes; a manifest has at least {MAP_OFFSET}); it cannot be used"
            )));
        }
        let (header, header_seq) = header::read_header(&file, path)?;
        if header.format_version != MANIFEST_VERSION
            && header.format_version != header::MANIFEST_VERSION_1
        {
            return Err(Error::usage(format!(
                "manifest {display} has format version {}; this blockstamp reads versions 1 and {MANIFEST_VERSION}",
                header.format_version
            )));
        }
        header::validate_header(&header, path)?;
        if length < header.undo_offset {
            return Err(Error::usage(format!(
                "manifest {display} is truncated ({length} bytes, its header says at least {}); it cannot be used",
                header.undo_offset
            )));
        }
        if access == Access::Write {
            reserve(&file, path, &header)?;
        }
        let map = map::map_view(&file, path, &header, access)?;
        let journal = load_journal(&file, path, &header, access)?;
        let mut manifest = Manifest {
            path: path.to_path_buf(),
            file,
            header,
            header_seq,
            map,
            pending_undo: Vec::new(),
            deferred: HashMap::new(),
            journal,
        };
        if manifest.header.format_version == header::MANIFEST_VERSION_1 {
            // Version 1 counted generations to 32767 in the bits that now
            // hold the kind: such a manifest reads the same only while no
            // block was written more than 8191 times.
            if manifest.has_wide_generations() {
                return Err(Error::usage(format!(
                    "manifest {display} is format version 1 and has a block written more than 8191 times; verify it with the blockstamp that wrote it"
                )));
            }
            if access == Access::Write {
                manifest.header.format_version = MANIFEST_VERSION;
            }
        }
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
        // The map is durable before anything says it is complete: a power
        // cut in between leaves the manifest being written, its journal
        // telling verify what may be missing.
        self.flush_map()?;
        if let Some(journal) = &mut self.journal {
            // Every write the map records was flushed: nothing is pending.
            journal
                .store_all_released(&self.file)
                .map_err(|e| Error::run(format!("cannot write manifest journal: {e}")))?;
        }
        self.header.map_crc32c = Some(self.map_crc());
        self.header.state = ManifestState::Clean;
        // One sync for the journal's head and the header.
        self.store_header()?;
        if let Some(journal) = &mut self.journal {
            journal.head_synced();
        }
        Ok(())
    }

    fn io_error(&self, what: &str, e: io::Error) -> Error {
        Error::run(format!(
            "cannot {what} manifest {}: {e}",
            self.path.display()
        ))
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

    /// Wait until the intents before journal `position` are durable; true
    /// when that had to wait (the journal's syncs fell behind).
    pub fn journal_wait(&mut self, position: u64) -> Result<bool> {
        let Some(journal) = &mut self.journal else {
            return Ok(false);
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
        if self.journal.is_none() {
            return Ok(());
        }
        // Released entries no longer cover their blocks after a crash: the
        // map must hold their generations first, durably. The journal syncs
        // the manifest before it stores the new head (on its own thread,
        // when it has one): were the control slot to reach the disk before
        // the map's dirty pages, a power cut would leave the map behind the
        // released writes (a false finding).
        self.persist_undo()?;
        let Some(journal) = &mut self.journal else {
            return Ok(());
        };
        journal
            .release(&self.file, position)
            .map_err(|e| self.journal_error(e))
    }

    /// Pending operations per block (see [`Pending`]).
    pub fn pending_writes(&self) -> Result<HashMap<u64, Pending>> {
        let mut pending: HashMap<u64, Pending> = HashMap::new();
        let Some(journal) = &self.journal else {
            return Ok(pending);
        };
        let entries = journal
            .pending(&self.file)
            .map_err(|e| self.io_error("read journal of", e))?;
        for (block, value) in entries {
            if block >= self.header.block_count {
                continue;
            }
            let one = Pending::of_intent(value);
            pending
                .entry(block)
                .and_modify(|p| p.merge(one))
                .or_insert(one);
        }
        Ok(pending)
    }
}

/// What a block's operations pending at a crash allow it to hold: in each
/// unit the target writes atomically, any generation from the one before
/// `oldest` (see [`journal::generation_before_pending`]) up to `newest`,
/// and, with `zeros`, zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The oldest pending generation (0: the block's first write).
    pub oldest: u32,
    /// The newest generation the block may hold.
    pub newest: u32,
    /// A zeroing or discard is pending, or the block may have read zeros
    /// before its oldest pending operation.
    pub zeros: bool,
}

impl Pending {
    /// One journal intent: its value, with [`journal::BEFORE_ZEROS`].
    pub fn of_intent(value: u32) -> Pending {
        let state = BlockState::from_value(value & VALUE_MASK);
        let before_zeros = value & journal::BEFORE_ZEROS != 0;
        match state.kind {
            BlockKind::Data => Pending {
                oldest: state.generation,
                newest: state.generation,
                zeros: before_zeros,
            },
            // A zeroing or discard keeps the generation: the block held
            // it before, and may still (a discard) or read zeros.
            _ => Pending {
                oldest: next_generation(state.generation),
                newest: state.generation,
                zeros: true,
            },
        }
    }

    /// Both `self` and `other` pending on one block.
    pub fn merge(&mut self, other: Pending) {
        if compare_generations(other.oldest, self.oldest).is_lt() {
            self.oldest = other.oldest;
        }
        if compare_generations(other.newest, self.newest).is_gt() {
            self.newest = other.newest;
        }
        self.zeros |= other.zeros;
    }
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
        .map(|journal| Some(journal.with_appender(appender, path)))
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
    // A lock held only for a moment is waited for: a process another
    // thread of the caller is starting inherits the descriptor until its
    // exec closes it, and holds the lock as long.
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match flock(file, operation) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(_) => {
                return Err(Error::run(format!(
                    "manifest {} is in use by another blockstamp process; wait for it to finish",
                    path.display()
                )));
            }
        }
    }
}

/// How long a manifest held by someone else is waited for before saying so.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

pub fn unix_now_s() -> u64 {
    crate::clock::Clock::unix_now_s(&crate::clock::SystemClock)
}

/// Where a new manifest is built before it is renamed to `path`: the same
/// directory (a rename cannot cross filesystems), a name of this process.
fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "manifest".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Move a complete new manifest into place, never over an existing file,
/// and make the rename durable.
fn publish(temp_path: &Path, path: &Path) -> Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    let exists = |e: &dyn std::fmt::Display| {
        Error::run(format!("cannot create manifest {}: {e}", path.display()))
    };
    match renameat_with(CWD, temp_path, CWD, path, RenameFlags::NOREPLACE) {
        Ok(()) => {}
        // A filesystem without RENAME_NOREPLACE: a hard link cannot replace
        // a file either.
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
            std::fs::hard_link(temp_path, path).map_err(|e| exists(&e))?;
            let _ = std::fs::remove_file(temp_path);
        }
        Err(e) => return Err(exists(&io::Error::from(e))),
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_point(path);
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| {
            Error::run(format!(
                "cannot sync directory {} of manifest {}: {e}",
                parent.display(),
                path.display()
            ))
        })
}

/// Whether the file has a hole before `end` (bytes that have no storage yet).
fn has_hole_before(file: &File, end: u64) -> bool {
    match rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(0)) {
        Ok(hole) => hole < end,
        // No SEEK_HOLE: assume the worst.
        Err(_) => true,
    }
}

/// Give every byte of the manifest up to its undo log storage, so a store
/// through the map never faults for want of space. A full filesystem is a
/// fault (exit 3).
fn reserve(file: &File, path: &Path, header: &ManifestHeader) -> Result<()> {
    if !has_hole_before(file, header.undo_offset) {
        return Ok(());
    }
    rustix::fs::fallocate(
        file,
        rustix::fs::FallocateFlags::empty(),
        0,
        header.undo_offset,
    )
    .map_err(|e| {
        Error::run(format!(
            "cannot reserve {} bytes for manifest {}: {}",
            header.undo_offset,
            path.display(),
            errno_text(e)
        ))
    })
}

/// An errno as words, without the "(os error N)" std appends.
fn errno_text(e: rustix::io::Errno) -> String {
    let text = io::Error::from(e).to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

type SyncObserver = Box<dyn Fn(&Path) + Send + Sync>;

static SYNC_OBSERVER: std::sync::RwLock<Option<SyncObserver>> = std::sync::RwLock::new(None);

/// Have `observer` called with the manifest's path just before each sync
/// of a manifest (header store, map flush, file sync, rename): the points
/// between which a power cut may leave any mix of the pages written.
/// For the crash tests; `None` removes it.
#[doc(hidden)]
pub fn observe_syncs(observer: Option<SyncObserver>) {
    if let Ok(mut slot) = SYNC_OBSERVER.write() {
        *slot = observer;
    }
}

fn sync_point(path: &Path) {
    if let Ok(slot) = SYNC_OBSERVER.read()
        && let Some(observer) = slot.as_ref()
    {
        observer(path);
    }
    slow_sync_stand_in();
}

/// A measurement stand-in, off unless `BLOCKSTAMP_TEST_MANIFEST_SYNC_MS`
/// is set: every sync of a manifest (and every synced journal append)
/// sleeps that many milliseconds first, as on a disk whose flushes are
/// slow (a VM disk with a host cache, a consumer SSD: ~50 ms). It models
/// the latency of a flush only, not the stall a flush causes to other IO
/// on the same disk. The journal's cost is measured with it (README,
/// "Measuring"); nothing else reads it.
#[doc(hidden)]
pub fn slow_sync_stand_in() {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    let delay = DELAY.get_or_init(|| {
        std::env::var("BLOCKSTAMP_TEST_MANIFEST_SYNC_MS")
            .ok()
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map(std::time::Duration::from_millis)
    });
    if let Some(delay) = delay {
        std::thread::sleep(*delay);
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A small manifest for the unit tests of each region (and of verify).

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

    pub(crate) fn new_manifest(dir: &Path) -> Manifest {
        new_manifest_of(dir, 256)
    }

    /// A manifest of `block_count` 4 KiB blocks, at `dir`/m.
    pub(crate) fn new_manifest_of(dir: &Path, block_count: u64) -> Manifest {
        Manifest::create(
            &dir.join("m"),
            NewManifest {
                run_id: 7,
                seed: 1,
                block_size: 4096,
                random_bytes: 464,
                dedup_permille: 0,
                target: record(block_count * 4096),
                journal_bytes: 0,
            },
        )
        .unwrap()
    }
}
