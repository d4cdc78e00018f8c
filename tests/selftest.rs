//! `blockstamp selftest` through the real binary: every class injected,
//! caught and classified, and the table says so; bad flags are refused.

mod common;

use common::TestEnv;
use serde_json::Value;

fn selftest(env: &TestEnv, extra: &[&str]) -> common::Run {
    let dir = env.p("");
    let mut args = vec!["selftest", "--dir", &dir, "--seed", "20240607"];
    args.extend_from_slice(extra);
    env.run(&args)
}

fn row<'a>(run: &'a Value, class: &str) -> &'a Value {
    run["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["class"] == class)
        .unwrap_or_else(|| panic!("no row for {class}"))
}

#[test]
fn every_class_is_injected_caught_and_classified_at_three_block_sizes() {
    let env = TestEnv::new();
    let run = selftest(
        &env,
        &[
            "--json",
            "--block-size",
            "512",
            "--block-size",
            "4KiB",
            "--block-size",
            "64KiB",
        ],
    );
    run.assert_code(0);
    let report = run.report();
    assert_eq!(report["schema"], "blockstamp.selftest/1");
    assert_eq!(report["passed"], true);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for run in runs {
        let block_size = run["block_size"].as_u64().unwrap();
        assert_eq!(run["mismatches"].as_array().unwrap().len(), 0);
        for class in [
            "lost_write",
            "newer_generation",
            "misdirected",
            "torn",
            "corrupt",
            "zeroed",
            "foreign",
            "unreadable",
            "lost_zeroing",
        ] {
            let row = row(run, class);
            let injected = row["injected"].as_u64().unwrap();
            if class == "torn" && block_size == 512 {
                assert_eq!(injected, 0, "a 512-byte block cannot tear");
                continue;
            }
            assert!(injected >= 3, "{class} at {block_size}: {row}");
            assert_eq!(row["detected"], injected, "{class} at {block_size}");
            assert_eq!(row["classified_correctly"], injected, "{class}");
            assert_eq!(row["false_positives"], 0, "{class}");
        }
        // Three lost writes, two stale reads and the three blocks that
        // misdirected writes never reached.
        assert_eq!(row(run, "lost_write")["injected"], 8);
        // Two lost zeroings, two lost discards (the image's discards read
        // zeros) and the blocks misdirected zeroings and discards missed.
        assert_eq!(row(run, "lost_zeroing")["injected"], 8);
        // Every fault of a zeroing or discard struck and was caught exactly.
        let faults = run["faults"].as_array().unwrap();
        for (fault, findings) in [
            ("lost_zeroing", 2),
            ("lost_discard", 2),
            ("misdirected_zeroing", 4),
            ("misdirected_discard", 4),
            ("torn_zeroing", 2),
            ("discard_exposes_other", 2),
            ("discard_garbage", 2),
        ] {
            let line = faults.iter().find(|f| f["fault"] == fault);
            if fault == "torn_zeroing" && block_size == 512 {
                assert!(line.is_none(), "a 512-byte block cannot tear");
                continue;
            }
            let line = line.unwrap_or_else(|| panic!("no row for {fault}"));
            assert_eq!(line["injected"], 2, "{fault} at {block_size}");
            assert_eq!(line["findings"], findings, "{fault} at {block_size}");
            assert_eq!(line["caught_exactly"], findings, "{fault} at {block_size}");
        }
    }
    // The scratch files are gone.
    assert_eq!(std::fs::read_dir(env.dir.path()).unwrap().count(), 0);
}

#[test]
fn the_table_shows_every_class_and_the_verdict() {
    let env = TestEnv::new();
    let run = selftest(&env, &[]);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("class              injected detected classified correctly false positives"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("fault                  injected findings caught exactly"),
        "{}",
        run.stdout
    );
    for row in [
        "lost_write",
        "newer_generation",
        "unreadable",
        "lost_zeroing",
        "all",
        "lost_discard",
        "misdirected_zeroing",
        "misdirected_discard",
        "torn_zeroing",
        "discard_exposes_other",
        "discard_garbage",
    ] {
        assert!(
            run.stdout
                .lines()
                .any(|line| line.starts_with(&format!("{row} "))),
            "{row}: {}",
            run.stdout
        );
    }
    for class in ["lost_write", "newer_generation", "unreadable", "all"] {
        assert!(run.stdout.contains(class), "{}", run.stdout);
    }
    assert!(
        run.stdout.contains("selftest passed (seed 20240607)"),
        "{}",
        run.stdout
    );
}

#[test]
fn bad_selftest_flags_are_refused() {
    let env = TestEnv::new();
    for (args, says) in [
        (
            vec!["selftest", "--block-size", "3K"],
            "bad --block-size '3K'",
        ),
        (
            vec!["selftest", "--dir", "no/such/dir"],
            "bad --dir no/such/dir: not an existing directory",
        ),
        (vec!["selftest", "--seed", "x"], "invalid value 'x'"),
    ] {
        let run = env.run(&args);
        run.assert_code(2);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
        common::record_refusal(env.dir.path(), &args, 2, &run.stderr);
    }
}
