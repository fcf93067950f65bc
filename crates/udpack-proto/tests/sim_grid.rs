//! Seeded runs across a grid of network conditions: every byte arrives exactly once and
//! in order on every stream, both ways; the graceful close completes on both sides.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use udpack_proto::testing::*;
use udpack_proto::CloseReason;

struct Case {
    seed: u64,
    rtt_ms: u64,
    rate_mbit: u64,
    loss: f64,
    reorder: f64,
    duplicate: f64,
    corrupt: f64,
    jitter_ms: u64,
    client_streams: Vec<u64>,
    server_streams: Vec<u64>,
}

fn case(seed: u64) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let rtts = [1u64, 10, 40, 100, 300];
    let rates = [1u64, 10, 100, 1000];
    let losses = [0.0, 0.01, 0.05, 0.1, 0.2];
    let rtt_ms = rtts[rng.gen_range(0..rtts.len())];
    let rate_mbit = rates[rng.gen_range(0..rates.len())];
    // Keep each run to a few simulated seconds: size the transfer to the rate.
    let budget = (rate_mbit * 1_000_000 / 8 / 4).clamp(20_000, 800_000);
    let streams = |rng: &mut StdRng| {
        let n = rng.gen_range(0..=4);
        (0..n)
            .map(|_| rng.gen_range(0..budget / 2))
            .collect::<Vec<_>>()
    };
    let mut client_streams = streams(&mut rng);
    if client_streams.is_empty() {
        client_streams.push(1000);
    }
    let server_streams = streams(&mut rng);
    Case {
        seed,
        rtt_ms,
        rate_mbit,
        loss: losses[rng.gen_range(0..losses.len())],
        reorder: if rng.gen_bool(0.3) { 0.05 } else { 0.0 },
        duplicate: if rng.gen_bool(0.3) { 0.02 } else { 0.0 },
        corrupt: if rng.gen_bool(0.3) { 0.01 } else { 0.0 },
        jitter_ms: if rng.gen_bool(0.3) { rtt_ms / 4 } else { 0 },
        client_streams,
        server_streams,
    }
}

fn run(c: &Case) -> Result<(), String> {
    let one_way = Duration::from_micros(c.rtt_ms * 500);
    let mut link = LinkParams::new(one_way, c.rate_mbit * 1_000_000);
    link.loss = c.loss;
    link.reorder = c.reorder;
    link.duplicate = c.duplicate;
    link.corrupt = c.corrupt;
    link.jitter = Duration::from_millis(c.jitter_ms);
    link.queue = Duration::from_millis(50).max(one_way);
    let mut sim = Pair::new(c.seed, link)
        .client_streams(c.client_streams.clone())
        .server_streams(c.server_streams.clone())
        .build();
    sim.client_mut().app.goaway_when_done = Some(7);

    let ok = sim.run_until(Duration::from_secs(600), |sim| {
        sim.nodes.iter().all(|n| !n.app.closed.is_empty())
    });
    let describe = |sim: &Sim| {
        let mut s = String::new();
        for (i, n) in sim.nodes.iter().enumerate() {
            s += &format!(
                "\n node {i}: closed {:?} errors {:?} senders {:?} receivers {:?}",
                n.app.closed,
                n.app.errors,
                n.app
                    .senders
                    .values()
                    .map(|s| (s.written, s.total, s.acked))
                    .collect::<Vec<_>>(),
                n.app
                    .receivers
                    .values()
                    .map(|r| (r.read, r.ended))
                    .collect::<Vec<_>>(),
            );
        }
        s
    };
    if !ok {
        return Err(format!(
            "did not finish within 600 s of virtual time:{}",
            describe(&sim)
        ));
    }
    let (server, client) = (&sim.server().app, &sim.nodes[1].app);
    for (who, app) in [("server", server), ("client", client)] {
        if !app.errors.is_empty() {
            return Err(format!("{who} errors:{}", describe(&sim)));
        }
    }
    // Every stream each side opened was read to its end, with exactly its size.
    for (sender_app, receiver_app) in [(client, server), (server, client)] {
        let mut sizes: Vec<u64> = sender_app.senders.values().map(|s| s.total).collect();
        let mut got: Vec<u64> = receiver_app
            .receivers
            .values()
            .filter(|r| r.ended)
            .map(|r| r.read)
            .collect();
        sizes.sort_unstable();
        got.sort_unstable();
        if sizes != got {
            return Err(format!(
                "sent sizes {sizes:?} but read {got:?}:{}",
                describe(&sim)
            ));
        }
    }
    // The client went away with code 7: its session ends as its own close, the
    // server's as the peer's, both with that code.
    match (&client.closed[..], &server.closed[..]) {
        ([(_, CloseReason::Local { code: 7, .. })], [(_, CloseReason::Peer { code: 7, .. })]) => {
            Ok(())
        }
        _ => Err(format!(
            "close did not complete gracefully:{}",
            describe(&sim)
        )),
    }
}

/// The number of seeds; `UDPACK_SIM_SEEDS` raises it, `UDPACK_SIM_SEED` runs one.
fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("UDPACK_SIM_SEED") {
        return vec![s.parse().expect("UDPACK_SIM_SEED is a number")];
    }
    let n = std::env::var("UDPACK_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000u64);
    (1..=n).collect()
}

fn run_share(share: u64, shares: u64) {
    let mut failures = Vec::new();
    for seed in seeds().into_iter().filter(|s| s % shares == share) {
        let c = case(seed);
        let r = std::panic::catch_unwind(|| run(&c));
        let err = match r {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(_) => "panicked".to_string(),
        };
        eprintln!(
            "FAILED seed {seed} (replay: UDPACK_SIM_SEED={seed} cargo test -p udpack-proto --test sim_grid): rtt {} ms, {} Mbit/s, loss {}, reorder {}, dup {}, corrupt {}, jitter {} ms, streams {:?}/{:?}: {err}",
            c.rtt_ms, c.rate_mbit, c.loss, c.reorder, c.duplicate, c.corrupt, c.jitter_ms, c.client_streams, c.server_streams
        );
        failures.push(seed);
        if failures.len() >= 5 {
            break;
        }
    }
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

// The seeds are split four ways so the test harness runs them on every core.
#[test]
fn grid_share_0_delivers_everything_exactly_once() {
    run_share(0, 4);
}

#[test]
fn grid_share_1_delivers_everything_exactly_once() {
    run_share(1, 4);
}

#[test]
fn grid_share_2_delivers_everything_exactly_once() {
    run_share(2, 4);
}

#[test]
fn grid_share_3_delivers_everything_exactly_once() {
    run_share(3, 4);
}
