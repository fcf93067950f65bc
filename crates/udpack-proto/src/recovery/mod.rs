//! Loss recovery (RFC 9002 style): the record of packets in flight, RTT estimation, loss
//! detection by packet and time thresholds that give way to a reordering window once
//! the path reorders (`reordering.rs`), and the probe timeout. It decides which packets
//! are acknowledged, lost, or were lost spuriously; the session decides what that means
//! for the data.

mod reordering;

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::congestion::RateSnapshot;
use crate::session::pending::SentFrames;
use reordering::Reordering;

/// Packets a later acknowledged packet must overtake before an earlier one is lost.
pub const PACKET_THRESHOLD: u64 = 3;
/// Packet numbers stop below this: a session closes before it would need one more, and
/// a packet claiming one at or above it is dropped unread.
pub const PACKET_NUMBER_LIMIT: u64 = 1 << 62;
/// Skipped packet numbers remembered for the optimistic-ACK check.
const SKIPPED_REMEMBERED: usize = 16;
/// Timer granularity assumed for loss and probe timers.
pub const GRANULARITY: Duration = Duration::from_millis(1);

/// Smoothed RTT, its variation and the minimum (RFC 9002 §5).
#[derive(Debug, Clone)]
pub struct RttEstimator {
    latest: Duration,
    smoothed: Option<Duration>,
    var: Duration,
    min: Duration,
    initial: Duration,
}

impl RttEstimator {
    /// Starts with `initial` as the assumed RTT.
    pub fn new(initial: Duration) -> Self {
        RttEstimator {
            latest: initial,
            smoothed: None,
            var: initial / 2,
            min: initial,
            initial,
        }
    }

    /// Takes a sample; `ack_delay` is what the peer reported, capped at its max.
    pub fn update(&mut self, ack_delay: Duration, rtt: Duration) {
        self.latest = rtt;
        match self.smoothed {
            None => {
                self.min = rtt;
                self.smoothed = Some(rtt);
                self.var = rtt / 2;
            }
            Some(srtt) => {
                self.min = self.min.min(rtt);
                let adjusted = if rtt >= self.min + ack_delay {
                    rtt - ack_delay
                } else {
                    rtt
                };
                let diff = srtt.abs_diff(adjusted);
                self.var = (self.var * 3 + diff) / 4;
                self.smoothed = Some((srtt * 7 + adjusted) / 8);
            }
        }
    }

    /// Smoothed RTT (the initial guess before any sample).
    pub fn smoothed(&self) -> Duration {
        self.smoothed.unwrap_or(self.initial)
    }

    /// Latest sample.
    pub fn latest(&self) -> Duration {
        self.latest
    }

    /// Smallest sample.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// RTT variation.
    pub fn var(&self) -> Duration {
        self.var
    }

    /// True once a sample was taken.
    pub fn has_sample(&self) -> bool {
        self.smoothed.is_some()
    }

    /// Probe timeout before backoff.
    pub fn pto(&self, max_ack_delay: Duration) -> Duration {
        self.smoothed() + (self.var * 4).max(GRANULARITY) + max_ack_delay
    }
}

/// A packet sent and not yet acknowledged or lost.
#[derive(Debug, Clone)]
pub struct SentPacket {
    pub time: Instant,
    pub size: u16,
    pub ack_eliciting: bool,
    /// Counted in bytes in flight: every ack-eliciting packet except path probes
    /// (ACK-only and CLOSE packets are not either).
    pub in_flight: bool,
    pub rate: Option<RateSnapshot>,
    pub frames: SentFrames,
}

/// The outcome of processing an ACK frame.
#[derive(Debug, Default)]
pub struct AckOutcome {
    /// Packets newly acknowledged, in packet-number order.
    pub acked: Vec<(u64, SentPacket)>,
    /// Packets declared lost by this ACK.
    pub lost: Vec<(u64, SentPacket)>,
    /// True when the largest acknowledged packet was new and gave an RTT sample.
    pub rtt_sample: Option<Duration>,
    /// Packets declared lost earlier that this ACK acknowledges after all.
    pub spurious: Vec<(u64, SentPacket)>,
}

/// The peer acknowledged a packet number we never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckOfUnsent;

/// Packets in flight and the timers that watch them.
#[derive(Debug)]
pub struct Recovery {
    /// Slot i holds packet `base + i` while it is neither acknowledged nor lost.
    sent: VecDeque<Option<SentPacket>>,
    base: u64,
    next_pn: u64,
    largest_acked: Option<u64>,
    pub rtt: RttEstimator,
    bytes_in_flight: u64,
    ack_eliciting_in_flight: u64,
    time_of_last_ack_eliciting: Option<Instant>,
    /// Consecutive probe timeouts without an acknowledgement.
    pub pto_count: u32,
    loss_time: Option<Instant>,
    reordering: Reordering,
    /// Packet numbers skipped on purpose, newest last: an ACK of one proves the peer
    /// acknowledges what it never received (an optimistic ACK).
    skipped: VecDeque<u64>,
}

impl Recovery {
    /// Empty record with an initial RTT guess.
    pub fn new(initial_rtt: Duration) -> Self {
        Recovery {
            sent: VecDeque::new(),
            base: 0,
            next_pn: 0,
            largest_acked: None,
            rtt: RttEstimator::new(initial_rtt),
            bytes_in_flight: 0,
            ack_eliciting_in_flight: 0,
            time_of_last_ack_eliciting: None,
            pto_count: 0,
            loss_time: None,
            reordering: Reordering::default(),
            skipped: VecDeque::new(),
        }
    }

    /// The number the next packet gets.
    pub fn next_packet_number(&self) -> u64 {
        self.next_pn
    }

    /// The largest packet number the peer has acknowledged: how far back the peer's
    /// view of our numbers may be, which sets how short they may be cut.
    pub fn largest_acked(&self) -> Option<u64> {
        self.largest_acked
    }

    #[cfg(test)]
    /// Jumps the packet numbers ahead (to test the end of the number space).
    /// Forgets what is outstanding (call it on an idle session).
    pub fn skip_packet_numbers_to(&mut self, pn: u64) {
        self.clear();
        self.next_pn = pn.max(self.next_pn);
        self.base = self.next_pn;
    }

    /// Leaves the next packet number unused. A peer acknowledging it acknowledges a
    /// packet it cannot have received.
    pub fn skip_packet_number(&mut self) {
        let pn = self.next_pn;
        self.next_pn += 1;
        if self.sent.is_empty() {
            self.base = self.next_pn;
        } else {
            self.sent.push_back(None);
        }
        if self.skipped.len() >= SKIPPED_REMEMBERED {
            self.skipped.pop_front();
        }
        self.skipped.push_back(pn);
    }

    #[cfg(test)]
    /// The packet numbers skipped recently.
    pub fn skipped_numbers(&self) -> Vec<u64> {
        self.skipped.iter().copied().collect()
    }

    /// Packets recorded as sent and neither acknowledged nor declared lost yet
    /// (counting the gaps between them).
    pub fn record_len(&self) -> usize {
        self.sent.len()
    }

    /// Bytes of in-flight packets.
    pub fn bytes_in_flight(&self) -> u64 {
        self.bytes_in_flight
    }

    /// Records a sent packet under the next packet number; returns that number.
    pub fn on_sent(&mut self, p: SentPacket) -> u64 {
        let pn = self.next_pn;
        self.next_pn += 1;
        if p.in_flight {
            self.bytes_in_flight += u64::from(p.size);
        }
        if p.ack_eliciting {
            self.ack_eliciting_in_flight += 1;
            self.time_of_last_ack_eliciting = Some(p.time);
        }
        if self.sent.is_empty() {
            self.base = pn;
        }
        self.sent.push_back(Some(p));
        pn
    }

    fn take(&mut self, pn: u64) -> Option<SentPacket> {
        let idx = usize::try_from(pn.checked_sub(self.base)?).ok()?;
        let p = self.sent.get_mut(idx)?.take()?;
        if p.in_flight {
            self.bytes_in_flight -= u64::from(p.size);
        }
        if p.ack_eliciting {
            self.ack_eliciting_in_flight -= 1;
        }
        Some(p)
    }

    fn trim(&mut self) {
        while let Some(None) = self.sent.front() {
            self.sent.pop_front();
            self.base += 1;
        }
        if self.sent.is_empty() {
            self.base = self.next_pn;
        }
    }

    /// Processes an ACK frame's ranges (descending). `ack_delay` is the peer's reported
    /// delay, already capped at its max_ack_delay.
    pub fn on_ack(
        &mut self,
        now: Instant,
        ranges: &[Range<u64>],
        ack_delay: Duration,
        out: &mut AckOutcome,
    ) -> Result<(), AckOfUnsent> {
        let Some(largest) = ranges.first().map(|r| r.end - 1) else {
            return Ok(());
        };
        if largest >= self.next_pn {
            return Err(AckOfUnsent);
        }
        if self
            .skipped
            .iter()
            .any(|pn| ranges.iter().any(|r| r.contains(pn)))
        {
            return Err(AckOfUnsent);
        }
        let first_new = out.acked.len();
        let largest_before = self.largest_acked;
        let srtt = self.rtt.smoothed();
        // Ascending order keeps `out.acked` sorted.
        for r in ranges.iter().rev() {
            self.reordering
                .take_spurious(now, srtt, r.clone(), &mut out.spurious);
            let from = r.start.max(self.base);
            let to = r.end.min(self.base + self.sent.len() as u64);
            for pn in from..to {
                if let Some(p) = self.take(pn) {
                    self.reordering.on_acked(pn, largest_before);
                    out.acked.push((pn, p));
                }
            }
        }
        if out.acked.len() == first_new {
            return Ok(());
        }
        self.largest_acked = Some(self.largest_acked.map_or(largest, |l| l.max(largest)));
        if let Some((pn, p)) = out.acked.last() {
            if *pn == largest && out.acked[first_new..].iter().any(|(_, p)| p.ack_eliciting) {
                let rtt = now.saturating_duration_since(p.time);
                self.rtt.update(ack_delay, rtt);
                out.rtt_sample = Some(rtt);
            }
        }
        self.pto_count = 0;
        self.detect_lost(now, &mut out.lost);
        self.trim();
        Ok(())
    }

    /// How old a packet below the largest acknowledged may get before it is lost:
    /// 9/8 RTT, or the RTT and the reordering window once the path reorders.
    fn loss_delay(&self) -> Duration {
        let rtt = self.rtt.smoothed().max(self.rtt.latest());
        let delay = if self.reordering.seen() {
            rtt + self
                .reordering
                .window(self.rtt.smoothed(), self.rtt.latest(), self.rtt.min())
        } else {
            rtt * 9 / 8
        };
        delay.max(GRANULARITY)
    }

    #[cfg(test)]
    /// True once the path has shown reordering (packet-count loss detection is off).
    pub fn reordering_seen(&self) -> bool {
        self.reordering.seen()
    }

    /// Largest reordering seen, in packets.
    pub fn reordering_distance(&self) -> u64 {
        self.reordering.max_distance
    }

    /// Declares lost the packets below the largest acknowledged that are too far behind
    /// in number or in time; arms the loss timer for the rest.
    pub fn detect_lost(&mut self, now: Instant, lost: &mut Vec<(u64, SentPacket)>) {
        self.loss_time = None;
        let Some(largest) = self.largest_acked else {
            return;
        };
        let delay = self.loss_delay();
        let cutoff = now.checked_sub(delay);
        let end = largest.min(self.base + self.sent.len() as u64);
        let count_packets = !self.reordering.seen();
        let first_lost = lost.len();
        for pn in self.base..end {
            let idx = (pn - self.base) as usize;
            let Some(p) = &self.sent[idx] else { continue };
            let too_old = cutoff.is_some_and(|c| p.time <= c);
            if too_old || (count_packets && largest - pn >= PACKET_THRESHOLD) {
                if let Some(p) = self.take(pn) {
                    lost.push((pn, p));
                }
            } else {
                // Send times and packet numbers rise together, so both rules declare a
                // prefix lost: every later packet survives too, and this one is the
                // first to cross the time threshold. Stopping here keeps the walk short
                // while a reordering window holds a packet at the front for an RTT.
                self.loss_time = Some(p.time + delay);
                break;
            }
        }
        self.reordering
            .on_declared_lost(now, self.rtt.smoothed(), &lost[first_lost..]);
        self.reordering.expire(now, self.rtt.smoothed());
        self.trim();
    }

    /// When the loss or probe timer fires, if armed.
    pub fn timer(&self, max_ack_delay: Duration) -> Option<Instant> {
        if self.loss_time.is_some() {
            return self.loss_time;
        }
        if self.ack_eliciting_in_flight == 0 {
            return None;
        }
        let base = self.time_of_last_ack_eliciting?;
        let backoff = 1u32 << self.pto_count.min(16);
        Some(base + self.rtt.pto(max_ack_delay) * backoff)
    }

    /// Handles the timer: returns true if probes must be sent (a probe timeout), after
    /// moving lost packets into `lost` when it was the loss timer.
    pub fn on_timeout(&mut self, now: Instant, lost: &mut Vec<(u64, SentPacket)>) -> bool {
        if self.loss_time.is_some_and(|t| t <= now) {
            self.detect_lost(now, lost);
            return false;
        }
        self.pto_count = self.pto_count.saturating_add(1);
        true
    }

    /// The oldest unacknowledged ack-eliciting packet, for probes that resend data.
    pub fn oldest_unacked(&self) -> Option<&SentPacket> {
        // A path MTU probe carries nothing to send again.
        self.sent
            .iter()
            .flatten()
            .find(|p| p.ack_eliciting && !p.frames.mtu_probe)
    }

    /// True when lost packets span a period long enough to call persistent congestion.
    pub fn is_persistent(&self, lost: &[(u64, SentPacket)], max_ack_delay: Duration) -> bool {
        if !self.rtt.has_sample() {
            return false;
        }
        // Only packets in flight: a path probe's loss (an MTU probe, a path challenge)
        // says nothing of congestion, nor does the time it was sent.
        let span = lost.iter().filter(|(_, p)| p.ack_eliciting && p.in_flight);
        let (Some(first), Some(last)) = (
            span.clone().map(|(_, p)| p.time).min(),
            span.map(|(_, p)| p.time).max(),
        ) else {
            return false;
        };
        // Without an acknowledged packet in between (approximated: nothing in flight
        // between them remains, as they were declared lost together).
        last.saturating_duration_since(first) > self.rtt.pto(max_ack_delay) * 3
    }

    /// Forgets every packet (the session is closing); returns nothing.
    pub fn clear(&mut self) {
        self.sent.clear();
        self.base = self.next_pn;
        self.bytes_in_flight = 0;
        self.ack_eliciting_in_flight = 0;
        self.loss_time = None;
        self.reordering.clear();
    }
}

#[cfg(test)]
// Ranges of packet numbers are what `on_ack` takes, one or many.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::reordering::{Reordering, REMEMBERED_LOST};
    use super::*;

    fn pkt(t: Instant) -> SentPacket {
        SentPacket {
            time: t,
            size: 1000,
            ack_eliciting: true,
            in_flight: true,
            rate: None,
            frames: SentFrames::default(),
        }
    }

    #[test]
    fn packet_threshold_and_time_threshold() {
        let t0 = Instant::now();
        let mut r = Recovery::new(Duration::from_millis(100));
        for i in 0..10 {
            r.on_sent(pkt(t0 + Duration::from_millis(i)));
        }
        assert_eq!(r.bytes_in_flight(), 10_000);
        let mut out = AckOutcome::default();
        // Ack 5..=6: packets 0..=3 are >= 3 behind 6; 4 and 5 are not.
        r.on_ack(
            t0 + Duration::from_millis(100),
            &[5..7],
            Duration::ZERO,
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out.acked.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![5, 6]
        );
        assert_eq!(
            out.lost.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert!(out.rtt_sample.is_some());
        // Packet 4 is lost by time once its loss delay passes.
        let timer = r.timer(Duration::from_millis(25)).unwrap();
        let mut lost = Vec::new();
        assert!(!r.on_timeout(timer, &mut lost));
        assert_eq!(lost.iter().map(|p| p.0).collect::<Vec<_>>(), vec![4]);
        // Acks of unsent packets are refused.
        assert_eq!(
            r.on_ack(t0, &[20..21], Duration::ZERO, &mut AckOutcome::default()),
            Err(AckOfUnsent)
        );
        // Duplicate acks change nothing.
        let mut again = AckOutcome::default();
        r.on_ack(
            t0 + Duration::from_millis(200),
            &[5..7],
            Duration::ZERO,
            &mut again,
        )
        .unwrap();
        assert!(again.acked.is_empty());
        assert_eq!(r.bytes_in_flight(), 3000);
    }

    #[test]
    fn persistent_congestion_spans_only_packets_in_flight() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut r = Recovery::new(Duration::from_millis(100));
        r.on_sent(pkt(t0));
        let mut out = AckOutcome::default();
        r.on_ack(ms(10), &[0..1], Duration::ZERO, &mut out).unwrap();
        // RTT 10 ms: three PTOs are well under a second.
        let data = |t| (1, pkt(t));
        let probe = |t| {
            (
                2,
                SentPacket {
                    in_flight: false,
                    ..pkt(t)
                },
            )
        };
        let max_ack_delay = Duration::from_millis(25);
        assert!(r.is_persistent(&[data(ms(20)), data(ms(2000))], max_ack_delay));
        assert!(!r.is_persistent(&[data(ms(1990)), data(ms(2000))], max_ack_delay));
        assert!(
            !r.is_persistent(
                &[probe(ms(20)), data(ms(1990)), data(ms(2000))],
                max_ack_delay
            ),
            "a probe lost long before is not congestion"
        );
    }

    #[test]
    fn pto_backs_off() {
        let t0 = Instant::now();
        let mut r = Recovery::new(Duration::from_millis(100));
        r.on_sent(pkt(t0));
        let d = Duration::from_millis(25);
        let t1 = r.timer(d).unwrap();
        assert!(r.on_timeout(t1, &mut Vec::new()));
        let t2 = r.timer(d).unwrap();
        assert_eq!(t2 - t0, (t1 - t0) * 2);
    }

    #[test]
    fn rtt_estimator_follows_rfc9002() {
        let mut e = RttEstimator::new(Duration::from_millis(333));
        e.update(Duration::ZERO, Duration::from_millis(100));
        assert_eq!(e.smoothed(), Duration::from_millis(100));
        assert_eq!(e.var(), Duration::from_millis(50));
        e.update(Duration::from_millis(10), Duration::from_millis(140));
        // adjusted = 130; srtt = (700 + 130) / 8 = 103.75ms
        assert_eq!(e.smoothed(), Duration::from_micros(103_750));
        assert_eq!(e.min(), Duration::from_millis(100));
    }

    fn numbers(v: &[(u64, SentPacket)]) -> Vec<u64> {
        v.iter().map(|p| p.0).collect()
    }

    fn ack(r: &mut Recovery, at: Instant, range: Range<u64>) -> AckOutcome {
        let mut out = AckOutcome::default();
        r.on_ack(at, &[range], Duration::ZERO, &mut out)
            .expect("ack of sent packets");
        out
    }

    #[test]
    fn an_ack_after_a_later_one_turns_packet_counting_off() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Recovery::new(ms(100));
        for i in 0..10 {
            r.on_sent(pkt(t0 + ms(i)));
        }
        let out = ack(&mut r, t0 + ms(50), 1..2);
        assert!(out.lost.is_empty() && !r.reordering_seen());
        // Packet 0 arrives after packet 1: the path reorders.
        let out = ack(&mut r, t0 + ms(51), 0..1);
        assert_eq!(numbers(&out.acked), vec![0]);
        assert!(r.reordering_seen());
        assert_eq!(r.reordering_distance(), 1);
        // Four and three packets behind the largest acknowledged: no longer lost for
        // that, only once they are the RTT and a reordering window old.
        let out = ack(&mut r, t0 + ms(56), 6..7);
        assert!(out.lost.is_empty(), "{:?}", numbers(&out.lost));
        let timer = r.timer(ms(25)).expect("loss timer armed");
        let min_rtt = r.rtt.min();
        let rtt = r.rtt.smoothed().max(r.rtt.latest());
        assert_eq!(
            timer,
            t0 + ms(2) + rtt + (min_rtt / 4).min(r.rtt.smoothed())
        );
        let mut lost = Vec::new();
        assert!(!r.on_timeout(timer, &mut lost));
        assert_eq!(numbers(&lost), vec![2]);
    }

    #[test]
    fn a_loss_acknowledged_after_all_is_spurious_and_widens_the_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Recovery::new(ms(100));
        for i in 0..20 {
            r.on_sent(pkt(t0 + ms(i)));
        }
        // Packets 0 and 1 are three or more behind packet 4: declared lost.
        let out = ack(&mut r, t0 + ms(50), 4..5);
        assert_eq!(numbers(&out.lost), vec![0, 1]);
        assert_eq!(r.bytes_in_flight(), 17_000);
        // Packet 0 was only late.
        let out = ack(&mut r, t0 + ms(52), 0..1);
        assert!(out.acked.is_empty());
        assert_eq!(numbers(&out.spurious), vec![0]);
        assert!(r.reordering_seen());
        let srtt = r.rtt.smoothed();
        let two_quarters = (r.rtt.min() / 4 * 2).min(srtt);
        assert_eq!(
            r.reordering.window(srtt, r.rtt.latest(), r.rtt.min()),
            two_quarters
        );
        // Packet 1 as well, within the same round trip: the window widens only once.
        let out = ack(&mut r, t0 + ms(53), 1..2);
        assert_eq!(numbers(&out.spurious), vec![1]);
        assert_eq!(
            r.reordering.window(srtt, r.rtt.latest(), r.rtt.min()),
            two_quarters
        );
        // A second acknowledgement of the same packet is nothing.
        let out = ack(&mut r, t0 + ms(54), 0..2);
        assert!(out.spurious.is_empty() && out.acked.is_empty());
        // One round trip later, another spurious loss widens it again, never past the
        // smoothed RTT.
        for i in 0..40u64 {
            r.on_sent(pkt(t0 + ms(100 + i)));
        }
        let out = ack(&mut r, t0 + ms(189), 59..60);
        let first_lost = out
            .lost
            .iter()
            .map(|p| p.0)
            .find(|pn| *pn >= 20)
            .expect("a packet of the second flight lost");
        let out = ack(&mut r, t0 + ms(190), first_lost..first_lost + 1);
        assert_eq!(numbers(&out.spurious), vec![first_lost]);
        let srtt = r.rtt.smoothed();
        let w = r.reordering.window(srtt, r.rtt.latest(), r.rtt.min());
        assert_eq!(w, (r.rtt.min() / 4 * 3).min(srtt));
        assert!(w <= srtt);
    }

    #[test]
    fn the_window_narrows_after_sixteen_loss_events_without_a_spurious_one() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let rtt = ms(40);
        let mut r = Reordering::default();
        let p = pkt(t0);
        let at = |i: u64| t0 + rtt * i as u32;
        r.on_declared_lost(at(0), rtt, &[(0, p.clone())]);
        let mut spurious = Vec::new();
        r.take_spurious(at(0), rtt, 0..1, &mut spurious);
        assert_eq!(r.window(rtt, rtt, rtt), ms(20));
        for i in 1..16 {
            r.on_declared_lost(at(i), rtt, &[(i, p.clone())]);
            // More losses in the same round trip are the same event.
            r.on_declared_lost(at(i) + ms(1), rtt, &[(100 + i, p.clone())]);
            assert_eq!(r.window(rtt, rtt, rtt), ms(20), "event {i}");
        }
        r.on_declared_lost(at(16), rtt, &[(16, p.clone())]);
        assert_eq!(r.window(rtt, rtt, rtt), ms(10));
        // Packets that were not in flight (ACK-only, probes) are not remembered.
        let before = r.lost.len();
        let ack_only = SentPacket {
            in_flight: false,
            ack_eliciting: false,
            ..pkt(t0)
        };
        r.on_declared_lost(at(17), rtt, &[(500, ack_only)]);
        assert_eq!(r.lost.len(), before);
        // The memory of lost packets is bounded and expires.
        for i in 1000..1000 + 2 * REMEMBERED_LOST as u64 {
            r.on_declared_lost(at(18), rtt, &[(i, p.clone())]);
        }
        assert_eq!(r.lost.len(), REMEMBERED_LOST);
        r.expire(t0 + rtt * 5, rtt);
        assert!(r.lost.is_empty());
    }

    #[test]
    fn an_ack_of_a_skipped_packet_number_is_refused() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Recovery::new(ms(100));
        r.on_sent(pkt(t0));
        r.skip_packet_number();
        r.on_sent(pkt(t0 + ms(1)));
        assert_eq!(r.next_packet_number(), 3);
        // Packets 0 and 2 acknowledged, the gap left open: honest.
        let mut out = AckOutcome::default();
        r.on_ack(t0 + ms(50), &[2..3, 0..1], Duration::ZERO, &mut out)
            .expect("honest ack");
        assert_eq!(numbers(&out.acked), vec![0, 2]);
        assert!(out.lost.is_empty());
        // Acknowledging the skipped number is lying.
        assert_eq!(
            r.on_ack(
                t0 + ms(51),
                &[0..3],
                Duration::ZERO,
                &mut AckOutcome::default()
            ),
            Err(AckOfUnsent)
        );
        // Skipping with nothing outstanding keeps the record empty.
        let mut r = Recovery::new(ms(100));
        r.skip_packet_number();
        assert_eq!(r.record_len(), 0);
        r.on_sent(pkt(t0));
        assert_eq!(r.record_len(), 1);
    }
}
