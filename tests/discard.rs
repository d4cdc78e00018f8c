//! Discard and write-zeroes in the workload, through the real binary
//! (docs/CONTRACT.md, "Discard and write-zeroes"):
//!
//! - image files: runs that mix writes, discards and zeroings verify clean,
//!   also after the writer is killed at random moments;
//! - zeroings and discards that did not persist (old data written back
//!   over them) are found exactly, as `lost_zeroing`, and the
//!   `--discard-reads` promise decides what a discarded block may hold;
//! - bad input is refused before anything is created;
//! - qcow2 chains through qemu-nbd with `--discard=unmap`: base →
//!   checkpoint → overlay → commit, with discards and zeroings in every
//!   write; and a qcow2 L2 entry pointed at another cluster after a
//!   zeroing, found exactly.

mod common;
#[path = "common/nbd_server.rs"]
mod nbd_server;
#[path = "common/qcow2.rs"]
mod qcow2;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use blockstamp::manifest::{Access, BlockKind, BlockState, Manifest};
use blockstamp::rng::SplitMix64;
use common::{Image, TestEnv, finding, finding_set};
use nbd_server::NbdServer;
use qcow2::{QCOW2_COPIED, QCOW2_OFFSET_MASK, QCOW2_ZERO, Qcow2Metadata, have_qemu, qemu_img};
use serde_json::Value;

const KIB: u64 = 1024;
/// qcow2's default cluster size.
const CLUSTER_BYTES: u64 = 64 * KIB;

/// Every block's expected state, as the manifest at `path` records it.
fn states(path: &Path) -> Vec<BlockState> {
    let manifest = Manifest::open(path, Access::Read).expect("open the manifest");
    (0..manifest.block_count())
        .map(|block| manifest.state(block))
        .collect()
}

/// The blocks whose state is of `kind`.
fn blocks_of_kind(states: &[BlockState], kind: BlockKind) -> Vec<u64> {
    (0..states.len() as u64)
        .filter(|&block| states[block as usize].kind == kind)
        .collect()
}

fn lost_zeroings(blocks: &[u64]) -> Vec<(u64, String)> {
    blocks
        .iter()
        .map(|&block| (block, "lost_zeroing".to_string()))
        .collect()
}

// ---- image files ----

#[test]
fn writes_discards_and_zeroings_on_an_image_file_verify_clean() {
    let env = TestEnv::new();
    let run = env.run(&[
        "run",
        "disk.img",
        "--manifest",
        "m",
        "--size",
        "4MiB",
        "--seed",
        "3",
        "--discard",
        "0.2",
        "--write-zeroes",
        "0.2",
        "--passes",
        "3",
        "--io-size",
        "4KiB-16KiB",
    ]);
    run.assert_code(0);
    assert!(run.stdout.contains("CLEAN:"), "{}", run.stdout);
    assert!(
        run.stdout.contains("block(s) zeroed in") && run.stdout.contains("block(s) discarded in"),
        "the summary counts the zeroings and discards: {}",
        run.stdout
    );
    // The run really left blocks of every kind, and a file keeps its
    // promise: whatever was zeroed or discarded last reads all zeros.
    let states = states(&env.path("m"));
    let image = Image::open(&env.path("disk.img"), 4 * KIB);
    for kind in [BlockKind::Data, BlockKind::Zeroed, BlockKind::Discarded] {
        assert!(
            !blocks_of_kind(&states, kind).is_empty(),
            "no block ends {kind:?}"
        );
    }
    for (block, state) in states.iter().enumerate() {
        if state.kind != BlockKind::Data {
            assert!(
                image.read_block(block as u64).iter().all(|&b| b == 0),
                "block {block} ({state:?}) does not read zeros"
            );
        }
    }
    // A verify of its own agrees, with every block checked.
    let verify = env.verify("disk.img", "m", &[]);
    verify.assert_code(0);
    let report = verify.report();
    assert_eq!(report["clean"], true);
    assert_eq!(report["blocks"]["ok"], report["blocks"]["checked"]);
}

#[test]
fn a_writer_killed_among_discards_and_zeroings_leaves_a_manifest_that_verifies_clean() {
    let env = TestEnv::new();
    let mut rng = SplitMix64(0xd15c);
    let binary = env!("CARGO_BIN_EXE_blockstamp");
    for round in 0..3 {
        let mut child = Command::new(binary)
            .args(["write", "disk.img", "--manifest", "m", "--size", "8MiB"])
            .args(["--passes", "1000", "--overwrite", "0.3", "--sync", "64"])
            .args(["--io-size", "4KiB-16KiB"])
            .args(["--discard", "0.2", "--write-zeroes", "0.2"])
            .current_dir(env.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start writer");
        std::thread::sleep(Duration::from_millis(200 + rng.next_u64() % 600));
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");
        // Right after the kill, with the manifest as the writer left it:
        // the pending discards and zeroings may read old or new.
        let run = env.verify("disk.img", "m", &[]);
        run.assert_code(0);
        assert_eq!(finding_set(&run.report()), vec![], "round {round}");
    }
    // Continuing the run reconciles the manifest and stays clean.
    env.write(
        "disk.img",
        "m",
        &["--passes", "1", "--discard", "0.2", "--write-zeroes", "0.2"],
    );
    let run = env.verify("disk.img", "m", &[]);
    run.assert_code(0);
    assert_eq!(finding_set(&run.report()), vec![]);
}

/// Pass 1 writes every block; pass 2 zeroes or discards some of them.
/// Writing pass 1's bytes back over a few of those is a zeroing or discard
/// that did not persist.
#[test]
fn zeroings_and_discards_that_did_not_persist_are_lost_zeroings_as_the_promise_says() {
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "1MiB", "--seed", "5"]);
    common::snapshot(&env.path("disk.img"), &env.path("pass1.img"));
    env.write(
        "disk.img",
        "m",
        &["--seed", "6", "--discard", "0.3", "--write-zeroes", "0.3"],
    );
    let states = states(&env.path("m"));
    let zeroed = blocks_of_kind(&states, BlockKind::Zeroed);
    let discarded = blocks_of_kind(&states, BlockKind::Discarded);
    assert!(
        zeroed.len() >= 20 && discarded.len() >= 20,
        "pass 2 zeroed {} and discarded {} blocks",
        zeroed.len(),
        discarded.len()
    );
    // Spread over the image: every 7th of each.
    let lost_zero: Vec<u64> = zeroed.iter().copied().step_by(7).collect();
    let lost_discard: Vec<u64> = discarded.iter().copied().step_by(7).collect();
    let image = Image::open(&env.path("disk.img"), 4 * KIB);
    let pass1 = Image::open(&env.path("pass1.img"), 4 * KIB);
    for &block in lost_zero.iter().chain(&lost_discard) {
        assert_eq!(states[block as usize].generation, 1, "block {block}");
        image.copy_block_from(&pass1, block, block);
    }
    image.sync();

    // A file promises that discards read zeros (recorded by the write):
    // both kinds still holding pass 1's stamp are lost zeroings.
    let run = env.verify("disk.img", "m", &[]);
    run.assert_code(1);
    let report = run.report();
    let mut both: Vec<u64> = lost_zero.iter().chain(&lost_discard).copied().collect();
    both.sort_unstable();
    assert_eq!(finding_set(&report), lost_zeroings(&both), "{report:#}");
    for &block in &both {
        let found = finding(&report, block);
        assert_eq!(found["found_generation"], 1, "{found}");
        assert_eq!(found["found_block"], Value::Null, "{found}");
        assert_eq!(found["persistent"], true, "{found}");
    }
    assert_eq!(
        report["findings_by_class"],
        serde_json::json!({"lost_zeroing": both.len()})
    );

    // Held to "zeros or the previous contents", a discarded block that
    // still holds its data is fine; a zeroed one never is.
    let run = env.verify("disk.img", "m", &["--discard-reads", "any"]);
    run.assert_code(1);
    assert_eq!(finding_set(&run.report()), lost_zeroings(&lost_zero));

    // Held to "the previous contents", every other discarded block (the
    // file punched holes: it reads zeros) is `zeroed`.
    let run = env.verify("disk.img", "m", &["--discard-reads", "previous"]);
    run.assert_code(1);
    let mut expected = lost_zeroings(&lost_zero);
    expected.extend(
        discarded
            .iter()
            .filter(|block| !lost_discard.contains(block))
            .map(|&block| (block, "zeroed".to_string())),
    );
    expected.sort();
    assert_eq!(finding_set(&run.report()), expected);
}

// ---- bad input ----

#[test]
fn discard_and_write_zeroes_over_every_operation_are_refused_before_anything_is_created() {
    let env = TestEnv::new();
    for command in ["write", "run"] {
        for (flags, message) in [
            (
                &["--discard", "0.7", "--write-zeroes", "0.5"][..],
                "together they are more than every operation",
            ),
            (&["--discard", "1.5"][..], "--discard"),
            (&["--write-zeroes", "150%"][..], "--write-zeroes"),
            (&["--discard-reads", "maybe"][..], "--discard-reads"),
        ] {
            let mut args = vec![command, "disk.img", "--manifest", "m", "--size", "1MiB"];
            args.extend_from_slice(flags);
            let run = env.run(&args);
            run.assert_code(2);
            assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
            assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
            assert!(!env.path("disk.img").exists(), "{args:?} created the image");
            assert!(!env.path("m").exists(), "{args:?} created the manifest");
        }
    }
    // verify knows the promises too.
    env.write("disk.img", "m", &["--size", "1MiB", "--discard", "0.3"]);
    let before = common::file_digest(&env.path("m"));
    let run = env.verify("disk.img", "m", &["--discard-reads", "maybe"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("zeroes, previous or any"),
        "{}",
        run.stderr
    );
    assert_eq!(common::file_digest(&env.path("m")), before);
}

// ---- qcow2 through qemu-nbd ----

/// qemu-nbd serving qcow2 `image` of the scratch dir.
fn serve(env: &TestEnv, image: &str, args: &[&str]) -> NbdServer {
    NbdServer::qemu_nbd_image(&env.path(image), "qcow2", args)
        .expect("have_qemu() checked that qemu-nbd is installed")
}

/// `verify --json -`: exit 0, clean, every block checked and ok.
fn verify_clean(env: &TestEnv, uri: &str, manifest: &str, extra: &[&str]) -> Value {
    let run = env.verify(uri, manifest, extra);
    run.assert_code(0);
    let report = run.report();
    assert_eq!(report["clean"], true, "{report:#}");
    assert_eq!(
        report["blocks"]["ok"], report["blocks"]["total"],
        "{report:#}"
    );
    report
}

/// `qemu-img map --output=json` of `image`: its extents.
fn map(env: &TestEnv, image: &str) -> Vec<Value> {
    let text = qemu_img(env, &["map", "--output=json", "-f", "qcow2", image]);
    let extents: Value = serde_json::from_str(&text).expect("qemu-img map prints JSON");
    extents.as_array().expect("map is an array").clone()
}

/// The clusters of `image` that read as zeros from its own L2 table
/// (depth 0, `zero: true`): what discards and zeroings left there.
fn own_zero_clusters(env: &TestEnv, image: &str) -> Vec<u64> {
    let mut clusters = Vec::new();
    for extent in map(env, image) {
        if extent["depth"] == 0 && extent["zero"] == true && extent["present"] == true {
            let start = extent["start"].as_u64().unwrap();
            let length = extent["length"].as_u64().unwrap();
            clusters.extend(start / CLUSTER_BYTES..(start + length) / CLUSTER_BYTES);
        }
    }
    clusters
}

/// base → checkpoint → overlay → commit, every write mixing discards and
/// zeroings with data, every layer verified (the workflow "Thin
/// provisioning and snapshots under discard" of docs/WORKFLOWS.md).
fn qcow2_chain_under_discard_stays_clean(block_size: u64) {
    if !have_qemu() {
        return;
    }
    let env = TestEnv::new();
    let manifest = "chain.manifest";
    let block_size_flag = block_size.to_string();
    qemu_img(&env, &["create", "-q", "-f", "qcow2", "base.qcow2", "4M"]);
    let mut server = serve(&env, "base.qcow2", &["--discard=unmap"]);
    let uri = server.uri("");
    env.write(
        &uri,
        manifest,
        &[
            "--block-size",
            &block_size_flag,
            "--seed",
            "1",
            "--passes",
            "2",
            "--discard",
            "0.2",
            "--write-zeroes",
            "0.2",
        ],
    );
    verify_clean(&env, &uri, manifest, &[]);
    server.stop();
    env.run(&["checkpoint", "--manifest", manifest, "base"])
        .assert_code(0);
    let at_base = states(&env.path(manifest));

    qemu_img(
        &env,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "overlay.qcow2",
        ],
    );
    let mut server = serve(&env, "overlay.qcow2", &["--discard=unmap"]);
    let uri = server.uri("");
    env.write(
        &uri,
        manifest,
        &[
            "--seed",
            "2",
            "--coverage",
            "0.5",
            "--discard",
            "0.25",
            "--write-zeroes",
            "0.25",
            "--queue-depth",
            "32",
            "--burst",
            "32",
        ],
    );
    // The overlay holds the latest state; its discards may expose what the
    // base held at the checkpoint, or read zeros.
    verify_clean(&env, &uri, manifest, &[]);
    server.stop();
    let now = states(&env.path(manifest));
    let changed = |kind: BlockKind| {
        (0..now.len())
            .filter(|&b| now[b].kind == kind && now[b] != at_base[b])
            .count()
    };
    assert!(
        changed(BlockKind::Zeroed) > 0 && changed(BlockKind::Discarded) > 0,
        "the overlay's write zeroed {} and discarded {} blocks",
        changed(BlockKind::Zeroed),
        changed(BlockKind::Discarded)
    );
    if block_size == CLUSTER_BYTES {
        // Whole-cluster zeroings and discards are zero clusters of the
        // overlay itself, which read zeros: held to that promise, every
        // discarded block still verifies.
        assert!(
            !own_zero_clusters(&env, "overlay.qcow2").is_empty(),
            "{:?}",
            map(&env, "overlay.qcow2")
        );
        let server = serve(&env, "overlay.qcow2", &["--read-only"]);
        verify_clean(
            &env,
            &server.uri(""),
            manifest,
            &["--discard-reads", "zeroes"],
        );
        drop(server);
    }

    // The base, read-only, still holds the checkpoint's state.
    let mut server = serve(&env, "base.qcow2", &["--read-only"]);
    verify_clean(&env, &server.uri(""), manifest, &["--at", "base"]);
    server.stop();

    // Committed: the base holds the latest state, zero clusters included.
    qemu_img(&env, &["commit", "-q", "-f", "qcow2", "overlay.qcow2"]);
    let mut server = serve(&env, "base.qcow2", &["--read-only"]);
    verify_clean(&env, &server.uri(""), manifest, &[]);
    server.stop();
}

#[test]
fn qcow2_chain_under_discard_at_cluster_sized_blocks_verifies_clean_through_commit() {
    // Every discard and zeroing is a whole cluster: zero clusters.
    qcow2_chain_under_discard_stays_clean(CLUSTER_BYTES);
}

#[test]
fn qcow2_chain_under_discard_at_4k_blocks_verifies_clean_through_commit() {
    // Discards smaller than a cluster, which qcow2 ignores: the blocks
    // keep their previous contents, which the promise `any` accepts.
    qcow2_chain_under_discard_stays_clean(4 * KIB);
}

/// After a write with zeroings over qcow2 (one block per cluster), the L2
/// entry of a zeroed cluster is pointed at the host cluster of a data
/// cluster, as a stale or misdirected metadata update would: the zeroed
/// block then reads another block's stamp.
#[test]
fn a_zeroed_qcow2_cluster_whose_l2_entry_points_at_another_cluster_is_misdirected() {
    if !have_qemu() {
        return;
    }
    let env = TestEnv::new();
    let manifest = "z.manifest";
    qemu_img(&env, &["create", "-q", "-f", "qcow2", "disk.qcow2", "4M"]);
    let mut server = serve(&env, "disk.qcow2", &["--discard=unmap"]);
    let uri = server.uri("");
    env.write(&uri, manifest, &["--block-size", "64KiB", "--seed", "21"]);
    env.write(&uri, manifest, &["--seed", "22", "--write-zeroes", "0.3"]);
    verify_clean(&env, &uri, manifest, &[]);
    server.stop();

    let states = states(&env.path(manifest));
    let zero_clusters = own_zero_clusters(&env, "disk.qcow2");
    // A cluster the manifest expects zeroed and qcow2 reads as zeros…
    let zeroed = *zero_clusters
        .iter()
        .find(|&&c| states[c as usize].kind == BlockKind::Zeroed)
        .unwrap_or_else(|| panic!("no zero cluster among {zero_clusters:?}"));
    // …and one that holds data (generation 2 of its block).
    let data = (0..states.len() as u64)
        .find(|&b| states[b as usize] == BlockState::data(2))
        .expect("a block written twice");
    let metadata = Qcow2Metadata::open(&env.path("disk.qcow2"));
    assert_eq!(metadata.cluster_bytes, CLUSTER_BYTES);
    let before = metadata.entry(zeroed);
    assert!(
        before & QCOW2_ZERO != 0 || before & QCOW2_OFFSET_MASK == 0,
        "cluster {zeroed}'s L2 entry {before:#x} does not read zeros"
    );
    // The data cluster's host offset, as a plain entry: allocated, not
    // the zero flag, and not COPIED (the host cluster is now shared).
    let host = metadata.allocated_entry(data) & QCOW2_OFFSET_MASK;
    metadata.set_entry(zeroed, host & !QCOW2_COPIED);
    metadata.sync();
    drop(metadata);

    let server = serve(&env, "disk.qcow2", &["--read-only"]);
    let run = env.verify(&server.uri(""), manifest, &[]);
    run.assert_code(1);
    let report = run.report();
    // Exactly the zeroed block: it holds a valid stamp of this run for
    // another block, which is `misdirected` whatever the block expected
    // (zeros here) — the class that names the wrong cluster. Every other
    // block, the data cluster among them, still reads right.
    assert_eq!(
        finding_set(&report),
        vec![(zeroed, "misdirected".to_string())],
        "{report:#}"
    );
    let found = finding(&report, zeroed);
    assert_eq!(found["found_block"], data, "{found}");
    assert_eq!(found["found_generation"], 2, "{found}");
    assert_eq!(found["persistent"], true, "{found}");
    assert!(
        found["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expected all zeros")),
        "{found}"
    );
}
