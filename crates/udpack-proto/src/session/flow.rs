//! Flow control. One [`CreditWindow`] type serves the session and every stream: the
//! credit this side gives the peer, refreshed as the application consumes data, and a
//! window that grows to the path's bandwidth-delay product (on reads) and to the time
//! a loss takes to repair (while data waits out of order behind it).

use std::time::{Duration, Instant};

use super::error::TransportError;

/// Credit is refreshed each time this fraction of a window is consumed, so that one
/// lost update (or two) costs the sender nothing while the next is on its way.
const CREDIT_UPDATE_FRACTION: u64 = 4;
/// A window doubles when a refresh comes within this many smoothed RTTs of the
/// previous one.
const WINDOW_GROWTH_RTTS: u32 = 4;

/// Out-of-order memory a session may hold beyond twice its credit window.
const FRAGMENT_ALLOWANCE: u64 = 1 << 20;

/// The credit we give the peer on one window (a stream's or the session's).
#[derive(Debug, Clone)]
pub(crate) struct CreditWindow {
    window: u64,
    max_window: u64,
    /// Highest offset the peer may send: the credit as announced.
    limit: u64,
    /// The time of the newest packet when the credit was last refreshed.
    updated: Option<Instant>,
    /// The time of the newest packet when the window last grew behind a hole.
    grown_behind_hole: Option<Instant>,
}

impl CreditWindow {
    /// A window of `initial` bytes that may grow to `max_window`.
    pub fn new(initial: u64, max_window: u64) -> Self {
        CreditWindow {
            window: initial,
            max_window,
            limit: initial,
            updated: None,
            grown_behind_hole: None,
        }
    }

    /// Highest offset the peer may send.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The window's current size.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Called when the application consumed data up to `consumed` (the peer sent up to
    /// `received`): once a quarter of the window is used up, the credit moves to
    /// `consumed + window`, and the window doubles if it was used up within a few RTTs
    /// (losses stall reads for an RTT or more at a time) or the peer was blocked on it.
    /// Returns true when the new limit must be announced.
    pub fn refresh(
        &mut self,
        consumed: u64,
        received: u64,
        now: Option<Instant>,
        srtt: Duration,
        mtu: u64,
    ) -> bool {
        if self.limit.saturating_sub(consumed) >= self.window - self.window / CREDIT_UPDATE_FRACTION
        {
            return false;
        }
        // The peer has used all its credit: the window, not the reader, limits.
        let peer_blocked = received + mtu >= self.limit;
        if let (Some(now), Some(last)) = (now, self.updated) {
            if peer_blocked || now.saturating_duration_since(last) < srtt * WINDOW_GROWTH_RTTS {
                self.window = (self.window * 2).min(self.max_window);
            }
        }
        self.updated = now;
        self.limit = consumed + self.window;
        true
    }

    /// The application has read all it can, and the peer has sent up to within a
    /// quarter of the window's limit, with data held out of order behind a hole. A loss
    /// holds the reader back for the round trips its repair takes (several at high
    /// loss, where repairs are lost too), and a window shorter than the rate × that
    /// time stalls the sender however fast the reader is; the updates of
    /// [`Self::refresh`] come only with reads, which cannot come before the hole is
    /// filled. So the window doubles at once, up to its maximum, a quarter of a window
    /// early so that the new credit (itself lost at times) reaches the sender before it
    /// runs out. The peer earns each doubling with real data: this side must hold
    /// `held` ≥ a quarter of the window out of order (bytes, not offsets: a far byte
    /// earns nothing), and it comes at most once per smoothed RTT. Returns true when
    /// the new limit must be announced.
    pub fn grow_behind_hole(
        &mut self,
        consumed: u64,
        received: u64,
        held: u64,
        now: Option<Instant>,
        srtt: Duration,
        mtu: u64,
    ) -> bool {
        let quarter = self.window / CREDIT_UPDATE_FRACTION;
        let nearly_blocked = received.saturating_add(quarter.max(mtu)) >= self.limit;
        if !nearly_blocked || held < quarter || self.window >= self.max_window {
            return false;
        }
        let Some(now) = now else {
            return false;
        };
        if self
            .grown_behind_hole
            .is_some_and(|t| now.saturating_duration_since(t) < srtt)
        {
            return false;
        }
        self.grown_behind_hole = Some(now);
        self.window = (self.window * 2).min(self.max_window);
        // Always above the old limit: consumed + 2 × window > consumed + window ≥ limit.
        self.limit = self.limit.max(consumed + self.window);
        true
    }
}

/// Session-level flow control, both ways.
#[derive(Debug)]
pub(crate) struct SessionFlow {
    /// Highest stream byte total the peer lets us send (its MAX_DATA).
    pub peer_max_data: u64,
    /// New stream bytes we sent, counted against `peer_max_data`.
    pub data_sent: u64,
    /// Bytes the application wrote that are not yet acknowledged.
    pub send_buffered: u64,
    /// The credit we give the peer.
    pub credit: CreditWindow,
    /// Stream bytes the peer counted against our credit: highest offsets received and
    /// final sizes of reset streams.
    pub data_received: u64,
    /// Of those, the ones consumed: read, or never to be read (stopped, reset).
    pub data_read: u64,
    /// Memory the streams' out-of-order chunks hold, per-chunk overhead included.
    pub(crate) fragments_held: u64,
}

impl SessionFlow {
    pub fn new(initial_window: u64, max_window: u64) -> Self {
        SessionFlow {
            peer_max_data: 0,
            data_sent: 0,
            send_buffered: 0,
            credit: CreditWindow::new(initial_window, max_window),
            data_received: 0,
            data_read: 0,
            fragments_held: 0,
        }
    }

    /// A stream's out-of-order memory went from `before` to `after`. Honest data held
    /// out of order is at most the credit given plus a few percent of overhead; far
    /// beyond that, the peer fragments on purpose to exhaust memory.
    pub fn on_fragments(&mut self, before: u64, after: u64) -> Result<(), TransportError> {
        self.fragments_held = (self.fragments_held + after).saturating_sub(before);
        let budget = self
            .credit
            .window()
            .saturating_mul(2)
            .saturating_add(FRAGMENT_ALLOWANCE);
        if self.fragments_held > budget {
            return Err(TransportError::flow_control(
                "out-of-order data beyond the memory budget",
            ));
        }
        Ok(())
    }

    /// A stream dropped `n` bytes of out-of-order memory (discarded, stopped, reset).
    pub fn release_fragments(&mut self, n: u64) {
        self.fragments_held = self.fragments_held.saturating_sub(n);
    }

    /// Session credit we may still use for new bytes.
    pub fn send_credit(&self) -> u64 {
        self.peer_max_data.saturating_sub(self.data_sent)
    }

    /// Counts `n` new bytes of the peer's against our credit.
    pub fn on_received(&mut self, n: u64, what: &'static str) -> Result<(), TransportError> {
        self.data_received += n;
        if self.data_received > self.credit.limit() {
            return Err(TransportError::flow_control(what));
        }
        Ok(())
    }

    /// Unacknowledged and unread bytes held for this session.
    pub fn buffered(&self) -> u64 {
        self.send_buffered + self.data_received.saturating_sub(self.data_read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_after_a_quarter_and_grows_when_used_up_quickly() {
        let t0 = Instant::now();
        let srtt = Duration::from_millis(10);
        let mut w = CreditWindow::new(1000, 4000);
        assert!(!w.refresh(200, 200, Some(t0), srtt, 100), "under a quarter");
        assert!(w.refresh(300, 300, Some(t0), srtt, 100));
        assert_eq!(w.limit(), 1300, "first refresh: no earlier one to compare");
        // A quarter used again within 4 RTTs: the window doubles.
        assert!(w.refresh(600, 600, Some(t0 + srtt), srtt, 100));
        assert_eq!(w.limit(), 2600);
        // Slowly, and the peer not blocked: it stays.
        assert!(w.refresh(1200, 1200, Some(t0 + srtt * 100), srtt, 100));
        assert_eq!(w.limit(), 3200);
        // Blocked peer: it grows even when slow, up to the maximum.
        for i in 2..10 {
            let limit = w.limit();
            w.refresh(limit, limit, Some(t0 + srtt * 100 * i), srtt, 100);
        }
        let before = w.limit();
        assert!(w.refresh(before, before, None, srtt, 100));
        assert_eq!(w.limit(), before + 4000, "capped at the maximum window");
    }

    #[test]
    fn a_window_grows_behind_a_hole_for_data_held_and_once_per_rtt() {
        let t0 = Instant::now();
        let srtt = Duration::from_millis(10);
        let mut w = CreditWindow::new(1000, 8000);
        // Half the credit used: the peer is not held back yet.
        assert!(!w.grow_behind_hole(0, 500, 400, Some(t0), srtt, 10));
        // Near the limit, but a far byte with little data behind it earns nothing:
        // what counts is what this side holds.
        assert!(!w.grow_behind_hole(100, 990, 200, Some(t0), srtt, 10));
        assert_eq!((w.window(), w.limit()), (1000, 1000));
        // Near the limit with a quarter held behind the hole at 100: the window doubles.
        assert!(w.grow_behind_hole(100, 760, 300, Some(t0), srtt, 10));
        assert_eq!((w.window(), w.limit()), (2000, 2100));
        // Within the same RTT, no more.
        assert!(!w.grow_behind_hole(100, 2000, 1500, Some(t0 + srtt / 2), srtt, 10));
        assert_eq!(w.window(), 2000);
        // An RTT later, near the new limit: again.
        assert!(!w.grow_behind_hole(100, 1500, 1000, Some(t0 + srtt), srtt, 10));
        assert!(w.grow_behind_hole(100, 1700, 1000, Some(t0 + srtt), srtt, 10));
        assert_eq!((w.window(), w.limit()), (4000, 4100));
        assert!(w.grow_behind_hole(100, 3200, 1500, Some(t0 + srtt * 2), srtt, 10));
        assert_eq!((w.window(), w.limit()), (8000, 8100));
        // Never past the maximum.
        assert!(!w.grow_behind_hole(100, 8000, 6000, Some(t0 + srtt * 3), srtt, 10));
        assert_eq!((w.window(), w.limit()), (8000, 8100));
    }
}
