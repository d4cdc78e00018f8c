//! A disk's identity from sysfs: model, serial number, World Wide Name.
//!
//! Recorded in the manifest so that a verify can notice it is reading a
//! different device than the one written (a renumbered /dev/sdX after a
//! reboot, a LUN mapped to another host). Each attribute lives in a
//! different place depending on the driver, so each is tried in turn.

use std::fs;
use std::path::Path;

use crate::storage::TargetIdentity;

/// The identity of the whole disk whose sysfs directory is `disk_dir`
/// (e.g. `/sys/devices/…/block/sdb`). Missing or blank attributes are `None`.
pub fn from_sysfs(disk_dir: &Path) -> TargetIdentity {
    // A loop device is whatever file backs it: re-attaching the same image
    // as another loopN is the same target, another image is not.
    if let Some(backing_file) = attribute(disk_dir, "loop/backing_file") {
        return TargetIdentity {
            model: Some("loop".to_string()),
            serial: Some(backing_file),
            wwn: None,
        };
    }
    // device-mapper names are chosen per host; its UUID (set by LVM,
    // cryptsetup, multipath) is what stays with the volume.
    if let Some(uuid) = attribute(disk_dir, "dm/uuid") {
        return TargetIdentity {
            model: Some("device-mapper".to_string()),
            serial: Some(uuid),
            wwn: None,
        };
    }
    TargetIdentity {
        model: attribute(disk_dir, "device/model"),
        // virtio-blk keeps the serial on the disk, NVMe and MMC on the
        // device, SCSI (and SATA behind libata) in VPD page 0x80.
        serial: attribute(disk_dir, "serial")
            .or_else(|| attribute(disk_dir, "device/serial"))
            .or_else(|| vpd_unit_serial_number(disk_dir)),
        // NVMe namespaces have `wwid` on the disk, SCSI devices on the device.
        wwn: attribute(disk_dir, "wwid").or_else(|| attribute(disk_dir, "device/wwid")),
    }
}

/// A sysfs text attribute, trimmed of whitespace and NUL padding; `None`
/// when absent, unreadable or blank.
fn attribute(dir: &Path, name: &str) -> Option<String> {
    let bytes = fs::read(dir.join(name)).ok()?;
    clean(&bytes)
}

fn clean(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let trimmed = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

/// SCSI VPD page 0x80 (Unit Serial Number): a 4-byte header whose last byte
/// is the length of the ASCII serial that follows.
fn vpd_unit_serial_number(disk_dir: &Path) -> Option<String> {
    let page = fs::read(disk_dir.join("device/vpd_pg80")).ok()?;
    let length = usize::from(*page.get(3)?);
    clean(page.get(4..(4 + length).min(page.len()))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, contents: &[u8]) {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    #[test]
    fn nvme_identity_comes_from_model_serial_and_wwid() {
        let disk = tempfile::tempdir().unwrap();
        write(
            disk.path(),
            "device/model",
            b"Samsung SSD 980 PRO 1TB                 \n",
        );
        write(disk.path(), "device/serial", b"  S5GXNF0R123456A \n");
        write(disk.path(), "wwid", b"eui.002538b411b2ac6e\n");
        assert_eq!(
            from_sysfs(disk.path()),
            TargetIdentity {
                model: Some("Samsung SSD 980 PRO 1TB".to_string()),
                serial: Some("S5GXNF0R123456A".to_string()),
                wwn: Some("eui.002538b411b2ac6e".to_string()),
            }
        );
    }

    #[test]
    fn scsi_serial_comes_from_vpd_page_0x80() {
        let disk = tempfile::tempdir().unwrap();
        write(disk.path(), "device/model", b"ST4000NM0035-1V4\n");
        write(
            disk.path(),
            "device/vpd_pg80",
            b"\x00\x80\x00\x0a  ZC1ABCDE\x00trailing",
        );
        write(disk.path(), "device/wwid", b"naa.5000c500a1b2c3d4\n");
        let identity = from_sysfs(disk.path());
        assert_eq!(identity.serial.as_deref(), Some("ZC1ABCDE"));
        assert_eq!(identity.wwn.as_deref(), Some("naa.5000c500a1b2c3d4"));
    }

    #[test]
    fn loop_devices_are_identified_by_their_backing_file() {
        let disk = tempfile::tempdir().unwrap();
        write(disk.path(), "loop/backing_file", b"/var/tmp/disk.img\n");
        let identity = from_sysfs(disk.path());
        assert_eq!(identity.model.as_deref(), Some("loop"));
        assert_eq!(identity.serial.as_deref(), Some("/var/tmp/disk.img"));
    }

    #[test]
    fn device_mapper_volumes_are_identified_by_their_uuid() {
        let disk = tempfile::tempdir().unwrap();
        write(disk.path(), "dm/uuid", b"LVM-abcdefgh\n");
        write(disk.path(), "dm/name", b"vg0-lv0\n");
        assert_eq!(
            from_sysfs(disk.path()).serial.as_deref(),
            Some("LVM-abcdefgh")
        );
    }

    #[test]
    fn blank_or_missing_attributes_are_none() {
        let disk = tempfile::tempdir().unwrap();
        write(disk.path(), "device/model", b"   \n");
        write(disk.path(), "device/vpd_pg80", b"\x00\x80");
        assert_eq!(from_sysfs(disk.path()), TargetIdentity::default());
    }
}
