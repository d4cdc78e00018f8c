//! NBD exports: `nbd://HOST[:PORT]/EXPORT` and `nbd+unix:///EXPORT?socket=PATH`.
//!
//! Writing through qemu-nbd, qemu-storage-daemon or nbdkit puts blockstamp's
//! IO through the real image-format code (qcow2, vmdk, snapshot chains),
//! where bugs like SEsparse's lost bursts live. One connection carries many
//! requests at once: the engine's threads each submit on it, and replies
//! come back in whatever order the server finishes them.
//!
//! Discard and write-zeroes go out as NBD_CMD_TRIM and NBD_CMD_WRITE_ZEROES,
//! only where the export advertises them; a FAST_ZERO the server turns down
//! is zeroed again without the flag, as the protocol intends.
//!
//! - `uri`: parsing the URI.
//! - `proto`: the wire format, pure encoders and decoders.
//! - `socket`: TCP or unix stream.
//! - `handshake`: fixed-newstyle negotiation up to the transmission phase.
//! - `client`: the transmission phase, with a reader thread that matches
//!   replies to requests by cookie.

mod client;
mod handshake;
pub mod proto;
mod socket;
pub mod uri;

use std::io;
use std::time::Duration;

use self::client::{Client, Ticket};
use self::handshake::{Export, HandshakeError};
use self::proto::BlockSizes;
use self::socket::Socket;
use self::uri::NbdUri;
use super::{
    OpenRequest, SpaceOps, Target, TargetIdentity, TargetInfo, TargetKind, ZeroFlags, unsupported,
};
use crate::error::{Error, Result};

/// Give up on a TCP connect after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Give up on a server that has not finished the handshake after this long
/// per step (it may not be an NBD server at all).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// A request not answered within this long fails the connection.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Timeouts of an NBD connection; the defaults suit real servers, tests
/// shorten them.
#[derive(Clone, Debug)]
pub struct NbdOptions {
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for NbdOptions {
    fn default() -> Self {
        NbdOptions {
            connect_timeout: CONNECT_TIMEOUT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

/// An NBD export opened over one connection.
pub struct NbdTarget {
    info: TargetInfo,
    client: Client,
    export: Export,
    /// Largest read or write sent in one request: the server's maximum
    /// payload, in whole sectors. Bigger transfers are split.
    chunk_bytes: usize,
}

impl NbdTarget {
    /// Connect and negotiate with the default timeouts.
    pub fn open(uri: &str, request: &OpenRequest) -> Result<NbdTarget> {
        NbdTarget::open_with(uri, request, &NbdOptions::default())
    }

    /// Connect and negotiate. Usage errors (exit 2): a malformed URI, TLS,
    /// an export that does not exist, a read-only export opened for writing,
    /// `--size` beyond the export. Run errors (exit 3): the server cannot be
    /// reached or does not speak fixed-newstyle NBD.
    pub fn open_with(uri: &str, request: &OpenRequest, options: &NbdOptions) -> Result<NbdTarget> {
        let NbdUri {
            endpoint,
            export: export_name,
        } = uri::parse(uri)?;
        let server = format!("NBD server at {endpoint}");
        let mut socket = Socket::connect(&endpoint, options.connect_timeout).map_err(|e| {
            Error::run(format!(
                "target {uri}: cannot connect to the {server}: {e}; is the server running there?"
            ))
        })?;
        let negotiated = socket
            .set_timeouts(
                Some(options.handshake_timeout),
                Some(options.handshake_timeout),
            )
            .map_err(HandshakeError::Io)
            .and_then(|()| handshake::negotiate(&mut socket, &export_name));
        let export = negotiated.map_err(|e| handshake_error(uri, &server, &export_name, e))?;

        let flags = export.transmission_flags;
        let block_sizes = export.block_sizes;
        // We address whole sectors only; a server minimum above 512 (a 4Kn
        // disk behind it) raises the sector size.
        let logical_sector_size = block_sizes.minimum.max(512);
        let physical_sector_size = block_sizes.preferred.max(logical_sector_size);
        let chunk_bytes = (block_sizes.maximum_payload / logical_sector_size).max(1) as usize
            * logical_sector_size as usize;
        let client =
            Client::start(socket, server.clone(), options.request_timeout).map_err(|e| {
                Error::run(format!(
                    "target {uri}: cannot start talking to the {server}: {e}"
                ))
            })?;
        // From here on, returning an error drops `client`, which disconnects politely.

        if request.write && flags & proto::FLAG_READ_ONLY != 0 {
            return Err(Error::usage(format!(
                "target {uri}: export {export_name:?} on the {server} is read-only; serve it writable (without -r / --read-only) to write to it"
            )));
        }
        if let Some(wanted) = request.create_size
            && wanted > export.size_bytes
        {
            return Err(Error::usage(format!(
                "target {uri}: --size {wanted} is larger than the NBD export ({} bytes), which cannot be grown from here; resize it on the server or give a smaller --size",
                export.size_bytes
            )));
        }
        Ok(NbdTarget {
            info: TargetInfo {
                uri: uri.to_string(),
                kind: TargetKind::Nbd,
                size_bytes: export.size_bytes,
                logical_sector_size,
                physical_sector_size,
                // No client-side cache: every read goes to the server.
                direct_io: true,
                read_only: !request.write,
                supports_fua: flags & proto::FLAG_SEND_FUA != 0,
                identity: TargetIdentity::default(),
            },
            client,
            export,
            chunk_bytes,
        })
    }

    /// The most requests this connection has had in flight at once (sent in
    /// full, not yet answered). Shows that the server saw queue depth.
    pub fn max_in_flight(&self) -> usize {
        self.client.max_in_flight()
    }

    /// The server's block-size constraints as negotiated.
    pub fn block_sizes(&self) -> BlockSizes {
        self.export.block_sizes
    }

    /// The export's transmission flags (`proto::FLAG_*`) as negotiated.
    pub fn transmission_flags(&self) -> u16 {
        self.export.transmission_flags
    }

    /// Whether the server takes NBD_CMD_FLUSH.
    pub fn supports_flush(&self) -> bool {
        self.export.transmission_flags & proto::FLAG_SEND_FLUSH != 0
    }

    /// Refuse, before anything is sent, what the server would reject or what
    /// would desynchronise a simple-reply stream.
    fn check_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let minimum = u64::from(self.export.block_sizes.minimum);
        let end = offset.checked_add(len);
        if end.is_none_or(|end| end > self.info.size_bytes) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{len} bytes at offset {offset} reach past the end of the NBD export ({} bytes)",
                    self.info.size_bytes
                ),
            ));
        }
        if !offset.is_multiple_of(minimum) || !len.is_multiple_of(minimum) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{len} bytes at offset {offset} are not aligned to the NBD export's {minimum}-byte blocks"
                ),
            ));
        }
        Ok(())
    }

    /// Wait for every ticket, in order, and return the first error. All are
    /// waited for even after a failure so that when a write returns, none of
    /// its pieces is still in flight (a later write to the same block must
    /// not race an earlier one).
    fn wait_all(
        &self,
        tickets: Vec<(std::ops::Range<usize>, Ticket)>,
        mut on_data: impl FnMut(std::ops::Range<usize>, Vec<u8>),
    ) -> io::Result<()> {
        let mut first_error = None;
        for (range, ticket) in tickets {
            match self.client.wait(ticket) {
                Ok(data) => on_data(range, data),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether the export offers `flag` (a `proto::FLAG_SEND_*`) to this
    /// target: never when it was opened for reading only.
    fn offers(&self, flag: u16) -> bool {
        !self.info.read_only
            && self.export.transmission_flags & proto::FLAG_READ_ONLY == 0
            && self.export.transmission_flags & flag != 0
    }

    /// Carry out an effect-only request (TRIM, WRITE_ZEROES) over `len`
    /// bytes at `offset`: pieces of at most [`proto::MAX_EFFECT_BYTES`],
    /// all in flight at once, all waited for. A piece the server turns down
    /// in a way the protocol means to be retried is sent again:
    /// - FAST_ZERO refused with NBD_ENOTSUP (zeroing would be slow): again
    ///   without the flag, which the server must then not refuse;
    /// - a piece longer than the maximum payload refused with
    ///   NBD_EOVERFLOW or NBD_EINVAL (too costly at that length): again in
    ///   pieces of the maximum payload (in whole sectors, as reads go).
    fn effect(&self, command: u16, flags: u16, offset: u64, len: u64) -> io::Result<()> {
        // chunk_bytes is at most the maximum payload (32 MiB at most), so it fits.
        let max_payload = u32::try_from(self.chunk_bytes).unwrap_or(proto::DEFAULT_MAX_PAYLOAD);
        let mut work: Vec<(u64, u32, u16)> =
            proto::effect_pieces(offset, len, proto::MAX_EFFECT_BYTES)
                .map(|(piece_offset, length)| (piece_offset, length, flags))
                .collect();
        let mut first_error = None;
        // Each retry clears FAST_ZERO or cuts pieces to the maximum payload,
        // so no piece is retried more than twice.
        while !work.is_empty() {
            let mut sent = Vec::with_capacity(work.len());
            let mut send_error = None;
            for &(piece_offset, length, piece_flags) in &work {
                match self
                    .client
                    .submit(command, piece_flags, piece_offset, length, &[], 0)
                {
                    Ok(ticket) => sent.push(((piece_offset, length, piece_flags), ticket)),
                    Err(e) => {
                        send_error = Some(e);
                        break;
                    }
                }
            }
            let mut retry = Vec::new();
            for ((piece_offset, length, piece_flags), ticket) in sent {
                let Err(e) = self.client.wait(ticket) else {
                    continue;
                };
                let errno = e.raw_os_error().map(rustix::io::Errno::from_raw_os_error);
                if piece_flags & proto::CMD_FLAG_FAST_ZERO != 0
                    && errno == Some(rustix::io::Errno::NOTSUP)
                {
                    retry.push((
                        piece_offset,
                        length,
                        piece_flags & !proto::CMD_FLAG_FAST_ZERO,
                    ));
                } else if length > max_payload
                    && matches!(
                        errno,
                        Some(rustix::io::Errno::OVERFLOW | rustix::io::Errno::INVAL)
                    )
                {
                    retry.extend(
                        proto::effect_pieces(piece_offset, u64::from(length), max_payload)
                            .map(|(offset, length)| (offset, length, piece_flags)),
                    );
                } else {
                    first_error.get_or_insert(e);
                }
            }
            if let Some(e) = send_error {
                return Err(e);
            }
            if first_error.is_some() {
                break;
            }
            work = retry;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Refuse a space operation this target cannot send.
    fn check_effect(&self, offset: u64, len: u64, flag: u16, what: &str) -> io::Result<()> {
        if self.info.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the NBD target was opened for reading only",
            ));
        }
        if !self.offers(flag) {
            return Err(unsupported(what));
        }
        self.check_range(offset, len)
    }

    /// Pieces of at most `chunk_bytes`: (offset in the export, range in the buffer).
    fn pieces(
        &self,
        offset: u64,
        len: usize,
    ) -> impl Iterator<Item = (u64, std::ops::Range<usize>)> + use<> {
        let chunk = self.chunk_bytes;
        (0..len)
            .step_by(chunk)
            .map(move |start| (offset + start as u64, start..(start + chunk).min(len)))
    }
}

impl Target for NbdTarget {
    fn info(&self) -> &TargetInfo {
        &self.info
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let mut tickets = Vec::new();
        for (piece_offset, range) in self.pieces(offset, buf.len()) {
            let length = range.len();
            let ticket =
                self.client
                    .submit(proto::CMD_READ, 0, piece_offset, length as u32, &[], length);
            match ticket {
                Ok(ticket) => tickets.push((range, ticket)),
                Err(e) => {
                    let _ = self.wait_all(tickets, |_, _| {});
                    return Err(e);
                }
            }
        }
        self.wait_all(tickets, |range, data| buf[range].copy_from_slice(&data))
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        if self.info.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the NBD target was opened for reading only",
            ));
        }
        self.check_range(offset, buf.len() as u64)?;
        let flags = if fua && self.info.supports_fua {
            proto::CMD_FLAG_FUA
        } else {
            0
        };
        let mut tickets = Vec::new();
        for (piece_offset, range) in self.pieces(offset, buf.len()) {
            let ticket = self.client.submit(
                proto::CMD_WRITE,
                flags,
                piece_offset,
                range.len() as u32,
                &buf[range.clone()],
                0,
            );
            match ticket {
                Ok(ticket) => tickets.push((range, ticket)),
                Err(e) => {
                    let _ = self.wait_all(tickets, |_, _| {});
                    return Err(e);
                }
            }
        }
        self.wait_all(tickets, |_, _| {})?;
        if fua && !self.info.supports_fua {
            // No FUA on the wire: a flush after the write gives the same promise.
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        if !self.supports_flush() {
            // A server without NBD_FLAG_SEND_FLUSH has no write cache to
            // flush (the kernel's nbd driver reads it the same way): its
            // acknowledged writes are as durable as they will get.
            return Ok(());
        }
        let ticket = self.client.submit(proto::CMD_FLUSH, 0, 0, 0, &[], 0)?;
        self.client.wait(ticket).map(drop)
    }

    fn max_in_flight(&self) -> Option<usize> {
        Some(self.client.max_in_flight())
    }

    /// What the export advertises. NBD promises nothing about a read after
    /// TRIM and does not tell the discard granularity, so both stay untold
    /// (docs/CONTRACT.md, discard).
    fn space_ops(&self) -> SpaceOps {
        let write_zeroes = self.offers(proto::FLAG_SEND_WRITE_ZEROES);
        SpaceOps {
            discard: self.offers(proto::FLAG_SEND_TRIM),
            write_zeroes,
            // The protocol forbids FAST_ZERO without WRITE_ZEROES.
            fast_zero: write_zeroes && self.offers(proto::FLAG_SEND_FAST_ZERO),
            discard_granularity: 0,
            max_bytes: u64::from(proto::MAX_EFFECT_BYTES),
            discard_reads: None,
        }
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_effect(
            offset,
            len,
            proto::FLAG_SEND_TRIM,
            "discard (the NBD export does not offer NBD_CMD_TRIM)",
        )?;
        self.effect(proto::CMD_TRIM, 0, offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64, zero: ZeroFlags) -> io::Result<()> {
        self.check_effect(
            offset,
            len,
            proto::FLAG_SEND_WRITE_ZEROES,
            "write-zeroes (the NBD export does not offer NBD_CMD_WRITE_ZEROES)",
        )?;
        let flags =
            proto::write_zeroes_flags(zero.unmap, zero.fast, self.export.transmission_flags);
        self.effect(proto::CMD_WRITE_ZEROES, flags, offset, len)
    }
}

/// A handshake failure as one line for the user, with the right exit code.
fn handshake_error(uri: &str, server: &str, export_name: &str, error: HandshakeError) -> Error {
    match error {
        HandshakeError::Io(e) => match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => Error::run(format!(
                "target {uri}: the {server} closed the connection during the NBD handshake"
            )),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::run(format!(
                "target {uri}: the {server} did not answer the NBD handshake in time; is it an NBD server, and does it take another client (qemu-nbd --shared=N)?"
            )),
            _ => Error::run(format!(
                "target {uri}: NBD handshake with the {server} failed: {e}"
            )),
        },
        HandshakeError::Protocol(e) => Error::run(format!(
            "target {uri}: the {server} does not speak the NBD protocol as expected: {e}"
        )),
        HandshakeError::Oldstyle => Error::run(format!(
            "target {uri}: the {server} uses the oldstyle NBD handshake, which has no export names; serve the export with fixed-newstyle (qemu-nbd, nbdkit without -o, nbd-server 3.10 or later)"
        )),
        HandshakeError::NotFixedNewstyle => Error::run(format!(
            "target {uri}: the {server} speaks only the original (non-fixed) newstyle handshake; use a server with fixed-newstyle (qemu-nbd, nbdkit, nbd-server 3.10 or later)"
        )),
        HandshakeError::UnknownExport(message) => Error::usage(format!(
            "target {uri}: export {export_name:?} does not exist on the {server}{}; check the export name (qemu-nbd -x NAME)",
            said(&message)
        )),
        HandshakeError::TlsRequired => Error::usage(format!(
            "target {uri}: the {server} requires TLS, which is not supported; serve the export without TLS"
        )),
        HandshakeError::Refused {
            reply_type,
            message,
        } => {
            let text = format!(
                "target {uri}: the {server} refused export {export_name:?} with {}{}",
                proto::reply_type_name(reply_type),
                said(&message)
            );
            if reply_type == proto::REP_ERR_POLICY {
                Error::usage(text)
            } else {
                Error::run(text)
            }
        }
        HandshakeError::ExportNameClosed => Error::usage(format!(
            "target {uri}: the {server} hung up when asked for export {export_name:?}; the export probably does not exist"
        )),
    }
}

/// ` (server says: ...)`, or nothing when the server said nothing.
fn said(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(" (server says: {message})")
    }
}
