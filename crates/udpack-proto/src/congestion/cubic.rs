//! CUBIC as specified by RFC 9438: after a loss the window drops to β = 0.7 of where
//! it was (W_max) and then grows along a cubic curve that is flat near W_max and steep
//! away from it, never slower than the Reno-friendly estimate. What Linux TCP runs by
//! default, so the simulator can put a udpack flow beside the loss-based flow that real
//! links carry most.

use std::time::{Duration, Instant};

use super::new_reno::{initial_window_for, MINIMUM_WINDOW_PACKETS};
use super::recovery_period::RecoveryPeriod;
use super::{AckSample, Controller, LossSample};

/// RFC 9438 §4.1: the cubic curve's scale, in segments per second cubed.
const C: f64 = 0.4;
/// RFC 9438 §4.6: the window after a congestion event, as a share of the one before.
const BETA: f64 = 0.7;
/// RFC 9438 §4.3: the Reno-friendly estimate's growth per window acknowledged.
const ALPHA: f64 = 3.0 * (1.0 - BETA) / (1.0 + BETA);

/// RFC 9438 CUBIC congestion controller (with fast convergence).
#[derive(Debug)]
pub struct Cubic {
    mtu: u64,
    window: u64,
    ssthresh: u64,
    /// The window just before the last congestion event, in bytes.
    w_max: f64,
    /// Start of the current congestion-avoidance epoch.
    epoch_start: Option<Instant>,
    /// Time from the epoch's start to reach `w_max` again, in seconds.
    k: f64,
    /// The Reno-friendly window estimate, in bytes.
    w_est: f64,
    /// One reduction per congestion event (as in NewReno), undone if its losses were
    /// all reordering; it keeps the window, threshold and W_max from before the cut.
    recovery: RecoveryPeriod<(u64, u64, f64)>,
    app_limited: bool,
    /// First ACK seen while app-limited: the curve's clock stops meanwhile (RFC 9438
    /// §5.8), so the epoch moves on by the time spent there.
    limited_since: Option<Instant>,
}

impl Cubic {
    /// Creates a controller for packets of at most `mtu` bytes.
    pub fn new(mtu: u16) -> Self {
        let mtu = u64::from(mtu.max(1));
        Cubic {
            mtu,
            window: initial_window_for(mtu),
            ssthresh: u64::MAX,
            w_max: 0.0,
            epoch_start: None,
            k: 0.0,
            w_est: 0.0,
            recovery: RecoveryPeriod::default(),
            app_limited: false,
            limited_since: None,
        }
    }

    fn minimum_window(&self) -> u64 {
        self.mtu.saturating_mul(MINIMUM_WINDOW_PACKETS)
    }

    /// W_cubic(t), in bytes, `t` seconds into the epoch (RFC 9438 §4.2).
    fn w_cubic(&self, t: f64) -> f64 {
        let mss = self.mtu as f64;
        let segments = C * (t - self.k).powi(3) + self.w_max / mss;
        segments * mss
    }

    /// Congestion avoidance for `acked` bytes acknowledged at `now`.
    fn grow(&mut self, now: Instant, acked: u64, rtt: Duration) {
        let start = *self.epoch_start.get_or_insert_with(|| {
            // An epoch without a loss before it (after slow start): the curve starts
            // flat at the current window.
            self.k = 0.0;
            self.w_max = self.window as f64;
            self.w_est = self.window as f64;
            now
        });
        let cwnd = self.window as f64;
        let t = now.saturating_duration_since(start).as_secs_f64();
        // RFC 9438 §4.2: aim at the curve one RTT ahead, at most 1.5 × the window.
        let target = self.w_cubic(t + rtt.as_secs_f64()).clamp(cwnd, 1.5 * cwnd);
        // RFC 9438 §4.3: the Reno-friendly estimate.
        self.w_est += ALPHA * acked as f64 * self.mtu as f64 / cwnd;
        let next = if self.w_cubic(t) < self.w_est {
            self.w_est
        } else {
            cwnd + (target - cwnd) * acked as f64 / cwnd
        };
        self.window = (next as u64).max(self.window);
    }
}

impl Controller for Cubic {
    fn on_sent(&mut self, _now: Instant, _bytes: u64, bytes_in_flight: u64) {
        if bytes_in_flight >= self.window {
            self.app_limited = false;
        }
    }

    fn on_ack(&mut self, now: Instant, ack: &AckSample) {
        if self.app_limited {
            self.limited_since.get_or_insert(now);
            return;
        }
        if let Some(since) = self.limited_since.take() {
            if let Some(start) = &mut self.epoch_start {
                *start += now.saturating_duration_since(since);
            }
        }
        if self.recovery.contains(ack.largest_acked_sent) {
            return;
        }
        if self.window < self.ssthresh {
            self.window = self.window.saturating_add(ack.acked_bytes);
            return;
        }
        self.grow(now, ack.acked_bytes, ack.smoothed_rtt);
    }

    fn on_loss(&mut self, now: Instant, loss: &LossSample) {
        let before = (self.window, self.ssthresh, self.w_max);
        if self.recovery.on_loss(now, loss, before) {
            let cwnd = self.window as f64;
            // RFC 9438 §4.7, fast convergence: a flow whose window peaks lower than
            // last time gives way to newer flows sooner.
            self.w_max = if cwnd < self.w_max {
                cwnd * (1.0 + BETA) / 2.0
            } else {
                cwnd
            };
            self.window = ((cwnd * BETA) as u64).max(self.minimum_window());
            self.ssthresh = self.window;
            self.w_est = self.window as f64;
            let mss = self.mtu as f64;
            // RFC 9438 §4.2: the time the curve takes from this window back to W_max.
            let below = (self.w_max - self.window as f64).max(0.0);
            self.k = (below / mss / C).cbrt();
            self.epoch_start = Some(now);
        }
        if loss.persistent {
            self.window = self.minimum_window();
            self.recovery.end();
            self.epoch_start = None;
        }
    }

    fn on_spurious_loss(&mut self, _now: Instant, loss: &LossSample) {
        if let Some((window, ssthresh, w_max)) = self.recovery.on_spurious_loss(loss) {
            // Every loss of this event was reordering: restore what it cut.
            self.window = self.window.max(window);
            self.ssthresh = ssthresh;
            self.w_max = w_max;
            self.epoch_start = None;
        }
    }

    fn on_app_limited(&mut self, _bytes_in_flight: u64) {
        self.app_limited = true;
    }

    fn window(&self) -> u64 {
        self.window
    }

    fn on_mtu_change(&mut self, mtu: u16) {
        self.mtu = u64::from(mtu.max(1));
        self.window = self.window.max(self.minimum_window());
    }

    fn pacing_rate(&self) -> Option<u64> {
        None
    }

    fn name(&self) -> &'static str {
        "cubic"
    }
}

#[cfg(test)]
mod tests {
    use super::super::samples::{ack, loss};
    use super::*;

    const MTU: u16 = 1200;
    const MS: Duration = Duration::from_millis(1);

    /// Grows the window for `secs` seconds, a window's worth of ACKs per 50 ms RTT.
    fn run(c: &mut Cubic, from: Instant, secs: f64) -> Instant {
        let mut now = from;
        let end = from + Duration::from_secs_f64(secs);
        while now < end {
            now += 50 * MS;
            let w = c.window();
            c.on_ack(now, &ack(w, now - MS));
        }
        now
    }

    #[test]
    fn a_loss_cuts_to_beta_and_the_window_climbs_back_to_w_max_in_about_k() {
        let t0 = Instant::now();
        let mut c = Cubic::new(MTU);
        let now = run(&mut c, t0, 0.5);
        let peak = c.window();
        assert!(peak > 100 * u64::from(MTU), "slow start grew it: {peak}");
        c.on_loss(now, &loss(1200, now - MS, false));
        let cut = c.window();
        assert_eq!(cut, (peak as f64 * BETA) as u64);
        // K = cbrt(W_max (1 − β) / C), W_max in segments.
        let k = ((peak as f64 / f64::from(MTU)) * (1.0 - BETA) / C).cbrt();
        let near = run(&mut c, now, k * 0.5);
        let halfway = c.window();
        assert!(
            halfway > cut && halfway < peak,
            "concave: {cut} → {halfway} → {peak}"
        );
        let at_k = run(&mut c, near, k * 0.5 + 0.1);
        let w = c.window() as f64;
        assert!(
            (w - peak as f64).abs() < 0.1 * peak as f64,
            "back near W_max ({peak}) at K: {w}"
        );
        // Past K the curve turns convex and the window grows faster.
        let before = c.window();
        let later = run(&mut c, at_k, 1.0);
        let first = c.window() - before;
        let _ = run(&mut c, later, 1.0);
        assert!(c.window() > before + first, "convex beyond W_max");
    }

    #[test]
    fn acks_of_the_recovery_period_do_not_grow_and_a_spurious_loss_is_undone() {
        let t0 = Instant::now();
        let mut c = Cubic::new(MTU);
        let now = run(&mut c, t0, 0.3);
        let peak = c.window();
        c.on_loss(now, &loss(2400, now - MS, false));
        let cut = c.window();
        c.on_ack(now + MS, &ack(100_000, now - 2 * MS));
        assert_eq!(c.window(), cut, "sent before the loss: no growth");
        c.on_spurious_loss(now + 2 * MS, &loss(2400, now - MS, false));
        assert_eq!(c.window(), peak, "all of it was reordering");
    }

    #[test]
    fn time_spent_app_limited_does_not_advance_the_curve() {
        // Two controllers cut at the same moment; one then spends 5 s app-limited.
        // Once both grow again, the paused one must not jump ahead on the curve.
        let t0 = Instant::now();
        let mut busy = Cubic::new(MTU);
        let now = run(&mut busy, t0, 0.4);
        busy.on_loss(now, &loss(1200, now - MS, false));
        let mut idle = Cubic::new(MTU);
        let _ = run(&mut idle, t0, 0.4);
        idle.on_loss(now, &loss(1200, now - MS, false));
        idle.on_app_limited(0);
        let mut t = now;
        for _ in 0..100 {
            t += 50 * MS;
            idle.on_ack(t, &ack(1200, t - MS));
        }
        idle.on_sent(t, 1200, idle.window());
        let _ = run(&mut busy, now, 0.5);
        let _ = run(&mut idle, t, 0.5);
        assert!(
            idle.window() <= busy.window(),
            "paused {} against running {}",
            idle.window(),
            busy.window()
        );
    }

    #[test]
    fn a_second_peak_below_the_first_gives_way_sooner() {
        let t0 = Instant::now();
        let mut c = Cubic::new(MTU);
        let mut now = run(&mut c, t0, 0.4);
        c.on_loss(now, &loss(1200, now - MS, false));
        let first_w_max = c.w_max;
        now += 100 * MS;
        // A loss again before the window regained its peak.
        c.on_loss(now, &loss(1200, now - MS, false));
        assert!(
            c.w_max < c.window() as f64 / BETA,
            "{} {}",
            c.w_max,
            c.window()
        );
        assert!(c.w_max < first_w_max);
    }
}
