//! Why an upload run failed.

use std::path::{Path, PathBuf};

use crate::error::{exit, ConnectFailure};

/// Why `send` failed. The server's own words (`code`, `message`) are kept as it sent
/// them.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A local path cannot be read.
    #[error("{}: {source}", .path.display())]
    Access {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no file name", .0.display())]
    NoFileName(PathBuf),
    #[error("{}: the name is not UTF-8", .0.display())]
    NameNotUtf8(PathBuf),
    /// A name inside this directory is not UTF-8.
    #[error("{}: a name is not UTF-8", .0.display())]
    EntryNotUtf8(PathBuf),
    #[error("{}: not a file or directory", .0.display())]
    NotAFile(PathBuf),
    #[error("{}: the file shrank while being sent", .0.display())]
    Shrank(PathBuf),
    /// Reading a file being sent failed.
    #[error(transparent)]
    Read(#[from] std::io::Error),
    /// Connecting failed (exit 3, 4 or 5).
    #[error(transparent)]
    Connect(#[from] ConnectFailure),
    /// The client or a channel failed outside any one message.
    #[error(transparent)]
    Transport(udpack_io::Error),
    /// A message of this file's upload failed.
    #[error("{name}: {source}")]
    Channel {
        name: String,
        source: udpack_io::Error,
    },
    #[error("{name}: the server refused the upload ({code}): {message}")]
    Refused {
        name: String,
        code: String,
        message: String,
    },
    /// The server's check of the whole file failed (exit 6).
    #[error("integrity check failed: {0}")]
    IntegrityRejected(String),
    /// The server stopped the upload: the bytes are not what was announced (exit 6).
    #[error("integrity check failed: {name}: {message}")]
    IntegrityFailed { name: String, message: String },
    /// The server stopped the upload for another reason.
    #[error("{name}: the server failed ({code}): {message}")]
    ServerFailed {
        name: String,
        code: String,
        message: String,
    },
    /// The session was lost and reconnecting is off (`--retry-for 0`).
    #[error("the session was lost: {0}")]
    SessionLost(String),
    /// Reconnecting failed for `--retry-for` (exit 5).
    #[error("gave up reconnecting after {} s: {last}", .after.as_secs())]
    GaveUp {
        after: std::time::Duration,
        last: Box<SendError>,
    },
    /// The file arrived intact but the server could not keep it.
    #[error("{name}: the server could not store the file ({code}): {message}")]
    NotStored {
        name: String,
        code: String,
        message: String,
    },
}

impl SendError {
    pub(super) fn access(path: &Path, source: std::io::Error) -> Self {
        SendError::Access {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn code(&self) -> u8 {
        match self {
            SendError::Connect(c) => c.code(),
            SendError::IntegrityRejected(_) | SendError::IntegrityFailed { .. } => exit::INTEGRITY,
            SendError::GaveUp { .. } | SendError::SessionLost(_) => exit::UNREACHABLE,
            _ => exit::OTHER,
        }
    }

    /// True for a failure to connect that may pass (no answer, network unreachable),
    /// false for a refused token or a wrong key, which will not.
    pub(super) fn is_transient(&self) -> bool {
        matches!(
            self,
            SendError::Connect(ConnectFailure::TimedOut | ConnectFailure::Unreachable(_))
                | SendError::Transport(_)
        )
    }
}

impl From<udpack_io::Error> for SendError {
    /// Connection failures get their own exit codes.
    fn from(e: udpack_io::Error) -> Self {
        match e {
            udpack_io::Error::Connect(c) => SendError::Connect(c.into()),
            other => SendError::Transport(other),
        }
    }
}
