//! Discard and write-zeroes on real block devices (loop devices over sparse
//! files): what the target reports from the kernel's queue limits, what a
//! read returns afterwards, what becomes of the backing file, and the
//! refusal of a discard that is not whole discard units. Then the same
//! through the io_uring engine, whose discards on a device must reach it
//! as discards (the device's own discard counter says so), not as the
//! unmapping write-zeroes that fallocate(PUNCH_HOLE) is on a device.
//!
//! Every test attaches its own loop device and detaches it, failing or not.

mod common {
    pub mod loopdev;
    pub mod need;
    pub mod tmpfs;
}

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use blockstamp::buf::AlignedBuf;
use blockstamp::engine::uring::UringEngine;
use blockstamp::engine::{Completion, Engine, Io, IoKind};
use blockstamp::storage::{self, OpenRequest, Target, ZeroFlags};
use common::loopdev::LoopDevice;
use common::need::{Need, require};
use common::tmpfs::Tmpfs;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;
/// The part of the device the tests write their pattern over.
const PATTERN_BYTES: u64 = MIB;

fn open(device: &LoopDevice) -> Arc<dyn Target> {
    let request = OpenRequest {
        write: true,
        direct: true,
        ..OpenRequest::default()
    };
    Arc::from(storage::open(device.uri(), &request).expect("open the loop device"))
}

/// What block `block` holds in these tests: never zero.
fn pattern_block(block: u64) -> Vec<u8> {
    vec![1 + (block % 251) as u8; BLOCK as usize]
}

fn write_pattern(target: &dyn Target) {
    let mut buf = AlignedBuf::new(BLOCK as usize);
    for block in 0..PATTERN_BYTES / BLOCK {
        buf.copy_from_slice(&pattern_block(block));
        target.write_at(&buf, block * BLOCK, false).unwrap();
    }
    target.flush().unwrap();
}

fn read(target: &dyn Target, offset: u64, len: u64) -> Vec<u8> {
    let mut buf = AlignedBuf::new(len as usize);
    target.read_at(&mut buf, offset).unwrap();
    buf.to_vec()
}

/// Every block of the pattern area reads as the pattern, except those in
/// `zeroed`, which read as zeros.
fn assert_reads(target: &dyn Target, zeroed: &[std::ops::Range<u64>]) {
    let contents = read(target, 0, PATTERN_BYTES);
    for block in 0..PATTERN_BYTES / BLOCK {
        let offset = block * BLOCK;
        let got = &contents[offset as usize..(offset + BLOCK) as usize];
        if zeroed.iter().any(|range| range.contains(&offset)) {
            assert!(
                got.iter().all(|&b| b == 0),
                "block at {offset} should read zeros"
            );
        } else {
            assert_eq!(got, pattern_block(block), "block at {offset} changed");
        }
    }
}

/// Bytes the backing file has allocated, after its dirty pages are written.
fn allocated_bytes(device: &LoopDevice) -> u64 {
    let file = File::open(&device.backing_file).unwrap();
    file.sync_all().unwrap();
    file.metadata().unwrap().blocks() * 512
}

/// Whether `range` of the backing file is one hole (SEEK_HOLE finds its
/// start, SEEK_DATA finds data only at or after its end).
fn is_hole(device: &LoopDevice, range: std::ops::Range<u64>) -> bool {
    use rustix::fs::{SeekFrom, seek};
    let file = File::open(&device.backing_file).unwrap();
    file.sync_all().unwrap();
    let hole = seek(&file, SeekFrom::Hole(range.start)).unwrap();
    let data = match seek(&file, SeekFrom::Data(range.start)) {
        Ok(data) => data,
        Err(rustix::io::Errno::NXIO) => u64::MAX,
        Err(e) => panic!("SEEK_DATA: {e}"),
    };
    hole == range.start && data >= range.end
}

/// The device's count of discarded sectors (field 14 of
/// /sys/block/NAME/stat): discards add to it, writes and write-zeroes never.
fn discarded_sectors(device: &LoopDevice) -> u64 {
    let stat = std::fs::read_to_string(format!("/sys/block/{}/stat", device.name())).unwrap();
    let fields: Vec<u64> = stat
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    fields[13]
}

fn sysfs_queue(device: &LoopDevice, name: &str) -> u64 {
    let path = format!("/sys/block/{}/queue/{name}", device.name());
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_loop_device_reports_discard_and_write_zeroes_from_its_queue_limits() {
    let Some(device) = LoopDevice::attach(8 * MIB, &[]) else {
        return;
    };
    let target = open(&device);
    let ops = target.space_ops();
    assert!(ops.discard, "loop devices take discards");
    assert!(ops.write_zeroes);
    assert!(!ops.fast_zero, "block devices have no fast-zero request");
    assert_eq!(
        ops.discard_granularity,
        sysfs_queue(&device, "discard_granularity")
    );
    assert_eq!(ops.discard_granularity, 4096);
    let discard_max = sysfs_queue(&device, "discard_max_bytes");
    let zeroes_max = sysfs_queue(&device, "write_zeroes_max_bytes");
    assert!(discard_max > 0 && zeroes_max > 0);
    assert_eq!(
        ops.max_bytes,
        discard_max.min(zeroes_max) / 4096 * 4096,
        "the smaller limit, in whole discard units"
    );
    // The kernel states no promise about what a discarded block reads.
    assert_eq!(sysfs_queue(&device, "discard_zeroes_data"), 0);
    assert_eq!(ops.discard_reads, None);
}

#[test]
fn a_discard_punches_a_hole_in_the_backing_file_and_reads_zeros() {
    let Some(device) = LoopDevice::attach(8 * MIB, &[]) else {
        return;
    };
    let target = open(&device);
    write_pattern(&*target);
    let range = 256 * KIB..512 * KIB;
    assert!(!is_hole(&device, range.clone()));
    let discarded_before = discarded_sectors(&device);

    target
        .discard(range.start, range.end - range.start)
        .unwrap();

    assert!(is_hole(&device, range.clone()), "no hole where discarded");
    assert_eq!(
        discarded_sectors(&device) - discarded_before,
        (range.end - range.start) / 512,
        "the device saw a discard of exactly the range"
    );
    assert_reads(&*target, &[range]);
}

#[test]
fn write_zeroes_without_unmap_reads_zeros_and_keeps_the_range_allocated() {
    let Some(device) = LoopDevice::attach(8 * MIB, &[]) else {
        return;
    };
    let target = open(&device);
    write_pattern(&*target);
    let allocated_before = allocated_bytes(&device);
    let discarded_before = discarded_sectors(&device);
    let range = 128 * KIB..384 * KIB;

    target
        .write_zeroes(range.start, range.end - range.start, ZeroFlags::default())
        .unwrap();

    assert_reads(&*target, &[range]);
    assert!(
        allocated_bytes(&device) >= allocated_before,
        "write-zeroes without unmap deallocated the backing file"
    );
    assert_eq!(
        discarded_sectors(&device),
        discarded_before,
        "not a discard"
    );
}

#[test]
fn write_zeroes_with_unmap_reads_zeros() {
    let Some(device) = LoopDevice::attach(8 * MIB, &[]) else {
        return;
    };
    let target = open(&device);
    write_pattern(&*target);
    let discarded_before = discarded_sectors(&device);
    let range = 512 * KIB..576 * KIB;
    let unmap = ZeroFlags {
        unmap: true,
        fast: false,
    };

    target
        .write_zeroes(range.start, range.end - range.start, unmap)
        .unwrap();

    // A hole is allowed (the loop driver punches one), not required.
    assert_reads(&*target, &[range]);
    assert_eq!(
        discarded_sectors(&device),
        discarded_before,
        "not a discard"
    );
}

#[test]
fn a_discard_not_made_of_whole_discard_units_is_refused_and_changes_nothing() {
    let Some(device) = LoopDevice::attach(8 * MIB, &[]) else {
        return;
    };
    let target = open(&device);
    write_pattern(&*target);
    let image_before = device.contents();
    let discarded_before = discarded_sectors(&device);

    for (offset, len) in [(512, 4096), (4096, 2048), (8192, 0)] {
        let error = target.discard(offset, len).unwrap_err();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::InvalidInput,
            "discard of {len} at {offset}: {error}"
        );
    }
    let error = target.discard(512, 4096).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "discard of 4096 bytes at offset 512 of target {} is not whole 4096-byte discard units (discard_granularity)",
            device.uri()
        )
    );
    // Sector-aligned but not whole sectors is no write-zeroes either.
    let error = target
        .write_zeroes(4096, 100, ZeroFlags::default())
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);

    assert_eq!(discarded_sectors(&device), discarded_before);
    assert!(device.contents() == image_before, "the device changed");
    assert_reads(&*target, &[]);
}

/// Submit `ios` one burst at a time and return their completions by id.
fn run(engine: &mut UringEngine, ios: Vec<Io>) -> Vec<Completion> {
    for io in ios {
        engine.submit(io).unwrap();
    }
    engine.kick().unwrap();
    let mut done = Vec::new();
    while engine.in_flight() > 0 {
        done.extend(engine.complete(1).unwrap());
    }
    done.sort_by_key(|completion| completion.id);
    done
}

fn space_io(id: u64, kind: IoKind) -> Io {
    Io {
        id,
        kind,
        buf: AlignedBuf::new(0),
        stamps: None,
    }
}

/// Linux 6.12 and later carry BLOCK_URING_CMD_DISCARD.
fn kernel_has_uring_discard() -> bool {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (6, 12)
}

#[test]
fn the_uring_engine_discards_and_zeroes_a_block_device() {
    if !require(Need::IoUring) {
        return;
    }
    let Some(device) = LoopDevice::attach(8 * MIB, &[]) else {
        return;
    };
    let target = open(&device);
    write_pattern(&*target);
    let mut engine = UringEngine::new(target.clone(), 8, BLOCK as usize).unwrap();
    assert!(engine.block_device_discards_through_ring().is_some());
    let discarded_before = discarded_sectors(&device);
    let allocated_before = allocated_bytes(&device);
    let unmap = ZeroFlags {
        unmap: true,
        fast: false,
    };

    let completions = run(
        &mut engine,
        vec![
            space_io(
                0,
                IoKind::Discard {
                    offset: 0,
                    len: 128 * KIB,
                },
            ),
            space_io(
                1,
                IoKind::Zero {
                    offset: 256 * KIB,
                    len: 64 * KIB,
                    zero: ZeroFlags::default(),
                },
            ),
            space_io(
                2,
                IoKind::Zero {
                    offset: 512 * KIB,
                    len: 64 * KIB,
                    zero: unmap,
                },
            ),
            // Not whole discard units: refused, nothing done.
            space_io(
                3,
                IoKind::Discard {
                    offset: 768 * KIB + 512,
                    len: 4096,
                },
            ),
        ],
    );

    let results: Vec<_> = completions
        .iter()
        .map(|c| c.result.as_ref().map_err(|e| e.kind()))
        .collect();
    assert_eq!(
        results,
        vec![
            Ok(&()),
            Ok(&()),
            Ok(&()),
            Err(std::io::ErrorKind::InvalidInput)
        ]
    );
    assert_eq!(
        discarded_sectors(&device) - discarded_before,
        128 * KIB / 512,
        "exactly the discard reached the device as a discard"
    );
    assert!(is_hole(&device, 0..128 * KIB), "no hole where discarded");
    assert_reads(
        &*target,
        &[0..128 * KIB, 256 * KIB..320 * KIB, 512 * KIB..576 * KIB],
    );
    assert!(
        allocated_bytes(&device) >= allocated_before - 128 * KIB - 64 * KIB,
        "write-zeroes without unmap deallocated the backing file"
    );
    if kernel_has_uring_discard() {
        assert_eq!(
            engine.block_device_discards_through_ring(),
            Some(true),
            "Linux 6.12+ takes BLOCK_URING_CMD_DISCARD"
        );
    }
}

/// A loop device over a file on tmpfs, which has no FALLOC_FL_ZERO_RANGE:
/// its first WRITE ZEROES fails, the kernel zeroes by writing instead and
/// stops offering WRITE ZEROES (write_zeroes_max_bytes becomes 0). From
/// then on the unmapping form (fallocate PUNCH_HOLE on the device) fails
/// with EOPNOTSUPP, and a write-zeroes that allows unmapping must still
/// zero, the way that keeps the blocks.
#[test]
fn a_device_without_write_zeroes_still_zeroes_with_unmap_allowed() {
    if !require(Need::Root) {
        return;
    }
    let tmpfs = Tmpfs::mount("32M");
    let Some(device) = LoopDevice::attach_in(tmpfs.dir(), 8 * MIB, &[]) else {
        return;
    };
    let target = open(&device);
    write_pattern(&*target);
    let unmap = ZeroFlags {
        unmap: true,
        fast: false,
    };

    target
        .write_zeroes(0, 64 * KIB, ZeroFlags::default())
        .unwrap();
    assert_eq!(
        sysfs_queue(&device, "write_zeroes_max_bytes"),
        0,
        "the kernel should have stopped offering WRITE ZEROES on a loop device over tmpfs"
    );
    target.write_zeroes(128 * KIB, 64 * KIB, unmap).unwrap();
    assert!(target.space_ops().write_zeroes);

    let through_ring = require(Need::IoUring).then(|| {
        let mut engine = UringEngine::new(target.clone(), 4, BLOCK as usize).unwrap();
        let kind = IoKind::Zero {
            offset: 256 * KIB,
            len: 64 * KIB,
            zero: unmap,
        };
        let completions = run(&mut engine, vec![space_io(0, kind)]);
        completions[0].result.as_ref().unwrap();
        256 * KIB..320 * KIB
    });

    let mut zeroed = vec![0..64 * KIB, 128 * KIB..192 * KIB];
    zeroed.extend(through_ring);
    assert_reads(&*target, &zeroed);
}
