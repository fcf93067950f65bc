//! Control frames waiting to be sent, the record of what each sent packet carried, and
//! the requeueing of both when a packet is lost: a lost frame is sent again with fresh
//! values (the newest credit, not the old one).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::ops::Range;

use std::borrow::Cow;

use super::streams::enqueue;
use super::Session;
use crate::datagram::DatagramBuf;
use crate::frame::Frame;
use crate::stream::StreamId;

/// Control frames owed to the peer.
#[derive(Debug, Default)]
pub(crate) struct PendingControl {
    pub max_data: bool,
    pub max_streams: bool,
    pub max_stream_data: BTreeSet<StreamId>,
    pub reset: BTreeSet<StreamId>,
    pub stop: BTreeSet<StreamId>,
    pub goaway: bool,
    pub ping: bool,
    pub path_response: Option<([u8; 8], SocketAddr)>,
}

impl PendingControl {
    /// True if any frame is owed.
    pub fn any(&self) -> bool {
        self.max_data
            || self.max_streams
            || !self.max_stream_data.is_empty()
            || !self.reset.is_empty()
            || !self.stop.is_empty()
            || self.goaway
            || self.ping
            || self.path_response.is_some()
    }
}

/// A range of stream bytes carried by a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRange {
    pub id: StreamId,
    pub range: Range<u64>,
    pub fin: bool,
}

/// What a packet carried that must be sent again (with fresh values) if it is lost.
#[derive(Debug, Default, Clone)]
pub struct SentFrames {
    /// Stream data; the first range inline because most packets carry one.
    pub stream: Option<StreamRange>,
    /// Further stream ranges.
    pub more_stream: Vec<StreamRange>,
    pub max_data: bool,
    pub max_streams: bool,
    pub max_stream_data: Vec<StreamId>,
    pub reset: Vec<StreamId>,
    pub stop: Vec<StreamId>,
    pub goaway: bool,
    /// Largest packet number acknowledged by an ACK frame in this packet.
    pub largest_acked: Option<u64>,
    /// A path MTU probe (`path_mtu.rs`): its loss is not congestion.
    pub mtu_probe: bool,
    /// The packet is a tail sent more than once (`tail_copy.rs`): the number of the
    /// original, which names the group of it and its copies.
    pub copy_group: Option<u64>,
}

impl SentFrames {
    /// Every stream range in the packet.
    pub fn stream_ranges(&self) -> impl Iterator<Item = &StreamRange> {
        self.stream.iter().chain(self.more_stream.iter())
    }

    /// Adds a stream range.
    pub fn push_stream(&mut self, r: StreamRange) {
        if self.stream.is_none() {
            self.stream = Some(r);
        } else {
            self.more_stream.push(r);
        }
    }
}

impl Session {
    /// A PATH_RESPONSE owed to the peer's address, if it fits; true if written. It
    /// goes out even when the congestion window is full (see `transmit_data`): the
    /// peer's move to a new address waits for it, and its challenges do not wait for
    /// ever.
    pub(super) fn write_path_response(&mut self, buf: &mut DatagramBuf<'_>, max: usize) -> bool {
        let Some((data, addr)) = self.pending.path_response else {
            return false;
        };
        let f = Frame::PathResponse(data);
        if addr == self.path.remote && buf.len() + f.encoded_len() <= max {
            f.encode(buf);
            self.pending.path_response = None;
            return true;
        }
        if addr != self.path.remote && !self.path.probing(addr) {
            // Answer from an address we are not validating: not worth a packet.
            self.pending.path_response = None;
        }
        false
    }

    /// Writes pending control frames that fit within `max`; returns true if any was
    /// written.
    pub(super) fn write_control_frames(
        &mut self,
        buf: &mut DatagramBuf<'_>,
        max: usize,
        sent: &mut SentFrames,
    ) -> bool {
        let start = buf.len();
        let room = |buf: &DatagramBuf<'_>, f: &Frame| buf.len() + f.encoded_len() <= max;
        self.write_path_response(buf, max);
        if self.pending.max_data {
            let f = Frame::MaxData(self.flow.credit.limit());
            if room(buf, &f) {
                f.encode(buf);
                self.pending.max_data = false;
                sent.max_data = true;
            }
        }
        if self.pending.max_streams {
            let f = Frame::MaxStreams(self.streams.max_remote);
            if room(buf, &f) {
                f.encode(buf);
                self.pending.max_streams = false;
                sent.max_streams = true;
            }
        }
        while let Some(&id) = self.pending.max_stream_data.first() {
            let Some(st) = self.streams.map.get(&id) else {
                self.pending.max_stream_data.remove(&id);
                continue;
            };
            let f = Frame::MaxStreamData {
                id: id.0,
                max: st.recv_credit.limit(),
            };
            if !room(buf, &f) {
                break;
            }
            f.encode(buf);
            self.pending.max_stream_data.remove(&id);
            sent.max_stream_data.push(id);
        }
        while let Some(&id) = self.pending.reset.first() {
            let Some(st) = self.streams.map.get(&id) else {
                self.pending.reset.remove(&id);
                continue;
            };
            let f = Frame::ResetStream {
                id: id.0,
                code: st.reset_sent.unwrap_or(0),
                final_size: st.send.end(),
            };
            if !room(buf, &f) {
                break;
            }
            f.encode(buf);
            self.pending.reset.remove(&id);
            sent.reset.push(id);
        }
        while let Some(&id) = self.pending.stop.first() {
            let Some(st) = self.streams.map.get(&id) else {
                self.pending.stop.remove(&id);
                continue;
            };
            let f = Frame::StopSending {
                id: id.0,
                code: st.stop_sent.unwrap_or(0),
            };
            if !room(buf, &f) {
                break;
            }
            f.encode(buf);
            self.pending.stop.remove(&id);
            sent.stop.push(id);
        }
        if self.pending.goaway {
            if let Some((code, reason)) = &self.close.goaway_sent {
                let f = Frame::GoAway {
                    code: *code,
                    streams: self.streams.opened_local,
                    reason: Cow::Borrowed(reason.as_bytes()),
                };
                if room(buf, &f) {
                    f.encode(buf);
                    self.pending.goaway = false;
                    sent.goaway = true;
                }
            } else {
                self.pending.goaway = false;
            }
        }
        if self.pending.ping && buf.len() < max {
            Frame::Ping.encode(buf);
            self.pending.ping = false;
        }
        buf.len() > start
    }

    /// Queues again what a lost (or probed) packet carried.
    pub(super) fn requeue_frames(&mut self, f: &SentFrames) {
        for r in f.stream_ranges() {
            let Some(st) = self.streams.map.get_mut(&r.id) else {
                continue;
            };
            if st.reset_sent.is_some() {
                continue;
            }
            st.send.on_lost(r.range.clone());
            if r.fin && !st.fin_acked {
                st.fin_sent = false;
            }
            enqueue(&mut self.streams.send_queue, r.id, st);
        }
        if f.max_data {
            self.pending.max_data = true;
        }
        if f.max_streams {
            self.pending.max_streams = true;
        }
        for id in &f.max_stream_data {
            if self
                .streams
                .map
                .get(id)
                .is_some_and(|s| s.final_size.is_none() && !s.recv_done)
            {
                self.pending.max_stream_data.insert(*id);
            }
        }
        for id in &f.reset {
            if self.streams.map.get(id).is_some_and(|s| !s.reset_acked) {
                self.pending.reset.insert(*id);
            }
        }
        for id in &f.stop {
            if self.streams.map.contains_key(id) {
                self.pending.stop.insert(*id);
            }
        }
        if f.goaway {
            self.pending.goaway = true;
        }
    }
}
