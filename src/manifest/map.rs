//! The generation map: 2 bytes per block, memory-mapped from the manifest.
//!
//! Each entry holds a block's value, a 2-bit kind over a 13-bit generation
//! (see `generation::BlockState`; 0 = never written), and, in the top bit,
//! "written since the latest checkpoint". The map carries a CRC32C in
//! the header whenever the manifest is closed cleanly, so a damaged map is
//! caught before it can make a verify report wrong findings.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use memmap2::{Mmap, MmapMut, MmapOptions};

use super::checkpoint::undo_entry;
use super::generation::{BlockState, VALUE_MASK};
use super::header::{MAP_OFFSET, ManifestHeader, map_region_bytes};
use super::{Access, Manifest};
use crate::error::{Error, Result};

/// "Written since the latest checkpoint."
const DIRTY_BIT: u16 = 0x8000;

/// The generation bits of four little-endian entries read as one u64.
const GENERATIONS: u64 = 0x7fff_7fff_7fff_7fff;

pub(super) enum MapView {
    Read(Mmap),
    Write(MmapMut),
    /// Read into memory: the map has holes on a filesystem where a page
    /// fault on a hole needs space (tmpfs), and on a full one would kill
    /// the process with SIGBUS.
    Copied(Vec<u8>),
}

impl MapView {
    fn bytes(&self) -> &[u8] {
        match self {
            MapView::Read(map) => map,
            MapView::Write(map) => map,
            MapView::Copied(map) => map,
        }
    }
}

pub(super) fn map_view(
    file: &File,
    path: &Path,
    header: &ManifestHeader,
    access: Access,
) -> Result<MapView> {
    // At least one page: a mapping cannot be empty.
    let length = map_region_bytes(header.block_count).max(4096) as usize;
    if access == Access::Read
        && super::has_hole_before(file, MAP_OFFSET + length as u64)
        && read_fault_needs_space(file)
    {
        let mut bytes = vec![0u8; length];
        file.read_exact_at(&mut bytes, MAP_OFFSET)
            .map_err(|e| Error::run(format!("cannot read manifest {}: {e}", path.display())))?;
        return Ok(MapView::Copied(bytes));
    }
    let mut options = MmapOptions::new();
    options.offset(MAP_OFFSET).len(length);
    // SAFETY: the manifest file is locked (flock) against other blockstamp
    // processes for the life of the mapping; the mapped range lies inside
    // the file (checked against the header's offsets before mapping), and
    // has storage: a writer reserves it first, a reader copies a map with
    // holes instead, so no fault on it can need space (SIGBUS).
    let result = unsafe {
        match access {
            Access::Read => options.map(file).map(MapView::Read),
            Access::Write => options.map_mut(file).map(|map| {
                // The writer stores entries in its workload's order: read
                // ahead around each first touch would fill (and zero) the
                // whole map in the page cache for a run that writes 0.01%
                // of a 1 TiB target. Advice only: ignored where refused.
                let _ = map.advise(memmap2::Advice::Random);
                MapView::Write(map)
            }),
        }
    };
    result.map_err(|e| Error::run(format!("cannot map manifest {}: {e}", path.display())))
}

/// Whether a read fault on a hole of `file` takes space from its filesystem:
/// on tmpfs it allocates a page charged to the mount. Elsewhere a hole
/// (or an unwritten extent, which ext4 reports as one) reads as zeros from
/// the page cache and needs no space: mapping it is safe, and copying a
/// 512 MiB map of a 1 TiB target would cost a verify more than its reads.
fn read_fault_needs_space(file: &File) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    rustix::fs::fstatfs(file).map_or(true, |s| s.f_type == TMPFS_MAGIC)
}

/// Entries of `bytes` (2 each) that hold a generation, four at a time.
fn count_generations(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let mut count = 0u64;
    for word in &mut words {
        let entries = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        if entries & GENERATIONS != 0 {
            count += (0..4)
                .filter(|i| (entries >> (16 * i)) & 0x7fff != 0)
                .count() as u64;
        }
    }
    count
        + words
            .remainder()
            .chunks_exact(2)
            .filter(|e| u16::from_le_bytes([e[0], e[1]]) & !DIRTY_BIT != 0)
            .count() as u64
}

impl Manifest {
    /// The generation of `block`'s latest data write (0: never written);
    /// see [`Manifest::state`] for whether it still holds it.
    pub fn generation(&self, block: u64) -> u32 {
        self.state(block).generation
    }

    /// `block`'s expected state.
    pub fn state(&self, block: u64) -> BlockState {
        BlockState::from_value(self.value(block))
    }

    /// `block`'s map entry value (its state, see [`BlockState::value`]).
    pub fn value(&self, block: u64) -> u32 {
        (self.raw_entry(block) & !DIRTY_BIT) as u32
    }

    /// Whether any entry uses the bits version 1 gave generations above
    /// 8191 (version 2 keeps a block's kind there).
    pub(super) fn has_wide_generations(&self) -> bool {
        const KIND_BITS: u64 = 0x6000_6000_6000_6000;
        let bytes = self.map.bytes();
        self.entries_with_data(0..self.header.block_count)
            .into_iter()
            .any(|run| {
                let run = &bytes[run.start as usize * 2..run.end as usize * 2];
                let mut words = run.chunks_exact(8);
                let wide = words
                    .any(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")) & KIND_BITS != 0);
                wide || words
                    .remainder()
                    .chunks_exact(2)
                    .any(|e| u16::from_le_bytes([e[0], e[1]]) & 0x6000 != 0)
            })
    }

    fn raw_entry(&self, block: u64) -> u16 {
        if let Some(&entry) = self.deferred.get(&block) {
            return entry;
        }
        self.mapped_entry(block)
    }

    fn mapped_entry(&self, block: u64) -> u16 {
        let at = block as usize * 2;
        let bytes = self.map.bytes();
        u16::from_le_bytes([bytes[at], bytes[at + 1]])
    }

    fn map_bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.map {
            MapView::Write(map) => map,
            MapView::Read(_) | MapView::Copied(_) => {
                panic!("manifest opened read-only was written")
            }
        }
    }

    /// Record that `block` is now in `state`.
    pub fn set_state(&mut self, block: u64, state: BlockState) {
        self.set_generation(block, state.value());
    }

    /// Record that `block` now holds `value`: a generation of data, or
    /// any state's [`BlockState::value`].
    pub fn set_generation(&mut self, block: u64, value: u32) {
        debug_assert!(value <= VALUE_MASK);
        let old = self.raw_entry(block);
        let mut new = value as u16;
        if !self.header.checkpoints.is_empty() {
            new |= DIRTY_BIT;
            if old & DIRTY_BIT == 0 {
                // First change since the latest checkpoint: remember what
                // the checkpoint expects here, and keep the new entry out
                // of the map until that is durable (`persist_undo`).
                self.pending_undo
                    .push(undo_entry(block, (old & !DIRTY_BIT) as u32));
                self.deferred.insert(block, new);
                return;
            }
            if let Some(entry) = self.deferred.get_mut(&block) {
                *entry = new;
                return;
            }
        }
        self.store_entry(block, new);
    }

    fn store_entry(&mut self, block: u64, entry: u16) {
        let at = block as usize * 2;
        self.map_bytes_mut()[at..at + 2].copy_from_slice(&entry.to_le_bytes());
    }

    /// Move the deferred entries into the map (their undo entries are
    /// durable).
    pub(super) fn apply_deferred(&mut self) {
        let deferred = std::mem::take(&mut self.deferred);
        for (block, entry) in deferred {
            self.store_entry(block, entry);
        }
    }

    /// Blocks with a non-zero expected generation.
    pub fn count_written(&self) -> u64 {
        let mut mapped = 0u64;
        for run in self.entries_with_data(0..self.header.block_count) {
            mapped +=
                count_generations(&self.map.bytes()[run.start as usize * 2..run.end as usize * 2]);
        }
        let mut count = mapped;
        for (&block, &entry) in &self.deferred {
            let was = self.mapped_entry(block) & !DIRTY_BIT != 0;
            let is = entry & !DIRTY_BIT != 0;
            count = count + is as u64 - was as u64;
        }
        count
    }

    /// Clear the "written since the latest checkpoint" bits (a checkpoint is
    /// being taken). Only entries that have the bit are rewritten, so the
    /// pages touched are those of blocks written since the previous
    /// checkpoint.
    pub(super) fn clear_dirty_bits(&mut self) {
        let length = self.header.block_count as usize * 2;
        let map = self.map_bytes_mut();
        for entry in map[..length].chunks_exact_mut(2) {
            if entry[1] & 0x80 != 0 {
                entry[1] &= 0x7f;
            }
        }
    }

    /// Write the map's dirty pages to the file and wait for them.
    pub(super) fn flush_map(&self) -> Result<()> {
        if let MapView::Write(map) = &self.map {
            super::sync_point(&self.path);
            map.flush().map_err(|e| self.io_error("sync", e))?;
        }
        Ok(())
    }

    /// CRC32C of the map's entries. The runs the file keeps as holes are
    /// zeros: they are fed from a small buffer rather than read through
    /// the mapping, which would fault in (and zero) every page of it.
    pub(super) fn map_crc(&self) -> u32 {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let append_zeros = |mut crc: u32, mut bytes: usize| {
            while bytes > 0 {
                let step = bytes.min(ZEROS.len());
                crc = crc32c::crc32c_append(crc, &ZEROS[..step]);
                bytes -= step;
            }
            crc
        };
        let map = self.map.bytes();
        let mut crc = 0;
        let mut at = 0;
        for run in self.entries_with_data(0..self.header.block_count) {
            let run = run.start as usize * 2..run.end as usize * 2;
            crc = append_zeros(crc, run.start - at);
            crc = crc32c::crc32c_append(crc, &map[run.clone()]);
            at = run.end;
        }
        append_zeros(crc, self.header.block_count as usize * 2 - at)
    }

    /// The runs of `entries` that may hold a generation, ascending: those
    /// where the manifest file has data. A hole, or an unwritten extent
    /// with nothing in the page cache, reads as zeros, so a scan skips it
    /// without faulting its pages in: the map of a 1 TiB target is 512 MiB,
    /// and a run that wrote 0.01% of its blocks touched a fraction of its
    /// pages. Where the file cannot tell: all of `entries`. One pass over
    /// the range: call it once per scan, not per piece of one (a seek for
    /// the end of data walks the cached pages up to it, wherever that is).
    pub(super) fn entries_with_data(
        &self,
        entries: std::ops::Range<u64>,
    ) -> Vec<std::ops::Range<u64>> {
        use rustix::fs::SeekFrom;
        let whole = vec![entries.clone()];
        if entries.start >= entries.end || matches!(self.map, MapView::Copied(_)) {
            return whole;
        }
        let end = MAP_OFFSET + entries.end * 2;
        let mut at = MAP_OFFSET + entries.start * 2;
        let mut runs = Vec::new();
        while at < end {
            let data = match rustix::fs::seek(&self.file, SeekFrom::Data(at)) {
                Ok(data) => data,
                Err(rustix::io::Errno::NXIO) => break,
                Err(_) => return whole,
            };
            if data >= end {
                break;
            }
            let hole = match rustix::fs::seek(&self.file, SeekFrom::Hole(data)) {
                Ok(hole) => hole.min(end),
                Err(_) => return whole,
            };
            runs.push((data - MAP_OFFSET) / 2..(hole - MAP_OFFSET).div_ceil(2));
            at = hole;
        }
        runs
    }

    /// Append to `out`, ascending, the blocks of `blocks` whose map entry
    /// holds a generation (deferred entries not included), looking only in
    /// `runs` (from [`Manifest::entries_with_data`] over the whole map).
    /// Four entries are tested at a time: a verify of a sparse target scans
    /// the map of every block it does not read.
    pub(super) fn mapped_written_in(
        &self,
        blocks: std::ops::Range<u64>,
        runs: &[std::ops::Range<u64>],
        out: &mut Vec<u64>,
    ) {
        let end = blocks.end.min(self.header.block_count);
        let first = runs.partition_point(|run| run.end <= blocks.start);
        for run in runs[first..].iter().take_while(|run| run.start < end) {
            let part = run.start.max(blocks.start)..run.end.min(end);
            if part.start < part.end {
                self.mapped_written_in_run(part, out);
            }
        }
    }

    fn mapped_written_in_run(&self, blocks: std::ops::Range<u64>, out: &mut Vec<u64>) {
        let bytes = &self.map.bytes()[blocks.start as usize * 2..blocks.end as usize * 2];
        let mut words = bytes.chunks_exact(8);
        let mut block = blocks.start;
        for word in &mut words {
            let entries = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            if entries & GENERATIONS != 0 {
                for i in 0..4 {
                    if (entries >> (16 * i)) & 0x7fff != 0 {
                        out.push(block + i);
                    }
                }
            }
            block += 4;
        }
        for entry in words.remainder().chunks_exact(2) {
            if u16::from_le_bytes([entry[0], entry[1]]) & !DIRTY_BIT != 0 {
                out.push(block);
            }
            block += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::testing::{new_manifest, new_manifest_of};
    use crate::manifest::{Access, MAP_OFFSET, Manifest};

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
    fn states_survive_reopen_and_wide_entries_are_what_version_1_cannot_mean() {
        use crate::manifest::{BlockKind, BlockState};
        let dir = tempfile::tempdir().unwrap();
        let mut m = new_manifest(dir.path());
        m.begin_write().unwrap();
        let zeroed = BlockState {
            kind: BlockKind::Zeroed,
            generation: 7,
        };
        m.set_state(9, zeroed);
        m.set_generation(10, 8191);
        m.finish_write().unwrap();
        drop(m);
        let m = Manifest::open(&dir.path().join("m"), Access::Read).unwrap();
        assert_eq!(m.state(9), zeroed);
        assert_eq!(m.generation(9), 7);
        assert_eq!(m.state(10), BlockState::data(8191));
        // A kind in bits 13-14: a version 1 manifest would have meant a
        // generation above 8191 there.
        assert!(m.has_wide_generations());
        let dir = tempfile::tempdir().unwrap();
        let mut m = new_manifest(dir.path());
        m.begin_write().unwrap();
        m.set_generation(10, 8191);
        assert!(!m.has_wide_generations());
    }

    #[test]
    fn scans_that_skip_the_map_files_holes_see_what_a_full_scan_sees() {
        // A 4 GiB target: a 2 MiB map, written in a few scattered pages.
        let dir = tempfile::tempdir().unwrap();
        let block_count = 1u64 << 20;
        let mut m = new_manifest_of(dir.path(), block_count);
        let written = [0, 5, 2047, 2048, 300_001, 777_777, block_count - 1];
        m.begin_write().unwrap();
        for (i, &block) in written.iter().enumerate() {
            m.set_generation(block, 1 + i as u32);
        }
        // The scans first (a full scan brings every page into the cache,
        // and then there is no hole left to skip): while writing, with the
        // entries in the page cache only, and after reopening.
        let crc_while_writing = m.map_crc();
        m.finish_write().unwrap();
        drop(m);
        let m = Manifest::open(&dir.path().join("m"), Access::Read).unwrap();
        let crc_reopened = m.map_crc();
        let count = m.count_written();
        let runs = m.entries_with_data(0..block_count);
        let (mut found, mut found_in_part) = (Vec::new(), Vec::new());
        m.mapped_written_in(0..block_count, &runs, &mut found);
        m.mapped_written_in(6..300_002, &runs, &mut found_in_part);

        let full_crc = crc32c::crc32c(&m.map.bytes()[..block_count as usize * 2]);
        assert_eq!(crc_while_writing, full_crc);
        assert_eq!(crc_reopened, full_crc);
        assert_eq!(count, written.len() as u64);
        assert_eq!(found, written);
        assert_eq!(found_in_part, [2047, 2048, 300_001]);
    }
}
