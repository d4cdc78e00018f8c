//! Self-contained HTML pages: one run (`run`), a fleet (`fleet`).
//!
//! A page is one file with its CSS inline and its charts as inline SVG drawn
//! here (`svg`): no script, no external asset, so it can be mailed, archived
//! as a CI artifact, or opened on an air-gapped lab machine. The markup is
//! also well-formed XML (every element closed, every attribute quoted, no
//! named entities), which lets the tests parse it strictly.
//!
//! Every string that comes from a report (host names, target URIs, details,
//! notes) goes through [`escape`]: a report is input, and a hostile or merely
//! odd host name must not become markup.

pub mod fleet;
pub mod run;
pub mod svg;

use std::fmt::Write as _;

/// Escape text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML; show them.
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Colour of a finding class in maps, chips and legends. Unknown classes
/// (from a newer blockstamp) are grey.
pub fn class_color(class: &str) -> &'static str {
    match class {
        "lost_write" => "#d62728",
        "newer_generation" => "#9467bd",
        "misdirected" => "#ff7f0e",
        "torn" => "#e6b400",
        "corrupt" => "#8c2d04",
        "zeroed" => "#3b4cc0",
        "foreign" => "#17becf",
        "unreadable" => "#222222",
        "lost_zeroing" => "#2ca02c",
        _ => "#7f7f7f",
    }
}

/// Colour of incident `id` (from 1) on the map and the write axis: dark
/// and distinct from the class colours, repeating after eight.
pub fn incident_color(id: u32) -> &'static str {
    const COLORS: [&str; 8] = [
        "#000000", "#1b5e20", "#4a148c", "#0d47a1", "#880e4f", "#004d40", "#827717", "#37474f",
    ];
    COLORS[(id.saturating_sub(1) as usize) % COLORS.len()]
}

/// Colours of the two directions in charts.
pub const WRITE_COLOR: &str = "#1f77b4";
pub const READ_COLOR: &str = "#e8710a";

/// A class name as a coloured chip, with an optional count.
pub fn class_chip(class: &str, count: Option<u64>) -> String {
    match count {
        Some(n) => chip(&format!("{class} {n}"), class_color(class)),
        None => chip(class, class_color(class)),
    }
}

/// Text on a coloured pill.
pub fn chip(text: &str, color: &str) -> String {
    format!(
        "<span class=\"chip\" style=\"background:{}\">{}</span>",
        escape(color),
        escape(text)
    )
}

const CSS: &str = r#"
:root { --ok: #2e7d32; --bad: #c62828; --ink: #1d232a; --muted: #5f6b76; --line: #dde3e8; --bg: #f3f5f7; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 "DejaVu Sans", "Liberation Sans", system-ui, sans-serif; color: var(--ink); background: var(--bg); }
main { max-width: 1220px; margin: 0 auto; padding: 20px 24px 40px; }
header.verdict { padding: 18px 24px; border-radius: 8px; color: #fff; }
header.clean { background: var(--ok); }
header.findings { background: var(--bad); }
header .tool { font-size: 12px; letter-spacing: 0.08em; text-transform: uppercase; opacity: 0.85; }
header h1 { margin: 4px 0 2px; font-size: 26px; }
header .subject { font-size: 15px; opacity: 0.95; word-break: break-all; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 20px 18px; margin-top: 16px; }
h2 { font-size: 16px; margin: 0 0 10px; }
p.note { color: var(--muted); margin: 6px 0; }
span.note { color: var(--muted); }
h2.sub { font-size: 14px; margin: 16px 0 8px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr max-content 1fr; gap: 4px 16px; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; word-break: break-all; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.worst { color: var(--bad); font-weight: 700; }
#reports-table th { white-space: normal; }
#reports-table th, #reports-table td { padding: 4px 5px; }
#reports-table td.target { word-break: break-all; min-width: 12em; }
div.wide { overflow-x: auto; }
td .under { display: block; white-space: normal; font-size: 11px; font-weight: 400; }
tr.more td { background: #fafbfc; border-bottom: 1px solid var(--line); padding: 6px 8px 10px 24px; }
.chip { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px; font-weight: 600; white-space: nowrap; }
.chips .chip { margin: 0 6px 6px 0; }
.nowrap { white-space: nowrap; }
.ok { color: var(--ok); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
.mono, .hex { font-family: "DejaVu Sans Mono", "Liberation Mono", ui-monospace, monospace; font-size: 12px; }
table.hex { width: auto; }
table.hex td { border: none; padding: 0 12px 0 0; white-space: pre; }
table.hex b { background: #ffd54f; color: #000; }
table.hex tr.head td { color: var(--muted); }
table.incidents td.id { font-weight: 700; white-space: nowrap; }
table.incidents td.lines div { margin: 1px 0; }
svg text { font-family: "DejaVu Sans", "Liberation Sans", sans-serif; }
footer { color: var(--muted); font-size: 12px; margin-top: 18px; }
"#;

/// The page around `body`: head with title and CSS.
pub fn page(title: &str, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 4096);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n");
    let _ = writeln!(out, "<title>{}</title>", escape(title));
    let _ = writeln!(out, "<style>{CSS}</style>");
    out.push_str("</head>\n<body>\n<main>\n");
    out.push_str(body);
    let _ = writeln!(
        out,
        "<footer>Made by blockstamp {} — a self-contained page: no scripts, no external assets.</footer>",
        env!("CARGO_PKG_VERSION")
    );
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

/// The coloured banner at the top of a page.
pub fn verdict_header(clean: bool, tool: &str, headline: &str, subject: &str) -> String {
    format!(
        "<header class=\"verdict {}\" id=\"verdict\">\n<div class=\"tool\">{}</div>\n<h1>{}</h1>\n<div class=\"subject\">{}</div>\n</header>\n",
        if clean { "clean" } else { "findings" },
        escape(tool),
        escape(headline),
        escape(subject)
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn markup_in_text_is_escaped() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        assert_eq!(escape("a\u{1}b"), "a\\u{1}b");
    }

    #[test]
    fn every_class_of_the_contract_has_its_own_colour() {
        let colors: std::collections::HashSet<&str> = crate::verify::FindingClass::ALL
            .iter()
            .map(|c| class_color(c.name()))
            .collect();
        assert_eq!(colors.len(), crate::verify::FindingClass::ALL.len());
        assert!(!colors.contains(class_color("some_future_class")));
    }

    /// Parse a page as XML (stricter than HTML) and return the document's text.
    pub fn well_formed(html: &str) -> roxmltree::Document<'_> {
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        roxmltree::Document::parse_with_options(html, options)
            .unwrap_or_else(|e| panic!("page is not well-formed: {e}"))
    }
}
