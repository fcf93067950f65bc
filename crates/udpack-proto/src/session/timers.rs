//! The session's timers: one [`Timer`] per kind, the deadline of each derived from the
//! state that owns it, and what firing each one does.

use std::time::{Duration, Instant};

use super::error::{CloseReason, HandshakeError};
use super::{Event, Session, State};

/// Every timer a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Client: the hello, or its copy, is due.
    Hello,
    /// Client: the handshake gives up.
    Connect,
    /// An ACK is due.
    Ack,
    /// Loss detection by time, or the probe timeout.
    Loss,
    /// Nothing heard for the idle timeout.
    Idle,
    /// A PING keeps the session (and NAT bindings) alive.
    Keepalive,
    /// The pacer lets the next packet go.
    Pacing,
    /// A copy of an app-limited tail packet is due (`tail_copy.rs`).
    TailCopy,
    /// A PATH_CHALLENGE is due again.
    PathProbe,
    /// The old key phase's opening key goes (3 PTO into the new phase).
    KeyDiscard,
    /// Closing or draining ends.
    Linger,
    /// Closing: an unprompted CLOSE repeat is due.
    CloseRepeat,
}

impl Timer {
    /// The timers that run in each state, in the order they fire.
    fn of(state: &State) -> &'static [Timer] {
        use Timer::*;
        match state {
            State::Handshake => &[Hello, Connect],
            State::Established => &[
                Ack, Loss, Idle, Keepalive, Pacing, TailCopy, PathProbe, KeyDiscard,
            ],
            State::Closing { .. } => &[Linger, CloseRepeat],
            State::Draining { .. } => &[Linger],
            State::Drained => &[],
        }
    }
}

impl Session {
    /// When `timer` fires next, if it runs.
    fn deadline(&self, timer: Timer) -> Option<Instant> {
        match timer {
            Timer::Hello => match (self.connect.hello_due, self.connect.hello_copy_due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            Timer::Connect => self.connect.deadline,
            Timer::Ack => self.ack.deadline(),
            Timer::Loss => self.recovery.timer(self.config.max_ack_delay),
            Timer::Idle => self.idle_deadline,
            Timer::Keepalive => self.keepalive_deadline(),
            Timer::Pacing => self.transmit.pacing_until,
            Timer::TailCopy => self.tail.deadline(),
            Timer::PathProbe => self.path.probe.as_ref().map(|p| p.next_send),
            Timer::KeyDiscard => self.key_discard_deadline(),
            Timer::Linger => match self.state {
                State::Closing { until } | State::Draining { until } => Some(until),
                _ => None,
            },
            Timer::CloseRepeat => self.close.repeat_at,
        }
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Timer::of(&self.state)
            .iter()
            .filter_map(|&t| self.deadline(t))
            .min()
    }

    /// Fires the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        match self.state {
            State::Handshake => {
                if self.connect.deadline.is_some_and(|d| now >= d) {
                    self.fail_connect(HandshakeError::TimedOut);
                }
                // The hello goes out from poll_transmit.
            }
            State::Closing { until } | State::Draining { until } => {
                if now >= until {
                    self.state = State::Drained;
                }
                // CLOSE repeats go out from poll_transmit.
            }
            State::Drained => {}
            State::Established => self.fire_established(now),
        }
    }

    fn fire_established(&mut self, now: Instant) {
        let due = |t: Option<Instant>| t.is_some_and(|t| now >= t);
        if due(self.idle_deadline) {
            self.state = State::Drained;
            self.recovery.clear();
            self.events.push_back(Event::Closed(CloseReason::TimedOut));
            return;
        }
        if due(self.transmit.pacing_until) {
            self.transmit.pacing_until = None;
        }
        if due(self.tail.deadline()) {
            // The copy goes out from poll_transmit, when the window allows.
            self.tail.on_timer(now);
        }
        if due(self.deadline(Timer::Loss)) {
            self.on_loss_timer(now);
        }
        if due(self.keepalive_deadline()) {
            self.pending.ping = true;
        }
        if let Some(keys) = self.keys.as_mut() {
            keys.discard_old(now);
        }
        // ACK and path probe deadlines are met by poll_transmit.
    }

    fn on_loss_timer(&mut self, now: Instant) {
        let mut lost = Vec::new();
        let probe = self.recovery.on_timeout(now, &mut lost);
        if !lost.is_empty() {
            self.on_lost(now, &lost);
        }
        if probe {
            let remote = self.path.remote;
            if let Some(size) = self.mtu.on_probe_timeout(remote, self.recovery.pto_count) {
                self.fall_back_for_black_hole(size);
            }
            self.transmit.probes = 2;
            // Resend the oldest data too, in case the probe is all that gets through.
            if let Some(p) = self.recovery.oldest_unacked() {
                let frames = p.frames.clone();
                self.requeue_frames(&frames);
            }
            self.pending.ping = true;
        }
    }

    /// Restarts the idle timer: the smaller of both sides' idle timeouts, never
    /// shorter than 3 PTOs so that a few lost packets do not end the session.
    pub(super) fn reset_idle(&mut self, now: Instant) {
        let ours = self.config.idle_timeout;
        let theirs = self
            .peer_params
            .map(|p| Duration::from_millis(p.idle_timeout_ms))
            .filter(|d| !d.is_zero());
        let t = match (ours.is_zero(), theirs) {
            (true, None) => return,
            (true, Some(t)) => t,
            (false, Some(t)) => ours.min(t),
            (false, None) => ours,
        };
        let floor = self.recovery.rtt.pto(self.config.max_ack_delay) * 3;
        self.idle_deadline = now.checked_add(t.max(floor));
    }

    fn keepalive_deadline(&self) -> Option<Instant> {
        // A PING already queued (the window or the amplification limit holds it back)
        // needs no timer: a deadline left in the past would make the timer fire
        // again and again without progress.
        if self.state != State::Established || self.pending.ping {
            return None;
        }
        self.config
            .keepalive
            .and_then(|k| self.transmit.last_ack_eliciting_sent.checked_add(k))
    }
}
