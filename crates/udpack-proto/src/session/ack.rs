//! ACK policy, all in one place: which packet numbers we received, when an ACK is owed
//! (at once for out-of-order packets and every `ack_eliciting_threshold` packets,
//! otherwise within `max_ack_delay`), writing the ACK frame, pruning ranges the peer
//! has seen, and the once-per-RTT PING of a receiver that sends only ACKs.

use std::time::{Duration, Instant};

use crate::datagram::DatagramBuf;
use crate::frame::{encode_ack, MAX_ACK_RANGES};
use crate::packet::ReplayWindow;
use crate::range_set::RangeSet;

/// Room an ACK frame may take in a CLOSE packet.
const CLOSE_ACK_ROOM: usize = 200;

/// What we received and owe acknowledgements for.
#[derive(Debug, Default)]
pub(crate) struct AckState {
    received: RangeSet,
    largest_received_time: Option<Instant>,
    /// Ack-eliciting packets received since our last ACK.
    eliciting_unacked: u64,
    /// An ACK is due at this time at the latest.
    deadline: Option<Instant>,
    /// An ACK is due now.
    immediate: bool,
    /// Test-only misbehaviour: never acknowledge anything.
    #[cfg(test)]
    pub never_ack: bool,
}

impl AckState {
    /// Records packet `number`, received at `now`; `largest_before` is the largest
    /// number received until then.
    pub fn on_packet(&mut self, now: Instant, number: u64, largest_before: Option<u64>) {
        if largest_before.is_none_or(|l| number > l) {
            self.largest_received_time = Some(now);
        }
        self.received.insert(number..number + 1);
        if let Some(max) = self.received.max() {
            self.received
                .remove_below(max.saturating_sub(ReplayWindow::SIZE));
        }
        while self.received.len() > MAX_ACK_RANGES * 2 {
            if let Some(first) = self.received.first() {
                self.received.remove(first);
            }
        }
    }

    /// After a packet's frames were processed: an ack-eliciting packet makes an ACK due,
    /// at once when it came out of order or the threshold is reached.
    pub fn on_eliciting(
        &mut self,
        now: Instant,
        out_of_order: bool,
        threshold: u64,
        max_delay: Duration,
    ) {
        self.eliciting_unacked += 1;
        if out_of_order || self.eliciting_unacked >= threshold {
            self.immediate = true;
        } else if self.deadline.is_none() {
            self.deadline = Some(now + max_delay);
        }
    }

    /// The time of the newest packet received.
    pub fn largest_received_time(&self) -> Option<Instant> {
        self.largest_received_time
    }

    /// True when an ACK must go out now.
    pub fn wanted(&self, now: Instant) -> bool {
        self.immediate || self.deadline.is_some_and(|t| now >= t)
    }

    /// The ACK timer.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The amplification limit holds every packet back: an ACK that came due waits as
    /// owed at once, not as a timer left in the past that would fire without end (only
    /// input lifts the limit).
    pub fn hold(&mut self, now: Instant) {
        if self.deadline.is_some_and(|t| now >= t) {
            self.deadline = None;
            self.immediate = true;
        }
    }

    /// Writes an ACK frame into a packet that goes out anyway, if one is owed: only when
    /// something that asks for one arrived, so the peer's own ACK-only packets are never
    /// acknowledged. Returns the largest number acknowledged.
    pub fn write(
        &self,
        buf: &mut DatagramBuf<'_>,
        now: Instant,
        room: usize,
        due: bool,
    ) -> Option<u64> {
        #[cfg(test)]
        if self.never_ack {
            return None;
        }
        if self.received.is_empty() || !(due || self.eliciting_unacked > 0) {
            return None;
        }
        encode_ack(buf, &self.received, self.delay_micros(now), room)
            .then(|| self.received.max())
            .flatten()
    }

    /// The last ACK, carried by a CLOSE packet: the peer learns its final data arrived.
    pub fn write_final(&self, buf: &mut DatagramBuf<'_>, now: Instant) {
        encode_ack(buf, &self.received, self.delay_micros(now), CLOSE_ACK_ROOM);
    }

    fn delay_micros(&self, now: Instant) -> u64 {
        self.largest_received_time
            .map_or(0, |t| now.saturating_duration_since(t).as_micros() as u64)
    }

    /// An ACK went out: nothing is owed until more arrives.
    pub fn on_sent(&mut self) {
        self.immediate = false;
        self.deadline = None;
        self.eliciting_unacked = 0;
    }

    /// The peer has seen our ACK up to `largest`: stop repeating those ranges.
    pub fn on_peer_saw(&mut self, largest: u64) {
        self.received.remove_below(largest + 1);
    }

    /// A receiver that only sends ACKs asks for an ACK of them about once per RTT, so
    /// that it learns what the peer has seen and its ACK frames stay short.
    pub fn wants_ack_of_acks(&self, now: Instant, last_eliciting: Instant, srtt: Duration) -> bool {
        self.received.len() > 1 && now.saturating_duration_since(last_eliciting) >= srtt
    }
}
