//! A deterministic network simulator for `udpack-proto` endpoints: a virtual clock, a
//! seeded network with loss, delay, jitter, reordering, duplication, corruption and a
//! rate-limited drop-tail bottleneck each way, and a small application that writes and
//! verifies patterned data on many streams.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use udpack_proto::{
    ClientConfig, CloseReason, Endpoint, EndpointConfig, Event, PrivateKey, ServerConfig,
    SessionHandle, SessionStats, StreamError, StreamId, TransportConfig,
};

/// One direction of the network.
#[derive(Debug, Clone)]
pub struct LinkParams {
    pub delay: Duration,
    pub jitter: Duration,
    pub loss: f64,
    pub duplicate: f64,
    pub corrupt: f64,
    /// Probability that a packet is held back an extra half delay (reordering).
    pub reorder: f64,
    /// Bits per second; 0 = unlimited.
    pub rate_bps: u64,
    /// Longest a packet may wait in the bottleneck queue before being dropped.
    pub queue: Duration,
}

impl LinkParams {
    pub fn new(one_way: Duration, rate_bps: u64) -> Self {
        LinkParams {
            delay: one_way,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            reorder: 0.0,
            rate_bps,
            queue: Duration::from_millis(50),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct LinkStats {
    pub sent: u64,
    pub lost: u64,
    pub dropped: u64,
    pub bytes: u64,
    pub max_queue_delay: Duration,
    pub queue_delay_sum: Duration,
    pub queue_samples: u64,
}

struct Link {
    p: LinkParams,
    next_free: Instant,
    stats: LinkStats,
    measure_from: Option<Instant>,
}

struct Packet {
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// A datagram seen leaving a node: after any NAT rewrite of its source, before the
/// link's loss, corruption or duplication.
#[derive(Debug, Clone)]
pub struct Captured {
    pub at: Instant,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// Node 0 is the server; the others are clients. Packets toward the server cross the
/// `up` link, packets from it the `down` link.
pub struct Sim {
    pub now: Instant,
    pub start: Instant,
    rng: StdRng,
    pub seed: u64,
    pub nodes: Vec<Node>,
    up: Link,
    down: Link,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    packets: HashMap<u64, Packet>,
    seq: u64,
    /// Client address rewrites after a time (NAT rebinding): (node, at, new address).
    pub rebind: Option<(usize, Instant, SocketAddr)>,
    /// With `rebind`: packets addressed to the node's old address are lost from the
    /// rebinding on (the NAT forgot the old mapping).
    pub rebind_drops_old: bool,
    /// When set, every datagram a node sends is recorded here.
    pub capture: Option<Vec<Captured>>,
    buf: Vec<u8>,
}

pub struct Node {
    pub addr: SocketAddr,
    pub ep: Endpoint,
    pub app: App,
}

/// What the application on a node does with its sessions.
#[derive(Default)]
pub struct App {
    /// Streams to open on each connected session, with the bytes to send on each.
    pub open: Vec<u64>,
    pub sessions: Vec<SessionHandle>,
    pub connected: Vec<SessionHandle>,
    pub connect_errors: Vec<CloseReason>,
    pub closed: Vec<(SessionHandle, CloseReason)>,
    pub goaways: Vec<(SessionHandle, u64)>,
    pub senders: BTreeMap<(SessionHandle, StreamId), Sender>,
    pub receivers: BTreeMap<(SessionHandle, StreamId), Receiver>,
    /// Once every stream it opened is finished and every stream it accepted ended,
    /// send GOAWAY with this code.
    pub goaway_when_done: Option<u64>,
    pub goaway_sent: Vec<SessionHandle>,
    /// Bytes received in order by all receivers.
    pub bytes_read: u64,
    /// (time, bytes_read) samples for goodput windows.
    pub read_log: Vec<(Instant, u64)>,
    pub errors: Vec<String>,
    /// When set, every event is recorded here with the time it was polled.
    pub event_log: Option<Vec<(Instant, SessionHandle, Event)>>,
    /// When set, the application only takes sessions and records events (connections,
    /// closes, the event log): the test drives the streams itself.
    pub passive: bool,
    scratch: Vec<u8>,
}

pub struct Sender {
    pub seed: u64,
    pub total: u64,
    pub written: u64,
    pub finished: bool,
    pub acked: bool,
    pub peer_ended: bool,
}

pub struct Receiver {
    pub seed: u64,
    pub read: u64,
    pub ended: bool,
    pub expected: Option<u64>,
}

/// The byte of the pattern of stream seed `seed` at `offset`.
pub fn pattern_word(seed: u64, word: u64) -> u64 {
    let mut z = seed ^ word.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Length of the pattern table: a prime, so a byte misplaced by any offset shorter than
/// a block lands on a different table byte.
const PATTERN_PERIOD: usize = 65_521;

fn pattern_table() -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..PATTERN_PERIOD as u64)
            .map(|i| pattern_word(0x5eed, i) as u8)
            .collect()
    })
}

/// The stream pattern: a table byte, shifted per stream and whitened per table period,
/// so that bytes from another offset or another stream do not match.
pub fn fill_pattern(seed: u64, offset: u64, out: &mut [u8]) {
    let table = pattern_table();
    let shift = (seed % PATTERN_PERIOD as u64) as usize;
    let mut done = 0;
    while done < out.len() {
        let off = offset + done as u64;
        let block = off / PATTERN_PERIOD as u64;
        let pos = ((off % PATTERN_PERIOD as u64) as usize + shift) % PATTERN_PERIOD;
        let in_block = PATTERN_PERIOD - (off % PATTERN_PERIOD as u64) as usize;
        let n = (PATTERN_PERIOD - pos).min(in_block).min(out.len() - done);
        let mask = pattern_word(seed, block) as u8;
        for (o, t) in out[done..done + n].iter_mut().zip(&table[pos..pos + n]) {
            *o = t ^ mask;
        }
        done += n;
    }
}

fn stream_seed(h: SessionHandle, id: StreamId, server_side_opened: bool) -> u64 {
    // Both ends derive the same seed from what they both know: the stream id and who
    // opened it. Session handles differ per side, so they are not used.
    let _ = h;
    id.0.wrapping_mul(1_000_003) ^ u64::from(server_side_opened)
}

impl Sim {
    pub fn new(seed: u64, up: LinkParams, down: LinkParams) -> Self {
        let now = Instant::now();
        Sim {
            now,
            start: now,
            rng: StdRng::seed_from_u64(seed),
            seed,
            nodes: Vec::new(),
            up: Link {
                next_free: now,
                p: up,
                stats: LinkStats::default(),
                measure_from: None,
            },
            down: Link {
                next_free: now,
                p: down,
                stats: LinkStats::default(),
                measure_from: None,
            },
            queue: BinaryHeap::new(),
            packets: HashMap::new(),
            seq: 0,
            rebind: None,
            rebind_drops_old: false,
            capture: None,
            buf: Vec::with_capacity(2048),
        }
    }

    pub fn server_key(seed: u64) -> PrivateKey {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        PrivateKey::generate_from(&mut rng)
    }

    /// Adds the server node (call first).
    pub fn add_server(&mut self, config: ServerConfig) {
        let addr: SocketAddr = "10.0.0.1:45456".parse().unwrap();
        let ep = Endpoint::new(
            EndpointConfig {
                rng_seed: Some(self.seed ^ 1),
            },
            Some(Arc::new(config)),
        );
        self.nodes.push(Node {
            addr,
            ep,
            app: App::default(),
        });
    }

    /// Adds a client node that connects to the server at once; returns its index.
    pub fn add_client(&mut self, config: &ClientConfig, app: App) -> usize {
        let idx = self.nodes.len();
        let addr: SocketAddr = format!("10.0.1.{idx}:5000").parse().unwrap();
        let mut ep = Endpoint::new(
            EndpointConfig {
                rng_seed: Some(self.seed ^ (idx as u64 * 7919)),
            },
            None,
        );
        let server = self.nodes[0].addr;
        let h = ep.connect(self.now, server, config);
        let mut node = Node { addr, ep, app };
        node.app.sessions.push(h);
        self.nodes.push(node);
        idx
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Starts measuring queueing delay on both links from now on.
    pub fn measure_queues(&mut self) {
        self.up.measure_from = Some(self.now);
        self.down.measure_from = Some(self.now);
        self.up.stats = LinkStats::default();
        self.down.stats = LinkStats::default();
    }

    pub fn up_stats(&self) -> &LinkStats {
        &self.up.stats
    }

    pub fn down_stats(&self) -> &LinkStats {
        &self.down.stats
    }

    /// The parameters of the links toward the server (up) and from it (down), to
    /// change conditions mid-run.
    pub fn links_mut(&mut self) -> (&mut LinkParams, &mut LinkParams) {
        (&mut self.up.p, &mut self.down.p)
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, mut data: Vec<u8>) {
        let server = self.nodes[0].addr;
        let toward_server = to == server;
        let mut from = from;
        if let Some((node, at, new)) = self.rebind {
            if self.now >= at && from == self.nodes[node].addr {
                from = new;
            }
        }
        if let Some(c) = &mut self.capture {
            c.push(Captured {
                at: self.now,
                from,
                to,
                data: data.clone(),
            });
        }
        let now = self.now;
        let link = if toward_server {
            &mut self.up
        } else {
            &mut self.down
        };
        let p = link.p.clone();
        let mut depart = now;
        if let Some(serialize_ns) = (data.len() as u64 * 8 * 1_000_000_000).checked_div(p.rate_bps)
        {
            let start = now.max(link.next_free);
            let wait = start - now;
            if wait > p.queue {
                link.stats.dropped += 1;
                return;
            }
            if link.measure_from.is_some() {
                link.stats.max_queue_delay = link.stats.max_queue_delay.max(wait);
                link.stats.queue_delay_sum += wait;
                link.stats.queue_samples += 1;
            }
            depart = start + Duration::from_nanos(serialize_ns);
            link.next_free = depart;
        }
        link.stats.sent += 1;
        link.stats.bytes += data.len() as u64;
        // Random loss strikes after the bottleneck: a lost packet has used its share of
        // the rate (the stricter case for goodput).
        if p.loss > 0.0 && self.rng.gen_bool(p.loss) {
            link.stats.lost += 1;
            return;
        }
        let mut arrive = depart + p.delay;
        if !p.jitter.is_zero() {
            arrive += p.jitter.mul_f64(self.rng.gen::<f64>());
        }
        if p.reorder > 0.0 && self.rng.gen_bool(p.reorder) {
            arrive += p.delay / 2 + Duration::from_millis(1);
        }
        if p.corrupt > 0.0 && self.rng.gen_bool(p.corrupt) && !data.is_empty() {
            let i = self.rng.gen_range(0..data.len());
            data[i] ^= 1 << self.rng.gen_range(0..8);
        }
        if p.duplicate > 0.0 && self.rng.gen_bool(p.duplicate) {
            let extra = arrive + Duration::from_micros(self.rng.gen_range(0..2000));
            self.push(
                extra,
                Packet {
                    from,
                    to,
                    data: data.clone(),
                },
            );
        }
        self.push(arrive, Packet { from, to, data });
    }

    fn push(&mut self, at: Instant, p: Packet) {
        let seq = self.seq;
        self.seq += 1;
        self.packets.insert(seq, p);
        self.queue.push(Reverse((at, seq)));
    }

    /// Injects a datagram as if `from` had sent it to node `to`, arriving now.
    pub fn inject(&mut self, from: SocketAddr, to: usize, data: Vec<u8>) {
        let to = self.nodes[to].addr;
        self.push(self.now, Packet { from, to, data });
    }

    fn flush(&mut self) {
        for i in 0..self.nodes.len() {
            loop {
                let now = self.now;
                let mut buf = std::mem::take(&mut self.buf);
                let t = self.nodes[i].ep.poll_transmit(now, &mut buf);
                let Some(t) = t else {
                    self.buf = buf;
                    break;
                };
                let from = self.nodes[i].addr;
                self.send(from, t.destination, buf[..t.size].to_vec());
                self.buf = buf;
            }
        }
    }

    fn deliver(&mut self, p: Packet) {
        // Rebound client: packets to its new address reach it.
        let mut to = p.to;
        if let Some((node, at, new)) = self.rebind {
            if self.rebind_drops_old && self.now >= at && to == self.nodes[node].addr {
                return;
            }
            if to == new {
                to = self.nodes[node].addr;
            }
        }
        if let Some(n) = self.nodes.iter_mut().find(|n| n.addr == to) {
            n.ep.handle(self.now, p.from, BytesMut::from(&p.data[..]));
        }
    }

    /// Runs until `done` says so or `limit` of virtual time passes. Returns false on
    /// the time limit.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let deadline = self.now + limit;
        let mut stuck = 0u32;
        loop {
            for i in 0..self.nodes.len() {
                let now = self.now;
                let Node { ep, app, .. } = &mut self.nodes[i];
                app.step(now, ep, i == 0);
            }
            self.flush();
            if done(self) {
                return true;
            }
            let next_packet = self.queue.peek().map(|Reverse((t, _))| *t);
            let mut next = next_packet;
            for n in &mut self.nodes {
                if let Some(t) = n.ep.poll_timeout() {
                    next = Some(next.map_or(t, |x: Instant| x.min(t)));
                }
            }
            let Some(next) = next else { return done(self) };
            if next > deadline {
                self.now = deadline;
                return false;
            }
            if next <= self.now {
                stuck += 1;
                assert!(
                    stuck < 100_000,
                    "seed {}: time does not advance at {:?}",
                    self.seed,
                    self.elapsed()
                );
            } else {
                stuck = 0;
            }
            self.now = self.now.max(next);
            while let Some(Reverse((t, seq))) = self.queue.peek().copied() {
                if t > self.now {
                    break;
                }
                self.queue.pop();
                if let Some(p) = self.packets.remove(&seq) {
                    self.deliver(p);
                }
            }
            let now = self.now;
            for n in &mut self.nodes {
                n.ep.handle_timeout(now);
            }
        }
    }
}

impl App {
    pub fn sending(open: Vec<u64>) -> Self {
        App {
            open,
            ..App::default()
        }
    }

    fn step(&mut self, now: Instant, ep: &mut Endpoint, is_server: bool) {
        while let Some(h) = ep.accept() {
            self.sessions.push(h);
        }
        while let Some((h, ev)) = ep.poll_event() {
            if let Some(log) = &mut self.event_log {
                log.push((now, h, ev.clone()));
            }
            match ev {
                Event::Connected => {
                    self.connected.push(h);
                    let Some(s) = ep.session(h) else { continue };
                    for (i, &size) in self.open.iter().enumerate() {
                        match s.open_stream() {
                            Ok(id) => {
                                self.senders.insert(
                                    (h, id),
                                    Sender {
                                        seed: stream_seed(h, id, is_server),
                                        total: size,
                                        written: 0,
                                        finished: false,
                                        acked: false,
                                        peer_ended: false,
                                    },
                                );
                            }
                            Err(e) => self.errors.push(format!("open stream {i}: {e}")),
                        }
                    }
                }
                Event::StreamOpened(_) if !self.passive => {
                    if let Some(s) = ep.session(h) {
                        while let Some(id) = s.accept_stream() {
                            // This side sends nothing back on the peer's streams.
                            if let Err(e) = s.finish(id) {
                                self.errors.push(format!("finish accepted {id}: {e}"));
                            }
                            self.receivers.insert(
                                (h, id),
                                Receiver {
                                    seed: stream_seed(h, id, !is_server),
                                    read: 0,
                                    ended: false,
                                    expected: None,
                                },
                            );
                        }
                    }
                }
                Event::StreamFinished(id) => {
                    if let Some(s) = self.senders.get_mut(&(h, id)) {
                        s.acked = true;
                    }
                }
                Event::Closed(r) => {
                    if matches!(r, CloseReason::ConnectFailed(_)) {
                        self.connect_errors.push(r.clone());
                    }
                    self.closed.push((h, r));
                }
                Event::GoAway { code, .. } => self.goaways.push((h, code)),
                _ => {}
            }
        }
        if self.passive {
            return;
        }
        let buf = &mut self.scratch;
        buf.resize(64 * 1024, 0);
        for (&(h, id), snd) in self.senders.iter_mut() {
            let Some(s) = ep.session(h) else { continue };
            while snd.written < snd.total {
                let room = match s.write_capacity(id) {
                    Ok(0) => break,
                    Ok(room) => room,
                    Err(_) => u64::MAX,
                };
                let n = ((snd.total - snd.written).min(room) as usize).min(buf.len());
                fill_pattern(snd.seed, snd.written, &mut buf[..n]);
                match s.write(id, &buf[..n]) {
                    Ok(w) => snd.written += w as u64,
                    Err(StreamError::Blocked) => break,
                    Err(e) => {
                        self.errors.push(format!("write {id}: {e}"));
                        snd.written = snd.total;
                    }
                }
            }
            if snd.written == snd.total && !snd.finished {
                snd.finished = true;
                if let Err(e) = s.finish(id) {
                    self.errors.push(format!("finish {id}: {e}"));
                }
            }
        }
        // The peer sends nothing on our streams: read its end so the stream completes.
        for (&(h, id), snd) in self.senders.iter_mut() {
            if snd.peer_ended {
                continue;
            }
            let Some(s) = ep.session(h) else { continue };
            match s.read(id, 1024) {
                Ok(None) => snd.peer_ended = true,
                Ok(Some(_)) => self
                    .errors
                    .push(format!("unexpected data on our stream {id}")),
                Err(StreamError::Blocked) | Err(StreamError::SessionClosed) => {}
                Err(e) => self.errors.push(format!("read our stream {id}: {e}")),
            }
        }
        let expect = &mut self.scratch;
        for (&(h, id), rcv) in self.receivers.iter_mut() {
            if rcv.ended {
                continue;
            }
            let Some(s) = ep.session(h) else { continue };
            loop {
                match s.read(id, 64 * 1024) {
                    Ok(Some(data)) => {
                        fill_pattern(rcv.seed, rcv.read, &mut expect[..data.len()]);
                        if data[..] != expect[..data.len()] {
                            self.errors
                                .push(format!("stream {id}: wrong bytes at offset {}", rcv.read));
                        }
                        rcv.read += data.len() as u64;
                        self.bytes_read += data.len() as u64;
                    }
                    Ok(None) => {
                        rcv.ended = true;
                        break;
                    }
                    Err(StreamError::Blocked) | Err(StreamError::SessionClosed) => break,
                    Err(e) => {
                        self.errors.push(format!("read {id}: {e}"));
                        rcv.ended = true;
                        break;
                    }
                }
            }
        }
        self.read_log.push((now, self.bytes_read));
        if let Some(code) = self.goaway_when_done {
            for &h in &self.connected.clone() {
                if self.goaway_sent.contains(&h) {
                    continue;
                }
                let sends_done = self
                    .senders
                    .iter()
                    .filter(|(k, _)| k.0 == h)
                    .all(|(_, s)| s.finished);
                if sends_done && !self.open.is_empty() {
                    if let Some(s) = ep.session(h) {
                        s.goaway(code, "done");
                        self.goaway_sent.push(h);
                    }
                }
            }
        }
    }

    /// Bytes read between two virtual times.
    pub fn bytes_between(&self, from: Instant, to: Instant) -> u64 {
        let at = |t: Instant| {
            let i = self.read_log.partition_point(|(x, _)| *x <= t);
            if i == 0 {
                0
            } else {
                self.read_log[i - 1].1
            }
        };
        at(to) - at(from)
    }
}

/// A server config whose auth accepts the token "letmein".
pub fn server_config(seed: u64, transport: TransportConfig) -> ServerConfig {
    ServerConfig::new(Sim::server_key(seed))
        .auth(|t| t == b"letmein")
        .transport(transport)
}

pub fn client_config(seed: u64, transport: TransportConfig) -> ClientConfig {
    ClientConfig::new(Sim::server_key(seed).public_key())
        .token("letmein")
        .transport(transport)
}

// ---- checks shared by the handshake and lifecycle tests ----------------------------

pub fn client_handle(sim: &Sim) -> SessionHandle {
    sim.nodes[1].app.sessions[0]
}

pub fn server_handle(sim: &Sim) -> SessionHandle {
    *sim.nodes[0]
        .app
        .sessions
        .first()
        .expect("the server accepted a session")
}

pub fn connected(sim: &Sim) -> bool {
    !sim.nodes[0].app.connected.is_empty() && !sim.nodes[1].app.connected.is_empty()
}

pub fn stats(sim: &mut Sim, node: usize, h: SessionHandle) -> SessionStats {
    sim.nodes[node]
        .ep
        .session(h)
        .expect("session still held")
        .stats()
}

/// The senders of `a` are all acknowledged and read to their end by `b`.
pub fn sent_and_read(a: &App, b: &App) -> bool {
    a.senders.len() == a.open.len()
        && a.senders.values().all(|s| s.acked && s.peer_ended)
        && b.receivers.len() == a.senders.len()
        && b.receivers.values().all(|r| r.ended)
}

/// Every stream each side opened is acknowledged, and read to its end by the peer.
pub fn streams_done(sim: &Sim) -> bool {
    let (server, client) = (&sim.nodes[0].app, &sim.nodes[1].app);
    connected(sim) && sent_and_read(client, server) && sent_and_read(server, client)
}

/// No application saw a wrong byte, and every stream arrived whole.
pub fn check_transfer(sim: &Sim) {
    let (server, client) = (&sim.nodes[0].app, &sim.nodes[1].app);
    assert!(
        server.errors.is_empty(),
        "server errors: {:?}",
        server.errors
    );
    assert!(
        client.errors.is_empty(),
        "client errors: {:?}",
        client.errors
    );
    for (sender, receiver) in [(client, server), (server, client)] {
        let mut sent: Vec<u64> = sender.senders.values().map(|s| s.total).collect();
        let mut read: Vec<u64> = receiver
            .receivers
            .values()
            .filter(|r| r.ended)
            .map(|r| r.read)
            .collect();
        sent.sort_unstable();
        read.sort_unstable();
        assert_eq!(sent, read, "stream sizes sent vs read");
    }
}

/// The client sends GOAWAY with `code`; both sides must close with it.
pub fn close_gracefully(sim: &mut Sim, code: u64) {
    let h = client_handle(sim);
    sim.nodes[1]
        .ep
        .session(h)
        .expect("client session")
        .goaway(code, "bye");
    let ok = sim.run_until(Duration::from_secs(30), |s| {
        s.nodes.iter().all(|n| !n.app.closed.is_empty())
    });
    assert!(ok, "graceful close did not complete");
    for (i, n) in sim.nodes.iter().enumerate() {
        assert_eq!(n.app.closed.len(), 1, "node {i}: {:?}", n.app.closed);
        assert_eq!(
            n.app.closed[0].1.code(),
            Some(code),
            "node {i} closed with {:?}",
            n.app.closed[0].1
        );
    }
}

pub fn run_until_connected(sim: &mut Sim) {
    assert!(
        sim.run_until(Duration::from_secs(5), connected),
        "handshake did not complete"
    );
}
