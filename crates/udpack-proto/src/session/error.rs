//! What can go wrong in a session: the transport error codes, why a connection attempt
//! failed, why a session ended, and why a stream call did not happen.

use thiserror::Error;

/// Transport error codes carried by CLOSE frames (application codes use APP_CLOSE).
pub mod transport_error {
    /// Closed without error.
    pub const NO_ERROR: u64 = 0x0;
    /// An internal error.
    pub const INTERNAL: u64 = 0x1;
    /// The peer sent more than the credit it was given.
    pub const FLOW_CONTROL: u64 = 0x3;
    /// The peer opened more streams than allowed.
    pub const STREAM_LIMIT: u64 = 0x4;
    /// A stream's final size changed or was exceeded.
    pub const FINAL_SIZE: u64 = 0x6;
    /// A frame could not be decoded.
    pub const FRAME_ENCODING: u64 = 0x7;
    /// The peer broke a protocol rule.
    pub const PROTOCOL_VIOLATION: u64 = 0xa;
    /// The peer started a key update before it could know the previous one was
    /// received (RFC 9001 §6.2).
    pub const KEY_UPDATE_ERROR: u64 = 0xe;
    /// A key was used up: too many packets sealed under one key without a confirmed
    /// update, or too many packets failed authentication (RFC 9001 §6.6).
    pub const AEAD_LIMIT_REACHED: u64 = 0xf;
}

/// A protocol rule the peer broke: the session closes with this code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TransportError {
    /// One of [`transport_error`].
    pub code: u64,
    pub reason: &'static str,
}

impl TransportError {
    pub const fn flow_control(reason: &'static str) -> Self {
        TransportError {
            code: transport_error::FLOW_CONTROL,
            reason,
        }
    }

    pub const fn final_size(reason: &'static str) -> Self {
        TransportError {
            code: transport_error::FINAL_SIZE,
            reason,
        }
    }

    pub const fn stream_limit(reason: &'static str) -> Self {
        TransportError {
            code: transport_error::STREAM_LIMIT,
            reason,
        }
    }

    pub const fn protocol_violation(reason: &'static str) -> Self {
        TransportError {
            code: transport_error::PROTOCOL_VIOLATION,
            reason,
        }
    }
}

/// Why the handshake failed. The runtime's connect error wraps this one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    /// The server refused us (authenticated by its key): usually the token.
    #[error("rejected by the server (code {code}): {reason}")]
    Rejected { code: u64, reason: String },
    /// The server could not decrypt our hello: the pinned public key is probably not
    /// the server's.
    #[error("the server could not decrypt the hello: server key mismatch")]
    KeyMismatch,
    /// The server does not speak our protocol version.
    #[error("the server does not speak protocol version {0:#x}")]
    UnsupportedVersion(u32),
    /// No answer within the handshake timeout.
    #[error("no answer from the server in time")]
    TimedOut,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CloseReason {
    /// This side's application closed the session with `code`, or a GOAWAY this side
    /// sent first completed (with the code of that GOAWAY).
    #[error("closed locally (code {code}): {reason}")]
    Local { code: u64, reason: String },
    /// The peer's application closed the session with `code`, or a GOAWAY the peer
    /// sent first completed (with the code of that GOAWAY).
    #[error("closed by the peer (code {code}): {reason}")]
    Peer { code: u64, reason: String },
    /// A transport error ended the session; `by_peer` says who detected it.
    #[error("transport error {code:#x} ({}): {reason}", if *by_peer { "reported by the peer" } else { "detected locally" })]
    Transport {
        code: u64,
        reason: String,
        by_peer: bool,
    },
    /// Nothing was heard from the peer for the idle timeout.
    #[error("idle timeout")]
    TimedOut,
    /// The handshake did not complete.
    #[error("connect failed: {0}")]
    ConnectFailed(HandshakeError),
}

impl CloseReason {
    /// The application code, when an application closed the session.
    pub fn code(&self) -> Option<u64> {
        match self {
            CloseReason::Local { code, .. } | CloseReason::Peer { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Why a stream operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StreamError {
    /// Nothing to read, or no room to write, right now; wait for an event.
    #[error("would block")]
    Blocked,
    /// No such stream (never opened, or already done).
    #[error("unknown stream")]
    UnknownStream,
    /// Writing after `finish` or `reset`.
    #[error("stream already finished")]
    Finished,
    /// The peer reset the stream with this code.
    #[error("stream reset by the peer (code {0})")]
    Reset(u64),
    /// The peer does not want more data (STOP_SENDING with this code).
    #[error("peer stopped the stream (code {0})")]
    Stopped(u64),
    /// The peer's stream limit is reached; wait for `Event::StreamsAvailable`.
    #[error("stream limit reached")]
    LimitReached,
    /// A GOAWAY was sent or received: no new streams.
    #[error("session is going away")]
    GoingAway,
    /// The session is closed.
    #[error("session closed")]
    SessionClosed,
}
