//! NBD URIs, as qemu and libnbd spell them.
//!
//! `nbd://HOST[:PORT]/EXPORT` (also `nbd+tcp://`) and
//! `nbd+unix:///EXPORT?socket=PATH`. The export is the path without its
//! first `/`, percent-decoded; no path means the default export "".

use std::fmt;
use std::path::PathBuf;

use super::proto::MAX_STRING_BYTES;
use crate::error::{Error, Result};

/// The IANA port for NBD.
pub const DEFAULT_PORT: u16 = 10809;

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    Unix { socket: PathBuf },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // IPv6 literals keep their brackets so the port stays readable.
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
            Endpoint::Unix { socket } => write!(f, "unix socket {}", socket.display()),
        }
    }
}

/// A parsed NBD URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NbdUri {
    pub endpoint: Endpoint,
    /// The export name; "" is the server's default export.
    pub export: String,
}

/// Parse an NBD URI. Every refusal is a usage error naming the bad part.
pub fn parse(uri: &str) -> Result<NbdUri> {
    let bad = |what: String| Error::usage(format!("target {uri}: {what}"));
    let (scheme, rest) = uri.split_once("://").ok_or_else(|| {
        bad(
            "not an NBD URI; write nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH"
                .into(),
        )
    })?;
    let is_unix = match scheme.to_ascii_lowercase().as_str() {
        "nbd" | "nbd+tcp" => false,
        "nbd+unix" => true,
        "nbds" | "nbds+tcp" | "nbds+unix" | "nbds+vsock" => {
            return Err(bad(format!(
                "{scheme}:// (NBD over TLS) is not supported; use nbd:// or nbd+unix://"
            )));
        }
        _ => {
            return Err(bad(format!(
                "scheme {scheme}:// is not supported; use nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH"
            )));
        }
    };
    if let Some((_, fragment)) = rest.split_once('#') {
        return Err(bad(format!(
            "unexpected fragment #{fragment} in an NBD URI"
        )));
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(slash) => before_query.split_at(slash),
        None => (before_query, ""),
    };
    let export_encoded = path.strip_prefix('/').unwrap_or(path);
    let export = percent_decode(export_encoded)
        .map_err(|what| bad(format!("export name {export_encoded:?}: {what}")))?;
    if export.len() > MAX_STRING_BYTES {
        return Err(bad(format!(
            "export name is {} bytes; NBD allows at most {MAX_STRING_BYTES}",
            export.len()
        )));
    }
    let parameters = parse_query(query.unwrap_or("")).map_err(bad)?;

    let endpoint = if is_unix {
        if !authority.is_empty() {
            return Err(bad(format!(
                "nbd+unix:// takes no host (found {authority:?}); write nbd+unix:///EXPORT?socket=PATH"
            )));
        }
        let mut socket = None;
        for (name, value) in parameters {
            match name.as_str() {
                "socket" if socket.is_none() && !value.is_empty() => socket = Some(value),
                "socket" if value.is_empty() => {
                    return Err(bad("socket= is empty; give the server's socket path".into()));
                }
                "socket" => return Err(bad("socket= is given more than once".into())),
                _ => {
                    return Err(bad(format!(
                        "query parameter {name:?} is not supported; only socket=PATH is"
                    )));
                }
            }
        }
        let socket = socket.ok_or_else(|| {
            bad("nbd+unix:// needs ?socket=PATH naming the server's socket".into())
        })?;
        Endpoint::Unix {
            socket: PathBuf::from(socket),
        }
    } else {
        if let Some((name, _)) = parameters.first() {
            return Err(bad(format!(
                "query parameter {name:?} is not supported with nbd://; for a unix socket write nbd+unix:///EXPORT?socket=PATH"
            )));
        }
        let (host, port) = parse_authority(authority).map_err(bad)?;
        Endpoint::Tcp { host, port }
    };
    Ok(NbdUri { endpoint, export })
}

/// HOST, HOST:PORT, [IPV6] or [IPV6]:PORT.
fn parse_authority(authority: &str) -> std::result::Result<(String, u16), String> {
    if authority.is_empty() {
        return Err("no host; write nbd://HOST[:PORT]/EXPORT".into());
    }
    if authority.contains('@') {
        return Err(format!(
            "user names ({authority:?}) are only used with TLS, which is not supported"
        ));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("host {authority:?} has '[' without a closing ']'"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {after:?} after host [{host}]"))?,
            ),
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("no host; write nbd://HOST[:PORT]/EXPORT".into());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("port {text:?} is not a number from 1 to 65535")),
        },
    };
    Ok((host.to_string(), port))
}

/// `name=value&...`, each percent-decoded. Empty pieces are skipped.
fn parse_query(query: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut parameters = Vec::new();
    for piece in query.split('&').filter(|piece| !piece.is_empty()) {
        let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
        let name =
            percent_decode(name).map_err(|what| format!("query parameter {name:?}: {what}"))?;
        let value =
            percent_decode(value).map_err(|what| format!("query value {value:?}: {what}"))?;
        parameters.push((name, value));
    }
    Ok(parameters)
}

/// Decode `%XX` escapes; the result must be UTF-8 (NBD strings are).
fn percent_decode(text: &str) -> std::result::Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes
                .get(index + 1..index + 3)
                .and_then(|pair| std::str::from_utf8(pair).ok());
            let byte = hex
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| {
                    let end = (index + 3).min(bytes.len());
                    format!(
                        "bad percent escape {:?}",
                        String::from_utf8_lossy(&bytes[index..end])
                    )
                })?;
            decoded.push(byte);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| "percent escapes do not decode to UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16, export: &str) -> NbdUri {
        NbdUri {
            endpoint: Endpoint::Tcp {
                host: host.into(),
                port,
            },
            export: export.into(),
        }
    }

    fn refusal(uri: &str) -> String {
        match parse(uri) {
            Err(Error::Usage(message)) => message,
            other => panic!("{uri} should be a usage error, got {other:?}"),
        }
    }

    #[test]
    fn tcp_uris_parse_like_qemu() {
        assert_eq!(
            parse("nbd://example.com/disk").unwrap(),
            tcp("example.com", 10809, "disk")
        );
        assert_eq!(
            parse("nbd://127.0.0.1:10810/disk").unwrap(),
            tcp("127.0.0.1", 10810, "disk")
        );
        assert_eq!(
            parse("nbd+tcp://host:1/a/b").unwrap(),
            tcp("host", 1, "a/b")
        );
        assert_eq!(parse("NBD://host/x").unwrap(), tcp("host", 10809, "x"));
    }

    #[test]
    fn missing_or_empty_path_is_the_default_export() {
        assert_eq!(parse("nbd://host").unwrap(), tcp("host", 10809, ""));
        assert_eq!(parse("nbd://host/").unwrap(), tcp("host", 10809, ""));
        assert_eq!(parse("nbd://host:2000").unwrap(), tcp("host", 2000, ""));
    }

    #[test]
    fn only_the_first_slash_is_dropped_and_escapes_decode() {
        assert_eq!(parse("nbd://host//abs").unwrap().export, "/abs");
        assert_eq!(
            parse("nbd://host/my%20disk%2Fa").unwrap().export,
            "my disk/a"
        );
    }

    #[test]
    fn ipv6_literals_take_brackets() {
        assert_eq!(parse("nbd://[::1]:3000/e").unwrap(), tcp("::1", 3000, "e"));
        assert_eq!(
            parse("nbd://[fe80::1]/").unwrap(),
            tcp("fe80::1", 10809, "")
        );
        assert_eq!(
            parse("nbd://[::1]:3000/e").unwrap().endpoint.to_string(),
            "[::1]:3000"
        );
    }

    #[test]
    fn unix_uris_need_a_socket() {
        assert_eq!(
            parse("nbd+unix:///disk?socket=/tmp/s.sock").unwrap(),
            NbdUri {
                endpoint: Endpoint::Unix {
                    socket: "/tmp/s.sock".into()
                },
                export: "disk".into()
            }
        );
        assert_eq!(
            parse("nbd+unix://?socket=/tmp/a%20b").unwrap().endpoint,
            Endpoint::Unix {
                socket: "/tmp/a b".into()
            }
        );
        assert_eq!(parse("nbd+unix:///?socket=s").unwrap().export, "");
        assert!(refusal("nbd+unix:///disk").contains("?socket=PATH"));
        assert!(refusal("nbd+unix:///disk?socket=").contains("socket= is empty"));
        assert!(refusal("nbd+unix://host/disk?socket=/s").contains("\"host\""));
        assert!(refusal("nbd+unix:///d?socket=/s&socket=/t").contains("more than once"));
        assert!(refusal("nbd+unix:///d?socket=/s&tls=on").contains("\"tls\""));
    }

    #[test]
    fn bad_ports_are_named() {
        assert!(refusal("nbd://host:99999/x").contains("\"99999\""));
        assert!(refusal("nbd://host:0/x").contains("\"0\""));
        assert!(refusal("nbd://host:/x").contains("port \"\""));
        assert!(refusal("nbd://host:ten/x").contains("\"ten\""));
        assert!(refusal("nbd://[::1]x/").contains("\"x\""));
        assert!(refusal("nbd://[::1/").contains("closing"));
    }

    #[test]
    fn malformed_uris_are_usage_errors_naming_the_value() {
        assert!(refusal("nbd://").contains("no host"));
        assert!(refusal("nbd:///disk").contains("no host"));
        assert!(refusal("nbd:host/disk").contains("not an NBD URI"));
        assert!(refusal("nbd://host/bad%zzname").contains("%zz"));
        assert!(refusal("nbd://host/bad%4").contains("%4"));
        assert!(refusal("nbd://host/%ff").contains("UTF-8"));
        assert!(refusal("nbd://host/x?socket=/s").contains("nbd+unix"));
        assert!(refusal("nbd://host/x#frag").contains("#frag"));
        assert!(refusal("nbd+vsock://2/x").contains("nbd+vsock"));
        assert!(refusal("nbd://user@host/x").contains("user@host"));
        let long = format!("nbd://host/{}", "x".repeat(MAX_STRING_BYTES + 1));
        assert!(refusal(&long).contains("at most 4096"));
    }

    #[test]
    fn tls_is_refused_as_not_supported() {
        for uri in ["nbds://host/x", "nbds+unix:///x?socket=/s", "NBDS://host"] {
            let message = refusal(uri);
            assert!(
                message.contains("TLS") && message.contains("not supported"),
                "{message}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(tail in ".{0,40}") {
            for scheme in ["nbd://", "nbd+unix://", "nbds://", ""] {
                let _ = parse(&format!("{scheme}{tail}"));
            }
        }
    }

    #[test]
    fn parsing_awkward_text_never_panics() {
        for uri in [
            "nbd://%",
            "nbd://[",
            "nbd://]:",
            "nbd+unix://?",
            "nbd+unix://?=&=",
            "nbd://h/%e2%82",
            "nbd://:1",
        ] {
            let _ = parse(uri);
        }
    }
}
