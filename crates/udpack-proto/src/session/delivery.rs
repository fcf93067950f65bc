//! What the peer's ACK frames mean: loss recovery decides which packets were
//! acknowledged or lost; here acknowledged data frees its buffers and finishes streams,
//! lost frames are queued again, and the congestion controller and the delivery-rate
//! estimator learn of both.

use std::ops::Range;
use std::time::{Duration, Instant};

use super::error::TransportError;
use super::pending::SentFrames;
use super::tail_copy::LostMember;
use super::{Event, Session};
use crate::congestion::{AckSample, LossSample};
use crate::recovery::{AckOutcome, SentPacket};

impl Session {
    /// An ACK frame's ranges; `delay` is the peer's, capped at its max_ack_delay.
    pub(super) fn on_ack_frame(
        &mut self,
        now: Instant,
        ranges: &[Range<u64>],
        delay: Duration,
        out: &mut AckOutcome,
    ) -> Result<(), TransportError> {
        out.acked.clear();
        out.lost.clear();
        out.spurious.clear();
        out.rtt_sample = None;
        if self.recovery.on_ack(now, ranges, delay, out).is_err() {
            return Err(TransportError::protocol_violation(
                "ack of an unsent packet",
            ));
        }
        if let (Some(keys), Some((largest, _))) = (self.keys.as_mut(), out.acked.last()) {
            keys.on_acked(*largest);
        }
        // A path MTU probe declared lost is forgotten by recovery (it was not in
        // flight); an ACK of it that comes after all still proves its size.
        if let Some(pn) = self.mtu.lost_probe() {
            if ranges.iter().any(|r| r.contains(&pn)) {
                if let Some(size) = self.mtu.on_probe_acked(now, pn) {
                    self.set_datagram_size(size);
                }
            }
        }
        self.on_ack_outcome(now, delay, out);
        if !out.spurious.is_empty() {
            self.on_spurious_loss(now, out);
        }
        // Lost packets are done with; do not keep their frames until the next ACK.
        out.lost.clear();
        Ok(())
    }

    fn on_ack_outcome(&mut self, now: Instant, ack_delay: Duration, out: &mut AckOutcome) {
        let mut acked_bytes = 0u64;
        let mut largest_sent = None;
        for (pn, p) in &out.acked {
            if p.frames.mtu_probe {
                if let Some(size) = self.mtu.on_probe_acked(now, *pn) {
                    self.set_datagram_size(size);
                }
            }
            self.tail.on_acked(p.in_flight, p.frames.copy_group);
            if p.in_flight {
                acked_bytes += u64::from(p.size);
                self.mtu.on_packet_acked(p.size, p.time);
            }
            if let Some(r) = &p.rate {
                self.rate.on_acked(now, r);
            }
            largest_sent = Some(p.time);
        }
        if !out.lost.is_empty() {
            self.on_lost(now, &out.lost);
        }
        for (_, p) in out.acked.drain(..) {
            self.on_packet_acked(p.frames);
        }
        if let Some(largest_acked_sent) = largest_sent {
            let min_rtt = self
                .recovery
                .rtt
                .has_sample()
                .then(|| self.recovery.rtt.min());
            let sample = AckSample {
                acked_bytes,
                bytes_in_flight: self.recovery.bytes_in_flight(),
                largest_acked_sent,
                latest_rtt: out.rtt_sample,
                ack_delay,
                smoothed_rtt: self.recovery.rtt.smoothed(),
                min_rtt: self.recovery.rtt.min(),
                rate: self.rate.take_sample(min_rtt),
            };
            self.cc.on_ack(now, &sample);
        }
    }

    /// Packets declared lost were acknowledged after all: their data is delivered (a
    /// retransmission not yet sent is dropped) and the controller undoes its response.
    fn on_spurious_loss(&mut self, now: Instant, out: &mut AckOutcome) {
        for (pn, p) in out.spurious.drain(..) {
            self.stats.spurious_losses += 1;
            // One packet at a time: each undoes what its own loss did (a tail copy
            // whose loss was covered by another did nothing, nor did an MTU probe's).
            if self.tail.on_spurious(pn) && p.in_flight && !p.frames.mtu_probe {
                self.cc.on_spurious_loss(
                    now,
                    &LossSample {
                        lost_bytes: u64::from(p.size),
                        largest_lost_sent: p.time,
                        bytes_in_flight: self.recovery.bytes_in_flight(),
                        persistent: false,
                    },
                );
            }
            self.on_packet_acked(p.frames);
        }
    }

    fn on_packet_acked(&mut self, frames: SentFrames) {
        let SentFrames {
            stream,
            more_stream,
            reset,
            largest_acked,
            ..
        } = frames;
        if let Some(l) = largest_acked {
            self.ack.on_peer_saw(l);
        }
        for r in stream.into_iter().chain(more_stream) {
            let Some(st) = self.streams.map.get_mut(&r.id) else {
                continue;
            };
            let before = st.send.buffered();
            st.send.on_ack(r.range);
            let freed = before - st.send.buffered();
            self.flow.send_buffered -= freed;
            if r.fin {
                st.fin_acked = true;
                // A FIN acknowledged after it was declared lost needs no resend.
                st.fin_sent = true;
            }
            if st.write_blocked && freed > 0 {
                st.write_blocked = false;
                self.events.push_back(Event::StreamWritable(r.id));
            }
            if st.finish_requested && st.fin_acked && st.send.all_acked() && !st.finished_reported {
                st.finished_reported = true;
                self.events.push_back(Event::StreamFinished(r.id));
            }
            self.maybe_remove_stream(r.id);
        }
        for id in reset {
            if let Some(st) = self.streams.map.get_mut(&id) {
                st.reset_acked = true;
                self.maybe_remove_stream(id);
            }
        }
        // Buffer space freed on one stream may unblock writers on others.
        if self.flow.send_buffered < self.config.send_buffer {
            for (id, st) in self.streams.map.iter_mut() {
                if st.write_blocked && st.send_max > st.send.end() {
                    st.write_blocked = false;
                    self.events.push_back(Event::StreamWritable(*id));
                }
            }
        }
    }

    /// Packets declared lost (by an ACK or the loss timer): their frames are queued
    /// again and the controller hears of the loss.
    pub(super) fn on_lost(&mut self, now: Instant, lost: &[(u64, SentPacket)]) {
        let mut lost_bytes = 0;
        let mut largest_lost_sent = None;
        for (pn, p) in lost {
            if p.frames.mtu_probe {
                // The path does not carry that size: nothing else was in it, and the
                // controller is not told (RFC 9000 §14.4).
                self.stats.mtu_probes_lost += 1;
                self.mtu.on_probe_lost(now, *pn);
                continue;
            }
            self.stats.packets_lost += 1;
            let member = self.tail.on_lost(*pn, p.in_flight, p.frames.copy_group);
            if member == LostMember::Covered {
                // Another copy of the same data delivers it or may still: no data is
                // lost, and the controller hears of the group's loss only once. The
                // copies carry only the stream data: what else the packet carried
                // (GOAWAY, credit, resets) goes again.
                let others = SentFrames {
                    stream: None,
                    more_stream: Vec::new(),
                    ..p.frames.clone()
                };
                self.requeue_frames(&others);
                continue;
            }
            if p.in_flight {
                lost_bytes += u64::from(p.size);
                // A packet that was not in flight (a path probe) says nothing of
                // congestion on this path.
                largest_lost_sent = Some(p.time);
                let remote = self.path.remote;
                if let Some(size) = self.mtu.on_packet_lost(remote, p.size, p.time) {
                    self.fall_back_for_black_hole(size);
                }
            }
            self.requeue_frames(&p.frames);
        }
        if let Some(largest_lost_sent) = largest_lost_sent {
            let persistent = self.recovery.is_persistent(lost, self.config.max_ack_delay);
            self.cc.on_loss(
                now,
                &LossSample {
                    lost_bytes,
                    largest_lost_sent,
                    bytes_in_flight: self.recovery.bytes_in_flight(),
                    persistent,
                },
            );
        }
    }
}
