//! Partition-table, filesystem and volume signatures, recognised by their
//! magic numbers in the first and last bytes of a device.
//!
//! Pure functions over byte buffers, so they can be tested with synthetic
//! buffers and fuzzed: no IO, and no panic on any input of any length. A
//! buffer shorter than a format's magic offset simply does not show that
//! format. The checks follow where mkfs, mdadm, pvcreate, cryptsetup and
//! partitioners put their magic (the offsets libblkid uses), strengthened
//! where a magic is short enough to turn up by chance in a previous run's
//! data.

use std::fmt;

/// How much of the start of a device [`probe_head`] wants to see: up to the
/// end of the ZFS uberblock ring in vdev label L0 (128 KiB + 128 KiB).
pub const HEAD_PROBE_BYTES: usize = 256 * 1024;

/// How much of the end of a device [`probe_tail`] wants to see: covers the
/// md 0.90 superblock, the furthest from the end (at most 128 KiB).
pub const TAIL_PROBE_BYTES: usize = 128 * 1024;

/// Something on a device that writing would destroy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signature {
    MbrPartitionTable,
    GptPartitionTable,
    Ext,
    Xfs,
    Btrfs,
    F2fs,
    Swap,
    LvmPhysicalVolume,
    Luks,
    MdRaid,
    Bcache,
    Fat,
    ExFat,
    Ntfs,
    Iso9660,
    Zfs,
}

impl Signature {
    /// What was found, as a person would name it ("an ext2/3/4 filesystem").
    pub fn description(self) -> &'static str {
        match self {
            Signature::MbrPartitionTable => "an MBR partition table",
            Signature::GptPartitionTable => "a GPT partition table",
            Signature::Ext => "an ext2/3/4 filesystem",
            Signature::Xfs => "an XFS filesystem",
            Signature::Btrfs => "a btrfs filesystem",
            Signature::F2fs => "an F2FS filesystem",
            Signature::Swap => "a swap area",
            Signature::LvmPhysicalVolume => "an LVM2 physical volume",
            Signature::Luks => "a LUKS encrypted volume",
            Signature::MdRaid => "an md RAID member",
            Signature::Bcache => "a bcache device",
            Signature::Fat => "a FAT filesystem",
            Signature::ExFat => "an exFAT filesystem",
            Signature::Ntfs => "an NTFS filesystem",
            Signature::Iso9660 => "an ISO 9660 filesystem",
            Signature::Zfs => "a ZFS pool member",
        }
    }

    pub fn is_partition_table(self) -> bool {
        matches!(
            self,
            Signature::MbrPartitionTable | Signature::GptPartitionTable
        )
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// The signatures found in `head`, the first bytes of a device (ideally
/// [`HEAD_PROBE_BYTES`] of them), in a fixed order.
pub fn probe_head(head: &[u8]) -> Vec<Signature> {
    let mut found = Vec::new();
    let gpt = has_gpt_header(head, 512) || has_gpt_header(head, 4096);
    // Boot sectors of FAT, exFAT and NTFS end in 0x55AA like an MBR; the
    // filesystem is the truer name for what is there.
    let volume_boot_record = is_fat(head) || is_exfat(head) || is_ntfs(head);
    if gpt {
        found.push(Signature::GptPartitionTable);
    } else if !volume_boot_record && is_mbr(head) {
        // A GPT disk's protective MBR is part of the GPT, not a second table.
        found.push(Signature::MbrPartitionTable);
    }
    type Check = fn(&[u8]) -> bool;
    let checks: [(Signature, Check); 14] = [
        (Signature::Ext, is_ext),
        (Signature::Xfs, |b| bytes_at(b, 0, 4) == Some(b"XFSB")),
        (Signature::Btrfs, |b| {
            bytes_at(b, 0x10040, 8) == Some(b"_BHRfS_M")
        }),
        (Signature::F2fs, |b| le_u32(b, 1024) == Some(0xF2F5_2010)),
        (Signature::Swap, is_swap),
        (Signature::LvmPhysicalVolume, is_lvm2),
        (Signature::Luks, |b| {
            bytes_at(b, 0, 6) == Some(b"LUKS\xba\xbe")
        }),
        // md superblock 1.1 sits at the start, 1.2 at 4 KiB.
        (Signature::MdRaid, |b| {
            is_md_magic(b, 0) || is_md_magic(b, 4096)
        }),
        (Signature::Bcache, is_bcache),
        (Signature::Fat, is_fat),
        (Signature::ExFat, is_exfat),
        (Signature::Ntfs, is_ntfs),
        (Signature::Iso9660, |b| {
            bytes_at(b, 0x8001, 5) == Some(b"CD001")
        }),
        (Signature::Zfs, is_zfs),
    ];
    for (signature, check) in checks {
        if check(head) {
            found.push(signature);
        }
    }
    found
}

/// The signatures found in `tail`, the last `tail.len()` bytes of a device
/// of `device_size_bytes` (ideally [`TAIL_PROBE_BYTES`] of them): the GPT
/// backup header, and the md superblocks (0.90, 1.0) that live at the end.
pub fn probe_tail(tail: &[u8], device_size_bytes: u64) -> Vec<Signature> {
    let Some(tail_start) = device_size_bytes.checked_sub(tail.len() as u64) else {
        return Vec::new();
    };
    // Bytes at an absolute device offset, if the tail holds them.
    let at = |device_offset: u64, len: usize| -> Option<&[u8]> {
        let index = usize::try_from(device_offset.checked_sub(tail_start)?).ok()?;
        bytes_at(tail, index, len)
    };
    let mut found = Vec::new();
    // The backup GPT header fills the last logical sector (512 B or 4 KiB).
    let gpt_backup = [512u64, 4096].into_iter().any(|sector| {
        device_size_bytes
            .checked_sub(sector)
            .and_then(|offset| at(offset, 8))
            == Some(b"EFI PART")
    });
    if gpt_backup {
        found.push(Signature::GptPartitionTable);
    }
    let md_magic = |offset: u64| {
        at(offset, 4).is_some_and(|b| {
            let magic = [b[0], b[1], b[2], b[3]];
            u32::from_le_bytes(magic) == MD_MAGIC || u32::from_be_bytes(magic) == MD_MAGIC
        })
    };
    // md 0.90: the last 64 KiB-aligned 64 KiB of the device.
    let md_090 = (device_size_bytes & !0xFFFF).checked_sub(0x10000);
    // md 1.0: 8 KiB before the end, rounded down to 4 KiB.
    let md_10 = device_size_bytes
        .checked_sub(8192)
        .map(|offset| offset & !4095);
    if md_090.is_some_and(md_magic) || md_10.is_some_and(md_magic) {
        found.push(Signature::MdRaid);
    }
    found
}

const MD_MAGIC: u32 = 0xa92b_4efc;

fn bytes_at(buf: &[u8], offset: usize, len: usize) -> Option<&[u8]> {
    buf.get(offset..offset.checked_add(len)?)
}

fn le_u16(buf: &[u8], offset: usize) -> Option<u16> {
    bytes_at(buf, offset, 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn le_u32(buf: &[u8], offset: usize) -> Option<u32> {
    bytes_at(buf, offset, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn has_boot_signature(buf: &[u8]) -> bool {
    bytes_at(buf, 510, 2) == Some(&[0x55, 0xAA])
}

/// An MBR with at least one partition entry in use. Every entry's boot flag
/// must be 0x00 or 0x80: boot code that merely ends in 0x55AA does not count.
fn is_mbr(buf: &[u8]) -> bool {
    if !has_boot_signature(buf) {
        return false;
    }
    let entries: Vec<&[u8]> = (0..4)
        .filter_map(|i| bytes_at(buf, 446 + 16 * i, 16))
        .collect();
    entries.len() == 4
        && entries
            .iter()
            .all(|entry| entry[0] == 0x00 || entry[0] == 0x80)
        && entries.iter().any(|entry| entry[4] != 0)
}

fn has_gpt_header(buf: &[u8], logical_sector_size: usize) -> bool {
    bytes_at(buf, logical_sector_size, 8) == Some(b"EFI PART")
}

/// ext2/3/4: magic 0xEF53 in the superblock at 1 KiB. Two bytes turn up by
/// chance in one device of 65536, so the block size and revision must be
/// ones mke2fs writes too.
fn is_ext(buf: &[u8]) -> bool {
    const SUPERBLOCK: usize = 1024;
    le_u16(buf, SUPERBLOCK + 56) == Some(0xEF53)
        && le_u32(buf, SUPERBLOCK + 24).is_some_and(|log_block_size| log_block_size <= 6)
        && le_u32(buf, SUPERBLOCK + 76).is_some_and(|revision| revision <= 1)
}

/// Linux swap: the magic ends the first page, whatever the page size was on
/// the machine that ran mkswap.
fn is_swap(buf: &[u8]) -> bool {
    [4096usize, 8192, 16384, 65536]
        .into_iter()
        .any(|page_size| {
            matches!(
                bytes_at(buf, page_size - 10, 10),
                Some(b"SWAPSPACE2") | Some(b"SWAP-SPACE")
            )
        })
}

/// LVM2: a label in one of the first four 512-byte sectors.
fn is_lvm2(buf: &[u8]) -> bool {
    (0..4).any(|sector| {
        let offset = sector * 512;
        bytes_at(buf, offset, 8) == Some(b"LABELONE")
            && bytes_at(buf, offset + 24, 8) == Some(b"LVM2 001")
    })
}

fn is_md_magic(buf: &[u8], offset: usize) -> bool {
    le_u32(buf, offset) == Some(MD_MAGIC)
}

fn is_bcache(buf: &[u8]) -> bool {
    const BCACHE_MAGIC: [u8; 16] = [
        0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba, 0x6d,
        0x81,
    ];
    bytes_at(buf, 4096 + 24, 16) == Some(&BCACHE_MAGIC)
}

/// FAT12/16/32 boot sector: an x86 jump, the boot signature, and the
/// filesystem type string where FAT12/16 (offset 54) or FAT32 (82) keep it.
fn is_fat(buf: &[u8]) -> bool {
    let jump = matches!(
        bytes_at(buf, 0, 3),
        Some([0xEB, _, 0x90]) | Some([0xE9, _, _])
    );
    jump && has_boot_signature(buf)
        && (bytes_at(buf, 54, 3) == Some(b"FAT") || bytes_at(buf, 82, 5) == Some(b"FAT32"))
}

fn is_exfat(buf: &[u8]) -> bool {
    bytes_at(buf, 3, 8) == Some(b"EXFAT   ")
}

fn is_ntfs(buf: &[u8]) -> bool {
    bytes_at(buf, 3, 8) == Some(b"NTFS    ")
}

/// ZFS: an uberblock magic in the ring of vdev label L0 (128 KiB into the
/// device, one slot per KiB or per 2^ashift bytes, so every KiB is checked),
/// in either byte order: the pool keeps the order of the host that wrote it.
fn is_zfs(buf: &[u8]) -> bool {
    const UBERBLOCK_MAGIC: u64 = 0x00ba_b10c;
    (0..128).any(|slot| {
        bytes_at(buf, 128 * 1024 + slot * 1024, 8).is_some_and(|b| {
            let raw: [u8; 8] = b.try_into().expect("8 bytes");
            u64::from_le_bytes(raw) == UBERBLOCK_MAGIC || u64::from_be_bytes(raw) == UBERBLOCK_MAGIC
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeros() -> Vec<u8> {
        vec![0u8; HEAD_PROBE_BYTES]
    }

    fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) {
        buf[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    fn mbr_with_one_partition() -> Vec<u8> {
        let mut buf = zeros();
        // Entry 0: not bootable, type 0x83 (Linux), LBA 2048, 2048 sectors.
        put(&mut buf, 446 + 4, &[0x83]);
        put(&mut buf, 446 + 8, &2048u32.to_le_bytes());
        put(&mut buf, 446 + 12, &2048u32.to_le_bytes());
        put(&mut buf, 510, &[0x55, 0xAA]);
        buf
    }

    #[test]
    fn a_zeroed_device_shows_nothing() {
        assert_eq!(probe_head(&zeros()), vec![]);
        assert_eq!(probe_tail(&vec![0u8; TAIL_PROBE_BYTES], 1 << 30), vec![]);
    }

    #[test]
    fn empty_and_short_buffers_show_nothing() {
        for len in [0, 1, 3, 511, 512, 1100, 4096] {
            assert_eq!(probe_head(&vec![0u8; len]), vec![], "len {len}");
            assert_eq!(probe_tail(&vec![0u8; len], len as u64), vec![], "len {len}");
        }
    }

    #[test]
    fn finds_an_mbr_with_a_partition() {
        assert_eq!(
            probe_head(&mbr_with_one_partition()),
            vec![Signature::MbrPartitionTable]
        );
    }

    #[test]
    fn an_mbr_without_partitions_is_not_a_partition_table() {
        let mut buf = mbr_with_one_partition();
        put(&mut buf, 446 + 4, &[0]);
        assert_eq!(probe_head(&buf), vec![]);
    }

    #[test]
    fn boot_code_ending_in_55aa_is_not_a_partition_table() {
        // Bytes in the entry area that are no valid boot flag: code, not a table.
        let mut buf = mbr_with_one_partition();
        put(&mut buf, 446, &[0x31]);
        assert_eq!(probe_head(&buf), vec![]);
    }

    #[test]
    fn finds_gpt_for_512_and_4096_byte_sectors_and_not_its_protective_mbr() {
        for sector in [512, 4096] {
            let mut buf = mbr_with_one_partition();
            put(&mut buf, 446 + 4, &[0xEE]);
            put(&mut buf, sector, b"EFI PART");
            assert_eq!(
                probe_head(&buf),
                vec![Signature::GptPartitionTable],
                "sector {sector}"
            );
        }
    }

    #[test]
    fn finds_the_backup_gpt_header_at_the_end() {
        let size = 64u64 << 20;
        for sector in [512usize, 4096] {
            let mut tail = vec![0u8; TAIL_PROBE_BYTES];
            put(&mut tail, TAIL_PROBE_BYTES - sector, b"EFI PART");
            assert_eq!(probe_tail(&tail, size), vec![Signature::GptPartitionTable]);
        }
    }

    #[test]
    fn finds_ext_only_with_a_plausible_superblock() {
        let mut buf = zeros();
        put(&mut buf, 1024 + 56, &0xEF53u16.to_le_bytes());
        put(&mut buf, 1024 + 24, &2u32.to_le_bytes()); // 4 KiB blocks
        put(&mut buf, 1024 + 76, &1u32.to_le_bytes()); // dynamic revision
        assert_eq!(probe_head(&buf), vec![Signature::Ext]);
        // The same two magic bytes amid other data: chance, not ext.
        put(&mut buf, 1024 + 24, &0x1234_5678u32.to_le_bytes());
        assert_eq!(probe_head(&buf), vec![]);
    }

    #[test]
    fn finds_each_filesystem_and_volume_by_its_magic() {
        let zfs_little_endian = 0x00ba_b10cu64.to_le_bytes();
        let zfs_big_endian = 0x00ba_b10cu64.to_be_bytes();
        // (what, [(offset, bytes)]): the bytes a formatter would write.
        type Patches<'a> = Vec<(usize, &'a [u8])>;
        let cases: Vec<(Signature, Patches)> = vec![
            (Signature::Xfs, vec![(0, b"XFSB")]),
            (Signature::Btrfs, vec![(65536 + 64, b"_BHRfS_M")]),
            (Signature::F2fs, vec![(1024, &[0x10, 0x20, 0xF5, 0xF2])]),
            (Signature::Swap, vec![(4096 - 10, b"SWAPSPACE2")]),
            (Signature::Swap, vec![(65536 - 10, b"SWAPSPACE2")]),
            (Signature::Swap, vec![(4096 - 10, b"SWAP-SPACE")]),
            (
                Signature::LvmPhysicalVolume,
                vec![(512, b"LABELONE"), (512 + 24, b"LVM2 001")],
            ),
            (Signature::Luks, vec![(0, b"LUKS\xba\xbe")]),
            (Signature::MdRaid, vec![(0, &[0xfc, 0x4e, 0x2b, 0xa9])]),
            (Signature::MdRaid, vec![(4096, &[0xfc, 0x4e, 0x2b, 0xa9])]),
            (
                Signature::Bcache,
                vec![(
                    4096 + 24,
                    &[
                        0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f,
                        0x48, 0xba, 0x6d, 0x81,
                    ],
                )],
            ),
            (
                Signature::Fat,
                vec![
                    (0, &[0xEB, 0x3C, 0x90]),
                    (54, b"FAT16   "),
                    (510, &[0x55, 0xAA]),
                ],
            ),
            (
                Signature::Fat,
                vec![
                    (0, &[0xEB, 0x58, 0x90]),
                    (82, b"FAT32   "),
                    (510, &[0x55, 0xAA]),
                ],
            ),
            (
                Signature::ExFat,
                vec![
                    (0, &[0xEB, 0x76, 0x90]),
                    (3, b"EXFAT   "),
                    (510, &[0x55, 0xAA]),
                ],
            ),
            (
                Signature::Ntfs,
                vec![
                    (0, &[0xEB, 0x52, 0x90]),
                    (3, b"NTFS    "),
                    (510, &[0x55, 0xAA]),
                ],
            ),
            (Signature::Iso9660, vec![(32769, b"CD001")]),
            (
                Signature::Zfs,
                vec![(131072 + 5 * 1024, &zfs_little_endian)],
            ),
            (Signature::Zfs, vec![(131072, &zfs_big_endian)]),
        ];
        for (expected, patches) in cases {
            let mut buf = zeros();
            for (offset, bytes) in &patches {
                put(&mut buf, *offset, bytes);
            }
            assert_eq!(
                probe_head(&buf),
                vec![expected],
                "{expected:?} at {patches:?}"
            );
        }
    }

    #[test]
    fn a_fat_boot_sector_is_not_reported_as_an_mbr() {
        let mut buf = zeros();
        put(&mut buf, 0, &[0xEB, 0x3C, 0x90]);
        put(&mut buf, 54, b"FAT12   ");
        // Boot code that happens to look like a used partition entry.
        put(&mut buf, 446 + 4, &[0x0C]);
        put(&mut buf, 510, &[0x55, 0xAA]);
        assert_eq!(probe_head(&buf), vec![Signature::Fat]);
    }

    #[test]
    fn finds_md_superblocks_at_the_end() {
        let size = (64u64 << 20) + 12345 * 512;
        let tail_start = size - TAIL_PROBE_BYTES as u64;
        let offsets = [(size & !0xFFFF) - 0x10000, (size - 8192) & !4095];
        for offset in offsets {
            let mut tail = vec![0u8; TAIL_PROBE_BYTES];
            put(
                &mut tail,
                (offset - tail_start) as usize,
                &MD_MAGIC.to_le_bytes(),
            );
            assert_eq!(
                probe_tail(&tail, size),
                vec![Signature::MdRaid],
                "offset {offset}"
            );
        }
    }

    #[test]
    fn a_tail_longer_than_the_device_shows_nothing() {
        let mut tail = vec![0u8; 4096];
        put(&mut tail, 4096 - 512, b"EFI PART");
        assert_eq!(probe_tail(&tail, 1024), vec![]);
    }

    #[test]
    fn a_partition_table_and_a_filesystem_are_both_named() {
        let mut buf = mbr_with_one_partition();
        put(&mut buf, 0, b"XFSB");
        let found = probe_head(&buf);
        assert_eq!(found, vec![Signature::MbrPartitionTable, Signature::Xfs]);
        assert!(found[0].is_partition_table() && !found[1].is_partition_table());
    }

    /// Deterministic bytes for the property tests (xorshift64).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn probing_never_panics(
            len in 0usize..HEAD_PROBE_BYTES + 4096,
            seed in proptest::num::u64::ANY,
            device_size_bytes in proptest::num::u64::ANY,
        ) {
            let bytes = noise(len, seed);
            let _ = probe_head(&bytes);
            let _ = probe_tail(&bytes, device_size_bytes);
            let _ = probe_tail(&bytes, len as u64);
        }

        #[test]
        fn random_data_is_not_taken_for_a_signature(seed in proptest::num::u64::ANY) {
            // A previous run's data must not look like a filesystem: with the
            // magics above, random bytes match far less than once in 1e6.
            let head = noise(HEAD_PROBE_BYTES, seed);
            proptest::prop_assert_eq!(probe_head(&head), vec![]);
            let tail = noise(TAIL_PROBE_BYTES, seed ^ 0x5eed);
            proptest::prop_assert_eq!(probe_tail(&tail, 1 << 40), vec![]);
        }
    }
}
