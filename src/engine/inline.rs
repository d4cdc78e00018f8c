//! The inline engine: every IO is carried out in the caller's thread the
//! moment it is submitted.
//!
//! For targets served from the page cache (no O_DIRECT, such as tmpfs) a
//! write is a memory copy that completes inside the system call. Where
//! io_uring works, its kernel worker does that copy while the writer stamps
//! the next blocks, which is faster; where it does not, copying in the
//! writer's own thread beats handing each copy to a pool of threads (the
//! kernel serialises writes to one file anyway). Completions are returned by
//! the next `complete` call.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use super::{Completion, Engine, Io, IoKind};
use crate::buf::AlignedBuf;
use crate::storage::Target;

pub struct InlineEngine {
    target: Arc<dyn Target>,
    queue_depth: usize,
    done: Vec<Completion>,
    spare: Vec<AlignedBuf>,
}

impl InlineEngine {
    /// `queue_depth` only bounds how many finished IOs wait to be reaped.
    pub fn new(target: Arc<dyn Target>, queue_depth: usize) -> InlineEngine {
        InlineEngine {
            target,
            queue_depth: queue_depth.max(1),
            done: Vec::new(),
            spare: Vec::new(),
        }
    }
}

impl Engine for InlineEngine {
    fn name(&self) -> &'static str {
        "inline"
    }

    fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }

    fn take_buffer(&mut self, len: usize) -> AlignedBuf {
        match self.spare.iter().position(|b| b.capacity() >= len) {
            Some(index) => {
                let mut buf = self.spare.swap_remove(index);
                buf.set_len(len);
                buf
            }
            None => AlignedBuf::new(len),
        }
    }

    fn recycle(&mut self, buf: AlignedBuf) {
        if self.spare.len() < 2 * self.queue_depth {
            self.spare.push(buf);
        }
    }

    fn submit(&mut self, mut io: Io) -> io::Result<()> {
        io.build_stamps();
        let started = Instant::now();
        let result = match io.kind {
            IoKind::Write { offset, fua } => self.target.write_at(&io.buf, offset, fua),
            IoKind::Read { offset } => self.target.read_at(&mut io.buf, offset),
            IoKind::Flush => self.target.flush(),
            IoKind::Discard { .. } | IoKind::Zero { .. } => {
                io.kind.space_op(&*self.target).expect("a space operation")
            }
        };
        self.done.push(Completion {
            id: io.id,
            kind: io.kind,
            buf: io.buf,
            stamps: io.stamps,
            result,
            latency: started.elapsed(),
        });
        Ok(())
    }

    fn kick(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn complete(&mut self, _min: usize) -> io::Result<Vec<Completion>> {
        Ok(std::mem::take(&mut self.done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::OpenRequest;
    use crate::storage::file::FileTarget;

    #[test]
    fn ios_complete_at_submission_and_come_back_on_the_next_reap() {
        let dir = tempfile::tempdir().unwrap();
        let request = OpenRequest {
            write: true,
            create_size: Some(1 << 20),
            direct: false,
            force: false,
        };
        let target: Arc<dyn Target> =
            Arc::new(FileTarget::open(&dir.path().join("img"), "img", &request).unwrap());
        let mut engine = InlineEngine::new(Arc::clone(&target), 4);
        let mut buf = engine.take_buffer(4096);
        buf.fill(0x5a);
        engine
            .submit(Io {
                id: 1,
                kind: IoKind::Write {
                    offset: 8192,
                    fua: false,
                },
                buf,
                stamps: None,
            })
            .unwrap();
        engine
            .submit(Io {
                id: 2,
                kind: IoKind::Flush,
                buf: AlignedBuf::new(0),
                stamps: None,
            })
            .unwrap();
        assert_eq!(engine.in_flight(), 2);
        let done = engine.complete(1).unwrap();
        assert_eq!(done.iter().map(|c| c.id).collect::<Vec<_>>(), vec![1, 2]);
        assert!(done.iter().all(|c| c.result.is_ok()));
        assert_eq!(engine.in_flight(), 0);
        let buf = engine.take_buffer(4096);
        engine
            .submit(Io {
                id: 3,
                kind: IoKind::Read { offset: 8192 },
                buf,
                stamps: None,
            })
            .unwrap();
        let done = engine.complete(1).unwrap();
        assert!(done[0].buf.iter().all(|&b| b == 0x5a));
        // Past the end: the error is the completion's, not the submit's.
        let buf = engine.take_buffer(4096);
        engine
            .submit(Io {
                id: 4,
                kind: IoKind::Read { offset: 1 << 20 },
                buf,
                stamps: None,
            })
            .unwrap();
        assert!(engine.complete(1).unwrap()[0].result.is_err());
    }
}
