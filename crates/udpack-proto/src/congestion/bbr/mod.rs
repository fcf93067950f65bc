//! BBR congestion control: the v1 state machine (Startup, Drain, ProbeBW, ProbeRTT) with a
//! few cheap additions in the spirit of v2.
//!
//! BBR models the path with two numbers: the bottleneck bandwidth (a windowed max of
//! delivery-rate samples) and the round-trip propagation time (a windowed min of RTT
//! samples). It paces at gain × bandwidth and caps bytes in flight at gain × their product
//! (the BDP), so it fills the pipe without a standing queue, and random loss does not
//! shrink its rate the way it shrinks a loss-based window.
//!
//! Departures from v1, each for a product requirement:
//! - No loss reaction (v1's packet conservation in recovery is gone): random loss must not
//!   reduce the rate. Persistent congestion holds the window at the minimum until the
//!   path answers again (the model stays), and a round losing more than half its data
//!   sets a v2-style `inflight_hi` cap for ten rounds (not while competing, below).
//! - Random-loss compensation: delivery-rate samples count delivered bytes only, so with
//!   random loss p the sender would pace at the goodput and leave a fraction p of the link
//!   idle. p is measured over packets sent while pacing *below* the estimate (Drain and the
//!   0.75 phase), where our own overflow cannot cause drops, skipping losses seen with a
//!   long or near-full queue; send rate and BDP are scaled by 1 / (1 - p), capped at
//!   p = 0.3. While a queue stands, the compensation is switched off (the flow paces at
//!   the uncompensated estimate) so that an overestimate cannot bloat the buffer.
//! - Batching allowance: the window holds three send quanta (up to one 64 KB offload
//!   batch each) and the ACK-aggregation estimate (`extra_acked`), so that batched sends
//!   and bursty ACKs do not stall a flow whose BDP is smaller than a batch.
//! - Fair sharing: v1 flows that probe in lockstep keep whatever shares they start with.
//!   Two rounds with a standing queue (even the lowest RTT sample of each round above
//!   min_rtt + max(min_rtt / 8, 1 ms, 8 packets)) mean the flows together overshoot: each
//!   cuts a short-term cap `bw_lo` to 0.7 × its delivery rate and restarts its max filter
//!   there; the cap then grows by doubling absolute steps from one packet per round trip,
//!   restarted every gain cycle. Multiplicative decrease with equal absolute increase
//!   converges to equal shares (AIMD). If the queue outlives two cuts without draining,
//!   the flow shares the link with one that ignores the queue (TCP Cubic, BBRv1): it
//!   undoes the cuts and competes on loss instead (`queue`).
//! - Draining at cruise: while a queue of more than half that threshold stands (and the
//!   flow is not competing), the cruise phase paces at `min_rtt / (min_rtt + queue)` of
//!   the estimate. Jitter after the bottleneck inflates delivery-rate samples, so a flow
//!   alone can estimate a few percent above the link; draining the queue this builds
//!   costs nothing, where the cut it would otherwise reach costs ~7% of goodput.
//! - Startup also ends when a queue stood for a whole round (HyStart-like), so a flow
//!   joining a busy bottleneck does not push the others out before noticing it.
//! - The ProbeBW start phase and the number of cruise phases (6 ± 1) come from a
//!   deterministic generator fed with RTT samples: no randomness, but flows with equal RTTs
//!   do not stay in lockstep.
//!
//! Layout: this file holds the controller and its control parameters (window and pacing
//! rate); `mode` the state machine, `model` the path model (rounds, bandwidth and min-RTT
//! filters, ACK aggregation), `queue` the standing-queue fairness logic and `loss` what
//! losses do (random-loss compensation, the heavy-loss cap). Each owns its part of the state.

use std::f64::consts::LN_2;
use std::time::{Duration, Instant};

use super::{AckSample, Controller, LossSample};

mod loss;
mod mode;
mod model;
mod queue;
#[cfg(test)]
mod tests;

use loss::Loss;
use mode::{GainCycle, Mode, ProbeRtt, Startup};
use model::Model;
use queue::StandingQueue;

/// Startup gain 2/ln2 ≈ 2.885: the smallest gain that doubles the delivery rate per round.
const HIGH_GAIN: f64 = 2.0 / LN_2;
/// Pace 1% below the estimate so that estimation noise does not build a queue.
const PACING_MARGIN: f64 = 0.99;
/// ProbeRTT window as a fraction of the BDP (v2): half the BDP drains any queue the flow
/// itself keeps, at a quarter of v1's cost in throughput.
const PROBE_RTT_CWND_GAIN: f64 = 0.5;
/// The minimum window, in packets.
const MIN_CWND_PACKETS: u64 = 4;
/// Initial window in packets (RFC 9002 §7.2).
const INITIAL_CWND_PACKETS: u64 = 10;
/// Allowance added to the target window for pacing and ACK quantization, in packets.
const QUANTA_PACKETS: u64 = 3;
/// The send quantum is what the pacing rate moves in this long...
const SEND_QUANTUM_TIME: Duration = Duration::from_millis(1);
/// ...but at most one segmentation-offload batch: the window allows three of them, so
/// a sender and receiver that move datagrams in batches keep the pipe busy even when
/// the path's BDP is smaller than a batch (as on loopback).
const MAX_SEND_QUANTUM: u64 = 64 * 1024;
/// RTT assumed for the initial pacing rate before any measurement.
const INITIAL_RTT: Duration = Duration::from_millis(100);
/// The most of a peer's reported ACK delay taken off an RTT sample before it is
/// judged for a queue: the default max_ack_delay.
const MAX_ACK_DELAY_DISCOUNT: Duration = Duration::from_millis(25);
/// Floor for the RTT used to derive the initial pacing rate.
const MIN_RTT_FOR_RATE: Duration = Duration::from_millis(1);

/// BBR congestion controller.
#[derive(Debug)]
pub struct Bbr {
    mtu: u64,
    mode: Mode,
    /// Congestion window in bytes.
    cwnd: u64,
    /// Pacing rate in bytes per second.
    pacing_rate: u64,
    pacing_gain: f64,
    cwnd_gain: f64,
    /// Startup found the pipe full.
    filled_pipe: bool,
    /// Sending restarted from idle while app-limited.
    idle_restart: bool,
    app_limited: bool,
    bytes_in_flight: u64,
    /// Loss reported since the last ACK (ends a ProbeBW probe-up phase).
    loss_since_ack: bool,
    /// Startup's bandwidth-growth check.
    startup: Startup,
    /// ProbeBW gain-cycle position.
    cycle: GainCycle,
    /// ProbeRTT episode in progress, if any.
    probe_rtt: ProbeRtt,
    /// Rounds, bandwidth and min-RTT estimates, ACK aggregation.
    model: Model,
    /// Standing-queue detection and the short-term bandwidth cap it drives.
    queue: StandingQueue,
    /// Random-loss compensation and the heavy-loss cap.
    loss: Loss,
    /// After persistent congestion: the window to take back, and when the loss was
    /// declared; the first ACK of a packet sent after it restores the window.
    restore: Option<(u64, Instant)>,
}

impl Bbr {
    /// Creates a controller for packets of at most `mtu` bytes.
    pub fn new(mtu: u16) -> Self {
        let mtu = u64::from(mtu.max(1));
        let cwnd = mtu.saturating_mul(INITIAL_CWND_PACKETS);
        let mut bbr = Self {
            mtu,
            mode: Mode::Startup,
            cwnd,
            pacing_rate: 0,
            pacing_gain: HIGH_GAIN,
            cwnd_gain: HIGH_GAIN,
            filled_pipe: false,
            idle_restart: false,
            app_limited: false,
            bytes_in_flight: 0,
            loss_since_ack: false,
            startup: Startup::default(),
            cycle: GainCycle::new(),
            probe_rtt: ProbeRtt::new(cwnd),
            model: Model::default(),
            queue: StandingQueue::default(),
            loss: Loss::default(),
            restore: None,
        };
        bbr.pacing_rate = bbr.initial_pacing_rate();
        bbr
    }

    #[cfg(test)]
    /// Estimated bottleneck bandwidth (delivery rate, bytes/s), for stats.
    pub fn bandwidth(&self) -> u64 {
        self.model.bw()
    }

    #[cfg(test)]
    /// Windowed minimum RTT, for stats.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.model.min_rtt
    }

    fn min_cwnd(&self) -> u64 {
        self.mtu.saturating_mul(MIN_CWND_PACKETS)
    }

    fn initial_cwnd(&self) -> u64 {
        self.mtu.saturating_mul(INITIAL_CWND_PACKETS)
    }

    /// Bandwidth the model works with: the max filter, capped by the short-term `bw_lo`.
    fn model_bw(&self) -> u64 {
        self.queue.cap(self.model.bw())
    }

    /// Rate the path accepts sent bytes at: the delivery rate, scaled up for random loss
    /// unless a standing queue shows that the scaled rate already exceeds the bottleneck.
    fn send_bw(&self) -> f64 {
        let standing = self
            .queue
            .standing(self.model.min_rtt, self.model.bw(), self.mtu);
        self.loss.send_bw(self.model_bw(), self.mtu, standing)
    }

    /// gain × send bandwidth × min RTT, plus the quantization allowance; the initial window
    /// while the model is empty.
    fn inflight(&self, gain: f64) -> u64 {
        let (Some(min_rtt), true) = (self.model.min_rtt, self.model.bw() > 0) else {
            return self.initial_cwnd();
        };
        let bdp = gain * self.send_bw() * min_rtt.as_secs_f64();
        // `as` saturates and maps NaN to 0.
        (bdp as u64).saturating_add(self.mtu.saturating_mul(QUANTA_PACKETS))
    }

    /// Window held in ProbeRTT.
    fn probe_rtt_cwnd(&self) -> u64 {
        let (Some(min_rtt), true) = (self.model.min_rtt, self.model.bw() > 0) else {
            return self.min_cwnd();
        };
        let bdp = PROBE_RTT_CWND_GAIN * self.model_bw() as f64 * min_rtt.as_secs_f64();
        (bdp as u64).max(self.min_cwnd())
    }

    /// High-gain rate derived from the window before any bandwidth sample exists.
    fn initial_pacing_rate(&self) -> u64 {
        let rtt = self
            .model
            .smoothed_rtt
            .unwrap_or(INITIAL_RTT)
            .max(MIN_RTT_FOR_RATE);
        (HIGH_GAIN * self.cwnd as f64 / rtt.as_secs_f64()) as u64
    }

    /// Called when a new round starts: judge the round that just ended.
    fn on_round_end(&mut self) {
        let round = self.model.round_count;
        // The heavy-loss cap, if this round earns one, at the BDP before the queue rules
        // below restart the max filter.
        let heavy_cap = self
            .loss
            .heavy_round(self.mtu)
            .then(|| self.inflight(1.0).max(self.min_cwnd()));
        let overflow = self.loss.overflow_round(self.mtu);
        self.queue.on_round_end(
            self.mode == Mode::ProbeBw,
            overflow,
            &mut self.model,
            self.mtu,
        );
        if self.queue.competing() {
            // The overflow of a buffer that a flow ignoring the queue keeps full is the
            // competitor's doing as much as ours, and the competing rules answer it
            // (`queue`): a cap at one BDP would halve this flow's rate against one that
            // keeps two in flight, and the max filter would age down to the capped rate.
            // A cap set before competing began (the competitor's Startup) goes too.
            self.loss.lift_cap();
        } else if let Some(cap) = heavy_cap {
            // Not random loss at any plausible rate: stop growing into the loss and cap the
            // window at the (loss-compensated) BDP for a while.
            self.loss.cap_inflight(cap, round);
            if self.mode == Mode::Startup {
                self.filled_pipe = true;
            }
        } else {
            self.loss.expire_cap(round);
        }
        self.loss.end_round();
    }

    fn set_pacing_rate(&mut self) {
        if self.model.bw() == 0 {
            self.pacing_rate = self.pacing_rate.max(self.initial_pacing_rate());
            return;
        }
        let mut gain = self.pacing_gain;
        if self.mode == Mode::ProbeBw && gain == 1.0 {
            // Cruising: drain a queue this flow built (an estimate inflated by jitter).
            gain *= self
                .queue
                .drain_gain(self.model.min_rtt, self.model.bw(), self.mtu);
        }
        let rate = (gain * self.send_bw() * PACING_MARGIN) as u64;
        // In Startup the rate only grows: early samples understate the path.
        if self.filled_pipe || rate > self.pacing_rate {
            self.pacing_rate = rate;
        }
    }

    /// Bytes the pacer releases in about a millisecond, within [2 packets, one
    /// offload batch].
    fn send_quantum(&self) -> u64 {
        let q = (self.pacing_rate as f64 * SEND_QUANTUM_TIME.as_secs_f64()) as u64;
        q.clamp(
            self.mtu.saturating_mul(2),
            MAX_SEND_QUANTUM.max(self.mtu * 2),
        )
    }

    /// Tracks how far acknowledgments run ahead of the bandwidth estimate.
    fn update_ack_aggregation(&mut self, now: Instant, acked: u64) {
        let bw = self.model_bw();
        self.model.update_ack_aggregation(now, acked, bw, self.cwnd);
    }

    fn set_cwnd(&mut self, acked: u64) {
        let quanta = self
            .send_quantum()
            .saturating_sub(self.mtu)
            .saturating_mul(QUANTA_PACKETS);
        let mut target = self.inflight(self.cwnd_gain).saturating_add(quanta);
        if self.filled_pipe {
            target = target.saturating_add(self.model.extra_acked.get());
        }
        if self.filled_pipe {
            self.cwnd = self.cwnd.saturating_add(acked).min(target);
        } else if self.cwnd < target || self.model.delivered < self.initial_cwnd() {
            self.cwnd = self.cwnd.saturating_add(acked);
        }
        self.cwnd = self.cwnd.max(self.min_cwnd());
        if let Some(hi) = self.loss.inflight_cap() {
            self.cwnd = self.cwnd.min(hi.max(self.min_cwnd()));
        }
        if self.mode == Mode::ProbeRtt {
            self.cwnd = self.cwnd.min(self.probe_rtt_cwnd());
        }
    }

    /// Persistent congestion: three PTOs' worth of packets lost together, an outage
    /// more often than a change of path. With a bandwidth estimate, the window drops to
    /// the minimum until a packet sent from now on is acknowledged, then comes back (as
    /// Linux's BBR restores its window after an RTO); the model stays, since a stale
    /// bandwidth ages out of its max filter within ten rounds and a heavy-loss round
    /// caps it sooner. Re-discovering it with Startup instead took half a minute in the
    /// simulator on a 200 ms path with 30% loss, where Startup's noisy samples end it
    /// at a fraction of the link. The random-loss estimate starts again: the outage's
    /// losses are not random.
    fn on_persistent_congestion(&mut self, now: Instant) {
        if self.model.bw() == 0 {
            self.reset_model();
            return;
        }
        let prior = self.restore.map_or(self.cwnd, |(w, _)| w.max(self.cwnd));
        self.restore = Some((prior, now));
        self.cwnd = self.min_cwnd();
        self.loss.reset();
        // Whoever shared the queue before the outage may be gone: competing mode (which
        // lifts the heavy-loss cap) must be earned again.
        self.queue.reset();
        // The outage's losses are not this round's verdict on the path: no heavy-loss
        // cap from them.
        self.loss.end_round();
    }

    /// Takes back the window persistent congestion took, once `ack` shows the path
    /// carries packets sent since (before `set_cwnd`, whose target and caps, ProbeRTT's
    /// and the heavy-loss one, still apply; a ProbeRTT under way gives it back on exit).
    fn restore_after_persistent_congestion(&mut self, ack: &AckSample) {
        if let Some((prior, at)) = self.restore {
            if ack.acked_bytes > 0 && ack.largest_acked_sent > at {
                self.restore = None;
                self.cwnd = self.cwnd.max(prior);
                if self.mode == Mode::ProbeRtt {
                    self.probe_rtt.prior_cwnd = self.probe_rtt.prior_cwnd.max(prior);
                }
            }
        }
    }

    /// Persistent congestion before any bandwidth sample: restart from the minimum
    /// window and find the bandwidth with Startup.
    fn reset_model(&mut self) {
        self.restore = None;
        self.cwnd = self.min_cwnd();
        self.model.reset();
        self.startup = Startup::default();
        self.filled_pipe = false;
        self.loss.reset();
        self.probe_rtt.cancel();
        self.queue.reset();
        self.enter_startup();
        self.pacing_rate = self.initial_pacing_rate();
    }
}

impl Controller for Bbr {
    fn on_sent(&mut self, now: Instant, bytes: u64, bytes_in_flight: u64) {
        if bytes_in_flight <= bytes && self.app_limited {
            // Restarting after idle: cruise at the estimated rate rather than at a stale gain.
            self.idle_restart = true;
            if self.mode == Mode::ProbeBw && self.model.bw() > 0 {
                self.pacing_rate = (self.send_bw() * PACING_MARGIN) as u64;
            }
        }
        self.bytes_in_flight = bytes_in_flight;
        self.loss.on_sent(now, self.pacing_gain < 1.0, bytes);
    }

    fn on_ack(&mut self, now: Instant, ack: &AckSample) {
        self.model.on_ack(ack);
        self.bytes_in_flight = ack.bytes_in_flight;
        let prior_inflight = ack.bytes_in_flight.saturating_add(ack.acked_bytes);

        // Rounds and the bandwidth model.
        let mut app_limited_sample = true;
        if let Some(rs) = &ack.rate {
            if self.model.on_rate_sample(rs) {
                self.on_round_end();
            }
            // App-limited samples understate the path: use them only if they raise the max.
            // ProbeRTT limits the flow on purpose, so its samples count as app-limited.
            let app_limited = rs.is_app_limited || self.mode == Mode::ProbeRtt;
            self.model.update_bw(rs.delivery_rate, app_limited);
            app_limited_sample = app_limited;
            if !rs.is_app_limited {
                self.app_limited = false;
            }
            if !app_limited {
                self.queue.on_delivery_rate(rs.delivery_rate);
            }
        }
        self.loss.on_acked(ack.acked_bytes);

        // State machine.
        self.update_cycle_phase(now, prior_inflight);
        self.check_full_pipe(app_limited_sample);
        if self.mode == Mode::Startup && self.filled_pipe {
            self.enter_drain();
        }
        if self.mode == Mode::Drain && self.bytes_in_flight <= self.inflight(1.0) {
            self.enter_probe_bw(now);
        }
        let rtt = ack.latest_rtt.or(ack.rate.map(|rs| rs.rtt));
        self.update_min_rtt(now, rtt);
        if let Some(rtt) = rtt {
            self.cycle
                .mix_jitter(u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX));
        }
        if let (Some(rtt), Some(min_rtt)) = (rtt, self.model.min_rtt) {
            // The queue is judged on samples without the peer's ACK delay (as RFC 9002
            // §5.3 adjusts the smoothed RTT): at low packet rates a round's samples may
            // all come from ACKs held for max_ack_delay, which is as long as the
            // standing-queue threshold on a 200 ms path. The delay belongs to the
            // largest packet acknowledged (not to a rate sample's), and a peer's say
            // is trusted only up to the default max_ack_delay and a quarter of
            // min_rtt, so that it cannot hide a real queue.
            let rtt = match ack.latest_rtt {
                Some(_) => {
                    let delay = ack.ack_delay.min(MAX_ACK_DELAY_DISCOUNT).min(min_rtt / 4);
                    rtt.saturating_sub(delay).max(min_rtt)
                }
                None => rtt,
            };
            self.loss
                .on_rtt_sample(self.model.round_count, rtt, min_rtt);
            self.queue.on_rtt_sample(rtt);
        }
        if ack.acked_bytes > 0 {
            self.idle_restart = false;
        }

        self.update_ack_aggregation(now, ack.acked_bytes);

        // Control parameters.
        self.set_pacing_rate();
        self.restore_after_persistent_congestion(ack);
        self.set_cwnd(ack.acked_bytes);

        self.loss_since_ack = false;
        let draining = self.pacing_gain < 1.0;
        let rtt = self
            .model
            .smoothed_rtt
            .or(self.model.min_rtt)
            .unwrap_or(INITIAL_RTT);
        self.loss.after_ack(now, draining, rtt);
    }

    fn on_loss(&mut self, now: Instant, loss: &LossSample) {
        self.bytes_in_flight = loss.bytes_in_flight;
        self.loss
            .on_loss(loss, self.model.min_rtt, self.model.bw(), self.mtu);
        if loss.lost_bytes > 0 {
            self.loss_since_ack = true;
        }
        if loss.persistent {
            self.on_persistent_congestion(now);
        }
    }

    fn on_spurious_loss(&mut self, _now: Instant, loss: &LossSample) {
        self.loss.on_spurious(loss);
    }

    fn on_app_limited(&mut self, bytes_in_flight: u64) {
        self.app_limited = true;
        self.bytes_in_flight = bytes_in_flight;
    }

    fn window(&self) -> u64 {
        self.cwnd
    }

    fn on_mtu_change(&mut self, mtu: u16) {
        self.mtu = u64::from(mtu.max(1));
        self.cwnd = self.cwnd.max(self.min_cwnd());
    }

    fn pacing_rate(&self) -> Option<u64> {
        Some(self.pacing_rate)
    }

    fn name(&self) -> &'static str {
        "bbr"
    }

    fn competing(&self) -> bool {
        self.queue.competing()
    }

    fn phase(&self) -> &'static str {
        match self.mode {
            Mode::Startup => "startup",
            Mode::Drain => "drain",
            Mode::ProbeBw => self.cycle.phase_name(),
            Mode::ProbeRtt => "probe-rtt",
        }
    }
}
