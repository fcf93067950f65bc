//! Path MTU discovery in the simulator (PROTOCOL.md §7.5): the session finds the
//! largest datagram the path carries, a lost probe is not congestion, and a path that
//! shrinks under the session (a black hole) costs a fallback, not the session.

use std::time::Duration;

use udpack_proto::testing::*;
use udpack_proto::{ControllerKind, SessionStats, TransportConfig};

const RATE: u64 = 100_000_000;

/// A 100 Mbit/s link, 40 ms RTT, that carries datagrams up to `max_datagram`.
fn path(max_datagram: usize) -> LinkParams {
    let mut link = LinkParams::new(Duration::from_millis(20), RATE);
    link.max_datagram = max_datagram;
    link
}

fn client_stats(sim: &mut Sim) -> SessionStats {
    sim.client_mut().session().stats()
}

/// Runs `sim` for `d`; returns the server's goodput over it in bits per second.
fn goodput_over(sim: &mut Sim, d: Duration) -> f64 {
    let before = sim.server().app.bytes_read;
    let t = sim.now;
    sim.run_until(d, |_| false);
    let bytes = sim.server().app.bytes_read - before;
    bytes as f64 * 8.0 / (sim.now - t).as_secs_f64()
}

#[test]
fn each_path_gets_the_largest_datagram_it_carries() {
    // (what the path carries, what the session should settle on, probes lost on the
    // way: three for each larger size that does not pass)
    let cases = [(65_507, 65_507, 0), (8972, 8972, 3), (1472, 1472, 6)];
    for (carried, expected, lost) in cases {
        let mut sim = Pair::new(70, path(carried))
            .client_streams(vec![u64::MAX / 4])
            .build();
        sim.run_until(Duration::from_secs(3), |_| false);
        let s = client_stats(&mut sim);
        assert_eq!(s.datagram_size, expected, "a path that carries {carried}");
        assert_eq!(s.mtu_probes_lost, lost, "a path that carries {carried}");
        assert_eq!(sim.up_stats().too_large, lost);
        assert!(sim.server().app.errors.is_empty());
    }
}

#[test]
fn without_discovery_the_initial_size_stays() {
    let mut sim = Pair::new(71, path(65_507))
        .client_transport(TransportConfig {
            mtu_discovery: false,
            ..TransportConfig::default()
        })
        .client_streams(vec![u64::MAX / 4])
        .build();
    sim.run_until(Duration::from_secs(2), |_| false);
    let s = client_stats(&mut sim);
    assert_eq!(s.datagram_size, 1452);
    assert_eq!(sim.up_stats().too_large, 0);
    assert_eq!(s.mtu_probes_lost, 0);
}

/// NewReno leaves slow start at its first loss: six lost probes on the way to 1472
/// bytes must leave it in slow start, its window doubling every round trip.
#[test]
fn a_lost_probe_does_not_shrink_the_window() {
    let mut link = path(1472);
    link.rate_bps = 0;
    let mut sim = Pair::new(72, link)
        .client_transport(TransportConfig {
            congestion: ControllerKind::NewReno,
            ..TransportConfig::default()
        })
        .client_streams(vec![u64::MAX / 4])
        .build();
    sim.run_until(Duration::from_millis(1500), |_| false);
    let s = client_stats(&mut sim);
    // 14.7 kB doubled over some 30 round trips is far past the flow-control limit
    // of 64 MiB; a window halved at the first lost probe (about 0.4 s in, near 150
    // kB) and grown by one packet per round trip since is under 200 kB.
    assert!(
        s.congestion_window > 8_000_000,
        "window {} B: a lost probe was taken for congestion",
        s.congestion_window
    );
    assert_eq!(s.mtu_probes_lost, 6, "the search ran");
    assert_eq!(s.packets_lost, 0);
    assert_eq!(s.datagram_size, 1472);
}

#[test]
fn a_path_that_shrinks_mid_transfer_falls_back_and_the_transfer_completes() {
    let size = 80_000_000;
    let mut sim = Pair::new(73, path(1472)).client_streams(vec![size]).build();
    sim.run_until(Duration::from_secs(3), |_| false);
    assert_eq!(client_stats(&mut sim).datagram_size, 1472);
    assert!(!streams_done(&sim), "the transfer is over already");
    // A tunnel on the way: from now on the path carries 1280-byte IPv4 packets.
    let (up, down) = sim.links_mut();
    up.max_datagram = 1252;
    down.max_datagram = 1252;
    let t = sim.now;
    let left = size - sim.server().app.bytes_read;
    assert!(
        sim.run_until(Duration::from_secs(20), streams_done),
        "the transfer did not complete after the path shrank"
    );
    check_transfer(&sim);
    let s = client_stats(&mut sim);
    assert_eq!(s.datagram_size, 1200, "back to the size every path carries");
    eprintln!(
        "the path shrank with {:.1} MB to go, sent in {:?}",
        left as f64 / 1e6,
        sim.now - t
    );
    assert!(
        sim.now - t < Duration::from_secs(10),
        "the rest took {:?}",
        sim.now - t
    );
}

/// The path shrinks one way only while data flows both ways: the client falls back,
/// the server (whose way still carries 1472) does not, and both transfers complete.
#[test]
fn a_path_that_shrinks_one_way_under_two_way_traffic_falls_back() {
    let size = 60_000_000;
    let mut sim = Pair::new(75, path(1472))
        .client_streams(vec![size])
        .server_streams(vec![size])
        .build();
    sim.run_until(Duration::from_secs(3), |_| false);
    assert_eq!(client_stats(&mut sim).datagram_size, 1472);
    assert!(!streams_done(&sim), "the transfer is over already");
    sim.links_mut().0.max_datagram = 1252;
    assert!(
        sim.run_until(Duration::from_secs(30), streams_done),
        "the transfers did not complete after the path shrank"
    );
    check_transfer(&sim);
    assert_eq!(client_stats(&mut sim).datagram_size, 1200);
    let h = server_handle(&sim);
    assert_eq!(
        stats(&mut sim, 0, h).datagram_size,
        1472,
        "the other way still carries 1472"
    );
}

#[test]
fn larger_datagrams_carry_more_of_the_link() {
    // Jumbo frames: the same link at 8972-byte datagrams against the 1452 a session
    // without discovery keeps; the headers and tags per byte shrink six-fold.
    let mut found = Pair::new(74, path(8972))
        .client_streams(vec![u64::MAX / 4])
        .build();
    found.run_until(Duration::from_secs(4), |_| false);
    let with = goodput_over(&mut found, Duration::from_secs(6));
    assert_eq!(client_stats(&mut found).datagram_size, 8972);
    let mut fixed = Pair::new(74, path(8972))
        .client_transport(TransportConfig {
            mtu_discovery: false,
            ..TransportConfig::default()
        })
        .client_streams(vec![u64::MAX / 4])
        .build();
    fixed.run_until(Duration::from_secs(4), |_| false);
    let without = goodput_over(&mut fixed, Duration::from_secs(6));
    eprintln!(
        "100 Mbit/s, 40 ms, path carries 8972 B: {:.2} Mbit/s found, {:.2} Mbit/s at 1452 B",
        with / 1e6,
        without / 1e6
    );
    assert!(with > without * 1.02, "{with} against {without}");
}

/// A probe whose ACK comes after the probe was declared lost (held back on the way,
/// past the loss threshold) still proves its size: recovery has forgotten the probe by
/// then (it was not in flight), so the session checks the ACK against it.
#[test]
fn a_probe_acknowledged_after_it_was_declared_lost_sets_the_size() {
    let mut sim = Pair::new(73, path(1472))
        .client_streams(vec![u64::MAX / 4])
        .build();
    // Every 1,472-byte datagram from the client is held: the probes of that size (data
    // goes in 1,452-byte ones until a probe passes).
    let probe_size = 1472;
    sim.filter = Some(Box::new(move |c| {
        if c.data.len() == probe_size {
            Fate::Hold
        } else {
            Fate::Deliver
        }
    }));
    sim.run_until(Duration::from_secs(3), |s| {
        let c = &s.client().app;
        !c.connected.is_empty() && {
            let h = c.sessions[0];
            s.client()
                .ep
                .session_ref(h)
                .is_some_and(|x| x.stats().mtu_probes_lost > 0)
        }
    });
    let lost = client_stats(&mut sim);
    assert_eq!(lost.mtu_probes_lost, 1, "the first probe was declared lost");
    assert_eq!(lost.datagram_size, 1452);
    // It arrives after all; the server acknowledges it.
    let probe = sim.held.remove(0);
    sim.inject(probe.from, 0, probe.data);
    sim.run_until(Duration::from_millis(60), |_| false);
    let s = client_stats(&mut sim);
    assert_eq!(s.datagram_size, 1472, "the late ACK proved the size");
    assert_eq!(s.spurious_losses, 0, "a probe is not a lost packet");
}
