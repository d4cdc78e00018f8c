//! IOs in flight: building each SQE from an op's state, sending the SQ,
//! and deciding from each completion whether the IO is done, continues after
//! a short transfer, is retried, or failed.

use std::io;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types};

use super::{FileRef, UringEngine};
use crate::buf::AlignedBuf;
use crate::engine::{Completion, IoKind};
use crate::stamp::WriteStamps;

/// How often one IO is retried after `-EAGAIN` or `-EINTR` before the error
/// is reported as its result.
const MAX_RETRIES: u32 = 8;
/// `user_data` of the cancel requests sent when the engine is dropped.
const CANCEL_USER_DATA: u64 = u64::MAX;

/// Build an opcode with the right kind of file reference (the crate's
/// trait for "Fd or Fixed" is sealed, so it cannot be named in a generic).
macro_rules! with_file {
    ($file:expr, |$fd:ident| $body:expr) => {
        match $file {
            FileRef::Registered => {
                let $fd = types::Fixed(0);
                $body
            }
            FileRef::Raw(raw) => {
                let $fd = types::Fd(raw);
                $body
            }
        }
    };
}

/// An IO the kernel has (or is about to have): owns its buffer until the
/// completion is reaped.
pub(super) struct Op {
    pub(super) id: u64,
    pub(super) kind: IoKind,
    pub(super) buf: AlignedBuf,
    /// Its stamps, built into `buf` before it was queued, for the completion.
    pub(super) stamps: Option<WriteStamps>,
    /// Index in the ring's registered buffers when `buf` is one of them.
    pub(super) fixed: Option<u16>,
    /// Bytes already moved by earlier, short, completions.
    pub(super) done: usize,
    /// Retries after `-EAGAIN` / `-EINTR` so far.
    pub(super) retries: u32,
    /// When the io_uring_enter that sent the IO began; `None` while it waits
    /// in the SQ. Latency runs from here to the reap that finds its last
    /// completion, retries and resubmitted parts included.
    pub(super) submitted: Option<Instant>,
}

/// What to do after a completion, given what the IO asked for.
#[derive(Debug)]
enum Step {
    /// The IO is complete.
    Done,
    /// A short transfer: send the rest, from `done` bytes in.
    Continue { done: usize },
    /// A transient failure: send the same again.
    Retry,
    /// The IO failed; this is its result.
    Failed(io::Error),
}

/// fallocate modes of discards and write-zeroes (always keeping the size).
const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
const ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;

/// Decide what a completion result `res` means for an IO of `len` bytes of
/// which `done` had moved before, after `retries` retries.
fn next_step(kind: IoKind, len: usize, done: usize, res: i32, retries: u32) -> Step {
    if res < 0 {
        let errno = -res;
        if (errno == libc::EAGAIN || errno == libc::EINTR) && retries < MAX_RETRIES {
            return Step::Retry;
        }
        return Step::Failed(io::Error::from_raw_os_error(errno));
    }
    let done = done + res as usize;
    match kind {
        // These move no bytes: success is the whole of them, whatever
        // buffer came with them.
        IoKind::Flush | IoKind::Discard { .. } | IoKind::Zero { .. } => Step::Done,
        _ if done >= len => Step::Done,
        IoKind::Read { offset } if res == 0 => Step::Failed(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("short read at offset {offset}: end of target after {done} of {len} bytes"),
        )),
        IoKind::Write { offset, .. } if res == 0 => Step::Failed(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write at offset {offset}: the target took {done} of {len} bytes"),
        )),
        _ => Step::Continue { done },
    }
}

impl UringEngine {
    /// The SQE for the next part of the IO in `slot`.
    pub(super) fn entry(&mut self, slot: usize) -> squeue::Entry {
        let file = self.file;
        let discard_through_ring = self
            .blockdev
            .as_ref()
            .is_some_and(|device| device.discards_through_ring());
        let op = self.ops[slot].as_mut().expect("live op slot");
        let done = op.done;
        let len = (op.buf.len() - done) as u32;
        let entry = match op.kind {
            IoKind::Write { offset, fua } => {
                let flags = if fua { libc::RWF_DSYNC } else { 0 };
                // SAFETY: `done` is 0 or, for the rest of a short transfer,
                // less than `buf.len()`: the pointer stays in the buffer.
                let ptr = unsafe { op.buf.as_ptr().add(done) };
                let offset = offset + done as u64;
                match op.fixed {
                    Some(index) => {
                        with_file!(file, |fd| opcode::WriteFixed::new(fd, ptr, len, index)
                            .offset(offset)
                            .rw_flags(flags)
                            .build())
                    }
                    None => with_file!(file, |fd| opcode::Write::new(fd, ptr, len)
                        .offset(offset)
                        .rw_flags(flags)
                        .build()),
                }
            }
            IoKind::Read { offset } => {
                // SAFETY: as for writes.
                let ptr = unsafe { op.buf.as_mut_ptr().add(done) };
                let offset = offset + done as u64;
                match op.fixed {
                    Some(index) => {
                        with_file!(file, |fd| opcode::ReadFixed::new(fd, ptr, len, index)
                            .offset(offset)
                            .build())
                    }
                    None => with_file!(file, |fd| opcode::Read::new(fd, ptr, len)
                        .offset(offset)
                        .build()),
                }
            }
            IoKind::Flush => with_file!(file, |fd| opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build()),
            // A discard or write-zeroes: fallocate on the file or device.
            // On a file a punched hole reads as zeros; on a block device
            // the kernel turns PUNCH_HOLE into an unmapping write-zeroes
            // and ZERO_RANGE into one that keeps the blocks allocated.
            // On a block device, a discard is BLOCK_URING_CMD_DISCARD.
            IoKind::Discard { offset, len } if discard_through_ring => {
                super::blockdev::discard_entry(file, offset, len)
            }
            IoKind::Discard { offset, len } => {
                with_file!(file, |fd| opcode::Fallocate::new(fd, len)
                    .offset(offset)
                    .mode(PUNCH_HOLE)
                    .build())
            }
            IoKind::Zero { offset, len, zero } => {
                let mode = if zero.unmap { PUNCH_HOLE } else { ZERO_RANGE };
                with_file!(file, |fd| opcode::Fallocate::new(fd, len)
                    .offset(offset)
                    .mode(mode)
                    .build())
            }
        };
        let entry = entry.user_data(slot as u64);
        if op.retries > 0 {
            // A retry after -EAGAIN: issue it from the kernel's blocking
            // workers, where a busy device makes the IO wait, not fail.
            entry.flags(squeue::Flags::ASYNC)
        } else {
            entry
        }
    }

    /// Put `entry` on the SQ, sending the SQ to the kernel first if full.
    pub(super) fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every buffer an entry points at is owned by its op in
            // `self.ops` and is neither freed nor moved (it lives on the heap)
            // until that op's last completion is reaped, or in Drop leaked;
            // the fd stays open through `self._target` or the registration.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            // The burst is larger than the SQ: send what is there.
            self.enter(0)?;
        }
    }

    /// Move resubmissions waiting for room onto the SQ, as far as it has room.
    fn push_resubmissions(&mut self) {
        while let Some(&slot) = self.resubmit.last() {
            let entry = self.entry(slot);
            // SAFETY: as in `push`.
            if unsafe { self.ring.submission().push(&entry) }.is_err() {
                return;
            }
            self.resubmit.pop();
        }
    }

    /// One `io_uring_enter`: send the SQ and wait for up to `want`
    /// completions. Returns early, without error, on conditions that reaping
    /// resolves; callers loop on what they need.
    pub(super) fn enter(&mut self, want: usize) -> io::Result<()> {
        self.push_resubmissions();
        // Only IOs in the kernel or on the SQ can complete: never wait for more.
        let want = want.min(self.live_ops - self.resubmit.len());
        let now = Instant::now();
        for slot in self.unsent.drain(..) {
            if let Some(op) = self.ops[slot].as_mut() {
                op.submitted.get_or_insert(now);
            }
        }
        loop {
            let error = match self.ring.submit_and_wait(want) {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            match error.raw_os_error() {
                // A signal arrived while waiting: nothing is lost, enter again.
                Some(libc::EINTR) => continue,
                // EBUSY: completions are backed up beyond the CQ; EAGAIN: the
                // kernel is short of memory for requests. Make room by reaping.
                Some(libc::EBUSY) | Some(libc::EAGAIN) => {
                    if self.reap()? == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    return Ok(());
                }
                // The kernel dropped completions since the last enter.
                Some(libc::EBADR) => {
                    self.reap()?;
                    self.lost = self.lost.max(1);
                    return self.check_healthy();
                }
                _ => return Err(error),
            }
        }
    }

    /// Take every completion off the CQ. Returns how many there were.
    pub(super) fn reap(&mut self) -> io::Result<usize> {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(self.ring.completion());
        let reaped = cqes.len();
        for cqe in cqes.drain(..) {
            self.finish(cqe.user_data(), cqe.result());
        }
        self.cqes = cqes;
        let dropped = self
            .ring
            .completion()
            .overflow()
            .wrapping_sub(self.dropped_baseline);
        if dropped as usize > self.lost {
            self.lost = dropped as usize;
        }
        self.check_healthy()?;
        Ok(reaped)
    }

    /// Handle one completion of the IO in slot `user_data`.
    fn finish(&mut self, user_data: u64, res: i32) {
        if user_data == CANCEL_USER_DATA {
            return;
        }
        let slot = user_data as usize;
        let closing = self.closing;
        match self.block_device_fallback(slot, res) {
            Some(super::blockdev::FallBack::Resubmit) => {
                self.resubmit.push(slot);
                return;
            }
            Some(super::blockdev::FallBack::Finished(result)) => {
                self.retire(slot, result);
                return;
            }
            None => {}
        }
        let Some(op) = self.ops.get_mut(slot).and_then(Option::as_mut) else {
            debug_assert!(false, "completion for unknown slot {slot}");
            return;
        };
        if res == -libc::EOPNOTSUPP
            && self.blockdev.is_none()
            && let IoKind::Zero { zero, .. } = &mut op.kind
            && !zero.unmap
        {
            // No FALLOC_FL_ZERO_RANGE on this filesystem (tmpfs): on a
            // file a punched hole reads as zeros too.
            zero.unmap = true;
            self.resubmit.push(slot);
            return;
        }
        match next_step(op.kind, op.buf.len(), op.done, res, op.retries) {
            Step::Done => self.retire(slot, Ok(())),
            Step::Failed(error) => self.retire(slot, Err(error)),
            Step::Continue { .. } | Step::Retry if closing => self.retire(
                slot,
                Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "engine dropped mid-IO",
                )),
            ),
            Step::Continue { done } => {
                op.done = done;
                self.resubmit.push(slot);
            }
            Step::Retry => {
                op.retries += 1;
                self.resubmit.push(slot);
            }
        }
    }

    /// The IO in `slot` is over: hand it to the caller's next `complete`.
    pub(super) fn retire(&mut self, slot: usize, result: io::Result<()>) {
        let op = self.ops[slot].take().expect("live op slot");
        self.free_slots.push(slot);
        self.live_ops -= 1;
        self.ready.push(Completion {
            id: op.id,
            kind: op.kind,
            buf: op.buf,
            stamps: op.stamps,
            result,
            latency: op.submitted.map(|at| at.elapsed()).unwrap_or_default(),
        });
    }

    /// Wait for every IO the kernel still has, cancelling what can be.
    pub(super) fn drain_for_drop(&mut self) {
        self.closing = true;
        for slot in std::mem::take(&mut self.resubmit) {
            let error = io::Error::new(io::ErrorKind::Interrupted, "engine dropped mid-IO");
            self.retire(slot, Err(error));
        }
        let live: Vec<usize> = (0..self.ops.len())
            .filter(|&s| self.ops[s].is_some())
            .collect();
        for slot in live {
            // Reads on pipes or sockets may wait forever; disk IO already
            // under way cannot be cancelled and simply finishes.
            let cancel = opcode::AsyncCancel::new(slot as u64)
                .build()
                .user_data(CANCEL_USER_DATA);
            if self.push(&cancel).is_err() {
                break;
            }
        }
        while self.live_ops > self.lost {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(error)
                    if matches!(
                        error.raw_os_error(),
                        Some(libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::EBADR)
                    ) => {}
                // The ring stopped answering: what is live gets leaked.
                Err(_) => break,
            }
            // Errors here only report dropped completions, which `lost` counts.
            let _ = self.reap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: IoKind = IoKind::Read { offset: 8192 };
    const WRITE: IoKind = IoKind::Write {
        offset: 8192,
        fua: false,
    };

    #[test]
    fn a_short_transfer_continues_from_where_it_stopped() {
        assert!(matches!(
            next_step(READ, 4096, 0, 1000, 0),
            Step::Continue { done: 1000 }
        ));
        assert!(matches!(
            next_step(WRITE, 4096, 1000, 3000, 0),
            Step::Continue { done: 4000 }
        ));
        assert!(matches!(next_step(WRITE, 4096, 4000, 96, 0), Step::Done));
    }

    #[test]
    fn zero_bytes_moved_is_end_of_target() {
        let Step::Failed(error) = next_step(READ, 8192, 5904, 0, 0) else {
            panic!()
        };
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            error.to_string(),
            "short read at offset 8192: end of target after 5904 of 8192 bytes"
        );
        let Step::Failed(error) = next_step(WRITE, 4096, 0, 0, 0) else {
            panic!()
        };
        assert_eq!(error.kind(), io::ErrorKind::WriteZero);
    }

    #[test]
    fn eagain_and_eintr_are_retried_a_bounded_number_of_times() {
        assert!(matches!(
            next_step(WRITE, 4096, 0, -libc::EAGAIN, 0),
            Step::Retry
        ));
        assert!(matches!(
            next_step(IoKind::Flush, 0, 0, -libc::EINTR, 3),
            Step::Retry
        ));
        let Step::Failed(error) = next_step(WRITE, 4096, 0, -libc::EAGAIN, MAX_RETRIES) else {
            panic!()
        };
        assert_eq!(error.raw_os_error(), Some(libc::EAGAIN));
    }

    #[test]
    fn other_errors_are_the_result_with_their_errno() {
        let Step::Failed(error) = next_step(READ, 4096, 0, -libc::EIO, 0) else {
            panic!()
        };
        assert_eq!(error.raw_os_error(), Some(libc::EIO));
        assert!(matches!(next_step(IoKind::Flush, 0, 0, 0, 0), Step::Done));
        assert!(matches!(next_step(READ, 0, 0, 0, 0), Step::Done));
    }

    #[test]
    fn a_discard_or_zeroing_is_done_when_it_succeeds_whatever_its_buffer() {
        let discard = IoKind::Discard {
            offset: 8192,
            len: 4096,
        };
        assert!(matches!(next_step(discard, 4096, 0, 0, 0), Step::Done));
        let zero = IoKind::Zero {
            offset: 8192,
            len: 4096,
            zero: crate::storage::ZeroFlags::default(),
        };
        assert!(matches!(next_step(zero, 4096, 0, 0, 0), Step::Done));
    }
}
