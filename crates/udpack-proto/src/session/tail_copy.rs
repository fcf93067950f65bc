//! Forward error correction for app-limited tails (PROTOCOL.md §6.8): a packet that
//! drains a sender with little in flight is sent again, once or twice, a few ms apart,
//! so that a small message survives a loss without waiting a loss detection and a
//! retransmission (about two RTTs).
//!
//! A copy is a new packet (a new number) carrying the same stream ranges. The original
//! and its copies form a *group*: when any of them is acknowledged the data is
//! delivered; a member lost while another is acknowledged or still in flight is not
//! lost data: its frames are not queued again and the congestion controller does not
//! hear of it. Only when every member is lost is the group's loss a loss, once.
//!
//! How many copies: the fewest for which the measured packet loss rate `p` gives
//! `p^(copies+1) ≤ 0.1%`, at most `TransportConfig::tail_copies`: none on a clean path,
//! one up to about 3% loss, two above.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::pending::{SentFrames, StreamRange};
use super::Session;
use crate::datagram::DatagramBuf;
use crate::frame::StreamFrame;

/// Loss a tail aims at after its copies: the fewest copies that reach it are sent.
const TARGET_RESIDUAL: f64 = 1e-3;
/// Outcomes (acknowledged or lost) per half of the loss-rate window.
const LOSS_EPOCH: u32 = 256;
/// Below this many outcomes the loss rate is unknown and one copy is sent.
const MIN_OUTCOMES: u32 = 64;
/// Copies are spaced by an eighth of the smoothed RTT, within these bounds: far enough
/// apart that one burst of loss does not take them all, close enough to cost little.
const MIN_SPACING: Duration = Duration::from_millis(1);
const MAX_SPACING: Duration = Duration::from_millis(5);
/// A copy that could not go within this share of the smoothed RTT after it was due
/// (the window was full) is dropped: the original's fate is soon known anyway.
const EXPIRY_DIVISOR: u32 = 4;
/// Bounds on the state: copies waiting, groups unresolved, hidden losses remembered.
const MAX_PLANS: usize = 64;
const MAX_GROUPS: usize = 1024;
const MAX_HIDDEN: usize = 1024;

/// A copy to send.
#[derive(Debug)]
pub(crate) struct Plan {
    pub due: Instant,
    expires: Instant,
    /// The timer fired for it: it waits for the window, with no deadline of its own.
    ready: bool,
    pub group: u64,
    pub ranges: Vec<StreamRange>,
}

#[derive(Debug, Default)]
struct Group {
    /// Members sent and neither acknowledged nor lost.
    unresolved: u32,
    /// Copies planned and not sent yet.
    planned: u32,
    /// A member was acknowledged.
    delivered: bool,
}

/// Packet losses over the last `LOSS_EPOCH` to `2 × LOSS_EPOCH` outcomes.
#[derive(Debug, Default)]
struct LossRate {
    outcomes: u32,
    lost: u32,
    prev_outcomes: u32,
    prev_lost: u32,
}

impl LossRate {
    fn on_outcome(&mut self, lost: bool) {
        self.outcomes += 1;
        self.lost += u32::from(lost);
        if self.outcomes >= LOSS_EPOCH {
            self.prev_outcomes = self.outcomes;
            self.prev_lost = self.lost;
            self.outcomes = 0;
            self.lost = 0;
        }
    }

    fn rate(&self) -> Option<f64> {
        let n = self.outcomes + self.prev_outcomes;
        (n >= MIN_OUTCOMES).then(|| f64::from(self.lost + self.prev_lost) / f64::from(n))
    }
}

/// The copies owed, the groups in flight and the loss rate that sizes them.
#[derive(Debug, Default)]
pub(crate) struct TailCopies {
    plans: VecDeque<Plan>,
    groups: BTreeMap<u64, Group>,
    /// Members whose loss the controller did not hear of: a late ACK of one (a
    /// spurious loss) must not undo a response that never happened.
    hidden: BTreeSet<u64>,
    loss: LossRate,
}

/// What a lost packet means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LostMember {
    /// Lost data: queue its frames again and tell the controller.
    Lost,
    /// A member of a group another member delivers or may still deliver.
    Covered,
}

impl TailCopies {
    /// How many copies a tail gets now, at most `max`.
    pub fn wanted(&self, max: u8) -> u8 {
        if max == 0 || self.plans.len() >= MAX_PLANS || self.groups.len() >= MAX_GROUPS {
            return 0;
        }
        let Some(p) = self.loss.rate() else {
            return 1;
        };
        let mut residual = p;
        let mut copies = 0;
        while residual > TARGET_RESIDUAL && copies < max {
            copies += 1;
            residual *= p;
        }
        copies
    }

    /// The original of a group went out as packet `group`; `copies` follow it, one
    /// every `spacing`, carrying `ranges`.
    pub fn on_original_sent(
        &mut self,
        now: Instant,
        srtt: Duration,
        group: u64,
        ranges: &[StreamRange],
        copies: u8,
    ) {
        let spacing = (srtt / 8).clamp(MIN_SPACING, MAX_SPACING);
        for i in 1..=u32::from(copies) {
            let due = now + spacing * i;
            self.plans.push_back(Plan {
                due,
                expires: due + srtt / EXPIRY_DIVISOR,
                ready: false,
                group,
                ranges: ranges.to_vec(),
            });
        }
        self.groups.insert(
            group,
            Group {
                unresolved: 1,
                planned: u32::from(copies),
                delivered: false,
            },
        );
    }

    /// When the next copy is due, unless it is already waiting for the window.
    pub fn deadline(&self) -> Option<Instant> {
        self.plans.iter().filter(|p| !p.ready).map(|p| p.due).min()
    }

    /// The timer fired: copies now due wait for the window without a deadline, so that
    /// a full window does not keep the timer firing.
    pub fn on_timer(&mut self, now: Instant) {
        for p in self.plans.iter_mut().filter(|p| p.due <= now) {
            p.ready = true;
        }
    }

    /// True when a copy is due.
    pub fn any_due(&self, now: Instant) -> bool {
        self.plans.iter().any(|p| p.due <= now)
    }

    /// The next copy due now, dropping those that expired.
    pub fn take_due(&mut self, now: Instant) -> Option<Plan> {
        loop {
            let i = self.plans.iter().position(|p| p.due <= now)?;
            let plan = self.plans.remove(i)?;
            if plan.expires >= now {
                return Some(plan);
            }
            self.dropped(plan.group);
        }
    }

    /// A copy of `group` went out.
    pub fn on_copy_sent(&mut self, group: u64) {
        if let Some(g) = self.groups.get_mut(&group) {
            g.planned = g.planned.saturating_sub(1);
            g.unresolved += 1;
        }
    }

    /// A planned copy of `group` will not go (expired, or nothing left to copy).
    pub fn dropped(&mut self, group: u64) {
        if let Some(g) = self.groups.get_mut(&group) {
            g.planned = g.planned.saturating_sub(1);
        }
        self.forget_if_done(group);
    }

    /// A packet in flight was acknowledged.
    pub fn on_acked(&mut self, in_flight: bool, group: Option<u64>) {
        if in_flight {
            self.loss.on_outcome(false);
        }
        let Some(group) = group else { return };
        if let Some(g) = self.groups.get_mut(&group) {
            g.delivered = true;
            g.unresolved = g.unresolved.saturating_sub(1);
            // The data arrived: copies not sent yet are not needed.
            if g.planned > 0 {
                g.planned = 0;
                self.plans.retain(|p| p.group != group);
            }
        }
        self.forget_if_done(group);
    }

    /// Packet `pn`, of `group` if it is a tail, was declared lost.
    pub fn on_lost(&mut self, pn: u64, in_flight: bool, group: Option<u64>) -> LostMember {
        if in_flight {
            self.loss.on_outcome(true);
        }
        let Some(group) = group else {
            return LostMember::Lost;
        };
        let Some(g) = self.groups.get_mut(&group) else {
            return LostMember::Lost;
        };
        g.unresolved = g.unresolved.saturating_sub(1);
        let verdict = if g.delivered || g.unresolved > 0 {
            LostMember::Covered
        } else {
            // Every member sent is lost: the data goes again (with copies of its
            // own), and copies of this group not sent yet would only race it.
            g.planned = 0;
            self.plans.retain(|p| p.group != group);
            LostMember::Lost
        };
        if verdict == LostMember::Covered {
            if self.hidden.len() >= MAX_HIDDEN {
                self.hidden.pop_first();
            }
            self.hidden.insert(pn);
        }
        self.forget_if_done(group);
        verdict
    }

    /// Packet `pn`, declared lost, was acknowledged after all: true if the controller
    /// heard of its loss (and should undo its response).
    pub fn on_spurious(&mut self, pn: u64) -> bool {
        !self.hidden.remove(&pn)
    }

    fn forget_if_done(&mut self, group: u64) {
        if self
            .groups
            .get(&group)
            .is_some_and(|g| g.unresolved == 0 && g.planned == 0)
        {
            self.groups.remove(&group);
        }
    }
}

impl Session {
    /// How many copies the packet whose frames are `frames` (of `size` bytes) gets:
    /// none unless it carries stream data and drains an app-limited sender (nothing
    /// queued, every byte written sent, and credit left: a sender that used up the
    /// peer's credit is limited by flow control, not by the application), and the
    /// sender is far below its window (in flight, with the copies, at most half of it).
    /// Bulk senders never drain, so they are never copied.
    pub(super) fn tail_copies_for(&self, frames: &SentFrames, size: usize) -> u8 {
        if frames.stream.is_none()
            || !self.streams.send_queue.is_empty()
            || self.pending.any()
            || self.flow.send_credit() == 0
        {
            return 0;
        }
        let drained = frames.stream_ranges().all(|r| {
            self.streams.map.get(&r.id).is_some_and(|st| {
                st.send.unsent() == st.send.end()
                    && !st.send.has_retransmit()
                    && st.send.end() < st.send_max
            })
        });
        if !drained {
            return 0;
        }
        let mut copies = self.tail.wanted(self.config.tail_copies);
        let in_flight = self.recovery.bytes_in_flight();
        let half_window = self.cc.window() / 2;
        while copies > 0 && in_flight + size as u64 * (1 + u64::from(copies)) > half_window {
            copies -= 1;
        }
        copies
    }

    /// Writes the next copy due, if any, into `buf` (below `max`) and `frames`; returns
    /// its group. A copy carries every range of the original not acknowledged since, or
    /// nothing: a copy with less would mark the group delivered while data is missing.
    pub(super) fn write_due_copy(
        &mut self,
        now: Instant,
        buf: &mut DatagramBuf<'_>,
        max: usize,
        frames: &mut SentFrames,
    ) -> Option<u64> {
        while let Some(plan) = self.tail.take_due(now) {
            let start = buf.len();
            let mut ranges = Vec::with_capacity(plan.ranges.len());
            let mut fits = true;
            for r in &plan.ranges {
                let Some(st) = self.streams.map.get(&r.id) else {
                    continue;
                };
                let from = r.range.start.max(st.send.acked_prefix()).min(r.range.end);
                let fin = r.fin && !st.fin_acked;
                if st.reset_sent.is_some() || (from == r.range.end && !fin) {
                    continue;
                }
                let len = (r.range.end - from) as usize;
                if buf.len() + StreamFrame::header_len(r.id.0, from, len) + len > max {
                    fits = false;
                    break;
                }
                StreamFrame::encode_header(buf, r.id.0, from, len, fin);
                st.send.copy_range(from..r.range.end, buf);
                ranges.push(StreamRange {
                    id: r.id,
                    range: from..r.range.end,
                    fin,
                });
            }
            if fits && !ranges.is_empty() {
                for r in ranges {
                    frames.push_stream(r);
                }
                frames.copy_group = Some(plan.group);
                return Some(plan.group);
            }
            buf.truncate(start);
            self.tail.dropped(plan.group);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::StreamId;

    fn range() -> Vec<StreamRange> {
        vec![StreamRange {
            id: StreamId(0),
            range: 0..1024,
            fin: false,
        }]
    }

    fn with_loss(lost: u32, of: u32) -> TailCopies {
        let mut t = TailCopies::default();
        for i in 0..of {
            t.loss.on_outcome(i < lost);
        }
        t
    }

    #[test]
    fn copies_follow_the_loss_rate() {
        assert_eq!(TailCopies::default().wanted(2), 1, "unknown loss: one copy");
        assert_eq!(with_loss(0, 300).wanted(2), 0, "clean path: none");
        assert_eq!(with_loss(3, 300).wanted(2), 1, "1%: one");
        assert_eq!(with_loss(15, 300).wanted(2), 2, "5%: two");
        assert_eq!(with_loss(60, 300).wanted(2), 2, "20%: capped");
        assert_eq!(with_loss(15, 300).wanted(1), 1, "capped by the config");
        assert_eq!(with_loss(15, 300).wanted(0), 0, "off");
    }

    #[test]
    fn a_member_lost_while_another_delivers_is_covered() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = TailCopies::default();
        t.on_original_sent(t0, ms(40), 10, &range(), 2);
        assert_eq!(t.deadline(), Some(t0 + ms(5)));
        assert!(t.take_due(t0 + ms(4)).is_none());
        let copy = t.take_due(t0 + ms(5)).expect("first copy due");
        assert_eq!((copy.group, copy.ranges.len()), (10, 1));
        t.on_copy_sent(10);
        // The original is lost while the copy is in flight: covered.
        assert_eq!(t.on_lost(10, true, Some(10)), LostMember::Covered);
        // The copy arrives: the second copy is not needed any more.
        t.on_acked(true, Some(10));
        assert!(t.take_due(t0 + ms(10)).is_none());
        assert!(t.groups.is_empty());
        // A late ACK of the original is not a spurious loss the controller heard of.
        assert!(!t.on_spurious(10));
        assert!(t.on_spurious(99));
    }

    #[test]
    fn a_group_all_lost_is_one_loss() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = TailCopies::default();
        t.on_original_sent(t0, ms(40), 20, &range(), 2);
        let _ = t.take_due(t0 + ms(5)).expect("copy");
        t.on_copy_sent(20);
        assert_eq!(t.on_lost(20, true, Some(20)), LostMember::Covered);
        assert_eq!(t.on_lost(21, true, Some(20)), LostMember::Lost);
        // The second copy, not sent yet, is dropped: the retransmission has its own.
        assert!(t.take_due(t0 + ms(10)).is_none());
        assert!(t.groups.is_empty());
        // A packet of no group is plain lost data.
        assert_eq!(t.on_lost(30, true, None), LostMember::Lost);
    }

    #[test]
    fn a_copy_held_too_long_by_the_window_expires() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = TailCopies::default();
        t.on_original_sent(t0, ms(40), 5, &range(), 1);
        t.on_timer(t0 + ms(5));
        assert_eq!(t.deadline(), None, "a ready copy has no deadline");
        assert!(t.any_due(t0 + ms(5)));
        // Due at 5 ms, it expires a quarter RTT later.
        assert!(t.take_due(t0 + ms(16)).is_none());
        assert!(!t.any_due(t0 + ms(16)));
        t.on_acked(true, Some(5));
        assert!(t.groups.is_empty());
    }
}
