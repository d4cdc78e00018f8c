//! The `blockstamp` binary: parse, run, map the result to an exit code.

use clap::Parser;

use blockstamp::cli::Cli;
use blockstamp::exit::ExitCode;

fn main() -> std::process::ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes
    // away (`blockstamp … | head`) instead of failing to print.
    // SAFETY: restoring the default disposition of SIGPIPE before any other
    // thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
            let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut message = lines
                .next()
                .unwrap_or("bad usage")
                .trim_start_matches("error: ")
                .to_string();
            // "the following required arguments were not provided:" is
            // followed by the arguments, one per line: keep them on one.
            if message.ends_with(':') {
                let items: Vec<&str> = lines.take_while(|l| !l.starts_with("Usage:")).collect();
                message = format!("{} {}", message, items.join(", "));
            }
            eprintln!("blockstamp: {message} (see 'blockstamp --help')");
            return ExitCode::BadInput.into();
        }
    };
    match blockstamp::app::run(cli.command) {
        Ok(code) => code.into(),
        Err(error) => {
            eprintln!(
                "blockstamp: {}",
                blockstamp::error::one_line(&error.to_string())
            );
            error.exit_code().into()
        }
    }
}
