//! Packet pacing: a token bucket that spaces packets out at the controller's rate.
//!
//! Sending a whole congestion window back to back would overflow shallow bottleneck
//! queues; pacing spreads it over the RTT. A small burst allowance (about ten packets, or
//! 2 ms worth at high rates) keeps batched sends (GSO, sendmmsg) efficient.
//!
//! Tokens are kept in byte-nanoseconds (bytes × 10⁹) so that refilling is exact integer
//! arithmetic: the schedule is deterministic and does not drift however often it is polled.

use std::time::{Duration, Instant};

/// Nanoseconds per second, the scale of the token counter.
const NANOS_PER_SEC: u128 = 1_000_000_000;
/// Burst allowance in packets.
const BURST_PACKETS: u64 = 10;
/// Burst allowance in time at the pacing rate, for rates where ten packets are too few.
const BURST_INTERVAL: Duration = Duration::from_millis(2);
/// RFC 9002 §7.7: pace at 1.25 × window / smoothed_rtt when the controller gives no rate.
const WINDOW_RATE_GAIN_NUM: u128 = 5;
const WINDOW_RATE_GAIN_DEN: u128 = 4;
/// Floor for the RTT used to derive rates, so that a zero RTT does not divide by zero.
const MIN_RTT_FOR_RATE: Duration = Duration::from_millis(1);

/// Token-bucket pacer.
#[derive(Debug)]
pub struct Pacer {
    /// Packet size used for the burst allowance and the minimum rate.
    mtu: u64,
    /// Available tokens, in byte-nanoseconds.
    tokens: u128,
    /// Bucket size in bytes.
    capacity: u64,
    /// Rate (bytes/s) the bucket refills at since `last`.
    rate: u64,
    /// Time of the last refill.
    last: Instant,
    /// A ceiling on the rate (bytes/s) set by the application, whatever the controller
    /// says: a sender that shares its link with others may keep below a set rate.
    max_rate: Option<u64>,
}

impl Pacer {
    /// Creates a pacer for packets of at most `mtu` bytes, starting with a full burst.
    pub fn new(mtu: u16, now: Instant) -> Self {
        let mtu = u64::from(mtu.max(1));
        let capacity = mtu.saturating_mul(BURST_PACKETS);
        Self {
            mtu,
            tokens: u128::from(capacity) * NANOS_PER_SEC,
            capacity,
            rate: 0,
            last: now,
            max_rate: None,
        }
    }

    /// The path's datagram size changed: the burst allowance and the minimum rate
    /// follow it.
    pub fn set_mtu(&mut self, mtu: u16) {
        self.mtu = u64::from(mtu.max(1));
    }

    /// Caps the pacing rate at `max` bytes per second (`None`: no cap).
    pub fn with_max_rate(mut self, max: Option<u64>) -> Self {
        self.max_rate = max.map(|m| m.max(1));
        self
    }

    /// When the next packet of `size` bytes may leave, or None if it may leave now.
    ///
    /// `rate` is the controller's pacing rate (bytes/s) or None to derive one as
    /// 1.25 × window / smoothed_rtt (RFC 9002 §7.7). The rate is never below one packet per
    /// smoothed RTT (with the RTT floored at 1 ms), so a zero rate cannot stall the sender.
    pub fn delay(
        &mut self,
        now: Instant,
        size: u64,
        rate: Option<u64>,
        window: u64,
        smoothed_rtt: Duration,
    ) -> Option<Instant> {
        // Tokens accrued so far were earned at the previous rate.
        self.refill(now);
        let rate = self.effective_rate(rate, window, smoothed_rtt);
        self.rate = rate;
        let burst = u64::try_from(u128::from(rate) * BURST_INTERVAL.as_nanos() / NANOS_PER_SEC)
            .unwrap_or(u64::MAX);
        self.capacity = self.mtu.saturating_mul(BURST_PACKETS).max(burst);
        let cap_tokens = u128::from(self.capacity) * NANOS_PER_SEC;
        self.tokens = self.tokens.min(cap_tokens);

        // A packet larger than the bucket only needs a full bucket, or it would wait forever.
        let needed = u128::from(size.min(self.capacity)) * NANOS_PER_SEC;
        if self.tokens >= needed {
            return None;
        }
        let missing = needed - self.tokens;
        // `rate` is at least 1, and rounding up guarantees the bucket suffices at that time.
        let wait_ns = missing.div_ceil(u128::from(rate));
        let wait = Duration::from_nanos(u64::try_from(wait_ns).unwrap_or(u64::MAX));
        // An unrepresentable instant only arises from absurd inputs; fall back to "now".
        Some(now.checked_add(wait).unwrap_or(now))
    }

    /// Account a sent packet.
    pub fn on_sent(&mut self, now: Instant, size: u64) {
        self.refill(now);
        self.tokens = self.tokens.saturating_sub(u128::from(size) * NANOS_PER_SEC);
    }

    /// Adds the tokens earned since the last refill at the current rate.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        self.last = self.last.max(now);
        let cap_tokens = u128::from(self.capacity) * NANOS_PER_SEC;
        self.tokens = self
            .tokens
            .saturating_add(elapsed.saturating_mul(u128::from(self.rate)))
            .min(cap_tokens);
    }

    /// The rate to pace at: the controller's, or one derived from the window, never below
    /// one packet per smoothed RTT and never zero.
    fn effective_rate(&self, rate: Option<u64>, window: u64, smoothed_rtt: Duration) -> u64 {
        let rtt_ns = smoothed_rtt.max(MIN_RTT_FOR_RATE).as_nanos();
        let min_rate = (u128::from(self.mtu) * NANOS_PER_SEC / rtt_ns).max(1);
        let rate = match rate {
            Some(r) => u128::from(r),
            None => {
                u128::from(window) * WINDOW_RATE_GAIN_NUM * NANOS_PER_SEC
                    / (WINDOW_RATE_GAIN_DEN * rtt_ns)
            }
        };
        let rate = u64::try_from(rate.max(min_rate)).unwrap_or(u64::MAX);
        match self.max_rate {
            Some(max) => rate.min(max),
            None => rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_rate_caps_whatever_the_controller_says() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(MTU, t0).with_max_rate(Some(1_000_000));
        let mut now = t0;
        let mut sent = 0u64;
        while now < t0 + Duration::from_secs(1) {
            match pacer.delay(
                now,
                u64::from(MTU),
                Some(100_000_000),
                1 << 30,
                Duration::from_millis(10),
            ) {
                None => {
                    pacer.on_sent(now, u64::from(MTU));
                    sent += u64::from(MTU);
                }
                Some(t) => now = t,
            }
        }
        // One second at 1 MB/s, plus the burst allowance at the start.
        assert!(
            sent <= 1_000_000 + 10 * u64::from(MTU) + u64::from(MTU),
            "{sent}"
        );
        assert!(sent >= 990_000, "{sent}");
    }

    const MTU: u16 = 1200;

    /// Sends MTU-sized packets as fast as the pacer allows for `span` of virtual time and
    /// returns how many left.
    fn count_sent(rate: Option<u64>, window: u64, rtt: Duration, span: Duration) -> u64 {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(MTU, t0);
        let mut now = t0;
        let mut sent = 0;
        while now < t0 + span {
            match pacer.delay(now, u64::from(MTU), rate, window, rtt) {
                None => {
                    pacer.on_sent(now, u64::from(MTU));
                    sent += 1;
                }
                Some(at) => {
                    assert!(at > now, "a delay must lie in the future");
                    now = at;
                }
            }
        }
        sent
    }

    fn assert_within(actual: u64, expected: u64, tolerance: f64) {
        let err = (actual as f64 - expected as f64).abs() / expected as f64;
        assert!(err <= tolerance, "{actual} vs {expected}: error {err}");
    }

    #[test]
    fn spaces_packets_at_given_rate() {
        let second = Duration::from_secs(1);
        // 1000, 10 000 and 100 000 packets per second.
        for pps in [1_000u64, 10_000, 100_000] {
            let rate = pps * u64::from(MTU);
            let sent = count_sent(Some(rate), u64::MAX, Duration::from_millis(50), second);
            assert_within(sent, pps, 0.02);
        }
    }

    #[test]
    fn derives_rate_from_window() {
        // 1.25 × 120 000 B / 100 ms = 1.5 MB/s = 1250 packets/s.
        let sent = count_sent(
            None,
            120_000,
            Duration::from_millis(100),
            Duration::from_secs(1),
        );
        assert_within(sent, 1250, 0.02);
    }

    #[test]
    fn allows_initial_burst_then_spaces() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(MTU, t0);
        let rate = Some(1_200_000); // one packet per millisecond
        for _ in 0..10 {
            assert_eq!(
                pacer.delay(t0, 1200, rate, 1 << 20, Duration::from_millis(10)),
                None
            );
            pacer.on_sent(t0, 1200);
        }
        let next = pacer.delay(t0, 1200, rate, 1 << 20, Duration::from_millis(10));
        assert_eq!(next, Some(t0 + Duration::from_millis(1)));
        assert_eq!(
            pacer.delay(
                next.unwrap(),
                1200,
                rate,
                1 << 20,
                Duration::from_millis(10)
            ),
            None
        );
    }

    #[test]
    fn burst_covers_two_ms_at_high_rates() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(MTU, t0);
        // 120 MB/s: 2 ms is 240 000 bytes = 200 packets. The bucket fills after idling.
        let rate = Some(120_000_000);
        pacer.delay(t0, 1200, rate, u64::MAX, Duration::from_millis(10));
        let later = t0 + Duration::from_secs(1);
        let mut burst = 0;
        while pacer
            .delay(later, 1200, rate, u64::MAX, Duration::from_millis(10))
            .is_none()
        {
            pacer.on_sent(later, 1200);
            burst += 1;
        }
        assert_eq!(burst, 200);
    }

    #[test]
    fn zero_rate_does_not_stall() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(MTU, t0);
        pacer.on_sent(t0, 12_000);
        let rtt = Duration::from_millis(100);
        let at = pacer
            .delay(t0, 1200, Some(0), 0, rtt)
            .expect("bucket is empty");
        // Minimum rate is one packet per smoothed RTT.
        assert_eq!(at, t0 + rtt);
        let at = pacer
            .delay(t0, 1200, None, 0, Duration::ZERO)
            .expect("bucket is empty");
        assert_eq!(at, t0 + Duration::from_millis(1));
    }

    #[test]
    fn oversized_packet_waits_for_full_bucket_only() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(MTU, t0);
        pacer.on_sent(t0, 12_000);
        let at = pacer.delay(t0, 1_000_000, Some(1_200_000), 0, Duration::from_millis(10));
        assert_eq!(at, Some(t0 + Duration::from_millis(10)));
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut pacer = Pacer::new(0, t0);
        pacer.on_sent(t0, u64::MAX);
        let _ = pacer.delay(t0, u64::MAX, Some(u64::MAX), u64::MAX, Duration::MAX);
        let _ = pacer.delay(
            t0 - Duration::from_secs(5),
            u64::MAX,
            Some(0),
            0,
            Duration::MAX,
        );
        let _ = pacer.delay(t0, 1, None, u64::MAX, Duration::ZERO);
        pacer.on_sent(t0 - Duration::from_secs(5), 1);
        let _ = pacer.delay(
            t0 + Duration::from_secs(1_000_000),
            1,
            Some(1),
            1,
            Duration::ZERO,
        );
    }
}
