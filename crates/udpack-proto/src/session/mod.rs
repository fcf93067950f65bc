//! One session's state machine: handshake progress, packet protection, streams, flow
//! control, acknowledgements, loss recovery, congestion control, path validation and
//! the close sequence. Sans-IO: datagrams and time come in, datagrams, timers and
//! events come out.
//!
//! ```text
//!  client: Handshake --REPLY accept--> Established --close()/CLOSE--> Closing/Draining --linger--> Drained
//!               \--REPLY reject / UNDECRYPTABLE / timeout--> Drained
//!  server: (created on an accepted HELLO) Established --...--> Closing/Draining --> Drained
//! ```
//!
//! The linger of Closing and Draining is `max(3 PTO, 1 s)`.
//!
//! [`Session`] is composed of one sub-state per concern, each in its own file:
//!
//! | file | owns |
//! |---|---|
//! | `connect.rs` | hello retries, the cached reply, establishing |
//! | `streams.rs` / `stream_io.rs` | the stream map and limits; the peer's stream frames / the application's stream calls |
//! | `flow.rs` | one `CreditWindow` type for the session and each stream |
//! | `ack.rs` | all ACK policy: received ranges, delay, frequency, writing |
//! | `pending.rs` | control frames owed, what each packet carried, requeue on loss |
//! | `recv.rs` | a data packet in: replay check, decryption, frame dispatch |
//! | `key_update.rs` | key phases, key updates, the AEAD usage limits |
//! | `delivery.rs` | what the peer's ACKs mean for data, streams and the controller |
//! | `transmit.rs` | the send decision (window, pacer, app-limited) and packet assembly |
//! | `tail_copy.rs` | forward error correction: copies of app-limited tail packets |
//! | `packet_builder.rs` | the one path from header to sealed, recorded datagram |
//! | `path.rs` | the amplification limit, probing, migration |
//! | `close.rs` | GOAWAY, CLOSE, linger and repeats |
//! | `timers.rs` | the timer table: deadlines and what firing does |

mod ack;
mod close;
mod connect;
mod delivery;
mod error;
mod flow;
mod key_update;
mod packet_builder;
mod path;
mod path_mtu;
pub(crate) mod pending;
mod recv;
mod stream_io;
mod streams;
mod tail_copy;
mod timers;
mod transmit;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use error::{transport_error, CloseReason, HandshakeError, StreamError};

use crate::config::TransportConfig;
use crate::congestion::{Controller, DeliveryRate, Pacer};
use crate::datagram::DatagramBuf;
use crate::endpoint::TokenId;
use crate::handshake::TransportParams;
use crate::packet::ReplayWindow;
use crate::recovery::Recovery;
use crate::stream::StreamId;

use ack::AckState;
use close::CloseState;
use connect::Connect;
use flow::SessionFlow;
use key_update::SessionKeys;
use path::PathState;
use path_mtu::PathMtu;
use pending::PendingControl;
use streams::Streams;
use tail_copy::TailCopies;
use transmit::TransmitState;

/// Which end of the session this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed (client) or the session was accepted (server).
    Connected,
    /// The peer opened a stream; take it with [`Session::accept_stream`].
    StreamOpened(StreamId),
    /// A stream has bytes, its end, or a reset to read.
    StreamReadable(StreamId),
    /// A stream that refused a write has room again.
    StreamWritable(StreamId),
    /// Everything written to a finished stream was acknowledged.
    StreamFinished(StreamId),
    /// The peer raised our stream limit after [`StreamError::LimitReached`]: retry opens.
    StreamsAvailable,
    /// The peer asked us to stop sending on a stream; it was reset with `code`.
    StreamStopped { id: StreamId, code: u64 },
    /// The peer will open no new streams and accepts none; the session closes when the
    /// current streams are done.
    GoAway { code: u64, reason: String },
    /// The session ended.
    Closed(CloseReason),
}

/// Counters and estimates of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    /// Stream bytes sent again after a loss.
    pub bytes_retransmitted: u64,
    /// Packets declared lost that were acknowledged after all (reordering).
    pub spurious_losses: u64,
    /// Extra copies sent of app-limited tail packets (forward error correction).
    pub tail_copies: u64,
    /// Largest reordering seen: by how many packet numbers an acknowledgement came late.
    pub reordering: u64,
    /// Datagrams dropped: failed authentication, replays, undecodable.
    pub packets_dropped: u64,
    /// Key updates, started by either side (PROTOCOL.md §2.11).
    pub key_updates: u64,
    /// Stream bytes written by the application and delivered in order to the peer's reader.
    pub stream_bytes_sent: u64,
    pub stream_bytes_received: u64,
    pub smoothed_rtt: Duration,
    pub min_rtt: Duration,
    pub rtt_var: Duration,
    pub congestion_window: u64,
    pub bytes_in_flight: u64,
    /// Pacing rate in bytes per second.
    pub pacing_rate: u64,
    /// Latest delivery-rate sample in bytes per second.
    pub delivery_rate: u64,
    /// The datagram size in use on the path (path MTU discovery, PROTOCOL.md §7.5).
    pub datagram_size: u64,
    /// Path MTU probes declared lost: a size the path does not carry, not congestion;
    /// not counted in `packets_lost`.
    pub mtu_probes_lost: u64,
    /// Memory the session's receive buffers hold: at most the unread bytes plus two
    /// segments per stream, and the out-of-order chunks' overhead (PROTOCOL.md §5.7).
    pub receive_memory: u64,
    /// The congestion controller's phase ("startup", "probe-bw-cruise", "cubic", ...),
    /// for traces.
    pub congestion_phase: &'static str,
    /// The congestion controller shares the bottleneck with a flow that does not yield
    /// to the queue (BBR's competing mode, PROTOCOL.md §7.2), for traces.
    pub congestion_competing: bool,
    /// New stream bytes the peer's session-level credit still allows us to send.
    pub send_credit: u64,
    /// The least stream-level credit left among the streams we may still write to: the
    /// new bytes the peer's window lets us send beyond those sent (`u64::MAX` when
    /// there is no such stream). 0 means that stream cannot send until the peer's
    /// window moves, whatever congestion control allows.
    pub stream_send_credit: u64,
}

/// A datagram to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub size: usize,
    /// A path MTU probe, larger than the path may carry: send it on its own (in a GSO
    /// batch, a segment too large for the path fails the whole batch).
    pub mtu_probe: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Handshake,
    Established,
    /// We sent CLOSE; we answer what arrives with CLOSE until `until`.
    Closing {
        until: Instant,
    },
    /// The peer sent CLOSE; we stay quiet until `until`.
    Draining {
        until: Instant,
    },
    Drained,
}

/// One UDPack session.
pub struct Session {
    side: Side,
    state: State,
    local_sid: u64,
    remote_sid: u64,
    config: TransportConfig,
    peer_params: Option<TransportParams>,
    /// Server side: which token the client presented (a keyed hash, never the token).
    token_id: Option<TokenId>,
    keys: Option<SessionKeys>,
    replay: ReplayWindow,

    connect: Connect,
    path: PathState,
    mtu: PathMtu,
    ack: AckState,
    recovery: Recovery,
    cc: Box<dyn Controller>,
    rate: DeliveryRate,
    pacer: Pacer,
    transmit: TransmitState,
    tail: TailCopies,
    streams: Streams,
    flow: SessionFlow,
    pending: PendingControl,
    close: CloseState,
    idle_deadline: Option<Instant>,

    events: VecDeque<Event>,
    stats: SessionStats,
    rng: rand::rngs::StdRng,
    /// The latest time any input carried: used by application calls that need a clock.
    now: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("side", &self.side)
            .field("id", &format_args!("{:016x}", self.local_sid))
            .field("remote", &self.path.remote)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn new(
        side: Side,
        now: Instant,
        local_sid: u64,
        remote: SocketAddr,
        config: TransportConfig,
        rng: rand::rngs::StdRng,
    ) -> Self {
        let config = config.normalized();
        let path_mtu = PathMtu::new(
            config.initial_datagram_size,
            config.max_datagram_size,
            config.mtu_discovery,
        );
        let mtu = path_mtu.current();
        Session {
            side,
            state: State::Handshake,
            local_sid,
            remote_sid: 0,
            peer_params: None,
            token_id: None,
            keys: None,
            replay: ReplayWindow::default(),
            connect: Connect::default(),
            path: PathState::new(remote, side == Side::Client),
            mtu: path_mtu,
            ack: AckState::default(),
            recovery: Recovery::new(config.initial_rtt),
            cc: config.congestion.build(mtu),
            rate: DeliveryRate::new(now),
            pacer: Pacer::new(mtu, now).with_max_rate(config.max_send_rate),
            transmit: TransmitState::new(now),
            tail: TailCopies::default(),
            streams: Streams::new(config.max_concurrent_streams),
            flow: SessionFlow::new(config.initial_session_window, config.max_session_window),
            pending: PendingControl::default(),
            close: CloseState::default(),
            idle_deadline: None,
            events: VecDeque::new(),
            stats: SessionStats::default(),
            rng,
            now,
            config,
        }
    }

    // ---- accessors -------------------------------------------------------------

    /// Our session id: the one the peer puts in packets to us.
    pub fn id(&self) -> u64 {
        self.local_sid
    }

    /// The session id as 16 hex digits, as logs show it.
    pub fn id_str(&self) -> String {
        format!("{:016x}", self.local_sid)
    }

    /// Which end this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The peer's current (validated) address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.path.remote
    }

    /// Server side: the id of the token the client presented, a keyed hash that is
    /// the same for every session with that token at this endpoint (to count or
    /// limit per token); `None` on a client.
    pub fn token_id(&self) -> Option<TokenId> {
        self.token_id
    }

    /// True once the handshake completed and until the session closes.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// True once the session closed (closing, draining or drained).
    pub fn is_closed(&self) -> bool {
        !matches!(self.state, State::Handshake | State::Established)
    }

    /// True when the session can be forgotten.
    pub fn is_drained(&self) -> bool {
        self.state == State::Drained
    }

    /// Counters and estimates.
    pub fn stats(&self) -> SessionStats {
        let mut s = self.stats.clone();
        s.smoothed_rtt = self.recovery.rtt.smoothed();
        s.min_rtt = self.recovery.rtt.min();
        s.rtt_var = self.recovery.rtt.var();
        s.congestion_window = self.cc.window();
        s.bytes_in_flight = self.recovery.bytes_in_flight();
        s.pacing_rate = self.cc.pacing_rate().unwrap_or_else(|| {
            let srtt = self.recovery.rtt.smoothed().as_secs_f64().max(1e-3);
            (self.cc.window() as f64 / srtt) as u64
        });
        s.delivery_rate = self.rate.latest_rate();
        s.reordering = self.recovery.reordering_distance();
        s.key_updates = self.keys.as_ref().map_or(0, SessionKeys::updates);
        s.datagram_size = u64::from(self.mtu.current());
        s.receive_memory = self.streams.map.values().map(|st| st.recv.memory()).sum();
        s.congestion_phase = self.cc.phase();
        s.congestion_competing = self.cc.competing();
        s.send_credit = self.flow.send_credit();
        s.stream_send_credit = self
            .streams
            .map
            .values()
            .filter(|st| !st.finish_requested && st.reset_sent.is_none())
            .map(|st| st.send_max.saturating_sub(st.send.unsent()))
            .min()
            .unwrap_or(u64::MAX);
        s
    }

    /// Bytes buffered by this session: unacknowledged sends plus unread receives.
    pub fn buffered_bytes(&self) -> u64 {
        self.flow.buffered()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- output ----------------------------------------------------------------

    /// Writes the next datagram to send into `buf` (cleared first), if there is one
    /// now.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        buf.clear();
        self.poll_transmit_into(now, &mut DatagramBuf::new(buf))
    }

    /// Writes the next datagram into `buf`, if there is one now; leaves it empty
    /// otherwise.
    pub(crate) fn poll_transmit_into(
        &mut self,
        now: Instant,
        buf: &mut DatagramBuf<'_>,
    ) -> Option<Transmit> {
        self.now = self.now.max(now);
        if self.state == State::Established {
            self.check_send_limits(now);
            self.check_key_limits(now);
        }
        let t = match self.state {
            State::Handshake => self.transmit_hello(now, buf),
            State::Closing { .. } => self.transmit_close(now, buf),
            State::Draining { .. } | State::Drained => None,
            State::Established => self
                .transmit_reply(buf)
                .or_else(|| self.transmit_probe(now, buf))
                .or_else(|| self.transmit_mtu_probe(now, buf))
                .or_else(|| self.transmit_data(now, buf)),
        };
        if t.is_none() {
            buf.clear();
        }
        t
    }
}
