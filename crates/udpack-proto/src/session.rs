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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::RngCore;
use thiserror::Error;

use crate::coding::Reader;
use crate::config::{ClientConfig, TransportConfig};
use crate::congestion::{AckSample, Controller, DeliveryRate, LossSample, Pacer};
use crate::frame::{encode_ack, Frame, Frames, StreamFrame, MAX_REASON_LEN};
use crate::handshake::{hello_digest, ClientHandshake, Reply, TransportParams, HELLO_DIGEST_LEN};
use crate::packet::{encode_data_header, long, PacketKeys, ReplayWindow, DATA_HEADER_LEN, TAG_LEN};
use crate::range_set::RangeSet;
use crate::recovery::{AckOutcome, Recovery, SentFrames, SentPacket, StreamRange};
use crate::stream::{RecvBuffer, SendBuffer, StreamId};

/// Longest wait between two hellos: a lossy path still gets many tries before the
/// handshake timeout.
const MAX_HELLO_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest time a closing or draining session lingers: long enough for the peer's
/// retransmissions to reach us and be answered with CLOSE on a lossy path.
const MIN_CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Probe timeouts a new peer address gets to answer a PATH_CHALLENGE before it is
/// given up.
const PATH_PROBE_TRIES: u32 = 8;
/// Unprompted repeats of a CLOSE frame while closing.
const CLOSE_REPEATS: u8 = 4;
/// Credit is refreshed each time this fraction of a flow-control window is consumed.
const CREDIT_UPDATE_FRACTION: u64 = 4;
/// A flow-control window doubles when a refresh comes within this many smoothed RTTs
/// of the previous one.
const WINDOW_GROWTH_RTTS: u32 = 4;

/// Which end of the session this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// Transport error codes carried by CLOSE frames (application codes use APP_CLOSE).
pub mod transport_error {
    /// Closed without error.
    pub const NO_ERROR: u64 = 0x0;
    /// An internal error.
    pub const INTERNAL: u64 = 0x1;
    /// The peer sent more than the credit it was given.
    pub const FLOW_CONTROL: u64 = 0x3;
    /// The peer opened more streams than allowed.
    pub const STREAM_LIMIT: u64 = 0x4;
    /// A stream's final size changed or was exceeded.
    pub const FINAL_SIZE: u64 = 0x6;
    /// A frame could not be decoded.
    pub const FRAME_ENCODING: u64 = 0x7;
    /// The peer broke a protocol rule.
    pub const PROTOCOL_VIOLATION: u64 = 0xa;
}

/// Why a connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnectError {
    /// The server refused us (authenticated by its key): usually the token.
    #[error("rejected by the server (code {code}): {reason}")]
    Rejected { code: u64, reason: String },
    /// The server could not decrypt our hello: the pinned public key is probably not
    /// the server's.
    #[error("the server could not decrypt the hello: server key mismatch")]
    KeyMismatch,
    /// The server does not speak our protocol version.
    #[error("the server does not speak protocol version {0:#x}")]
    UnsupportedVersion(u32),
    /// No answer within the handshake timeout.
    #[error("no answer from the server in time")]
    TimedOut,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CloseReason {
    /// This side's application closed the session with `code`, or a GOAWAY this side
    /// sent first completed (with the code of that GOAWAY).
    #[error("closed locally (code {code}): {reason}")]
    Local { code: u64, reason: String },
    /// The peer's application closed the session with `code`, or a GOAWAY the peer
    /// sent first completed (with the code of that GOAWAY).
    #[error("closed by the peer (code {code}): {reason}")]
    Peer { code: u64, reason: String },
    /// A transport error ended the session; `by_peer` says who detected it.
    #[error("transport error {code:#x} ({}): {reason}", if *by_peer { "reported by the peer" } else { "detected locally" })]
    Transport {
        code: u64,
        reason: String,
        by_peer: bool,
    },
    /// Nothing was heard from the peer for the idle timeout.
    #[error("idle timeout")]
    TimedOut,
    /// The handshake did not complete.
    #[error("connect failed: {0}")]
    ConnectFailed(ConnectError),
}

impl CloseReason {
    /// The application code, when an application closed the session.
    pub fn code(&self) -> Option<u64> {
        match self {
            CloseReason::Local { code, .. } | CloseReason::Peer { code, .. } => Some(*code),
            _ => None,
        }
    }
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

/// Why a stream operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StreamError {
    /// Nothing to read, or no room to write, right now; wait for an event.
    #[error("would block")]
    Blocked,
    /// No such stream (never opened, or already done).
    #[error("unknown stream")]
    UnknownStream,
    /// Writing after `finish` or `reset`.
    #[error("stream already finished")]
    Finished,
    /// The peer reset the stream with this code.
    #[error("stream reset by the peer (code {0})")]
    Reset(u64),
    /// The peer does not want more data (STOP_SENDING with this code).
    #[error("peer stopped the stream (code {0})")]
    Stopped(u64),
    /// The peer's stream limit is reached; wait for [`Event::StreamsAvailable`].
    #[error("stream limit reached")]
    LimitReached,
    /// A GOAWAY was sent or received: no new streams.
    #[error("session is going away")]
    GoingAway,
    /// The session is closed.
    #[error("session closed")]
    SessionClosed,
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
    /// Datagrams dropped: failed authentication, replays, undecodable.
    pub packets_dropped: u64,
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
}

/// A datagram to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub size: usize,
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

#[derive(Debug, Default)]
struct StreamState {
    send: SendBuffer,
    /// Highest offset the peer lets us send.
    send_max: u64,
    finish_requested: bool,
    fin_sent: bool,
    fin_acked: bool,
    finished_reported: bool,
    /// We reset the stream with this code.
    reset_sent: Option<u64>,
    reset_acked: bool,
    /// The peer asked us to stop with this code.
    stopped_by_peer: Option<u64>,
    write_blocked: bool,
    in_send_queue: bool,

    recv: RecvBuffer,
    recv_window: u64,
    /// Credit given to the peer: highest offset it may send.
    recv_max_sent: u64,
    recv_window_updated: Option<Instant>,
    final_size: Option<u64>,
    /// The peer reset the stream with this code.
    reset_received: Option<u64>,
    /// The application saw the end (fin or reset).
    recv_done: bool,
    /// We sent STOP_SENDING with this code.
    stop_sent: Option<u64>,
    readable_reported: bool,
}

impl StreamState {
    fn send_done(&self) -> bool {
        (self.reset_sent.is_some() && self.reset_acked)
            || (self.finish_requested && self.fin_acked && self.send.all_acked())
    }

    /// The receive half is over: the application saw its end or stopped it, and the
    /// final size is known, so every byte the peer counts against the session credit
    /// has been counted here too.
    fn recv_finished(&self) -> bool {
        self.recv_done && self.final_size.is_some()
    }

    fn write_closed(&self) -> bool {
        self.finish_requested || self.reset_sent.is_some()
    }

    /// True if the stream has something for the packet builder.
    fn wants_send(&self) -> bool {
        if self.reset_sent.is_some() {
            return false;
        }
        self.send.has_retransmit()
            || (self.send.unsent() < self.send.end() && self.send.unsent() < self.send_max)
            || (self.finish_requested && !self.fin_sent && self.send.unsent() == self.send.end())
    }
}

#[derive(Debug, Default)]
struct PendingControl {
    max_data: bool,
    max_streams: bool,
    max_stream_data: BTreeSet<StreamId>,
    reset: BTreeSet<StreamId>,
    stop: BTreeSet<StreamId>,
    goaway: bool,
    ping: bool,
    path_response: Option<([u8; 8], SocketAddr)>,
}

impl PendingControl {
    fn any(&self) -> bool {
        self.max_data
            || self.max_streams
            || !self.max_stream_data.is_empty()
            || !self.reset.is_empty()
            || !self.stop.is_empty()
            || self.goaway
            || self.ping
            || self.path_response.is_some()
    }
}

/// A new peer address being validated.
#[derive(Debug)]
struct PathProbe {
    addr: SocketAddr,
    challenge: [u8; 8],
    bytes_received: u64,
    bytes_sent: u64,
    next_send: Instant,
    tries: u32,
}

/// One UDPack session.
pub struct Session {
    side: Side,
    state: State,
    local_sid: u64,
    remote_sid: u64,
    remote: SocketAddr,
    config: TransportConfig,
    peer_params: Option<TransportParams>,
    keys: Option<PacketKeys>,

    // Handshake (client): the hello to repeat, and when.
    handshake: Option<ClientHandshake>,
    hello: Vec<u8>,
    hello_due: Option<Instant>,
    hello_interval: Duration,
    connect_deadline: Option<Instant>,
    // Handshake (server): the reply to repeat until the client proves it has keys.
    reply: Option<Vec<u8>>,
    reply_due: bool,
    /// False until the peer's address is validated: sends are capped at 3x received.
    validated: bool,
    amp_received: u64,
    amp_sent: u64,

    replay: ReplayWindow,
    received: RangeSet,
    largest_received_time: Option<Instant>,
    ack_eliciting_unacked: u64,
    ack_deadline: Option<Instant>,
    ack_now: bool,

    recovery: Recovery,
    cc: Box<dyn Controller>,
    rate: DeliveryRate,
    pacer: Pacer,
    pacing_until: Option<Instant>,
    probes: u8,

    /// Ordered, so that iteration (and with it the send order) is deterministic.
    streams: BTreeMap<StreamId, StreamState>,
    send_queue: VecDeque<StreamId>,
    accept_queue: VecDeque<StreamId>,
    /// Streams we opened so far (next index).
    opened_local: u64,
    /// Streams the peer opened so far (next index).
    opened_remote: u64,
    /// Streams we may open in all (peer's MAX_STREAMS).
    max_local_streams: u64,
    /// Streams the peer may open in all (our MAX_STREAMS).
    max_remote_streams: u64,
    open_blocked: bool,

    // Session-level flow control.
    peer_max_data: u64,
    data_sent: u64,
    local_max_data: u64,
    session_window: u64,
    session_window_updated: Option<Instant>,
    data_received: u64,
    data_read: u64,
    send_buffered: u64,

    /// GOAWAY we sent (code, reason); `goaway_initiator` says we sent it first.
    goaway_sent: Option<(u64, String)>,
    goaway_initiator: bool,
    /// GOAWAY the peer sent: code, reason, and how many streams it opened in all.
    goaway_received: Option<(u64, String, u64)>,
    close_frame: Option<Frame>,
    close_resend: bool,
    /// Closing: when CLOSE is repeated unprompted, and how many repeats are left.
    close_repeat_at: Option<Instant>,
    close_repeats_left: u8,
    last_close_sent: Option<Instant>,

    probe: Option<PathProbe>,
    idle_deadline: Option<Instant>,
    last_ack_eliciting_sent: Instant,
    pending: PendingControl,
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
            .field("remote", &self.remote)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn max_datagram(config: &TransportConfig, peer: Option<&TransportParams>) -> usize {
    let ours = usize::from(config.max_datagram_size).max(1200);
    peer.map_or(ours, |p| ours.min(p.max_datagram_size as usize))
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
        let mtu = config.max_datagram_size.max(1200);
        Session {
            side,
            state: State::Handshake,
            local_sid,
            remote_sid: 0,
            remote,
            peer_params: None,
            keys: None,
            handshake: None,
            hello: Vec::new(),
            hello_due: None,
            hello_interval: Duration::ZERO,
            connect_deadline: None,
            reply: None,
            reply_due: false,
            validated: side == Side::Client,
            amp_received: 0,
            amp_sent: 0,
            replay: ReplayWindow::default(),
            received: RangeSet::new(),
            largest_received_time: None,
            ack_eliciting_unacked: 0,
            ack_deadline: None,
            ack_now: false,
            recovery: Recovery::new(config.initial_rtt),
            cc: config.congestion.build(mtu),
            rate: DeliveryRate::new(now),
            pacer: Pacer::new(mtu, now),
            pacing_until: None,
            probes: 0,
            streams: BTreeMap::new(),
            send_queue: VecDeque::new(),
            accept_queue: VecDeque::new(),
            opened_local: 0,
            opened_remote: 0,
            max_local_streams: 0,
            max_remote_streams: config.max_concurrent_streams,
            open_blocked: false,
            peer_max_data: 0,
            data_sent: 0,
            local_max_data: config.initial_session_window,
            session_window: config.initial_session_window,
            session_window_updated: None,
            data_received: 0,
            data_read: 0,
            send_buffered: 0,
            goaway_sent: None,
            goaway_initiator: false,
            goaway_received: None,
            close_frame: None,
            close_resend: false,
            close_repeat_at: None,
            close_repeats_left: 0,
            last_close_sent: None,
            probe: None,
            idle_deadline: None,
            last_ack_eliciting_sent: now,
            pending: PendingControl::default(),
            events: VecDeque::new(),
            stats: SessionStats::default(),
            rng,
            now,
            config,
        }
    }

    /// Our transport parameters, as announced in the handshake.
    pub(crate) fn local_params(config: &TransportConfig) -> TransportParams {
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
            &mut s.hello,
        ) {
            Ok(hs) => {
                s.handshake = Some(hs);
                s.hello_due = Some(now);
                s.hello_interval = config.hello_retry;
                s.connect_deadline = Some(now + config.handshake_timeout);
            }
            Err(e) => {
                // Only an over-long token can fail here; report it as a rejection.
                s.fail_connect(ConnectError::Rejected {
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
        rng: rand::rngs::StdRng,
    ) -> Self {
        let mut s = Session::new(Side::Server, now, local_sid, remote, config, rng);
        s.remote_sid = client_sid;
        s.keys = Some(keys);
        s.amp_received = hello_len as u64;
        s.reply = Some(reply);
        s.reply_due = true;
        s.establish(now, peer);
        s
    }

    fn establish(&mut self, now: Instant, peer: TransportParams) {
        self.state = State::Established;
        self.peer_max_data = peer.max_data;
        self.max_local_streams = peer.max_streams;
        self.peer_params = Some(peer);
        self.reset_idle(now);
        self.events.push_back(Event::Connected);
    }

    fn fail_connect(&mut self, e: ConnectError) {
        self.state = State::Drained;
        self.handshake = None;
        self.events
            .push_back(Event::Closed(CloseReason::ConnectFailed(e)));
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
        self.remote
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
        s
    }

    /// Bytes buffered by this session: unacknowledged sends plus unread receives.
    pub fn buffered_bytes(&self) -> u64 {
        self.send_buffered + self.data_received.saturating_sub(self.data_read)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- streams: application side ---------------------------------------------

    /// Opens a stream.
    pub fn open_stream(&mut self) -> Result<StreamId, StreamError> {
        match self.state {
            State::Established => {}
            State::Handshake => return Err(StreamError::Blocked),
            _ => return Err(StreamError::SessionClosed),
        }
        if self.goaway_sent.is_some() || self.goaway_received.is_some() {
            return Err(StreamError::GoingAway);
        }
        if self.opened_local >= self.max_local_streams {
            self.open_blocked = true;
            return Err(StreamError::LimitReached);
        }
        let id = StreamId::new(self.side == Side::Server, self.opened_local);
        self.opened_local += 1;
        let st = self.new_stream_state();
        self.streams.insert(id, st);
        Ok(id)
    }

    fn new_stream_state(&self) -> StreamState {
        let peer_stream_max = self.peer_params.map_or(0, |p| p.max_stream_data);
        StreamState {
            send_max: peer_stream_max,
            recv_window: self.config.initial_stream_window,
            recv_max_sent: self.config.initial_stream_window,
            ..StreamState::default()
        }
    }

    /// Takes the next stream the peer opened.
    pub fn accept_stream(&mut self) -> Option<StreamId> {
        self.accept_queue.pop_front()
    }

    /// How many bytes a write on `id` would take now.
    pub fn write_capacity(&self, id: StreamId) -> Result<u64, StreamError> {
        let st = self.streams.get(&id).ok_or(StreamError::UnknownStream)?;
        if let Some(code) = st.stopped_by_peer {
            return Err(StreamError::Stopped(code));
        }
        if st.write_closed() {
            return Err(StreamError::Finished);
        }
        if self.is_closed() {
            return Err(StreamError::SessionClosed);
        }
        let credit = st.send_max.saturating_sub(st.send.end());
        let buffer = self.config.send_buffer.saturating_sub(self.send_buffered);
        Ok(credit.min(buffer))
    }

    /// Writes bytes to a stream; returns how many were taken (maybe fewer than given).
    /// [`StreamError::Blocked`] means none were: wait for [`Event::StreamWritable`].
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, StreamError> {
        let cap = self.write_capacity(id)?;
        let n = (data.len() as u64).min(cap) as usize;
        self.write_bytes_inner(id, Bytes::copy_from_slice(&data[..n]), data.len())
    }

    /// Writes owned bytes without copying; returns how many were taken.
    pub fn write_bytes(&mut self, id: StreamId, mut data: Bytes) -> Result<usize, StreamError> {
        let cap = self.write_capacity(id)?;
        let want = data.len();
        data.truncate(cap.min(want as u64) as usize);
        self.write_bytes_inner(id, data, want)
    }

    fn write_bytes_inner(
        &mut self,
        id: StreamId,
        data: Bytes,
        want: usize,
    ) -> Result<usize, StreamError> {
        let n = data.len();
        let Some(st) = self.streams.get_mut(&id) else {
            return Err(StreamError::UnknownStream);
        };
        if n < want {
            st.write_blocked = true;
        }
        if n == 0 && want > 0 {
            return Err(StreamError::Blocked);
        }
        st.send.write(data);
        self.send_buffered += n as u64;
        self.stats.stream_bytes_sent += n as u64;
        Self::enqueue(&mut self.send_queue, id, st);
        Ok(n)
    }

    fn enqueue(queue: &mut VecDeque<StreamId>, id: StreamId, st: &mut StreamState) {
        if !st.in_send_queue && st.wants_send() {
            st.in_send_queue = true;
            queue.push_back(id);
        }
    }

    /// Ends the stream after the bytes written so far.
    pub fn finish(&mut self, id: StreamId) -> Result<(), StreamError> {
        let st = self
            .streams
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        if let Some(code) = st.stopped_by_peer {
            return Err(StreamError::Stopped(code));
        }
        if st.write_closed() {
            return Err(StreamError::Finished);
        }
        st.finish_requested = true;
        Self::enqueue(&mut self.send_queue, id, st);
        Ok(())
    }

    /// Abandons sending on the stream: buffered data is dropped and the peer is told
    /// `code` and the final size: the highest offset sent, so bytes written but never
    /// sent take no session credit on either side.
    pub fn reset(&mut self, id: StreamId, code: u64) -> Result<(), StreamError> {
        let st = self
            .streams
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        if st.reset_sent.is_some() || (st.fin_acked && st.send.all_acked()) {
            return Ok(());
        }
        self.send_buffered -= st.send.buffered();
        st.send.clear();
        st.reset_sent = Some(code);
        self.pending.reset.insert(id);
        Ok(())
    }

    /// Reads up to `max` in-order bytes. `Ok(None)` is the end of the stream.
    pub fn read(&mut self, id: StreamId, max: usize) -> Result<Option<Bytes>, StreamError> {
        let closed = self.is_closed();
        let st = self
            .streams
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        if let Some(code) = st.reset_received {
            st.recv_done = true;
            self.maybe_remove_stream(id);
            return Err(StreamError::Reset(code));
        }
        if let Some(data) = st.recv.read(max) {
            let n = data.len() as u64;
            self.data_read += n;
            self.stats.stream_bytes_received += n;
            self.after_read(id);
            return Ok(Some(data));
        }
        if st.final_size == Some(st.recv.read_offset()) {
            if !st.recv_done {
                st.recv_done = true;
                self.maybe_remove_stream(id);
            }
            return Ok(None);
        }
        st.readable_reported = false;
        if closed {
            return Err(StreamError::SessionClosed);
        }
        Err(StreamError::Blocked)
    }

    /// Tells the peer to stop sending on `id`; unread data is discarded, and so is
    /// what arrives later. The stream is kept until its final size is known (the
    /// peer answers with a reset), so that every byte the peer sent is counted as
    /// consumed and its session credit given back.
    pub fn stop(&mut self, id: StreamId, code: u64) -> Result<(), StreamError> {
        let st = self
            .streams
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        if st.recv_done || st.stop_sent.is_some() {
            return Ok(());
        }
        st.stop_sent = Some(code);
        st.recv_done = true;
        // Unread bytes count as consumed so the session's credit is not lost (and so do
        // the bytes that arrive later, up to the final size).
        let unread = st.recv.max_received().saturating_sub(st.recv.read_offset());
        st.recv.discard_to(st.recv.max_received());
        self.data_read += unread;
        self.pending.stop.insert(id);
        self.pending.max_stream_data.remove(&id);
        self.maybe_remove_stream(id);
        self.update_session_credit();
        Ok(())
    }

    fn after_read(&mut self, id: StreamId) {
        let srtt = self.recovery.rtt.smoothed();
        let now_hint = self.largest_received_time;
        let mtu = u64::from(self.config.max_datagram_size);
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        // Stream credit: refresh once a quarter of the window is consumed, so that one
        // lost update (or two) costs the sender nothing while the next is on its way.
        if st.final_size.is_none() {
            let read = st.recv.read_offset();
            if st.recv_max_sent.saturating_sub(read)
                < st.recv_window - st.recv_window / CREDIT_UPDATE_FRACTION
            {
                // The peer has used all its credit: the window, not the reader, limits.
                let peer_blocked = st.recv.max_received() + mtu >= st.recv_max_sent;
                if let (Some(now), Some(last)) = (now_hint, st.recv_window_updated) {
                    // A quarter of the window was used up within a few RTTs (losses stall
                    // reads for an RTT or more at a time): the path needs a bigger one.
                    if peer_blocked
                        || now.saturating_duration_since(last) < srtt * WINDOW_GROWTH_RTTS
                    {
                        st.recv_window = (st.recv_window * 2).min(self.config.max_stream_window);
                    }
                }
                st.recv_window_updated = now_hint;
                st.recv_max_sent = read + st.recv_window;
                self.pending.max_stream_data.insert(id);
            }
        }
        self.update_session_credit();
    }

    /// Session credit: refresh once a quarter of the window is consumed.
    /// Bytes count as consumed when the application reads them, and when it will never
    /// read them (the stream was stopped or reset).
    fn update_session_credit(&mut self) {
        let srtt = self.recovery.rtt.smoothed();
        let now_hint = self.largest_received_time;
        let mtu = u64::from(self.config.max_datagram_size);
        if self.local_max_data.saturating_sub(self.data_read)
            < self.session_window - self.session_window / CREDIT_UPDATE_FRACTION
        {
            let peer_blocked = self.data_received + mtu >= self.local_max_data;
            if let (Some(now), Some(last)) = (now_hint, self.session_window_updated) {
                if peer_blocked || now.saturating_duration_since(last) < srtt * WINDOW_GROWTH_RTTS {
                    self.session_window =
                        (self.session_window * 2).min(self.config.max_session_window);
                }
            }
            self.session_window_updated = now_hint;
            self.local_max_data = self.data_read + self.session_window;
            self.pending.max_data = true;
        }
    }

    fn maybe_remove_stream(&mut self, id: StreamId) {
        let Some(st) = self.streams.get(&id) else {
            return;
        };
        if !(st.send_done() && st.recv_finished()) {
            return;
        }
        if st.in_send_queue {
            self.send_queue.retain(|s| *s != id);
        }
        self.streams.remove(&id);
        self.pending.max_stream_data.remove(&id);
        if id.server_opened() != (self.side == Side::Server) && self.goaway_sent.is_none() {
            self.max_remote_streams += 1;
            self.pending.max_streams = true;
        }
        self.check_goaway_done();
    }

    // ---- lifecycle: application side -------------------------------------------

    /// Announces that this side opens and accepts no new streams; the session closes
    /// with `code` once every current stream is done (all data delivered both ways).
    pub fn goaway(&mut self, code: u64, reason: &str) {
        if self.is_closed() || self.goaway_sent.is_some() {
            return;
        }
        self.goaway_sent = Some((code, truncate_reason(reason)));
        self.goaway_initiator = self.goaway_received.is_none();
        self.pending.goaway = true;
        self.check_goaway_done();
    }

    /// Closes the session now with an application `code`; unsent data is dropped.
    pub fn close(&mut self, now: Instant, code: u64, reason: &str) {
        let reason = truncate_reason(reason);
        self.enter_closing(
            now,
            Frame::Close {
                app: true,
                code,
                reason: Bytes::copy_from_slice(reason.as_bytes()),
            },
            CloseReason::Local { code, reason },
        );
    }

    fn close_with_error(&mut self, now: Instant, code: u64, reason: &str) {
        tracing::debug!(target: "udpack", sid = %self.id_str(), code, reason, "transport error");
        self.enter_closing(
            now,
            Frame::Close {
                app: false,
                code,
                reason: Bytes::copy_from_slice(reason.as_bytes()),
            },
            CloseReason::Transport {
                code,
                reason: reason.to_string(),
                by_peer: false,
            },
        );
    }

    fn enter_closing(&mut self, now: Instant, frame: Frame, reason: CloseReason) {
        match self.state {
            State::Established => {}
            State::Handshake => {
                self.state = State::Drained;
                self.events.push_back(Event::Closed(reason));
                return;
            }
            _ => return,
        }
        let linger = self.close_linger();
        self.state = State::Closing {
            until: now + linger,
        };
        self.close_frame = Some(frame);
        self.close_resend = true;
        // A lost CLOSE would leave the peer waiting for its idle timeout: repeat it a
        // few times across the linger period, besides answering what arrives.
        self.close_repeats_left = CLOSE_REPEATS;
        self.close_repeat_at = Some(now + linger / u32::from(CLOSE_REPEATS + 1));
        self.recovery.clear();
        self.events.push_back(Event::Closed(reason));
    }

    /// How long Closing and Draining last: `max(3 PTO, 1 s)`.
    fn close_linger(&self) -> Duration {
        (self.recovery.rtt.pto(self.config.max_ack_delay) * 3).max(MIN_CLOSE_LINGER)
    }

    /// Closes the session once both sides sent GOAWAY, every stream the peer opened
    /// has arrived, and every stream is done both ways. Only the side that sent the
    /// first GOAWAY closes (and reports [`CloseReason::Local`]); the other side waits
    /// for its APP_CLOSE (and reports [`CloseReason::Peer`]), both with the code of
    /// that first GOAWAY.
    fn check_goaway_done(&mut self) {
        if self.state != State::Established
            || !self.goaway_initiator
            || !self.streams.is_empty()
            || self.pending.goaway
        {
            return;
        }
        let (Some((code, reason)), Some((_, _, peer_streams))) =
            (&self.goaway_sent, &self.goaway_received)
        else {
            return;
        };
        if self.opened_remote < *peer_streams {
            return;
        }
        let (code, reason) = (*code, reason.clone());
        self.enter_closing(
            self.now,
            Frame::Close {
                app: true,
                code,
                reason: Bytes::copy_from_slice(reason.as_bytes()),
            },
            CloseReason::Local {
                code,
                reason: reason.clone(),
            },
        );
    }

    // ---- input -----------------------------------------------------------------

    /// Handles a long-header packet addressed to this session (client side).
    pub(crate) fn handle_long(&mut self, now: Instant, remote: SocketAddr, ty: u8, body: &[u8]) {
        self.now = self.now.max(now);
        if self.side != Side::Client || self.state != State::Handshake || remote != self.remote {
            self.stats.packets_dropped += 1;
            return;
        }
        match ty {
            long::REPLY => {
                let Some(hs) = self.handshake.as_mut() else {
                    return;
                };
                match hs.on_reply(body) {
                    Ok(Reply::Accepted {
                        server_sid,
                        params,
                        keys,
                    }) => {
                        self.handshake = None;
                        self.hello = Vec::new();
                        self.hello_due = None;
                        self.connect_deadline = None;
                        self.remote_sid = server_sid;
                        self.keys = Some(*keys);
                        self.stats.packets_received += 1;
                        self.stats.bytes_received += body.len() as u64;
                        self.establish(now, params);
                        // Confirm at once so the server may send freely.
                        self.pending.ping = true;
                    }
                    Ok(Reply::Rejected { code, reason }) => {
                        self.fail_connect(ConnectError::Rejected { code, reason });
                    }
                    Err(_) => self.stats.packets_dropped += 1,
                }
            }
            long::UNDECRYPTABLE | long::VERSION_MISMATCH => {
                let mut r = Reader::new(body);
                let echoed = r.array::<HELLO_DIGEST_LEN>();
                if echoed.ok() != Some(hello_digest(&self.hello)) {
                    // Not an answer to our hello as we sent it: forged, or our hello
                    // was damaged on the way. Keep retrying.
                    self.stats.packets_dropped += 1;
                    return;
                }
                if ty == long::UNDECRYPTABLE {
                    self.fail_connect(ConnectError::KeyMismatch);
                } else {
                    let v = r.u32().unwrap_or(0);
                    self.fail_connect(ConnectError::UnsupportedVersion(v));
                }
            }
            _ => self.stats.packets_dropped += 1,
        }
    }

    /// The client repeated its hello: repeat our reply (server side).
    pub(crate) fn on_repeated_hello(&mut self, len: usize) {
        if self.reply.is_some() {
            self.amp_received += len as u64;
            self.reply_due = true;
        }
    }

    /// Handles a data packet addressed to this session. `datagram` is the whole
    /// datagram; the header has been parsed already.
    /// `scratch` is the endpoint's, reused for every ACK frame: processing one then
    /// allocates nothing, and idle sessions keep no vectors of their own for it.
    pub(crate) fn handle_data(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        number: u64,
        mut datagram: BytesMut,
        scratch: &mut AckOutcome,
    ) {
        self.now = self.now.max(now);
        let len = datagram.len();
        let Some(keys) = &self.keys else {
            self.stats.packets_dropped += 1;
            return;
        };
        if matches!(self.state, State::Draining { .. } | State::Drained) {
            return;
        }
        if !self.replay.check(number) {
            self.stats.packets_dropped += 1;
            return;
        }
        let Ok(plain) = keys.open(number, &mut datagram, DATA_HEADER_LEN) else {
            self.stats.packets_dropped += 1;
            return;
        };
        let largest_before = self.replay.largest();
        self.replay.accept(number);
        self.stats.packets_received += 1;
        self.stats.bytes_received += len as u64;
        self.reset_idle(now);

        if let State::Closing { .. } = self.state {
            // As below: an authentic packet from the peer's address proves it, so the
            // CLOSE answer is not held back by the amplification limit.
            if remote == self.remote {
                self.validated = true;
            }
            self.close_resend = true;
            return;
        }

        // The peer has our keys: its address is proven, our cached reply is moot.
        if self.side == Side::Server {
            self.reply = None;
            self.reply_due = false;
        }
        if remote == self.remote {
            if !self.validated {
                self.validated = true;
            }
        } else {
            self.on_new_address(now, remote, number, largest_before, len);
        }

        let out_of_order = largest_before.is_some_and(|l| number != l + 1);
        if largest_before.is_none_or(|l| number > l) {
            self.largest_received_time = Some(now);
        }
        self.received.insert(number..number + 1);
        if let Some(max) = self.received.max() {
            self.received
                .remove_below(max.saturating_sub(ReplayWindow::SIZE));
        }
        while self.received.len() > crate::frame::MAX_ACK_RANGES * 2 {
            if let Some(first) = self.received.first() {
                self.received.remove(first);
            }
        }

        let payload = datagram
            .freeze()
            .slice(DATA_HEADER_LEN..DATA_HEADER_LEN + plain);
        let mut eliciting = false;
        for frame in Frames::new(payload) {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    self.close_with_error(
                        now,
                        crate::session::transport_error::FRAME_ENCODING,
                        &e.to_string(),
                    );
                    return;
                }
            };
            eliciting |= frame.is_ack_eliciting();
            if let Err((code, reason)) = self.handle_frame(now, remote, frame, scratch) {
                self.close_with_error(now, code, reason);
                return;
            }
            if self.is_closed() {
                return;
            }
        }
        self.check_goaway_done();
        if eliciting {
            self.ack_eliciting_unacked += 1;
            if out_of_order || self.ack_eliciting_unacked >= self.config.ack_eliciting_threshold {
                self.ack_now = true;
            } else if self.ack_deadline.is_none() {
                self.ack_deadline = Some(now + self.config.max_ack_delay);
            }
        }
    }

    fn on_new_address(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        number: u64,
        largest_before: Option<u64>,
        len: usize,
    ) {
        if let Some(p) = self.probe.as_mut().filter(|p| p.addr == remote) {
            p.bytes_received += len as u64;
            return;
        }
        // Only the newest packets move the session: old reordered ones do not.
        if largest_before.is_some_and(|l| number < l) {
            return;
        }
        let mut challenge = [0u8; 8];
        self.rng.fill_bytes(&mut challenge);
        tracing::debug!(target: "udpack", sid = %self.id_str(), %remote, "validating new peer address");
        self.probe = Some(PathProbe {
            addr: remote,
            challenge,
            bytes_received: len as u64,
            bytes_sent: 0,
            next_send: now,
            tries: 0,
        });
    }

    fn handle_frame(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        frame: Frame,
        out: &mut AckOutcome,
    ) -> Result<(), (u64, &'static str)> {
        use transport_error::*;
        match frame {
            Frame::Padding | Frame::Ping => {}
            Frame::Ack(ack) => {
                let max_delay = self.peer_params.map_or(Duration::from_millis(25), |p| {
                    Duration::from_millis(p.max_ack_delay_ms)
                });
                let delay = Duration::from_micros(ack.delay_micros).min(max_delay);
                out.acked.clear();
                out.lost.clear();
                out.rtt_sample = None;
                if self.recovery.on_ack(now, &ack.ranges, delay, out).is_err() {
                    return Err((PROTOCOL_VIOLATION, "ack of an unsent packet"));
                }
                self.on_ack_outcome(now, out);
                // Lost packets are done with; do not keep their frames until the next ACK.
                out.lost.clear();
            }
            Frame::Stream(f) => self.on_stream_frame(f)?,
            Frame::ResetStream {
                id,
                code,
                final_size,
            } => {
                let id = StreamId(id);
                if !self.ensure_remote_stream(id)? {
                    return Ok(());
                }
                let Some(st) = self.streams.get_mut(&id) else {
                    return Ok(());
                };
                if st.final_size.is_some_and(|f| f != final_size)
                    || final_size < st.recv.max_received()
                {
                    return Err((FINAL_SIZE, "reset changes the final size"));
                }
                if final_size > st.recv_max_sent {
                    return Err((FLOW_CONTROL, "reset beyond stream credit"));
                }
                let stopped = st.stop_sent.is_some();
                if st.reset_received.is_some() || (st.recv_done && !stopped) {
                    return Ok(());
                }
                // The final size counts against the session credit, as the peer counted
                // it when it sent those bytes.
                let new = final_size - st.recv.max_received();
                self.data_received += new;
                if self.data_received > self.local_max_data {
                    return Err((FLOW_CONTROL, "reset beyond session credit"));
                }
                // Bytes the application will never read give their credit back (after
                // stop(), those up to the highest offset received did already).
                let unread = final_size - st.recv.read_offset();
                st.final_size = Some(final_size);
                st.recv.discard_to(final_size);
                self.data_read += unread;
                self.pending.max_stream_data.remove(&id);
                if stopped {
                    self.maybe_remove_stream(id);
                } else {
                    st.reset_received = Some(code);
                    self.report_readable(id);
                }
                self.update_session_credit();
            }
            Frame::StopSending { id, code } => {
                let id = StreamId(id);
                if !self.ensure_remote_stream(id)? {
                    return Ok(());
                }
                if let Some(st) = self.streams.get_mut(&id) {
                    if st.stopped_by_peer.is_none() {
                        st.stopped_by_peer = Some(code);
                        let _ = self.reset(id, code);
                        self.events.push_back(Event::StreamStopped { id, code });
                    }
                }
            }
            Frame::MaxData(v) => {
                if v > self.peer_max_data {
                    self.peer_max_data = v;
                    self.requeue_blocked_streams();
                }
            }
            Frame::MaxStreamData { id, max } => {
                let id = StreamId(id);
                if !self.ensure_remote_stream(id)? {
                    return Ok(());
                }
                if let Some(st) = self.streams.get_mut(&id) {
                    if max > st.send_max {
                        st.send_max = max;
                        Self::enqueue(&mut self.send_queue, id, st);
                        if st.write_blocked {
                            st.write_blocked = false;
                            self.events.push_back(Event::StreamWritable(id));
                        }
                    }
                }
            }
            Frame::MaxStreams(v) => {
                if v > self.max_local_streams {
                    self.max_local_streams = v;
                    if self.open_blocked {
                        self.open_blocked = false;
                        self.events.push_back(Event::StreamsAvailable);
                    }
                }
            }
            Frame::PathChallenge(data) => {
                self.pending.path_response = Some((data, remote));
            }
            Frame::PathResponse(data) => {
                if let Some(p) = self.probe.take() {
                    if p.challenge == data {
                        tracing::debug!(target: "udpack", sid = %self.id_str(), to = %p.addr, "peer address validated; session moved");
                        self.remote = p.addr;
                        self.validated = true;
                    } else {
                        self.probe = Some(p);
                    }
                }
            }
            Frame::GoAway {
                code,
                streams,
                reason,
            } => {
                if self.goaway_received.is_none() {
                    let reason = String::from_utf8_lossy(&reason).into_owned();
                    self.goaway_received = Some((code, reason.clone(), streams));
                    if self.goaway_sent.is_none() {
                        // Answer with ours, so the peer knows how many streams to expect.
                        self.goaway_sent = Some((code, reason.clone()));
                        self.pending.goaway = true;
                    }
                    self.events.push_back(Event::GoAway { code, reason });
                }
            }
            Frame::Close { app, code, reason } => {
                let reason = String::from_utf8_lossy(&reason).into_owned();
                let why = if app {
                    CloseReason::Peer { code, reason }
                } else {
                    CloseReason::Transport {
                        code,
                        reason,
                        by_peer: true,
                    }
                };
                let until = now + self.close_linger();
                self.state = State::Draining { until };
                self.recovery.clear();
                self.events.push_back(Event::Closed(why));
            }
        }
        Ok(())
    }

    /// Makes sure a stream named by the peer exists (opening peer streams up to it).
    /// Returns false when the stream is already gone (a late frame to ignore).
    fn ensure_remote_stream(&mut self, id: StreamId) -> Result<bool, (u64, &'static str)> {
        if self.streams.contains_key(&id) {
            return Ok(true);
        }
        let ours = id.server_opened() == (self.side == Side::Server);
        if ours {
            if id.index() >= self.opened_local {
                return Err((
                    transport_error::PROTOCOL_VIOLATION,
                    "frame for a stream we never opened",
                ));
            }
            return Ok(false);
        }
        if id.index() < self.opened_remote {
            return Ok(false);
        }
        if id.index() >= self.max_remote_streams {
            return Err((transport_error::STREAM_LIMIT, "too many streams"));
        }
        while self.opened_remote <= id.index() {
            let new = StreamId::new(self.side == Side::Client, self.opened_remote);
            self.opened_remote += 1;
            let st = self.new_stream_state();
            self.streams.insert(new, st);
            // After our GOAWAY the peer opens no more; streams it opened before it
            // heard (within the credit it had) are served as usual.
            self.accept_queue.push_back(new);
            self.events.push_back(Event::StreamOpened(new));
        }
        Ok(self.streams.contains_key(&id))
    }

    fn on_stream_frame(&mut self, f: StreamFrame) -> Result<(), (u64, &'static str)> {
        use transport_error::*;
        let id = StreamId(f.id);
        if !self.ensure_remote_stream(id)? {
            return Ok(());
        }
        let Some(st) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        let end = f.offset + f.data.len() as u64;
        if end > st.recv_max_sent {
            return Err((FLOW_CONTROL, "stream data beyond credit"));
        }
        if let Some(fs) = st.final_size {
            if end > fs || (f.fin && end != fs) {
                return Err((FINAL_SIZE, "data beyond the final size"));
            }
        }
        if f.fin {
            if end < st.recv.max_received() {
                return Err((FINAL_SIZE, "final size below received data"));
            }
            st.final_size = Some(end);
        }
        if st.reset_received.is_some() {
            // The final size was counted when the reset arrived.
            return Ok(());
        }
        let grew = end.saturating_sub(st.recv.max_received());
        self.data_received += grew;
        if self.data_received > self.local_max_data {
            return Err((FLOW_CONTROL, "data beyond session credit"));
        }
        if st.stop_sent.is_some() {
            // Discarded on arrival: consumed as far as the session credit goes.
            let unread = end.saturating_sub(st.recv.read_offset());
            st.recv.discard_to(end);
            let final_known = st.final_size.is_some();
            self.data_read += unread;
            if final_known {
                self.maybe_remove_stream(id);
            }
            self.update_session_credit();
            return Ok(());
        }
        st.recv.insert(f.offset, f.data);
        if st.final_size.is_some() {
            self.pending.max_stream_data.remove(&id);
        }
        if st.recv.readable() || st.final_size == Some(st.recv.read_offset()) {
            self.report_readable(id);
        }
        Ok(())
    }

    fn report_readable(&mut self, id: StreamId) {
        if let Some(st) = self.streams.get_mut(&id) {
            if !st.readable_reported {
                st.readable_reported = true;
                self.events.push_back(Event::StreamReadable(id));
            }
        }
    }

    fn requeue_blocked_streams(&mut self) {
        for (id, st) in self.streams.iter_mut() {
            Self::enqueue(&mut self.send_queue, *id, st);
            if st.write_blocked {
                st.write_blocked = false;
                self.events.push_back(Event::StreamWritable(*id));
            }
        }
    }

    fn on_ack_outcome(&mut self, now: Instant, out: &mut AckOutcome) {
        let mut acked_bytes = 0u64;
        let mut largest_sent = None;
        for (_, p) in &out.acked {
            if p.in_flight {
                acked_bytes += u64::from(p.size);
            }
            if let Some(r) = &p.rate {
                self.rate.on_acked(now, r);
            }
            largest_sent = Some(p.time);
        }
        let lost_any = !out.lost.is_empty();
        if lost_any {
            self.on_lost(now, &out.lost);
        }
        for (_, p) in out.acked.drain(..) {
            self.on_packet_acked(p.frames);
        }
        if let Some(largest_acked_sent) = largest_sent {
            let min_rtt = self
                .recovery
                .rtt
                .has_sample()
                .then(|| self.recovery.rtt.min());
            let sample = AckSample {
                acked_bytes,
                bytes_in_flight: self.recovery.bytes_in_flight(),
                largest_acked_sent,
                latest_rtt: out.rtt_sample,
                smoothed_rtt: self.recovery.rtt.smoothed(),
                min_rtt: self.recovery.rtt.min(),
                rate: self.rate.take_sample(min_rtt),
            };
            self.cc.on_ack(now, &sample);
        }
    }

    fn on_packet_acked(&mut self, frames: SentFrames) {
        let SentFrames {
            stream,
            more_stream,
            reset,
            largest_acked,
            ..
        } = frames;
        // The peer has seen our ACK up to there: stop repeating those ranges.
        if let Some(l) = largest_acked {
            self.received.remove_below(l + 1);
        }
        for r in stream.into_iter().chain(more_stream) {
            let Some(st) = self.streams.get_mut(&r.id) else {
                continue;
            };
            let before = st.send.buffered();
            st.send.on_ack(r.range);
            let freed = before - st.send.buffered();
            self.send_buffered -= freed;
            if r.fin {
                st.fin_acked = true;
            }
            if st.write_blocked && freed > 0 {
                st.write_blocked = false;
                self.events.push_back(Event::StreamWritable(r.id));
            }
            if st.finish_requested && st.fin_acked && st.send.all_acked() && !st.finished_reported {
                st.finished_reported = true;
                self.events.push_back(Event::StreamFinished(r.id));
            }
            self.maybe_remove_stream(r.id);
        }
        for id in reset {
            if let Some(st) = self.streams.get_mut(&id) {
                st.reset_acked = true;
                self.maybe_remove_stream(id);
            }
        }
        // Buffer space freed on one stream may unblock writers on others.
        if self.send_buffered < self.config.send_buffer {
            for (id, st) in self.streams.iter_mut() {
                if st.write_blocked && st.send_max > st.send.end() {
                    st.write_blocked = false;
                    self.events.push_back(Event::StreamWritable(*id));
                }
            }
        }
    }

    fn on_lost(&mut self, now: Instant, lost: &[(u64, SentPacket)]) {
        let mut lost_bytes = 0;
        let mut largest_lost_sent = None;
        for (_, p) in lost {
            self.stats.packets_lost += 1;
            if p.in_flight {
                lost_bytes += u64::from(p.size);
            }
            largest_lost_sent = Some(p.time);
            self.requeue_frames(&p.frames);
        }
        if let Some(largest_lost_sent) = largest_lost_sent {
            let persistent = self.recovery.is_persistent(lost, self.config.max_ack_delay);
            self.cc.on_loss(
                now,
                &LossSample {
                    lost_bytes,
                    largest_lost_sent,
                    bytes_in_flight: self.recovery.bytes_in_flight(),
                    persistent,
                },
            );
        }
    }

    /// Queues again what a lost (or probed) packet carried.
    fn requeue_frames(&mut self, f: &SentFrames) {
        for r in f.stream_ranges() {
            let Some(st) = self.streams.get_mut(&r.id) else {
                continue;
            };
            if st.reset_sent.is_some() {
                continue;
            }
            st.send.on_lost(r.range.clone());
            if r.fin && !st.fin_acked {
                st.fin_sent = false;
            }
            Self::enqueue(&mut self.send_queue, r.id, st);
        }
        if f.max_data {
            self.pending.max_data = true;
        }
        if f.max_streams {
            self.pending.max_streams = true;
        }
        for id in &f.max_stream_data {
            if self
                .streams
                .get(id)
                .is_some_and(|s| s.final_size.is_none() && !s.recv_done)
            {
                self.pending.max_stream_data.insert(*id);
            }
        }
        for id in &f.reset {
            if self.streams.get(id).is_some_and(|s| !s.reset_acked) {
                self.pending.reset.insert(*id);
            }
        }
        for id in &f.stop {
            if self.streams.contains_key(id) {
                self.pending.stop.insert(*id);
            }
        }
        if f.goaway {
            self.pending.goaway = true;
        }
    }

    // ---- timers ----------------------------------------------------------------

    fn reset_idle(&mut self, now: Instant) {
        let ours = self.config.idle_timeout;
        let theirs = self
            .peer_params
            .map(|p| Duration::from_millis(p.idle_timeout_ms))
            .filter(|d| !d.is_zero());
        let t = match (ours.is_zero(), theirs) {
            (true, None) => return,
            (true, Some(t)) => t,
            (false, Some(t)) => ours.min(t),
            (false, None) => ours,
        };
        // Never shorter than 3 PTOs, so a few lost packets do not end the session.
        let floor = self.recovery.rtt.pto(self.config.max_ack_delay) * 3;
        self.idle_deadline = Some(now + t.max(floor));
    }

    fn keepalive_deadline(&self) -> Option<Instant> {
        // A PING already queued (the window or the amplification limit holds it back)
        // needs no timer: a deadline left in the past would make the timer fire
        // again and again without progress.
        if self.state != State::Established || self.pending.ping {
            return None;
        }
        self.config
            .keepalive
            .map(|k| self.last_ack_eliciting_sent + k)
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut add = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        match self.state {
            State::Handshake => {
                add(self.hello_due);
                add(self.connect_deadline);
            }
            State::Established => {
                add(self.ack_deadline);
                add(self.recovery.timer(self.config.max_ack_delay));
                add(self.idle_deadline);
                add(self.keepalive_deadline());
                add(self.pacing_until);
                add(self.probe.as_ref().map(|p| p.next_send));
            }
            State::Closing { until } => {
                add(Some(until));
                add(self.close_repeat_at);
            }
            State::Draining { until } => add(Some(until)),
            State::Drained => {}
        }
        t
    }

    /// Fires the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        match self.state {
            State::Handshake => {
                if self.connect_deadline.is_some_and(|d| now >= d) {
                    self.fail_connect(ConnectError::TimedOut);
                }
                return;
            }
            State::Closing { until } | State::Draining { until } => {
                if now >= until {
                    self.state = State::Drained;
                }
                return;
            }
            State::Drained => return,
            State::Established => {}
        }
        if self.idle_deadline.is_some_and(|d| now >= d) {
            self.state = State::Drained;
            self.recovery.clear();
            self.events.push_back(Event::Closed(CloseReason::TimedOut));
            return;
        }
        if self.pacing_until.is_some_and(|t| now >= t) {
            self.pacing_until = None;
        }
        if self
            .recovery
            .timer(self.config.max_ack_delay)
            .is_some_and(|t| now >= t)
        {
            let mut lost = Vec::new();
            let probe = self.recovery.on_timeout(now, &mut lost);
            if !lost.is_empty() {
                self.on_lost(now, &lost);
            }
            if probe {
                self.probes = 2;
                // Resend the oldest data too, in case the probe is all that gets through.
                if let Some(p) = self.recovery.oldest_unacked() {
                    let frames = p.frames.clone();
                    self.requeue_frames(&frames);
                }
                self.pending.ping = true;
            }
        }
        if self.keepalive_deadline().is_some_and(|t| now >= t) {
            self.pending.ping = true;
        }
    }

    // ---- output ----------------------------------------------------------------

    /// Writes the next datagram to send into `buf`, if there is one now.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.now = self.now.max(now);
        buf.clear();
        match self.state {
            State::Handshake => {
                if self.hello_due.is_some_and(|t| now >= t) {
                    buf.extend_from_slice(&self.hello);
                    self.hello_due = Some(now + self.hello_interval);
                    self.hello_interval = (self.hello_interval * 2).min(MAX_HELLO_INTERVAL);
                    self.stats.packets_sent += 1;
                    self.stats.bytes_sent += buf.len() as u64;
                    return Some(Transmit {
                        destination: self.remote,
                        size: buf.len(),
                    });
                }
                return None;
            }
            State::Closing { .. } => return self.transmit_close(now, buf),
            State::Draining { .. } | State::Drained => return None,
            State::Established => {}
        }
        if self.reply_due {
            if let Some(reply) = &self.reply {
                self.reply_due = false;
                let budget = (self.amp_received * 3).saturating_sub(self.amp_sent);
                if reply.len() as u64 <= budget {
                    buf.extend_from_slice(reply);
                    self.amp_sent += reply.len() as u64;
                    self.stats.packets_sent += 1;
                    self.stats.bytes_sent += buf.len() as u64;
                    return Some(Transmit {
                        destination: self.remote,
                        size: buf.len(),
                    });
                }
            }
        }
        if let Some(t) = self.transmit_probe(now, buf) {
            return Some(t);
        }
        self.transmit_data(now, buf)
    }

    fn transmit_close(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        if self.close_repeat_at.is_some_and(|t| now >= t) {
            self.close_resend = true;
            self.close_repeats_left = self.close_repeats_left.saturating_sub(1);
            self.close_repeat_at = match (self.close_repeats_left, &self.state) {
                (0, _) => None,
                (_, State::Closing { .. }) => {
                    Some(now + self.close_linger() / u32::from(CLOSE_REPEATS + 1))
                }
                _ => None,
            };
        }
        if !self.close_resend {
            return None;
        }
        // At most one CLOSE per 50 ms however much the peer sends.
        if self
            .last_close_sent
            .is_some_and(|t| now < t + Duration::from_millis(50))
        {
            return None;
        }
        let frame = self.close_frame.clone()?;
        let keys = self.keys.as_ref()?;
        let pn = self.recovery.next_packet_number();
        encode_data_header(buf, self.remote_sid, pn);
        // The last ACK rides along: the peer learns its final data arrived.
        let delay = self
            .largest_received_time
            .map_or(0, |t| now.saturating_duration_since(t).as_micros() as u64);
        encode_ack(buf, &self.received, delay, 200);
        frame.encode(buf);
        keys.seal(pn, buf, DATA_HEADER_LEN);
        if !self.validated {
            // An unproven address gets at most three times what it sent, CLOSE included.
            let budget = (self.amp_received * 3).saturating_sub(self.amp_sent);
            if buf.len() as u64 > budget {
                // Still owed: it goes out once the peer proves its address.
                buf.clear();
                return None;
            }
            self.amp_sent += buf.len() as u64;
        }
        self.close_resend = false;
        self.last_close_sent = Some(now);
        self.recovery.on_sent(SentPacket {
            time: now,
            size: buf.len() as u16,
            ack_eliciting: false,
            in_flight: false,
            rate: None,
            frames: SentFrames::default(),
        });
        self.recovery.clear();
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += buf.len() as u64;
        Some(Transmit {
            destination: self.remote,
            size: buf.len(),
        })
    }

    /// A PATH_CHALLENGE (with a PATH_RESPONSE if one is owed) to an address being validated.
    fn transmit_probe(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let probe = self.probe.as_mut()?;
        if now < probe.next_send {
            return None;
        }
        let keys = self.keys.as_ref()?;
        if probe.tries >= PATH_PROBE_TRIES {
            // The address never answered: stay where we were.
            self.probe = None;
            return None;
        }
        let size = DATA_HEADER_LEN + 1 + 8 + 1 + 8 + TAG_LEN;
        if probe.bytes_sent + size as u64 > probe.bytes_received * 3 {
            // Wait for the peer to send more from there. The wait counts as a try, so
            // an address that stays silent is given up like one that does not answer.
            probe.tries += 1;
            probe.next_send = now + self.recovery.rtt.pto(self.config.max_ack_delay);
            return None;
        }
        let pn = self.recovery.next_packet_number();
        encode_data_header(buf, self.remote_sid, pn);
        Frame::PathChallenge(probe.challenge).encode(buf);
        if let Some((data, addr)) = self.pending.path_response {
            if addr == probe.addr {
                Frame::PathResponse(data).encode(buf);
                self.pending.path_response = None;
            }
        }
        keys.seal(pn, buf, DATA_HEADER_LEN);
        probe.bytes_sent += buf.len() as u64;
        probe.tries += 1;
        probe.next_send = now + self.recovery.rtt.pto(self.config.max_ack_delay);
        let dest = probe.addr;
        self.recovery.on_sent(SentPacket {
            time: now,
            size: buf.len() as u16,
            ack_eliciting: true,
            in_flight: false,
            rate: None,
            frames: SentFrames::default(),
        });
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += buf.len() as u64;
        Some(Transmit {
            destination: dest,
            size: buf.len(),
        })
    }

    fn ack_wanted(&self, now: Instant) -> bool {
        self.ack_now || self.ack_deadline.is_some_and(|t| now >= t)
    }

    fn has_stream_data(&self) -> bool {
        !self.send_queue.is_empty()
    }

    fn transmit_data(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let mtu = max_datagram(&self.config, self.peer_params.as_ref());
        let mut limit = mtu;
        if !self.validated {
            let budget = (self.amp_received * 3).saturating_sub(self.amp_sent);
            limit = limit.min(budget as usize);
            if limit < DATA_HEADER_LEN + TAG_LEN + 16 {
                // Only input (more bytes from the peer, or its address validated) lifts
                // the limit: an ACK that came due waits for that as owed at once, not
                // as a timer left in the past that would fire without end.
                if self.ack_deadline.is_some_and(|t| now >= t) {
                    self.ack_deadline = None;
                    self.ack_now = true;
                }
                return None;
            }
        }
        let ack_wanted = self.ack_wanted(now);
        let want_eliciting = self.pending.any() || self.has_stream_data();
        let mut may_elicit = false;
        if want_eliciting {
            let in_flight = self.recovery.bytes_in_flight();
            let window_open = in_flight + mtu as u64 <= self.cc.window();
            if self.probes > 0 {
                may_elicit = true;
            } else if window_open {
                let srtt = self.recovery.rtt.smoothed();
                match self.pacer.delay(
                    now,
                    mtu as u64,
                    self.cc.pacing_rate(),
                    self.cc.window(),
                    srtt,
                ) {
                    Some(t) if t > now => self.pacing_until = Some(t),
                    _ => may_elicit = true,
                }
            }
        } else if self.recovery.bytes_in_flight() < self.cc.window() {
            self.cc.on_app_limited(self.recovery.bytes_in_flight());
            self.rate.on_app_limited(self.recovery.bytes_in_flight());
        }
        if !may_elicit && !ack_wanted {
            return None;
        }
        self.keys.as_ref()?;
        let pn = self.recovery.next_packet_number();
        encode_data_header(buf, self.remote_sid, pn);
        let max_payload = limit - TAG_LEN;
        let mut frames = SentFrames::default();
        let mut eliciting = false;

        // ACK first: it keeps the peer's clock running. Only when something that asks
        // for one arrived: the peer's own ACK-only packets are never acknowledged.
        let ack_owed = ack_wanted || self.ack_eliciting_unacked > 0;
        if !self.received.is_empty() && ack_owed {
            let delay = self
                .largest_received_time
                .map_or(0, |t| now.saturating_duration_since(t).as_micros() as u64);
            if encode_ack(buf, &self.received, delay, max_payload - buf.len()) {
                frames.largest_acked = self.received.max();
            }
        }
        if may_elicit {
            eliciting |= self.write_control_frames(buf, max_payload, &mut frames);
            eliciting |= self.write_stream_frames(buf, max_payload, &mut frames);
            if !eliciting && self.probes > 0 {
                Frame::Ping.encode(buf);
                eliciting = true;
            }
            if !eliciting {
                // Allowed to send but nothing was sendable (flow control holds the
                // queued data): the rate samples now understate the path.
                self.cc.on_app_limited(self.recovery.bytes_in_flight());
                self.rate.on_app_limited(self.recovery.bytes_in_flight());
            }
        }
        // An ACK alone goes out only when one is due (flow-control-blocked streams
        // must not turn into a stream of ACK-only packets).
        if !eliciting && (!ack_wanted || frames.largest_acked.is_none()) {
            buf.clear();
            return None;
        }
        // A receiver that only sends ACKs asks for an ACK of them about once per RTT, so
        // that it learns what the peer has seen and its ACK frames stay short.
        if !eliciting
            && self.received.len() > 1
            && now.saturating_duration_since(self.last_ack_eliciting_sent)
                >= self.recovery.rtt.smoothed()
            && buf.len() < max_payload
        {
            Frame::Ping.encode(buf);
            eliciting = true;
        }
        if frames.largest_acked.is_some() {
            self.ack_now = false;
            self.ack_deadline = None;
            self.ack_eliciting_unacked = 0;
        }
        self.keys.as_ref()?.seal(pn, buf, DATA_HEADER_LEN);
        let size = buf.len();
        if !self.validated {
            self.amp_sent += size as u64;
        }
        let rate = eliciting.then(|| {
            self.rate
                .on_sent(now, size as u64, self.recovery.bytes_in_flight())
        });
        let sent_goaway = frames.goaway;
        self.recovery.on_sent(SentPacket {
            time: now,
            size: size as u16,
            ack_eliciting: eliciting,
            in_flight: eliciting,
            rate,
            frames,
        });
        if eliciting {
            self.cc
                .on_sent(now, size as u64, self.recovery.bytes_in_flight());
            self.pacer.on_sent(now, size as u64);
            self.last_ack_eliciting_sent = now;
            self.probes = self.probes.saturating_sub(1);
        }
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += size as u64;
        if sent_goaway {
            // Our GOAWAY was the last thing the close waited for, maybe.
            self.check_goaway_done();
        }
        Some(Transmit {
            destination: self.remote,
            size,
        })
    }

    /// Writes pending control frames that fit; returns true if any was written.
    fn write_control_frames(
        &mut self,
        buf: &mut Vec<u8>,
        max: usize,
        sent: &mut SentFrames,
    ) -> bool {
        let start = buf.len();
        let room = |buf: &Vec<u8>, f: &Frame| buf.len() + f.encoded_len() <= max;
        if let Some((data, addr)) = self.pending.path_response {
            let f = Frame::PathResponse(data);
            if addr == self.remote && room(buf, &f) {
                f.encode(buf);
                self.pending.path_response = None;
            } else if addr != self.remote && self.probe.as_ref().is_none_or(|p| p.addr != addr) {
                // Answer from an address we are not validating: not worth a packet.
                self.pending.path_response = None;
            }
        }
        if self.pending.max_data {
            let f = Frame::MaxData(self.local_max_data);
            if room(buf, &f) {
                f.encode(buf);
                self.pending.max_data = false;
                sent.max_data = true;
            }
        }
        if self.pending.max_streams {
            let f = Frame::MaxStreams(self.max_remote_streams);
            if room(buf, &f) {
                f.encode(buf);
                self.pending.max_streams = false;
                sent.max_streams = true;
            }
        }
        while let Some(&id) = self.pending.max_stream_data.first() {
            let Some(st) = self.streams.get(&id) else {
                self.pending.max_stream_data.remove(&id);
                continue;
            };
            let f = Frame::MaxStreamData {
                id: id.0,
                max: st.recv_max_sent,
            };
            if !room(buf, &f) {
                break;
            }
            f.encode(buf);
            self.pending.max_stream_data.remove(&id);
            sent.max_stream_data.push(id);
        }
        while let Some(&id) = self.pending.reset.first() {
            let Some(st) = self.streams.get(&id) else {
                self.pending.reset.remove(&id);
                continue;
            };
            let f = Frame::ResetStream {
                id: id.0,
                code: st.reset_sent.unwrap_or(0),
                final_size: st.send.end(),
            };
            if !room(buf, &f) {
                break;
            }
            f.encode(buf);
            self.pending.reset.remove(&id);
            sent.reset.push(id);
        }
        while let Some(&id) = self.pending.stop.first() {
            let Some(st) = self.streams.get(&id) else {
                self.pending.stop.remove(&id);
                continue;
            };
            let f = Frame::StopSending {
                id: id.0,
                code: st.stop_sent.unwrap_or(0),
            };
            if !room(buf, &f) {
                break;
            }
            f.encode(buf);
            self.pending.stop.remove(&id);
            sent.stop.push(id);
        }
        if self.pending.goaway {
            if let Some((code, reason)) = &self.goaway_sent {
                let f = Frame::GoAway {
                    code: *code,
                    streams: self.opened_local,
                    reason: Bytes::copy_from_slice(reason.as_bytes()),
                };
                if room(buf, &f) {
                    f.encode(buf);
                    self.pending.goaway = false;
                    sent.goaway = true;
                }
            } else {
                self.pending.goaway = false;
            }
        }
        if self.pending.ping && buf.len() < max {
            Frame::Ping.encode(buf);
            self.pending.ping = false;
        }
        buf.len() > start
    }

    /// Fills the rest of the packet with stream data, streams taken round-robin.
    fn write_stream_frames(
        &mut self,
        buf: &mut Vec<u8>,
        max: usize,
        sent: &mut SentFrames,
    ) -> bool {
        let mut wrote = false;
        let mut visited = 0;
        let queued = self.send_queue.len();
        while visited < queued && max.saturating_sub(buf.len()) > 24 {
            let Some(id) = self.send_queue.pop_front() else {
                break;
            };
            visited += 1;
            let Some(st) = self.streams.get_mut(&id) else {
                continue;
            };
            st.in_send_queue = false;
            let room = (max - buf.len()) as u64;
            let offset_guess = st.send.unsent();
            let header =
                StreamFrame::header_len(id.0, offset_guess.max(st.send.end()), room as usize)
                    as u64;
            let data_room = room.saturating_sub(header);
            let session_credit = self.peer_max_data.saturating_sub(self.data_sent);
            let new_limit = st
                .send_max
                .min(st.send.unsent().saturating_add(session_credit));
            let before_unsent = st.send.unsent();
            let range = st.send.next_range(data_room, new_limit);
            let end = st.send.end();
            let (range, fin) = match range {
                Some(r) => {
                    let fin = st.finish_requested && r.end == end && !st.fin_acked;
                    (r, fin)
                }
                None if st.finish_requested && !st.fin_sent && st.send.unsent() == end => {
                    (end..end, true)
                }
                None => {
                    Self::enqueue(&mut self.send_queue, id, st);
                    continue;
                }
            };
            let len = (range.end - range.start) as usize;
            StreamFrame::encode_header(buf, id.0, range.start, len, fin);
            st.send.copy_range(range.clone(), buf);
            if fin {
                st.fin_sent = true;
            }
            let new_bytes = st.send.unsent() - before_unsent;
            self.data_sent += new_bytes;
            self.stats.bytes_retransmitted += (len as u64).saturating_sub(new_bytes);
            sent.push_stream(StreamRange { id, range, fin });
            wrote = true;
            Self::enqueue(&mut self.send_queue, id, st);
        }
        wrote
    }
}

fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::BytesMut;
    use rand::SeedableRng;

    use super::*;
    use crate::config::ServerConfig;
    use crate::endpoint::{Endpoint, EndpointConfig, SessionHandle};
    use crate::keys::PrivateKey;
    use crate::packet::DATA_PACKET;

    /// What becomes of a datagram the client sends.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Fate {
        Deliver,
        Lose,
        /// Kept aside until the test delivers or drops it.
        Hold,
    }

    /// A client and a server endpoint on a wire that delivers at once, in order.
    struct Wire {
        now: Instant,
        client: Endpoint,
        server: Endpoint,
        client_addr: SocketAddr,
        server_addr: SocketAddr,
        ch: SessionHandle,
        sh: SessionHandle,
        held: Vec<Vec<u8>>,
        /// Datagrams the server sent to addresses other than the client's.
        elsewhere: Vec<(SocketAddr, usize)>,
    }

    impl Wire {
        fn connect(server: TransportConfig) -> Wire {
            let key = PrivateKey::generate_from(&mut rand::rngs::StdRng::seed_from_u64(5));
            let client_config = ClientConfig::new(key.public_key());
            let server_config = ServerConfig::new(key).auth(|_| true).transport(server);
            let now = Instant::now();
            let server_addr: SocketAddr = "10.0.0.1:4000".parse().expect("address");
            let mut client = Endpoint::new(EndpointConfig { rng_seed: Some(1) }, None);
            let ch = client.connect(now, server_addr, &client_config);
            let mut w = Wire {
                now,
                client,
                server: Endpoint::new(
                    EndpointConfig { rng_seed: Some(2) },
                    Some(Arc::new(server_config)),
                ),
                client_addr: "10.0.1.1:5000".parse().expect("address"),
                server_addr,
                ch,
                sh: SessionHandle(0),
                held: Vec::new(),
                elsewhere: Vec::new(),
            };
            w.run(Duration::from_millis(100), |_| Fate::Deliver);
            w.sh = w.server.accept().expect("the server accepted the session");
            assert!(w.client().is_established() && w.server().is_established());
            w
        }

        fn client(&mut self) -> &mut Session {
            self.client.session(self.ch).expect("client session")
        }

        fn server(&mut self) -> &mut Session {
            self.server.session(self.sh).expect("server session")
        }

        fn deliver_to_server(&mut self, from: SocketAddr, datagram: &[u8]) {
            self.server.handle(self.now, from, BytesMut::from(datagram));
        }

        /// Exchanges datagrams and fires timers for `d`; `fate` decides about each
        /// datagram of the client.
        fn run(&mut self, d: Duration, mut fate: impl FnMut(&[u8]) -> Fate) {
            let end = self.now + d;
            let mut buf = Vec::new();
            let mut rounds = 0u32;
            loop {
                rounds += 1;
                assert!(rounds < 1_000_000, "time does not advance");
                let mut busy = true;
                while busy {
                    busy = false;
                    while let Some(t) = self.client.poll_transmit(self.now, &mut buf) {
                        busy = true;
                        let datagram = buf[..t.size].to_vec();
                        match fate(&datagram) {
                            Fate::Deliver => self.deliver_to_server(self.client_addr, &datagram),
                            Fate::Lose => {}
                            Fate::Hold => self.held.push(datagram),
                        }
                    }
                    while let Some(t) = self.server.poll_transmit(self.now, &mut buf) {
                        busy = true;
                        if t.destination == self.client_addr {
                            self.client.handle(
                                self.now,
                                self.server_addr,
                                BytesMut::from(&buf[..t.size]),
                            );
                        } else {
                            self.elsewhere.push((t.destination, t.size));
                        }
                    }
                }
                while self.client.poll_event().is_some() || self.server.poll_event().is_some() {}
                let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                match next {
                    Some(t) if t <= end => {
                        self.now = self.now.max(t);
                        self.client.handle_timeout(self.now);
                        self.server.handle_timeout(self.now);
                    }
                    _ => {
                        self.now = end;
                        return;
                    }
                }
            }
        }
    }

    /// Both sides count the same stream bytes against the session credit, the server
    /// consumed all of them, and the client has at least half a window to send.
    fn assert_session_credit_in_step(w: &mut Wire, window: u64, what: &str) {
        let (sent, peer_max) = {
            let c = w.client();
            (c.data_sent, c.peer_max_data)
        };
        let s = w.server();
        assert!(s.is_established(), "{what}: {:?}", s.state);
        assert_eq!(sent, s.data_received, "{what}: counted against the credit");
        assert_eq!(s.data_read, s.data_received, "{what}: all consumed");
        assert_eq!(
            peer_max, s.local_max_data,
            "{what}: the credit as announced"
        );
        assert!(
            s.local_max_data - s.data_read >= window / 2,
            "{what}: {} of {window} bytes of credit left",
            s.local_max_data - s.data_read
        );
    }

    #[test]
    fn resets_and_stops_leave_both_sides_counting_the_same_session_credit() {
        let window = 64 * 1024;
        let mut w = Wire::connect(TransportConfig {
            initial_session_window: window,
            max_session_window: window,
            ..TransportConfig::default()
        });

        // Written far beyond the session credit, then reset: the final size is what
        // was sent.
        let a = w.client().open_stream().expect("open");
        assert_eq!(w.client().write(a, &[1; 200_000]), Ok(200_000));
        w.run(Duration::from_millis(200), |_| Fate::Deliver);
        assert_eq!(w.client().data_sent, window);
        w.client().reset(a, 1).expect("reset");
        w.run(Duration::from_millis(200), |_| Fate::Deliver);
        assert_eq!(w.server().read(a, 100), Err(StreamError::Reset(1)));
        assert_session_credit_in_step(&mut w, window, "after the reset");

        // A stream the server stops after its first packet: the packets after it
        // arrive late, the last ones never, and the reset tells their final size. The
        // server finishes its own half at once, so the stream could be forgotten as
        // soon as the client acknowledges that, before the reset.
        let x = w.client().open_stream().expect("open");
        assert_eq!(w.client().write(x, &[2; 40_000]), Ok(40_000));
        w.run(Duration::from_millis(5), |d| {
            if d[0] == DATA_PACKET {
                Fate::Hold
            } else {
                Fate::Deliver
            }
        });
        let held = std::mem::take(&mut w.held);
        assert!(held.len() >= 6, "{} packets sent", held.len());
        w.deliver_to_server(w.client_addr, &held[0]);
        assert!(w.server().streams.contains_key(&x));
        w.server().finish(x).expect("finish");
        w.server().stop(x, 2).expect("stop");
        for d in &held[1..held.len() / 2] {
            w.deliver_to_server(w.client_addr, d);
        }
        let received = w.server().streams[&x].recv.max_received();
        w.run(Duration::from_secs(2), |_| Fate::Deliver);
        let st = &w.client().streams[&x];
        assert!(st.reset_sent == Some(2) && st.reset_acked);
        let final_size = st.send.end();
        assert!(
            received < final_size,
            "received {received} of the final size {final_size}"
        );
        assert!(
            !w.server().streams.contains_key(&x),
            "the stopped stream is forgotten once its final size is known"
        );
        assert_session_credit_in_step(&mut w, window, "after the stop");

        // A stream that arrived whole, stopped unread: its credit is announced again
        // at once.
        let left = {
            let s = w.server();
            s.local_max_data - s.data_read
        };
        let y = w.client().open_stream().expect("open");
        let len = left as usize - 1000;
        assert_eq!(w.client().write(y, &vec![3; len]), Ok(len));
        w.client().finish(y).expect("finish");
        w.run(Duration::from_millis(200), |_| Fate::Deliver);
        assert_eq!(w.server().streams[&y].final_size, Some(len as u64));
        w.server().stop(y, 3).expect("stop");
        let s = w.server();
        assert!(s.pending.max_data);
        assert!(s.local_max_data - s.data_read >= window / 2);
        w.run(Duration::from_millis(200), |_| Fate::Deliver);
        assert_session_credit_in_step(&mut w, window, "after the second stop");
    }

    #[test]
    fn a_path_probe_held_back_by_the_amplification_limit_gives_up() {
        let mut w = Wire::connect(TransportConfig::default());
        // A small authentic packet of the client's, replayed from another address
        // before the original arrives (which is then lost): the server probes the new
        // address, within three times that packet's size.
        w.client().pending.ping = true;
        let mut copy = None;
        w.run(Duration::from_millis(1), |d| {
            if copy.is_none() && d[0] == DATA_PACKET {
                copy = Some(d.to_vec());
                Fate::Lose
            } else {
                Fate::Deliver
            }
        });
        let copy = copy.expect("the client sent a packet");
        let victim: SocketAddr = "192.0.2.7:9999".parse().expect("address");
        w.deliver_to_server(victim, &copy);
        w.run(Duration::from_millis(1), |_| Fate::Deliver);
        let probe = w.server().probe.as_ref().expect("probing the new address");
        assert_eq!(probe.addr, victim);
        assert!(
            probe.bytes_sent > 0 && probe.bytes_sent <= 3 * copy.len() as u64,
            "sent {} for {}",
            probe.bytes_sent,
            copy.len()
        );
        let server = w.server();
        let pto = server.recovery.rtt.pto(server.config.max_ack_delay);
        // The address stays silent. Each probe timeout counts, sent or held back.
        w.run(pto * (PATH_PROBE_TRIES + 2), |_| Fate::Deliver);
        assert!(w.server().probe.is_none(), "the probe never gave up");
        assert_eq!(w.server().remote_addr(), w.client_addr);
        let probes = w.elsewhere.len();
        assert!(
            (1..PATH_PROBE_TRIES as usize).contains(&probes)
                && w.elsewhere.iter().all(|(to, _)| *to == victim),
            "{:?}",
            w.elsewhere
        );
        w.run(Duration::from_secs(5), |_| Fate::Deliver);
        assert_eq!(w.elsewhere.len(), probes);
        assert!(w.server().is_established());
    }
}
