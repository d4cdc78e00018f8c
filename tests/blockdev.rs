//! Block-device targets on real loop devices: geometry, IO, and every
//! safety refusal of docs/CONTRACT.md ("Safety"), each shown to leave the
//! device's bytes exactly as they were.
//!
//! Every test attaches its own loop devices, so tests run in parallel
//! without sharing a device, and opens no other device.

mod common {
    pub mod loopdev;
    pub mod need;
}

use std::fs::File;
use std::os::unix::fs::FileExt;

use blockstamp::buf::AlignedBuf;
use blockstamp::error::Error;
use blockstamp::storage::blockdev::BlockDeviceTarget;
use blockstamp::storage::{self, OpenRequest, Target, TargetKind};
use common::loopdev::{LoopDevice, Mount, Swap, mkfs_ext4};

const MIB: u64 = 1 << 20;

fn write_request() -> OpenRequest {
    OpenRequest {
        write: true,
        direct: true,
        ..OpenRequest::default()
    }
}

fn forced_write_request() -> OpenRequest {
    OpenRequest {
        force: true,
        ..write_request()
    }
}

fn read_request() -> OpenRequest {
    OpenRequest {
        direct: true,
        ..OpenRequest::default()
    }
}

fn open(device: &LoopDevice, request: &OpenRequest) -> Box<dyn Target> {
    storage::open(device.uri(), request)
        .unwrap_or_else(|e| panic!("opening {} failed: {e}", device.uri()))
}

/// Open for writing, expecting a safety refusal (exit 2); returns its message.
fn refusal(device: &LoopDevice, request: &OpenRequest) -> String {
    match storage::open(device.uri(), request) {
        Ok(_) => panic!(
            "{} was opened for writing; expected a refusal",
            device.uri()
        ),
        Err(Error::Usage(message)) => message,
        Err(other) => panic!(
            "expected a usage error (exit 2) for {}, got: {other}",
            device.uri()
        ),
    }
}

/// A buffer of `len` bytes of `value`, aligned for O_DIRECT.
fn filled(len: usize, value: u8) -> AlignedBuf {
    let mut buf = AlignedBuf::new(len);
    buf.fill(value);
    buf
}

/// An MBR with one Linux partition at LBA 2048 of `sectors` 512-byte sectors.
fn write_mbr(image: &File, sectors: u32) {
    let mut entry = [0u8; 16];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    image.write_all_at(&entry, 446).unwrap();
    image.write_all_at(&[0x55, 0xAA], 510).unwrap();
}

/// A protective MBR and a GPT header at LBA 1 for `logical_sector_size`.
fn write_gpt_header(image: &File, logical_sector_size: u64) {
    let mut entry = [0u8; 16];
    entry[4] = 0xEE;
    entry[8..12].copy_from_slice(&1u32.to_le_bytes());
    entry[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    image.write_all_at(&entry, 446).unwrap();
    image.write_all_at(&[0x55, 0xAA], 510).unwrap();
    image
        .write_all_at(b"EFI PART", logical_sector_size)
        .unwrap();
}

fn sysfs_number(device: &LoopDevice, attribute: &str) -> u32 {
    let path = format!("/sys/class/block/{}/{attribute}", device.name());
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn reads_size_and_512_byte_sectors_from_the_kernel() {
    let Some(device) = LoopDevice::attach(64 * MIB, &[]) else {
        return;
    };
    let target = open(&device, &read_request());
    let info = target.info();
    assert_eq!(info.kind, TargetKind::BlockDevice);
    assert_eq!(info.size_bytes, 64 * MIB);
    assert_eq!(info.logical_sector_size, 512);
    assert_eq!(
        info.physical_sector_size,
        sysfs_number(&device, "queue/physical_block_size")
    );
    assert!(info.direct_io, "block devices are always opened O_DIRECT");
    assert!(info.read_only);
    assert!(target.data_ranges().is_none());
}

#[test]
fn reads_4096_byte_logical_sectors_from_the_kernel() {
    let Some(device) = LoopDevice::attach(16 * MIB, &["--sector-size", "4096"]) else {
        return;
    };
    let info = open(&device, &read_request()).info().clone();
    assert_eq!(info.size_bytes, 16 * MIB);
    assert_eq!(info.logical_sector_size, 4096);
    assert_eq!(info.physical_sector_size, 4096);
}

#[test]
fn a_loop_device_is_identified_by_its_backing_file() {
    let Some(device) = LoopDevice::attach(8 * MIB, &[]) else {
        return;
    };
    let identity = open(&device, &read_request()).info().identity.clone();
    assert_eq!(identity.model.as_deref(), Some("loop"));
    assert_eq!(identity.serial.as_deref(), device.backing_file.to_str());
}

#[test]
fn written_blocks_read_back_from_the_device_and_its_medium() {
    let Some(device) = LoopDevice::attach(16 * MIB, &[]) else {
        return;
    };
    let target = open(&device, &write_request());
    assert!(!target.info().read_only);
    let last = 16 * MIB - 4096;
    let writes = [
        (0u64, 0xA1u8, false),
        (5 * MIB + 512, 0xB2, true),
        (last, 0xC3, true),
    ];
    for (offset, value, fua) in writes {
        target.write_at(&filled(4096, value), offset, fua).unwrap();
    }
    target.flush().unwrap();
    for (offset, value, _) in writes {
        let mut buf = AlignedBuf::new(4096);
        target.read_at(&mut buf, offset).unwrap();
        assert!(buf.iter().all(|&b| b == value), "device at {offset}");
        assert_eq!(
            device.read_backing(offset, 4096),
            vec![value; 4096],
            "medium at {offset}"
        );
    }
}

#[test]
fn io_past_the_end_of_the_device_is_refused() {
    let Some(device) = LoopDevice::attach(8 * MIB, &[]) else {
        return;
    };
    let target = open(&device, &write_request());
    let before = device.contents();
    let error = target
        .write_at(&filled(8192, 0xEE), 8 * MIB - 4096, false)
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(target.read_at(&mut AlignedBuf::new(4096), 8 * MIB).is_err());
    assert!(
        device.contents() == before,
        "a refused write changed the device"
    );
}

#[test]
fn size_larger_than_the_device_is_refused() {
    let Some(device) = LoopDevice::attach(8 * MIB, &[]) else {
        return;
    };
    let request = OpenRequest {
        create_size: Some(8 * MIB + 4096),
        ..write_request()
    };
    let message = refusal(&device, &request);
    assert!(
        message.contains(&format!("--size {}", 8 * MIB + 4096)),
        "{message}"
    );
    assert!(
        message.contains(&format!("({} bytes)", 8 * MIB)),
        "{message}"
    );
}

#[test]
fn size_smaller_than_the_device_limits_the_target_to_its_start() {
    let Some(device) = LoopDevice::attach(8 * MIB, &[]) else {
        return;
    };
    let request = OpenRequest {
        create_size: Some(2 * MIB),
        ..write_request()
    };
    let target = BlockDeviceTarget::open(&device.path, device.uri(), &request).unwrap();
    assert_eq!(target.info().size_bytes, 2 * MIB);
    assert_eq!(target.device_size_bytes(), 8 * MIB);
    target
        .write_at(&filled(4096, 1), 2 * MIB - 4096, false)
        .unwrap();
    assert!(target.write_at(&filled(4096, 1), 2 * MIB, false).is_err());
    assert_eq!(device.read_backing(2 * MIB, 4096), vec![0; 4096]);
}

#[test]
fn size_that_is_not_whole_sectors_is_refused() {
    let Some(device) = LoopDevice::attach(8 * MIB, &["--sector-size", "4096"]) else {
        return;
    };
    let request = OpenRequest {
        create_size: Some(6144),
        ..write_request()
    };
    let message = refusal(&device, &request);
    assert!(
        message.contains("--size 6144") && message.contains("4096-byte"),
        "{message}"
    );
}

#[test]
fn refuses_a_device_with_an_ext4_filesystem_without_writing() {
    let Some(device) = LoopDevice::attach(32 * MIB, &[]) else {
        return;
    };
    let Some(()) = mkfs_ext4(&device.path) else {
        return;
    };
    let before = device.contents();
    let message = refusal(&device, &write_request());
    assert!(
        message.contains("ext2/3/4 filesystem") && message.contains("--force"),
        "{message}"
    );
    assert!(
        device.contents() == before,
        "the refusal changed the device"
    );
}

#[test]
fn force_overrides_the_filesystem_refusal() {
    let Some(device) = LoopDevice::attach(32 * MIB, &[]) else {
        return;
    };
    let Some(()) = mkfs_ext4(&device.path) else {
        return;
    };
    let before = device.contents();
    let target = open(&device, &forced_write_request());
    target.write_at(&filled(4096, 0x5A), 0, true).unwrap();
    assert!(
        device.contents() != before,
        "the forced write did not reach the device"
    );
}

#[test]
fn reading_a_device_with_a_filesystem_is_not_refused() {
    let Some(device) = LoopDevice::attach(32 * MIB, &[]) else {
        return;
    };
    let Some(()) = mkfs_ext4(&device.path) else {
        return;
    };
    let Some(_mount) = Mount::read_only(&device.path) else {
        return;
    };
    // verify and inspect only read: a mounted, formatted device is fine.
    let target = open(&device, &read_request());
    target.read_at(&mut AlignedBuf::new(4096), 0).unwrap();
}

#[test]
fn refuses_a_device_with_an_mbr_partition_table_without_writing() {
    let Some(device) = LoopDevice::attach_prepared(16 * MIB, &[], |image| write_mbr(image, 8192))
    else {
        return;
    };
    let before = device.contents();
    let message = refusal(&device, &write_request());
    assert!(
        message.contains("MBR partition table") && message.contains("--force"),
        "{message}"
    );
    assert!(
        device.contents() == before,
        "the refusal changed the device"
    );
}

#[test]
fn refuses_a_device_with_a_gpt_for_512_and_4096_byte_sectors() {
    for sector_size in [512u64, 4096] {
        let sector_option = sector_size.to_string();
        let options = ["--sector-size", sector_option.as_str()];
        let Some(device) = LoopDevice::attach_prepared(16 * MIB, &options, |image| {
            write_gpt_header(image, sector_size)
        }) else {
            return;
        };
        let before = device.contents();
        let message = refusal(&device, &write_request());
        assert!(
            message.contains("GPT partition table"),
            "{sector_size}-byte sectors: {message}"
        );
        assert!(
            !message.contains("MBR"),
            "a protective MBR is part of the GPT: {message}"
        );
        assert!(
            device.contents() == before,
            "the refusal changed the device"
        );
    }
}

#[test]
fn refuses_a_device_with_kernel_partitions_and_names_them() {
    let Some(device) =
        LoopDevice::attach_prepared(32 * MIB, &["--partscan"], |image| write_mbr(image, 16384))
    else {
        return;
    };
    let Some(()) = device.add_partitions() else {
        return;
    };
    let before = device.contents();
    let message = refusal(&device, &write_request());
    let partition = format!("{}p1", device.name());
    assert!(
        message.contains(&partition) && message.contains("--force"),
        "{message}"
    );
    assert!(
        device.contents() == before,
        "the refusal changed the device"
    );
}

#[test]
fn refuses_a_mounted_device_even_with_force() {
    let Some(device) = LoopDevice::attach(32 * MIB, &[]) else {
        return;
    };
    let Some(()) = mkfs_ext4(&device.path) else {
        return;
    };
    let Some(mount) = Mount::read_only(&device.path) else {
        return;
    };
    let before = device.contents();
    let message = refusal(&device, &forced_write_request());
    let mount_point = mount.mount_point.path().to_str().unwrap();
    assert!(
        message.contains("mounted at") && message.contains(mount_point),
        "{message}"
    );
    assert!(message.contains("even with --force"), "{message}");
    assert!(
        device.contents() == before,
        "the refusal changed the device"
    );
}

#[test]
fn refuses_a_disk_whose_partition_is_mounted_even_with_force() {
    let Some(device) =
        LoopDevice::attach_prepared(32 * MIB, &["--partscan"], |image| write_mbr(image, 32768))
    else {
        return;
    };
    let Some(()) = device.add_partitions() else {
        return;
    };
    let partition = std::path::PathBuf::from(format!("{}p1", device.uri()));
    let Some(()) = mkfs_ext4(&partition) else {
        return;
    };
    let Some(_mount) = Mount::read_only(&partition) else {
        return;
    };
    let before = device.contents();
    let message = refusal(&device, &forced_write_request());
    assert!(
        message.contains(&format!("partition {}p1 mounted at", device.name())),
        "{message}"
    );
    assert!(
        device.contents() == before,
        "the refusal changed the device"
    );
}

#[test]
fn refuses_active_swap_even_with_force() {
    let Some(device) = LoopDevice::attach(16 * MIB, &[]) else {
        return;
    };
    let Some(_swap) = Swap::on(&device.path) else {
        return;
    };
    let before = device.contents();
    let message = refusal(&device, &forced_write_request());
    assert!(
        message.contains("swap") && message.contains("even with --force"),
        "{message}"
    );
    assert!(
        device.contents() == before,
        "the refusal changed the device"
    );
}

#[test]
fn refuses_a_device_held_open_exclusively_by_another_user() {
    let Some(device) = LoopDevice::attach(8 * MIB, &[]) else {
        return;
    };
    let _holder = device
        .claim_exclusively()
        .expect("claim the fresh loop device");
    let before = device.contents();
    let message = refusal(&device, &write_request());
    assert!(
        message.contains("open exclusively") && message.contains("--force"),
        "{message}"
    );
    assert!(
        device.contents() == before,
        "the refusal changed the device"
    );
}

#[test]
fn force_writes_to_a_device_held_open_exclusively_without_claiming_it() {
    let Some(device) = LoopDevice::attach(8 * MIB, &[]) else {
        return;
    };
    let _holder = device
        .claim_exclusively()
        .expect("claim the fresh loop device");
    let target =
        BlockDeviceTarget::open(&device.path, device.uri(), &forced_write_request()).unwrap();
    assert!(!target.is_exclusive());
    target.write_at(&filled(4096, 7), 4096, true).unwrap();
    assert_eq!(device.read_backing(4096, 4096), vec![7; 4096]);
}

#[test]
fn a_device_opened_for_writing_is_claimed_exclusively() {
    let Some(device) = LoopDevice::attach(8 * MIB, &[]) else {
        return;
    };
    let target = BlockDeviceTarget::open(&device.path, device.uri(), &write_request()).unwrap();
    assert!(target.is_exclusive());
    let error = device.claim_exclusively().expect_err("claimed twice");
    assert_eq!(
        error.raw_os_error(),
        Some(rustix::io::Errno::BUSY.raw_os_error())
    );
    drop(target);
    // Other tests spawn losetup and mkfs meanwhile; a child between fork
    // and exec holds a copy of every descriptor of this process, ours too,
    // so the claim ends when that child has exec'd: wait a little for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while let Err(e) = device.claim_exclusively() {
        assert!(
            std::time::Instant::now() < deadline,
            "the claim outlived the target: {e}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn refuses_a_read_only_device_even_with_force() {
    let Some(device) = LoopDevice::attach(8 * MIB, &["--read-only"]) else {
        return;
    };
    let message = refusal(&device, &forced_write_request());
    assert!(message.contains("read-only"), "{message}");
    // Reading it is what verify does, and is fine.
    open(&device, &read_request());
}
