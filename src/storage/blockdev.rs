//! Block devices: `/dev/sdX`, `/dev/nvmeXnY`, `/dev/vdX`, `/dev/loopN`, …
//!
//! Always opened O_DIRECT: every block device supports it, and verification
//! must read the medium, not this host's page cache. Opened for writing, a
//! device is claimed exclusively (O_EXCL, which the kernel refuses while a
//! filesystem, device-mapper, md or another exclusive opener holds it, and
//! which keeps anyone from mounting it while we write) and must pass the
//! safety checks of docs/CONTRACT.md before a byte is written:
//!
//! - mounted (the device or one of its partitions) or active swap: refused
//!   even with `--force`. Writing under a live filesystem corrupts it and
//!   the kernel's view of it, and the filesystem's own writeback would land
//!   among the stamps, so the verify could not mean anything either;
//! - held by a stacked device (device-mapper, md, bcache) or open
//!   exclusively by another user; kernel partitions; a partition table or a
//!   filesystem or volume signature: refused unless `--force`. With
//!   `--force` the device is still claimed exclusively when the kernel
//!   allows it, and opened shared when it does not;
//! - read-only: refused; `--force` cannot make it writable.
//!
//! `--size` (the request's `create_size`) limits the target to the first
//! `--size` bytes of the device, which must hold it; IO past that is refused.

mod identity;
pub mod safety;
pub mod signature;
pub mod space;

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use rustix::io::{Errno, ReadWriteFlags};

use self::safety::{DeviceNumber, InUse, SysBlock};
use self::signature::{HEAD_PROBE_BYTES, Signature, TAIL_PROBE_BYTES};
use self::space::QueueLimits;
use super::{OpenRequest, SpaceOps, Target, TargetInfo, TargetKind, ZeroFlags};
use crate::buf::{AlignedBuf, IO_ALIGN};
use crate::error::{Error, Result};

/// A block device, opened O_DIRECT.
pub struct BlockDeviceTarget {
    file: File,
    info: TargetInfo,
    device_size_bytes: u64,
    exclusive: bool,
    /// Discard and write-zeroes limits (see [`space`]).
    limits: QueueLimits,
}

impl BlockDeviceTarget {
    /// Open the block device at `path` (`uri` is how the user named it, for
    /// messages). For writing, runs the safety checks described in the
    /// module documentation; reading (verify, inspect) refuses nothing.
    pub fn open(path: &Path, uri: &str, request: &OpenRequest) -> Result<BlockDeviceTarget> {
        let meta = fs::metadata(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::run(format!("target {uri} does not exist")),
            _ => Error::run(format!("cannot stat target {uri}: {e}")),
        })?;
        if !meta.file_type().is_block_device() {
            return Err(Error::usage(format!("target {uri} is not a block device")));
        }
        let number = DeviceNumber::from_rdev(meta.rdev());
        // Without sysfs (a minimal container) the holder and partition
        // checks see nothing; O_EXCL and the signature probe still guard.
        let sysfs = SysBlock::locate(Path::new("/sys"), number);
        let device = Device {
            uri,
            path,
            number,
            sysfs: sysfs.as_ref(),
        };

        let (file, exclusive) = if request.write {
            device.refuse_if_in_use()?;
            if !request.force {
                device.refuse_if_held()?;
            }
            let (file, exclusive) = device.open_for_write(request.force)?;
            if !exclusive {
                // Opened shared: someone may have mounted it since the check.
                device.refuse_if_in_use()?;
            }
            (file, exclusive)
        } else {
            let file = device
                .open_with(false, false)
                .map_err(|e| device.open_error(e))?;
            (file, false)
        };

        let geometry = Geometry::query(&file, uri)?;
        if request.write && geometry.read_only {
            return Err(device.read_only_error());
        }
        let size_bytes = match request.create_size {
            Some(limit) => geometry.check_size_limit(uri, limit)?,
            None => geometry.size_bytes,
        };
        if request.write && !request.force {
            device.refuse_if_partitioned()?;
            device.refuse_if_signed(&file, &geometry)?;
        }

        // Without sysfs nothing says the device discards: discards are
        // refused, write-zeroes (which the kernel can always do) is not.
        let limits = QueueLimits::read(Path::new("/sys"), number, geometry.logical_sector_size)
            .unwrap_or(QueueLimits {
                logical_sector_size: u64::from(geometry.logical_sector_size),
                ..QueueLimits::default()
            });
        let identity = sysfs
            .as_ref()
            .map(|sysfs| identity::from_sysfs(&sysfs.disk_dir()))
            .unwrap_or_default();
        Ok(BlockDeviceTarget {
            file,
            info: TargetInfo {
                uri: uri.to_string(),
                kind: TargetKind::BlockDevice,
                size_bytes,
                logical_sector_size: geometry.logical_sector_size,
                physical_sector_size: geometry.physical_sector_size,
                direct_io: true,
                read_only: !request.write,
                // With O_DIRECT and RWF_DSYNC the block layer sends REQ_FUA,
                // or a write plus a cache flush where the device has no FUA.
                supports_fua: true,
                identity,
            },
            device_size_bytes: geometry.size_bytes,
            exclusive,
            limits,
        })
    }

    /// The whole device's size; `info().size_bytes` is less when `--size`
    /// limited the target.
    pub fn device_size_bytes(&self) -> u64 {
        self.device_size_bytes
    }

    /// The device is claimed with O_EXCL: nobody can mount it or stack a
    /// device on it while this target is open. False for reads, and for
    /// writes that `--force` let through a busy device.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// What the kernel's queue limits say about discard and write-zeroes
    /// (the facts behind [`Target::space_ops`]).
    pub fn queue_limits(&self) -> &QueueLimits {
        &self.limits
    }

    fn check_range(&self, len: usize, offset: u64) -> io::Result<()> {
        self.check_range_u64(len as u64, offset)
    }

    fn check_range_u64(&self, len: u64, offset: u64) -> io::Result<()> {
        let size = self.info.size_bytes;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{len} bytes at offset {offset} run past the end of target {} ({size} bytes)",
                    self.info.uri
                ),
            )),
        }
    }
}

impl Target for BlockDeviceTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check_range(buf.len(), offset)?;
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.check_range(buf.len(), offset)?;
        if !fua {
            return self.file.write_all_at(buf, offset);
        }
        // RWF_DSYNC makes this one write durable (FUA) instead of flushing
        // everything else in the device's cache as fdatasync would.
        let mut written = 0;
        while written < buf.len() {
            let slices = [IoSlice::new(&buf[written..])];
            match rustix::io::pwritev2(
                &self.file,
                &slices,
                offset + written as u64,
                ReadWriteFlags::DSYNC,
            ) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!(
                            "device accepted no bytes at offset {}",
                            offset + written as u64
                        ),
                    ));
                }
                Ok(n) => written += n,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        // On a block device fdatasync sends a cache flush to the device.
        rustix::fs::fdatasync(&self.file)?;
        Ok(())
    }

    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.file.as_fd())
    }

    fn data_ranges(&self) -> Option<Vec<std::ops::Range<u64>>> {
        // A device has no holes this host can see (thin provisioning is
        // behind the device), so every block may hold data.
        None
    }

    fn space_ops(&self) -> SpaceOps {
        self.limits.space_ops()
    }

    /// `BLKDISCARD`, whole discard units only, in parts of at most
    /// `max_bytes` (see [`space`]).
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_range_u64(len, offset)?;
        self.limits.check_discard(offset, len, &self.info.uri)?;
        for (part_offset, part_len) in space::parts(offset, len, self.limits.max_bytes()) {
            space::blkdiscard(&self.file, part_offset, part_len)?;
        }
        Ok(())
    }

    /// `fallocate(ZERO_RANGE)`, or `PUNCH_HOLE` with unmap allowed (see
    /// [`space`]); whole logical sectors, in parts of at most `max_bytes`.
    fn write_zeroes(&self, offset: u64, len: u64, zero: ZeroFlags) -> io::Result<()> {
        self.check_range_u64(len, offset)?;
        self.limits.check_zeroes(offset, len, &self.info.uri)?;
        for (part_offset, part_len) in space::parts(offset, len, self.limits.max_bytes()) {
            space::zero_range(&self.file, part_offset, part_len, zero)?;
        }
        Ok(())
    }
}

/// The device being opened, for the checks and their messages.
struct Device<'a> {
    uri: &'a str,
    path: &'a Path,
    number: DeviceNumber,
    sysfs: Option<&'a SysBlock>,
}

impl Device<'_> {
    /// The device and its partitions, by kernel name and number: using any
    /// of them is using the disk.
    fn family(&self) -> Vec<(String, DeviceNumber)> {
        match self.sysfs {
            Some(sysfs) => std::iter::once((sysfs.name.clone(), sysfs.number))
                .chain(
                    sysfs
                        .partitions()
                        .into_iter()
                        .map(|part| (part.name, part.number)),
                )
                .collect(),
            None => vec![(self.uri.to_string(), self.number)],
        }
    }

    fn partitions(&self) -> Vec<SysBlock> {
        self.sysfs.map(SysBlock::partitions).unwrap_or_default()
    }

    /// Mounted or swapped on: refused whatever the flags say.
    fn refuse_if_in_use(&self) -> Result<()> {
        // Our mount namespace, and init's: a device mounted on the host is
        // in use even when this process runs in a private namespace.
        let mountinfo: String = ["/proc/self/mountinfo", "/proc/1/mountinfo"]
            .iter()
            .filter_map(|path| fs::read_to_string(path).ok())
            .collect();
        let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
        let family = self.family();
        let own_name = &family[0].0;
        let uri = self.uri;
        const NEVER: &str = "blockstamp never writes to a device in use, even with --force";
        match safety::find_in_use(&family, &mountinfo, &swaps, safety::block_device_number) {
            None => Ok(()),
            Some(InUse::Mounted {
                device,
                mount_point,
            }) if &device == own_name => Err(Error::usage(format!(
                "target {uri} is mounted at {mount_point}; unmount it first ({NEVER})"
            ))),
            Some(InUse::Mounted {
                device,
                mount_point,
            }) => Err(Error::usage(format!(
                "target {uri} has partition {device} mounted at {mount_point}; unmount it first ({NEVER})"
            ))),
            Some(InUse::Swap { device }) if &device == own_name => Err(Error::usage(format!(
                "target {uri} is active swap; swapoff it first ({NEVER})"
            ))),
            Some(InUse::Swap { device }) => Err(Error::usage(format!(
                "target {uri} has partition {device} in use as swap; swapoff it first ({NEVER})"
            ))),
        }
    }

    /// Device-mapper, md or bcache stacked on the device or a partition.
    fn refuse_if_held(&self) -> Result<()> {
        let Some(sysfs) = self.sysfs else {
            return Ok(());
        };
        let mut held_by: Vec<String> = sysfs.holders();
        for partition in sysfs.partitions() {
            held_by.extend(
                partition
                    .holders()
                    .into_iter()
                    .map(|holder| format!("{holder} (on {})", partition.name)),
            );
        }
        if held_by.is_empty() {
            return Ok(());
        }
        Err(Error::usage(format!(
            "target {} is held by {} (device-mapper, md or bcache); stop that first, or pass --force to write anyway",
            self.uri,
            held_by.join(", ")
        )))
    }

    fn refuse_if_partitioned(&self) -> Result<()> {
        let partitions = self.partitions();
        if partitions.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = partitions.iter().map(|p| p.name.as_str()).collect();
        let (noun, pronoun) = if names.len() == 1 {
            ("partition", "it")
        } else {
            ("partitions", "them")
        };
        Err(Error::usage(format!(
            "target {} has {noun} {}; writing would destroy {pronoun}: give one partition as the target, or pass --force to overwrite the whole disk",
            self.uri,
            names.join(", ")
        )))
    }

    /// Look at the first and last bytes for partition tables, filesystems
    /// and volumes; the kernel may not know about them (no partition scan,
    /// a filesystem never mounted here).
    fn refuse_if_signed(&self, file: &File, geometry: &Geometry) -> Result<()> {
        let head_len = (HEAD_PROBE_BYTES as u64).min(geometry.size_bytes);
        let tail_len = (TAIL_PROBE_BYTES as u64).min(geometry.size_bytes);
        let head = self.read_for_probe(file, 0, head_len)?;
        let tail_offset = geometry.size_bytes - tail_len;
        let tail = self.read_for_probe(file, tail_offset, tail_len)?;
        let mut found = signature::probe_head(&head);
        for tail_signature in signature::probe_tail(&tail, geometry.size_bytes) {
            if !found.contains(&tail_signature) {
                found.push(tail_signature);
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        let what: Vec<&str> = found.iter().map(|s| Signature::description(*s)).collect();
        let pronoun = if what.len() == 1 { "it" } else { "them" };
        Err(Error::usage(format!(
            "target {} holds {}; writing would destroy {pronoun}: pass --force to overwrite {pronoun}",
            self.uri,
            what.join(" and ")
        )))
    }

    fn read_for_probe(&self, file: &File, offset: u64, len: u64) -> Result<AlignedBuf> {
        // Both lengths and offsets are whole logical sectors: the device
        // size is, and the probe sizes are multiples of IO_ALIGN.
        let mut buf = AlignedBuf::new(len as usize);
        file.read_exact_at(&mut buf, offset).map_err(|e| {
            Error::run(format!(
                "cannot read {len} bytes at offset {offset} of target {} to check it for filesystems: {e}; pass --force to write without this check",
                self.uri
            ))
        })?;
        Ok(buf)
    }

    /// Open for writing, claiming the device exclusively; with `force`, fall
    /// back to a shared open when someone else holds it. Returns the file
    /// and whether it holds the exclusive claim.
    fn open_for_write(&self, force: bool) -> Result<(File, bool)> {
        match self.open_with(true, true) {
            Ok(file) => Ok((file, true)),
            Err(OpenError::Busy) if force => match self.open_with(true, false) {
                Ok(file) => Ok((file, false)),
                Err(e) => Err(self.open_error(e)),
            },
            Err(OpenError::Busy) => Err(Error::usage(format!(
                "target {} is open exclusively by another user (a filesystem, device-mapper, md, or a VM); stop that user first, or pass --force to write anyway",
                self.uri
            ))),
            Err(e) => Err(self.open_error(e)),
        }
    }

    fn open_with(&self, write: bool, exclusive: bool) -> Result<File, OpenError> {
        let mut flags = rustix::fs::OFlags::DIRECT;
        if exclusive {
            // O_EXCL without O_CREAT on a block device: claim it, or EBUSY.
            flags |= rustix::fs::OFlags::EXCL;
        }
        OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(flags.bits() as i32)
            .open(self.path)
            .map_err(|e| match e.raw_os_error().map(Errno::from_raw_os_error) {
                Some(Errno::BUSY) => OpenError::Busy,
                // The kernel answers EACCES (and EROFS from some drivers)
                // when a read-only device is opened for writing.
                Some(Errno::ACCESS | Errno::ROFS | Errno::PERM) if write => OpenError::Denied(e),
                _ => OpenError::Other(e),
            })
    }

    fn open_error(&self, e: OpenError) -> Error {
        let uri = self.uri;
        match e {
            OpenError::Busy => Error::run(format!("cannot open target {uri}: device busy")),
            OpenError::Denied(_) if self.is_read_only() => self.read_only_error(),
            OpenError::Denied(e) => Error::run(format!(
                "cannot open target {uri} for writing: {e} (writing to a device needs root or the disk group)"
            )),
            OpenError::Other(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
                Error::run(format!(
                    "cannot open target {uri}: it does not support direct IO (O_DIRECT): {e}"
                ))
            }
            OpenError::Other(e) => Error::run(format!("cannot open target {uri}: {e}")),
        }
    }

    /// Whether the kernel has the device read-only, asked without writing.
    fn is_read_only(&self) -> bool {
        if self.sysfs.is_some_and(SysBlock::read_only) {
            return true;
        }
        self.open_with(false, false)
            .ok()
            .and_then(|file| ioctl_blkroget(&file).ok())
            .unwrap_or(false)
    }

    fn read_only_error(&self) -> Error {
        Error::usage(format!(
            "target {} is read-only; make the device writable (blockdev --setrw, or attach the image read-write) or choose another target",
            self.uri
        ))
    }
}

enum OpenError {
    Busy,
    Denied(io::Error),
    Other(io::Error),
}

/// What the kernel says about the device's size and sectors.
struct Geometry {
    size_bytes: u64,
    logical_sector_size: u32,
    physical_sector_size: u32,
    read_only: bool,
}

impl Geometry {
    fn query(file: &File, uri: &str) -> Result<Geometry> {
        let ioctl_error = |what: &str, e: Errno| {
            Error::run(format!("cannot read the {what} of target {uri}: {e}"))
        };
        let size_bytes = ioctl_blkgetsize64(file).map_err(|e| ioctl_error("size", e))?;
        let logical_sector_size =
            rustix::fs::ioctl_blksszget(file).map_err(|e| ioctl_error("logical sector size", e))?;
        let physical_sector_size = rustix::fs::ioctl_blkpbszget(file)
            .map_err(|e| ioctl_error("physical sector size", e))?;
        let read_only = ioctl_blkroget(file).map_err(|e| ioctl_error("read-only flag", e))?;
        if size_bytes == 0 {
            return Err(Error::run(format!(
                "target {uri} has no capacity (0 bytes): is the medium present, or the loop device attached?"
            )));
        }
        // IO buffers are IO_ALIGN-aligned; a larger sector could not be
        // transferred with O_DIRECT from them.
        if !logical_sector_size.is_power_of_two()
            || !(512..=IO_ALIGN as u32).contains(&logical_sector_size)
        {
            return Err(Error::run(format!(
                "target {uri} has {logical_sector_size}-byte logical sectors; blockstamp supports 512 to {IO_ALIGN}"
            )));
        }
        Ok(Geometry {
            size_bytes,
            logical_sector_size,
            physical_sector_size,
            read_only,
        })
    }

    /// `--size` on a device: the first `limit` bytes are the target.
    fn check_size_limit(&self, uri: &str, limit: u64) -> Result<u64> {
        let device = self.size_bytes;
        let sector = u64::from(self.logical_sector_size);
        if limit == 0 {
            Err(Error::usage(format!(
                "--size 0 leaves nothing of target {uri} to test; omit --size to use the whole device ({device} bytes)"
            )))
        } else if limit > device {
            Err(Error::usage(format!(
                "--size {limit} is larger than target {uri} ({device} bytes); omit --size to use the whole device"
            )))
        } else if !limit.is_multiple_of(sector) {
            Err(Error::usage(format!(
                "--size {limit} is not a multiple of target {uri}'s {sector}-byte logical sector"
            )))
        } else {
            Ok(limit)
        }
    }
}

/// `ioctl(BLKGETSIZE64)`: the device size in bytes.
fn ioctl_blkgetsize64(file: &File) -> rustix::io::Result<u64> {
    use rustix::ioctl::{Getter, ioctl, opcode};
    // <linux/fs.h>: #define BLKGETSIZE64 _IOR(0x12, 114, size_t); the
    // kernel writes a u64 whatever size_t is.
    const BLKGETSIZE64: rustix::ioctl::Opcode = opcode::read::<usize>(0x12, 114);
    // SAFETY: BLKGETSIZE64 is a getter that writes one u64 through the
    // pointer, which Getter provides for exactly that type.
    unsafe { ioctl(file, Getter::<BLKGETSIZE64, u64>::new()) }
}

/// `ioctl(BLKROGET)`: the kernel's read-only flag for the device.
fn ioctl_blkroget(file: &File) -> rustix::io::Result<bool> {
    use rustix::ioctl::{Getter, ioctl, opcode};
    // <linux/fs.h>: #define BLKROGET _IO(0x12, 94), which writes an int
    // despite its _IO encoding.
    const BLKROGET: rustix::ioctl::Opcode = opcode::none(0x12, 94);
    // SAFETY: BLKROGET is a getter that writes one C int through the
    // pointer, which Getter provides for exactly that type.
    let read_only = unsafe { ioctl(file, Getter::<BLKROGET, std::ffi::c_int>::new())? };
    Ok(read_only != 0)
}
