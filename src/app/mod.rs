//! The commands: one file per command, glue between the resolved
//! configuration and the modules that do the work; the phases they share
//! (prepare, write, verify, report) live in `phases`.

mod checkpoint;
mod disruptions;
mod inspect;
mod on_finding;
mod phases;
mod report;
mod run;
mod selftest;
mod soak;
mod verify;
mod write;

pub use selftest::SelftestConfig;

use crate::cli::Command;
use crate::error::Result;
use crate::exit::ExitCode;

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Write(args) => write::write_command(&args),
        Command::Verify(args) => verify::verify_command(&args),
        Command::Run(args) => run::run_command(&args),
        Command::Checkpoint(args) => checkpoint::checkpoint_command(&args),
        Command::Inspect(args) => inspect::inspect_command(&args),
        Command::Soak(args) => soak::soak_command(&args),
        Command::Report(args) => report::run(&args),
        Command::Selftest(args) => selftest::run(&args),
    }
}
