//! Ending a session: GOAWAY (no new streams, close once the current ones are done),
//! CLOSE (now), the linger of Closing and Draining, and the repeats of CLOSE.
//!
//! ```text
//!  Established --goaway() / GOAWAY--> (both GOAWAYs, all streams done) --initiator--> Closing
//!  Established --close() / transport error--> Closing --linger--> Drained
//!  Established --CLOSE received--> Draining --linger--> Drained
//! ```

use std::time::{Duration, Instant};

use std::borrow::Cow;

use super::error::CloseReason;
use super::{Event, Session, State, Transmit};
use crate::datagram::DatagramBuf;
use crate::frame::{Frame, MAX_REASON_LEN};

/// Shortest time a closing or draining session lingers: long enough for the peer's
/// retransmissions to reach us and be answered with CLOSE on a lossy path.
const MIN_CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Unprompted repeats of a CLOSE frame while closing.
const CLOSE_REPEATS: u8 = 4;
/// At most one CLOSE per this interval however much the peer sends.
const CLOSE_ANSWER_INTERVAL: Duration = Duration::from_millis(50);

/// GOAWAY and CLOSE state.
#[derive(Debug, Default)]
pub(crate) struct CloseState {
    /// GOAWAY we sent (code, reason).
    pub goaway_sent: Option<(u64, String)>,
    /// We sent the first GOAWAY.
    goaway_initiator: bool,
    /// GOAWAY the peer sent: code, reason, and how many streams it opened in all.
    goaway_received: Option<(u64, String, u64)>,
    /// The CLOSE frame we answer with while closing.
    frame: Option<Frame<'static>>,
    /// A CLOSE is owed.
    resend: bool,
    /// Closing: when CLOSE is repeated unprompted, and how many repeats are left.
    pub repeat_at: Option<Instant>,
    repeats_left: u8,
    last_sent: Option<Instant>,
}

impl CloseState {
    /// A GOAWAY was sent or received: no new streams.
    pub fn going_away(&self) -> bool {
        self.goaway_sent.is_some() || self.goaway_received.is_some()
    }

    /// Something arrived while closing: answer with CLOSE.
    pub fn answer(&mut self) {
        self.resend = true;
    }
}

impl Session {
    /// Announces that this side opens and accepts no new streams; the session closes
    /// with `code` once every current stream is done (all data delivered both ways).
    pub fn goaway(&mut self, code: u64, reason: &str) {
        if self.is_closed() || self.close.goaway_sent.is_some() {
            return;
        }
        self.close.goaway_sent = Some((code, truncate_reason(reason)));
        self.close.goaway_initiator = self.close.goaway_received.is_none();
        self.pending.goaway = true;
        self.check_goaway_done();
    }

    /// Closes the session now with an application `code`; unsent data is dropped.
    pub fn close(&mut self, now: Instant, code: u64, reason: &str) {
        let reason = truncate_reason(reason);
        self.enter_closing(
            now,
            close_frame(true, code, &reason),
            CloseReason::Local { code, reason },
        );
    }

    /// Closes the session because the peer broke a rule.
    pub(super) fn close_with_error(&mut self, now: Instant, code: u64, reason: &str) {
        tracing::debug!(target: "udpack", sid = %self.id_str(), code, reason, "transport error");
        self.enter_closing(
            now,
            close_frame(false, code, reason),
            CloseReason::Transport {
                code,
                reason: reason.to_string(),
                by_peer: false,
            },
        );
    }

    fn enter_closing(&mut self, now: Instant, frame: Frame<'static>, reason: CloseReason) {
        match self.state {
            State::Established => {}
            State::Handshake => {
                self.state = State::Drained;
                self.events.push_back(Event::Closed(reason));
                return;
            }
            _ => return,
        }
        let linger = self.close_linger();
        self.state = State::Closing {
            until: now + linger,
        };
        let c = &mut self.close;
        c.frame = Some(frame);
        c.resend = true;
        // A lost CLOSE would leave the peer waiting for its idle timeout: repeat it a
        // few times across the linger period, besides answering what arrives.
        c.repeats_left = CLOSE_REPEATS;
        c.repeat_at = Some(now + linger / u32::from(CLOSE_REPEATS + 1));
        self.recovery.clear();
        self.events.push_back(Event::Closed(reason));
    }

    /// How long Closing and Draining last: `max(3 PTO, 1 s)`.
    pub(super) fn close_linger(&self) -> Duration {
        (self.recovery.rtt.pto(self.config.max_ack_delay) * 3).max(MIN_CLOSE_LINGER)
    }

    /// Closes the session once both sides sent GOAWAY, every stream the peer opened
    /// has arrived, and every stream is done both ways. Only the side that sent the
    /// first GOAWAY closes (and reports [`CloseReason::Local`]); the other side waits
    /// for its APP_CLOSE (and reports [`CloseReason::Peer`]), both with the code of
    /// that first GOAWAY.
    pub(super) fn check_goaway_done(&mut self) {
        if self.state != State::Established
            || !self.close.goaway_initiator
            || !self.streams.map.is_empty()
            || self.pending.goaway
        {
            return;
        }
        let (Some((code, reason)), Some((_, _, peer_streams))) =
            (&self.close.goaway_sent, &self.close.goaway_received)
        else {
            return;
        };
        if self.streams.opened_remote < *peer_streams {
            return;
        }
        let (code, reason) = (*code, reason.clone());
        self.enter_closing(
            self.now,
            close_frame(true, code, &reason),
            CloseReason::Local { code, reason },
        );
    }

    /// A GOAWAY frame: answer with ours, so the peer knows how many streams to expect.
    pub(super) fn on_goaway(&mut self, code: u64, streams: u64, reason: &[u8]) {
        if self.close.goaway_received.is_some() {
            return;
        }
        let reason = String::from_utf8_lossy(reason).into_owned();
        self.close.goaway_received = Some((code, reason.clone(), streams));
        if self.close.goaway_sent.is_none() {
            self.close.goaway_sent = Some((code, reason.clone()));
            self.pending.goaway = true;
        }
        self.events.push_back(Event::GoAway { code, reason });
    }

    /// A CLOSE frame: the peer is gone; stay quiet for the linger.
    pub(super) fn on_close(&mut self, now: Instant, app: bool, code: u64, reason: &[u8]) {
        let reason = String::from_utf8_lossy(reason).into_owned();
        let why = if app {
            CloseReason::Peer { code, reason }
        } else {
            CloseReason::Transport {
                code,
                reason,
                by_peer: true,
            }
        };
        let until = now + self.close_linger();
        self.state = State::Draining { until };
        self.recovery.clear();
        self.events.push_back(Event::Closed(why));
    }

    /// A CLOSE (with our last ACK), when one is owed or a repeat is due.
    pub(super) fn transmit_close(
        &mut self,
        now: Instant,
        buf: &mut DatagramBuf<'_>,
    ) -> Option<Transmit> {
        if self.close.repeat_at.is_some_and(|t| now >= t) {
            let linger = self.close_linger();
            let c = &mut self.close;
            c.resend = true;
            c.repeats_left = c.repeats_left.saturating_sub(1);
            c.repeat_at = match (c.repeats_left, &self.state) {
                (0, _) => None,
                (_, State::Closing { .. }) => Some(now + linger / u32::from(CLOSE_REPEATS + 1)),
                _ => None,
            };
        }
        if !self.close.resend {
            return None;
        }
        if self
            .close
            .last_sent
            .is_some_and(|t| now < t + CLOSE_ANSWER_INTERVAL)
        {
            return None;
        }
        let frame = self.close.frame.clone()?;
        let pn = self.begin_packet(buf)?;
        self.ack.write_final(buf, now);
        frame.encode(buf);
        let destination = self.path.remote;
        // An unproven address gets at most three times what it sent, CLOSE included;
        // held back, it goes out once the peer proves its address.
        let t = self.finish_packet(
            now,
            buf,
            pn,
            destination,
            super::packet_builder::Sent::control(),
        )?;
        self.close.resend = false;
        self.close.last_sent = Some(now);
        self.recovery.clear();
        Some(t)
    }
}

fn close_frame(app: bool, code: u64, reason: &str) -> Frame<'static> {
    Frame::Close {
        app,
        code,
        reason: Cow::Owned(reason.as_bytes().to_vec()),
    }
}

/// A reason cut to what a frame carries, on a character boundary.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}
