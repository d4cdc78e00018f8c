//! The human summary of a report, printed on stdout after a verify.

use std::fmt::Write as _;

use super::{Report, incidents};
use crate::units::{format_rate, format_size};
use crate::verify::FindingClass;

impl Report {
    /// The summary for people: counts per class, the incidents (findings
    /// grouped by cause), then the first findings with expected vs found,
    /// and for corrupt blocks a hex diff of only the rows that differ.
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
        if self.clean {
            let _ = writeln!(
                out,
                "CLEAN: every checked block holds exactly what was written"
            );
            return out;
        }
        let total: u64 = self.findings_by_class.values().sum();
        let _ = writeln!(out, "FINDINGS: {total} block(s) are not what was written");
        for class in FindingClass::ALL {
            if let Some(n) = self.findings_by_class.get(class.name()) {
                let _ = writeln!(out, "  {:<17} {n}", class.name());
            }
        }
        self.incidents_summary(&mut out, max_shown);
        for finding in self.findings.iter().take(max_shown) {
            let _ = writeln!(
                out,
                "block {} (offset {}): {} [{}] expected generation {}, found {}{}",
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
            let _ = writeln!(out, "    {}", finding.detail);
            if let Some(corruption) = &finding.corruption {
                let _ = writeln!(
                    out,
                    "    {} bit(s) differ in bytes {}",
                    corruption.differing_bits,
                    corruption.ranges_text(8)
                );
                for row in corruption.diff_rows.iter().take(8) {
                    let _ = writeln!(out, "    {:08x}  expected {}", row.offset, row.expected);
                    let _ = writeln!(out, "    {:08x}  found    {}", row.offset, row.found);
                }
            }
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
