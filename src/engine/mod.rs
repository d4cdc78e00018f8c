//! Engines carry prepared IOs to a target and report their completions.
//!
//! The writer hands an engine whole bursts: `submit` queues, `kick` sends
//! what is queued together (one io_uring_enter for a burst), `complete`
//! collects finished IOs. Buffers travel with their IO and come back in the
//! completion so the writer can reuse them; a write's stamps travel with it
//! too, and the engine builds them into its buffer in the thread that sends
//! it (with `--jobs`, each job's thread). An engine never reorders its
//! caller's guarantees: the writer never submits two writes touching one
//! block while either is in flight, so completion order does not matter.

pub mod inline;
pub mod jobs;
pub mod sync;
pub mod uring;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::buf::AlignedBuf;
use crate::stamp::WriteStamps;
use crate::storage::Target;

/// What an IO does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoKind {
    /// Write the buffer at `offset`; with `fua`, durable on completion.
    Write { offset: u64, fua: bool },
    /// Read into the buffer at `offset`.
    Read { offset: u64 },
    /// Make every write completed before this was submitted durable.
    Flush,
    /// Discard `len` bytes at `offset` (the buffer is unused).
    Discard { offset: u64, len: u64 },
    /// Zero `len` bytes at `offset` (the buffer is unused).
    Zero {
        offset: u64,
        len: u64,
        zero: crate::storage::ZeroFlags,
    },
}

impl IoKind {
    /// Carry out a discard or write-zeroes through the target's own calls
    /// (engines without a kernel path of their own for them).
    pub fn space_op(self, target: &dyn Target) -> Option<io::Result<()>> {
        match self {
            IoKind::Discard { offset, len } => Some(target.discard(offset, len)),
            IoKind::Zero { offset, len, zero } => Some(target.write_zeroes(offset, len, zero)),
            _ => None,
        }
    }
}

/// One IO with its buffer. `id` is the caller's, returned in the completion.
#[derive(Debug)]
pub struct Io {
    pub id: u64,
    pub kind: IoKind,
    pub buf: AlignedBuf,
    /// A write's stamps, which the engine builds into `buf` in the thread
    /// that sends it ([`Io::build_stamps`]) and returns in the completion;
    /// `None`: `buf` is sent as it is.
    pub stamps: Option<WriteStamps>,
}

impl Io {
    /// Build the stamps, if any, into the buffer. Every engine calls this
    /// before it sends the IO, in the thread that sends it.
    pub fn build_stamps(&mut self) {
        if let Some(stamps) = &self.stamps {
            stamps.build(&mut self.buf);
        }
    }
}

/// A finished IO.
#[derive(Debug)]
pub struct Completion {
    pub id: u64,
    pub kind: IoKind,
    pub buf: AlignedBuf,
    /// The IO's stamps, as submitted.
    pub stamps: Option<WriteStamps>,
    pub result: io::Result<()>,
    /// From submission to completion.
    pub latency: Duration,
}

/// An IO engine bound to one target.
pub trait Engine {
    /// Short name for messages and reports: "sync", "uring".
    fn name(&self) -> &'static str;

    /// The most IOs this engine keeps in flight.
    fn queue_depth(&self) -> usize;

    /// IOs submitted and not yet returned by `complete`.
    fn in_flight(&self) -> usize;

    /// A buffer of `len` bytes for a later `submit`. Engines that register
    /// buffers with the kernel hand out registered ones; buffers returned in
    /// completions can be passed back through `recycle`.
    fn take_buffer(&mut self, len: usize) -> AlignedBuf {
        AlignedBuf::new(len)
    }

    /// Give a buffer back for reuse by `take_buffer`.
    fn recycle(&mut self, buf: AlignedBuf) {
        drop(buf);
    }

    /// Queue an IO. The caller keeps `in_flight() < queue_depth()`.
    fn submit(&mut self, io: Io) -> io::Result<()>;

    /// Send everything queued to the target now.
    fn kick(&mut self) -> io::Result<()>;

    /// Send everything still queued (as `kick` does), then wait until at
    /// least `min` IOs have completed (0: do not wait) and return every
    /// completion available. Engines send and wait with one system call
    /// where they can.
    fn complete(&mut self, min: usize) -> io::Result<Vec<Completion>>;
}

/// tmpfs and ramfs accept O_DIRECT but are the page cache: a write there is
/// a memory copy.
fn memory_backed(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    rustix::fs::fstatfs(fd).is_ok_and(|s| matches!(s.f_type, TMPFS_MAGIC | RAMFS_MAGIC))
}

/// Which engine the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineChoice {
    /// io_uring, or an error when it cannot work here.
    Uring,
    /// The thread pool of blocking pread/pwrite calls.
    Sync,
    /// io_uring where it works, else the sync engine with a note saying
    /// why (the inline engine for targets served from the page cache).
    Auto,
    /// Every IO in the caller's thread (page-cache targets).
    Inline,
    /// Like `Auto`, but never inline (verify reads: checking overlaps IO).
    AutoQueued,
}

/// What [`build`] makes of a choice, given whether io_uring works here.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Uring,
    /// The sync engine, with a one-line note when it replaces io_uring.
    Sync {
        note: Option<String>,
    },
    /// An explicit uring choice that cannot be honoured: the message.
    Refuse(String),
}

/// Decide which engine to build. `uring` is [`uring::probe`]'s verdict (or
/// why the engine could not be set up); `target_has_fd` is false for targets
/// io_uring cannot drive (NBD), for which `Auto` quietly means sync: that is
/// their engine, not a fallback.
pub fn choose(choice: EngineChoice, uring: Result<(), String>, target_has_fd: bool) -> Decision {
    match (choice, target_has_fd, uring) {
        (EngineChoice::Sync | EngineChoice::Inline, _, _)
        | (EngineChoice::Auto | EngineChoice::AutoQueued, false, _) => {
            Decision::Sync { note: None }
        }
        (EngineChoice::Uring, false, _) => Decision::Refuse(
            "the uring engine needs a file or block device target; use the sync engine".to_string(),
        ),
        (EngineChoice::Uring, true, Err(reason)) => Decision::Refuse(format!(
            "io_uring unavailable here ({reason}); use the sync engine"
        )),
        (EngineChoice::Auto | EngineChoice::AutoQueued, true, Err(reason)) => Decision::Sync {
            note: Some(format!(
                "io_uring unavailable here ({reason}); using the sync engine (pread/pwrite threads)"
            )),
        },
        (EngineChoice::Uring | EngineChoice::Auto | EngineChoice::AutoQueued, true, Ok(())) => {
            Decision::Uring
        }
    }
}

/// A built engine and, when the choice was not carried out as asked (a
/// fallback, unregistered buffers), one line for the user saying so.
pub type Built = (Box<dyn Engine + Send>, Option<String>);

/// Build the engine `choice` asks for over `target`, with `queue_depth` IOs
/// in flight of at most `max_io_bytes` each. The error is one line for the
/// user, naming the target.
pub fn build(
    choice: EngineChoice,
    target: Arc<dyn Target>,
    queue_depth: usize,
    max_io_bytes: usize,
) -> Result<Built, String> {
    let uri = target.info().uri.clone();
    let buffered = target
        .raw_fd()
        .is_some_and(|fd| !target.info().direct_io || memory_backed(fd));
    if choice == EngineChoice::Inline {
        return Ok((
            Box::new(inline::InlineEngine::new(target, queue_depth)),
            None,
        ));
    }
    let probed = match choice {
        EngineChoice::Sync | EngineChoice::Inline => Ok(()),
        EngineChoice::Uring | EngineChoice::Auto | EngineChoice::AutoQueued => uring::probe(),
    };
    if let (EngineChoice::Auto, true, Err(reason)) = (choice, buffered, &probed) {
        // A page-cache write is a memory copy. io_uring hands it to a kernel
        // worker, which copies while this thread stamps the next writes (on
        // tmpfs, 1.1 to 1.9 times the IOPS of copying here); without io_uring
        // the copy is best done here, not in a pool of threads.
        let note = format!("io_uring unavailable here ({reason}); writing in this thread");
        return Ok((
            Box::new(inline::InlineEngine::new(target, queue_depth)),
            Some(note),
        ));
    }
    let choice = if choice == EngineChoice::AutoQueued {
        EngineChoice::Auto
    } else {
        choice
    };
    let has_fd = target.raw_fd().is_some();
    let decision = match choose(choice, probed, has_fd) {
        Decision::Uring => {
            match uring::UringEngine::new(Arc::clone(&target), queue_depth, max_io_bytes) {
                Ok(engine) => {
                    let note = engine.registration_note().map(str::to_string);
                    return Ok((Box::new(engine), note));
                }
                Err(error) => choose(choice, Err(uring::unavailable_reason(&error)), has_fd),
            }
        }
        other => other,
    };
    match decision {
        Decision::Sync { note } => Ok((Box::new(sync::SyncEngine::new(target, queue_depth)), note)),
        Decision::Refuse(message) => Err(format!("target {uri}: {message}")),
        Decision::Uring => unreachable!("choose gives Uring only when io_uring works"),
    }
}

/// Build `jobs` engines as [`build`] does behind one [`jobs::JobsEngine`]
/// (`--jobs`): the first driven by the caller's thread, each other by a
/// thread of its own. One job is [`build`]'s engine itself.
pub fn build_jobs(
    choice: EngineChoice,
    target: Arc<dyn Target>,
    queue_depth: usize,
    max_io_bytes: usize,
    jobs: usize,
    block_bytes: u64,
) -> Result<Built, String> {
    if jobs <= 1 {
        return build(choice, target, queue_depth, max_io_bytes);
    }
    let mut engines = Vec::with_capacity(jobs);
    let mut note = None;
    for job in 0..jobs {
        // Each job may be handed every IO in flight (the writer bounds them
        // over all jobs), so each engine holds the whole queue depth. The
        // buffers lent out are the first job's: only it registers any.
        let io_bytes = if job == 0 { max_io_bytes } else { 0 };
        let (engine, built_note) = build(choice, Arc::clone(&target), queue_depth, io_bytes)?;
        if job == 0 {
            note = built_note;
        }
        engines.push(engine);
    }
    let uri = target.info().uri.clone();
    let engine = jobs::JobsEngine::new(engines, queue_depth, block_bytes)
        .map_err(|e| format!("target {uri}: cannot start {jobs} writer jobs: {e}"))?;
    Ok((Box::new(engine), note))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISABLED: &str = "kernel.io_uring_disabled=2";

    #[test]
    fn auto_uses_uring_where_it_works() {
        assert_eq!(choose(EngineChoice::Auto, Ok(()), true), Decision::Uring);
        assert_eq!(choose(EngineChoice::Uring, Ok(()), true), Decision::Uring);
    }

    #[test]
    fn auto_falls_back_to_sync_with_a_note_saying_why() {
        let decision = choose(EngineChoice::Auto, Err(DISABLED.to_string()), true);
        let note = "io_uring unavailable here (kernel.io_uring_disabled=2); \
                    using the sync engine (pread/pwrite threads)";
        assert_eq!(
            decision,
            Decision::Sync {
                note: Some(note.to_string())
            }
        );
    }

    #[test]
    fn explicit_uring_that_cannot_work_is_refused() {
        let decision = choose(EngineChoice::Uring, Err(DISABLED.to_string()), true);
        let message = "io_uring unavailable here (kernel.io_uring_disabled=2); use the sync engine";
        assert_eq!(decision, Decision::Refuse(message.to_string()));
        let Decision::Refuse(message) = choose(EngineChoice::Uring, Ok(()), false) else {
            panic!("uring without a file descriptor must be refused")
        };
        assert!(
            message.contains("needs a file or block device"),
            "{message}"
        );
    }

    #[test]
    fn sync_is_sync_whatever_io_uring_says() {
        for uring in [Ok(()), Err(DISABLED.to_string())] {
            assert_eq!(
                choose(EngineChoice::Sync, uring, true),
                Decision::Sync { note: None }
            );
        }
    }

    #[test]
    fn auto_on_a_target_without_fd_is_sync_without_a_note() {
        let decision = choose(EngineChoice::Auto, Err(DISABLED.to_string()), false);
        assert_eq!(decision, Decision::Sync { note: None });
    }
}
