//! Regular files: raw, possibly sparse, disk images.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::{Advice, SeekFrom};

use super::{
    DiscardReads, OpenRequest, SpaceOps, Target, TargetIdentity, TargetInfo, TargetKind, ZeroFlags,
};
use crate::error::{Error, Result};

/// A disk image in a regular file.
pub struct FileTarget {
    file: File,
    info: TargetInfo,
}

impl FileTarget {
    /// Open (and with `request.create_size`, create or extend, sparse) an
    /// image file. O_DIRECT is used when the filesystem allows it; where it
    /// does not (tmpfs), `info().direct_io` is false and reads drop the
    /// cached pages first (see [`Target::read_at`] below).
    pub fn open(path: &Path, uri: &str, request: &OpenRequest) -> Result<FileTarget> {
        let meta = std::fs::metadata(path);
        match &meta {
            Ok(m) if m.is_dir() => {
                return Err(Error::usage(format!(
                    "target {uri} is a directory; give an image file, a block device or an nbd:// URI"
                )));
            }
            Ok(m) if !m.is_file() => {
                return Err(Error::usage(format!(
                    "target {uri} is neither a regular file nor a block device"
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && request.create_size.is_none() => {
                let advice = if request.write {
                    "pass --size to create a sparse image file"
                } else {
                    "check the path"
                };
                return Err(Error::run(format!("target {uri} does not exist; {advice}")));
            }
            _ => {}
        }
        let writable = request.write;
        let mut options = OpenOptions::new();
        options.read(true).write(writable);
        if writable && request.create_size.is_some() {
            options.create(true);
        }
        let (file, direct_io) = if request.direct {
            match options
                .clone()
                .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
                .open(path)
            {
                Ok(f) => (f, true),
                // EINVAL: the filesystem has no O_DIRECT (tmpfs); fall back.
                Err(e) if e.raw_os_error() == Some(libc_einval()) => {
                    (open_plain(&options, path, uri)?, false)
                }
                Err(e) => return Err(open_error(uri, e)),
            }
        } else {
            (open_plain(&options, path, uri)?, false)
        };
        let mut size_bytes = file
            .metadata()
            .map_err(|e| Error::run(format!("cannot stat target {uri}: {e}")))?
            .len();
        if let Some(wanted) = request.create_size
            && wanted > size_bytes
        {
            // Extending with set_len leaves a hole: the image stays sparse.
            file.set_len(wanted)
                .map_err(|e| Error::run(format!("cannot extend {uri} to {wanted} bytes: {e}")))?;
            size_bytes = wanted;
        }
        Ok(FileTarget {
            file,
            info: TargetInfo {
                uri: uri.to_string(),
                kind: TargetKind::File,
                size_bytes,
                logical_sector_size: 512,
                physical_sector_size: 4096,
                direct_io,
                read_only: !writable,
                supports_fua: true,
                identity: TargetIdentity::default(),
            },
        })
    }
}

fn libc_einval() -> i32 {
    rustix::io::Errno::INVAL.raw_os_error()
}

fn open_plain(options: &OpenOptions, path: &Path, uri: &str) -> Result<File> {
    options.open(path).map_err(|e| open_error(uri, e))
}

fn open_error(uri: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::PermissionDenied => Error::run(format!(
            "cannot open target {uri}: permission denied (check its mode, or whether it is read-only)"
        )),
        _ => Error::run(format!("cannot open target {uri}: {e}")),
    }
}

impl Target for FileTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if !self.info.direct_io {
            // No O_DIRECT here: push out what is dirty and drop the cached
            // pages of this range, so the read comes from the file's storage
            // rather than from what this host still remembers writing.
            let len = buf.len() as u64;
            let _ = rustix::fs::fdatasync(&self.file);
            let _ = rustix::fs::fadvise(
                &self.file,
                offset,
                std::num::NonZeroU64::new(len),
                Advice::DontNeed,
            );
        }
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("short read at offset {offset}"),
                )
            } else {
                e
            }
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.file.write_all_at(buf, offset)?;
        if fua {
            rustix::fs::fdatasync(&self.file)?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        rustix::fs::fdatasync(&self.file)?;
        Ok(())
    }

    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.file.as_fd())
    }

    fn data_ranges(&self) -> Option<Vec<std::ops::Range<u64>>> {
        data_ranges(&self.file, self.info.size_bytes)
    }

    /// A hole punched in a file reads as zeros on every Linux filesystem
    /// that punches holes at all.
    fn space_ops(&self) -> SpaceOps {
        SpaceOps {
            discard: true,
            write_zeroes: true,
            fast_zero: false,
            discard_granularity: 0,
            max_bytes: 0,
            discard_reads: Some(DiscardReads::Zeroes),
        }
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        punch_hole(&self.file, offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64, zero: ZeroFlags) -> io::Result<()> {
        if zero.unmap {
            return punch_hole(&self.file, offset, len);
        }
        use rustix::fs::FallocateFlags as F;
        match rustix::fs::fallocate(&self.file, F::ZERO_RANGE | F::KEEP_SIZE, offset, len) {
            Ok(()) => Ok(()),
            // No ZERO_RANGE here (tmpfs): a punched hole reads as zeros too.
            Err(rustix::io::Errno::OPNOTSUPP) => punch_hole(&self.file, offset, len),
            Err(e) => Err(e.into()),
        }
    }
}

/// Deallocate `len` bytes at `offset` of `file`, keeping its size.
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use rustix::fs::FallocateFlags as F;
    rustix::fs::fallocate(file, F::PUNCH_HOLE | F::KEEP_SIZE, offset, len)?;
    Ok(())
}

/// The allocated extents of a file, found with SEEK_DATA / SEEK_HOLE.
pub(crate) fn data_ranges(file: &File, size: u64) -> Option<Vec<std::ops::Range<u64>>> {
    let mut ranges = Vec::new();
    let mut position = 0u64;
    while position < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(position)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return None,
        };
        if start >= size {
            break;
        }
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(end) => end.min(size),
            Err(_) => return None,
        };
        ranges.push(start..end);
        position = end;
    }
    Some(ranges)
}
