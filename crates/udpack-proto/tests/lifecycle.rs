//! A session's life after the handshake, in the simulator: address changes and the
//! amplification limit, idle timeout and keepalive, GOAWAY and CLOSE, and the figures
//! `stats()` reports.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use udpack_proto::testing::wire::{long, DATA_PACKET};
use udpack_proto::testing::*;
use udpack_proto::{CloseReason, Event, SessionHandle, StreamError, TransportConfig};

fn link(one_way_ms: u64, rate_bps: u64) -> LinkParams {
    LinkParams::new(Duration::from_millis(one_way_ms), rate_bps)
}

fn remote_addr(sim: &mut Sim, node: usize, h: SessionHandle) -> SocketAddr {
    sim.nodes[node]
        .ep
        .session(h)
        .expect("session still held")
        .remote_addr()
}

/// Bytes of the captured datagrams that match.
fn captured_bytes(sim: &Sim, f: impl Fn(&Captured) -> bool) -> u64 {
    sim.capture
        .as_ref()
        .expect("capture is on")
        .iter()
        .filter(|c| f(c))
        .map(|c| c.data.len() as u64)
        .sum()
}

/// When node `node` saw `Closed`, and why.
fn closed_at(sim: &Sim, node: usize) -> (Instant, CloseReason) {
    sim.nodes[node]
        .app
        .event_log
        .as_ref()
        .expect("event log is on")
        .iter()
        .find_map(|(t, _, e)| match e {
            Event::Closed(r) => Some((*t, r.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("node {node} did not close"))
}

#[test]
fn nat_rebinding_mid_transfer_moves_the_session_after_validation() {
    let seed = 31;
    let one_way = Duration::from_millis(20);
    let mut sim = Pair::new(seed, link(20, 20_000_000))
        .client_streams(vec![1_500_000])
        .server_streams(vec![300_000])
        .build();
    sim.capture = Some(Vec::new());
    // The NAT forgets the old mapping: packets to the old address are lost.
    sim.rebind_drops_old = true;
    let (server_addr, old) = (sim.server().addr, sim.nodes[1].addr);
    run_until_connected(&mut sim);
    let (sh, ch) = (server_handle(&sim), client_handle(&sim));
    sim.run_until(Duration::from_millis(200), |_| false);
    assert!(!streams_done(&sim), "the transfer is over already");
    assert_eq!(remote_addr(&mut sim, 0, sh), old);

    let new: SocketAddr = "10.0.2.1:6000".parse().expect("address");
    let rebound_at = sim.now;
    sim.rebind = Some((1, rebound_at, new));
    let mut moved_at = None;
    let deadline = sim.now + Duration::from_secs(30);
    while !streams_done(&sim) {
        assert!(sim.now < deadline, "transfer did not finish");
        sim.run_until(Duration::from_millis(1), |_| false);
        let remote = remote_addr(&mut sim, 0, sh);
        match moved_at {
            None if remote == new => moved_at = Some(sim.now),
            None => assert_eq!(remote, old, "moved to an unexpected address"),
            Some(_) => assert_eq!(remote, new, "moved back"),
        }
    }
    check_transfer(&sim);
    let moved_at = moved_at.expect("the server never moved to the new address");

    // The first packet from the new address reached the server one way later; the
    // move needs the server's challenge to reach the client and the answer to return.
    let capture = sim.capture.as_ref().expect("capture");
    let first_new = capture
        .iter()
        .find(|c| c.from == new)
        .map(|c| c.at)
        .expect("the client sent from the new address");
    assert!(first_new >= rebound_at);
    assert!(
        moved_at >= first_new + 3 * one_way,
        "moved {:?} after the first packet from the new address",
        moved_at - first_new
    );
    assert!(
        moved_at <= first_new + Duration::from_millis(500),
        "validation took {:?}",
        moved_at - first_new
    );
    // Before validation the server sent the new address only small probes, and far
    // less than three times what it received from there. The move is seen at 1 ms
    // steps: what the server sent in the step of the move (a burst of queued data at
    // once) may already follow it.
    let surely_before = moved_at - Duration::from_millis(1);
    let to_new_before = captured_bytes(&sim, |c| {
        c.from == server_addr && c.to == new && c.at < surely_before
    });
    let from_new_before = captured_bytes(&sim, |c| {
        c.from == new && c.to == server_addr && c.at + one_way < moved_at
    });
    assert!(to_new_before > 0, "no path challenge was sent");
    assert!(
        to_new_before <= 3 * from_new_before,
        "sent {to_new_before} to the unvalidated address, received {from_new_before}"
    );
    // After it, data flows to the new address; the client never moved.
    let to_new_after = captured_bytes(&sim, |c| {
        c.from == server_addr && c.to == new && c.at > moved_at
    });
    assert!(
        to_new_after > 100_000,
        "only {to_new_after} bytes after the move"
    );
    assert_eq!(remote_addr(&mut sim, 1, ch), server_addr);
    close_gracefully(&mut sim, 8);
}

/// The rebinding comes with an outage long enough for the client's probe timeout to
/// back off: the server's challenge then waits for the client's next probe, which may
/// come after the server gave one round of challenges up. A late answer still
/// validates, and the answer is not held back by a full congestion window, so the
/// transfer goes on instead of stalling until the idle timeout.
#[test]
fn rebinding_during_an_outage_still_moves_the_session() {
    let mut sim = Pair::new(37, link(20, 20_000_000))
        .client_streams(vec![3_000_000])
        .build();
    sim.rebind_drops_old = true;
    run_until_connected(&mut sim);
    let sh = server_handle(&sim);
    sim.run_until(Duration::from_millis(300), |_| false);
    assert!(!streams_done(&sim), "the transfer is over already");
    let new: SocketAddr = "10.0.2.1:6000".parse().expect("address");
    let outage_end = sim.now + Duration::from_millis(1500);
    sim.rebind = Some((1, sim.now, new));
    sim.filter = Some(Box::new(move |c: &Captured| {
        if c.at < outage_end {
            Fate::Lose
        } else {
            Fate::Deliver
        }
    }));
    let deadline = outage_end + Duration::from_secs(8);
    while !streams_done(&sim) {
        assert!(
            sim.now < deadline,
            "the transfer stalled after the outage (server sees {})",
            remote_addr(&mut sim, 0, sh)
        );
        sim.run_until(Duration::from_millis(5), |_| false);
    }
    check_transfer(&sim);
    assert_eq!(remote_addr(&mut sim, 0, sh), new);
}

#[test]
fn rebinding_right_after_the_hello() {
    // The server's budget toward the hello's address is spent on data at once; the
    // client's first packets come from a new address. The session must move there.
    let seed = 40;
    let mut sim = Pair::new(seed, link(20, 20_000_000))
        .client_streams(vec![200_000])
        .server_streams(vec![300_000])
        .build();
    sim.capture = Some(Vec::new());
    let (server_addr, old) = (sim.server().addr, sim.nodes[1].addr);
    let new: SocketAddr = "10.0.2.2:6000".parse().expect("address");
    sim.rebind = Some((1, sim.now + Duration::from_millis(1), new));
    assert!(
        sim.run_until(Duration::from_secs(20), streams_done),
        "transfer did not finish"
    );
    check_transfer(&sim);
    let sh = server_handle(&sim);
    assert_eq!(remote_addr(&mut sim, 0, sh), new);
    assert_eq!(sim.server().ep.stats().sessions_accepted, 1);
    // The hello's address never proved itself: it got at most three times the hello.
    let from_old = captured_bytes(&sim, |c| c.from == old);
    let to_old = captured_bytes(&sim, |c| c.from == server_addr && c.to == old);
    assert!(
        from_old >= 1200 && to_old > from_old,
        "{from_old} / {to_old}"
    );
    assert!(
        to_old <= 3 * from_old,
        "sent {to_old} to an address that sent {from_old}"
    );
    close_gracefully(&mut sim, 5);
}

#[test]
fn spoofed_copy_of_a_packet_gets_at_most_three_times_its_size() {
    let seed = 32;
    let one_way = Duration::from_millis(20);
    let mut sim = Pair::new(seed, link(20, 20_000_000))
        .client_streams(vec![800_000])
        .server_streams(vec![200_000])
        .build();
    sim.capture = Some(Vec::new());
    let client_addr = sim.client().addr;
    run_until_connected(&mut sim);
    let sh = server_handle(&sim);
    sim.run_until(Duration::from_millis(150), |_| false);
    // The smallest client packet still on its way: a copy sent from the victim's
    // address overtakes it, so the server sees a fresh packet from a new address.
    let now = sim.now;
    let copy = sim
        .capture
        .as_ref()
        .expect("capture")
        .iter()
        .filter(|c| c.from == client_addr && c.data[0] == DATA_PACKET && c.at + one_way > now)
        .min_by_key(|c| c.data.len())
        .map(|c| c.data.clone())
        .expect("a client packet in flight");
    let victim: SocketAddr = "203.0.113.9:7777".parse().expect("address");
    let before = stats(&mut sim, 0, sh);
    sim.inject(victim, 0, copy.clone());
    assert!(
        sim.run_until(Duration::from_secs(20), streams_done),
        "transfer did not finish"
    );
    check_transfer(&sim);
    // The copy was authentic: accepted; the original, arriving second, was a replay.
    let after = stats(&mut sim, 0, sh);
    assert_eq!(after.packets_dropped - before.packets_dropped, 1);
    let sent = captured_bytes(&sim, |c| c.to == victim);
    assert!(sent > 0, "the server did not probe the new address");
    assert!(
        sent <= 3 * copy.len() as u64,
        "sent {sent} bytes to an address that sent {}",
        copy.len()
    );
    // The session stayed where it was.
    assert_eq!(remote_addr(&mut sim, 0, sh), client_addr);
    // More time: no further probes beyond the budget.
    sim.run_until(Duration::from_secs(3), |_| false);
    assert_eq!(captured_bytes(&sim, |c| c.to == victim), sent);
    close_gracefully(&mut sim, 6);
}

#[test]
fn replayed_hello_from_a_spoofed_address_gets_nothing() {
    let seed = 33;
    let mut sim = Pair::new(seed, link(20, 20_000_000))
        .client_streams(vec![50_000])
        .server_streams(vec![100_000])
        .build();
    sim.capture = Some(Vec::new());
    sim.server_mut().app.event_log = Some(Vec::new());
    let (server_addr, client_addr) = (sim.server().addr, sim.nodes[1].addr);
    let victim: SocketAddr = "203.0.113.10:7777".parse().expect("address");
    run_until_connected(&mut sim);
    let hello = sim
        .capture
        .as_ref()
        .expect("capture")
        .iter()
        .find(|c| c.from == client_addr && c.data[0] == long::HELLO)
        .map(|c| c.data.clone())
        .expect("the hello");
    // Stateless answers are smaller than what asked for them, and a short hello gets
    // none at all.
    let mut garbage = hello.clone();
    garbage[40] ^= 0xff;
    // Another client session id: a known one from elsewhere is ignored outright.
    garbage[6] ^= 0xff;
    sim.inject(victim, 0, garbage.clone());
    sim.inject(victim, 0, garbage[..garbage.len() - 1].to_vec());
    sim.run_until(Duration::from_millis(5), |_| false);
    let answered = captured_bytes(&sim, |c| c.to == victim);
    assert!(
        answered > 0 && answered < garbage.len() as u64 / 10,
        "answered {answered}"
    );

    // The hello replayed from another address while its session lives is recognised by
    // its client session id: no second session, nothing sent to the victim.
    sim.inject(victim, 0, hello.clone());
    sim.run_until(Duration::from_secs(1), |_| false);
    assert_eq!(sim.server().app.sessions.len(), 1);
    assert_eq!(sim.server_mut().ep.session_count(), 1);
    sim.run_until(Duration::from_secs(5), |s| {
        sent_and_read(&s.client().app, &s.nodes[0].app)
            && s.client().app.receivers.values().all(|r| r.ended)
    });
    assert_eq!(captured_bytes(&sim, |c| c.to == victim), answered);

    // The real session is unaffected.
    let ch = client_handle(&sim);
    assert_eq!(remote_addr(&mut sim, 1, ch), server_addr);
    let client = &sim.client().app;
    assert!(client.errors.is_empty(), "{:?}", client.errors);
    assert!(sent_and_read(client, &sim.server().app));
    assert_eq!(client.bytes_read, 100_000);
    assert!(client.closed.is_empty());
}

#[test]
fn idle_timeout_when_the_peer_vanishes() {
    let seed = 34;
    let idle = Duration::from_secs(4);
    let t = TransportConfig {
        idle_timeout: idle,
        keepalive: Some(Duration::from_secs(1)),
        ..TransportConfig::default()
    };
    let mut sim = Pair::new(seed, link(20, 20_000_000))
        .server_transport(t.clone())
        .client_transport(t)
        .client_streams(vec![50_000_000])
        .server_streams(vec![1_000_000])
        .build();
    sim.capture = Some(Vec::new());
    for n in &mut sim.nodes {
        n.app.event_log = Some(Vec::new());
    }
    run_until_connected(&mut sim);
    sim.run_until(Duration::from_millis(300), |_| false);
    assert!(sim.nodes.iter().all(|n| n.app.closed.is_empty()));
    // Mid-transfer, the network goes dark both ways. (The window stays full of lost
    // data while the keepalive comes due: its timer must not be left in the past, or
    // the simulator's clock stops.)
    let cut = sim.now;
    let (up, down) = sim.links_mut();
    up.loss = 1.0;
    down.loss = 1.0;
    assert!(sim.run_until(Duration::from_secs(30), |s| {
        s.nodes.iter().all(|n| !n.app.closed.is_empty())
    }));
    for node in 0..2 {
        let (at, why) = closed_at(&sim, node);
        assert_eq!(why, CloseReason::TimedOut, "node {node}");
        let after = at - cut;
        assert!(
            after >= idle - Duration::from_millis(100) && after <= idle + Duration::from_secs(1),
            "node {node} timed out {after:?} after the cut"
        );
        // A timed-out session goes quiet at once and keeps no timer.
        let addr = sim.nodes[node].addr;
        assert_eq!(captured_bytes(&sim, |c| c.from == addr && c.at > at), 0);
        let h = sim.nodes[node].app.sessions[0];
        let s = sim.nodes[node].ep.session(h).expect("session");
        assert!(s.is_drained(), "node {node}");
        assert_eq!(s.open_stream(), Err(StreamError::SessionClosed));
        assert_eq!(sim.nodes[node].ep.poll_timeout(), None, "node {node}");
    }
}

#[test]
fn keepalive_keeps_an_idle_session_up() {
    let seed = 35;
    let idle = Duration::from_secs(3);
    let with = |keepalive: Option<Duration>| TransportConfig {
        idle_timeout: idle,
        keepalive,
        ..TransportConfig::default()
    };
    let second = Some(Duration::from_secs(1));
    // (server, client): both, or only one side, send keepalives.
    for (name, server, client) in [
        ("both", second, second),
        ("client only", None, second),
        ("server only", second, None),
    ] {
        let mut sim = Pair::new(seed, link(20, 0))
            .server_transport(with(server))
            .client_transport(with(client))
            .build();
        sim.capture = Some(Vec::new());
        run_until_connected(&mut sim);
        let start = sim.now;
        sim.run_until(4 * idle, |_| false);
        assert!(
            sim.nodes.iter().all(|n| n.app.closed.is_empty()),
            "{name}: closed {:?} / {:?}",
            sim.server().app.closed,
            sim.client().app.closed
        );
        let (sh, ch) = (server_handle(&sim), client_handle(&sim));
        assert!(sim
            .server_mut()
            .ep
            .session(sh)
            .expect("session")
            .is_established());
        assert!(sim
            .client_mut()
            .ep
            .session(ch)
            .expect("session")
            .is_established());
        // Only the keepalives (and their acknowledgements) kept it up: about one a
        // second, not a flood.
        let packets = sim
            .capture
            .as_ref()
            .expect("capture")
            .iter()
            .filter(|c| c.at > start)
            .count() as u64;
        let secs = (4 * idle).as_secs();
        assert!(
            packets >= secs && packets <= 6 * secs,
            "{name}: {packets} packets in {secs} s"
        );
        close_gracefully(&mut sim, 10);
    }
}

#[test]
fn without_keepalive_an_idle_session_times_out() {
    let seed = 36;
    let idle = Duration::from_secs(3);
    let t = TransportConfig {
        idle_timeout: idle,
        keepalive: None,
        ..TransportConfig::default()
    };
    let mut sim = Pair::new(seed, link(20, 0))
        .server_transport(t.clone())
        .client_transport(t)
        .build();
    for n in &mut sim.nodes {
        n.app.event_log = Some(Vec::new());
    }
    run_until_connected(&mut sim);
    assert!(sim.run_until(4 * idle, |s| {
        s.nodes.iter().all(|n| !n.app.closed.is_empty())
    }));
    for node in 0..2 {
        let (at, why) = closed_at(&sim, node);
        assert_eq!(why, CloseReason::TimedOut, "node {node}");
        let after = at - sim.start;
        assert!(
            after >= idle && after <= idle + Duration::from_secs(1),
            "node {node} timed out after {after:?}"
        );
    }
}

#[test]
fn goaway_reaches_the_peer_and_closes_after_the_streams_finish() {
    let seed = 37;
    // With a stream of its own, the server is done after the client; without one, its
    // last stream ends (the client's data read to the end) before the client learns that
    // its data arrived. Either way only the client, which sent the first GOAWAY, closes.
    for server_streams in [vec![250_000], vec![]] {
        let case = format!("server streams {server_streams:?}");
        let mut sim = Pair::new(seed, link(25, 20_000_000))
            .client_streams(vec![400_000, 150_000, 1])
            .server_streams(server_streams)
            .build();
        for n in &mut sim.nodes {
            n.app.event_log = Some(Vec::new());
        }
        // The client says GOAWAY as soon as it has written everything: long before the
        // data is through.
        sim.client_mut().app.goaway_when_done = Some(42);
        assert!(sim.run_until(Duration::from_secs(5), |s| !s
            .server()
            .app
            .goaways
            .is_empty()));
        let (sh, ch) = (server_handle(&sim), client_handle(&sim));
        assert_eq!(sim.server().app.goaways, vec![(sh, 42)], "{case}");
        assert!(!streams_done(&sim), "{case}: GOAWAY arrived after the data");
        // Neither side may open streams any more.
        for (node, h) in [(0, sh), (1, ch)] {
            let s = sim.nodes[node].ep.session(h).expect("session");
            assert_eq!(
                s.open_stream(),
                Err(StreamError::GoingAway),
                "{case}: node {node}"
            );
            assert!(s.is_established(), "{case}: node {node}");
        }
        assert!(sim.run_until(Duration::from_secs(30), |s| {
            s.nodes.iter().all(|n| !n.app.closed.is_empty())
        }));
        check_transfer(&sim);
        // Everything both sides sent was acknowledged before the close.
        for n in &sim.nodes {
            assert!(n.app.senders.values().all(|s| s.acked), "{case}");
        }
        let log = sim.server().app.event_log.as_ref().expect("event log");
        let goaway_at = log
            .iter()
            .find(|(_, _, e)| {
                *e == Event::GoAway {
                    code: 42,
                    reason: "done".into(),
                }
            })
            .map(|(t, _, _)| *t)
            .expect("the server saw GoAway with the client's reason");
        let last_read = log
            .iter()
            .filter(|(_, _, e)| matches!(e, Event::StreamReadable(_)))
            .map(|(t, _, _)| *t)
            .max()
            .expect("data arrived");
        let (server_closed, server_why) = closed_at(&sim, 0);
        assert!(
            goaway_at < last_read && last_read <= server_closed,
            "{case}"
        );
        // The client sent the first GOAWAY: its session ends as its own close, and the
        // server's as the peer's, when the client's APP_CLOSE arrives.
        assert_eq!(
            server_why,
            CloseReason::Peer {
                code: 42,
                reason: "done".into()
            },
            "{case}"
        );
        let (client_closed, client_why) = closed_at(&sim, 1);
        assert_eq!(
            client_why,
            CloseReason::Local {
                code: 42,
                reason: "done".into()
            },
            "{case}"
        );
        assert!(client_closed < server_closed, "{case}");
        // Both sessions drain and are done with timers.
        sim.run_until(Duration::from_secs(10), |_| false);
        for (node, h) in [(0, sh), (1, ch)] {
            assert!(sim.nodes[node].ep.session(h).expect("session").is_drained());
            assert_eq!(
                sim.nodes[node].ep.poll_timeout(),
                None,
                "{case}: node {node}"
            );
            assert_eq!(sim.nodes[node].app.closed.len(), 1, "{case}: node {node}");
        }
    }
}

#[test]
fn close_ends_the_peer_session_at_once() {
    let seed = 38;
    let one_way = Duration::from_millis(25);
    let mut sim = Pair::new(seed, link(25, 20_000_000))
        .client_streams(vec![5_000_000])
        .server_streams(vec![2_000_000])
        .build();
    for n in &mut sim.nodes {
        n.app.event_log = Some(Vec::new());
    }
    run_until_connected(&mut sim);
    sim.run_until(Duration::from_millis(300), |_| false);
    let (sh, ch) = (server_handle(&sim), client_handle(&sim));
    let now = sim.now;
    sim.client_mut()
        .ep
        .session(ch)
        .expect("client session")
        .close(now, 99, "bye");
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        s.nodes.iter().all(|n| !n.app.closed.is_empty())
    }));
    let (client_at, client_why) = closed_at(&sim, 1);
    let (server_at, server_why) = closed_at(&sim, 0);
    assert_eq!(
        client_why,
        CloseReason::Local {
            code: 99,
            reason: "bye".into()
        }
    );
    assert_eq!(
        server_why,
        CloseReason::Peer {
            code: 99,
            reason: "bye".into()
        }
    );
    assert_eq!(client_at, now);
    // One way, plus what queue the CLOSE found at the bottleneck.
    assert!(
        server_at >= now + one_way && server_at <= now + one_way + Duration::from_millis(60),
        "the server closed {:?} after the client",
        server_at - now
    );
    // The transfers were cut short, and nothing more can be done on either side.
    assert!(sim.server().app.receivers.values().any(|r| !r.ended));
    assert!(sim.client().app.receivers.values().any(|r| !r.ended));
    for (node, h) in [(0, sh), (1, ch)] {
        let s = sim.nodes[node].ep.session(h).expect("session");
        assert!(s.is_closed(), "node {node}");
        assert_eq!(s.open_stream(), Err(StreamError::SessionClosed));
    }
    // A stream that did not end reads as closed, not as waiting for more.
    let id = sim
        .client()
        .app
        .receivers
        .iter()
        .find(|(_, r)| !r.ended)
        .map(|(k, _)| k.1)
        .expect("an unfinished stream");
    let s = sim.client_mut().ep.session(ch).expect("session");
    assert_eq!(s.read(id, 1024), Err(StreamError::SessionClosed));
    // Both drain within a few seconds and go quiet.
    sim.run_until(Duration::from_secs(10), |_| false);
    for (node, h) in [(0, sh), (1, ch)] {
        assert!(sim.nodes[node].ep.session(h).expect("session").is_drained());
        assert_eq!(sim.nodes[node].ep.poll_timeout(), None, "node {node}");
        assert_eq!(sim.nodes[node].app.closed.len(), 1);
    }
}

#[test]
fn close_right_after_accept_reaches_the_client() {
    // The server's first flight spends its whole budget toward the unproven address,
    // then it closes before the client said anything: the CLOSE must still get out
    // once the client's first packet proves the address.
    let seed = 41;
    let one_way = Duration::from_millis(20);
    let mut sim = Pair::new(seed, link(20, 20_000_000))
        .client_streams(vec![10_000])
        .server_streams(vec![1_000_000])
        .build();
    sim.capture = Some(Vec::new());
    // Without the hello's copy: its bytes would raise the budget (and let the CLOSE
    // out) before the client's first packet, which is what this test holds back for.
    let mut hellos = 0;
    sim.filter = Some(Box::new(move |c: &Captured| {
        if c.data.first() == Some(&long::HELLO) {
            hellos += 1;
            if hellos > 1 {
                return Fate::Lose;
            }
        }
        Fate::Deliver
    }));
    for n in &mut sim.nodes {
        n.app.event_log = Some(Vec::new());
    }
    let (server_addr, client_addr) = (sim.server().addr, sim.nodes[1].addr);
    assert!(sim.run_until(Duration::from_secs(1), |s| {
        !s.server().app.connected.is_empty()
    }));
    let sh = server_handle(&sim);
    let accepted = sim.now;
    // The hello that arrived (the capture also holds its lost copy).
    let hello = sim
        .capture
        .as_ref()
        .expect("capture")
        .iter()
        .find(|c| c.from == client_addr)
        .map_or(0, |c| c.data.len() as u64);
    let first_flight = captured_bytes(&sim, |c| c.from == server_addr);
    assert!(
        first_flight > 3 * hello - 100 && first_flight <= 3 * hello,
        "first flight {first_flight} for a {hello}-byte hello"
    );
    sim.server_mut()
        .ep
        .session(sh)
        .expect("server session")
        .close(accepted, 7, "go away");
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        !s.client().app.closed.is_empty()
    }));
    let (at, why) = closed_at(&sim, 1);
    assert_eq!(
        why,
        CloseReason::Peer {
            code: 7,
            reason: "go away".into()
        }
    );
    // Reply and data reach the client one way later, its answer returns one way
    // after that, the CLOSE one way after that (plus the client's queued data).
    assert!(
        at <= accepted + 3 * one_way + Duration::from_millis(50),
        "the client learnt after {:?}",
        at - accepted
    );
    // Nothing beyond three times the hello went out before the client's first packet.
    let first_packet = sim
        .capture
        .as_ref()
        .expect("capture")
        .iter()
        .filter(|c| c.from == client_addr && c.data[0] == DATA_PACKET)
        .map(|c| c.at + one_way)
        .min()
        .expect("the client sent data");
    let before = captured_bytes(&sim, |c| c.from == server_addr && c.at < first_packet);
    assert!(
        before <= 3 * hello,
        "sent {before} before the address was proven"
    );
}

#[test]
fn stats_after_a_lossy_transfer() {
    let seed = 39;
    let rtt = Duration::from_millis(60);
    let rate = 20_000_000u64;
    let mut l = link(30, rate);
    l.loss = 0.02;
    let mut sim = Pair::new(seed, l)
        .client_streams(vec![1_500_000])
        .server_streams(vec![500_000])
        .build();
    run_until_connected(&mut sim);
    let (sh, ch) = (server_handle(&sim), client_handle(&sim));
    // The bulk sender's delivery rate while it sends: about the bottleneck's.
    let mut max_delivery = 0;
    let deadline = sim.now + Duration::from_secs(30);
    while !streams_done(&sim) {
        assert!(sim.now < deadline, "transfer did not finish");
        sim.run_until(Duration::from_millis(50), streams_done);
        max_delivery = max_delivery.max(stats(&mut sim, 1, ch).delivery_rate);
    }
    assert!(
        max_delivery > rate / 8 / 2 && max_delivery < rate / 8 * 3 / 2,
        "client delivery rate at most {max_delivery} B/s on a {} B/s link",
        rate / 8
    );
    check_transfer(&sim);
    let c = stats(&mut sim, 1, ch);
    let s = stats(&mut sim, 0, sh);
    let (up, down) = (sim.up_stats().clone(), sim.down_stats().clone());
    assert!(up.lost > 0 && down.lost > 0);
    for (name, me, peer, sent, received, link) in [
        ("client", &c, &s, 1_500_000u64, 500_000u64, &up),
        ("server", &s, &c, 500_000, 1_500_000, &down),
    ] {
        assert_eq!(me.stream_bytes_sent, sent, "{name}");
        assert_eq!(me.stream_bytes_received, received, "{name}");
        assert!(
            me.bytes_sent > sent && me.bytes_received > received,
            "{name}: {me:?}"
        );
        assert!(me.packets_sent > sent / 1500, "{name}: {me:?}");
        assert!(me.packets_received > received / 1500, "{name}: {me:?}");
        // Some of what the peer sent was lost on the way.
        assert!(me.packets_received < peer.packets_sent, "{name}");
        assert!(me.bytes_received < peer.bytes_sent, "{name}");
        // About the packets the network really lost (randomly, or at the full queue).
        let really = link.lost + link.dropped;
        assert!(me.packets_lost > 0, "{name}: {me:?}");
        assert!(
            me.packets_lost >= really * 3 / 4 && me.packets_lost <= really * 3 / 2 + 2,
            "{name}: {} losses detected, {really} happened",
            me.packets_lost
        );
        assert!(me.bytes_retransmitted > 0, "{name}: {me:?}");
        assert_eq!(me.packets_dropped, 0, "{name}");
        assert!(
            me.min_rtt >= rtt && me.min_rtt <= rtt + Duration::from_millis(10),
            "{name}: min rtt {:?}",
            me.min_rtt
        );
        assert!(
            me.smoothed_rtt >= rtt && me.smoothed_rtt <= rtt * 2,
            "{name}: smoothed rtt {:?}",
            me.smoothed_rtt
        );
        assert!(me.congestion_window >= 2 * 1200, "{name}: {me:?}");
        assert!(me.pacing_rate > 0, "{name}: {me:?}");
        assert!(
            me.delivery_rate > 0 && me.delivery_rate <= 2 * rate / 8,
            "{name}: delivery rate {}",
            me.delivery_rate
        );
    }
    // The bulk sender measured about the bottleneck rate at some point: its pacing
    // rate is of the order of the link's.
    assert!(
        c.pacing_rate > rate / 8 / 4,
        "client pacing rate {}",
        c.pacing_rate
    );
    close_gracefully(&mut sim, 12);
}
