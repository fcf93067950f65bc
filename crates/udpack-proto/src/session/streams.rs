//! The streams of a session: each stream's state, the stream map and its limits, and
//! what the peer's STREAM, RESET_STREAM, STOP_SENDING, MAX_STREAM_DATA and MAX_STREAMS
//! frames do to them. The application's calls on streams are in `stream_io.rs`.

use std::collections::{BTreeMap, VecDeque};

use super::error::TransportError;
use super::flow::CreditWindow;
use super::{Event, Session, Side};
use crate::frame::StreamFrame;
use crate::stream::{RecvBuffer, SendBuffer, StreamId};

/// One stream, both halves.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub send: SendBuffer,
    /// Highest offset the peer lets us send.
    pub send_max: u64,
    pub finish_requested: bool,
    pub fin_sent: bool,
    pub fin_acked: bool,
    pub finished_reported: bool,
    /// We reset the stream with this code.
    pub reset_sent: Option<u64>,
    pub reset_acked: bool,
    /// The peer asked us to stop with this code.
    pub stopped_by_peer: Option<u64>,
    pub write_blocked: bool,
    pub in_send_queue: bool,

    pub recv: RecvBuffer,
    /// Highest offset the peer counted against the session credit: the end of any
    /// STREAM frame (a FIN without data too) or a reset's final size. Counted here once,
    /// whatever order the frames arrive in.
    pub recv_counted: u64,
    /// The credit given to the peer on this stream.
    pub recv_credit: CreditWindow,
    pub final_size: Option<u64>,
    /// The peer reset the stream with this code.
    pub reset_received: Option<u64>,
    /// The application saw the end (fin or reset).
    pub recv_done: bool,
    /// We sent STOP_SENDING with this code.
    pub stop_sent: Option<u64>,
    pub readable_reported: bool,
}

impl StreamState {
    fn new(send_max: u64, recv_credit: CreditWindow) -> Self {
        StreamState {
            send: SendBuffer::default(),
            send_max,
            finish_requested: false,
            fin_sent: false,
            fin_acked: false,
            finished_reported: false,
            reset_sent: None,
            reset_acked: false,
            stopped_by_peer: None,
            write_blocked: false,
            in_send_queue: false,
            recv: RecvBuffer::default(),
            recv_counted: 0,
            recv_credit,
            final_size: None,
            reset_received: None,
            recv_done: false,
            stop_sent: None,
            readable_reported: false,
        }
    }

    pub fn send_done(&self) -> bool {
        (self.reset_sent.is_some() && self.reset_acked)
            || (self.finish_requested && self.fin_acked && self.send.all_acked())
    }

    /// The receive half is over: the application saw its end or stopped it, and the
    /// final size is known, so every byte the peer counts against the session credit
    /// has been counted here too.
    pub fn recv_finished(&self) -> bool {
        self.recv_done && self.final_size.is_some()
    }

    pub fn write_closed(&self) -> bool {
        self.finish_requested || self.reset_sent.is_some()
    }

    /// True if the stream has something for the packet builder.
    pub fn wants_send(&self) -> bool {
        if self.reset_sent.is_some() {
            return false;
        }
        self.send.has_retransmit()
            || (self.send.unsent() < self.send.end() && self.send.unsent() < self.send_max)
            || (self.finish_requested && !self.fin_sent && self.send.unsent() == self.send.end())
    }
}

/// Puts a stream on the send queue if it has something to send and is not there yet.
pub(crate) fn enqueue(queue: &mut VecDeque<StreamId>, id: StreamId, st: &mut StreamState) {
    if !st.in_send_queue && st.wants_send() {
        st.in_send_queue = true;
        queue.push_back(id);
    }
}

/// The stream map, the queues and the stream limits.
#[derive(Debug)]
pub(crate) struct Streams {
    /// Ordered, so that iteration (and with it the send order) is deterministic.
    pub map: BTreeMap<StreamId, StreamState>,
    /// Streams with something to send, round-robin.
    pub send_queue: VecDeque<StreamId>,
    /// Streams the peer opened that the application has not taken yet.
    pub accept_queue: VecDeque<StreamId>,
    /// Streams we opened so far (next index).
    pub opened_local: u64,
    /// Streams the peer opened so far (next index).
    pub opened_remote: u64,
    /// Streams we may open in all (peer's MAX_STREAMS).
    pub max_local: u64,
    /// Streams the peer may open in all (our MAX_STREAMS).
    pub max_remote: u64,
    /// An open failed at the limit: report when the peer raises it.
    pub open_blocked: bool,
}

impl Streams {
    pub fn new(max_remote: u64) -> Self {
        Streams {
            map: BTreeMap::new(),
            send_queue: VecDeque::new(),
            accept_queue: VecDeque::new(),
            opened_local: 0,
            opened_remote: 0,
            max_local: 0,
            max_remote,
            open_blocked: false,
        }
    }
}

impl Session {
    pub(super) fn new_stream_state(&self) -> StreamState {
        let peer_stream_max = self.peer_params.map_or(0, |p| p.max_stream_data);
        StreamState::new(
            peer_stream_max,
            CreditWindow::new(
                self.config.initial_stream_window,
                self.config.max_stream_window,
            ),
        )
    }

    /// Makes sure a stream named by the peer exists (opening peer streams up to it).
    /// Returns false when the stream is already gone (a late frame to ignore).
    pub(super) fn ensure_remote_stream(&mut self, id: StreamId) -> Result<bool, TransportError> {
        if self.streams.map.contains_key(&id) {
            return Ok(true);
        }
        let ours = id.server_opened() == (self.side == Side::Server);
        if ours {
            if id.index() >= self.streams.opened_local {
                return Err(TransportError::protocol_violation(
                    "frame for a stream we never opened",
                ));
            }
            return Ok(false);
        }
        if id.index() < self.streams.opened_remote {
            return Ok(false);
        }
        if id.index() >= self.streams.max_remote {
            return Err(TransportError::stream_limit("too many streams"));
        }
        while self.streams.opened_remote <= id.index() {
            let new = StreamId::new(self.side == Side::Client, self.streams.opened_remote);
            self.streams.opened_remote += 1;
            let st = self.new_stream_state();
            self.streams.map.insert(new, st);
            // After our GOAWAY the peer opens no more; streams it opened before it
            // heard (within the credit it had) are served as usual.
            self.streams.accept_queue.push_back(new);
            self.events.push_back(Event::StreamOpened(new));
        }
        Ok(self.streams.map.contains_key(&id))
    }

    /// A STREAM frame.
    pub(super) fn on_stream_frame(&mut self, f: StreamFrame<'_>) -> Result<(), TransportError> {
        let id = StreamId(f.id);
        if !self.ensure_remote_stream(id)? {
            return Ok(());
        }
        let Some(st) = self.streams.map.get_mut(&id) else {
            return Ok(());
        };
        let end = f.offset + f.data.len() as u64;
        if end > st.recv_credit.limit() {
            return Err(TransportError::flow_control("stream data beyond credit"));
        }
        if let Some(fs) = st.final_size {
            if end > fs || (f.fin && end != fs) {
                return Err(TransportError::final_size("data beyond the final size"));
            }
        }
        if f.fin {
            if end < st.recv_counted {
                return Err(TransportError::final_size("final size below received data"));
            }
            st.final_size = Some(end);
        }
        if st.reset_received.is_some() {
            // The final size was counted when the reset arrived.
            return Ok(());
        }
        let grew = end.saturating_sub(st.recv_counted);
        st.recv_counted = st.recv_counted.max(end);
        self.flow.on_received(grew, "data beyond session credit")?;
        if st.stop_sent.is_some() {
            // Discarded on arrival: consumed as far as the session credit goes.
            let unread = end.saturating_sub(st.recv.read_offset());
            self.flow.release_fragments(st.recv.held());
            st.recv.discard_to(end);
            let final_known = st.final_size.is_some();
            self.flow.data_read += unread;
            if final_known {
                self.maybe_remove_stream(id);
            }
            self.update_session_credit();
            return Ok(());
        }
        let before = st.recv.held();
        st.recv.insert(f.offset, &f.data);
        self.flow.on_fragments(before, st.recv.held())?;
        if st.final_size.is_some() {
            self.pending.max_stream_data.remove(&id);
        }
        if st.recv.readable() || st.final_size == Some(st.recv.read_offset()) {
            self.report_readable(id);
        } else if st.final_size.is_none() && st.recv.max_received() > st.recv.read_offset() {
            self.grow_credit_behind_hole(id);
        }
        Ok(())
    }

    /// Data arrived beyond a hole on stream `id`, whose in-order bytes are all read:
    /// grow the stream's window, and the session's, if the peer has nearly used them
    /// up and this stream holds a quarter of them out of order
    /// ([`CreditWindow::grow_behind_hole`]). Bytes, not memory, count: tiny pieces that
    /// cost more memory than data earn little (the out-of-order memory budget stops
    /// them). The session's window counts this stream's bytes alone, so in-order bytes
    /// the application left unread on other streams do not grow it.
    ///
    /// [`CreditWindow::grow_behind_hole`]: super::flow::CreditWindow::grow_behind_hole
    fn grow_credit_behind_hole(&mut self, id: StreamId) {
        let now = self.ack.largest_received_time();
        let srtt = self.recovery.rtt.smoothed();
        let mtu = u64::from(self.mtu.current());
        let Some(st) = self.streams.map.get_mut(&id) else {
            return;
        };
        let (read, received, held) = (
            st.recv.read_offset(),
            st.recv.max_received(),
            st.recv.held_bytes(),
        );
        if st
            .recv_credit
            .grow_behind_hole(read, received, held, now, srtt, mtu)
        {
            self.pending.max_stream_data.insert(id);
        }
        let flow = &mut self.flow;
        if flow
            .credit
            .grow_behind_hole(flow.data_read, flow.data_received, held, now, srtt, mtu)
        {
            self.pending.max_data = true;
        }
    }

    /// A RESET_STREAM frame: the peer abandoned sending at `final_size`.
    pub(super) fn on_reset_stream(
        &mut self,
        id: StreamId,
        code: u64,
        final_size: u64,
    ) -> Result<(), TransportError> {
        if !self.ensure_remote_stream(id)? {
            return Ok(());
        }
        let Some(st) = self.streams.map.get_mut(&id) else {
            return Ok(());
        };
        if st.final_size.is_some_and(|f| f != final_size) || final_size < st.recv_counted {
            return Err(TransportError::final_size("reset changes the final size"));
        }
        if final_size > st.recv_credit.limit() {
            return Err(TransportError::flow_control("reset beyond stream credit"));
        }
        let stopped = st.stop_sent.is_some();
        if st.reset_received.is_some() || (st.recv_done && !stopped) {
            return Ok(());
        }
        // The final size counts against the session credit, as the peer counted it when
        // it sent those bytes.
        let new = final_size.saturating_sub(st.recv_counted);
        st.recv_counted = st.recv_counted.max(final_size);
        self.flow.on_received(new, "reset beyond session credit")?;
        // Bytes the application will never read give their credit back (after stop(),
        // those up to the highest offset received did already).
        let unread = final_size - st.recv.read_offset();
        st.final_size = Some(final_size);
        self.flow.release_fragments(st.recv.held());
        st.recv.discard_to(final_size);
        self.flow.data_read += unread;
        self.pending.max_stream_data.remove(&id);
        if stopped {
            self.maybe_remove_stream(id);
        } else {
            st.reset_received = Some(code);
            self.report_readable(id);
        }
        self.update_session_credit();
        Ok(())
    }

    /// A STOP_SENDING frame: the peer wants no more; we reset with its code.
    pub(super) fn on_stop_sending(
        &mut self,
        id: StreamId,
        code: u64,
    ) -> Result<(), TransportError> {
        if !self.ensure_remote_stream(id)? {
            return Ok(());
        }
        if let Some(st) = self.streams.map.get_mut(&id) {
            if st.stopped_by_peer.is_none() {
                st.stopped_by_peer = Some(code);
                let _ = self.reset(id, code);
                self.events.push_back(Event::StreamStopped { id, code });
            }
        }
        Ok(())
    }

    /// A MAX_STREAM_DATA frame: more credit on one stream.
    pub(super) fn on_max_stream_data(
        &mut self,
        id: StreamId,
        max: u64,
    ) -> Result<(), TransportError> {
        if !self.ensure_remote_stream(id)? {
            return Ok(());
        }
        if let Some(st) = self.streams.map.get_mut(&id) {
            if max > st.send_max {
                st.send_max = max;
                enqueue(&mut self.streams.send_queue, id, st);
                if st.write_blocked {
                    st.write_blocked = false;
                    self.events.push_back(Event::StreamWritable(id));
                }
            }
        }
        Ok(())
    }

    /// A MAX_DATA frame: more session credit.
    pub(super) fn on_max_data(&mut self, max: u64) {
        if max > self.flow.peer_max_data {
            self.flow.peer_max_data = max;
            self.requeue_blocked_streams();
        }
    }

    /// A MAX_STREAMS frame: we may open more streams.
    pub(super) fn on_max_streams(&mut self, max: u64) {
        if max > self.streams.max_local {
            self.streams.max_local = max;
            if self.streams.open_blocked {
                self.streams.open_blocked = false;
                self.events.push_back(Event::StreamsAvailable);
            }
        }
    }

    pub(super) fn report_readable(&mut self, id: StreamId) {
        if let Some(st) = self.streams.map.get_mut(&id) {
            if !st.readable_reported {
                st.readable_reported = true;
                self.events.push_back(Event::StreamReadable(id));
            }
        }
    }

    fn requeue_blocked_streams(&mut self) {
        for (id, st) in self.streams.map.iter_mut() {
            enqueue(&mut self.streams.send_queue, *id, st);
            if st.write_blocked {
                st.write_blocked = false;
                self.events.push_back(Event::StreamWritable(*id));
            }
        }
    }

    /// Forgets a stream that is done both ways; a peer's stream gives its slot back.
    pub(super) fn maybe_remove_stream(&mut self, id: StreamId) {
        let Some(st) = self.streams.map.get(&id) else {
            return;
        };
        if !(st.send_done() && st.recv_finished()) {
            return;
        }
        if st.in_send_queue {
            self.streams.send_queue.retain(|s| *s != id);
        }
        self.streams.map.remove(&id);
        self.pending.max_stream_data.remove(&id);
        if id.server_opened() != (self.side == Side::Server) && self.close.goaway_sent.is_none() {
            self.streams.max_remote += 1;
            self.pending.max_streams = true;
        }
        self.check_goaway_done();
    }
}
