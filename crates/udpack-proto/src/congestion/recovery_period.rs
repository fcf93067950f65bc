//! The recovery period of a loss-based controller (RFC 9002 §7.3.2): one window
//! reduction per congestion event, and the undo of that reduction when every loss of
//! the event proves spurious (as Linux TCP does on DSACK). NewReno and CUBIC share it.

use std::time::Instant;

use super::LossSample;

/// The current recovery period, and what its congestion event cut.
#[derive(Debug)]
pub(super) struct RecoveryPeriod<S> {
    /// Start of the current period: packets sent before it cannot cut the window
    /// again, and their acknowledgements do not grow it.
    start: Option<Instant>,
    /// Start of the period before: a spurious loss of a packet sent before it was
    /// declared in an earlier period and cannot undo this one.
    prior_start: Option<Instant>,
    /// The controller's state before the cut, and the bytes declared lost in the
    /// period not yet found spurious.
    undo: Option<(S, u64)>,
}

impl<S> Default for RecoveryPeriod<S> {
    fn default() -> Self {
        RecoveryPeriod {
            start: None,
            prior_start: None,
            undo: None,
        }
    }
}

impl<S: Copy> RecoveryPeriod<S> {
    /// True if a packet sent at `sent` belongs to the current period.
    pub fn contains(&self, sent: Instant) -> bool {
        self.start.is_some_and(|start| sent <= start)
    }

    /// Packets were declared lost. True when this starts a new congestion event: the
    /// caller then makes its one reduction, and `before` (its state now) is what an
    /// undo restores.
    pub fn on_loss(&mut self, now: Instant, loss: &LossSample, before: S) -> bool {
        let new = loss.lost_bytes > 0 && !self.contains(loss.largest_lost_sent);
        if new {
            self.undo = Some((before, 0));
            self.prior_start = self.start;
            self.start = Some(now);
        }
        if let Some((_, lost)) = &mut self.undo {
            *lost = lost.saturating_add(loss.lost_bytes);
        }
        new
    }

    /// Persistent congestion: the next loss starts a new period, and nothing is
    /// undone.
    pub fn end(&mut self) {
        self.start = None;
        self.undo = None;
    }

    /// Packets declared lost were acknowledged after all. Returns the state to restore
    /// once every loss of the current period proved spurious (the period then ends).
    pub fn on_spurious_loss(&mut self, loss: &LossSample) -> Option<S> {
        let earlier_period = self
            .prior_start
            .is_some_and(|p| loss.largest_lost_sent <= p);
        if !self.contains(loss.largest_lost_sent) || earlier_period {
            return None;
        }
        let (before, lost) = self.undo.as_mut()?;
        *lost = lost.saturating_sub(loss.lost_bytes);
        if *lost > 0 {
            return None;
        }
        let before = *before;
        self.end();
        Some(before)
    }
}
