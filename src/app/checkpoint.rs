//! `blockstamp checkpoint`: remember the expected state under a name, or
//! list the names.

use crate::cli::CheckpointArgs;
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::manifest::{Access, Manifest, ManifestState};

pub(super) fn checkpoint_command(args: &CheckpointArgs) -> Result<ExitCode> {
    if args.list {
        let manifest = Manifest::open(&args.manifest, Access::Read)?;
        if manifest.header().checkpoints.is_empty() {
            println!("manifest {} has no checkpoints", args.manifest.display());
        }
        for checkpoint in &manifest.header().checkpoints {
            println!(
                "{}\tcreated {}\tblocks written {}\twrite seq {}",
                checkpoint.name,
                checkpoint.created_unix_s,
                checkpoint.blocks_written,
                checkpoint.write_seq
            );
        }
        return Ok(ExitCode::Clean);
    }
    let name = args.name.as_deref().unwrap_or_default();
    let mut manifest = Manifest::open(&args.manifest, Access::Write)?;
    // A writer died holding it: its map may lag writes the journal still
    // holds as pending, and a checkpoint would freeze that lag.
    if manifest.header().state == ManifestState::Writing {
        return Err(Error::usage(format!(
            "manifest {} was being written when its writer stopped; run 'blockstamp write' on it to reconcile it, then take the checkpoint",
            args.manifest.display()
        )));
    }
    manifest.add_checkpoint(name)?;
    println!(
        "checkpoint '{name}' recorded in {}: {} blocks written",
        args.manifest.display(),
        manifest.count_written()
    );
    Ok(ExitCode::Clean)
}
