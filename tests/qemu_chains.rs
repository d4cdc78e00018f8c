//! Snapshot formats through qemu-nbd, with the real binary.
//!
//! - The "validating a snapshot format" workflow of docs/WORKFLOWS.md, end
//!   to end on qcow2 and vmdk chains: base → checkpoint → overlay → bursty
//!   write → verify the overlay and the base → commit → verify.
//! - Damaged qcow2 metadata (swapped and cleared L2 entries in an overlay)
//!   reported as exactly the findings it must cause.
//! - The queue depth a bursty write keeps at the servers.
//! - Every `sh` block of docs/WORKFLOWS.md run as written, the power-cut
//!   lab (qcow2 on a volatile nbdkit cache, cut again and again under a
//!   soak) and the firmware-update stand-in included.
//!
//! Needs qemu-img and qemu-nbd (and nbdkit for the depth test and the
//! workflows): each test skips with a message where they are missing, and
//! fails under CI=true.

mod common;
#[path = "common/nbd_server.rs"]
mod nbd_server;
#[path = "common/qcow2.rs"]
mod qcow2;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use common::need::{Need, require};
use common::{TestEnv, finding, finding_set};
use nbd_server::{NbdServer, free_port};
use qcow2::{Qcow2Metadata, have_qemu, qemu_img};
use serde_json::Value;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// qcow2's default cluster size and vmdk's default grain size.
const CLUSTER_BYTES: u64 = 64 * KIB;

/// An image format qemu can stack into a backing chain.
#[derive(Clone, Copy)]
struct Format {
    name: &'static str,
    /// `qemu-img create -o` options, for the base and the overlay.
    create_options: Option<&'static str>,
    /// Whether `qemu-img commit` leaves the overlay empty and readable.
    /// qcow2 empties it. vmdk cannot (no make_empty): the overlay keeps its
    /// grains, and since the commit changed the base's CID, qemu refuses
    /// every read that would fall through to the base (EINVAL).
    commit_empties_overlay: bool,
}

const QCOW2: Format = Format {
    name: "qcow2",
    create_options: None,
    commit_empties_overlay: true,
};

const VMDK: Format = Format {
    name: "vmdk",
    create_options: Some("subformat=monolithicSparse"),
    commit_empties_overlay: false,
};

fn create_base(env: &TestEnv, format: Format, image: &str, size_bytes: u64) {
    let size = size_bytes.to_string();
    let mut args = vec!["create", "-q", "-f", format.name];
    if let Some(options) = format.create_options {
        args.extend(["-o", options]);
    }
    args.extend([image, &size]);
    qemu_img(env, &args);
}

/// `qemu-img create -f FMT -b BASE -F FMT OVERLAY`: writes go to the
/// overlay, unwritten clusters read through to the base.
fn create_overlay(env: &TestEnv, format: Format, base: &str, overlay: &str) {
    let mut args = vec!["create", "-q", "-f", format.name];
    if let Some(options) = format.create_options {
        args.extend(["-o", options]);
    }
    args.extend(["-b", base, "-F", format.name, overlay]);
    qemu_img(env, &args);
}

/// qemu-nbd serving `image` of the scratch dir.
fn serve(env: &TestEnv, format: Format, image: &str, args: &[&str]) -> NbdServer {
    NbdServer::qemu_nbd_image(&env.path(image), format.name, args)
        .expect("have_qemu() checked that qemu-nbd is installed")
}

/// `verify --json -`, asserting exit 0 and a clean report in which every
/// block was checked (an NBD export has no holes to skip) and found ok.
fn verify_clean(env: &TestEnv, uri: &str, manifest: &str, extra: &[&str]) -> Value {
    let run = env.verify(uri, manifest, extra);
    run.assert_code(0);
    let report = run.report();
    assert_eq!(report["clean"], true, "{report:#}");
    assert_eq!(report["findings"].as_array().map(Vec::len), Some(0));
    let blocks = &report["blocks"];
    assert_eq!(blocks["checked"], blocks["total"], "{blocks}");
    assert_eq!(blocks["ok"], blocks["checked"], "{blocks}");
    report
}

/// `verify --json -`, asserting exit 1 (integrity findings); the report.
fn verify_findings(env: &TestEnv, uri: &str, manifest: &str, extra: &[&str]) -> Value {
    let run = env.verify(uri, manifest, extra);
    run.assert_code(1);
    let report = run.report();
    assert_eq!(report["clean"], false, "{report:#}");
    assert_eq!(report["findings_truncated"], false);
    report
}

/// Blocks of the findings of `class`, with (expected, found) generations.
fn generations_of(report: &Value, class: &str) -> Vec<(u64, u64, u64)> {
    let mut found: Vec<(u64, u64, u64)> = report["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .filter(|f| f["class"] == class)
        .map(|f| {
            (
                f["block"].as_u64().unwrap(),
                f["expected_generation"].as_u64().unwrap(),
                f["found_generation"].as_u64().unwrap(),
            )
        })
        .collect();
    found.sort();
    found
}

/// Blocks of `block_size` bytes whose data the overlay does not hold
/// itself (qemu-img map: depth ≥ 1, or not present), i.e. reads of them
/// fall through to the base.
fn blocks_from_backing(env: &TestEnv, format: Format, overlay: &str, block_size: u64) -> Vec<u64> {
    let map = qemu_img(env, &["map", "--output=json", "-f", format.name, overlay]);
    let extents: Value = serde_json::from_str(&map).expect("qemu-img map prints JSON");
    let mut blocks = Vec::new();
    for extent in extents.as_array().expect("map is an array") {
        let in_overlay = extent["depth"] == 0 && extent["present"] == true;
        if in_overlay {
            continue;
        }
        let start = extent["start"].as_u64().unwrap();
        let length = extent["length"].as_u64().unwrap();
        assert!(
            start % block_size == 0 && length % block_size == 0,
            "extent {extent} is not in whole {block_size}-byte blocks"
        );
        blocks.extend(start / block_size..(start + length) / block_size);
    }
    blocks
}

/// The "validating a snapshot format" workflow (docs/WORKFLOWS.md), each
/// verify asserted clean, plus the checks that make "clean" mean something:
/// the overlay's writes really are in the overlay and not in the base.
fn snapshot_chain_stays_clean(format: Format, block_size: u64, overlay_coverage: &str) {
    if !have_qemu() {
        return;
    }
    let env = TestEnv::new();
    let base = format!("base.{}", format.name);
    let overlay = format!("overlay.{}", format.name);
    let manifest = "chain.manifest";
    let size_bytes = 8 * MIB;
    let total_blocks = size_bytes / block_size;
    let block_size_flag = block_size.to_string();

    // 1. The base, written in full through qemu-nbd, then remembered.
    create_base(&env, format, &base, size_bytes);
    let mut server = serve(&env, format, &base, &[]);
    env.write(
        &server.uri(""),
        manifest,
        &["--block-size", &block_size_flag, "--seed", "1"],
    );
    server.stop();
    env.run(&["checkpoint", "--manifest", manifest, "base"])
        .assert_code(0);

    // 2. An overlay on it, and a bursty write of part of the blocks through it.
    create_overlay(&env, format, &base, &overlay);
    let mut server = serve(&env, format, &overlay, &[]);
    env.write(
        &server.uri(""),
        manifest,
        &[
            "--coverage",
            overlay_coverage,
            "--seed",
            "2",
            "--queue-depth",
            "32",
            "--burst",
            "32",
            "--burst-gap",
            "1ms",
        ],
    );
    // 3. The overlay holds the latest state.
    let report = verify_clean(&env, &server.uri(""), manifest, &[]);
    assert_eq!(report["blocks"]["total"], total_blocks);
    assert_eq!(report["checkpoint"], Value::Null);
    // Against the base checkpoint the overlay is newer exactly where written.
    let newer = verify_findings(&env, &server.uri(""), manifest, &["--at", "base"]);
    server.stop();
    let rewritten = generations_of(&newer, "newer_generation");
    assert_eq!(
        finding_set(&newer).len(),
        rewritten.len(),
        "only newer_generation findings: {newer:#}"
    );
    assert!(
        !rewritten.is_empty() && (rewritten.len() as u64) < total_blocks,
        "the overlay write covered {} of {total_blocks} blocks; the test needs some, not all",
        rewritten.len()
    );
    assert!(
        rewritten
            .iter()
            .all(|&(_, expected, found)| (expected, found) == (1, 2))
    );
    // Some clusters stayed in the base: reads of those went through the
    // chain. qemu's map and blockstamp's verify agree on which.
    let untouched = blocks_from_backing(&env, format, &overlay, block_size);
    assert!(
        !untouched.is_empty() && (untouched.len() as u64) < total_blocks,
        "{} of {total_blocks} blocks read through to the base; the test needs some, not all",
        untouched.len()
    );
    let rewritten_blocks: HashSet<u64> = rewritten.iter().map(|&(block, _, _)| block).collect();
    assert!(
        untouched
            .iter()
            .all(|block| !rewritten_blocks.contains(block))
    );
    if block_size == CLUSTER_BYTES {
        // One block per cluster: a cluster is in the overlay iff its block was rewritten.
        assert_eq!(
            untouched.len() + rewritten_blocks.len(),
            total_blocks as usize
        );
    }

    // 4. The base, read-only, still holds the checkpoint's state...
    let mut server = serve(&env, format, &base, &["--read-only"]);
    let report = verify_clean(&env, &server.uri(""), manifest, &["--at", "base"]);
    assert_eq!(report["checkpoint"], "base");
    // ... and lacks exactly the overlay's writes.
    let stale = verify_findings(&env, &server.uri(""), manifest, &[]);
    server.stop();
    let lost = generations_of(&stale, "lost_write");
    assert_eq!(finding_set(&stale).len(), lost.len(), "{stale:#}");
    let flipped: Vec<(u64, u64, u64)> = rewritten.iter().map(|&(b, e, f)| (b, f, e)).collect();
    assert_eq!(lost, flipped, "the base lacks exactly the overlay's writes");

    // 5. Commit the overlay into the base: the base now holds the latest state.
    qemu_img(&env, &["commit", "-q", "-f", format.name, &overlay]);
    let mut server = serve(&env, format, &base, &["--read-only"]);
    verify_clean(&env, &server.uri(""), manifest, &[]);
    server.stop();

    // 6. What is left of the overlay after the commit.
    let mut server = serve(&env, format, &overlay, &["--read-only"]);
    if format.commit_empties_overlay {
        verify_clean(&env, &server.uri(""), manifest, &[]);
        server.stop();
        let from_base = blocks_from_backing(&env, format, &overlay, block_size);
        assert_eq!(
            from_base.len() as u64,
            total_blocks,
            "the commit emptied the overlay"
        );
    } else {
        let stale_overlay = verify_findings(&env, &server.uri(""), manifest, &[]);
        server.stop();
        let expected: Vec<(u64, String)> = blocks_from_backing(&env, format, &overlay, block_size)
            .into_iter()
            .map(|block| (block, "unreadable".to_string()))
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(
            finding_set(&stale_overlay),
            expected,
            "after a {} commit, exactly the reads that fall through to the changed base fail",
            format.name
        );
    }
}

#[test]
fn qcow2_chain_at_cluster_sized_blocks_verifies_clean_through_overlay_and_commit() {
    snapshot_chain_stays_clean(QCOW2, CLUSTER_BYTES, "0.5");
}

#[test]
fn qcow2_chain_at_4k_blocks_verifies_clean_through_cluster_copy_on_write() {
    // 16 blocks per cluster: a partly written cluster is copied up from
    // the base; a low coverage also leaves whole clusters in the base.
    snapshot_chain_stays_clean(QCOW2, 4 * KIB, "0.05");
}

#[test]
fn vmdk_chain_at_grain_sized_blocks_verifies_clean_and_a_stale_overlay_is_unreadable() {
    snapshot_chain_stays_clean(VMDK, CLUSTER_BYTES, "0.5");
}

#[test]
fn vmdk_chain_at_4k_blocks_verifies_clean_through_grain_copy_on_write() {
    snapshot_chain_stays_clean(VMDK, 4 * KIB, "0.05");
}

// ---- damaged qcow2 metadata ----

/// A qcow2 overlay whose every cluster holds generation 2 over a base at
/// generation 1; then two L2 entries swapped (clusters A and B) and one
/// cleared (cluster C, which then reads through to the base).
fn damaged_l2_entries_are_reported_exactly(block_size: u64) {
    if !have_qemu() {
        return;
    }
    const CLUSTER_A: u64 = 3;
    const CLUSTER_B: u64 = 40;
    const CLUSTER_C: u64 = 21;
    let env = TestEnv::new();
    let manifest = "damage.manifest";
    let size_bytes = 4 * MIB;
    let block_size_flag = block_size.to_string();

    create_base(&env, QCOW2, "base.qcow2", size_bytes);
    let mut server = serve(&env, QCOW2, "base.qcow2", &[]);
    env.write(
        &server.uri(""),
        manifest,
        &["--block-size", &block_size_flag, "--seed", "11"],
    );
    server.stop();
    env.run(&["checkpoint", "--manifest", manifest, "base"])
        .assert_code(0);
    create_overlay(&env, QCOW2, "base.qcow2", "overlay.qcow2");
    let mut server = serve(&env, QCOW2, "overlay.qcow2", &[]);
    // Every block again: every cluster now lives in the overlay at generation 2.
    env.write(&server.uri(""), manifest, &["--seed", "12"]);
    verify_clean(&env, &server.uri(""), manifest, &[]);
    server.stop();

    let metadata = Qcow2Metadata::open(&env.path("overlay.qcow2"));
    assert_eq!(metadata.cluster_bytes, CLUSTER_BYTES);
    let entry_a = metadata.allocated_entry(CLUSTER_A);
    let entry_b = metadata.allocated_entry(CLUSTER_B);
    metadata.allocated_entry(CLUSTER_C);
    metadata.set_entry(CLUSTER_A, entry_b);
    metadata.set_entry(CLUSTER_B, entry_a);
    metadata.set_entry(CLUSTER_C, 0);
    metadata.sync();
    drop(metadata);

    let blocks_per_cluster = CLUSTER_BYTES / block_size;
    let blocks_of =
        |cluster: u64| (0..blocks_per_cluster).map(move |i| cluster * blocks_per_cluster + i);
    // Each block of A holds the block at the same place in B, and back.
    let misdirected: Vec<(u64, u64)> = blocks_of(CLUSTER_A)
        .zip(blocks_of(CLUSTER_B))
        .chain(blocks_of(CLUSTER_B).zip(blocks_of(CLUSTER_A)))
        .collect();
    let mut expected: Vec<(u64, String)> = misdirected
        .iter()
        .map(|&(block, _)| (block, "misdirected".to_string()))
        .chain(blocks_of(CLUSTER_C).map(|block| (block, "lost_write".to_string())))
        .collect();
    expected.sort();

    let server = serve(&env, QCOW2, "overlay.qcow2", &["--read-only"]);
    let report = verify_findings(&env, &server.uri(""), manifest, &[]);
    assert_eq!(finding_set(&report), expected, "{report:#}");
    for (block, holds) in misdirected {
        let found = finding(&report, block);
        assert_eq!(found["found_block"], holds, "{found}");
        assert_eq!(
            (&found["expected_generation"], &found["found_generation"]),
            (&Value::from(2), &Value::from(2)),
            "{found}"
        );
    }
    // C reads through to the base: the overlay's write of it is gone.
    for block in blocks_of(CLUSTER_C) {
        let found = finding(&report, block);
        assert_eq!(found["found_block"], Value::Null, "{found}");
        assert_eq!(
            (&found["expected_generation"], &found["found_generation"]),
            (&Value::from(2), &Value::from(1)),
            "{found}"
        );
    }
    let persistent: HashSet<bool> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["persistent"].as_bool().unwrap())
        .collect();
    assert_eq!(
        persistent,
        HashSet::from([true]),
        "the metadata, not a read, is wrong"
    );
    let total_blocks = size_bytes / block_size;
    assert_eq!(
        report["blocks"]["ok"].as_u64(),
        Some(total_blocks - 3 * blocks_per_cluster)
    );
}

#[test]
fn swapped_and_cleared_qcow2_l2_entries_are_misdirected_and_lost_writes() {
    // One block per cluster.
    damaged_l2_entries_are_reported_exactly(CLUSTER_BYTES);
}

#[test]
fn swapped_qcow2_l2_entries_misdirect_each_4k_block_to_its_own_counterpart() {
    // 16 blocks per cluster, each misdirected to the same position in the other cluster.
    damaged_l2_entries_are_reported_exactly(4 * KIB);
}

// ---- queue depth at the server ----

/// The most requests in progress at once in a server's log: `started`
/// names the request a line starts, `finished` the one a line finishes.
fn max_concurrent(
    log: &str,
    started: impl Fn(&str) -> Option<u64>,
    finished: impl Fn(&str) -> Option<u64>,
) -> usize {
    let mut in_progress = HashSet::new();
    let mut most = 0;
    for line in log.lines() {
        if let Some(id) = started(line) {
            in_progress.insert(id);
            most = most.max(in_progress.len());
        } else if let Some(id) = finished(line) {
            in_progress.remove(&id);
        }
    }
    most
}

/// The number after `key` in `line`, up to the next non-digit.
fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// nbdkit's log filter: `connection=1 Write id=7 offset=… count=… fua=0 ...`
/// when a write starts, `connection=1 ...Write id=7 return=0` when it ends.
fn nbdkit_writes_in_flight(log: &str) -> usize {
    max_concurrent(
        log,
        |line| {
            (line.contains(" Write id=") && line.ends_with(" ..."))
                .then(|| number_after(line, " Write id="))
                .flatten()
        },
        |line| number_after(line, "...Write id="),
    )
}

/// qemu-nbd `--trace` events: a request is decoded
/// (`nbd_co_receive_request_decode_type … cookie = 7, type = 1 (write)`)
/// and later answered (`nbd_co_send_simple_reply`, or a structured
/// `nbd_co_send_chunk_done`, `… cookie = 7`). qemu ≤ 8 said `handle`.
fn qemu_writes_in_flight(log: &str) -> usize {
    let cookie =
        |line: &str| number_after(line, "cookie = ").or_else(|| number_after(line, "handle = "));
    max_concurrent(
        log,
        |line| {
            (line.contains("nbd_co_receive_request_decode_type") && line.contains("(write)"))
                .then(|| cookie(line))
                .flatten()
        },
        |line| {
            (line.contains("nbd_co_send_simple_reply") || line.contains("nbd_co_send_chunk_done"))
                .then(|| cookie(line))
                .flatten()
        },
    )
}

/// qemu's NBD server reads at most this many requests of one client at a
/// time (MAX_NBD_REQUESTS in qemu's nbd/server.c); later ones wait in the
/// socket until one is answered.
const QEMU_NBD_MAX_REQUESTS: usize = 16;

#[test]
fn bursty_write_at_queue_depth_32_keeps_32_writes_in_flight_in_front_of_qemu_nbd() {
    if !have_qemu() || !require(Need::Nbdkit) {
        return;
    }
    const QUEUE_DEPTH: usize = 32;
    let env = TestEnv::new();
    create_base(&env, QCOW2, "disk.qcow2", 16 * MIB);
    let trace = [
        "--trace",
        "enable=nbd_co_receive_request_decode_type",
        "--trace",
        "nbd_co_send_simple_reply",
        "--trace",
        "nbd_co_send_chunk_done",
    ];
    let mut qemu = serve(&env, QCOW2, "disk.qcow2", &trace);
    // nbdkit in front, logging every request's start and end. Its thread
    // pool (16 by default) must not be what limits the depth.
    let upstream = format!("uri={}", qemu.uri(""));
    let mut nbdkit = NbdServer::nbdkit(&[
        "--threads=64",
        "--filter=log",
        "nbd",
        &upstream,
        "logfile={dir}/requests.log",
    ])
    .expect("require() checked that nbdkit is installed");
    let depth = QUEUE_DEPTH.to_string();
    env.write(
        &nbdkit.uri(""),
        "depth.manifest",
        &[
            "--block-size",
            "4KiB",
            "--coverage",
            "0.25",
            "--seed",
            "5",
            "--queue-depth",
            &depth,
            "--burst",
            &depth,
            "--burst-gap",
            "1ms",
        ],
    );
    nbdkit.stop();
    qemu.stop();
    let requests = std::fs::read_to_string(nbdkit.dir().join("requests.log"))
        .expect("nbdkit wrote its request log");
    let at_nbdkit = nbdkit_writes_in_flight(&requests);
    let at_qemu = qemu_writes_in_flight(&qemu.log());
    println!(
        "writes in flight at once, queue depth {QUEUE_DEPTH}: {at_nbdkit} at nbdkit (log filter), \
         {at_qemu} inside qemu-nbd (trace events)"
    );
    assert!(
        (24..=QUEUE_DEPTH).contains(&at_nbdkit),
        "nbdkit saw at most {at_nbdkit} writes at once from a queue depth of {QUEUE_DEPTH}"
    );
    // qemu-nbd overlaps requests, up to its own window and no further.
    assert!(
        (2..=QEMU_NBD_MAX_REQUESTS).contains(&at_qemu),
        "qemu-nbd had {at_qemu} writes in progress at once"
    );
    // What went through both servers landed in the qcow2 image.
    let qemu = serve(&env, QCOW2, "disk.qcow2", &["--read-only"]);
    verify_clean(&env, &qemu.uri(""), "depth.manifest", &[]);
}

// ---- the workflows of docs/WORKFLOWS.md, as written ----

/// The ```sh blocks of a markdown text, in order, as one script.
fn sh_blocks(markdown: &str) -> String {
    let mut script = String::new();
    let mut in_block = false;
    for line in markdown.lines() {
        if in_block {
            if line.starts_with("```") {
                in_block = false;
            } else {
                script.push_str(line);
                script.push('\n');
            }
        } else if line == "```sh" {
            in_block = true;
        }
    }
    script
}

/// Stops, when dropped, the server whose pid is in `pid_file`, if it is
/// still running: one a failing script started and never stopped
/// (`qemu-nbd --fork` and nbdkit's daemon are not our children, so no
/// other guard has them).
struct ForkedServer {
    pid_file: std::path::PathBuf,
    program: &'static str,
}

impl Drop for ForkedServer {
    fn drop(&mut self) {
        let Some(pid) = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
        else {
            return;
        };
        // Only if that pid is still the server: never a recycled pid.
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != self.program {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

#[test]
fn workflows_in_docs_run_as_written() {
    // The power-cut lab puts nbdkit's cache under qcow2.
    if !have_qemu() || !require(Need::Nbdkit) {
        return;
    }
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/WORKFLOWS.md");
    let doc = std::fs::read_to_string(&doc_path).expect("read docs/WORKFLOWS.md");
    let script = sh_blocks(&doc);
    let verifies = script.matches("blockstamp verify").count();
    assert!(
        verifies >= 8,
        "the workflows verify {verifies} times:\n{script}"
    );
    // Each soak ends with a verify of its own.
    let soaks = script.matches("blockstamp soak").count();
    assert!(soaks >= 3, "the workflows soak {soaks} times:\n{script}");

    let env = TestEnv::new();
    let _servers = [
        ForkedServer {
            pid_file: env.path("qemu-nbd.pid"),
            program: "qemu-nbd",
        },
        ForkedServer {
            pid_file: env.path("cache.pid"),
            program: "nbdkit",
        },
    ];
    let binary = Path::new(env!("CARGO_BIN_EXE_blockstamp"));
    let path = format!(
        "{}:{}",
        binary.parent().expect("binary dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Bounded: a hung step fails the test instead of hanging it. The
    // soaks take about 40 s of it.
    let started = std::time::Instant::now();
    let output = Command::new("timeout")
        .args(["240", "bash", "-euo", "pipefail", "-c", &script])
        .current_dir(env.dir.path())
        .env("PATH", path)
        .env("SIZE", "8M")
        .env("PORT", free_port().to_string())
        .env("LAB_DURATION", "30s")
        .env("LAB_CUT_EVERY", "5s")
        .env("UPDATE_DURATION", "8s")
        .env("UPDATE_AT", "2s")
        .env("THIN_DURATION", "4s")
        .env("THIN_VERIFY_EVERY", "2s")
        .output()
        .expect("run bash");
    eprintln!(
        "the workflows ran in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the workflows of docs/WORKFLOWS.md failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert_eq!(
        stdout.matches("CLEAN:").count(),
        verifies + soaks,
        "{stdout}"
    );
    // Every JSON report the workflows wrote says clean.
    let mut reports = 0;
    for entry in std::fs::read_dir(env.dir.path()).expect("list scratch dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|ext| ext == "json") {
            let text = std::fs::read_to_string(&path).expect("read report");
            let report: Value = serde_json::from_str(&text).expect("report is JSON");
            assert_eq!(report["clean"], true, "{}: {report:#}", path.display());
            reports += 1;
        }
    }
    assert!(reports >= 6, "{reports} JSON reports written");

    // The power-cut lab: at least 5 cuts under qcow2, each followed by a
    // reconnect, an acceptable qemu-img check and a verify of every block
    // written so far, without a finding.
    let lab: Value = serde_json::from_str(
        &std::fs::read_to_string(env.path("lab-report.json")).expect("read lab-report.json"),
    )
    .expect("lab report is JSON");
    let cuts = lab["disruptions"].as_array().expect("disruptions");
    assert!(
        cuts.len() >= 5,
        "{} cuts: {:#}",
        cuts.len(),
        lab["disruptions"]
    );
    for cut in cuts {
        assert!(cut["reconnects"].as_u64().unwrap() >= 1, "{cut:#}");
        assert!(
            cut["verify_checked_blocks"].as_u64().unwrap() > 0,
            "{cut:#}"
        );
        assert_eq!(cut["findings"], serde_json::json!([]), "{cut:#}");
    }
    let checks = std::fs::read_to_string(env.path("powercut.log")).expect("read powercut.log");
    let checks: Vec<&str> = checks.lines().collect();
    assert_eq!(checks.len(), cuts.len(), "{checks:?}");
    for (i, line) in checks.iter().enumerate() {
        let ok = [0, 3].map(|status| format!("cut {}: qemu-img check exit {status}", i + 1));
        assert!(ok.contains(&line.to_string()), "{line}");
    }
    // The firmware-update stand-in: one disruption, the export back.
    let update: Value = serde_json::from_str(
        &std::fs::read_to_string(env.path("update-report.json")).expect("read update-report.json"),
    )
    .expect("update report is JSON");
    let disruptions = update["disruptions"].as_array().expect("disruptions");
    assert_eq!(disruptions.len(), 1, "{:#}", update["disruptions"]);
    assert!(disruptions[0]["reconnects"].as_u64().unwrap() >= 1);
    assert!(
        disruptions[0]["stall_s"].as_f64().unwrap() >= 1.0,
        "{update:#}"
    );
}
