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
//!
//! # From the JavaScript version
//!
//! UDPack and udpack.io also exist in JavaScript, and this API follows that version's.
//! This table is the one place that maps its names to the Rust items; the items' own
//! docs only say what they do.
//!
//! | JavaScript | Rust |
//! |---|---|
//! | the `UDPack` object (one UDP socket, many sessions) | [`udpack::Endpoint`] |
//! | its `endpoint` (the bound address) | [`udpack::Endpoint::local_addr`], [`Server::local_addr`], [`Client::local_addr`] |
//! | its `speed` event, once a second | [`udpack::Endpoint::speed`], [`ServerEvent::Speed`], [`ClientEvent::Speed`]; per session [`Socket::speed`] |
//! | the speed figures (KB/s of UDP payload, 1 KB = 1000 bytes) | [`Speed`] (its `Display` is `[send.speed X KB/s] [recv.speed Y KB/s]`) |
//! | `session` | [`udpack::Session`]; in udpack.io, [`Socket`] |
//! | `netSessionIdStr()` | [`udpack::Session::id_str`], [`Socket::id_str`] |
//! | goaway (end the session with a code) | [`udpack::Session::goaway`], [`Socket::close`] |
//! | the `goaway` event and its code | [`udpack::Session::closed`], [`Socket::closed`], [`ServerEvent::Disconnect`], [`ClientEvent::Disconnect`]; the code is [`CloseReason::code`] |
//! | `write(buf, cb)`: `cb` once the bytes are taken | a write on [`udpack::Stream`] (`AsyncWrite`, [`udpack::Stream::write_all_bytes`]) resolves once they are buffered |
//! | `Socket` | [`Socket`] |
//! | `Channel` | [`Channel`] |
//! | `openChannel` | [`Client::open_channel`], [`Socket::open_channel`] |
//! | the callback of a send | the future of [`Channel::send`] |
//! | Socket.IO's `emitWithAck` | [`Channel::send_with_ack`]; the peer answers with [`Message::reply`] |
//! | a channel's `close` event | [`Channel::closed`] |
//! | a socket's `close` event, with the goaway code | [`Socket::closed`] |
//! | server options `{ host, port, prikey, authToken }` | [`ServerOptions`]: `host`, `port`, `private_key`, [`ServerOptions::auth`] |
//! | `authToken(token)` | [`ServerOptions::auth`] |
//! | the server's port 45456 | the default of [`ServerOptions::new`] |
//! | server events | [`ServerEvent`], from [`Server::next_event`] |
//! | client options `{ host, port, pubkey, token }` | [`ClientOptions`]: `server_public_key`, `token` (its `host` and `port` are the local address; the server's goes to [`Client::connect`]) |
//! | client events | [`ClientEvent`], from [`Client::next_event`] |
//! | the `[event, data]` message | [`message`]: the same MessagePack, struct data as maps with field names |
//! | the log4js configuration (one file per category) | [`logging::init`]: `udpack.log`, `udpack.io.log`, `<app>.log` |
//! | the upload example's `file`, `chunk`, `finish`, `done` | `udpack_cli::protocol::js`, spoken by `crates/udpack-cli/examples/upload_*.rs` |
//! | the upload's progress line `[43.20%] [send.speed 11523.4 KB/s]` | `udpack_cli::progress` (the plain lines, when stdout is not a terminal) |

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
    CloseReason, KeyFile, KeyFileError, PrivateKey, PublicKey, Speed, TokenId, TransportConfig,
    DEFAULT_MAX_SESSIONS_PER_TOKEN,
};

/// The README's examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExamples;
