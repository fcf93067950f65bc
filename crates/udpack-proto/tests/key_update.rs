//! Key update and the AEAD usage limits (PROTOCOL.md §2.11), in the simulator with
//! limits low enough that a short transfer crosses many key phases.

use std::time::Duration;

use udpack_proto::testing::wire::{data_header_len, is_data_packet};
use udpack_proto::testing::*;
use udpack_proto::{transport_error, CloseReason, TransportConfig};

/// The key phase bit of a data packet's first byte.
const KEY_PHASE: u8 = 0x01;

/// A transport whose keys are used up after `limit` packets.
fn low_limit(limit: u64) -> TransportConfig {
    TransportConfig {
        aead_confidentiality_limit: limit,
        ..TransportConfig::default()
    }
}

fn is_data(d: &[u8]) -> bool {
    d.first().is_some_and(|&b| is_data_packet(b))
}

/// Where a data packet's number is: it is sent cut to 2, 4 or 8 bytes.
fn number_bytes(d: &[u8]) -> std::ops::Range<usize> {
    9..data_header_len(d[0])
}

/// The packet number as sent (its low bytes).
fn packet_number(d: &[u8]) -> u64 {
    d[number_bytes(d)]
        .iter()
        .fold(0, |n, &b| n << 8 | u64::from(b))
}

/// Writes the low bytes of `n` as the packet number.
fn set_packet_number(d: &mut [u8], n: u64) {
    let at = number_bytes(d);
    let len = at.len();
    d[at].copy_from_slice(&n.to_be_bytes()[8 - len..]);
}

fn assert_open(sim: &Sim) {
    for (i, n) in sim.nodes.iter().enumerate() {
        assert!(n.app.closed.is_empty(), "node {i}: {:?}", n.app.closed);
    }
}

#[test]
fn a_long_transfer_goes_through_several_key_updates_both_ways_and_arrives_intact() {
    let limit = 2048;
    let mut sim = Pair::new(21, LinkParams::new(Duration::from_millis(10), 20_000_000))
        .server_transport(low_limit(limit))
        .client_transport(low_limit(limit))
        .client_streams(vec![8 << 20])
        .server_streams(vec![8 << 20])
        .build();
    assert!(
        sim.run_until(Duration::from_secs(60), streams_done),
        "transfer did not finish"
    );
    check_transfer(&sim);
    assert_open(&sim);
    let (c, s) = (client_handle(&sim), server_handle(&sim));
    let (cs, ss) = (stats(&mut sim, 1, c), stats(&mut sim, 0, s));
    println!(
        "key updates: client {}, server {}; packets sent {} / {}",
        cs.key_updates, ss.key_updates, cs.packets_sent, ss.packets_sent
    );
    assert!(cs.key_updates >= 4, "{cs:?}");
    assert_eq!(
        cs.key_updates, ss.key_updates,
        "both sides in the same phase"
    );
    // No key sealed more than the limit: each phase carried at most `limit` packets.
    for st in [&cs, &ss] {
        assert!(st.packets_sent <= (st.key_updates + 1) * limit, "{st:?}");
    }
    // Nothing failed to open: no packet was sent under a key the peer lacked.
    assert_eq!(cs.packets_dropped, 0);
    assert_eq!(ss.packets_dropped, 0);
}

#[test]
fn the_confidentiality_limit_forces_updates_on_a_one_way_transfer() {
    // Only the client sends data; the server seals ACKs alone and never reaches half its
    // limit before the client does, so every update is the client's.
    let limit = 1024;
    let mut sim = Pair::new(22, LinkParams::new(Duration::from_millis(2), 20_000_000))
        .client_transport(low_limit(limit))
        .client_streams(vec![4 << 20])
        .build();
    assert!(sim.run_until(Duration::from_secs(60), streams_done));
    check_transfer(&sim);
    assert_open(&sim);
    let (c, s) = (client_handle(&sim), server_handle(&sim));
    let (cs, ss) = (stats(&mut sim, 1, c), stats(&mut sim, 0, s));
    assert!(cs.packets_sent > 2 * limit && cs.key_updates >= 2, "{cs:?}");
    assert!(
        cs.packets_sent <= (cs.key_updates + 1) * limit,
        "{} packets in {} phases",
        cs.packets_sent,
        cs.key_updates + 1
    );
    assert_eq!(
        ss.key_updates, cs.key_updates,
        "the server followed each one"
    );
}

#[test]
fn packets_reordered_across_an_update_still_open() {
    // Every 32nd phase-0 data packet of the client is held back and delivered only once
    // the server is in phase 1: each one opens with the old keys. After 3 PTO the old
    // keys are gone, and a packet still held is dropped.
    let limit = 1024;
    let mut sim = Pair::new(23, LinkParams::new(Duration::from_millis(5), 20_000_000))
        .client_transport(low_limit(limit))
        .server_transport(low_limit(limit))
        .client_streams(vec![4 << 20])
        .build();
    let client_addr = sim.client().addr;
    sim.filter = Some(Box::new(move |c: &Captured| {
        let d = &c.data;
        if c.from == client_addr && is_data(d) && d[0] & KEY_PHASE == 0 {
            let pn = packet_number(d);
            if pn > 16 && pn % 32 == 0 {
                return Fate::Hold;
            }
        }
        Fate::Deliver
    }));
    let switched = sim.run_until(Duration::from_secs(30), |s| {
        let n = s.server();
        n.app
            .sessions
            .first()
            .and_then(|&h| n.ep.session_ref(h))
            .is_some_and(|x| x.stats().key_updates >= 1)
    });
    assert!(switched, "no key update");
    sim.filter = None;
    let held = std::mem::take(&mut sim.held);
    assert!(held.len() >= 4, "{} held", held.len());
    let s = server_handle(&sim);
    let before = stats(&mut sim, 0, s);
    let late = held.len() - 1;
    for c in &held[..late] {
        sim.handle_now(c.from, 0, &c.data);
    }
    let after = stats(&mut sim, 0, s);
    assert_eq!(after.packets_dropped, before.packets_dropped, "all opened");
    assert_eq!(
        after.packets_received,
        before.packets_received + late as u64,
        "each one counted as received"
    );
    // Long after the update, the old key is gone: the last held packet fails.
    sim.run_until(Duration::from_secs(2), |_| false);
    let before = stats(&mut sim, 0, s);
    let c = &held[late];
    sim.handle_now(c.from, 0, &c.data);
    let after = stats(&mut sim, 0, s);
    assert_eq!(after.packets_dropped, before.packets_dropped + 1);
    assert!(sim.run_until(Duration::from_secs(60), streams_done));
    check_transfer(&sim);
    assert_open(&sim);
}

#[test]
fn a_flipped_phase_bit_that_does_not_authenticate_switches_nothing() {
    let limit = 1024;
    let mut sim = Pair::new(24, LinkParams::new(Duration::from_millis(5), 20_000_000))
        .client_transport(low_limit(limit))
        .server_transport(low_limit(limit))
        .client_streams(vec![1 << 20])
        .build();
    sim.capture = Some(Vec::new());
    run_until_connected(&mut sim);
    sim.run_until(Duration::from_millis(50), |_| false);
    let client_addr = sim.client().addr;
    let mut forged: Vec<u8> = sim
        .capture
        .take()
        .expect("capture")
        .into_iter()
        .rev()
        .find(|c| c.from == client_addr && is_data(&c.data))
        .expect("a client data packet")
        .data;
    // A fresh packet number (past the replay check) and the flipped bit: the header is
    // authenticated, so this opens with no key.
    let pn = packet_number(&forged) + 10_000;
    set_packet_number(&mut forged, pn);
    forged[0] ^= KEY_PHASE;
    let s = server_handle(&sim);
    let before = stats(&mut sim, 0, s);
    sim.handle_now(client_addr, 0, &forged);
    let after = stats(&mut sim, 0, s);
    assert_eq!(after.packets_dropped, before.packets_dropped + 1);
    assert_eq!(
        after.key_updates, 0,
        "a forged flipped bit moved the server"
    );
    // The session goes on in phase 0, and later updates still work.
    assert!(sim.run_until(Duration::from_secs(30), streams_done));
    check_transfer(&sim);
    assert_open(&sim);
    let c = client_handle(&sim);
    let cs = stats(&mut sim, 1, c);
    assert!(cs.key_updates >= 1);
    assert_eq!(stats(&mut sim, 0, s).key_updates, cs.key_updates);
}

#[test]
fn the_integrity_limit_closes_the_session() {
    let bound = 5;
    let mut sim = Pair::new(25, LinkParams::new(Duration::from_millis(5), 0))
        .server_transport(TransportConfig {
            aead_integrity_limit: bound,
            ..TransportConfig::default()
        })
        .build();
    sim.capture = Some(Vec::new());
    run_until_connected(&mut sim);
    sim.run_until(Duration::from_millis(50), |_| false);
    let client_addr = sim.client().addr;
    let genuine = sim
        .capture
        .take()
        .expect("capture")
        .into_iter()
        .find(|c| c.from == client_addr && is_data(&c.data))
        .expect("a client data packet")
        .data;
    let base = packet_number(&genuine) + 1_000;
    let forge = |i: u64| {
        let mut d = genuine.clone();
        set_packet_number(&mut d, base + i);
        d
    };
    for i in 0..bound {
        sim.handle_now(client_addr, 0, &forge(i));
    }
    let s = server_handle(&sim);
    assert!(sim
        .server_mut()
        .ep
        .session(s)
        .is_some_and(|x| x.is_established()));
    assert_eq!(stats(&mut sim, 0, s).packets_dropped, bound);
    sim.handle_now(client_addr, 0, &forge(bound));
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        !s.server().app.closed.is_empty() && !s.client().app.closed.is_empty()
    }));
    let code = transport_error::AEAD_LIMIT_REACHED;
    assert!(
        matches!(&sim.server().app.closed[0].1, CloseReason::Transport { code: c, by_peer: false, .. } if *c == code),
        "{:?}",
        sim.server().app.closed
    );
    assert!(
        matches!(&sim.client().app.closed[0].1, CloseReason::Transport { code: c, by_peer: true, .. } if *c == code),
        "{:?}",
        sim.client().app.closed
    );
}

#[test]
fn a_peer_that_never_confirms_an_update_is_closed_before_the_key_is_used_up() {
    // Every server packet of phase 1 is lost: the client never sees the new phase, so
    // the server's update is never confirmed and its key runs out.
    let limit = 64;
    let mut sim = Pair::new(26, LinkParams::new(Duration::from_millis(20), 100_000_000))
        .server_transport(low_limit(limit))
        .server_streams(vec![64 << 20])
        .build();
    let server_addr = sim.server().addr;
    sim.filter = Some(Box::new(move |c: &Captured| {
        if c.from == server_addr && is_data(&c.data) && c.data[0] & KEY_PHASE != 0 {
            Fate::Lose
        } else {
            Fate::Deliver
        }
    }));
    let closed = sim.run_until(Duration::from_secs(30), |s| {
        !s.server().app.closed.is_empty()
    });
    assert!(closed, "{:?}", sim.server().app.closed);
    let s = server_handle(&sim);
    let st = stats(&mut sim, 0, s);
    let reason = &sim.server().app.closed[0].1;
    assert!(
        matches!(reason, CloseReason::Transport { code, by_peer: false, .. } if *code == transport_error::AEAD_LIMIT_REACHED),
        "{reason:?}"
    );
    assert_eq!(st.key_updates, 1);
    assert!(st.packets_sent <= 2 * limit, "{st:?}");
}
