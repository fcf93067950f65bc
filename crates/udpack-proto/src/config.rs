//! Configuration: transport limits shared by both roles, and the server's and client's
//! own settings. Builders with defaults that suit a long, lossy link.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::congestion::ControllerKind;
use crate::keys::{PrivateKey, PublicKey};

/// Limits and timers of a session, the same for both roles.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Largest datagram (UDP payload) sent or accepted: the ceiling of path MTU
    /// discovery, announced to the peer. Default 65,507, the most UDP carries.
    pub max_datagram_size: u16,
    /// The datagram size a session starts with, and keeps if discovery is off or finds
    /// nothing larger. Default 1452: a 1500-byte Ethernet frame carries it over IPv6.
    pub initial_datagram_size: u16,
    /// Path MTU discovery (PROTOCOL.md §7.5): probe for larger datagrams than the
    /// initial size, up to [`Self::max_datagram_size`], and fall back to 1200 bytes
    /// when the path stops carrying the size in use. The runtime turns it off where
    /// the socket cannot forbid fragmentation.
    pub mtu_discovery: bool,
    /// Receive window per stream at start; it grows toward [`Self::max_stream_window`].
    pub initial_stream_window: u64,
    /// Largest receive window per stream: bounds memory per stream.
    pub max_stream_window: u64,
    /// Receive window per session at start.
    pub initial_session_window: u64,
    /// Largest receive window per session: bounds receive memory per session.
    pub max_session_window: u64,
    /// Most unacknowledged bytes a session buffers for sending: bounds send memory.
    pub send_buffer: u64,
    /// Streams the peer may have open at once.
    pub max_concurrent_streams: u64,
    /// The session ends after this long without hearing from the peer.
    pub idle_timeout: Duration,
    /// Sends a PING after this long without sending, so idle sessions stay up and NAT
    /// bindings stay open. `None` turns it off.
    pub keepalive: Option<Duration>,
    /// Longest we delay an ACK.
    pub max_ack_delay: Duration,
    /// Ack-eliciting packets received before an ACK is sent at once.
    pub ack_eliciting_threshold: u64,
    /// RTT assumed before the first sample.
    pub initial_rtt: Duration,
    /// Congestion controller.
    pub congestion: ControllerKind,
    /// A ceiling on the sending rate in bytes per second, below what the congestion
    /// controller would allow, for senders that share their link (`None`: no ceiling).
    /// Local: the peer is not told.
    pub max_send_rate: Option<u64>,
    /// Forward error correction for small messages (PROTOCOL.md §6.8): at most this
    /// many extra copies of a packet that drains an app-limited sender's queue, sent a
    /// few ms apart, so that a lost tail does not wait a loss detection and a
    /// retransmission. How many are sent follows the measured loss rate (none on a
    /// clean path; 2 above about 3% loss); bulk transfers are never copied. 0 turns it
    /// off. Local: the peer takes a copy as a duplicate.
    pub tail_copies: u8,
    /// Packets sealed under one key before the session must stop using it: a key
    /// update starts at half of it, and a session whose update is not confirmed by
    /// then closes with `AEAD_LIMIT_REACHED`. Default and ceiling 2^23 (AES-GCM, RFC
    /// 9001 §6.6); lower only to test key updates.
    #[doc(hidden)]
    pub aead_confidentiality_limit: u64,
    /// Received packets that may fail authentication over the session's life, all keys
    /// together, before it closes with `AEAD_LIMIT_REACHED`. Default and ceiling 2^52
    /// (AES-GCM, RFC 9001 §6.6); lower only to test the limit.
    #[doc(hidden)]
    pub aead_integrity_limit: u64,
}

/// AES-GCM's confidentiality limit in packets per key (RFC 9001 §6.6, for packets up
/// to 2^16 bytes: every datagram size we allow).
pub(crate) const AEAD_CONFIDENTIALITY_LIMIT: u64 = 1 << 23;
/// AES-GCM's integrity limit in forged packets per session (RFC 9001 §6.6).
pub(crate) const AEAD_INTEGRITY_LIMIT: u64 = 1 << 52;
/// The smallest confidentiality limit a test may set: room for an update and CLOSEs.
const MIN_CONFIDENTIALITY_LIMIT: u64 = 64;

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_datagram_size: crate::handshake::MAX_DATAGRAM_SIZE as u16,
            initial_datagram_size: 1452,
            mtu_discovery: true,
            initial_stream_window: 512 * 1024,
            max_stream_window: 64 * 1024 * 1024,
            initial_session_window: 1024 * 1024,
            max_session_window: 64 * 1024 * 1024,
            send_buffer: 64 * 1024 * 1024,
            max_concurrent_streams: 128,
            idle_timeout: Duration::from_secs(30),
            keepalive: Some(Duration::from_secs(10)),
            max_ack_delay: Duration::from_millis(25),
            ack_eliciting_threshold: 2,
            initial_rtt: Duration::from_millis(200),
            congestion: ControllerKind::Bbr,
            max_send_rate: None,
            tail_copies: 2,
            aead_confidentiality_limit: AEAD_CONFIDENTIALITY_LIMIT,
            aead_integrity_limit: AEAD_INTEGRITY_LIMIT,
        }
    }
}

impl TransportConfig {
    /// The configuration as a session applies it: each limit brought within what the
    /// protocol allows a peer to announce (`handshake::TransportParams::validate`),
    /// so that what this side announces and what it enforces agree.
    pub(crate) fn normalized(&self) -> TransportConfig {
        use crate::handshake::{
            MAX_ACK_DELAY_MS, MAX_DATAGRAM_SIZE, MAX_IDLE_TIMEOUT_MS, MAX_STREAMS, MIN_CREDIT,
            MIN_DATAGRAM_SIZE,
        };
        let initial_stream_window = self.initial_stream_window.max(MIN_CREDIT);
        let initial_session_window = self.initial_session_window.max(MIN_CREDIT);
        let max_datagram_size = self
            .max_datagram_size
            .clamp(MIN_DATAGRAM_SIZE as u16, MAX_DATAGRAM_SIZE as u16);
        TransportConfig {
            max_datagram_size,
            initial_datagram_size: self
                .initial_datagram_size
                .clamp(MIN_DATAGRAM_SIZE as u16, max_datagram_size),
            initial_stream_window,
            max_stream_window: self.max_stream_window.max(initial_stream_window),
            initial_session_window,
            max_session_window: self.max_session_window.max(initial_session_window),
            max_concurrent_streams: self.max_concurrent_streams.min(MAX_STREAMS),
            idle_timeout: self
                .idle_timeout
                .min(Duration::from_millis(MAX_IDLE_TIMEOUT_MS)),
            max_ack_delay: self
                .max_ack_delay
                .min(Duration::from_millis(MAX_ACK_DELAY_MS - 1)),
            aead_confidentiality_limit: self
                .aead_confidentiality_limit
                .clamp(MIN_CONFIDENTIALITY_LIMIT, AEAD_CONFIDENTIALITY_LIMIT),
            aead_integrity_limit: self.aead_integrity_limit.min(AEAD_INTEGRITY_LIMIT),
            ..self.clone()
        }
    }
}

/// Decides whether a token may open a session. Called before any state is kept.
pub type AuthFn = dyn Fn(&[u8]) -> bool + Send + Sync;

/// Codes a server puts in an authenticated reject.
pub mod reject {
    /// The auth callback refused the token.
    pub const TOKEN_REJECTED: u64 = 1;
    /// The server holds as many sessions as its limit allows
    /// ([`super::ServerConfig::max_sessions`]), or the client's address or token
    /// does (`max_sessions_per_address`, `max_sessions_per_token`); the reason says
    /// which.
    pub const SERVER_BUSY: u64 = 2;
    /// The hello's timestamp is further from the server's clock than
    /// [`super::ServerConfig::max_hello_age`]: an old hello replayed, or a clock far off.
    pub const STALE_HELLO: u64 = 3;
}

/// Live sessions one token may hold by default: room for many clients sharing a
/// token, a hundredth of the default `max_sessions`.
pub const DEFAULT_MAX_SESSIONS_PER_TOKEN: usize = 1024;

/// A server's identity, its auth policy and limits.
#[derive(Clone)]
pub struct ServerConfig {
    pub(crate) key: PrivateKey,
    pub(crate) auth: Arc<AuthFn>,
    pub(crate) transport: TransportConfig,
    pub(crate) max_sessions: usize,
    pub(crate) max_sessions_per_address: usize,
    pub(crate) max_sessions_per_token: usize,
    pub(crate) cookie_threshold: u32,
    pub(crate) max_hellos_per_address: u32,
    pub(crate) max_failed_tokens_per_address: u32,
    pub(crate) max_hello_age: Duration,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("public_key", &self.key.public_key())
            .field("transport", &self.transport)
            .field("max_sessions", &self.max_sessions)
            .field("max_sessions_per_address", &self.max_sessions_per_address)
            .field("max_sessions_per_token", &self.max_sessions_per_token)
            .field("cookie_threshold", &self.cookie_threshold)
            .field("max_hellos_per_address", &self.max_hellos_per_address)
            .field(
                "max_failed_tokens_per_address",
                &self.max_failed_tokens_per_address,
            )
            .field("max_hello_age", &self.max_hello_age)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// A server with this static key that refuses every token until [`Self::auth`] is set.
    pub fn new(key: PrivateKey) -> Self {
        ServerConfig {
            key,
            auth: Arc::new(|_| false),
            transport: TransportConfig::default(),
            max_sessions: 100_000,
            max_sessions_per_address: 256,
            max_sessions_per_token: DEFAULT_MAX_SESSIONS_PER_TOKEN,
            cookie_threshold: 256,
            max_hellos_per_address: 64,
            max_failed_tokens_per_address: 30,
            max_hello_age: Duration::from_secs(120),
        }
    }

    /// Sets the callback that decides who may connect.
    pub fn auth<F: Fn(&[u8]) -> bool + Send + Sync + 'static>(mut self, f: F) -> Self {
        self.auth = Arc::new(f);
        self
    }

    /// Sets the transport limits.
    pub fn transport(mut self, t: TransportConfig) -> Self {
        self.transport = t;
        self
    }

    /// Sets how many sessions may exist at once; more hellos are rejected as busy.
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = n;
        self
    }

    /// Sets how many sessions one IP address may hold at once (default 256, room for a
    /// NAT with many clients behind it); more hellos from it are rejected as busy.
    pub fn max_sessions_per_address(mut self, n: usize) -> Self {
        self.max_sessions_per_address = n;
        self
    }

    /// Sets how many live sessions one token may hold at once (default
    /// [`DEFAULT_MAX_SESSIONS_PER_TOKEN`]), so that one leaked or greedy token cannot
    /// take the whole `max_sessions`; more hellos with it are rejected as busy
    /// (`SERVER_BUSY`, "too many sessions with this token"). A session stops counting
    /// once it is closed. `usize::MAX` means no limit; 0 refuses every token.
    pub fn max_sessions_per_token(mut self, n: usize) -> Self {
        self.max_sessions_per_token = n;
        self
    }

    /// Sets how many hellos a second the server decrypts (an X25519 each) before it
    /// is *under load* (default 256, far above any honest arrival rate and a few
    /// percent of one core): until the second is over, hellos without a valid cookie
    /// are answered with a stateless COOKIE instead, and cost an HMAC. 0 demands a
    /// cookie of every hello.
    pub fn cookie_threshold(mut self, per_second: u32) -> Self {
        self.cookie_threshold = per_second;
        self
    }

    /// Sets how many hellos a second one IP address may make the server decrypt
    /// (default 64); more are dropped unanswered.
    pub fn max_hellos_per_address(mut self, per_second: u32) -> Self {
        self.max_hellos_per_address = per_second;
        self
    }

    /// Sets how many refused tokens a minute one IP address may have (default 30);
    /// its hellos are then dropped unanswered until the minute is over, which makes
    /// guessing tokens slow.
    pub fn max_failed_tokens_per_address(mut self, per_minute: u32) -> Self {
        self.max_failed_tokens_per_address = per_minute;
        self
    }

    /// Sets how far a hello's timestamp may be from the server's clock (default
    /// 2 minutes) when both sides know the wall clock (`Endpoint::set_unix_time`).
    /// Accepted hellos are remembered twice this long, so a replay is refused either
    /// as seen or as too old.
    pub fn max_hello_age(mut self, d: Duration) -> Self {
        self.max_hello_age = d;
        self
    }

    /// How long accepted hellos are remembered against replays.
    pub(crate) fn replay_memory(&self) -> Duration {
        self.max_hello_age.saturating_mul(2)
    }

    /// The public key clients must pin.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }
}

/// What a client needs to reach a server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub(crate) server_key: PublicKey,
    pub(crate) token: Vec<u8>,
    pub(crate) transport: TransportConfig,
    pub(crate) handshake_timeout: Duration,
    pub(crate) hello_retry: Duration,
}

impl ClientConfig {
    /// A client that pins the server's static public key.
    pub fn new(server_key: PublicKey) -> Self {
        ClientConfig {
            server_key,
            token: Vec::new(),
            transport: TransportConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            hello_retry: Duration::from_millis(500),
        }
    }

    /// The token presented to the server's auth callback.
    pub fn token(mut self, token: impl Into<Vec<u8>>) -> Self {
        self.token = token.into();
        self
    }

    /// Sets the transport limits.
    pub fn transport(mut self, t: TransportConfig) -> Self {
        self.transport = t;
        self
    }

    /// Gives up connecting after this long.
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// First interval between hello retransmissions; it doubles after each one, up to
    /// 1 s.
    pub fn hello_retry(mut self, d: Duration) -> Self {
        self.hello_retry = d;
        self
    }
}
