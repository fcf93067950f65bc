use std::time::Duration;
use udpack_proto::testing::*;

fn run(name: &str, up_j: u64, down_j: u64) {
    let mk = |j| {
        let mut l = LinkParams::new(Duration::from_millis(20), 100_000_000);
        l.jitter = Duration::from_millis(j);
        l
    };
    let mut sim = Pair::new(3, mk(0))
        .links(mk(up_j), mk(down_j))
        .client_streams(vec![u64::MAX / 4])
        .build();
    for i in 0..40 {
        sim.run_until(Duration::from_millis(250), |_| false);
        if up_j == 3 {
            let st = sim.client_mut().session().stats();
            eprintln!(
                "{:5.2}s read {:6.1}MB cwnd {:8} infl {:8} pace {:6.1} dlv {:6.1} srtt {:?}",
                i as f64 * 0.25,
                sim.server().app.bytes_read as f64 / 1e6,
                st.congestion_window,
                st.bytes_in_flight,
                st.pacing_rate as f64 * 8e-6,
                st.delivery_rate as f64 * 8e-6,
                st.smoothed_rtt
            );
        }
    }
    let t1 = sim.now;
    sim.run_until(Duration::from_secs(10), |_| false);
    let g = sim.server().app.bytes_between(t1, sim.now) as f64 * 8.0 / 10.0 / 1e6;
    let st = sim.client_mut().session().stats();
    eprintln!("{name}: {g:.1} Mbit/s lost {} spur {} sent {} retx {} KB srtt {:?} min {:?} cwnd {} pace {:.1} dlv {:.1}", st.packets_lost, st.spurious_losses, st.packets_sent, st.bytes_retransmitted/1000, st.smoothed_rtt, st.min_rtt, st.congestion_window, st.pacing_rate as f64*8e-6, st.delivery_rate as f64 * 8e-6);
}

#[test]
fn exp() {
    run("up 3ms", 3, 0);
}
