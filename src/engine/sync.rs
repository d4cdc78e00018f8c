//! The portable engine: a pool of threads doing blocking pread/pwrite.
//!
//! Works on every target (files, block devices, NBD, the fault layer) and on
//! kernels where io_uring is unavailable. Each of `queue_depth` threads holds
//! at most one IO, so the target sees up to `queue_depth` IOs in flight.

use std::collections::VecDeque;
use std::io;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::{Completion, Engine, Io, IoKind};
use crate::storage::Target;

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

struct Queue {
    pending: VecDeque<(Io, Instant)>,
    closed: bool,
}

/// Thread-pool engine.
pub struct SyncEngine {
    shared: Arc<Shared>,
    /// IOs submitted but not yet handed to the workers by `kick`.
    staged: Vec<Io>,
    completions: Receiver<Completion>,
    workers: Vec<JoinHandle<()>>,
    queue_depth: usize,
    in_flight: usize,
}

impl SyncEngine {
    pub fn new(target: Arc<dyn Target>, queue_depth: usize) -> SyncEngine {
        let queue_depth = queue_depth.max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                pending: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        let (sender, completions) = channel();
        let workers = (0..queue_depth)
            .map(|index| {
                let shared = Arc::clone(&shared);
                let target = Arc::clone(&target);
                let sender: Sender<Completion> = sender.clone();
                std::thread::Builder::new()
                    .name(format!("bs-io-{index}"))
                    .spawn(move || worker(&shared, target.as_ref(), &sender))
                    .expect("spawn IO worker thread")
            })
            .collect();
        SyncEngine {
            shared,
            staged: Vec::new(),
            completions,
            workers,
            queue_depth,
            in_flight: 0,
        }
    }
}

fn worker(shared: &Shared, target: &dyn Target, completions: &Sender<Completion>) {
    loop {
        let (mut io, submitted) = {
            let mut queue = shared.queue.lock().expect("engine queue lock");
            loop {
                if let Some(item) = queue.pending.pop_front() {
                    break item;
                }
                if queue.closed {
                    return;
                }
                queue = shared.ready.wait(queue).expect("engine queue lock");
            }
        };
        // Stamping is this thread's work, not the target's: it is left out
        // of the latency.
        let stamping = io.stamps.is_some().then(Instant::now);
        io.build_stamps();
        let stamped_in = stamping.map(|at| at.elapsed()).unwrap_or_default();
        let result = match io.kind {
            IoKind::Write { offset, fua } => target.write_at(&io.buf, offset, fua),
            IoKind::Read { offset } => target.read_at(&mut io.buf, offset),
            IoKind::Flush => target.flush(),
            IoKind::Discard { .. } | IoKind::Zero { .. } => {
                io.kind.space_op(target).expect("a space operation")
            }
        };
        let completion = Completion {
            id: io.id,
            kind: io.kind,
            buf: io.buf,
            stamps: io.stamps,
            result,
            latency: submitted.elapsed().saturating_sub(stamped_in),
        };
        if completions.send(completion).is_err() {
            return;
        }
    }
}

impl Engine for SyncEngine {
    fn name(&self) -> &'static str {
        "sync"
    }

    fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn submit(&mut self, io: Io) -> io::Result<()> {
        self.in_flight += 1;
        self.staged.push(io);
        Ok(())
    }

    fn kick(&mut self) -> io::Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut queue = self.shared.queue.lock().expect("engine queue lock");
        queue
            .pending
            .extend(self.staged.drain(..).map(|io| (io, now)));
        drop(queue);
        self.shared.ready.notify_all();
        Ok(())
    }

    fn complete(&mut self, min: usize) -> io::Result<Vec<Completion>> {
        self.kick()?;
        let mut done = Vec::new();
        let min = min.min(self.in_flight);
        while done.len() < min {
            match self.completions.recv() {
                Ok(completion) => done.push(completion),
                Err(_) => return Err(io::Error::other("IO worker threads stopped")),
            }
        }
        done.extend(self.completions.try_iter());
        self.in_flight -= done.len();
        Ok(done)
    }
}

impl Drop for SyncEngine {
    fn drop(&mut self) {
        self.shared.queue.lock().expect("engine queue lock").closed = true;
        self.shared.ready.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}
