//! Engines carry prepared IOs to a target and report their completions.
//!
//! The writer hands an engine whole bursts: `submit` queues, `kick` sends
//! what is queued together (one io_uring_enter for a burst), `complete`
//! collects finished IOs. Buffers travel with their IO and come back in the
//! completion so the writer can reuse them. An engine never reorders its
//! caller's guarantees: the writer never submits two writes touching one
//! block while either is in flight, so completion order does not matter.

pub mod sync;

use std::io;
use std::time::Duration;

use crate::buf::AlignedBuf;

/// What an IO does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoKind {
    /// Write the buffer at `offset`; with `fua`, durable on completion.
    Write { offset: u64, fua: bool },
    /// Read into the buffer at `offset`.
    Read { offset: u64 },
    /// Make every write completed before this was submitted durable.
    Flush,
}

/// One IO with its buffer. `id` is the caller's, returned in the completion.
#[derive(Debug)]
pub struct Io {
    pub id: u64,
    pub kind: IoKind,
    pub buf: AlignedBuf,
}

/// A finished IO.
#[derive(Debug)]
pub struct Completion {
    pub id: u64,
    pub kind: IoKind,
    pub buf: AlignedBuf,
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

    /// Wait until at least `min` IOs have completed (0: do not wait) and
    /// return every completion available.
    fn complete(&mut self, min: usize) -> io::Result<Vec<Completion>>;
}
