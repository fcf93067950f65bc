//! `udpack-proto`: the sans-IO core of UDPack, a reliable, encrypted, multiplexed
//! transport over UDP.
//!
//! Nothing here touches a socket, a clock or a task. An [`Endpoint`] takes datagrams
//! ([`Endpoint::handle`]) and the time, and gives back datagrams to send
//! ([`Endpoint::poll_transmit`]), the next deadline ([`Endpoint::poll_timeout`]) and
//! events ([`Endpoint::poll_event`]). The wire format is specified in
//! `docs/PROTOCOL.md`.

mod coding;
mod config;
mod congestion;
mod datagram;
mod endpoint;
mod frame;
mod handshake;
mod keys;
mod packet;
mod range_set;
mod recovery;
mod session;
mod stream;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config::{
    reject, ClientConfig, ServerConfig, TransportConfig, DEFAULT_MAX_SESSIONS_PER_TOKEN,
};
pub use congestion::ControllerKind;
pub use endpoint::{Endpoint, EndpointConfig, EndpointStats, SessionHandle, TokenId};
pub use keys::{KeyError, PrivateKey, PublicKey};
pub use session::{
    transport_error, CloseReason, Event, HandshakeError, Session, SessionStats, Side, StreamError,
    Transmit,
};
pub use stream::{StreamId, RECV_SEGMENT_MAX, RECV_SEGMENT_MIN};
