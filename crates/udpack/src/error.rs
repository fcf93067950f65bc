//! Errors of the runtime API.

use std::io;

use thiserror::Error;
pub use udpack_proto::StreamError;

/// Why `connect` failed. Each outcome the protocol can tell apart is its own variant.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// The server refused the session (authenticated by its key): usually the token.
    #[error("rejected by the server (code {code}): {reason}")]
    Rejected { code: u64, reason: String },
    /// The server could not decrypt the hello: the pinned public key is probably not
    /// the server's.
    #[error("the server could not decrypt the hello: server key mismatch")]
    KeyMismatch,
    /// The server speaks another protocol version.
    #[error("the server does not speak protocol version {0:#x}")]
    UnsupportedVersion(u32),
    /// No answer within the handshake timeout.
    #[error("no answer from the server in time")]
    TimedOut,
    /// The endpoint has no client configuration.
    #[error("the endpoint has no client configuration")]
    NoClientConfig,
    /// The endpoint is closing or its socket failed.
    #[error("the endpoint is closed")]
    EndpointClosed,
    /// The address could not be resolved, or another I/O failure.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl From<udpack_proto::ConnectError> for ConnectError {
    fn from(e: udpack_proto::ConnectError) -> Self {
        match e {
            udpack_proto::ConnectError::Rejected { code, reason } => {
                ConnectError::Rejected { code, reason }
            }
            udpack_proto::ConnectError::KeyMismatch => ConnectError::KeyMismatch,
            udpack_proto::ConnectError::UnsupportedVersion(v) => {
                ConnectError::UnsupportedVersion(v)
            }
            udpack_proto::ConnectError::TimedOut => ConnectError::TimedOut,
        }
    }
}

/// Maps a stream error to the `io::Error` that `AsyncRead` / `AsyncWrite` return; the
/// original error stays inside (`io::Error::get_ref`).
pub(crate) fn stream_io_error(e: StreamError) -> io::Error {
    let kind = match e {
        StreamError::Reset(_) => io::ErrorKind::ConnectionReset,
        StreamError::Stopped(_) | StreamError::Finished => io::ErrorKind::BrokenPipe,
        StreamError::SessionClosed => io::ErrorKind::ConnectionAborted,
        StreamError::UnknownStream => io::ErrorKind::NotConnected,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}
