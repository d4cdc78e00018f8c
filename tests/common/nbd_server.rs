//! Real NBD servers (qemu-nbd, nbdkit) for tests, each in its own temp dir,
//! listening on a unix socket there or on loopback TCP. A server is killed
//! when its handle drops, also when the test fails, and its dir goes after.
//!
//! The constructors return `None` when the server binary is missing, after
//! `common::need` has said why (a skip on a developer's machine, a failure
//! in CI).

#![allow(dead_code)] // each test binary uses a different part

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::need::{Need, require};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a test server listens.
#[derive(Clone, Copy)]
enum Listen {
    Unix,
    Tcp(u16),
}

/// A running NBD server process and the temp dir holding its socket,
/// image and log.
pub struct NbdServer {
    program: &'static str,
    child: Child,
    listen: Listen,
    /// The image qemu-nbd serves; `None` for nbdkit.
    image: Option<PathBuf>,
    // Declared last: removed after Drop has killed the server.
    dir: tempfile::TempDir,
}

impl NbdServer {
    /// qemu-nbd serving a new sparse raw image of `size_bytes` on a unix
    /// socket, with `args` added (e.g. `-r`, `-x NAME`).
    pub fn qemu_nbd_raw(size_bytes: u64, args: &[&str]) -> Option<NbdServer> {
        NbdServer::qemu_nbd("raw", size_bytes, Listen::Unix, args)
    }

    /// As [`NbdServer::qemu_nbd_raw`], on 127.0.0.1 and a free port.
    pub fn qemu_nbd_raw_tcp(size_bytes: u64, args: &[&str]) -> Option<NbdServer> {
        NbdServer::qemu_nbd("raw", size_bytes, Listen::Tcp(free_port()), args)
    }

    /// qemu-nbd serving a new qcow2 image (made with qemu-img) on a unix socket.
    pub fn qemu_nbd_qcow2(size_bytes: u64, args: &[&str]) -> Option<NbdServer> {
        if !require(Need::QemuImg) {
            return None;
        }
        NbdServer::qemu_nbd("qcow2", size_bytes, Listen::Unix, args)
    }

    /// qemu-nbd serving an image file that already exists (a qcow2 overlay,
    /// a vmdk base) as `format` on a unix socket, with `args` added (e.g.
    /// `-r`). The image stays where it is; the server's temp dir holds only
    /// its socket and log.
    pub fn qemu_nbd_image(image: &Path, format: &str, args: &[&str]) -> Option<NbdServer> {
        if !require(Need::QemuNbd) {
            return None;
        }
        let dir = tempfile::tempdir().expect("create temp dir");
        let command = qemu_nbd_command(dir.path(), Listen::Unix, format, image, args);
        Some(NbdServer::spawn(
            "qemu-nbd",
            command,
            Listen::Unix,
            Some(image.to_path_buf()),
            dir,
        ))
    }

    fn qemu_nbd(format: &str, size_bytes: u64, listen: Listen, args: &[&str]) -> Option<NbdServer> {
        if !require(Need::QemuNbd) {
            return None;
        }
        let dir = tempfile::tempdir().expect("create temp dir");
        let image = dir.path().join(format!("disk.{format}"));
        if format == "raw" {
            let file = std::fs::File::create(&image).expect("create image");
            file.set_len(size_bytes).expect("size image");
        } else {
            let status = Command::new("qemu-img")
                .args(["create", "-q", "-f", format])
                .arg(&image)
                .arg(size_bytes.to_string())
                .status()
                .expect("run qemu-img");
            assert!(status.success(), "qemu-img create failed: {status}");
        }
        let command = qemu_nbd_command(dir.path(), listen, format, &image, args);
        Some(NbdServer::spawn(
            "qemu-nbd",
            command,
            listen,
            Some(image),
            dir,
        ))
    }

    /// `nbdkit ARGS` (plugin, filters, parameters) on a unix socket. `{dir}`
    /// in an argument stands for the server's temp dir (for log files).
    pub fn nbdkit(args: &[&str]) -> Option<NbdServer> {
        if !require(Need::Nbdkit) {
            return None;
        }
        let dir = tempfile::tempdir().expect("create temp dir");
        let dir_text = dir.path().to_str().expect("temp dir path is UTF-8");
        let mut command = Command::new("nbdkit");
        command
            .args(["--foreground", "--exit-with-parent", "--unix"])
            .arg(socket_path(dir.path()))
            .args(args.iter().map(|arg| arg.replace("{dir}", dir_text)));
        Some(NbdServer::spawn("nbdkit", command, Listen::Unix, None, dir))
    }

    fn spawn(
        program: &'static str,
        command: Command,
        listen: Listen,
        image: Option<PathBuf>,
        dir: tempfile::TempDir,
    ) -> NbdServer {
        let child = start(program, command, dir.path());
        let mut server = NbdServer {
            program,
            child,
            listen,
            image,
            dir,
        };
        server.wait_until_listening();
        server
    }

    /// Kill qemu-nbd and serve the same image again with other `args`.
    pub fn restart_qemu_nbd(&mut self, format: &str, args: &[&str]) {
        self.kill();
        let image = self.image.clone().expect("restart is for qemu-nbd");
        let command = qemu_nbd_command(self.dir.path(), self.listen, format, &image, args);
        self.child = start(self.program, command, self.dir.path());
        self.wait_until_listening();
    }

    /// Poll until a connection is accepted; fail with the server's log if it
    /// exits or takes too long.
    fn wait_until_listening(&mut self) {
        let started = Instant::now();
        loop {
            let connected = match self.listen {
                Listen::Unix => UnixStream::connect(socket_path(self.dir.path())).is_ok(),
                Listen::Tcp(port) => TcpStream::connect(("127.0.0.1", port)).is_ok(),
            };
            if connected {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before listening: {}",
                    self.program,
                    self.log()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "{} did not listen within {START_TIMEOUT:?}: {}",
                    self.program,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the server printed on stdout and stderr so far (qemu-nbd's
    /// `--trace` events go there).
    pub fn log(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(self.dir.path().join("server.log"))
            .and_then(|mut file| file.read_to_string(&mut text));
        text
    }

    /// The URI of `export` on this server.
    pub fn uri(&self, export: &str) -> String {
        match self.listen {
            Listen::Unix => format!(
                "nbd+unix:///{export}?socket={}",
                socket_path(self.dir.path()).display()
            ),
            Listen::Tcp(port) => format!("nbd://127.0.0.1:{port}/{export}"),
        }
    }

    /// The image qemu-nbd serves.
    pub fn image(&self) -> &Path {
        self.image
            .as_deref()
            .expect("only qemu-nbd serves an image file")
    }

    /// The server's temp dir, for files a test wants next to it (logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id (for /proc/PID/io: how much it has read and written).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `signal` to the server (SIGSTOP: a server that stops answering).
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, signal);
    }

    /// SIGKILL the server now and reap it: the crash a test provokes.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stop the server the way an operator does, with SIGTERM: qemu-nbd
    /// then closes the image cleanly, nbdkit finishes its log. SIGKILL if
    /// it has not exited within STOP_TIMEOUT.
    pub fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn socket_path(dir: &Path) -> PathBuf {
    dir.join("nbd.sock")
}

fn qemu_nbd_command(
    dir: &Path,
    listen: Listen,
    format: &str,
    image: &Path,
    args: &[&str],
) -> Command {
    let mut command = Command::new("qemu-nbd");
    // Persistent and shared: tests open several connections, one after another or at once.
    command.args(["--persistent", "--shared=64", "--format", format]);
    match listen {
        Listen::Unix => {
            command.arg("--socket").arg(socket_path(dir));
        }
        Listen::Tcp(port) => {
            command.args(["--bind=127.0.0.1", &format!("--port={port}")]);
        }
    }
    command.args(args).arg(image);
    command
}

/// Start a server with its output in `dir/server.log`.
fn start(program: &str, mut command: Command, dir: &Path) -> Child {
    // A killed server leaves its socket file behind; the next must not trip on it.
    let _ = std::fs::remove_file(socket_path(dir));
    let log = std::fs::File::create(dir.join("server.log")).expect("create server log");
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}
