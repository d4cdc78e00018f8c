//! Incidents in words, for the human summary, the HTML page and `inspect`:
//! what each incident is, where it is, when its writes were issued, and
//! how much of its bursts survived. The grouping itself is
//! `verify::incidents`.

use crate::manifest::WriteSession;
use crate::units::{format_size, format_unix_time};
use crate::verify::incidents::{Incident, RegionSpan, WriteSpan};

/// `lost_write 250` or `misdirected 3 + lost_write 3`.
pub fn classes_text(incident: &Incident) -> String {
    incident
        .classes_by_size()
        .iter()
        .map(|(class, n)| format!("{class} {n}"))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// `blocks 1024-2047` for one range, else `250 blocks in 1024-2047 (37 runs)`.
pub fn blocks_text(incident: &Incident) -> String {
    let range = |first: u64, last: u64| {
        if first == last {
            format!("{first}")
        } else {
            format!("{first}-{last}")
        }
    };
    if incident.block_ranges.len() == 1 && !incident.block_ranges_truncated {
        let [first, last] = incident.block_ranges[0];
        return if first == last {
            format!("block {first}")
        } else {
            format!("blocks {}", range(first, last))
        };
    }
    format!(
        "{} blocks in {} ({}{} runs)",
        incident.blocks,
        range(incident.first_block, incident.last_block),
        if incident.block_ranges_truncated {
            "over "
        } else {
            ""
        },
        incident.block_ranges.len()
    )
}

/// Where on the target: the byte range, and the extents of each size.
pub fn regions_text(incident: &Incident, block_size: u32) -> String {
    let start = incident.first_block * block_size as u64;
    let end = (incident.last_block + 1) * block_size as u64;
    let extents: Vec<String> = incident.regions.iter().map(region_text).collect();
    format!(
        "{} from offset {start} ({}); {}",
        format_size(end - start),
        format_size(start),
        extents.join(", ")
    )
}

/// `1 MiB extents 4-7` or `16 MiB extent 0`.
fn region_text(region: &RegionSpan) -> String {
    let size = format_size(region.region_bytes);
    let list: Vec<String> = region
        .extents
        .iter()
        .take(4)
        .map(|[a, b]| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    let more = if region.extents.len() > 4 {
        ", …"
    } else {
        ""
    };
    if region.count == 1 {
        format!("{size} extent {}", list.join(""))
    } else {
        format!(
            "{} {size} extents ({}{more})",
            region.count,
            list.join(", ")
        )
    }
}

/// `writes 120-4200, 2023-11-14 22:13:20 UTC to 22:13:36`.
pub fn span_text(span: &WriteSpan) -> String {
    let seqs = if span.first_write_seq == span.last_write_seq {
        format!("write {}", span.first_write_seq)
    } else {
        format!("writes {}-{}", span.first_write_seq, span.last_write_seq)
    };
    let first = format_unix_time(span.first_time_s);
    if span.first_time_s == span.last_time_s {
        return format!("{seqs}, {first}");
    }
    let last = format_unix_time(span.last_time_s);
    // The same day: only the time of day again.
    let last = if first[..10] == last[..10] {
        last[11..19].to_string()
    } else {
        last
    };
    format!("{seqs}, {first} to {last}")
}

/// `bursts of 4 writes, random scatter, queue depth 32, 1-block writes`.
pub fn session_text(session: &WriteSession) -> String {
    let io = if session.io_blocks[0] == session.io_blocks[1] {
        format!("{}-block writes", session.io_blocks[0])
    } else {
        format!(
            "{}-{}-block writes",
            session.io_blocks[0], session.io_blocks[1]
        )
    };
    let overwrite = if session.overwrite > 0.0 {
        format!(", {:.0}% overwrites", session.overwrite * 100.0)
    } else {
        String::new()
    };
    if session.workload == "sequential" {
        return format!(
            "sequential writes, queue depth {}, {io}{overwrite} (from write {})",
            session.queue_depth, session.first_write_seq
        );
    }
    format!(
        "bursts of {} writes, {} scatter, queue depth {}, {io}{overwrite} (from write {})",
        session.burst, session.scatter, session.queue_depth, session.first_write_seq
    )
}

/// The lines that describe an incident after its headline.
pub fn detail_lines(incident: &Incident, block_size: u32) -> Vec<String> {
    let mut lines = vec![regions_text(incident, block_size)];
    if let Some(span) = &incident.damaged_writes {
        let mut line = format!("damaged {}", span_text(span));
        if let (Some(in_span), Some(surviving)) =
            (incident.writes_in_span, incident.surviving_writes)
        {
            let others = in_span.saturating_sub(span.writes);
            if others > 0 {
                line.push_str(&format!(
                    "; of the other {others} write(s) numbered in that span, {surviving} survived"
                ));
            }
        }
        lines.push(line);
    }
    if let Some(span) = &incident.found_writes {
        lines.push(format!(
            "the lost writes' blocks hold older {}: the writes that did not persist were issued after write {}",
            span_text(span),
            span.last_write_seq
        ));
    }
    if incident.damaged_writes.is_none() && incident.found_writes.is_none() {
        lines.push("no stamp names a write of these blocks: only their place links them".into());
    }
    for session in &incident.bursts {
        lines.push(session_text(session));
    }
    if !incident.linked_by.is_empty() {
        lines.push(format!("linked by {}", incident.linked_by.join(", ")));
    }
    lines
}

/// One headline: `#1 lost_write 250: blocks 1024-2047`.
pub fn headline(incident: &Incident) -> String {
    format!(
        "#{} {}: {}",
        incident.id,
        classes_text(incident),
        blocks_text(incident)
    )
}
