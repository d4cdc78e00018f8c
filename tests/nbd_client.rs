//! The NBD target against real servers (qemu-nbd, nbdkit) and, for protocol
//! corners no real server can be made to show, a scripted fake server.

mod common {
    pub mod need;
}
#[path = "common/nbd_server.rs"]
mod nbd_server;

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockstamp::error::Error;
use blockstamp::storage::nbd::{NbdOptions, NbdTarget, proto};
use blockstamp::storage::{OpenRequest, Target, TargetKind};
use nbd_server::NbdServer;

const MIB: u64 = 1024 * 1024;

fn for_write() -> OpenRequest {
    OpenRequest {
        write: true,
        ..OpenRequest::default()
    }
}

fn for_read() -> OpenRequest {
    OpenRequest::default()
}

/// Bytes that differ per offset and per seed, so a misplaced or stale block
/// cannot read back equal.
fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i).wrapping_mul(31) ^ seed.wrapping_mul(0x9e37_79b9)) as u8)
        .collect()
}

fn open_error(uri: &str, request: &OpenRequest) -> Error {
    match NbdTarget::open(uri, request) {
        Ok(_) => panic!("{uri} should not open"),
        Err(e) => e,
    }
}

fn usage_message(error: Error) -> String {
    match error {
        Error::Usage(message) => message,
        other => panic!("expected a usage error (exit 2), got {other:?}"),
    }
}

fn run_message(error: Error) -> String {
    match error {
        Error::Run(message) => message,
        other => panic!("expected a run error (exit 3), got {other:?}"),
    }
}

fn eio() -> i32 {
    rustix::io::Errno::IO.raw_os_error()
}

// ---- handshake and data path against qemu-nbd ----

#[test]
fn handshake_reports_the_export_size_and_geometry() {
    let Some(server) = NbdServer::qemu_nbd_raw(64 * MIB, &[]) else {
        return;
    };
    let uri = server.uri("");
    let target = NbdTarget::open(&uri, &for_write()).unwrap();
    let info = target.info();
    assert_eq!(info.kind, TargetKind::Nbd);
    assert_eq!(info.uri, uri);
    assert_eq!(info.size_bytes, 64 * MIB);
    assert_eq!(info.logical_sector_size, 512);
    assert!(info.physical_sector_size >= 512 && info.physical_sector_size.is_power_of_two());
    assert!(
        info.direct_io,
        "no client cache: reads always reach the server"
    );
    assert!(!info.read_only);
    assert!(info.supports_fua, "qemu-nbd advertises FUA");
    assert!(target.supports_flush());
    assert!(target.raw_fd().is_none());
}

#[test]
fn target_open_dispatches_nbd_uris() {
    let Some(server) = NbdServer::qemu_nbd_raw(8 * MIB, &[]) else {
        return;
    };
    let target = blockstamp::storage::open(&server.uri(""), &for_read()).unwrap();
    assert_eq!(target.info().kind, TargetKind::Nbd);
    assert_eq!(target.info().size_bytes, 8 * MIB);
    let message = match blockstamp::storage::open("nbds://127.0.0.1/x", &for_read()) {
        Err(e) => usage_message(e),
        Ok(_) => panic!("nbds:// should be refused"),
    };
    assert!(message.contains("not supported"), "{message}");
}

#[test]
fn written_data_reads_back_and_lands_in_the_image() {
    let Some(server) = NbdServer::qemu_nbd_raw(64 * MIB, &["--cache=none"]) else {
        return;
    };
    let target = NbdTarget::open(&server.uri(""), &for_write()).unwrap();
    // Small, unaligned to 4K, and larger than one 32 MiB request (split).
    let writes = [
        (0u64, 4096usize),
        (5 * 4096 + 7 * 512, 512),
        (MIB, 3 * MIB as usize),
        (20 * MIB, 40 * MIB as usize),
    ];
    for (seed, &(offset, len)) in writes.iter().enumerate() {
        target
            .write_at(&pattern(seed as u64, offset, len), offset, false)
            .unwrap();
    }
    target.flush().unwrap();
    for (seed, &(offset, len)) in writes.iter().enumerate() {
        let mut back = vec![0u8; len];
        target.read_at(&mut back, offset).unwrap();
        assert!(
            back == pattern(seed as u64, offset, len),
            "{len} bytes at {offset} read back different"
        );
    }
    drop(target);
    let on_disk = std::fs::read(server.image()).unwrap();
    let (offset, len) = writes[2];
    assert!(on_disk[offset as usize..offset as usize + len] == pattern(2, offset, len)[..]);
}

#[test]
fn written_data_reads_back_through_qcow2() {
    let Some(mut server) = NbdServer::qemu_nbd_qcow2(64 * MIB, &[]) else {
        return;
    };
    let blocks = [9u64, 0, 1000, 3, 15000, 77];
    {
        let target = NbdTarget::open(&server.uri(""), &for_write()).unwrap();
        assert_eq!(target.info().size_bytes, 64 * MIB);
        // Scattered writes allocate qcow2 clusters out of order; some with FUA.
        for block in blocks {
            target
                .write_at(
                    &pattern(block, block * 4096, 4096),
                    block * 4096,
                    block % 2 == 0,
                )
                .unwrap();
        }
        target.flush().unwrap();
    }
    // A fresh server on the same image: the data went through qcow2 metadata.
    server.restart_qemu_nbd("qcow2", &["-r"]);
    let target = NbdTarget::open(&server.uri(""), &for_read()).unwrap();
    for block in blocks {
        let mut back = vec![0u8; 4096];
        target.read_at(&mut back, block * 4096).unwrap();
        assert!(
            back == pattern(block, block * 4096, 4096),
            "block {block} differs after the qcow2 round trip"
        );
    }
    let mut never_written = vec![1u8; 4096];
    target.read_at(&mut never_written, 5 * 4096).unwrap();
    assert!(never_written.iter().all(|&b| b == 0));
}

#[test]
fn tcp_uri_with_port_and_default_export_works() {
    let Some(server) = NbdServer::qemu_nbd_raw_tcp(16 * MIB, &[]) else {
        return;
    };
    let uri = server.uri("");
    assert!(uri.starts_with("nbd://127.0.0.1:"));
    let target = NbdTarget::open(&uri, &for_write()).unwrap();
    assert_eq!(target.info().size_bytes, 16 * MIB);
    target
        .write_at(&pattern(5, 8192, 65536), 8192, true)
        .unwrap();
    let mut back = vec![0u8; 65536];
    target.read_at(&mut back, 8192).unwrap();
    assert!(back == pattern(5, 8192, 65536));
}

#[test]
fn concurrent_writers_share_one_connection_with_many_requests_in_flight() {
    const THREADS: u64 = 32;
    const BLOCKS_PER_THREAD: u64 = 32;
    const BLOCK: usize = 64 * 1024;
    let Some(server) = NbdServer::qemu_nbd_raw(64 * MIB, &[]) else {
        return;
    };
    let target = Arc::new(NbdTarget::open(&server.uri(""), &for_write()).unwrap());
    let offset_of = |thread: u64, index: u64| (index * THREADS + thread) * BLOCK as u64;
    let writers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let target = Arc::clone(&target);
            std::thread::spawn(move || {
                for index in 0..BLOCKS_PER_THREAD {
                    let offset = offset_of(thread, index);
                    target
                        .write_at(&pattern(thread, offset, BLOCK), offset, false)
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    target.flush().unwrap();
    let readers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let target = Arc::clone(&target);
            std::thread::spawn(move || {
                let mut back = vec![0u8; BLOCK];
                for index in 0..BLOCKS_PER_THREAD {
                    let offset = offset_of(thread, index);
                    target.read_at(&mut back, offset).unwrap();
                    assert!(
                        back == pattern(thread, offset, BLOCK),
                        "block at {offset} differs"
                    );
                }
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    let depth = target.max_in_flight();
    println!(
        "max requests in flight on one connection with {THREADS} threads against qemu-nbd: {depth}"
    );
    assert!(
        depth >= 8,
        "only {depth} requests were ever in flight at once"
    );
    // Each thread has one 64 KiB request out at a time: more would be miscounting.
    assert!(
        depth <= THREADS as usize,
        "{depth} in flight from {THREADS} threads"
    );
    // The same count through the Target trait, where a report reads it.
    let as_target: &dyn Target = target.as_ref();
    assert_eq!(as_target.max_in_flight(), Some(depth));
}

// ---- refusals at open ----

#[test]
fn read_only_export_is_refused_for_write_but_opens_for_read() {
    let Some(server) = NbdServer::qemu_nbd_raw(8 * MIB, &["-r"]) else {
        return;
    };
    let message = usage_message(open_error(&server.uri(""), &for_write()));
    assert!(message.contains("read-only"), "{message}");
    let target = NbdTarget::open(&server.uri(""), &for_read()).unwrap();
    assert!(target.info().read_only);
    let mut buf = vec![0u8; 4096];
    target.read_at(&mut buf, 0).unwrap();
    let refused = target.write_at(&buf, 0, false).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
}

#[test]
fn unknown_export_is_a_usage_error_naming_it() {
    let Some(server) = NbdServer::qemu_nbd_raw(8 * MIB, &["-x", "disk0"]) else {
        return;
    };
    let message = usage_message(open_error(&server.uri("no-such-disk"), &for_read()));
    assert!(
        message.contains("\"no-such-disk\"") && message.contains("does not exist"),
        "{message}"
    );
    assert!(!message.contains('\n'));
    // The named export itself is fine.
    NbdTarget::open(&server.uri("disk0"), &for_read()).unwrap();
}

#[test]
fn size_beyond_the_export_is_refused() {
    let Some(server) = NbdServer::qemu_nbd_raw(8 * MIB, &[]) else {
        return;
    };
    let request = OpenRequest {
        create_size: Some(16 * MIB),
        ..for_write()
    };
    let message = usage_message(open_error(&server.uri(""), &request));
    assert!(message.contains(&(16 * MIB).to_string()), "{message}");
    let request = OpenRequest {
        create_size: Some(8 * MIB),
        ..for_write()
    };
    NbdTarget::open(&server.uri(""), &request).unwrap();
}

#[test]
fn unreachable_server_is_a_run_error() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!(
        "nbd+unix:///?socket={}",
        dir.path().join("nobody.sock").display()
    );
    let message = run_message(open_error(&uri, &for_read()));
    assert!(message.contains("cannot connect"), "{message}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let message = run_message(open_error(&format!("nbd://127.0.0.1:{port}/"), &for_read()));
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
}

#[test]
fn malformed_uri_is_a_usage_error() {
    let message = usage_message(open_error("nbd://host:notaport/x", &for_read()));
    assert!(message.contains("notaport"), "{message}");
}

#[test]
fn oldstyle_server_is_refused_clearly() {
    let Some(server) = NbdServer::nbdkit(&["--oldstyle", "memory", "1M"]) else {
        return;
    };
    let message = run_message(open_error(&server.uri(""), &for_read()));
    assert!(message.contains("oldstyle"), "{message}");
}

#[test]
fn non_fixed_newstyle_server_is_refused_clearly() {
    let Some(server) = NbdServer::nbdkit(&["--mask-handshake=0", "memory", "1M"]) else {
        return;
    };
    let message = run_message(open_error(&server.uri(""), &for_read()));
    assert!(message.contains("non-fixed"), "{message}");
}

// ---- failures during the run ----

#[test]
fn injected_eio_surfaces_as_eio_and_the_connection_survives() {
    let args = [
        "--filter=error",
        "memory",
        "64M",
        "error-pread=EIO",
        "error-pread-rate=100%",
    ];
    let Some(server) = NbdServer::nbdkit(&args) else {
        return;
    };
    let target = NbdTarget::open(&server.uri(""), &for_write()).unwrap();
    let mut buf = vec![0u8; 4096];
    let error = target.read_at(&mut buf, 4096).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(eio()), "{error}");
    // An error reply is one request's failure, not the connection's.
    target.write_at(&buf, 0, false).unwrap();
    let again = target.read_at(&mut buf, 0).unwrap_err();
    assert_eq!(again.raw_os_error(), Some(eio()));
}

#[test]
fn injected_enospc_on_write_maps_to_enospc() {
    let args = [
        "--filter=error",
        "memory",
        "64M",
        "error-pwrite=ENOSPC",
        "error-pwrite-rate=100%",
    ];
    let Some(server) = NbdServer::nbdkit(&args) else {
        return;
    };
    let target = NbdTarget::open(&server.uri(""), &for_write()).unwrap();
    let error = target.write_at(&[1u8; 4096], 0, false).unwrap_err();
    assert_eq!(
        error.raw_os_error(),
        Some(rustix::io::Errno::NOSPC.raw_os_error()),
        "{error}"
    );
}

#[test]
fn server_killed_mid_run_fails_pending_and_later_requests_without_hanging() {
    // Reads take 10 s, so they are surely in flight when the server dies.
    let Some(mut server) = NbdServer::nbdkit(&["--filter=delay", "memory", "64M", "delay-read=10"])
    else {
        return;
    };
    let target = Arc::new(NbdTarget::open(&server.uri(""), &for_write()).unwrap());
    let readers: Vec<_> = (0..8u64)
        .map(|index| {
            let target = Arc::clone(&target);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                target.read_at(&mut buf, index * 4096)
            })
        })
        .collect();
    let started = Instant::now();
    while target.max_in_flight() < 8 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the 8 reads never got in flight"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed = Instant::now();
    server.kill();
    for reader in readers {
        let error = reader.join().unwrap().unwrap_err();
        assert_ne!(
            error.raw_os_error(),
            Some(eio()),
            "a dead server is not an unreadable block: {error}"
        );
        assert!(error.to_string().contains("NBD server"), "{error}");
    }
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "pending requests took {:?} to fail",
        killed.elapsed()
    );
    let later = Instant::now();
    assert!(target.write_at(&[0u8; 4096], 0, false).is_err());
    assert!(target.flush().is_err());
    assert!(later.elapsed() < Duration::from_secs(1));
}

#[test]
fn qemu_nbd_killed_between_requests_fails_the_next_one() {
    let Some(mut server) = NbdServer::qemu_nbd_raw(8 * MIB, &[]) else {
        return;
    };
    let target = NbdTarget::open(&server.uri(""), &for_write()).unwrap();
    target.write_at(&[3u8; 4096], 0, false).unwrap();
    server.kill();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    assert!(target.read_at(&mut buf, 0).is_err());
    assert!(target.write_at(&buf, 0, true).is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn unanswered_request_times_out_and_fails_the_connection() {
    let Some(server) = NbdServer::nbdkit(&["--filter=delay", "memory", "64M", "delay-read=20"])
    else {
        return;
    };
    let options = NbdOptions {
        request_timeout: Duration::from_millis(500),
        ..NbdOptions::default()
    };
    let target = NbdTarget::open_with(&server.uri(""), &for_write(), &options).unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let error = target.read_at(&mut buf, 0).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The connection is given up: later requests fail at once.
    assert_eq!(
        target.write_at(&buf, 0, false).unwrap_err().kind(),
        io::ErrorKind::TimedOut
    );
}

// ---- FUA, flush, block sizes ----

/// nbdkit with its log filter nearest the client (so the log shows what
/// came over the wire), then `args`.
fn logged_nbdkit(args: &[&str]) -> Option<NbdServer> {
    let mut all = vec!["--filter=log"];
    all.extend_from_slice(args);
    all.push("logfile={dir}/requests.log");
    NbdServer::nbdkit(&all)
}

/// The request log, once the server has logged the end of the connection
/// (it does so asynchronously after NBD_CMD_DISC).
fn log_after_disconnect(server: &NbdServer) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(server.dir().join("requests.log")).unwrap_or_default();
        if text.contains("Disconnect") || started.elapsed() > Duration::from_secs(5) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fua_writes_and_flushes_reach_the_server() {
    let Some(server) = logged_nbdkit(&["memory", "64M"]) else {
        return;
    };
    let target = NbdTarget::open(&server.uri(""), &for_write()).unwrap();
    assert!(target.info().supports_fua);
    target.write_at(&[1u8; 4096], 0, true).unwrap();
    target.write_at(&[2u8; 4096], 4096, false).unwrap();
    target.flush().unwrap();
    drop(target);
    let log = log_after_disconnect(&server);
    assert!(
        log.contains("Write id=1 offset=0x0 count=0x1000 fua=1"),
        "{log}"
    );
    assert!(
        log.contains("Write id=2 offset=0x1000 count=0x1000 fua=0"),
        "{log}"
    );
    assert!(log.contains("Flush id=3"), "{log}");
    // NBD_CMD_DISC on drop: nbdkit logs a clean disconnect.
    assert!(log.contains("Disconnect transactions=3"), "{log}");
}

#[test]
fn fua_without_server_support_becomes_write_then_flush() {
    // The fua filter in its default mode ("none") hides FUA from the client.
    let Some(server) = logged_nbdkit(&["--filter=fua", "memory", "64M"]) else {
        return;
    };
    let target = NbdTarget::open(&server.uri(""), &for_write()).unwrap();
    assert!(!target.info().supports_fua);
    target.write_at(&[1u8; 4096], 0, true).unwrap();
    drop(target);
    let log = log_after_disconnect(&server);
    assert!(
        log.contains("Write id=1 offset=0x0 count=0x1000 fua=0"),
        "{log}"
    );
    assert!(log.contains("Flush id=2"), "{log}");
}

#[test]
fn large_requests_are_split_to_the_servers_block_limits() {
    // With the error policy, a request over 64 KiB or not 4 KiB aligned fails EINVAL.
    let args = [
        "--filter=blocksize-policy",
        "memory",
        "64M",
        "blocksize-minimum=4096",
        "blocksize-preferred=16384",
        "blocksize-maximum=65536",
        "blocksize-error-policy=error",
    ];
    let Some(server) = NbdServer::nbdkit(&args) else {
        return;
    };
    let target = NbdTarget::open(&server.uri(""), &for_write()).unwrap();
    assert_eq!(target.info().logical_sector_size, 4096);
    assert_eq!(target.info().physical_sector_size, 16384);
    assert_eq!(target.block_sizes().maximum_payload, 65536);
    let data = pattern(1, 8192, MIB as usize);
    target.write_at(&data, 8192, false).unwrap();
    let mut back = vec![0u8; MIB as usize];
    target.read_at(&mut back, 8192).unwrap();
    assert!(back == data);
    let misaligned = target.write_at(&[0u8; 512], 512, false).unwrap_err();
    assert_eq!(
        misaligned.kind(),
        io::ErrorKind::InvalidInput,
        "{misaligned}"
    );
}

#[test]
fn requests_past_the_end_are_refused_before_sending() {
    let Some(server) = NbdServer::nbdkit(&["memory", "1M"]) else {
        return;
    };
    let target = NbdTarget::open(&server.uri(""), &for_write()).unwrap();
    let error = target
        .write_at(&[0u8; 8192], MIB - 4096, false)
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    let mut buf = [0u8; 512];
    assert_eq!(
        target.read_at(&mut buf, u64::MAX - 100).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    // Nothing reached the wire, so the connection is still good.
    target.read_at(&mut buf, MIB - 512).unwrap();
}

// ---- protocol corners, with a scripted server ----

/// A one-connection NBD "server" run by a script on a thread.
struct FakeServer {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeServer {
    fn start(script: impl FnOnce(UnixStream) -> io::Result<()> + Send + 'static) -> FakeServer {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        std::thread::spawn(move || {
            if let Ok((stream, _)) = listener.accept() {
                let _ = script(stream);
            }
        });
        FakeServer { socket, _dir: dir }
    }

    fn uri(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.socket.display())
    }
}

/// Greeting with FIXED_NEWSTYLE | NO_ZEROES; returns after the client flags.
fn greet(stream: &mut UnixStream) -> io::Result<()> {
    stream.write_all(&proto::NBDMAGIC.to_be_bytes())?;
    stream.write_all(&proto::IHAVEOPT.to_be_bytes())?;
    stream.write_all(&(proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES).to_be_bytes())?;
    let mut client_flags = [0u8; 4];
    stream.read_exact(&mut client_flags)
}

/// Read one option: (option, data).
fn read_option(stream: &mut UnixStream) -> io::Result<(u32, Vec<u8>)> {
    let mut header = [0u8; 16];
    stream.read_exact(&mut header)?;
    let option = u32::from_be_bytes(header[8..12].try_into().unwrap());
    let length = u32::from_be_bytes(header[12..16].try_into().unwrap());
    let mut data = vec![0u8; length as usize];
    stream.read_exact(&mut data)?;
    Ok((option, data))
}

fn option_reply(
    stream: &mut UnixStream,
    option: u32,
    reply_type: u32,
    data: &[u8],
) -> io::Result<()> {
    stream.write_all(&proto::OPTION_REPLY_MAGIC.to_be_bytes())?;
    stream.write_all(&option.to_be_bytes())?;
    stream.write_all(&reply_type.to_be_bytes())?;
    stream.write_all(&(data.len() as u32).to_be_bytes())?;
    stream.write_all(data)
}

/// Accept NBD_OPT_GO for a 1 MiB writable export.
fn accept_go(stream: &mut UnixStream) -> io::Result<()> {
    greet(stream)?;
    let (option, _) = read_option(stream)?;
    assert_eq!(option, proto::OPT_GO);
    let flags = proto::FLAG_HAS_FLAGS | proto::FLAG_SEND_FLUSH;
    let info = [
        &proto::INFO_EXPORT.to_be_bytes()[..],
        &MIB.to_be_bytes(),
        &flags.to_be_bytes(),
    ]
    .concat();
    option_reply(stream, option, proto::REP_INFO, &info)?;
    option_reply(stream, option, proto::REP_ACK, &[])
}

/// Read one request header: (command, cookie, length).
fn read_request(stream: &mut UnixStream) -> io::Result<(u16, u64, u32)> {
    let mut header = [0u8; 28];
    stream.read_exact(&mut header)?;
    let command = u16::from_be_bytes(header[6..8].try_into().unwrap());
    let cookie = u64::from_be_bytes(header[8..16].try_into().unwrap());
    let length = u32::from_be_bytes(header[24..28].try_into().unwrap());
    Ok((command, cookie, length))
}

fn simple_reply(stream: &mut UnixStream, error: u32, cookie: u64) -> io::Result<()> {
    stream.write_all(&proto::SIMPLE_REPLY_MAGIC.to_be_bytes())?;
    stream.write_all(&error.to_be_bytes())?;
    stream.write_all(&cookie.to_be_bytes())
}

#[test]
fn server_without_opt_go_is_served_through_export_name() {
    let server = FakeServer::start(|mut stream| {
        greet(&mut stream)?;
        let (option, _) = read_option(&mut stream)?;
        option_reply(&mut stream, option, proto::REP_ERR_UNSUP, &[])?;
        let (option, name) = read_option(&mut stream)?;
        assert_eq!(
            (option, &name[..]),
            (proto::OPT_EXPORT_NAME, &b"legacy"[..])
        );
        stream.write_all(&(2 * MIB).to_be_bytes())?;
        stream.write_all(&(proto::FLAG_HAS_FLAGS | proto::FLAG_READ_ONLY).to_be_bytes())?;
        let (command, cookie, length) = read_request(&mut stream)?;
        assert_eq!((command, length), (proto::CMD_READ, 512));
        simple_reply(&mut stream, 0, cookie)?;
        stream.write_all(&[0xab; 512])?;
        let (command, _, _) = read_request(&mut stream)?;
        assert_eq!(command, proto::CMD_DISC);
        Ok(())
    });
    let target = NbdTarget::open(&server.uri("legacy"), &for_read()).unwrap();
    assert_eq!(target.info().size_bytes, 2 * MIB);
    let mut buf = [0u8; 512];
    target.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 0xab));
}

#[test]
fn export_name_hang_up_is_a_usage_error_naming_the_export() {
    let server = FakeServer::start(|mut stream| {
        greet(&mut stream)?;
        let (option, _) = read_option(&mut stream)?;
        option_reply(&mut stream, option, proto::REP_ERR_UNSUP, &[])?;
        read_option(&mut stream)?;
        Ok(()) // hang up: how NBD_OPT_EXPORT_NAME says "no such export"
    });
    let message = usage_message(open_error(&server.uri("gone"), &for_read()));
    assert!(message.contains("\"gone\""), "{message}");
}

#[test]
fn tls_only_server_is_a_usage_error() {
    let server = FakeServer::start(|mut stream| {
        greet(&mut stream)?;
        let (option, _) = read_option(&mut stream)?;
        option_reply(
            &mut stream,
            option,
            proto::REP_ERR_TLS_REQD,
            b"TLS required",
        )
    });
    let message = usage_message(open_error(&server.uri(""), &for_read()));
    assert!(message.contains("requires TLS"), "{message}");
}

#[test]
fn something_that_is_not_nbd_is_a_run_error() {
    let server =
        FakeServer::start(|mut stream| stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n"));
    let message = run_message(open_error(&server.uri(""), &for_read()));
    assert!(
        message.contains("does not speak the NBD protocol"),
        "{message}"
    );
}

#[test]
fn silent_server_times_out_in_the_handshake() {
    let server = FakeServer::start(|_stream| {
        std::thread::sleep(Duration::from_secs(3));
        Ok(())
    });
    let options = NbdOptions {
        handshake_timeout: Duration::from_millis(300),
        ..NbdOptions::default()
    };
    let started = Instant::now();
    let error = NbdTarget::open_with(&server.uri(""), &for_read(), &options)
        .err()
        .expect("must not open");
    assert!(run_message(error).contains("handshake"));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn short_reply_fails_the_request_and_every_later_one() {
    let server = FakeServer::start(|mut stream| {
        accept_go(&mut stream)?;
        let (_, cookie, _) = read_request(&mut stream)?;
        simple_reply(&mut stream, 0, cookie)?;
        stream.write_all(&[0u8; 100]) // of 4096, then the server is gone
    });
    let target = NbdTarget::open(&server.uri(""), &for_write()).unwrap();
    let mut buf = vec![0u8; 4096];
    let error = target.read_at(&mut buf, 0).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted, "{error}");
    assert_eq!(
        target.flush().unwrap_err().kind(),
        io::ErrorKind::ConnectionAborted
    );
}

#[test]
fn reply_with_an_unknown_cookie_fails_the_connection() {
    let server = FakeServer::start(|mut stream| {
        accept_go(&mut stream)?;
        let (_, cookie, _) = read_request(&mut stream)?;
        simple_reply(&mut stream, 0, cookie ^ 0xffff)?;
        std::thread::sleep(Duration::from_secs(2));
        Ok(())
    });
    let target = NbdTarget::open(&server.uri(""), &for_write()).unwrap();
    let error = target.flush().unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
}

#[test]
fn garbage_replies_never_panic_or_hang() {
    // Each script answers the first request with a different broken reply.
    let garbage: [&[u8]; 4] = [
        b"",
        b"\x67\x44",
        &[0xff; 16],
        &[0x66, 0x8e, 0x33, 0xef, 0, 0, 0, 0],
    ];
    for reply in garbage {
        let reply = reply.to_vec();
        let server = FakeServer::start(move |mut stream| {
            accept_go(&mut stream)?;
            read_request(&mut stream)?;
            stream.write_all(&reply)
        });
        let target = NbdTarget::open(&server.uri(""), &for_write()).unwrap();
        let started = Instant::now();
        let mut buf = vec![0u8; 4096];
        assert!(target.read_at(&mut buf, 0).is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
