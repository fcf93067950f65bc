//! The application's calls on streams: open, accept, write, finish, reset, read, stop,
//! and the credit refresh that reading triggers.

use bytes::{Bytes, BytesMut};

use super::error::StreamError;
use super::streams::enqueue;
use super::{Session, Side, State};
use crate::stream::{RecvBuffer, StreamId};

impl Session {
    /// Opens a stream.
    pub fn open_stream(&mut self) -> Result<StreamId, StreamError> {
        match self.state {
            State::Established => {}
            State::Handshake => return Err(StreamError::Blocked),
            _ => return Err(StreamError::SessionClosed),
        }
        if self.close.going_away() {
            return Err(StreamError::GoingAway);
        }
        if self.streams.opened_local >= self.streams.max_local {
            self.streams.open_blocked = true;
            return Err(StreamError::LimitReached);
        }
        let id = StreamId::new(self.side == Side::Server, self.streams.opened_local);
        self.streams.opened_local += 1;
        let st = self.new_stream_state();
        self.streams.map.insert(id, st);
        Ok(id)
    }

    /// Takes the next stream the peer opened.
    pub fn accept_stream(&mut self) -> Option<StreamId> {
        self.streams.accept_queue.pop_front()
    }

    /// How many bytes a write on `id` would take now.
    pub fn write_capacity(&self, id: StreamId) -> Result<u64, StreamError> {
        let st = self
            .streams
            .map
            .get(&id)
            .ok_or(StreamError::UnknownStream)?;
        if let Some(code) = st.stopped_by_peer {
            return Err(StreamError::Stopped(code));
        }
        if st.write_closed() {
            return Err(StreamError::Finished);
        }
        if self.is_closed() {
            return Err(StreamError::SessionClosed);
        }
        let credit = st.send_max.saturating_sub(st.send.end());
        let buffer = self
            .config
            .send_buffer
            .saturating_sub(self.flow.send_buffered);
        Ok(credit.min(buffer))
    }

    /// Writes bytes to a stream; returns how many were taken (maybe fewer than given).
    /// [`StreamError::Blocked`] means none were: wait for `Event::StreamWritable`.
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, StreamError> {
        let cap = self.write_capacity(id)?;
        let n = (data.len() as u64).min(cap) as usize;
        self.write_taken(id, Bytes::copy_from_slice(&data[..n]), data.len())
    }

    /// Writes owned bytes without copying; returns how many were taken.
    pub fn write_bytes(&mut self, id: StreamId, mut data: Bytes) -> Result<usize, StreamError> {
        let cap = self.write_capacity(id)?;
        let want = data.len();
        data.truncate(cap.min(want as u64) as usize);
        self.write_taken(id, data, want)
    }

    /// Buffers `data`, the part of a write of `want` bytes that fits.
    fn write_taken(
        &mut self,
        id: StreamId,
        data: Bytes,
        want: usize,
    ) -> Result<usize, StreamError> {
        let n = data.len();
        let Some(st) = self.streams.map.get_mut(&id) else {
            return Err(StreamError::UnknownStream);
        };
        if n < want {
            st.write_blocked = true;
        }
        if n == 0 && want > 0 {
            return Err(StreamError::Blocked);
        }
        st.send.write(data);
        self.flow.send_buffered += n as u64;
        self.stats.stream_bytes_sent += n as u64;
        enqueue(&mut self.streams.send_queue, id, st);
        Ok(n)
    }

    /// Bytes of the stream's sending half the peer acknowledged, counted from the
    /// start without a gap: what an application reports as delivered. A stream whose
    /// every byte was acknowledged and which is gone counts as unknown.
    pub fn stream_acked(&self, id: StreamId) -> Result<u64, StreamError> {
        let st = self
            .streams
            .map
            .get(&id)
            .ok_or(StreamError::UnknownStream)?;
        Ok(st.send.acked_prefix())
    }

    /// Ends the stream after the bytes written so far.
    pub fn finish(&mut self, id: StreamId) -> Result<(), StreamError> {
        let st = self
            .streams
            .map
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        if let Some(code) = st.stopped_by_peer {
            return Err(StreamError::Stopped(code));
        }
        if st.write_closed() {
            return Err(StreamError::Finished);
        }
        st.finish_requested = true;
        enqueue(&mut self.streams.send_queue, id, st);
        Ok(())
    }

    /// Abandons sending on the stream: buffered data is dropped and the peer is told
    /// `code` and the final size: the highest offset sent, so bytes written but never
    /// sent take no session credit on either side.
    pub fn reset(&mut self, id: StreamId, code: u64) -> Result<(), StreamError> {
        let st = self
            .streams
            .map
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        if st.reset_sent.is_some() || (st.fin_acked && st.send.all_acked()) {
            return Ok(());
        }
        self.flow.send_buffered -= st.send.buffered();
        st.send.clear();
        st.reset_sent = Some(code);
        self.pending.reset.insert(id);
        Ok(())
    }

    /// Reads up to `max` in-order bytes, without a copy. `Ok(None)` is the end of the
    /// stream.
    pub fn read(&mut self, id: StreamId, max: usize) -> Result<Option<Bytes>, StreamError> {
        self.read_by(id, |r| r.read(max).map(|d| (d.len(), d)))
    }

    /// Copies up to `max` in-order bytes into `buf`: every byte that is ready, in one
    /// call, reserving room only for bytes that are here. `Ok(None)` is the end of the
    /// stream; an empty stream that is not at its end is `Blocked`, as for `read`.
    pub fn read_into(
        &mut self,
        id: StreamId,
        max: usize,
        buf: &mut BytesMut,
    ) -> Result<Option<usize>, StreamError> {
        self.read_by(id, |r| {
            let n = r.read_into(max, buf);
            (n > 0).then_some((n, n))
        })
    }

    /// The reads' common part: `take` takes bytes from the stream's buffer and says
    /// how many; the end of the stream, a reset and a closed session are reported
    /// once nothing is left to take.
    fn read_by<T>(
        &mut self,
        id: StreamId,
        take: impl FnOnce(&mut RecvBuffer) -> Option<(usize, T)>,
    ) -> Result<Option<T>, StreamError> {
        let closed = self.is_closed();
        let st = self
            .streams
            .map
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        if let Some(code) = st.reset_received {
            st.recv_done = true;
            self.maybe_remove_stream(id);
            return Err(StreamError::Reset(code));
        }
        if let Some((n, data)) = take(&mut st.recv) {
            self.flow.data_read += n as u64;
            self.stats.stream_bytes_received += n as u64;
            self.after_read(id);
            return Ok(Some(data));
        }
        if st.final_size == Some(st.recv.read_offset()) {
            if !st.recv_done {
                st.recv_done = true;
                self.maybe_remove_stream(id);
            }
            return Ok(None);
        }
        st.readable_reported = false;
        if closed {
            return Err(StreamError::SessionClosed);
        }
        Err(StreamError::Blocked)
    }

    /// True while a control frame is owed to the peer (credit, a stream limit, a
    /// reset...): what a read may leave for the sender to send.
    pub fn owes_control(&self) -> bool {
        self.pending.any()
    }

    /// Tells the peer to stop sending on `id`; unread data is discarded, and so is
    /// what arrives later. The stream is kept until its final size is known (the
    /// peer answers with a reset), so that every byte the peer sent is counted as
    /// consumed and its session credit given back.
    pub fn stop(&mut self, id: StreamId, code: u64) -> Result<(), StreamError> {
        let st = self
            .streams
            .map
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        if st.recv_done || st.stop_sent.is_some() {
            return Ok(());
        }
        st.stop_sent = Some(code);
        st.recv_done = true;
        // Every byte counted against the session credit so far counts as consumed, so
        // the credit is not lost (and so do the bytes that arrive later, up to the final
        // size).
        let unread = st.recv_counted.saturating_sub(st.recv.read_offset());
        self.flow.release_fragments(st.recv.held());
        st.recv.discard_to(st.recv_counted);
        self.flow.data_read += unread;
        self.pending.stop.insert(id);
        self.pending.max_stream_data.remove(&id);
        self.maybe_remove_stream(id);
        self.update_session_credit();
        Ok(())
    }

    /// After a read: refresh the stream's credit and the session's.
    fn after_read(&mut self, id: StreamId) {
        let srtt = self.recovery.rtt.smoothed();
        let now_hint = self.ack.largest_received_time();
        let mtu = u64::from(self.mtu.current());
        let Some(st) = self.streams.map.get_mut(&id) else {
            return;
        };
        if st.final_size.is_none()
            && st.recv_credit.refresh(
                st.recv.read_offset(),
                st.recv.max_received(),
                now_hint,
                srtt,
                mtu,
            )
        {
            self.pending.max_stream_data.insert(id);
        }
        self.update_session_credit();
    }

    /// Session credit: bytes count as consumed when the application reads them, and
    /// when it will never read them (the stream was stopped or reset).
    pub(super) fn update_session_credit(&mut self) {
        let srtt = self.recovery.rtt.smoothed();
        let now_hint = self.ack.largest_received_time();
        let mtu = u64::from(self.mtu.current());
        let flow = &mut self.flow;
        if flow
            .credit
            .refresh(flow.data_read, flow.data_received, now_hint, srtt, mtu)
        {
            self.pending.max_data = true;
        }
    }
}
