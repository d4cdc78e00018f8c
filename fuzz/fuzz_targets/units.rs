//! The parsers of what users type — sizes, size ranges, durations,
//! fractions, block sizes, NBD URIs — on arbitrary text: a value or an
//! error message, never a panic. Messages quote the text they refuse; they
//! add no line break of their own (main escapes those the text brings).
#![no_main]

use libfuzzer_sys::fuzz_target;

use blockstamp::config::parse_block_size;
use blockstamp::storage::nbd::uri;
use blockstamp::units::{
    format_rate, format_size, parse_duration, parse_fraction, parse_size, parse_size_range,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let typed_on_one_line = !text.contains(['\n', '\r']);
    let one_line = |message: &str| {
        assert!(
            !typed_on_one_line || !message.contains(['\n', '\r']),
            "{message:?}"
        );
    };
    match parse_size(&text) {
        Ok(size) => {
            let _ = format_size(size);
        }
        Err(message) => one_line(&message),
    }
    match parse_size_range(&text) {
        Ok((low, high)) => assert!(low <= high),
        Err(message) => one_line(&message),
    }
    match parse_duration(&text) {
        Ok(duration) => {
            let _ = format_rate(duration.as_secs_f64());
        }
        Err(message) => one_line(&message),
    }
    match parse_fraction(&text) {
        Ok(fraction) => assert!((0.0..=1.0).contains(&fraction), "{fraction}"),
        Err(message) => one_line(&message),
    }
    match parse_block_size(&text) {
        Ok(size) => assert!(size.is_power_of_two() && (512..=1 << 20).contains(&size)),
        Err(error) => one_line(&error.to_string()),
    }
    if let Err(error) = uri::parse(&text) {
        one_line(&error.to_string());
    }
});
