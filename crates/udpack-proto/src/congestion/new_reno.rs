//! NewReno as specified by RFC 9002 §7: slow start, congestion avoidance, one window
//! reduction per recovery period, and collapse to the minimum window on persistent
//! congestion. Loss-based, so kept mainly as a well-understood baseline for comparison.

use std::time::Instant;

use super::recovery_period::RecoveryPeriod;
use super::{AckSample, Controller, LossSample};

/// RFC 9002 §7.2: the initial window is capped at 14 720 bytes unless two packets need more.
const INITIAL_WINDOW_BYTES_CAP: u64 = 14_720;
/// RFC 9002 §7.2: at most ten packets initially.
const INITIAL_WINDOW_PACKETS: u64 = 10;
/// RFC 9002 §7.2: the window never drops below two packets.
pub(super) const MINIMUM_WINDOW_PACKETS: u64 = 2;

/// RFC 9002 §7.2: min(10 × mtu, max(14 720, 2 × mtu)).
pub(super) fn initial_window_for(mtu: u64) -> u64 {
    let ten = mtu.saturating_mul(INITIAL_WINDOW_PACKETS);
    let two = mtu.saturating_mul(MINIMUM_WINDOW_PACKETS);
    ten.min(INITIAL_WINDOW_BYTES_CAP.max(two))
}

/// RFC 9002 NewReno congestion controller.
#[derive(Debug)]
pub struct NewReno {
    /// Maximum datagram size.
    mtu: u64,
    /// Congestion window in bytes.
    window: u64,
    /// Slow-start threshold; `u64::MAX` until the first loss.
    ssthresh: u64,
    /// One reduction per congestion event, undone if its losses were all reordering;
    /// it keeps the window and threshold from before the cut.
    recovery: RecoveryPeriod<(u64, u64)>,
    /// Bytes acknowledged in congestion avoidance not yet turned into window growth.
    bytes_acked: u64,
    /// The sender did not fill the window; growing it then would be unvalidated (RFC 9002 §7.8).
    app_limited: bool,
}

impl NewReno {
    /// Creates a controller for packets of at most `mtu` bytes.
    pub fn new(mtu: u16) -> Self {
        let mtu = u64::from(mtu.max(1));
        Self {
            mtu,
            window: initial_window_for(mtu),
            ssthresh: u64::MAX,
            recovery: RecoveryPeriod::default(),
            bytes_acked: 0,
            app_limited: false,
        }
    }

    fn minimum_window(&self) -> u64 {
        self.mtu.saturating_mul(MINIMUM_WINDOW_PACKETS)
    }

    #[cfg(test)]
    /// Slow-start threshold in bytes (`u64::MAX` before the first congestion event).
    pub fn ssthresh(&self) -> u64 {
        self.ssthresh
    }
}

impl Controller for NewReno {
    fn on_sent(&mut self, _now: Instant, _bytes: u64, bytes_in_flight: u64) {
        // Filling the window validates it again.
        if bytes_in_flight >= self.window {
            self.app_limited = false;
        }
    }

    fn on_ack(&mut self, _now: Instant, ack: &AckSample) {
        // Acknowledgements of packets sent before the loss belong to the same congestion
        // event and must not grow the window back.
        if self.recovery.contains(ack.largest_acked_sent) || self.app_limited {
            return;
        }
        if self.window < self.ssthresh {
            // Slow start: one byte of window per byte acknowledged.
            self.window = self.window.saturating_add(ack.acked_bytes);
        } else {
            // Congestion avoidance: one packet per window acknowledged.
            self.bytes_acked = self.bytes_acked.saturating_add(ack.acked_bytes);
            let window = self.window.max(1);
            let increments = self.bytes_acked / window;
            self.bytes_acked %= window;
            self.window = self
                .window
                .saturating_add(increments.saturating_mul(self.mtu));
        }
    }

    fn on_loss(&mut self, now: Instant, loss: &LossSample) {
        if self
            .recovery
            .on_loss(now, loss, (self.window, self.ssthresh))
        {
            // A new congestion event: halve once for the whole recovery period.
            self.window = (self.window / 2).max(self.minimum_window());
            self.ssthresh = self.window;
            self.bytes_acked = 0;
        }
        if loss.persistent {
            // RFC 9002 §7.6.2: collapse and let the next loss start a new recovery period.
            self.window = self.minimum_window();
            self.recovery.end();
            self.bytes_acked = 0;
        }
    }

    fn on_spurious_loss(&mut self, _now: Instant, loss: &LossSample) {
        if let Some((window, ssthresh)) = self.recovery.on_spurious_loss(loss) {
            // Every loss of this period was reordering: restore what it cut.
            self.window = self.window.max(window);
            self.ssthresh = ssthresh;
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
        "newreno"
    }
}

#[cfg(test)]
mod tests {
    use super::super::samples::{ack, loss};
    use super::*;
    use std::time::Duration;

    const MTU: u16 = 1200;
    const MTU_BYTES: u64 = MTU as u64;
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn initial_window_follows_rfc() {
        assert_eq!(NewReno::new(1200).window(), 12_000);
        assert_eq!(NewReno::new(1500).window(), 14_720);
        assert_eq!(NewReno::new(9000).window(), 18_000);
        assert_eq!(NewReno::new(0).window(), 10);
        let cc = NewReno::new(MTU);
        assert_eq!(cc.pacing_rate(), None);
        assert_eq!(cc.name(), "newreno");
        assert_eq!(cc.ssthresh(), u64::MAX);
    }

    #[test]
    fn slow_start_doubles_per_window() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(MTU);
        cc.on_ack(t0 + 50 * MS, &ack(12_000, t0));
        assert_eq!(cc.window(), 24_000);
        cc.on_ack(t0 + 100 * MS, &ack(24_000, t0 + 50 * MS));
        assert_eq!(cc.window(), 48_000);
    }

    #[test]
    fn halves_once_per_recovery_period() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(MTU);
        cc.on_ack(t0 + 50 * MS, &ack(88_000, t0));
        assert_eq!(cc.window(), 100_000);
        let cut_at = t0 + 200 * MS;
        cc.on_loss(cut_at, &loss(1200, t0 + 100 * MS, false));
        assert_eq!(cc.window(), 50_000);
        assert_eq!(cc.ssthresh(), 50_000);
        // More losses of packets sent before the recovery started: no further cut.
        cc.on_loss(cut_at + 10 * MS, &loss(6000, t0 + 150 * MS, false));
        cc.on_loss(cut_at + 20 * MS, &loss(1200, cut_at, false));
        assert_eq!(cc.window(), 50_000);
        // Acks of pre-recovery packets do not grow the window.
        cc.on_ack(cut_at + 30 * MS, &ack(50_000, cut_at - MS));
        assert_eq!(cc.window(), 50_000);
        // A loss of a packet sent after recovery started is a new congestion event.
        cc.on_loss(cut_at + 300 * MS, &loss(1200, cut_at + MS, false));
        assert_eq!(cc.window(), 25_000);
    }

    #[test]
    fn congestion_avoidance_adds_one_packet_per_window() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(MTU);
        cc.on_ack(t0, &ack(48_000, t0));
        cc.on_loss(t0 + MS, &loss(1200, t0, false));
        assert_eq!(cc.window(), 30_000);
        let after = t0 + 2 * MS;
        // 29 999 bytes: not yet a full window.
        cc.on_ack(after, &ack(29_999, after));
        assert_eq!(cc.window(), 30_000);
        cc.on_ack(after, &ack(1, after));
        assert_eq!(cc.window(), 31_200);
        // Three windows at once grow by three packets.
        cc.on_ack(after, &ack(3 * 31_200, after));
        assert_eq!(cc.window(), 34_800);
    }

    #[test]
    fn persistent_congestion_collapses_to_minimum() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(MTU);
        cc.on_ack(t0, &ack(100_000, t0));
        cc.on_loss(t0 + MS, &loss(50_000, t0, true));
        assert_eq!(cc.window(), 2 * MTU_BYTES);
        // The window can shrink no further, and a new loss starts a new (floored) cut.
        cc.on_loss(t0 + 2 * MS, &loss(1200, t0, false));
        assert_eq!(cc.window(), 2 * MTU_BYTES);
        // Recovery then proceeds in congestion avoidance from the minimum.
        let later = t0 + 10 * MS;
        cc.on_ack(later, &ack(2 * MTU_BYTES, later));
        assert_eq!(cc.window(), 3 * MTU_BYTES);
    }

    #[test]
    fn app_limited_does_not_grow() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(MTU);
        cc.on_app_limited(1200);
        cc.on_ack(t0, &ack(12_000, t0));
        assert_eq!(cc.window(), 12_000);
        cc.on_sent(t0, 1200, 12_000);
        cc.on_ack(t0, &ack(12_000, t0));
        assert_eq!(cc.window(), 24_000);
    }

    #[test]
    fn extremes_do_not_panic() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(u16::MAX);
        cc.on_ack(t0, &ack(u64::MAX, t0));
        cc.on_ack(t0, &ack(u64::MAX, t0));
        assert_eq!(cc.window(), u64::MAX);
        cc.on_loss(t0, &loss(u64::MAX, t0 + MS, false));
        cc.on_ack(t0 + 2 * MS, &ack(u64::MAX, t0 + 2 * MS));
        cc.on_loss(t0, &loss(0, t0, true));
        assert_eq!(cc.window(), 2 * u64::from(u16::MAX));
    }

    #[test]
    fn a_reduction_whose_losses_all_were_spurious_is_undone() {
        let t0 = Instant::now();
        let mut cc = NewReno::new(1200);
        let before = cc.window();
        let loss = |bytes, sent| LossSample {
            lost_bytes: bytes,
            largest_lost_sent: sent,
            bytes_in_flight: 0,
            persistent: false,
        };
        cc.on_loss(t0 + Duration::from_millis(10), &loss(2400, t0));
        assert_eq!(cc.window(), before / 2);
        // One of the two packets turns out spurious: the cut stays.
        cc.on_spurious_loss(t0 + Duration::from_millis(11), &loss(1200, t0));
        assert_eq!(cc.window(), before / 2);
        // The other too: the reduction is undone.
        cc.on_spurious_loss(t0 + Duration::from_millis(12), &loss(1200, t0));
        assert_eq!(cc.window(), before);
        assert_eq!(cc.ssthresh(), u64::MAX);
        // A real loss after that cuts again, and a spurious loss of a packet sent after
        // the cut does not undo it.
        cc.on_loss(
            t0 + Duration::from_millis(20),
            &loss(1200, t0 + Duration::from_millis(15)),
        );
        assert_eq!(cc.window(), before / 2);
        cc.on_spurious_loss(
            t0 + Duration::from_millis(21),
            &loss(1200, t0 + Duration::from_millis(25)),
        );
        assert_eq!(cc.window(), before / 2);
        // Nor does a late ACK of a packet lost in an earlier period: a third period's
        // cut stays when the packet lost (spuriously) in the second one shows up.
        cc.on_loss(
            t0 + Duration::from_millis(40),
            &loss(1200, t0 + Duration::from_millis(30)),
        );
        let third = cc.window();
        cc.on_spurious_loss(
            t0 + Duration::from_millis(41),
            &loss(1200, t0 + Duration::from_millis(15)),
        );
        assert_eq!(cc.window(), third);
    }
}
