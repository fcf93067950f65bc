//! `TransportConfig::max_send_rate`: a sender that shares its link keeps below a set
//! rate, whatever the congestion controller would allow, and still delivers everything.

use std::time::Duration;

use udpack_proto::testing::*;
use udpack_proto::TransportConfig;

const RATE: u64 = 100_000_000;

/// Goodput (bits/s) of one bulk stream from the client, capped at `cap` bytes/s.
fn capped_goodput(cap: Option<u64>) -> f64 {
    let mut link = LinkParams::new(Duration::from_millis(20), RATE);
    link.queue = Duration::from_millis(50);
    let mut sim = Pair::new(7, link)
        .client_transport(TransportConfig {
            max_send_rate: cap,
            ..TransportConfig::default()
        })
        .client_streams(vec![u64::MAX / 4])
        .build();
    sim.run_until(Duration::from_secs(2), |_| false);
    let t1 = sim.now;
    sim.run_until(Duration::from_secs(4), |_| false);
    let t2 = sim.now;
    let server = &sim.server().app;
    assert!(server.errors.is_empty(), "{:?}", server.errors);
    server.bytes_between(t1, t2) as f64 * 8.0 / (t2 - t1).as_secs_f64()
}

#[test]
fn the_send_rate_stays_under_its_cap() {
    let uncapped = capped_goodput(None);
    // 2.5 MB/s = 20 Mbit/s, a fifth of the link.
    let capped = capped_goodput(Some(2_500_000));
    assert!(uncapped > 80e6, "uncapped {uncapped}");
    assert!(capped <= 20e6 * 1.01, "capped {capped}");
    assert!(
        capped >= 20e6 * 0.9,
        "capped {capped}: the cap is a ceiling, not a stall"
    );
}

#[test]
fn a_capped_transfer_arrives_whole() {
    let mut link = LinkParams::new(Duration::from_millis(20), RATE);
    link.loss = 0.02;
    let mut sim = Pair::new(9, link)
        .client_transport(TransportConfig {
            max_send_rate: Some(1_000_000),
            ..TransportConfig::default()
        })
        .client_streams(vec![3_000_000])
        .build();
    sim.run_until(Duration::from_secs(10), |_| false);
    let server = &sim.server().app;
    assert!(server.errors.is_empty(), "{:?}", server.errors);
    assert_eq!(server.bytes_read, 3_000_000);
}
