//! What can go wrong in a command, and the exit code each failure gives.

use std::fmt;
use std::process::ExitCode;

use shoal_protocols::control::{ApiError, ErrorCode};

/// The class of a failure; each has its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Exit 1: the control plane is unreachable, a data plane refused the
    /// change or did not answer in time, or something broke inside.
    Runtime,
    /// Exit 2: bad arguments, a bad file, or a change the control plane
    /// refused as invalid.
    InvalidInput,
    /// Exit 3: the resource does not exist.
    NotFound,
    /// Exit 0 without a message: whoever read standard output stopped
    /// reading (`shoalctl get devices | head`).
    OutputClosed,
}

impl Failure {
    /// The process exit code for this failure.
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Self::OutputClosed => 0,
            Self::Runtime => 1,
            Self::InvalidInput => 2,
            Self::NotFound => 3,
        }
    }

    /// The failure class of an error the control plane answered with.
    pub(crate) fn of_api_code(code: ErrorCode) -> Self {
        match code {
            ErrorCode::Invalid => Self::InvalidInput,
            ErrorCode::NotFound => Self::NotFound,
            // Nacked, Timeout, Internal, and any class added later: the
            // request was fine but could not be carried out.
            _ => Self::Runtime,
        }
    }
}

/// A failed command: its class and the message for people (it may span
/// several lines; the first is printed after `shoalctl: `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CliError {
    /// The class, which picks the exit code.
    pub(crate) failure: Failure,
    /// What was wrong and what to do.
    pub(crate) message: String,
}

impl CliError {
    /// A runtime failure (exit 1).
    pub(crate) fn runtime(message: impl Into<String>) -> Self {
        Self {
            failure: Failure::Runtime,
            message: message.into(),
        }
    }

    /// Invalid input (exit 2).
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self {
            failure: Failure::InvalidInput,
            message: message.into(),
        }
    }

    /// The same failure with `context: ` put before its message.
    pub(crate) fn context(self, context: impl fmt::Display) -> Self {
        Self {
            failure: self.failure,
            message: format!("{context}: {}", self.message),
        }
    }

    /// The exit code of this failure.
    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.failure.exit_code())
    }

    /// Prints the message to standard error as `shoalctl: <message>`
    /// (nothing for [`Failure::OutputClosed`]).
    pub(crate) fn report(&self) {
        if self.failure != Failure::OutputClosed {
            eprintln!("shoalctl: {}", self.message);
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ApiError> for CliError {
    fn from(e: ApiError) -> Self {
        Self {
            failure: Failure::of_api_code(e.code),
            message: e.message,
        }
    }
}

/// Writing to standard output failed: a closed pipe ends the command
/// quietly, anything else is a runtime failure.
impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Self {
                failure: Failure::OutputClosed,
                message: String::new(),
            }
        } else {
            Self::runtime(format!("cannot write the output: {e}"))
        }
    }
}

/// The result of a command.
pub(crate) type CliResult<T = ()> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_codes_map_to_exit_codes() {
        let exit = |code| {
            CliError::from(ApiError {
                code,
                message: "m".into(),
            })
            .failure
            .exit_code()
        };
        assert_eq!(exit(ErrorCode::Invalid), 2);
        assert_eq!(exit(ErrorCode::NotFound), 3);
        assert_eq!(exit(ErrorCode::Nacked), 1);
        assert_eq!(exit(ErrorCode::Timeout), 1);
        assert_eq!(exit(ErrorCode::Internal), 1);
    }

    #[test]
    fn local_failures_have_their_codes() {
        assert_eq!(CliError::runtime("x").failure.exit_code(), 1);
        assert_eq!(CliError::invalid("x").failure.exit_code(), 2);
        let closed = CliError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(closed.failure, Failure::OutputClosed);
        assert_eq!(closed.failure.exit_code(), 0);
        let other = CliError::from(std::io::Error::other("disk full"));
        assert_eq!(other.failure.exit_code(), 1);
        assert!(other.message.contains("disk full"));
        let e = CliError::invalid("bad").context("f.toml");
        assert_eq!(e.message, "f.toml: bad");
        assert_eq!(e.failure, Failure::InvalidInput);
    }
}
