//! Bad input gets one clear line on stderr and exit 2 (3 when the target
//! cannot be reached), never a panic, and never a byte written to the target.

mod common;

use common::{TestEnv, file_digest};

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
    let mut bytes = std::fs::read(env.path("m")).unwrap();
    for slot in [0usize, 32 * 1024] {
        let length = u32::from_le_bytes(bytes[slot + 16..slot + 20].try_into().unwrap()) as usize;
        let json = String::from_utf8(bytes[slot + 24..slot + 24 + length].to_vec()).unwrap();
        let json = json.replace("\"format_version\":1", "\"format_version\":9");
        assert_eq!(json.len(), length);
        bytes[slot + 24..slot + 24 + length].copy_from_slice(json.as_bytes());
        let crc =
            crc32c::crc32c_append(crc32c::crc32c(&bytes[slot + 8..slot + 20]), json.as_bytes());
        bytes[slot + 20..slot + 24].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(env.path("m"), &bytes).unwrap();
    refuses(
        &env,
        &["verify", "disk.img", "--manifest", "m"],
        2,
        "has format version 9",
    );
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
        "does not exist",
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
