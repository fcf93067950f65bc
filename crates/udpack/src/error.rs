//! Errors of the runtime API.

use std::io;
use std::sync::Arc;

use thiserror::Error;
pub use udpack_proto::{HandshakeError, StreamError};

/// Why `connect` failed: the handshake's own outcomes ([`HandshakeError`]: rejected,
/// key mismatch, version, timeout), or what only the runtime can tell.
#[derive(Debug, Clone, Error)]
pub enum ConnectError {
    /// The handshake failed; each outcome the protocol can tell apart is its own variant.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The endpoint has no client configuration.
    #[error("the endpoint has no client configuration")]
    NoClientConfig,
    /// The endpoint is closing or its socket failed.
    #[error("the endpoint is closed")]
    EndpointClosed,
    /// The address could not be resolved, or another I/O failure.
    #[error("i/o error: {0}")]
    Io(Arc<io::Error>),
}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        ConnectError::Io(Arc::new(e))
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
