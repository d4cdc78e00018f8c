//! Targets: where blocks are written and read back.
//!
//! A target knows how to move bytes at an offset and nothing about stamps,
//! manifests or the command line. Every target is shareable across threads
//! (`&self` methods): the sync engine and the verifier call it from many
//! threads at once, and the NBD target turns that into many requests in
//! flight on one connection.

pub mod blockdev;
pub mod file;
pub mod nbd;
pub mod reconnect;

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use serde::Serialize;

/// What sort of thing a target is; the JSON report's `target.kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    File,
    BlockDevice,
    Nbd,
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetKind::File => "file",
            TargetKind::BlockDevice => "block_device",
            TargetKind::Nbd => "nbd",
        })
    }
}

/// Who the target is, as far as the system tells: recorded in the manifest
/// so that a verify on another host can say when it is looking at a
/// different device than the one written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TargetIdentity {
    pub model: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
}

/// Facts about an opened target.
#[derive(Clone, Debug)]
pub struct TargetInfo {
    /// The TARGET argument as the user gave it.
    pub uri: String,
    pub kind: TargetKind,
    pub size_bytes: u64,
    /// Smallest unit the target reads or writes atomically-addressable.
    pub logical_sector_size: u32,
    /// The unit the medium writes internally (torn writes happen on these).
    pub physical_sector_size: u32,
    /// Reads and writes bypass the page cache (O_DIRECT, or no cache at all).
    pub direct_io: bool,
    /// The target only accepts reads.
    pub read_only: bool,
    /// Writes may carry Force Unit Access.
    pub supports_fua: bool,
    pub identity: TargetIdentity,
}

/// Byte-level access to a target.
///
/// Buffers passed in are [`crate::buf::AlignedBuf`]-aligned and sized in whole
/// logical sectors; offsets are sector-aligned. Short transfers are the
/// target's to finish: `read_at` and `write_at` move the whole buffer or fail.
pub trait Target: Send + Sync {
    fn info(&self) -> &TargetInfo;

    /// Read exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Write all of `buf` at `offset`; with `fua`, durable when this returns.
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()>;

    /// Make every completed write durable.
    fn flush(&self) -> io::Result<()>;

    /// The file descriptor behind the target, for engines that drive the
    /// kernel directly (io_uring). `None` for network targets.
    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Byte ranges that may hold data, ascending, or `None` when the target
    /// cannot tell (then everything may). Lets verify skip the holes of a
    /// sparse image when it checks blocks the run never wrote.
    fn data_ranges(&self) -> Option<Vec<std::ops::Range<u64>>> {
        None
    }

    /// The most requests this target has had in flight at once, where it
    /// counts them itself (an NBD connection does), so a report can quote
    /// the depth the target saw rather than the depth asked for. `None`
    /// when the target does not count.
    fn max_in_flight(&self) -> Option<usize> {
        None
    }

    /// The counters of a target that reconnects when lost (see
    /// [`reconnect`]); `None` for one that cannot come back.
    fn loss_counters(&self) -> Option<Arc<LossCounters>> {
        None
    }

    /// Which of discard and write-zeroes this target carries out, and what
    /// it promises a read of a discarded range returns.
    fn space_ops(&self) -> SpaceOps {
        SpaceOps::default()
    }

    /// Give `len` bytes at `offset` back to the storage (trim, unmap, hole
    /// punch). What a later read returns is [`SpaceOps::discard_reads`].
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Err(unsupported("discard"))
    }

    /// Make `len` bytes at `offset` read as zeros; with `zero.unmap` the
    /// target may deallocate them to do it (else they stay allocated).
    fn write_zeroes(&self, offset: u64, len: u64, zero: ZeroFlags) -> io::Result<()> {
        let _ = (offset, len, zero);
        Err(unsupported("write-zeroes"))
    }
}

/// How a write-zeroes is asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZeroFlags {
    /// The target may deallocate the range (NBD without `NO_HOLE`, a hole
    /// punch on a file, an unmapping write-zeroes on a device).
    pub unmap: bool,
    /// Ask the target to fail rather than zero slowly (NBD `FAST_ZERO`);
    /// the target then zeroes without it.
    pub fast: bool,
}

/// What a read of a discarded block may return: the promise the verify of
/// a discarded block holds the target to (docs/CONTRACT.md, discard).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscardReads {
    /// Zeros, always.
    Zeroes,
    /// What the block held before the discard (the target ignores it).
    Previous,
    /// Either, per block (NBD promises nothing more).
    Any,
}

impl DiscardReads {
    pub fn parse(text: &str) -> Result<DiscardReads, String> {
        match text {
            "zeroes" | "zeros" => Ok(DiscardReads::Zeroes),
            "previous" => Ok(DiscardReads::Previous),
            "any" => Ok(DiscardReads::Any),
            _ => Err(format!(
                "bad --discard-reads '{text}': use zeroes, previous or any"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DiscardReads::Zeroes => "zeroes",
            DiscardReads::Previous => "previous",
            DiscardReads::Any => "any",
        }
    }
}

/// A target's discard and write-zeroes support.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaceOps {
    /// Discards are carried out (or accepted: see `discard_reads`).
    pub discard: bool,
    /// Write-zeroes is carried out.
    pub write_zeroes: bool,
    /// The target offers a fast-zero request (NBD `FAST_ZERO`).
    pub fast_zero: bool,
    /// Discards act on whole units of this many bytes (0: not told).
    pub discard_granularity: u64,
    /// Largest discard or write-zeroes the target takes at once, bytes
    /// (0: no limit); longer ones are split.
    pub max_bytes: u64,
    /// What the target promises a read of a discarded range returns, where
    /// it says (None: it does not; the verify then accepts either).
    pub discard_reads: Option<DiscardReads>,
}

/// The error of a space operation a target does not carry out.
pub fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("the target does not support {what}"),
    )
}

/// What a reconnecting target counts: its connections so far (the epoch:
/// a write completed on an earlier one is made durable only by a flush on
/// that one) and the IOs that failed with a loss and were issued again.
#[derive(Debug, Default)]
pub struct LossCounters {
    epoch: std::sync::atomic::AtomicU64,
    failed_ios: std::sync::atomic::AtomicU64,
}

impl LossCounters {
    /// Reconnects so far; a new value means a new connection (or a reopened
    /// device), which owes nothing for the old one's unflushed writes.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// IOs that failed because the target was lost (each issued again).
    pub fn failed_ios(&self) -> u64 {
        self.failed_ios.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn count_failed_io(&self) {
        self.failed_ios
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn next_epoch(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The error inside an [`io::Error`] that says the target failed as a whole
/// (its server went away or stopped answering), not one read or write: no
/// block can be judged by what such an IO did.
#[derive(Debug)]
pub struct TargetLost(pub String);

impl fmt::Display for TargetLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TargetLost {}

/// An IO error saying the target is lost, with `kind` for callers that look.
pub fn target_lost(kind: io::ErrorKind, message: String) -> io::Error {
    io::Error::new(kind, TargetLost(message))
}

/// Whether `error` means the whole target is gone rather than one IO
/// failing: a [`TargetLost`] (an NBD connection that broke or timed out), or
/// the errnos a vanished device or a server shutting down gives
/// (ENODEV, ENXIO, ESHUTDOWN). EIO is not one: a device that still answers
/// gives it for the sectors it cannot read.
pub fn is_target_lost(error: &io::Error) -> bool {
    use rustix::io::Errno;
    if error
        .get_ref()
        .is_some_and(|inner| inner.is::<TargetLost>())
    {
        return true;
    }
    error.raw_os_error().is_some_and(|raw| {
        [Errno::NODEV, Errno::NXIO, Errno::SHUTDOWN]
            .iter()
            .any(|errno| errno.raw_os_error() == raw)
    })
}

/// How a command wants its target opened.
#[derive(Clone, Debug, Default)]
pub struct OpenRequest {
    /// Open for writing (write, run); verify and inspect only read.
    pub write: bool,
    /// Regular files: create or extend (sparse) to this many bytes.
    pub create_size: Option<u64>,
    /// Bypass the page cache where the target allows it.
    pub direct: bool,
    /// Override the safety refusals for block devices.
    pub force: bool,
}

/// What to do when the target is lost in the middle of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LossPolicy {
    /// Keep trying to reopen a lost target for this long, then resume;
    /// `None`: a lost target ends the run.
    pub reconnect_timeout: Option<std::time::Duration>,
    /// An NBD request unanswered this long counts as the server lost
    /// (`None`: [`nbd::REQUEST_TIMEOUT`]).
    pub nbd_request_timeout: Option<std::time::Duration>,
}

/// Open TARGET as [`open`] does, under `policy`: with a reconnect timeout,
/// the target is reopened when lost (see [`reconnect`]).
pub fn open_with(
    uri: &str,
    request: &OpenRequest,
    policy: &LossPolicy,
) -> crate::error::Result<Arc<dyn Target>> {
    let opener = reconnect::Opener::new(uri, request, policy);
    let target = opener.open()?;
    Ok(match policy.reconnect_timeout {
        Some(timeout) if !timeout.is_zero() => Arc::new(reconnect::Reconnecting::new(
            target,
            opener,
            timeout,
            Box::new(|line| eprintln!("note: {line}")),
        )),
        _ => Arc::from(target),
    })
}

/// Whether TARGET names an NBD export rather than a path.
pub fn is_nbd_uri(uri: &str) -> bool {
    uri.starts_with("nbd:") || uri.starts_with("nbd+") || uri.starts_with("nbds")
}

/// Open TARGET as the user named it: an `nbd://` or `nbd+unix://` URI, a
/// block device, or a regular file.
pub fn open(uri: &str, request: &OpenRequest) -> crate::error::Result<Box<dyn Target>> {
    open_with_nbd(uri, request, &nbd::NbdOptions::default())
}

fn open_with_nbd(
    uri: &str,
    request: &OpenRequest,
    nbd_options: &nbd::NbdOptions,
) -> crate::error::Result<Box<dyn Target>> {
    if uri.is_empty() {
        return Err(crate::error::Error::usage(
            "TARGET is empty; give an image file, a block device or an nbd:// URI",
        ));
    }
    if is_nbd_uri(uri) {
        return Ok(Box::new(nbd::NbdTarget::open_with(
            uri,
            request,
            nbd_options,
        )?));
    }
    let path = std::path::Path::new(uri);
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_block_device() {
            let device = blockdev::BlockDeviceTarget::open(path, uri, request)?;
            return Ok(Box::new(device));
        }
    }
    Ok(Box::new(file::FileTarget::open(path, uri, request)?))
}
