//! Failures of the command and their exit codes. Each command's module has its own
//! error enum; [`CliError`] gathers them, so that `main` prints one line and exits with
//! the code the contract gives the failure.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::bench::BenchError;
use crate::demo::DemoError;
use crate::keygen::KeygenError;
use crate::send::SendError;
use crate::serve::ServeError;

/// The exit codes of the command.
pub mod exit {
    /// Anything not listed below.
    pub const OTHER: u8 = 1;
    /// Bad arguments or configuration.
    pub const USAGE: u8 = 2;
    /// The server refused the token.
    pub const TOKEN_REJECTED: u8 = 3;
    /// The server could not decrypt the hello, or the handshake failed.
    pub const HANDSHAKE: u8 = 4;
    /// The server did not answer in time.
    pub const UNREACHABLE: u8 = 5;
    /// An upload arrived damaged.
    pub const INTEGRITY: u8 = 6;
}

/// Why reading or writing a key file failed. Boxed: the key-file error type belongs to
/// the transport crate, and the command only shows it.
pub type KeyFileError = Box<dyn std::error::Error + Send + Sync>;

/// A failure of one command; its `Display` is the line `main` prints.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Keygen(#[from] KeygenError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error(transparent)]
    Demo(#[from] DemoError),
    #[error(transparent)]
    Bench(#[from] BenchError),
}

impl CliError {
    /// The exit code the contract gives this failure.
    pub fn code(&self) -> u8 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Keygen(_) => exit::OTHER,
            CliError::Serve(e) => e.code(),
            CliError::Send(e) => e.code(),
            CliError::Demo(e) => e.code(),
            CliError::Bench(e) => e.code(),
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

/// Bad arguments or configuration (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("{}: {source}", .path.display())]
    TokensFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    KeyFile {
        path: PathBuf,
        #[source]
        source: KeyFileError,
    },
    #[error("no token: pass --token or set UDPACK_TOKEN")]
    NoToken,
    /// A client presents one token; several are for a server.
    #[error("a client presents one token: pass --token once")]
    ManyTokens,
    #[error("bench needs --listen ADDR --key PRIKEY or --connect ADDR --pubkey PUBKEY")]
    BenchRole,
    #[error("--timeout must be a positive number of seconds")]
    BadTimeout,
    #[error("--retry-for must be a number of seconds, 0 or more")]
    BadRetryFor,
    #[error("--rate {0}: expected bits per second such as 800k, 50M or 1.5G")]
    BadRate(String),
    #[error("--parallel must be at least 1")]
    Parallel,
    #[error("cannot write the JSON summary: {0}")]
    Json(String),
    #[error("log directory {}: {source}", .path.display())]
    LogDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why connecting to the server failed, worded for the command line.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    /// Exit 3.
    #[error("token rejected by the server: {reason} (code {code})")]
    TokenRejected { code: u64, reason: String },
    /// Exit 4.
    #[error("the server could not decrypt the handshake: wrong server public key?")]
    KeyMismatch,
    /// Exit 4.
    #[error("handshake failed: the server does not speak version {0:#x}")]
    UnsupportedVersion(u32),
    /// Exit 5.
    #[error("the server did not answer in time")]
    TimedOut,
    /// Exit 5.
    #[error("cannot reach the server: {0}")]
    Unreachable(#[source] std::sync::Arc<std::io::Error>),
    /// Exit 1.
    #[error(transparent)]
    Other(udpack_io::ConnectError),
}

impl ConnectFailure {
    pub fn code(&self) -> u8 {
        match self {
            ConnectFailure::TokenRejected { .. } => exit::TOKEN_REJECTED,
            ConnectFailure::KeyMismatch | ConnectFailure::UnsupportedVersion(_) => exit::HANDSHAKE,
            ConnectFailure::TimedOut | ConnectFailure::Unreachable(_) => exit::UNREACHABLE,
            ConnectFailure::Other(_) => exit::OTHER,
        }
    }
}

impl From<udpack_io::ConnectError> for ConnectFailure {
    fn from(e: udpack_io::ConnectError) -> Self {
        use udpack_io::{ConnectError as C, HandshakeError as H};
        match e {
            C::Handshake(H::Rejected { code, reason }) => {
                ConnectFailure::TokenRejected { code, reason }
            }
            C::Handshake(H::KeyMismatch) => ConnectFailure::KeyMismatch,
            C::Handshake(H::UnsupportedVersion(v)) => ConnectFailure::UnsupportedVersion(v),
            C::Handshake(H::TimedOut) => ConnectFailure::TimedOut,
            C::Io(e) => ConnectFailure::Unreachable(e),
            other => ConnectFailure::Other(other),
        }
    }
}
