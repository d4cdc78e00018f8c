//! The page of a fleet: verdict, every report in one table, findings per
//! host and class, the extremes, and throughput and p99 latency per report.

use std::fmt::Write as _;

use super::svg::{self, Bar};
use super::{READ_COLOR, WRITE_COLOR, chip, class_chip, class_color, escape, page, verdict_header};
use crate::report::classes_in_order;
use crate::report::fleet::{COLUMNS, Column, Fleet, FleetReport, Measure, column};
use crate::units::{format_latency_us, format_rate};

pub fn fleet_page(fleet: &Fleet) -> String {
    let subject = format!(
        "{} report(s) · {} host(s) · {} with findings",
        fleet.report_count, fleet.host_count, fleet.reports_with_findings
    );
    let mut body = verdict_header(
        fleet.clean,
        "blockstamp fleet report",
        &fleet.verdict(),
        &subject,
    );
    body.push_str(&reports_table(fleet));
    body.push_str(&findings_matrix(fleet));
    body.push_str(&extremes(fleet));
    body.push_str(&charts(fleet));
    page(
        &format!(
            "blockstamp fleet: {} host(s) — {}",
            fleet.host_count,
            if fleet.clean { "clean" } else { "findings" }
        ),
        &body,
    )
}

fn reports_table(fleet: &Fleet) -> String {
    let mut out = String::from(
        "<section id=\"reports\">\n<h2>Hosts and targets</h2>\n<div class=\"wide\">\n<table id=\"reports-table\">\n<tr><th>host</th><th>target</th><th>run</th><th>verdict</th><th class=\"num\">findings</th>",
    );
    for column in &COLUMNS {
        let _ = write!(out, "<th class=\"num\">{}</th>", escape(column.header));
    }
    out.push_str("</tr>\n");
    for r in &fleet.reports {
        let _ = write!(
            out,
            "<tr class=\"report\" data-clean=\"{}\"><td class=\"nowrap\">{}</td><td class=\"mono target\" title=\"{}\">{}</td><td class=\"mono\">{}</td><td>{}</td><td class=\"num\">{}</td>",
            r.clean,
            escape(&r.host),
            escape(&r.path),
            escape(&r.target),
            escape(&r.run_id),
            if r.clean {
                "<span class=\"ok\">clean</span>"
            } else {
                "<span class=\"bad\">FINDINGS</span>"
            },
            r.findings,
        );
        for column in &COLUMNS {
            let value = (column.value)(r);
            let worst = (column.worst)(&fleet.worst)
                .as_ref()
                .is_some_and(|e| e.path == r.path);
            // Under the longest stall, the disruptions it is the longest of.
            let under = match (column.measure, r.disruptions) {
                (Measure::Stall, n) if n > 0 => format!(
                    "<span class=\"under {}\">{}</span>",
                    if r.disruption_findings > 0 {
                        "bad"
                    } else {
                        "note"
                    },
                    escape(&match r.disruption_findings {
                        0 => format!("of {n} disruptions"),
                        found => format!("of {n} disruptions, {found} findings after"),
                    })
                ),
                _ => String::new(),
            };
            let _ = write!(
                out,
                "<td class=\"num{}\">{}{under}</td>",
                if worst && value.is_some() {
                    " worst"
                } else {
                    ""
                },
                escape(&value.map_or("-".to_string(), |v| column.measure.format(v)))
            );
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n</div>\n<p class=\"note\">In red: the fleet's worst value of a column. Read throughput is the metrics' where recorded, else the verify's. Longest stall: of the run's disruptions (--disrupt).</p>\n</section>\n");
    out
}

fn findings_matrix(fleet: &Fleet) -> String {
    let mut out =
        String::from("<section id=\"findings-by-host\">\n<h2>Findings by host and class</h2>\n");
    let classes = classes_in_order(fleet.findings_by_class.keys());
    if classes.is_empty() {
        out.push_str("<p class=\"ok\">No findings on any host.</p>\n</section>\n");
        return out;
    }
    out.push_str("<table id=\"findings-matrix\">\n<tr><th>host</th>");
    for class in &classes {
        let _ = write!(out, "<th class=\"num\">{}</th>", class_chip(class, None));
    }
    out.push_str("<th class=\"num\">total</th></tr>\n");
    for host in &fleet.hosts {
        let _ = write!(out, "<tr><td class=\"nowrap\">{}</td>", escape(&host.host));
        for class in &classes {
            let n = host.findings_by_class.get(class).copied().unwrap_or(0);
            if n == 0 {
                out.push_str("<td class=\"num\">0</td>");
            } else {
                let _ = write!(
                    out,
                    "<td class=\"num\" data-class=\"{}\">{}</td>",
                    escape(class),
                    chip(&n.to_string(), class_color(class))
                );
            }
        }
        let _ = writeln!(out, "<td class=\"num\">{}</td></tr>", host.findings);
    }
    out.push_str("</table>\n</section>\n");
    out
}

fn extremes(fleet: &Fleet) -> String {
    let mut out = String::from("<section id=\"extremes\">\n<h2>Extremes</h2>\n<table>\n");
    for column in &COLUMNS {
        let Some(e) = (column.worst)(&fleet.worst) else {
            continue;
        };
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td class=\"num\">{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td></tr>",
            escape(&column.extreme_label()),
            escape(&column.measure.format(e.value)),
            escape(&e.host),
            escape(&e.target),
            escape(&e.path)
        );
    }
    out.push_str("</table>\n</section>\n");
    out
}

fn charts(fleet: &Fleet) -> String {
    let label = |r: &FleetReport| {
        let text = format!("{} · {}", r.host, r.target);
        // What fits left of the bars at 12 px.
        if text.chars().count() > 38 {
            let short: String = text.chars().take(37).collect();
            format!("{short}…")
        } else {
            text
        }
    };
    // One group per report: its write bar and its read bar.
    let groups = |write: &str, read: &str| -> Vec<(String, Vec<Bar<'_>>)> {
        let (write, read) = (column(write), column(read));
        fleet
            .reports
            .iter()
            .map(|r| {
                let bar = |c: &Column, color| Bar {
                    value: (c.value)(r),
                    color,
                };
                (
                    label(r),
                    vec![bar(write, WRITE_COLOR), bar(read, READ_COLOR)],
                )
            })
            .collect()
    };
    let legend = [("write", WRITE_COLOR), ("read", READ_COLOR)];
    let mut out = String::from("<section id=\"charts\">\n");
    out.push_str(&svg::bar_chart(
        "chart-fleet-throughput",
        "Throughput per report",
        &legend,
        &groups("write", "read"),
        format_rate,
    ));
    out.push_str(&svg::bar_chart(
        "chart-fleet-latency",
        "p99 latency per report",
        &legend,
        &groups("write p99", "read p99"),
        format_latency_us,
    ));
    out.push_str("</section>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::html::tests::well_formed;
    use crate::report::tests::sample_json;
    use crate::report::{fleet, parse};

    #[test]
    fn the_fleet_page_names_hosts_findings_and_extremes() {
        let mut clean = sample_json();
        clean["host"] = serde_json::json!("node-<a>");
        clean["findings"] = serde_json::json!([]);
        clean["findings_by_class"] = serde_json::json!({});
        clean["clean"] = serde_json::json!(true);
        clean["metrics"]["write"]["latency_us"]["p99"] = serde_json::json!(99_000.0);
        let reports = vec![
            ("a.json".to_string(), parse(&clean.to_string()).unwrap()),
            (
                "b.json".to_string(),
                parse(&sample_json().to_string()).unwrap(),
            ),
        ];
        let html = fleet_page(&fleet::merge(&reports));
        let doc = well_formed(&html);
        let verdict = doc
            .descendants()
            .find(|n| n.attribute("id") == Some("verdict"))
            .unwrap();
        assert_eq!(verdict.attribute("class"), Some("verdict findings"));
        let rows: Vec<&str> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("report"))
            .map(|n| n.attribute("data-clean").unwrap())
            .collect();
        assert_eq!(rows, vec!["true", "false"]);
        assert!(html.contains("node-&lt;a&gt;"));
        // The worst write p99 is marked in node-<a>'s row.
        let worst: Vec<String> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("num worst"))
            .map(|n| n.text().unwrap_or_default().to_string())
            .collect();
        assert!(worst.contains(&"99.00 ms".to_string()), "{worst:?}");
        let matrix: Vec<&str> = doc
            .descendants()
            .filter_map(|n| n.attribute("data-class"))
            .collect();
        assert_eq!(matrix, vec!["lost_write", "misdirected", "torn", "corrupt"]);
        for id in ["chart-fleet-throughput", "chart-fleet-latency", "extremes"] {
            assert!(
                doc.descendants().any(|n| n.attribute("id") == Some(id)),
                "#{id}"
            );
        }
    }

    #[test]
    fn each_report_row_shows_its_longest_stall_and_how_many_disruptions() {
        use crate::report::tests::sample_disruption;
        let mut calm = sample_json();
        calm["host"] = serde_json::json!("calm");
        let mut disrupted = sample_json();
        disrupted["disruptions"] = serde_json::json!([
            sample_disruption(1, 10.0, 1.5),
            sample_disruption(2, 20.0, 4.25)
        ]);
        let reports = vec![
            ("a.json".to_string(), parse(&calm.to_string()).unwrap()),
            ("b.json".to_string(), parse(&disrupted.to_string()).unwrap()),
        ];
        let html = fleet_page(&fleet::merge(&reports));
        let doc = well_formed(&html);
        let stalls: Vec<String> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("report"))
            .map(|row| {
                let cell = row.children().rfind(|c| c.has_tag_name("td")).unwrap();
                cell.descendants()
                    .filter(|n| n.is_text())
                    .filter_map(|n| n.text())
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        assert_eq!(stalls, ["-", "4.25 s|of 2 disruptions"]);
        assert!(html.contains("<th class=\"num\">longest stall</th>"));
    }
}
