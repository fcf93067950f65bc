//! Errors of udpack.io.

use thiserror::Error;
pub use udpack::{ConnectError, HandshakeError, StreamError};

/// Why a channel or socket operation failed.
#[derive(Debug, Error)]
pub enum Error {
    /// The data could not be encoded as MessagePack.
    #[error("cannot encode the message: {0}")]
    Encode(String),
    /// A received message or its data did not decode (into the asked-for type).
    #[error("cannot decode the message: {0}")]
    Decode(String),
    /// A message is over the size limit.
    #[error("message of {0} bytes is over the size limit")]
    TooLarge(usize),
    /// No reply to `send_with_ack` within the timeout.
    #[error("no reply within the timeout")]
    AckTimeout,
    /// The channel is closed (see [`crate::Channel::closed`] for why).
    #[error("the channel is closed")]
    ChannelClosed,
    /// The client is not connected (and not reconnecting any more).
    #[error("not connected")]
    NotConnected,
    /// The transport refused the operation.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// Binding a socket or another I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// Stream reset / stop codes udpack.io uses when it closes a channel itself.
pub mod codes {
    /// The channel was closed by the application (`Channel::close`).
    pub const CLOSED: u64 = 0;
    /// A message over the size limit arrived; the channel was closed.
    pub const MESSAGE_TOO_LARGE: u64 = 0x1001;
}

/// Why a channel ended.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChannelClosed {
    /// The peer finished its side (the normal end).
    #[error("the peer closed the channel")]
    Finished,
    /// This side closed it.
    #[error("closed locally")]
    Local,
    /// The peer reset the stream with this code.
    #[error("the peer reset the channel (code {0:#x})")]
    Reset(u64),
    /// A message over the size limit arrived.
    #[error("a message of {0} bytes was over the size limit")]
    MessageTooLarge(usize),
    /// The session ended.
    #[error("the session ended: {0}")]
    SessionClosed(String),
}
