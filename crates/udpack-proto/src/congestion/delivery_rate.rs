//! Delivery-rate estimation, following draft-cheng-iccrg-delivery-rate-estimation.
//!
//! Every in-flight packet carries a [`RateSnapshot`] of the connection's delivery state at
//! the moment it was sent. When it is acknowledged, the bytes delivered between that moment
//! and now, divided by the longer of the send and ACK intervals, give a [`RateSample`].
//! Taking the longer interval keeps ACK compression and send bursts from inflating the
//! estimate; BBR's bottleneck-bandwidth model is a max filter over these samples.

use std::time::{Duration, Instant};

/// Connection delivery state captured when a packet is sent; stored in the sent-packet record.
#[derive(Debug, Clone, Copy)]
pub struct RateSnapshot {
    /// Bytes delivered (acknowledged) on the connection when the packet was sent.
    pub delivered: u64,
    /// When `delivered` last changed before the packet was sent.
    pub delivered_time: Instant,
    /// Send time of the packet that started the current sampling flight.
    pub first_sent_time: Instant,
    /// True if the sender was application-limited when the packet was sent.
    pub is_app_limited: bool,
    /// When the packet was sent.
    pub sent_time: Instant,
    /// Size of the packet in bytes.
    pub size: u64,
}

/// One delivery-rate measurement, produced per ACK frame.
#[derive(Debug, Clone, Copy)]
pub struct RateSample {
    /// Delivery rate in bytes per second.
    pub delivery_rate: u64,
    /// True if the sampled packet was sent while application-limited: the rate may then
    /// understate the path capacity.
    pub is_app_limited: bool,
    /// Interval over which the rate was measured.
    pub interval: Duration,
    /// Bytes delivered in the interval.
    pub delivered: u64,
    /// Connection delivered count when the sampled packet was sent (BBR counts rounds with it).
    pub prior_delivered: u64,
    /// RTT of the sampled packet.
    pub rtt: Duration,
}

/// Sample under construction while the packets of one ACK frame are processed.
#[derive(Debug, Clone, Copy)]
struct Pending {
    prior_delivered: u64,
    is_app_limited: bool,
    send_elapsed: Duration,
    ack_elapsed: Duration,
    rtt: Duration,
    sent_time: Instant,
}

/// Connection-wide delivery-rate estimator.
#[derive(Debug)]
pub struct DeliveryRate {
    /// Total bytes acknowledged.
    delivered: u64,
    /// When `delivered` last changed (or the connection became busy after idle).
    delivered_time: Instant,
    /// Send time of the most recent packet whose ACK produced a sample.
    first_sent_time: Instant,
    /// Non-zero while app-limited: the `delivered` value at which the "bubble" is gone.
    app_limited: u64,
    /// Sample being built from the current ACK frame.
    pending: Option<Pending>,
    /// Most recently produced rate, for stats.
    latest_rate: u64,
}

impl DeliveryRate {
    /// Creates an estimator for a connection starting at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            delivered: 0,
            delivered_time: now,
            first_sent_time: now,
            app_limited: 0,
            pending: None,
            latest_rate: 0,
        }
    }

    /// Called for every in-flight packet sent; `bytes_in_flight` is before this packet.
    /// Store the snapshot in the sent-packet record.
    pub fn on_sent(&mut self, now: Instant, bytes: u64, bytes_in_flight: u64) -> RateSnapshot {
        if bytes_in_flight == 0 {
            // Restarting from idle: the idle time must not count as a sending interval.
            self.first_sent_time = now;
            self.delivered_time = now;
        }
        RateSnapshot {
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent_time: self.first_sent_time,
            is_app_limited: self.app_limited != 0,
            sent_time: now,
            size: bytes,
        }
    }

    /// Called for each newly acknowledged packet of one ACK frame.
    pub fn on_acked(&mut self, now: Instant, packet: &RateSnapshot) {
        self.delivered = self.delivered.saturating_add(packet.size);
        // Never move backwards, even if the caller's clock does.
        self.delivered_time = self.delivered_time.max(now);
        // The most recently sent packet (largest `delivered`, then latest send) drives the
        // sample: it spans the freshest flight.
        let newest = match &self.pending {
            None => true,
            Some(p) => {
                packet.delivered > p.prior_delivered
                    || (packet.delivered == p.prior_delivered && packet.sent_time >= p.sent_time)
            }
        };
        if newest {
            self.pending = Some(Pending {
                prior_delivered: packet.delivered,
                is_app_limited: packet.is_app_limited,
                send_elapsed: packet
                    .sent_time
                    .saturating_duration_since(packet.first_sent_time),
                ack_elapsed: self
                    .delivered_time
                    .saturating_duration_since(packet.delivered_time),
                rtt: now.saturating_duration_since(packet.sent_time),
                sent_time: packet.sent_time,
            });
            // The next flight's send interval starts at this packet.
            self.first_sent_time = packet.sent_time;
        }
    }

    /// Called once after all packets of an ACK frame were passed to [`Self::on_acked`].
    ///
    /// Returns the sample driven by the packet with the largest `delivered`, or `None` if
    /// no packet was acknowledged, nothing was delivered, the interval is zero, or the
    /// interval is shorter than `min_rtt` (the draft's rule: such a sample is implausible,
    /// e.g. after a spurious retransmission, and would overestimate the rate).
    pub fn take_sample(&mut self, min_rtt: Option<Duration>) -> Option<RateSample> {
        // The app-limited bubble is gone once everything sent during it is delivered.
        if self.app_limited != 0 && self.delivered > self.app_limited {
            self.app_limited = 0;
        }
        let p = self.pending.take()?;
        let interval = p.send_elapsed.max(p.ack_elapsed);
        let delivered = self.delivered.saturating_sub(p.prior_delivered);
        if interval.is_zero() || delivered == 0 {
            return None;
        }
        if min_rtt.is_some_and(|m| interval < m) {
            return None;
        }
        let rate = u128::from(delivered).saturating_mul(1_000_000_000) / interval.as_nanos();
        let delivery_rate = u64::try_from(rate).unwrap_or(u64::MAX);
        self.latest_rate = delivery_rate;
        Some(RateSample {
            delivery_rate,
            is_app_limited: p.is_app_limited,
            interval,
            delivered,
            prior_delivered: p.prior_delivered,
            rtt: p.rtt,
        })
    }

    /// The sender is application-limited (nothing to send, window open): packets sent until
    /// everything now in flight is delivered produce app-limited samples.
    pub fn on_app_limited(&mut self, bytes_in_flight: u64) {
        self.app_limited = self.delivered.saturating_add(bytes_in_flight).max(1);
    }

    #[cfg(test)]
    /// Total bytes acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Most recent sampled rate (bytes/s) for stats.
    pub fn latest_rate(&self) -> u64 {
        self.latest_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Sends one 1200-byte packet every millisecond over a path with a fixed 50 ms RTT,
    /// acknowledging each packet individually, and returns the samples produced.
    fn steady_clock(packets: u64) -> Vec<Option<RateSample>> {
        let t0 = Instant::now();
        let rtt = 50 * MS;
        let mut dr = DeliveryRate::new(t0);
        let mut in_flight: std::collections::VecDeque<RateSnapshot> = Default::default();
        let mut bytes_in_flight = 0;
        let mut samples = Vec::new();
        for i in 0..packets {
            let now = t0 + i as u32 * MS;
            // ACKs due at this instant arrive before the next send.
            while in_flight.front().is_some_and(|p| p.sent_time + rtt <= now) {
                let p = in_flight.pop_front().unwrap();
                dr.on_acked(now, &p);
                bytes_in_flight -= p.size;
                samples.push(dr.take_sample(Some(rtt)));
            }
            let snap = dr.on_sent(now, 1200, bytes_in_flight);
            bytes_in_flight += 1200;
            in_flight.push_back(snap);
        }
        samples
    }

    #[test]
    fn steady_ack_clock_measures_true_rate() {
        let samples = steady_clock(500);
        // After the first flight the sample equals 1200 B/ms = 1.2 MB/s exactly.
        let steady: Vec<_> = samples.iter().skip(60).collect();
        assert!(steady.len() > 300);
        for s in steady {
            let s = s.expect("steady samples are valid");
            assert_eq!(s.delivery_rate, 1_200_000);
            assert_eq!(s.interval, 50 * MS);
            assert_eq!(s.delivered, 50 * 1200);
            assert_eq!(s.rtt, 50 * MS);
            assert!(!s.is_app_limited);
        }
    }

    #[test]
    fn first_flight_underestimates_but_never_overestimates() {
        for s in steady_clock(200).into_iter().flatten() {
            assert!(s.delivery_rate <= 1_200_000);
        }
    }

    #[test]
    fn newest_packet_drives_sample() {
        let t0 = Instant::now();
        let mut dr = DeliveryRate::new(t0);
        let a = dr.on_sent(t0, 1000, 0);
        let b = dr.on_sent(t0 + MS, 1000, 1000);
        dr.on_acked(t0 + 20 * MS, &a);
        dr.on_acked(t0 + 20 * MS, &b);
        let c = dr.on_sent(t0 + 20 * MS, 1000, 0);
        assert_eq!(c.delivered, 2000);
        assert_eq!(c.first_sent_time, t0 + 20 * MS);
        dr.take_sample(None).unwrap();
        let d = dr.on_sent(t0 + 21 * MS, 1000, 1000);
        // Acknowledge in reverse order within one frame: `d` (largest delivered) must win.
        dr.on_acked(t0 + 40 * MS, &d);
        dr.on_acked(t0 + 40 * MS, &c);
        let s = dr.take_sample(None).unwrap();
        assert_eq!(s.prior_delivered, 2000);
        assert_eq!(s.rtt, 19 * MS);
        assert_eq!(s.delivered, 2000);
        assert_eq!(dr.delivered(), 4000);
        assert_eq!(dr.latest_rate(), s.delivery_rate);
    }

    #[test]
    fn short_interval_is_discarded() {
        let t0 = Instant::now();
        let mut dr = DeliveryRate::new(t0);
        let a = dr.on_sent(t0, 1200, 0);
        dr.on_acked(t0 + 10 * MS, &a);
        assert!(dr.take_sample(Some(20 * MS)).is_none());
        let b = dr.on_sent(t0 + 10 * MS, 1200, 0);
        dr.on_acked(t0 + 40 * MS, &b);
        let s = dr.take_sample(Some(20 * MS)).unwrap();
        assert_eq!(s.interval, 30 * MS);
        assert_eq!(s.delivery_rate, 40_000);
    }

    #[test]
    fn nothing_acked_or_zero_interval_gives_none() {
        let t0 = Instant::now();
        let mut dr = DeliveryRate::new(t0);
        assert!(dr.take_sample(None).is_none());
        let a = dr.on_sent(t0, 1200, 0);
        dr.on_acked(t0, &a);
        assert!(dr.take_sample(None).is_none());
        // The pending sample was consumed.
        assert!(dr.take_sample(None).is_none());
    }

    #[test]
    fn app_limited_marks_until_bubble_delivered() {
        let t0 = Instant::now();
        let mut dr = DeliveryRate::new(t0);
        let a = dr.on_sent(t0, 1000, 0);
        dr.on_app_limited(1000);
        let b = dr.on_sent(t0 + MS, 1000, 1000);
        assert!(!a.is_app_limited);
        assert!(b.is_app_limited);
        dr.on_acked(t0 + 30 * MS, &a);
        let s = dr.take_sample(None).unwrap();
        assert!(!s.is_app_limited);
        // Delivered (1000) has not passed the mark (0 + 1000) yet.
        let c = dr.on_sent(t0 + 30 * MS, 1000, 1000);
        assert!(c.is_app_limited);
        dr.on_acked(t0 + 31 * MS, &b);
        let s = dr.take_sample(None).unwrap();
        assert!(s.is_app_limited);
        // Now delivered (2000) > mark: later packets are not app-limited.
        let d = dr.on_sent(t0 + 31 * MS, 1000, 1000);
        assert!(!d.is_app_limited);
    }

    #[test]
    fn idle_restart_resets_interval_start() {
        let t0 = Instant::now();
        let mut dr = DeliveryRate::new(t0);
        let a = dr.on_sent(t0, 1200, 0);
        dr.on_acked(t0 + 10 * MS, &a);
        dr.take_sample(None);
        // Idle for a second, then a new flight.
        let b = dr.on_sent(t0 + 1010 * MS, 1200, 0);
        assert_eq!(b.delivered_time, t0 + 1010 * MS);
        dr.on_acked(t0 + 1020 * MS, &b);
        let s = dr.take_sample(None).unwrap();
        assert_eq!(s.interval, 10 * MS);
        assert_eq!(s.delivery_rate, 120_000);
    }

    #[test]
    fn backwards_time_and_extremes_do_not_panic() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let mut dr = DeliveryRate::new(t0);
        let a = dr.on_sent(t0, u64::MAX, 0);
        dr.on_acked(t0 - Duration::from_secs(50), &a);
        let _ = dr.take_sample(Some(Duration::ZERO));
        let b = dr.on_sent(t0, u64::MAX, u64::MAX);
        dr.on_acked(t0 + Duration::from_nanos(1), &b);
        let _ = dr.take_sample(None);
        dr.on_app_limited(u64::MAX);
        assert_eq!(dr.delivered(), u64::MAX);
    }
}
