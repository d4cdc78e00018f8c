//! Metrics in the JSON report and the `--metrics` file, and the `report`
//! views (HTML, compare, merge) driven through the real binary.

mod common;

use common::{Image, TestEnv};
use serde_json::Value;

const KIB4: u64 = 4096;

fn read_json(env: &TestEnv, name: &str) -> Value {
    let text = std::fs::read_to_string(env.path(name)).expect("read JSON file");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON ({e}): {text}"))
}

fn write_json(env: &TestEnv, name: &str, value: &Value) {
    std::fs::write(env.path(name), value.to_string()).expect("write JSON file");
}

/// `run` on a fresh 4 MiB image with `--json run.json --metrics run.jsonl`.
fn clean_run(env: &TestEnv) -> Value {
    env.run(&[
        "run",
        "disk.img",
        "--manifest",
        "m",
        "--size",
        "4MiB",
        "--json",
        "run.json",
        "--metrics",
        "run.jsonl",
    ])
    .assert_code(0);
    read_json(env, "run.json")
}

fn number(value: &Value, what: &str) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {value}"))
}

fn assert_direction(direction: &Value, what: &str) {
    for key in ["ios", "bytes", "active_s", "iops", "bytes_per_s"] {
        assert!(
            number(&direction[key], key) > 0.0,
            "{what}.{key}: {direction}"
        );
    }
    let latency = &direction["latency_us"];
    let p50 = number(&latency["p50"], "p50");
    let p99 = number(&latency["p99"], "p99");
    let p99_9 = number(&latency["p99_9"], "p99_9");
    let max = number(&latency["max"], "max");
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= p99_9 && p99_9 <= max,
        "{what} percentiles in order: {latency}"
    );
}

#[test]
fn run_reports_carry_write_and_read_metrics() {
    let env = TestEnv::new();
    let report = clean_run(&env);
    let metrics = &report["metrics"];
    assert_direction(&metrics["write"], "write");
    assert_direction(&metrics["read"], "read");
    // Every block written once, 4 KiB per write; every byte read counted.
    assert_eq!(metrics["write"]["bytes"], 4 << 20);
    assert_eq!(metrics["write"]["ios"], (4 << 20) / KIB4);
    assert_eq!(metrics["read"]["bytes"], report["bytes_read"]);

    let timeline = metrics["timeline"].as_array().expect("timeline");
    assert!(!timeline.is_empty());
    let sum = |key: &str| -> u64 { timeline.iter().map(|p| p[key].as_u64().unwrap()).sum() };
    assert_eq!(sum("write_bytes"), 4 << 20);
    assert_eq!(sum("read_bytes"), report["bytes_read"].as_u64().unwrap());
    for (i, point) in timeline.iter().enumerate() {
        assert_eq!(point["t_s"], i as u64, "one point per second, in order");
        for key in [
            "span_s",
            "write_iops",
            "write_p50_us",
            "write_p99_us",
            "write_max_us",
            "read_iops",
            "read_p50_us",
            "read_p99_us",
            "read_max_us",
        ] {
            assert!(point.get(key).is_some(), "{key} in {point}");
        }
    }
}

#[test]
fn the_metrics_file_has_one_json_line_per_second_adding_up_to_the_run() {
    let env = TestEnv::new();
    let report = clean_run(&env);
    let text = std::fs::read_to_string(env.path("run.jsonl")).expect("metrics file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?}: {e}")))
        .collect();
    assert!(!lines.is_empty());
    let sum = |key: &str| -> u64 { lines.iter().map(|p| p[key].as_u64().unwrap()).sum() };
    assert_eq!(sum("write_bytes"), 4 << 20);
    assert_eq!(sum("read_bytes"), report["bytes_read"].as_u64().unwrap());
    assert_eq!(lines.last().unwrap()["t_s"], lines.len() as u64 - 1);
}

#[test]
fn verify_reports_carry_read_metrics_only() {
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "2MiB"]);
    let run = env.verify("disk.img", "m", &[]);
    run.assert_code(0);
    let report = run.report();
    assert!(report["metrics"]["write"].is_null());
    assert_direction(&report["metrics"]["read"], "read");
}

#[test]
fn an_uncreatable_metrics_file_is_refused_before_anything_is_written() {
    let env = TestEnv::new();
    let run = env.run(&[
        "run",
        "disk.img",
        "--manifest",
        "m",
        "--size",
        "1MiB",
        "--metrics",
        "no/such/dir/m.jsonl",
    ]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("cannot create metrics file no/such/dir/m.jsonl"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1);
    assert!(!env.path("disk.img").exists() && !env.path("m").exists());
}

/// A clean run, then damage: one bit flipped in block 3, block 9 zeroed;
/// `verify --json findings.json` (exit 1).
fn run_with_findings(env: &TestEnv) -> Value {
    clean_run(env);
    let image = Image::open(&env.path("disk.img"), KIB4);
    image.flip_bit(3, 1000, 4);
    image.zero_block(9);
    image.sync();
    env.run(&[
        "verify",
        "disk.img",
        "--manifest",
        "m",
        "--json",
        "findings.json",
    ])
    .assert_code(1);
    read_json(env, "findings.json")
}

#[test]
fn report_html_writes_one_self_contained_page() {
    let env = TestEnv::new();
    run_with_findings(&env);
    let run = env.run(&["report", "findings.json", "--html", "page.html"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("wrote page.html: ") && run.stdout.contains("2 finding(s)"),
        "{}",
        run.stdout
    );
    let html = std::fs::read_to_string(env.path("page.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("id=\"target-map\"") && html.contains("class=\"hex diff\""));
    // Self-contained: nothing is fetched from elsewhere.
    for reference in ["src=", "href=", "<script", "@import", "url("] {
        assert!(!html.contains(reference), "{reference} in the page");
    }
    // - writes the page to stdout.
    let run = env.run(&["report", "findings.json", "--html", "-"]);
    run.assert_code(0);
    assert_eq!(run.stdout, html);
}

#[test]
fn bad_report_files_are_exit_2_with_one_line() {
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "1MiB"]);
    std::fs::write(env.path("empty.json"), "").unwrap();
    std::fs::write(env.path("other.json"), r#"{"schema": "something/2"}"#).unwrap();
    std::fs::write(
        env.path("half.json"),
        r#"{"schema": "blockstamp.report/1"}"#,
    )
    .unwrap();
    for (file, says) in [
        (
            "missing.json",
            "cannot read report missing.json: No such file",
        ),
        ("empty.json", "empty.json: not a JSON report"),
        ("m", "m: not a JSON report"),
        (
            "other.json",
            "not a blockstamp.report/1 report (its schema is \"something/2\")",
        ),
        (
            "half.json",
            "damaged blockstamp.report/1 report: missing field",
        ),
    ] {
        for args in [
            vec!["report", file, "--html", "out.html"],
            vec!["report", "compare", file, file],
            vec!["report", "merge", file],
        ] {
            let run = env.run(&args);
            run.assert_code(2);
            let message = run.stderr.trim();
            assert!(message.starts_with("blockstamp: "), "{message}");
            assert!(message.contains(says), "{args:?}: {message}");
            assert_eq!(message.lines().count(), 1, "{message}");
        }
    }
    assert!(!env.path("out.html").exists());
}

#[test]
fn compare_of_the_same_night_crosses_nothing() {
    let env = TestEnv::new();
    clean_run(&env);
    let run = env.run(&["report", "compare", "run.json", "run.json"]);
    run.assert_code(0);
    for figure in [
        "write throughput",
        "write IOPS",
        "write latency p99",
        "read latency p99.9",
    ] {
        assert!(run.stdout.contains(figure), "{figure}: {}", run.stdout);
    }
    assert!(run.stdout.contains("OK: no threshold crossed"));
}

#[test]
fn compare_exits_1_when_throughput_drops_or_p99_rises_past_the_limits() {
    let env = TestEnv::new();
    let last = clean_run(&env);
    let mut tonight = last.clone();
    let write = number(&last["metrics"]["write"]["bytes_per_s"], "write");
    tonight["metrics"]["write"]["bytes_per_s"] = serde_json::json!(write * 0.8);
    let p99 = number(&last["metrics"]["read"]["latency_us"]["p99"], "p99");
    tonight["metrics"]["read"]["latency_us"]["p99"] = serde_json::json!(p99 * 2.0);
    write_json(&env, "tonight.json", &tonight);

    let run = env.run(&["report", "compare", "run.json", "tonight.json"]);
    run.assert_code(1);
    assert!(
        run.stdout
            .contains("REGRESSION: write throughput dropped 20.0% (limit 10%); read latency p99 rose 100.0% (limit 25%)"),
        "{}",
        run.stdout
    );
    // Looser limits let the same night pass.
    env.run(&[
        "report",
        "compare",
        "run.json",
        "tonight.json",
        "--max-throughput-drop",
        "25%",
        "--max-latency-rise",
        "150%",
    ])
    .assert_code(0);
    // --json - puts the JSON on stdout, the table on stderr.
    let run = env.run(&[
        "report",
        "compare",
        "run.json",
        "tonight.json",
        "--json",
        "-",
    ]);
    run.assert_code(1);
    let json: Value = serde_json::from_str(&run.stdout).expect("compare JSON");
    assert_eq!(json["schema"], "blockstamp.compare/1");
    assert_eq!(json["regressed"], true);
    let crossed: Vec<&str> = json["figures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["crossed"] == true)
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(crossed, vec!["write_bytes_per_s", "read_p99_us"]);
    assert!(run.stderr.contains("REGRESSION"));
}

#[test]
fn compare_exits_1_when_a_disruption_stalls_longer_than_last_night_by_more_than_the_limit() {
    let env = TestEnv::new();
    env.run(&[
        "run",
        "disk.img",
        "--manifest",
        "m",
        "--size",
        "4MiB",
        "--passes",
        "100000",
        "--duration",
        "1s",
        "--disrupt",
        "true",
        "--disrupt-at",
        "300ms",
        "--json",
        "last.json",
    ])
    .assert_code(0);
    let last = read_json(&env, "last.json");
    let stall = number(&last["disruptions"][0]["stall_s"], "stall_s");
    let night = |name: &str, longer_s: f64| {
        let mut tonight = last.clone();
        tonight["disruptions"][0]["stall_s"] = serde_json::json!(stall + longer_s);
        write_json(&env, name, &tonight);
    };
    night("slow.json", 3.0);
    night("bit-slower.json", 1.0);

    let run = env.run(&["report", "compare", "last.json", "slow.json"]);
    run.assert_code(1);
    assert!(
        run.stdout
            .contains("REGRESSION: disruption 1 stalled 3.00 s longer")
            && run.stdout.contains("; the longest stall rose 3.00 s"),
        "{}",
        run.stdout
    );
    // A second more is within the default 2 s; a 5 s limit lets 3 s through.
    env.run(&["report", "compare", "last.json", "bit-slower.json"])
        .assert_code(0);
    env.run(&[
        "report",
        "compare",
        "last.json",
        "slow.json",
        "--max-stall-rise",
        "5s",
    ])
    .assert_code(0);
    let run = env.run(&["report", "compare", "last.json", "slow.json", "--json", "-"]);
    run.assert_code(1);
    let json: Value = serde_json::from_str(&run.stdout).expect("compare JSON");
    assert_eq!(json["disruptions"]["by_index"][0]["stall"]["crossed"], true);
    assert_eq!(json["disruptions"]["longest_stall"]["crossed"], true);
    assert_eq!(json["thresholds"]["max_stall_rise_s"], 2.0);
}

#[test]
fn compare_counts_new_findings_of_the_same_run_by_block() {
    let env = TestEnv::new();
    run_with_findings(&env);
    let args = [
        "report",
        "compare",
        "run.json",
        "findings.json",
        "--json",
        "cmp.json",
    ];
    let run = env.run(&args);
    run.assert_code(1);
    let json = read_json(&env, "cmp.json");
    assert_eq!(json["findings"]["new"], 2);
    assert_eq!(json["findings"]["new_counted_by"], "blocks");
    assert_eq!(json["findings"]["by_class"]["zeroed"]["tonight"], 1);
    assert!(
        run.stdout.contains("2 new finding(s) (limit 0)"),
        "{}",
        run.stdout
    );
    // The same findings two nights running are not new.
    env.run(&["report", "compare", "findings.json", "findings.json"])
        .assert_code(0);
    let mut allowed = args.to_vec();
    allowed.extend([
        "--max-new-findings",
        "2",
        "--max-throughput-drop",
        "100%",
        "--max-latency-rise",
        "100000%",
    ]);
    env.run(&allowed).assert_code(0);
}

#[test]
fn bad_thresholds_are_exit_2() {
    let env = TestEnv::new();
    clean_run(&env);
    for (flag, value, says) in [
        ("--max-throughput-drop", "10", "write it with a % sign"),
        (
            "--max-throughput-drop",
            "150%",
            "cannot drop by more than 100%",
        ),
        ("--max-latency-rise", "-5%", "bad percentage '-5%'"),
        ("--max-new-findings", "-1", "--max-new-findings"),
        (
            "--max-stall-rise",
            "soon",
            "--max-stall-rise: bad duration 'soon'",
        ),
    ] {
        let flag_value = format!("{flag}={value}");
        let run = env.run(&["report", "compare", "run.json", "run.json", &flag_value]);
        run.assert_code(2);
        assert!(run.stderr.contains(says), "{flag} {value}: {}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1);
    }
}

#[test]
fn merge_gives_the_fleet_view_and_exits_1_on_any_finding() {
    let env = TestEnv::new();
    let findings = run_with_findings(&env);
    let mut other_host = read_json(&env, "run.json");
    other_host["host"] = serde_json::json!("storage-lab-9");
    write_json(&env, "lab9.json", &other_host);

    let run = env.run(&[
        "report",
        "merge",
        "lab9.json",
        "findings.json",
        "--json",
        "fleet.json",
        "--html",
        "fleet.html",
    ]);
    run.assert_code(1);
    assert!(
        run.stdout.contains(&format!(
            "FINDINGS: 2 finding(s) in 1 of 2 report(s), on {}",
            findings["host"].as_str().unwrap()
        )),
        "{}",
        run.stdout
    );
    let fleet = read_json(&env, "fleet.json");
    assert_eq!(fleet["schema"], "blockstamp.fleet/1");
    assert_eq!(fleet["report_count"], 2);
    assert_eq!(fleet["clean"], false);
    assert_eq!(fleet["findings_by_class"]["corrupt"], 1);
    assert_eq!(fleet["findings_by_class"]["zeroed"], 1);
    assert_eq!(fleet["reports"][0]["host"], "storage-lab-9");
    assert!(fleet["worst"]["write_p99_us"]["value"].as_f64().unwrap() > 0.0);
    let html = std::fs::read_to_string(env.path("fleet.html")).unwrap();
    assert!(html.contains("storage-lab-9") && html.contains("id=\"findings-matrix\""));

    let run = env.run(&["report", "merge", "lab9.json", "run.json"]);
    run.assert_code(0);
    assert!(run.stdout.contains("CLEAN: 2 report(s)"), "{}", run.stdout);
}

#[test]
fn the_report_command_shows_its_three_forms_when_called_bare() {
    let env = TestEnv::new();
    let run = env.run(&["report"]);
    run.assert_code(2);
    for form in [
        "blockstamp report RUN.json --html OUT.html",
        "blockstamp report compare LAST.json TONIGHT.json",
        "blockstamp report merge REPORT.json...",
    ] {
        assert!(
            run.stdout.contains(form) || run.stderr.contains(form),
            "{form}"
        );
    }
    let run = env.run(&["report", "run.json"]);
    run.assert_code(2);
    assert!(run.stderr.contains("--html"), "{}", run.stderr);
}

/// Every key of `value`, at any depth.
fn keys_of(value: &Value, keys: &mut std::collections::BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                keys.insert(key.clone());
                keys_of(inner, keys);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| keys_of(item, keys)),
        _ => {}
    }
}

/// docs/CONTRACT.md promises to describe every field of the report and
/// every finding class; a field added without its line there fails here.
#[test]
fn every_report_field_and_finding_class_is_in_the_contract() {
    let contract_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONTRACT.md");
    let contract = std::fs::read_to_string(&contract_path).expect("read docs/CONTRACT.md");
    let env = TestEnv::new();
    clean_run(&env);
    common::snapshot(&env.path("disk.img"), &env.path("older.img"));
    env.write("disk.img", "m", &[]);
    let image = Image::open(&env.path("disk.img"), KIB4);
    let older = Image::open(&env.path("older.img"), KIB4);
    image.flip_bit(3, 1000, 4);
    image.zero_block(9);
    image.splice_sectors(&older, 12, 0..4);
    image.sync();
    env.run(&[
        "verify",
        "disk.img",
        "--manifest",
        "m",
        "--json",
        "v.json",
        "--on-finding",
        "echo collected",
    ])
    .assert_code(1);
    env.run(&[
        "soak",
        "soak.img",
        "--manifest",
        "soak.m",
        "--size",
        "1MiB",
        "--duration",
        "1s",
        "--verify-every",
        "500ms",
        "--disrupt",
        "true",
        "--recover",
        "true",
        "--disrupt-at",
        "300ms",
        "--json",
        "soak.json",
    ])
    .assert_code(0);
    let verify = read_json(&env, "v.json");
    let classes: Vec<&str> = verify["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["class"].as_str())
        .collect();
    assert_eq!(classes, ["corrupt", "zeroed", "torn"], "the scene changed");
    let mut keys = std::collections::BTreeSet::new();
    keys_of(&verify, &mut keys);
    let soak = read_json(&env, "soak.json");
    assert_eq!(
        soak["disruptions"].as_array().map(Vec::len),
        Some(1),
        "the soak's disruption is in its report"
    );
    keys_of(&soak, &mut keys);
    // A run over many targets: its report and its sections.
    std::fs::create_dir(env.path("many")).expect("create manifest dir");
    env.run(&[
        "run",
        "x.img",
        "y.img",
        "--manifest-dir",
        "many",
        "--size",
        "1MiB",
        "--json",
        "multi.json",
    ])
    .assert_code(0);
    let multi = read_json(&env, "multi.json");
    assert_eq!(multi["targets"].as_array().map(Vec::len), Some(2));
    keys_of(&multi, &mut keys);
    // Every field of a disruption, the optional ones too (a short soak may
    // not see the throughput recover).
    let every_field = blockstamp::report::Disruption {
        index: 1,
        command: "c".into(),
        recover_command: Some("r".into()),
        started_at_s: 1.0,
        command_s: 1.0,
        recover_s: Some(1.0),
        answered_at_s: 2.0,
        stall_s: 1.0,
        baseline_write_bytes_per_s: 1.0,
        recovered_after_s: Some(3.0),
        failed_ios: 0,
        reconnects: 0,
        verify_checked_blocks: 0,
        verify_s: 0.0,
        findings_by_class: Default::default(),
        findings: Vec::new(),
    };
    keys_of(
        &serde_json::to_value(&every_field).expect("a disruption serialises"),
        &mut keys,
    );
    let undocumented: Vec<&String> = keys
        .iter()
        .filter(|key| {
            ![format!("`{key}`"), format!(".{key}`"), format!("\"{key}\"")]
                .iter()
                .any(|form| contract.contains(form.as_str()))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "report fields missing from docs/CONTRACT.md: {undocumented:?}"
    );
    for class in blockstamp::verify::FindingClass::ALL {
        let row = format!("| `{}` |", class.name());
        assert!(
            contract.contains(&row),
            "class {} missing from docs/CONTRACT.md",
            class.name()
        );
    }
}
