//! Per-stream buffers: [`SendBuffer`] keeps written bytes until the peer acknowledges
//! them and knows what to (re)send next; [`RecvBuffer`] reassembles out-of-order frames
//! into ordered bytes.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};

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
    pub fn copy_range<B: BufMut>(&self, range: Range<u64>, out: &mut B) {
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
            out.put_slice(&data[from..to]);
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
///
/// Every byte is copied once, on arrival, out of the datagram it came in and into
/// memory this buffer owns: what a stream holds is what it was sent, never a larger
/// block shared with other packets (PROTOCOL.md §5.7).
#[derive(Debug, Default)]
pub struct RecvBuffer {
    /// In-order bytes from `read` on, ready for the application, in segments. Every
    /// in-order byte, whether it arrived in order (the common case: no map nodes, no
    /// allocation per packet) or filled a gap, is appended to the last one, so every
    /// segment but the last is full.
    ready: VecDeque<Segment>,
    /// Offset just past `ready`.
    ready_end: u64,
    /// Non-overlapping out-of-order chunks, all above `ready_end`, keyed by offset:
    /// with `[0, ready_end)`, every offset received so far.
    chunks: BTreeMap<u64, Vec<u8>>,
    /// Next offset to hand to the application.
    read: u64,
    /// Highest offset received, plus one.
    max_received: u64,
    /// Memory the out-of-order chunks hold: their bytes plus a fixed cost per chunk.
    held: u64,
    /// Capacity of the segment allocated last: segments double from
    /// [`RECV_SEGMENT_MIN`] to [`RECV_SEGMENT_MAX`] as a stream's data keeps coming, so that a
    /// stream of a few bytes costs little and a long one few allocations.
    segment: usize,
}

/// One ready segment: its bytes, and the size of the allocation they are in (which
/// reads shrink the view of, not the allocation).
#[derive(Debug)]
struct Segment {
    bytes: BytesMut,
    allocated: usize,
}

/// What one out-of-order chunk costs beyond its bytes (map node, handle), counted so
/// that many tiny fragments cannot hold much more memory than their bytes suggest.
pub const CHUNK_OVERHEAD: u64 = 64;

/// Capacity of a stream's first ready segment.
pub const RECV_SEGMENT_MIN: usize = 4 * 1024;
/// Largest ready segment: a stream holds at most two segments beyond its unread bytes.
pub const RECV_SEGMENT_MAX: usize = 64 * 1024;

impl RecvBuffer {
    /// Stores a copy of `data` at `offset`, ignoring bytes already received. Returns
    /// the number of bytes that were new.
    pub fn insert(&mut self, offset: u64, data: &[u8]) -> u64 {
        // Every byte below `ready_end` was received (read, or waiting in `ready`).
        let mut offset = offset;
        let mut data = data;
        if offset < self.ready_end {
            let skip = (self.ready_end - offset).min(data.len() as u64);
            data = &data[skip as usize..];
            offset += skip;
        }
        if data.is_empty() {
            return 0;
        }
        let end = offset + data.len() as u64;
        self.max_received = self.max_received.max(end);
        if offset == self.ready_end && self.chunks.is_empty() {
            // In order, with nothing received beyond: the common case.
            self.append_ready(data);
            return data.len() as u64;
        }
        // Above `ready_end`, what was received is the out-of-order chunks: store the
        // gaps of [offset, end) between them.
        let before = self
            .chunks
            .range(..offset)
            .next_back()
            .map(|(&s, c)| s..s + c.len() as u64)
            .filter(|r| r.end > offset);
        let have: Vec<Range<u64>> = before
            .into_iter()
            .chain(
                self.chunks
                    .range(offset..end)
                    .map(|(&s, c)| s..s + c.len() as u64),
            )
            .collect();
        let mut new = 0;
        let mut at = offset;
        for h in have.into_iter().chain(std::iter::once(end..end)) {
            if h.start > at {
                let piece = &data[(at - offset) as usize..(h.start - offset) as usize];
                new += piece.len() as u64;
                self.store(at, piece);
            }
            at = at.max(h.end);
        }
        new
    }

    /// Appends a new piece to the ready segments if it continues them, else keeps it
    /// among the out-of-order chunks; then moves chunks that became contiguous.
    fn store(&mut self, at: u64, piece: &[u8]) {
        if at != self.ready_end {
            self.held += piece.len() as u64 + CHUNK_OVERHEAD;
            self.chunks.insert(at, piece.to_vec());
            return;
        }
        self.append_ready(piece);
        while let Some(entry) = self.chunks.first_entry() {
            if *entry.key() != self.ready_end {
                break;
            }
            let next = entry.remove();
            self.held -= next.len() as u64 + CHUNK_OVERHEAD;
            // Copied into the segments rather than made a segment of its own: a small
            // chunk as a segment would leave the room of the one before it unused and
            // make the next byte open another (a peer alternating out-of-order and
            // in-order bytes would then cost a segment for every two of them).
            self.append_ready(&next);
        }
    }

    /// Copies `piece` to the end of the ready segments, opening a new segment when
    /// the last one is full.
    fn append_ready(&mut self, mut piece: &[u8]) {
        self.ready_end += piece.len() as u64;
        while !piece.is_empty() {
            if let Some(back) = self.ready.back_mut() {
                let room = back.bytes.capacity() - back.bytes.len();
                if room > 0 {
                    let n = room.min(piece.len());
                    back.bytes.extend_from_slice(&piece[..n]);
                    piece = &piece[n..];
                    continue;
                }
                if back.bytes.is_empty() {
                    // Read to its end: it gives way to the new segment.
                    self.ready.pop_back();
                }
            }
            self.segment = (self.segment * 2).clamp(RECV_SEGMENT_MIN, RECV_SEGMENT_MAX);
            self.ready.push_back(Segment {
                bytes: BytesMut::with_capacity(self.segment),
                allocated: self.segment,
            });
        }
    }

    /// Memory held by out-of-order chunks, overhead included.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Stream bytes held out of order, without the chunks' overhead: what the peer
    /// really sent beyond the first gap.
    pub fn held_bytes(&self) -> u64 {
        self.held
            .saturating_sub(self.chunks.len() as u64 * CHUNK_OVERHEAD)
    }

    /// All the memory this buffer holds: its ready segments' allocations (a segment
    /// partly read counts whole) and the out-of-order chunks with their overhead.
    /// Every segment but the first and the last is full of unread bytes, so this is at
    /// most the unread bytes, two segments and the chunks' overhead.
    pub fn memory(&self) -> u64 {
        self.ready.iter().map(|s| s.allocated as u64).sum::<u64>() + self.held
    }

    /// The next in-order bytes, at most `max` of them, without a copy (they share the
    /// segment they are in).
    pub fn read(&mut self, max: usize) -> Option<Bytes> {
        if max == 0 {
            return None;
        }
        let last = self.ready.len() == 1;
        let front = &mut self.ready.front_mut()?.bytes;
        if front.is_empty() {
            // Only the last segment is ever empty (read to its end, with room left).
            return None;
        }
        let out = if front.len() > max {
            front.split_to(max)
        } else if !last {
            self.ready.pop_front()?.bytes
        } else {
            // The last segment: its room stays for the bytes still to come.
            front.split()
        };
        self.read += out.len() as u64;
        Some(out.freeze())
    }

    /// Copies up to `max` in-order bytes to the end of `buf`; returns how many.
    pub fn read_into(&mut self, max: usize, buf: &mut BytesMut) -> usize {
        let want = self.ready_len().min(max as u64) as usize;
        buf.reserve(want);
        let mut n = 0;
        while n < want {
            let Some(front) = self.ready.front_mut() else {
                break;
            };
            let front = &mut front.bytes;
            let take = front.len().min(want - n);
            buf.extend_from_slice(&front[..take]);
            front.advance(take);
            n += take;
            if front.is_empty() && self.ready.len() > 1 {
                self.ready.pop_front();
            }
        }
        self.read += n as u64;
        n
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
        self.ready_end > self.read
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
        r.insert(0, b"abcdef");
        r.insert(10, b"xyz");
        assert_eq!(r.read(2).as_deref(), Some(&b"ab"[..]));
        r.discard_to(r.max_received());
        assert_eq!((r.read_offset(), r.max_received()), (13, 13));
        assert!(!r.readable());
        r.discard_to(20);
        assert_eq!((r.read_offset(), r.max_received()), (20, 20));
        r.discard_to(5);
        assert_eq!((r.read_offset(), r.max_received()), (20, 20));
        assert_eq!(r.insert(15, b"late"), 0);
        assert_eq!(r.read(100), None);
    }

    #[test]
    fn recv_buffer_holds_what_it_was_sent_not_more() {
        // A few bytes cost one small segment.
        let mut r = RecvBuffer::default();
        for i in 0..100u64 {
            r.insert(i, &[i as u8]);
        }
        assert_eq!(r.memory(), RECV_SEGMENT_MIN as u64);
        // Many megabytes in order, unread: their size and one segment's room at most.
        let mut r = RecvBuffer::default();
        let packet = [7u8; 1400];
        let mut at = 0u64;
        while at < 8 << 20 {
            at += r.insert(at, &packet);
        }
        assert!(r.memory() >= at);
        assert!(
            r.memory() <= at + RECV_SEGMENT_MAX as u64,
            "{} for {at}",
            r.memory()
        );
        // Read to the end, one segment's room stays for what comes next.
        let mut sink = BytesMut::new();
        assert_eq!(r.read_into(usize::MAX, &mut sink) as u64, at);
        assert!(r.memory() <= RECV_SEGMENT_MAX as u64);
        assert!(!r.readable());
        assert_eq!(r.insert(at, b"more"), 4);
        assert_eq!(r.read(100).as_deref(), Some(&b"more"[..]));
    }

    #[test]
    fn filling_gaps_one_byte_at_a_time_costs_no_segment_per_gap() {
        // A peer alternates an out-of-order byte and the byte before it; the
        // application reads nothing. Every gap filled must go into the segments'
        // room, not open a segment of its own.
        let mut r = RecvBuffer::default();
        let pairs = 100_000u64;
        for i in 0..pairs {
            let at = 2 * i;
            assert_eq!(r.insert(at + 1, &[1]), 1);
            assert_eq!(r.insert(at, &[0]), 1);
        }
        let unread = 2 * pairs;
        assert_eq!(r.ready_len(), unread);
        assert_eq!(r.held(), 0);
        assert!(
            r.memory() <= unread + 2 * RECV_SEGMENT_MAX as u64,
            "{} held for {unread} unread bytes",
            r.memory()
        );
        let mut got = BytesMut::new();
        assert_eq!(r.read_into(usize::MAX, &mut got) as u64, unread);
        assert!(got.chunks(2).all(|p| p == [0, 1]));
    }

    proptest! {
        #[test]
        fn recv_buffer_reassembles_any_order(
            pieces in proptest::collection::vec((0usize..20_000, 1usize..3000), 1..60),
            reads in proptest::collection::vec((0u8..3, 1usize..9000), 1..20),
        ) {
            let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
            let mut r = RecvBuffer::default();
            let mut covered = RangeSet::new();
            let mut got = BytesMut::new();
            let mut reads = reads.into_iter().cycle();
            for (off, len) in pieces {
                let end = (off + len).min(data.len());
                r.insert(off as u64, &data[off..end]);
                covered.insert(off as u64..end as u64);
                // 0: read nothing this time; 1: copy out; 2: read without a copy.
                let (how, max) = reads.next().unwrap_or((1, 10));
                if how > 0 {
                    loop {
                        let n = if how == 1 {
                            r.read_into(max, &mut got)
                        } else {
                            r.read(max).map_or(0, |b| {
                                got.extend_from_slice(&b);
                                b.len()
                            })
                        };
                        prop_assert!(n <= max);
                        if n == 0 {
                            break;
                        }
                    }
                }
                let contiguous = covered.first().filter(|f| f.start == 0).map_or(0, |f| f.end);
                prop_assert_eq!(r.ready_len(), contiguous - got.len() as u64);
                prop_assert_eq!(r.read_offset(), got.len() as u64);
                prop_assert_eq!(&got[..], &data[..got.len()]);
                // Nothing is held beyond the unread bytes, two segments (the first,
                // partly read, and the last, partly filled) and the chunks' overhead.
                let received: u64 = covered.iter().map(|c| c.end - c.start).sum();
                let unread = received - got.len() as u64;
                let chunks_overhead = r.held().saturating_sub(received - contiguous);
                prop_assert!(
                    r.memory() <= unread + chunks_overhead + 2 * RECV_SEGMENT_MAX as u64,
                    "{} for {} unread", r.memory(), unread
                );
            }
        }
    }
}
