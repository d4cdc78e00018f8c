//! The human summary of a report, printed on stdout after a verify: what
//! was checked, the run's disruptions (`--disrupt`), the verdict, and the
//! first findings.

use std::fmt::Write as _;

use super::{Disruption, FindingRecord, Report, incidents, longest_stall};
use crate::units::{format_rate, format_size};
use crate::verify::FindingClass;

impl Report {
    /// The summary for people: what was checked, the disruptions (each
    /// with the first findings of the verify after it), the verdict, counts
    /// per class, the incidents (findings grouped by cause), then the first
    /// findings with expected vs found, and for corrupt blocks a hex diff of
    /// only the rows that differ.
    pub fn human_summary(&self, max_shown: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "verified {} at {} blocks: {} checked, {} ok, {} expected written{}",
            self.target.uri,
            format_size(self.block_size as u64),
            self.blocks.checked,
            self.blocks.ok,
            self.blocks.expected_written,
            match &self.checkpoint {
                Some(name) => format!(" (against checkpoint '{name}')"),
                None => String::new(),
            }
        );
        let _ = writeln!(
            out,
            "read {} in {:.2} s ({})",
            format_size(self.bytes_read),
            self.elapsed_s,
            format_rate(self.throughput_bytes_per_s)
        );
        out.push_str(&disruptions_summary(&self.disruptions, max_shown));
        let total: u64 = self.findings_by_class.values().sum();
        let after_disruptions = self.findings_after_disruptions();
        if self.clean {
            let _ = writeln!(
                out,
                "CLEAN: every checked block holds exactly what was written{}",
                match self.disruptions.len() {
                    0 => String::new(),
                    1 => ", also after the disruption".to_string(),
                    n => format!(", also after each of the {n} disruptions"),
                }
            );
            return out;
        }
        let _ = writeln!(
            out,
            "FINDINGS: {}",
            verdict_story(total, after_disruptions, &self.disruptions)
        );
        for class in FindingClass::ALL {
            if let Some(n) = self.findings_by_class.get(class.name()) {
                let _ = writeln!(out, "  {:<17} {n}", class.name());
            }
        }
        self.incidents_summary(&mut out, max_shown);
        for finding in self.findings.iter().take(max_shown) {
            finding_lines(&mut out, finding, "");
        }
        if self.findings.len() > max_shown {
            let _ = writeln!(
                out,
                "… {} more finding(s) in the JSON report (--json)",
                total - max_shown as u64
            );
        }
        out
    }

    /// The incidents, most telling first, before the block list.
    fn incidents_summary(&self, out: &mut String, max_shown: usize) {
        if self.incidents.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "INCIDENTS: {} (findings that share a cause: close in write time, in the same bursts or on the same part of the target)",
            self.incidents.len()
        );
        for incident in self.incidents.iter().take(max_shown.max(1)) {
            let _ = writeln!(out, "  {}", incidents::headline(incident));
            for line in incidents::detail_lines(incident, self.block_size) {
                let _ = writeln!(out, "      {line}");
            }
        }
        if self.incidents.len() > max_shown.max(1) {
            let _ = writeln!(
                out,
                "  … {} more incident(s) in the JSON report (--json)",
                self.incidents.len() - max_shown.max(1)
            );
        }
        if let Some(grouping) = &self.incident_grouping
            && self.findings_truncated
        {
            let _ = writeln!(
                out,
                "  (grouped from the {} findings kept; --max-findings keeps more)",
                grouping.findings_grouped
            );
        }
    }
}

/// The verdict line after `FINDINGS: `: the final verify's findings and
/// those of the verifies after disruptions, each where it was found.
fn verdict_story(total: u64, after_disruptions: u64, disruptions: &[Disruption]) -> String {
    let final_verify = format!("{total} block(s) are not what was written");
    if after_disruptions == 0 {
        return final_verify;
    }
    let which: Vec<String> = disruptions
        .iter()
        .filter(|d| d.total_findings() > 0)
        .map(|d| d.index.to_string())
        .collect();
    let after = format!(
        "{after_disruptions} finding(s) in the verify after disruption {}",
        which.join(", ")
    );
    if total == 0 {
        format!("{after}; the final verify found every checked block as written")
    } else {
        format!("{final_verify}; and {after}")
    }
}

/// Two lines (more for a corrupt block) for one finding, each line
/// starting with `indent`.
fn finding_lines(out: &mut String, finding: &FindingRecord, indent: &str) {
    let _ = writeln!(
        out,
        "{indent}block {} (offset {}): {} [{}] expected generation {}, found {}{}",
        finding.block,
        finding.offset,
        finding.class,
        if finding.persistent {
            "persistent"
        } else {
            "transient"
        },
        finding.expected_generation,
        finding
            .found_generation
            .map_or("-".to_string(), |g| g.to_string()),
        finding
            .found_block
            .map_or(String::new(), |b| format!(" (block {b}'s)")),
    );
    let _ = writeln!(out, "{indent}    {}", finding.detail);
    if let Some(corruption) = &finding.corruption {
        let _ = writeln!(
            out,
            "{indent}    {} bit(s) differ in bytes {}",
            corruption.differing_bits,
            corruption.ranges_text(8)
        );
        for row in corruption.diff_rows.iter().take(8) {
            let _ = writeln!(
                out,
                "{indent}    {:08x}  expected {}",
                row.offset, row.expected
            );
            let _ = writeln!(
                out,
                "{indent}    {:08x}  found    {}",
                row.offset, row.found
            );
        }
    }
}

/// The disruptions of a run for people: one line for all of them, then a
/// line per disruption, each followed by the first findings of the verify
/// after it (at most `max_shown` in all). Empty without disruptions.
pub fn disruptions_summary(disruptions: &[Disruption], max_shown: usize) -> String {
    let mut out = String::new();
    let Some(worst) = longest_stall(disruptions) else {
        return out;
    };
    let found: u64 = disruptions.iter().map(Disruption::total_findings).sum();
    let commands = {
        let first = &disruptions[0];
        match &first.recover_command {
            Some(recover) => format!("`{}`, then `{recover}`", first.command),
            None => format!("`{}`", first.command),
        }
    };
    let _ = writeln!(
        out,
        "disruptions: {} ({commands}); longest stall {:.2} s (disruption {}), {} reconnect(s), {} failed IO(s), {}",
        disruptions.len(),
        worst.stall_s,
        worst.index,
        disruptions.iter().map(|d| d.reconnects).sum::<u64>(),
        disruptions.iter().map(|d| d.failed_ios).sum::<u64>(),
        match found {
            0 => "no findings after them".to_string(),
            n => format!("{n} finding(s) after them"),
        }
    );
    let mut shown = 0;
    for d in disruptions {
        let _ = writeln!(out, "  {}", d.summary_line());
        let room = max_shown.saturating_sub(shown);
        for finding in d.findings.iter().take(room) {
            finding_lines(&mut out, finding, "    ");
        }
        let listed = d.findings.len().min(room);
        shown += listed;
        let more = d.total_findings() - listed as u64;
        if more > 0 {
            let _ = writeln!(
                out,
                "    … {more} more finding(s) of disruption {} not shown",
                d.index
            );
        }
    }
    out
}

impl Disruption {
    /// One line for people: when, the stall, the recovery, what failed and
    /// what the verify after it found.
    pub fn summary_line(&self) -> String {
        let found = self.total_findings();
        let recovered = match self.recovered_after_s {
            Some(s) => format!("throughput back after {s:.1} s"),
            None => "throughput not back before the next disruption or the end".to_string(),
        };
        let classes = if self.findings_by_class.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = super::classes_in_order(self.findings_by_class.keys())
                .iter()
                .map(|class| format!("{} {class}", self.findings_by_class[class]))
                .collect();
            format!(" ({})", list.join(", "))
        };
        format!(
            "disruption {} at {:.1} s: stall {:.2} s, {recovered}, {} reconnect(s), {} failed IO(s); verify of {} block(s) after it: {found} finding(s){classes}",
            self.index,
            self.started_at_s,
            self.stall_s,
            self.reconnects,
            self.failed_ios,
            self.verify_checked_blocks
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::report::parse;
    use crate::report::tests::{sample_disruption, sample_json};

    /// The sample report, clean, with disruptions of these stalls.
    fn disrupted(stalls: &[f64]) -> serde_json::Value {
        let mut json = sample_json();
        json["findings"] = serde_json::json!([]);
        json["findings_by_class"] = serde_json::json!({});
        json["incidents"] = serde_json::json!([]);
        json["clean"] = serde_json::json!(true);
        let list: Vec<serde_json::Value> = stalls
            .iter()
            .enumerate()
            .map(|(i, &stall)| sample_disruption(i as u64 + 1, 6.0 * (i as f64 + 1.0), stall))
            .collect();
        json["disruptions"] = serde_json::json!(list);
        json
    }

    #[test]
    fn a_clean_run_lists_its_disruptions_above_the_verdict() {
        let report = parse(&disrupted(&[3.125, 0.5]).to_string()).unwrap();
        let summary = report.human_summary(10);
        let lines: Vec<&str> = summary.lines().collect();
        assert_eq!(
            lines[2..],
            [
                "disruptions: 2 (`systemctl restart iscsi-target`, then `multipath -r`); longest stall 3.12 s (disruption 1), 2 reconnect(s), 6 failed IO(s), no findings after them",
                "  disruption 1 at 6.0 s: stall 3.12 s, throughput back after 4.6 s, 1 reconnect(s), 3 failed IO(s); verify of 262144 block(s) after it: 0 finding(s)",
                "  disruption 2 at 12.0 s: stall 0.50 s, throughput back after 2.0 s, 1 reconnect(s), 3 failed IO(s); verify of 262144 block(s) after it: 0 finding(s)",
                "CLEAN: every checked block holds exactly what was written, also after each of the 2 disruptions",
            ]
        );
        // Without disruptions the summary is as it always was.
        let mut calm = disrupted(&[]);
        calm.as_object_mut().unwrap().remove("disruptions");
        let summary = parse(&calm.to_string()).unwrap().human_summary(10);
        assert!(!summary.contains("disruption"), "{summary}");
        assert!(summary.ends_with("CLEAN: every checked block holds exactly what was written\n"));
    }

    #[test]
    fn findings_after_a_disruption_are_listed_under_it_and_told_in_the_verdict() {
        let mut json = disrupted(&[1.0, 2.0]);
        let lost = sample_json()["findings"][0].clone();
        json["disruptions"][1]["findings"] = serde_json::json!([lost.clone(), lost]);
        json["disruptions"][1]["findings"][1]["block"] = serde_json::json!(18);
        json["disruptions"][1]["findings_by_class"] = serde_json::json!({"lost_write": 3});
        json["disruptions"][1]["recovered_after_s"] = serde_json::Value::Null;
        json["clean"] = serde_json::json!(false);
        let report = parse(&json.to_string()).unwrap();
        let summary = report.human_summary(1);
        let lines: Vec<&str> = summary.lines().collect();
        assert_eq!(
            lines[4..],
            [
                "  disruption 2 at 12.0 s: stall 2.00 s, throughput not back before the next disruption or the end, 1 reconnect(s), 3 failed IO(s); verify of 262144 block(s) after it: 3 finding(s) (3 lost_write)",
                "    block 17 (offset 69632): lost_write [persistent] expected generation 2, found 1",
                "        holds generation 1 of this block, expected 2: the newer write did not persist",
                "    … 2 more finding(s) of disruption 2 not shown",
                "FINDINGS: 3 finding(s) in the verify after disruption 2; the final verify found every checked block as written",
            ]
        );
        assert!(
            lines[2].ends_with("3 finding(s) after them"),
            "{}",
            lines[2]
        );
        // With findings of its own, the final verify's come first.
        let mut both = json.clone();
        both["findings_by_class"] = serde_json::json!({"zeroed": 5});
        let summary = parse(&both.to_string()).unwrap().human_summary(10);
        assert!(
            summary.contains(
                "FINDINGS: 5 block(s) are not what was written; and 3 finding(s) in the verify after disruption 2\n  zeroed            5\n"
            ),
            "{summary}"
        );
    }
}
