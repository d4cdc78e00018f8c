//! The transmission phase: many requests in flight on one connection.
//!
//! Callers on any thread `submit` a request (the socket's write half is
//! behind a mutex, so each request goes out whole) and `wait` for its reply.
//! One reader thread reads replies in whatever order the server sends them
//! and hands each to its caller by cookie. Nothing waits forever: a reply
//! that does not come within the request timeout, a write the server does
//! not take, end-of-file or a malformed reply all fail the connection, and
//! then every pending and future request gets the same error at once.

use std::collections::HashMap;
use std::io::{self, BufReader, Read};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::proto::{self, Request};
use super::socket::Socket;

/// Replies are read through a buffer this large, so the many small reply
/// headers of a busy connection cost few system calls.
const READ_BUFFER_BYTES: usize = 256 * 1024;

type Reply = io::Result<Vec<u8>>;

/// A request sent and not yet answered.
struct Pending {
    reply_to: Sender<Reply>,
    /// Data bytes that follow a successful reply (reads only).
    read_length: usize,
    /// Fully written to the socket: counts toward the depth in flight.
    sent: bool,
}

/// Why the connection is unusable; every later request fails with this.
#[derive(Clone)]
struct Failure {
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    /// Typed as a lost target: the connection cannot carry another request,
    /// so what failed says nothing about the blocks it was for.
    fn to_error(&self) -> io::Error {
        crate::storage::target_lost(self.kind, self.message.clone())
    }
}

struct State {
    next_cookie: u64,
    pending: HashMap<u64, Pending>,
    failure: Option<Failure>,
    /// Set on drop: end-of-file from here on is ours, not the server's doing.
    closing: bool,
    /// Requests fully written and not yet answered, now and at most.
    on_wire: usize,
    max_on_wire: usize,
}

/// What the reader thread and the callers share.
struct Shared {
    state: Mutex<State>,
    /// A handle on the socket only for shutting it down, which wakes the
    /// reader thread and makes every blocked write fail.
    control: Socket,
    /// For messages: "NBD server at 127.0.0.1:10809".
    server: String,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave State inconsistent (each update is a
        // single step), so keep going rather than cascade the panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Make the connection unusable: record why (the first reason wins),
    /// fail everything pending, and shut the socket down.
    fn fail(&self, kind: io::ErrorKind, message: String) -> Failure {
        let (failure, pending) = {
            let mut state = self.state();
            let failure = state
                .failure
                .get_or_insert(Failure { kind, message })
                .clone();
            state.on_wire = 0;
            (failure, std::mem::take(&mut state.pending))
        };
        for (_, request) in pending {
            let _ = request.reply_to.send(Err(failure.to_error()));
        }
        self.control.shutdown();
        failure
    }
}

/// A submitted request; redeem it with [`Client::wait`].
pub(super) struct Ticket {
    receiver: Receiver<Reply>,
    deadline: Instant,
}

/// The transmission-phase client of one connection.
pub(super) struct Client {
    shared: Arc<Shared>,
    writer: Mutex<Socket>,
    reader: Option<JoinHandle<()>>,
    request_timeout: Duration,
}

impl Client {
    /// Take over a socket that has finished the handshake.
    pub(super) fn start(
        socket: Socket,
        server: String,
        request_timeout: Duration,
    ) -> io::Result<Client> {
        // The reader waits for replies without a timeout (an idle connection
        // is fine); waiting callers enforce the deadline instead. A write the
        // server does not take within the timeout fails the connection.
        socket.set_timeouts(None, Some(request_timeout))?;
        let reader_socket = socket.try_clone()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_cookie: 1,
                pending: HashMap::new(),
                failure: None,
                closing: false,
                on_wire: 0,
                max_on_wire: 0,
            }),
            control: socket.try_clone()?,
            server,
        });
        let reader_shared = Arc::clone(&shared);
        let reader = std::thread::Builder::new()
            .name("bs-nbd-reader".into())
            .spawn(move || read_replies(&reader_shared, reader_socket))?;
        Ok(Client {
            shared,
            writer: Mutex::new(socket),
            reader: Some(reader),
            request_timeout,
        })
    }

    /// Send one request. `payload` is a write's data; `read_length` is how
    /// many bytes a successful reply carries (a read's length).
    pub(super) fn submit(
        &self,
        command: u16,
        flags: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
        read_length: usize,
    ) -> io::Result<Ticket> {
        let (reply_to, receiver) = mpsc::channel();
        let cookie = {
            let mut state = self.shared.state();
            if let Some(failure) = &state.failure {
                return Err(failure.to_error());
            }
            let cookie = state.next_cookie;
            state.next_cookie = state.next_cookie.wrapping_add(1);
            // Registered before it is sent: the reply may beat our return.
            state.pending.insert(
                cookie,
                Pending {
                    reply_to,
                    read_length,
                    sent: false,
                },
            );
            cookie
        };
        let header = proto::encode_request(&Request {
            flags,
            command,
            cookie,
            offset,
            length,
        });
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = writer.write_all_two(&header, payload) {
            drop(writer);
            // Part of a request may be on the wire: the stream is out of step.
            let kind = match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::ErrorKind::TimedOut,
                _ => io::ErrorKind::BrokenPipe,
            };
            let failure = self.shared.fail(
                kind,
                format!(
                    "cannot send to the {}: {}",
                    self.shared.server,
                    describe(&e)
                ),
            );
            return Err(failure.to_error());
        }
        {
            let mut state = self.shared.state();
            let state = &mut *state;
            if let Some(request) = state.pending.get_mut(&cookie) {
                request.sent = true;
                state.on_wire += 1;
                state.max_on_wire = state.max_on_wire.max(state.on_wire);
            }
        }
        drop(writer);
        Ok(Ticket {
            receiver,
            deadline: Instant::now() + self.request_timeout,
        })
    }

    /// The reply to a submitted request: a read's data, or the server's
    /// error as an errno, or why the connection failed.
    pub(super) fn wait(&self, ticket: Ticket) -> io::Result<Vec<u8>> {
        let remaining = ticket.deadline.saturating_duration_since(Instant::now());
        match ticket.receiver.recv_timeout(remaining) {
            Ok(reply) => reply,
            Err(RecvTimeoutError::Timeout) => {
                // A server that sits on a request this long is treated as
                // gone, as the kernel's nbd driver does: fail everything
                // rather than let callers pile up behind it.
                let failure = self.shared.fail(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the {} did not answer a request within {} s",
                        self.shared.server,
                        self.request_timeout.as_secs_f64()
                    ),
                );
                Err(failure.to_error())
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.current_failure()),
        }
    }

    fn current_failure(&self) -> io::Error {
        match &self.shared.state().failure {
            Some(failure) => failure.to_error(),
            None => crate::storage::target_lost(
                io::ErrorKind::Other,
                format!("lost the reply from the {}", self.shared.server),
            ),
        }
    }

    /// The most requests seen on the wire at once, each fully sent and not
    /// yet answered.
    pub(super) fn max_in_flight(&self) -> usize {
        self.shared.state().max_on_wire
    }
}

impl Drop for Client {
    /// Say goodbye with NBD_CMD_DISC (the server then finishes and closes;
    /// a server that said ESHUTDOWN must get it too), then stop the reader
    /// thread. On a connection already shut down the write simply fails.
    fn drop(&mut self) {
        self.shared.state().closing = true;
        let header = proto::encode_request(&Request {
            flags: 0,
            command: proto::CMD_DISC,
            cookie: 0,
            offset: 0,
            length: 0,
        });
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = writer.write_all_two(&header, &[]);
        drop(writer);
        self.shared.control.shutdown();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The reader thread: one reply after another, each to its caller, until
/// the connection ends.
fn read_replies(shared: &Shared, socket: Socket) {
    let mut socket = BufReader::with_capacity(READ_BUFFER_BYTES, socket);
    loop {
        let mut header = [0u8; proto::SIMPLE_REPLY_BYTES];
        if let Err(e) = socket.read_exact(&mut header) {
            let closing = shared.state().closing;
            let (kind, message) = if closing {
                (
                    io::ErrorKind::NotConnected,
                    format!("the connection to the {} is closed", shared.server),
                )
            } else {
                (
                    io::ErrorKind::ConnectionAborted,
                    format!("lost the {}: {}", shared.server, describe(&e)),
                )
            };
            shared.fail(kind, message);
            return;
        }
        let reply = match proto::decode_simple_reply(&header) {
            Ok(reply) => reply,
            Err(e) => {
                shared.fail(
                    io::ErrorKind::InvalidData,
                    format!("the {} sent a bad reply: {e}", shared.server),
                );
                return;
            }
        };
        let request = {
            let mut state = shared.state();
            let request = state.pending.remove(&reply.cookie);
            if request.as_ref().is_some_and(|request| request.sent) {
                state.on_wire = state.on_wire.saturating_sub(1);
            }
            request
        };
        let Some(request) = request else {
            // We cannot know whether data follows: the stream is lost.
            shared.fail(
                io::ErrorKind::InvalidData,
                format!(
                    "the {} replied to a request never sent (cookie {})",
                    shared.server, reply.cookie
                ),
            );
            return;
        };
        let result = if reply.error != 0 {
            // The errno itself, so EIO reads as EIO (the verifier's `unreadable`).
            Err(io::Error::from_raw_os_error(proto::errno_of(reply.error)))
        } else {
            let mut data = vec![0u8; request.read_length];
            if let Err(e) = socket.read_exact(&mut data) {
                let failure = shared.fail(
                    io::ErrorKind::ConnectionAborted,
                    format!(
                        "lost the {} in the middle of a reply: {}",
                        shared.server,
                        describe(&e)
                    ),
                );
                let _ = request.reply_to.send(Err(failure.to_error()));
                return;
            }
            Ok(data)
        };
        if reply.error == proto::ESHUTDOWN {
            // The server is going away: no new requests; those in flight
            // still get their replies.
            let mut state = shared.state();
            state.failure.get_or_insert(Failure {
                kind: io::ErrorKind::ConnectionAborted,
                message: format!("the {} is shutting down", shared.server),
            });
        }
        // The caller may have stopped waiting (its connection failed); fine.
        let _ = request.reply_to.send(result);
    }
}

/// An IO error in words, end-of-file included.
fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset => "the server closed the connection".into(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            "the server stopped taking data".into()
        }
        _ => e.to_string(),
    }
}
