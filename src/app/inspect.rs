//! `blockstamp inspect`: one block decoded sector by sector, expected
//! against found.

use super::phases::{open_for_reading, refuse_manifest_on_target};
use crate::buf::AlignedBuf;
use crate::cli::InspectArgs;
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::manifest::{Access, Manifest};
use crate::stamp::{self, SECTOR_BYTES, SectorContent};
use crate::verify::{self, Expectation};

pub(super) fn inspect_command(args: &InspectArgs) -> Result<ExitCode> {
    let manifest = Manifest::open(&args.target.manifest, Access::Read)?;
    let expected = manifest.expected(args.at.as_deref())?;
    if args.block >= manifest.block_count() {
        return Err(Error::usage(format!(
            "bad --block {}: the target has {} blocks (0 to {})",
            args.block,
            manifest.block_count(),
            manifest.block_count().saturating_sub(1)
        )));
    }
    refuse_manifest_on_target(&args.target)?;
    let target = open_for_reading(&args.target.target, &manifest, &Default::default())?;
    let format = manifest.format();
    let offset = args.block * format.block_size as u64;
    let mut buf = AlignedBuf::new(format.block_size as usize);
    let generation = expected.generation(args.block);
    println!(
        "block {} at offset {offset}: expected generation {generation}{}",
        args.block,
        if generation == 0 {
            " (never written by this run)"
        } else {
            ""
        }
    );
    let target_bytes = target.info().size_bytes;
    if offset + format.block_size as u64 > target_bytes {
        // A truncated copy of the target (open_for_reading let it through).
        println!(
            "verdict: unreadable: beyond the end of the target (target has {target_bytes} bytes, the manifest {})",
            manifest.header().target.size_bytes
        );
        return Ok(ExitCode::Findings);
    }
    if let Err(e) = target.read_at(&mut buf, offset) {
        println!("read failed: {e}");
        return Ok(ExitCode::Findings);
    }
    for (index, sector) in buf.chunks_exact(SECTOR_BYTES).enumerate() {
        let description = match stamp::decode_sector(sector) {
            SectorContent::Zero => "zero".to_string(),
            SectorContent::Other => "not a valid stamp (damaged or foreign)".to_string(),
            SectorContent::Stamp(h) => format!(
                "stamp run {:016x}{} block {} sector {} generation {} write {} at {}",
                h.run_id,
                if h.run_id == format.run_id {
                    " (this run)"
                } else {
                    " (another run)"
                },
                h.block,
                h.sector_index,
                h.generation,
                h.write_seq,
                h.write_time_s
            ),
        };
        println!("  sector {index:>4}: {description}");
    }
    match verify::classify(
        &format,
        Expectation {
            block: args.block,
            generation,
        },
        &buf,
    ) {
        None => {
            println!("verdict: ok");
            Ok(ExitCode::Clean)
        }
        Some(classified) => {
            println!(
                "verdict: {}: {}",
                classified.class.name(),
                classified.detail
            );
            if let Some(corruption) = &classified.corruption {
                for row in &corruption.diff_rows {
                    println!("  {:08x}  expected {}", row.offset, row.expected);
                    println!("  {:08x}  found    {}", row.offset, row.found);
                }
            }
            Ok(ExitCode::Findings)
        }
    }
}
