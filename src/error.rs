//! Errors a user can cause or meet, each mapped to the contract's exit code.

use crate::exit::ExitCode;

/// An error that ends a command. The message is one line, for a person: what
/// is wrong, with the value that was wrong, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad usage or bad input (exit 2): nothing was written.
    #[error("{0}")]
    Usage(String),
    /// The run could not be carried out (exit 3).
    #[error("{0}")]
    Run(String),
}

impl Error {
    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage(message.into())
    }

    pub fn run(message: impl Into<String>) -> Self {
        Error::Run(message.into())
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::BadInput,
            Error::Run(_) => ExitCode::RunFailed,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
