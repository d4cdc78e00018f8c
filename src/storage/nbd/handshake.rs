//! The fixed-newstyle handshake: pick the export, learn its size, flags and
//! block-size constraints.
//!
//! NBD_OPT_GO is used (it can say "no such export"); a server too old to
//! know it gets NBD_OPT_EXPORT_NAME instead. Structured replies are not
//! negotiated: simple replies carry everything blockstamp needs.

use std::io::{self, Read, Write};

use super::proto::{self, BlockSizes, Info, ProtoError, ServerStyle};
use super::socket::Socket;

/// The most option replies one NBD_OPT_GO may take; a server that sends more
/// is not converging.
const MAX_GO_REPLIES: usize = 64;

/// The longest option reply accepted: information items are a few bytes,
/// error messages a sentence.
const MAX_OPTION_REPLY_BYTES: u32 = 64 * 1024;

/// The export, as the server describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Export {
    pub size_bytes: u64,
    pub transmission_flags: u16,
    pub block_sizes: BlockSizes,
}

/// Why the handshake did not reach the transmission phase.
#[derive(Debug)]
pub(super) enum HandshakeError {
    Io(io::Error),
    Protocol(ProtoError),
    Oldstyle,
    NotFixedNewstyle,
    /// NBD_REP_ERR_UNKNOWN, with the server's message.
    UnknownExport(String),
    TlsRequired,
    /// Any other error reply, with the server's message.
    Refused {
        reply_type: u32,
        message: String,
    },
    /// The server hung up on NBD_OPT_EXPORT_NAME: how old servers say "no such export".
    ExportNameClosed,
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

impl From<ProtoError> for HandshakeError {
    fn from(e: ProtoError) -> Self {
        HandshakeError::Protocol(e)
    }
}

/// Run the handshake on a freshly connected socket, up to the transmission
/// phase. The caller sets the socket's timeouts.
pub(super) fn negotiate(socket: &mut Socket, export_name: &str) -> Result<Export, HandshakeError> {
    let mut greeting = [0u8; proto::SERVER_MAGIC_BYTES];
    socket.read_exact(&mut greeting)?;
    if proto::decode_server_magic(&greeting)? == ServerStyle::Oldstyle {
        return Err(HandshakeError::Oldstyle);
    }
    let mut flags = [0u8; 2];
    socket.read_exact(&mut flags)?;
    let handshake_flags = proto::decode_handshake_flags(&flags)?;
    if handshake_flags & proto::FLAG_FIXED_NEWSTYLE == 0 {
        return Err(HandshakeError::NotFixedNewstyle);
    }
    let no_zeroes = handshake_flags & proto::FLAG_NO_ZEROES != 0;
    let mut client_flags = proto::FLAG_C_FIXED_NEWSTYLE;
    if no_zeroes {
        client_flags |= proto::FLAG_C_NO_ZEROES;
    }
    socket.write_all(&proto::encode_client_flags(client_flags))?;

    match go(socket, export_name)? {
        Some(export) => Ok(export),
        None => export_name_option(socket, export_name, no_zeroes),
    }
}

/// NBD_OPT_GO. `None` when the server does not know the option.
fn go(socket: &mut Socket, export_name: &str) -> Result<Option<Export>, HandshakeError> {
    let data = proto::encode_go_data(export_name, &[proto::INFO_EXPORT, proto::INFO_BLOCK_SIZE]);
    socket.write_all(&proto::encode_option(proto::OPT_GO, &data))?;
    let mut export_info = None;
    let mut block_sizes = None;
    for _ in 0..MAX_GO_REPLIES {
        let (reply_type, data) = read_option_reply(socket, proto::OPT_GO)?;
        match reply_type {
            proto::REP_INFO => match proto::decode_info(&data)? {
                Info::Export {
                    size_bytes,
                    transmission_flags,
                } => {
                    export_info = Some((size_bytes, transmission_flags));
                }
                Info::BlockSize {
                    minimum,
                    preferred,
                    maximum,
                } => {
                    block_sizes = Some(BlockSizes::from_advertised(minimum, preferred, maximum)?);
                }
                Info::Other(_) => {}
            },
            proto::REP_ACK => {
                let (size_bytes, transmission_flags) =
                    export_info.ok_or(ProtoError::MissingExportInfo)?;
                return Ok(Some(Export {
                    size_bytes,
                    transmission_flags,
                    block_sizes: block_sizes.unwrap_or(BlockSizes::DEFAULT),
                }));
            }
            proto::REP_ERR_UNSUP => return Ok(None),
            proto::REP_ERR_UNKNOWN => {
                return Err(HandshakeError::UnknownExport(server_message(&data)));
            }
            proto::REP_ERR_TLS_REQD => return Err(HandshakeError::TlsRequired),
            error if error & proto::REP_FLAG_ERROR != 0 => {
                return Err(HandshakeError::Refused {
                    reply_type: error,
                    message: server_message(&data),
                });
            }
            // Reply types we do not know but that are not errors: ignore, as
            // the protocol asks of unknown information.
            _ => {}
        }
    }
    Err(ProtoError::TooManyReplies {
        limit: MAX_GO_REPLIES,
    }
    .into())
}

/// One option reply to `option`: its type and data.
fn read_option_reply(socket: &mut Socket, option: u32) -> Result<(u32, Vec<u8>), HandshakeError> {
    let mut header = [0u8; proto::OPTION_REPLY_HEADER_BYTES];
    socket.read_exact(&mut header)?;
    let header = proto::decode_option_reply_header(&header)?;
    if header.option != option {
        return Err(ProtoError::WrongOption {
            expected: option,
            found: header.option,
        }
        .into());
    }
    if header.length > MAX_OPTION_REPLY_BYTES {
        return Err(ProtoError::TooLong {
            what: "option reply",
            length: u64::from(header.length),
            limit: u64::from(MAX_OPTION_REPLY_BYTES),
        }
        .into());
    }
    let mut data = vec![0u8; header.length as usize];
    socket.read_exact(&mut data)?;
    Ok((header.reply_type, data))
}

/// NBD_OPT_EXPORT_NAME, for servers without NBD_OPT_GO. A refusal is a
/// hang-up, so that is what "no such export" looks like here.
fn export_name_option(
    socket: &mut Socket,
    export_name: &str,
    no_zeroes: bool,
) -> Result<Export, HandshakeError> {
    socket.write_all(&proto::encode_option(
        proto::OPT_EXPORT_NAME,
        export_name.as_bytes(),
    ))?;
    let mut reply = [0u8; proto::EXPORT_NAME_REPLY_BYTES];
    if let Err(e) = socket.read_exact(&mut reply) {
        return Err(match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                HandshakeError::ExportNameClosed
            }
            _ => HandshakeError::Io(e),
        });
    }
    let reply = proto::decode_export_name_reply(&reply)?;
    if !no_zeroes {
        let mut padding = [0u8; proto::EXPORT_NAME_PADDING_BYTES];
        socket.read_exact(&mut padding)?;
    }
    Ok(Export {
        size_bytes: reply.size_bytes,
        transmission_flags: reply.transmission_flags,
        block_sizes: BlockSizes::DEFAULT,
    })
}

/// A server's error text, made safe for a one-line message.
fn server_message(data: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(data)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    text.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_become_one_short_line() {
        assert_eq!(server_message(b"  no such\nexport\0 "), "no such export");
        assert_eq!(server_message(&[b'x'; 1000]).len(), 200);
        assert_eq!(server_message(&[0xff, b'a']), "\u{fffd}a");
    }
}
