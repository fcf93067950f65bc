//! HELLO floods in the simulator (PROTOCOL.md §3.5, SECURITY.md): a loaded server
//! answers with stateless cookies instead of an X25519, limits each address, and
//! refuses replayed hellos; a flood of 100,000 junk hellos leaves a transfer alone.

use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use udpack_proto::testing::wire::{
    encode_cookie, hello_cookie, long, set_hello_cookie, ClientHandshake, TransportParams,
    BODY_OFFSET, COOKIE_LEN, MIN_HELLO_LEN, VERSION,
};
use udpack_proto::testing::*;
use udpack_proto::{reject, ClientConfig, EndpointStats, ServerConfig, TransportConfig};

const ONE_WAY: Duration = Duration::from_millis(10);

fn link() -> LinkParams {
    LinkParams::new(ONE_WAY, 1_000_000_000)
}

fn server(seed: u64) -> ServerConfig {
    server_config(seed, TransportConfig::default())
}

fn client(seed: u64) -> ClientConfig {
    client_config(seed, TransportConfig::default())
}

/// One server with `config`, one client sending `streams`; capture on.
fn sim_with(seed: u64, config: ServerConfig, streams: Vec<u64>) -> Sim {
    let mut sim = Sim::new(seed, link(), link());
    sim.add_server(config);
    sim.add_client(&client(seed), App::sending(streams));
    sim.capture = Some(Vec::new());
    sim
}

fn server_stats(sim: &Sim) -> EndpointStats {
    sim.server().ep.stats()
}

/// Datagrams captured from `from` whose first byte is `first`.
fn sent(sim: &Sim, from: SocketAddr, first: u8) -> Vec<Captured> {
    sim.capture
        .as_ref()
        .expect("capture is on")
        .iter()
        .filter(|c| c.from == from && c.data.first() == Some(&first))
        .cloned()
        .collect()
}

fn spoofed(i: u64) -> SocketAddr {
    SocketAddr::from((
        [10, 200, (i >> 8) as u8, i as u8],
        1024 + (i % 50_000) as u16,
    ))
}

/// A hello of this version with a random session id and a Noise message that does not
/// decrypt: what a flood costs to send.
fn junk_hello(rng: &mut StdRng) -> Vec<u8> {
    let mut d = vec![0u8; MIN_HELLO_LEN];
    d[0] = long::HELLO;
    d[1..5].copy_from_slice(&VERSION.to_be_bytes());
    rng.fill_bytes(&mut d[5..13]);
    d[13..15].copy_from_slice(&200u16.to_be_bytes());
    rng.fill_bytes(&mut d[15..215]);
    d
}

/// A real hello from `seed`'s client key and token, with this timestamp.
fn real_hello(seed: u64, sid: u64, token: &[u8], timestamp: u64) -> Vec<u8> {
    let key = Sim::server_key(seed).public_key();
    let params = TransportParams {
        max_data: 1 << 20,
        max_stream_data: 1 << 18,
        max_streams: 10,
        idle_timeout_ms: 30_000,
        max_datagram_size: 1452,
        max_ack_delay_ms: 25,
    };
    let mut hello = Vec::new();
    ClientHandshake::start(&key, sid, token, &params, timestamp, &mut hello).expect("hello");
    hello
}

#[test]
fn under_load_a_cookie_is_issued_and_the_echo_gets_in() {
    let seed = 1;
    let mut sim = sim_with(seed, server(seed).cookie_threshold(0), vec![20_000]);
    let client_addr = sim.nodes[1].addr;
    assert!(sim.run_until(Duration::from_secs(5), streams_done));
    check_transfer(&sim);
    let st = server_stats(&sim);
    // Each hello goes out twice: both copies of the first are asked for the cookie.
    assert_eq!(st.cookies_sent, 2);
    assert_eq!(st.sessions_accepted, 1);
    // Decrypting the echoed hello and writing the REPLY: two X25519, none for the first
    // hello, and none for the echo's copy (a repeated hello of a known session).
    assert_eq!(st.x25519_ops, 2);
    // One round trip more than without load, and no hello waited for a retransmission.
    let hellos = sent(&sim, client_addr, long::HELLO);
    assert_eq!(
        hellos.len(),
        4,
        "the hello and its echo, each with its copy"
    );
    assert_eq!(hellos[0].data, hellos[1].data);
    assert_eq!(hello_cookie(&hellos[0].data), None);
    assert_eq!(hellos[2].data, hellos[3].data);
    assert!(hello_cookie(&hellos[2].data).is_some());
    let rtt = hellos[2].at - hellos[0].at;
    assert!(
        rtt >= 2 * ONE_WAY && rtt < 2 * ONE_WAY + Duration::from_millis(1),
        "{rtt:?}"
    );
    let cookie = sent(&sim, sim.server().addr, long::COOKIE);
    assert_eq!(cookie.len(), 2);
    assert_eq!(
        cookie[0].data, cookie[1].data,
        "the same cookie for both copies"
    );
    assert!(
        cookie[0].data.len() < hellos[0].data.len() / 20,
        "no amplifier"
    );
}

#[test]
fn without_load_no_cookie_is_asked() {
    let seed = 2;
    let mut sim = sim_with(seed, server(seed), vec![20_000]);
    assert!(sim.run_until(Duration::from_secs(5), streams_done));
    let st = server_stats(&sim);
    assert_eq!((st.cookies_sent, st.sessions_accepted), (0, 1));
    // The hello and its copy; the copy costs the server no handshake.
    let hellos = sent(&sim, sim.nodes[1].addr, long::HELLO);
    assert_eq!(hellos.len(), 2);
    assert_eq!(hellos[0].data, hellos[1].data);
    assert_eq!(st.x25519_ops, 2);
}

/// Runs a client against a server that demands cookies, holding back every hello
/// that echoes one; returns the sim and the first held hello.
fn held_cookie_hello(seed: u64, config: ServerConfig) -> (Sim, Captured) {
    let mut sim = Sim::new(seed, link(), link());
    sim.add_server(config);
    let cfg = client(seed).handshake_timeout(Duration::from_secs(3600));
    sim.add_client(&cfg, App::sending(vec![1000]));
    sim.filter = Some(Box::new(|c: &Captured| {
        if c.data[0] == long::HELLO && hello_cookie(&c.data).is_some() {
            Fate::Hold
        } else {
            Fate::Deliver
        }
    }));
    sim.run_until(Duration::from_millis(100), |_| false);
    let held = sim.held.first().cloned().expect("an echoed hello");
    (sim, held)
}

#[test]
fn a_cookie_for_another_address_is_refused_without_an_x25519() {
    let seed = 3;
    let (mut sim, held) = held_cookie_hello(seed, server(seed).cookie_threshold(0));
    let before = server_stats(&sim);
    // The same hello, cookie and all, from elsewhere (another port, another host).
    for (i, from) in [
        SocketAddr::new(held.from.ip(), held.from.port() + 1),
        "192.0.2.77:5000".parse().expect("address"),
    ]
    .into_iter()
    .enumerate()
    {
        sim.handle_now(from, 0, &held.data);
        let st = server_stats(&sim);
        assert_eq!(st.cookies_invalid, before.cookies_invalid + i as u64 + 1);
        assert_eq!(
            st.cookies_sent,
            before.cookies_sent + i as u64 + 1,
            "asked again"
        );
        assert_eq!(st.x25519_ops, before.x25519_ops);
        assert_eq!(st.sessions_accepted, 0);
    }
    // From where it was issued, it gets in.
    sim.filter = None;
    sim.inject(held.from, 0, held.data.clone());
    assert!(sim.run_until(Duration::from_secs(2), connected));
    assert_eq!(server_stats(&sim).sessions_accepted, 1);
}

#[test]
fn cookies_outlive_one_secret_rotation_not_two() {
    for (wait, valid) in [(150, true), (250, false)] {
        let seed = 4;
        let (mut sim, held) = held_cookie_hello(seed, server(seed).cookie_threshold(0));
        sim.run_until(Duration::from_secs(wait), |_| false);
        let before = server_stats(&sim);
        sim.handle_now(held.from, 0, &held.data);
        let st = server_stats(&sim);
        assert_eq!(st.sessions_accepted, u64::from(valid), "after {wait} s");
        assert_eq!(
            st.cookies_invalid - before.cookies_invalid,
            u64::from(!valid)
        );
    }
}

#[test]
fn a_forged_cookie_costs_the_client_nothing() {
    let seed = 5;
    let mut sim = sim_with(seed, server(seed), vec![20_000]);
    let (server_addr, client_addr) = (sim.server().addr, sim.nodes[1].addr);
    // Off the path, the forger cannot echo the hello's ephemeral key.
    let mut forged = Vec::new();
    let guess = real_hello(seed, 1, b"x", 0);
    encode_cookie(1, &guess, &[3; COOKIE_LEN], &mut forged);
    let sid = sim.client_mut().handle().0;
    forged[5..13].copy_from_slice(&sid.to_be_bytes());
    sim.inject(server_addr, 1, forged.clone());
    sim.inject(server_addr, 1, forged[..BODY_OFFSET + 10].to_vec());
    assert!(sim.run_until(Duration::from_secs(5), streams_done));
    check_transfer(&sim);
    let hellos = sent(&sim, client_addr, long::HELLO);
    assert_eq!(hellos.len(), 2, "the hello and its copy, no extra hello");
    assert!(hellos.iter().all(|h| hello_cookie(&h.data).is_none()));
    let ch = client_handle(&sim);
    assert_eq!(stats(&mut sim, 1, ch).packets_dropped, 2);
}

#[test]
fn hellos_over_an_address_limit_must_bring_a_cookie_within_a_budget_and_warn_once() {
    let seed = 6;
    let mut sim = Sim::new(seed, link(), link());
    sim.add_server(server(seed).max_hellos_per_address(3));
    let from: SocketAddr = "192.0.2.9:4000".parse().expect("address");
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..10 {
        sim.handle_now(from, 0, &junk_hello(&mut rng));
    }
    let st = server_stats(&sim);
    assert_eq!(st.x25519_ops, 3, "three decrypted, then no more");
    assert_eq!(st.hellos_rejected, 3);
    // Over the limit, the address gets as many cookies as it may have decryptions.
    assert_eq!(
        (st.hellos_rate_limited, st.cookies_sent, st.cookies_withheld),
        (7, 3, 4)
    );
    assert_eq!(st.rate_limit_warnings, 1);
    // Another address has its own budget.
    sim.handle_now(
        "192.0.2.10:4000".parse().expect("address"),
        0,
        &junk_hello(&mut rng),
    );
    assert_eq!(server_stats(&sim).x25519_ops, 4);
    // A second later the address may try again; still one warning a minute.
    sim.now += Duration::from_secs(1);
    for _ in 0..5 {
        sim.handle_now(from, 0, &junk_hello(&mut rng));
    }
    let st = server_stats(&sim);
    assert_eq!((st.x25519_ops, st.hellos_rate_limited), (7, 9));
    assert_eq!(st.rate_limit_warnings, 1);
}

#[test]
fn refused_tokens_are_limited_per_address_and_a_spoofer_cannot_lock_it_out() {
    let seed = 7;
    let mut sim = Sim::new(seed, link(), link());
    sim.add_server(server(seed).max_failed_tokens_per_address(2));
    let from: SocketAddr = "192.0.2.9:4000".parse().expect("address");
    for sid in 1..=3 {
        sim.handle_now(from, 0, &real_hello(seed, sid, b"guess", 0));
    }
    let st = server_stats(&sim);
    assert_eq!(st.hellos_rejected, 2, "two refusals, then a cookie");
    assert_eq!((st.hellos_rate_limited, st.cookies_sent), (1, 1));
    // The address still gets in with the right token, through a cookie: two refusals
    // from a spoofer do not lock its owner out.
    sim.capture = Some(Vec::new());
    let mut hello = real_hello(seed, 50, b"letmein", 0);
    sim.inject(from, 0, hello.clone());
    sim.run_until(Duration::from_micros(1), |_| false);
    let answers = sent(&sim, sim.server().addr, long::COOKIE);
    let cookie = &answers.last().expect("a cookie").data;
    let c: [u8; COOKIE_LEN] = cookie[BODY_OFFSET + 16..].try_into().expect("cookie");
    set_hello_cookie(&mut hello, &c);
    sim.handle_now(from, 0, &hello);
    assert_eq!(server_stats(&sim).sessions_accepted, 1);
}

#[test]
fn a_hello_replayed_after_its_session_ended_is_refused() {
    let seed = 8;
    let mut sim = sim_with(seed, server(seed), vec![20_000]);
    let client_addr = sim.nodes[1].addr;
    assert!(sim.run_until(Duration::from_secs(5), streams_done));
    let hello = sent(&sim, client_addr, long::HELLO)[0].data.clone();
    close_gracefully(&mut sim, 0);
    let now = sim.now;
    let h = server_handle(&sim);
    sim.server_mut().ep.release(now, h);
    sim.run_until(Duration::from_secs(10), |_| false);
    assert_eq!(sim.server().ep.session_count(), 0, "the session is gone");
    let before = server_stats(&sim);
    sim.inject(client_addr, 0, hello.clone());
    sim.run_until(Duration::from_secs(1), |_| false);
    let st = server_stats(&sim);
    assert_eq!(st.hellos_replayed, before.hellos_replayed + 1);
    assert_eq!(st.sessions_accepted, 1);
    assert_eq!(
        st.x25519_ops, before.x25519_ops,
        "refused before any X25519"
    );
    assert_eq!(st.datagrams_sent, before.datagrams_sent, "and unanswered");
}

#[test]
fn with_wall_clocks_an_old_hello_is_refused_as_stale() {
    let seed = 9;
    let mut sim = Sim::new(seed, link(), link());
    sim.add_server(server(seed).max_hello_age(Duration::from_secs(60)));
    sim.capture = Some(Vec::new());
    let unix = Duration::from_secs(1_750_000_000);
    let now = sim.now;
    sim.server_mut().ep.set_unix_time(now, unix);
    let from: SocketAddr = "192.0.2.9:4000".parse().expect("address");
    let ns = |d: Duration| d.as_nanos() as u64;
    // Within the age either way: accepted. Beyond it: an authenticated reject.
    sim.handle_now(
        from,
        0,
        &real_hello(seed, 1, b"letmein", ns(unix - Duration::from_secs(59))),
    );
    sim.handle_now(
        from,
        0,
        &real_hello(seed, 2, b"letmein", ns(unix + Duration::from_secs(59))),
    );
    sim.handle_now(
        from,
        0,
        &real_hello(seed, 3, b"letmein", ns(unix - Duration::from_secs(61))),
    );
    sim.handle_now(
        from,
        0,
        &real_hello(seed, 4, b"letmein", ns(unix + Duration::from_secs(61))),
    );
    let st = server_stats(&sim);
    assert_eq!((st.sessions_accepted, st.hellos_stale), (2, 2));
    // And a client endpoint that knows the clock stamps its hellos.
    let mut ep = udpack_proto::Endpoint::new(Default::default(), None);
    ep.set_unix_time(now, unix);
    let h = ep.connect(now, sim.server().addr, &client(seed));
    assert!(h.0 != 0);
    let mut buf = Vec::new();
    let t = ep.poll_transmit(now, &mut buf).expect("a hello");
    sim.handle_now(from, 0, &buf[..t.size]);
    assert_eq!(server_stats(&sim).sessions_accepted, 3);
    assert_eq!(reject::STALE_HELLO, 3);
}

/// Cost of one X25519 on one core of the test machine, to turn the server's count of
/// them into time its one driver could not spend on the transfer.
const X25519_COST: Duration = Duration::from_micros(50);

/// A 4 MiB upload with `flood` junk hellos from as many spoofed addresses arriving
/// during it; returns the transfer's time plus what the X25519s cost, and the stats.
fn upload_during_flood(seed: u64, config: ServerConfig, flood: u64) -> (Duration, EndpointStats) {
    let mut sim = Sim::new(seed, link(), link());
    sim.add_server(config);
    sim.add_client(&client(seed), App::sending(vec![4 << 20]));
    run_until_connected(&mut sim);
    let start = sim.now;
    let before = server_stats(&sim);
    let mut rng = StdRng::seed_from_u64(seed);
    let per_ms = 1000;
    let mut n = 0;
    while !streams_done(&sim) {
        for _ in 0..per_ms.min(flood - n) {
            sim.inject(spoofed(n), 0, junk_hello(&mut rng));
            n += 1;
        }
        sim.run_until(Duration::from_millis(1), streams_done);
        assert!(sim.now - start < Duration::from_secs(20), "no end");
    }
    check_transfer(&sim);
    let st = server_stats(&sim);
    let ops = st.x25519_ops - before.x25519_ops;
    (sim.now - start + X25519_COST * ops as u32, st)
}

#[test]
fn a_flood_of_100_000_hellos_leaves_an_upload_within_twice_its_time() {
    let seed = 10;
    let (unloaded, _) = upload_during_flood(seed, server(seed), 0);
    let (loaded, st) = upload_during_flood(seed, server(seed), 100_000);
    // Without the cookie gate and the address limits, every hello costs an X25519: a
    // fifth of the flood is enough to show it (and keeps the test short).
    let open = server(seed)
        .cookie_threshold(u32::MAX)
        .max_hellos_per_address(u32::MAX);
    let (unguarded, open_st) = upload_during_flood(seed, open, 20_000);
    if std::env::var_os("UDPACK_FLOOD_REPORT").is_some() {
        eprintln!(
            "4 MiB: unloaded {unloaded:?}, flood {loaded:?} ({} X25519, {} cookies), \
             unguarded {unguarded:?} ({} X25519)",
            st.x25519_ops, st.cookies_sent, open_st.x25519_ops
        );
    }
    assert!(loaded <= unloaded * 2, "{loaded:?} against {unloaded:?}");
    // One second's threshold at most, and the session's own handshake.
    assert!(st.x25519_ops <= 256 + 2, "{st:?}");
    assert!(st.cookies_sent + st.answers_dropped >= 90_000, "{st:?}");
    assert!(open_st.x25519_ops > 20_000, "the test floods hard enough");
    assert!(unguarded > unloaded * 2, "{unguarded:?}");
}

#[test]
fn during_a_flood_of_100_000_spoofed_hellos_a_new_client_connects_and_state_stays_bounded() {
    // The flood starts first, 1000 junk hellos a millisecond from ever new addresses;
    // the real client starts 20 ms into it, and must connect well within its
    // handshake timeout (10 s) while the server holds bounded state throughout.
    let seed = 12;
    let mut sim = Sim::new(seed, link(), link());
    sim.add_server(server(seed));
    let mut rng = StdRng::seed_from_u64(seed);
    let flood = 100_000u64;
    let mut n = 0;
    let mut most_state = 0;
    let mut connected_at = None;
    while n < flood || connected_at.is_none() {
        if n == 20_000 {
            sim.add_client(&client(seed), App::sending(vec![64 << 10]));
        }
        for _ in 0..1000.min(flood - n) {
            sim.inject(spoofed(n), 0, junk_hello(&mut rng));
            n += 1;
        }
        sim.run_until(Duration::from_millis(1), |_| false);
        most_state = most_state.max(sim.server().ep.hello_state_len());
        if connected_at.is_none() && sim.nodes.len() > 1 && connected(&sim) {
            connected_at = Some(n);
        }
        assert!(sim.elapsed() < Duration::from_secs(10), "no connection");
    }
    let st = server_stats(&sim);
    assert!(
        connected_at.is_some_and(|at| at < flood),
        "connected while the flood went on: {connected_at:?}"
    );
    assert_eq!(sim.server().ep.session_count(), 1, "junk made no session");
    // Addresses tracked, hellos remembered, answers queued: their caps, whatever came.
    assert!(most_state <= 4096 + 1 + 1 + 256, "{most_state} entries");
    assert!(st.x25519_ops <= 256 + 2, "{st:?}");
    assert!(
        sim.run_until(Duration::from_secs(5), streams_done),
        "the transfer"
    );
    check_transfer(&sim);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever a flood puts after the Noise message, the server does not panic, and
    /// it never answers more bytes than it got.
    #[test]
    fn any_hello_tail_is_harmless(tail in proptest::collection::vec(any::<u8>(), 0..64), at in 0usize..1000) {
        let seed = 11;
        let mut sim = Sim::new(seed, link(), link());
        sim.add_server(server(seed).cookie_threshold(0));
        sim.capture = Some(Vec::new());
        let mut hello = real_hello(seed, 9, b"letmein", 0);
        let at = at.min(hello.len() - 1);
        for (i, b) in tail.iter().enumerate() {
            if let Some(x) = hello.get_mut(at + i) {
                *x = *b;
            }
        }
        let from: SocketAddr = "192.0.2.1:1".parse().expect("address");
        sim.inject(from, 0, hello.clone());
        sim.run_until(Duration::from_millis(1), |_| false);
        let answered: usize = sim.capture.as_ref().expect("capture").iter().map(|c| c.data.len()).sum();
        prop_assert!(answered < hello.len());
    }
}
