//! Bad input gets one clear line on stderr and exit 2 (3 when the target
//! cannot be reached), never a panic, and never a byte written to the target.

mod common;
#[path = "common/nbd_server.rs"]
mod nbd_server;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;

use common::{TestEnv, file_digest, settled_digest};
use nbd_server::NbdServer;

/// Run `args`; assert the exit code, a one-line message containing `says`,
/// no panic, and the target file unchanged.
fn refuses(env: &TestEnv, args: &[&str], code: i32, says: &str) {
    let target = env.path("disk.img");
    let before = file_digest(&target);
    let run = env.run(args);
    run.assert_code(code);
    let message = run.stderr.trim();
    assert!(message.contains(says), "expected {says:?} in {message:?}");
    assert_eq!(message.lines().count(), 1, "one line: {message:?}");
    assert!(message.starts_with("blockstamp: "), "{message:?}");
    assert_eq!(file_digest(&target), before, "target changed by {args:?}");
    common::record_refusal(env.dir.path(), args, code, message);
}

fn written_env() -> TestEnv {
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "1MiB"]);
    env
}

#[test]
fn bad_sizes_are_refused() {
    let env = TestEnv::new();
    for (size, says) in [
        ("abc", "bad size 'abc'"),
        ("0", "bad --size '0'"),
        ("12XB", "unknown unit 'XB'"),
        ("1.3", "not a whole number of bytes"),
        ("100", "smaller than one 4 KiB block"),
        ("99999999999999999999", "too large"),
    ] {
        refuses(
            &env,
            &["write", "disk.img", "--manifest", "m", "--size", size],
            2,
            says,
        );
        assert!(
            !env.path("disk.img").exists(),
            "no target created for --size {size}"
        );
        assert!(
            !env.path("m").exists(),
            "no manifest created for --size {size}"
        );
    }
}

#[test]
fn bad_block_sizes_are_refused() {
    let env = TestEnv::new();
    for block_size in ["1000", "256", "2MiB", "3K", "0", "x"] {
        refuses(
            &env,
            &[
                "write",
                "disk.img",
                "--manifest",
                "m",
                "--size",
                "1MiB",
                "--block-size",
                block_size,
            ],
            2,
            "--block-size",
        );
        assert!(!env.path("disk.img").exists());
    }
}

#[test]
fn unknown_flags_and_bad_values_are_refused() {
    let env = written_env();
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "m", "--frobnicate"],
        2,
        "unexpected argument '--frobnicate'",
    );
    refuses(&env, &["verify", "disk.img"], 2, "--manifest");
    refuses(&env, &["explode"], 2, "unrecognized subcommand");
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "m", "--coverage", "1.5"],
        2,
        "bad fraction '1.5'",
    );
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "m", "--coverage", "0"],
        2,
        "bad --coverage 0",
    );
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "m", "--passes", "0"],
        2,
        "bad --passes 0",
    );
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "m", "--queue-depth", "0"],
        2,
        "bad --queue-depth 0",
    );
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "m", "--sync", "often"],
        2,
        "bad --sync 'often'",
    );
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "m", "--duration", "10x"],
        2,
        "bad duration '10x'",
    );
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "m", "--seed", "abc"],
        2,
        "invalid value 'abc' for '--seed <N>'",
    );
    refuses(
        &env,
        &["verify", "disk.img", "--manifest", "m", "--threads", "0"],
        2,
        "bad --threads 0",
    );
    refuses(
        &env,
        &["inspect", "disk.img", "--manifest", "m", "--block", "256"],
        2,
        "bad --block 256",
    );
}

#[test]
fn a_damaged_manifest_is_refused() {
    let env = written_env();
    let mut bytes = std::fs::read(env.path("m")).unwrap();
    // Damage the JSON of both header slots.
    bytes[100] ^= 0xff;
    bytes[32 * 1024 + 100] ^= 0xff;
    std::fs::write(env.path("m"), &bytes).unwrap();
    refuses(
        &env,
        &["verify", "disk.img", "--manifest", "m"],
        2,
        "is damaged",
    );
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "m"],
        2,
        "is damaged",
    );
}

#[test]
fn a_damaged_generation_map_is_refused() {
    let env = written_env();
    let mut bytes = std::fs::read(env.path("m")).unwrap();
    bytes[64 * 1024 + 10] ^= 0x01;
    std::fs::write(env.path("m"), &bytes).unwrap();
    refuses(
        &env,
        &["verify", "disk.img", "--manifest", "m"],
        2,
        "generation map does not match its checksum",
    );
}

#[test]
fn a_truncated_manifest_is_refused() {
    let env = written_env();
    let full = std::fs::read(env.path("m")).unwrap();
    std::fs::write(env.path("m"), &full[..100]).unwrap();
    refuses(
        &env,
        &["verify", "disk.img", "--manifest", "m"],
        2,
        "is truncated",
    );
    std::fs::write(env.path("m"), &full[..full.len() - 1000]).unwrap();
    refuses(
        &env,
        &["verify", "disk.img", "--manifest", "m"],
        2,
        "is truncated",
    );
    std::fs::write(env.path("m"), b"").unwrap();
    refuses(
        &env,
        &["verify", "disk.img", "--manifest", "m"],
        2,
        "is truncated",
    );
}

#[test]
fn a_file_that_is_not_a_manifest_is_refused() {
    let env = written_env();
    std::fs::write(env.path("garbage"), vec![0x5a; 200_000]).unwrap();
    refuses(
        &env,
        &["verify", "disk.img", "--manifest", "garbage"],
        2,
        "is not a blockstamp manifest",
    );
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "garbage"],
        2,
        "is not a blockstamp manifest",
    );
}

#[test]
fn a_manifest_of_another_version_is_refused() {
    let env = written_env();
    set_format_version(&env, 9);
    refuses(
        &env,
        &["verify", "disk.img", "--manifest", "m"],
        2,
        "has format version 9",
    );
}

#[test]
fn a_version_1_manifest_is_read_while_no_block_passed_8191_writes() {
    let env = written_env();
    set_format_version(&env, 1);
    let run = env.verify("disk.img", "m", &[]);
    run.assert_code(0);
    // Writing on it makes it version 2.
    env.write("disk.img", "m", &[]);
    let manifest =
        blockstamp::manifest::Manifest::open(&env.path("m"), blockstamp::manifest::Access::Read)
            .unwrap();
    assert_eq!(manifest.header().format_version, 2);
}

/// Rewrite both header slots of manifest `m` to say `version`.
fn set_format_version(env: &TestEnv, version: u32) {
    let mut bytes = std::fs::read(env.path("m")).unwrap();
    for slot in [0usize, 32 * 1024] {
        let length = u32::from_le_bytes(bytes[slot + 16..slot + 20].try_into().unwrap()) as usize;
        let json = String::from_utf8(bytes[slot + 24..slot + 24 + length].to_vec()).unwrap();
        let json = json.replace(
            "\"format_version\":2",
            &format!("\"format_version\":{version}"),
        );
        assert_eq!(json.len(), length);
        bytes[slot + 24..slot + 24 + length].copy_from_slice(json.as_bytes());
        let crc =
            crc32c::crc32c_append(crc32c::crc32c(&bytes[slot + 8..slot + 20]), json.as_bytes());
        bytes[slot + 20..slot + 24].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(env.path("m"), &bytes).unwrap();
}

#[test]
fn a_manifest_of_another_target_is_refused() {
    let env = written_env();
    env.write("big.img", "big.manifest", &["--size", "2MiB"]);
    refuses(
        &env,
        &["verify", "big.img", "--manifest", "m"],
        2,
        "was written for a target of 1048576 bytes",
    );
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "big.manifest"],
        2,
        "was written for a target of 2097152 bytes",
    );
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "m", "--size", "2MiB"],
        2,
        "--size asks for 2097152",
    );
    refuses(
        &env,
        &[
            "write",
            "disk.img",
            "--manifest",
            "m",
            "--block-size",
            "8KiB",
        ],
        2,
        "uses 4 KiB blocks",
    );
}

#[test]
fn missing_targets_and_manifests() {
    let env = written_env();
    refuses(
        &env,
        &["verify", "nope.img", "--manifest", "m"],
        3,
        "target nope.img does not exist; check the path",
    );
    refuses(
        &env,
        &["inspect", "nope.img", "--manifest", "m", "--block", "0"],
        3,
        "target nope.img does not exist; check the path",
    );
    refuses(
        &env,
        &["write", "nope.img", "--manifest", "new"],
        3,
        "pass --size",
    );
    assert!(!env.path("new").exists());
    refuses(
        &env,
        &["verify", "disk.img", "--manifest", "nope"],
        2,
        "manifest nope does not exist",
    );
    refuses(
        &env,
        &[
            "write",
            "disk.img",
            "--manifest",
            "no/such/dir/m",
            "--size",
            "1MiB",
        ],
        2,
        "does not exist",
    );
}

#[test]
fn a_directory_is_not_a_target() {
    let env = written_env();
    std::fs::create_dir(env.path("dir")).unwrap();
    refuses(
        &env,
        &["write", "dir", "--manifest", "m2", "--size", "1MiB"],
        2,
        "is a directory",
    );
    refuses(
        &env,
        &["verify", "disk.img", "--manifest", "dir"],
        2,
        "is a directory",
    );
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "dir"],
        2,
        "cannot open manifest dir: Is a directory",
    );
}

#[test]
fn a_read_only_target_is_not_written() {
    let env = written_env();
    let mut permissions = std::fs::metadata(env.path("disk.img"))
        .unwrap()
        .permissions();
    use std::os::unix::fs::PermissionsExt;
    permissions.set_mode(0o444);
    std::fs::set_permissions(env.path("disk.img"), permissions).unwrap();
    // Root ignores file modes; make the refusal about the file system then.
    let run = env.run(&["write", "disk.img", "--manifest", "m"]);
    if rustix::process::geteuid().is_root() {
        run.assert_code(0);
    } else {
        run.assert_code(3);
        assert!(run.stderr.contains("permission denied"), "{}", run.stderr);
    }
}

#[test]
fn the_manifest_never_lives_on_the_target() {
    let env = written_env();
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "disk.img"],
        2,
        "keep the manifest off the target",
    );
    refuses(
        &env,
        &["verify", "m", "--manifest", "m"],
        2,
        "keep the manifest off the target",
    );
}

#[test]
fn unknown_checkpoints_are_refused() {
    let env = written_env();
    refuses(
        &env,
        &["verify", "disk.img", "--manifest", "m", "--at", "nope"],
        2,
        "has no checkpoint 'nope'",
    );
    refuses(
        &env,
        &["checkpoint", "--manifest", "m", "bad name!"],
        2,
        "bad checkpoint name",
    );
    env.run(&["checkpoint", "--manifest", "m", "one"])
        .assert_code(0);
    refuses(
        &env,
        &["checkpoint", "--manifest", "m", "one"],
        2,
        "already exists",
    );
}

#[test]
fn more_bad_flag_values_are_refused() {
    let env = written_env();
    for (args, says) in [
        (
            &["write", "disk.img", "--manifest", "m", "--burst", "0"][..],
            "bad --burst 0",
        ),
        (
            &["write", "disk.img", "--manifest", "m", "--burst-gap", "x"],
            "--burst-gap: bad duration 'x'",
        ),
        (
            &["write", "disk.img", "--manifest", "m", "--duration", "0"],
            "bad --duration 0",
        ),
        (
            &[
                "write",
                "disk.img",
                "--manifest",
                "m",
                "--queue-depth",
                "5000",
            ],
            "bad --queue-depth 5000: use 1 to 4096",
        ),
        (
            &["verify", "disk.img", "--manifest", "m", "--read-depth", "0"],
            "bad --read-depth 0",
        ),
        (
            &["verify", "disk.img", "--manifest", "m", "--threads", "5000"],
            "bad --threads 5000: use 1 to 1024",
        ),
        (
            &["verify", "disk.img", "--manifest", "m", "--json", ""],
            "bad --json ''",
        ),
        (
            &["verify", "disk.img", "--manifest", "m", "--show", "x"],
            "invalid value 'x' for '--show <N>'",
        ),
        (&["checkpoint", "--manifest", "m"], "<NAME>"),
        (
            &["checkpoint", "--manifest", "m", ""],
            "bad checkpoint name ''",
        ),
    ] {
        refuses(&env, args, 2, says);
    }
}

#[test]
fn a_json_report_path_in_a_missing_directory_is_refused_before_verifying() {
    let env = written_env();
    refuses(
        &env,
        &[
            "verify",
            "disk.img",
            "--manifest",
            "m",
            "--json",
            "no/such/dir/report.json",
        ],
        2,
        "bad --json no/such/dir/report.json: directory no/such/dir does not exist",
    );
    // The verify did not run: it prints its summary on stdout.
    let run = env.run(&[
        "run",
        "disk.img",
        "--manifest",
        "m",
        "--json",
        "no/such/dir/report.json",
    ]);
    run.assert_code(2);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn a_target_smaller_than_one_block_is_refused() {
    let env = TestEnv::new();
    for (bytes, says) in [
        (
            1000u64,
            "target disk.img has 1000 bytes, less than one 4 KiB block",
        ),
        (0, "target disk.img has 0 bytes, less than one 4 KiB block"),
    ] {
        let image = std::fs::File::create(env.path("disk.img")).unwrap();
        image.set_len(bytes).unwrap();
        refuses(&env, &["write", "disk.img", "--manifest", "m"], 2, says);
        assert!(
            !env.path("m").exists(),
            "no manifest for a {bytes}-byte target"
        );
        assert_eq!(
            std::fs::metadata(env.path("disk.img")).unwrap().len(),
            bytes
        );
    }
    // 64 KiB blocks on a 32 KiB image, with --size.
    refuses(
        &env,
        &[
            "write",
            "small.img",
            "--manifest",
            "m",
            "--size",
            "32KiB",
            "--block-size",
            "64KiB",
        ],
        2,
        "bad --size 32768: smaller than one 64 KiB block",
    );
    assert!(!env.path("small.img").exists());
}

#[test]
fn a_size_larger_than_any_file_is_refused_without_creating_one() {
    let env = TestEnv::new();
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "m", "--size", "16383P"],
        2,
        "bad --size 18445618173802708992: larger than any file or device can be (8 EiB)",
    );
    assert!(!env.path("disk.img").exists());
    assert!(!env.path("m").exists());
}

#[test]
fn an_empty_target_is_refused() {
    let env = TestEnv::new();
    refuses(
        &env,
        &["write", "", "--manifest", "m", "--size", "1MiB"],
        2,
        "TARGET is empty",
    );
    assert!(!env.path("m").exists());
}

#[test]
fn a_value_with_a_line_break_is_quoted_on_one_line() {
    let env = TestEnv::new();
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "m", "--size", "1\n2"],
        2,
        "bad size '1\\n2'",
    );
}

// ---- NBD targets, through the binary ----

#[test]
fn malformed_nbd_uris_are_refused() {
    let env = written_env();
    for (uri, says) in [
        (
            "nbd://host:notaport/x",
            "port \"notaport\" is not a number from 1 to 65535",
        ),
        ("nbd:host/x", "not an NBD URI"),
        ("nbd+unix:///x", "nbd+unix:// needs ?socket=PATH"),
        ("nbd://[::1/x", "without a closing ']'"),
        ("nbd://host/%zz", "bad percent escape \"%zz\""),
        ("nbd://host/x#frag", "unexpected fragment #frag"),
        ("nbd+vsock://2/x", "scheme nbd+vsock:// is not supported"),
        ("nbd://user@host/x", "only used with TLS"),
    ] {
        refuses(
            &env,
            &["write", uri, "--manifest", "new.m", "--size", "1MiB"],
            2,
            says,
        );
        refuses(&env, &["verify", uri, "--manifest", "m"], 2, says);
        assert!(!env.path("new.m").exists(), "no manifest for {uri}");
    }
}

#[test]
fn nbd_over_tls_is_refused_as_not_supported() {
    let env = TestEnv::new();
    for uri in ["nbds://host/x", "nbds+unix:///x?socket=/s"] {
        refuses(
            &env,
            &["write", uri, "--manifest", "m", "--size", "1MiB"],
            2,
            "(NBD over TLS) is not supported; use nbd:// or nbd+unix://",
        );
    }
}

/// A one-shot NBD "server" on a unix socket in the test's dir, that greets
/// (fixed newstyle) and answers the first option with `reply_type`, or
/// sends `raw` instead of a greeting.
fn scripted_server(env: &TestEnv, reply_type: Option<u32>, raw: &'static [u8]) -> String {
    let socket = env.path("fake.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let Some(reply_type) = reply_type else {
            let _ = stream.write_all(raw);
            return;
        };
        let mut greeting = b"NBDMAGICIHAVEOPT".to_vec();
        greeting.extend_from_slice(&3u16.to_be_bytes()); // FIXED_NEWSTYLE | NO_ZEROES
        let _ = stream.write_all(&greeting);
        let mut client_flags = [0u8; 4];
        let mut header = [0u8; 16];
        if stream.read_exact(&mut client_flags).is_err() || stream.read_exact(&mut header).is_err()
        {
            return;
        }
        let option = u32::from_be_bytes(header[8..12].try_into().unwrap());
        let length = u32::from_be_bytes(header[12..16].try_into().unwrap());
        let mut data = vec![0u8; length as usize];
        let _ = stream.read_exact(&mut data);
        let mut reply = 0x0003_e889_0455_65a9u64.to_be_bytes().to_vec();
        reply.extend_from_slice(&option.to_be_bytes());
        reply.extend_from_slice(&reply_type.to_be_bytes());
        reply.extend_from_slice(&0u32.to_be_bytes());
        let _ = stream.write_all(&reply);
    });
    format!("nbd+unix:///disk?socket={}", socket.display())
}

#[test]
fn an_nbd_server_that_requires_tls_is_refused() {
    let env = TestEnv::new();
    let uri = scripted_server(&env, Some(1 << 31 | 5), b""); // NBD_REP_ERR_TLS_REQD
    refuses(
        &env,
        &["write", &uri, "--manifest", "m", "--size", "1MiB"],
        2,
        "requires TLS",
    );
    assert!(!env.path("m").exists());
}

#[test]
fn something_that_is_not_an_nbd_server_is_a_run_failure() {
    let env = TestEnv::new();
    let uri = scripted_server(&env, None, b"HTTP/1.1 400 Bad Request\r\n\r\n");
    refuses(
        &env,
        &["write", &uri, "--manifest", "m", "--size", "1MiB"],
        3,
        "does not speak the NBD protocol",
    );
}

#[test]
fn an_unreachable_nbd_server_is_a_run_failure() {
    let env = TestEnv::new();
    let uri = format!("nbd+unix:///x?socket={}", env.p("nobody.sock"));
    refuses(
        &env,
        &["write", &uri, "--manifest", "m", "--size", "1MiB"],
        3,
        "cannot connect to the NBD server",
    );
    assert!(!env.path("m").exists());
}

#[test]
fn an_unknown_nbd_export_is_refused_naming_it() {
    let Some(server) = NbdServer::qemu_nbd_raw(8 << 20, &["-x", "disk0"]) else {
        return;
    };
    let env = TestEnv::new();
    refuses(
        &env,
        &[
            "write",
            &server.uri("no-such-disk"),
            "--manifest",
            "m",
            "--size",
            "1MiB",
        ],
        2,
        "\"no-such-disk\"",
    );
    assert!(!env.path("m").exists());
}

#[test]
fn a_read_only_nbd_export_is_not_written() {
    let Some(server) = NbdServer::qemu_nbd_raw(8 << 20, &["-r"]) else {
        return;
    };
    let env = TestEnv::new();
    refuses(
        &env,
        &["write", &server.uri(""), "--manifest", "m"],
        2,
        "read-only",
    );
    assert!(!env.path("m").exists());
}

#[test]
fn a_size_beyond_the_nbd_export_is_refused() {
    let Some(server) = NbdServer::qemu_nbd_raw(8 << 20, &[]) else {
        return;
    };
    let env = TestEnv::new();
    refuses(
        &env,
        &[
            "write",
            &server.uri(""),
            "--manifest",
            "m",
            "--size",
            "16MiB",
        ],
        2,
        "16777216",
    );
    assert!(!env.path("m").exists());
}

/// Write flags that only the block size can judge: checked before the
/// image or the manifest is created, and before an unfinished manifest is
/// recovered.
const BAD_IO_SIZES: [(&str, &str); 2] = [
    ("6KiB", "6144 bytes is not a whole number of 4 KiB blocks"),
    ("4KiB-128MiB", "at most 64 MiB per write"),
];

/// SIGKILL a writer of `target` mid-run (retrying until it is caught with
/// writes in flight), leaving manifest `m` in state `writing` with pending
/// writes in its journal: what the next write would recover first.
fn kill_a_writer(env: &TestEnv, target: &str, extra: &[&str]) {
    use blockstamp::manifest::{Access, Manifest, ManifestState};
    for attempt in 0..20u64 {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_blockstamp"))
            .args(["write", target, "--manifest", "m", "--passes", "1000"])
            .args(["--io-size", "4KiB-16KiB", "--sync", "64"])
            .args(extra)
            .current_dir(env.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start writer");
        std::thread::sleep(std::time::Duration::from_millis(300 + 37 * attempt));
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");
        let Ok(manifest) = Manifest::open(&env.path("m"), Access::Read) else {
            continue;
        };
        let pending = manifest.pending_writes().expect("read the journal");
        if manifest.header().state == ManifestState::Writing && !pending.is_empty() {
            return;
        }
    }
    panic!("no killed writer left writes pending in 20 attempts");
}

#[test]
fn a_bad_io_size_creates_neither_image_nor_manifest() {
    let env = TestEnv::new();
    for command in ["write", "run"] {
        for (io_size, says) in BAD_IO_SIZES {
            refuses(
                &env,
                &[
                    command,
                    "disk.img",
                    "--manifest",
                    "m",
                    "--size",
                    "1MiB",
                    "--io-size",
                    io_size,
                ],
                2,
                says,
            );
            assert!(
                !env.path("disk.img").exists(),
                "{command} --io-size {io_size}: image created"
            );
            assert!(
                !env.path("m").exists(),
                "{command} --io-size {io_size}: manifest created"
            );
        }
    }
}

#[test]
fn a_bad_io_size_leaves_an_unfinished_manifest_and_its_target_unchanged() {
    let env = TestEnv::new();
    kill_a_writer(&env, "disk.img", &["--size", "8MiB"]);
    let manifest_before = file_digest(&env.path("m"));
    for command in ["write", "run"] {
        for (io_size, says) in BAD_IO_SIZES {
            // `refuses` checks the target's bytes; the manifest's here.
            refuses(
                &env,
                &[command, "disk.img", "--manifest", "m", "--io-size", io_size],
                2,
                says,
            );
            assert_eq!(
                file_digest(&env.path("m")),
                manifest_before,
                "{command} --io-size {io_size}: the manifest was recovered or changed"
            );
        }
    }
}

#[test]
fn an_engine_that_cannot_drive_the_target_creates_no_manifest() {
    let Some(server) = NbdServer::qemu_nbd_raw(8 << 20, &[]) else {
        return;
    };
    let env = TestEnv::new();
    let uri = server.uri("");
    let image_before = file_digest(server.image());
    for (command, flag) in [
        ("write", "--engine"),
        ("run", "--engine"),
        ("run", "--read-engine"),
    ] {
        let run = env.run(&[command, &uri, "--manifest", "m", flag, "uring"]);
        run.assert_code(2);
        assert!(
            run.stderr
                .contains("the uring engine needs a file or block device target"),
            "{}",
            run.stderr
        );
        common::record_refusal(
            env.dir.path(),
            &[command, &uri, "--manifest", "m", flag, "uring"],
            2,
            run.stderr.trim(),
        );
        assert!(
            !env.path("m").exists(),
            "{command} {flag} uring: manifest created"
        );
        assert_eq!(
            file_digest(server.image()),
            image_before,
            "{command} {flag} uring wrote"
        );
    }
}

#[test]
fn an_engine_that_cannot_drive_the_target_leaves_an_unfinished_manifest_unchanged() {
    let Some(server) = NbdServer::qemu_nbd_raw(8 << 20, &[]) else {
        return;
    };
    let env = TestEnv::new();
    let uri = server.uri("");
    kill_a_writer(&env, &uri, &[]);
    // The server goes on with the writes the killed writer had sent.
    let image_before = settled_digest(server.image());
    let manifest_before = file_digest(&env.path("m"));
    for (command, flag) in [
        ("write", "--engine"),
        ("run", "--engine"),
        ("run", "--read-engine"),
    ] {
        let run = env.run(&[command, &uri, "--manifest", "m", flag, "uring"]);
        run.assert_code(2);
        assert!(run.stderr.contains("uring"), "{}", run.stderr);
        assert_eq!(
            file_digest(&env.path("m")),
            manifest_before,
            "{command} {flag} uring: the manifest was recovered or changed"
        );
        assert_eq!(
            file_digest(server.image()),
            image_before,
            "{command} {flag} uring wrote"
        );
    }
}

const MIB: u64 = 1 << 20;

/// Cut an image file to `bytes`, as a restore that stopped short would.
fn truncate(path: &std::path::Path, bytes: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open image")
        .set_len(bytes)
        .expect("truncate image");
}

#[test]
fn a_truncated_target_is_verified_up_to_its_end_and_the_rest_reported_unreadable() {
    use blockstamp::manifest::{Access, Manifest};
    let env = TestEnv::new();
    env.write(
        "disk.img",
        "m",
        &["--size", "64MiB", "--coverage", "0.5", "--seed", "7"],
    );
    truncate(&env.path("disk.img"), 40 * MIB);
    let manifest = Manifest::open(&env.path("m"), Access::Read).unwrap();
    let beyond: Vec<(u64, String)> = (40 * MIB / 4096..64 * MIB / 4096)
        .filter(|&block| manifest.generation(block) != 0)
        .map(|block| (block, "unreadable".to_string()))
        .collect();
    assert!(
        !beyond.is_empty() && beyond.len() < 6144,
        "coverage 0.5 writes some"
    );
    drop(manifest);

    let run = env.verify("disk.img", "m", &[]);
    run.assert_code(1);
    let report = run.report();
    assert_eq!(
        common::finding_set(&report),
        beyond,
        "exactly the written blocks past the end"
    );
    for finding in report["findings"].as_array().unwrap() {
        assert_eq!(finding["persistent"], true, "{finding}");
        assert_eq!(
            finding["detail"],
            "beyond the end of the target (target has 41943040 bytes, the manifest 67108864)"
        );
    }
    assert_eq!(
        report["blocks"]["checked"],
        40 * MIB / 4096,
        "every block it holds"
    );
    assert_eq!(report["blocks"]["total"], 64 * MIB / 4096);
    assert!(
        report["notes"].as_array().unwrap().iter().any(|note| note
            .as_str()
            .unwrap()
            .contains("blocks 10240 to 16383 were not checked")),
        "{}",
        report["notes"]
    );

    let inspect = env.run(&["inspect", "disk.img", "--manifest", "m", "--block", "16000"]);
    inspect.assert_code(1);
    assert!(
        inspect.stdout.contains("beyond the end of the target"),
        "{}",
        inspect.stdout
    );
}

#[test]
fn a_shorter_target_without_stamps_of_the_run_is_refused() {
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "64MiB", "--coverage", "0.5"]);
    // Another run's image, cut to 40 MiB; and plain zeros.
    env.write("other.img", "other", &["--size", "64MiB"]);
    truncate(&env.path("other.img"), 40 * MIB);
    std::fs::write(env.path("zeros.img"), vec![0u8; (40 * MIB) as usize]).unwrap();
    for image in ["other.img", "zeros.img"] {
        let before = file_digest(&env.path(image));
        let run = env.run(&["verify", image, "--manifest", "m"]);
        run.assert_code(2);
        assert!(
            run.stderr.contains(&format!(
                "written for a target of 67108864 bytes; {image} has 41943040 bytes"
            )),
            "{}",
            run.stderr
        );
        assert_eq!(file_digest(&env.path(image)), before);
        common::record_refusal(
            env.dir.path(),
            &["verify", image, "--manifest", "m"],
            2,
            run.stderr.trim(),
        );
    }
}

#[test]
fn junit_and_prometheus_files_that_cannot_be_written_are_refused_before_anything_runs() {
    let env = written_env();
    let missing =
        |flag: &str, path: &str| format!("bad {flag} {path}: directory no/such/dir does not exist");
    for command in ["verify", "run"] {
        refuses(
            &env,
            &[
                command,
                "disk.img",
                "--manifest",
                "m",
                "--junit",
                "no/such/dir/junit.xml",
            ],
            2,
            &missing("--junit", "no/such/dir/junit.xml"),
        );
    }
    refuses(
        &env,
        &[
            "soak",
            "disk.img",
            "--manifest",
            "m",
            "--duration",
            "1s",
            "--prometheus",
            "no/such/dir/blockstamp.prom",
        ],
        2,
        &missing("--prometheus", "no/such/dir/blockstamp.prom"),
    );
    refuses(
        &env,
        &["write", "disk.img", "--manifest", "m", "--prometheus", "-"],
        2,
        "bad --prometheus -: --prometheus writes a file, not stdout; give a file path",
    );
    refuses(
        &env,
        &["verify", "disk.img", "--manifest", "m", "--junit", "."],
        2,
        "bad --junit .: it is a directory; give a file path",
    );
    refuses(
        &env,
        &[
            "report",
            "merge",
            "r.json",
            "--junit",
            "no/such/dir/fleet.xml",
        ],
        2,
        &missing("--junit", "no/such/dir/fleet.xml"),
    );
    refuses(
        &env,
        &["selftest", "--junit", "no/such/dir/selftest.xml"],
        2,
        &missing("--junit", "no/such/dir/selftest.xml"),
    );
    // A new run refused for its --prometheus path creates neither target
    // nor manifest.
    refuses(
        &env,
        &[
            "write",
            "new.img",
            "--manifest",
            "new.m",
            "--size",
            "1MiB",
            "--prometheus",
            "no/such/dir/blockstamp.prom",
        ],
        2,
        &missing("--prometheus", "no/such/dir/blockstamp.prom"),
    );
    assert!(!env.path("new.img").exists() && !env.path("new.m").exists());
    let mut left: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["disk.img", "m"]);
}

#[test]
fn bad_on_finding_flags_are_refused_before_anything_runs() {
    let env = written_env();
    let on = |command: &'static str, extra: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec![command, "disk.img", "--manifest", "m"];
        if command == "soak" {
            args.extend(["--duration", "1s"]);
        }
        args.extend_from_slice(extra);
        args
    };
    for command in ["verify", "run", "soak"] {
        refuses(
            &env,
            &on(command, &["--on-finding", ""]),
            2,
            "bad --on-finding: the command is empty; give a shell command",
        );
    }
    refuses(
        &env,
        &on("verify", &["--on-finding", "  "]),
        2,
        "bad --on-finding: the command is empty",
    );
    refuses(
        &env,
        &on(
            "verify",
            &["--on-finding", "true", "--on-finding-timeout", "0"],
        ),
        2,
        "bad --on-finding-timeout 0: give a time above zero, e.g. 5m",
    );
    refuses(
        &env,
        &on(
            "soak",
            &["--on-finding", "true", "--on-finding-timeout", "soon"],
        ),
        2,
        "--on-finding-timeout: ",
    );
    refuses(
        &env,
        &on("verify", &["--on-finding-each"]),
        2,
        "--on-finding-each needs --on-finding CMD",
    );
    refuses(
        &env,
        &on("run", &["--on-finding-timeout", "1m"]),
        2,
        "--on-finding-timeout needs --on-finding CMD",
    );
    // A new run refused for its --on-finding creates neither target nor
    // manifest.
    refuses(
        &env,
        &[
            "run",
            "new.img",
            "--manifest",
            "new.m",
            "--size",
            "1MiB",
            "--on-finding",
            "",
        ],
        2,
        "bad --on-finding",
    );
    assert!(!env.path("new.img").exists() && !env.path("new.m").exists());
}
