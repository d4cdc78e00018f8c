//! What a test needs from the machine (root, loop devices, qemu, nbdkit,
//! io_uring, ...), and the one rule for when it is missing: skip with the
//! reason on a developer's machine, fail with the reason in CI, so a green
//! CI always means every test really ran.
//!
//! Included by the test binaries as `common::need`; tests/common/loopdev.rs
//! and tests/common/nbd_server.rs reach it as `crate::common::need`.

#![allow(dead_code)] // each test binary needs a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Something a test needs that a machine may lack.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// Root, for what only root may do (mounting a small tmpfs).
    Root,
    /// Loop devices that `losetup` can attach (as root).
    LoopDevices,
    /// The tools that build scenes on a block device: mkfs.ext4, mount,
    /// partx, mkswap.
    BlockDeviceTools,
    QemuImg,
    QemuNbd,
    Nbdkit,
    /// Headless Chromium, for rendering the HTML report.
    Chromium,
    /// ansible-playbook (ansible-core).
    Ansible,
    /// io_uring, as the kernel (and any seccomp filter) allows it.
    IoUring,
    /// xmllint (libxml2-utils), to validate JUnit XML against its schema.
    Xmllint,
    /// Python with prometheus_client, whose parser reads the Prometheus
    /// textfile.
    PrometheusParser,
}

impl Need {
    fn what(self) -> &'static str {
        match self {
            Need::Root => "root",
            Need::LoopDevices => "loop devices",
            Need::BlockDeviceTools => "block-device tools",
            Need::QemuImg => "qemu-img",
            Need::QemuNbd => "qemu-nbd",
            Need::Nbdkit => "nbdkit",
            Need::Chromium => "chromium",
            Need::Ansible => "ansible-playbook",
            Need::IoUring => "io_uring",
            Need::Xmllint => "xmllint",
            Need::PrometheusParser => "python's prometheus_client",
        }
    }

    /// How to get it (scripts/test.sh does all of these in CI).
    fn remedy(self) -> &'static str {
        match self {
            Need::Root | Need::LoopDevices => "run the tests as root",
            Need::BlockDeviceTools => "apt-get install e2fsprogs mount util-linux, as root",
            Need::QemuImg | Need::QemuNbd => "apt-get install qemu-utils",
            Need::Nbdkit => "apt-get install nbdkit",
            Need::Chromium => "apt-get install chromium, or run scripts/test.sh",
            Need::Ansible => "pip install ansible-core, or run scripts/test.sh",
            Need::IoUring => {
                "a kernel with io_uring enabled (sysctl kernel.io_uring_disabled=0) and no seccomp filter blocking it"
            }
            Need::Xmllint => "apt-get install libxml2-utils, or run scripts/test.sh",
            Need::PrometheusParser => {
                "pip install prometheus_client (or point $BLOCKSTAMP_PYTHON at a Python that has it), or run scripts/test.sh"
            }
        }
    }

    /// Whether the machine has it; if not, why not.
    fn check(self) -> Result<(), String> {
        match self {
            Need::Root | Need::LoopDevices | Need::BlockDeviceTools => {
                if rustix::process::geteuid().is_root() {
                    Ok(())
                } else {
                    Err("the tests are not running as root".into())
                }
            }
            Need::QemuImg => runs("qemu-img"),
            Need::QemuNbd => runs("qemu-nbd"),
            Need::Nbdkit => runs("nbdkit"),
            Need::Chromium => chromium()
                .map(drop)
                .ok_or_else(|| "it is not on PATH".into()),
            Need::Ansible => ansible_playbook().map(drop).ok_or_else(|| {
                "it is not on PATH, in $ANSIBLE_PLAYBOOK or in pip's scripts dir".into()
            }),
            Need::IoUring => blockstamp::engine::uring::probe(),
            Need::Xmllint => runs("xmllint"),
            Need::PrometheusParser => {
                let python = python();
                match Command::new(&python)
                    .args(["-c", "import prometheus_client.parser"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                {
                    Ok(status) if status.success() => Ok(()),
                    Ok(_) => Err(format!(
                        "{} cannot import prometheus_client",
                        python.display()
                    )),
                    Err(e) => Err(format!("cannot run {}: {e}", python.display())),
                }
            }
        }
    }
}

/// The Python the tests run helpers with: $BLOCKSTAMP_PYTHON (scripts/test.sh
/// sets it when it installs packages into a venv of its own), else python3.
pub fn python() -> PathBuf {
    std::env::var_os("BLOCKSTAMP_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

/// Whether tests run in CI, where every test must run: `CI` set to anything
/// but empty, "false" or "0" (CI services set `CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !matches!(value.as_str(), "" | "false" | "0"))
}

/// Whether `need` is met here. If not, the test must return at once: this
/// has printed why it is skipped, or, in CI, panicked.
pub fn require(need: Need) -> bool {
    match need.check() {
        Ok(()) => true,
        Err(reason) => {
            unmet(need, &reason);
            false
        }
    }
}

/// `need` turned out unmet while the test set up its scene (losetup or
/// mkfs failed): panic in CI, else say why the test is skipped; the caller
/// returns.
pub fn unmet(need: Need, reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    let what = need.what();
    let remedy = need.remedy();
    if in_ci() {
        let ci = std::env::var("CI").unwrap_or_default();
        panic!("{test} needs {what}, but {reason}; in CI (CI={ci}) every test must run: {remedy}");
    }
    // Straight to stderr: libtest captures eprintln! of passing tests, and
    // a skip must be seen.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipping {test}: needs {what}, but {reason} ({remedy})"
    );
}

/// Whether `program --version` runs and succeeds.
fn runs(program: &str) -> Result<(), String> {
    match Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`{program} --version` failed ({status})")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("it is not installed".into()),
        Err(e) => Err(format!("cannot run {program}: {e}")),
    }
}

/// Headless Chromium under one of its names, if installed.
pub fn chromium() -> Option<PathBuf> {
    find_on_path(&["chromium", "chromium-browser", "google-chrome"])
}

/// ansible-playbook: $ANSIBLE_PLAYBOOK, PATH, or where pip puts scripts.
pub fn ansible_playbook() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ANSIBLE_PLAYBOOK").map(PathBuf::from) {
        return is_executable(&path).then_some(path);
    }
    find_on_path(&["ansible-playbook"]).or_else(|| {
        let output = Command::new("python3")
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_path('scripts'))",
            ])
            .output()
            .ok()?;
        let dir = String::from_utf8(output.stdout).ok()?;
        let candidate = Path::new(dir.trim()).join("ansible-playbook");
        is_executable(&candidate).then_some(candidate)
    })
}

/// The first of `names` found as an executable on PATH.
pub fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Some(candidate);
            }
        }
    }
    None
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
