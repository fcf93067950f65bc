//! Failures of the command and their exit codes.

use std::process::ExitCode;

/// A failure, with the exit code the contract gives it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or configuration (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The server refused the token (exit 3).
    #[error("token rejected by the server: {0}")]
    TokenRejected(String),
    /// The server could not decrypt the hello, or the handshake failed (exit 4).
    #[error("{0}")]
    Handshake(String),
    /// The server did not answer in time (exit 5).
    #[error("{0}")]
    Unreachable(String),
    /// An upload arrived damaged (exit 6).
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// Anything else (exit 1).
    #[error("{0}")]
    Other(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Other(_) => 1,
            CliError::Usage(_) => 2,
            CliError::TokenRejected(_) => 3,
            CliError::Handshake(_) => 4,
            CliError::Unreachable(_) => 5,
            CliError::Integrity(_) => 6,
        })
    }

    pub fn other(e: impl std::fmt::Display) -> Self {
        CliError::Other(e.to_string())
    }
}

impl From<udpack_io::ConnectError> for CliError {
    fn from(e: udpack_io::ConnectError) -> Self {
        use udpack_io::{ConnectError as C, HandshakeError as H};
        match e {
            C::Handshake(H::Rejected { code, reason }) => {
                CliError::TokenRejected(format!("{reason} (code {code})"))
            }
            C::Handshake(H::KeyMismatch) => CliError::Handshake(
                "the server could not decrypt the handshake: wrong server public key?".into(),
            ),
            C::Handshake(H::UnsupportedVersion(v)) => CliError::Handshake(format!(
                "handshake failed: the server does not speak version {v:#x}"
            )),
            C::Handshake(H::TimedOut) => {
                CliError::Unreachable("the server did not answer in time".into())
            }
            C::Io(e) => CliError::Unreachable(format!("cannot reach the server: {e}")),
            other => CliError::Other(other.to_string()),
        }
    }
}

impl From<udpack_io::Error> for CliError {
    fn from(e: udpack_io::Error) -> Self {
        match e {
            udpack_io::Error::Connect(c) => c.into(),
            other => CliError::Other(other.to_string()),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Other(e.to_string())
    }
}
