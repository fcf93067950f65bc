//! Goodput and fairness in the simulator (virtual time, so the figures are
//! deterministic): random loss is not read as congestion, a real bottleneck is.

use std::time::Duration;

use udpack_proto::testing::*;
use udpack_proto::{SessionHandle, SessionStats, TransportConfig};

const RATE: u64 = 100_000_000;

/// Goodput of one bulk stream over `window` after `warmup`, in bits per second.
fn goodput(seed: u64, rtt_ms: u64, loss: f64, warmup: Duration, window: Duration) -> f64 {
    let mut link = LinkParams::new(Duration::from_millis(rtt_ms) / 2, RATE);
    link.loss = loss;
    link.queue = Duration::from_millis(50);
    goodput_on(seed, link, warmup, window).0
}

/// Goodput of one bulk stream over `link` (both ways) and the sender's figures.
fn goodput_on(
    seed: u64,
    link: LinkParams,
    warmup: Duration,
    window: Duration,
) -> (f64, SessionStats) {
    let mut sim = bulk_sim(seed, link);
    run_traced(&mut sim, warmup);
    let g = goodput_during(&mut sim, window);
    (g, sim.client_mut().session().stats())
}

/// A simulation of one bulk stream from the client over `link` (both ways).
fn bulk_sim(seed: u64, link: LinkParams) -> Sim {
    Pair::new(seed, link)
        .client_streams(vec![u64::MAX / 4])
        .build()
}

/// The lab's long path: 200 ms RTT at the test rate, `loss` each way, and a drop-tail
/// queue of one RTT.
fn long_deep_link(loss: f64) -> LinkParams {
    let mut link = LinkParams::new(Duration::from_millis(100), RATE);
    link.loss = loss;
    link.queue = Duration::from_millis(200);
    link
}

/// Runs `sim` for `d` (traced as [`run_traced`] says); the server's goodput over it in
/// bits per second, once it has seen no error.
fn goodput_during(sim: &mut Sim, d: Duration) -> f64 {
    let t1 = sim.now;
    run_traced(sim, d);
    let t2 = sim.now;
    let server = &sim.server().app;
    assert!(server.errors.is_empty(), "{:?}", server.errors);
    server.bytes_between(t1, t2) as f64 * 8.0 / (t2 - t1).as_secs_f64()
}

/// Runs the simulation for `d`, in steps of 250 ms of virtual time, and holds the
/// (first) client out of BBR's competing mode: alone on its path, or beside another
/// udpack flow, it has no competitor that ignores the queue (and competing would drop
/// its heavy-loss cap). With `UDPACK_SIM_TRACE` set,
/// prints the client's session figures at each step.
fn run_traced(sim: &mut Sim, d: Duration) {
    let trace = std::env::var_os("UDPACK_SIM_TRACE").is_some();
    let step = Duration::from_millis(250);
    let mut left = d;
    while !left.is_zero() {
        let s = step.min(left);
        sim.run_until(s, |_| false);
        left -= s;
        let t = sim.now - sim.start;
        let node = sim.client_mut();
        let Some(st) = node
            .app
            .connected
            .first()
            .and_then(|&h| node.ep.session(h))
            .map(|sess| sess.stats())
        else {
            continue;
        };
        assert!(
            !st.congestion_competing,
            "the flow entered competing mode at {t:?}"
        );
        if !trace {
            continue;
        }
        let read = sim.server().app.bytes_read;
        eprintln!(
            "{:>6.2}s mtu {} probes-lost {} read {:>6.1}MB cwnd {:>8} infl {:>8} pace {:>6.1}Mb dlv {:>6.1}Mb srtt {:>5.1?} min {:>5.1?} sent {} lost {} retx {}KB wire {}MB stream {}MB",
            t.as_secs_f64(),
            st.datagram_size,
            st.mtu_probes_lost,
            read as f64 / 1e6,
            st.congestion_window,
            st.bytes_in_flight,
            st.pacing_rate as f64 * 8.0 / 1e6,
            st.delivery_rate as f64 * 8.0 / 1e6,
            st.smoothed_rtt,
            st.min_rtt,
            st.packets_sent,
            st.packets_lost,
            st.bytes_retransmitted / 1000,
            st.bytes_sent / 1_000_000,
            st.stream_bytes_sent / 1_000_000,
        );
    }
}

/// Goodput at each loss rate must reach `floor` x (1-p) x rate. The link's rate counts
/// the 28 bytes of IP and UDP header each datagram carries, as a real link does: at
/// 1472-byte datagrams they take 1.9% of it.
fn check(rtt_ms: u64, warmup: Duration, window: Duration, floor: f64) {
    let mut failures = Vec::new();
    // UDPACK_SIM_LOSS=0.05 replays one loss rate alone.
    let only: Option<f64> = std::env::var("UDPACK_SIM_LOSS")
        .ok()
        .and_then(|v| v.parse().ok());
    for (i, p) in [0.0, 0.01, 0.05, 0.1, 0.2].into_iter().enumerate() {
        if only.is_some_and(|o| o != p) {
            continue;
        }
        let g = goodput(100 + i as u64, rtt_ms, p, warmup, window);
        let least = floor * (1.0 - p) * RATE as f64;
        eprintln!(
            "goodput: 100 Mbit/s, {rtt_ms} ms RTT, loss {:>4.1}%: {:6.2} Mbit/s = {:.3} x (1-p) x rate",
            p * 100.0,
            g / 1e6,
            g / ((1.0 - p) * RATE as f64)
        );
        if g < least {
            failures.push((p, g));
        }
    }
    assert!(
        failures.is_empty(),
        "below {floor} x (1-p) x rate: {failures:?}"
    );
}

#[test]
fn goodput_at_40ms_rtt_under_random_loss() {
    check(40, Duration::from_secs(4), Duration::from_secs(10), 0.9);
}

/// At 20% loss this needs the receive windows to grow while a hole holds the reader
/// back (repairs take several round trips when they are lost too): with windows that
/// grew only on reads it was 0.888.
#[test]
fn goodput_at_200ms_rtt_under_random_loss() {
    check(200, Duration::from_secs(10), Duration::from_secs(15), 0.9);
}

/// The lab's 200 ms, 20% case as the lab runs it: a queue of one RTT (200 ms), goodput
/// from 5 s to 20 s after the start, so start-up and its drain weigh in (here 10 s of
/// warm-up hide them). It misses 0.9 × (1-p) × rate on one of these eight seeds (on
/// three before ProbeRTT stopped interrupting queue-free flows), as the link does now
/// and then (docs/BENCHMARKS.md, "Start-up at 200 ms and 20% loss"). Start-up lasts
/// 3.6-5.5 s: it fills the deep queue, repairs then take 400 ms a round, and the first
/// ProbeBW rounds pace at the uncompensated estimate. The floors keep that gap from
/// widening unseen.
#[test]
fn the_labs_long_lossy_case_with_its_queue_and_warm_up() {
    let loss = 0.2;
    let link = long_deep_link(loss);
    let mut shares = Vec::new();
    for seed in 500..508 {
        let mut sim = bulk_sim(seed, link.clone());
        run_traced(&mut sim, Duration::from_secs(5));
        let g = goodput_during(&mut sim, Duration::from_secs(15));
        let share = g / ((1.0 - loss) * RATE as f64);
        eprintln!(
            "lab case, 200 ms, 20%, 200 ms queue, seed {seed}: {:.1} Mbit/s 5-20 s after the start = {share:.3} x (1-p) x rate",
            g / 1e6
        );
        shares.push(share);
    }
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    eprintln!("lab case: mean {mean:.3} x (1-p) x rate");
    assert!(mean >= 0.88, "mean {mean:.3}: {shares:?}");
    assert!(shares.iter().all(|&s| s >= 0.83), "{shares:?}");
}

/// 30% loss each way on a 200 ms path, from the first packet: every seed reaches a
/// good share of the link within ten seconds of connecting (the handshake itself
/// takes several seconds on some seeds, its hellos or replies lost again and
/// again). Two things stalled some seeds for good: a small early round that lost
/// more than half its packets by chance was taken for an overflow (Startup ended at a
/// fraction of the link, the heavy-loss cap held it there: seed 35 here, 0.005 before),
/// and a round whose RTT samples all came from ACKs the receiver delayed by its 25 ms
/// max_ack_delay was taken for a standing queue (Startup ended too).
#[test]
fn a_long_path_losing_30_percent_each_way_gets_going_on_every_seed() {
    let loss = 0.3;
    let link = long_deep_link(loss);
    let mut low = Vec::new();
    for seed in 30..40 {
        let mut sim = bulk_sim(seed, link.clone());
        let connected = sim.run_until(Duration::from_secs(20), |s| {
            !s.client().app.connected.is_empty()
        });
        assert!(connected, "seed {seed}: no session within 20 s");
        sim.run_until(Duration::from_secs(10), |_| false);
        let g = goodput_during(&mut sim, Duration::from_secs(8));
        let share = g / ((1.0 - loss) * RATE as f64);
        eprintln!(
            "30% loss, 200 ms, seed {seed}: {:.1} Mbit/s 10-18 s after connecting = {share:.3} x (1-p) x rate",
            g / 1e6
        );
        if share < 0.6 {
            low.push((seed, share));
        }
    }
    assert!(low.is_empty(), "below 0.6 x (1-p) x rate: {low:?}");
}

#[test]
fn bottleneck_queueing_delay_stays_under_min_rtt() {
    // A deep drop-tail buffer (250 ms) and no random loss: only the controller keeps the
    // queue short.
    let rtt = Duration::from_millis(40);
    let mut link = LinkParams::new(rtt / 2, RATE);
    link.queue = Duration::from_millis(250);
    let mut sim = Pair::new(7, link)
        .client_streams(vec![u64::MAX / 4])
        .build();
    sim.run_until(Duration::from_secs(4), |_| false);
    sim.measure_queues();
    let t1 = sim.now;
    sim.run_until(Duration::from_secs(16), |_| false);
    let q = sim.up_stats().clone();
    let avg = q.queue_delay_sum / q.queue_samples.max(1) as u32;
    let g = sim.server().app.bytes_between(t1, sim.now) as f64 * 8.0 / 16.0;
    eprintln!(
        "bottleneck: max queueing delay {:?}, mean {:?}, drops {}, goodput {:.2} Mbit/s",
        q.max_queue_delay,
        avg,
        q.dropped,
        g / 1e6
    );
    assert!(
        q.max_queue_delay < rtt,
        "max queueing delay {:?}",
        q.max_queue_delay
    );
    assert!(g > 0.85 * RATE as f64, "the bottleneck is not used: {g}");
}

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

#[test]
fn two_flows_share_a_bottleneck_fairly() {
    let rtt = Duration::from_millis(40);
    let mut link = LinkParams::new(rtt / 2, RATE);
    link.queue = Duration::from_millis(100);
    let mut sim = Pair::new(11, link)
        .client_streams(vec![u64::MAX / 4])
        .build();
    let client = client_config(11, TransportConfig::default());
    // The second flow joins a link the first one already fills.
    sim.run_until(Duration::from_secs(2), |_| false);
    sim.add_client(&client, App::sending(vec![u64::MAX / 4]));
    sim.run_until(Duration::from_secs(10), |_| false);
    let before = per_session_bytes(&sim.server().app);
    // Two flows that yield to the queue: the first is never in competing mode.
    run_traced(&mut sim, Duration::from_secs(30));
    let after = per_session_bytes(&sim.server().app);
    assert_eq!(before.len(), 2);
    let shares: Vec<f64> = after
        .iter()
        .zip(&before)
        .map(|((_, a), (_, b))| (a - b) as f64 * 8.0 / 30.0)
        .collect();
    let ratio = shares[0].min(shares[1]) / shares[0].max(shares[1]);
    eprintln!(
        "two flows: {:.2} and {:.2} Mbit/s (ratio {ratio:.3}), total {:.2}",
        shares[0] / 1e6,
        shares[1] / 1e6,
        (shares[0] + shares[1]) / 1e6
    );
    assert!(ratio >= 0.8, "unfair share: {shares:?}");
    assert!(
        shares[0] + shares[1] > 0.8 * RATE as f64,
        "link underused: {shares:?}"
    );
}

/// 40 ms RTT at 100 Mbit/s with each packet delayed by up to `jitter` more (so that at
/// this packet rate most arrive out of order), or a fraction `reorder` held back half the
/// delay, and random loss `loss`.
fn reordering_link(jitter: Duration, reorder: f64, loss: f64) -> LinkParams {
    let mut link = LinkParams::new(Duration::from_millis(20), RATE);
    link.jitter = jitter;
    link.reorder = reorder;
    link.loss = loss;
    link
}

/// Jitter after the bottleneck inflates delivery-rate samples by a few percent, and the
/// queue that this builds must be drained, not cut: a cut of the rate to 0.7 x every
/// second or so cost 7-14% of the link (0.889 at 3 ms, about 0.86 at 5 ms). With the IP
/// and UDP headers counted on the link (1.9%), 5 ms of jitter gives 0.904 (the mean of
/// three seeds; single seeds 0.887-0.932), the others 0.94-0.95: hence the floor of
/// 0.89 here, on each case's mean.
#[test]
fn goodput_under_reordering() {
    let mut failures = Vec::new();
    let cases = [
        (1, 0.0, 0.01),
        (3, 0.0, 0.01),
        (0, 0.05, 0.01),
        (5, 0.0, 0.01),
    ];
    for (i, (jitter_ms, reorder, loss)) in cases.into_iter().enumerate() {
        // Three seeds each: one run's figure swings by a few percent with the timing
        // of a single probe or loss (0.887-0.932 over eight seeds at 5 ms).
        let runs: Vec<(f64, SessionStats)> = (0..3u64)
            .map(|k| {
                let link = reordering_link(Duration::from_millis(jitter_ms), reorder, loss);
                goodput_on(
                    200 + i as u64 + 10 * k,
                    link,
                    Duration::from_secs(4),
                    Duration::from_secs(10),
                )
            })
            .collect();
        let g = runs.iter().map(|(g, _)| g).sum::<f64>() / runs.len() as f64;
        let st = &runs[0].1;
        let share = g / ((1.0 - loss) * RATE as f64);
        eprintln!(
            "reordering: 40 ms RTT, jitter {jitter_ms} ms, reorder {:.0}%, loss {:.0}%: {:6.2} Mbit/s = {share:.3} x (1-p) x rate (mean of 3 seeds); first seed: spurious losses {}, reordering {} packets, datagrams {} B, probes lost {}",
            reorder * 100.0,
            loss * 100.0,
            g / 1e6,
            st.spurious_losses,
            st.reordering,
            st.datagram_size,
            st.mtu_probes_lost
        );
        if share < 0.89 {
            failures.push((jitter_ms, reorder, share));
        }
    }
    assert!(
        failures.is_empty(),
        "below 0.89 x (1-p) x rate: {failures:?}"
    );
}

#[test]
fn reordering_alone_causes_no_retransmission_storm() {
    // 3 ms of jitter at 8,300 packets a second: dozens of packets overtake each other.
    let link = reordering_link(Duration::from_millis(3), 0.0, 0.0);
    let (g, st) = goodput_on(210, link, Duration::from_secs(2), Duration::from_secs(6));
    let retransmitted = st.bytes_retransmitted as f64 / st.stream_bytes_sent as f64;
    eprintln!(
        "reordering without loss: {:.2} Mbit/s, {:.2}% of stream bytes sent again, {} spurious losses, reordering {} packets",
        g / 1e6,
        retransmitted * 100.0,
        st.spurious_losses,
        st.reordering
    );
    assert!(
        st.reordering > 3,
        "the path reorders by {} packets",
        st.reordering
    );
    assert!(
        retransmitted < 0.02,
        "{:.2}% of the stream bytes were sent again",
        retransmitted * 100.0
    );
}

/// 40 ms RTT at 100 Mbit/s both ways; `up` and `down` adjust each direction.
fn link_40ms(
    up: impl Fn(&mut LinkParams),
    down: impl Fn(&mut LinkParams),
) -> (LinkParams, LinkParams) {
    let mut u = LinkParams::new(Duration::from_millis(20), RATE);
    let mut d = u.clone();
    up(&mut u);
    down(&mut d);
    (u, d)
}

/// Goodput over separate links each way.
fn goodput_links(seed: u64, up: LinkParams, down: LinkParams) -> (f64, SessionStats) {
    let mut sim = Pair::new(seed, up.clone())
        .links(up, down)
        .client_streams(vec![u64::MAX / 4])
        .build();
    sim.run_until(Duration::from_secs(4), |_| false);
    let t1 = sim.now;
    sim.run_until(Duration::from_secs(10), |_| false);
    let server = &sim.server().app;
    assert!(server.errors.is_empty(), "{:?}", server.errors);
    let g = server.bytes_between(t1, sim.now) as f64 * 8.0 / 10.0;
    (g, sim.client_mut().session().stats())
}

#[test]
fn goodput_under_bursty_loss_loss_before_the_bottleneck_and_loss_on_the_ack_path() {
    let bursty = GilbertElliott {
        p_enter: 0.004,
        p_leave: 0.2,
        loss_in_bad: 1.0,
    };
    let cases: Vec<(&str, (LinkParams, LinkParams), f64)> = vec![
        (
            "bursty loss (mean burst 5 packets) on the data path",
            link_40ms(|l| l.bursts = Some(bursty), |_| {}),
            bursty.mean_loss(),
        ),
        (
            "5% random loss before the bottleneck",
            link_40ms(
                |l| {
                    l.loss = 0.05;
                    l.loss_before_bottleneck = true
                },
                |_| {},
            ),
            0.05,
        ),
        (
            "20% random loss before the bottleneck",
            link_40ms(
                |l| {
                    l.loss = 0.2;
                    l.loss_before_bottleneck = true
                },
                |_| {},
            ),
            0.2,
        ),
        (
            "20% random loss on the ACK path only",
            link_40ms(|_| {}, |l| l.loss = 0.2),
            0.0,
        ),
    ];
    let mut failures = Vec::new();
    for (i, (name, (up, down), loss)) in cases.into_iter().enumerate() {
        let (g, st) = goodput_links(300 + i as u64, up, down);
        let share = g / ((1.0 - loss) * RATE as f64);
        eprintln!(
            "loss cases: {name}: {:6.2} Mbit/s = {share:.3} x (1-p) x rate; lost {}, spurious {}",
            g / 1e6,
            st.packets_lost,
            st.spurious_losses
        );
        if share < 0.85 {
            failures.push((name, share));
        }
    }
    assert!(
        failures.is_empty(),
        "below 0.85 x (1-p) x rate: {failures:?}"
    );
}

/// Goodput over `after` once an outage of `outage` (every packet lost both ways),
/// `at` into a bulk transfer over a 200 ms path with `loss` each way, has ended.
fn goodput_after_outage(loss: f64, at: Duration, outage: Duration, after: Duration) -> f64 {
    let mut sim = bulk_sim(7, long_deep_link(loss));
    sim.run_until(at, |_| false);
    let set_loss = |sim: &mut Sim, p: f64| {
        let (up, down) = sim.links_mut();
        up.loss = p;
        down.loss = p;
    };
    set_loss(&mut sim, 1.0);
    sim.run_until(outage, |_| false);
    set_loss(&mut sim, loss);
    goodput_during(&mut sim, after)
}

/// An outage of three PTOs and more is persistent congestion: the window drops to the
/// minimum until the path answers, then comes back with the bandwidth estimate it had.
/// Re-learning the bandwidth from Startup instead, as BBR here once did, gave this
/// case 3.8 Mbit/s over those ten seconds (0.047 x (1-p) x rate; now 65.1, 0.814):
/// Startup's samples are too noisy there to grow by a quarter a round for long, and
/// ProbeBW then climbs back a quarter per gain cycle.
#[test]
fn a_long_lossy_path_regains_its_rate_soon_after_an_outage() {
    let g = goodput_after_outage(
        0.2,
        Duration::from_secs(20),
        Duration::from_millis(1500),
        Duration::from_secs(10),
    );
    eprintln!(
        "goodput after a 1.5 s outage, 200 ms RTT, 20% loss: {:.1} Mbit/s over 10 s = {:.3} x (1-p) x rate",
        g / 1e6,
        g / (0.8 * RATE as f64)
    );
    assert!(g > 0.6 * 0.8 * RATE as f64, "{g}");
}
