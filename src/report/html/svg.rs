//! Inline SVG charts, drawn here so the pages need no script: line charts of
//! a timeline, the map of a target's blocks, and horizontal bars.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{class_color, escape};
use crate::units::format_size;

/// Drawing width of every chart; pages scale them to their column.
pub const WIDTH: f64 = 1170.0;

/// One line of a line chart: `(x, y)` points, `None` where there is no
/// value (the line breaks there).
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub dashed: bool,
    pub points: Vec<(f64, Option<f64>)>,
}

/// A stretch of time shaded behind the lines of a line chart (a
/// disruption's stall), its label at the top and its title on hover.
pub struct Band {
    pub from: f64,
    pub to: f64,
    pub label: String,
    pub title: String,
}

/// Fill of the shaded bands: light, opaque (the grid and the lines are
/// drawn over it), unlike any class colour.
const BAND_FILL: &str = "#fbe3bf";
const BAND_INK: &str = "#9a5b00";
/// The narrowest band drawn, in drawing units: a stall of a second in a
/// night-long chart stays visible.
const BAND_MIN_WIDTH: f64 = 3.0;

/// A line chart over time (`x` in seconds), y from 0, with `bands` shaded.
pub fn line_chart(
    id: &str,
    title: &str,
    series: &[Series<'_>],
    bands: &[Band],
    y_label: fn(f64) -> String,
) -> String {
    const HEIGHT: f64 = 230.0;
    const LEFT: f64 = 78.0;
    const RIGHT: f64 = 14.0;
    const TOP: f64 = 30.0;
    const BOTTOM: f64 = 28.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(bands.iter().map(|b| b.to))
        .fold(0.0f64, f64::max)
        .max(1.0);
    let y_max_data = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y_step = nice_step(y_max_data.max(1e-9) / 4.0);
    let y_max = (y_max_data / y_step).ceil().max(1.0) * y_step;
    let x = |v: f64| LEFT + v / x_max * plot_w;
    let y = |v: f64| TOP + plot_h - v / y_max * plot_h;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"{}\" class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"100%\" role=\"img\" aria-label=\"{}\">",
        escape(id),
        escape(title)
    );
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"18\" font-size=\"14\" font-weight=\"600\" fill=\"#1d232a\">{}</text>",
        escape(title)
    );
    // Legend, right-aligned on the title line.
    let mut legend_x = WIDTH - RIGHT;
    for s in series.iter().rev() {
        let text_w = s.name.chars().count() as f64 * 7.0;
        legend_x -= text_w;
        let _ = writeln!(
            out,
            "<text x=\"{legend_x:.1}\" y=\"18\" font-size=\"12\" fill=\"#1d232a\">{}</text>",
            escape(s.name)
        );
        legend_x -= 26.0;
        let _ = writeln!(
            out,
            "<line x1=\"{:.1}\" y1=\"14\" x2=\"{:.1}\" y2=\"14\" stroke=\"{}\" stroke-width=\"2.5\"{}/>",
            legend_x,
            legend_x + 20.0,
            s.color,
            if s.dashed {
                " stroke-dasharray=\"5 3\""
            } else {
                ""
            }
        );
        legend_x -= 16.0;
    }
    // Bands, under the grid and the lines.
    for band in bands {
        let left = x(band.from.max(0.0));
        let width = (x(band.to) - left).max(BAND_MIN_WIDTH);
        let _ = writeln!(
            out,
            "<rect class=\"band\" data-label=\"{label}\" x=\"{left:.1}\" y=\"{TOP:.1}\" width=\"{width:.1}\" height=\"{plot_h:.1}\" fill=\"{BAND_FILL}\"><title>{}</title></rect>",
            escape(&band.title),
            label = escape(&band.label),
        );
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" font-weight=\"600\" fill=\"{BAND_INK}\" text-anchor=\"middle\">{}</text>",
            left + width / 2.0,
            TOP + 11.0,
            escape(&band.label)
        );
    }
    // Grid and y labels.
    let mut tick = 0.0;
    while tick <= y_max + y_step / 2.0 {
        let ty = y(tick);
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{ty:.1}\" x2=\"{:.1}\" y2=\"{ty:.1}\" stroke=\"#e3e7eb\" stroke-width=\"1\"/>",
            WIDTH - RIGHT
        );
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#5f6b76\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            ty + 4.0,
            if tick == 0.0 {
                "0".to_string()
            } else {
                escape(&y_label(tick))
            }
        );
        tick += y_step;
    }
    // x ticks in time units.
    let x_step = nice_time_step(x_max / 8.0);
    let mut t = 0.0;
    while t <= x_max + 1e-9 {
        let tx = x(t);
        let _ = writeln!(
            out,
            "<line x1=\"{tx:.1}\" y1=\"{:.1}\" x2=\"{tx:.1}\" y2=\"{:.1}\" stroke=\"#9aa5b1\" stroke-width=\"1\"/>",
            TOP + plot_h,
            TOP + plot_h + 4.0
        );
        let _ = writeln!(
            out,
            "<text x=\"{tx:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#5f6b76\" text-anchor=\"middle\">{}</text>",
            TOP + plot_h + 17.0,
            time_label(t)
        );
        t += x_step;
    }
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#9aa5b1\" stroke-width=\"1\"/>",
        TOP + plot_h,
        WIDTH - RIGHT,
        TOP + plot_h
    );
    // The lines: one polyline per unbroken run of values; a lone value is a dot.
    for s in series {
        let dash = if s.dashed {
            " stroke-dasharray=\"5 3\""
        } else {
            ""
        };
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &(px, py) in &s.points {
            match py {
                Some(py) => runs.last_mut().expect("a run").push((x(px), y(py))),
                None if runs.last().is_some_and(|r| !r.is_empty()) => runs.push(Vec::new()),
                None => {}
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            if run.len() == 1 {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                    run[0].0, run[0].1, s.color
                );
                continue;
            }
            let points: Vec<String> = run.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\" stroke-linejoin=\"round\"{dash} points=\"{}\"/>",
                s.color,
                points.join(" ")
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
pub fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// A step of seconds that reads well on a time axis, at least `raw`.
fn nice_time_step(raw: f64) -> f64 {
    const STEPS: [f64; 17] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        10800.0, 21600.0, 43200.0,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| *s >= raw)
        .unwrap_or_else(|| (raw / 86400.0).ceil() * 86400.0)
}

/// `45s`, `5m`, `1h30m`.
pub fn time_label(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, 0) => format!("{min}m"),
        (0, min, sec) => format!("{min}m{sec:02}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, min, _) => format!("{h}h{min:02}m"),
    }
}

/// `400 MB/s`, `1.5 GB/s`: like `format_rate`, without a needless `.0`.
pub fn axis_rate(bytes_per_second: f64) -> String {
    let text = crate::units::format_rate(bytes_per_second);
    text.replacen(".0 ", " ", 1)
}

/// `120k`, `1.5M`, `800`.
pub fn axis_count(value: f64) -> String {
    crate::units::format_count(value).replace(".0k", "k")
}

/// The most cells the map draws; bigger targets get more blocks per cell.
const MAP_COLUMNS: u64 = 64;
const MAP_MAX_ROWS: u64 = 24;

/// An incident drawn over the target map: its cells outlined in its colour,
/// its number on its first cell.
pub struct MapHighlight<'a> {
    pub id: u32,
    pub color: &'a str,
    /// Inclusive block ranges.
    pub ranges: &'a [[u64; 2]],
    pub title: String,
}

/// A grid over the target, each cell a range of blocks, coloured by the
/// class of the findings in it (the most frequent; a dark outline when it
/// holds more than one class). Each cell with findings has a tooltip.
/// Incidents are outlined over it.
pub fn target_map(
    id: &str,
    total_blocks: u64,
    block_size: u32,
    findings: &[(u64, &str)],
    highlights: &[MapHighlight<'_>],
) -> String {
    let total_blocks = total_blocks.max(1);
    let blocks_per_cell = blocks_per_map_cell(total_blocks);
    let cells = total_blocks.div_ceil(blocks_per_cell);
    let columns = cells.min(MAP_COLUMNS);
    let rows = cells.div_ceil(columns);
    const LEFT: f64 = 78.0;
    const TOP: f64 = 4.0;
    const GAP: f64 = 2.0;
    let cell_w = ((WIDTH - LEFT - 4.0) / MAP_COLUMNS as f64 - GAP).floor();
    let cell_h = 14.0;
    let height = TOP + rows as f64 * (cell_h + GAP) + 4.0;

    let mut by_cell: BTreeMap<u64, BTreeMap<&str, u64>> = BTreeMap::new();
    for (block, class) in findings {
        let cell = (block / blocks_per_cell).min(cells - 1);
        *by_cell.entry(cell).or_default().entry(class).or_default() += 1;
    }

    let mut out = String::new();
    let cell_origin = |cell: u64| {
        (
            LEFT + (cell % columns) as f64 * (cell_w + GAP),
            TOP + (cell / columns) as f64 * (cell_h + GAP),
        )
    };
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"{}\" class=\"map\" viewBox=\"0 0 {WIDTH} {height:.0}\" width=\"100%\" role=\"img\" aria-label=\"map of the target's blocks with findings\">",
        escape(id)
    );
    let label_every = if rows <= 8 { 1 } else { 4 };
    for row in 0..rows {
        let y = TOP + row as f64 * (cell_h + GAP);
        if row % label_every == 0 {
            let offset = row * columns * blocks_per_cell * block_size as u64;
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#5f6b76\" text-anchor=\"end\">{}</text>",
                LEFT - 8.0,
                y + cell_h - 3.0,
                escape(&format_size(offset))
            );
        }
        for column in 0..columns {
            let cell = row * columns + column;
            if cell >= cells {
                break;
            }
            let x = LEFT + column as f64 * (cell_w + GAP);
            match by_cell.get(&cell) {
                None => {
                    let _ = writeln!(
                        out,
                        "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell_w}\" height=\"{cell_h}\" fill=\"#e4ece4\"/>"
                    );
                }
                Some(classes) => {
                    let dominant = classes
                        .iter()
                        .max_by(|a, b| a.1.cmp(b.1).then(class_rank(b.0).cmp(&class_rank(a.0))))
                        .map(|(c, _)| *c)
                        .unwrap_or("unknown");
                    let first = cell * blocks_per_cell;
                    let last = ((cell + 1) * blocks_per_cell).min(total_blocks) - 1;
                    let what: Vec<String> =
                        classes.iter().map(|(c, n)| format!("{n} {c}")).collect();
                    let outline = if classes.len() > 1 {
                        " stroke=\"#000\" stroke-width=\"2\""
                    } else {
                        ""
                    };
                    let _ = writeln!(
                        out,
                        "<rect class=\"finding-cell\" data-class=\"{}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell_w}\" height=\"{cell_h}\" fill=\"{}\"{outline}><title>{}</title></rect>",
                        escape(dominant),
                        class_color(dominant),
                        escape(&format!(
                            "blocks {first}-{last} (offset {}): {}",
                            format_size(first * block_size as u64),
                            what.join(", ")
                        ))
                    );
                }
            }
        }
    }
    for highlight in highlights {
        let mut cells_of: Vec<u64> = highlight
            .ranges
            .iter()
            .flat_map(|r| {
                (r[0] / blocks_per_cell).min(cells - 1)..=(r[1] / blocks_per_cell).min(cells - 1)
            })
            .collect();
        cells_of.sort_unstable();
        cells_of.dedup();
        let _ = writeln!(
            out,
            "<g class=\"incident-cells\" data-incident=\"{}\"><title>{}</title>",
            highlight.id,
            escape(&highlight.title)
        );
        for &cell in &cells_of {
            let (x, y) = cell_origin(cell);
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2.5\"/>",
                x - 1.0,
                y - 1.0,
                cell_w + 2.0,
                cell_h + 2.0,
                escape(highlight.color)
            );
        }
        if let Some(&first) = cells_of.first() {
            let (x, y) = cell_origin(first);
            let _ = writeln!(
                out,
                "<text class=\"incident-label\" x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" font-weight=\"700\" text-anchor=\"middle\" fill=\"#fff\" stroke=\"{}\" stroke-width=\"3\" paint-order=\"stroke\">{}</text>",
                x + cell_w / 2.0,
                y + cell_h - 3.0,
                escape(highlight.color),
                highlight.id
            );
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    out
}

/// One incident on the write axis.
pub struct AxisLane<'a> {
    pub id: u32,
    /// The incident's colour (as on the map) and its main class's colour.
    pub color: &'a str,
    pub class_color: &'a str,
    pub label: String,
    /// The damaged writes, first and last sequence number.
    pub damaged: Option<(u64, u64)>,
    /// For lost writes: the older writes in their place (the lost ones came
    /// after the last of them).
    pub found: Option<(u64, u64)>,
    /// The span's times, for the right margin.
    pub when: String,
    pub title: String,
}

/// The run's writes in sequence order, one lane per incident: its damaged
/// writes as a bar; for lost writes the older writes still in place as a
/// thin bar, then a dotted line from the last of them to the end of the
/// run (the lost writes were issued in there).
pub fn write_axis(id: &str, next_write_seq: u64, lanes: &[AxisLane<'_>]) -> String {
    const LEFT: f64 = 190.0;
    const RIGHT: f64 = 230.0;
    const TOP: f64 = 10.0;
    const LANE: f64 = 24.0;
    const BOTTOM: f64 = 30.0;
    let height = TOP + lanes.len().max(1) as f64 * LANE + BOTTOM;
    let plot_w = WIDTH - LEFT - RIGHT;
    let end = next_write_seq.max(2) as f64;
    let x = |seq: u64| LEFT + (seq as f64 / end).min(1.0) * plot_w;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"{}\" class=\"axis\" viewBox=\"0 0 {WIDTH} {height:.0}\" width=\"100%\" role=\"img\" aria-label=\"incidents along the run's writes\">",
        escape(id)
    );
    let axis_y = TOP + lanes.len().max(1) as f64 * LANE + 4.0;
    let step = nice_step(end / 8.0);
    let mut tick = 0.0;
    while tick <= end {
        let tx = LEFT + tick / end * plot_w;
        let _ = writeln!(
            out,
            "<line x1=\"{tx:.1}\" y1=\"{TOP}\" x2=\"{tx:.1}\" y2=\"{:.1}\" stroke=\"#e3e7eb\" stroke-width=\"1\"/>",
            axis_y + 4.0
        );
        let _ = writeln!(
            out,
            "<text x=\"{tx:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#5f6b76\" text-anchor=\"middle\">{}</text>",
            axis_y + 17.0,
            axis_count(tick)
        );
        tick += step;
    }
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{axis_y:.1}\" x2=\"{:.1}\" y2=\"{axis_y:.1}\" stroke=\"#9aa5b1\" stroke-width=\"1\"/>",
        LEFT + plot_w
    );
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#5f6b76\" text-anchor=\"end\">write seq (run: 1-{})</text>",
        LEFT - 8.0,
        axis_y + 17.0,
        next_write_seq.saturating_sub(1)
    );
    for (index, lane) in lanes.iter().enumerate() {
        let mid = TOP + index as f64 * LANE + LANE / 2.0;
        let _ = writeln!(
            out,
            "<g class=\"incident-lane\" data-incident=\"{}\"><title>{}</title>",
            lane.id,
            escape(&lane.title)
        );
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"{}\" font-weight=\"700\" text-anchor=\"end\">{}</text>",
            LEFT - 8.0,
            mid + 4.0,
            escape(lane.color),
            escape(&lane.label)
        );
        if let Some((first, last)) = lane.found {
            let _ = writeln!(
                out,
                "<rect class=\"found-span\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"4\" fill=\"#9aa5b1\"/>",
                x(first),
                mid - 2.0,
                (x(last) - x(first)).max(2.0)
            );
            let _ = writeln!(
                out,
                "<line class=\"lost-after\" x1=\"{:.1}\" y1=\"{mid:.1}\" x2=\"{:.1}\" y2=\"{mid:.1}\" stroke=\"{}\" stroke-width=\"3\" stroke-dasharray=\"2 4\"/>",
                x(last),
                LEFT + plot_w,
                escape(lane.class_color)
            );
        }
        if let Some((first, last)) = lane.damaged {
            let _ = writeln!(
                out,
                "<rect class=\"damaged-span\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" fill=\"{}\" stroke=\"{}\" stroke-width=\"1.5\"/>",
                x(first) - 1.5,
                mid - 7.0,
                (x(last) - x(first)).max(0.0) + 3.0,
                escape(lane.class_color),
                escape(lane.color)
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#5f6b76\">{}</text>",
            LEFT + plot_w + 8.0,
            mid + 4.0,
            escape(&lane.when)
        );
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    out
}

/// The contract's order of classes, for ties (unknown classes last).
fn class_rank(class: &str) -> usize {
    crate::verify::FindingClass::ALL
        .iter()
        .position(|c| c.name() == class)
        .unwrap_or(usize::MAX)
}

/// Blocks per cell of the map of a target of `total_blocks`.
pub fn blocks_per_map_cell(total_blocks: u64) -> u64 {
    total_blocks
        .max(1)
        .div_ceil(MAP_COLUMNS * MAP_MAX_ROWS)
        .max(1)
}

/// One bar of a group in a bar chart.
pub struct Bar<'a> {
    pub value: Option<f64>,
    pub color: &'a str,
}

/// Horizontal bars, one group per label (e.g. write and read per report).
pub fn bar_chart(
    id: &str,
    title: &str,
    legend: &[(&str, &str)],
    groups: &[(String, Vec<Bar<'_>>)],
    value_label: fn(f64) -> String,
) -> String {
    const LEFT: f64 = 300.0;
    const RIGHT: f64 = 110.0;
    const TOP: f64 = 30.0;
    const BAR_H: f64 = 12.0;
    const GROUP_GAP: f64 = 10.0;
    let bars_per_group = groups.iter().map(|g| g.1.len()).max().unwrap_or(1).max(1);
    let group_h = bars_per_group as f64 * (BAR_H + 2.0) + GROUP_GAP;
    let height = TOP + groups.len() as f64 * group_h + 6.0;
    let max = groups
        .iter()
        .flat_map(|g| g.1.iter().filter_map(|b| b.value))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let plot_w = WIDTH - LEFT - RIGHT;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"{}\" class=\"bars\" viewBox=\"0 0 {WIDTH} {height:.0}\" width=\"100%\" role=\"img\" aria-label=\"{}\">",
        escape(id),
        escape(title)
    );
    let _ = writeln!(
        out,
        "<text x=\"0\" y=\"18\" font-size=\"14\" font-weight=\"600\" fill=\"#1d232a\">{}</text>",
        escape(title)
    );
    let mut legend_x = LEFT;
    for (name, color) in legend {
        let _ = writeln!(
            out,
            "<rect x=\"{legend_x:.1}\" y=\"8\" width=\"14\" height=\"10\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"17\" font-size=\"12\" fill=\"#1d232a\">{}</text>",
            legend_x + 18.0,
            escape(name)
        );
        legend_x += 30.0 + name.chars().count() as f64 * 7.0;
    }
    for (index, (label, bars)) in groups.iter().enumerate() {
        let y0 = TOP + index as f64 * group_h;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"#1d232a\" text-anchor=\"end\">{}</text>",
            LEFT - 8.0,
            y0 + BAR_H,
            escape(label)
        );
        for (i, bar) in bars.iter().enumerate() {
            let y = y0 + i as f64 * (BAR_H + 2.0);
            let Some(value) = bar.value else {
                let _ = writeln!(
                    out,
                    "<text x=\"{LEFT:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#5f6b76\">not recorded</text>",
                    y + BAR_H - 2.0
                );
                continue;
            };
            let w = (value / max * plot_w).max(1.0);
            let _ = writeln!(
                out,
                "<rect x=\"{LEFT:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{BAR_H}\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#1d232a\">{}</text>",
                bar.color,
                LEFT + w + 6.0,
                y + BAR_H - 2.0,
                escape(&value_label(value))
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_one_two_or_five() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(120e6), 200e6);
    }

    #[test]
    fn time_labels_read_like_durations() {
        assert_eq!(time_label(45.0), "45s");
        assert_eq!(time_label(300.0), "5m");
        assert_eq!(time_label(90.0), "1m30s");
        assert_eq!(time_label(5400.0), "1h30m");
        assert_eq!(time_label(7200.0), "2h");
        assert_eq!(nice_time_step(7.0), 10.0);
        assert_eq!(nice_time_step(400.0), 600.0);
    }

    #[test]
    fn axis_labels_drop_needless_decimals() {
        assert_eq!(axis_rate(400e6), "400 MB/s");
        assert_eq!(axis_rate(1.5e9), "1.5 GB/s");
        assert_eq!(axis_count(120_000.0), "120k");
    }

    #[test]
    fn a_small_target_has_one_cell_per_block() {
        let svg = target_map("m", 100, 4096, &[(17, "lost_write"), (99, "torn")], &[]);
        assert_eq!(svg.matches("<rect").count(), 100);
        assert_eq!(svg.matches("class=\"finding-cell\"").count(), 2);
        assert!(svg.contains("blocks 17-17 (offset 68 KiB): 1 lost_write"));
    }

    #[test]
    fn a_big_target_is_mapped_in_at_most_1536_cells() {
        let blocks = 262_144; // 1 GiB of 4 KiB blocks
        assert_eq!(blocks_per_map_cell(blocks), 171);
        let findings = [
            (0, "zeroed"),
            (1, "zeroed"),
            (2, "corrupt"),
            (blocks - 1, "foreign"),
        ];
        let svg = target_map("m", blocks, 4096, &findings, &[]);
        assert!(svg.matches("<rect").count() <= 1536);
        // The first cell holds two classes: the most frequent colours it,
        // and an outline says there is more.
        assert!(svg.contains(
            "<rect class=\"finding-cell\" data-class=\"zeroed\" x=\"78.0\" y=\"4.0\" width=\"15\" height=\"14\" fill=\"#3b4cc0\" stroke=\"#000\" stroke-width=\"2\">"
        ), "{}", &svg[..600]);
        assert!(svg.contains("data-class=\"foreign\""));
    }

    #[test]
    fn bands_are_shaded_where_they_are_and_never_vanish() {
        let series = [Series {
            name: "write",
            color: "#000",
            dashed: false,
            points: (0..=100).map(|t| (t as f64, Some(1.0))).collect(),
        }];
        let band = |from: f64, to: f64, label: &str| Band {
            from,
            to,
            label: label.to_string(),
            title: format!("stall {label}"),
        };
        let chart = line_chart(
            "c",
            "throughput",
            &series,
            &[band(10.0, 20.0, "1"), band(50.0, 50.001, "2")],
            axis_count,
        );
        // The plot is 1078 wide for 100 s: 10 s are 107.8.
        assert!(
            chart.contains("data-label=\"1\" x=\"185.8\" y=\"30.0\" width=\"107.8\""),
            "{chart}"
        );
        assert!(chart.contains("data-label=\"2\" x=\"617.0\" y=\"30.0\" width=\"3.0\""));
        assert!(chart.contains("<title>stall 1</title>"));
        // Drawn before the grid and the line, so they stay on top.
        assert!(chart.find("class=\"band\"").unwrap() < chart.find("<polyline").unwrap());
        assert!(chart.find("class=\"band\"").unwrap() < chart.find("stroke=\"#e3e7eb\"").unwrap());
    }

    #[test]
    fn a_line_breaks_where_values_are_missing() {
        let chart = line_chart(
            "c",
            "latency",
            &[Series {
                name: "write p99",
                color: "#000",
                dashed: false,
                points: vec![
                    (0.5, Some(1.0)),
                    (1.5, Some(2.0)),
                    (2.5, None),
                    (3.5, Some(3.0)),
                ],
            }],
            &[],
            axis_count,
        );
        assert_eq!(chart.matches("<polyline").count(), 1);
        assert_eq!(chart.matches("<circle").count(), 1);
    }
}
