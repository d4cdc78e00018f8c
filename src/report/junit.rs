//! JUnit XML (`--junit FILE`): the checks of a run as test cases, in the
//! form Jenkins, GitLab and GitHub Actions render (docs/CONTRACT.md, "JUnit
//! XML"). One `<testsuite>` per target — per report in a fleet, per block
//! size in a selftest — and one `<testcase>` per check: the verify itself,
//! each finding class, and for a soak the rolling read-back and the verify
//! of each interval. A failing check carries a one-line message (how many,
//! and the first blocks with their detail) and the list behind it.
//!
//! Written by hand, the format being small: every text is escaped, and the
//! few characters XML 1.0 cannot carry at all (most control characters) are
//! written as `\u{…}`.

use std::fmt::Write as _;
use std::path::Path;

use super::{FindingRecord, Interval, Report, SoakSection};
use crate::error::{Error, Result};
use crate::units::iso8601_utc;
use crate::verify::FindingClass;

/// Findings named in a failure's one-line message.
const BLOCKS_IN_MESSAGE: usize = 3;
/// Findings listed in a failure's body.
const BLOCKS_IN_DETAIL: usize = 100;

/// A JUnit document: `<testsuites>`.
#[derive(Clone, Debug, Default)]
pub struct TestSuites {
    pub suites: Vec<TestSuite>,
}

/// One `<testsuite>`: one target (or one block size of a selftest).
#[derive(Clone, Debug)]
pub struct TestSuite {
    pub name: String,
    pub hostname: String,
    /// When the checks began, in Unix seconds, where known (a report read
    /// back from a file does not say).
    pub started_unix_s: Option<u64>,
    pub time_s: f64,
    pub properties: Vec<(String, String)>,
    pub cases: Vec<TestCase>,
    /// What the run noted about how it ran, shown beside the results.
    pub system_out: Option<String>,
}

/// One `<testcase>`: one check.
#[derive(Clone, Debug)]
pub struct TestCase {
    pub name: String,
    pub classname: String,
    pub time_s: f64,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Passed,
    /// The check ran and found the storage wanting.
    Failed(Failure),
    /// The check could not be carried out (the target was lost).
    Error(Failure),
    /// Nothing to check (the reason).
    Skipped(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// The `type` attribute: a finding class, or what failed.
    pub kind: String,
    /// One line: the count and the first blocks.
    pub message: String,
    /// The body: one line per block (or mismatch).
    pub detail: String,
}

/// Where a report's suite sits: a run's own, named after its target, or one
/// report of a fleet, named after its host and target (a fleet holds the
/// same device path on many hosts).
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    Run,
    Fleet { path: &'a str },
}

impl TestSuites {
    /// The suite of one run's report, finished at `finished_unix_s`.
    pub fn of_report(report: &Report, finished_unix_s: u64) -> TestSuites {
        TestSuites {
            suites: vec![report_suite(report, Scope::Run, Some(finished_unix_s))],
        }
    }

    pub fn to_xml(&self) -> String {
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites");
        let count = |pick: fn(&TestSuite) -> usize| self.suites.iter().map(pick).sum::<usize>();
        attribute(&mut xml, "name", "blockstamp");
        attribute(&mut xml, "tests", &count(|s| s.cases.len()).to_string());
        attribute(
            &mut xml,
            "failures",
            &count(TestSuite::failures).to_string(),
        );
        attribute(&mut xml, "errors", &count(TestSuite::errors).to_string());
        let time_s: f64 = self.suites.iter().map(|s| finite(s.time_s)).sum();
        attribute(&mut xml, "time", &seconds(time_s));
        xml.push_str(">\n");
        for (id, suite) in self.suites.iter().enumerate() {
            suite.write_xml(&mut xml, id);
        }
        xml.push_str("</testsuites>\n");
        xml
    }

    /// Replace `path` with the document at once (docs/CONTRACT.md).
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::outfile::replace(path, &self.to_xml())
            .map_err(|e| Error::run(format!("cannot write JUnit XML {}: {e}", path.display())))
    }
}

impl TestSuite {
    pub fn failures(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    pub fn errors(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Error(_)))
    }

    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skipped(_)))
    }

    fn count(&self, is: fn(&Outcome) -> bool) -> usize {
        self.cases.iter().filter(|c| is(&c.outcome)).count()
    }

    fn write_xml(&self, xml: &mut String, id: usize) {
        xml.push_str("  <testsuite");
        attribute(xml, "name", &self.name);
        attribute(xml, "tests", &self.cases.len().to_string());
        attribute(xml, "failures", &self.failures().to_string());
        attribute(xml, "errors", &self.errors().to_string());
        attribute(xml, "skipped", &self.skipped().to_string());
        attribute(xml, "time", &seconds(self.time_s));
        if let Some(started) = self.started_unix_s {
            attribute(xml, "timestamp", &iso8601_utc(started));
        }
        attribute(xml, "hostname", &self.hostname);
        attribute(xml, "id", &id.to_string());
        xml.push_str(">\n");
        if !self.properties.is_empty() {
            xml.push_str("    <properties>\n");
            for (name, value) in &self.properties {
                xml.push_str("      <property");
                attribute(xml, "name", name);
                attribute(xml, "value", value);
                xml.push_str("/>\n");
            }
            xml.push_str("    </properties>\n");
        }
        for case in &self.cases {
            case.write_xml(xml);
        }
        if let Some(out) = &self.system_out {
            xml.push_str("    <system-out>");
            escape_into(xml, out, false);
            xml.push_str("</system-out>\n");
        }
        xml.push_str("  </testsuite>\n");
    }
}

impl TestCase {
    fn write_xml(&self, xml: &mut String) {
        xml.push_str("    <testcase");
        attribute(xml, "name", &self.name);
        attribute(xml, "classname", &self.classname);
        attribute(xml, "time", &seconds(self.time_s));
        let (element, failure) = match &self.outcome {
            Outcome::Passed => {
                xml.push_str("/>\n");
                return;
            }
            Outcome::Skipped(why) => {
                xml.push_str(">\n      <skipped");
                attribute(xml, "message", why);
                xml.push_str("/>\n    </testcase>\n");
                return;
            }
            Outcome::Failed(failure) => ("failure", failure),
            Outcome::Error(failure) => ("error", failure),
        };
        let _ = write!(xml, ">\n      <{element}");
        attribute(xml, "type", &failure.kind);
        attribute(xml, "message", &failure.message);
        xml.push('>');
        escape_into(xml, &failure.detail, false);
        let _ = writeln!(xml, "</{element}>\n    </testcase>");
    }
}

/// The suite of one report: the verify, each finding class, for a soak
/// the rolling read-back and each interval's verify, and each disruption.
pub fn report_suite(report: &Report, scope: Scope<'_>, finished_unix_s: Option<u64>) -> TestSuite {
    let host = report.host_name();
    let uri = &report.target.uri;
    let (name, classname) = match scope {
        Scope::Run => (uri.clone(), classname(&[uri])),
        Scope::Fleet { .. } => (format!("{host}:{uri}"), classname(&[host, uri])),
    };
    let time_s = finite(
        report
            .soak
            .as_ref()
            .map_or(report.elapsed_s, |s| s.duration_s),
    );
    let case = |name: &str, time_s: f64, outcome: Outcome| TestCase {
        name: name.to_string(),
        classname: classname.clone(),
        time_s,
        outcome,
    };

    let mut cases = vec![case("verify", report.elapsed_s, verify_outcome(report))];
    for class in class_names(report) {
        let outcome = class_outcome(report, &class);
        cases.push(case(&class, 0.0, outcome));
    }
    if let Some(soak) = &report.soak {
        cases.push(case("rolling verify", 0.0, rolling_outcome(soak)));
        let mut interval_start_s = 0.0;
        for interval in &soak.intervals {
            let name = format!("interval {} verify", interval.index + 1);
            let time_s = interval.t_s - interval_start_s;
            interval_start_s = interval.t_s;
            cases.push(case(&name, time_s, interval_outcome(interval)));
        }
    }
    cases.extend(disruption_cases(report, &classname));

    let mut properties = vec![
        ("run_id".to_string(), report.run_id.clone()),
        ("tool_version".to_string(), report.tool_version.clone()),
        ("target".to_string(), uri.clone()),
        ("target_kind".to_string(), report.target.kind.clone()),
        (
            "size_bytes".to_string(),
            report.target.size_bytes.to_string(),
        ),
        ("block_size".to_string(), report.block_size.to_string()),
        (
            "blocks_checked".to_string(),
            report.blocks.checked.to_string(),
        ),
    ];
    if let Some(checkpoint) = &report.checkpoint {
        properties.push(("checkpoint".to_string(), checkpoint.clone()));
    }
    if let Scope::Fleet { path } = scope {
        properties.push(("report".to_string(), path.to_string()));
    }
    TestSuite {
        name,
        hostname: host.to_string(),
        started_unix_s: finished_unix_s.map(|end| end.saturating_sub(time_s.round() as u64)),
        time_s,
        properties,
        cases,
        system_out: (!report.notes.is_empty()).then(|| report.notes.join("\n") + "\n"),
    }
}

/// The checks of the report's disruptions: one test case per disruption —
/// were the writes promised durable before it all there after it? The
/// case's time is the disruption's stall.
fn disruption_cases(report: &Report, classname: &str) -> Vec<TestCase> {
    report
        .disruptions
        .iter()
        .map(|d| {
            let found = d.total_findings();
            let outcome = if found == 0 {
                Outcome::Passed
            } else {
                let classes: Vec<String> = d
                    .findings_by_class
                    .iter()
                    .map(|(class, n)| format!("{n} {class}"))
                    .collect();
                let first: Vec<String> = d
                    .findings
                    .iter()
                    .take(3)
                    .map(|f| format!("block {} {}", f.block, f.class))
                    .collect();
                Outcome::Failed(Failure {
                    kind: "disruption".to_string(),
                    message: format!(
                        "{found} finding(s) after disruption {} ({}): {}; first: {}",
                        d.index,
                        classes.join(", "),
                        d.command,
                        first.join(", ")
                    ),
                    detail: d
                        .findings
                        .iter()
                        .take(100)
                        .map(|f| {
                            format!(
                                "block {} (offset {}): {}: {}\n",
                                f.block, f.offset, f.class, f.detail
                            )
                        })
                        .collect(),
                })
            };
            TestCase {
                name: format!(
                    "disruption {}: `{}` at {:.1} s (stall {:.2} s)",
                    d.index, d.command, d.started_at_s, d.stall_s
                ),
                classname: classname.to_string(),
                time_s: finite(d.stall_s),
                outcome,
            }
        })
        .collect()
}

/// The verify ran to its end, or the target was lost on the way: an error,
/// not a failure (the check could not be made; exit 3).
fn verify_outcome(report: &Report) -> Outcome {
    match &report.target_lost {
        None => Outcome::Passed,
        Some(why) => Outcome::Error(Failure {
            kind: "target_lost".to_string(),
            message: format!(
                "the target was lost after {} of {} block(s) were checked: {why}",
                report.blocks.checked, report.blocks.total
            ),
            detail: String::new(),
        }),
    }
}

/// Every class of the contract, then any the report names that this
/// version does not know (read back from a later version's report).
fn class_names(report: &Report) -> Vec<String> {
    let mut names: Vec<String> = FindingClass::ALL
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let named = report
        .findings_by_class
        .keys()
        .chain(report.findings.iter().map(|f| &f.class));
    for name in named {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

fn class_outcome(report: &Report, class: &str) -> Outcome {
    let listed: Vec<&FindingRecord> = report
        .findings
        .iter()
        .filter(|f| f.class == class)
        .collect();
    let count = report
        .findings_by_class
        .get(class)
        .copied()
        .unwrap_or(0)
        .max(listed.len() as u64);
    if count == 0 {
        return Outcome::Passed;
    }
    Outcome::Failed(findings_failure(
        class,
        &format!("{count} {class} finding(s)"),
        count,
        &listed,
        false,
    ))
}

fn rolling_outcome(soak: &SoakSection) -> Outcome {
    let findings = &soak.rolling_findings;
    if findings.is_empty() {
        return if soak.rolling_checked_blocks == 0 {
            Outcome::Skipped(
                "no block was read back while writing (fewer writes than --verify-backlog)"
                    .to_string(),
            )
        } else {
            Outcome::Passed
        };
    }
    let listed: Vec<&FindingRecord> = findings.iter().collect();
    Outcome::Failed(findings_failure(
        "rolling_verify",
        &format!(
            "{} finding(s) in the rolling read-back of {} block(s)",
            findings.len(),
            soak.rolling_checked_blocks
        ),
        findings.len() as u64,
        &listed,
        true,
    ))
}

fn interval_outcome(interval: &Interval) -> Outcome {
    let number = interval.index + 1;
    if interval.verify_findings > 0 {
        return Outcome::Failed(Failure {
            kind: "interval_verify".to_string(),
            message: format!(
                "{} finding(s) in the verify that closed interval {number} ({} block(s) checked, {:.0} s into the soak)",
                interval.verify_findings, interval.verify_checked_blocks, interval.t_s
            ),
            detail: format!(
                "interval {number}: {} write(s), {} rolling read-back finding(s); the verify that closed it checked {} block(s) and found {}; the final verify's findings are the report's own\n",
                interval.writes,
                interval.rolling_findings,
                interval.verify_checked_blocks,
                interval.verify_findings
            ),
        });
    }
    if interval.verify_checked_blocks == 0 {
        return Outcome::Skipped(format!("no verify closed interval {number}"));
    }
    Outcome::Passed
}

/// A failure listing findings: `what` and the first few blocks on one
/// line, then up to [`BLOCKS_IN_DETAIL`] blocks one per line.
fn findings_failure(
    kind: &str,
    what: &str,
    count: u64,
    findings: &[&FindingRecord],
    with_class: bool,
) -> Failure {
    let describe = |f: &FindingRecord| {
        let class = if with_class {
            format!(" {}", f.class)
        } else {
            String::new()
        };
        let transient = if f.persistent { "" } else { ", transient" };
        format!("block {}{class} ({}{transient})", f.block, f.detail)
    };
    let mut message = what.to_string();
    let named: Vec<String> = findings
        .iter()
        .take(BLOCKS_IN_MESSAGE)
        .map(|f| describe(f))
        .collect();
    if !named.is_empty() {
        let _ = write!(message, ": {}", named.join("; "));
    }
    let unnamed = count.saturating_sub(named.len() as u64);
    if unnamed > 0 {
        let _ = write!(message, "; and {unnamed} more");
    }
    let mut detail = String::new();
    for f in findings.iter().take(BLOCKS_IN_DETAIL) {
        let _ = writeln!(detail, "offset {}: {}", f.offset, describe(f));
    }
    let unlisted = count.saturating_sub(findings.len().min(BLOCKS_IN_DETAIL) as u64);
    if unlisted > 0 {
        let _ = writeln!(detail, "and {unlisted} more (see the JSON report)");
    }
    Failure {
        kind: kind.to_string(),
        message,
        detail,
    }
}

/// `blockstamp.<part>.<part>`: Jenkins splits a classname at its last dot
/// into package and class, so the dots inside a part (`disk.img`, a host's
/// domain) become underscores.
pub fn classname(parts: &[&str]) -> String {
    let mut name = String::from("blockstamp");
    for part in parts {
        name.push('.');
        name.push_str(&part.replace('.', "_"));
    }
    name
}

/// ` name="value"`, escaped.
fn attribute(xml: &mut String, name: &str, value: &str) {
    let _ = write!(xml, " {name}=\"");
    escape_into(xml, value, true);
    xml.push('"');
}

/// Append `text` escaped for XML 1.0 content or (with `in_attribute`) a
/// double-quoted attribute value. Tabs and line breaks in an attribute
/// become character references (a parser would turn them into spaces);
/// a carriage return always does (a parser would drop it). Characters XML
/// 1.0 cannot carry at all, even as references (most C0 controls,
/// U+FFFE, U+FFFF), are written as `\u{…}`.
pub fn escape_into(xml: &mut String, text: &str, in_attribute: bool) {
    for c in text.chars() {
        match c {
            '&' => xml.push_str("&amp;"),
            '<' => xml.push_str("&lt;"),
            '>' => xml.push_str("&gt;"),
            '"' => xml.push_str("&quot;"),
            '\'' => xml.push_str("&apos;"),
            '\r' => xml.push_str("&#13;"),
            '\n' | '\t' if in_attribute => {
                let _ = write!(xml, "&#{};", c as u32);
            }
            '\n' | '\t' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'.. => {
                xml.push(c)
            }
            _ => xml.extend(c.escape_unicode()),
        }
    }
}

/// Seconds with three decimals; 0 for what is not a duration.
fn seconds(time_s: f64) -> String {
    format!("{:.3}", finite(time_s))
}

fn finite(time_s: f64) -> f64 {
    if time_s.is_finite() && time_s > 0.0 {
        time_s
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::parse;
    use crate::report::tests::sample_json;

    fn escaped(text: &str, in_attribute: bool) -> String {
        let mut xml = String::new();
        escape_into(&mut xml, text, in_attribute);
        xml
    }

    #[test]
    fn markup_quotes_and_control_characters_are_escaped() {
        assert_eq!(
            escaped("a&b<c>d\"e'f", true),
            "a&amp;b&lt;c&gt;d&quot;e&apos;f"
        );
        assert_eq!(escaped("1\n2\t3\r", true), "1&#10;2&#9;3&#13;");
        assert_eq!(escaped("1\n2\t3\r", false), "1\n2\t3&#13;");
        assert_eq!(
            escaped("\u{1}\u{1b}\u{7f}\u{fffe}é😀", false),
            "\\u{1}\\u{1b}\u{7f}\\u{fffe}é😀"
        );
    }

    #[test]
    fn unix_seconds_are_written_as_utc_dates() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso8601_utc(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn classnames_keep_one_dot_per_level() {
        assert_eq!(classname(&["disk.img"]), "blockstamp.disk_img");
        assert_eq!(
            classname(&["lab-3.example.com", "/dev/sdb"]),
            "blockstamp.lab-3_example_com./dev/sdb"
        );
    }

    #[test]
    fn each_finding_class_is_a_test_case_failing_with_its_blocks() {
        let report = parse(&sample_json().to_string()).unwrap();
        let suite = report_suite(&report, Scope::Run, Some(1_700_000_000));
        let names: Vec<&str> = suite.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "verify",
                "lost_write",
                "newer_generation",
                "misdirected",
                "torn",
                "corrupt",
                "zeroed",
                "foreign",
                "unreadable",
                "lost_zeroing"
            ]
        );
        let failed: Vec<&str> = suite
            .cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
            .map(|c| c.name.as_str())
            .collect();
        let mut with_findings: Vec<&str> = report
            .findings_by_class
            .keys()
            .map(String::as_str)
            .collect();
        with_findings.sort_by_key(|name| names.iter().position(|n| n == name));
        assert_eq!(failed, with_findings);
        for case in &suite.cases {
            if let Outcome::Failed(failure) = &case.outcome {
                assert_eq!(failure.kind, case.name);
                let first = report
                    .findings
                    .iter()
                    .find(|f| f.class == case.name)
                    .unwrap();
                assert!(
                    failure
                        .message
                        .contains(&format!("block {} ({}", first.block, first.detail)),
                    "{}",
                    failure.message
                );
                assert!(!failure.message.contains('\n'));
            }
        }
        assert_eq!(suite.failures(), failed.len());
        assert_eq!(suite.errors(), 0);
        assert_eq!(
            suite.started_unix_s,
            Some(1_700_000_000 - report.elapsed_s.round() as u64)
        );
    }

    #[test]
    fn a_failure_names_three_blocks_and_counts_the_rest() {
        let mut json = sample_json();
        let first = json["findings"][0].clone();
        let mut findings = Vec::new();
        for block in 0..5 {
            let mut f = first.clone();
            f["block"] = block.into();
            f["class"] = "zeroed".into();
            findings.push(f);
        }
        json["findings"] = findings.into();
        json["findings_by_class"] = serde_json::json!({"zeroed": 1200});
        let report = parse(&json.to_string()).unwrap();
        let Outcome::Failed(failure) = class_outcome(&report, "zeroed") else {
            panic!("zeroed fails");
        };
        assert!(
            failure
                .message
                .starts_with("1200 zeroed finding(s): block 0 ("),
            "{}",
            failure.message
        );
        assert_eq!(failure.message.matches("block ").count(), 3);
        assert!(failure.message.ends_with("; and 1197 more"));
        assert_eq!(failure.detail.lines().count(), 6);
        assert!(
            failure
                .detail
                .ends_with("and 1195 more (see the JSON report)\n")
        );
    }

    #[test]
    fn each_disruption_is_a_case_failed_by_its_findings() {
        let mut json = sample_json();
        let disruption = |index: u64, lost: u64| {
            serde_json::json!({
                "index": index, "command": "./restart.sh", "started_at_s": 6.0 * index as f64,
                "command_s": 2.0, "answered_at_s": 9.0, "stall_s": 3.25,
                "baseline_write_bytes_per_s": 1e6, "failed_ios": 1, "reconnects": 1,
                "verify_checked_blocks": 64, "verify_s": 0.1,
                "findings_by_class": if lost > 0 { serde_json::json!({"lost_write": lost}) } else { serde_json::json!({}) },
                "findings": (0..lost).map(|b| serde_json::json!({
                    "block": b, "offset": b * 4096, "class": "lost_write",
                    "expected_generation": 2, "found_generation": 1, "found_block": b,
                    "persistent": true, "detail": "holds generation 1"
                })).collect::<Vec<_>>(),
            })
        };
        json["disruptions"] = serde_json::json!([disruption(1, 0), disruption(2, 2)]);
        let report = parse(&json.to_string()).unwrap();
        let suite = report_suite(&report, Scope::Run, None);
        let cases: Vec<&TestCase> = suite
            .cases
            .iter()
            .filter(|c| c.name.starts_with("disruption "))
            .collect();
        assert_eq!(cases.len(), 2);
        assert_eq!(
            cases[0].name,
            "disruption 1: `./restart.sh` at 6.0 s (stall 3.25 s)"
        );
        assert_eq!(cases[0].outcome, Outcome::Passed);
        assert_eq!(cases[0].time_s, 3.25);
        let Outcome::Failed(failure) = &cases[1].outcome else {
            panic!("{:?}", cases[1].outcome)
        };
        assert_eq!(
            failure.message,
            "2 finding(s) after disruption 2 (2 lost_write): ./restart.sh; first: block 0 lost_write, block 1 lost_write"
        );
        assert_eq!(failure.detail.lines().count(), 2);
    }

    #[test]
    fn a_lost_target_is_an_error_and_a_fleet_suite_names_its_host() {
        let mut json = sample_json();
        json["target_lost"] = "the NBD server closed the connection".into();
        json["host"] = "lab.example.com".into();
        let report = parse(&json.to_string()).unwrap();
        let suite = report_suite(&report, Scope::Fleet { path: "a.json" }, None);
        assert_eq!(suite.errors(), 1);
        assert!(matches!(&suite.cases[0].outcome,
            Outcome::Error(f) if f.message.contains("the NBD server closed the connection")));
        assert_eq!(suite.name, format!("lab.example.com:{}", report.target.uri));
        assert!(
            suite.cases[0]
                .classname
                .starts_with("blockstamp.lab_example_com.")
        );
        assert_eq!(suite.started_unix_s, None);
        let xml = TestSuites {
            suites: vec![suite],
        }
        .to_xml();
        assert!(!xml.contains("timestamp="));
        assert!(xml.contains("<error type=\"target_lost\""));
        assert!(xml.contains("<property name=\"report\" value=\"a.json\"/>"));
    }

    #[test]
    fn the_document_counts_tests_failures_errors_and_skips() {
        let case = |name: &str, outcome| TestCase {
            name: name.to_string(),
            classname: "blockstamp.x".to_string(),
            time_s: 0.5,
            outcome,
        };
        let failure = Failure {
            kind: "torn".to_string(),
            message: "1 torn finding(s): block 3 (a \"split\" <write>)".to_string(),
            detail: "offset 12288: block 3\n".to_string(),
        };
        let suites = TestSuites {
            suites: vec![TestSuite {
                name: "disk.img".to_string(),
                hostname: "h".to_string(),
                started_unix_s: Some(0),
                time_s: 2.0,
                properties: vec![],
                cases: vec![
                    case("a", Outcome::Passed),
                    case("b", Outcome::Failed(failure.clone())),
                    case("c", Outcome::Error(failure)),
                    case("d", Outcome::Skipped("nothing to check".to_string())),
                ],
                system_out: None,
            }],
        };
        let xml = suites.to_xml();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"blockstamp\" tests=\"4\" failures=\"1\" errors=\"1\" time=\"2.000\">\n"), "{xml}");
        assert!(xml.contains("<testsuite name=\"disk.img\" tests=\"4\" failures=\"1\" errors=\"1\" skipped=\"1\" time=\"2.000\" timestamp=\"1970-01-01T00:00:00Z\" hostname=\"h\" id=\"0\">"), "{xml}");
        assert!(xml.contains("<failure type=\"torn\" message=\"1 torn finding(s): block 3 (a &quot;split&quot; &lt;write&gt;)\">offset 12288: block 3\n</failure>"), "{xml}");
        assert!(xml.contains("<skipped message=\"nothing to check\"/>"));
        assert!(xml.ends_with("</testsuites>\n"));
    }
}
