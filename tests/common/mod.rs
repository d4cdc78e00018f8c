//! A scratch world for integration tests: a temp dir, the real binary, and
//! helpers that damage image files the way storage does.
#![allow(dead_code)]

pub mod need;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use blockstamp::manifest::{Manifest, NewManifest, TargetRecord};
use serde_json::Value;

pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

/// What a run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The JSON report printed by `--json -`.
    pub fn report(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("report is not JSON ({e}): {}", self.stdout))
    }

    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "panic: {}", self.stderr);
        self
    }
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv {
            dir: tempfile::Builder::new()
                .prefix("blockstamp-test")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn p(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    /// Run the binary with `args` in the scratch dir.
    pub fn run(&self, args: &[&str]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_blockstamp"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("run blockstamp");
        Run::from(output)
    }

    /// `write` with the given extra flags; asserts success.
    pub fn write(&self, image: &str, manifest: &str, extra: &[&str]) -> Run {
        let mut args = vec!["write", image, "--manifest", manifest];
        args.extend_from_slice(extra);
        let run = self.run(&args);
        run.assert_code(0);
        run
    }

    /// `verify --json -` with extra flags.
    pub fn verify(&self, image: &str, manifest: &str, extra: &[&str]) -> Run {
        let mut args = vec!["verify", image, "--manifest", manifest, "--json", "-"];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

/// Block-level damage to an image file.
pub struct Image {
    file: File,
    pub block_size: u64,
}

impl Image {
    pub fn open(path: &Path, block_size: u64) -> Image {
        Image {
            file: OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .expect("open image"),
            block_size,
        }
    }

    pub fn read_block(&self, block: u64) -> Vec<u8> {
        let mut buf = vec![0u8; self.block_size as usize];
        self.file
            .read_exact_at(&mut buf, block * self.block_size)
            .expect("read block");
        buf
    }

    pub fn write_block(&self, block: u64, bytes: &[u8]) {
        self.file
            .write_all_at(bytes, block * self.block_size)
            .expect("write block");
    }

    /// Flip one bit at `byte` within the block.
    pub fn flip_bit(&self, block: u64, byte: u64, bit: u8) {
        let mut one = [0u8; 1];
        let at = block * self.block_size + byte;
        self.file.read_exact_at(&mut one, at).expect("read byte");
        one[0] ^= 1 << bit;
        self.file.write_all_at(&one, at).expect("write byte");
    }

    pub fn zero_block(&self, block: u64) {
        self.write_block(block, &vec![0u8; self.block_size as usize]);
    }

    /// Deallocate the block (a hole reads as zeros).
    pub fn punch_hole(&self, block: u64) {
        use rustix::fs::{FallocateFlags, fallocate};
        fallocate(
            &self.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            block * self.block_size,
            self.block_size,
        )
        .expect("punch hole");
    }

    /// Copy block `from` of `source` over block `to` of this image.
    pub fn copy_block_from(&self, source: &Image, from: u64, to: u64) {
        self.write_block(to, &source.read_block(from));
    }

    /// Replace sectors `first..last` (512-byte) of `block` with those of
    /// `source`'s same block.
    pub fn splice_sectors(&self, source: &Image, block: u64, sectors: std::ops::Range<u64>) {
        let theirs = source.read_block(block);
        let mut ours = self.read_block(block);
        let range = (sectors.start * 512) as usize..(sectors.end * 512) as usize;
        ours[range.clone()].copy_from_slice(&theirs[range]);
        self.write_block(block, &ours);
    }

    pub fn sync(&self) {
        self.file.sync_all().expect("sync image");
    }
}

/// Copy an image file (a frozen older state of the target).
pub fn snapshot(from: &Path, to: &Path) {
    std::fs::copy(from, to).expect("copy image");
}

/// (block, class) of every finding, sorted.
pub fn finding_set(report: &Value) -> Vec<(u64, String)> {
    let mut set: Vec<(u64, String)> = report["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .map(|f| {
            (
                f["block"].as_u64().unwrap(),
                f["class"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    set.sort();
    set
}

/// The finding for `block`.
pub fn finding(report: &Value, block: u64) -> Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["block"].as_u64() == Some(block))
        .cloned()
        .unwrap_or_else(|| panic!("no finding for block {block}"))
}

/// Hash of a file's bytes, to prove a target was not touched.
pub fn file_digest(path: &Path) -> Option<u32> {
    std::fs::read(path).ok().map(|bytes| crc32c::crc32c(&bytes))
}

/// The digest of a file something else may still be finishing writes to
/// (a server serving requests a killed client sent): once two readings
/// half a second apart agree (at most 10 s).
pub fn settled_digest(path: &Path) -> Option<u32> {
    let mut last = file_digest(path);
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let now = file_digest(path);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Run `command` in its own process group, killing the group after `limit`.
pub fn run_bounded(mut command: Command, limit: std::time::Duration) -> Run {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let mut child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start command");
    let pid = child.id() as i32;
    let started = std::time::Instant::now();
    // Drain the pipes on threads so a chatty child never blocks on them.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for command") {
            break status;
        }
        if started.elapsed() > limit {
            if let Some(group) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            let _ = child.wait();
            panic!(
                "{:?} did not finish in {limit:?}; killed.\nstdout:\n{}\nstderr:\n{}",
                command,
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// With `BLOCKSTAMP_BAD_INPUT_TABLE=FILE` set, append one row of the
/// bad-input table (docs/BAD_INPUT.md) for a refusal a test just checked:
/// the command, its exit code and its message, under the test's name.
/// scripts/bad-input-table.sh runs the tests with it and renders the table.
pub fn record_refusal(scratch: &Path, args: &[&str], code: i32, message: &str) {
    let Some(table) = std::env::var_os("BLOCKSTAMP_BAD_INPUT_TABLE") else {
        return;
    };
    let scratch = scratch.to_string_lossy();
    let servers = std::env::temp_dir()
        .join(".tmp")
        .to_string_lossy()
        .into_owned();
    let cell = |text: &str| {
        let mut text = text.replace(scratch.as_ref(), "$DIR");
        // NBD servers of the tests listen in temp dirs of their own.
        while let Some(at) = text.find(&servers) {
            let name_end = text[at + servers.len()..]
                .find('/')
                .map_or(text.len(), |n| at + servers.len() + n);
            text.replace_range(at..name_end, "$SERVER_DIR");
        }
        blockstamp::error::one_line(&text).replace('|', "\\|")
    };
    let command: Vec<String> = args
        .iter()
        .map(|arg| {
            let arg = cell(arg);
            if arg.is_empty() || arg.contains([' ', '\\', '"', '?', '&', '#', '[', '*']) {
                format!("'{arg}'")
            } else {
                arg
            }
        })
        .collect();
    let test = std::thread::current()
        .name()
        .unwrap_or("?")
        .rsplit("::")
        .next()
        .unwrap_or("?")
        .to_string();
    let row = format!(
        "{test}\t| `blockstamp {}` | {code} | {} | `{test}` |\n",
        command.join(" "),
        cell(message.trim().trim_start_matches("blockstamp: "))
    );
    use std::io::Write as _;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(table)
        .expect("open the bad-input table");
    // One write per row: rows of tests running in parallel do not mix.
    file.write_all(row.as_bytes())
        .expect("append to the bad-input table");
}

/// A new manifest at `path` for a 64-block target of 4 KiB blocks, opened
/// for writing with `begin_write` done and every block at generation 1.
pub fn manifest_of_64_blocks(path: &Path) -> Manifest {
    let mut manifest = Manifest::create(
        path,
        NewManifest {
            run_id: 0x0123_4567_89ab_cdef,
            seed: 1,
            block_size: 4096,
            random_bytes: blockstamp::stamp::PAYLOAD_BYTES as u16,
            dedup_permille: 0,
            target: TargetRecord {
                uri: "disk.img".into(),
                kind: "file".into(),
                size_bytes: 64 * 4096,
                logical_sector_size: 512,
                physical_sector_size: 4096,
                model: None,
                serial: None,
                wwn: None,
            },
            journal_bytes: 0,
        },
    )
    .expect("create manifest");
    manifest.begin_write().expect("begin write");
    for block in 0..64 {
        manifest.set_generation(block, 1);
    }
    manifest
}
