//! `udpack-io`: real-time two-way events over UDPack, in the manner of Socket.IO.
//!
//! A [`Server`] accepts [`Socket`]s (sessions); either side opens [`Channel`]s
//! (streams) and sends `[event, data]` messages on them, MessagePack-encoded, with
//! typed data through serde. `send` resolves when the message is taken, so a sender
//! that awaits it cannot outrun the link; `send_with_ack` waits for the peer's reply.
//! Messages are received with a loop ([`Channel::recv`]) or handlers
//! ([`Channel::on`], [`Channel::on_data`]). A [`Client`] reconnects by itself when its
//! socket goes away.
//!
//! The framing of messages on a channel is specified in `docs/PROTOCOL.md` and in
//! [`message`].

pub mod channel;
pub mod client;
pub mod error;
pub mod logging;
pub mod message;
pub mod server;
pub mod socket;

pub use channel::Channel;
pub use client::{Client, ClientEvent, ClientOptions, Reconnect};
pub use error::{codes, ChannelClosed, ConnectError, Error, HandshakeError};
pub use message::{Message, DEFAULT_MAX_MESSAGE_SIZE};
pub use serde_bytes;
pub use server::{Server, ServerEvent, ServerOptions};
pub use socket::Socket;
pub use udpack::{
    CloseReason, KeyFile, KeyFileError, PrivateKey, PublicKey, Speed, TransportConfig,
};

/// The README's examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExamples;
