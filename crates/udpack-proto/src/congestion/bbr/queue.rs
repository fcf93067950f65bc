//! Fair sharing through the standing queue. v1 flows that probe in lockstep keep
//! whatever shares they start with; here two rounds with a standing queue (even the lowest
//! RTT sample of each round above min_rtt + the threshold) mean the flows together
//! overshoot: each cuts a short-term cap `bw_lo` to 0.7 × its delivery rate and restarts
//! its max filter there, then grows the cap by equal, doubling absolute steps. AIMD
//! converges to equal shares.
//!
//! That only works if the other flows yield to the queue too. A loss-based flow (TCP
//! Cubic) or BBRv1 keeps it standing whatever this flow does, and cutting on it hands
//! them the link. So a cut counts as relieved only once the queue drains (an RTT sample
//! within a quarter of the threshold of min_rtt); a queue that outlives two cuts without
//! draining puts the flow in *competing* mode: the cuts are undone, the queue no longer
//! cuts, and the signal shared with the buffer-filling flow is loss instead: the first
//! round losing ≥ 2% to overflow after eight loss-free ones cuts `bw_lo` to 0.7 × the
//! rate, which then grows back as CUBIC's window does: by one packet per round trip each
//! round (Reno), or faster where CUBIC is, on long paths (`cubic_like_step`). Competing
//! ends when the queue drains.
//!
//! Below the threshold, a queue of more than half of it slows the cruise phase to
//! `min_rtt / (min_rtt + queue)` of the estimate, which drains it in about a round trip:
//! jitter after the bottleneck makes a lone flow's estimate run a few percent high, and
//! the queue that builds must not reach a cut.

use std::time::Duration;

use super::model::Model;
use super::{INITIAL_RTT, MIN_CWND_PACKETS, MIN_RTT_FOR_RATE};

/// A queue longer than min_rtt / this is "standing": two rounds of it cut the short-term
/// bandwidth cap, half of it suspends loss compensation, and a loss seen with twice that
/// queue is taken as an overflow, not as random loss.
const STANDING_QUEUE_DIVISOR: u32 = 8;
/// Multiplicative decrease of the short-term bandwidth cap on a standing queue.
const STANDING_QUEUE_BETA: f64 = 0.7;
/// Floor for the standing-queue threshold, against RTT jitter on very short paths...
pub(super) const MIN_QUEUE_THRESHOLD: Duration = Duration::from_millis(1);
/// ...and against quantization on slow paths: this many packets at the estimated rate.
const QUEUE_THRESHOLD_PACKETS: u64 = 8;
/// The queue counts as drained within threshold / this of min_rtt.
const DRAINED_DIVISOR: u32 = 4;
/// Loss-free rounds that make the next overflow a new congestion episode (about a gain
/// cycle).
const QUIET_ROUNDS: u32 = 8;
/// Cuts without the queue draining before the flow stops cutting (competing mode).
const MAX_UNRELIEVED_CUTS: u32 = 2;
/// How many rounds the bandwidth before a series of cuts stays the reference for later
/// ones (the max filter's window: the filter would still hold it had the cuts not
/// restarted it).
const CUT_MEMORY_ROUNDS: u64 = 10;
/// The cruise rate never drains a standing queue faster than the ProbeBW down phase.
const MIN_DRAIN_GAIN: f64 = 0.75;
/// CUBIC's constant C (RFC 9438 §5.1), in packets per second cubed, and its
/// multiplicative decrease factor β (§4.6), which the loss-driven cut uses too.
const CUBIC_C: f64 = 0.4;
const CUBIC_BETA: f64 = 0.7;

/// Queueing delay above which the queue counts as standing: an eighth of min_rtt, but
/// at least a few packets' worth (at `bw`), which ACK clocking and quantization keep
/// queued on paths with a small BDP anyway.
pub(super) fn threshold(min_rtt: Duration, bw: u64, mtu: u64) -> Duration {
    let packets = if bw > 0 {
        let bytes = mtu.saturating_mul(QUEUE_THRESHOLD_PACKETS) as f64;
        Duration::try_from_secs_f64(bytes / bw as f64).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    };
    (min_rtt / STANDING_QUEUE_DIVISOR)
        .max(MIN_QUEUE_THRESHOLD)
        .max(packets)
}

/// How close to min_rtt an RTT sample must come to show the queue empty.
pub(super) fn drained_within(min_rtt: Duration, bw: u64, mtu: u64) -> Duration {
    threshold(min_rtt, bw, mtu) / DRAINED_DIVISOR
}

/// First additive step of `bw_lo`: one packet per min_rtt.
fn initial_step(min_rtt: Option<Duration>, mtu: u64) -> u64 {
    let rtt = min_rtt.unwrap_or(INITIAL_RTT).max(MIN_RTT_FOR_RATE);
    (mtu as f64 / rtt.as_secs_f64()) as u64
}

/// Growth per round of the loss-driven cap while competing, after a cut from `bw`: one
/// packet per min_rtt (Reno), or, if faster, the mean rate at which CUBIC wins back what
/// the same cut took. CUBIC regains it in `K = ∛(W_max·(1 − β)/C)` seconds whatever the
/// RTT (RFC 9438 §4.2), so on a long path it outgrows Reno many times over, and a flow
/// that grew like Reno beside it kept barely a third of the link at 200 ms. A round
/// lasts about `srtt`.
pub(super) fn cubic_like_step(
    bw: u64,
    min_rtt: Option<Duration>,
    srtt: Option<Duration>,
    mtu: u64,
) -> u64 {
    let reno = initial_step(min_rtt, mtu);
    let Some(srtt) = srtt.filter(|s| !s.is_zero()) else {
        return reno;
    };
    if bw == 0 || mtu == 0 {
        return reno;
    }
    let srtt = srtt.as_secs_f64();
    let w_max = bw as f64 * srtt / mtu as f64;
    let k = (w_max * (1.0 - CUBIC_BETA) / CUBIC_C).cbrt();
    let cubic = (1.0 - STANDING_QUEUE_BETA) * bw as f64 / k * srtt;
    // `as` saturates (and maps NaN to 0).
    reno.max(cubic as u64)
}

/// The queue seen in RTT samples, round by round, and the short-term bandwidth cap
/// it drives.
#[derive(Debug, Default)]
pub(super) struct StandingQueue {
    /// Minimum RTT sample of the current and the previous round: their excess over
    /// `min_rtt` is the standing queue.
    round_min_rtt: Option<Duration>,
    prev_round_min_rtt: Option<Duration>,
    /// Highest non-app-limited delivery rate sampled in the current round.
    round_max_bw: u64,
    /// The round that just ended had a standing queue throughout.
    prev_round_min_rtt_queued: bool,
    /// The previous round ended with a standing queue (reset after a cut).
    prev_round_queued: bool,
    /// Cuts since the queue last drained.
    unrelieved_cuts: u32,
    /// The queue outlived the cuts: a flow that does not yield to it shares the
    /// bottleneck, and this one stops cutting until the queue drains.
    competing: bool,
    /// Rounds since the last one that lost data to overflow.
    quiet_rounds: u32,
    /// The bandwidth before the first cut of a series (or of an earlier series, at most
    /// [`CUT_MEMORY_ROUNDS`] older at the later one's first cut), restored if the cuts
    /// prove futile.
    bw_before_cuts: u64,
    /// The round `bw_before_cuts` was taken in.
    bw_before_round: Option<u64>,
    /// Short-term bandwidth cap (v2's `bw_lo`, driven by the queue instead of loss): cut
    /// multiplicatively when a standing queue persists, raised by the same absolute,
    /// doubling steps for every flow. This AIMD is what makes flows that yield to the
    /// queue converge. While competing it is cut on overflow instead and grows by
    /// `competing_step` (see `cubic_like_step`).
    bw_lo: Option<u64>,
    bw_lo_step: u64,
    /// Growth per round of `bw_lo` while competing, set at each loss-driven cut.
    competing_step: u64,
}

impl StandingQueue {
    /// `bw` under the short-term cap.
    pub(super) fn cap(&self, bw: u64) -> u64 {
        bw.min(self.bw_lo.unwrap_or(u64::MAX))
    }

    /// Drops the short-term cap (Startup searches without it).
    pub(super) fn lift_cap(&mut self) {
        self.bw_lo = None;
    }

    /// True if the round that just ended had a standing queue throughout.
    pub(super) fn stood_last_round(&self) -> bool {
        self.prev_round_min_rtt_queued
    }

    /// Queueing delay of the lowest RTT sample of this and the previous round.
    fn recent_queue(&self, min_rtt: Duration) -> Option<Duration> {
        let recent = match (self.round_min_rtt, self.prev_round_min_rtt) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        Some(recent.saturating_sub(min_rtt))
    }

    /// True if no RTT sample of this or the previous round came within half the
    /// standing-queue threshold of min_rtt: the loss compensation overshoots. Reacting at
    /// half the threshold keeps this from escalating to a `bw_lo` cut.
    pub(super) fn standing(&self, min_rtt: Option<Duration>, bw: u64, mtu: u64) -> bool {
        let Some(min_rtt) = min_rtt else {
            return false;
        };
        self.recent_queue(min_rtt)
            .is_some_and(|q| q > threshold(min_rtt, bw, mtu) / 2)
    }

    /// Gain on the cruise rate: `min_rtt / (min_rtt + queue)` while a queue stands
    /// (half the threshold), which drains it in about a round trip; 1 otherwise.
    ///
    /// Jitter after the bottleneck inflates delivery-rate samples (an ACK that comes
    /// early shortens the interval), so a flow alone on the path can estimate a few
    /// percent above the link and build a queue at gain 1. Pacing below the link while
    /// that queue lasts costs nothing (the bottleneck stays busy) and keeps the queue
    /// from reaching the threshold, whose cut (to 0.7 x) costs about 7% of goodput.
    /// Flows that overshoot together still cut: the drain reacts to what one flow
    /// sees, and a probe by several outgrows it. While competing, a queue kept by a
    /// flow that does not yield is no reason to slow down.
    pub(super) fn drain_gain(&self, min_rtt: Option<Duration>, bw: u64, mtu: u64) -> f64 {
        let Some(min_rtt) = min_rtt else {
            return 1.0;
        };
        if self.competing || !self.standing(Some(min_rtt), bw, mtu) {
            return 1.0;
        }
        let queue = self.recent_queue(min_rtt).unwrap_or(Duration::ZERO);
        let gain = min_rtt.as_secs_f64() / min_rtt.saturating_add(queue).as_secs_f64();
        if gain.is_finite() {
            gain.clamp(MIN_DRAIN_GAIN, 1.0)
        } else {
            1.0
        }
    }

    /// An RTT sample taken while a min_rtt estimate exists.
    pub(super) fn on_rtt_sample(&mut self, rtt: Duration) {
        self.round_min_rtt = Some(self.round_min_rtt.map_or(rtt, |m| m.min(rtt)));
    }

    /// A delivery rate that was not app-limited.
    pub(super) fn on_delivery_rate(&mut self, rate: u64) {
        self.round_max_bw = self.round_max_bw.max(rate);
    }

    /// Each gain cycle restarts the additive growth of `bw_lo` at one packet per round
    /// trip, so the growth between cuts stays equal for every flow.
    pub(super) fn restart_growth(&mut self, min_rtt: Option<Duration>, mtu: u64) {
        self.bw_lo_step = initial_step(min_rtt, mtu);
    }

    /// Judges the round that just ended and starts the next one.
    /// `overflow`: the round lost data to a full buffer.
    pub(super) fn on_round_end(
        &mut self,
        in_probe_bw: bool,
        overflow: bool,
        model: &mut Model,
        mtu: u64,
    ) {
        let queued = self.stood_all_round(model.min_rtt, model.bw(), mtu);
        self.prev_round_min_rtt_queued = queued;
        if self.drained_this_round(model.min_rtt, model.bw(), mtu) {
            // The queue emptied: whoever shares the bottleneck yields to a standing queue
            // (or nobody does, and the queue was ours): cutting works.
            self.unrelieved_cuts = 0;
            self.competing = false;
        }
        self.update_bw_lo(queued, in_probe_bw, model, mtu);
        self.on_overflow(overflow, in_probe_bw, model, mtu);
        self.round_max_bw = 0;
        self.prev_round_min_rtt = self.round_min_rtt.take();
    }

    /// True if even the lowest RTT sample of the round just ended saw a standing queue.
    fn stood_all_round(&self, min_rtt: Option<Duration>, bw: u64, mtu: u64) -> bool {
        match (self.round_min_rtt, min_rtt) {
            (Some(rtt), Some(min_rtt)) => rtt.saturating_sub(min_rtt) > threshold(min_rtt, bw, mtu),
            _ => false,
        }
    }

    /// True if some RTT sample of the round just ended came within a quarter of the
    /// threshold of min_rtt: the queue emptied. Merely dipping below the threshold does
    /// not count: a loss-based flow's queue swings around it while never draining.
    fn drained_this_round(&self, min_rtt: Option<Duration>, bw: u64, mtu: u64) -> bool {
        match (self.round_min_rtt, min_rtt) {
            (Some(rtt), Some(min_rtt)) => {
                rtt.saturating_sub(min_rtt) <= drained_within(min_rtt, bw, mtu)
            }
            _ => false,
        }
    }

    /// True while the flow shares the bottleneck with one that does not yield to the queue
    /// (a loss-based flow, or BBRv1): cutting on the queue would only hand it our share.
    pub(super) fn competing(&self) -> bool {
        self.competing
    }

    /// While competing, the shared signal is loss: a flow that fills the buffer backs off
    /// when it overflows, and so does this one, by the same factor, once per congestion
    /// episode (the first lossy round after [`QUIET_ROUNDS`] without). Losses in every
    /// round come from a flow that ignores them (BBRv1); yielding to those would only
    /// hand it the link, as cutting on its queue did.
    fn on_overflow(&mut self, overflow: bool, in_probe_bw: bool, model: &Model, mtu: u64) {
        if !overflow {
            self.quiet_rounds = self.quiet_rounds.saturating_add(1);
            return;
        }
        if self.competing && in_probe_bw && self.quiet_rounds >= QUIET_ROUNDS {
            let floor = initial_step(model.min_rtt, mtu).saturating_mul(MIN_CWND_PACKETS);
            let bw = self.cap(model.bw());
            self.bw_lo = Some(((bw as f64 * STANDING_QUEUE_BETA) as u64).max(floor));
            self.competing_step = cubic_like_step(bw, model.min_rtt, model.smoothed_rtt, mtu);
        }
        self.quiet_rounds = 0;
    }

    /// Short-term AIMD on the standing queue, judged once per round in ProbeBW.
    fn update_bw_lo(&mut self, queued: bool, in_probe_bw: bool, model: &mut Model, mtu: u64) {
        if !in_probe_bw {
            self.prev_round_queued = false;
            return;
        }
        if self.competing {
            // Additive increase of the loss-driven cap, as the loss-based flow beside us
            // grows back (`competing_step`), until the cap no longer binds.
            if let Some(lo) = self.bw_lo {
                let step = self.competing_step.max(initial_step(model.min_rtt, mtu));
                let lo = lo.saturating_add(step);
                self.bw_lo = (lo < model.bw()).then_some(lo);
            }
            return;
        }
        if queued && self.prev_round_queued && self.unrelieved_cuts >= MAX_UNRELIEVED_CUTS {
            // The queue outlived repeated cuts without ever draining: the flows we share
            // it with do not yield to it (loss-based TCP keeps the buffer full, BBRv1
            // keeps two BDPs in flight). Further cuts would starve this flow, so it stops
            // cutting on the queue until it drains again, and undoes the futile cuts (as
            // TCP undoes a window reduction that proved spurious). A path whose RTT grew
            // looks the same; the min-RTT window (ProbeRTT) re-measures it.
            self.competing = true;
            self.bw_lo = None;
            model.restart_bw(model.bw().max(self.bw_before_cuts));
            self.prev_round_queued = false;
            return;
        }
        if queued && self.prev_round_queued {
            // Competing flows together exceed the bottleneck: everyone backs off in
            // proportion to its rate, then needs two fresh rounds before the next cut.
            let model_bw = self.cap(model.bw());
            if self.unrelieved_cuts == 0 {
                // A drain between two series of cuts (a competitor's own drain after its
                // start-up, say) does not make the bandwidth the earlier cuts left the new
                // reference: futile cuts are undone to the rate before all of them, as long
                // as the max filter would still hold it.
                let round = model.round_count;
                let recent = self
                    .bw_before_round
                    .is_some_and(|r| round.saturating_sub(r) <= CUT_MEMORY_ROUNDS);
                if recent {
                    self.bw_before_cuts = self.bw_before_cuts.max(model_bw);
                } else {
                    self.bw_before_cuts = model_bw;
                    self.bw_before_round = Some(round);
                }
            }
            self.unrelieved_cuts = self.unrelieved_cuts.saturating_add(1);
            let delivered = if self.round_max_bw > 0 {
                self.round_max_bw.min(model_bw)
            } else {
                model_bw
            };
            let floor = initial_step(model.min_rtt, mtu).saturating_mul(MIN_CWND_PACKETS);
            let cut = ((delivered as f64 * STANDING_QUEUE_BETA) as u64).max(floor);
            self.bw_lo = Some(cut);
            // Older maxima encode the old, unfair shares; forget them, or the flows return
            // to those shares as soon as the cap is lifted.
            model.restart_bw(delivered);
            self.bw_lo_step = initial_step(model.min_rtt, mtu);
            self.prev_round_queued = false;
            return;
        }
        self.prev_round_queued = queued;
        if queued {
            self.bw_lo_step = initial_step(model.min_rtt, mtu);
        } else if let Some(lo) = self.bw_lo {
            // Grow by absolute steps, equal for all flows, and keep the cap while sharing:
            // probe samples inflate the max filter in proportion to a flow's rate, so
            // handing control back to it would undo the convergence.
            let lo = lo.saturating_add(self.bw_lo_step);
            self.bw_lo_step = self.bw_lo_step.saturating_mul(2);
            self.bw_lo = (lo < model.bw().saturating_mul(2)).then_some(lo);
        }
    }

    /// Persistent congestion: the queue history no longer applies.
    pub(super) fn reset(&mut self) {
        self.prev_round_queued = false;
        self.unrelieved_cuts = 0;
        self.bw_before_round = None;
        self.competing = false;
    }
}
