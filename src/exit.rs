//! The contract's exit codes.

/// Process exit status, as docs/CONTRACT.md fixes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// Every checked block holds exactly what the manifest expects.
    Clean = 0,
    /// At least one block is not what was written.
    Findings = 1,
    /// Bad usage or bad input; nothing was written.
    BadInput = 2,
    /// The run could not be carried out.
    RunFailed = 3,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}
