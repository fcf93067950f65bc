//! A udpack (BBR) flow sharing a drop-tail bottleneck with a loss-based flow (a udpack
//! session running NewReno, which, like TCP Cubic, grows until the buffer overflows and
//! ignores the queue). BBR's standing-queue cuts must not hand the loss-based flow the
//! whole link: each flow gets at least a third of it.

use std::time::Duration;

use udpack_proto::testing::*;
use udpack_proto::{ControllerKind, SessionHandle, TransportConfig};

const RATE: u64 = 100_000_000;

/// Stream bytes the server read so far, per session, in the order sessions connected.
fn per_session_bytes(app: &App) -> Vec<(SessionHandle, u64)> {
    let mut v: Vec<(SessionHandle, u64)> = Vec::new();
    for (&(h, _), r) in &app.receivers {
        match v.iter_mut().find(|(x, _)| *x == h) {
            Some((_, b)) => *b += r.read,
            None => v.push((h, r.read)),
        }
    }
    v.sort();
    v
}

/// One BBR and one NewReno flow over 100 Mbit/s, 40 ms RTT, a drop-tail queue of one
/// RTT; the NewReno flow starts `reno_lead` earlier. Returns the goodputs (BBR, NewReno)
/// in bit/s over `window` after `warmup`, and the queue drops in the window.
fn share(seed: u64, reno_lead: Duration, warmup: Duration, window: Duration) -> (f64, f64, u64) {
    let rtt = Duration::from_millis(40);
    let mut link = LinkParams::new(rtt / 2, RATE);
    link.queue = rtt;
    let reno = TransportConfig {
        congestion: ControllerKind::NewReno,
        ..TransportConfig::default()
    };
    // The first client is the NewReno flow, the second the BBR flow.
    let mut sim = Pair::new(seed, link)
        .client_transport(reno)
        .client_streams(vec![u64::MAX / 4])
        .build();
    sim.run_until(reno_lead, |_| false);
    let bbr = client_config(seed, TransportConfig::default());
    sim.add_client(&bbr, App::sending(vec![u64::MAX / 4]));
    sim.run_until(warmup, |_| false);
    sim.measure_queues();
    let before = per_session_bytes(&sim.server().app);
    sim.run_until(window, |_| false);
    let after = per_session_bytes(&sim.server().app);
    let server = &sim.server().app;
    assert!(server.errors.is_empty(), "{:?}", server.errors);
    assert_eq!(after.len(), 2, "both flows connected");
    assert_eq!(before.len(), 2, "both flows connected before the window");
    let rate = |i: usize| (after[i].1 - before[i].1) as f64 * 8.0 / window.as_secs_f64();
    // Session handles are given out in connection order: NewReno first.
    (rate(1), rate(0), sim.up_stats().dropped)
}

#[test]
fn bbr_keeps_a_fair_share_beside_a_loss_based_flow() {
    let mut failures = Vec::new();
    for (i, lead_ms) in [0u64, 3000].into_iter().enumerate() {
        let lead = Duration::from_millis(lead_ms);
        let (bbr, reno, drops) = share(
            500 + i as u64,
            lead,
            Duration::from_secs(6),
            Duration::from_secs(20),
        );
        eprintln!(
            "fairness: 100 Mbit/s, 40 ms RTT, 40 ms drop-tail queue, NewReno {lead_ms} ms ahead: BBR {:6.2} Mbit/s, NewReno {:6.2} Mbit/s, queue drops {drops}",
            bbr / 1e6,
            reno / 1e6
        );
        let third = RATE as f64 / 3.0;
        // Drops show that the loss-based flow filled the buffer: the case under test.
        if bbr < third || reno < third || drops == 0 {
            failures.push((lead_ms, bbr, reno, drops));
        }
    }
    assert!(
        failures.is_empty(),
        "a flow got less than a third of the link, or the buffer never overflowed \
         (lead ms, BBR, NewReno, drops): {failures:?}"
    );
}
