//! The path model: packet-timed rounds, the bottleneck bandwidth (a windowed max of
//! delivery-rate samples), the round-trip propagation time (a windowed min of RTT
//! samples) and how far bursty ACKs run ahead of the bandwidth estimate.

use std::time::{Duration, Instant};

use crate::congestion::{AckSample, RateSample};

/// Bandwidth max-filter window, in rounds.
const BW_WINDOW_ROUNDS: u64 = 10;
/// Min-RTT filter window.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// Window of the ACK-aggregation max filter, in rounds.
const EXTRA_ACKED_ROUNDS: u64 = 10;

/// One sample of the windowed max filter.
#[derive(Debug, Clone, Copy, Default)]
struct FilterSample {
    round: u64,
    value: u64,
}

/// Windowed running max (Kathleen Nichols' algorithm, as in Linux `lib/minmax.c`): keeps
/// the best, second-best and third-best samples so that the max can expire in O(1).
/// Samples expire relative to the newest sample, so the estimate is retained while no
/// samples are fed (e.g. only low app-limited samples).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct MaxFilter {
    s: [FilterSample; 3],
}

impl MaxFilter {
    pub(super) fn get(&self) -> u64 {
        self.s[0].value
    }

    pub(super) fn reset(&mut self, round: u64, value: u64) {
        self.s = [FilterSample { round, value }; 3];
    }

    pub(super) fn update(&mut self, round: u64, value: u64, window: u64) {
        let sample = FilterSample { round, value };
        if value >= self.s[0].value || round.saturating_sub(self.s[2].round) > window {
            self.reset(round, value);
            return;
        }
        if value >= self.s[1].value {
            self.s[1] = sample;
            self.s[2] = sample;
        } else if value >= self.s[2].value {
            self.s[2] = sample;
        }
        let dt = round.saturating_sub(self.s[0].round);
        if dt > window {
            self.s[0] = self.s[1];
            self.s[1] = self.s[2];
            self.s[2] = sample;
            if round.saturating_sub(self.s[0].round) > window {
                self.s[0] = self.s[1];
                self.s[1] = self.s[2];
                self.s[2] = sample;
            }
        } else if self.s[1].round == self.s[0].round && dt > window / 4 {
            self.s[1] = sample;
            self.s[2] = sample;
        } else if self.s[2].round == self.s[1].round && dt > window / 2 {
            self.s[2] = sample;
        }
    }
}

/// What BBR knows about the path.
#[derive(Debug, Default)]
pub(super) struct Model {
    /// Max filter over delivery-rate samples (bytes/s), windowed in rounds.
    pub(super) bw_filter: MaxFilter,
    /// Packet-timed rounds elapsed.
    pub(super) round_count: u64,
    /// Connection delivered count that ends the current round.
    next_round_delivered: u64,
    /// True on the ACK that started a new round.
    pub(super) round_start: bool,
    /// Latest connection delivered count seen in a rate sample.
    conn_delivered: u64,
    /// Bytes acknowledged, from the ACK samples.
    pub(super) delivered: u64,
    /// Windowed min RTT and when it was last refreshed.
    pub(super) min_rtt: Option<Duration>,
    pub(super) min_rtt_stamp: Option<Instant>,
    /// Latest smoothed RTT from the session.
    pub(super) smoothed_rtt: Option<Duration>,
    /// Bytes acknowledged beyond what the bandwidth estimate explains (ACKs that
    /// arrive in bursts: delayed ACKs, receive batching), max-filtered over rounds; the
    /// window grows by it so the sender does not stall between bursts.
    pub(super) extra_acked: MaxFilter,
    /// Start of the current ACK-aggregation epoch and bytes acknowledged since.
    ack_epoch_start: Option<Instant>,
    ack_epoch_acked: u64,
}

impl Model {
    /// Estimated bottleneck bandwidth (bytes/s), before any short-term cap.
    pub(super) fn bw(&self) -> u64 {
        self.bw_filter.get()
    }

    /// Takes the RTT and byte counts of an ACK; clears the round-start flag.
    pub(super) fn on_ack(&mut self, ack: &AckSample) {
        if !ack.smoothed_rtt.is_zero() {
            self.smoothed_rtt = Some(ack.smoothed_rtt);
        }
        self.delivered = self.delivered.saturating_add(ack.acked_bytes);
        self.round_start = false;
    }

    /// Counts rounds with the sample's delivered count; true if a new round started.
    pub(super) fn on_rate_sample(&mut self, rs: &RateSample) -> bool {
        self.conn_delivered = rs.prior_delivered.saturating_add(rs.delivered);
        if rs.prior_delivered >= self.next_round_delivered {
            self.next_round_delivered = self.conn_delivered;
            self.round_count = self.round_count.saturating_add(1);
            self.round_start = true;
            return true;
        }
        false
    }

    /// Feeds a delivery rate to the max filter; app-limited samples only if they raise it.
    pub(super) fn update_bw(&mut self, delivery_rate: u64, app_limited: bool) {
        if !app_limited || delivery_rate >= self.bw_filter.get() {
            self.bw_filter
                .update(self.round_count, delivery_rate, BW_WINDOW_ROUNDS);
        }
    }

    /// Forgets older bandwidth maxima: the estimate restarts at `bw`.
    pub(super) fn restart_bw(&mut self, bw: u64) {
        self.bw_filter.reset(self.round_count, bw);
    }

    /// Ends the current round with the packets sent from now on.
    pub(super) fn restart_round(&mut self) {
        self.next_round_delivered = self.conn_delivered;
    }

    /// Feeds an RTT sample to the min filter; true if the estimate had expired (ProbeRTT
    /// is due).
    ///
    /// A sample within `queue_free` of min_rtt shows the path running without a queue
    /// of ours: it refreshes the estimate's time (the estimate keeps the lower value),
    /// so that no ProbeRTT cuts the window to re-measure what is being measured anyway.
    /// Equality alone is not enough on a real path: samples differ by tens of
    /// microseconds however empty the queue, so a flow that never queues (small
    /// messages on a long path) went into ProbeRTT every ten seconds, and the messages
    /// it held back took up to 90 ms longer at 200 ms RTT.
    pub(super) fn update_min_rtt(
        &mut self,
        now: Instant,
        rtt: Option<Duration>,
        queue_free: Duration,
    ) -> bool {
        let expired = self
            .min_rtt_stamp
            .is_some_and(|s| now.saturating_duration_since(s) > MIN_RTT_WINDOW);
        let Some(rtt) = rtt else {
            return expired;
        };
        match self.min_rtt {
            Some(min_rtt) if rtt > min_rtt => {
                if rtt <= min_rtt.saturating_add(queue_free) {
                    self.min_rtt_stamp = Some(now);
                    return false;
                }
                if expired {
                    self.min_rtt = Some(rtt);
                    self.min_rtt_stamp = Some(now);
                }
                expired
            }
            _ => {
                self.min_rtt = Some(rtt);
                self.min_rtt_stamp = Some(now);
                false
            }
        }
    }

    /// Tracks how far acknowledgments run ahead of `bw`, the bandwidth the sender works
    /// with; the allowance never exceeds `cwnd`.
    pub(super) fn update_ack_aggregation(&mut self, now: Instant, acked: u64, bw: u64, cwnd: u64) {
        if acked == 0 || self.bw_filter.get() == 0 {
            return;
        }
        let bw = bw as f64;
        let start = *self.ack_epoch_start.get_or_insert(now);
        let mut expected = bw * now.saturating_duration_since(start).as_secs_f64();
        if self.ack_epoch_acked as f64 <= expected {
            // ACKs fell behind the estimate: a new epoch starts here.
            self.ack_epoch_acked = 0;
            self.ack_epoch_start = Some(now);
            expected = 0.0;
        }
        self.ack_epoch_acked = self.ack_epoch_acked.saturating_add(acked);
        let extra = ((self.ack_epoch_acked as f64 - expected).max(0.0) as u64).min(cwnd);
        self.extra_acked
            .update(self.round_count, extra, EXTRA_ACKED_ROUNDS);
    }

    /// Persistent congestion: forgets the bandwidth and ACK-aggregation estimates (rounds
    /// and the min RTT stay).
    pub(super) fn reset(&mut self) {
        self.bw_filter = MaxFilter::default();
        self.extra_acked = MaxFilter::default();
        self.ack_epoch_start = None;
        self.ack_epoch_acked = 0;
    }
}
