//! The send decision and the assembly of a data packet: may an ack-eliciting packet go
//! now (congestion window, pacer, probes), or only an ACK, or nothing; when the sender
//! is app-limited; and which frames fill the packet (ACK, a tail copy, control, stream
//! data round-robin).

use std::time::Instant;

use rand::Rng;

use super::packet_builder::Sent;
use super::pending::{SentFrames, StreamRange};
use super::streams::enqueue;
use super::{Session, Transmit};
use crate::datagram::DatagramBuf;
use crate::frame::{Frame, StreamFrame};
use crate::packet::{MAX_DATA_HEADER_LEN, TAG_LEN};

/// A packet number is skipped once per this many packets, chosen at random.
const SKIP_INTERVAL: std::ops::Range<u64> = 256..1280;
/// Smallest room worth a stream frame.
const MIN_STREAM_FRAME_ROOM: usize = 24;

/// Send-side timing state.
#[derive(Debug)]
pub(crate) struct TransmitState {
    /// The pacer holds the next packet until then.
    pub pacing_until: Option<Instant>,
    /// Probe packets owed after a probe timeout; they may exceed the window.
    pub probes: u8,
    /// When the last ack-eliciting packet went out (keepalive, ACK-of-ACK PING).
    pub last_ack_eliciting_sent: Instant,
    /// The packet number at which the next one is skipped.
    pub next_skip: u64,
    /// The largest congestion window so far: the record of sent packets may hold that
    /// much even after the window shrinks.
    pub peak_window: u64,
}

impl TransmitState {
    pub fn new(now: Instant) -> Self {
        TransmitState {
            pacing_until: None,
            probes: 0,
            last_ack_eliciting_sent: now,
            next_skip: SKIP_INTERVAL.start,
            peak_window: 0,
        }
    }
}

impl Session {
    /// The datagram size changed (path MTU discovery): the controller and the pacer
    /// count packets of the new size.
    pub(super) fn set_datagram_size(&mut self, size: u16) {
        tracing::debug!(target: "udpack", sid = %self.id_str(), size, "datagram size");
        self.cc.on_mtu_change(size);
        self.pacer.set_mtu(size);
    }

    /// The path stopped carrying the size in use: back to `size`, the base.
    pub(super) fn fall_back_for_black_hole(&mut self, size: u16) {
        tracing::debug!(target: "udpack", sid = %self.id_str(), size, "path MTU black hole: back to the base size");
        self.set_datagram_size(size);
    }

    /// No path MTU discovery for this session: the size in use stays.
    pub(crate) fn stop_mtu_discovery(&mut self) {
        self.mtu.stop();
    }

    /// The size of a path MTU probe to send: one is due, there is data waiting (a
    /// probe on an idle session would only cost), and the window holds that much
    /// already (`PathMtu::probe_due`).
    fn mtu_probe_due(&mut self, now: Instant) -> Option<u16> {
        if !self.path.validated || self.transmit.probes > 0 {
            return None;
        }
        let want = self.pending.any() || !self.streams.send_queue.is_empty();
        if !want {
            return None;
        }
        self.mtu.probe_due(now, self.cc.window())
    }

    /// A path MTU probe (`path_mtu.rs`): a PING padded to the size tried, if one is
    /// due and the pacer lets it go. It is not in flight: it takes no room from
    /// data in the window, and its loss tells of the path's size, not of congestion
    /// (`delivery.rs`).
    pub(super) fn transmit_mtu_probe(
        &mut self,
        now: Instant,
        buf: &mut DatagramBuf<'_>,
    ) -> Option<Transmit> {
        let size = self.mtu_probe_due(now)?;
        let srtt = self.recovery.rtt.smoothed();
        let window = self.cc.window();
        let rate = self.cc.pacing_rate();
        match self.pacer.delay(now, u64::from(size), rate, window, srtt) {
            Some(t) if t > now => {
                self.transmit.pacing_until = Some(t);
                return None;
            }
            _ => {}
        }
        let pn = self.begin_packet(buf)?;
        Frame::Ping.encode(buf);
        buf.pad_to(usize::from(size) - TAG_LEN);
        let frames = SentFrames {
            mtu_probe: true,
            ..SentFrames::default()
        };
        let destination = self.path.remote;
        let t = self.finish_packet(now, buf, pn, destination, Sent::mtu_probe(frames))?;
        self.mtu.on_probe_sent(pn, size);
        self.pacer.on_sent(now, t.size as u64);
        self.transmit.last_ack_eliciting_sent = now;
        Some(Transmit {
            mtu_probe: true,
            ..t
        })
    }

    /// The next data packet, if anything may and should go now.
    pub(super) fn transmit_data(
        &mut self,
        now: Instant,
        buf: &mut DatagramBuf<'_>,
    ) -> Option<Transmit> {
        let mtu = usize::from(self.mtu.current());
        let mut limit = mtu;
        if !self.path.validated {
            limit = limit.min(self.path.budget() as usize);
            if limit < MAX_DATA_HEADER_LEN + TAG_LEN + 16 {
                self.ack.hold(now);
                return None;
            }
        }
        let ack_wanted = self.ack.wanted(now);
        // A probe that is due goes first: data leaves the pacer's tokens to it.
        let pace = self.mtu_probe_due(now).map_or(mtu as u64, u64::from);
        let may_elicit = self.may_elicit(now, mtu as u64, pace);
        // A PATH_RESPONSE does not wait for room in the window: the peer's challenges
        // would run out first (its move to our new address waits for the answer).
        let response_due = self
            .pending
            .path_response
            .is_some_and(|(_, a)| a == self.path.remote);
        if !may_elicit && !ack_wanted && !response_due {
            return None;
        }
        if may_elicit && self.recovery.next_packet_number() >= self.transmit.next_skip {
            // Now and then a number is left out: acknowledging it is lying (RFC 9000
            // §21.4), and it closes the session.
            self.recovery.skip_packet_number();
            self.transmit.next_skip =
                self.recovery.next_packet_number() + self.rng.gen_range(SKIP_INTERVAL.clone());
        }
        let pn = self.begin_packet(buf)?;
        let max_payload = limit - TAG_LEN;
        let mut frames = SentFrames::default();
        let mut eliciting = false;

        // ACK first: it keeps the peer's clock running.
        let room = max_payload - buf.len();
        frames.largest_acked = self.ack.write(buf, now, room, ack_wanted);
        if !may_elicit && response_due {
            eliciting |= self.write_path_response(buf, max_payload);
        }
        // A copy of a tail goes before anything else: it is insurance against a loss
        // that is being decided now.
        let copy_of = if may_elicit {
            self.write_due_copy(now, buf, max_payload, &mut frames)
        } else {
            None
        };
        if copy_of.is_some() {
            eliciting = true;
        } else if may_elicit {
            eliciting |= self.write_control_frames(buf, max_payload, &mut frames);
            eliciting |= self.write_stream_frames(buf, max_payload, &mut frames);
            if !eliciting && self.transmit.probes > 0 {
                Frame::Ping.encode(buf);
                eliciting = true;
            }
            if !eliciting {
                // Allowed to send but nothing was sendable (flow control holds the
                // queued data): the rate samples now understate the path.
                self.on_app_limited();
            }
        }
        // An ACK alone goes out only when one is due (flow-control-blocked streams
        // must not turn into a stream of ACK-only packets).
        if !eliciting && (!ack_wanted || frames.largest_acked.is_none()) {
            buf.clear();
            return None;
        }
        if !eliciting
            && self.ack.wants_ack_of_acks(
                now,
                self.transmit.last_ack_eliciting_sent,
                self.recovery.rtt.smoothed(),
            )
            && buf.len() < max_payload
        {
            Frame::Ping.encode(buf);
            eliciting = true;
        }
        if frames.largest_acked.is_some() {
            self.ack.on_sent();
        }
        let sent_goaway = frames.goaway;
        let copies = match copy_of {
            None if eliciting => self.tail_copies_for(&frames, buf.len() + TAG_LEN),
            _ => 0,
        };
        let tail_ranges = (copies > 0).then(|| {
            frames.copy_group = Some(pn);
            frames.stream_ranges().cloned().collect::<Vec<_>>()
        });
        let destination = self.path.remote;
        let sent = Sent::data(eliciting, frames);
        let Some(t) = self.finish_packet(now, buf, pn, destination, sent) else {
            if let Some(group) = copy_of {
                self.tail.dropped(group);
            }
            return None;
        };
        if let Some(group) = copy_of {
            self.tail.on_copy_sent(group);
            self.stats.tail_copies += 1;
        }
        if let Some(ranges) = tail_ranges {
            let srtt = self.recovery.rtt.smoothed();
            self.tail.on_original_sent(now, srtt, pn, &ranges, copies);
        }
        if eliciting {
            self.cc
                .on_sent(now, t.size as u64, self.recovery.bytes_in_flight());
            self.pacer.on_sent(now, t.size as u64);
            self.transmit.last_ack_eliciting_sent = now;
            self.transmit.probes = self.transmit.probes.saturating_sub(1);
        }
        if sent_goaway {
            // Our GOAWAY was the last thing the close waited for, maybe.
            self.check_goaway_done();
        }
        Some(t)
    }

    /// May an ack-eliciting packet go now? Something must want to go, the window must
    /// have room for `mtu` bytes and the pacer tokens for `pace` (a PTO probe is
    /// allowed past both). With nothing to send below the window, the sender is
    /// app-limited.
    fn may_elicit(&mut self, now: Instant, mtu: u64, pace: u64) -> bool {
        let want_eliciting =
            self.pending.any() || !self.streams.send_queue.is_empty() || self.tail.any_due(now);
        if !want_eliciting {
            if self.recovery.bytes_in_flight() < self.cc.window() {
                self.on_app_limited();
            }
            return false;
        }
        if self.transmit.probes > 0 {
            return true;
        }
        let in_flight = self.recovery.bytes_in_flight();
        if in_flight + mtu > self.cc.window() {
            return false;
        }
        let srtt = self.recovery.rtt.smoothed();
        match self
            .pacer
            .delay(now, pace, self.cc.pacing_rate(), self.cc.window(), srtt)
        {
            Some(t) if t > now => {
                self.transmit.pacing_until = Some(t);
                false
            }
            _ => true,
        }
    }

    fn on_app_limited(&mut self) {
        self.cc.on_app_limited(self.recovery.bytes_in_flight());
        self.rate.on_app_limited(self.recovery.bytes_in_flight());
    }

    /// Fills the rest of the packet with stream data, streams taken round-robin.
    fn write_stream_frames(
        &mut self,
        buf: &mut DatagramBuf<'_>,
        max: usize,
        sent: &mut SentFrames,
    ) -> bool {
        let mut wrote = false;
        let mut visited = 0;
        let queued = self.streams.send_queue.len();
        while visited < queued && max.saturating_sub(buf.len()) > MIN_STREAM_FRAME_ROOM {
            let Some(id) = self.streams.send_queue.pop_front() else {
                break;
            };
            visited += 1;
            let Some(st) = self.streams.map.get_mut(&id) else {
                continue;
            };
            st.in_send_queue = false;
            let room = (max - buf.len()) as u64;
            let offset_guess = st.send.unsent();
            // Room for data behind a header without a Length: a frame that fills the
            // packet (or one that nothing could follow) goes without one.
            let header =
                StreamFrame::header_len_to_end(id.0, offset_guess.max(st.send.end())) as u64;
            let data_room = room.saturating_sub(header);
            let new_limit = st
                .send_max
                .min(st.send.unsent().saturating_add(self.flow.send_credit()));
            let before_unsent = st.send.unsent();
            let range = st.send.next_range(data_room, new_limit);
            let end = st.send.end();
            let (range, fin) = match range {
                Some(r) => {
                    let fin = st.finish_requested && r.end == end && !st.fin_acked;
                    (r, fin)
                }
                None if st.finish_requested && !st.fin_sent && st.send.unsent() == end => {
                    (end..end, true)
                }
                None => {
                    enqueue(&mut self.streams.send_queue, id, st);
                    continue;
                }
            };
            let len = (range.end - range.start) as usize;
            let with_length = StreamFrame::header_len(id.0, range.start, len) + len;
            let last = visited >= queued
                || (max - buf.len())
                    .checked_sub(with_length)
                    .is_none_or(|left| left <= MIN_STREAM_FRAME_ROOM);
            if last {
                StreamFrame::encode_header_to_end(buf, id.0, range.start, fin);
            } else {
                StreamFrame::encode_header(buf, id.0, range.start, len, fin);
            }
            st.send.copy_range(range.clone(), buf);
            if fin {
                st.fin_sent = true;
            }
            let new_bytes = st.send.unsent() - before_unsent;
            self.flow.data_sent += new_bytes;
            self.stats.bytes_retransmitted += (len as u64).saturating_sub(new_bytes);
            sent.push_stream(StreamRange { id, range, fin });
            wrote = true;
            enqueue(&mut self.streams.send_queue, id, st);
            if last {
                break;
            }
        }
        wrote
    }
}
