//! Real block devices for tests: loop devices over sparse files in a temp
//! dir, each attached by the test that uses it and always detached, even
//! when the test fails (the guards undo their work on drop, and drops run
//! while a failing test unwinds).
//!
//! Loop devices need root. Where they cannot be had, the constructors
//! return `None` after `common::need` has said why (a skip on a developer's
//! machine, a failure in CI).

#![allow(dead_code)] // each test binary uses its own subset

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::need::{Need, require, unmet};

/// A loop device this test attached, detached on drop.
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: PathBuf,
    /// The sparse image behind it.
    pub backing_file: PathBuf,
    /// partx added partitions, which detaching does not remove.
    partitions_added: Cell<bool>,
    // Dropped after the device is detached (fields drop after `drop`).
    _dir: tempfile::TempDir,
}

impl LoopDevice {
    /// A zeroed sparse image of `size_bytes`, attached with extra `losetup`
    /// options (`--sector-size 4096`, `--read-only`, `--partscan`).
    /// `None` (after saying why) when loop devices are unavailable here.
    pub fn attach(size_bytes: u64, options: &[&str]) -> Option<LoopDevice> {
        Self::attach_prepared(size_bytes, options, |_| {})
    }

    /// Like [`attach`](Self::attach), with `prepare` writing into the image
    /// first, so the device holds those bytes from the moment it exists.
    pub fn attach_prepared(
        size_bytes: u64,
        options: &[&str],
        prepare: impl FnOnce(&File),
    ) -> Option<LoopDevice> {
        if !require(Need::LoopDevices) {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir for the loop image");
        Self::attach_prepared_in(dir, size_bytes, options, prepare)
    }

    /// Like [`attach`](Self::attach), with the image in a temp dir under
    /// `parent` (a filesystem the test chose, such as a tmpfs it mounted).
    pub fn attach_in(parent: &Path, size_bytes: u64, options: &[&str]) -> Option<LoopDevice> {
        if !require(Need::LoopDevices) {
            return None;
        }
        let dir = tempfile::tempdir_in(parent).expect("temp dir for the loop image");
        Self::attach_prepared_in(dir, size_bytes, options, |_| {})
    }

    fn attach_prepared_in(
        dir: tempfile::TempDir,
        size_bytes: u64,
        options: &[&str],
        prepare: impl FnOnce(&File),
    ) -> Option<LoopDevice> {
        let backing_file = dir.path().join("disk.img");
        let image = File::create(&backing_file).expect("create loop image");
        image.set_len(size_bytes).expect("size loop image");
        prepare(&image);
        image.sync_all().expect("sync loop image");
        drop(image);

        // Concurrent `losetup --find` calls can pick the same free device;
        // the loser fails with EBUSY and simply tries again.
        let mut last_error = String::new();
        for _ in 0..10 {
            let output = match Command::new("losetup")
                .args(["--find", "--show"])
                .args(options)
                .arg(&backing_file)
                .output()
            {
                Ok(output) => output,
                Err(e) => {
                    unmet(Need::LoopDevices, &format!("cannot run losetup: {e}"));
                    return None;
                }
            };
            if output.status.success() {
                let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
                return Some(LoopDevice {
                    path,
                    backing_file,
                    partitions_added: Cell::new(false),
                    _dir: dir,
                });
            }
            last_error = String::from_utf8_lossy(&output.stderr).trim().to_string();
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        unmet(
            Need::LoopDevices,
            &format!("losetup --find --show {options:?} failed: {last_error}"),
        );
        None
    }

    /// The device path as a TARGET argument.
    pub fn uri(&self) -> &str {
        self.path.to_str().expect("loop device paths are ASCII")
    }

    /// The kernel's name, `loopN`.
    pub fn name(&self) -> &str {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("loop device name")
    }

    /// Everything the device holds, read from its backing file (loop
    /// devices without direct IO write through the file's page cache, so
    /// this sees every completed write).
    pub fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.backing_file).expect("read loop image")
    }

    /// Bytes at `offset` of the device, from its backing file.
    pub fn read_backing(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        File::open(&self.backing_file)
            .and_then(|f| f.read_exact_at(&mut buf, offset))
            .expect("read loop image");
        buf
    }

    /// Make the kernel show the partitions the device's partition table
    /// describes. Attach with `--partscan` first: kernels with partition
    /// parsers then find them themselves; kernels without (minimal VM
    /// kernels) are told by partx.
    pub fn add_partitions(&self) -> Option<()> {
        if self.has_kernel_partitions() {
            return Some(());
        }
        run_or_unavailable(Command::new("partx").arg("--add").arg(&self.path))?;
        self.partitions_added.set(true);
        Some(())
    }

    fn has_kernel_partitions(&self) -> bool {
        let sysfs = Path::new("/sys/class/block").join(self.name());
        std::fs::read_dir(sysfs)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|entry| entry.path().join("partition").exists())
            })
            .unwrap_or(false)
    }

    /// Open the device with O_EXCL, as device-mapper, md or a filesystem
    /// would claim it; the claim lasts as long as the file.
    pub fn claim_exclusively(&self) -> std::io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
            .open(&self.path)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if self.partitions_added.get() {
            // Partitions added through BLKPG outlive the loop device unless
            // deleted; the next test to attach this loopN would see them.
            let _ = Command::new("partx")
                .arg("--delete")
                .arg(&self.path)
                .output();
        }
        match Command::new("losetup")
            .arg("--detach")
            .arg(&self.path)
            .output()
        {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "warning: losetup --detach {} failed: {}",
                self.path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(e) => eprintln!(
                "warning: cannot run losetup --detach {}: {e}",
                self.path.display()
            ),
        }
    }
}

/// A filesystem mounted read-only for a test (read-only so the mount writes
/// nothing and the device's bytes can be compared), unmounted on drop.
pub struct Mount {
    pub mount_point: tempfile::TempDir,
}

impl Mount {
    pub fn read_only(device: &Path) -> Option<Mount> {
        let mount_point = tempfile::tempdir().expect("temp mount point");
        run_or_unavailable(
            Command::new("mount")
                .args(["-o", "ro"])
                .arg(device)
                .arg(mount_point.path()),
        )?;
        Some(Mount { mount_point })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mount_point.path()).status();
    }
}

/// An active swap area, switched off on drop.
pub struct Swap {
    device: PathBuf,
}

impl Swap {
    pub fn on(device: &Path) -> Option<Swap> {
        run_or_unavailable(Command::new("mkswap").arg(device))?;
        run_or_unavailable(Command::new("swapon").arg(device))?;
        Some(Swap {
            device: device.to_path_buf(),
        })
    }
}

impl Drop for Swap {
    fn drop(&mut self) {
        let _ = Command::new("swapoff").arg(&self.device).status();
    }
}

/// Make an ext4 filesystem on `device`.
pub fn mkfs_ext4(device: &Path) -> Option<()> {
    run_or_unavailable(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(device))
}

/// Run a system tool the test needs; a failure means the environment lacks
/// it (skip, or fail in CI), not that blockstamp is wrong.
fn run_or_unavailable(command: &mut Command) -> Option<()> {
    let reason = match command.output() {
        Ok(output) if output.status.success() => return Some(()),
        Ok(output) => format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(e) => format!("cannot run {command:?}: {e}"),
    };
    unmet(Need::BlockDeviceTools, &reason);
    None
}
