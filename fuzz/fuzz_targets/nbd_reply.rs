//! The NBD wire decoders on whatever a server might send: every decoder
//! must return a value or a `ProtoError`, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

use blockstamp::storage::nbd::proto::{self, BlockSizes, Request};

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
}

fuzz_target!(|data: &[u8]| {
    let _ = proto::decode_server_magic(data);
    let _ = proto::decode_handshake_flags(data);
    let _ = proto::decode_export_name_reply(data);
    if let Ok(header) = proto::decode_option_reply_header(data) {
        let _ = proto::reply_type_name(header.reply_type);
        // The reply's data follows its 20-byte header.
        let payload = &data[proto::OPTION_REPLY_HEADER_BYTES..];
        let length = (header.length as usize).min(payload.len());
        let _ = proto::decode_info(&payload[..length]);
    }
    let _ = proto::decode_info(data);
    if let Ok(reply) = proto::decode_simple_reply(data) {
        let _ = proto::errno_of(reply.error);
    }
    let (minimum, preferred, maximum) = (be_u32(data, 0), be_u32(data, 4), be_u32(data, 8));
    if let Ok(sizes) = BlockSizes::from_advertised(minimum, preferred, maximum) {
        assert!(sizes.minimum.is_power_of_two());
        assert!(sizes.preferred >= sizes.minimum);
        assert!(sizes.maximum_payload <= proto::DEFAULT_MAX_PAYLOAD);
    }
    let _ = proto::errno_of(be_u32(data, 0));
    let _ = proto::reply_type_name(be_u32(data, 4));
    // Encoders take what a user can type: export names and requests.
    let export = String::from_utf8_lossy(data);
    let go = proto::encode_go_data(&export, &[proto::INFO_EXPORT, proto::INFO_BLOCK_SIZE]);
    let _ = proto::encode_option(proto::OPT_GO, &go);
    if data.len() >= proto::REQUEST_BYTES {
        let request = Request {
            flags: u16::from_be_bytes([data[0], data[1]]),
            command: u16::from_be_bytes([data[2], data[3]]),
            cookie: u64::from_be_bytes(data[4..12].try_into().expect("8 bytes")),
            offset: u64::from_be_bytes(data[12..20].try_into().expect("8 bytes")),
            length: be_u32(data, 20),
        };
        let bytes = proto::encode_request(&request);
        assert_eq!(be_u32(&bytes, 0), proto::REQUEST_MAGIC);
        assert_eq!(be_u32(&bytes, 24), request.length);
    }
});
