//! Tolerance of reordering, in the manner of RACK (RFC 8985) and Linux TCP.
//!
//! Until the path has shown reordering, a packet is lost once three later packets were
//! acknowledged or it is 9/8 RTT old (RFC 9002). Once a packet is acknowledged after a
//! later one, or a packet declared lost is acknowledged after all (a spurious loss),
//! packet counts no longer decide: a packet is lost only when it is a reordering window
//! older than the RTT. The window starts at a quarter of the min RTT and widens by that
//! much each round trip with a spurious loss, up to the smoothed RTT; after sixteen loss
//! events (round trips with losses) without a spurious one it narrows back to a quarter.
//!
//! Packets declared lost are remembered for a while, so that a late acknowledgement of
//! one is recognised: the data it carried is acknowledged (its retransmission, if not
//! yet sent, is dropped) and the congestion response to it undone.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::SentPacket;

/// Packets declared lost that are remembered, at most.
pub(crate) const REMEMBERED_LOST: usize = 1024;
/// A declared-lost packet is forgotten this many RTTs after it was sent.
const REMEMBER_RTTS: u32 = 4;
/// The window never exceeds this many quarters of the min RTT.
const MAX_WINDOW_QUARTERS: u32 = 16;
/// Loss events without a spurious loss after which the window narrows again.
const LOSS_EVENTS_BEFORE_NARROWING: u32 = 16;

/// What recovery learned about reordering on the path.
#[derive(Debug, Default)]
pub(crate) struct Reordering {
    /// A packet was acknowledged after a later one, or a loss was spurious.
    seen: bool,
    /// The reordering window in quarters of the min RTT (RFC 8985's reo_wnd_mult).
    quarters: u32,
    /// The window widens at most once per round trip: not before this time.
    next_widen: Option<Instant>,
    /// Loss events since the last spurious loss.
    loss_events: u32,
    /// Losses before this time belong to the current loss event.
    next_loss_event: Option<Instant>,
    /// Largest distance, in packet numbers, by which an acknowledgement came late.
    pub max_distance: u64,
    /// Packets declared lost, ascending by number.
    pub(crate) lost: VecDeque<(u64, SentPacket)>,
}

impl Reordering {
    /// True once packet-count loss detection is off.
    pub fn seen(&self) -> bool {
        self.seen
    }

    /// The extra time a packet gets beyond the RTT before it is declared lost.
    pub fn window(&self, srtt: Duration, latest: Duration, min_rtt: Duration) -> Duration {
        if !self.seen {
            return srtt.max(latest) / 8;
        }
        (min_rtt / 4 * self.quarters.max(1)).min(srtt)
    }

    /// Packet `pn` was newly acknowledged while `largest_before` was already.
    pub fn on_acked(&mut self, pn: u64, largest_before: Option<u64>) {
        if let Some(l) = largest_before.filter(|l| *l > pn) {
            self.seen = true;
            self.max_distance = self.max_distance.max(l - pn);
        }
    }

    /// Packets were declared lost together. Losses within one round trip are one loss
    /// event, as RFC 8985 counts recoveries. Only packets that were in flight are
    /// remembered: ACK-only packets and path probes carry nothing to undo, and would
    /// push real losses out of the memory.
    pub fn on_declared_lost(&mut self, now: Instant, srtt: Duration, lost: &[(u64, SentPacket)]) {
        if !lost.iter().any(|(_, p)| p.in_flight) {
            return;
        }
        if self.next_loss_event.is_none_or(|t| now >= t) {
            self.next_loss_event = Some(now + srtt);
            self.loss_events += 1;
            if self.loss_events >= LOSS_EVENTS_BEFORE_NARROWING {
                self.quarters = 1;
                self.loss_events = 0;
            }
        }
        for (pn, p) in lost.iter().filter(|(_, p)| p.in_flight) {
            if self.lost.len() >= REMEMBERED_LOST {
                self.lost.pop_front();
            }
            self.lost.push_back((*pn, p.clone()));
        }
    }

    /// Moves into `out` the remembered lost packets that `range` acknowledges: spurious
    /// losses. Widens the window (once per round trip).
    pub fn take_spurious(
        &mut self,
        now: Instant,
        srtt: Duration,
        range: std::ops::Range<u64>,
        out: &mut Vec<(u64, SentPacket)>,
    ) {
        if self.lost.is_empty() {
            return;
        }
        let from = self.lost.partition_point(|(pn, _)| *pn < range.start);
        let to = self.lost.partition_point(|(pn, _)| *pn < range.end);
        if from == to {
            return;
        }
        out.extend(self.lost.drain(from..to));
        self.seen = true;
        self.loss_events = 0;
        if self.next_widen.is_none_or(|t| now >= t) {
            self.quarters = (self.quarters.max(1) + 1).min(MAX_WINDOW_QUARTERS);
            self.next_widen = Some(now + srtt);
        }
    }

    /// Forgets lost packets sent long enough ago that no acknowledgement of them is
    /// still on its way.
    pub fn expire(&mut self, now: Instant, srtt: Duration) {
        let horizon = srtt * REMEMBER_RTTS;
        while let Some((_, p)) = self.lost.front() {
            if now.saturating_duration_since(p.time) > horizon {
                self.lost.pop_front();
            } else {
                break;
            }
        }
    }

    /// Forgets everything remembered (the session is closing).
    pub fn clear(&mut self) {
        self.lost.clear();
    }
}
