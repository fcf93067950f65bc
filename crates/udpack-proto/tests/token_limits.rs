//! Sessions per token, in the simulator: a token holds at most
//! `ServerConfig::max_sessions_per_token` live sessions, the next hello with it is told
//! why it is refused, other tokens are not affected, and a closed session frees its
//! place.

use std::net::SocketAddr;
use std::time::Duration;

use udpack_proto::testing::*;
use udpack_proto::{reject, CloseReason, HandshakeError, ServerConfig, TransportConfig};

const SEED: u64 = 57;

fn at(i: u8) -> SocketAddr {
    // Each client on its own address: only the token limit applies.
    format!("10.0.3.{i}:5000").parse().expect("address")
}

/// Runs until every client node has connected or failed to.
fn settle(sim: &mut Sim) {
    let done = sim.run_until(Duration::from_secs(5), |s| {
        s.nodes[1..]
            .iter()
            .all(|n| !n.app.connected.is_empty() || !n.app.connect_errors.is_empty())
    });
    assert!(done, "some client neither connected nor failed");
}

fn connected(sim: &Sim, node: usize) -> bool {
    !sim.nodes[node].app.connected.is_empty()
}

/// The reject a client saw, if it was one.
fn rejected(sim: &Sim, node: usize) -> Option<(u64, String)> {
    match sim.nodes[node].app.connect_errors.as_slice() {
        [CloseReason::ConnectFailed(HandshakeError::Rejected { code, reason })] => {
            Some((*code, reason.clone()))
        }
        _ => None,
    }
}

#[test]
fn a_token_holds_at_most_its_limit_of_live_sessions() {
    let mut sim = Sim::new(
        SEED,
        LinkParams::new(Duration::from_millis(10), 100_000_000),
        LinkParams::new(Duration::from_millis(10), 100_000_000),
    );
    sim.add_server(
        ServerConfig::new(Sim::server_key(SEED))
            .auth(|t| t == b"letmein" || t == b"other")
            .max_sessions_per_token(2),
    );
    let shared = client_config(SEED, TransportConfig::default());
    let other = shared.clone().token("other");
    let a = sim.add_client_at(at(1), &shared, App::default());
    let b = sim.add_client_at(at(2), &shared, App::default());
    let c = sim.add_client_at(at(3), &shared, App::default());
    let d = sim.add_client_at(at(4), &other, App::default());
    settle(&mut sim);

    // Two sessions with the shared token get in, the third is told why it is not;
    // another token is not affected.
    let with_shared = [a, b, c];
    let in_count = with_shared.iter().filter(|&&n| connected(&sim, n)).count();
    assert_eq!(in_count, 2);
    let refused: Vec<usize> = with_shared
        .iter()
        .copied()
        .filter(|&n| !connected(&sim, n))
        .collect();
    let [refused] = refused[..] else {
        panic!("{refused:?}")
    };
    let (code, reason) = rejected(&sim, refused).expect("a reject");
    assert_eq!(code, reject::SERVER_BUSY);
    assert_eq!(reason, "too many sessions with this token");
    let shown = sim.nodes[refused].app.connect_errors[0].to_string();
    assert!(
        shown.contains("too many sessions with this token"),
        "{shown}"
    );
    assert!(connected(&sim, d));
    let st = sim.server().ep.stats();
    // The refused client's hello was over the limit; its copy got the same refusal
    // again, without a second handshake or count.
    assert_eq!(st.hellos_over_token_limit, 1);
    assert_eq!(st.hellos_over_address_limit, 0);
    assert_eq!(st.hellos_rejected, 1);
    assert_eq!(st.refusals_repeated, 1);
    assert_eq!(st.sessions_accepted, 3);

    // The server's sessions name their token by an id, the same for one token; the
    // client's have none.
    let server_sessions = sim.server().app.connected.clone();
    assert_eq!(server_sessions.len(), 3);
    let ids: Vec<_> = server_sessions
        .iter()
        .map(|h| {
            let s = sim.server().ep.session_ref(*h).expect("held");
            (
                s.remote_addr(),
                s.token_id().expect("a server session's token"),
            )
        })
        .collect();
    let id_of = |addr: SocketAddr| {
        ids.iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, id)| *id)
            .expect("session from that address")
    };
    let first_in = with_shared
        .into_iter()
        .find(|&n| n != refused)
        .expect("a client in");
    let second_in = with_shared
        .into_iter()
        .rfind(|&n| n != refused)
        .expect("a client in");
    let shared_id = id_of(sim.nodes[first_in].addr);
    assert_eq!(id_of(sim.nodes[second_in].addr), shared_id);
    assert_ne!(id_of(sim.nodes[d].addr), shared_id);
    assert_eq!(
        sim.nodes[a]
            .ep
            .session_ref(sim.nodes[a].handle())
            .and_then(|s| s.token_id()),
        None
    );

    // One session with the shared token closes: its place is free for the next
    // hello, and the one after that is refused again.
    let now = sim.now;
    sim.nodes[first_in].session().close(now, 0, "done");
    let server_saw = sim.run_until(Duration::from_secs(2), |s| {
        !s.server().app.closed.is_empty()
    });
    assert!(server_saw, "the server did not see the close");
    let e = sim.add_client_at(at(5), &shared, App::default());
    settle(&mut sim);
    assert!(connected(&sim, e), "{:?}", sim.nodes[e].app.connect_errors);
    let f = sim.add_client_at(at(6), &shared, App::default());
    settle(&mut sim);
    assert!(!connected(&sim, f));
    assert_eq!(rejected(&sim, f).map(|r| r.0), Some(reject::SERVER_BUSY));
    let st = sim.server().ep.stats();
    assert_eq!(st.hellos_over_token_limit, 2);
    assert_eq!(st.sessions_accepted, 4);
}

#[test]
fn the_default_limit_leaves_room_for_many_clients_of_one_token() {
    // The default stays far above what one honest client opens (one session, a few
    // after reconnects), so clients sharing a token are not refused.
    let seed = SEED + 1;
    let mut sim = Sim::new(
        seed,
        LinkParams::new(Duration::from_millis(10), 100_000_000),
        LinkParams::new(Duration::from_millis(10), 100_000_000),
    );
    sim.add_server(server_config(seed, TransportConfig::default()));
    let cfg = client_config(seed, TransportConfig::default());
    for i in 1..=20 {
        sim.add_client_at(at(i), &cfg, App::default());
    }
    settle(&mut sim);
    assert!((1..=20).all(|n| connected(&sim, n)));
    assert_eq!(sim.server().ep.stats().hellos_over_token_limit, 0);
}

#[test]
fn no_limit_and_a_zero_limit_mean_what_they_say() {
    for (limit, expect_in) in [(usize::MAX, true), (0, false)] {
        let seed = SEED + 2;
        let mut sim = Sim::new(
            seed,
            LinkParams::new(Duration::from_millis(10), 100_000_000),
            LinkParams::new(Duration::from_millis(10), 100_000_000),
        );
        sim.add_server(
            server_config(seed, TransportConfig::default()).max_sessions_per_token(limit),
        );
        let cfg = client_config(seed, TransportConfig::default());
        for i in 1..=3 {
            sim.add_client_at(at(i), &cfg, App::default());
        }
        settle(&mut sim);
        assert!(
            (1..=3).all(|n| connected(&sim, n) == expect_in),
            "limit {limit}"
        );
    }
}
