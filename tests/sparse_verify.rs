//! Verify of a sparse image reads its data extents (and the written blocks
//! that now lie in holes), not the whole target, and judges every block as
//! a full read does: the same findings, block for block.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use blockstamp::manifest::{Access, Manifest};
use common::{Image, TestEnv, finding_set};
use rustix::fs::SeekFrom;
use serde_json::Value;

const SIZE: u64 = 64 << 20;
const BLOCK: u64 = 4096;
const BLOCKS: u64 = SIZE / BLOCK;

/// Bytes in the data extents of `path` (SEEK_DATA / SEEK_HOLE).
fn data_bytes(path: &Path) -> u64 {
    let file = File::open(path).expect("open image");
    let size = file.metadata().expect("stat image").len();
    let mut total = 0;
    let mut position = 0;
    while position < size {
        let start = match rustix::fs::seek(&file, SeekFrom::Data(position)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => panic!("SEEK_DATA: {e}"),
        };
        let end = rustix::fs::seek(&file, SeekFrom::Hole(start)).expect("SEEK_HOLE");
        total += end.min(size) - start;
        position = end;
    }
    total
}

/// A 64 MiB sparse image with 1% of its 4 KiB blocks written; the blocks
/// the manifest says were written.
fn sparse_image(env: &TestEnv, seed: &str) -> Vec<u64> {
    env.write(
        "disk.img",
        "m",
        &["--size", "64MiB", "--coverage", "0.01", "--seed", seed],
    );
    let manifest = Manifest::open(&env.path("m"), Access::Read).expect("open manifest");
    let written: Vec<u64> = (0..BLOCKS)
        .filter(|&b| manifest.generation(b) != 0)
        .collect();
    assert_eq!(
        written.len() as u64,
        BLOCKS / 100 + 1,
        "1% of the blocks, rounded"
    );
    let data = data_bytes(&env.path("disk.img"));
    assert!(
        data < SIZE / 10,
        "the image should be sparse ({data} bytes of data); this filesystem keeps no holes"
    );
    written
}

fn bytes_read(report: &Value) -> u64 {
    report["bytes_read"].as_u64().expect("bytes_read")
}

#[test]
fn verify_of_a_sparse_image_reads_its_data_extents_not_the_target() {
    let env = TestEnv::new();
    sparse_image(&env, "3");
    let data = data_bytes(&env.path("disk.img"));
    let run = env.verify("disk.img", "m", &[]);
    run.assert_code(0);
    let report = run.report();
    assert_eq!(report["blocks"]["checked"].as_u64(), Some(BLOCKS));
    assert_eq!(report["blocks"]["ok"].as_u64(), Some(BLOCKS));
    let read = bytes_read(&report);
    assert!(
        read >= data && read * 4 <= data * 5,
        "read {read} bytes for {data} bytes of data extents (at most 5/4 allowed)"
    );
    // Reads of one block at most: the same bytes.
    let run = env.verify("disk.img", "m", &["--read-size", "4KiB"]);
    run.assert_code(0);
    assert_eq!(bytes_read(&run.report()), read);
}

#[test]
fn findings_on_a_sparse_image_are_those_of_a_full_read() {
    let env = TestEnv::new();
    let written = sparse_image(&env, "4");
    let image = Image::open(&env.path("disk.img"), BLOCK);
    let (damaged, punched, source) = (written[3], written[10], written[20]);
    // A block the run never wrote, in a hole before the damage: the stamp
    // copied there makes it data, and a misdirected write.
    let landing = (1..BLOCKS)
        .find(|b| {
            !written.contains(&(b - 1)) && !written.contains(b) && !written.contains(&(b + 1))
        })
        .expect("an unwritten block");
    image.flip_bit(damaged, 100, 3);
    image.punch_hole(punched);
    image.copy_block_from(&image, source, landing);
    image.sync();
    let mut expected = vec![
        (damaged, "corrupt".to_string()),
        (punched, "zeroed".to_string()),
        (landing, "misdirected".to_string()),
    ];
    expected.sort();

    let sparse = env.verify("disk.img", "m", &[]);
    sparse.assert_code(1);
    let sparse = sparse.report();
    assert_eq!(finding_set(&sparse), expected);
    let data = data_bytes(&env.path("disk.img"));
    // The punched block is read too (a written block in a hole is judged).
    assert!(
        bytes_read(&sparse) * 4 <= (data + BLOCK) * 5,
        "read {} bytes for {data} bytes of data extents and one punched block",
        bytes_read(&sparse)
    );

    // The same bytes with no holes: verify reads every block.
    let dense = File::create(env.path("dense.img")).expect("create dense copy");
    let source = File::open(env.path("disk.img")).expect("open image");
    let mut chunk = vec![0u8; 1 << 20];
    for offset in (0..SIZE).step_by(chunk.len()) {
        source
            .read_exact_at(&mut chunk, offset)
            .expect("read image");
        dense
            .write_all_at(&chunk, offset)
            .expect("write dense copy");
    }
    dense.sync_all().expect("sync dense copy");
    assert_eq!(data_bytes(&env.path("dense.img")), SIZE);
    let full = env.verify("dense.img", "m", &[]);
    full.assert_code(1);
    let full = full.report();
    assert_eq!(bytes_read(&full), SIZE);
    assert_eq!(sparse["findings"], full["findings"]);
    assert_eq!(sparse["findings_by_class"], full["findings_by_class"]);
    assert_eq!(sparse["blocks"], full["blocks"]);
}
