//! A socket: one session with a peer, carrying channels.

use std::net::SocketAddr;

use udpack::{CloseReason, Session, SessionStats, Speed, TokenId};

use crate::channel::{Channel, ChannelLimits};
use crate::error::Error;

/// A socket: one UDPack session with a peer. Cheap to clone.
#[derive(Clone)]
pub struct Socket {
    session: Session,
    limits: ChannelLimits,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id_str())
            .finish()
    }
}

impl Socket {
    pub(crate) fn new(session: Session, limits: ChannelLimits) -> Self {
        Socket { session, limits }
    }

    pub(crate) fn limits(&self) -> &ChannelLimits {
        &self.limits
    }

    /// The session id as 16 hex digits, as the logs show it.
    pub fn id_str(&self) -> String {
        self.session.id_str()
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.session.remote_addr()
    }

    /// Server side: which token the client presented, as an opaque id (never the
    /// token), to count or limit per token; `None` on a client.
    pub fn token_id(&self) -> Option<TokenId> {
        self.session.token_id()
    }

    /// The underlying session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Opens a channel to the peer.
    pub async fn open_channel(&self) -> Result<Channel, Error> {
        let stream = self.session.open_stream().await?;
        Ok(Channel::new(stream, self.clone(), self.limits.clone()))
    }

    /// Ends the socket gracefully: channels finish what they were sending, then the
    /// session closes and the peer sees `code`.
    pub fn close(&self, code: u64, reason: &str) {
        self.session.goaway(code, reason);
    }

    /// Ends the socket now with `code`; unsent data is dropped.
    pub fn disconnect(&self, code: u64, reason: &str) {
        self.session.close(code, reason);
    }

    /// Resolves when the socket ends, with why; when either side's application ended it
    /// ([`Socket::close`], [`Socket::disconnect`]), [`CloseReason::code`] is its code.
    pub async fn closed(&self) -> CloseReason {
        self.session.closed().await
    }

    /// Transport figures of the session.
    pub fn stats(&self) -> SessionStats {
        self.session.stats()
    }

    /// The session's throughput over the last second.
    pub fn speed(&self) -> Speed {
        self.session.speed()
    }
}
