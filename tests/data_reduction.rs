//! Data-reduction knobs: compressible and deduplicable data that arrays can
//! shrink, verified exactly all the same.

mod common;

use std::collections::HashSet;

use common::{Image, TestEnv, finding, finding_set, snapshot};

#[test]
fn dedup_ratio_two_stores_about_half_the_blocks_as_shared_patterns() {
    let env = TestEnv::new();
    env.write(
        "disk.img",
        "m",
        &["--size", "8MiB", "--dedup-ratio", "2", "--passes", "2"],
    );
    env.verify("disk.img", "m", &[]).assert_code(0);
    let image = Image::open(&env.path("disk.img"), 4096);
    let distinct: HashSet<Vec<u8>> = (0..2048).map(|b| image.read_block(b)).collect();
    // About 1024 unique blocks plus at most 64 shared patterns.
    assert!(
        (900..1200).contains(&distinct.len()),
        "{} distinct blocks of 2048",
        distinct.len()
    );
}

#[test]
fn compress_ratio_two_leaves_about_half_of_each_sector_compressible() {
    let env = TestEnv::new();
    env.write(
        "disk.img",
        "m",
        &["--size", "4MiB", "--compress-ratio", "2"],
    );
    env.verify("disk.img", "m", &[]).assert_code(0);
    let bytes = std::fs::read(env.path("disk.img")).unwrap();
    let zeros = bytes.iter().filter(|&&b| b == 0).count() as f64 / bytes.len() as f64;
    assert!(
        (0.45..0.6).contains(&zeros),
        "{zeros:.2} of the image is zero fill"
    );
}

#[test]
fn faults_on_deduplicated_data_are_classified_exactly() {
    let env = TestEnv::new();
    let args = ["--size", "1MiB", "--dedup-ratio", "3", "--seed", "4"];
    env.write("disk.img", "m", &args);
    snapshot(&env.path("disk.img"), &env.path("gen1.img"));
    env.write("disk.img", "m", &["--seed", "5"]);
    env.verify("disk.img", "m", &[]).assert_code(0);
    let disk = Image::open(&env.path("disk.img"), 4096);
    let gen1 = Image::open(&env.path("gen1.img"), 4096);
    // Shared blocks: generation 2 content that appears elsewhere too.
    let contents: Vec<Vec<u8>> = (0..256).map(|b| disk.read_block(b)).collect();
    let shared: Vec<u64> = (0..256u64)
        .filter(|&b| {
            contents
                .iter()
                .filter(|c| **c == contents[b as usize])
                .count()
                > 1
        })
        .collect();
    let unique: Vec<u64> = (0..256u64).filter(|b| !shared.contains(b)).collect();
    assert!(
        shared.len() > 100 && unique.len() > 40,
        "{} shared, {} unique",
        shared.len(),
        unique.len()
    );
    let (s1, s2, s3, u1, u2) = (shared[0], shared[1], shared[2], unique[0], unique[1]);
    disk.copy_block_from(&gen1, s1, s1); // lost write of a shared block
    disk.zero_block(s2);
    disk.flip_bit(s3, 3000, 1);
    disk.copy_block_from(&gen1, u1, u1); // lost write of a unique block
    disk.copy_block_from(&disk, u2, unique[2]); // misdirected unique block
    disk.sync();
    let run = env.verify("disk.img", "m", &[]);
    run.assert_code(1);
    let report = run.report();
    let mut expected = vec![
        (s1, "lost_write".to_string()),
        (s2, "zeroed".to_string()),
        (s3, "corrupt".to_string()),
        (u1, "lost_write".to_string()),
        (unique[2], "misdirected".to_string()),
    ];
    expected.sort();
    assert_eq!(finding_set(&report), expected);
    assert_eq!(finding(&report, s1)["found_generation"], 1);
    assert_eq!(finding(&report, u1)["found_generation"], 1);
    assert_eq!(finding(&report, s3)["corruption"]["differing_bits"], 1);
    assert_eq!(finding(&report, unique[2])["found_block"], u2);
}
