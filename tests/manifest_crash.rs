//! A manifest no crash can break: SIGKILL at any moment of a checkpoint, a
//! write's close or a recovery, a power cut between any two manifest syncs,
//! and a filesystem that fills up, each leave a manifest that opens, keeps
//! every completed checkpoint and expects exactly the truth.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blockstamp::manifest::{
    Access, Manifest, ManifestState, NewManifest, TargetRecord, next_generation, observe_syncs,
};
use blockstamp::rng::SplitMix64;
use common::{TestEnv, file_digest, finding_set};

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_blockstamp")
}

/// Start `blockstamp args` in the scratch dir and SIGKILL it after `delay`.
fn kill_after(env: &TestEnv, args: &[&str], delay: Duration) {
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(env.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start blockstamp");
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL blockstamp");
    child.wait().expect("reap blockstamp");
}

/// The checkpoint names `checkpoint --list` prints; asserts it succeeds.
fn listed_checkpoints(env: &TestEnv) -> BTreeSet<String> {
    let run = env.run(&["checkpoint", "--manifest", "m", "--list"]);
    run.assert_code(0);
    run.stdout
        .lines()
        .filter(|l| l.contains('\t'))
        .filter_map(|l| l.split('\t').next())
        .map(str::to_string)
        .collect()
}

fn assert_verifies_clean(env: &TestEnv, extra: &[&str], context: &str) {
    let run = env.verify("disk.img", "m", extra);
    assert_eq!(run.code, 0, "{context}: {}", run.stderr);
    assert_eq!(finding_set(&run.report()), vec![], "{context}");
}

#[test]
fn a_checkpoint_killed_at_any_moment_leaves_a_manifest_that_keeps_every_checkpoint() {
    let env = TestEnv::new();
    let mut rng = SplitMix64(0xc0ffee);
    env.write("disk.img", "m", &["--size", "64MiB", "--coverage", "0.5"]);
    env.run(&["checkpoint", "--manifest", "m", "c0"])
        .assert_code(0);
    let mut completed: BTreeSet<String> = ["c0".to_string()].into();
    for round in 1..=24 {
        // Writes after a checkpoint set the dirty bits the next one clears.
        env.write(
            "disk.img",
            "m",
            &["--coverage", "0.1", "--overwrite", "0.5"],
        );
        let name = format!("c{round}");
        let delay = Duration::from_micros(rng.next_u64() % 6000);
        kill_after(&env, &["checkpoint", "--manifest", "m", &name], delay);
        let listed = listed_checkpoints(&env);
        assert!(
            completed.is_subset(&listed),
            "round {round} (killed after {delay:?}): completed {completed:?}, listed {listed:?}"
        );
        assert_verifies_clean(&env, &[], &format!("round {round}"));
        if listed.contains(&name) {
            // Taken just now: nothing was written since.
            assert_verifies_clean(&env, &["--at", &name], &format!("round {round} --at"));
            completed.insert(name);
        }
    }
    // The manifest stays usable: a checkpoint after the crashes works.
    env.run(&["checkpoint", "--manifest", "m", "last"])
        .assert_code(0);
    assert_verifies_clean(&env, &["--at", "last"], "after the crashes");
}

#[test]
fn a_write_killed_while_closing_or_recovering_leaves_a_manifest_that_verifies_clean() {
    let env = TestEnv::new();
    let mut rng = SplitMix64(0xdead);
    env.write("disk.img", "m", &["--size", "32MiB", "--coverage", "0.3"]);
    env.run(&["checkpoint", "--manifest", "m", "base"])
        .assert_code(0);
    let write = [
        "write",
        "disk.img",
        "--manifest",
        "m",
        "--coverage",
        "0.05",
        "--overwrite",
        "0.5",
        "--sync",
        "16",
    ];
    for round in 0..16 {
        // A short write, killed anywhere up to and through its close ...
        kill_after(&env, &write, Duration::from_micros(rng.next_u64() % 40_000));
        // ... then the next one, killed early: during its recovery.
        kill_after(&env, &write, Duration::from_micros(rng.next_u64() % 8_000));
        assert!(listed_checkpoints(&env).contains("base"), "round {round}");
        assert_verifies_clean(&env, &[], &format!("round {round}"));
    }
    env.write("disk.img", "m", &["--coverage", "0.05"]);
    assert_verifies_clean(&env, &[], "after a write that finished");
    env.run(&["checkpoint", "--manifest", "m", "after"])
        .assert_code(0);
    assert_verifies_clean(&env, &["--at", "after"], "at the new checkpoint");
}

/// The file's bytes just before each manifest sync (None: not in place yet).
type Snapshots = Arc<Mutex<Vec<Option<Vec<u8>>>>>;

const PAGE: usize = 4096;

/// A model of what the manifest must say, operation by operation.
struct Truth {
    /// Generation of every block as the latest completed close left it.
    closed: Vec<u32>,
    /// Generations during the open write session.
    current: Vec<u32>,
    /// Every generation each block has held (a write session may be cut
    /// anywhere: the map then holds one of them).
    history: Vec<BTreeSet<u32>>,
    /// Completed operations: (syncs observed when it returned, what it was).
    done: Vec<(usize, Done)>,
}

#[derive(Clone)]
enum Done {
    Close(Vec<u32>),
    Checkpoint(String, Vec<u32>),
}

fn record(truth: &mut Truth, snapshots: &Snapshots, done: Done) {
    let count = snapshots.lock().unwrap().len();
    truth.done.push((count, done));
}

#[test]
fn a_power_cut_between_any_two_manifest_syncs_leaves_a_manifest_that_expects_the_truth() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m");
    let blocks = 8192u64; // a map of four pages
    let snapshots: Snapshots = Arc::default();
    {
        let snapshots = Arc::clone(&snapshots);
        let watched = path.clone();
        observe_syncs(Some(Box::new(move |synced: &Path| {
            if synced == watched {
                snapshots.lock().unwrap().push(std::fs::read(synced).ok());
            }
        })));
    }
    let mut manifest = Manifest::create(
        &path,
        NewManifest {
            run_id: 1,
            seed: 2,
            block_size: 4096,
            random_bytes: 464,
            dedup_permille: 0,
            target: TargetRecord {
                uri: "disk.img".into(),
                kind: "file".into(),
                size_bytes: blocks * 4096,
                logical_sector_size: 512,
                physical_sector_size: 4096,
                model: None,
                serial: None,
                wwn: None,
            },
            // The journal's syncs are the writer's business (and tested in
            // tests/crash.rs); this test follows the map, header and undo log.
            journal_bytes: 0,
        },
    )
    .unwrap();
    let mut truth = Truth {
        closed: vec![0; blocks as usize],
        current: vec![0; blocks as usize],
        history: vec![[0].into(); blocks as usize],
        done: Vec::new(),
    };
    let done = Done::Close(truth.closed.clone());
    record(&mut truth, &snapshots, done);
    let mut rng = SplitMix64(77);
    for session in 0..4 {
        manifest.begin_write().unwrap();
        for step in 0..3 {
            for _ in 0..300 {
                // Clustered and scattered, so some pages change and some not.
                let block = if rng.next_u64().is_multiple_of(2) {
                    rng.next_u64() % 600
                } else {
                    rng.next_u64() % blocks
                } as usize;
                let generation = next_generation(truth.current[block]);
                manifest.set_generation(block as u64, generation);
                truth.current[block] = generation;
                truth.history[block].insert(generation);
            }
            if step < 2 {
                // The writer's periodic store.
                manifest.persist_undo().unwrap();
                manifest.store_header().unwrap();
            }
        }
        manifest.finish_write().unwrap();
        truth.closed = truth.current.clone();
        let done = Done::Close(truth.closed.clone());
        record(&mut truth, &snapshots, done);
        let name = format!("cp{session}");
        manifest.add_checkpoint(&name).unwrap();
        let done = Done::Checkpoint(name, truth.closed.clone());
        record(&mut truth, &snapshots, done);
    }
    drop(manifest);
    observe_syncs(None);
    let mut states = snapshots.lock().unwrap().clone();
    states.push(std::fs::read(&path).ok()); // the state after the last sync
    assert!(
        states.len() > 20,
        "the syncs were observed: {}",
        states.len()
    );

    let cut_path = dir.path().join("cut");
    let mut cuts = 0;
    for k in 0..states.len() - 1 {
        let (Some(durable), Some(next)) = (&states[k], &states[k + 1]) else {
            continue; // the manifest was not yet in place: nothing to open
        };
        let changed: Vec<usize> = (0..next.len().div_ceil(PAGE))
            .filter(|&page| {
                let range = page * PAGE..((page + 1) * PAGE).min(next.len());
                durable.get(range.clone()) != next.get(range)
            })
            .collect();
        // Sync k completed, k + 1 did not: operations whose last sync was
        // at most k are complete.
        let completed: Vec<&Done> = truth
            .done
            .iter()
            .filter(|(count, _)| *count <= k + 1)
            .map(|(_, done)| done)
            .collect();
        // The operation under way may have finished in all but its last
        // sync: the kernel may have written its pages back already.
        let under_way = truth
            .done
            .iter()
            .find(|(count, _)| *count > k + 1)
            .map(|(_, done)| done);
        for variant in 0..12 {
            let mut file = durable.clone();
            if next.len() > file.len() {
                file.resize(next.len(), 0);
            }
            for &page in &changed {
                // Every page, none, or any mix.
                let take = match variant {
                    0 => false,
                    1 => true,
                    _ => rng.next_u64().is_multiple_of(2),
                };
                if take {
                    let range = page * PAGE..((page + 1) * PAGE).min(next.len());
                    file[range.clone()].copy_from_slice(&next[range]);
                }
            }
            std::fs::write(&cut_path, &file).unwrap();
            check_cut(
                &cut_path,
                &completed,
                under_way,
                &truth,
                &format!("cut after sync {k}, variant {variant}"),
            );
            cuts += 1;
        }
    }
    assert!(cuts > 200, "{cuts} cuts checked");
}

/// The manifest at `path` opens, lists every completed checkpoint, and
/// expects exactly what the model says.
fn check_cut(
    path: &Path,
    completed: &[&Done],
    under_way: Option<&Done>,
    truth: &Truth,
    context: &str,
) {
    let manifest = Manifest::open(path, Access::Read)
        .unwrap_or_else(|e| panic!("{context}: the manifest does not open: {e}"));
    let mut last_close = None;
    let listed: Vec<&str> = manifest
        .header()
        .checkpoints
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let finished_under_way = under_way.filter(|done| match done {
        Done::Checkpoint(name, _) => listed.contains(&name.as_str()),
        // A clean header may be the one before the session or after it.
        Done::Close(_) => false,
    });
    for done in completed.iter().copied().chain(finished_under_way) {
        match done {
            Done::Close(generations) => last_close = Some(generations),
            Done::Checkpoint(name, generations) => {
                let expected = manifest
                    .expected(Some(name))
                    .unwrap_or_else(|e| panic!("{context}: checkpoint {name} lost: {e}"));
                for (block, &generation) in generations.iter().enumerate() {
                    assert_eq!(
                        expected.generation(block as u64),
                        generation,
                        "{context}: block {block} at checkpoint {name}"
                    );
                }
            }
        }
    }
    let latest = manifest.expected(None).unwrap();
    match manifest.header().state {
        ManifestState::Clean => {
            let closed = last_close.expect("created before the first sync");
            let matches = |generations: &Vec<u32>| {
                (0..generations.len()).all(|b| latest.generation(b as u64) == generations[b])
            };
            let closing = match under_way {
                Some(Done::Close(generations)) => matches(generations),
                _ => false,
            };
            assert!(
                matches(closed) || closing,
                "{context}: a clean manifest expects neither the last close nor the one under way"
            );
        }
        ManifestState::Writing => {
            for (block, generations) in truth.history.iter().enumerate() {
                let found = latest.generation(block as u64);
                assert!(
                    generations.contains(&found),
                    "{context}: block {block} holds {found}, never written"
                );
            }
        }
    }
}

/// Root is needed to mount a tmpfs: skip on a developer's machine (saying
/// why), fail in CI where every test must run.
fn need_root() -> bool {
    common::need::require(common::need::Need::Root)
}

/// A small tmpfs, unmounted when dropped (even when the test fails).
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn mount(size: &str) -> SmallTmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs");
        SmallTmpfs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Fill it to the last byte.
    fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4096"])
            .arg(format!("of={}", self.path("filler").display()))
            .stderr(Stdio::null())
            .status();
    }

    fn free(&self) {
        std::fs::remove_file(self.path("filler")).unwrap();
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_new_manifest_on_a_full_filesystem_is_refused_with_exit_3_and_leaves_no_file() {
    if !need_root() {
        return;
    }
    let env = TestEnv::new();
    let tmpfs = SmallTmpfs::mount("1M");
    let manifest = tmpfs.path("m");
    let manifest_arg = manifest.to_string_lossy().into_owned();
    env.run(&[
        "write",
        "disk.img",
        "--manifest",
        "seed-m",
        "--size",
        "64MiB",
        "--coverage",
        "0.01",
    ])
    .assert_code(0);
    let before = file_digest(&env.path("disk.img"));
    tmpfs.fill();
    let run = env.run(&[
        "write",
        "disk.img",
        "--manifest",
        &manifest_arg,
        "--coverage",
        "0.01",
    ]);
    let status_ok = run.code == 3;
    assert!(
        status_ok,
        "exit 3, not a signal: {} {}",
        run.code, run.stderr
    );
    assert_eq!(
        run.stderr.trim().lines().count(),
        1,
        "one line: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("cannot reserve") && run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    let left: Vec<_> = std::fs::read_dir(tmpfs.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "filler")
        .collect();
    assert!(left.is_empty(), "no manifest file left behind: {left:?}");
    assert_eq!(
        file_digest(&env.path("disk.img")),
        before,
        "target untouched"
    );
    // With room again, the same command works.
    tmpfs.free();
    env.run(&[
        "write",
        "disk.img",
        "--manifest",
        &manifest_arg,
        "--coverage",
        "0.01",
    ])
    .assert_code(0);
    env.verify("disk.img", &manifest_arg, &[]).assert_code(0);
}

#[test]
fn a_sparse_manifest_on_a_full_filesystem_is_read_without_a_signal() {
    if !need_root() {
        return;
    }
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "64MiB", "--coverage", "0.001"]);
    env.run(&["checkpoint", "--manifest", "m", "base"])
        .assert_code(0);
    let tmpfs = SmallTmpfs::mount("1M");
    let copy = tmpfs.path("m");
    let status = Command::new("cp")
        .args(["--sparse=always"])
        .arg(env.path("m"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    tmpfs.fill();
    let copy_arg = copy.to_string_lossy().into_owned();
    for args in [
        vec!["verify", "disk.img", "--manifest", &copy_arg],
        vec![
            "verify",
            "disk.img",
            "--manifest",
            &copy_arg,
            "--at",
            "base",
        ],
        vec!["checkpoint", "--manifest", &copy_arg, "--list"],
    ] {
        let output = Command::new(binary())
            .args(&args)
            .current_dir(env.dir.path())
            .output()
            .unwrap();
        assert_eq!(output.status.signal(), None, "{args:?} died of a signal");
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Taking a checkpoint needs the map writable: no room is a fault.
    let output = Command::new(binary())
        .args(["checkpoint", "--manifest", &copy_arg, "more"])
        .output()
        .unwrap();
    assert_eq!(output.status.signal(), None, "checkpoint died of a signal");
    let code = output.status.code();
    assert!(
        code == Some(0) || code == Some(3),
        "checkpoint: {code:?} {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
