//! The io_uring engine against real files (O_DIRECT on the temp dir's
//! filesystem), pipes, and targets it cannot drive.
//!
//! Every test that needs io_uring first asks `common::need` (which asks
//! `uring::probe`); where io_uring is unavailable it skips with the reason
//! on a developer's machine and fails in CI. The fallback tests at the end
//! cover the path without it.

mod common {
    pub mod need;
}

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use blockstamp::buf::AlignedBuf;
use blockstamp::engine::uring::{self, UringEngine};
use blockstamp::engine::{Completion, Engine, EngineChoice, Io, IoKind, build};
use blockstamp::storage::file::FileTarget;
use blockstamp::storage::{OpenRequest, Target, TargetIdentity, TargetInfo, TargetKind};
use common::need::{Need, require};

const BLOCK: usize = 4096;

/// An image file in a temp dir, opened the way `write` opens its target.
struct Image {
    _dir: tempfile::TempDir,
    path: PathBuf,
    target: Arc<dyn Target>,
}

fn image(size_bytes: u64, direct: bool) -> Image {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let request = OpenRequest {
        write: true,
        create_size: Some(size_bytes),
        direct,
        force: false,
    };
    let target = FileTarget::open(&path, "disk.img", &request).unwrap();
    assert_eq!(
        target.info().direct_io,
        direct,
        "these tests need a TMPDIR on a filesystem with O_DIRECT (ext4, xfs)"
    );
    Image {
        _dir: dir,
        path,
        target: Arc::new(target),
    }
}

/// Submit `ios` keeping at most queue-depth in flight, kicking once per
/// burst, and return every completion.
fn run(engine: &mut dyn Engine, ios: Vec<Io>) -> Vec<Completion> {
    let mut ios = ios.into_iter().peekable();
    let mut done = Vec::new();
    while ios.peek().is_some() || engine.in_flight() > 0 {
        while engine.in_flight() < engine.queue_depth() {
            let Some(io) = ios.next() else { break };
            engine.submit(io).unwrap();
        }
        engine.kick().unwrap();
        done.extend(engine.complete(1).unwrap());
    }
    done
}

/// What block `block` holds in these tests: its number in every byte pair.
fn pattern(block: u64) -> Vec<u8> {
    (0..BLOCK)
        .map(|i| {
            if i % 2 == 0 {
                block as u8
            } else {
                (block >> 8) as u8
            }
        })
        .collect()
}

#[test]
fn a_burst_of_scattered_writes_reads_back_identical() {
    if !require(Need::IoUring) {
        return;
    }
    let image = image(16 << 20, true);
    let mut engine = UringEngine::new(Arc::clone(&image.target), 32, BLOCK).unwrap();
    assert!(engine.fixed_buffers(), "{:?}", engine.registration_note());
    // An odd stride over 4096 blocks visits 256 distinct, scattered blocks.
    let blocks: Vec<u64> = (0..256u64).map(|i| (i * 2_654_435_761) % 4096).collect();
    let writes = blocks
        .iter()
        .map(|&block| {
            let mut buf = engine.take_buffer(BLOCK);
            buf.copy_from_slice(&pattern(block));
            Io {
                id: block,
                kind: IoKind::Write {
                    offset: block * BLOCK as u64,
                    fua: false,
                },
                buf,
                stamps: None,
            }
        })
        .collect();
    let completions = run(&mut engine, writes);
    assert_eq!(completions.len(), 256);
    for completion in completions {
        completion.result.unwrap();
        assert!(
            completion.latency > Duration::ZERO && completion.latency < Duration::from_secs(30)
        );
        engine.recycle(completion.buf);
    }

    // What the file holds, read past the engine.
    let file = std::fs::read(&image.path).unwrap();
    for &block in &blocks {
        let at = block as usize * BLOCK;
        assert_eq!(
            file[at..at + BLOCK],
            pattern(block),
            "block {block} on disk"
        );
    }

    // And read back through the engine, half into registered buffers.
    let reads = blocks
        .iter()
        .enumerate()
        .map(|(i, &block)| {
            let buf = if i % 2 == 0 {
                engine.take_buffer(BLOCK)
            } else {
                AlignedBuf::new(BLOCK)
            };
            Io {
                id: block,
                kind: IoKind::Read {
                    offset: block * BLOCK as u64,
                },
                buf,
                stamps: None,
            }
        })
        .collect();
    let completions = run(&mut engine, reads);
    assert_eq!(completions.len(), 256);
    for completion in completions {
        completion.result.unwrap();
        assert_eq!(
            *completion.buf,
            pattern(completion.id),
            "block {} read back",
            completion.id
        );
    }
    assert_eq!(engine.in_flight(), 0);
}

#[test]
fn registered_buffers_are_lent_and_come_back_through_recycle() {
    if !require(Need::IoUring) {
        return;
    }
    let image = image(1 << 20, true);
    let mut engine = UringEngine::new(Arc::clone(&image.target), 2, 2 * BLOCK).unwrap();
    let first = engine.take_buffer(BLOCK);
    let second = engine.take_buffer(2 * BLOCK);
    let third = engine.take_buffer(BLOCK);
    let (first_at, second_at) = (first.as_ptr(), second.as_ptr());
    assert_eq!((first.len(), second.len()), (BLOCK, 2 * BLOCK));
    // The pool holds queue-depth buffers: the third is a fresh one.
    assert!(third.as_ptr() != first_at && third.as_ptr() != second_at);
    engine.recycle(third);
    engine.recycle(first);
    assert_eq!(engine.take_buffer(BLOCK).as_ptr(), first_at);
    // Larger than the pool's buffers: never a registered one.
    assert_eq!(engine.take_buffer(3 * BLOCK).len(), 3 * BLOCK);
}

#[test]
fn a_fua_write_and_a_flush_complete() {
    if !require(Need::IoUring) {
        return;
    }
    let image = image(1 << 20, true);
    let mut engine = UringEngine::new(Arc::clone(&image.target), 4, BLOCK).unwrap();
    let mut buf = engine.take_buffer(BLOCK);
    buf.copy_from_slice(&pattern(7));
    let write = Io {
        id: 1,
        kind: IoKind::Write {
            offset: 7 * BLOCK as u64,
            fua: true,
        },
        buf,
        stamps: None,
    };
    let completions = run(&mut engine, vec![write]);
    completions[0].result.as_ref().unwrap();
    // The flush goes after the write it covers has completed.
    let flush = Io {
        id: 2,
        kind: IoKind::Flush,
        buf: AlignedBuf::new(0),
        stamps: None,
    };
    let completions = run(&mut engine, vec![flush]);
    assert_eq!((completions[0].id, completions[0].kind), (2, IoKind::Flush));
    completions[0].result.as_ref().unwrap();
    let file = std::fs::read(&image.path).unwrap();
    assert_eq!(file[7 * BLOCK..8 * BLOCK], pattern(7));
}

#[test]
fn a_read_crossing_end_of_file_reports_eof_and_keeps_the_partial_data() {
    if !require(Need::IoUring) {
        return;
    }
    // Buffered, so the file may end mid-sector: 10000 bytes.
    let image = image(10_000, false);
    let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&image.path, &content).unwrap();
    let mut engine = UringEngine::new(Arc::clone(&image.target), 4, 2 * BLOCK).unwrap();
    let read = Io {
        id: 9,
        kind: IoKind::Read { offset: 4096 },
        buf: engine.take_buffer(8192),
        stamps: None,
    };
    let completion = run(&mut engine, vec![read]).pop().unwrap();
    let error = completion.result.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
    assert_eq!(
        error.to_string(),
        "short read at offset 4096: end of target after 5904 of 8192 bytes"
    );
    assert_eq!(completion.buf[..5904], content[4096..]);
}

/// A target the engine drives only through its fd: the read end of a pipe,
/// whose reads return what has been written so far (the short transfers a
/// disk rarely shows on demand); or, without an fd, a target io_uring cannot
/// drive, as an NBD export.
struct StubTarget {
    fd: Option<OwnedFd>,
    info: TargetInfo,
}

fn target_info(uri: &str) -> TargetInfo {
    TargetInfo {
        uri: uri.to_string(),
        kind: TargetKind::File,
        size_bytes: 1 << 20,
        logical_sector_size: 512,
        physical_sector_size: 4096,
        direct_io: false,
        read_only: false,
        supports_fua: false,
        identity: TargetIdentity::default(),
    }
}

fn unsupported() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::Unsupported)
}

impl Target for StubTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }
    fn read_at(&self, _: &mut [u8], _: u64) -> std::io::Result<()> {
        Err(unsupported())
    }
    fn write_at(&self, _: &[u8], _: u64, _: bool) -> std::io::Result<()> {
        Err(unsupported())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|fd| fd.as_fd())
    }
}

fn pipe() -> (Arc<dyn Target>, OwnedFd) {
    let (read_end, write_end) = rustix::pipe::pipe().unwrap();
    let target = StubTarget {
        fd: Some(read_end),
        info: target_info("pipe"),
    };
    (Arc::new(target), write_end)
}

#[test]
fn short_reads_are_finished_by_resubmitting_the_rest() {
    if !require(Need::IoUring) {
        return;
    }
    let (target, write_end) = pipe();
    let mut engine = UringEngine::new(target, 2, BLOCK).unwrap();
    let read = Io {
        id: 1,
        kind: IoKind::Read { offset: 0 },
        buf: engine.take_buffer(BLOCK),
        stamps: None,
    };
    engine.submit(read).unwrap();
    engine.kick().unwrap();
    let data = pattern(3);
    rustix::io::write(&write_end, &data[..1000]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // The first 1000 bytes completed the read short; the engine waits for the rest.
    assert!(engine.complete(0).unwrap().is_empty());
    assert_eq!(engine.in_flight(), 1);
    rustix::io::write(&write_end, &data[1000..]).unwrap();
    let completion = engine.complete(1).unwrap().pop().unwrap();
    completion.result.unwrap();
    assert_eq!(*completion.buf, data);
}

extern "C" fn ignore_signal(_: libc::c_int) {}

#[test]
fn a_signal_while_waiting_does_not_fail_complete() {
    if !require(Need::IoUring) {
        return;
    }
    // SAFETY: installs a handler that does nothing, without SA_RESTART, so
    // that a blocked io_uring_enter returns EINTR.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }
    let (target, write_end) = pipe();
    let mut engine = UringEngine::new(target, 2, BLOCK).unwrap();
    let read = Io {
        id: 1,
        kind: IoKind::Read { offset: 0 },
        buf: AlignedBuf::new(BLOCK),
        stamps: None,
    };
    engine.submit(read).unwrap();
    engine.kick().unwrap();
    let waiter = std::thread::spawn(move || engine.complete(1));
    use std::os::unix::thread::JoinHandleExt;
    let thread = waiter.as_pthread_t();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(10));
        // SAFETY: the thread is alive until it is joined below.
        assert_eq!(unsafe { libc::pthread_kill(thread, libc::SIGUSR1) }, 0);
    }
    // Fails only when `complete` gave up early and dropped the engine; the
    // join below then shows why.
    let _ = rustix::io::write(&write_end, &pattern(5));
    let completion = waiter.join().unwrap().unwrap().pop().unwrap();
    completion.result.unwrap();
    assert_eq!(*completion.buf, pattern(5));
}

#[test]
fn dropping_the_engine_cancels_a_read_that_would_never_complete() {
    if !require(Need::IoUring) {
        return;
    }
    let (target, _write_end) = pipe();
    let (dropped, was_dropped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut engine = UringEngine::new(target, 2, BLOCK).unwrap();
        let read = Io {
            id: 1,
            kind: IoKind::Read { offset: 0 },
            buf: engine.take_buffer(BLOCK),
            stamps: None,
        };
        engine.submit(read).unwrap();
        engine.kick().unwrap();
        drop(engine);
        dropped.send(()).unwrap();
    });
    was_dropped
        .recv_timeout(Duration::from_secs(10))
        .expect("drop returned");
}

#[test]
fn misaligned_direct_writes_fail_in_their_completion_with_einval() {
    if !require(Need::IoUring) {
        return;
    }
    let image = image(1 << 20, true);
    let mut engine = UringEngine::new(Arc::clone(&image.target), 4, BLOCK).unwrap();
    // Writes only: ext4 quietly serves a misaligned O_DIRECT read through
    // the page cache instead of failing it (seen on Linux 6.18).
    let misaligned_offset = IoKind::Write {
        offset: 100,
        fua: false,
    };
    let misaligned_length = IoKind::Write {
        offset: 0,
        fua: false,
    };
    let ios = vec![
        Io {
            id: 1,
            kind: misaligned_offset,
            buf: engine.take_buffer(BLOCK),
            stamps: None,
        },
        Io {
            id: 2,
            kind: misaligned_offset,
            buf: AlignedBuf::new(BLOCK),
            stamps: None,
        },
        Io {
            id: 3,
            kind: misaligned_length,
            buf: engine.take_buffer(100),
            stamps: None,
        },
    ];
    let completions = run(&mut engine, ios);
    assert_eq!(completions.len(), 3);
    for completion in completions {
        let error = completion.result.unwrap_err();
        assert_eq!(
            error.raw_os_error(),
            Some(libc::EINVAL),
            "IO {}",
            completion.id
        );
    }
}

#[test]
fn in_flight_counts_ios_from_submit_until_complete_returns_them() {
    if !require(Need::IoUring) {
        return;
    }
    let image = image(1 << 20, true);
    let mut engine = UringEngine::new(Arc::clone(&image.target), 8, BLOCK).unwrap();
    assert_eq!(
        (engine.name(), engine.queue_depth(), engine.in_flight()),
        ("uring", 8, 0)
    );
    for id in 0..5u64 {
        let io = Io {
            id,
            kind: IoKind::Read {
                offset: id * BLOCK as u64,
            },
            buf: engine.take_buffer(BLOCK),
            stamps: None,
        };
        engine.submit(io).unwrap();
        assert_eq!(engine.in_flight(), id as usize + 1);
    }
    engine.kick().unwrap();
    assert_eq!(engine.in_flight(), 5);
    let first = engine.complete(2).unwrap();
    assert!(first.len() >= 2);
    assert_eq!(engine.in_flight(), 5 - first.len());
    // Asking for more than is in flight waits only for what is.
    let rest = engine.complete(100).unwrap();
    assert_eq!(first.len() + rest.len(), 5);
    assert_eq!(engine.in_flight(), 0);
    assert!(engine.complete(1).unwrap().is_empty());
}

#[test]
fn uring_engine_needs_a_file_descriptor() {
    let target: Arc<dyn Target> = Arc::new(StubTarget {
        fd: None,
        info: target_info("nbd://host/export"),
    });
    let error = UringEngine::new(Arc::clone(&target), 4, BLOCK)
        .err()
        .unwrap();
    assert_eq!(error.kind(), std::io::ErrorKind::Unsupported);
    let message = build(EngineChoice::Uring, Arc::clone(&target), 4, BLOCK)
        .err()
        .unwrap();
    assert_eq!(
        message,
        "target nbd://host/export: the uring engine needs a file or block device target; \
         use the sync engine"
    );
    let (engine, note) = build(EngineChoice::Auto, target, 4, BLOCK).unwrap();
    assert_eq!((engine.name(), note), ("sync", None));
}

#[test]
fn build_gives_the_engine_asked_for() {
    let image = image(1 << 20, true);
    let (engine, note) = build(EngineChoice::Sync, Arc::clone(&image.target), 4, BLOCK).unwrap();
    assert_eq!((engine.name(), note), ("sync", None));
    let (engine, note) = build(EngineChoice::Auto, Arc::clone(&image.target), 4, BLOCK).unwrap();
    match uring::probe() {
        Ok(()) => assert_eq!((engine.name(), note), ("uring", None)),
        Err(why) => {
            assert_eq!(engine.name(), "sync");
            assert!(note.unwrap().contains(&why));
        }
    }
}
