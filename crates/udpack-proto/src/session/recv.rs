//! Input: a data packet is checked against replay, opened (with the keys of its phase,
//! `key_update.rs`), and its frames dispatched; the packet then counts for the ACK
//! policy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::error::{transport_error, TransportError};
use super::{Session, State};
use crate::frame::{Frame, Frames};
use crate::packet::decode_packet_number;
use crate::recovery::{AckOutcome, PACKET_NUMBER_LIMIT};
use crate::stream::StreamId;

impl Session {
    /// Handles a data packet addressed to this session. `datagram` is the whole
    /// datagram, opened in place; the header has been parsed already. Nothing keeps
    /// a reference to it: stream data are copied into their streams' buffers.
    /// The packet number came cut to `number_len` bytes (`cut`): it is restored from the
    /// largest one received. The clear header is the first `header_len` bytes.
    /// `scratch` is the endpoint's, reused for every ACK frame: processing one then
    /// allocates nothing, and idle sessions keep no vectors of their own for it.
    pub(crate) fn handle_data(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        (cut, number_len): (u64, usize),
        header_len: usize,
        datagram: &mut [u8],
        scratch: &mut AckOutcome,
    ) {
        self.now = self.now.max(now);
        let len = datagram.len();
        if self.keys.is_none() {
            self.stats.packets_dropped += 1;
            return;
        }
        if matches!(self.state, State::Draining { .. } | State::Drained) {
            return;
        }
        let number = decode_packet_number(self.replay.largest(), cut, number_len);
        if number >= PACKET_NUMBER_LIMIT || !self.replay.check(number) {
            self.stats.packets_dropped += 1;
            return;
        }
        let Some(plain) = self.open_packet(now, number, datagram, header_len) else {
            return;
        };
        let largest_before = self.replay.largest();
        self.replay.accept(number);
        self.stats.packets_received += 1;
        self.stats.bytes_received += len as u64;
        self.reset_idle(now);

        if let State::Closing { .. } = self.state {
            // As below: an authentic packet from the peer's address proves it, so the
            // CLOSE answer is not held back by the amplification limit.
            if remote == self.path.remote {
                self.path.validated = true;
            }
            self.close.answer();
            return;
        }

        self.on_keys_confirmed();
        if remote == self.path.remote {
            self.path.validated = true;
        } else {
            self.on_new_address(now, remote, number, largest_before, len);
        }

        let out_of_order = largest_before.is_some_and(|l| number != l + 1);
        self.ack.on_packet(now, number, largest_before);

        let payload = &datagram[header_len..header_len + plain];
        let mut eliciting = false;
        for frame in Frames::new(payload) {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    self.close_with_error(now, transport_error::FRAME_ENCODING, &e.to_string());
                    return;
                }
            };
            eliciting |= frame.is_ack_eliciting();
            if let Err(e) = self.handle_frame(now, remote, frame, scratch) {
                self.close_with_error(now, e.code, e.reason);
                return;
            }
            if self.is_closed() {
                return;
            }
        }
        self.check_goaway_done();
        if eliciting {
            self.ack.on_eliciting(
                now,
                out_of_order,
                self.config.ack_eliciting_threshold,
                self.config.max_ack_delay,
            );
        }
    }

    fn handle_frame(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        frame: Frame<'_>,
        out: &mut AckOutcome,
    ) -> Result<(), TransportError> {
        match frame {
            Frame::Padding | Frame::Ping => {}
            Frame::Ack(ack) => {
                let max_delay = self.peer_params.map_or(Duration::from_millis(25), |p| {
                    Duration::from_millis(p.max_ack_delay_ms)
                });
                let delay = Duration::from_micros(ack.delay_micros).min(max_delay);
                self.on_ack_frame(now, &ack.ranges, delay, out)?;
            }
            Frame::Stream(f) => self.on_stream_frame(f)?,
            Frame::ResetStream {
                id,
                code,
                final_size,
            } => self.on_reset_stream(StreamId(id), code, final_size)?,
            Frame::StopSending { id, code } => self.on_stop_sending(StreamId(id), code)?,
            Frame::MaxData(v) => self.on_max_data(v),
            Frame::MaxStreamData { id, max } => self.on_max_stream_data(StreamId(id), max)?,
            Frame::MaxStreams(v) => self.on_max_streams(v),
            Frame::PathChallenge(data) => self.pending.path_response = Some((data, remote)),
            Frame::PathResponse(data) => self.on_path_response(data),
            Frame::GoAway {
                code,
                streams,
                reason,
            } => self.on_goaway(code, streams, &reason),
            Frame::Close { app, code, reason } => self.on_close(now, app, code, &reason),
        }
        Ok(())
    }
}
