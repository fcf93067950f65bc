//! The endpoint: one UDP socket's worth of sessions. It demultiplexes datagrams by
//! session id, answers hellos (the server side of the handshake, statelessly until the
//! auth callback accepts), schedules transmissions fairly across sessions and keeps
//! their timers in one heap.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the session table, datagram demultiplexing, timers, `poll_transmit` |
//! | `hello.rs` | the server's answer to a HELLO, cheapest checks first |
//! | `hello_guard.rs` | the load gate and the per-address hello and failed-token limits |
//! | `cookie.rs` | the stateless cookies of a loaded server and their rotating secret |
//! | `replay.rs` | the memory of accepted hellos and the timestamp check |
//! | `tokens.rs` | the keyed hash that names tokens, the live sessions of each |

mod cookie;
mod hello;
mod hello_guard;
mod refusals;
mod replay;
mod tokens;

pub use tokens::TokenId;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use rustc_hash::FxBuildHasher;

use crate::config::{ClientConfig, ServerConfig};
use crate::datagram::DatagramBuf;
use crate::handshake::BODY_OFFSET;
use crate::packet::{long, Header};
use crate::recovery::AckOutcome;
use crate::session::{Event, Session, Transmit};

/// Names a session within its endpoint: its local session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionHandle(pub u64);

/// Endpoint-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub datagrams_received: u64,
    pub bytes_received: u64,
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    /// Datagrams dropped before reaching a session: malformed, unknown session, ...
    pub datagrams_dropped: u64,
    /// Hellos refused (bad token, busy) and hellos that did not decrypt.
    pub hellos_rejected: u64,
    pub sessions_accepted: u64,
    /// Stateless answers (rejects, UNDECRYPTABLE, VERSION_MISMATCH) not sent because
    /// 256 of them were already waiting.
    pub answers_dropped: u64,
    /// Hellos rejected as busy because their address held its limit of sessions
    /// (`ServerConfig::max_sessions_per_address`); also counted in `hellos_rejected`.
    pub hellos_over_address_limit: u64,
    /// Hellos rejected as busy because their token held its limit of live sessions
    /// (`ServerConfig::max_sessions_per_token`); also counted in `hellos_rejected`.
    pub hellos_over_token_limit: u64,
    /// X25519 operations done for hellos: one to decrypt each hello that got that
    /// far, one more for each REPLY (accept or reject). What a flood costs.
    pub x25519_ops: u64,
    /// COOKIE answers queued: hellos without a valid cookie while under load, or
    /// from an address over its limits.
    pub cookies_sent: u64,
    /// Hellos from an address over its limits left unanswered because the address
    /// had its `max_hellos_per_address` COOKIEs this second.
    pub cookies_withheld: u64,
    /// Hellos whose cookie did not verify (forged, expired, for another address or
    /// hello); they were treated as hellos without one.
    pub cookies_invalid: u64,
    /// Hellos dropped before any X25519 because their address was over a limit
    /// (`ServerConfig::max_hellos_per_address`, `max_failed_tokens_per_address`).
    pub hellos_rate_limited: u64,
    /// Warnings logged about limited addresses: at most one per address a minute.
    pub rate_limit_warnings: u64,
    /// Hellos dropped as replays of a hello already accepted.
    pub hellos_replayed: u64,
    /// Hellos refused within the last second arriving again (the client's copy, or a
    /// retransmission): answered with the same refusal, without a second handshake,
    /// and not counted again in `hellos_rejected` or the limits.
    pub refusals_repeated: u64,
    /// Hellos rejected because their timestamp was too far from the server's clock;
    /// also counted in `hellos_rejected`.
    pub hellos_stale: u64,
    /// Accepted hellos forgotten early because the replay memory was full.
    pub replay_memory_evicted: u64,
}

/// Most stateless answers waiting to go out at once; more are dropped, so a flood of
/// hellos that is not drained by [`Endpoint::poll_transmit`] cannot grow memory.
pub const MAX_STATELESS_QUEUE: usize = 256;

/// Endpoint-wide settings.
#[derive(Debug, Clone, Default)]
pub struct EndpointConfig {
    /// Seeds the endpoint's random numbers (session ids, path challenges); `None` seeds
    /// from the OS. Tests set it to replay runs.
    pub rng_seed: Option<u64>,
    /// The socket cannot forbid fragmentation (no don't-fragment bit): a probe larger
    /// than the path would arrive in fragments and pass, so the endpoint's sessions
    /// keep their initial datagram size (no path MTU discovery).
    pub may_fragment: bool,
}

struct Entry {
    session: Session,
    scheduled: Option<Instant>,
    ready: bool,
    hello_key: Option<u64>,
    /// The application let go; remove once drained.
    released: bool,
    /// Server sessions: the IP address the hello came from, counted against its limit.
    peer_ip: Option<IpAddr>,
    /// Server sessions: the token's id while it counts against its limit (until the
    /// session is closed).
    token: Option<TokenId>,
}

/// A set of sessions sharing one socket.
pub struct Endpoint {
    server: Option<Arc<ServerConfig>>,
    /// Boxed: a session is a few KB, and the table keeps spare buckets. Looked up for
    /// every datagram, so hashed with FxHash rather than SipHash: its keys are session
    /// ids this endpoint drew at random, so a peer cannot choose colliding ones (unlike
    /// `hellos`, keyed by ids the clients pick, which keeps the default hasher).
    sessions: HashMap<u64, Box<Entry>, FxBuildHasher>,
    /// Server: client session id → (its address, our session id) of accepted hellos, so a repeated
    /// hello gets the same reply instead of a second session.
    hellos: HashMap<u64, (SocketAddr, u64)>,
    /// Server: sessions held per client IP address.
    per_address: HashMap<IpAddr, usize>,
    /// Server: the hashing secret of token ids and the live sessions per token.
    tokens: tokens::TokenTable,
    incoming: VecDeque<SessionHandle>,
    ready: VecDeque<u64>,
    touched: Vec<u64>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    events: VecDeque<(SessionHandle, Event)>,
    /// Stateless answers (rejects, key mismatch, version) waiting to go out, at most
    /// [`MAX_STATELESS_QUEUE`].
    stateless: VecDeque<(SocketAddr, Vec<u8>)>,
    rng: StdRng,
    stats: EndpointStats,
    /// Shared by every session's ACK processing (see `Session::handle_data`).
    ack_scratch: AckOutcome,
    /// Server: the load gate and per-address limits for hellos.
    guard: hello_guard::HelloGuard,
    /// Server: the secrets of the cookies demanded under load.
    cookies: cookie::CookieKeys,
    /// Server: the replay keys of accepted hellos.
    replays: replay::ReplayMemory,
    refusals: refusals::RecentRefusals,
    /// The wall clock, when the caller told it: (an instant, Unix time at it).
    unix_anchor: Option<(Instant, Duration)>,
    /// Sessions keep their initial datagram size ([`EndpointConfig::may_fragment`]).
    may_fragment: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("server", &self.server.is_some())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint; with a server config it accepts hellos, without it only connects.
    pub fn new(config: EndpointConfig, server: Option<Arc<ServerConfig>>) -> Self {
        let mut rng = match config.rng_seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        let cookies = cookie::CookieKeys::new(&mut rng);
        let tokens = tokens::TokenTable::new(&mut rng);
        Endpoint {
            server,
            sessions: HashMap::default(),
            hellos: HashMap::new(),
            per_address: HashMap::new(),
            tokens,
            incoming: VecDeque::new(),
            ready: VecDeque::new(),
            touched: Vec::new(),
            timers: BinaryHeap::new(),
            events: VecDeque::new(),
            stateless: VecDeque::new(),
            rng,
            stats: EndpointStats::default(),
            ack_scratch: AckOutcome::default(),
            guard: hello_guard::HelloGuard::default(),
            cookies,
            replays: replay::ReplayMemory::default(),
            refusals: refusals::RecentRefusals::default(),
            unix_anchor: None,
            may_fragment: config.may_fragment,
        }
    }

    /// Tells the endpoint the wall clock: at `now` it is `since_epoch` after the Unix
    /// epoch. Hellos then carry a timestamp and a server refuses those too far from
    /// its clock (`ServerConfig::max_hello_age`); without it only the server's memory
    /// of accepted hellos stops replays. Call again now and then to follow the clock.
    pub fn set_unix_time(&mut self, now: Instant, since_epoch: Duration) {
        self.unix_anchor = Some((now, since_epoch));
    }

    /// The wall clock at `now`, if known.
    fn unix_time(&self, now: Instant) -> Option<Duration> {
        let (at, unix) = self.unix_anchor?;
        Some(if now >= at {
            unix + (now - at)
        } else {
            unix.saturating_sub(at - now)
        })
    }

    /// Replaces (or removes) the server config; existing sessions keep theirs.
    pub fn set_server_config(&mut self, server: Option<Arc<ServerConfig>>) {
        self.server = server;
    }

    /// Endpoint-wide counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats.clone()
    }

    /// Number of sessions held (including closed ones not yet released).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Entries held for hellos beyond the sessions themselves: addresses tracked for
    /// the per-address limits (at most 4096), accepted hellos remembered against
    /// replay (at most 65 536), hellos of live sessions, stateless answers waiting (at
    /// most 256). Bounded whatever arrives; what a flood can make the endpoint hold.
    pub fn hello_state_len(&self) -> usize {
        self.guard.tracked() + self.replays.len() + self.hellos.len() + self.stateless.len()
    }

    fn new_sid(&mut self) -> u64 {
        loop {
            let sid = self.rng.next_u64();
            if sid != 0 && !self.sessions.contains_key(&sid) {
                return sid;
            }
        }
    }

    fn session_rng(&mut self) -> StdRng {
        StdRng::seed_from_u64(self.rng.next_u64())
    }

    /// Starts a session to `remote`. Watch for [`Event::Connected`] or
    /// [`Event::Closed`] with a connect error.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        config: &ClientConfig,
    ) -> SessionHandle {
        let sid = self.new_sid();
        let rng = self.session_rng();
        let timestamp = self.unix_time(now).map_or(0, |t| {
            u64::try_from(t.as_nanos()).unwrap_or(u64::MAX).max(1)
        });
        let session = Session::client(now, sid, remote, config, timestamp, rng);
        self.insert(sid, session, None, None);
        SessionHandle(sid)
    }

    fn insert(
        &mut self,
        sid: u64,
        mut session: Session,
        hello_key: Option<u64>,
        peer_ip: Option<IpAddr>,
    ) {
        if self.may_fragment {
            session.stop_mtu_discovery();
        }
        if let Some(ip) = peer_ip {
            *self.per_address.entry(ip).or_insert(0) += 1;
        }
        let token = session.token_id();
        if let Some(t) = token {
            self.tokens.add(t);
        }
        self.sessions.insert(
            sid,
            Box::new(Entry {
                session,
                scheduled: None,
                ready: false,
                hello_key,
                released: false,
                peer_ip,
                token,
            }),
        );
        self.touched.push(sid);
    }

    /// The next session a client opened to this server.
    pub fn accept(&mut self) -> Option<SessionHandle> {
        self.incoming.pop_front()
    }

    /// The session, to read, write or close. Any change is picked up by the next poll.
    pub fn session(&mut self, h: SessionHandle) -> Option<&mut Session> {
        let e = self.sessions.get_mut(&h.0)?;
        self.touched.push(h.0);
        Some(&mut e.session)
    }

    /// The session, to look at only: unlike [`Self::session`] it does not schedule the
    /// session for a refresh, so reading stats of many sessions costs nothing later.
    pub fn session_ref(&self, h: SessionHandle) -> Option<&Session> {
        self.sessions.get(&h.0).map(|e| &e.session)
    }

    /// Forgets a session. Call when the application is done with it; a session that
    /// was not closed is closed first (code 0).
    pub fn release(&mut self, now: Instant, h: SessionHandle) {
        let Some(e) = self.sessions.get_mut(&h.0) else {
            return;
        };
        if e.session.is_drained() {
            self.remove(h.0);
            return;
        }
        // Keep it until drained so the CLOSE gets out; `refresh` removes it then.
        e.session.close(now, 0, "released");
        e.released = true;
        self.touched.push(h.0);
    }

    fn remove(&mut self, sid: u64) {
        if let Some(mut e) = self.sessions.remove(&sid) {
            if let Some(k) = e.hello_key {
                self.hellos.remove(&k);
            }
            uncount(&mut e, &mut self.tokens, &mut self.per_address);
        }
    }

    /// Handles one received datagram. It is opened in place and not kept: the
    /// caller may reuse the buffer as soon as this returns.
    pub fn handle(&mut self, now: Instant, remote: SocketAddr, datagram: &mut [u8]) {
        self.stats.datagrams_received += 1;
        self.stats.bytes_received += datagram.len() as u64;
        let Ok((header, header_len)) = Header::decode(datagram) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        match header {
            Header::Data {
                dst,
                number,
                number_len,
            } => {
                let Some(e) = self.sessions.get_mut(&dst) else {
                    self.stats.datagrams_dropped += 1;
                    return;
                };
                e.session.handle_data(
                    now,
                    remote,
                    (number, number_len),
                    header_len,
                    datagram,
                    &mut self.ack_scratch,
                );
                self.touched.push(dst);
            }
            Header::Long { ty, version, sid } => {
                if ty == long::HELLO {
                    self.handle_hello(now, remote, version, sid, datagram);
                } else if let Some(e) = self.sessions.get_mut(&sid) {
                    e.session
                        .handle_long(now, remote, ty, &datagram[BODY_OFFSET..]);
                    self.touched.push(sid);
                } else {
                    self.stats.datagrams_dropped += 1;
                }
            }
        }
    }

    /// Queues a stateless answer, unless the queue is full.
    fn queue_stateless(&mut self, to: SocketAddr, data: Vec<u8>) {
        if self.stateless.len() >= MAX_STATELESS_QUEUE {
            self.stats.answers_dropped += 1;
            return;
        }
        self.stateless.push_back((to, data));
    }

    /// Brings the scheduler up to date with sessions changed since the last call.
    fn process_touched(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for sid in touched.drain(..) {
            self.refresh(sid);
        }
        self.touched = touched;
    }

    fn refresh(&mut self, sid: u64) {
        let Some(e) = self.sessions.get_mut(&sid) else {
            return;
        };
        while let Some(ev) = e.session.poll_event() {
            self.events.push_back((SessionHandle(sid), ev));
        }
        // A closed session no longer counts against its token or its address, even
        // while the application holds it.
        if e.session.is_closed() {
            uncount(e, &mut self.tokens, &mut self.per_address);
        }
        if e.session.is_drained() && e.released {
            self.remove(sid);
            return;
        }
        if !e.ready {
            e.ready = true;
            self.ready.push_back(sid);
        }
        let t = e.session.poll_timeout();
        if t != e.scheduled {
            e.scheduled = t;
            if let Some(t) = t {
                self.timers.push(Reverse((t, sid)));
            }
        }
    }

    /// The next event of any session.
    pub fn poll_event(&mut self) -> Option<(SessionHandle, Event)> {
        self.process_touched();
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.process_touched();
        while let Some(Reverse((t, sid))) = self.timers.peek().copied() {
            match self.sessions.get(&sid) {
                Some(e) if e.scheduled == Some(t) => return Some(t),
                _ => {
                    self.timers.pop();
                }
            }
        }
        None
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.process_touched();
        while let Some(Reverse((t, sid))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(e) = self.sessions.get_mut(&sid) else {
                continue;
            };
            if e.scheduled != Some(t) {
                continue;
            }
            e.scheduled = None;
            e.session.handle_timeout(now);
            self.touched.push(sid);
        }
        self.process_touched();
    }

    /// Writes the next datagram to send into `buf` (cleared first); sessions take
    /// turns.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        buf.clear();
        self.poll_transmit_append(now, buf)
    }

    /// Appends the next datagram to send to `out`, which keeps what it held: the
    /// datagram is `out[len before..][..size]`, and nothing is appended when there is
    /// none. What a runtime uses to gather a batch (GSO) in one buffer, writing each
    /// datagram in place.
    pub fn poll_transmit_append(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<Transmit> {
        let mut buf = DatagramBuf::new(out);
        if let Some((to, data)) = self.stateless.pop_front() {
            buf.extend_from_slice(&data);
            self.stats.datagrams_sent += 1;
            self.stats.bytes_sent += data.len() as u64;
            return Some(Transmit {
                destination: to,
                size: data.len(),
                mtu_probe: false,
            });
        }
        self.process_touched();
        while let Some(sid) = self.ready.pop_front() {
            let Some(e) = self.sessions.get_mut(&sid) else {
                continue;
            };
            match e.session.poll_transmit_into(now, &mut buf) {
                Some(t) => {
                    self.ready.push_back(sid);
                    self.stats.datagrams_sent += 1;
                    self.stats.bytes_sent += t.size as u64;
                    // Events and timers may have changed; keep it ready.
                    self.touched.push(sid);
                    return Some(t);
                }
                None => {
                    e.ready = false;
                    if e.session.is_closed() {
                        uncount(e, &mut self.tokens, &mut self.per_address);
                    }
                    let t = e.session.poll_timeout();
                    if t != e.scheduled {
                        e.scheduled = t;
                        if let Some(t) = t {
                            self.timers.push(Reverse((t, sid)));
                        }
                    }
                    while let Some(ev) = e.session.poll_event() {
                        self.events.push_back((SessionHandle(sid), ev));
                    }
                }
            }
        }
        None
    }
}

/// Stops counting a session against its token and its address (once: the entry
/// forgets both).
fn uncount(
    e: &mut Entry,
    tokens: &mut tokens::TokenTable,
    per_address: &mut HashMap<IpAddr, usize>,
) {
    if let Some(t) = e.token.take() {
        tokens.remove(&t);
    }
    if let Some(ip) = e.peer_ip.take() {
        if let Some(n) = per_address.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_address.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use crate::packet::{MIN_HELLO_LEN, VERSION};

    /// A hello from client session `sid`: with another version, or with our version
    /// and a Noise message that does not decrypt.
    fn bad_hello(sid: u64, version: u32) -> Vec<u8> {
        let mut d = vec![0u8; MIN_HELLO_LEN];
        d[0] = long::HELLO;
        d[1..5].copy_from_slice(&version.to_be_bytes());
        d[5..13].copy_from_slice(&sid.to_be_bytes());
        d[13..15].copy_from_slice(&100u16.to_be_bytes());
        for (i, b) in d[15..115].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(sid as u8);
        }
        d
    }

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, (i % 250) as u8 + 1], 1000 + i as u16))
    }

    #[test]
    fn stateless_answers_wait_in_a_bounded_queue() {
        let key = PrivateKey::generate_from(&mut StdRng::seed_from_u64(1));
        let server = Arc::new(ServerConfig::new(key));
        let mut ep = Endpoint::new(
            EndpointConfig {
                rng_seed: Some(2),
                ..EndpointConfig::default()
            },
            Some(server),
        );
        let now = Instant::now();
        // A flood of hellos that each earn an answer, with nobody draining the answers.
        let extra = 40;
        for i in 0..MAX_STATELESS_QUEUE + extra {
            ep.handle(now, addr(i), &mut bad_hello(i as u64 + 1, VERSION + 1));
        }
        for i in 0..extra {
            ep.handle(now, addr(i), &mut bad_hello(i as u64 + 10_000, VERSION));
        }
        let st = ep.stats();
        assert_eq!(
            st.hellos_rejected, extra as u64,
            "the hellos did not decrypt"
        );
        assert_eq!(st.answers_dropped, 2 * extra as u64);
        assert_eq!(st.datagrams_dropped, 0);
        let mut buf = Vec::new();
        let mut answers = Vec::new();
        while let Some(t) = ep.poll_transmit(now, &mut buf) {
            assert_eq!(t.size, buf.len());
            answers.push((t.destination, buf[0]));
        }
        assert_eq!(answers.len(), MAX_STATELESS_QUEUE);
        // The oldest are kept, in order.
        for (i, (to, ty)) in answers.iter().enumerate() {
            assert_eq!((*to, *ty), (addr(i), long::VERSION_MISMATCH));
        }
        // Drained, the queue takes answers again.
        ep.handle(now, addr(7), &mut bad_hello(20_000, VERSION));
        let t = ep.poll_transmit(now, &mut buf).expect("an answer");
        assert_eq!((t.destination, buf[0]), (addr(7), long::UNDECRYPTABLE));
        assert_eq!(ep.stats().answers_dropped, 2 * extra as u64);
        assert_eq!(ep.poll_transmit(now, &mut buf), None);
    }
}
