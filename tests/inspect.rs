//! `inspect` tells a block's story (docs/CONTRACT.md, `inspect`): what the
//! manifest expects now and at each checkpoint, the writes pending after a
//! crash, what each sector holds (whose stamp, which write, when), the
//! verdict and the incident.
//!
//! The crafted case: a 1 MiB image written (generation 1), checkpoint
//! `base`, written again (generation 2); blocks 20 and 21 then get a byte
//! of sector 3 damaged; and a writer "dies" with a write of generation 3 of
//! block 50 in flight (journalled, landed on the image, not in the map).

mod common;

use std::os::unix::fs::FileExt;

use blockstamp::manifest::{Access, Manifest};
use blockstamp::stamp::{self, SectorContent, WriteStamp};
use common::{Image, TestEnv};
use serde_json::Value;

const PENDING_BLOCK: u64 = 50;
const PENDING_TIME_S: u32 = 1_800_000_000;

struct Case {
    env: TestEnv,
    /// The write sequence number of the pending write of block 50.
    pending_seq: u64,
}

fn crafted() -> Case {
    let env = TestEnv::new();
    env.write("d.img", "m", &["--size", "1MiB", "--seed", "3"]);
    env.run(&["checkpoint", "-m", "m", "base"]).assert_code(0);
    env.write("d.img", "m", &["--seed", "4"]);
    let image = Image::open(&env.path("d.img"), 4096);
    image.flip_bit(20, 3 * 512 + 200, 2);
    image.flip_bit(21, 3 * 512 + 100, 5);
    image.sync();
    // The writer dies with generation 3 of block 50 journalled and on the
    // image, but not yet in the map.
    let mut manifest = Manifest::open(&env.path("m"), Access::Write).unwrap();
    manifest.begin_write().unwrap();
    let end = manifest.journal_append(&[(PENDING_BLOCK, 3)]).unwrap();
    manifest.journal_wait(end).unwrap();
    let pending_seq = manifest.header().next_write_seq;
    let mut bytes = vec![0u8; 4096];
    stamp::build_write(
        &manifest.format(),
        &WriteStamp {
            block: PENDING_BLOCK,
            generation: 3,
            write_seq: pending_seq,
            write_time_s: PENDING_TIME_S,
        },
        &mut bytes,
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(env.path("d.img"))
        .unwrap()
        .write_all_at(&bytes, PENDING_BLOCK * 4096)
        .unwrap();
    drop(manifest);
    Case { env, pending_seq }
}

/// The write sequence number and time of the stamp in sector `sector` of
/// `block`, decoded from the image: the ground truth.
fn stamp_of(env: &TestEnv, block: u64, sector: usize) -> (u64, u64) {
    let bytes = Image::open(&env.path("d.img"), 4096).read_block(block);
    match stamp::decode_sector(&bytes[sector * 512..(sector + 1) * 512]) {
        SectorContent::Stamp(h) => (h.write_seq, h.write_time_s as u64),
        other => panic!("block {block} sector {sector}: {other:?}"),
    }
}

fn story(env: &TestEnv, block: u64, extra: &[&str], code: i32) -> Value {
    let block = block.to_string();
    let mut args = vec!["inspect", "d.img", "-m", "m", "--block", &block, "--json"];
    args.extend_from_slice(extra);
    let run = env.run(&args);
    run.assert_code(code);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

#[test]
fn a_damaged_block_tells_its_generations_sectors_writes_and_incident() {
    let case = crafted();
    let env = &case.env;
    let (seq, time) = stamp_of(env, 20, 0);
    let (seq_21, _) = stamp_of(env, 21, 0);
    let story = story(env, 20, &[], 1);
    assert_eq!(story["schema"], "blockstamp.inspect/1");
    assert_eq!(story["manifest_state"], "writing");
    assert_eq!(story["expected_now"], 2);
    assert_eq!(story["expected_generation"], 2);
    assert_eq!(story["checked_against"], Value::Null);
    let checkpoints = story["checkpoints"].as_array().unwrap();
    assert_eq!(checkpoints.len(), 1);
    assert_eq!(checkpoints[0]["name"], "base");
    assert_eq!(checkpoints[0]["generation"], 1);
    assert_eq!(checkpoints[0]["write_seq"], 257, "256 writes before it");
    assert_eq!(story["pending"], Value::Null);
    // Sectors 0-2 and 4-7: the second write of block 20; sector 3 damaged.
    let runs: Vec<(u64, u64, &str)> = story["sectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["first_sector"].as_u64().unwrap(),
                r["last_sector"].as_u64().unwrap(),
                r["content"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        runs,
        vec![(0, 2, "stamp"), (3, 3, "other"), (4, 7, "stamp")]
    );
    let first = &story["sectors"][0]["stamp"];
    assert_eq!(first["block"], 20);
    assert_eq!(first["generation"], 2);
    assert_eq!(first["write_seq"], seq);
    assert_eq!(first["write_time_s"], time);
    assert_eq!(first["this_run"], true);
    assert!(seq >= 257, "written after the checkpoint");
    assert_eq!(story["verdict"]["class"], "corrupt");
    assert_eq!(story["finding"]["found_write_seq"], seq);
    assert_eq!(story["finding"]["persistent"], true);
    // Blocks 20 and 21: one incident of two corrupt writes.
    let incident = &story["incident"];
    assert_eq!(incident["classes"]["corrupt"], 2);
    assert_eq!(incident["block_ranges"], serde_json::json!([[20, 21]]));
    let (low, high) = (seq.min(seq_21), seq.max(seq_21));
    assert_eq!(incident["damaged_writes"]["first_write_seq"], low);
    assert_eq!(incident["damaged_writes"]["last_write_seq"], high);
    assert_eq!(story["finding"]["incident"], incident["id"]);
    let neighbourhood = &story["neighbourhood"];
    assert_eq!(
        (&neighbourhood["first_block"], &neighbourhood["last_block"]),
        (&serde_json::json!(0), &serde_json::json!(255))
    );
    assert_eq!(neighbourhood["findings"], 2);

    // The same story for people.
    let run = env.run(&["inspect", "d.img", "-m", "m", "--block", "20"]);
    run.assert_code(1);
    let text = &run.stdout;
    for line in [
        "  now: generation 2  <- checked against".to_string(),
        "at checkpoint 'base' (taken ".to_string(),
        "writes before 257): generation 1".to_string(),
        "pending after a crash: none for this block (the writer did not finish".to_string(),
        format!("  sectors 0-2: this block, generation 2, write {seq} at "),
        "(after checkpoint 'base')".to_string(),
        "  sector 3: not a valid stamp (damaged, or foreign data)".to_string(),
        "written by bursts of ".to_string(),
        "verdict: corrupt [persistent: read again, the same bytes]".to_string(),
        "incident: this block is in #1 corrupt 2: blocks 20-21".to_string(),
    ] {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
}

#[test]
fn a_block_checked_against_a_checkpoint_it_moved_past_is_newer() {
    let case = crafted();
    let story = story(&case.env, 30, &["--at", "base"], 1);
    assert_eq!(story["checked_against"], "base");
    assert_eq!(story["expected_generation"], 1);
    assert_eq!(story["expected_now"], 2);
    assert_eq!(story["verdict"]["class"], "newer_generation");
    // Pending writes are not applied against a checkpoint.
    assert_eq!(story["pending"], Value::Null);
}

#[test]
fn a_block_with_a_write_pending_at_the_crash_shows_what_is_accepted() {
    let case = crafted();
    let env = &case.env;
    let story = story(env, PENDING_BLOCK, &[], 0);
    assert_eq!(
        story["expected_now"], 2,
        "the map: the last completed write"
    );
    assert_eq!(
        story["pending"],
        serde_json::json!({"before": 2, "newest": 3, "atomic_unit_bytes": 512})
    );
    let stamp = &story["sectors"][0]["stamp"];
    assert_eq!(story["sectors"][0]["last_sector"], 7);
    assert_eq!(stamp["generation"], 3);
    assert_eq!(stamp["write_seq"], case.pending_seq);
    assert_eq!(stamp["write_time_s"], PENDING_TIME_S);
    assert_eq!(story["verdict"]["class"], Value::Null);
    assert_eq!(story["incident"], Value::Null);
    let run = env.run(&["inspect", "d.img", "-m", "m", "--block", "50"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains(
            "pending after a crash: writes of this block were in flight when the writer stopped: anything from generation 2 to generation 3 is accepted"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("verdict: ok: what it holds is one of the outcomes its pending writes allow"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("nearby: #1 corrupt 2: blocks 20-21"),
        "{}",
        run.stdout
    );
}
