//! Discards on a block device under the io_uring engine.
//!
//! On a block device `IORING_OP_FALLOCATE` with PUNCH_HOLE is an unmapping
//! write-zeroes, not a discard, so a discard goes another way:
//! `IORING_OP_URING_CMD` with `BLOCK_URING_CMD_DISCARD` (Linux 6.12), the
//! asynchronous `BLKDISCARD`. Where the kernel lacks it (no URING_CMD
//! opcode, or a block layer without `uring_cmd`, which answers EOPNOTSUPP),
//! the discard is carried out with `ioctl(BLKDISCARD)` on the submitting
//! thread and completes at once, so the in-flight count stays right.
//! Write-zeroes stays IORING_OP_FALLOCATE (the storage module's
//! `blockdev::space` says why): only its EOPNOTSUPP fallback differs from a
//! file's.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use io_uring::{IoUring, opcode, register, squeue, types};

use super::FileRef;
use super::UringEngine;
use crate::engine::IoKind;
use crate::storage::blockdev::space::{self, QueueLimits};

/// `<linux/blkdev.h>`: `#define BLOCK_URING_CMD_DISCARD _IO(0x12, 0)`; the
/// range is the SQE's `addr` (start) and `addr3` (length), in bytes.
const BLOCK_URING_CMD_DISCARD: u32 = 0x12 << 8;

/// The engine's target is a block device: its limits and how its discards
/// are carried.
#[derive(Debug)]
pub(super) struct BlockDevice {
    /// The target's fd, for the synchronous BLKDISCARD (it stays open for
    /// the engine's life through the engine's hold on the target).
    raw_fd: RawFd,
    /// The target as the user named it, for messages.
    uri: String,
    pub(super) limits: QueueLimits,
    /// Discards go through URING_CMD; false once the kernel has shown it
    /// cannot, or when the opcode is missing.
    pub(super) uring_discard: bool,
}

impl BlockDevice {
    /// `Some` when `fd` is a block device.
    pub(super) fn detect(
        ring: &IoUring,
        fd: BorrowedFd<'_>,
        raw_fd: RawFd,
        uri: &str,
    ) -> Option<BlockDevice> {
        let limits = QueueLimits::of_fd(fd)?;
        let mut probe = register::Probe::new();
        let uring_discard = ring.submitter().register_probe(&mut probe).is_ok()
            && probe.is_supported(opcode::UringCmd16::CODE);
        Some(BlockDevice {
            raw_fd,
            uri: uri.to_string(),
            limits,
            uring_discard,
        })
    }

    /// Whether discards go through the ring (else [`Self::discard_now`]).
    pub(super) fn discards_through_ring(&self) -> bool {
        self.uring_discard
    }

    /// The whole-units check of `Target::discard`, for the engine's IOs.
    pub(super) fn check_discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.limits.check_discard(offset, len, &self.uri)
    }

    /// Discard with `ioctl(BLKDISCARD)` here and now.
    pub(super) fn discard_now(&self, offset: u64, len: u64) -> io::Result<()> {
        // SAFETY: the fd is the target's, open for the engine's life.
        let fd = unsafe { BorrowedFd::borrow_raw(self.raw_fd) };
        for (part_offset, part_len) in space::parts(offset, len, self.limits.max_bytes()) {
            space::blkdiscard(fd, part_offset, part_len)?;
        }
        Ok(())
    }

    /// A discard that came back with `errno` from the ring: EOPNOTSUPP
    /// (no `uring_cmd` on this kernel's block devices, or no discard on the
    /// device) or EINVAL (a kernel that does not know the command) is tried
    /// once more with BLKDISCARD, whose answer is final. When that one
    /// works, the ring's path is given up for this engine.
    pub(super) fn retry_failed_discard(
        &mut self,
        errno: i32,
        offset: u64,
        len: u64,
    ) -> Option<io::Result<()>> {
        if errno != libc::EOPNOTSUPP && errno != libc::EINVAL {
            return None;
        }
        let result = self.discard_now(offset, len);
        if result.is_ok() {
            self.uring_discard = false;
        }
        Some(result)
    }
}

/// The SQE of a discard of `len` bytes at `offset` through URING_CMD.
pub(super) fn discard_entry(file: FileRef, offset: u64, len: u64) -> squeue::Entry {
    let mut cmd = [0u8; 16];
    cmd[..8].copy_from_slice(&len.to_ne_bytes());
    match file {
        FileRef::Registered => opcode::UringCmd16::new(types::Fixed(0), BLOCK_URING_CMD_DISCARD)
            .addr(Some(offset))
            .cmd(cmd)
            .build(),
        FileRef::Raw(raw) => opcode::UringCmd16::new(types::Fd(raw), BLOCK_URING_CMD_DISCARD)
            .addr(Some(offset))
            .cmd(cmd)
            .build(),
    }
}

impl UringEngine {
    /// A block-device discard the ring does not carry: refused (not whole
    /// discard units) or carried out here with BLKDISCARD. `None`: the IO
    /// goes to the ring.
    pub(super) fn block_device_space_op_now(&self, kind: IoKind) -> Option<io::Result<()>> {
        let device = self.blockdev.as_ref()?;
        let IoKind::Discard { offset, len } = kind else {
            return None;
        };
        if let Err(refused) = device.check_discard(offset, len) {
            return Some(Err(refused));
        }
        (!device.discards_through_ring()).then(|| device.discard_now(offset, len))
    }

    /// What to do with a failed block-device space op instead of failing
    /// it: `Some(Ok(()))` when it was resubmitted, `Some(result)` when it
    /// finished another way, `None` when its error is its result.
    pub(super) fn block_device_fallback(&mut self, slot: usize, res: i32) -> Option<FallBack> {
        let device = self.blockdev.as_mut()?;
        let op = self.ops.get_mut(slot)?.as_mut()?;
        if res >= 0 {
            return None;
        }
        match &mut op.kind {
            IoKind::Discard { offset, len } => device
                .retry_failed_discard(-res, *offset, *len)
                .map(FallBack::Finished),
            // No WRITE ZEROES on the device: the unmapping form (PUNCH_HOLE)
            // has no write-zero-pages fallback; ZERO_RANGE has.
            IoKind::Zero { zero, .. } if zero.unmap && res == -libc::EOPNOTSUPP => {
                zero.unmap = false;
                Some(FallBack::Resubmit)
            }
            _ => None,
        }
    }
}

/// How a block-device space op that failed in the ring goes on.
pub(super) enum FallBack {
    /// Send it again (as changed).
    Resubmit,
    /// It finished outside the ring with this result.
    Finished(io::Result<()>),
}
