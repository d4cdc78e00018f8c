//! The outputs other systems read, driven through the real binary: JUnit
//! XML (`--junit`), validated against the Jenkins JUnit schema with
//! xmllint, and the Prometheus textfile (`--prometheus`), read with the
//! Prometheus project's own Python parser; both checked against the JSON
//! report of the same run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::need::{Need, python, require};
use common::{Image, TestEnv};
use serde_json::Value;

/// Every finding class, in the order of the contract's class table.
const CLASSES: [&str; 9] = [
    "lost_write",
    "newer_generation",
    "misdirected",
    "torn",
    "corrupt",
    "zeroed",
    "foreign",
    "unreadable",
    "lost_zeroing",
];

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------- JUnit

/// `xmllint --schema tests/data/junit-10.xsd`: panics with xmllint's words
/// when the file is not valid.
fn assert_valid_junit(path: &Path) {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/junit-10.xsd");
    let output = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema)
        .arg(path)
        .output()
        .expect("run xmllint");
    assert!(
        output.status.success(),
        "{} is not valid JUnit XML:\n{}\n{}",
        path.display(),
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

/// A test case as read back: its suite, name, classname and outcome
/// (`passed`, `failure`, `error`, `skipped`) with its message.
#[derive(Debug)]
struct Case {
    suite: String,
    name: String,
    classname: String,
    outcome: &'static str,
    message: String,
    body: String,
}

struct Junit {
    text: String,
}

impl Junit {
    /// Read, validate against the schema, and parse `path`.
    fn read(path: &Path) -> Junit {
        assert_valid_junit(path);
        Junit {
            text: std::fs::read_to_string(path).unwrap(),
        }
    }

    fn doc(&self) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(&self.text).expect("well-formed XML")
    }

    fn suites(&self) -> Vec<BTreeMap<String, String>> {
        self.doc()
            .descendants()
            .filter(|n| n.has_tag_name("testsuite"))
            .map(|n| {
                n.attributes()
                    .map(|a| (a.name().to_string(), a.value().to_string()))
                    .collect()
            })
            .collect()
    }

    fn cases(&self) -> Vec<Case> {
        let doc = self.doc();
        doc.descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .map(|n| {
                let suite = n.parent().unwrap().attribute("name").unwrap().to_string();
                let result = n.children().find(|c| {
                    ["failure", "error", "skipped"]
                        .iter()
                        .any(|t| c.has_tag_name(*t))
                });
                let (outcome, message, body) = match result {
                    None => ("passed", String::new(), String::new()),
                    Some(r) => (
                        match r.tag_name().name() {
                            "failure" => "failure",
                            "error" => "error",
                            _ => "skipped",
                        },
                        r.attribute("message").unwrap_or_default().to_string(),
                        r.text().unwrap_or_default().to_string(),
                    ),
                };
                Case {
                    suite,
                    name: n.attribute("name").unwrap().to_string(),
                    classname: n.attribute("classname").unwrap().to_string(),
                    outcome,
                    message,
                    body,
                }
            })
            .collect()
    }

    fn names_with(&self, outcome: &str) -> Vec<String> {
        self.cases()
            .into_iter()
            .filter(|c| c.outcome == outcome)
            .map(|c| c.name)
            .collect()
    }
}

/// A clean 3 s soak of a 4 MiB image, verified every second, with `extra`
/// flags; its JSON report.
fn short_soak(env: &TestEnv, extra: &[&str]) -> Value {
    let mut args = vec![
        "soak",
        "disk.img",
        "-m",
        "m",
        "--size",
        "4MiB",
        "--duration",
        "3s",
        "--verify-every",
        "1s",
        "--json",
        "r.json",
    ];
    args.extend_from_slice(extra);
    env.run(&args).assert_code(0);
    read_json(&env.path("r.json"))
}

fn damaged_image(env: &TestEnv) {
    env.write("disk.img", "m", &["--size", "1MiB"]);
    let image = Image::open(&env.path("disk.img"), 4096);
    image.zero_block(7);
    image.zero_block(9);
    image.flip_bit(5, 1000, 3);
    image.sync();
}

#[test]
fn verify_junit_has_a_failing_case_per_damaged_class_and_fits_the_schema() {
    if !require(Need::Xmllint) {
        return;
    }
    let env = TestEnv::new();
    damaged_image(&env);
    let run = env.run(&[
        "verify", "disk.img", "-m", "m", "--json", "r.json", "--junit", "out.xml",
    ]);
    run.assert_code(1);
    let report = read_json(&env.path("r.json"));
    let junit = Junit::read(&env.path("out.xml"));

    let suites = junit.suites();
    assert_eq!(suites.len(), 1);
    let suite = &suites[0];
    assert_eq!(suite["name"], "disk.img");
    assert_eq!(suite["tests"], (CLASSES.len() + 1).to_string());
    assert_eq!(suite["failures"], "2");
    assert_eq!(suite["errors"], "0");
    assert_eq!(suite["skipped"], "0");
    assert_eq!(suite["hostname"], report["host"].as_str().unwrap());
    let timestamp = &suite["timestamp"];
    assert!(
        timestamp.len() == 20 && timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
        "{timestamp}"
    );

    let mut names = vec!["verify".to_string()];
    names.extend(CLASSES.iter().map(|c| c.to_string()));
    let cases = junit.cases();
    assert_eq!(
        cases.iter().map(|c| &c.name).collect::<Vec<_>>(),
        names.iter().collect::<Vec<_>>()
    );
    assert!(cases.iter().all(|c| c.classname == "blockstamp.disk_img"));
    assert_eq!(junit.names_with("failure"), ["corrupt", "zeroed"]);

    let zeroed = cases.iter().find(|c| c.name == "zeroed").unwrap();
    assert!(
        zeroed
            .message
            .starts_with("2 zeroed finding(s): block 7 (all 4096 bytes are zero"),
        "{}",
        zeroed.message
    );
    assert!(zeroed.message.contains("; block 9 ("), "{}", zeroed.message);
    assert_eq!(zeroed.body.lines().count(), 2, "{}", zeroed.body);
    assert!(
        zeroed.body.starts_with("offset 28672: block 7 ("),
        "{}",
        zeroed.body
    );
    let corrupt = cases.iter().find(|c| c.name == "corrupt").unwrap();
    let detail = common::finding(&report, 5)["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        corrupt.message,
        format!("1 corrupt finding(s): block 5 ({detail})")
    );

    let run_id = junit
        .doc()
        .descendants()
        .find(|n| n.has_tag_name("property") && n.attribute("name") == Some("run_id"))
        .and_then(|n| n.attribute("value").map(str::to_string));
    assert_eq!(run_id.as_deref(), report["run_id"].as_str());
}

#[test]
fn a_clean_run_writes_passing_junit_and_no_temporary_file() {
    if !require(Need::Xmllint) {
        return;
    }
    let env = TestEnv::new();
    std::fs::create_dir(env.path("ci")).unwrap();
    let run = env.run(&[
        "run",
        "disk.img",
        "-m",
        "m",
        "--size",
        "1MiB",
        "--junit",
        "ci/junit.xml",
    ]);
    run.assert_code(0);
    let junit = Junit::read(&env.path("ci/junit.xml"));
    // `verify`, then one case per class.
    assert_eq!(junit.cases().len(), CLASSES.len() + 1);
    assert_eq!(junit.names_with("passed").len(), CLASSES.len() + 1);
    let names: Vec<_> = std::fs::read_dir(env.path("ci"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["junit.xml"]);
}

#[test]
fn soak_junit_has_the_rolling_verify_and_every_interval() {
    if !require(Need::Xmllint) {
        return;
    }
    let env = TestEnv::new();
    let report = short_soak(&env, &["--verify-backlog", "64", "--junit", "soak.xml"]);
    let intervals = report["soak"]["intervals"].as_array().unwrap();
    let junit = Junit::read(&env.path("soak.xml"));
    let cases = junit.cases();
    let mut expected = vec!["verify".to_string()];
    expected.extend(CLASSES.iter().map(|c| c.to_string()));
    expected.push("rolling verify".to_string());
    expected.extend((1..=intervals.len()).map(|i| format!("interval {i} verify")));
    assert_eq!(
        cases.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(cases.iter().all(|c| c.outcome == "passed"), "{cases:#?}");
    let suite = &junit.suites()[0];
    let time: f64 = suite["time"].parse().unwrap();
    assert!(
        (time - report["soak"]["duration_s"].as_f64().unwrap()).abs() < 0.001,
        "{time}"
    );
}

#[test]
fn selftest_junit_has_a_case_per_row_of_its_table() {
    if !require(Need::Xmllint) {
        return;
    }
    let env = TestEnv::new();
    let run = env.run(&[
        "selftest",
        "--block-size",
        "512",
        "--block-size",
        "4KiB",
        "--seed",
        "7",
        "--dir",
        ".",
        "--junit",
        "selftest.xml",
    ]);
    run.assert_code(0);
    let junit = Junit::read(&env.path("selftest.xml"));
    let suites = junit.suites();
    assert_eq!(
        suites
            .iter()
            .map(|s| s["name"].as_str())
            .collect::<Vec<_>>(),
        ["selftest 512 B blocks", "selftest 4 KiB blocks"]
    );
    let cases = junit.cases();
    for (suite, classname) in [
        (
            "selftest 512 B blocks",
            "blockstamp.selftest.block_size_512",
        ),
        (
            "selftest 4 KiB blocks",
            "blockstamp.selftest.block_size_4096",
        ),
    ] {
        let rows: Vec<&Case> = cases.iter().filter(|c| c.suite == suite).collect();
        let mut names: Vec<&str> = CLASSES.to_vec();
        names.push("all");
        assert_eq!(
            rows.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            names
        );
        assert!(rows.iter().all(|c| c.classname == classname));
        for row in rows {
            // A one-sector block cannot tear: that row is skipped at 512 B.
            let expected = if suite.starts_with("selftest 512") && row.name == "torn" {
                "skipped"
            } else {
                "passed"
            };
            assert_eq!(row.outcome, expected, "{row:?}");
        }
    }
    assert_eq!(suites[0]["skipped"], "1");
    assert_eq!(suites[1]["skipped"], "0");
}

#[test]
fn merge_junit_has_a_suite_per_report_named_by_host_and_target() {
    if !require(Need::Xmllint) {
        return;
    }
    let env = TestEnv::new();
    damaged_image(&env);
    env.run(&["verify", "disk.img", "-m", "m", "--json", "damaged.json"])
        .assert_code(1);
    env.run(&[
        "run",
        "clean.img",
        "-m",
        "m2",
        "--size",
        "1MiB",
        "--json",
        "clean.json",
    ])
    .assert_code(0);
    let mut other = read_json(&env.path("clean.json"));
    other["host"] = "lab-9.example.com".into();
    std::fs::write(env.path("lab9.json"), other.to_string()).unwrap();
    let run = env.run(&[
        "report",
        "merge",
        "damaged.json",
        "lab9.json",
        "--junit",
        "fleet.xml",
    ]);
    run.assert_code(1);
    let junit = Junit::read(&env.path("fleet.xml"));
    let damaged = read_json(&env.path("damaged.json"));
    let host = damaged["host"].as_str().unwrap();
    let suites = junit.suites();
    assert_eq!(
        suites.iter().map(|s| s["name"].clone()).collect::<Vec<_>>(),
        [
            format!("{host}:disk.img"),
            "lab-9.example.com:clean.img".to_string()
        ]
    );
    assert_eq!(
        suites
            .iter()
            .map(|s| s["failures"].as_str())
            .collect::<Vec<_>>(),
        ["2", "0"]
    );
    assert!(suites.iter().all(|s| !s.contains_key("timestamp")));
    let cases = junit.cases();
    assert!(
        cases
            .iter()
            .filter(|c| c.suite.starts_with("lab-9"))
            .all(|c| c.classname == "blockstamp.lab-9_example_com.clean_img")
    );
}

#[test]
fn markup_and_control_characters_in_a_target_name_stay_valid_xml() {
    if !require(Need::Xmllint) {
        return;
    }
    let env = TestEnv::new();
    let name = "d&<x>\"'\u{1}\t.img";
    env.write(name, "m", &["--size", "256KiB"]);
    let run = env.run(&["verify", name, "-m", "m", "--junit", "out.xml"]);
    run.assert_code(0);
    let junit = Junit::read(&env.path("out.xml"));
    assert_eq!(junit.suites()[0]["name"], "d&<x>\"'\\u{1}\t.img");
}

// ----------------------------------------------------------- Prometheus

/// One sample as the parser read it.
#[derive(Debug)]
struct Sample {
    family: String,
    family_type: String,
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parse the textfile at `path` with prometheus_client's parser (the
/// Prometheus project's Python client); panics with the parser's words when
/// the file is not valid.
fn parse_textfile(path: &Path) -> Vec<Sample> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(open(sys.argv[1], encoding="utf-8").read()):
    for s in family.samples:
        if s.timestamp is not None:
            sys.exit("sample %s has a timestamp" % s.name)
        value = "NaN" if s.value != s.value else s.value
        samples.append({"family": family.name, "type": family.type, "name": s.name,
                        "labels": s.labels, "value": value})
print(json.dumps(samples))
"#;
    let output = Command::new(python())
        .args(["-c", SCRIPT])
        .arg(path)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "the parser refused {}:\n{}\n{}",
        path.display(),
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(path).unwrap_or_default()
    );
    let parsed: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    parsed
        .into_iter()
        .map(|s| Sample {
            family: s["family"].as_str().unwrap().to_string(),
            family_type: s["type"].as_str().unwrap().to_string(),
            name: s["name"].as_str().unwrap().to_string(),
            labels: serde_json::from_value(s["labels"].clone()).unwrap(),
            value: s["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

/// The value of the one sample `name` whose labels include `with`.
fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {with:?}: {found:?}");
    found[0].value
}

fn family_type(samples: &[Sample], sample: &str) -> String {
    samples
        .iter()
        .find(|s| s.name == sample)
        .unwrap_or_else(|| panic!("no sample {sample}"))
        .family_type
        .clone()
}

#[test]
fn the_soak_textfile_holds_the_figures_of_the_report() {
    if !require(Need::PrometheusParser) {
        return;
    }
    let env = TestEnv::new();
    let report = short_soak(&env, &["--prometheus", "blockstamp.prom"]);
    let soak = &report["soak"];
    let metrics = &report["metrics"];
    let samples = parse_textfile(&env.path("blockstamp.prom"));
    let target = [("target", "disk.img")];
    let u = |v: &Value| v.as_u64().unwrap() as f64;

    assert_eq!(family_type(&samples, "blockstamp_writes_total"), "counter");
    assert_eq!(
        value(&samples, "blockstamp_writes_total", &target),
        u(&soak["writes"])
    );
    assert_eq!(
        value(&samples, "blockstamp_bytes_written_total", &target),
        u(&soak["bytes_written"])
    );
    assert_eq!(
        value(&samples, "blockstamp_reads_total", &target),
        u(&metrics["read"]["ios"])
    );
    assert_eq!(
        value(&samples, "blockstamp_bytes_read_total", &target),
        u(&metrics["read"]["bytes"])
    );
    for class in CLASSES {
        assert_eq!(
            value(&samples, "blockstamp_findings_total", &[("class", class)]),
            0.0
        );
    }
    assert_eq!(
        value(&samples, "blockstamp_soak_interval", &target),
        soak["intervals"].as_array().unwrap().len() as f64
    );
    assert_eq!(value(&samples, "blockstamp_running", &target), 0.0);
    assert_eq!(
        value(
            &samples,
            "blockstamp_run_info",
            &[
                ("run_id", report["run_id"].as_str().unwrap()),
                ("command", "soak")
            ]
        ),
        1.0
    );

    // The quantiles come from the histograms the report's come from.
    assert_eq!(
        family_type(&samples, "blockstamp_write_latency_seconds_count"),
        "summary"
    );
    for (quantile, field) in [("0.5", "p50"), ("0.99", "p99"), ("0.999", "p99_9")] {
        for direction in ["write", "read"] {
            let seconds = value(
                &samples,
                &format!("blockstamp_{direction}_latency_seconds"),
                &[("quantile", quantile)],
            );
            let report_us = metrics[direction]["latency_us"][field].as_f64().unwrap();
            assert!(
                (seconds * 1e6 - report_us).abs() <= 0.051,
                "{direction} {quantile}: {seconds} s, report {report_us} µs"
            );
        }
    }
    assert_eq!(
        value(&samples, "blockstamp_write_latency_seconds_count", &target),
        u(&soak["writes"])
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let updated = value(
        &samples,
        "blockstamp_last_update_timestamp_seconds",
        &target,
    );
    assert!(updated <= now && now - updated < 60.0, "{updated} vs {now}");
    assert!(
        samples
            .iter()
            .all(|s| s.labels.get("target").map(String::as_str) == Some("disk.img"))
    );
}

#[test]
fn the_textfile_is_replaced_while_a_write_runs_and_final_at_its_end() {
    if !require(Need::PrometheusParser) {
        return;
    }
    let env = TestEnv::new();
    let child = Command::new(env!("CARGO_BIN_EXE_blockstamp"))
        .args([
            "write",
            "disk.img",
            "-m",
            "m",
            "--size",
            "4MiB",
            "--duration",
            "8s",
        ])
        .args(["--prometheus", "w.prom"])
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start write");
    let path = env.path("w.prom");
    // The file appears when the writing begins, then is replaced every 5 s.
    let started = Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < Duration::from_secs(7) && seen.len() < 2 {
        if path.exists() {
            let samples = parse_textfile(&path);
            let writes = value(&samples, "blockstamp_writes_total", &[]);
            if seen.last() != Some(&writes) {
                assert_eq!(value(&samples, "blockstamp_running", &[]), 1.0);
                seen.push(writes);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen.len() == 2 && seen[1] > 0.0,
        "the textfile while writing showed writes {seen:?}"
    );
    let output = child.wait_with_output().expect("wait for write");
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    // "wrote N block(s) in W writes, …"
    let writes: f64 = stdout
        .split(" writes,")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no write count in {stdout}"));
    let samples = parse_textfile(&path);
    assert_eq!(value(&samples, "blockstamp_writes_total", &[]), writes);
    assert_eq!(value(&samples, "blockstamp_running", &[]), 0.0);
    assert!(samples.iter().all(|s| s.name != "blockstamp_soak_interval"));
}

#[test]
fn findings_in_the_textfile_are_the_report_findings() {
    if !require(Need::PrometheusParser) {
        return;
    }
    let env = TestEnv::new();
    env.write("disk.img", "m", &["--size", "1MiB"]);
    let image = Image::open(&env.path("disk.img"), 4096);
    for block in 0..40 {
        image.zero_block(block * 6);
    }
    image.flip_bit(3, 100, 1);
    image.sync();
    // A few blocks are written again (and so repaired); most damage stays.
    let run = env.run(&[
        "run",
        "disk.img",
        "-m",
        "m",
        "--coverage",
        "0.02",
        "--json",
        "r.json",
        "--prometheus",
        "r.prom",
    ]);
    run.assert_code(1);
    let report = read_json(&env.path("r.json"));
    let samples = parse_textfile(&env.path("r.prom"));
    let mut total = 0.0;
    for class in CLASSES {
        let expected = report["findings_by_class"][class].as_u64().unwrap_or(0) as f64;
        total += expected;
        assert_eq!(
            value(&samples, "blockstamp_findings_total", &[("class", class)]),
            expected,
            "{class}"
        );
    }
    assert!(total > 0.0, "{}", report["findings_by_class"]);
    assert_eq!(
        value(&samples, "blockstamp_writes_total", &[]),
        report["metrics"]["write"]["ios"].as_u64().unwrap() as f64
    );
}

#[test]
fn the_parser_reads_every_family_and_escaped_label_back() {
    use blockstamp::metrics::DirectionTotals;
    use blockstamp::metrics::prometheus::{RunLabels, Snapshot, render};
    if !require(Need::PrometheusParser) {
        return;
    }
    let env = TestEnv::new();
    let target = "nbd+unix:///a\\b\"c\nd?socket=/run/x.sock";
    let labels = RunLabels {
        command: "soak",
        target: target.to_string(),
        host: "lab \"3\"".to_string(),
    };
    let text = render(&Snapshot {
        labels: &labels,
        run_id: 0x0123_4567_89ab_cdef,
        running: true,
        started_unix_s: 1_700_000_000.0,
        now_unix_s: 1_700_000_100.5,
        write: DirectionTotals {
            ios: 10,
            bytes: 40_960,
            latency_sum_ns: 2_000_000,
            p50_ns: 150_000,
            p99_ns: 400_000,
            p99_9_ns: 410_000,
        },
        read: DirectionTotals::default(),
        findings: CLASSES
            .iter()
            .map(|&c| (c, if c == "torn" { 3 } else { 0 }))
            .collect(),
        soak_interval: Some(2),
    });
    let path: PathBuf = env.path("x.prom");
    std::fs::write(&path, text).unwrap();
    let samples = parse_textfile(&path);
    assert!(samples.iter().all(|s| s.labels["target"] == target));
    assert_eq!(
        value(&samples, "blockstamp_run_info", &[("host", "lab \"3\"")]),
        1.0
    );
    assert_eq!(
        value(&samples, "blockstamp_findings_total", &[("class", "torn")]),
        3.0
    );
    assert_eq!(
        value(
            &samples,
            "blockstamp_write_latency_seconds",
            &[("quantile", "0.99")]
        ),
        0.0004
    );
    assert!(
        value(
            &samples,
            "blockstamp_read_latency_seconds",
            &[("quantile", "0.5")]
        )
        .is_nan()
    );
    let families: BTreeMap<&str, &str> = samples
        .iter()
        .map(|s| (s.family.as_str(), s.family_type.as_str()))
        .collect();
    assert_eq!(
        families,
        BTreeMap::from([
            ("blockstamp_bytes_read", "counter"),
            ("blockstamp_bytes_written", "counter"),
            ("blockstamp_findings", "counter"),
            ("blockstamp_last_update_timestamp_seconds", "gauge"),
            ("blockstamp_read_latency_seconds", "summary"),
            ("blockstamp_reads", "counter"),
            ("blockstamp_run_info", "gauge"),
            ("blockstamp_running", "gauge"),
            ("blockstamp_soak_interval", "gauge"),
            ("blockstamp_start_time_seconds", "gauge"),
            ("blockstamp_write_latency_seconds", "summary"),
            ("blockstamp_writes", "counter"),
        ])
    );
}
