//! The NBD wire format: constants, and pure encoders and decoders.
//!
//! Everything here works on byte slices and returns a [`ProtoError`] for any
//! input it cannot make sense of, so a hostile or broken server can never
//! make the client panic, and every decoder can be fed arbitrary bytes in
//! tests. Names follow `doc/proto.md` of NetworkBlockDevice/nbd.

use std::fmt;

/// "NBDMAGIC": first 8 bytes from every server.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": newstyle servers send it after NBDMAGIC; clients prefix options with it.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Oldstyle servers send this after NBDMAGIC instead of IHAVEOPT.
pub const CLISERV_MAGIC: u64 = 0x0000_4202_8186_1253;
/// Magic of every fixed-newstyle option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// Handshake flags (server, 16 bits).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;

// Client flags (32 bits).
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Transmission flags (16 bits).
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
pub const FLAG_READ_ONLY: u16 = 1 << 1;
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const FLAG_SEND_FUA: u16 = 1 << 3;
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const FLAG_SEND_FAST_ZERO: u16 = 1 << 11;

// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_GO: u32 = 7;

// Option reply types; errors have bit 31 set.
pub const REP_ACK: u32 = 1;
pub const REP_INFO: u32 = 3;
pub const REP_FLAG_ERROR: u32 = 1 << 31;
pub const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
pub const REP_ERR_POLICY: u32 = REP_FLAG_ERROR | 2;
pub const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
pub const REP_ERR_PLATFORM: u32 = REP_FLAG_ERROR | 4;
pub const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;
pub const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
pub const REP_ERR_SHUTDOWN: u32 = REP_FLAG_ERROR | 7;
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_FLAG_ERROR | 8;
pub const REP_ERR_TOO_BIG: u32 = REP_FLAG_ERROR | 9;

// Information types in NBD_REP_INFO.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;

// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// NBD_CMD_WRITE_ZEROES: keep the range allocated (no hole).
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// NBD_CMD_WRITE_ZEROES: fail with NBD_ENOTSUP unless zeroing is faster
/// than writing zeros.
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

// Error values in replies (the protocol's own numbering, not the host's errno).
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const ENOMEM: u32 = 12;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

/// Longest string (export name) the protocol lets a client send.
pub const MAX_STRING_BYTES: usize = 4096;

/// Largest read or write payload a server must accept when it advertises no
/// maximum; also our ceiling when it advertises more (0xffffffff = "no limit").
pub const DEFAULT_MAX_PAYLOAD: u32 = 32 * 1024 * 1024;

/// Longest TRIM or WRITE_ZEROES sent in one request. These carry no
/// payload, so the maximum payload does not bind them, but the length
/// field is 32 bits and a server may refuse (NBD_EOVERFLOW) a length it
/// finds too costly; 1 GiB is a power of two (aligned to any minimum block
/// size), far below 2^32 and below the 2^31 some servers treat as signed.
pub const MAX_EFFECT_BYTES: u32 = 1 << 30;

pub const SERVER_MAGIC_BYTES: usize = 16;
pub const OPTION_REPLY_HEADER_BYTES: usize = 20;
pub const REQUEST_BYTES: usize = 28;
pub const SIMPLE_REPLY_BYTES: usize = 16;
/// Size + transmission flags after NBD_OPT_EXPORT_NAME (zero padding excluded).
pub const EXPORT_NAME_REPLY_BYTES: usize = 10;
/// Zero padding after the NBD_OPT_EXPORT_NAME reply unless NO_ZEROES was agreed.
pub const EXPORT_NAME_PADDING_BYTES: usize = 124;

/// Something the server sent that does not follow the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtoError {
    Truncated {
        what: &'static str,
        needed: usize,
        got: usize,
    },
    BadMagic {
        what: &'static str,
        found: u64,
    },
    /// A structured reply arrived although none were negotiated.
    UnexpectedStructuredReply,
    BadInfoLength {
        info_type: u16,
        length: usize,
    },
    BadBlockSize {
        minimum: u32,
        preferred: u32,
        maximum: u32,
    },
    /// A length field larger than anything the protocol needs there.
    TooLong {
        what: &'static str,
        length: u64,
        limit: u64,
    },
    /// An option reply that answers another option than the one asked.
    WrongOption {
        expected: u32,
        found: u32,
    },
    /// NBD_REP_ACK to NBD_OPT_GO without the mandatory NBD_INFO_EXPORT.
    MissingExportInfo,
    /// More option replies than any sensible server sends.
    TooManyReplies {
        limit: usize,
    },
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::Truncated { what, needed, got } => {
                write!(f, "{what} truncated: {got} of {needed} bytes")
            }
            ProtoError::BadMagic { what, found } => write!(f, "{what} has bad magic {found:#x}"),
            ProtoError::UnexpectedStructuredReply => {
                f.write_str("server sent a structured reply although none were negotiated")
            }
            ProtoError::BadInfoLength { info_type, length } => {
                write!(
                    f,
                    "information item {info_type} has invalid length {length}"
                )
            }
            ProtoError::BadBlockSize {
                minimum,
                preferred,
                maximum,
            } => write!(
                f,
                "server advertised invalid block sizes (minimum {minimum}, preferred {preferred}, maximum {maximum})"
            ),
            ProtoError::TooLong {
                what,
                length,
                limit,
            } => {
                write!(
                    f,
                    "{what} of {length} bytes is longer than the limit of {limit}"
                )
            }
            ProtoError::WrongOption { expected, found } => {
                write!(
                    f,
                    "option reply answers option {found}, not the option {expected} asked"
                )
            }
            ProtoError::MissingExportInfo => {
                f.write_str("server accepted the export without sending its size (NBD_INFO_EXPORT)")
            }
            ProtoError::TooManyReplies { limit } => {
                write!(f, "server sent more than {limit} option replies")
            }
        }
    }
}

impl std::error::Error for ProtoError {}

fn need(what: &'static str, bytes: &[u8], needed: usize) -> Result<(), ProtoError> {
    if bytes.len() < needed {
        return Err(ProtoError::Truncated {
            what,
            needed,
            got: bytes.len(),
        });
    }
    Ok(())
}

// Callers check lengths first with `need`; these then cannot fail.
fn be_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

/// Which handshake the server's first 16 bytes announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerStyle {
    /// Newstyle: 16 bits of handshake flags follow.
    Newstyle,
    /// Oldstyle: no option haggling, no export names.
    Oldstyle,
}

/// Decode the server's opening NBDMAGIC + IHAVEOPT (or cliserv magic).
pub fn decode_server_magic(bytes: &[u8]) -> Result<ServerStyle, ProtoError> {
    need("server greeting", bytes, SERVER_MAGIC_BYTES)?;
    let magic = be_u64(bytes, 0);
    if magic != NBDMAGIC {
        return Err(ProtoError::BadMagic {
            what: "server greeting",
            found: magic,
        });
    }
    match be_u64(bytes, 8) {
        IHAVEOPT => Ok(ServerStyle::Newstyle),
        CLISERV_MAGIC => Ok(ServerStyle::Oldstyle),
        other => Err(ProtoError::BadMagic {
            what: "server greeting",
            found: other,
        }),
    }
}

/// Decode the 16-bit handshake flags that follow a newstyle greeting.
pub fn decode_handshake_flags(bytes: &[u8]) -> Result<u16, ProtoError> {
    need("handshake flags", bytes, 2)?;
    Ok(be_u16(bytes, 0))
}

pub fn encode_client_flags(flags: u32) -> [u8; 4] {
    flags.to_be_bytes()
}

/// An option request: IHAVEOPT, option, length, data.
pub fn encode_option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(16 + data.len());
    message.extend_from_slice(&IHAVEOPT.to_be_bytes());
    message.extend_from_slice(&option.to_be_bytes());
    // Export names are limited to MAX_STRING_BYTES, so data always fits.
    message.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    message.extend_from_slice(data);
    message
}

/// The data of NBD_OPT_GO (and NBD_OPT_INFO): name and information requests.
pub fn encode_go_data(export: &str, info_requests: &[u16]) -> Vec<u8> {
    let mut data = Vec::with_capacity(6 + export.len() + 2 * info_requests.len());
    data.extend_from_slice(
        &u32::try_from(export.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(
        &u16::try_from(info_requests.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    for request in info_requests {
        data.extend_from_slice(&request.to_be_bytes());
    }
    data
}

/// The fixed part of a fixed-newstyle option reply; `length` bytes of data follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionReplyHeader {
    pub option: u32,
    pub reply_type: u32,
    pub length: u32,
}

pub fn decode_option_reply_header(bytes: &[u8]) -> Result<OptionReplyHeader, ProtoError> {
    need("option reply", bytes, OPTION_REPLY_HEADER_BYTES)?;
    let magic = be_u64(bytes, 0);
    if magic != OPTION_REPLY_MAGIC {
        return Err(ProtoError::BadMagic {
            what: "option reply",
            found: magic,
        });
    }
    Ok(OptionReplyHeader {
        option: be_u32(bytes, 8),
        reply_type: be_u32(bytes, 12),
        length: be_u32(bytes, 16),
    })
}

/// One NBD_REP_INFO item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Info {
    Export {
        size_bytes: u64,
        transmission_flags: u16,
    },
    BlockSize {
        minimum: u32,
        preferred: u32,
        maximum: u32,
    },
    /// An information type we did not ask for; the protocol says to ignore it.
    Other(u16),
}

/// Decode the data of an NBD_REP_INFO reply.
pub fn decode_info(data: &[u8]) -> Result<Info, ProtoError> {
    need("information reply", data, 2)?;
    let info_type = be_u16(data, 0);
    match info_type {
        INFO_EXPORT => {
            if data.len() != 12 {
                return Err(ProtoError::BadInfoLength {
                    info_type,
                    length: data.len(),
                });
            }
            Ok(Info::Export {
                size_bytes: be_u64(data, 2),
                transmission_flags: be_u16(data, 10),
            })
        }
        INFO_BLOCK_SIZE => {
            if data.len() != 14 {
                return Err(ProtoError::BadInfoLength {
                    info_type,
                    length: data.len(),
                });
            }
            Ok(Info::BlockSize {
                minimum: be_u32(data, 2),
                preferred: be_u32(data, 6),
                maximum: be_u32(data, 10),
            })
        }
        other => Ok(Info::Other(other)),
    }
}

/// What NBD_OPT_EXPORT_NAME answers on success (before any zero padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportNameReply {
    pub size_bytes: u64,
    pub transmission_flags: u16,
}

pub fn decode_export_name_reply(bytes: &[u8]) -> Result<ExportNameReply, ProtoError> {
    need("export reply", bytes, EXPORT_NAME_REPLY_BYTES)?;
    Ok(ExportNameReply {
        size_bytes: be_u64(bytes, 0),
        transmission_flags: be_u16(bytes, 8),
    })
}

/// Size constraints the client will honour, after checking what the server
/// advertised against the rules of the protocol's "Size constraints".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSizes {
    /// Every offset and length is a multiple of this.
    pub minimum: u32,
    /// Requests this size and aligned avoid read-modify-write on the server.
    pub preferred: u32,
    /// Largest read or write payload in one request.
    pub maximum_payload: u32,
}

impl BlockSizes {
    /// What the protocol says a server that advertises nothing supports.
    pub const DEFAULT: BlockSizes = BlockSizes {
        minimum: 1,
        preferred: 4096,
        maximum_payload: DEFAULT_MAX_PAYLOAD,
    };

    /// Check advertised constraints. The maximum is capped at
    /// [`DEFAULT_MAX_PAYLOAD`]: a server may call 0xffffffff "no limit", but
    /// larger requests gain nothing and could be taken for a denial of service.
    pub fn from_advertised(
        minimum: u32,
        preferred: u32,
        maximum: u32,
    ) -> Result<BlockSizes, ProtoError> {
        let bad = ProtoError::BadBlockSize {
            minimum,
            preferred,
            maximum,
        };
        let minimum_ok = minimum.is_power_of_two() && minimum <= 65536;
        let preferred_ok = preferred.is_power_of_two() && preferred >= minimum.max(512);
        if !minimum_ok || !preferred_ok || maximum < preferred {
            return Err(bad);
        }
        Ok(BlockSizes {
            minimum,
            preferred,
            maximum_payload: maximum.min(DEFAULT_MAX_PAYLOAD),
        })
    }
}

/// A transmission-phase request header; a write's data follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub command: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

pub fn encode_request(request: &Request) -> [u8; REQUEST_BYTES] {
    let mut bytes = [0u8; REQUEST_BYTES];
    bytes[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    bytes[4..6].copy_from_slice(&request.flags.to_be_bytes());
    bytes[6..8].copy_from_slice(&request.command.to_be_bytes());
    bytes[8..16].copy_from_slice(&request.cookie.to_be_bytes());
    bytes[16..24].copy_from_slice(&request.offset.to_be_bytes());
    bytes[24..28].copy_from_slice(&request.length.to_be_bytes());
    bytes
}

/// Split an effect-only request (TRIM, WRITE_ZEROES) of `len` bytes at
/// `offset` into requests of at most `max_bytes` each: (offset, length).
/// `max_bytes` must be a multiple of the export's minimum block size so
/// that every piece stays aligned; a zero `max_bytes` counts as 1.
pub fn effect_pieces(offset: u64, len: u64, max_bytes: u32) -> impl Iterator<Item = (u64, u32)> {
    let max_bytes = u64::from(max_bytes.max(1));
    let count = len.div_ceil(max_bytes);
    (0..count).map(move |index| {
        let start = index * max_bytes;
        // Each piece is at most max_bytes, which fits in u32.
        let length = (len - start).min(max_bytes) as u32;
        (offset + start, length)
    })
}

/// The command flags of an NBD_CMD_WRITE_ZEROES: NO_HOLE unless the range
/// may be deallocated, FAST_ZERO when asked for and the export offers it
/// (a client must not send it otherwise).
pub fn write_zeroes_flags(unmap: bool, fast: bool, transmission_flags: u16) -> u16 {
    let mut flags = 0;
    if !unmap {
        flags |= CMD_FLAG_NO_HOLE;
    }
    if fast && transmission_flags & FLAG_SEND_FAST_ZERO != 0 {
        flags |= CMD_FLAG_FAST_ZERO;
    }
    flags
}

/// A simple reply header; a successful read's data follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimpleReply {
    /// 0 for success, else one of the protocol's error values.
    pub error: u32,
    pub cookie: u64,
}

pub fn decode_simple_reply(bytes: &[u8]) -> Result<SimpleReply, ProtoError> {
    need("reply", bytes, SIMPLE_REPLY_BYTES)?;
    match be_u32(bytes, 0) {
        SIMPLE_REPLY_MAGIC => Ok(SimpleReply {
            error: be_u32(bytes, 4),
            cookie: be_u64(bytes, 8),
        }),
        STRUCTURED_REPLY_MAGIC => Err(ProtoError::UnexpectedStructuredReply),
        other => Err(ProtoError::BadMagic {
            what: "reply",
            found: u64::from(other),
        }),
    }
}

/// The host errno for a protocol error value. The protocol's numbers are
/// Linux's, but we map by name so EIO stays EIO on any host (the verifier
/// classifies an EIO read as `unreadable`). Values outside the protocol's
/// list become EIO: the server failed the request for a reason it did not say.
pub fn errno_of(error: u32) -> i32 {
    use rustix::io::Errno;
    let errno = match error {
        EPERM => Errno::PERM,
        EIO => Errno::IO,
        ENOMEM => Errno::NOMEM,
        EINVAL => Errno::INVAL,
        ENOSPC => Errno::NOSPC,
        EOVERFLOW => Errno::OVERFLOW,
        ENOTSUP => Errno::NOTSUP,
        ESHUTDOWN => Errno::SHUTDOWN,
        _ => Errno::IO,
    };
    errno.raw_os_error()
}

/// A name for an option reply type, for error messages.
pub fn reply_type_name(reply_type: u32) -> String {
    match reply_type {
        REP_ACK => "NBD_REP_ACK".into(),
        REP_INFO => "NBD_REP_INFO".into(),
        REP_ERR_UNSUP => "NBD_REP_ERR_UNSUP".into(),
        REP_ERR_POLICY => "NBD_REP_ERR_POLICY".into(),
        REP_ERR_INVALID => "NBD_REP_ERR_INVALID".into(),
        REP_ERR_PLATFORM => "NBD_REP_ERR_PLATFORM".into(),
        REP_ERR_TLS_REQD => "NBD_REP_ERR_TLS_REQD".into(),
        REP_ERR_UNKNOWN => "NBD_REP_ERR_UNKNOWN".into(),
        REP_ERR_SHUTDOWN => "NBD_REP_ERR_SHUTDOWN".into(),
        REP_ERR_BLOCK_SIZE_REQD => "NBD_REP_ERR_BLOCK_SIZE_REQD".into(),
        REP_ERR_TOO_BIG => "NBD_REP_ERR_TOO_BIG".into(),
        other => format!("reply type {other:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn greeting_tells_newstyle_from_oldstyle() {
        let mut newstyle = NBDMAGIC.to_be_bytes().to_vec();
        newstyle.extend_from_slice(&IHAVEOPT.to_be_bytes());
        assert_eq!(decode_server_magic(&newstyle), Ok(ServerStyle::Newstyle));

        let mut oldstyle = NBDMAGIC.to_be_bytes().to_vec();
        oldstyle.extend_from_slice(&CLISERV_MAGIC.to_be_bytes());
        assert_eq!(decode_server_magic(&oldstyle), Ok(ServerStyle::Oldstyle));
    }

    #[test]
    fn greeting_from_something_else_is_refused() {
        assert!(matches!(
            decode_server_magic(b"HTTP/1.1 400 Bad"),
            Err(ProtoError::BadMagic {
                what: "server greeting",
                ..
            })
        ));
        assert_eq!(
            decode_server_magic(b"NBD"),
            Err(ProtoError::Truncated {
                what: "server greeting",
                needed: 16,
                got: 3
            })
        );
    }

    #[test]
    fn option_request_layout() {
        let message = encode_option(
            OPT_GO,
            &encode_go_data("disk", &[INFO_EXPORT, INFO_BLOCK_SIZE]),
        );
        let expected: Vec<u8> = [
            &b"IHAVEOPT"[..],
            &[0, 0, 0, 7],  // NBD_OPT_GO
            &[0, 0, 0, 14], // data length
            &[0, 0, 0, 4],  // name length
            b"disk",
            &[0, 2],       // two information requests
            &[0, 0, 0, 3], // NBD_INFO_EXPORT, NBD_INFO_BLOCK_SIZE
        ]
        .concat();
        assert_eq!(message, expected);
    }

    #[test]
    fn option_reply_header_decodes() {
        let mut bytes = OPTION_REPLY_MAGIC.to_be_bytes().to_vec();
        bytes.extend_from_slice(&OPT_GO.to_be_bytes());
        bytes.extend_from_slice(&REP_ERR_UNKNOWN.to_be_bytes());
        bytes.extend_from_slice(&5u32.to_be_bytes());
        assert_eq!(
            decode_option_reply_header(&bytes),
            Ok(OptionReplyHeader {
                option: OPT_GO,
                reply_type: REP_ERR_UNKNOWN,
                length: 5
            })
        );
        bytes[0] ^= 1;
        assert!(matches!(
            decode_option_reply_header(&bytes),
            Err(ProtoError::BadMagic { .. })
        ));
    }

    #[test]
    fn info_items_decode_and_check_their_length() {
        let export = [&[0u8, 0][..], &(1u64 << 30).to_be_bytes(), &[0, 0x0d]].concat();
        assert_eq!(
            decode_info(&export),
            Ok(Info::Export {
                size_bytes: 1 << 30,
                transmission_flags: 0x0d
            })
        );
        let block = [
            &[0u8, 3][..],
            &512u32.to_be_bytes(),
            &4096u32.to_be_bytes(),
            &(1u32 << 25).to_be_bytes(),
        ]
        .concat();
        assert_eq!(
            decode_info(&block),
            Ok(Info::BlockSize {
                minimum: 512,
                preferred: 4096,
                maximum: 1 << 25
            })
        );
        assert_eq!(decode_info(&[0, 1, b'x']), Ok(Info::Other(1)));
        assert_eq!(
            decode_info(&export[..11]),
            Err(ProtoError::BadInfoLength {
                info_type: INFO_EXPORT,
                length: 11
            })
        );
    }

    #[test]
    fn block_sizes_follow_the_protocol_rules() {
        assert_eq!(
            BlockSizes::from_advertised(1, 4096, u32::MAX),
            Ok(BlockSizes {
                minimum: 1,
                preferred: 4096,
                maximum_payload: DEFAULT_MAX_PAYLOAD
            })
        );
        assert_eq!(
            BlockSizes::from_advertised(4096, 65536, 1 << 20),
            Ok(BlockSizes {
                minimum: 4096,
                preferred: 65536,
                maximum_payload: 1 << 20
            })
        );
        assert!(BlockSizes::from_advertised(0, 4096, 1 << 20).is_err());
        assert!(BlockSizes::from_advertised(3000, 4096, 1 << 20).is_err());
        assert!(BlockSizes::from_advertised(1 << 17, 1 << 17, 1 << 20).is_err());
        assert!(BlockSizes::from_advertised(512, 256, 1 << 20).is_err());
        assert!(BlockSizes::from_advertised(512, 4096, 2048).is_err());
    }

    #[test]
    fn request_and_reply_layout() {
        let request = Request {
            flags: CMD_FLAG_FUA,
            command: CMD_WRITE,
            cookie: 0x0102,
            offset: 4096,
            length: 512,
        };
        let bytes = encode_request(&request);
        assert_eq!(&bytes[0..4], &[0x25, 0x60, 0x95, 0x13]);
        assert_eq!(&bytes[4..8], &[0, 1, 0, 1]);
        assert_eq!(&bytes[8..16], &0x0102u64.to_be_bytes());
        assert_eq!(&bytes[16..24], &4096u64.to_be_bytes());
        assert_eq!(&bytes[24..28], &512u32.to_be_bytes());

        let reply = [
            &SIMPLE_REPLY_MAGIC.to_be_bytes()[..],
            &EIO.to_be_bytes(),
            &7u64.to_be_bytes(),
        ]
        .concat();
        assert_eq!(
            decode_simple_reply(&reply),
            Ok(SimpleReply {
                error: EIO,
                cookie: 7
            })
        );
        let structured = [&STRUCTURED_REPLY_MAGIC.to_be_bytes()[..], &[0u8; 12]].concat();
        assert_eq!(
            decode_simple_reply(&structured),
            Err(ProtoError::UnexpectedStructuredReply)
        );
    }

    #[test]
    fn errors_map_to_host_errno_and_unknown_ones_to_eio() {
        assert_eq!(errno_of(EIO), rustix::io::Errno::IO.raw_os_error());
        assert_eq!(errno_of(ENOSPC), rustix::io::Errno::NOSPC.raw_os_error());
        assert_eq!(errno_of(EPERM), rustix::io::Errno::PERM.raw_os_error());
        assert_eq!(errno_of(0xdead), rustix::io::Errno::IO.raw_os_error());
    }

    #[test]
    fn write_zeroes_request_carries_no_hole_and_fast_zero_bits() {
        let offers_fast = FLAG_HAS_FLAGS | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_FAST_ZERO;
        let no_fast = FLAG_HAS_FLAGS | FLAG_SEND_WRITE_ZEROES;
        // (unmap, fast, export flags) -> command flags on the wire
        let table = [
            (false, false, offers_fast, CMD_FLAG_NO_HOLE),
            (true, false, offers_fast, 0),
            (
                false,
                true,
                offers_fast,
                CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
            ),
            (true, true, offers_fast, CMD_FLAG_FAST_ZERO),
            // Never FAST_ZERO unless the export offers it.
            (true, true, no_fast, 0),
            (false, true, no_fast, CMD_FLAG_NO_HOLE),
        ];
        for (unmap, fast, export, expected) in table {
            assert_eq!(
                write_zeroes_flags(unmap, fast, export),
                expected,
                "unmap {unmap} fast {fast} export flags {export:#x}"
            );
        }
        let bytes = encode_request(&Request {
            flags: CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
            command: CMD_WRITE_ZEROES,
            cookie: 9,
            offset: 1 << 20,
            length: 65536,
        });
        assert_eq!(&bytes[4..8], &[0, 0x12, 0, 6]);
        assert_eq!(&bytes[24..28], &65536u32.to_be_bytes());
        let trim = encode_request(&Request {
            flags: 0,
            command: CMD_TRIM,
            cookie: 10,
            offset: 0,
            length: 4096,
        });
        assert_eq!(&trim[4..8], &[0, 0, 0, 4]);
    }

    #[test]
    fn effect_requests_split_at_the_cap() {
        assert_eq!(effect_pieces(4096, 0, MAX_EFFECT_BYTES).count(), 0);
        assert_eq!(
            effect_pieces(4096, 8192, MAX_EFFECT_BYTES).collect::<Vec<_>>(),
            vec![(4096, 8192)]
        );
        let gib = u64::from(MAX_EFFECT_BYTES);
        assert_eq!(
            effect_pieces(512, 2 * gib + 4096, MAX_EFFECT_BYTES).collect::<Vec<_>>(),
            vec![
                (512, MAX_EFFECT_BYTES),
                (512 + gib, MAX_EFFECT_BYTES),
                (512 + 2 * gib, 4096)
            ]
        );
        // A 5 GiB zeroing: no piece overflows the 32-bit length field.
        assert!(
            effect_pieces(0, 5 * gib, MAX_EFFECT_BYTES)
                .all(|(_, length)| length == MAX_EFFECT_BYTES)
        );
    }

    proptest! {
        // A server can send anything: no decoder may panic on any input.
        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_server_magic(&bytes);
            let _ = decode_handshake_flags(&bytes);
            let _ = decode_option_reply_header(&bytes);
            let _ = decode_info(&bytes);
            let _ = decode_export_name_reply(&bytes);
            let _ = decode_simple_reply(&bytes);
        }

        #[test]
        fn block_size_checks_never_panic(minimum in any::<u32>(), preferred in any::<u32>(), maximum in any::<u32>()) {
            if let Ok(sizes) = BlockSizes::from_advertised(minimum, preferred, maximum) {
                prop_assert!(sizes.minimum.is_power_of_two());
                prop_assert!(sizes.maximum_payload >= sizes.preferred.min(DEFAULT_MAX_PAYLOAD));
            }
        }

        #[test]
        fn effect_pieces_cover_the_range_exactly(offset in 0u64..1 << 40, len in 0u64..1 << 36,
                                                 max_bytes in 1u32 << 24..=MAX_EFFECT_BYTES) {
            let mut next = offset;
            for (piece_offset, length) in effect_pieces(offset, len, max_bytes) {
                prop_assert_eq!(piece_offset, next);
                prop_assert!(length > 0 && length <= max_bytes);
                next += u64::from(length);
            }
            prop_assert_eq!(next, offset + len);
        }

        #[test]
        fn requests_round_trip_their_fields(flags in any::<u16>(), command in any::<u16>(), cookie in any::<u64>(),
                                             offset in any::<u64>(), length in any::<u32>()) {
            let bytes = encode_request(&Request { flags, command, cookie, offset, length });
            prop_assert_eq!(be_u64(&bytes, 8), cookie);
            prop_assert_eq!(be_u64(&bytes, 16), offset);
            prop_assert_eq!(be_u32(&bytes, 24), length);
        }
    }
}
