//! Frames: the units of meaning inside an encrypted packet. Types and layouts are
//! specified in `docs/PROTOCOL.md`; every integer is a variable-length integer.

use std::borrow::Cow;
use std::ops::Range;

use bytes::BufMut;

use crate::coding::{put_varint, varint_len, DecodeError, Reader};
use crate::range_set::RangeSet;

/// Frame type numbers.
pub mod kind {
    pub const PADDING: u64 = 0x00;
    pub const PING: u64 = 0x01;
    pub const ACK: u64 = 0x02;
    pub const RESET_STREAM: u64 = 0x04;
    pub const STOP_SENDING: u64 = 0x05;
    pub const STREAM: u64 = 0x08;
    pub const STREAM_FIN: u64 = 0x09;
    /// STREAM without a Length: the data run to the end of the packet.
    pub const STREAM_TO_END: u64 = 0x0a;
    pub const STREAM_TO_END_FIN: u64 = 0x0b;
    pub const MAX_DATA: u64 = 0x10;
    pub const MAX_STREAM_DATA: u64 = 0x11;
    pub const MAX_STREAMS: u64 = 0x12;
    pub const PATH_CHALLENGE: u64 = 0x1a;
    pub const PATH_RESPONSE: u64 = 0x1b;
    pub const GOAWAY: u64 = 0x1c;
    pub const CLOSE: u64 = 0x1d;
    pub const APP_CLOSE: u64 = 0x1e;
}

/// Longest reason text carried by GOAWAY and CLOSE.
pub const MAX_REASON_LEN: usize = 256;

/// Most ACK ranges one ACK frame carries; older ranges are left out.
pub const MAX_ACK_RANGES: usize = 64;

/// One frame. Decoded frames borrow their bytes (stream data, reasons) from the
/// packet: the receiver copies stream data once, into the stream's own buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// One or more zero bytes; carries nothing.
    Padding,
    /// Asks for an acknowledgement; keeps the session alive.
    Ping,
    /// Acknowledges packet numbers.
    Ack(Ack),
    /// Bytes of a stream at an offset, possibly its end.
    Stream(StreamFrame<'a>),
    /// The sender abandons a stream; `final_size` is how much it had sent.
    ResetStream { id: u64, code: u64, final_size: u64 },
    /// The receiver no longer wants a stream's data.
    StopSending { id: u64, code: u64 },
    /// Session-wide credit: total stream bytes the peer may send.
    MaxData(u64),
    /// Stream credit: highest offset the peer may send on stream `id`.
    MaxStreamData { id: u64, max: u64 },
    /// Total number of streams the peer may open.
    MaxStreams(u64),
    /// Asks the peer to echo 8 bytes from the address it sees us on.
    PathChallenge([u8; 8]),
    /// Echo of a path challenge.
    PathResponse([u8; 8]),
    /// The sender opens no new streams; `streams` is how many it opened in all. The
    /// session ends once both sides sent GOAWAY and every stream is done.
    GoAway {
        code: u64,
        streams: u64,
        reason: Cow<'a, [u8]>,
    },
    /// The session ends now. `app` tells an application's code (APP_CLOSE) from a
    /// transport error code (CLOSE).
    Close {
        app: bool,
        code: u64,
        reason: Cow<'a, [u8]>,
    },
}

/// An ACK frame: packet number ranges, largest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Acknowledged ranges, in descending order, disjoint.
    pub ranges: Vec<Range<u64>>,
    /// How long the receiver held the largest packet before acknowledging, in µs.
    pub delay_micros: u64,
}

impl Ack {
    #[cfg(test)]
    /// The largest packet number acknowledged.
    pub fn largest(&self) -> Option<u64> {
        self.ranges.first().map(|r| r.end - 1)
    }

    /// True if `ranges` are as documented (non-empty, descending, with a gap between
    /// neighbours): then they are encoded as given, at most [`MAX_ACK_RANGES`] of them.
    fn is_canonical(&self) -> bool {
        self.ranges.iter().all(|r| r.start < r.end)
            && self.ranges.windows(2).all(|w| w[1].end < w[0].start)
    }

    /// Size of the frame [`Frame::encode`] writes for this ACK.
    fn encoded_len(&self) -> usize {
        if !self.is_canonical() {
            // Overlapping or unsorted ranges are merged first; only hand-built frames
            // are like that, so the allocation stays off the packet path.
            let mut set = RangeSet::new();
            for r in &self.ranges {
                set.insert(r.clone());
            }
            return ack_len(set.iter().rev(), self.delay_micros);
        }
        ack_len(self.ranges.iter().cloned(), self.delay_micros)
    }
}

/// Size of the ACK frame [`encode_ack`] writes, without a length limit, for `ranges`
/// (disjoint, non-adjacent, largest first).
fn ack_len(mut ranges: impl Iterator<Item = Range<u64>>, delay_micros: u64) -> usize {
    let Some(first) = ranges.next() else {
        return 0;
    };
    // Type and range count (below MAX_ACK_RANGES: one byte each).
    let mut len = 2 + varint_len(first.end - 1) + varint_len(delay_micros);
    len += varint_len(first.end - first.start - 1);
    let mut prev_start = first.start;
    for r in ranges.take(MAX_ACK_RANGES - 1) {
        len += varint_len(prev_start - r.end - 1) + varint_len(r.end - r.start - 1);
        prev_start = r.start;
    }
    len
}

/// A STREAM frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFrame<'a> {
    pub id: u64,
    pub offset: u64,
    pub fin: bool,
    pub data: Cow<'a, [u8]>,
}

impl StreamFrame<'_> {
    /// Bytes the frame header takes for these fields.
    pub fn header_len(id: u64, offset: u64, len: usize) -> usize {
        1 + varint_len(id) + varint_len(offset) + varint_len(len as u64)
    }

    /// Bytes the header of a frame without a Length (one that ends the packet) takes.
    pub fn header_len_to_end(id: u64, offset: u64) -> usize {
        1 + varint_len(id) + varint_len(offset)
    }

    /// Writes a STREAM frame header; the caller writes `len` bytes of data after it.
    pub fn encode_header<B: BufMut>(buf: &mut B, id: u64, offset: u64, len: usize, fin: bool) {
        put_varint(buf, if fin { kind::STREAM_FIN } else { kind::STREAM });
        put_varint(buf, id);
        put_varint(buf, offset);
        put_varint(buf, len as u64);
    }

    /// Writes the header of a STREAM frame without a Length: the caller writes its
    /// data after it, and nothing else goes into the packet after them. The last frame
    /// of a full packet saves the Length's bytes so.
    pub fn encode_header_to_end<B: BufMut>(buf: &mut B, id: u64, offset: u64, fin: bool) {
        put_varint(
            buf,
            if fin {
                kind::STREAM_TO_END_FIN
            } else {
                kind::STREAM_TO_END
            },
        );
        put_varint(buf, id);
        put_varint(buf, offset);
    }
}

/// Writes an ACK frame for the newest ranges of `received`, at most `max_len` bytes.
/// Returns false (writing nothing) when `received` is empty or not even one range fits.
pub fn encode_ack<B: BufMut>(
    buf: &mut B,
    received: &RangeSet,
    delay_micros: u64,
    max_len: usize,
) -> bool {
    let mut it = received.iter().rev();
    let Some(first) = it.next() else {
        return false;
    };
    let largest = first.end - 1;
    let first_len = first.end - first.start - 1;
    let mut len = 1 + varint_len(largest) + varint_len(delay_micros) + varint_len(first_len);
    // Work out how many further ranges fit (count varint assumed to be 1 byte: < 64).
    let mut extra: Vec<(u64, u64)> = Vec::new();
    let mut prev_start = first.start;
    for r in it.take(MAX_ACK_RANGES - 1) {
        let gap = prev_start - r.end - 1;
        let rlen = r.end - r.start - 1;
        let add = varint_len(gap) + varint_len(rlen);
        if len + 1 + add > max_len {
            break;
        }
        len += add;
        extra.push((gap, rlen));
        prev_start = r.start;
    }
    len += 1;
    if len > max_len {
        return false;
    }
    put_varint(buf, kind::ACK);
    put_varint(buf, largest);
    put_varint(buf, delay_micros);
    put_varint(buf, extra.len() as u64);
    put_varint(buf, first_len);
    for (gap, rlen) in extra {
        put_varint(buf, gap);
        put_varint(buf, rlen);
    }
    true
}

impl Frame<'_> {
    /// Writes the frame. STREAM frames are written whole (header and data).
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        match self {
            Frame::Padding => buf.put_u8(0),
            Frame::Ping => put_varint(buf, kind::PING),
            Frame::Ack(ack) => {
                let mut set = RangeSet::new();
                for r in &ack.ranges {
                    set.insert(r.clone());
                }
                encode_ack(buf, &set, ack.delay_micros, usize::MAX);
            }
            Frame::Stream(s) => {
                StreamFrame::encode_header(buf, s.id, s.offset, s.data.len(), s.fin);
                buf.put_slice(&s.data);
            }
            Frame::ResetStream {
                id,
                code,
                final_size,
            } => {
                put_varint(buf, kind::RESET_STREAM);
                put_varint(buf, *id);
                put_varint(buf, *code);
                put_varint(buf, *final_size);
            }
            Frame::StopSending { id, code } => {
                put_varint(buf, kind::STOP_SENDING);
                put_varint(buf, *id);
                put_varint(buf, *code);
            }
            Frame::MaxData(v) => {
                put_varint(buf, kind::MAX_DATA);
                put_varint(buf, *v);
            }
            Frame::MaxStreamData { id, max } => {
                put_varint(buf, kind::MAX_STREAM_DATA);
                put_varint(buf, *id);
                put_varint(buf, *max);
            }
            Frame::MaxStreams(v) => {
                put_varint(buf, kind::MAX_STREAMS);
                put_varint(buf, *v);
            }
            Frame::PathChallenge(d) => {
                put_varint(buf, kind::PATH_CHALLENGE);
                buf.put_slice(d);
            }
            Frame::PathResponse(d) => {
                put_varint(buf, kind::PATH_RESPONSE);
                buf.put_slice(d);
            }
            Frame::GoAway { code, reason, .. } | Frame::Close { code, reason, .. } => {
                let k = match self {
                    Frame::GoAway { .. } => kind::GOAWAY,
                    Frame::Close { app: true, .. } => kind::APP_CLOSE,
                    _ => kind::CLOSE,
                };
                let reason = &reason[..reason.len().min(MAX_REASON_LEN)];
                put_varint(buf, k);
                put_varint(buf, *code);
                if let Frame::GoAway { streams, .. } = self {
                    put_varint(buf, *streams);
                }
                put_varint(buf, reason.len() as u64);
                buf.put_slice(reason);
            }
        }
    }

    /// Encoded size in bytes, computed without encoding: packet assembly asks it of
    /// every control frame, so it must not allocate.
    pub fn encoded_len(&self) -> usize {
        // Every frame type number is below 64: one varint byte.
        const TYPE_LEN: usize = 1;
        match self {
            Frame::Padding | Frame::Ping => TYPE_LEN,
            Frame::Ack(ack) => ack.encoded_len(),
            Frame::Stream(s) => {
                StreamFrame::header_len(s.id, s.offset, s.data.len()) + s.data.len()
            }
            Frame::ResetStream {
                id,
                code,
                final_size,
            } => TYPE_LEN + varint_len(*id) + varint_len(*code) + varint_len(*final_size),
            Frame::StopSending { id, code } => TYPE_LEN + varint_len(*id) + varint_len(*code),
            Frame::MaxData(v) | Frame::MaxStreams(v) => TYPE_LEN + varint_len(*v),
            Frame::MaxStreamData { id, max } => TYPE_LEN + varint_len(*id) + varint_len(*max),
            Frame::PathChallenge(d) | Frame::PathResponse(d) => TYPE_LEN + d.len(),
            Frame::GoAway { code, reason, .. } | Frame::Close { code, reason, .. } => {
                let reason_len = reason.len().min(MAX_REASON_LEN);
                let streams_len = match self {
                    Frame::GoAway { streams, .. } => varint_len(*streams),
                    _ => 0,
                };
                TYPE_LEN
                    + varint_len(*code)
                    + streams_len
                    + varint_len(reason_len as u64)
                    + reason_len
            }
        }
    }

    /// True if receiving this frame obliges the peer to acknowledge the packet.
    pub fn is_ack_eliciting(&self) -> bool {
        !matches!(self, Frame::Padding | Frame::Ack(_) | Frame::Close { .. })
    }
}

/// Decodes the frames of a decrypted packet payload; stream data and reasons are
/// borrowed from it.
#[derive(Debug)]
pub struct Frames<'a> {
    payload: &'a [u8],
    pos: usize,
}

impl<'a> Frames<'a> {
    /// Iterates over the frames in `payload`.
    pub fn new(payload: &'a [u8]) -> Self {
        Frames { payload, pos: 0 }
    }

    fn decode_one(&mut self) -> Result<Frame<'a>, DecodeError> {
        let whole = self.payload;
        let mut r = Reader::new(whole);
        r.bytes(self.pos)?;
        let ty = r.varint()?;
        let frame = match ty {
            kind::PADDING => {
                while r.remaining() > 0 && whole[r.position()] == 0 {
                    r.u8()?;
                }
                Frame::Padding
            }
            kind::PING => Frame::Ping,
            kind::ACK => {
                let largest = r.varint()?;
                let delay_micros = r.varint()?;
                let count = r.varint()?;
                if count >= MAX_ACK_RANGES as u64 * 4 {
                    return Err(DecodeError::Invalid("ack range count"));
                }
                let first = r.varint()?;
                if first > largest {
                    return Err(DecodeError::Invalid("ack range"));
                }
                let mut ranges = Vec::with_capacity(count as usize + 1);
                let mut start = largest - first;
                ranges.push(start..largest + 1);
                for _ in 0..count {
                    let gap = r.varint()?;
                    let len = r.varint()?;
                    let end = start
                        .checked_sub(gap)
                        .and_then(|v| v.checked_sub(1))
                        .ok_or(DecodeError::Invalid("ack gap"))?;
                    start = end
                        .checked_sub(1)
                        .and_then(|v| v.checked_sub(len))
                        .ok_or(DecodeError::Invalid("ack range"))?;
                    ranges.push(start..end);
                }
                Frame::Ack(Ack {
                    ranges,
                    delay_micros,
                })
            }
            kind::STREAM | kind::STREAM_FIN | kind::STREAM_TO_END | kind::STREAM_TO_END_FIN => {
                let id = r.varint()?;
                let offset = r.varint()?;
                let len = if ty & 0x02 == 0 {
                    r.varint_len()?
                } else {
                    r.remaining()
                };
                if offset
                    .checked_add(len as u64)
                    .is_none_or(|e| e > crate::coding::VARINT_MAX)
                {
                    return Err(DecodeError::Invalid("stream offset"));
                }
                let data = Cow::Borrowed(r.bytes(len)?);
                Frame::Stream(StreamFrame {
                    id,
                    offset,
                    fin: ty & 0x01 != 0,
                    data,
                })
            }
            kind::RESET_STREAM => Frame::ResetStream {
                id: r.varint()?,
                code: r.varint()?,
                final_size: r.varint()?,
            },
            kind::STOP_SENDING => Frame::StopSending {
                id: r.varint()?,
                code: r.varint()?,
            },
            kind::MAX_DATA => Frame::MaxData(r.varint()?),
            kind::MAX_STREAM_DATA => Frame::MaxStreamData {
                id: r.varint()?,
                max: r.varint()?,
            },
            kind::MAX_STREAMS => Frame::MaxStreams(r.varint()?),
            kind::PATH_CHALLENGE => Frame::PathChallenge(r.array()?),
            kind::PATH_RESPONSE => Frame::PathResponse(r.array()?),
            kind::GOAWAY | kind::CLOSE | kind::APP_CLOSE => {
                let code = r.varint()?;
                let streams = if ty == kind::GOAWAY { r.varint()? } else { 0 };
                let len = r.varint_len()?;
                if len > MAX_REASON_LEN {
                    return Err(DecodeError::Invalid("reason length"));
                }
                let reason = Cow::Borrowed(r.bytes(len)?);
                if ty == kind::GOAWAY {
                    Frame::GoAway {
                        code,
                        streams,
                        reason,
                    }
                } else {
                    Frame::Close {
                        app: ty == kind::APP_CLOSE,
                        code,
                        reason,
                    }
                }
            }
            other => return Err(DecodeError::UnknownFrame(other)),
        };
        self.pos = r.position();
        Ok(frame)
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.payload.len() {
            return None;
        }
        let res = self.decode_one();
        if res.is_err() {
            // Stop after the first error: the rest of the packet cannot be trusted.
            self.pos = self.payload.len();
        }
        Some(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_bytes(max: usize) -> impl Strategy<Value = Cow<'static, [u8]>> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Cow::Owned)
    }

    const V: u64 = crate::coding::VARINT_MAX;

    fn arb_ack() -> impl Strategy<Value = Ack> {
        arb_ack_with(1..20)
    }

    /// ACKs of `count` canonical ranges.
    fn arb_ack_with(count: Range<usize>) -> impl Strategy<Value = Ack> {
        (
            proptest::collection::vec((1u64..1000, 1u64..1000), count),
            0u64..1 << 40,
        )
            .prop_map(|(steps, delay)| {
                // Build ascending disjoint non-adjacent ranges, then reverse.
                let mut ranges = Vec::new();
                let mut at = 0;
                for (gap, len) in steps {
                    let start = at + gap;
                    ranges.push(start..start + len);
                    at = start + len;
                }
                ranges.reverse();
                Ack {
                    ranges,
                    delay_micros: delay,
                }
            })
    }

    fn arb_frame() -> impl Strategy<Value = Frame<'static>> {
        prop_oneof![
            Just(Frame::Ping),
            arb_ack().prop_map(Frame::Ack),
            (0..V, 0..V / 2, any::<bool>(), arb_bytes(300)).prop_map(|(id, offset, fin, data)| {
                Frame::Stream(StreamFrame {
                    id,
                    offset,
                    fin,
                    data,
                })
            }),
            (0..V, 0..V, 0..V).prop_map(|(id, code, final_size)| Frame::ResetStream {
                id,
                code,
                final_size
            }),
            (0..V, 0..V).prop_map(|(id, code)| Frame::StopSending { id, code }),
            (0..V).prop_map(Frame::MaxData),
            (0..V, 0..V).prop_map(|(id, max)| Frame::MaxStreamData { id, max }),
            (0..V).prop_map(Frame::MaxStreams),
            any::<[u8; 8]>().prop_map(Frame::PathChallenge),
            any::<[u8; 8]>().prop_map(Frame::PathResponse),
            (0..V, 0..V, arb_bytes(MAX_REASON_LEN)).prop_map(|(code, streams, reason)| {
                Frame::GoAway {
                    code,
                    streams,
                    reason,
                }
            }),
            (any::<bool>(), 0..V, arb_bytes(MAX_REASON_LEN))
                .prop_map(|(app, code, reason)| Frame::Close { app, code, reason }),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip(frames in proptest::collection::vec(arb_frame(), 1..8)) {
            let mut buf = Vec::new();
            for f in &frames {
                let before = buf.len();
                f.encode(&mut buf);
                prop_assert_eq!(buf.len() - before, f.encoded_len());
            }
            let decoded: Result<Vec<_>, _> = Frames::new(&buf).collect();
            prop_assert_eq!(decoded.unwrap(), frames);
        }

        #[test]
        fn a_stream_frame_without_length_takes_the_rest_of_the_packet(
            frames in proptest::collection::vec(arb_frame(), 0..4),
            id in 0..V,
            offset in 0..V / 2,
            fin in any::<bool>(),
            data in arb_bytes(1400),
        ) {
            let mut buf = Vec::new();
            for f in &frames {
                f.encode(&mut buf);
            }
            let before = buf.len();
            StreamFrame::encode_header_to_end(&mut buf, id, offset, fin);
            prop_assert_eq!(buf.len() - before, StreamFrame::header_len_to_end(id, offset));
            buf.extend_from_slice(&data);
            let decoded: Vec<_> = Frames::new(&buf).collect::<Result<_, _>>().unwrap();
            let mut expected = frames.clone();
            expected.push(Frame::Stream(StreamFrame {
                id,
                offset,
                fin,
                data: Cow::Owned(data.to_vec()),
            }));
            prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn encoded_len_is_the_encoded_size(frame in prop_oneof![
            Just(Frame::Padding),
            arb_frame(),
            // More ranges than one ACK frame carries.
            arb_ack_with(50..100).prop_map(Frame::Ack),
            // Hand-built ranges: unsorted, overlapping, adjacent, empty or none at all.
            (
                proptest::collection::vec((prop_oneof![0u64..5000, 0..V], 0u64..100), 0..80),
                0..V,
            )
                .prop_map(|(raw, delay_micros)| Frame::Ack(Ack {
                    ranges: raw.into_iter().map(|(s, len)| s..s.saturating_add(len)).collect(),
                    delay_micros,
                })),
            // Values above VARINT_MAX are clamped; reasons above MAX_REASON_LEN cut.
            any::<u64>().prop_map(Frame::MaxData),
            (any::<bool>(), any::<u64>(), arb_bytes(2 * MAX_REASON_LEN))
                .prop_map(|(app, code, reason)| Frame::Close { app, code, reason }),
            (any::<u64>(), any::<u64>(), arb_bytes(2 * MAX_REASON_LEN)).prop_map(
                |(code, streams, reason)| Frame::GoAway { code, streams, reason }
            ),
        ]) {
            let mut buf = Vec::new();
            frame.encode(&mut buf);
            prop_assert_eq!(frame.encoded_len(), buf.len());
        }

        #[test]
        fn decoding_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            for f in Frames::new(&data) {
                if f.is_err() { break; }
            }
        }
    }

    #[test]
    fn ack_respects_space_and_keeps_newest_ranges() {
        let mut set = RangeSet::new();
        for i in 0..200u64 {
            set.insert(i * 3..i * 3 + 1);
        }
        let mut buf = Vec::new();
        assert!(encode_ack(&mut buf, &set, 7, 40));
        assert!(buf.len() <= 40);
        let Some(Ok(Frame::Ack(ack))) = Frames::new(&buf).next() else {
            panic!("no ack decoded");
        };
        assert_eq!(ack.largest(), Some(597));
        assert!(ack.ranges.len() > 5);
        for r in &ack.ranges {
            assert!(set.contains(r.start) && set.contains(r.end - 1));
        }
        let mut tiny = Vec::new();
        assert!(!encode_ack(&mut tiny, &set, 7, 3));
        assert!(tiny.is_empty());
    }

    #[test]
    fn ack_with_gap_underflow_is_rejected() {
        let mut buf = Vec::new();
        for v in [kind::ACK, 5, 0, 1, 2, 10, 0] {
            put_varint(&mut buf, v);
        }
        assert!(matches!(
            Frames::new(&buf).next(),
            Some(Err(DecodeError::Invalid(_)))
        ));
    }
}
