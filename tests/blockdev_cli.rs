//! The whole tool on real block devices (loop devices this test attaches
//! and always detaches): bursty writes, verify, an injected fault, and the
//! identity check of "verify anywhere".

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use common::{TestEnv, finding_set};
use loopdev::LoopDevice;

#[test]
fn write_and_verify_a_block_device_with_bursts_and_find_a_lost_write() {
    let Some(device) = LoopDevice::attach(16 << 20, &["--direct-io=on"]) else {
        return;
    };
    let env = TestEnv::new();
    let target = device.uri();
    env.write(
        target,
        "m",
        &[
            "--io-size",
            "4KiB-32KiB",
            "--overwrite",
            "0.2",
            "--scatter",
            "stride",
        ],
    );
    let run = env.verify(target, "m", &[]);
    run.assert_code(0);
    let report = run.report();
    assert_eq!(report["target"]["kind"], "block_device");
    assert_eq!(report["direct_io"], true);
    assert_eq!(report["blocks"]["checked"], 4096);
    // Roll block 100 back to an older write: write once more, then put the
    // old bytes back through the device.
    let before = device.read_backing(100 * 4096, 4096);
    env.write(target, "m", &["--coverage", "1"]);
    use std::os::unix::fs::FileExt;
    let raw = std::fs::OpenOptions::new()
        .write(true)
        .open(&device.path)
        .unwrap();
    raw.write_all_at(&before, 100 * 4096).unwrap();
    raw.sync_all().unwrap();
    drop(raw);
    let run = env.verify(target, "m", &[]);
    run.assert_code(1);
    assert_eq!(
        finding_set(&run.report()),
        vec![(100, "lost_write".to_string())]
    );
}

#[test]
fn verify_warns_when_the_device_is_not_the_one_written() {
    let Some(first) = LoopDevice::attach(4 << 20, &[]) else {
        return;
    };
    let env = TestEnv::new();
    env.write(first.uri(), "m", &[]);
    // The same bytes on another device (another backing file): a verify
    // from "another host" of the wrong disk.
    let bytes = first.contents();
    let Some(second) = LoopDevice::attach_prepared(4 << 20, &[], |file| {
        use std::os::unix::fs::FileExt;
        file.write_all_at(&bytes, 0).unwrap();
    }) else {
        return;
    };
    let run = env.verify(second.uri(), "m", &[]);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("does not look like the device the manifest was written on"),
        "{}",
        run.stderr
    );
    let same = env.verify(first.uri(), "m", &[]);
    same.assert_code(0);
    assert!(
        !same.stderr.contains("does not look like"),
        "{}",
        same.stderr
    );
}

#[test]
fn a_block_device_written_with_a_size_limit_verifies_within_it() {
    let Some(device) = LoopDevice::attach(8 << 20, &[]) else {
        return;
    };
    let env = TestEnv::new();
    env.write(device.uri(), "m", &["--size", "2MiB"]);
    let run = env.verify(device.uri(), "m", &[]);
    run.assert_code(0);
    assert_eq!(run.report()["blocks"]["total"], 512);
    // Nothing past the limit was touched.
    assert!(
        device
            .read_backing(2 << 20, 6 << 20)
            .iter()
            .all(|&b| b == 0)
    );
}
