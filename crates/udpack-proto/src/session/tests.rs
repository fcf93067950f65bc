use std::sync::Arc;

use bytes::BytesMut;
use rand::SeedableRng;

use super::path::PATH_PROBE_TRIES;
use super::*;
use crate::config::ClientConfig;
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
        (c.flow.data_sent, c.flow.peer_max_data)
    };
    let s = w.server();
    assert!(s.is_established(), "{what}: {:?}", s.state);
    assert_eq!(
        sent, s.flow.data_received,
        "{what}: counted against the credit"
    );
    assert_eq!(
        s.flow.data_read, s.flow.data_received,
        "{what}: all consumed"
    );
    assert_eq!(
        peer_max,
        s.flow.credit.limit(),
        "{what}: the credit as announced"
    );
    assert!(
        s.flow.credit.limit() - s.flow.data_read >= window / 2,
        "{what}: {} of {window} bytes of credit left",
        s.flow.credit.limit() - s.flow.data_read
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
    assert_eq!(w.client().flow.data_sent, window);
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
    assert!(w.server().streams.map.contains_key(&x));
    w.server().finish(x).expect("finish");
    w.server().stop(x, 2).expect("stop");
    for d in &held[1..held.len() / 2] {
        w.deliver_to_server(w.client_addr, d);
    }
    let received = w.server().streams.map[&x].recv.max_received();
    w.run(Duration::from_secs(2), |_| Fate::Deliver);
    let st = &w.client().streams.map[&x];
    assert!(st.reset_sent == Some(2) && st.reset_acked);
    let final_size = st.send.end();
    assert!(
        received < final_size,
        "received {received} of the final size {final_size}"
    );
    assert!(
        !w.server().streams.map.contains_key(&x),
        "the stopped stream is forgotten once its final size is known"
    );
    assert_session_credit_in_step(&mut w, window, "after the stop");

    // A stream that arrived whole, stopped unread: its credit is announced again
    // at once.
    let left = {
        let s = w.server();
        s.flow.credit.limit() - s.flow.data_read
    };
    let y = w.client().open_stream().expect("open");
    let len = left as usize - 1000;
    assert_eq!(w.client().write(y, &vec![3; len]), Ok(len));
    w.client().finish(y).expect("finish");
    w.run(Duration::from_millis(200), |_| Fate::Deliver);
    assert_eq!(w.server().streams.map[&y].final_size, Some(len as u64));
    w.server().stop(y, 3).expect("stop");
    let s = w.server();
    assert!(s.pending.max_data);
    assert!(s.flow.credit.limit() - s.flow.data_read >= window / 2);
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
    let probe = w
        .server()
        .path
        .probe
        .as_ref()
        .expect("probing the new address");
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
    assert!(w.server().path.probe.is_none(), "the probe never gave up");
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
