//! The simulated network: a virtual clock, and a seeded link each way with loss, delay,
//! jitter, reordering, duplication, corruption and a rate-limited drop-tail bottleneck.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::app::App;
use crate::{
    ClientConfig, Endpoint, EndpointConfig, PrivateKey, ServerConfig, Session, SessionHandle,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
    /// Random loss strikes before the bottleneck (a lost packet takes no share of the
    /// rate) instead of after it (it does: the stricter case, the default).
    pub loss_before_bottleneck: bool,
    /// Bursty loss on top of `loss`, as a Gilbert-Elliott chain.
    pub bursts: Option<GilbertElliott>,
    /// Largest datagram (UDP payload) the path carries; a larger one is dropped, as a
    /// router drops a packet that does not fit and may not be fragmented. Default
    /// 1472: a 1500-byte IPv4 path.
    pub max_datagram: usize,
    /// IP and UDP header bytes each datagram carries on the wire: they take their share
    /// of the rate, as on a real link (28 for IPv4, the default).
    pub header_bytes: usize,
}

/// Two-state bursty loss: in the good state packets pass; each packet moves the chain
/// from good to bad with `p_enter`, from bad back to good with `p_leave`, and in the
/// bad state a packet is lost with `loss_in_bad`. Mean burst length is `1 / p_leave`.
#[derive(Debug, Clone, Copy)]
pub struct GilbertElliott {
    pub p_enter: f64,
    pub p_leave: f64,
    pub loss_in_bad: f64,
}

impl GilbertElliott {
    /// The long-run loss rate.
    pub fn mean_loss(&self) -> f64 {
        self.loss_in_bad * self.p_enter / (self.p_enter + self.p_leave)
    }
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
            loss_before_bottleneck: false,
            bursts: None,
            max_datagram: 1472,
            header_bytes: 28,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct LinkStats {
    pub sent: u64,
    pub lost: u64,
    pub dropped: u64,
    pub bytes: u64,
    /// Datagrams larger than the path carries.
    pub too_large: u64,
    pub max_queue_delay: Duration,
    pub queue_delay_sum: Duration,
    pub queue_samples: u64,
}

struct Link {
    p: LinkParams,
    next_free: Instant,
    stats: LinkStats,
    measure_from: Option<Instant>,
    /// The Gilbert-Elliott chain is in its bad state.
    in_burst: bool,
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

/// What becomes of a datagram, decided by a test's [`Sim::filter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Onto the link as usual.
    Deliver,
    /// Gone before the link.
    Lose,
    /// Kept in [`Sim::held`] until the test injects or drops it.
    Hold,
}

/// A test's say over each datagram a node sends (after capture, before the link).
pub type Filter = Box<dyn FnMut(&Captured) -> Fate>;

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
    /// When set, decides the fate of every datagram a node sends.
    pub filter: Option<Filter>,
    /// Datagrams the filter held back.
    pub held: Vec<Captured>,
    buf: Vec<u8>,
}

/// One host: an endpoint and the application on it.
pub struct Node {
    pub addr: SocketAddr,
    pub ep: Endpoint,
    pub app: App,
}

impl Node {
    /// The node's first session (the client's, or the first the server accepted).
    pub fn handle(&self) -> SessionHandle {
        *self.app.sessions.first().expect("the node has a session")
    }

    /// The node's first session, to drive it; panics once it is forgotten.
    pub fn session(&mut self) -> &mut Session {
        let h = self.handle();
        self.ep.session(h).expect("session still held")
    }
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
                in_burst: false,
            },
            down: Link {
                next_free: now,
                p: down,
                stats: LinkStats::default(),
                measure_from: None,
                in_burst: false,
            },
            queue: BinaryHeap::new(),
            packets: HashMap::new(),
            seq: 0,
            rebind: None,
            rebind_drops_old: false,
            capture: None,
            filter: None,
            held: Vec::new(),
            buf: Vec::with_capacity(2048),
        }
    }

    pub fn server_key(seed: u64) -> PrivateKey {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        PrivateKey::generate_from(&mut rng)
    }

    /// Adds the server node (call first).
    pub fn add_server(&mut self, config: ServerConfig) {
        let addr: SocketAddr = "10.0.0.1:45456".parse().expect("address");
        let ep = Endpoint::new(
            EndpointConfig {
                rng_seed: Some(self.seed ^ 1),
                ..EndpointConfig::default()
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
        let addr: SocketAddr = format!("10.0.1.{idx}:5000").parse().expect("address");
        self.add_client_at(addr, config, app)
    }

    /// Adds a client node at `addr` (several may share an IP address).
    pub fn add_client_at(&mut self, addr: SocketAddr, config: &ClientConfig, app: App) -> usize {
        let idx = self.nodes.len();
        let mut ep = Endpoint::new(
            EndpointConfig {
                rng_seed: Some(self.seed ^ (idx as u64 * 7919)),
                ..EndpointConfig::default()
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

    /// The server node.
    pub fn server(&self) -> &Node {
        &self.nodes[0]
    }

    /// The server node, to drive it.
    pub fn server_mut(&mut self) -> &mut Node {
        &mut self.nodes[0]
    }

    /// The first client node.
    pub fn client(&self) -> &Node {
        &self.nodes[1]
    }

    /// The first client node, to drive it.
    pub fn client_mut(&mut self) -> &mut Node {
        &mut self.nodes[1]
    }

    /// Virtual time since the start.
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
        if let Some(filter) = &mut self.filter {
            let c = Captured {
                at: self.now,
                from,
                to,
                data,
            };
            match filter(&c) {
                Fate::Deliver => data = c.data,
                Fate::Lose => return,
                Fate::Hold => {
                    self.held.push(c);
                    return;
                }
            }
        }
        let now = self.now;
        let link = if toward_server {
            &mut self.up
        } else {
            &mut self.down
        };
        let p = link.p.clone();
        let mut depart = now;
        if data.len() > p.max_datagram {
            link.stats.too_large += 1;
            return;
        }
        if p.loss_before_bottleneck && lost_on(link, &p, &mut self.rng) {
            return;
        }
        let wire_bytes = (data.len() + p.header_bytes) as u64;
        if let Some(serialize_ns) = (wire_bytes * 8 * 1_000_000_000).checked_div(p.rate_bps) {
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
        // By default random loss strikes after the bottleneck: a lost packet has used
        // its share of the rate (the stricter case for goodput).
        if !p.loss_before_bottleneck && lost_on(link, &p, &mut self.rng) {
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

    /// Hands a datagram from `from` to node `to` at once, outside the link and the
    /// event loop: its effect on the node's state can be checked before anything else
    /// happens.
    pub fn handle_now(&mut self, from: SocketAddr, to: usize, data: &[u8]) {
        let now = self.now;
        self.nodes[to].ep.handle(now, from, &mut data.to_vec());
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

    fn deliver(&mut self, mut p: Packet) {
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
            n.ep.handle(self.now, p.from, &mut p.data);
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

/// Whether the link loses this packet: random loss, then the bursty chain. Draws from
/// `rng` only for the kinds of loss the link has, so links without bursts replay as
/// before.
fn lost_on(link: &mut Link, p: &LinkParams, rng: &mut StdRng) -> bool {
    if p.loss > 0.0 && rng.gen_bool(p.loss) {
        link.stats.lost += 1;
        return true;
    }
    if let Some(b) = p.bursts {
        let flip = if link.in_burst { b.p_leave } else { b.p_enter };
        if flip > 0.0 && rng.gen_bool(flip.min(1.0)) {
            link.in_burst = !link.in_burst;
        }
        if link.in_burst && b.loss_in_bad > 0.0 && rng.gen_bool(b.loss_in_bad.min(1.0)) {
            link.stats.lost += 1;
            return true;
        }
    }
    false
}
