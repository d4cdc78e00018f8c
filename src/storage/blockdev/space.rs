//! Discard and write-zeroes on a block device: what the kernel's queue
//! limits say the device does, and the calls that do it.
//!
//! The facts come from sysfs (`/sys/dev/block/MAJ:MIN`, the whole disk's
//! `queue/` for a partition):
//!
//! - `discard_max_bytes` > 0: the device takes discards (TRIM, UNMAP,
//!   DEALLOCATE). `discard_granularity` is the unit it deallocates; a
//!   discard not made of whole units (counted from `discard_alignment`, the
//!   partition's offset into them) would be rounded or ignored by the
//!   device, so it is refused here rather than carried out in part.
//! - `write_zeroes_max_bytes` > 0: the device has a WRITE ZEROES command.
//!   Without one the kernel still zeroes, exactly, by writing zero pages
//!   (blkdev_issue_zeroout's fallback), so write-zeroes is always carried
//!   out; [`QueueLimits::write_zeroes_offloaded`] says which path the device
//!   saw.
//! - `discard_zeroes_data`: 1 only on kernels before 4.12 for devices that
//!   promised zeros after a discard; later kernels always show 0. NVMe's
//!   DLFEAT (what a deallocated block reads) is not in sysfs: it needs an
//!   Identify Namespace admin command. So a device's discard promise is
//!   almost never known, and the verify then accepts old data or zeros.
//!
//! The calls: a discard is `ioctl(BLKDISCARD)` — on a block device
//! `fallocate(PUNCH_HOLE)` is not a discard but an unmapping write-zeroes.
//! Write-zeroes is `fallocate` because it names both kinds the kernel has:
//! `ZERO_RANGE` is blkdev_issue_zeroout with `BLKDEV_ZERO_NOUNMAP` (exactly
//! what `ioctl(BLKZEROOUT)` does: the blocks stay allocated, with the
//! write-zero-pages fallback), and `PUNCH_HOLE` is blkdev_issue_zeroout
//! allowed to unmap, without the fallback (EOPNOTSUPP on a device without
//! WRITE ZEROES, where the ZERO_RANGE form is used instead). The io_uring
//! engine issues the same two through IORING_OP_FALLOCATE, so both engines
//! drive one kernel path.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use super::safety::{DeviceNumber, SysBlock};
use crate::storage::{DiscardReads, SpaceOps, ZeroFlags};

/// What the kernel's queue limits say about discard and write-zeroes on
/// one block device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueLimits {
    /// The device's logical sector: every range is whole sectors.
    pub logical_sector_size: u64,
    /// The unit discards deallocate, bytes (0: the device takes no discards).
    pub discard_granularity: u64,
    /// Bytes from the start of this device (a partition) to the first whole
    /// discard unit.
    pub discard_alignment: u64,
    /// The largest discard the kernel sends at once (0: no discards).
    pub discard_max_bytes: u64,
    /// The largest WRITE ZEROES the kernel sends at once (0: the device has
    /// none and the kernel zeroes by writing).
    pub write_zeroes_max_bytes: u64,
    /// The deprecated promise that discarded blocks read as zeros.
    pub discard_zeroes_data: bool,
}

impl QueueLimits {
    /// The limits of the block device numbered `number`, read from sysfs
    /// under `sys_root` (`/sys`); `None` when sysfs does not know it.
    pub fn read(sys_root: &Path, number: DeviceNumber, logical_sector_size: u32) -> Option<Self> {
        let device = SysBlock::locate(sys_root, number)?;
        let queue = device.disk_dir().join("queue");
        let number_in = |dir: &Path, name: &str| -> u64 {
            fs::read_to_string(dir.join(name))
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(0)
        };
        if !queue.is_dir() {
            return None;
        }
        Some(QueueLimits {
            logical_sector_size: u64::from(logical_sector_size),
            discard_granularity: number_in(&queue, "discard_granularity"),
            discard_alignment: number_in(&device.dir, "discard_alignment"),
            discard_max_bytes: number_in(&queue, "discard_max_bytes"),
            write_zeroes_max_bytes: number_in(&queue, "write_zeroes_max_bytes"),
            discard_zeroes_data: number_in(&queue, "discard_zeroes_data") == 1,
        })
    }

    /// The limits of the block device open as `fd`; `None` when it is not
    /// a block device or sysfs does not know it. The io_uring engine asks
    /// this at creation to learn that its fd is a device.
    pub fn of_fd(fd: impl AsFd) -> Option<Self> {
        let stat = rustix::fs::fstat(&fd).ok()?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::BlockDevice {
            return None;
        }
        let sector = rustix::fs::ioctl_blksszget(&fd).ok()?;
        let number = DeviceNumber::from_rdev(stat.st_rdev);
        Self::read(Path::new("/sys"), number, sector)
    }

    /// The device takes discards.
    pub fn discard(&self) -> bool {
        self.discard_max_bytes > 0
    }

    /// The device has a WRITE ZEROES command of its own (else the kernel
    /// writes zero pages: still exact, but the device sees plain writes).
    pub fn write_zeroes_offloaded(&self) -> bool {
        self.write_zeroes_max_bytes > 0
    }

    /// The unit a discard range must be made of: the granularity, never
    /// less than a logical sector.
    pub fn discard_unit(&self) -> u64 {
        self.discard_granularity
            .max(self.logical_sector_size)
            .max(1)
    }

    /// The longest single call, bytes (0: no limit): the smaller limit of
    /// the operations the device offloads, rounded down to whole discard
    /// units so every part of a split range stays aligned.
    pub fn max_bytes(&self) -> u64 {
        let limit = [self.discard_max_bytes, self.write_zeroes_max_bytes]
            .into_iter()
            .filter(|&limit| limit > 0)
            .min()
            .unwrap_or(0);
        let unit = self.discard_unit();
        match limit / unit * unit {
            0 if limit > 0 => unit,
            rounded => rounded,
        }
    }

    /// What [`crate::storage::Target::space_ops`] reports. Write-zeroes is
    /// always carried out (see the module documentation); discards only
    /// where the device takes them, and their promise only where the
    /// kernel states one.
    pub fn space_ops(&self) -> SpaceOps {
        SpaceOps {
            discard: self.discard(),
            write_zeroes: true,
            fast_zero: false,
            discard_granularity: if self.discard() {
                self.discard_unit()
            } else {
                0
            },
            max_bytes: self.max_bytes(),
            discard_reads: (self.discard() && self.discard_zeroes_data)
                .then_some(DiscardReads::Zeroes),
        }
    }

    /// Refuse a discard the device cannot carry out whole: no discards at
    /// all (Unsupported), or a range not made of whole discard units
    /// (InvalidInput), which the device would round or drop.
    pub fn check_discard(&self, offset: u64, len: u64, uri: &str) -> io::Result<()> {
        if !self.discard() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "target {uri} does not support discard (its queue's discard_max_bytes is 0)"
                ),
            ));
        }
        let unit = self.discard_unit();
        let from_unit_start = offset.wrapping_sub(self.discard_alignment % unit);
        if len == 0 || !from_unit_start.is_multiple_of(unit) || !len.is_multiple_of(unit) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "discard of {len} bytes at offset {offset} of target {uri} is not whole {unit}-byte discard units (discard_granularity)"
                ),
            ));
        }
        Ok(())
    }

    /// Refuse a write-zeroes not made of whole logical sectors. Any
    /// sector range is zeroed exactly; with unmap allowed, the device
    /// deallocates the whole discard units inside it.
    pub fn check_zeroes(&self, offset: u64, len: u64, uri: &str) -> io::Result<()> {
        let sector = self.logical_sector_size.max(1);
        if len == 0 || !offset.is_multiple_of(sector) || !len.is_multiple_of(sector) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "write-zeroes of {len} bytes at offset {offset} of target {uri} is not whole {sector}-byte logical sectors"
                ),
            ));
        }
        Ok(())
    }
}

/// `[offset, offset + len)` in parts of at most `max_bytes` (0: one part).
pub fn parts(offset: u64, len: u64, max_bytes: u64) -> impl Iterator<Item = (u64, u64)> {
    let step = if max_bytes == 0 {
        len.max(1)
    } else {
        max_bytes
    };
    (0..len.div_ceil(step)).map(move |i| {
        let start = i * step;
        (offset + start, step.min(len - start))
    })
}

/// `ioctl(BLKDISCARD)`: discard `len` bytes at `offset` of the device.
pub fn blkdiscard(fd: impl AsFd, offset: u64, len: u64) -> io::Result<()> {
    use rustix::ioctl::{Setter, ioctl, opcode};
    // <linux/fs.h>: #define BLKDISCARD _IO(0x12, 119), which reads a
    // uint64_t[2] of start and length, in bytes, despite its _IO encoding.
    const BLKDISCARD: rustix::ioctl::Opcode = opcode::none(0x12, 119);
    // SAFETY: BLKDISCARD reads two u64 through the pointer, which Setter
    // passes to a value of exactly that type that lives through the call.
    unsafe { ioctl(fd, Setter::<BLKDISCARD, [u64; 2]>::new([offset, len]))? };
    Ok(())
}

/// fallocate modes of a block device's two write-zeroes (module docs).
pub fn zero_range(fd: impl AsFd, offset: u64, len: u64, zero: ZeroFlags) -> io::Result<()> {
    use rustix::fs::FallocateFlags as F;
    if zero.unmap {
        match rustix::fs::fallocate(&fd, F::PUNCH_HOLE | F::KEEP_SIZE, offset, len) {
            // No WRITE ZEROES on the device: unmapping was only allowed,
            // never asked for, so zero it the way that keeps the blocks.
            Err(rustix::io::Errno::OPNOTSUPP) => {}
            done => return done.map_err(io::Error::from),
        }
    }
    rustix::fs::fallocate(&fd, F::ZERO_RANGE | F::KEEP_SIZE, offset, len)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOP: QueueLimits = QueueLimits {
        logical_sector_size: 512,
        discard_granularity: 4096,
        discard_alignment: 0,
        discard_max_bytes: 4_294_966_784,
        write_zeroes_max_bytes: 4_294_966_784,
        discard_zeroes_data: false,
    };

    #[test]
    fn a_loop_device_offers_both_and_promises_nothing_about_discarded_reads() {
        let ops = LOOP.space_ops();
        assert!(ops.discard && ops.write_zeroes && !ops.fast_zero);
        assert_eq!(ops.discard_granularity, 4096);
        // 0xfffffe00 rounded down to whole 4 KiB units.
        assert_eq!(ops.max_bytes, 4_294_963_200);
        assert_eq!(ops.discard_reads, None);
    }

    #[test]
    fn a_device_without_discard_still_zeroes_by_writing() {
        let limits = QueueLimits {
            discard_granularity: 0,
            discard_max_bytes: 0,
            write_zeroes_max_bytes: 0,
            ..LOOP
        };
        let ops = limits.space_ops();
        assert!(!ops.discard && ops.write_zeroes);
        assert!(!limits.write_zeroes_offloaded());
        assert_eq!((ops.discard_granularity, ops.max_bytes), (0, 0));
        let error = limits.check_discard(0, 4096, "/dev/x").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::Unsupported);
    }

    #[test]
    fn discard_zeroes_data_is_the_only_zeros_promise() {
        let limits = QueueLimits {
            discard_zeroes_data: true,
            ..LOOP
        };
        assert_eq!(limits.space_ops().discard_reads, Some(DiscardReads::Zeroes));
    }

    #[test]
    fn discards_must_be_whole_units_counted_from_the_alignment() {
        assert!(LOOP.check_discard(8192, 4096, "/dev/loop0").is_ok());
        for (offset, len) in [(512, 4096), (4096, 512), (4096, 0), (4096, 6144)] {
            let error = LOOP.check_discard(offset, len, "/dev/loop0").unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{offset}+{len}");
        }
        let error = LOOP.check_discard(512, 4096, "/dev/loop0").unwrap_err();
        assert_eq!(
            error.to_string(),
            "discard of 4096 bytes at offset 512 of target /dev/loop0 is not whole 4096-byte discard units (discard_granularity)"
        );
        // A partition starting 1 KiB into a unit: its units start at 3 KiB.
        let partition = QueueLimits {
            discard_alignment: 3072,
            ..LOOP
        };
        assert!(partition.check_discard(3072, 4096, "/dev/x1").is_ok());
        assert!(partition.check_discard(4096, 4096, "/dev/x1").is_err());
    }

    #[test]
    fn write_zeroes_needs_whole_sectors_only() {
        assert!(LOOP.check_zeroes(512, 1024, "/dev/loop0").is_ok());
        let error = LOOP.check_zeroes(100, 512, "/dev/loop0").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn long_ranges_are_split_at_the_limit() {
        let parts: Vec<_> = parts(4096, 10 * 4096, 4 * 4096).collect();
        assert_eq!(parts, vec![(4096, 16384), (20480, 16384), (36864, 8192)]);
        assert_eq!(parts_of(0, 8192, 0), vec![(0, 8192)]);
        assert_eq!(parts_of(0, 0, 4096), vec![]);
    }

    fn parts_of(offset: u64, len: u64, max: u64) -> Vec<(u64, u64)> {
        parts(offset, len, max).collect()
    }

    #[test]
    fn limits_are_read_from_the_whole_disk_queue() {
        let sys = tempfile::tempdir().unwrap();
        let disk = sys.path().join("devices/virtual/block/loop7");
        fs::create_dir_all(disk.join("queue")).unwrap();
        for (name, value) in [
            ("discard_granularity", "4096\n"),
            ("discard_max_bytes", "4294966784\n"),
            ("write_zeroes_max_bytes", "4294966784\n"),
            ("discard_zeroes_data", "0\n"),
        ] {
            fs::write(disk.join("queue").join(name), value).unwrap();
        }
        fs::write(disk.join("discard_alignment"), "0\n").unwrap();
        let part = disk.join("loop7p1");
        fs::create_dir_all(&part).unwrap();
        fs::write(part.join("partition"), "1\n").unwrap();
        fs::write(part.join("discard_alignment"), "3072\n").unwrap();
        fs::create_dir_all(sys.path().join("dev/block")).unwrap();
        std::os::unix::fs::symlink(&disk, sys.path().join("dev/block/7:7")).unwrap();
        std::os::unix::fs::symlink(&part, sys.path().join("dev/block/259:1")).unwrap();

        let number = |text: &str| DeviceNumber::parse(text).unwrap();
        let whole = QueueLimits::read(sys.path(), number("7:7"), 512).unwrap();
        assert_eq!(whole, LOOP);
        let partition = QueueLimits::read(sys.path(), number("259:1"), 512).unwrap();
        assert_eq!(
            partition,
            QueueLimits {
                discard_alignment: 3072,
                ..LOOP
            }
        );
        assert_eq!(QueueLimits::read(sys.path(), number("8:0"), 512), None);
    }
}
