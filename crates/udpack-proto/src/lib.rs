//! `udpack-proto`: the sans-IO core of UDPack, a reliable, encrypted, multiplexed
//! transport over UDP.
//!
//! Nothing here touches a socket, a clock or a task. An [`Endpoint`] takes datagrams
//! ([`Endpoint::handle`]) and the time, and gives back datagrams to send
//! ([`Endpoint::poll_transmit`]), the next deadline ([`Endpoint::poll_timeout`]) and
//! events ([`Endpoint::poll_event`]). The wire format is specified in
//! `docs/PROTOCOL.md`.

pub mod coding;
pub mod config;
pub mod congestion;
pub mod endpoint;
pub mod frame;
pub mod handshake;
pub mod keys;
pub mod packet;
pub mod range_set;
pub mod recovery;
pub mod session;
pub mod stream;

pub use config::{reject, ClientConfig, ServerConfig, TransportConfig};
pub use congestion::ControllerKind;
pub use endpoint::{Endpoint, EndpointConfig, EndpointStats, SessionHandle};
pub use keys::{KeyError, PrivateKey, PublicKey};
pub use session::{
    transport_error, CloseReason, Event, HandshakeError, Session, SessionStats, Side, StreamError,
    Transmit,
};
pub use stream::StreamId;
