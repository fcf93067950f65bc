//! Checks shared by the tests: connected, streams done, transfers whole, a graceful
//! close with the same code on both sides.

use std::time::Duration;

use super::app::App;
use super::sim::Sim;
use crate::{SessionHandle, SessionStats};

/// The client's session.
pub fn client_handle(sim: &Sim) -> SessionHandle {
    sim.client().app.sessions[0]
}

/// The first session the server accepted.
pub fn server_handle(sim: &Sim) -> SessionHandle {
    *sim.server()
        .app
        .sessions
        .first()
        .expect("the server accepted a session")
}

/// Both sides saw `Connected`.
pub fn connected(sim: &Sim) -> bool {
    !sim.server().app.connected.is_empty() && !sim.client().app.connected.is_empty()
}

/// The figures of session `h` on node `node`.
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
    let (server, client) = (&sim.server().app, &sim.client().app);
    connected(sim) && sent_and_read(client, server) && sent_and_read(server, client)
}

/// No application saw a wrong byte, and every stream arrived whole.
pub fn check_transfer(sim: &Sim) {
    let (server, client) = (&sim.server().app, &sim.client().app);
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
    sim.client_mut()
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

/// Runs until both sides are connected (5 s at most).
pub fn run_until_connected(sim: &mut Sim) {
    assert!(
        sim.run_until(Duration::from_secs(5), connected),
        "handshake did not complete"
    );
}
