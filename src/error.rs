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

/// `message` on one line: line breaks and other control characters that a
/// user typed into a value the message quotes are shown escaped (`\n`), so
/// the message stays the one line the contract promises.
pub fn one_line(message: &str) -> String {
    let mut line = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_a_message_are_escaped_onto_one_line() {
        assert_eq!(
            one_line("bad size '1\n2\r\t': unknown unit"),
            "bad size '1\\n2\\r\\t': unknown unit"
        );
        assert_eq!(one_line("target é ok"), "target é ok");
    }
}
