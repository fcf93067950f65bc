//! What losses do to BBR: no loss reaction in general (random loss must not reduce the
//! rate), but compensation for the random-loss rate, and a v2-style `inflight_hi` cap
//! after a round that loses more than it delivers.
//!
//! Delivery-rate samples count delivered bytes only, so with random loss p the sender
//! would pace at the goodput and leave a fraction p of the link idle. p is measured over
//! packets sent while pacing *below* the estimate (Drain and the 0.75 phase), where our
//! own overflow cannot cause drops, skipping losses seen with a long or near-full queue;
//! the send rate is scaled by 1 / (1 - p), capped at p = 0.3.

use std::time::{Duration, Instant};

use super::model::MaxFilter;
use super::queue::{self, MIN_QUEUE_THRESHOLD};
use crate::congestion::LossSample;

/// Queue-delay max filter window, in rounds.
const QUEUE_FILTER_ROUNDS: u64 = 10;
/// A loss seen while the queue is within this fraction of its recent maximum is taken as a
/// drop-tail overflow (shallow buffers never reach the standing-queue threshold)...
const FULL_QUEUE_FRACTION: f64 = 0.75;
/// ...provided that maximum exceeds min_rtt / this, i.e. there is a real queue at all.
const FULL_QUEUE_MIN_DIVISOR: u32 = 16;
/// Upper bound on the random-loss rate that is compensated for.
const MAX_LOSS_COMPENSATION: f64 = 0.3;
/// Weight kept by the loss estimate per finished measurement window.
const LOSS_HISTORY_WEIGHT: f64 = 0.75;
/// Bytes (in packets) a loss estimate needs before it is trusted.
const LOSS_MIN_SAMPLE_PACKETS: u64 = 16;
/// Measurement windows kept while their losses are still being detected.
const LOSS_MAX_WINDOWS: usize = 8;
/// A round is "heavy loss" if more is lost than delivered and at least this many packets...
const HEAVY_LOSS_MIN_PACKETS: u64 = 8;
/// ...and more than random loss at [`MAX_LOSS_COMPENSATION`] loses in all but one round
/// in thirty thousand (four standard deviations above its mean).
const HEAVY_LOSS_SIGMAS: f64 = 4.0;
/// A round that loses this fraction of its data to overflow (v2's loss threshold) and
/// at least a few packets is a congestion episode...
const OVERFLOW_LOSS_RATE: f64 = 0.02;
const OVERFLOW_MIN_PACKETS: u64 = 2;
/// Rounds an `inflight_hi` cap lasts.
const INFLIGHT_HI_ROUNDS: u64 = 10;

/// Bytes sent and lost over one period of pacing below the bandwidth estimate.
#[derive(Debug, Clone, Copy)]
struct LossWindow {
    start: Instant,
    end: Option<Instant>,
    sent: u64,
    lost: u64,
}

impl LossWindow {
    fn contains(&self, sent: Instant) -> bool {
        match self.end {
            Some(end) => self.start <= sent && sent < end,
            None => self.start <= sent,
        }
    }
}

/// Estimates the random (non-congestive) loss rate from packets sent while the queue was
/// draining, where the sender's own overload cannot cause drops.
#[derive(Debug, Default)]
pub(super) struct RandomLoss {
    /// Open and recently closed windows whose losses may still be reported.
    windows: Vec<LossWindow>,
    /// Exponentially weighted sums over finished windows.
    sent: f64,
    lost: f64,
}

impl RandomLoss {
    /// Opens or closes the measurement window as the pacing gain crosses 1.0.
    fn sync(&mut self, now: Instant, draining: bool) {
        let open = self.windows.last().is_some_and(|w| w.end.is_none());
        if draining && !open {
            if self.windows.len() >= LOSS_MAX_WINDOWS {
                let oldest = self.windows.remove(0);
                self.fold(oldest);
            }
            self.windows.push(LossWindow {
                start: now,
                end: None,
                sent: 0,
                lost: 0,
            });
        } else if !draining && open {
            if let Some(w) = self.windows.last_mut() {
                w.end = Some(now);
            }
        }
    }

    fn on_sent(&mut self, bytes: u64) {
        if let Some(w) = self.windows.last_mut().filter(|w| w.end.is_none()) {
            w.sent = w.sent.saturating_add(bytes);
        }
    }

    fn on_loss(&mut self, sent: Instant, bytes: u64) {
        let window = self.windows.iter_mut().find(|w| w.contains(sent));
        if let Some(w) = window {
            w.lost = w.lost.saturating_add(bytes);
        }
    }

    /// Packets counted as lost were acknowledged after all: take them out again.
    fn on_spurious(&mut self, sent: Instant, bytes: u64) {
        let window = self.windows.iter_mut().find(|w| w.contains(sent));
        if let Some(w) = window {
            w.lost = w.lost.saturating_sub(bytes);
        }
    }

    /// Folds closed windows into the estimate once their losses must have been detected.
    fn finish(&mut self, now: Instant, rtt: Duration) {
        let grace = rtt.saturating_mul(2);
        while let Some(w) = self.windows.first().copied() {
            match w.end {
                Some(end) if now.saturating_duration_since(end) >= grace => {
                    self.windows.remove(0);
                    self.fold(w);
                }
                _ => break,
            }
        }
    }

    fn fold(&mut self, w: LossWindow) {
        let lost = w.lost.min(w.sent);
        self.sent = self.sent * LOSS_HISTORY_WEIGHT + w.sent as f64;
        self.lost = self.lost * LOSS_HISTORY_WEIGHT + lost as f64;
    }

    /// Estimated random loss rate in [0, MAX_LOSS_COMPENSATION].
    pub(super) fn rate(&self, mtu: u64) -> f64 {
        if self.sent < (mtu * LOSS_MIN_SAMPLE_PACKETS) as f64 || self.sent <= 0.0 {
            return 0.0;
        }
        let p = self.lost / self.sent;
        if p.is_finite() {
            p.clamp(0.0, MAX_LOSS_COMPENSATION)
        } else {
            0.0
        }
    }
}

/// Loss state: the random-loss estimate, what tells random loss from overflow, and the
/// heavy-loss cap.
#[derive(Debug, Default)]
pub(super) struct Loss {
    pub(super) random: RandomLoss,
    /// Most recent RTT sample: the queue a loss detected now was likely dropped from.
    last_rtt: Option<Duration>,
    /// Max filter over queueing delay (ns), windowed in rounds: the bottleneck buffer depth.
    queue_filter: MaxFilter,
    /// Bytes lost and acknowledged in the current round.
    round_lost: u64,
    round_acked: u64,
    /// Bytes lost in the current round that look like a drop-tail overflow.
    round_overflow: u64,
    /// v2-style cap on bytes in flight after a round with heavy loss, and its expiry round.
    inflight_hi: Option<u64>,
    inflight_hi_until: u64,
}

impl Loss {
    /// Rate the path accepts sent bytes at, given the delivery rate `bw`: scaled up for
    /// random loss unless a standing queue shows that the scaled rate already exceeds the
    /// bottleneck.
    pub(super) fn send_bw(&self, bw: u64, mtu: u64, standing_queue: bool) -> f64 {
        let bw = bw as f64;
        if standing_queue {
            // Overshooting: the max filter of noisy lossy samples overestimates the goodput
            // a little. Pace at the uncompensated estimate, below the link rate by about
            // p, until the queue is gone (plain v1 when p = 0).
            return bw;
        }
        bw / (1.0 - self.random.rate(mtu))
    }

    /// True if the latest RTT sample shows a long queue, or one near the deepest queue seen
    /// lately: a loss detected now is then more likely an overflow than random loss.
    fn looks_congestive(&self, min_rtt: Option<Duration>, bw: u64, mtu: u64) -> bool {
        let (Some(rtt), Some(min_rtt)) = (self.last_rtt, min_rtt) else {
            return false;
        };
        let queue = rtt.saturating_sub(min_rtt);
        if queue > queue::threshold(min_rtt, bw, mtu).saturating_mul(2) {
            return true;
        }
        let deepest = Duration::from_nanos(self.queue_filter.get());
        deepest > (min_rtt / FULL_QUEUE_MIN_DIVISOR).max(MIN_QUEUE_THRESHOLD)
            && queue.as_secs_f64() >= deepest.as_secs_f64() * FULL_QUEUE_FRACTION
    }

    /// A packet of `bytes` was sent; `draining` while pacing below the estimate.
    pub(super) fn on_sent(&mut self, now: Instant, draining: bool, bytes: u64) {
        self.random.sync(now, draining);
        self.random.on_sent(bytes);
    }

    pub(super) fn on_acked(&mut self, bytes: u64) {
        self.round_acked = self.round_acked.saturating_add(bytes);
    }

    /// An RTT sample taken while a min_rtt estimate exists, in round `round`.
    pub(super) fn on_rtt_sample(&mut self, round: u64, rtt: Duration, min_rtt: Duration) {
        self.last_rtt = Some(rtt);
        let queue = u64::try_from(rtt.saturating_sub(min_rtt).as_nanos()).unwrap_or(u64::MAX);
        self.queue_filter.update(round, queue, QUEUE_FILTER_ROUNDS);
    }

    /// Packets were declared lost; those that do not look like an overflow count as
    /// random loss.
    pub(super) fn on_loss(
        &mut self,
        loss: &LossSample,
        min_rtt: Option<Duration>,
        bw: u64,
        mtu: u64,
    ) {
        self.round_lost = self.round_lost.saturating_add(loss.lost_bytes);
        if self.looks_congestive(min_rtt, bw, mtu) {
            self.round_overflow = self.round_overflow.saturating_add(loss.lost_bytes);
        } else {
            self.random.on_loss(loss.largest_lost_sent, loss.lost_bytes);
        }
    }

    /// Packets declared lost were only reordered: they count neither as random loss
    /// nor toward a heavy-loss round.
    pub(super) fn on_spurious(&mut self, loss: &LossSample) {
        self.round_lost = self.round_lost.saturating_sub(loss.lost_bytes);
        self.round_overflow = self.round_overflow.saturating_sub(loss.lost_bytes);
        self.random
            .on_spurious(loss.largest_lost_sent, loss.lost_bytes);
    }

    /// End of an ACK: opens or closes the measurement window and folds in the windows
    /// whose losses must have been detected by now (two `rtt`s after they closed).
    pub(super) fn after_ack(&mut self, now: Instant, draining: bool, rtt: Duration) {
        self.random.sync(now, draining);
        self.random.finish(now, rtt);
    }

    /// True if the round just ended lost more than it delivered, and not just a few
    /// packets: not random loss at any plausible rate. A small round needs more: with
    /// random loss at the compensated maximum (30%), a round of 20 packets loses more
    /// than half of them once in sixty, so a flow starting on such a path would take
    /// one of its first rounds for an overflow, end Startup at a fraction of the link
    /// and cap itself there. The round must also lose more than that rate could, by
    /// [`HEAVY_LOSS_SIGMAS`] standard deviations.
    pub(super) fn heavy_round(&self, mtu: u64) -> bool {
        let mtu = mtu.max(1);
        let lost = self.round_lost as f64 / mtu as f64;
        let n = lost + self.round_acked as f64 / mtu as f64;
        let p = MAX_LOSS_COMPENSATION;
        let random_at_most = n * p + HEAVY_LOSS_SIGMAS * (n * p * (1.0 - p)).sqrt();
        self.round_lost > self.round_acked
            && self.round_lost >= mtu.saturating_mul(HEAVY_LOSS_MIN_PACKETS)
            && lost > random_at_most
    }

    /// True if the round just ended lost at least [`OVERFLOW_LOSS_RATE`] of its data, and
    /// a few packets, to what looks like a full drop-tail buffer.
    pub(super) fn overflow_round(&self, mtu: u64) -> bool {
        let total = self.round_acked.saturating_add(self.round_lost) as f64;
        self.round_overflow >= mtu.saturating_mul(OVERFLOW_MIN_PACKETS)
            && self.round_overflow as f64 >= total * OVERFLOW_LOSS_RATE
    }

    /// Caps bytes in flight at `cap` for the rounds after `round`.
    pub(super) fn cap_inflight(&mut self, cap: u64, round: u64) {
        self.inflight_hi = Some(cap);
        self.inflight_hi_until = round.saturating_add(INFLIGHT_HI_ROUNDS);
    }

    /// Lifts the heavy-loss cap once it is due to expire in `round`.
    pub(super) fn expire_cap(&mut self, round: u64) {
        if self.inflight_hi.is_some() && round >= self.inflight_hi_until {
            self.inflight_hi = None;
        }
    }

    /// Drops the heavy-loss cap (a flow that competes answers overflow otherwise).
    pub(super) fn lift_cap(&mut self) {
        self.inflight_hi = None;
    }

    /// The heavy-loss cap on bytes in flight, if one holds.
    pub(super) fn inflight_cap(&self) -> Option<u64> {
        self.inflight_hi
    }

    /// Starts counting the next round's losses.
    pub(super) fn end_round(&mut self) {
        self.round_lost = 0;
        self.round_acked = 0;
        self.round_overflow = 0;
    }

    /// Persistent congestion: forgets the cap and the random-loss estimate.
    pub(super) fn reset(&mut self) {
        self.inflight_hi = None;
        self.random = RandomLoss::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One measurement window with `lost` of `sent` bytes lost, and `spurious` of those
    /// acknowledged after all; returns the estimated random loss rate.
    fn estimate(sent: u64, lost: u64, spurious: u64) -> f64 {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = RandomLoss::default();
        r.sync(t0, true);
        r.on_sent(sent);
        r.on_loss(t0 + ms(1), lost);
        r.on_spurious(t0 + ms(1), spurious);
        r.sync(t0 + ms(10), false);
        r.finish(t0 + ms(1000), ms(10));
        r.rate(1200)
    }

    /// A round with `lost` and `acked` packets of 1200 bytes.
    fn round(lost: u64, acked: u64) -> Loss {
        Loss {
            round_lost: lost * 1200,
            round_acked: acked * 1200,
            ..Loss::default()
        }
    }

    #[test]
    fn a_heavy_round_is_more_loss_than_thirty_percent_random_loss_explains() {
        // 11 of 20 lost: more than delivered, but 30% random loss does that once in
        // sixty rounds.
        assert!(!round(11, 9).heavy_round(1200));
        // 16 of 20: over four standard deviations above 30%.
        assert!(round(16, 4).heavy_round(1200));
        // Large rounds: more lost than delivered is enough.
        assert!(round(520, 480).heavy_round(1200));
        assert!(!round(480, 520).heavy_round(1200));
        // A few packets are never heavy.
        assert!(!round(7, 0).heavy_round(1200));
    }

    #[test]
    fn spurious_losses_leave_the_random_loss_estimate() {
        let sent = 10_000_000;
        assert!((estimate(sent, 500_000, 0) - 0.05).abs() < 1e-9);
        assert!((estimate(sent, 500_000, 200_000) - 0.03).abs() < 1e-9);
        assert_eq!(estimate(sent, 500_000, 500_000), 0.0);
    }
}
