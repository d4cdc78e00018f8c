//! Discard and write-zeroes over NBD (NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES)
//! through the target API: what each export offers, what the client puts
//! on the wire (checked on the in-test server, which logs every request),
//! and what real servers read back afterwards (qemu-nbd over raw and qcow2,
//! nbdkit's memory and file plugins, with and without the nozero filter).

// `zeroed_in` takes lists of zeroed byte ranges, often of one range.
#![allow(clippy::single_range_in_vec_init)]

mod common {
    pub mod need;
}
#[path = "common/lying_nbd.rs"]
mod lying_nbd;
#[path = "common/nbd_server.rs"]
mod nbd_server;

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use blockstamp::storage::nbd::{NbdTarget, proto};
use blockstamp::storage::{LossPolicy, OpenRequest, SpaceOps, Target, ZeroFlags};
use common::need::{Need, require};
use lying_nbd::{Behaviour, LyingNbd, SpaceRequest};
use nbd_server::NbdServer;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// The block the tests stamp and read back by.
const BLOCK: u64 = 4096;
/// qcow2's default cluster.
const CLUSTER: u64 = 64 * KIB;

fn for_write() -> OpenRequest {
    OpenRequest {
        write: true,
        ..OpenRequest::default()
    }
}

fn open(uri: &str) -> Box<dyn Target> {
    blockstamp::storage::open(uri, &for_write()).unwrap_or_else(|e| panic!("open {uri}: {e}"))
}

/// Every block holds its own index and a seed, never zeros, so a block
/// that reads back as another block's or an older seed's content is told
/// apart from its own.
fn stamp(target: &dyn Target, seed: u8, offset: u64, len: u64) {
    let mut data = vec![0u8; len as usize];
    for (index, block) in data.chunks_mut(BLOCK as usize).enumerate() {
        let number = (offset / BLOCK + index as u64).to_le_bytes();
        for (i, byte) in block.iter_mut().enumerate() {
            *byte = (seed ^ number[i % 8] ^ (i as u8)) | 1;
        }
    }
    target.write_at(&data, offset, false).unwrap();
}

fn stamped(seed: u8, block_number: u64) -> Vec<u8> {
    let number = block_number.to_le_bytes();
    (0..BLOCK as usize)
        .map(|i| (seed ^ number[i % 8] ^ (i as u8)) | 1)
        .collect()
}

/// What one block reads back as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reads {
    Zeros,
    /// The stamp it held before (seed given to `reads`).
    Previous,
    Other,
}

/// What each block of `len` bytes at `offset` reads back as.
fn reads(target: &dyn Target, previous_seed: u8, offset: u64, len: u64) -> Vec<Reads> {
    let mut data = vec![0u8; len as usize];
    target.read_at(&mut data, offset).unwrap();
    data.chunks(BLOCK as usize)
        .enumerate()
        .map(|(index, block)| {
            if block.iter().all(|&b| b == 0) {
                Reads::Zeros
            } else if block == stamped(previous_seed, offset / BLOCK + index as u64) {
                Reads::Previous
            } else {
                Reads::Other
            }
        })
        .collect()
}

fn all(len: u64, reads: Reads) -> Vec<Reads> {
    vec![reads; (len / BLOCK) as usize]
}

/// The blocks of `len` bytes from offset 0: those in the `zeroed` byte
/// ranges read zeros, the others their previous stamp.
fn zeroed_in(len: u64, zeroed: &[std::ops::Range<u64>]) -> Vec<Reads> {
    (0..len / BLOCK)
        .map(|block| {
            if zeroed.iter().any(|range| range.contains(&(block * BLOCK))) {
                Reads::Zeros
            } else {
                Reads::Previous
            }
        })
        .collect()
}

fn no_hole() -> ZeroFlags {
    ZeroFlags::default()
}

fn unmap() -> ZeroFlags {
    ZeroFlags {
        unmap: true,
        fast: false,
    }
}

fn fast() -> ZeroFlags {
    ZeroFlags {
        unmap: false,
        fast: true,
    }
}

/// The export's transmission flags, for the facts a test records.
fn flag_names(uri: &str) -> String {
    let target = NbdTarget::open(uri, &for_write()).unwrap();
    let flags = target.transmission_flags();
    [
        (proto::FLAG_SEND_TRIM, "SEND_TRIM"),
        (proto::FLAG_SEND_WRITE_ZEROES, "SEND_WRITE_ZEROES"),
        (proto::FLAG_SEND_FAST_ZERO, "SEND_FAST_ZERO"),
    ]
    .iter()
    .filter(|(flag, _)| flags & flag != 0)
    .map(|(_, name)| *name)
    .collect::<Vec<_>>()
    .join("|")
}

fn assert_unsupported(result: io::Result<()>, what: &str) {
    match result {
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            assert!(e.to_string().contains(what), "{e}");
        }
        other => panic!("expected Unsupported for {what}, got {other:?}"),
    }
}

// ---- the wire, on the in-test server ----

#[test]
fn space_ops_report_what_the_export_offers_and_promise_nothing_after_trim() {
    let server = LyingNbd::start(MIB);
    let target = open(&server.uri());
    assert_eq!(
        target.space_ops(),
        SpaceOps {
            discard: true,
            write_zeroes: true,
            fast_zero: true,
            discard_granularity: 0,
            max_bytes: 1 << 30,
            discard_reads: None,
        }
    );
}

#[test]
fn write_zeroes_asks_for_no_hole_unless_it_may_unmap_and_for_fast_zero_when_asked() {
    let server = LyingNbd::start(MIB);
    let target = open(&server.uri());
    target.write_zeroes(0, BLOCK, no_hole()).unwrap();
    target.write_zeroes(BLOCK, BLOCK, unmap()).unwrap();
    target.write_zeroes(2 * BLOCK, 2 * BLOCK, fast()).unwrap();
    target.discard(8 * BLOCK, 4 * BLOCK).unwrap();
    let request = |command, flags, offset, length| SpaceRequest {
        command,
        flags,
        offset,
        length,
        error: 0,
    };
    assert_eq!(
        server.space_requests(),
        vec![
            request(
                lying_nbd::CMD_WRITE_ZEROES,
                lying_nbd::CMD_FLAG_NO_HOLE,
                0,
                BLOCK
            ),
            request(lying_nbd::CMD_WRITE_ZEROES, 0, BLOCK, BLOCK),
            request(
                lying_nbd::CMD_WRITE_ZEROES,
                lying_nbd::CMD_FLAG_NO_HOLE | lying_nbd::CMD_FLAG_FAST_ZERO,
                2 * BLOCK,
                2 * BLOCK
            ),
            request(lying_nbd::CMD_TRIM, 0, 8 * BLOCK, 4 * BLOCK),
        ]
    );
}

#[test]
fn trim_and_write_zeroes_on_the_in_test_server_read_zeros() {
    let server = LyingNbd::start(MIB);
    let target = open(&server.uri());
    stamp(&*target, 7, 0, 16 * BLOCK);
    target.discard(0, 4 * BLOCK).unwrap();
    target.write_zeroes(8 * BLOCK, 4 * BLOCK, unmap()).unwrap();
    assert_eq!(
        reads(&*target, 7, 0, 16 * BLOCK),
        zeroed_in(16 * BLOCK, &[0..4 * BLOCK, 8 * BLOCK..12 * BLOCK])
    );
}

#[test]
fn a_fast_zero_refused_with_enotsup_is_zeroed_again_without_the_flag() {
    let server = LyingNbd::start_with(
        MIB,
        Behaviour {
            refuse_fast_zero: true,
            ..Behaviour::default()
        },
    );
    let target = open(&server.uri());
    stamp(&*target, 3, 0, 4 * BLOCK);
    target.write_zeroes(0, 4 * BLOCK, fast()).unwrap();
    assert_eq!(
        reads(&*target, 3, 0, 4 * BLOCK),
        all(4 * BLOCK, Reads::Zeros)
    );
    let flags_and_errors: Vec<(u16, u32)> = server
        .space_requests()
        .iter()
        .map(|request| (request.flags, request.error))
        .collect();
    assert_eq!(
        flags_and_errors,
        vec![
            (
                lying_nbd::CMD_FLAG_NO_HOLE | lying_nbd::CMD_FLAG_FAST_ZERO,
                lying_nbd::ENOTSUP
            ),
            (lying_nbd::CMD_FLAG_NO_HOLE, 0),
        ]
    );
}

#[test]
fn a_request_too_long_for_the_server_is_sent_again_in_pieces_of_its_maximum_payload() {
    let server = LyingNbd::start_with(
        2 * MIB,
        Behaviour {
            max_payload: Some(256 * KIB as u32),
            ..Behaviour::default()
        },
    );
    let target = open(&server.uri());
    stamp(&*target, 5, 0, 2 * MIB);
    target.write_zeroes(0, MIB, unmap()).unwrap();
    target.discard(MIB, MIB).unwrap();
    assert_eq!(reads(&*target, 5, 0, 2 * MIB), all(2 * MIB, Reads::Zeros));
    let seen: Vec<(u16, u64, u64, u32)> = server
        .space_requests()
        .iter()
        .map(|request| {
            (
                request.command,
                request.offset,
                request.length,
                request.error,
            )
        })
        .collect();
    let zero = lying_nbd::CMD_WRITE_ZEROES;
    let trim = lying_nbd::CMD_TRIM;
    let quarter = 256 * KIB;
    let mut expected = vec![(zero, 0, MIB, lying_nbd::EOVERFLOW)];
    expected.extend((0..4).map(|i| (zero, i * quarter, quarter, 0)));
    expected.push((trim, MIB, MIB, lying_nbd::EOVERFLOW));
    expected.extend((0..4).map(|i| (trim, MIB + i * quarter, quarter, 0)));
    assert_eq!(seen, expected);
}

#[test]
fn an_export_without_trim_or_write_zeroes_refuses_them_without_sending_anything() {
    let server = LyingNbd::start_with(
        MIB,
        Behaviour {
            hide_space_ops: true,
            ..Behaviour::default()
        },
    );
    let target = open(&server.uri());
    assert_eq!(
        target.space_ops(),
        SpaceOps {
            max_bytes: 1 << 30,
            ..SpaceOps::default()
        }
    );
    assert_unsupported(target.discard(0, BLOCK), "NBD_CMD_TRIM");
    assert_unsupported(
        target.write_zeroes(0, BLOCK, fast()),
        "NBD_CMD_WRITE_ZEROES",
    );
    assert_eq!(server.space_requests(), vec![]);
}

#[test]
fn space_ops_outside_the_export_or_misaligned_are_refused_before_sending() {
    let server = LyingNbd::start(MIB);
    let target = open(&server.uri());
    for result in [
        target.discard(MIB - BLOCK, 2 * BLOCK),
        target.write_zeroes(u64::MAX - 511, 512, no_hole()),
    ] {
        let e = result.expect_err("past the end must fail");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }
    // Zero bytes: nothing to do, nothing sent.
    target.discard(0, 0).unwrap();
    target.write_zeroes(0, 0, no_hole()).unwrap();
    assert_eq!(server.space_requests(), vec![]);
}

#[test]
fn a_target_opened_for_reading_offers_no_space_ops_and_sends_none() {
    let server = LyingNbd::start(MIB);
    let target = blockstamp::storage::open(&server.uri(), &OpenRequest::default()).unwrap();
    assert_eq!(
        target.space_ops(),
        SpaceOps {
            max_bytes: 1 << 30,
            ..SpaceOps::default()
        }
    );
    for result in [
        target.discard(0, BLOCK),
        target.write_zeroes(0, BLOCK, no_hole()),
    ] {
        let e = result.expect_err("a read-only target must refuse");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    }
    assert_eq!(server.space_requests(), vec![]);
}

#[test]
fn a_reconnecting_nbd_target_carries_space_ops_through() {
    let server = LyingNbd::start(MIB);
    let policy = LossPolicy {
        reconnect_timeout: Some(std::time::Duration::from_secs(5)),
        ..LossPolicy::default()
    };
    let target = blockstamp::storage::open_with(&server.uri(), &for_write(), &policy).unwrap();
    assert!(target.space_ops().discard && target.space_ops().write_zeroes);
    stamp(&*target, 8, 0, 8 * BLOCK);
    target.discard(0, 2 * BLOCK).unwrap();
    target.write_zeroes(4 * BLOCK, 2 * BLOCK, fast()).unwrap();
    assert_eq!(
        reads(&*target, 8, 0, 8 * BLOCK),
        zeroed_in(8 * BLOCK, &[0..2 * BLOCK, 4 * BLOCK..6 * BLOCK])
    );
    assert_eq!(server.space_requests().len(), 2);
}

// ---- the in-test server that drops write-zeroes ----

#[test]
fn dropped_zeroings_read_back_old_data_exactly_where_the_server_says() {
    let server = LyingNbd::start_with(
        MIB,
        Behaviour {
            drop_every_nth_zeroing: Some(3),
            ..Behaviour::default()
        },
    );
    let target = open(&server.uri());
    stamp(&*target, 9, 0, 24 * BLOCK);
    target.flush().unwrap();
    // Twelve zeroings of two blocks each, one after another: the 3rd, 6th,
    // 9th and 12th are dropped.
    for index in 0..12 {
        target
            .write_zeroes(2 * index * BLOCK, 2 * BLOCK, no_hole())
            .unwrap();
    }
    target.flush().unwrap();
    let dropped: Vec<u64> = [2, 5, 8, 11]
        .iter()
        .map(|index| 2 * index * BLOCK)
        .collect();
    assert_eq!(
        server.dropped_zeroings(),
        dropped
            .iter()
            .map(|&offset| offset..offset + 2 * BLOCK)
            .collect::<Vec<_>>()
    );
    let lost: Vec<u64> = dropped
        .iter()
        .flat_map(|&offset| [offset / BLOCK, offset / BLOCK + 1])
        .collect();
    assert_eq!(server.lost_zeroings().into_iter().collect::<Vec<_>>(), lost);
    let read = reads(&*target, 9, 0, 24 * BLOCK);
    for (block, reads) in read.iter().enumerate() {
        let expected = if lost.contains(&(block as u64)) {
            Reads::Previous
        } else {
            Reads::Zeros
        };
        assert_eq!(*reads, expected, "block {block}");
    }
    // A write over a dropped zeroing settles that block: no longer lost.
    stamp(&*target, 1, dropped[0], BLOCK);
    assert_eq!(
        server.lost_zeroings().into_iter().collect::<Vec<_>>(),
        lost[1..].to_vec()
    );
}

// ---- qemu-nbd ----

#[test]
fn qemu_nbd_offers_trim_write_zeroes_and_fast_zero_on_a_writable_export() {
    let Some(server) = NbdServer::qemu_nbd_raw(4 * MIB, &[]) else {
        return;
    };
    let uri = server.uri("");
    let names = flag_names(&uri);
    eprintln!("qemu-nbd raw writable offers {names}");
    assert_eq!(names, "SEND_TRIM|SEND_WRITE_ZEROES|SEND_FAST_ZERO");
    let ops = open(&uri).space_ops();
    assert!(ops.discard && ops.write_zeroes && ops.fast_zero, "{ops:?}");
    assert_eq!(ops.discard_reads, None);
}

#[test]
fn qemu_nbd_read_only_export_offers_no_space_ops() {
    let Some(server) = NbdServer::qemu_nbd_raw(4 * MIB, &["--read-only"]) else {
        return;
    };
    let uri = server.uri("");
    let target = NbdTarget::open(&uri, &OpenRequest::default()).unwrap();
    let flags = target.transmission_flags();
    eprintln!("qemu-nbd --read-only transmission flags {flags:#06x}");
    assert_ne!(flags & proto::FLAG_READ_ONLY, 0);
    let space = proto::FLAG_SEND_TRIM | proto::FLAG_SEND_WRITE_ZEROES | proto::FLAG_SEND_FAST_ZERO;
    assert_eq!(flags & space, 0);
    let ops = target.space_ops();
    assert!(
        !ops.discard && !ops.write_zeroes && !ops.fast_zero,
        "{ops:?}"
    );
}

#[test]
fn qemu_nbd_raw_write_zeroes_read_zeros_and_trim_under_discard_ignore_keeps_the_data() {
    let Some(server) = NbdServer::qemu_nbd_raw(4 * MIB, &[]) else {
        return;
    };
    let target = open(&server.uri(""));
    stamp(&*target, 11, 0, 32 * BLOCK);
    target.write_zeroes(0, 8 * BLOCK, no_hole()).unwrap();
    target.write_zeroes(8 * BLOCK, 8 * BLOCK, unmap()).unwrap();
    target.write_zeroes(16 * BLOCK, 8 * BLOCK, fast()).unwrap();
    // qemu-nbd's default --discard=ignore acknowledges TRIM and does nothing.
    target.discard(24 * BLOCK, 8 * BLOCK).unwrap();
    assert_eq!(
        reads(&*target, 11, 0, 32 * BLOCK),
        zeroed_in(32 * BLOCK, &[0..24 * BLOCK])
    );
}

#[test]
fn qemu_nbd_raw_trim_with_discard_unmap_reads_zeros() {
    let Some(server) = NbdServer::qemu_nbd_raw(4 * MIB, &["--discard=unmap"]) else {
        return;
    };
    let target = open(&server.uri(""));
    stamp(&*target, 12, 0, 16 * BLOCK);
    target.discard(0, 8 * BLOCK).unwrap();
    assert_eq!(
        reads(&*target, 12, 0, 16 * BLOCK),
        zeroed_in(16 * BLOCK, &[0..8 * BLOCK])
    );
}

#[test]
fn qemu_nbd_qcow2_trim_of_whole_clusters_reads_zeros_and_smaller_trims_are_ignored() {
    let Some(server) = NbdServer::qemu_nbd_qcow2(4 * MIB, &["--discard=unmap"]) else {
        return;
    };
    let target = open(&server.uri(""));
    stamp(&*target, 13, 0, 4 * CLUSTER);
    // Two whole clusters, then one 4 KiB block inside the fourth.
    target.discard(0, 2 * CLUSTER).unwrap();
    target.discard(3 * CLUSTER, BLOCK).unwrap();
    assert_eq!(
        reads(&*target, 13, 0, 4 * CLUSTER),
        zeroed_in(4 * CLUSTER, &[0..2 * CLUSTER])
    );
}

#[test]
fn qemu_nbd_qcow2_write_zeroes_reads_zeros_with_and_without_a_hole() {
    let Some(server) = NbdServer::qemu_nbd_qcow2(4 * MIB, &["--discard=unmap"]) else {
        return;
    };
    let target = open(&server.uri(""));
    stamp(&*target, 14, 0, 4 * CLUSTER);
    // Whole clusters and single blocks, each way.
    target.write_zeroes(0, CLUSTER, no_hole()).unwrap();
    target.write_zeroes(CLUSTER, CLUSTER, unmap()).unwrap();
    target.write_zeroes(2 * CLUSTER, BLOCK, no_hole()).unwrap();
    target
        .write_zeroes(
            3 * CLUSTER,
            BLOCK,
            ZeroFlags {
                unmap: true,
                fast: true,
            },
        )
        .unwrap();
    let zeroed = [
        0..2 * CLUSTER,
        2 * CLUSTER..2 * CLUSTER + BLOCK,
        3 * CLUSTER..3 * CLUSTER + BLOCK,
    ];
    assert_eq!(
        reads(&*target, 14, 0, 4 * CLUSTER),
        zeroed_in(4 * CLUSTER, &zeroed)
    );
}

#[test]
fn qemu_nbd_qcow2_refuses_a_fast_zero_inside_a_cluster_and_the_zeroing_is_sent_again() {
    let Some(server) = NbdServer::qemu_nbd_qcow2(
        4 * MIB,
        &["--discard=unmap", "--trace=nbd_co_send_simple_reply"],
    ) else {
        return;
    };
    let target = open(&server.uri(""));
    stamp(&*target, 15, 0, 2 * CLUSTER);
    // A whole cluster zeroes fast; one block inside a cluster does not.
    target.write_zeroes(0, CLUSTER, fast()).unwrap();
    target.write_zeroes(CLUSTER, BLOCK, fast()).unwrap();
    assert_eq!(
        reads(&*target, 15, 0, 2 * CLUSTER),
        zeroed_in(2 * CLUSTER, &[0..CLUSTER + BLOCK])
    );
    drop(target);
    let log = server.log();
    let refusals = log
        .lines()
        .filter(|line| line.contains("(ENOTSUP)"))
        .count();
    assert_eq!(refusals, 1, "one fast zero refused: {log}");
}

/// A qcow2 base of four clusters stamped with `seed`, and a new overlay on
/// it (`compat`: 1.1 is qcow2 v3, 0.10 is v2), in `dir`. Returns the overlay.
fn base_and_overlay(dir: &Path, seed: u8, compat: &str) -> Option<PathBuf> {
    if !require(Need::QemuImg) {
        return None;
    }
    let base = dir.join("base.qcow2");
    let overlay = dir.join("overlay.qcow2");
    qemu_img(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("4M"),
    );
    {
        let server = NbdServer::qemu_nbd_image(&base, "qcow2", &[])?;
        let target = open(&server.uri(""));
        stamp(&*target, seed, 0, 4 * CLUSTER);
        target.flush().unwrap();
    }
    qemu_img(
        Command::new("qemu-img")
            .args([
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &format!("compat={compat}"),
                "-b",
            ])
            .arg(&base)
            .args(["-F", "qcow2"])
            .arg(&overlay),
    );
    Some(overlay)
}

fn qemu_img(command: &mut Command) {
    let status = command.status().expect("run qemu-img");
    assert!(status.success(), "{command:?}: {status}");
}

#[test]
fn qemu_nbd_qcow2_v3_overlay_trim_of_a_cluster_reads_zeros_not_the_backing_data() {
    let dir = tempfile::tempdir().unwrap();
    let Some(overlay) = base_and_overlay(dir.path(), 31, "1.1") else {
        return;
    };
    let Some(server) = NbdServer::qemu_nbd_image(&overlay, "qcow2", &["--discard=unmap"]) else {
        return;
    };
    let target = open(&server.uri(""));
    // Cluster 0 is held by the base only; cluster 2 gets the overlay's own copy.
    stamp(&*target, 31, 2 * CLUSTER, CLUSTER);
    target.discard(0, CLUSTER).unwrap();
    target.write_zeroes(CLUSTER, BLOCK, no_hole()).unwrap();
    target.discard(2 * CLUSTER, CLUSTER).unwrap();
    target.discard(3 * CLUSTER, BLOCK).unwrap();
    assert_eq!(
        reads(&*target, 31, 0, 4 * CLUSTER),
        zeroed_in(4 * CLUSTER, &[0..CLUSTER + BLOCK, 2 * CLUSTER..3 * CLUSTER])
    );
}

#[test]
fn qemu_nbd_qcow2_v2_overlay_ignores_trim_but_zeroes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(overlay) = base_and_overlay(dir.path(), 33, "0.10") else {
        return;
    };
    let Some(server) = NbdServer::qemu_nbd_image(&overlay, "qcow2", &["--discard=unmap"]) else {
        return;
    };
    let target = open(&server.uri(""));
    stamp(&*target, 33, 2 * CLUSTER, CLUSTER);
    target.discard(0, CLUSTER).unwrap();
    target.write_zeroes(CLUSTER, BLOCK, no_hole()).unwrap();
    target.discard(2 * CLUSTER, CLUSTER).unwrap();
    target.write_zeroes(3 * CLUSTER, CLUSTER, unmap()).unwrap();
    assert_eq!(
        reads(&*target, 33, 0, 4 * CLUSTER),
        zeroed_in(
            4 * CLUSTER,
            &[CLUSTER..CLUSTER + BLOCK, 3 * CLUSTER..4 * CLUSTER]
        )
    );
}

// ---- nbdkit ----

#[test]
fn nbdkit_memory_offers_trim_and_zeroes_and_trim_reads_zeros() {
    let Some(server) = NbdServer::nbdkit(&["memory", "size=4M"]) else {
        return;
    };
    let uri = server.uri("");
    let names = flag_names(&uri);
    eprintln!("nbdkit memory offers {names}");
    assert_eq!(names, "SEND_TRIM|SEND_WRITE_ZEROES|SEND_FAST_ZERO");
    let target = open(&uri);
    stamp(&*target, 21, 0, 32 * BLOCK);
    target.discard(0, 8 * BLOCK).unwrap();
    target
        .write_zeroes(8 * BLOCK, 8 * BLOCK, no_hole())
        .unwrap();
    target.write_zeroes(16 * BLOCK, 8 * BLOCK, unmap()).unwrap();
    assert_eq!(
        reads(&*target, 21, 0, 32 * BLOCK),
        zeroed_in(32 * BLOCK, &[0..24 * BLOCK])
    );
}

#[test]
fn nbdkit_file_trim_and_write_zeroes_read_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    let image_arg = format!("file={}", image.display());
    let Some(server) = NbdServer::nbdkit(&["file", &image_arg]) else {
        return;
    };
    let uri = server.uri("");
    eprintln!("nbdkit file offers {}", flag_names(&uri));
    let target = open(&uri);
    assert!(target.space_ops().discard && target.space_ops().write_zeroes);
    stamp(&*target, 22, 0, 32 * BLOCK);
    target.discard(0, 8 * BLOCK).unwrap();
    target
        .write_zeroes(8 * BLOCK, 8 * BLOCK, no_hole())
        .unwrap();
    target.write_zeroes(16 * BLOCK, 8 * BLOCK, unmap()).unwrap();
    assert_eq!(
        reads(&*target, 22, 0, 32 * BLOCK),
        zeroed_in(32 * BLOCK, &[0..24 * BLOCK])
    );
}

#[test]
fn nbdkit_emulated_zeroes_that_refuse_fast_zero_still_zero() {
    let Some(server) = NbdServer::nbdkit(&[
        "--filter=nozero",
        "memory",
        "size=4M",
        "zeromode=emulate",
        "fastzeromode=slow",
    ]) else {
        return;
    };
    let uri = server.uri("");
    eprintln!("nbdkit nozero zeromode=emulate offers {}", flag_names(&uri));
    let target = open(&uri);
    assert!(target.space_ops().fast_zero, "{:?}", target.space_ops());
    stamp(&*target, 23, 0, 16 * BLOCK);
    target.write_zeroes(0, 8 * BLOCK, fast()).unwrap();
    target
        .write_zeroes(
            8 * BLOCK,
            4 * BLOCK,
            ZeroFlags {
                unmap: true,
                fast: true,
            },
        )
        .unwrap();
    assert_eq!(
        reads(&*target, 23, 0, 16 * BLOCK),
        zeroed_in(16 * BLOCK, &[0..12 * BLOCK])
    );
}

#[test]
fn nbdkit_refusing_fast_zero_gets_the_zeroing_again_without_the_flag() {
    // The log filter first: it sees the requests as the client sent them,
    // before the nozero filter turns the fast ones down.
    let Some(server) = NbdServer::nbdkit(&[
        "--filter=log",
        "--filter=nozero",
        "memory",
        "size=4M",
        "zeromode=plugin",
        "fastzeromode=slow",
        "logfile={dir}/requests.log",
    ]) else {
        return;
    };
    let target = open(&server.uri(""));
    stamp(&*target, 25, 0, 8 * BLOCK);
    target.write_zeroes(0, 8 * BLOCK, fast()).unwrap();
    assert_eq!(
        reads(&*target, 25, 0, 8 * BLOCK),
        all(8 * BLOCK, Reads::Zeros)
    );
    drop(target);
    let log = std::fs::read_to_string(server.dir().join("requests.log")).unwrap();
    let zeroes: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(" Zero ") || line.contains("...Zero "))
        .map(|line| {
            line.split_once("connection=")
                .map_or(line, |(_, rest)| rest)
        })
        .collect();
    eprintln!("{}", zeroes.join("\n"));
    assert_eq!(
        zeroes.len(),
        4,
        "a refused fast zero, then a plain one: {log}"
    );
    assert!(
        zeroes[0].contains("fast=1") && zeroes[0].contains("trim=0"),
        "{log}"
    );
    assert!(zeroes[1].contains("error=ENOTSUP"), "{log}");
    assert!(
        zeroes[2].contains("fast=0") && zeroes[2].contains("trim=0"),
        "{log}"
    );
    assert!(zeroes[3].contains("return=0"), "{log}");
}

#[test]
fn nbdkit_without_zero_support_refuses_write_zeroes_as_unsupported() {
    let Some(server) =
        NbdServer::nbdkit(&["--filter=nozero", "memory", "size=4M", "zeromode=none"])
    else {
        return;
    };
    let uri = server.uri("");
    let target = open(&uri);
    let ops = target.space_ops();
    assert!(
        ops.discard && !ops.write_zeroes && !ops.fast_zero,
        "{ops:?}"
    );
    stamp(&*target, 24, 0, 4 * BLOCK);
    // Refused here: a request sent anyway would come back as nbdkit's
    // EINVAL, not as Unsupported.
    assert_unsupported(
        target.write_zeroes(0, 4 * BLOCK, no_hole()),
        "NBD_CMD_WRITE_ZEROES",
    );
    assert_eq!(
        reads(&*target, 24, 0, 4 * BLOCK),
        all(4 * BLOCK, Reads::Previous)
    );
}
