//! Getting to Established. The client sends its hello twice, a few ms apart, and
//! repeats that with backoff until a REPLY (accept or reject), an UNDECRYPTABLE /
//! VERSION_MISMATCH answer that echoes the hello's digest, or the handshake timeout.
//! The server repeats its cached REPLY to a repeated hello (the copy, or a
//! retransmission), within the amplification limit, until the client's first data
//! packet proves it has the keys.
//!
//! ```text
//!  client: Handshake --REPLY accept--> Established
//!               \--REPLY reject / UNDECRYPTABLE / VERSION_MISMATCH / timeout--> Drained
//!  server: (created on an accepted HELLO) Established, REPLY cached until the first data packet
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::error::{CloseReason, HandshakeError};
use super::key_update::SessionKeys;
use super::{Event, Session, Side, State, Transmit};
use crate::coding::Reader;
use crate::config::{ClientConfig, TransportConfig};
use crate::datagram::DatagramBuf;
use crate::handshake::{
    hello_cookie, hello_digest, read_cookie_answer, set_hello_cookie, ClientHandshake, Reply,
    TransportParams, HELLO_DIGEST_LEN,
};
use crate::packet::{long, PacketKeys};

/// Longest wait between two hellos: a lossy path still gets many tries before the
/// handshake timeout.
const MAX_HELLO_INTERVAL: Duration = Duration::from_secs(1);

/// Each hello goes out twice, this far apart. The server answers each copy that
/// reaches it, so on a path losing p of the packets each way an attempt fails with
/// (1 − (1−p)²)² instead of 1 − (1−p)²: at 20% 0.13 instead of 0.36, at 30% 0.26
/// instead of 0.51. With 500 ms, 1 s, 1 s between attempts, a handshake at 20% loss
/// takes over 2 s once in twenty tries without the copy, and once in 450 with it.
/// The copy costs one datagram per attempt; the gap lets a short burst of loss take
/// one copy, not both. A repeated hello costs the server a table lookup, not a
/// handshake: an accepted one finds its session, a refused one its refusal.
const HELLO_COPY_GAP: Duration = Duration::from_millis(5);

/// Handshake progress of either side.
#[derive(Default)]
pub(crate) struct Connect {
    /// Client: the handshake in progress, the hello to repeat and when.
    handshake: Option<ClientHandshake>,
    hello: Vec<u8>,
    pub hello_due: Option<Instant>,
    /// When the copy of the hello last sent goes out.
    pub hello_copy_due: Option<Instant>,
    hello_interval: Duration,
    pub deadline: Option<Instant>,
    /// Server: the REPLY to repeat until the client proves it has keys.
    reply: Option<Vec<u8>>,
    reply_due: bool,
    /// Client: hellos sent at once for a new cookie.
    cookies: u32,
    /// Client, once established: the digest of the REPLY body accepted, to tell the
    /// server's answers to the hello's copies from damaged or forged ones.
    accepted_reply: Option<[u8; HELLO_DIGEST_LEN]>,
}

/// Most cookies that make the client send its hello at once; later ones wait for the
/// next retransmission.
const MAX_COOKIE_RESENDS: u32 = 4;

impl Session {
    /// Our transport parameters, as announced in the handshake.
    pub(crate) fn local_params(config: &TransportConfig) -> TransportParams {
        let config = config.normalized();
        TransportParams {
            max_data: config.initial_session_window,
            max_stream_data: config.initial_stream_window,
            max_streams: config.max_concurrent_streams,
            idle_timeout_ms: config.idle_timeout.as_millis() as u64,
            max_datagram_size: u64::from(config.max_datagram_size.max(1200)),
            max_ack_delay_ms: config.max_ack_delay.as_millis() as u64,
        }
    }

    /// A client session that starts by sending a hello.
    pub(crate) fn client(
        now: Instant,
        local_sid: u64,
        remote: SocketAddr,
        config: &ClientConfig,
        timestamp: u64,
        rng: rand::rngs::StdRng,
    ) -> Self {
        let mut s = Session::new(
            Side::Client,
            now,
            local_sid,
            remote,
            config.transport.clone(),
            rng,
        );
        let params = Self::local_params(&s.config);
        match ClientHandshake::start(
            &config.server_key,
            local_sid,
            &config.token,
            &params,
            timestamp,
            &mut s.connect.hello,
        ) {
            Ok(hs) => {
                s.connect.handshake = Some(hs);
                s.connect.hello_due = Some(now);
                s.connect.hello_interval = config.hello_retry;
                s.connect.deadline = Some(now + config.handshake_timeout);
            }
            Err(e) => {
                // Only an over-long token can fail here; report it as a rejection.
                s.fail_connect(HandshakeError::Rejected {
                    code: crate::config::reject::TOKEN_REJECTED,
                    reason: e.to_string(),
                });
            }
        }
        s
    }

    /// A server session for an accepted hello; `reply` is the REPLY datagram.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn server(
        now: Instant,
        local_sid: u64,
        remote: SocketAddr,
        config: TransportConfig,
        client_sid: u64,
        peer: TransportParams,
        keys: PacketKeys,
        reply: Vec<u8>,
        hello_len: usize,
        token_id: crate::endpoint::TokenId,
        rng: rand::rngs::StdRng,
    ) -> Self {
        let mut s = Session::new(Side::Server, now, local_sid, remote, config, rng);
        s.remote_sid = client_sid;
        s.token_id = Some(token_id);
        s.keys = Some(SessionKeys::new(keys, &s.config));
        s.path.on_received(hello_len as u64);
        s.connect.reply = Some(reply);
        s.connect.reply_due = true;
        s.establish(now, peer);
        s
    }

    fn establish(&mut self, now: Instant, peer: TransportParams) {
        self.state = State::Established;
        self.flow.peer_max_data = peer.max_data;
        self.streams.max_local = peer.max_streams;
        self.peer_params = Some(peer);
        let upper = u16::try_from(peer.max_datagram_size).unwrap_or(u16::MAX);
        let upper = upper.min(self.config.max_datagram_size);
        let size = self.mtu.start(self.path.remote, upper);
        self.set_datagram_size(size);
        self.reset_idle(now);
        self.events.push_back(Event::Connected);
    }

    pub(super) fn fail_connect(&mut self, e: HandshakeError) {
        self.state = State::Drained;
        self.connect.handshake = None;
        self.events
            .push_back(Event::Closed(CloseReason::ConnectFailed(e)));
    }

    /// Handles a long-header packet addressed to this session (client side).
    pub(crate) fn handle_long(&mut self, now: Instant, remote: SocketAddr, ty: u8, body: &[u8]) {
        self.now = self.now.max(now);
        if ty == long::REPLY
            && self.side == Side::Client
            && self.state == State::Established
            && remote == self.path.remote
            && self
                .connect
                .accepted_reply
                .is_some_and(|d| d == hello_digest(body))
        {
            // The server's answer to the hello's copy (or to a repeated hello), the
            // same as the one accepted: expected, so not counted as dropped.
            return;
        }
        if self.side != Side::Client || self.state != State::Handshake || remote != self.path.remote
        {
            self.stats.packets_dropped += 1;
            return;
        }
        match ty {
            long::REPLY => self.on_reply(now, body),
            long::COOKIE => self.on_cookie(now, body),
            long::UNDECRYPTABLE | long::VERSION_MISMATCH => {
                let mut r = Reader::new(body);
                let echoed = r.array::<HELLO_DIGEST_LEN>();
                if echoed.ok() != Some(hello_digest(&self.connect.hello)) {
                    // Not an answer to our hello as we sent it: forged, or our hello
                    // was damaged on the way. Keep retrying.
                    self.stats.packets_dropped += 1;
                    return;
                }
                if ty == long::UNDECRYPTABLE {
                    self.fail_connect(HandshakeError::KeyMismatch);
                } else {
                    let v = r.u32().unwrap_or(0);
                    self.fail_connect(HandshakeError::UnsupportedVersion(v));
                }
            }
            _ => self.stats.packets_dropped += 1,
        }
    }

    fn on_reply(&mut self, now: Instant, body: &[u8]) {
        let Some(hs) = self.connect.handshake.as_mut() else {
            return;
        };
        match hs.on_reply(body) {
            Ok(Reply::Accepted {
                server_sid,
                params,
                keys,
            }) => {
                self.connect = Connect {
                    accepted_reply: Some(hello_digest(body)),
                    ..Connect::default()
                };
                self.remote_sid = server_sid;
                self.keys = Some(SessionKeys::new(*keys, &self.config));
                self.stats.packets_received += 1;
                self.stats.bytes_received += body.len() as u64;
                self.establish(now, params);
                // Confirm at once so the server may send freely.
                self.pending.ping = true;
            }
            Ok(Reply::Rejected { code, reason }) => {
                self.fail_connect(HandshakeError::Rejected { code, reason });
            }
            Err(_) => self.stats.packets_dropped += 1,
        }
    }

    /// A loaded server wants its cookie echoed: the hello goes again with it, at once
    /// for the first few cookies (more could only come from someone on the path).
    fn on_cookie(&mut self, now: Instant, body: &[u8]) {
        let c = &mut self.connect;
        let Some(cookie) = read_cookie_answer(body, &c.hello) else {
            // Not an answer to our hello: forged. Keep retrying as before.
            self.stats.packets_dropped += 1;
            return;
        };
        if hello_cookie(&c.hello) == Some(cookie) {
            return;
        }
        set_hello_cookie(&mut c.hello, &cookie);
        if c.cookies < MAX_COOKIE_RESENDS {
            c.cookies += 1;
            c.hello_due = Some(now);
        }
    }

    /// The client repeated its hello: repeat our reply (server side).
    pub(crate) fn on_repeated_hello(&mut self, len: usize) {
        if self.connect.reply.is_some() {
            self.path.on_received(len as u64);
            self.connect.reply_due = true;
        }
    }

    /// The peer has our keys (an authentic data packet arrived): the cached reply is moot.
    pub(super) fn on_keys_confirmed(&mut self) {
        if self.side == Side::Server {
            self.connect.reply = None;
            self.connect.reply_due = false;
        }
    }

    /// The hello, when it or its copy is due (client, Handshake).
    pub(super) fn transmit_hello(
        &mut self,
        now: Instant,
        buf: &mut DatagramBuf<'_>,
    ) -> Option<Transmit> {
        let c = &mut self.connect;
        let due = |t: Option<Instant>| t.is_some_and(|t| now >= t);
        if due(c.hello_due) {
            c.hello_due = Some(now + c.hello_interval);
            c.hello_interval = (c.hello_interval * 2).min(MAX_HELLO_INTERVAL);
            c.hello_copy_due = Some(now + HELLO_COPY_GAP);
        } else if due(c.hello_copy_due) {
            c.hello_copy_due = None;
        } else {
            return None;
        }
        buf.extend_from_slice(&c.hello);
        Some(self.count_raw(buf))
    }

    /// The cached reply, when a repeated hello asked for it and the amplification limit
    /// allows it (server).
    pub(super) fn transmit_reply(&mut self, buf: &mut DatagramBuf<'_>) -> Option<Transmit> {
        if !self.connect.reply_due {
            return None;
        }
        let reply = self.connect.reply.as_ref()?;
        self.connect.reply_due = false;
        if !self.path.spend(reply.len() as u64) {
            return None;
        }
        buf.extend_from_slice(reply);
        Some(self.count_raw(buf))
    }

    /// Counts a handshake datagram written as is.
    fn count_raw(&mut self, buf: &[u8]) -> Transmit {
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += buf.len() as u64;
        Transmit {
            destination: self.path.remote,
            size: buf.len(),
            mtu_probe: false,
        }
    }
}
