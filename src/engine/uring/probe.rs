//! What the kernel's io_uring can do here: the probe run before an engine
//! is chosen, and the plain words for why io_uring is unavailable.

use std::io;

use io_uring::{IoUring, opcode, register};

/// Whether io_uring works here, and if not, why, in a few words for a note
/// such as "io_uring unavailable here (kernel.io_uring_disabled=2)".
pub fn probe() -> Result<(), String> {
    let ring = IoUring::new(2).map_err(|e| setup_failure_reason(&e))?;
    check_ring(&ring)
}

/// The reason `UringEngine::new` failed, in the words of [`probe`].
pub fn unavailable_reason(error: &io::Error) -> String {
    if error.raw_os_error().is_some() {
        setup_failure_reason(error)
    } else {
        error.to_string()
    }
}

fn setup_failure_reason(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::ENOSYS) => {
            "the kernel has no io_uring, or a seccomp filter hides it (ENOSYS)".to_string()
        }
        Some(libc::EPERM) => match read_io_uring_disabled() {
            Some(2) => "kernel.io_uring_disabled=2".to_string(),
            Some(1) => "kernel.io_uring_disabled=1 and this user is not in kernel.io_uring_group"
                .to_string(),
            _ => "io_uring_setup refused (EPERM): a seccomp filter or container policy blocks it"
                .to_string(),
        },
        Some(libc::ENOMEM) => {
            "no memory for the ring (ENOMEM; on kernels before 5.12 raise RLIMIT_MEMLOCK)"
                .to_string()
        }
        _ => format!("io_uring_setup failed: {error}"),
    }
}

fn read_io_uring_disabled() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The features the engine relies on: Linux 5.6 or later.
pub(super) fn check_ring(ring: &IoUring) -> Result<(), String> {
    if !ring.params().is_feature_nodrop() {
        return Err("kernel too old: io_uring may drop completions (needs Linux 5.6+)".to_string());
    }
    let mut probe = register::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("kernel too old: no io_uring opcode probe ({e}; needs Linux 5.6+)"))?;
    let needed = [
        ("READ", opcode::Read::CODE),
        ("WRITE", opcode::Write::CODE),
        ("READ_FIXED", opcode::ReadFixed::CODE),
        ("WRITE_FIXED", opcode::WriteFixed::CODE),
        ("FSYNC", opcode::Fsync::CODE),
        ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
    ];
    for (name, code) in needed {
        if !probe.is_supported(code) {
            return Err(format!("kernel lacks io_uring opcode {name}"));
        }
    }
    Ok(())
}
