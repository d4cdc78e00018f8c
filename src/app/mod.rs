//! The commands: one file per command, glue between the resolved
//! configuration and the modules that do the work; the phases they share
//! (prepare, write, verify, report) live in `phases`.

mod checkpoint;
mod disruptions;
mod inspect;
mod multi;
mod on_finding;
mod phases;
mod report;
mod run;
mod selftest;
mod soak;
mod verify;
mod write;

pub use multi::{per_target_path, target_name};
pub use selftest::SelftestConfig;

use crate::cli::Command;
use crate::error::Result;
use crate::exit::ExitCode;
use multi::Targets;

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Write(args) => match multi::resolve(&args.targets)? {
            Targets::One(target) => write::write_command(&args, &target),
            Targets::Many(members) => multi::write_command(&args, members),
        },
        Command::Verify(args) => match multi::resolve(&args.targets)? {
            Targets::One(target) => verify::verify_command(&args, &target),
            Targets::Many(members) => multi::verify_command(&args, members),
        },
        Command::Run(args) => match multi::resolve(&args.targets)? {
            Targets::One(target) => run::run_command(&args, &target),
            Targets::Many(members) => multi::run_command(&args, members),
        },
        Command::Checkpoint(args) => checkpoint::checkpoint_command(&args),
        Command::Inspect(args) => inspect::inspect_command(&args),
        Command::Soak(args) => match multi::resolve(&args.targets)? {
            Targets::One(target) => soak::soak_command(&args, &target),
            Targets::Many(members) => multi::soak_command(&args, members),
        },
        Command::Report(args) => report::run(&args),
        Command::Selftest(args) => selftest::run(&args),
    }
}
