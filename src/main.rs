//! The `blockstamp` binary: parse, run, map the result to an exit code.

use clap::Parser;

use blockstamp::cli::Cli;
use blockstamp::exit::ExitCode;

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) || error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            {
                let _ = error.print();
                return if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::BadInput.into()
                } else {
                    ExitCode::Clean.into()
                };
            }
            // One line: clap's first line, without its usage block.
            let rendered = error.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or("bad usage")
                .trim_start_matches("error: ");
            eprintln!("blockstamp: {first} (see 'blockstamp --help')");
            return ExitCode::BadInput.into();
        }
    };
    match blockstamp::app::run(cli.command) {
        Ok(code) => code.into(),
        Err(error) => {
            eprintln!("blockstamp: {error}");
            error.exit_code().into()
        }
    }
}
