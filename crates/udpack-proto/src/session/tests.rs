//! Rules that need a look inside the session (credit counters, the path probe), driven
//! through the simulator on an instant, lossless wire.

use std::net::SocketAddr;
use std::time::Duration;

use super::path::PATH_PROBE_TRIES;
use super::*;
use crate::frame::{Frame, Frames, StreamFrame};
use crate::packet::{is_data_packet, TAG_LEN};
use crate::testing::{Fate, LinkParams, Pair, Sim};

/// A connected pair on a wire without delay or rate limit; the applications only take
/// sessions, the test drives the streams. The client sends no MTU probes: the tests
/// hold and replay its data packets one by one.
fn instant_pair(server: TransportConfig) -> Sim {
    Pair::new(5, LinkParams::new(Duration::ZERO, 0))
        .server_transport(server)
        .client_transport(TransportConfig {
            mtu_discovery: false,
            ..TransportConfig::default()
        })
        .passive()
        .connected()
}

fn run(sim: &mut Sim, d: Duration) {
    sim.run_until(d, |_| false);
}

/// Both sides count the same stream bytes against the session credit, the server
/// consumed all of them, and the client has at least half a window to send.
fn assert_session_credit_in_step(sim: &mut Sim, window: u64, what: &str) {
    let (sent, peer_max) = {
        let c = sim.client_mut().session();
        (c.flow.data_sent, c.flow.peer_max_data)
    };
    let s = sim.server_mut().session();
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

/// Opens a client stream, writes `len` bytes to it and runs 5 ms holding every data
/// packet the client sends; returns the stream and the held packets.
fn write_and_hold(sim: &mut Sim, len: usize) -> (StreamId, Vec<crate::testing::Captured>) {
    let client_addr = sim.client().addr;
    let id = sim.client_mut().session().open_stream().expect("open");
    assert_eq!(sim.client_mut().session().write(id, &vec![2; len]), Ok(len));
    sim.filter = Some(Box::new(move |c| {
        if c.from == client_addr && is_data_packet(c.data[0]) {
            Fate::Hold
        } else {
            Fate::Deliver
        }
    }));
    run(sim, Duration::from_millis(5));
    sim.filter = None;
    (id, std::mem::take(&mut sim.held))
}

#[test]
fn resets_and_stops_leave_both_sides_counting_the_same_session_credit() {
    let window = 64 * 1024;
    let mut sim = instant_pair(TransportConfig {
        initial_session_window: window,
        max_session_window: window,
        ..TransportConfig::default()
    });
    let client_addr = sim.client().addr;

    // Written far beyond the session credit, then reset: the final size is what was
    // sent.
    let a = sim.client_mut().session().open_stream().expect("open");
    assert_eq!(
        sim.client_mut().session().write(a, &[1; 200_000]),
        Ok(200_000)
    );
    run(&mut sim, Duration::from_millis(200));
    assert_eq!(sim.client_mut().session().flow.data_sent, window);
    sim.client_mut().session().reset(a, 1).expect("reset");
    run(&mut sim, Duration::from_millis(200));
    assert_eq!(
        sim.server_mut().session().read(a, 100),
        Err(StreamError::Reset(1))
    );
    assert_session_credit_in_step(&mut sim, window, "after the reset");

    // A stream the server stops after its first packet: the packets after it arrive
    // late, the last ones never, and the reset tells their final size. The server
    // finishes its own half at once, so the stream could be forgotten as soon as the
    // client acknowledges that, before the reset.
    let (x, held) = write_and_hold(&mut sim, 40_000);
    assert!(held.len() >= 6, "{} packets sent", held.len());
    sim.handle_now(client_addr, 0, &held[0].data);
    assert!(sim.server_mut().session().streams.map.contains_key(&x));
    sim.server_mut().session().finish(x).expect("finish");
    sim.server_mut().session().stop(x, 2).expect("stop");
    for d in &held[1..held.len() / 2] {
        sim.handle_now(client_addr, 0, &d.data);
    }
    let received = sim.server_mut().session().streams.map[&x]
        .recv
        .max_received();
    run(&mut sim, Duration::from_secs(2));
    let st = &sim.client_mut().session().streams.map[&x];
    assert!(st.reset_sent == Some(2) && st.reset_acked);
    let final_size = st.send.end();
    assert!(
        received < final_size,
        "received {received} of the final size {final_size}"
    );
    assert!(
        !sim.server_mut().session().streams.map.contains_key(&x),
        "the stopped stream is forgotten once its final size is known"
    );
    assert_session_credit_in_step(&mut sim, window, "after the stop");

    // A stream that arrived whole, stopped unread: its credit is announced again at
    // once.
    let left = {
        let s = sim.server_mut().session();
        s.flow.credit.limit() - s.flow.data_read
    };
    let y = sim.client_mut().session().open_stream().expect("open");
    let len = left as usize - 1000;
    assert_eq!(sim.client_mut().session().write(y, &vec![3; len]), Ok(len));
    sim.client_mut().session().finish(y).expect("finish");
    run(&mut sim, Duration::from_millis(200));
    assert_eq!(
        sim.server_mut().session().streams.map[&y].final_size,
        Some(len as u64)
    );
    sim.server_mut().session().stop(y, 3).expect("stop");
    let s = sim.server_mut().session();
    assert!(s.pending.max_data);
    assert!(s.flow.credit.limit() - s.flow.data_read >= window / 2);
    run(&mut sim, Duration::from_millis(200));
    assert_session_credit_in_step(&mut sim, window, "after the second stop");
}

#[test]
fn a_path_probe_held_back_by_the_amplification_limit_gives_up() {
    let mut sim = instant_pair(TransportConfig::default());
    let (client_addr, server_addr) = (sim.client().addr, sim.server().addr);
    // A small authentic packet of the client's, replayed from another address before
    // the original arrives (which is then lost): the server probes the new address,
    // within three times that packet's size.
    sim.client_mut().session().pending.ping = true;
    let mut first = true;
    sim.filter = Some(Box::new(move |c| {
        if first && c.from == client_addr && is_data_packet(c.data[0]) {
            first = false;
            Fate::Hold
        } else {
            Fate::Deliver
        }
    }));
    run(&mut sim, Duration::from_millis(1));
    sim.filter = None;
    let copy = sim.held.pop().expect("the client sent a packet").data;
    let victim: SocketAddr = "192.0.2.7:9999".parse().expect("address");
    sim.capture = Some(Vec::new());
    sim.handle_now(victim, 0, &copy);
    run(&mut sim, Duration::from_millis(1));
    let probe = sim
        .server_mut()
        .session()
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
    let server = sim.server_mut().session();
    let pto = server.recovery.rtt.pto(server.config.max_ack_delay);
    // The address stays silent. Each probe timeout counts, sent or held back.
    run(&mut sim, pto * (PATH_PROBE_TRIES + 2));
    assert!(
        sim.server_mut().session().path.probe.is_none(),
        "the probe never gave up"
    );
    assert_eq!(sim.server_mut().session().remote_addr(), client_addr);
    let elsewhere = |sim: &Sim| -> Vec<SocketAddr> {
        sim.capture
            .iter()
            .flatten()
            .filter(|c| c.from == server_addr && c.to != client_addr)
            .map(|c| c.to)
            .collect()
    };
    let probes = elsewhere(&sim);
    assert!(
        (1..PATH_PROBE_TRIES as usize).contains(&probes.len())
            && probes.iter().all(|to| *to == victim),
        "{probes:?}"
    );
    run(&mut sim, Duration::from_secs(5));
    assert_eq!(elsewhere(&sim).len(), probes.len());
    assert!(sim.server_mut().session().is_established());
}

#[test]
fn a_loss_that_was_only_reordering_is_undone() {
    let newreno = TransportConfig {
        congestion: crate::ControllerKind::NewReno,
        ..TransportConfig::default()
    };
    let mut sim = Pair::new(7, LinkParams::new(Duration::from_millis(5), 0))
        .client_transport(newreno)
        .passive()
        .connected();
    let client_addr = sim.client().addr;
    let id = sim.client_mut().session().open_stream().expect("open");
    assert_eq!(
        sim.client_mut().session().write(id, &[7; 30_000]),
        Ok(30_000)
    );
    // The first data packet is held back: the ones after it arrive, so it is declared
    // lost three packets later.
    let mut first = true;
    sim.filter = Some(Box::new(move |c| {
        if first && c.from == client_addr && is_data_packet(c.data[0]) {
            first = false;
            Fate::Hold
        } else {
            Fate::Deliver
        }
    }));
    let before = sim.client_mut().session().stats().congestion_window;
    sim.run_until(Duration::from_secs(1), |s| {
        let c = &s.client().app;
        // Stop as soon as the client saw the loss.
        !c.connected.is_empty() && s.held.len() == 1 && {
            let h = c.sessions[0];
            s.client()
                .ep
                .session_ref(h)
                .is_some_and(|x| x.stats.packets_lost > 0)
        }
    });
    sim.filter = None;
    let cut = sim.client_mut().session().stats();
    assert_eq!(cut.packets_lost, 1);
    assert!(
        cut.congestion_window < before,
        "{} after the loss, {before} before",
        cut.congestion_window
    );
    // It was only late.
    let held = sim.held.pop().expect("held").data;
    sim.handle_now(client_addr, 0, &held);
    sim.run_until(Duration::from_millis(20), |_| false);
    let after = sim.client_mut().session().stats();
    assert_eq!(after.spurious_losses, 1);
    assert!(
        after.congestion_window >= before,
        "{} after the undo, {before} before the loss",
        after.congestion_window
    );
}

#[test]
fn a_session_closes_before_its_packet_numbers_run_out() {
    use crate::recovery::PACKET_NUMBER_LIMIT;
    let mut sim = instant_pair(TransportConfig::default());
    let client_addr = sim.client().addr;
    sim.client_mut().session().recovery.skip_packet_numbers_to(
        PACKET_NUMBER_LIMIT - super::packet_builder::CLOSE_PACKET_NUMBERS - 3,
    );
    let id = sim.client_mut().session().open_stream().expect("open");
    sim.client_mut()
        .session()
        .write(id, &[1; 50_000])
        .expect("write");
    run(&mut sim, Duration::from_secs(3));
    let reason = sim.client().app.closed.first().map(|c| c.1.clone());
    assert!(
        matches!(&reason, Some(CloseReason::Transport { code, by_peer: false, .. }) if *code == transport_error::INTERNAL),
        "{reason:?}"
    );
    let server = sim.server().app.closed.first().map(|c| c.1.clone());
    assert!(
        matches!(&server, Some(CloseReason::Transport { by_peer: true, .. })),
        "{server:?}"
    );

    // A packet claiming a number at or beyond the limit is dropped unread.
    let mut sim = instant_pair(TransportConfig::default());
    let pn = PACKET_NUMBER_LIMIT;
    let datagram = {
        let c = sim.client_mut().session();
        let mut buf = Vec::new();
        let header_len = crate::packet::encode_data_header(&mut buf, c.remote_sid, pn, None, false);
        crate::frame::Frame::Ping.encode(&mut buf);
        c.keys
            .as_mut()
            .expect("keys")
            .seal(pn, &mut buf, header_len);
        buf
    };
    let before = sim.server_mut().session().stats.packets_dropped;
    sim.handle_now(client_addr, 0, &datagram);
    let s = sim.server_mut().session();
    assert_eq!(s.stats.packets_dropped, before + 1);
    assert!(s.is_established());
}

#[test]
fn a_peer_that_never_acknowledges_is_closed() {
    // The server sends; the client acknowledges it with ACK-only packets, and the server
    // (a test-only misbehaviour) never acknowledges any of them, nor pings for it.
    let mut sim = Pair::new(9, LinkParams::new(Duration::ZERO, 0))
        .server_streams(vec![u64::MAX / 4])
        .connected();
    sim.server_mut().session().ack.never_ack = true;
    let closed = sim.run_until(Duration::from_secs(60), |s| {
        !s.client().app.closed.is_empty()
    });
    assert!(closed, "the client kept its record growing");
    let reason = sim.client().app.closed[0].1.clone();
    assert!(
        matches!(&reason, CloseReason::Transport { code, by_peer: false, reason } if *code == transport_error::PROTOCOL_VIOLATION && reason.contains("acknowledge")),
        "{reason:?}"
    );
    assert!(sim.client_mut().session().recovery.record_len() <= 64 * 1024 + 1);
}

#[test]
fn an_ack_of_a_packet_never_sent_closes_the_session() {
    // The client skips a packet number now and then; a server that acknowledges
    // everything up to the largest it saw, the skipped number included, is lying about
    // what it received (an optimistic ACK, to make the client send faster).
    let mut sim = instant_pair(TransportConfig::default());
    let server_addr = sim.server().addr;
    let id = sim.client_mut().session().open_stream().expect("open");
    sim.client_mut()
        .session()
        .write(id, &vec![5; 2_000_000])
        .expect("write");
    run(&mut sim, Duration::from_millis(500));
    let (skipped, largest) = {
        let c = sim.client_mut().session();
        let skipped = *c
            .recovery
            .skipped_numbers()
            .last()
            .expect("a number was skipped");
        (skipped, c.recovery.next_packet_number() - 1)
    };
    assert!(skipped < largest);
    let datagram = {
        let s = sim.server_mut().session();
        let pn = s.recovery.next_packet_number();
        let mut buf = Vec::new();
        let header_len = crate::packet::encode_data_header(&mut buf, s.remote_sid, pn, None, false);
        let mut all = crate::range_set::RangeSet::new();
        all.insert(0..largest + 1);
        crate::frame::encode_ack(&mut buf, &all, 0, 1000);
        s.keys
            .as_mut()
            .expect("keys")
            .seal(pn, &mut buf, header_len);
        buf
    };
    sim.handle_now(server_addr, 1, &datagram);
    let c = sim.client_mut().session();
    assert!(c.is_closed());
    let reason = sim.client().app.closed.first().map(|c| c.1.clone());
    run(&mut sim, Duration::from_millis(1));
    let reason = reason.or_else(|| sim.client().app.closed.first().map(|c| c.1.clone()));
    assert!(
        matches!(&reason, Some(CloseReason::Transport { code, by_peer: false, .. }) if *code == transport_error::PROTOCOL_VIOLATION),
        "{reason:?}"
    );
}

#[test]
fn tiny_out_of_order_fragments_are_bounded_in_memory() {
    // A peer sends one byte per packet, every other offset, never the first: nothing is
    // ever readable, and each fragment costs its map node on top of its byte.
    let mut sim = instant_pair(TransportConfig::default());
    let client_addr = sim.client().addr;
    let id = sim.client_mut().session().open_stream().expect("open");
    let (sid, mut pn) = {
        let c = sim.client_mut().session();
        (c.remote_sid, c.recovery.next_packet_number() + 100)
    };
    let mut closed_after = None;
    for i in 0..200_000u64 {
        let datagram = {
            let c = sim.client_mut().session();
            let mut buf = Vec::new();
            let header_len = crate::packet::encode_data_header(&mut buf, sid, pn, None, false);
            crate::frame::StreamFrame::encode_header(&mut buf, id.0, 2 * i + 1, 1, false);
            buf.push(0xaa);
            c.keys
                .as_mut()
                .expect("keys")
                .seal(pn, &mut buf, header_len);
            buf
        };
        pn += 1;
        sim.handle_now(client_addr, 0, &datagram);
        let s = sim.server_mut().session();
        assert!(
            s.flow.fragments_held <= 3 * 1024 * 1024 + 2 * 1024 * 1024,
            "{} bytes held",
            s.flow.fragments_held
        );
        if s.is_closed() {
            closed_after = Some(i);
            break;
        }
    }
    let n = closed_after.expect("the server kept accepting fragments");
    assert!(n > 10_000, "closed after only {n} fragments");
    let reason = {
        run(&mut sim, Duration::from_millis(1));
        sim.server().app.closed.first().map(|c| c.1.clone())
    };
    assert!(
        matches!(&reason, Some(CloseReason::Transport { code, .. }) if *code == transport_error::FLOW_CONTROL),
        "{reason:?}"
    );
}

/// A PING sealed by `s` in its current key phase with packet number `pn`.
fn ping(s: &mut Session, pn: u64) -> Vec<u8> {
    let keys = s.keys.as_mut().expect("keys");
    let mut buf = Vec::new();
    let header_len =
        crate::packet::encode_data_header(&mut buf, s.remote_sid, pn, None, keys.phase());
    crate::frame::Frame::Ping.encode(&mut buf);
    keys.seal(pn, &mut buf, header_len);
    buf
}

#[test]
fn a_peer_that_updates_twice_without_waiting_is_closed() {
    // The client starts two updates back to back (its own checks bypassed); the
    // second one reaches the server before the server acknowledged anything of the
    // first phase in it.
    let mut sim = instant_pair(TransportConfig::default());
    run(&mut sim, Duration::from_millis(100));
    let client_addr = sim.client().addr;
    let pn = sim.client_mut().session().recovery.next_packet_number() + 100;
    for (i, expect_updates) in [(0, 1), (1, 1)] {
        let datagram = {
            let c = sim.client_mut().session();
            c.keys.as_mut().expect("keys").start_update();
            ping(c, pn + i)
        };
        sim.handle_now(client_addr, 0, &datagram);
        let s = sim.server_mut().session();
        assert_eq!(s.stats().key_updates, expect_updates, "update {i}");
    }
    run(&mut sim, Duration::from_millis(1));
    let reason = sim.server().app.closed.first().map(|c| c.1.clone());
    assert!(
        matches!(&reason, Some(CloseReason::Transport { code, by_peer: false, .. }) if *code == transport_error::KEY_UPDATE_ERROR),
        "{reason:?}"
    );
}

#[test]
fn a_peer_that_waits_for_the_ack_may_update_again() {
    // The same two updates, each carried by a real PING, with time between them for
    // the server to acknowledge the first phase in it.
    let mut sim = instant_pair(TransportConfig::default());
    run(&mut sim, Duration::from_millis(100));
    for expect_updates in [1, 2] {
        let c = sim.client_mut().session();
        c.keys.as_mut().expect("keys").start_update();
        c.pending.ping = true;
        run(&mut sim, Duration::from_millis(100));
        let s = sim.server_mut().session();
        assert_eq!(s.stats().key_updates, expect_updates);
        assert!(s.is_established());
    }
    assert!(sim.client().app.closed.is_empty() && sim.server().app.closed.is_empty());
}

/// A bulk sender's full packets spend on their header only what the receiver needs:
/// the packet number cut to 2 bytes while few are unacknowledged, and no Length in the
/// STREAM frame that ends the packet.
#[test]
fn a_full_packet_carries_a_short_number_and_a_stream_frame_without_length() {
    let mut sim = instant_pair(TransportConfig::default());
    let (_, held) = write_and_hold(&mut sim, 60_000);
    let mtu = usize::from(sim.client_mut().session().mtu.current());
    let now = sim.now;
    let server = sim.server_mut().session();
    let mut full = 0;
    // Full but for the offset's varint, sized for the stream's end (2 bytes more than
    // an offset below 16 KiB needs).
    for d in held.iter().filter(|d| d.data.len() + 2 >= mtu) {
        let mut p = d.data.clone();
        assert_eq!(p[0] & !crate::packet::KEY_PHASE, crate::packet::DATA_PACKET);
        let header = crate::packet::data_header_len(p[0]);
        assert_eq!(header, 1 + 8 + 2);
        let number = u64::from(u16::from_be_bytes([p[9], p[10]]));
        let keys = server.keys.as_mut().expect("keys");
        let key_update::Opened::Packet(plain) =
            keys.open(now, number, &mut p, header, Duration::from_secs(1))
        else {
            panic!("packet {number} does not open");
        };
        let frames: Vec<_> = Frames::new(&p[header..header + plain])
            .collect::<Result<_, _>>()
            .expect("frames decode");
        let [Frame::Stream(f)] = &frames[..] else {
            continue;
        };
        // Type, stream id and offset, then data to the end of the packet.
        assert_eq!(
            header + StreamFrame::header_len_to_end(f.id, f.offset) + f.data.len() + TAG_LEN,
            d.data.len(),
            "packet {number}"
        );
        full += 1;
    }
    assert!(full >= 5, "{full} full packets of one STREAM frame");
}
