//! qcow2 images for tests: qemu-img in a test's scratch dir, and the
//! metadata as the tests damage it: the header, the L1 table and the L2
//! tables that map a guest cluster to a host cluster, so a test can point
//! a cluster at the wrong data the way a format bug would.

#![allow(dead_code)] // each test binary uses a different part

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use crate::common::TestEnv;
use crate::common::need::{Need, require};

/// qemu-img and qemu-nbd are here; otherwise skip (or fail under CI=true).
pub fn have_qemu() -> bool {
    require(Need::QemuImg) && require(Need::QemuNbd)
}

/// Run qemu-img in the scratch dir; its stdout. Fails the test with
/// qemu-img's message when it fails.
pub fn qemu_img(env: &TestEnv, args: &[&str]) -> String {
    let output = Command::new("qemu-img")
        .args(args)
        .current_dir(env.dir.path())
        .output()
        .expect("run qemu-img");
    assert!(
        output.status.success(),
        "qemu-img {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("qemu-img output is UTF-8")
}

/// The parts of a qcow2 image's metadata that map a guest cluster to a
/// host cluster: header → L1 table → L2 tables → data clusters. All
/// big-endian.
pub struct Qcow2Metadata {
    file: File,
    pub cluster_bytes: u64,
    l1_table_offset: u64,
    l1_entries: u64,
}

/// L1 and L2 entries: bits 9–55 hold the host offset.
pub const QCOW2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry: the cluster is compressed (the rest of the entry differs then).
pub const QCOW2_COMPRESSED: u64 = 1 << 62;
/// L2 entry: the host cluster is referenced exactly once (written in place).
pub const QCOW2_COPIED: u64 = 1 << 63;
/// Standard L2 entry of qcow2 v3: the cluster reads as zeros.
pub const QCOW2_ZERO: u64 = 1;
/// Incompatible feature bits this parser does not handle: an external data
/// file (bit 2) and extended L2 entries with subclusters (bit 4).
const QCOW2_UNHANDLED_FEATURES: u64 = (1 << 2) | (1 << 4);

impl Qcow2Metadata {
    pub fn open(path: &Path) -> Qcow2Metadata {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open qcow2 image");
        let mut header = [0u8; 80];
        file.read_exact_at(&mut header, 0)
            .expect("read qcow2 header");
        let be32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().unwrap());
        let be64 = |at: usize| u64::from_be_bytes(header[at..at + 8].try_into().unwrap());
        assert_eq!(&header[0..4], b"QFI\xfb", "not a qcow2 image");
        let version = be32(4);
        if version >= 3 {
            let incompatible = be64(72);
            assert_eq!(
                incompatible & QCOW2_UNHANDLED_FEATURES,
                0,
                "qcow2 incompatible features {incompatible:#x}"
            );
        }
        Qcow2Metadata {
            file,
            cluster_bytes: 1 << be32(20),
            l1_entries: u64::from(be32(36)),
            l1_table_offset: be64(40),
        }
    }

    fn read_u64(&self, at: u64) -> u64 {
        let mut bytes = [0u8; 8];
        self.file.read_exact_at(&mut bytes, at).expect("read qcow2");
        u64::from_be_bytes(bytes)
    }

    fn write_u64(&self, at: u64, value: u64) {
        self.file
            .write_all_at(&value.to_be_bytes(), at)
            .expect("write qcow2");
    }

    /// Where in the file the L2 entry of `guest_cluster` lives.
    fn l2_entry_at(&self, guest_cluster: u64) -> u64 {
        let l2_entries = self.cluster_bytes / 8;
        let l1_index = guest_cluster / l2_entries;
        assert!(
            l1_index < self.l1_entries,
            "cluster {guest_cluster} is past the L1 table"
        );
        let l2_table = self.read_u64(self.l1_table_offset + 8 * l1_index) & QCOW2_OFFSET_MASK;
        assert_ne!(l2_table, 0, "cluster {guest_cluster} has no L2 table");
        l2_table + 8 * (guest_cluster % l2_entries)
    }

    /// The L2 entry of `guest_cluster`, whatever it says.
    pub fn entry(&self, guest_cluster: u64) -> u64 {
        self.read_u64(self.l2_entry_at(guest_cluster))
    }

    /// The L2 entry of a cluster the overlay holds itself, uncompressed.
    pub fn allocated_entry(&self, guest_cluster: u64) -> u64 {
        let entry = self.read_u64(self.l2_entry_at(guest_cluster));
        assert_eq!(
            entry & QCOW2_COMPRESSED,
            0,
            "cluster {guest_cluster} is compressed"
        );
        assert_ne!(
            entry & QCOW2_OFFSET_MASK,
            0,
            "cluster {guest_cluster} is not allocated in the overlay"
        );
        entry
    }

    pub fn set_entry(&self, guest_cluster: u64, entry: u64) {
        self.write_u64(self.l2_entry_at(guest_cluster), entry);
    }

    pub fn sync(&self) {
        self.file.sync_all().expect("sync qcow2");
    }
}
