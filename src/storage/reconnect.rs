//! A target that survives its own loss: when an IO fails because the target
//! as a whole is gone ([`super::is_target_lost`]), the target is reopened
//! (a new NBD connection and handshake, or the path opened again) with
//! backoff until a deadline, and the IO is issued again on the new one.
//!
//! Issuing a lost IO again is what makes the retry correct. A read simply
//! reads again. A write in flight at the loss is indeterminate (all, part or
//! none of it may have landed); writing the same bytes again settles it, and
//! until it returns the writer's journal keeps it pending, as for any write
//! in flight. No later write to the block can race it: the writer never has
//! two writes to one block in flight.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::{
    LossCounters, LossPolicy, OpenRequest, Target, TargetInfo, is_target_lost, nbd, target_lost,
};
use crate::error::Result;

/// First wait between attempts to reopen; doubled after each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Everything needed to open the target again as it was first opened.
#[derive(Clone, Debug)]
pub struct Opener {
    uri: String,
    request: OpenRequest,
    nbd_options: nbd::NbdOptions,
}

impl Opener {
    pub fn new(uri: &str, request: &OpenRequest, policy: &LossPolicy) -> Opener {
        let mut nbd_options = nbd::NbdOptions::default();
        if let Some(timeout) = policy.nbd_request_timeout {
            nbd_options.request_timeout = timeout;
        }
        Opener {
            uri: uri.to_string(),
            request: request.clone(),
            nbd_options,
        }
    }

    pub fn open(&self) -> Result<Box<dyn Target>> {
        super::open_with_nbd(&self.uri, &self.request, &self.nbd_options)
    }

    /// Open again: never create or grow anything (the target must come back
    /// as it was), and keep the size it had.
    fn reopen(&self, size_bytes: u64) -> std::result::Result<Box<dyn Target>, String> {
        let request = OpenRequest {
            create_size: self.request.create_size.map(|_| size_bytes),
            ..self.request.clone()
        };
        let target = super::open_with_nbd(&self.uri, &request, &self.nbd_options)
            .map_err(|e| e.to_string())?;
        let size = target.info().size_bytes;
        if size != size_bytes {
            return Err(format!(
                "{} came back with {size} bytes instead of {size_bytes}",
                self.uri
            ));
        }
        Ok(target)
    }
}

/// Called with one line for the user after each reconnect.
pub type Notify = Box<dyn Fn(String) + Send + Sync>;

/// A target reopened when lost, for up to `timeout` per loss.
pub struct Reconnecting {
    info: TargetInfo,
    /// The target in use; replaced whole on a reconnect.
    current: RwLock<Arc<dyn Target>>,
    /// The epoch is bumped on each reconnect: a caller whose IO failed on
    /// an older target retries at once instead of reconnecting again.
    counters: Arc<LossCounters>,
    /// One reconnect at a time; the others wait for its outcome.
    reconnecting: Mutex<()>,
    /// A reconnect ran out of time (why): every later loss fails at once
    /// with the same words.
    gave_up: OnceLock<(io::ErrorKind, String)>,
    opener: Opener,
    timeout: Duration,
    notify: Notify,
}

impl Reconnecting {
    pub fn new(
        target: Box<dyn Target>,
        opener: Opener,
        timeout: Duration,
        notify: Notify,
    ) -> Reconnecting {
        Reconnecting {
            info: target.info().clone(),
            current: RwLock::new(Arc::from(target)),
            counters: Arc::new(LossCounters::default()),
            reconnecting: Mutex::new(()),
            gave_up: OnceLock::new(),
            opener,
            timeout,
            notify,
        }
    }

    fn current(&self) -> (u64, Arc<dyn Target>) {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        (self.counters.epoch(), Arc::clone(&current))
    }

    /// Run `op` on the current target; when it fails because the target is
    /// lost, reconnect and run it again, until `timeout` after the first loss.
    fn retrying<T>(&self, mut op: impl FnMut(&dyn Target) -> io::Result<T>) -> io::Result<T> {
        let mut first_loss: Option<Instant> = None;
        loop {
            let (epoch, target) = self.current();
            match op(target.as_ref()) {
                Err(error) if is_target_lost(&error) => {
                    self.counters.count_failed_io();
                    let since = *first_loss.get_or_insert_with(Instant::now);
                    self.reconnect(epoch, error, since)?;
                }
                other => return other,
            }
        }
    }

    /// Replace the target lost at `seen_epoch` with a reopened one, trying
    /// with backoff until `timeout` after `lost_at`; else `error`, saying
    /// how long it was tried.
    fn reconnect(&self, seen_epoch: u64, error: io::Error, lost_at: Instant) -> io::Result<()> {
        let _one_at_a_time = self
            .reconnecting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.counters.epoch() != seen_epoch {
            return Ok(()); // another caller reconnected meanwhile
        }
        if let Some((kind, why)) = self.gave_up.get() {
            return Err(target_lost(*kind, why.clone()));
        }
        let deadline = lost_at + self.timeout;
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.opener.reopen(self.info.size_bytes) {
                Ok(target) => {
                    *self.current.write().unwrap_or_else(PoisonError::into_inner) =
                        Arc::from(target);
                    self.counters.next_epoch();
                    (self.notify)(format!(
                        "target lost ({error}); reconnected after {:.1} s",
                        lost_at.elapsed().as_secs_f64()
                    ));
                    return Ok(());
                }
                Err(why) => {
                    let now = Instant::now();
                    if now >= deadline {
                        let why = format!(
                            "{error}; not back within --reconnect-timeout {:.1} s (last attempt: {why})",
                            self.timeout.as_secs_f64()
                        );
                        let (kind, why) = self.gave_up.get_or_init(|| (error.kind(), why));
                        return Err(target_lost(*kind, why.clone()));
                    }
                    std::thread::sleep(backoff.min(deadline - now));
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

impl Target for Reconnecting {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.retrying(|target| target.read_at(buf, offset))
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.retrying(|target| target.write_at(buf, offset, fua))
    }

    /// A flush lost with its target is issued again on the new one. It then
    /// covers only what completed on the new one: the writer compares
    /// epochs ([`LossCounters`]) and writes again what the old one may
    /// have dropped.
    fn flush(&self) -> io::Result<()> {
        self.retrying(|target| target.flush())
    }

    /// None: the descriptor changes on a reconnect, so an engine that holds
    /// it (io_uring) cannot be used; the sync engine is.
    fn raw_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn data_ranges(&self) -> Option<Vec<std::ops::Range<u64>>> {
        self.current().1.data_ranges()
    }

    fn max_in_flight(&self) -> Option<usize> {
        self.current().1.max_in_flight()
    }

    fn loss_counters(&self) -> Option<Arc<LossCounters>> {
        Some(Arc::clone(&self.counters))
    }

    fn space_ops(&self) -> crate::storage::SpaceOps {
        self.current().1.space_ops()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.retrying(|target| target.discard(offset, len))
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        zero: crate::storage::ZeroFlags,
    ) -> io::Result<()> {
        self.retrying(|target| target.write_zeroes(offset, len, zero))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{TargetIdentity, TargetKind};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A target whose IOs fail as lost while `down` is set.
    struct Flaky {
        info: TargetInfo,
        down: Arc<AtomicBool>,
        reads: Arc<AtomicUsize>,
    }

    impl Target for Flaky {
        fn info(&self) -> &TargetInfo {
            &self.info
        }
        fn read_at(&self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(target_lost(io::ErrorKind::ConnectionAborted, "gone".into()));
            }
            buf.fill(7);
            Ok(())
        }
        fn write_at(&self, _buf: &[u8], _offset: u64, _fua: bool) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(
                rustix::io::Errno::IO.raw_os_error(),
            ))
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    fn info() -> TargetInfo {
        TargetInfo {
            uri: "flaky".into(),
            kind: TargetKind::File,
            size_bytes: 1 << 20,
            logical_sector_size: 512,
            physical_sector_size: 512,
            direct_io: true,
            read_only: false,
            supports_fua: false,
            identity: TargetIdentity::default(),
        }
    }

    #[test]
    fn lost_and_not_lost_errors_are_told_apart_by_type() {
        let lost = target_lost(io::ErrorKind::BrokenPipe, "server gone".into());
        assert!(is_target_lost(&lost));
        let errno = |e: rustix::io::Errno| io::Error::from_raw_os_error(e.raw_os_error());
        assert!(is_target_lost(&errno(rustix::io::Errno::NODEV)));
        assert!(is_target_lost(&errno(rustix::io::Errno::NXIO)));
        assert!(!is_target_lost(&errno(rustix::io::Errno::IO)));
        // The same words without the type are not a loss.
        assert!(!is_target_lost(&io::Error::new(
            io::ErrorKind::BrokenPipe,
            "server gone"
        )));
    }

    #[test]
    fn when_nothing_comes_back_the_loss_is_reported_after_the_timeout() {
        let down = Arc::new(AtomicBool::new(true));
        let reads = Arc::new(AtomicUsize::new(0));
        let target = Flaky {
            info: info(),
            down: Arc::clone(&down),
            reads: Arc::clone(&reads),
        };
        // The path does not exist: every reopen fails.
        let opener = Opener::new(
            "/nonexistent/blockstamp-reconnect-test",
            &OpenRequest::default(),
            &LossPolicy::default(),
        );
        let notes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&notes);
        let reconnecting = Reconnecting::new(
            Box::new(target),
            opener,
            Duration::from_millis(350),
            Box::new(move |line| seen.lock().unwrap().push(line)),
        );
        let started = Instant::now();
        let mut buf = vec![0u8; 512];
        let error = reconnecting.read_at(&mut buf, 0).unwrap_err();
        assert!(is_target_lost(&error), "{error}");
        assert!(error.to_string().contains("--reconnect-timeout"), "{error}");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(350), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        // Given up: the next loss fails at once, saying so.
        let started = Instant::now();
        let again = reconnecting.read_at(&mut buf, 0).unwrap_err();
        assert_eq!(again.to_string(), error.to_string());
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(notes.lock().unwrap().is_empty());
        // A failure that is not a loss is returned as it is, never retried.
        let error = reconnecting.write_at(&buf, 0, false).unwrap_err();
        assert_eq!(
            error.raw_os_error(),
            Some(rustix::io::Errno::IO.raw_os_error())
        );
    }
}
