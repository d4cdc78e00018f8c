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
//! completed before it was submitted, exactly as [`IoKind::Flush`] says. The
//! caller guarantees the order (the writer reaps the writes a flush must
//! cover, then submits the flush); the engine adds no IOSQE_IO_DRAIN, which
//! would stall every later IO of the burst behind the flush.
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

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, register, squeue, types};

use super::{Completion, Engine, Io, IoKind};
use crate::buf::AlignedBuf;
use crate::storage::Target;

/// The kernel's limit on SQ entries is 32768; past 4096 a bigger ring buys
/// nothing but memory, since bursts larger than the SQ are sent in parts.
const MAX_SQ_ENTRIES: usize = 4096;
/// The kernel's limit on CQ entries (IORING_MAX_CQ_ENTRIES).
const MAX_CQ_ENTRIES: usize = 65536;
/// The kernel's limit on registered buffers (IORING_MAX_REG_BUFFERS) ...
const MAX_REGISTERED_BUFFERS: usize = 1 << 14;
/// ... and on the size of one registered buffer.
const MAX_REGISTERED_BUFFER_BYTES: usize = 1 << 30;
/// How often one IO is retried after `-EAGAIN` or `-EINTR` before the error
/// is reported as its result.
const MAX_RETRIES: u32 = 8;
/// `user_data` of the cancel requests sent when the engine is dropped.
const CANCEL_USER_DATA: u64 = u64::MAX;

/// Whether io_uring works here, and if not, why, in a few words for a note
/// such as "io_uring unavailable here (kernel.io_uring_disabled=2)".
pub fn probe() -> Result<(), String> {
    let ring = IoUring::new(2).map_err(|e| setup_failure_reason(&e))?;
    check_ring(&ring)
}

/// The reason `UringEngine::new` failed, in the words of [`probe`].
pub fn unavailable_reason(error: &io::Error) -> String {
    if error.raw_os_error().is_some() {
        setup_failure_reason(error)
    } else {
        error.to_string()
    }
}

fn setup_failure_reason(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::ENOSYS) => {
            "the kernel has no io_uring, or a seccomp filter hides it (ENOSYS)".to_string()
        }
        Some(libc::EPERM) => match read_io_uring_disabled() {
            Some(2) => "kernel.io_uring_disabled=2".to_string(),
            Some(1) => "kernel.io_uring_disabled=1 and this user is not in kernel.io_uring_group"
                .to_string(),
            _ => "io_uring_setup refused (EPERM): a seccomp filter or container policy blocks it"
                .to_string(),
        },
        Some(libc::ENOMEM) => {
            "no memory for the ring (ENOMEM; on kernels before 5.12 raise RLIMIT_MEMLOCK)"
                .to_string()
        }
        _ => format!("io_uring_setup failed: {error}"),
    }
}

fn read_io_uring_disabled() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()?
        .trim()
        .parse()
        .ok()
}

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

/// The features the engine relies on: Linux 5.6 or later.
fn check_ring(ring: &IoUring) -> Result<(), String> {
    if !ring.params().is_feature_nodrop() {
        return Err("kernel too old: io_uring may drop completions (needs Linux 5.6+)".to_string());
    }
    let mut probe = register::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("kernel too old: no io_uring opcode probe ({e}; needs Linux 5.6+)"))?;
    let needed = [
        ("READ", opcode::Read::CODE),
        ("WRITE", opcode::Write::CODE),
        ("READ_FIXED", opcode::ReadFixed::CODE),
        ("WRITE_FIXED", opcode::WriteFixed::CODE),
        ("FSYNC", opcode::Fsync::CODE),
        ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
    ];
    for (name, code) in needed {
        if !probe.is_supported(code) {
            return Err(format!("kernel lacks io_uring opcode {name}"));
        }
    }
    Ok(())
}

/// How SQEs name the target's file.
#[derive(Clone, Copy, Debug)]
enum FileRef {
    /// Index 0 of the ring's registered files: spares the kernel an fd
    /// lookup and reference count per IO.
    Registered,
    /// Registration failed; use the descriptor itself.
    Raw(RawFd),
}

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
struct Op {
    id: u64,
    kind: IoKind,
    buf: AlignedBuf,
    /// Index in the ring's registered buffers when `buf` is one of them.
    fixed: Option<u16>,
    /// Bytes already moved by earlier, short, completions.
    done: usize,
    /// Retries after `-EAGAIN` / `-EINTR` so far.
    retries: u32,
    /// When the io_uring_enter that sent the IO began; `None` while it waits
    /// in the SQ. Latency runs from here to the reap that finds its last
    /// completion, retries and resubmitted parts included.
    submitted: Option<Instant>,
}

/// Registered buffers of `capacity` bytes, the ones not lent out.
struct BufferPool {
    /// Distinguishes this pool's buffers from another engine's.
    id: u64,
    free: Vec<AlignedBuf>,
    /// Start address of each registered buffer and its index in the ring.
    index_by_addr: HashMap<usize, u16>,
    capacity: usize,
}

impl BufferPool {
    fn empty() -> BufferPool {
        BufferPool {
            id: 0,
            free: Vec::new(),
            index_by_addr: HashMap::new(),
            capacity: 0,
        }
    }

    /// The registered index of `buf`, when it is one of the pool's.
    fn fixed_index(&self, buf: &AlignedBuf) -> Option<u16> {
        // The tag proves the allocation is the registered one (and this
        // pool's); the address check guards against a forged tag.
        let (pool, index) = buf.registration()?;
        let registered = *self.index_by_addr.get(&(buf.as_ptr() as usize))?;
        (pool == self.id && index == registered && buf.capacity() == self.capacity).then_some(index)
    }
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
        IoKind::Flush => Step::Done,
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

    /// The SQE for the next part of the IO in `slot`.
    fn entry(&mut self, slot: usize) -> squeue::Entry {
        let file = self.file;
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
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
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
    fn enter(&mut self, want: usize) -> io::Result<()> {
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
    fn reap(&mut self) -> io::Result<usize> {
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
        let Some(op) = self.ops.get_mut(slot).and_then(Option::as_mut) else {
            debug_assert!(false, "completion for unknown slot {slot}");
            return;
        };
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
    fn retire(&mut self, slot: usize, result: io::Result<()>) {
        let op = self.ops[slot].take().expect("live op slot");
        self.free_slots.push(slot);
        self.live_ops -= 1;
        self.ready.push(Completion {
            id: op.id,
            kind: op.kind,
            buf: op.buf,
            result,
            latency: op.submitted.map(|at| at.elapsed()).unwrap_or_default(),
        });
    }

    /// Wait for every IO the kernel still has, cancelling what can be.
    fn drain_for_drop(&mut self) {
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

/// Allocate and register `count` buffers of `max_io_bytes`. On failure the
/// pool is empty and the note says why.
fn register_pool(
    ring: &IoUring,
    count: usize,
    max_io_bytes: usize,
) -> (BufferPool, Option<String>) {
    let count = count.min(MAX_REGISTERED_BUFFERS);
    if max_io_bytes == 0 || max_io_bytes > MAX_REGISTERED_BUFFER_BYTES {
        return (
            BufferPool::empty(),
            Some(format!("{max_io_bytes}-byte IOs cannot be registered")),
        );
    }
    let mut free: Vec<AlignedBuf> = (0..count).map(|_| AlignedBuf::new(max_io_bytes)).collect();
    let capacity = free[0].capacity();
    let iovecs: Vec<libc::iovec> = free
        .iter_mut()
        .map(|buf| libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.capacity(),
        })
        .collect();
    // SAFETY: each iovec covers one whole allocation owned by the pool; the
    // engine unregisters them in Drop before the pool frees them, and a
    // buffer lent out comes back through submit/recycle (module docs).
    match unsafe { ring.submitter().register_buffers(&iovecs) } {
        Ok(()) => {
            static NEXT_POOL_ID: std::sync::atomic::AtomicU64 =
                std::sync::atomic::AtomicU64::new(1);
            let id = NEXT_POOL_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for (i, buf) in free.iter_mut().enumerate() {
                buf.set_registration(Some((id, i as u16)));
            }
            let index_by_addr = free
                .iter()
                .enumerate()
                .map(|(i, buf)| (buf.as_ptr() as usize, i as u16))
                .collect();
            (
                BufferPool {
                    id,
                    free,
                    index_by_addr,
                    capacity,
                },
                None,
            )
        }
        Err(error) => {
            let why = if error.raw_os_error() == Some(libc::ENOMEM) {
                format!(
                    "{error}; raise RLIMIT_MEMLOCK (ulimit -l) above {} KiB",
                    count * capacity / 1024
                )
            } else {
                error.to_string()
            };
            let note =
                format!("io_uring buffers not registered ({why}); using plain reads and writes");
            (BufferPool::empty(), Some(note))
        }
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
    /// contents are whatever its last IO left), else a fresh zeroed one.
    fn take_buffer(&mut self, len: usize) -> AlignedBuf {
        if len <= self.pool.capacity
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

    fn submit(&mut self, io: Io) -> io::Result<()> {
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
        let fixed = self.pool.fixed_index(&io.buf);
        let op = Op {
            id: io.id,
            kind: io.kind,
            buf: io.buf,
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
    use super::*;
    use crate::storage::OpenRequest;
    use crate::storage::file::FileTarget;

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

    /// A ring far smaller than the queue depth: submitting fills the SQ (sent
    /// in parts) and leaving the completions unreaped overflows the CQ.
    #[test]
    fn a_full_sq_and_an_overflowing_cq_lose_no_completion() {
        if let Err(why) = probe() {
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
            engine.submit(Io { id, kind, buf }).unwrap();
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
