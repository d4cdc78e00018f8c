//! Who else is using a block device: mounts, swap, device-mapper and md
//! holders, kernel partitions.
//!
//! Devices are matched by device number (major:minor), never by name: the
//! same disk is /dev/sdb, /dev/disk/by-id/…, and a udev symlink, and the
//! kernel's tables name it whichever way it was opened. Parsers are pure
//! functions over the text of /proc files so they can be tested directly.

use std::fs;
use std::path::{Path, PathBuf};

/// A block device's number, `major:minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceNumber {
    pub major: u32,
    pub minor: u32,
}

impl DeviceNumber {
    pub fn from_rdev(rdev: u64) -> DeviceNumber {
        DeviceNumber {
            major: rustix::fs::major(rdev),
            minor: rustix::fs::minor(rdev),
        }
    }

    /// Parse sysfs's and mountinfo's `MAJOR:MINOR`.
    pub fn parse(text: &str) -> Option<DeviceNumber> {
        let (major, minor) = text.trim().split_once(':')?;
        Some(DeviceNumber {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl std::fmt::Display for DeviceNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// A block device as sysfs shows it (`/sys/dev/block/MAJOR:MINOR`, resolved).
#[derive(Clone, Debug)]
pub struct SysBlock {
    /// The kernel's name: `sdb`, `nvme0n1`, `loop3`, `sdb1`.
    pub name: String,
    pub number: DeviceNumber,
    pub dir: PathBuf,
}

impl SysBlock {
    /// The sysfs directory of device `number` under `sys_root` (`/sys`), or
    /// `None` when sysfs is not mounted or does not know the device.
    pub fn locate(sys_root: &Path, number: DeviceNumber) -> Option<SysBlock> {
        let dir = fs::canonicalize(sys_root.join("dev/block").join(number.to_string())).ok()?;
        let name = dir.file_name()?.to_str()?.to_string();
        Some(SysBlock { name, number, dir })
    }

    /// This device is a partition of a whole disk.
    pub fn is_partition(&self) -> bool {
        self.dir.join("partition").exists()
    }

    /// The whole disk's directory: this one, or its parent for a partition
    /// (where model, serial and the device link live).
    pub fn disk_dir(&self) -> PathBuf {
        match (self.is_partition(), self.dir.parent()) {
            (true, Some(parent)) => parent.to_path_buf(),
            _ => self.dir.clone(),
        }
    }

    /// The partitions the kernel knows on this disk, by name.
    pub fn partitions(&self) -> Vec<SysBlock> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut partitions: Vec<SysBlock> = entries
            .flatten()
            .filter(|entry| entry.path().join("partition").is_file())
            .filter_map(|entry| {
                let number =
                    DeviceNumber::parse(&fs::read_to_string(entry.path().join("dev")).ok()?)?;
                Some(SysBlock {
                    name: entry.file_name().to_str()?.to_string(),
                    number,
                    dir: entry.path(),
                })
            })
            .collect();
        partitions.sort_by(|a, b| a.name.cmp(&b.name));
        partitions
    }

    /// Devices stacked on this one (device-mapper, md, bcache), by name.
    pub fn holders(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.dir.join("holders")) else {
            return Vec::new();
        };
        let mut holders: Vec<String> = entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
            .collect();
        holders.sort();
        holders
    }

    /// The kernel marks the device read-only (`ro` is 1).
    pub fn read_only(&self) -> bool {
        fs::read_to_string(self.dir.join("ro")).is_ok_and(|text| text.trim() == "1")
    }
}

/// Where a target's bytes live, as far as this host can tell: a byte range
/// of a file (by filesystem device and inode) or of a whole disk (by its
/// device number). A partition is a range of its disk, and a loop device a
/// range of its backing file, so two targets that share storage under two
/// names are found out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Footprint {
    File {
        dev: u64,
        ino: u64,
        start: u64,
        end: u64,
    },
    Disk {
        disk: DeviceNumber,
        start: u64,
        end: u64,
    },
}

impl Footprint {
    /// Some byte is in both.
    pub fn overlaps(&self, other: &Footprint) -> bool {
        let (what, (start, end)) = self.parts();
        let (other_what, (other_start, other_end)) = other.parts();
        what == other_what && start < other_end && other_start < end
    }

    /// Which storage (a file, or a disk), and which bytes of it.
    fn parts(&self) -> ((bool, u64, u64), (u64, u64)) {
        match *self {
            Footprint::File {
                dev,
                ino,
                start,
                end,
            } => ((true, dev, ino), (start, end)),
            Footprint::Disk { disk, start, end } => {
                ((false, disk.major.into(), disk.minor.into()), (start, end))
            }
        }
    }

    /// The footprint of the file or block device at `path` (`None`: neither,
    /// or not there). `sys_root` is `/sys`.
    pub fn of(sys_root: &Path, path: &Path) -> Option<Footprint> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = fs::metadata(path).ok()?;
        if !meta.file_type().is_block_device() {
            return meta.is_file().then(|| Footprint::File {
                dev: meta.dev(),
                ino: meta.ino(),
                start: 0,
                end: u64::MAX,
            });
        }
        Some(Footprint::of_device(
            sys_root,
            DeviceNumber::from_rdev(meta.rdev()),
        ))
    }

    /// The footprint of block device `number`, from sysfs: all of it when
    /// sysfs does not say more.
    pub fn of_device(sys_root: &Path, number: DeviceNumber) -> Footprint {
        use std::os::unix::fs::MetadataExt;
        let whole = |start, end| Footprint::Disk {
            disk: number,
            start,
            end,
        };
        let Some(device) = SysBlock::locate(sys_root, number) else {
            return whole(0, u64::MAX);
        };
        let sectors = |dir: &Path, name: &str| -> Option<u64> {
            fs::read_to_string(dir.join(name)).ok()?.trim().parse().ok()
        };
        let disk_dir = device.disk_dir();
        let (disk, start) = if device.is_partition() {
            let disk = fs::read_to_string(disk_dir.join("dev"))
                .ok()
                .and_then(|text| DeviceNumber::parse(&text));
            match (disk, sectors(&device.dir, "start")) {
                (Some(disk), Some(start)) => (disk, start * 512),
                _ => return whole(0, u64::MAX),
            }
        } else {
            (number, 0)
        };
        let end = sectors(&device.dir, "size").map_or(u64::MAX, |size| start + size * 512);
        // A loop device's bytes are its backing file's, from its offset.
        let backing = fs::read_to_string(disk_dir.join("loop/backing_file"))
            .ok()
            .and_then(|name| fs::metadata(name.trim_end()).ok());
        let offset = fs::read_to_string(disk_dir.join("loop/offset"))
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok());
        match (backing, offset) {
            (Some(file), Some(offset)) => Footprint::File {
                dev: file.dev(),
                ino: file.ino(),
                start: offset + start,
                end: end.saturating_add(offset),
            },
            _ => Footprint::Disk { disk, start, end },
        }
    }
}

/// One line of /proc/self/mountinfo, the parts that say what is mounted where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// The device number the filesystem reports (st_dev of its files).
    pub number: DeviceNumber,
    pub mount_point: String,
    /// What was mounted, as mount(8) was told: `/dev/sdb1`, `tmpfs`, ….
    pub source: String,
}

/// Parse /proc/self/mountinfo (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNT_POINT
/// OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`. Lines that do not
/// parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let number = DeviceNumber::parse(fields.nth(2)?)?;
            let mount_point = unescape_octal(fields.nth(1)?);
            let mut after_separator = fields.skip_while(|field| *field != "-").skip(1);
            let _filesystem_type = after_separator.next()?;
            let source = unescape_octal(after_separator.next()?);
            Some(MountEntry {
                number,
                mount_point,
                source,
            })
        })
        .collect()
}

/// Parse /proc/swaps: a header line, then `FILENAME TYPE SIZE USED PRIORITY`.
/// Returns the filenames (devices or swap files).
pub fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next().map(unescape_octal))
        .collect()
}

/// The kernel writes space, tab, newline and backslash in paths of mountinfo
/// and /proc/swaps as `\ooo` octal escapes.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes.get(i + 1..i + 4).filter(|digits| {
            bytes[i] == b'\\' && digits.iter().all(|digit| (b'0'..=b'7').contains(digit))
        });
        match escape {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, digit| acc * 8 + u32::from(digit - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a device is in use by the running system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InUse {
    /// `device` (the target or one of its partitions) is mounted.
    Mounted { device: String, mount_point: String },
    /// `device` is an active swap area.
    Swap { device: String },
}

/// Whether any of `devices` (name, number) is mounted or swapped on, going by
/// the texts of /proc/self/mountinfo and /proc/swaps. `device_number_of`
/// resolves a path (a mount source, a swap file name) to the block device
/// it names, if it names one; a filesystem such as btrfs reports an
/// anonymous number in mountinfo, so the source path is checked as well.
pub fn find_in_use(
    devices: &[(String, DeviceNumber)],
    mountinfo: &str,
    swaps: &str,
    device_number_of: impl Fn(&str) -> Option<DeviceNumber>,
) -> Option<InUse> {
    let name_of = |number: DeviceNumber| {
        devices
            .iter()
            .find(|(_, candidate)| *candidate == number)
            .map(|(name, _)| name.clone())
    };
    for mount in parse_mountinfo(mountinfo) {
        let device = name_of(mount.number).or_else(|| {
            mount
                .source
                .starts_with('/')
                .then(|| device_number_of(&mount.source))
                .flatten()
                .and_then(name_of)
        });
        if let Some(device) = device {
            return Some(InUse::Mounted {
                device,
                mount_point: mount.mount_point,
            });
        }
    }
    parse_swaps(swaps)
        .iter()
        .find_map(|file| device_number_of(file).and_then(name_of))
        .map(|device| InUse::Swap { device })
}

/// The block device a path names, following symlinks.
pub fn block_device_number(path: &str) -> Option<DeviceNumber> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = fs::metadata(path).ok()?;
    meta.file_type()
        .is_block_device()
        .then(|| DeviceNumber::from_rdev(meta.rdev()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOP0: DeviceNumber = DeviceNumber { major: 7, minor: 0 };
    const LOOP0P1: DeviceNumber = DeviceNumber {
        major: 259,
        minor: 3,
    };

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
42 27 7:0 / /mnt/with\\040space rw,relatime shared:5 master:1 - ext4 /dev/loop0 rw
43 27 0:45 / /srv/pool rw,relatime - btrfs /dev/loop0p1 rw,space_cache
";

    fn devices() -> Vec<(String, DeviceNumber)> {
        vec![
            ("loop0".to_string(), LOOP0),
            ("loop0p1".to_string(), LOOP0P1),
        ]
    }

    /// A sysfs tree under `root` with loop0 (backed by `backing` from
    /// `offset`, 64 MiB) and its partition loop0p1 (1 MiB in, 8 MiB).
    fn fake_loop_sysfs(root: &Path, backing: &Path, offset: u64) {
        let disk = root.join("devices/virtual/block/loop0");
        let part = disk.join("loop0p1");
        fs::create_dir_all(part.clone()).unwrap();
        fs::create_dir_all(disk.join("loop")).unwrap();
        fs::write(disk.join("dev"), "7:0\n").unwrap();
        fs::write(disk.join("size"), format!("{}\n", 64 << 11)).unwrap();
        fs::write(
            disk.join("loop/backing_file"),
            format!("{}\n", backing.display()),
        )
        .unwrap();
        fs::write(disk.join("loop/offset"), format!("{offset}\n")).unwrap();
        fs::write(part.join("dev"), "259:3\n").unwrap();
        fs::write(part.join("partition"), "1\n").unwrap();
        fs::write(part.join("start"), "2048\n").unwrap();
        fs::write(part.join("size"), format!("{}\n", 8 << 11)).unwrap();
        fs::create_dir_all(root.join("dev/block")).unwrap();
        std::os::unix::fs::symlink(&disk, root.join("dev/block/7:0")).unwrap();
        std::os::unix::fs::symlink(&part, root.join("dev/block/259:3")).unwrap();
    }

    #[test]
    fn a_loop_device_and_its_partition_are_ranges_of_the_backing_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("disk.img");
        fs::write(&backing, b"").unwrap();
        let root = dir.path().join("sys");
        fake_loop_sysfs(&root, &backing, 4096);
        let meta = fs::metadata(&backing).unwrap();
        let file = |start, end| Footprint::File {
            dev: meta.dev(),
            ino: meta.ino(),
            start,
            end,
        };
        let of_image = Footprint::of(&root, &backing).unwrap();
        assert_eq!(of_image, file(0, u64::MAX));
        let of_partition = Footprint::of_device(&root, LOOP0P1);
        assert_eq!(of_partition, file(4096 + (1 << 20), 4096 + (9 << 20)));
        let of_disk = Footprint::of_device(&root, LOOP0);
        assert_eq!(of_disk, file(4096, 4096 + (64 << 20)));
        assert!(of_image.overlaps(&of_partition) && of_disk.overlaps(&of_partition));
        // Ranges that only touch do not overlap; another file never does.
        assert!(!file(0, 10).overlaps(&file(10, 20)));
        let other = Footprint::File {
            dev: meta.dev(),
            ino: meta.ino() + 1,
            start: 0,
            end: u64::MAX,
        };
        assert!(!other.overlaps(&of_image));
        let disk = |start, end| Footprint::Disk {
            disk: LOOP0,
            start,
            end,
        };
        assert!(disk(0, 100).overlaps(&disk(99, 200)) && !disk(0, 100).overlaps(&file(0, 100)));
    }

    #[test]
    fn parses_mountinfo_with_optional_fields_and_escapes() {
        let entries = parse_mountinfo(MOUNTINFO);
        assert_eq!(entries.len(), 4);
        assert_eq!(
            entries[2],
            MountEntry {
                number: LOOP0,
                mount_point: "/mnt/with space".to_string(),
                source: "/dev/loop0".to_string(),
            }
        );
        assert_eq!(entries[3].source, "/dev/loop0p1");
    }

    #[test]
    fn garbage_mountinfo_lines_are_skipped() {
        assert_eq!(parse_mountinfo("nonsense\n1 2 x:y / / - a b\n\n"), vec![]);
    }

    #[test]
    fn a_mount_is_found_by_device_number() {
        let found = find_in_use(&devices(), MOUNTINFO, "", |_| None);
        assert_eq!(
            found,
            Some(InUse::Mounted {
                device: "loop0".to_string(),
                mount_point: "/mnt/with space".to_string()
            })
        );
    }

    #[test]
    fn a_btrfs_mount_is_found_by_its_source_despite_an_anonymous_number() {
        let only_partition = vec![("loop0p1".to_string(), LOOP0P1)];
        let resolve = |path: &str| (path == "/dev/loop0p1").then_some(LOOP0P1);
        let found = find_in_use(&only_partition, MOUNTINFO, "", resolve);
        assert_eq!(
            found,
            Some(InUse::Mounted {
                device: "loop0p1".to_string(),
                mount_point: "/srv/pool".to_string()
            })
        );
    }

    #[test]
    fn an_active_swap_partition_is_found() {
        let swaps = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                     /dev/loop0p1                            partition\t32764\t\t0\t\t-2\n";
        let resolve = |path: &str| (path == "/dev/loop0p1").then_some(LOOP0P1);
        let found = find_in_use(&devices(), "", swaps, resolve);
        assert_eq!(
            found,
            Some(InUse::Swap {
                device: "loop0p1".to_string()
            })
        );
    }

    #[test]
    fn an_unused_device_is_not_in_use() {
        let other = vec![("loop1".to_string(), DeviceNumber { major: 7, minor: 1 })];
        let swaps = "Filename Type Size Used Priority\n/swapfile file 100 0 -2\n";
        assert_eq!(find_in_use(&other, MOUNTINFO, swaps, |_| None), None);
    }

    #[test]
    fn device_numbers_parse_and_print_as_major_colon_minor() {
        assert_eq!(
            DeviceNumber::parse("259:12\n"),
            Some(DeviceNumber {
                major: 259,
                minor: 12
            })
        );
        assert_eq!(DeviceNumber::parse("259"), None);
        assert_eq!(LOOP0.to_string(), "7:0");
    }

    /// A fake sysfs: /sys/dev/block/7:0 -> /sys/devices/virtual/block/loop0
    /// with partition loop0p1 held by dm-0.
    fn fake_sysfs() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        let disk = root.path().join("devices/virtual/block/loop0");
        let partition = disk.join("loop0p1");
        fs::create_dir_all(partition.join("holders")).unwrap();
        fs::create_dir_all(disk.join("holders")).unwrap();
        fs::write(partition.join("partition"), "1\n").unwrap();
        fs::write(partition.join("dev"), "259:3\n").unwrap();
        fs::write(partition.join("holders/dm-0"), "").unwrap();
        fs::write(disk.join("dev"), "7:0\n").unwrap();
        fs::write(disk.join("ro"), "1\n").unwrap();
        fs::create_dir_all(root.path().join("dev/block")).unwrap();
        std::os::unix::fs::symlink(&disk, root.path().join("dev/block/7:0")).unwrap();
        std::os::unix::fs::symlink(&partition, root.path().join("dev/block/259:3")).unwrap();
        root
    }

    #[test]
    fn sysfs_shows_partitions_holders_and_read_only() {
        let root = fake_sysfs();
        let disk = SysBlock::locate(root.path(), LOOP0).expect("loop0 in fake sysfs");
        assert_eq!(disk.name, "loop0");
        assert!(!disk.is_partition());
        assert!(disk.read_only());
        assert_eq!(disk.holders(), Vec::<String>::new());
        let partitions = disk.partitions();
        assert_eq!(partitions.len(), 1);
        assert_eq!(
            (partitions[0].name.as_str(), partitions[0].number),
            ("loop0p1", LOOP0P1)
        );
        assert_eq!(partitions[0].holders(), vec!["dm-0".to_string()]);

        let partition = SysBlock::locate(root.path(), LOOP0P1).expect("loop0p1 in fake sysfs");
        assert!(partition.is_partition());
        assert_eq!(partition.disk_dir(), disk.dir);
    }

    #[test]
    fn a_device_sysfs_does_not_know_is_not_located() {
        let root = fake_sysfs();
        assert!(SysBlock::locate(root.path(), DeviceNumber { major: 8, minor: 0 }).is_none());
    }
}
