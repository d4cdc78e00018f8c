//! The write-ahead journal: a bounded ring of write intents in the manifest.
//!
//! Before a write is submitted, an entry (block, generation) for every block
//! it covers is made durable here. An entry stays *pending* until the write
//! is known durable on the target (completed with FUA, or completed before a
//! flush that completed); then the ring's head moves past it. After a crash,
//! the entries from the head on are exactly the writes whose outcome the
//! storage was never asked to promise: verify accepts the old or the new
//! generation for their blocks, and reports everything else as usual.
//!
//! Layout within the journal region:
//!
//! ```text
//! 0      control slot A (head, sequence, CRC32C)
//! 4 KiB  control slot B
//! 8 KiB  entries: u64 each, bit 63 valid, bit 62 lap parity, bit 61
//!        first write, bit 60 before zeros, bits 15..=59 block,
//!        bits 0..=14 value (kind << 13 | generation)
//! ```
//!
//! Generations wrap (8191 is followed by 1), so a pending generation 1 has
//! two possible predecessors: 0 (the block was never written) or 8191. The
//! first-write bit tells them apart; see [`generation_before_pending`].
//!
//! Entries carry the parity of the lap they were written in, so a scan from
//! the head stops at the first entry left over from the previous lap. The
//! control slot is synced before the ring could wrap over the last durable
//! head, so a scan never starts behind entries a newer lap overwrote.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::VALUE_MASK;

const CONTROL_MAGIC: &[u8; 8] = b"BSJOURN1";
const CONTROL_SLOT: u64 = 4096;
/// Bytes before the first entry.
pub const ENTRIES_OFFSET: u64 = 2 * CONTROL_SLOT;
const VALID: u64 = 1 << 63;
const PARITY: u64 = 1 << 62;
const FIRST_WRITE_BIT: u64 = 1 << 61;
const BEFORE_ZEROS_BIT: u64 = 1 << 60;
const BLOCK_MASK: u64 = (1 << 45) - 1;

/// Or'ed into an intent's generation (which is then 1) when the block was
/// never written before: after a crash, what the block held before it is
/// not a stamp of the run. [`Journal::pending`] reports such an intent as
/// generation 0 followed by 1, so that the oldest pending generation of the
/// block is 0.
pub const FIRST_WRITE: u32 = 1 << 15;

/// Or'ed into an intent's value when what the block held before it may
/// read as zeros (it was zeroed or discarded): after a crash, zeros in a
/// unit of the block are then its old contents, not a loss.
pub const BEFORE_ZEROS: u32 = 1 << 16;

/// The generation a block held before its oldest pending write, `oldest`
/// as [`Journal::pending`] reports it (0: that write was the block's first).
/// `recorded` is the block's generation in the manifest's map; 0 there also
/// means never written, for journals from before the first-write bit.
/// Otherwise the wrapped predecessor: before a pending 1 came 8191.
pub fn generation_before_pending(oldest: u32, recorded: u32) -> u32 {
    match oldest {
        0 => 0,
        1 if recorded == 0 => 0,
        1 => crate::manifest::GENERATION_MAX,
        _ => oldest - 1,
    }
}

/// Journal size for a target of `block_count` blocks: room for as many
/// intents as blocks, between 4 Ki and 1 Mi entries (8 MiB).
pub fn journal_bytes_for(block_count: u64) -> u64 {
    ENTRIES_OFFSET + block_count.clamp(4096, 1 << 20) * 8
}

/// An open journal ring.
#[derive(Debug)]
pub struct Journal {
    offset: u64,
    capacity: u64,
    /// Absolute position of the oldest pending entry.
    head: u64,
    /// Head as last made durable in a control slot.
    durable_head: u64,
    /// Absolute position of the next entry.
    tail: u64,
    /// Sequence number of the last control slot written (shared with the
    /// background thread, which writes the slots of releases).
    control_seq: Arc<AtomicU64>,
    /// The manifest opened O_DSYNC: each append is durable when written,
    /// and syncs only its own range (fdatasync would also write back every
    /// dirty page of the memory-mapped generation map).
    appender: Option<File>,
    /// The manifest's path, for its sync points.
    path: PathBuf,
    /// Entries before this position are known durable.
    durable_tail: u64,
    /// The thread making appends durable, once there has been one.
    background: Option<Background>,
}

/// Synced appends and releases made on a thread of their own. A synced
/// write sleeps until the manifest's filesystem has committed it; were the
/// IO thread to sleep there, the scheduler tends to wake it on the CPU that
/// takes the target's completion interrupts and leave it there, which costs
/// a fifth of the IOPS on a small VM. On a disk whose flushes take tens of
/// milliseconds, a sync on the IO thread at every release would cost more
/// than the writes. The writer logs a batch of intents ahead and only waits
/// for them (rarely: they had a whole batch of writes to finish) before the
/// first write they describe; it never waits for a release.
#[derive(Debug)]
struct Background {
    jobs: Option<Sender<Job>>,
    /// What each job did, in order (behind a mutex only so that a manifest
    /// can be shared by checking threads).
    done: Mutex<Receiver<io::Result<Option<u64>>>>,
    thread: Option<JoinHandle<()>>,
    /// End position of the last append handed to the thread.
    issued: u64,
    /// Jobs handed to the thread, and jobs it reported done.
    jobs_issued: u64,
    jobs_done: u64,
    /// The head the next release job stores (the newest asked for) ...
    wanted_head: Arc<AtomicU64>,
    /// ... and whether such a job is queued: releases asked for while one
    /// waits share it (one sync for many, when they come faster).
    release_queued: Arc<AtomicBool>,
    /// An append or release that failed: every later wait fails with it.
    failed: Option<String>,
}

/// Work for the background thread.
#[derive(Debug)]
enum Job {
    /// Entry bytes at manifest offsets, and the position after them.
    Append {
        writes: Vec<(u64, Vec<u8>)>,
        end: u64,
    },
    /// Sync the manifest (its map holds the generations of every write
    /// before the wanted head), then store the wanted head in a control
    /// slot, unsynced: a stale head only makes verify accept more.
    Release,
}

impl Background {
    fn start(journal: &Journal, appender: &File, file: &File) -> io::Result<Background> {
        let appender = appender.try_clone()?;
        let file = file.try_clone()?;
        let path = journal.path.clone();
        let offset = journal.offset;
        let control_seq = Arc::clone(&journal.control_seq);
        let wanted_head = Arc::new(AtomicU64::new(journal.head));
        let release_queued = Arc::new(AtomicBool::new(false));
        let (wanted, queued) = (Arc::clone(&wanted_head), Arc::clone(&release_queued));
        let (jobs, job_queue) = channel::<Job>();
        let (report, done) = channel();
        let thread = std::thread::Builder::new()
            .name("bs-journal".to_string())
            .spawn(move || {
                for job in job_queue {
                    let result = match job {
                        Job::Append { writes, end } => {
                            super::slow_sync_stand_in();
                            writes
                                .iter()
                                .try_for_each(|(at, bytes)| appender.write_all_at(bytes, *at))
                                .map(|()| Some(end))
                        }
                        Job::Release => {
                            // Cleared before the head is read: a release
                            // asked for after the read queues a job again.
                            queued.store(false, Ordering::SeqCst);
                            let head = wanted.load(Ordering::SeqCst);
                            super::sync_point(&path);
                            file.sync_data()
                                .and_then(|()| write_control(&file, offset, &control_seq, head))
                                .map(|()| None)
                        }
                    };
                    if report.send(result).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Background {
            jobs: Some(jobs),
            done: Mutex::new(done),
            thread: Some(thread),
            issued: journal.tail,
            jobs_issued: 0,
            jobs_done: 0,
            wanted_head,
            release_queued,
            failed: None,
        })
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            return Err(io::Error::other("the journal appending thread stopped"));
        }
        self.jobs_issued += 1;
        Ok(())
    }

    /// Wait for the next job's report; the end of an append it made.
    fn next_done(&mut self) -> io::Result<Option<u64>> {
        if let Some(failed) = &self.failed {
            return Err(io::Error::other(failed.clone()));
        }
        let received = self
            .done
            .get_mut()
            .map_err(|_| io::Error::other("journal thread state poisoned"))?
            .recv();
        self.jobs_done += 1;
        match received {
            Ok(Ok(end)) => Ok(end),
            Ok(Err(error)) => {
                self.failed = Some(error.to_string());
                Err(error)
            }
            Err(_) => {
                let stopped = "the journal appending thread stopped".to_string();
                self.failed = Some(stopped.clone());
                Err(io::Error::other(stopped))
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Let the jobs handed over finish: none is abandoned half-way.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Store `head` in the next control slot (not synced).
fn write_control(file: &File, offset: u64, control_seq: &AtomicU64, head: u64) -> io::Result<()> {
    let seq = control_seq.fetch_add(1, Ordering::SeqCst) + 1;
    let mut control = [0u8; 28];
    control[..8].copy_from_slice(CONTROL_MAGIC);
    control[8..16].copy_from_slice(&seq.to_le_bytes());
    control[16..24].copy_from_slice(&head.to_le_bytes());
    let crc = crc32c::crc32c(&control[8..24]);
    control[24..28].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&control, offset + (seq % 2) * CONTROL_SLOT)
}

impl Journal {
    /// Read the control slots and find the end of the pending entries.
    pub fn load(file: &File, offset: u64, bytes: u64) -> io::Result<Journal> {
        let capacity = bytes.saturating_sub(ENTRIES_OFFSET) / 8;
        let mut best: Option<(u64, u64)> = None;
        for slot in 0..2 {
            let mut control = [0u8; 28];
            if file
                .read_exact_at(&mut control, offset + slot * CONTROL_SLOT)
                .is_err()
            {
                continue;
            }
            if &control[..8] != CONTROL_MAGIC {
                continue;
            }
            let seq = u64::from_le_bytes(control[8..16].try_into().expect("8 bytes"));
            let head = u64::from_le_bytes(control[16..24].try_into().expect("8 bytes"));
            let crc = u32::from_le_bytes(control[24..28].try_into().expect("4 bytes"));
            if crc32c::crc32c(&control[8..24]) == crc && best.is_none_or(|(s, _)| seq > s) {
                best = Some((seq, head));
            }
        }
        let (control_seq, head) = best.unwrap_or((0, 0));
        let mut journal = Journal {
            offset,
            capacity,
            head,
            durable_head: head,
            tail: head,
            control_seq: Arc::new(AtomicU64::new(control_seq)),
            appender: None,
            path: PathBuf::new(),
            durable_tail: head,
            background: None,
        };
        if capacity > 0 {
            journal.tail = head + journal.scan(file, head)?.len() as u64;
            journal.durable_tail = journal.tail;
        }
        Ok(journal)
    }

    /// Append through `appender` (an O_DSYNC descriptor of the manifest
    /// at `path`), and release in the background.
    pub fn with_appender(mut self, appender: Option<File>, path: &Path) -> Journal {
        self.appender = appender;
        self.path = path.to_path_buf();
        self
    }

    /// Name the manifest's syncs with `path`.
    pub fn at_path(mut self, path: &Path) -> Journal {
        self.path = path.to_path_buf();
        self
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Room for `count` more entries without waiting for a release.
    pub fn has_room(&self, count: u64) -> bool {
        self.tail + count <= self.head + self.capacity
    }

    /// The pending entries, as (block, generation); a block's first write
    /// as (block, 0) then (block, 1) (see [`FIRST_WRITE`]).
    pub fn pending(&self, file: &File) -> io::Result<Vec<(u64, u32)>> {
        if self.capacity == 0 {
            return Ok(Vec::new());
        }
        let mut entries = self.scan(file, self.head)?;
        entries.truncate((self.tail - self.head) as usize);
        Ok(entries
            .into_iter()
            .flat_map(|(block, generation)| {
                let first = generation & FIRST_WRITE != 0;
                let before = first.then_some((block, 0));
                before
                    .into_iter()
                    .chain([(block, generation & (VALUE_MASK | BEFORE_ZEROS))])
            })
            .collect())
    }

    fn scan(&self, file: &File, from: u64) -> io::Result<Vec<(u64, u32)>> {
        let mut found = Vec::new();
        let mut position = from;
        let mut chunk = vec![0u8; 64 * 1024];
        'scan: while position < from + self.capacity {
            let index = position % self.capacity;
            let run = (self.capacity - index)
                .min(chunk.len() as u64 / 8)
                .min(from + self.capacity - position);
            let bytes = &mut chunk[..run as usize * 8];
            file.read_exact_at(bytes, self.offset + ENTRIES_OFFSET + index * 8)?;
            for word in bytes.chunks_exact(8) {
                let entry = u64::from_le_bytes(word.try_into().expect("8 bytes"));
                if entry & VALID == 0
                    || (entry & PARITY != 0) != lap_parity(position, self.capacity)
                {
                    break 'scan;
                }
                let mut flags = 0;
                if entry & FIRST_WRITE_BIT != 0 {
                    flags |= FIRST_WRITE;
                }
                if entry & BEFORE_ZEROS_BIT != 0 {
                    flags |= BEFORE_ZEROS;
                }
                found.push((
                    (entry >> 15) & BLOCK_MASK,
                    (entry as u32 & VALUE_MASK) | flags,
                ));
                position += 1;
            }
        }
        Ok(found)
    }

    /// Write entries at the tail (not synced: call `sync` on the file before
    /// the writes they describe are submitted).
    pub fn append(&mut self, file: &File, entries: &[(u64, u32)]) -> io::Result<()> {
        self.settle()?;
        let writes = self.encode(file, entries)?;
        let writer = self.appender.as_ref().unwrap_or(file);
        if self.appender.is_some() {
            super::slow_sync_stand_in();
        }
        for (offset, bytes) in &writes {
            writer.write_all_at(bytes, *offset)?;
        }
        self.tail += entries.len() as u64;
        if self.appender.is_some() {
            self.durable_tail = self.tail;
        }
        Ok(())
    }

    /// Append entries at the tail and make them durable, on the appending
    /// thread when the journal has an O_DSYNC descriptor (else here, with a
    /// sync of `file`). Returns the position after them: call
    /// [`Journal::wait_durable`] with it before submitting the writes they
    /// describe.
    pub fn append_in_background(&mut self, file: &File, entries: &[(u64, u32)]) -> io::Result<u64> {
        let Some(appender) = &self.appender else {
            self.append(file, entries)?;
            super::slow_sync_stand_in();
            file.sync_data()?;
            self.durable_tail = self.tail;
            return Ok(self.tail);
        };
        if self.background.is_none() {
            self.background = Some(Background::start(self, appender, file)?);
        }
        let writes = self.encode(file, entries)?;
        let end = self.tail + entries.len() as u64;
        let background = self.background.as_mut().expect("started above");
        background.send(Job::Append { writes, end })?;
        background.issued = end;
        self.tail = end;
        Ok(end)
    }

    /// Wait until every entry before `position` is durable.
    pub fn wait_durable(&mut self, position: u64) -> io::Result<bool> {
        let waited = self.durable_tail < position;
        while self.durable_tail < position {
            let Some(background) = self.background.as_mut().filter(|b| position <= b.issued) else {
                return Err(io::Error::other(
                    "journal position beyond what was appended",
                ));
            };
            if let Some(end) = background.next_done()? {
                self.durable_tail = end;
            }
        }
        Ok(waited)
    }

    /// Wait for every job handed to the background thread.
    fn settle(&mut self) -> io::Result<()> {
        let Some(background) = self.background.as_mut() else {
            return Ok(());
        };
        while background.jobs_done < background.jobs_issued {
            if let Some(end) = background.next_done()? {
                self.durable_tail = end;
            }
        }
        background
            .failed
            .as_ref()
            .map_or(Ok(()), |failed| Err(io::Error::other(failed.clone())))
    }

    /// The entry bytes for `entries` at the tail, in one run per lap, after
    /// making sure (synchronously, once per lap) that writing them leaves
    /// a scan from the durable head intact.
    fn encode(&mut self, file: &File, entries: &[(u64, u32)]) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let count = entries.len() as u64;
        if !self.has_room(count) {
            return Err(io::Error::other(
                "journal full: release entries before appending",
            ));
        }
        if self.tail + count > self.durable_head + self.capacity {
            // The new entries would overwrite ones a scan from the durable
            // head expects to find: make the current head durable first.
            // Settled, the map is durable up to the head (a release syncs
            // it before storing the head).
            self.settle()?;
            self.store_control(file)?;
            super::sync_point(&self.path);
            file.sync_data()?;
            self.durable_head = self.head;
        }
        let mut writes = Vec::new();
        let mut bytes = Vec::with_capacity(entries.len() * 8);
        let mut run_start = self.tail;
        for (position, &(block, generation)) in (self.tail..).zip(entries) {
            if position.is_multiple_of(self.capacity) && position != run_start {
                writes.push((self.entry_offset(run_start), std::mem::take(&mut bytes)));
                run_start = position;
            }
            let parity = if lap_parity(position, self.capacity) {
                PARITY
            } else {
                0
            };
            let mut flags = 0;
            if generation & FIRST_WRITE != 0 {
                flags |= FIRST_WRITE_BIT;
            }
            if generation & BEFORE_ZEROS != 0 {
                flags |= BEFORE_ZEROS_BIT;
            }
            let entry = VALID
                | parity
                | flags
                | (block & BLOCK_MASK) << 15
                | (generation & VALUE_MASK) as u64;
            bytes.extend_from_slice(&entry.to_le_bytes());
        }
        if !bytes.is_empty() {
            writes.push((self.entry_offset(run_start), bytes));
        }
        Ok(writes)
    }

    fn entry_offset(&self, position: u64) -> u64 {
        self.offset + ENTRIES_OFFSET + (position % self.capacity) * 8
    }

    /// Everything before `position` is durable on the target, and the
    /// generations of those writes are in the manifest's map. The map is
    /// synced before the head moves past them on storage (were the control
    /// slot to reach the disk first, a power cut would leave the map behind
    /// released writes: false findings); with a background thread, both
    /// happen there, and this returns at once.
    pub fn release(&mut self, file: &File, position: u64) -> io::Result<()> {
        debug_assert!(position <= self.tail);
        if position <= self.head {
            return Ok(());
        }
        self.head = position;
        if let Some(background) = self.background.as_mut() {
            background.wanted_head.fetch_max(position, Ordering::SeqCst);
            if !background.release_queued.swap(true, Ordering::SeqCst) {
                background.send(Job::Release)?;
            }
            return Ok(());
        }
        super::sync_point(&self.path);
        file.sync_data()?;
        // Not synced: a stale durable head only makes a later verify
        // accept more, never less.
        self.store_control(file)
    }

    fn store_control(&mut self, file: &File) -> io::Result<()> {
        write_control(file, self.offset, &self.control_seq, self.head)
    }

    /// On a clean close, once the map is durable: release every intent and
    /// write the head, left for the caller's next sync (the header's) to
    /// make durable; then call [`Journal::head_synced`].
    pub fn store_all_released(&mut self, file: &File) -> io::Result<()> {
        self.settle()?;
        self.head = self.tail;
        self.store_control(file)
    }

    /// The head written by [`Journal::store_all_released`] is durable.
    pub fn head_synced(&mut self) {
        self.durable_head = self.head;
    }
}

fn lap_parity(position: u64, capacity: u64) -> bool {
    (position / capacity) % 2 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_file(capacity: u64) -> (tempfile::NamedTempFile, u64) {
        let file = tempfile::NamedTempFile::new().unwrap();
        let bytes = ENTRIES_OFFSET + capacity * 8;
        file.as_file().set_len(100 + bytes).unwrap();
        (file, bytes)
    }

    /// The journal in `file`, appending through an O_DSYNC descriptor of
    /// its own on its background thread, as a manifest's does.
    fn with_its_thread(file: &tempfile::NamedTempFile, bytes: u64) -> Journal {
        let appender = std::fs::OpenOptions::new()
            .write(true)
            .open(file.path())
            .unwrap();
        Journal::load(file.as_file(), 100, bytes)
            .unwrap()
            .with_appender(Some(appender), file.path())
    }

    #[test]
    fn pending_entries_survive_reload_and_releases_drop_them() {
        let (file, bytes) = journal_file(16);
        let f = file.as_file();
        let mut journal = Journal::load(f, 100, bytes).unwrap();
        journal.append(f, &[(1, 1), (2, 1), (1, 2)]).unwrap();
        assert_eq!(
            Journal::load(f, 100, bytes).unwrap().pending(f).unwrap(),
            vec![(1, 1), (2, 1), (1, 2)]
        );
        journal.release(f, 2).unwrap();
        let reloaded = Journal::load(f, 100, bytes).unwrap();
        assert_eq!(reloaded.pending(f).unwrap(), vec![(1, 2)]);
    }

    #[test]
    fn the_ring_wraps_without_resurrecting_old_laps() {
        let (file, bytes) = journal_file(8);
        let f = file.as_file();
        let mut journal = Journal::load(f, 100, bytes).unwrap();
        let mut expected_head = 0;
        for round in 0..10u64 {
            let entries: Vec<(u64, u32)> =
                (0..5).map(|i| (round * 10 + i, 1 + round as u32)).collect();
            journal.append(f, &entries).unwrap();
            let reloaded = Journal::load(f, 100, bytes).unwrap();
            assert_eq!(reloaded.pending(f).unwrap(), entries, "round {round}");
            expected_head += 5;
            journal.release(f, expected_head).unwrap();
            assert!(
                Journal::load(f, 100, bytes)
                    .unwrap()
                    .pending(f)
                    .unwrap()
                    .is_empty()
            );
        }
    }

    #[test]
    fn background_appends_are_on_disk_once_waited_for_and_keep_their_order() {
        let (file, bytes) = journal_file(8);
        let f = file.as_file();
        let mut journal = with_its_thread(&file, bytes);
        let mut expected = Vec::new();
        let mut ends = Vec::new();
        // Three laps' worth, released as they go, so the ring wraps.
        for round in 0..6u64 {
            let entries: Vec<(u64, u32)> = (0..3).map(|i| (round * 10 + i, 1)).collect();
            ends.push(journal.append_in_background(f, &entries).unwrap());
            expected.extend(entries);
            if round % 2 == 1 {
                let end = ends[ends.len() - 1];
                journal.wait_durable(end).unwrap();
                assert_eq!(
                    Journal::load(f, 100, bytes).unwrap().pending(f).unwrap(),
                    expected
                );
                journal.release(f, end).unwrap();
                expected.clear();
            }
        }
        assert_eq!(ends, vec![3, 6, 9, 12, 15, 18]);
        assert!(
            journal.wait_durable(19).is_err(),
            "nothing was appended there"
        );
    }

    #[test]
    fn releases_made_in_the_background_store_the_newest_head_once_settled() {
        let (file, bytes) = journal_file(16);
        let f = file.as_file();
        let mut journal = with_its_thread(&file, bytes);
        let end = journal
            .append_in_background(f, &[(1, 1), (2, 1), (3, 1), (4, 1)])
            .unwrap();
        journal.wait_durable(end).unwrap();
        // Asked for in a row: the head moves at once in memory, and on
        // storage once the thread has run them, to the newest asked for.
        journal.release(f, 1).unwrap();
        journal.release(f, 3).unwrap();
        assert_eq!(journal.head(), 3);
        assert!(journal.has_room(15) && !journal.has_room(16));
        journal.settle().unwrap();
        let reloaded = Journal::load(f, 100, bytes).unwrap();
        assert_eq!(reloaded.head(), 3);
        assert_eq!(reloaded.pending(f).unwrap(), vec![(4, 1)]);
        // A release before a later append is on storage when it is.
        journal.release(f, 4).unwrap();
        let end = journal.append_in_background(f, &[(5, 2)]).unwrap();
        journal.wait_durable(end).unwrap();
        let reloaded = Journal::load(f, 100, bytes).unwrap();
        assert_eq!(reloaded.pending(f).unwrap(), vec![(5, 2)]);
    }

    #[test]
    fn a_clean_close_releases_every_intent_and_waits_for_the_thread_first() {
        let (file, bytes) = journal_file(16);
        let f = file.as_file();
        let mut journal = with_its_thread(&file, bytes);
        let end = journal
            .append_in_background(f, &[(1, 1), (2, 1), (3, 1)])
            .unwrap();
        journal.wait_durable(end).unwrap();
        // A release still queued on the thread must not overwrite the head
        // the close stores.
        journal.release(f, 1).unwrap();
        journal.store_all_released(f).unwrap();
        journal.head_synced();
        assert_eq!(journal.head(), journal.tail());
        let reloaded = Journal::load(f, 100, bytes).unwrap();
        assert_eq!(reloaded.head(), 3);
        assert_eq!(reloaded.pending(f).unwrap(), vec![]);
    }

    #[test]
    fn without_an_appender_a_background_append_is_synced_at_once() {
        let (file, bytes) = journal_file(8);
        let f = file.as_file();
        let mut journal = Journal::load(f, 100, bytes).unwrap();
        let end = journal.append_in_background(f, &[(7, 2)]).unwrap();
        journal.wait_durable(end).unwrap();
        assert_eq!(
            Journal::load(f, 100, bytes).unwrap().pending(f).unwrap(),
            vec![(7, 2)]
        );
    }

    #[test]
    fn a_first_write_is_reported_after_a_generation_0() {
        let (file, bytes) = journal_file(8);
        let f = file.as_file();
        let mut journal = Journal::load(f, 100, bytes).unwrap();
        let wrapped = (9, 1);
        journal
            .append(f, &[(3, 1 | FIRST_WRITE), (3, 2), wrapped])
            .unwrap();
        let reloaded = Journal::load(f, 100, bytes).unwrap();
        assert_eq!(reloaded.tail(), 3, "the flag takes no entry of its own");
        assert_eq!(
            reloaded.pending(f).unwrap(),
            vec![(3, 0), (3, 1), (3, 2), (9, 1)]
        );
    }

    #[test]
    fn before_a_pending_1_came_0_on_a_first_write_and_32767_after_a_wrap() {
        use crate::manifest::GENERATION_MAX;
        // Oldest 0: the journal said first write.
        assert_eq!(generation_before_pending(0, 0), 0);
        assert_eq!(generation_before_pending(0, 1), 0);
        // Oldest 1 without the flag: the block wrapped ...
        assert_eq!(generation_before_pending(1, GENERATION_MAX), GENERATION_MAX);
        assert_eq!(generation_before_pending(1, 1), GENERATION_MAX);
        // ... unless the map never saw it written (an older journal).
        assert_eq!(generation_before_pending(1, 0), 0);
        assert_eq!(generation_before_pending(7, 7), 6);
    }

    #[test]
    fn a_full_ring_refuses_more() {
        let (file, bytes) = journal_file(4);
        let f = file.as_file();
        let mut journal = Journal::load(f, 100, bytes).unwrap();
        journal.append(f, &[(1, 1), (2, 1), (3, 1)]).unwrap();
        assert!(journal.append(f, &[(4, 1), (5, 1)]).is_err());
        journal.release(f, 2).unwrap();
        journal.append(f, &[(4, 1), (5, 1)]).unwrap();
        let reloaded = Journal::load(f, 100, bytes).unwrap();
        assert_eq!(reloaded.pending(f).unwrap(), vec![(3, 1), (4, 1), (5, 1)]);
    }
}
