//! The byte stream to an NBD server: TCP or a unix socket.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::uri::Endpoint;

/// A connected stream. Writes to a socket whose peer has gone raise SIGPIPE
/// on Linux; blockstamp restores SIGPIPE's default (so `blockstamp … | head`
/// ends quietly), so every write here passes MSG_NOSIGNAL and a dead server
/// shows up as an EPIPE error instead of killing the run.
pub(super) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    /// Connect, giving up on a TCP server that does not answer within
    /// `timeout`. (A unix socket connects or fails at once.)
    pub(super) fn connect(endpoint: &Endpoint, timeout: Duration) -> io::Result<Socket> {
        match endpoint {
            Endpoint::Unix { socket } => Ok(Socket::Unix(UnixStream::connect(socket)?)),
            Endpoint::Tcp { host, port } => {
                let mut last_error = None;
                for address in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&address, timeout) {
                        Ok(stream) => {
                            // Requests are small and latency-bound: never hold them back.
                            stream.set_nodelay(true)?;
                            return Ok(Socket::Tcp(stream));
                        }
                        Err(e) => last_error = Some(e),
                    }
                }
                Err(last_error.unwrap_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("host {host} has no address"),
                    )
                }))
            }
        }
    }

    pub(super) fn try_clone(&self) -> io::Result<Socket> {
        Ok(match self {
            Socket::Tcp(stream) => Socket::Tcp(stream.try_clone()?),
            Socket::Unix(stream) => Socket::Unix(stream.try_clone()?),
        })
    }

    /// Timeouts for blocking reads and writes; `None` waits forever.
    pub(super) fn set_timeouts(
        &self,
        read: Option<Duration>,
        write: Option<Duration>,
    ) -> io::Result<()> {
        match self {
            Socket::Tcp(stream) => {
                stream.set_read_timeout(read)?;
                stream.set_write_timeout(write)
            }
            Socket::Unix(stream) => {
                stream.set_read_timeout(read)?;
                stream.set_write_timeout(write)
            }
        }
    }

    /// Shut both directions down: wakes a thread blocked reading this socket
    /// (or a clone of it) with end-of-file. Errors mean it is already down.
    pub(super) fn shutdown(&self) {
        let _ = match self {
            Socket::Tcp(stream) => stream.shutdown(Shutdown::Both),
            Socket::Unix(stream) => stream.shutdown(Shutdown::Both),
        };
    }

    /// Write a header and its payload without copying them together.
    pub(super) fn write_all_two(&mut self, header: &[u8], payload: &[u8]) -> io::Result<()> {
        let (mut header, mut payload) = (header, payload);
        while !header.is_empty() || !payload.is_empty() {
            let written = match self.write_vectored(&[IoSlice::new(header), IoSlice::new(payload)])
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => written,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let from_header = written.min(header.len());
            header = &header[from_header..];
            payload = &payload[written - from_header..];
        }
        Ok(())
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(stream) => stream.read(buf),
            Socket::Unix(stream) => stream.read(buf),
        }
    }
}

impl Socket {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            Socket::Tcp(stream) => stream.as_fd(),
            Socket::Unix(stream) => stream.as_fd(),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(rustix::net::send(
            self.fd(),
            buf,
            rustix::net::SendFlags::NOSIGNAL,
        )?)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut control = rustix::net::SendAncillaryBuffer::default();
        Ok(rustix::net::sendmsg(
            self.fd(),
            bufs,
            &mut control,
            rustix::net::SendFlags::NOSIGNAL,
        )?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
