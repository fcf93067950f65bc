//! `udpack`: UDPack over tokio. A reliable, encrypted, multiplexed transport over UDP
//! for long, lossy links.
//!
//! An [`Endpoint`] owns one UDP socket and a driver task; it accepts and opens
//! [`Session`]s (Noise-NK-encrypted associations with a peer), which carry any number
//! of [`Stream`]s (ordered bytes both ways, `AsyncRead` + `AsyncWrite`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use udpack::{ClientConfig, Endpoint, PrivateKey, ServerConfig};
//! use tokio::io::AsyncWriteExt;
//!
//! let key = PrivateKey::generate();
//! let server = Endpoint::server(ServerConfig::new(key.clone()).auth(|t| t == b"secret"))
//!     .bind("127.0.0.1:0")
//!     .await?;
//! let client = Endpoint::client(ClientConfig::new(key.public_key()).token("secret"))
//!     .bind("127.0.0.1:0")
//!     .await?;
//! let session = client.connect(server.local_addr()).await?;
//! let mut stream = session.open_stream().await?;
//! stream.write_all(b"hello").await?;
//! stream.finished().await?;
//! # Ok(()) }
//! ```
//!
//! Logs go through `tracing` under the target `udpack`, with the session id (and the
//! stream id where there is one) as fields.

mod driver;
mod endpoint;
mod error;
mod key_file;
mod session;
mod socket;
mod speed;
mod state;
mod stream;

pub use endpoint::{Endpoint, EndpointBuilder};
pub use error::{ConnectError, HandshakeError, StreamError};
pub use key_file::{KeyFile, KeyFileError};
pub use session::Session;
pub use speed::Speed;
pub use stream::{RecvStream, SendStream, Stream};
pub use udpack_proto::{
    reject, transport_error, ClientConfig, CloseReason, ControllerKind, EndpointStats, KeyError,
    PrivateKey, PublicKey, ServerConfig, SessionStats, TokenId, TransportConfig,
    DEFAULT_MAX_SESSIONS_PER_TOKEN,
};
