//! `--jobs N`: the writes carried by N engines on N threads are what one
//! writer would leave: a clean verify, exact findings for injected damage,
//! and bad values refused. (A kill -9 and power cuts under two jobs are in
//! tests/crash.rs, beside one job's.)

mod common;

use common::{Image, Run, TestEnv, file_digest, finding_set};

const KIB4: u64 = 4096;

/// `run IMAGE --manifest M --size 4MiB --jobs JOBS --json -` and `extra`
/// in `env`; asserts exit 0.
fn run_on_jobs(env: &TestEnv, image: &str, manifest: &str, jobs: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "run",
        image,
        "--manifest",
        manifest,
        "--size",
        "4MiB",
        "--jobs",
        jobs,
        "--json",
        "-",
    ];
    args.extend_from_slice(extra);
    let run = env.run(&args);
    run.assert_code(0);
    run
}

/// Two passes with overwrites and writes of `io_size` on `jobs`; asserts a
/// clean report and returns it.
fn run_with_jobs(env: &TestEnv, jobs: &str, io_size: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--passes", "2", "--overwrite", "0.3", "--io-size", io_size];
    args.extend_from_slice(extra);
    let run = run_on_jobs(env, "disk.img", "m", jobs, &args);
    let report = run.report();
    assert_eq!(report["clean"], true, "{}", run.stdout);
    report
}

#[test]
fn a_run_with_two_jobs_is_clean_and_says_so() {
    let env = TestEnv::new();
    let run = run_on_jobs(&env, "disk.img", "m", "2", &[]);
    assert!(
        run.stderr.contains(", 2 jobs, seed"),
        "the summary names the jobs: {}",
        run.stderr
    );
    let report = run.report();
    assert_eq!(report["write_jobs"], 2);
    assert_eq!(report["blocks"]["checked"], 1024);
    assert_eq!(report["blocks"]["ok"], 1024);
    // One job keeps the summary as it was.
    let run = run_on_jobs(&env, "disk1.img", "m1", "1", &[]);
    assert!(!run.stderr.contains("jobs"), "{}", run.stderr);
    assert_eq!(run.report()["write_jobs"], 1);
}

#[test]
fn overwrites_and_multi_block_writes_on_two_jobs_verify_clean_on_every_engine() {
    for engine in ["auto", "sync", "inline"] {
        let env = TestEnv::new();
        let report = run_with_jobs(&env, "2", "4KiB-16KiB", &["--engine", engine]);
        assert_eq!(report["write_jobs"], 2, "{engine}");
        assert_eq!(report["blocks"]["expected_written"], 1024, "{engine}");
    }
}

#[test]
fn jobs_auto_is_one_per_core() {
    let env = TestEnv::new();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let report = run_with_jobs(&env, "auto", "4KiB-16KiB", &[]);
    assert_eq!(report["write_jobs"], cores as u64);
}

#[test]
fn a_corrupt_block_written_by_two_jobs_is_found_exactly() {
    let env = TestEnv::new();
    run_with_jobs(&env, "2", "4KiB", &[]);
    let image = Image::open(&env.path("disk.img"), KIB4);
    image.flip_bit(77, 1000, 3);
    image.sync();
    let run = env.verify("disk.img", "m", &[]);
    run.assert_code(1);
    assert_eq!(
        finding_set(&run.report()),
        vec![(77, "corrupt".to_string())]
    );
}

#[test]
fn bad_job_counts_are_refused_before_anything_is_written() {
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "1MiB"]);
    let target = env.path("disk.img");
    for (jobs, says) in [
        ("0", "bad --jobs '0'"),
        ("x", "bad --jobs 'x'"),
        ("257", "bad --jobs '257'"),
    ] {
        for command in ["write", "run"] {
            let before = file_digest(&target);
            let args = [command, "disk.img", "--manifest", "m", "--jobs", jobs];
            let run = env.run(&args);
            run.assert_code(2);
            let message = run.stderr.trim();
            assert!(message.contains(says), "{message}");
            assert!(message.contains("or auto"), "says what to do: {message}");
            assert_eq!(message.lines().count(), 1, "{message}");
            assert_eq!(file_digest(&target), before, "{args:?} wrote");
            common::record_refusal(env.dir.path(), &args, 2, message);
        }
    }
}
