//! Per-stream buffers: [`SendBuffer`] keeps written bytes until the peer acknowledges
//! them and knows what to (re)send next; [`RecvBuffer`] reassembles out-of-order frames
//! into ordered bytes.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use bytes::{Buf, Bytes};

use crate::range_set::RangeSet;

/// Identifies a stream within a session. Bit 0 says who opened it (0 client, 1 server);
/// the rest is a counter per opener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl StreamId {
    /// The `index`th stream opened by the client (`server == false`) or the server.
    pub fn new(server: bool, index: u64) -> Self {
        StreamId(index << 1 | u64::from(server))
    }

    /// True if the server opened the stream.
    pub fn server_opened(self) -> bool {
        self.0 & 1 == 1
    }

    /// Position among the streams of its opener.
    pub fn index(self) -> u64 {
        self.0 >> 1
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Written bytes not yet acknowledged, with what is still to be sent or resent.
#[derive(Debug, Default)]
pub struct SendBuffer {
    /// Chunks in offset order; the first starts at `base`.
    chunks: VecDeque<(u64, Bytes)>,
    /// Offset of the first byte not yet acknowledged (everything before is dropped).
    base: u64,
    /// Offset one past the last written byte.
    end: u64,
    /// Offset of the first byte never sent.
    unsent: u64,
    /// Acknowledged ranges above `base`.
    acked: RangeSet,
    /// Lost ranges to send again.
    retransmit: RangeSet,
}

impl SendBuffer {
    /// Appends bytes at the end of the stream.
    pub fn write(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let len = data.len() as u64;
        self.chunks.push_back((self.end, data));
        self.end += len;
    }

    /// Offset one past the last written byte (the stream's size so far; after
    /// [`Self::clear`], its final size).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Offset of the first byte never sent.
    pub fn unsent(&self) -> u64 {
        self.unsent
    }

    /// Bytes held: written but not yet acknowledged.
    pub fn buffered(&self) -> u64 {
        self.end - self.base
    }

    /// Offset below which every byte was acknowledged.
    pub fn acked_prefix(&self) -> u64 {
        self.base
    }

    /// True when every written byte was acknowledged.
    pub fn all_acked(&self) -> bool {
        self.base == self.end
    }

    /// True when there are lost bytes to resend.
    pub fn has_retransmit(&self) -> bool {
        !self.retransmit.is_empty()
    }

    /// The next range to put on the wire, at most `max_len` bytes: lost bytes first, then
    /// new bytes below `limit` (the peer's credit). Marks it as sent.
    pub fn next_range(&mut self, max_len: u64, limit: u64) -> Option<Range<u64>> {
        if max_len == 0 {
            return None;
        }
        if let Some(r) = self.retransmit.pop_front(max_len) {
            return Some(r);
        }
        let stop = self.end.min(limit);
        if self.unsent >= stop {
            return None;
        }
        let r = self.unsent..stop.min(self.unsent + max_len);
        self.unsent = r.end;
        Some(r)
    }

    /// Copies the bytes of `range` (which must have been written and not acknowledged
    /// and dropped) into `out`.
    pub fn copy_range(&self, range: Range<u64>, out: &mut Vec<u8>) {
        let start_chunk = self
            .chunks
            .partition_point(|(off, data)| off + data.len() as u64 <= range.start);
        let mut at = range.start;
        for (off, data) in self.chunks.range(start_chunk..) {
            if at >= range.end {
                break;
            }
            let from = (at - off) as usize;
            let to = ((range.end - off) as usize).min(data.len());
            out.extend_from_slice(&data[from..to]);
            at = off + to as u64;
        }
    }

    /// The peer acknowledged `range`.
    pub fn on_ack(&mut self, range: Range<u64>) {
        let range = range.start.max(self.base)..range.end.min(self.end);
        if range.start >= range.end {
            return;
        }
        self.acked.insert(range.clone());
        self.retransmit.remove(range);
        if let Some(first) = self.acked.first() {
            if first.start == self.base {
                self.acked.remove(first.clone());
                self.base = first.end;
                while let Some((off, data)) = self.chunks.front_mut() {
                    let chunk_end = *off + data.len() as u64;
                    if chunk_end <= self.base {
                        self.chunks.pop_front();
                    } else {
                        if *off < self.base {
                            data.advance((self.base - *off) as usize);
                            *off = self.base;
                        }
                        break;
                    }
                }
            }
        }
    }

    /// `range` was in a lost packet: queue what of it is not acknowledged.
    pub fn on_lost(&mut self, range: Range<u64>) {
        let range = range.start.max(self.base)..range.end.min(self.unsent);
        if range.start >= range.end {
            return;
        }
        self.retransmit.insert(range.clone());
        for a in self.acked.intersecting(range).collect::<Vec<_>>() {
            self.retransmit.remove(a);
        }
    }

    /// Drops everything (after a reset), bytes never sent included: the stream now
    /// ends at the highest offset sent, which [`Self::end`] returns from then on.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.acked = RangeSet::new();
        self.retransmit = RangeSet::new();
        self.end = self.unsent;
        self.base = self.unsent;
    }
}

/// Received bytes, delivered in order.
#[derive(Debug, Default)]
pub struct RecvBuffer {
    /// In-order bytes from `read` on, ready for the application. Data that arrives in
    /// order (the common case) only ever goes here: a queue, no map nodes per packet.
    ready: VecDeque<Bytes>,
    /// Offset just past `ready`.
    ready_end: u64,
    /// Non-overlapping out-of-order chunks, all above `ready_end`, keyed by offset.
    chunks: BTreeMap<u64, Bytes>,
    /// Offsets received so far (including those already read).
    received: RangeSet,
    /// Next offset to hand to the application.
    read: u64,
    /// Highest offset received, plus one.
    max_received: u64,
    /// Memory the out-of-order chunks hold: their bytes plus a fixed cost per chunk.
    held: u64,
}

/// What one out-of-order chunk costs beyond its bytes (map node, handle), counted so
/// that many tiny fragments cannot hold much more memory than their bytes suggest.
pub const CHUNK_OVERHEAD: u64 = 64;

impl RecvBuffer {
    /// Stores `data` at `offset`, ignoring bytes already received. Returns the number of
    /// bytes that were new.
    pub fn insert(&mut self, offset: u64, mut data: Bytes) -> u64 {
        let mut offset = offset;
        if offset < self.read {
            let skip = (self.read - offset).min(data.len() as u64);
            data.advance(skip as usize);
            offset += skip;
        }
        if data.is_empty() {
            return 0;
        }
        let end = offset + data.len() as u64;
        self.max_received = self.max_received.max(end);
        // Find the gaps of [offset, end) not yet received; store each as a slice.
        let have: Vec<Range<u64>> = self.received.intersecting(offset..end).collect();
        let mut new = 0;
        let mut at = offset;
        for h in have.into_iter().chain(std::iter::once(end..end)) {
            if h.start > at {
                let piece = data.slice((at - offset) as usize..(h.start - offset) as usize);
                new += piece.len() as u64;
                self.store(at, piece);
            }
            at = at.max(h.end);
        }
        self.received.insert(offset..end);
        new
    }

    /// Puts a new piece in the ready queue if it continues it, else among the
    /// out-of-order chunks; then moves chunks that became contiguous.
    fn store(&mut self, at: u64, piece: Bytes) {
        if at != self.ready_end {
            // Copied out of the receive block it arrived in, so that no out-of-order
            // piece keeps a whole shared block alive (this is the uncommon path: only
            // data behind a loss goes here).
            let piece = Bytes::copy_from_slice(&piece);
            self.held += piece.len() as u64 + CHUNK_OVERHEAD;
            self.chunks.insert(at, piece);
            return;
        }
        self.ready_end += piece.len() as u64;
        self.ready.push_back(piece);
        while let Some(entry) = self.chunks.first_entry() {
            if *entry.key() != self.ready_end {
                break;
            }
            let next = entry.remove();
            self.held -= next.len() as u64 + CHUNK_OVERHEAD;
            self.ready_end += next.len() as u64;
            self.ready.push_back(next);
        }
    }

    /// Memory held by out-of-order chunks, overhead included.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// The next in-order bytes, at most `max` of them.
    pub fn read(&mut self, max: usize) -> Option<Bytes> {
        if max == 0 {
            return None;
        }
        let front = self.ready.front_mut()?;
        let out = if front.len() > max {
            front.split_to(max)
        } else {
            self.ready.pop_front()?
        };
        self.read += out.len() as u64;
        Some(out)
    }

    /// In-order bytes ready to read.
    pub fn ready_len(&self) -> u64 {
        self.ready_end - self.read
    }

    /// Offset of the next byte the application will read.
    pub fn read_offset(&self) -> u64 {
        self.read
    }

    /// Highest offset received, plus one.
    pub fn max_received(&self) -> u64 {
        self.max_received
    }

    /// True when in-order bytes are waiting.
    pub fn readable(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Drops everything buffered and counts every byte below `end` as received and
    /// read: the application will never see them (the stream was stopped or reset).
    pub fn discard_to(&mut self, end: u64) {
        self.chunks.clear();
        self.held = 0;
        self.ready.clear();
        self.read = self.read.max(end);
        self.ready_end = self.read;
        self.max_received = self.max_received.max(end);
        if self.read > 0 {
            self.received.insert(0..self.read);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn send_buffer_retransmits_lost_before_new() {
        let mut s = SendBuffer::default();
        s.write(Bytes::from_static(b"hello "));
        s.write(Bytes::from_static(b"world"));
        assert_eq!(s.next_range(4, u64::MAX), Some(0..4));
        assert_eq!(s.next_range(100, 8), Some(4..8), "limited by credit");
        s.on_lost(0..4);
        assert_eq!(s.next_range(100, u64::MAX), Some(0..4));
        assert_eq!(s.next_range(100, u64::MAX), Some(8..11));
        let mut out = Vec::new();
        s.copy_range(3..9, &mut out);
        assert_eq!(out, b"lo wor");
        s.on_ack(4..11);
        assert!(!s.all_acked());
        s.on_lost(0..11);
        assert_eq!(
            s.next_range(100, u64::MAX),
            Some(0..4),
            "acked bytes not resent"
        );
        s.on_ack(0..4);
        assert!(s.all_acked());
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn send_buffer_clear_ends_the_stream_at_the_highest_offset_sent() {
        let mut s = SendBuffer::default();
        s.write(Bytes::from(vec![7u8; 1000]));
        assert_eq!(s.next_range(300, u64::MAX), Some(0..300));
        assert_eq!(s.next_range(300, u64::MAX), Some(300..600));
        s.on_ack(0..300);
        s.on_lost(300..600);
        s.clear();
        assert_eq!(s.end(), 600, "the 400 bytes never sent are not part of it");
        assert_eq!(s.unsent(), 600);
        assert_eq!(s.buffered(), 0);
        assert!(s.all_acked());
        assert!(!s.has_retransmit());
        assert_eq!(s.next_range(1000, u64::MAX), None);
        s.on_ack(300..600);
        s.on_lost(0..600);
        assert_eq!(s.next_range(1000, u64::MAX), None);
    }

    #[test]
    fn recv_buffer_discard_counts_bytes_as_received_and_read() {
        let mut r = RecvBuffer::default();
        r.insert(0, Bytes::from_static(b"abcdef"));
        r.insert(10, Bytes::from_static(b"xyz"));
        assert_eq!(r.read(2).as_deref(), Some(&b"ab"[..]));
        r.discard_to(r.max_received());
        assert_eq!((r.read_offset(), r.max_received()), (13, 13));
        assert!(!r.readable());
        r.discard_to(20);
        assert_eq!((r.read_offset(), r.max_received()), (20, 20));
        r.discard_to(5);
        assert_eq!((r.read_offset(), r.max_received()), (20, 20));
        assert_eq!(r.insert(15, Bytes::from_static(b"late")), 0);
        assert_eq!(r.read(100), None);
    }

    proptest! {
        #[test]
        fn recv_buffer_reassembles_any_order(
            pieces in proptest::collection::vec((0usize..500, 1usize..80), 1..60),
            reads in proptest::collection::vec(1usize..100, 1..20),
        ) {
            let data: Vec<u8> = (0..600u32).map(|i| (i * 7) as u8).collect();
            let mut r = RecvBuffer::default();
            let mut covered = RangeSet::new();
            let mut got = Vec::new();
            let mut reads = reads.into_iter().cycle();
            for (off, len) in pieces {
                let end = (off + len).min(data.len());
                r.insert(off as u64, Bytes::copy_from_slice(&data[off..end]));
                covered.insert(off as u64..end as u64);
                while let Some(b) = r.read(reads.next().unwrap_or(10)) {
                    got.extend_from_slice(&b);
                }
                let contiguous = covered.first().filter(|f| f.start == 0).map_or(0, |f| f.end);
                prop_assert_eq!(got.len() as u64, contiguous);
                prop_assert_eq!(&got[..], &data[..got.len()]);
            }
        }
    }
}
