//! Every finding class, injected offline into image files, is caught and
//! classified exactly: no miss, no false positive. At 512 B, 4 KiB and
//! 64 KiB blocks.

mod common;

use common::{Image, TestEnv, finding, finding_set, snapshot};

const BLOCKS: u64 = 64;

/// A target written twice (every block at generation 2), with a copy of it
/// at generation 1 and a second image written by another run.
struct Scene {
    env: TestEnv,
    block_size: u64,
}

impl Scene {
    fn new(block_size: u64) -> Scene {
        let env = TestEnv::new();
        let size = (BLOCKS * block_size).to_string();
        let bs = block_size.to_string();
        env.write(
            "disk.img",
            "disk.manifest",
            &["--size", &size, "--block-size", &bs, "--seed", "1"],
        );
        snapshot(&env.path("disk.img"), &env.path("gen1.img"));
        env.write("disk.img", "disk.manifest", &["--seed", "2"]);
        env.write(
            "other.img",
            "other.manifest",
            &["--size", &size, "--block-size", &bs],
        );
        let scene = Scene { env, block_size };
        let clean = scene.verify();
        clean.assert_code(0);
        assert_eq!(clean.report()["blocks"]["ok"].as_u64(), Some(BLOCKS));
        scene
    }

    fn image(&self, name: &str) -> Image {
        Image::open(&self.env.path(name), self.block_size)
    }

    fn verify(&self) -> common::Run {
        self.env.verify("disk.img", "disk.manifest", &[])
    }

    fn sectors(&self) -> u64 {
        self.block_size / 512
    }
}

fn every_class_is_classified_exactly(block_size: u64) {
    let scene = Scene::new(block_size);
    let disk = scene.image("disk.img");
    let gen1 = scene.image("gen1.img");
    let other = scene.image("other.img");
    let last_byte = block_size - 1;

    disk.flip_bit(3, last_byte, 5); // payload bit
    disk.flip_bit(5, 17, 0); // header: the block number field of sector 0
    disk.flip_bit(6, 1, 3); // header: the magic
    disk.zero_block(7);
    disk.punch_hole(9);
    disk.copy_block_from(&gen1, 11, 11); // spliced back from an older copy
    disk.copy_block_from(&disk, 20, 13); // another block's bytes
    disk.copy_block_from(&other, 15, 15); // a block of another run
    let mut expected = vec![
        (3, "corrupt"),
        (5, "corrupt"),
        (6, "corrupt"),
        (7, "zeroed"),
        (9, "zeroed"),
        (11, "lost_write"),
        (13, "misdirected"),
        (15, "foreign"),
    ];
    if scene.sectors() > 1 {
        let half = scene.sectors() / 2;
        disk.splice_sectors(&gen1, 17, half..scene.sectors()); // new then old
        disk.splice_sectors(&gen1, 19, 0..half); // old then new
        expected.extend([(17, "torn"), (19, "torn")]);
    }
    disk.sync();

    let run = scene.verify();
    run.assert_code(1);
    let report = run.report();
    let expected: Vec<(u64, String)> = expected
        .into_iter()
        .map(|(b, c)| (b, c.to_string()))
        .collect();
    assert_eq!(finding_set(&report), expected, "block size {block_size}");

    for block in [3, 5, 6] {
        let f = finding(&report, block);
        assert_eq!(f["found_generation"], 2);
        assert_eq!(f["corruption"]["differing_bits"], 1, "block {block}: {f}");
        assert_eq!(f["persistent"], true);
    }
    let bit3 = finding(&report, 3);
    assert_eq!(
        bit3["corruption"]["byte_ranges"][0][0].as_u64(),
        Some(last_byte)
    );
    let lost = finding(&report, 11);
    assert_eq!(
        (
            lost["expected_generation"].as_u64(),
            lost["found_generation"].as_u64()
        ),
        (Some(2), Some(1))
    );
    let misdirected = finding(&report, 13);
    assert_eq!(misdirected["found_block"], 20);
    assert_eq!(misdirected["found_generation"], 2);
    assert!(
        finding(&report, 15)["detail"]
            .as_str()
            .unwrap()
            .contains("another run")
    );
    if scene.sectors() > 1 {
        let half = (scene.sectors() / 2) as u32;
        let torn = finding(&report, 17);
        assert_eq!(torn["torn_split"][0]["generation"], 2);
        assert_eq!(torn["torn_split"][0]["last_sector"], half - 1);
        assert_eq!(torn["torn_split"][1]["generation"], 1);
        let torn = finding(&report, 19);
        assert_eq!(torn["torn_split"][0]["generation"], 1);
        assert_eq!(torn["torn_split"][1]["first_sector"], half);
    }
    assert_eq!(
        report["blocks"]["ok"].as_u64(),
        Some(BLOCKS - report["findings"].as_array().unwrap().len() as u64)
    );
}

#[test]
fn every_class_is_classified_exactly_at_4k() {
    every_class_is_classified_exactly(4096);
}

#[test]
fn every_class_is_classified_exactly_at_512() {
    every_class_is_classified_exactly(512);
}

#[test]
fn every_class_is_classified_exactly_at_64k() {
    every_class_is_classified_exactly(65536);
}

#[test]
fn a_clean_target_has_no_findings_and_exits_zero() {
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "1MiB", "--passes", "3"]);
    let run = env.verify("disk.img", "m", &[]);
    run.assert_code(0);
    let report = run.report();
    assert_eq!(report["clean"], true);
    assert_eq!(report["findings"].as_array().unwrap().len(), 0);
    assert_eq!(report["blocks"]["checked"], 256);
}

#[test]
fn a_checkpoint_of_an_older_state_sees_newer_generations() {
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "256KiB"]);
    env.run(&["checkpoint", "--manifest", "m", "first"])
        .assert_code(0);
    env.write("disk.img", "m", &[]);
    let run = env.verify("disk.img", "m", &["--at", "first"]);
    run.assert_code(1);
    let report = run.report();
    assert_eq!(report["checkpoint"], "first");
    assert_eq!(report["findings_by_class"]["newer_generation"], 64);
    assert_eq!(finding(&report, 0)["expected_generation"], 1);
    assert_eq!(finding(&report, 0)["found_generation"], 2);
    env.verify("disk.img", "m", &[]).assert_code(0);
}

#[test]
fn blocks_never_written_must_hold_none_of_the_runs_stamps() {
    let env = TestEnv::new();
    env.write(
        "disk.img",
        "m",
        &["--size", "1MiB", "--coverage", "0.5", "--seed", "7"],
    );
    let clean = env.verify("disk.img", "m", &[]);
    clean.assert_code(0);
    let report = clean.report();
    let written = report["blocks"]["expected_written"].as_u64().unwrap();
    assert!((64..192).contains(&written), "{written} of 256 written");
    // Find a written and an unwritten block, and copy one over the other.
    let image = Image::open(&env.path("disk.img"), 4096);
    let is_written = |b: u64| image.read_block(b).iter().any(|&x| x != 0);
    let source = (0..256).find(|&b| is_written(b)).unwrap();
    let unwritten = (0..256).find(|&b| !is_written(b)).unwrap();
    image.copy_block_from(&image, source, unwritten);
    // Foreign data in an unwritten block is the target's own business.
    let other_unwritten = (unwritten + 1..256).find(|&b| !is_written(b)).unwrap();
    image.write_block(other_unwritten, &vec![0xab; 4096]);
    image.sync();
    let run = env.verify("disk.img", "m", &[]);
    run.assert_code(1);
    let report = run.report();
    assert_eq!(
        finding_set(&report),
        vec![(unwritten, "misdirected".to_string())]
    );
    assert_eq!(finding(&report, unwritten)["found_block"], source);
    assert_eq!(finding(&report, unwritten)["expected_generation"], 0);
}

#[test]
fn a_truncated_image_reports_the_written_blocks_past_its_end_unreadable() {
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "1MiB"]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(env.path("disk.img"))
        .unwrap()
        .set_len(512 * 1024)
        .unwrap();
    let run = env.verify("disk.img", "m", &[]);
    run.assert_code(1);
    let expected: Vec<(u64, String)> = (128..256).map(|b| (b, "unreadable".to_string())).collect();
    assert_eq!(finding_set(&run.report()), expected);
}

#[test]
fn the_summary_shows_expected_versus_found_and_a_hex_diff() {
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "64KiB"]);
    Image::open(&env.path("disk.img"), 4096).flip_bit(2, 1000, 7);
    let run = env.run(&["verify", "disk.img", "--manifest", "m"]);
    run.assert_code(1);
    assert!(run.stdout.contains("corrupt"), "{}", run.stdout);
    assert!(
        run.stdout.contains("1 bit(s) differ in bytes 1000..1001"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("000003e0  expected"), "{}", run.stdout);
    assert!(run.stdout.contains("000003e0  found"), "{}", run.stdout);
}

#[test]
fn inspect_decodes_a_block_sector_by_sector() {
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "64KiB"]);
    let run = env.run(&["inspect", "disk.img", "--manifest", "m", "--block", "3"]);
    run.assert_code(0);
    assert!(run.stdout.contains("now: generation 1"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("sectors 0-7: this block, generation 1, write "),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("verdict: ok"), "{}", run.stdout);
    Image::open(&env.path("disk.img"), 4096).zero_block(3);
    let run = env.run(&["inspect", "disk.img", "--manifest", "m", "--block", "3"]);
    run.assert_code(1);
    assert!(run.stdout.contains("verdict: zeroed"), "{}", run.stdout);
}

#[test]
fn run_with_the_json_report_on_stdout_keeps_stdout_pure_json() {
    let env = TestEnv::new();
    let run = env.run(&[
        "run",
        "disk.img",
        "--manifest",
        "m",
        "--size",
        "256KiB",
        "--json",
        "-",
    ]);
    run.assert_code(0);
    let report = run.report();
    assert_eq!(report["schema"], "blockstamp.report/1");
    assert!(run.stderr.contains("wrote 64 block(s)"), "{}", run.stderr);
}
