//! Many jobs: `--jobs N` carries the writer's IOs on N engines (N io_uring
//! rings, or N sync or inline engines), the first driven by the writer's
//! own thread and each other by a thread of its own. Each job's thread
//! builds the stamps of its share of the writes (they travel with the IO as
//! [`crate::stamp::WriteStamps`], see [`Io::build_stamps`]), sends them and
//! reaps them, so stamping, submitting and reaping use more than one core.
//!
//! The writer above stays one: it plans every burst, logs its intents and
//! records completions in the manifest, so the write-ahead order of the
//! journal, the generation order in the map and the flush that releases
//! intents are exactly those of one job, and the manifest has one owner.
//! What is split is the work per IO: each IO goes to the job that owns its
//! first block ([`Stripes::job_of`], a hash of the block number, so every
//! burst's writes spread over the jobs whatever their scatter), and the
//! jobs' rings send their shares of a burst at once. No two in-flight IOs
//! touch one block across jobs because the writer never has two IOs of one
//! block in flight at all (the engine contract in the module above); a
//! one-block IO of a block always goes to the same job besides.
//!
//! A flush goes to the first job: the writer drains before flushing, and a
//! flush of the target covers every write completed before it, whichever
//! ring carried it.

use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::{Completion, Engine, Io, IoKind};
use crate::buf::AlignedBuf;

/// Which job carries an IO: the job owning the block it starts at.
#[derive(Clone, Copy, Debug)]
pub struct Stripes {
    pub block_bytes: u64,
    pub jobs: usize,
}

impl Stripes {
    /// The job of `block`: a mix of its number, so that strided and
    /// interleaved bursts spread over the jobs as random ones do.
    pub fn job_of_block(&self, block: u64) -> usize {
        (crate::rng::mix64(block) % self.jobs as u64) as usize
    }

    /// The job an IO goes to (flushes: the first).
    pub fn job_of(&self, kind: &IoKind) -> usize {
        match *kind {
            IoKind::Write { offset, .. }
            | IoKind::Read { offset }
            | IoKind::Discard { offset, .. }
            | IoKind::Zero { offset, .. } => self.job_of_block(offset / self.block_bytes),
            IoKind::Flush => 0,
        }
    }
}

/// IOs handed to one job, and whether it sleeps waiting for them.
struct Inbox {
    queue: Vec<Io>,
    idle: bool,
    closing: bool,
}

struct Job {
    inbox: Arc<(Mutex<Inbox>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// Completions of every job, for the writer's thread.
#[derive(Default)]
struct Returns {
    done: Vec<Completion>,
    /// An engine call failed in a job: its error, as every later call
    /// reports it.
    failed: Option<(io::ErrorKind, String)>,
    /// The writer sleeps until this many completions are in `done` (0: it
    /// does not sleep): woken only then, not at every job's completion.
    wanted: usize,
}

/// N engines behind one [`Engine`]: the first job's driven by the
/// caller's thread (its share costs no hand-over), each other on a thread
/// of its own.
pub struct JobsEngine {
    name: &'static str,
    queue_depth: usize,
    /// The first job's engine. Its registered buffers are the ones lent
    /// out (the writer takes a buffer before it knows the job); the other
    /// jobs write them as plain buffers.
    local: Box<dyn Engine + Send>,
    /// IOs of the other jobs submitted and not yet returned.
    remote_in_flight: usize,
    stripes: Stripes,
    /// Submitted IOs of job `i + 1` not yet handed over (`kick` does).
    staged: Vec<Vec<Io>>,
    /// Jobs 1 to N - 1.
    jobs: Vec<Job>,
    returns: Arc<(Mutex<Returns>, Condvar)>,
}

impl JobsEngine {
    /// Drive the first of `engines` (built for the same target, each able
    /// to hold `queue_depth` IOs) in the caller's thread and each other on
    /// a thread of its own. The writer keeps at most `queue_depth` IOs in
    /// flight over all of them.
    pub fn new(
        engines: Vec<Box<dyn Engine + Send>>,
        queue_depth: usize,
        block_bytes: u64,
    ) -> io::Result<JobsEngine> {
        let stripes = Stripes {
            block_bytes: block_bytes.max(1),
            jobs: engines.len().max(1),
        };
        let mut engines = engines.into_iter();
        let local = engines
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no engine for job 0"))?;
        let returns: Arc<(Mutex<Returns>, Condvar)> = Arc::default();
        let mut jobs = Vec::with_capacity(stripes.jobs - 1);
        for (index, engine) in engines.enumerate() {
            let inbox = Arc::new((
                Mutex::new(Inbox {
                    queue: Vec::new(),
                    idle: false,
                    closing: false,
                }),
                Condvar::new(),
            ));
            let thread = {
                let inbox = Arc::clone(&inbox);
                let returns = Arc::clone(&returns);
                std::thread::Builder::new()
                    .name(format!("bs-job-{}", index + 1))
                    .spawn(move || run_job(engine, &inbox, &returns))?
            };
            jobs.push(Job {
                inbox,
                thread: Some(thread),
            });
        }
        Ok(JobsEngine {
            name: local.name(),
            queue_depth,
            local,
            remote_in_flight: 0,
            stripes,
            staged: (1..stripes.jobs).map(|_| Vec::new()).collect(),
            jobs,
            returns,
        })
    }

    /// Hand the staged IOs to their jobs, waking the idle ones.
    fn hand_over(&mut self) {
        for (job, staged) in self.jobs.iter().zip(self.staged.iter_mut()) {
            if staged.is_empty() {
                continue;
            }
            let mut inbox = job.inbox.0.lock().unwrap_or_else(|p| p.into_inner());
            inbox.queue.append(staged);
            if inbox.idle {
                job.inbox.1.notify_one();
            }
        }
    }

    /// Move the other jobs' completions into `done` (or fail with the
    /// error one of them met); with `wait_for`, first sleep until that many
    /// are there.
    fn collect(&mut self, done: &mut Vec<Completion>, wait_for: usize) -> io::Result<()> {
        let mut returns = self.returns.0.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some((kind, message)) = &returns.failed {
                return Err(io::Error::new(*kind, message.clone()));
            }
            if returns.done.len() >= wait_for {
                break;
            }
            returns.wanted = wait_for;
            returns = self
                .returns
                .1
                .wait(returns)
                .unwrap_or_else(|p| p.into_inner());
        }
        returns.wanted = 0;
        self.remote_in_flight -= returns.done.len();
        done.append(&mut returns.done);
        Ok(())
    }

    pub fn jobs(&self) -> usize {
        self.jobs.len() + 1
    }
}

/// One job's loop: take what the writer handed over, send it on this job's
/// engine, and return completions. While IOs are in flight it waits on its
/// engine (new IOs go out at the next completion); idle, on its inbox.
fn run_job(
    mut engine: Box<dyn Engine + Send>,
    inbox: &(Mutex<Inbox>, Condvar),
    returns: &(Mutex<Returns>, Condvar),
) {
    // A job that panicked would leave the writer waiting for its IOs.
    struct PanicGuard<'a>(&'a (Mutex<Returns>, Condvar));
    impl Drop for PanicGuard<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let mut r = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
                r.failed = Some((io::ErrorKind::Other, "a writer job panicked".to_string()));
                self.0.1.notify_all();
            }
        }
    }
    let _guard = PanicGuard(returns);
    let fail = |e: io::Error| {
        let mut r = returns.0.lock().unwrap_or_else(|p| p.into_inner());
        r.failed.get_or_insert((e.kind(), e.to_string()));
        returns.1.notify_all();
    };
    loop {
        let batch = {
            let mut state = inbox.0.lock().unwrap_or_else(|p| p.into_inner());
            while state.queue.is_empty() && engine.in_flight() == 0 && !state.closing {
                state.idle = true;
                state = inbox.1.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.idle = false;
            if state.closing && state.queue.is_empty() && engine.in_flight() == 0 {
                return;
            }
            std::mem::take(&mut state.queue)
        };
        let handed = !batch.is_empty();
        for io in batch {
            if let Err(e) = engine.submit(io) {
                return fail(e);
            }
        }
        // New IOs: send them and take what is done. None: wait for a
        // quarter of those in flight (at least one), as the writer waits
        // for a burst's room: a wake-up per completion would cost more
        // than the IO, and the rest keep the target busy meanwhile.
        let wait_for = if handed {
            0
        } else {
            (engine.in_flight() / 4).max(1)
        };
        let done = match engine.complete(wait_for) {
            Ok(done) => done,
            Err(e) => return fail(e),
        };
        if !done.is_empty() {
            let mut r = returns.0.lock().unwrap_or_else(|p| p.into_inner());
            r.done.extend(done);
            if r.wanted > 0 && r.done.len() >= r.wanted {
                returns.1.notify_one();
            }
        }
    }
}

impl Engine for JobsEngine {
    fn name(&self) -> &'static str {
        self.name
    }

    fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    fn in_flight(&self) -> usize {
        self.local.in_flight() + self.remote_in_flight
    }

    fn take_buffer(&mut self, len: usize) -> AlignedBuf {
        self.local.take_buffer(len)
    }

    fn recycle(&mut self, buf: AlignedBuf) {
        self.local.recycle(buf);
    }

    fn submit(&mut self, io: Io) -> io::Result<()> {
        match self.stripes.job_of(&io.kind) {
            0 => self.local.submit(io),
            job => {
                self.staged[job - 1].push(io);
                self.remote_in_flight += 1;
                Ok(())
            }
        }
    }

    fn kick(&mut self) -> io::Result<()> {
        self.hand_over();
        self.local.kick()
    }

    fn complete(&mut self, min: usize) -> io::Result<Vec<Completion>> {
        self.hand_over();
        let wanted = min.min(self.in_flight());
        let mut done = if self.local.in_flight() > 0 {
            self.local.complete(0)?
        } else {
            Vec::new()
        };
        loop {
            self.collect(&mut done, 0)?;
            if done.len() >= wanted {
                return Ok(done);
            }
            if self.local.in_flight() > 0 {
                // Wait on this thread's own engine; what the other jobs
                // complete meanwhile is collected when it returns.
                done.extend(self.local.complete(1)?);
            } else {
                let more = wanted - done.len();
                self.collect(&mut done, more)?;
            }
        }
    }
}

impl Drop for JobsEngine {
    /// Each job finishes the IOs it holds, then ends; the first job's
    /// engine (whose buffers the others wrote) is dropped after them.
    fn drop(&mut self) {
        self.hand_over();
        for job in &self.jobs {
            let mut inbox = job.inbox.0.lock().unwrap_or_else(|p| p.into_inner());
            inbox.closing = true;
            job.inbox.1.notify_one();
        }
        for job in &mut self.jobs {
            if let Some(thread) = job.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::*;
    use crate::engine::inline::InlineEngine;
    use crate::stamp::{RunFormat, WriteStamps};
    use crate::storage::file::FileTarget;
    use crate::storage::{OpenRequest, Target};
    use crate::workload::{BurstPlan, BurstWorkload, Scatter, Workload, WriteOp};

    const BLOCK: u64 = 4096;

    fn stripes(jobs: usize) -> Stripes {
        Stripes {
            block_bytes: BLOCK,
            jobs,
        }
    }

    fn write_at(block: u64) -> IoKind {
        IoKind::Write {
            offset: block * BLOCK,
            fua: false,
        }
    }

    /// The bursts of a whole pass over `blocks` blocks.
    fn bursts(blocks: u64, scatter: Scatter) -> Vec<Vec<WriteOp>> {
        let mut workload = BurstWorkload::new(BurstPlan {
            block_count: blocks,
            burst: 8,
            scatter,
            io_blocks: (1, 1),
            overwrite: 0.0,
            coverage: 1.0,
            passes: Some(1),
            seed: 7,
            discard: 0.0,
            zero: 0.0,
        });
        let mut all = Vec::new();
        let mut burst = Vec::new();
        while workload.next_burst(&mut burst) {
            all.push(burst.clone());
        }
        all
    }

    #[test]
    fn every_write_goes_to_exactly_one_job_and_every_block_to_one_job() {
        let stripes = stripes(3);
        let mut owner: HashMap<u64, usize> = HashMap::new();
        let mut writes = 0;
        for burst in bursts(4096, Scatter::Random) {
            for op in burst {
                let job = stripes.job_of(&write_at(op.first_block));
                assert!(job < 3);
                // Routing is a function of the block: asked again, the same.
                assert_eq!(job, stripes.job_of(&write_at(op.first_block)));
                let previous = owner.insert(op.first_block, job);
                assert!(previous.is_none_or(|p| p == job), "block {op:?} moved");
                writes += 1;
            }
        }
        assert_eq!(writes, 4096, "every block written once");
        assert_eq!(owner.len(), 4096);
        let per_job: Vec<usize> = (0..3)
            .map(|j| owner.values().filter(|&&o| o == j).count())
            .collect();
        assert!(
            per_job.iter().all(|&n| n > 4096 / 3 - 200),
            "shares are even: {per_job:?}"
        );
    }

    #[test]
    fn bursts_stay_mixed_over_the_jobs_whatever_their_scatter() {
        let stripes = stripes(2);
        for scatter in [
            Scatter::Random,
            Scatter::Stride,
            Scatter::Reverse,
            Scatter::Interleave,
        ] {
            let all = bursts(4096, scatter);
            let mixed = all
                .iter()
                .filter(|burst| {
                    let jobs: BTreeSet<usize> = burst
                        .iter()
                        .map(|op| stripes.job_of(&write_at(op.first_block)))
                        .collect();
                    jobs.len() == 2
                })
                .count();
            // Eight writes on two jobs at random: all on one in 1/128.
            assert!(
                mixed * 10 >= all.len() * 9,
                "{scatter:?}: {mixed} of {} bursts use both jobs",
                all.len()
            );
        }
    }

    /// A new image file of `blocks` blocks at `path`, as a target.
    fn image(path: &std::path::Path, blocks: u64) -> Arc<dyn Target> {
        let request = OpenRequest {
            write: true,
            create_size: Some(blocks * BLOCK),
            direct: false,
            force: false,
        };
        Arc::new(FileTarget::open(path, "img", &request).unwrap())
    }

    /// An engine that notes which thread built each write's stamps.
    struct Noting {
        inner: InlineEngine,
        stamped_on: Arc<Mutex<HashMap<u64, std::thread::ThreadId>>>,
    }

    impl Engine for Noting {
        fn name(&self) -> &'static str {
            "noting"
        }
        fn queue_depth(&self) -> usize {
            self.inner.queue_depth()
        }
        fn in_flight(&self) -> usize {
            self.inner.in_flight()
        }
        fn submit(&mut self, io: Io) -> io::Result<()> {
            if io.stamps.is_some() {
                let me = std::thread::current().id();
                self.stamped_on.lock().unwrap().insert(io.id, me);
            }
            self.inner.submit(io)
        }
        fn kick(&mut self) -> io::Result<()> {
            self.inner.kick()
        }
        fn complete(&mut self, min: usize) -> io::Result<Vec<Completion>> {
            self.inner.complete(min)
        }
    }

    #[test]
    fn each_job_stamps_its_share_in_its_own_thread_and_returns_the_stamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let blocks = 64u64;
        let target = image(&path, blocks);
        let stamped_on = Arc::new(Mutex::new(HashMap::new()));
        let engines: Vec<Box<dyn Engine + Send>> = (0..2)
            .map(|_| {
                Box::new(Noting {
                    inner: InlineEngine::new(Arc::clone(&target), 8),
                    stamped_on: Arc::clone(&stamped_on),
                }) as Box<dyn Engine + Send>
            })
            .collect();
        let mut engine = JobsEngine::new(engines, 8, BLOCK).unwrap();
        let format = RunFormat {
            run_id: 0x5eed,
            block_size: BLOCK as u32,
            random_bytes: crate::stamp::PAYLOAD_BYTES as u16,
            dedup_permille: 0,
        };
        let generation = |block: u64| (block % 5 + 1) as u32;
        let mut returned = HashMap::new();
        let mut take = |done: Vec<Completion>| {
            for c in done {
                c.result.unwrap();
                returned.insert(c.id, c.stamps.expect("stamps come back"));
            }
        };
        for block in 0..blocks {
            while engine.in_flight() >= engine.queue_depth() {
                take(engine.complete(1).unwrap());
            }
            let mut buf = engine.take_buffer(BLOCK as usize);
            buf.set_len(BLOCK as usize);
            let stamps = WriteStamps {
                format,
                first_block: block,
                generations: vec![generation(block)],
                write_seq: block,
                write_time_s: 7,
            };
            let io = Io {
                id: block,
                kind: write_at(block),
                buf,
                stamps: Some(stamps),
            };
            engine.submit(io).unwrap();
        }
        while engine.in_flight() > 0 {
            let n = engine.in_flight();
            take(engine.complete(n).unwrap());
        }
        drop(engine);
        let me = std::thread::current().id();
        let stamped_on = stamped_on.lock().unwrap();
        let stripes = stripes(2);
        let mut on_jobs = std::collections::HashSet::new();
        for block in 0..blocks {
            let thread = stamped_on[&block];
            // The first job's share in the caller's thread, the other's not.
            assert_eq!(
                thread == me,
                stripes.job_of(&write_at(block)) == 0,
                "block {block}"
            );
            on_jobs.insert(thread);
            assert_eq!(returned[&block].generations, vec![generation(block)]);
        }
        assert_eq!(on_jobs.len(), 2, "both jobs stamped");
        let image = std::fs::read(&path).unwrap();
        for (block, bytes) in image.chunks_exact(BLOCK as usize).enumerate() {
            let block = block as u64;
            assert!(
                crate::stamp::holds(&format, block, generation(block), bytes),
                "block {block} holds its stamp"
            );
        }
    }

    #[test]
    fn a_flush_goes_to_the_first_job() {
        assert_eq!(stripes(4).job_of(&IoKind::Flush), 0);
    }

    #[test]
    fn ios_on_many_jobs_complete_with_their_ids_and_land_where_they_were_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let blocks = 256u64;
        let target = image(&path, blocks);
        let engines: Vec<Box<dyn Engine + Send>> = (0..3)
            .map(|_| Box::new(InlineEngine::new(Arc::clone(&target), 16)) as Box<dyn Engine + Send>)
            .collect();
        let mut engine = JobsEngine::new(engines, 16, BLOCK).unwrap();
        assert_eq!(engine.jobs(), 3);
        let mut done_ids = BTreeSet::new();
        for block in 0..blocks {
            while engine.in_flight() >= engine.queue_depth() {
                for c in engine.complete(1).unwrap() {
                    c.result.unwrap();
                    assert!(done_ids.insert(c.id));
                    engine.recycle(c.buf);
                }
            }
            let mut buf = engine.take_buffer(BLOCK as usize);
            buf.fill(block as u8);
            engine
                .submit(Io {
                    id: block,
                    kind: write_at(block),
                    buf,
                    stamps: None,
                })
                .unwrap();
        }
        while engine.in_flight() > 0 {
            let n = engine.in_flight();
            for c in engine.complete(n).unwrap() {
                c.result.unwrap();
                assert!(done_ids.insert(c.id));
            }
        }
        assert_eq!(done_ids, (0..blocks).collect());
        let flush = Io {
            id: u64::MAX,
            kind: IoKind::Flush,
            buf: engine.take_buffer(0),
            stamps: None,
        };
        engine.submit(flush).unwrap();
        let flushed = engine.complete(1).unwrap();
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0].id, u64::MAX);
        drop(engine);
        let image = std::fs::read(&path).unwrap();
        for (block, bytes) in image.chunks_exact(BLOCK as usize).enumerate() {
            assert!(bytes.iter().all(|&b| b == block as u8), "block {block}");
        }
    }
}
