//! Discards and write-zeroes carried to each kind of target by the CLI, and
//! verified exactly: loop devices (the loop driver punches holes in its
//! backing file), nbdkit's memory and file plugins, and a server that
//! acknowledges write-zeroes it never does.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;
#[path = "common/lying_nbd.rs"]
mod lying_nbd;
#[path = "common/nbd_server.rs"]
mod nbd_server;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use blockstamp::manifest::{Access, BlockKind, BlockState, Manifest};
use blockstamp::stamp::{self, WriteStamp};
use common::{TestEnv, finding_set};
use loopdev::LoopDevice;
use lying_nbd::{Behaviour, LyingNbd};
use nbd_server::NbdServer;

const MIXED: [&str; 6] = [
    "--discard",
    "0.25",
    "--write-zeroes",
    "0.25",
    "--passes",
    "3",
];

/// Every block's state in the manifest at `path`.
fn states(path: &Path) -> Vec<BlockState> {
    let manifest = Manifest::open(path, Access::Read).expect("open manifest");
    (0..manifest.block_count())
        .map(|b| manifest.state(b))
        .collect()
}

/// The bytes the run's write of (`block`, `generation`) put on the target.
fn stamp_of(manifest: &Path, block: u64, generation: u32) -> Vec<u8> {
    let manifest = Manifest::open(manifest, Access::Read).expect("open manifest");
    let format = manifest.format();
    let mut bytes = vec![0u8; format.block_size as usize];
    stamp::build_write(
        &format,
        &WriteStamp {
            block,
            generation,
            write_seq: 1,
            write_time_s: 1,
        },
        &mut bytes,
    );
    bytes
}

/// The first `count` blocks in `kind` with data written before it.
fn blocks_in(states: &[BlockState], kind: BlockKind, count: usize) -> Vec<u64> {
    states
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind == kind && s.generation >= 2)
        .map(|(b, _)| b as u64)
        .take(count)
        .collect()
}

#[test]
fn a_loop_device_carries_discards_and_zeroings_and_verify_holds_it_to_them() {
    let Some(device) = LoopDevice::attach(16 << 20, &["--direct-io=on"]) else {
        return;
    };
    let env = TestEnv::new();
    let mut args = vec!["--json", "-"];
    args.extend_from_slice(&MIXED);
    let mut run_args = vec!["run", device.uri(), "--manifest", "m"];
    run_args.extend_from_slice(&args);
    let run = env.run(&run_args);
    run.assert_code(0);
    let report = run.report();
    assert_eq!(finding_set(&report), vec![]);
    // The kernel never says discards read zeros: the promise is "any".
    let manifest = Manifest::open(&env.path("m"), Access::Read).unwrap();
    assert_eq!(
        manifest.header().discard_reads,
        Some(blockstamp::storage::DiscardReads::Any)
    );
    drop(manifest);
    let states = states(&env.path("m"));
    let zeroed = blocks_in(&states, BlockKind::Zeroed, 3);
    let discarded = blocks_in(&states, BlockKind::Discarded, 3);
    assert_eq!(
        (zeroed.len(), discarded.len()),
        (3, 3),
        "the run zeroed and discarded"
    );

    // Damage through the device: a zeroed block gets its last stamp back
    // (a lost zeroing); a discarded block its last stamp (allowed: "any")
    // or an older one (a lost write).
    let dev = OpenOptions::new().write(true).open(device.uri()).unwrap();
    let block_size = 4096u64;
    let mut expected = Vec::new();
    for &block in &zeroed {
        let g = states[block as usize].generation;
        dev.write_all_at(&stamp_of(&env.path("m"), block, g), block * block_size)
            .unwrap();
        expected.push((block, "lost_zeroing".to_string()));
    }
    let g = states[discarded[0] as usize].generation;
    dev.write_all_at(
        &stamp_of(&env.path("m"), discarded[0], g),
        discarded[0] * block_size,
    )
    .unwrap();
    let g = states[discarded[1] as usize].generation;
    dev.write_all_at(
        &stamp_of(&env.path("m"), discarded[1], g - 1),
        discarded[1] * block_size,
    )
    .unwrap();
    expected.push((discarded[1], "lost_write".to_string()));
    dev.sync_all().unwrap();
    drop(dev);
    expected.sort();
    let run = env.verify(device.uri(), "m", &[]);
    run.assert_code(1);
    assert_eq!(finding_set(&run.report()), expected);

    // Held to "zeroes", every discarded block holding a stamp of its own is
    // a lost zeroing: the previous one and the older one alike.
    let run = env.verify(device.uri(), "m", &["--discard-reads", "zeroes"]);
    run.assert_code(1);
    let mut strict: Vec<(u64, String)> = zeroed
        .iter()
        .chain(&discarded[..2])
        .map(|&b| (b, "lost_zeroing".to_string()))
        .collect();
    strict.sort();
    let found = finding_set(&run.report());
    // Other discarded blocks the loop device left holding their previous
    // stamp (it punches holes, so none should) would show up here as well.
    assert_eq!(found, strict);
}

/// A run with discards and zeroings over an nbdkit export is clean.
fn nbdkit_round_trip(server: &NbdServer) {
    let env = TestEnv::new();
    let uri = server.uri("");
    let mut args = vec!["run", uri.as_str(), "--manifest", "m", "--json", "-"];
    args.extend_from_slice(&MIXED);
    let run = env.run(&args);
    run.assert_code(0);
    let report = run.report();
    assert_eq!(finding_set(&report), vec![]);
    let states = states(&env.path("m"));
    assert!(states.iter().any(|s| s.kind == BlockKind::Zeroed));
    assert!(states.iter().any(|s| s.kind == BlockKind::Discarded));
}

#[test]
fn nbdkit_memory_carries_discards_and_zeroings_exactly() {
    let Some(server) = NbdServer::nbdkit(&["memory", "size=16M"]) else {
        return;
    };
    nbdkit_round_trip(&server);
}

/// nbdkit over a file, and its verify after the writer is killed mid-run
/// with zeroings and discards in flight. nbdkit 1.32 itself can die when
/// a client vanishes with TRIM replies in flight (an assertion in its
/// connections.c, `sock >= 0`), so the verify goes to a new server on the
/// same file, as after any server restart.
#[test]
fn nbdkit_file_carries_discards_and_zeroings_exactly_across_a_killed_writer() {
    // The file plugin serves a file that exists: a sparse one.
    let scratch = tempfile::tempdir().unwrap();
    let disk = scratch.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let serve = || NbdServer::nbdkit(&["file", disk.to_str().unwrap()]);
    let Some(server) = serve() else {
        return;
    };
    nbdkit_round_trip(&server);

    let env = TestEnv::new();
    let uri = server.uri("");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_blockstamp"))
        .args(["write", uri.as_str(), "--manifest", "k"])
        .args([
            "--discard",
            "0.3",
            "--write-zeroes",
            "0.3",
            "--passes",
            "50",
        ])
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(env.path("writer.err")).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    drop(server);
    let server = serve().expect("nbdkit started once already");
    let run = env.verify(&server.uri(""), "k", &[]);
    run.assert_code(0);
    assert_eq!(finding_set(&run.report()), vec![]);
    // The map says what the writer completed before the kill.
    assert!(
        states(&env.path("k"))
            .iter()
            .any(|s| *s != BlockState::NEVER_WRITTEN),
        "the writer wrote before it was killed: {}",
        std::fs::read_to_string(env.path("writer.err")).unwrap_or_default()
    );
}

#[test]
fn a_server_that_drops_write_zeroes_inside_bursts_is_caught_exactly() {
    let server = LyingNbd::start_with(
        8 << 20,
        Behaviour {
            drop_every_nth_zeroing: Some(7),
            ..Behaviour::default()
        },
    );
    let env = TestEnv::new();
    let uri = server.uri();
    env.write(
        &uri,
        "m",
        &[
            "--write-zeroes",
            "0.3",
            "--discard",
            "0.1",
            "--passes",
            "3",
            "--sync",
            "burst",
        ],
    );
    assert!(
        !server.dropped_zeroings().is_empty(),
        "the server dropped zeroings"
    );
    let lost = server.lost_zeroings();
    assert!(!lost.is_empty(), "some dropped zeroings left old stamps");
    let run = env.verify(&uri, "m", &[]);
    run.assert_code(1);
    let expected: Vec<(u64, String)> = lost
        .iter()
        .map(|&block| (block, "lost_zeroing".to_string()))
        .collect();
    assert_eq!(finding_set(&run.report()), expected);
}
