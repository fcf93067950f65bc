//! Stream ends and session flow control, in the simulator with applications the tests
//! drive by hand: resets and STOP_SENDING must leave both sides counting the same bytes
//! against the session credit, so that the credit is neither exceeded nor lost.

use std::time::Duration;

use udpack_proto::testing::*;
use udpack_proto::{
    Event, Session, StreamError, StreamId, TransportConfig, RECV_SEGMENT_MAX, RECV_SEGMENT_MIN,
};

/// A server session window of `window` bytes that never grows.
fn fixed_session_window(window: u64) -> TransportConfig {
    TransportConfig {
        initial_session_window: window,
        max_session_window: window,
        ..TransportConfig::default()
    }
}

fn session(sim: &mut Sim, node: usize) -> &mut Session {
    sim.nodes[node].session()
}

/// Neither side saw its session end.
fn assert_open(sim: &Sim, what: &str) {
    for (i, n) in sim.nodes.iter().enumerate() {
        assert!(
            n.app.closed.is_empty(),
            "{what}: node {i}: {:?}",
            n.app.closed
        );
    }
}

/// Writes `data_len` patterned bytes to `id`; returns how many were taken.
fn write(sim: &mut Sim, node: usize, id: StreamId, seed: u64, data_len: usize) -> usize {
    let mut data = vec![0u8; data_len];
    fill_pattern(seed, 0, &mut data);
    session(sim, node).write(id, &data).expect("write")
}

/// Reads everything ready on `id` in one `read_into` call and checks it is the `len`
/// patterned bytes of `seed`.
fn read_all_ready(sim: &mut Sim, node: usize, id: StreamId, seed: u64, len: usize) {
    let mut buf = bytes::BytesMut::new();
    let n = session(sim, node)
        .read_into(id, usize::MAX, &mut buf)
        .expect("read_into");
    assert_eq!(n, Some(len));
    let mut expect = vec![0u8; len];
    fill_pattern(seed, 0, &mut expect);
    assert!(buf[..] == expect[..], "the bytes, in order");
}

/// True once node `node` logged an event that `f` accepts.
fn logged(sim: &Sim, node: usize, f: impl Fn(&Event) -> bool) -> bool {
    sim.nodes[node]
        .app
        .event_log
        .as_ref()
        .expect("event log is on")
        .iter()
        .any(|(_, _, e)| f(e))
}

/// Reads `id` on `node` from offset `from` to its end within `limit` of virtual time,
/// checking the pattern of `seed`; returns the final offset.
fn read_to_end(
    sim: &mut Sim,
    node: usize,
    id: StreamId,
    seed: u64,
    from: u64,
    limit: Duration,
) -> u64 {
    let deadline = sim.now + limit;
    let mut read = from;
    let mut expect = Vec::new();
    loop {
        match session(sim, node).read(id, 64 * 1024) {
            Ok(Some(data)) => {
                expect.resize(data.len(), 0);
                fill_pattern(seed, read, &mut expect);
                assert!(data[..] == expect[..], "stream {id}: wrong bytes at {read}");
                read += data.len() as u64;
            }
            Ok(None) => return read,
            Err(StreamError::Blocked) => {
                assert!(
                    sim.now < deadline,
                    "stream {id} stalled after {read} bytes; closed: {:?} / {:?}",
                    sim.server().app.closed,
                    sim.client().app.closed
                );
                sim.run_until(Duration::from_millis(1), |_| false);
            }
            Err(e) => panic!("read {id}: {e}"),
        }
    }
}

#[test]
fn reset_final_size_is_what_was_sent_not_what_was_written() {
    // The server grants 64 KiB of session credit and reads nothing: the client can
    // write far more than that (the stream credit is 512 KiB) but sends only 64 KiB.
    let window = 64 * 1024;
    let mut sim = Pair::new(51, LinkParams::new(Duration::from_millis(10), 100_000_000))
        .server_transport(fixed_session_window(window))
        .passive()
        .connected();
    let a = session(&mut sim, 1).open_stream().expect("open");
    assert_eq!(write(&mut sim, 1, a, 1, 300_000), 300_000);
    sim.run_until(Duration::from_millis(500), |_| false);
    assert_open(&sim, "before the reset");
    assert_eq!(
        session(&mut sim, 1).write_capacity(a),
        Ok(512 * 1024 - 300_000),
        "the write is limited by stream credit only"
    );

    // The final size is the 64 KiB sent: within the credit, so no FLOW_CONTROL error.
    session(&mut sim, 1).reset(a, 9).expect("reset");
    sim.run_until(Duration::from_millis(500), |_| false);
    assert_open(&sim, "after the reset");
    assert_eq!(
        session(&mut sim, 0).read(a, 1024),
        Err(StreamError::Reset(9))
    );

    // Both sides counted the same 64 KiB: the next stream fills the credit the reset
    // gave back without overrunning it while the server reads nothing, then goes
    // through as the server reads.
    let b = session(&mut sim, 1).open_stream().expect("open");
    assert_eq!(write(&mut sim, 1, b, 2, 400_000), 400_000);
    session(&mut sim, 1).finish(b).expect("finish");
    sim.run_until(Duration::from_millis(500), |_| false);
    assert_open(&sim, "after the second stream filled the credit");
    let read = read_to_end(&mut sim, 0, b, 2, 0, Duration::from_secs(10));
    assert_eq!(read, 400_000);
    assert_open(&sim, "at the end");
}

#[test]
fn reset_of_unsent_bytes_keeps_both_sides_session_credit_in_step() {
    // The stream credit (4 MiB) is far above the session credit (256 KiB).
    let window = 256 * 1024;
    let server = TransportConfig {
        initial_stream_window: 4 * 1024 * 1024,
        ..fixed_session_window(window)
    };
    let mut sim = Pair::new(52, LinkParams::new(Duration::from_millis(10), 100_000_000))
        .server_transport(server)
        .passive()
        .connected();
    // Some of the stream goes out, then it is reset: most of it was never sent.
    let a = session(&mut sim, 1).open_stream().expect("open");
    assert_eq!(write(&mut sim, 1, a, 1, 200_000), 200_000);
    sim.run_until(Duration::from_millis(15), |_| false);
    session(&mut sim, 1).reset(a, 4).expect("reset");
    sim.run_until(Duration::from_millis(200), |_| false);
    assert_open(&sim, "after the reset");
    assert!(logged(&sim, 0, |e| *e == Event::StreamReadable(a)));

    // The client now sends as much as its credit allows while the server reads
    // nothing: it must not overrun the credit as the server counts it.
    let b = session(&mut sim, 1).open_stream().expect("open");
    assert_eq!(write(&mut sim, 1, b, 2, 1_000_000), 1_000_000);
    session(&mut sim, 1).finish(b).expect("finish");
    sim.run_until(Duration::from_secs(1), |_| false);
    assert_open(&sim, "with the credit used up");
    assert_eq!(
        session(&mut sim, 0).read(a, 1024),
        Err(StreamError::Reset(4))
    );
    let read = read_to_end(&mut sim, 0, b, 2, 0, Duration::from_secs(10));
    assert_eq!(read, 1_000_000);
    assert_open(&sim, "at the end");
}

#[test]
fn stopped_streams_give_back_all_their_session_credit() {
    // Over and over, the client opens a stream that the server stops as soon as it
    // appears, then a stream that the server reads. The stopped streams' bytes that
    // arrive after the stop, and their final sizes, must count on both sides, or the
    // session credit shrinks with every round until nothing moves.
    let window = 64 * 1024;
    let mut link = LinkParams::new(Duration::from_millis(10), 100_000_000);
    link.loss = 0.03;
    let mut sim = Pair::new(53, link)
        .server_transport(fixed_session_window(window))
        .passive()
        .connected();
    let mut stopped = Vec::new();
    for round in 0..12u64 {
        let x = session(&mut sim, 1).open_stream().expect("open");
        assert_eq!(write(&mut sim, 1, x, 100 + round, 48_000), 48_000);
        session(&mut sim, 1).finish(x).expect("finish");
        assert!(
            sim.run_until(Duration::from_secs(10), |s| logged(s, 0, |e| *e
                == Event::StreamOpened(x))),
            "round {round}: stream {x} never arrived"
        );
        // The server answers nothing on it and wants none of it.
        let server = session(&mut sim, 0);
        assert_eq!(server.accept_stream(), Some(x));
        server.finish(x).expect("finish");
        server.stop(x, 3).expect("stop");
        stopped.push(x);

        let b = session(&mut sim, 1).open_stream().expect("open");
        assert_eq!(write(&mut sim, 1, b, 200 + round, 48_000), 48_000);
        session(&mut sim, 1).finish(b).expect("finish");
        assert!(
            sim.run_until(Duration::from_secs(10), |s| logged(s, 0, |e| *e
                == Event::StreamOpened(b))),
            "round {round}: stream {b} never arrived"
        );
        let server = session(&mut sim, 0);
        assert_eq!(server.accept_stream(), Some(b));
        server.finish(b).expect("finish");
        let read = read_to_end(&mut sim, 0, b, 200 + round, 0, Duration::from_secs(10));
        assert_eq!(read, 48_000, "round {round}");
        assert_open(&sim, &format!("round {round}"));
    }
    sim.run_until(Duration::from_secs(2), |_| false);
    for x in stopped {
        assert!(logged(&sim, 1, |e| *e == Event::StreamStopped { id: x, code: 3 }));
    }
    assert_open(&sim, "at the end");
}

#[test]
fn a_stopped_stream_gives_its_credit_back_without_another_read() {
    // The client sends almost a whole session window on a stream; the server reads a
    // part and stops it. What arrived unread, what arrives later and what was lost on
    // the way (known from the final size in the reset) count as consumed, and the
    // credit is announced again: the next stream gets at least half a window through
    // before the server reads any more. (The session unit tests check the exact
    // counts on both sides.)
    let window = 64 * 1024;
    let mut sim = Pair::new(54, LinkParams::new(Duration::from_millis(10), 100_000_000))
        .server_transport(fixed_session_window(window))
        .passive()
        .connected();
    sim.capture = Some(Vec::new());
    let x = session(&mut sim, 1).open_stream().expect("open");
    assert_eq!(write(&mut sim, 1, x, 1, 60_000), 60_000);
    assert!(
        sim.run_until(Duration::from_secs(5), |s| logged(s, 0, |e| *e
            == Event::StreamOpened(x)))
    );
    assert_eq!(session(&mut sim, 0).accept_stream(), Some(x));
    let mut read = 0;
    while read < 20_000 {
        match session(&mut sim, 0).read(x, 1 << 20) {
            Ok(Some(data)) => read += data.len(),
            Ok(None) => panic!("stream {x} ended"),
            Err(_) => {
                sim.run_until(Duration::from_millis(1), |_| false);
            }
        }
    }
    let server = session(&mut sim, 0);
    server.finish(x).expect("finish");
    server.stop(x, 3).expect("stop");
    // What the client sends until it hears of the stop is lost.
    sim.links_mut().0.loss = 1.0;
    let blackout = sim.now;
    assert!(
        sim.run_until(Duration::from_secs(5), |s| logged(s, 1, |e| *e
            == Event::StreamStopped { id: x, code: 3 }))
    );
    sim.links_mut().0.loss = 0.0;
    let client_addr = sim.client().addr;
    let lost: usize = sim
        .capture
        .as_ref()
        .expect("capture")
        .iter()
        .filter(|c| c.from == client_addr && c.at >= blackout)
        .map(|c| c.data.len())
        .sum();
    assert!(lost > 10_000, "only {lost} bytes were lost");
    sim.run_until(Duration::from_secs(1), |_| false);
    assert_open(&sim, "after the stop");
    assert_eq!(
        session(&mut sim, 1).write_capacity(x),
        Err(StreamError::Stopped(3))
    );

    // Unread, the next stream gets at least half a window through.
    let b = session(&mut sim, 1).open_stream().expect("open");
    assert_eq!(write(&mut sim, 1, b, 2, 100_000), 100_000);
    session(&mut sim, 1).finish(b).expect("finish");
    sim.run_until(Duration::from_secs(1), |_| false);
    let mut arrived = 0;
    while let Ok(Some(data)) = session(&mut sim, 0).read(b, 1 << 20) {
        arrived += data.len() as u64;
    }
    assert!(
        arrived >= window / 2,
        "only {arrived} bytes arrived with a {window}-byte window"
    );
    let end = read_to_end(&mut sim, 0, b, 2, arrived, Duration::from_secs(10));
    assert_eq!(end, 100_000);
    assert_open(&sim, "at the end");
}

#[test]
fn a_fin_without_data_that_overtakes_the_data_is_counted_once() {
    // finish() after the data went out and was lost: the FIN goes alone, arrives
    // first, and the data comes after it. Both carry the same offsets: the session
    // credit must count them once, or an honest sender is closed for exceeding it.
    let window = 256 * 1024;
    let link = LinkParams::new(Duration::from_millis(10), 100_000_000);
    let mut sim = Pair::new(59, link)
        .server_transport(fixed_session_window(window))
        .passive()
        .connected();
    let client_addr = sim.client().addr;
    let len = 10_000;
    // Far more than one window's worth of streams.
    for i in 0..3 * window / len as u64 {
        let id = session(&mut sim, 1).open_stream().expect("open");
        assert_eq!(write(&mut sim, 1, id, i, len), len);
        let until = sim.now + Duration::from_millis(3);
        sim.filter = Some(Box::new(move |c| {
            if c.from == client_addr && c.at < until {
                Fate::Lose
            } else {
                Fate::Deliver
            }
        }));
        sim.run_until(Duration::from_millis(3), |_| false);
        sim.filter = None;
        session(&mut sim, 1).finish(id).expect("finish");
        let mut accepted = None;
        for _ in 0..1000 {
            accepted = session(&mut sim, 0).accept_stream();
            if accepted.is_some() {
                break;
            }
            sim.run_until(Duration::from_millis(1), |_| false);
        }
        assert_eq!(
            accepted,
            Some(id),
            "stream {i}: {:?}",
            sim.server().app.closed
        );
        session(&mut sim, 0)
            .finish(id)
            .expect("finish the server's half");
        let end = read_to_end(&mut sim, 0, id, i, 0, Duration::from_secs(5));
        assert_eq!(end, len as u64, "stream {i}");
        assert_open(&sim, &format!("stream {i}"));
    }
}

#[test]
fn read_into_gathers_every_ready_packet_up_to_max_then_reports_the_end() {
    // 200 KB arrive while the server reads nothing: many packets' worth is ready.
    let mut sim = Pair::new(57, LinkParams::new(Duration::from_millis(10), 100_000_000))
        .passive()
        .connected();
    let a = session(&mut sim, 1).open_stream().expect("open");
    let total = 200_000;
    assert_eq!(write(&mut sim, 1, a, 7, total), total);
    session(&mut sim, 1).finish(a).expect("finish");
    sim.run_until(Duration::from_millis(500), |_| false);

    // One call takes up to `max` bytes across packets, in order, into the buffer.
    let mut buf = bytes::BytesMut::new();
    let first = session(&mut sim, 0)
        .read_into(a, 100_000, &mut buf)
        .expect("read_into");
    assert_eq!(
        first,
        Some(100_000),
        "one call, many packets, stopped at max"
    );
    assert!(
        buf.capacity() < 2 * 100_000 + 4096,
        "room only for what was there: {}",
        buf.capacity()
    );
    let rest = session(&mut sim, 0)
        .read_into(a, usize::MAX, &mut buf)
        .expect("read_into");
    assert_eq!(rest, Some(total - 100_000), "the rest in one more call");
    let mut expect = vec![0u8; total];
    fill_pattern(7, 0, &mut expect);
    assert!(buf[..] == expect[..], "the bytes, in order");
    assert_eq!(
        session(&mut sim, 0).read_into(a, 1024, &mut buf),
        Ok(None),
        "then the end"
    );
    assert_eq!(buf.len(), total, "the end adds nothing");
    // The server's window updates go out once the session runs, and clear the flag.
    sim.run_until(Duration::from_millis(50), |_| false);
    assert!(!session(&mut sim, 0).owes_control(), "sent what was owed");
    assert_open(&sim, "at the end");
}

#[test]
fn stats_show_a_sender_blocked_on_the_peers_stream_window() {
    // A 64 KiB stream window the server never reads from: the client's stream runs out
    // of credit with bytes still waiting, and its stats say so (not the congestion
    // window); the session credit is the session window less what was sent.
    let config = TransportConfig {
        initial_stream_window: 64 * 1024,
        max_stream_window: 64 * 1024,
        initial_session_window: 1024 * 1024,
        max_session_window: 1024 * 1024,
        ..TransportConfig::default()
    };
    let mut sim = Pair::new(60, LinkParams::new(Duration::from_millis(10), 100_000_000))
        .server_transport(config)
        .passive()
        .connected();
    let before = session(&mut sim, 1).stats();
    assert_eq!(
        before.stream_send_credit,
        u64::MAX,
        "nothing waits to be sent"
    );
    assert_eq!(before.send_credit, 1024 * 1024);
    let a = session(&mut sim, 1).open_stream().expect("open");
    // The write takes what the stream's credit allows.
    assert_eq!(write(&mut sim, 1, a, 4, 100_000), 64 * 1024);
    sim.run_until(Duration::from_millis(200), |_| false);
    let st = session(&mut sim, 1).stats();
    assert_eq!(st.stream_send_credit, 0, "blocked on the stream window");
    assert_eq!(st.send_credit, 1024 * 1024 - 64 * 1024);
    assert_eq!(st.bytes_in_flight, 0, "everything sent was acknowledged");
    assert_open(&sim, "at the end");
}

#[test]
fn reading_past_half_the_window_owes_the_peer_credit() {
    // A stream window of 64 KiB: reading most of it must leave a window update owed
    // (the runtime wakes its driver only then), and sending it clears the flag.
    let config = TransportConfig {
        initial_stream_window: 64 * 1024,
        max_stream_window: 64 * 1024,
        ..TransportConfig::default()
    };
    let mut sim = Pair::new(58, LinkParams::new(Duration::from_millis(10), 100_000_000))
        .server_transport(config)
        .passive()
        .connected();
    let a = session(&mut sim, 1).open_stream().expect("open");
    assert_eq!(write(&mut sim, 1, a, 3, 60_000), 60_000);
    sim.run_until(Duration::from_millis(200), |_| false);
    assert!(
        !session(&mut sim, 0).owes_control(),
        "nothing read, nothing owed"
    );
    let mut buf = bytes::BytesMut::new();
    let n = session(&mut sim, 0)
        .read_into(a, usize::MAX, &mut buf)
        .expect("read_into");
    assert_eq!(n, Some(60_000));
    assert!(
        session(&mut sim, 0).owes_control(),
        "60 KB of a 64 KiB window read: an update is owed"
    );
    sim.run_until(Duration::from_millis(50), |_| false);
    assert!(!session(&mut sim, 0).owes_control(), "the update went out");
    assert_open(&sim, "at the end");
}

#[test]
fn unread_data_holds_its_own_bytes_not_the_datagrams_it_came_in() {
    // The server reads nothing. Forty streams carry a few bytes each, one more 500 KB:
    // what the session holds is those bytes and a segment's room per stream, whatever
    // the datagrams they arrived in (each datagram is copied out on arrival).
    let mut sim = Pair::new(59, LinkParams::new(Duration::from_millis(10), 100_000_000))
        .passive()
        .connected();
    let mut unread = 0u64;
    for i in 0..40 {
        let id = session(&mut sim, 1).open_stream().expect("open");
        for j in 0..5 {
            // Each write its own packet: the sim runs between them.
            assert_eq!(write(&mut sim, 1, id, i * 10 + j, 3), 3);
            unread += 3;
            sim.run_until(Duration::from_millis(1), |_| false);
        }
    }
    let big = session(&mut sim, 1).open_stream().expect("open");
    let big_len = 500_000;
    assert_eq!(write(&mut sim, 1, big, 99, big_len), big_len);
    unread += big_len as u64;
    sim.run_until(Duration::from_millis(500), |_| false);
    let stats = sim.nodes[0].session().stats();
    assert_eq!(stats.stream_bytes_received, 0, "nothing was read");
    assert!(
        stats.receive_memory >= unread,
        "holds every unread byte: {} < {unread}",
        stats.receive_memory
    );
    let bound = 40 * RECV_SEGMENT_MIN as u64 + big_len as u64 + RECV_SEGMENT_MAX as u64;
    assert!(
        stats.receive_memory <= bound,
        "{} held for {unread} unread bytes (bound {bound})",
        stats.receive_memory
    );
    // Reading it all leaves at most a segment's room per stream.
    read_all_ready(&mut sim, 0, big, 99, big_len);
    let after = sim.nodes[0].session().stats().receive_memory;
    assert!(
        after <= 40 * RECV_SEGMENT_MIN as u64 + RECV_SEGMENT_MAX as u64,
        "{after} held once the big stream was read"
    );
    assert_open(&sim, "at the end");
}

#[test]
fn datagrams_appended_to_one_buffer_are_each_a_whole_packet() {
    // What the runtime does for a GSO batch: every datagram written in place after the
    // ones before it. Each must be a complete packet the peer opens and uses.
    let mut sim = Pair::new(60, LinkParams::new(Duration::from_millis(10), 100_000_000))
        .passive()
        .connected();
    let id = session(&mut sim, 1).open_stream().expect("open");
    // Within what the first flight may carry, so that all of it goes out at once.
    let len = 8_000;
    assert_eq!(write(&mut sim, 1, id, 5, len), len);
    let now = sim.now;
    let mut batch = b"earlier bytes".to_vec();
    let mut datagrams = Vec::new();
    while let Some(t) = sim.nodes[1].ep.poll_transmit_append(now, &mut batch) {
        let start = batch.len() - t.size;
        datagrams.push((start, t.size));
    }
    assert!(
        datagrams.len() >= len / 1452,
        "{} datagrams",
        datagrams.len()
    );
    assert_eq!(&batch[..13], b"earlier bytes", "what was there stays");
    let end = datagrams.last().map_or(0, |&(s, n)| s + n);
    assert_eq!(batch.len(), end, "nothing appended after the last datagram");
    let from = sim.nodes[1].addr;
    let before = sim.nodes[0].session().stats();
    for &(start, size) in &datagrams {
        sim.handle_now(from, 0, &batch[start..start + size]);
    }
    let after = sim.nodes[0].session().stats();
    assert_eq!(
        after.packets_received - before.packets_received,
        datagrams.len() as u64,
        "every datagram opened"
    );
    assert_eq!(after.packets_dropped, before.packets_dropped);
    read_all_ready(&mut sim, 0, id, 5, len);
}
