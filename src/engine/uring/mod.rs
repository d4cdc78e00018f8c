//! The io_uring engine: one ring per engine, the target's fd and a pool of
//! IO buffers registered with the kernel.
//!
//! `submit` only fills submission-queue entries; `kick` sends the whole burst
//! with one `io_uring_enter`, which is what lets the target see the burst of
//! non-contiguous writes the product exists to provoke.
//!
//! What the kernel can do that the engine defends against:
//!
//! - **Short transfers.** A read or write may move fewer bytes than asked:
//!   at the end of a file, on some block drivers, on pipes and sockets. The
//!   remainder is resubmitted from where the kernel stopped; a transfer of
//!   zero bytes is end of target and reported as `UnexpectedEof` (reads) or
//!   `WriteZero` (writes). The buffer then holds what was moved.
//! - **`-EAGAIN` / `-EINTR` in a completion.** Retried a few times, forced
//!   onto the kernel's blocking workers (IOSQE_ASYNC) where a full device
//!   queue makes the IO wait instead of failing.
//! - **`EINTR`, `EBUSY`, `EAGAIN` from `io_uring_enter`.** A signal, or
//!   completions backed up beyond the completion queue, or a kernel short of
//!   memory: reap what is there and enter again.
//! - **Completion-queue overflow.** The CQ holds twice the queue depth, so it
//!   does not overflow in normal use; when it does anyway (a caller that
//!   submits past the queue depth), the kernel keeps the extra completions
//!   (IORING_FEAT_NODROP, required) and the engine flushes them by entering
//!   again until the overflow flag is clear. Completions the kernel had to
//!   drop (it could not allocate room for them) are counted and turn every
//!   later call into an error: their IOs' outcome is unknown.
//! - **A full submission queue.** The SQ is the queue depth (at most 4096);
//!   a burst that does not fit is sent in parts.
//!
//! Ordering: a `Flush` is an `fsync(DATASYNC)` that covers the writes that
//! completed before it was submitted, exactly as
//! [`IoKind::Flush`](crate::engine::IoKind::Flush) says. The caller
//! guarantees the order (the writer reaps the writes a flush must cover,
//! then submits the flush); the engine adds no IOSQE_IO_DRAIN, which would
//! stall every later IO of the burst behind the flush.
//!
//! FUA: a write with `fua` carries RWF_DSYNC, which the kernel turns into a
//! FUA write on devices that support it (and a cache flush after the write
//! on those that do not).
//!
//! Registered buffers: `take_buffer` lends buffers of the registered pool,
//! and `submit` recognises them by address. The kernel holds on to the pages
//! it registered, not to the address, so a lent buffer must come back through
//! `submit` or `recycle`, or be dropped only after the engine: were one freed
//! while the engine lives and a new buffer allocated at its address, a fixed
//! write of the new buffer would send the old pages.
//!
//! Discards and write-zeroes are IORING_OP_FALLOCATE on files; on a block
//! device (found with fstat when the engine is made) a discard is
//! BLOCK_URING_CMD_DISCARD, or BLKDISCARD on the submitting thread where
//! the kernel lacks it (`blockdev`).
//!
//! Here: the engine and its ring. `probe` says what the kernel supports,
//! `pool` keeps the registered buffers, `ops` turns IOs into SQEs and
//! completions back into results, `blockdev` carries a device's discards.

mod blockdev;
mod ops;
mod pool;
mod probe;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use io_uring::{IoUring, cqueue};

use self::ops::Op;
use self::pool::{BufferPool, register_pool};
use self::probe::check_ring;
pub use self::probe::{probe, unavailable_reason};
use super::{Completion, Engine, Io};
use crate::buf::AlignedBuf;
use crate::storage::Target;

/// How SQEs name the target's file.
#[derive(Clone, Copy, Debug)]
pub(super) enum FileRef {
    /// Index 0 of the ring's registered files: spares the kernel an fd
    /// lookup and reference count per IO.
    Registered,
    /// Registration failed; use the descriptor itself.
    Raw(RawFd),
}

/// The kernel's limit on SQ entries is 32768; past 4096 a bigger ring buys
/// nothing but memory, since bursts larger than the SQ are sent in parts.
const MAX_SQ_ENTRIES: usize = 4096;
/// The kernel's limit on CQ entries (IORING_MAX_CQ_ENTRIES).
const MAX_CQ_ENTRIES: usize = 65536;

/// A ring whose completions do not interrupt the thread (what fio sets up
/// too): the kernel posts them at the engine's next enter instead of
/// signalling the task for each (COOP_TASKRUN, Linux 5.19; older kernels
/// reject the flag and get the plain ring). The flag tells the engine when
/// completions are waiting to be posted (TASKRUN_FLAG), so `complete`
/// enters to collect them. DEFER_TASKRUN, which fio adds, measured no better
/// here and would bind the ring to the thread that created it.
fn build_ring(sq_entries: u32, cq_entries: u32) -> io::Result<IoUring> {
    let mut builder = IoUring::builder();
    builder
        .setup_cqsize(cq_entries)
        .setup_clamp()
        .setup_coop_taskrun()
        .setup_taskrun_flag();
    match builder.build(sq_entries) {
        // EINVAL: a kernel before 5.19, which does not know the flags.
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_cqsize(cq_entries)
            .setup_clamp()
            .build(sq_entries),
        built => built,
    }
}

/// The io_uring engine. See the module documentation.
pub struct UringEngine {
    ring: IoUring,
    /// Never read: holds the target's fd open for as long as the ring lives.
    _target: Arc<dyn Target>,
    file: FileRef,
    queue_depth: usize,
    pool: BufferPool,
    /// Why buffers could not be registered, when they could not.
    registration_note: Option<String>,
    /// IOs the kernel has or will have; the slot index is the `user_data`.
    ops: Vec<Option<Op>>,
    free_slots: Vec<usize>,
    live_ops: usize,
    /// Slots of new IOs pushed to the SQ and not yet sent to the kernel.
    unsent: Vec<usize>,
    /// Slots whose next part (or retry) has not found room in the SQ yet.
    resubmit: Vec<usize>,
    /// Finished IOs not yet returned by `complete`.
    ready: Vec<Completion>,
    /// Reused between reaps.
    cqes: Vec<cqueue::Entry>,
    /// The kernel's count of dropped completions when the ring was new.
    dropped_baseline: u32,
    /// Completions the kernel dropped: their IOs' outcome is unknown.
    lost: usize,
    /// In Drop: finish IOs instead of retrying them.
    closing: bool,
    /// The target is a block device (see [`blockdev`]).
    blockdev: Option<blockdev::BlockDevice>,
}

impl UringEngine {
    /// An engine over `target`'s fd with `queue_depth` registered buffers of
    /// `max_io_bytes` each.
    ///
    /// Fails with the raw errno of `io_uring_setup` when the kernel refuses
    /// io_uring (ENOSYS, EPERM from seccomp or `kernel.io_uring_disabled`),
    /// and with `ErrorKind::Unsupported` when the target has no fd or the
    /// kernel lacks a feature; [`unavailable_reason`] words either for a note.
    /// Buffers that cannot be registered (RLIMIT_MEMLOCK) are not an error:
    /// IO then goes through plain reads and writes, and
    /// [`UringEngine::registration_note`] says why.
    pub fn new(
        target: Arc<dyn Target>,
        queue_depth: usize,
        max_io_bytes: usize,
    ) -> io::Result<UringEngine> {
        let queue_depth = queue_depth.max(1);
        let sq_entries = queue_depth.min(MAX_SQ_ENTRIES);
        // Twice the queue depth: room for every IO's completion plus the
        // cancellations sent on drop, so the CQ never overflows in normal use.
        let cq_entries = (2 * queue_depth).clamp(2 * sq_entries, MAX_CQ_ENTRIES);
        Self::with_ring_entries(target, queue_depth, max_io_bytes, sq_entries, cq_entries)
    }

    /// `new` with the ring sizes given: tests use a ring smaller than the
    /// queue depth to make the SQ fill up and the CQ overflow.
    fn with_ring_entries(
        target: Arc<dyn Target>,
        queue_depth: usize,
        max_io_bytes: usize,
        sq_entries: usize,
        cq_entries: usize,
    ) -> io::Result<UringEngine> {
        let Some(raw_fd) = target.raw_fd().map(|fd| fd.as_raw_fd()) else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "target {} has no file descriptor for io_uring",
                    target.info().uri
                ),
            ));
        };
        let mut ring = build_ring(sq_entries as u32, cq_entries as u32)?;
        check_ring(&ring).map_err(|reason| io::Error::new(io::ErrorKind::Unsupported, reason))?;
        let file = match ring.submitter().register_files(&[raw_fd]) {
            Ok(()) => FileRef::Registered,
            Err(_) => FileRef::Raw(raw_fd),
        };
        let blockdev = target
            .raw_fd()
            .and_then(|fd| blockdev::BlockDevice::detect(&ring, fd, raw_fd, &target.info().uri));
        let (pool, registration_note) = register_pool(&ring, queue_depth, max_io_bytes);
        let dropped_baseline = ring.completion().overflow();
        Ok(UringEngine {
            ring,
            _target: target,
            file,
            queue_depth,
            pool,
            registration_note,
            ops: Vec::with_capacity(queue_depth),
            free_slots: Vec::new(),
            live_ops: 0,
            unsent: Vec::new(),
            resubmit: Vec::new(),
            ready: Vec::new(),
            cqes: Vec::with_capacity(cq_entries),
            dropped_baseline,
            lost: 0,
            closing: false,
            blockdev,
        })
    }

    /// Whether IOs on `take_buffer` buffers use registered (fixed) buffers.
    pub fn fixed_buffers(&self) -> bool {
        !self.pool.index_by_addr.is_empty()
    }

    /// Why the buffer pool is not registered with the kernel, if it is not.
    pub fn registration_note(&self) -> Option<&str> {
        self.registration_note.as_deref()
    }

    /// On a block device, whether discards go through the ring
    /// (BLOCK_URING_CMD_DISCARD) rather than BLKDISCARD on the submitting
    /// thread; `None` when the target is not a block device. Can turn false
    /// after the first discard shows the kernel lacks the command.
    pub fn block_device_discards_through_ring(&self) -> Option<bool> {
        self.blockdev
            .as_ref()
            .map(|device| device.discards_through_ring())
    }

    fn check_healthy(&self) -> io::Result<()> {
        if self.lost > 0 {
            return Err(io::Error::other(format!(
                "the kernel dropped {} io_uring completions (out of memory): \
                 the outcome of that many IOs is unknown",
                self.lost
            )));
        }
        Ok(())
    }
}

impl Engine for UringEngine {
    fn name(&self) -> &'static str {
        "uring"
    }

    fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    fn in_flight(&self) -> usize {
        self.live_ops + self.ready.len()
    }

    /// A registered buffer when one of `max_io_bytes` or less is free (its
    /// contents are whatever its last IO left), else a fresh zeroed one. An
    /// IO without data (a flush) gets no registered buffer: callers need
    /// not hand its buffer back, and the pool stays whole for the writes.
    fn take_buffer(&mut self, len: usize) -> AlignedBuf {
        if len > 0
            && len <= self.pool.capacity
            && let Some(mut buf) = self.pool.free.pop()
        {
            buf.set_len(len);
            return buf;
        }
        AlignedBuf::new(len)
    }

    fn recycle(&mut self, buf: AlignedBuf) {
        if self.pool.fixed_index(&buf).is_some() {
            self.pool.free.push(buf);
        }
    }

    fn submit(&mut self, mut io: Io) -> io::Result<()> {
        self.check_healthy()?;
        if u32::try_from(io.buf.len()).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "IO of {} bytes is larger than io_uring allows (4 GiB)",
                    io.buf.len()
                ),
            ));
        }
        io.build_stamps();
        let fixed = self.pool.fixed_index(&io.buf);
        let op = Op {
            id: io.id,
            kind: io.kind,
            buf: io.buf,
            stamps: io.stamps,
            fixed,
            done: 0,
            retries: 0,
            submitted: None,
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.ops[slot] = Some(op);
                slot
            }
            None => {
                self.ops.push(Some(op));
                self.ops.len() - 1
            }
        };
        self.live_ops += 1;
        if let Some(result) = self.block_device_space_op_now(io.kind) {
            // Refused, or carried out here: complete at once.
            if let Some(op) = self.ops[slot].as_mut() {
                op.submitted = Some(std::time::Instant::now());
            }
            self.retire(slot, result);
            return Ok(());
        }
        let entry = self.entry(slot);
        if let Err(error) = self.push(&entry) {
            // Never queued: the kernel does not know this IO.
            self.ops[slot] = None;
            self.free_slots.push(slot);
            self.live_ops -= 1;
            return Err(error);
        }
        self.unsent.push(slot);
        Ok(())
    }

    fn kick(&mut self) -> io::Result<()> {
        self.check_healthy()?;
        while !self.ring.submission().is_empty() || !self.resubmit.is_empty() {
            self.enter(0)?;
        }
        Ok(())
    }

    fn complete(&mut self, min: usize) -> io::Result<Vec<Completion>> {
        self.check_healthy()?;
        let min = min.min(self.in_flight());
        loop {
            self.reap()?;
            // Completions the CQ had no room for wait in the kernel until an
            // enter flushes them: never return while any are there.
            // So do completions waiting for this task to enter the kernel
            // (IORING_SQ_TASKRUN).
            let backlog = self.ring.submission().cq_overflow() || self.ring.submission().taskrun();
            let unsent = !self.ring.submission().is_empty() || !self.resubmit.is_empty();
            if self.ready.len() >= min && !backlog && !unsent {
                break;
            }
            self.enter(min.saturating_sub(self.ready.len()))?;
        }
        Ok(std::mem::take(&mut self.ready))
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        // The kernel may still read from or DMA into the buffers of IOs in
        // flight: wait for each to complete before anything is freed.
        self.drain_for_drop();
        // What is still live belongs to completions the kernel dropped (or to
        // a ring that stopped answering): leak those buffers rather than free
        // memory the kernel may yet write into.
        let mut leaked = 0;
        for op in self.ops.drain(..).flatten() {
            std::mem::forget(op.buf);
            leaked += 1;
        }
        if leaked == 0 {
            // Some kernels make unregistering wait for requests that use the
            // buffers; with none in flight it returns at once. Otherwise
            // closing the ring releases the registrations when it can.
            let submitter = self.ring.submitter();
            let _ = submitter.unregister_buffers();
            let _ = submitter.unregister_files();
        }
        // Then the ring is closed and the pool frees the buffers not lent out.
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::engine::IoKind;
    use crate::storage::OpenRequest;
    use crate::storage::file::FileTarget;

    /// A flush carries no data: however many the caller makes (dropping
    /// their buffers, as it may), every registered buffer stays in the pool.
    #[test]
    fn flushes_leave_the_registered_pool_whole() {
        if let Err(why) = probe() {
            eprintln!("skipped: io_uring unavailable here ({why})");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let request = OpenRequest {
            write: true,
            create_size: Some(1 << 20),
            direct: false,
            force: false,
        };
        let target: Arc<dyn Target> =
            Arc::new(FileTarget::open(&path, "disk.img", &request).unwrap());
        let mut engine = UringEngine::new(target, 4, 4096).unwrap();
        if !engine.fixed_buffers() {
            eprintln!("skipped: buffers not registered here");
            return;
        }
        let free_at_start = engine.pool.free.len();
        assert_eq!(free_at_start, 4);
        for id in 0..3 * free_at_start as u64 {
            let buf = engine.take_buffer(0);
            let kind = IoKind::Flush;
            engine
                .submit(Io {
                    id,
                    kind,
                    buf,
                    stamps: None,
                })
                .unwrap();
            for completion in engine.complete(1).unwrap() {
                completion.result.unwrap();
            }
        }
        assert_eq!(engine.pool.free.len(), free_at_start);
        let buf = engine.take_buffer(4096);
        assert!(
            engine.pool.fixed_index(&buf).is_some(),
            "writes still get one"
        );
    }

    /// A ring far smaller than the queue depth: submitting fills the SQ (sent
    /// in parts) and leaving the completions unreaped overflows the CQ.
    #[test]
    fn a_full_sq_and_an_overflowing_cq_lose_no_completion() {
        if let Err(why) = probe() {
            // The rule of tests/common/need.rs: skip on a laptop, fail in CI.
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(!ci, "io_uring unavailable in CI ({why})");
            eprintln!("skipped: io_uring unavailable here ({why})");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let request = OpenRequest {
            write: true,
            create_size: Some(1 << 20),
            direct: true,
            force: false,
        };
        let target: Arc<dyn Target> =
            Arc::new(FileTarget::open(&path, "disk.img", &request).unwrap());
        let ios = 64;
        let mut engine = UringEngine::with_ring_entries(target, ios, 4096, 4, 8).unwrap();
        assert_eq!(engine.ring.params().sq_entries(), 4);
        assert_eq!(engine.ring.params().cq_entries(), 8);
        for id in 0..ios as u64 {
            let mut buf = engine.take_buffer(4096);
            buf.fill(id as u8);
            let kind = IoKind::Write {
                offset: id * 4096,
                fua: false,
            };
            engine
                .submit(Io {
                    id,
                    kind,
                    buf,
                    stamps: None,
                })
                .unwrap();
        }
        engine.kick().unwrap();
        // Let every write finish while nothing reaps: 8 completions fit. An
        // enter posts the completions waiting for the task (COOP_TASKRUN) to
        // the CQ without taking any off it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !engine.ring.submission().cq_overflow() && Instant::now() < deadline {
            engine.ring.submit().unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            engine.ring.submission().cq_overflow(),
            "the CQ never overflowed"
        );
        assert_eq!(engine.in_flight(), ios);
        // Give the remaining writes time to finish, so that one non-waiting
        // `complete` must return all of them: the 8 in the CQ and the rest
        // from the kernel's overflow list.
        std::thread::sleep(Duration::from_millis(500));
        let mut ids: Vec<u64> = Vec::new();
        for completion in engine.complete(0).unwrap() {
            completion.result.unwrap();
            ids.push(completion.id);
        }
        assert_eq!(engine.in_flight(), 0);
        ids.sort_unstable();
        assert_eq!(ids, (0..ios as u64).collect::<Vec<_>>());
        let image = std::fs::read(&path).unwrap();
        for id in 0..ios {
            assert!(
                image[id * 4096..(id + 1) * 4096]
                    .iter()
                    .all(|&b| b == id as u8)
            );
        }
    }
}
