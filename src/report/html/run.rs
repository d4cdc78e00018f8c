//! The page of one run: verdict, facts, throughput and latency over time
//! (each disruption's stall shaded), the disruptions, the map of the target
//! with its findings, and the findings with their hex diffs.

use std::fmt::Write as _;

use super::svg::{self, Band, Series};
use super::{
    READ_COLOR, WRITE_COLOR, class_chip, class_color, escape, incident_color, page, verdict_header,
};
use crate::metrics::{DirectionSummary, MetricsSummary, TimelinePoint};
use crate::report::incidents as words;
use crate::report::{Disruption, FindingRecord, Report, classes_in_order, longest_stall};
use crate::units::{format_count, format_latency_us, format_rate, format_size};

/// Findings shown in the table; the JSON report has them all.
pub const MAX_FINDINGS_SHOWN: usize = 500;

/// The whole page for `report`.
pub fn run_page(report: &Report) -> String {
    let total = report.total_findings();
    let after_disruptions = report.findings_after_disruptions();
    let headline = if report.clean {
        "CLEAN: every checked block holds exactly what was written".to_string()
    } else if after_disruptions > 0 {
        format!(
            "{total} FINDING(S) in the final verify, {after_disruptions} after disruptions: block(s) that are not what was written"
        )
    } else {
        format!("{total} FINDING(S): block(s) that are not what was written")
    };
    let subject = format!(
        "{} · {} · run {}",
        report.host_name(),
        report.target.uri,
        report.run_id
    );
    let mut body = verdict_header(report.clean, "blockstamp run report", &headline, &subject);
    body.push_str(&facts(report));
    body.push_str(&incidents_section(report));
    body.push_str(&performance(report));
    if !report.disruptions.is_empty() {
        body.push_str(&disruptions(&report.disruptions));
    }
    body.push_str(&map(report));
    body.push_str(&findings_table(report));
    if !report.notes.is_empty() {
        body.push_str("<section id=\"notes\">\n<h2>Notes</h2>\n<ul>\n");
        for note in &report.notes {
            let _ = writeln!(body, "<li>{}</li>", escape(note));
        }
        body.push_str("</ul>\n</section>\n");
    }
    page(
        &format!(
            "blockstamp: {} on {} — {}",
            report.target.uri,
            report.host_name(),
            if report.clean {
                "clean".to_string()
            } else {
                format!("{} finding(s)", total + after_disruptions)
            }
        ),
        &body,
    )
}

fn facts(report: &Report) -> String {
    let blocks = &report.blocks;
    let rows: Vec<(&str, String)> = vec![
        ("Host", report.host_name().to_string()),
        ("Run", report.run_id.clone()),
        ("Target", report.target.uri.clone()),
        (
            "Target size",
            format!(
                "{} ({} bytes), {}",
                format_size(report.target.size_bytes),
                report.target.size_bytes,
                if report.target.kind.is_empty() {
                    "kind not recorded"
                } else {
                    &report.target.kind
                }
            ),
        ),
        ("Block size", format_size(report.block_size as u64)),
        (
            "Checked against",
            match &report.checkpoint {
                Some(name) => format!("checkpoint '{name}'"),
                None => "the latest written state".to_string(),
            },
        ),
        (
            "Blocks",
            format!(
                "{} checked, {} ok, of {}; {} expected written",
                blocks.checked, blocks.ok, blocks.total, blocks.expected_written
            ),
        ),
        (
            "Verify",
            format!(
                "read {} in {:.2} s ({})",
                format_size(report.bytes_read),
                report.elapsed_s,
                format_rate(report.throughput_bytes_per_s)
            ),
        ),
        (
            "Engine",
            format!(
                "{}, {}",
                if report.engine.is_empty() {
                    "not recorded"
                } else {
                    &report.engine
                },
                if report.direct_io {
                    "O_DIRECT reads"
                } else {
                    "reads through the page cache"
                }
            ),
        ),
        ("Tool", format!("blockstamp {}", report.tool_version)),
    ];
    let mut out = String::from("<section id=\"facts\">\n<h2>Run</h2>\n<dl class=\"facts\">\n");
    for (name, value) in rows {
        let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", escape(name), escape(&value));
    }
    out.push_str("</dl>\n");
    if !report.clean {
        out.push_str("<p class=\"chips\" id=\"classes\">");
        for class in classes_in_order(report.findings_by_class.keys()) {
            out.push_str(&class_chip(
                &class,
                report.findings_by_class.get(&class).copied(),
            ));
        }
        out.push_str("</p>\n");
    }
    out.push_str("</section>\n");
    out
}

fn performance(report: &Report) -> String {
    let mut out = String::from("<section id=\"performance\">\n<h2>Throughput and latency</h2>\n");
    let Some(metrics) = &report.metrics else {
        let _ = writeln!(
            out,
            "<p class=\"note\">This report carries no metrics (it was made without them): the verify read {} in {:.2} s, {}.</p>",
            escape(&format_size(report.bytes_read)),
            report.elapsed_s,
            escape(&format_rate(report.throughput_bytes_per_s))
        );
        out.push_str("</section>\n");
        return out;
    };
    out.push_str(&summary_table(metrics));
    let timeline = &metrics.timeline;
    if timeline.is_empty() {
        out.push_str("<p class=\"note\">No timeline was recorded.</p>\n</section>\n");
        return out;
    }
    let longest_span = timeline.iter().map(|p| p.span_s).fold(0.0, f64::max);
    if longest_span > 1.0 + 1e-9 {
        let _ = writeln!(
            out,
            "<p class=\"note\">A long run: each point covers up to {longest_span:.0} s; its latencies are the worst second in it.</p>"
        );
    }
    let at = |p: &TimelinePoint| p.t_s as f64 + p.span_s / 2.0;
    let series = |name, color, dashed, value: fn(&TimelinePoint) -> Option<f64>| Series {
        name,
        color,
        dashed,
        points: timeline.iter().map(|p| (at(p), value(p))).collect(),
    };
    let bands = stall_bands(&report.disruptions);
    if !bands.is_empty() {
        out.push_str(
            "<p class=\"note\">Shaded: the stall of each disruption, from its start until the target answered again, numbered as in <a href=\"#disruptions\">Disruptions</a>.</p>\n",
        );
    }
    let has_write = metrics.write.is_some();
    let has_read = metrics.read.is_some();
    let mut throughput = Vec::new();
    let mut iops = Vec::new();
    let mut latency = Vec::new();
    if has_write {
        throughput.push(series("write", WRITE_COLOR, false, |p| {
            Some(p.write_bytes_per_s())
        }));
        iops.push(series("write", WRITE_COLOR, false, |p| Some(p.write_iops)));
        latency.push(series("write p99", WRITE_COLOR, false, |p| p.write_p99_us));
        latency.push(series("write p50", WRITE_COLOR, true, |p| p.write_p50_us));
    }
    if has_read {
        throughput.push(series("read", READ_COLOR, false, |p| {
            Some(p.read_bytes_per_s())
        }));
        iops.push(series("read", READ_COLOR, false, |p| Some(p.read_iops)));
        latency.push(series("read p99", READ_COLOR, false, |p| p.read_p99_us));
        latency.push(series("read p50", READ_COLOR, true, |p| p.read_p50_us));
    }
    out.push_str(&svg::line_chart(
        "chart-throughput",
        "Throughput per second",
        &throughput,
        &bands,
        svg::axis_rate,
    ));
    out.push_str(&svg::line_chart(
        "chart-iops",
        "IOPS",
        &iops,
        &bands,
        svg::axis_count,
    ));
    out.push_str(&svg::line_chart(
        "chart-latency",
        "Latency per second (p99 solid, p50 dashed)",
        &latency,
        &bands,
        format_latency_us,
    ));
    out.push_str("</section>\n");
    out
}

/// Each disruption's stall on the time charts: from its start until the
/// target answered.
fn stall_bands(disruptions: &[Disruption]) -> Vec<Band> {
    disruptions
        .iter()
        .map(|d| Band {
            from: d.started_at_s,
            to: d.answered_at_s.max(d.started_at_s),
            label: d.index.to_string(),
            title: format!(
                "disruption {}: started at {:.1} s, the target answered at {:.1} s; longest stall {:.2} s",
                d.index, d.started_at_s, d.answered_at_s, d.stall_s
            ),
        })
        .collect()
}

/// The disruptions: one row each, then the findings of the verifies after
/// them.
fn disruptions(disruptions: &[Disruption]) -> String {
    let mut out = String::from("<section id=\"disruptions\">\n<h2>Disruptions</h2>\n");
    let worst = longest_stall(disruptions).expect("called with disruptions");
    let found: u64 = disruptions.iter().map(Disruption::total_findings).sum();
    let _ = writeln!(
        out,
        "<p class=\"note\">{} disruption(s); the longest stall {:.2} s (disruption {}). After each, every block written before it was verified: {}</p>",
        disruptions.len(),
        worst.stall_s,
        worst.index,
        if found == 0 {
            "<span class=\"ok\">no findings</span>.".to_string()
        } else {
            format!("<span class=\"bad\">{found} finding(s)</span>.")
        }
    );
    out.push_str(
        "<table id=\"disruptions-table\">\n<tr><th class=\"num\">#</th><th>command</th><th class=\"num\">at</th><th class=\"num\">stall</th><th class=\"num\">answered at</th><th class=\"num\">recovered after</th><th class=\"num\">reconnects</th><th class=\"num\">failed IOs</th><th class=\"num\">verified after</th><th>findings after</th></tr>\n",
    );
    for d in disruptions {
        let command = match &d.recover_command {
            Some(recover) => format!(
                "{} <span class=\"note\">then</span> {}",
                escape(&d.command),
                escape(recover)
            ),
            None => escape(&d.command),
        };
        let recovered = match d.recovered_after_s {
            Some(s) => format!("{s:.1} s"),
            None => "<span class=\"note\" title=\"not before the next disruption or the end of the run\">not back</span>"
                .to_string(),
        };
        let findings = if d.total_findings() == 0 {
            "<span class=\"ok\">none</span>".to_string()
        } else {
            classes_in_order(d.findings_by_class.keys())
                .iter()
                .map(|class| class_chip(class, d.findings_by_class.get(class).copied()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            out,
            "<tr class=\"disruption\" data-index=\"{}\"><td class=\"num\">{}</td><td class=\"mono\" title=\"command ran {:.1} s{}\">{command}</td><td class=\"num\">{:.1} s</td><td class=\"num{}\">{:.2} s</td><td class=\"num\">{:.1} s</td><td class=\"num\">{recovered}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\" title=\"in {:.2} s\">{} blocks</td><td class=\"chips\">{findings}</td></tr>",
            d.index,
            d.index,
            d.command_s,
            d.recover_s
                .map_or(String::new(), |s| format!(", recover {s:.1} s")),
            d.started_at_s,
            if d.index == worst.index && disruptions.len() > 1 {
                " worst"
            } else {
                ""
            },
            d.stall_s,
            d.answered_at_s,
            d.reconnects,
            d.failed_ios,
            d.verify_s,
            d.verify_checked_blocks,
        );
    }
    out.push_str("</table>\n");
    if found > 0 {
        out.push_str("<h2 class=\"sub\">Findings after disruptions</h2>\n");
        out.push_str(
            "<table id=\"disruption-findings-table\">\n<tr><th class=\"num\">after</th><th class=\"num\">block</th><th class=\"num\">offset</th><th>class</th><th>read again</th><th class=\"num\">expected gen</th><th class=\"num\">found gen</th><th class=\"num\">found block</th><th>detail</th></tr>\n",
        );
        let mut shown = 0;
        for d in disruptions {
            for finding in d.findings.iter().take(MAX_FINDINGS_SHOWN - shown) {
                finding_row(&mut out, finding, Some(d.index));
                shown += 1;
            }
        }
        out.push_str("</table>\n");
        let kept: usize = disruptions.iter().map(|d| d.findings.len()).sum();
        if (found as usize) > shown {
            let _ = writeln!(
                out,
                "<p class=\"note\">Showing {shown} of {found} finding(s){}.</p>",
                if kept > shown {
                    "; the JSON report has every finding it kept"
                } else {
                    ""
                }
            );
        }
    }
    out.push_str("</section>\n");
    out
}

fn summary_table(metrics: &MetricsSummary) -> String {
    let mut out = String::from(
        "<table id=\"metrics-summary\">\n<tr><th></th><th class=\"num\">IOPS</th><th class=\"num\">throughput</th><th class=\"num\">p50</th><th class=\"num\">p99</th><th class=\"num\">p99.9</th><th class=\"num\">max</th><th class=\"num\">IOs</th><th class=\"num\">bytes</th><th class=\"num\">active</th></tr>\n",
    );
    for (name, direction) in [("write", &metrics.write), ("read", &metrics.read)] {
        match direction {
            None => {
                let _ = writeln!(
                    out,
                    "<tr><th>{name}</th><td colspan=\"9\" class=\"note\">none recorded</td></tr>"
                );
            }
            Some(DirectionSummary {
                ios,
                bytes,
                active_s,
                iops,
                bytes_per_s,
                latency_us,
            }) => {
                let cells = [
                    format_count(*iops),
                    format_rate(*bytes_per_s),
                    format_latency_us(latency_us.p50),
                    format_latency_us(latency_us.p99),
                    format_latency_us(latency_us.p99_9),
                    format_latency_us(latency_us.max),
                    ios.to_string(),
                    format_size(*bytes),
                    format!("{active_s:.2} s"),
                ];
                let _ = write!(out, "<tr><th>{name}</th>");
                for cell in cells {
                    let _ = write!(out, "<td class=\"num\">{}</td>", escape(&cell));
                }
                out.push_str("</tr>\n");
            }
        }
    }
    out.push_str("</table>\n");
    out
}

fn map(report: &Report) -> String {
    let blocks_per_cell = svg::blocks_per_map_cell(report.blocks.total);
    let mut out = String::from("<section id=\"map\">\n<h2>Where the findings are</h2>\n");
    let _ = writeln!(
        out,
        "<p class=\"note\">Each cell is {} block(s) ({}) of the target, in order from offset 0; coloured by the class of its findings, outlined in black when it holds more than one class. Incidents are outlined in their colour and numbered on their first cell. Hover a cell for its blocks.</p>",
        blocks_per_cell,
        escape(&format_size(blocks_per_cell * report.block_size as u64))
    );
    let findings: Vec<(u64, &str)> = report
        .findings
        .iter()
        .map(|f| (f.block, f.class.as_str()))
        .collect();
    // Each finding names its incident: outline exactly their cells.
    let ranges: Vec<Vec<[u64; 2]>> = report
        .incidents
        .iter()
        .map(|incident| {
            report
                .findings
                .iter()
                .filter(|f| f.incident == Some(incident.id))
                .map(|f| [f.block, f.block])
                .collect()
        })
        .collect();
    let highlights: Vec<svg::MapHighlight<'_>> = report
        .incidents
        .iter()
        .zip(&ranges)
        .map(|(incident, ranges)| svg::MapHighlight {
            id: incident.id,
            color: incident_color(incident.id),
            ranges,
            title: words::headline(incident),
        })
        .collect();
    out.push_str(&svg::target_map(
        "target-map",
        report.blocks.total,
        report.block_size,
        &findings,
        &highlights,
    ));
    out.push_str("<p class=\"chips\" id=\"map-legend\">");
    let mut shown: std::collections::BTreeMap<String, u64> = Default::default();
    for (_, class) in &findings {
        *shown.entry(class.to_string()).or_default() += 1;
    }
    for class in classes_in_order(shown.keys()) {
        out.push_str(&class_chip(&class, shown.get(&class).copied()));
    }
    out.push_str(
        "<span class=\"chip\" style=\"background:#e4ece4;color:#1d232a\">no finding</span></p>\n",
    );
    if report.findings_truncated {
        let _ = writeln!(
            out,
            "<p class=\"note\">The report kept {} of {} findings (--max-findings); the map shows those kept.</p>",
            report.findings.len(),
            report.total_findings()
        );
    }
    out.push_str("</section>\n");
    out
}

/// Incidents shown on the page; the JSON report has them all.
pub const MAX_INCIDENTS_SHOWN: usize = 50;

/// The incidents: a table, and their writes along the run.
fn incidents_section(report: &Report) -> String {
    if report.incidents.is_empty() {
        return String::new();
    }
    let mut out = String::from("<section id=\"incidents\">\n<h2>Incidents</h2>\n");
    let _ = writeln!(
        out,
        "<p class=\"note\">Findings grouped by the cause they share: one class, close on the target or close in write order (the same bursts), or one misdirected write and the block it missed. Outlined in the incident's colour on the map below.</p>"
    );
    let shown = &report.incidents[..report.incidents.len().min(MAX_INCIDENTS_SHOWN)];
    if shown.len() < report.incidents.len() {
        let _ = writeln!(
            out,
            "<p class=\"note\">Showing {} of {} incidents; the JSON report has them all.</p>",
            shown.len(),
            report.incidents.len()
        );
    }
    out.push_str("<table class=\"incidents\" id=\"incidents-table\">\n<tr><th>incident</th><th>classes</th><th>blocks</th><th>what is known</th></tr>\n");
    for incident in shown {
        let chips: String = incident
            .classes_by_size()
            .iter()
            .map(|(class, n)| class_chip(class, Some(*n)))
            .collect::<Vec<_>>()
            .join(" ");
        let lines: String = words::detail_lines(incident, report.block_size)
            .iter()
            .map(|line| format!("<div>{}</div>", escape(line)))
            .collect();
        let _ = writeln!(
            out,
            "<tr class=\"incident\" data-incident=\"{}\"><td class=\"id\" style=\"color:{}\">#{}</td><td class=\"chips\">{chips}</td><td>{}</td><td class=\"lines\">{lines}</td></tr>",
            incident.id,
            incident_color(incident.id),
            incident.id,
            escape(&words::blocks_text(incident)),
        );
    }
    out.push_str("</table>\n");
    if let Some(grouping) = &report.incident_grouping {
        let lanes: Vec<svg::AxisLane<'_>> = shown
            .iter()
            .map(|incident| {
                let main_class = incident
                    .classes_by_size()
                    .first()
                    .map_or("", |(class, _)| *class);
                let when = incident
                    .damaged_writes
                    .as_ref()
                    .or(incident.found_writes.as_ref())
                    .map_or_else(String::new, |span| {
                        let text = words::span_text(span);
                        text.split_once(", ")
                            .map_or(text.clone(), |(_, t)| t.to_string())
                    });
                svg::AxisLane {
                    id: incident.id,
                    color: incident_color(incident.id),
                    class_color: class_color(main_class),
                    label: format!("#{} {}", incident.id, words::classes_text(incident)),
                    damaged: incident
                        .damaged_writes
                        .as_ref()
                        .map(|w| (w.first_write_seq, w.last_write_seq)),
                    found: incident
                        .found_writes
                        .as_ref()
                        .filter(|_| incident.damaged_writes.is_none())
                        .map(|w| (w.first_write_seq, w.last_write_seq)),
                    when,
                    title: words::headline(incident),
                }
            })
            .collect();
        out.push_str("<h2>When their writes were issued</h2>\n");
        out.push_str("<p class=\"note\">Each lane is an incident along the run's writes, in sequence order: a bar spans its damaged writes; for lost writes a grey bar spans the older writes still in their place and the dotted line the stretch after them in which the lost writes were issued. Incidents with neither have an empty lane.</p>\n");
        out.push_str(&svg::write_axis(
            "write-axis",
            grouping.next_write_seq,
            &lanes,
        ));
    }
    out.push_str("</section>\n");
    out
}

fn findings_table(report: &Report) -> String {
    let mut out = String::from("<section id=\"findings\">\n<h2>Findings</h2>\n");
    if report.findings.is_empty() {
        out.push_str(if report.clean {
            "<p class=\"ok\">None: every checked block holds exactly what was written.</p>\n"
        } else if report.total_findings() == 0 {
            "<p class=\"note\">None in the final verify: the run's findings were found before it (after a disruption, or by a soak's earlier verifies).</p>\n"
        } else {
            "<p class=\"note\">The report counts findings but kept none in detail.</p>\n"
        });
        out.push_str("</section>\n");
        return out;
    }
    if report.findings.len() > MAX_FINDINGS_SHOWN || report.findings_truncated {
        let _ = writeln!(
            out,
            "<p class=\"note\">Showing {} of {} finding(s); the JSON report has every finding it kept.</p>",
            report.findings.len().min(MAX_FINDINGS_SHOWN),
            report.total_findings()
        );
    }
    out.push_str(
        "<table id=\"findings-table\">\n<tr><th class=\"num\">block</th><th class=\"num\">offset</th><th>class</th><th>read again</th><th class=\"num\">expected gen</th><th class=\"num\">found gen</th><th class=\"num\">found block</th><th>detail</th></tr>\n",
    );
    for finding in report.findings.iter().take(MAX_FINDINGS_SHOWN) {
        finding_row(&mut out, finding, None);
    }
    out.push_str("</table>\n</section>\n");
    out
}

/// A finding's row, and the row of its details under it; `after`: the
/// disruption whose verify found it, in a first column.
fn finding_row(out: &mut String, finding: &FindingRecord, after: Option<u64>) {
    let dash = || "-".to_string();
    let _ = write!(
        out,
        "<tr class=\"finding\" data-class=\"{}\">",
        escape(&finding.class)
    );
    if let Some(index) = after {
        let _ = write!(out, "<td class=\"num\">{index}</td>");
    }
    let _ = writeln!(
        out,
        "<td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
        finding.block,
        finding.offset,
        class_chip(&finding.class, None),
        if finding.persistent {
            "<span class=\"bad\">persistent</span>"
        } else {
            "transient"
        },
        finding.expected_generation,
        finding
            .found_generation
            .map_or_else(dash, |g| g.to_string()),
        finding.found_block.map_or_else(dash, |b| b.to_string()),
        escape(&finding.detail)
    );
    if let Some(more) = finding_details(finding) {
        let _ = writeln!(
            out,
            "<tr class=\"more\"><td colspan=\"{}\">{more}</td></tr>",
            if after.is_some() { 9 } else { 8 }
        );
    }
}

/// The extra row under a finding: hex diff, torn split, failing sectors.
fn finding_details(finding: &FindingRecord) -> Option<String> {
    let mut out = String::new();
    if let Some(corruption) = &finding.corruption {
        let _ = writeln!(
            out,
            "<div>{} bit(s) in {} byte(s) differ; byte ranges {}</div>",
            corruption.differing_bits,
            corruption.differing_bytes,
            escape(&corruption.ranges_text(16))
        );
        if !corruption.diff_rows.is_empty() {
            out.push_str("<table class=\"hex diff\">\n<tr class=\"head\"><td>offset</td><td>expected</td><td>found</td></tr>\n");
            for row in &corruption.diff_rows {
                let (expected, found) = highlight_diff(&row.expected, &row.found);
                let _ = writeln!(
                    out,
                    "<tr><td>0x{:04x}</td><td>{expected}</td><td>{found}</td></tr>",
                    row.offset
                );
            }
            out.push_str("</table>\n");
        }
    }
    if let Some(split) = &finding.torn_split {
        let parts: Vec<String> = split
            .iter()
            .map(|span| {
                format!(
                    "sectors {}–{}: {}",
                    span.first_sector,
                    span.last_sector,
                    span.generation
                        .map_or("zero".to_string(), |g| format!("generation {g}"))
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "<div class=\"torn\">{}</div>",
            escape(&parts.join(" · "))
        );
    }
    if !finding.unreadable_sectors.is_empty() {
        let sectors: Vec<String> = finding
            .unreadable_sectors
            .iter()
            .map(u32::to_string)
            .collect();
        let _ = writeln!(
            out,
            "<div>failing 512-byte sectors: {}</div>",
            escape(&sectors.join(", "))
        );
    }
    (!out.is_empty()).then_some(out)
}

/// The two hex rows with the bytes that differ in bold.
fn highlight_diff(expected: &str, found: &str) -> (String, String) {
    let expected_bytes: Vec<&str> = expected.split_whitespace().collect();
    let found_bytes: Vec<&str> = found.split_whitespace().collect();
    let mark = |mine: &[&str], theirs: &[&str]| -> String {
        mine.iter()
            .enumerate()
            .map(|(i, byte)| {
                if theirs.get(i) == Some(byte) {
                    escape(byte)
                } else {
                    format!("<b>{}</b>", escape(byte))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (
        mark(&expected_bytes, &found_bytes),
        mark(&found_bytes, &expected_bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::html::tests::well_formed;
    use crate::report::parse;
    use crate::report::tests::{sample, sample_disruption, sample_json};

    fn by_id<'a>(doc: &'a roxmltree::Document<'a>, id: &str) -> roxmltree::Node<'a, 'a> {
        doc.descendants()
            .find(|n| n.attribute("id") == Some(id))
            .unwrap_or_else(|| panic!("no element #{id}"))
    }

    fn text_of(node: roxmltree::Node<'_, '_>) -> String {
        node.descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .collect()
    }

    #[test]
    fn the_page_has_verdict_facts_charts_map_and_findings() {
        let html = run_page(&sample());
        let doc = well_formed(&html);
        let verdict = by_id(&doc, "verdict");
        assert_eq!(verdict.attribute("class"), Some("verdict findings"));
        let verdict_text = text_of(verdict);
        assert!(verdict_text.contains("4 FINDING(S)"), "{verdict_text}");
        assert!(verdict_text.contains("storage-lab-3 · disk.img · run 93ed9d825dd8e5a6"));
        assert!(text_of(by_id(&doc, "facts")).contains("1 GiB (1073741824 bytes), file"));
        for chart in ["chart-throughput", "chart-iops", "chart-latency"] {
            let svg = by_id(&doc, chart);
            assert_eq!(svg.tag_name().name(), "svg");
            assert!(
                svg.descendants().any(|n| n.has_tag_name("polyline")),
                "{chart} has lines"
            );
        }
        let summary = text_of(by_id(&doc, "metrics-summary"));
        assert!(
            summary.contains("409.6 MB/s") && summary.contains("1.10 ms"),
            "{summary}"
        );
        // Each cell covers 171 blocks: blocks 17, 40 and 99 share the first
        // (one finding of each class: the contract's first class colours it,
        // outlined), block 200000 has its own.
        let cells: Vec<(&str, Option<&str>)> = by_id(&doc, "target-map")
            .descendants()
            .filter(|n| n.attribute("class") == Some("finding-cell"))
            .map(|n| (n.attribute("data-class").unwrap(), n.attribute("stroke")))
            .collect();
        assert_eq!(
            cells,
            vec![("lost_write", Some("#000")), ("misdirected", None)]
        );
        let rows: Vec<&str> = by_id(&doc, "findings-table")
            .descendants()
            .filter(|n| n.attribute("class") == Some("finding"))
            .map(|n| n.attribute("data-class").unwrap())
            .collect();
        assert_eq!(rows, vec!["lost_write", "torn", "corrupt", "misdirected"]);
    }

    #[test]
    fn incidents_are_tabled_outlined_on_the_map_and_laid_on_the_write_axis() {
        let html = run_page(&sample());
        let doc = well_formed(&html);
        let rows: Vec<&str> = by_id(&doc, "incidents-table")
            .descendants()
            .filter(|n| n.attribute("class") == Some("incident"))
            .map(|n| n.attribute("data-incident").unwrap())
            .collect();
        assert_eq!(rows, vec!["1", "2", "3", "4"]);
        let table = text_of(by_id(&doc, "incidents-table"));
        assert!(table.contains("damaged write 262184"), "{table}");
        assert!(
            table.contains("the writes that did not persist were issued after write 17"),
            "{table}"
        );
        // On the map: each incident outlines the cell of its block, in its
        // colour; blocks 17, 40 and 99 share the first cell.
        let map = by_id(&doc, "target-map");
        let outlined: Vec<(&str, &str)> = map
            .descendants()
            .filter(|n| n.attribute("class") == Some("incident-cells"))
            .map(|n| {
                let rect = n.children().find(|c| c.has_tag_name("rect")).unwrap();
                (
                    n.attribute("data-incident").unwrap(),
                    rect.attribute("y").unwrap(),
                )
            })
            .collect();
        assert_eq!(outlined.len(), 4);
        assert_eq!(outlined[0].1, outlined[1].1, "blocks 40 and 99: one cell");
        assert_ne!(outlined[2].1, outlined[0].1, "block 200000 further down");
        // On the write axis: three damaged spans, one lost-after line.
        let axis = by_id(&doc, "write-axis");
        let count = |class: &str| {
            axis.descendants()
                .filter(|n| n.attribute("class") == Some(class))
                .count()
        };
        assert_eq!((count("damaged-span"), count("lost-after")), (3, 1));
        assert_eq!(count("incident-lane"), 4);
    }

    #[test]
    fn corrupt_blocks_show_their_hex_diff_with_the_differing_byte_marked() {
        let html = run_page(&sample());
        let doc = well_formed(&html);
        let diff = doc
            .descendants()
            .find(|n| n.attribute("class") == Some("hex diff"))
            .expect("a hex diff");
        let marked: Vec<&str> = diff
            .descendants()
            .filter(|n| n.has_tag_name("b"))
            .filter_map(|n| n.text())
            .collect();
        assert_eq!(marked, vec!["88", "89"]);
        assert!(text_of(diff).contains("0x03e0"));
        let torn = doc
            .descendants()
            .find(|n| n.attribute("class") == Some("torn"))
            .expect("torn split");
        assert_eq!(
            text_of(torn),
            "sectors 0–3: generation 2 · sectors 4–7: generation 1"
        );
    }

    #[test]
    fn strings_from_the_report_cannot_inject_markup() {
        let mut json = sample_json();
        json["host"] = serde_json::json!("<script>alert(1)</script>");
        json["target"]["uri"] = serde_json::json!("nbd://h/\"><img src=x>");
        json["findings"][0]["detail"] = serde_json::json!("a & b <i>");
        json["findings"][0]["class"] = serde_json::json!("<b>new</b>");
        json["notes"] = serde_json::json!(["</section><h1>x</h1>"]);
        let html = run_page(&parse(&json.to_string()).unwrap());
        let doc = well_formed(&html);
        for tag in ["script", "img", "i"] {
            assert!(
                !doc.descendants().any(|n| n.has_tag_name(tag)),
                "<{tag}> injected"
            );
        }
        let headings = doc.descendants().filter(|n| n.has_tag_name("h1")).count();
        assert_eq!(headings, 1, "only the page's own <h1>");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(text_of(by_id(&doc, "notes")).contains("</section><h1>x</h1>"));
    }

    #[test]
    fn a_clean_report_without_metrics_says_so() {
        let mut json = sample_json();
        json["findings"] = serde_json::json!([]);
        json["findings_by_class"] = serde_json::json!({});
        json["clean"] = serde_json::json!(true);
        json.as_object_mut().unwrap().remove("metrics");
        let html = run_page(&parse(&json.to_string()).unwrap());
        let doc = well_formed(&html);
        assert_eq!(
            by_id(&doc, "verdict").attribute("class"),
            Some("verdict clean")
        );
        assert!(text_of(by_id(&doc, "performance")).contains("carries no metrics"));
        assert!(
            !doc.descendants()
                .any(|n| n.attribute("id") == Some("chart-latency"))
        );
        assert!(text_of(by_id(&doc, "findings")).contains("None: every checked block"));
        assert!(
            !doc.descendants()
                .any(|n| n.attribute("class") == Some("finding-cell"))
        );
    }

    #[test]
    fn the_findings_table_is_capped() {
        let mut json = sample_json();
        let one = json["findings"][0].clone();
        let many: Vec<serde_json::Value> = (0..MAX_FINDINGS_SHOWN as u64 + 20)
            .map(|i| {
                let mut f = one.clone();
                f["block"] = serde_json::json!(i);
                f
            })
            .collect();
        json["findings"] = serde_json::json!(many);
        json["findings_by_class"] = serde_json::json!({"lost_write": MAX_FINDINGS_SHOWN + 20});
        let html = run_page(&parse(&json.to_string()).unwrap());
        let doc = well_formed(&html);
        let rows = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("finding"))
            .count();
        assert_eq!(rows, MAX_FINDINGS_SHOWN);
        assert!(text_of(by_id(&doc, "findings")).contains("Showing 500 of 520 finding(s)"));
    }

    #[test]
    fn each_stall_is_shaded_on_every_chart_and_each_disruption_has_a_row() {
        let mut json = sample_json();
        json["disruptions"] = serde_json::json!([
            sample_disruption(1, 4.0, 2.5),
            sample_disruption(2, 12.0, 0.75),
        ]);
        let lost = json["findings"][0].clone();
        json["disruptions"][1]["findings"] = serde_json::json!([lost]);
        json["disruptions"][1]["findings_by_class"] = serde_json::json!({"lost_write": 1});
        json["disruptions"][1]["recovered_after_s"] = serde_json::Value::Null;
        let html = run_page(&parse(&json.to_string()).unwrap());
        let doc = well_formed(&html);
        assert!(
            text_of(by_id(&doc, "verdict"))
                .contains("4 FINDING(S) in the final verify, 1 after disruptions")
        );
        for chart in ["chart-throughput", "chart-iops", "chart-latency"] {
            let bands: Vec<(&str, &str)> = by_id(&doc, chart)
                .descendants()
                .filter(|n| n.attribute("class") == Some("band"))
                .map(|n| {
                    (
                        n.attribute("data-label").unwrap(),
                        n.attribute("width").unwrap(),
                    )
                })
                .collect();
            // 30 points end at 29.5 s: 1078 drawing units for 29.5 s.
            assert_eq!(bands, [("1", "91.4"), ("2", "27.4")], "{chart}");
        }
        let rows: Vec<Vec<String>> = by_id(&doc, "disruptions-table")
            .descendants()
            .filter(|n| n.attribute("class") == Some("disruption"))
            .map(|row| {
                row.children()
                    .filter(|c| c.has_tag_name("td"))
                    .map(text_of)
                    .collect()
            })
            .collect();
        assert_eq!(
            rows,
            [
                [
                    "1",
                    "systemctl restart iscsi-target then multipath -r",
                    "4.0 s",
                    "2.50 s",
                    "6.5 s",
                    "4.0 s",
                    "1",
                    "3",
                    "262144 blocks",
                    "none"
                ],
                [
                    "2",
                    "systemctl restart iscsi-target then multipath -r",
                    "12.0 s",
                    "0.75 s",
                    "12.8 s",
                    "not back",
                    "1",
                    "3",
                    "262144 blocks",
                    "lost_write 1"
                ]
            ]
        );
        let after: Vec<String> = by_id(&doc, "disruption-findings-table")
            .descendants()
            .filter(|n| n.attribute("class") == Some("finding"))
            .map(|row| text_of(row.first_element_child().unwrap()))
            .collect();
        assert_eq!(after, ["2"], "the finding is named after disruption 2");
    }

    #[test]
    fn a_run_without_disruptions_has_no_bands_and_no_disruptions_section() {
        let html = run_page(&sample());
        let doc = well_formed(&html);
        assert!(
            !doc.descendants()
                .any(|n| n.attribute("class") == Some("band"))
        );
        assert!(
            !doc.descendants()
                .any(|n| n.attribute("id") == Some("disruptions"))
        );
    }
}
