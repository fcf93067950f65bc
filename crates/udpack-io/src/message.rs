//! Messages on a channel and how they are framed.
//!
//! A channel (a UDPack stream) carries frames: a 4-byte big-endian length, then that
//! many bytes of MessagePack. The MessagePack value is one of
//!
//! - `[event, data]`: an event (`event` a string, `data` any value);
//! - `[event, data, id]`: the same, asking for a reply (`id` an unsigned integer);
//! - `[id, data]`: the reply to the request `id`.
//!
//! Struct data is encoded as maps with field names (what JavaScript's
//! `@msgpack/msgpack` produces and expects) and byte fields marked
//! `#[serde(with = "serde_bytes")]` as `bin`.

use bytes::Bytes;
use rmp::Marker;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Bytes of the length prefix of a frame.
pub const FRAME_HEADER_LEN: usize = 4;
/// Default largest message accepted (the MessagePack bytes of one frame).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
/// Deepest nesting of arrays and maps accepted in a message.
const MAX_DEPTH: usize = 128;

/// What a frame holds, once its envelope is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Event { event: String, ack: Option<u64> },
    Reply { id: u64 },
}

/// A received message: its event name and its data, decoded on demand into any type.
#[derive(Debug, Clone)]
pub struct Message {
    pub(crate) kind: Kind,
    pub(crate) raw: Bytes,
    pub(crate) data: std::ops::Range<usize>,
    pub(crate) reply_to: Option<crate::channel::Replier>,
}

impl Message {
    /// The event name (empty for a reply).
    pub fn event(&self) -> &str {
        match &self.kind {
            Kind::Event { event, .. } => event,
            Kind::Reply { .. } => "",
        }
    }

    /// Decodes the data into `T`, which may borrow from the message (a
    /// `#[serde(borrow, with = "serde_bytes")] &[u8]` field takes a `bin` without a copy).
    pub fn data<'a, T: Deserialize<'a>>(&'a self) -> Result<T, Error> {
        rmp_serde::from_slice(&self.raw[self.data.clone()])
            .map_err(|e| Error::Decode(e.to_string()))
    }

    /// The data's MessagePack bytes.
    pub fn raw_data(&self) -> &[u8] {
        &self.raw[self.data.clone()]
    }

    /// The data as bytes without a copy, when it is a MessagePack `bin` (what
    /// [`crate::Channel::send_bytes`] sends, or a JavaScript `Uint8Array`): a slice of
    /// the received message that can be handed to another thread.
    pub fn data_bytes(&self) -> Result<Bytes, Error> {
        let data = &self.raw[self.data.clone()];
        let mut rd: &[u8] = data;
        let len = rmp::decode::read_bin_len(&mut rd)
            .map_err(|_| Error::Decode("the data is not a bin".into()))? as usize;
        if rd.len() != len {
            return Err(Error::Decode("bin length does not match the data".into()));
        }
        let start = self.data.start + (data.len() - rd.len());
        Ok(self.raw.slice(start..self.data.end))
    }

    /// True if the sender waits for a reply ([`crate::Channel::send_with_ack`]).
    pub fn wants_reply(&self) -> bool {
        matches!(self.kind, Kind::Event { ack: Some(_), .. })
    }

    /// Sends the reply the sender waits for. Does nothing if it asked for none.
    pub async fn reply<R: Serialize + ?Sized>(&self, data: &R) -> Result<(), Error> {
        match (&self.kind, &self.reply_to) {
            (Kind::Event { ack: Some(id), .. }, Some(r)) => r.send_reply(*id, data).await,
            _ => Ok(()),
        }
    }
}

/// The MessagePack bytes of `[event, data]`, as they travel in a frame (without the
/// length prefix): what a JavaScript peer decodes with `@msgpack/msgpack`.
pub fn to_msgpack<T: Serialize + ?Sized>(event: &str, data: &T) -> Result<Vec<u8>, Error> {
    let mut frame = encode_event(event, data, None)?;
    frame.drain(..FRAME_HEADER_LEN);
    Ok(frame)
}

/// Reads the MessagePack bytes of one message (`[event, data]`, `[event, data, id]` or
/// a reply `[id, data]`).
pub fn from_msgpack(bytes: &[u8]) -> Result<Message, Error> {
    decode(Bytes::copy_from_slice(bytes))
}

/// Encodes `[event, data]` (or `[event, data, id]`) as one frame.
pub(crate) fn encode_event<T: Serialize + ?Sized>(
    event: &str,
    data: &T,
    ack: Option<u64>,
) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; FRAME_HEADER_LEN];
    let len = if ack.is_some() { 3 } else { 2 };
    rmp::encode::write_array_len(&mut buf, len).map_err(|e| Error::Encode(e.to_string()))?;
    rmp::encode::write_str(&mut buf, event).map_err(|e| Error::Encode(e.to_string()))?;
    rmp_serde::encode::write_named(&mut buf, data).map_err(|e| Error::Encode(e.to_string()))?;
    if let Some(id) = ack {
        rmp::encode::write_uint(&mut buf, id).map_err(|e| Error::Encode(e.to_string()))?;
    }
    finish_frame(buf)
}

/// The frame of `[event, <bin of len bytes>]` up to the bin's payload, which follows
/// it on the stream: a large payload is written after it without being copied.
pub(crate) fn encode_bytes_head(event: &str, len: usize) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; FRAME_HEADER_LEN];
    rmp::encode::write_array_len(&mut buf, 2).map_err(|e| Error::Encode(e.to_string()))?;
    rmp::encode::write_str(&mut buf, event).map_err(|e| Error::Encode(e.to_string()))?;
    let bin_len = u32::try_from(len).map_err(|_| Error::TooLarge(len))?;
    rmp::encode::write_bin_len(&mut buf, bin_len).map_err(|e| Error::Encode(e.to_string()))?;
    let body = buf.len() - FRAME_HEADER_LEN + len;
    let frame_len = u32::try_from(body).map_err(|_| Error::TooLarge(body))?;
    buf[..FRAME_HEADER_LEN].copy_from_slice(&frame_len.to_be_bytes());
    Ok(buf)
}

/// Encodes the reply `[id, data]` as one frame.
pub(crate) fn encode_reply<T: Serialize + ?Sized>(id: u64, data: &T) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; FRAME_HEADER_LEN];
    rmp::encode::write_array_len(&mut buf, 2).map_err(|e| Error::Encode(e.to_string()))?;
    rmp::encode::write_uint(&mut buf, id).map_err(|e| Error::Encode(e.to_string()))?;
    rmp_serde::encode::write_named(&mut buf, data).map_err(|e| Error::Encode(e.to_string()))?;
    finish_frame(buf)
}

fn finish_frame(mut buf: Vec<u8>) -> Result<Vec<u8>, Error> {
    let body = buf.len() - FRAME_HEADER_LEN;
    let len = u32::try_from(body).map_err(|_| Error::TooLarge(body))?;
    buf[..FRAME_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Reads the envelope of a message (the MessagePack bytes of one frame).
pub(crate) fn decode(raw: Bytes) -> Result<Message, Error> {
    let bad = |what: &str| Error::Decode(what.to_string());
    let mut rd: &[u8] = &raw;
    let n = rmp::decode::read_array_len(&mut rd).map_err(|_| bad("not an array"))?;
    if !(2..=3).contains(&n) {
        return Err(bad("not a 2- or 3-element array"));
    }
    let first = *rd.first().ok_or_else(|| bad("empty"))?;
    let kind_is_reply = match Marker::from_u8(first) {
        Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => false,
        Marker::FixPos(_) | Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64 => true,
        _ => return Err(bad("first element is neither an event name nor a reply id")),
    };
    if kind_is_reply {
        if n != 2 {
            return Err(bad("a reply has two elements"));
        }
        let id: u64 = rmp::decode::read_int(&mut rd).map_err(|_| bad("reply id"))?;
        let start = raw.len() - rd.len();
        skip_value(&mut rd, 0)?;
        if !rd.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let end = raw.len() - rd.len();
        return Ok(Message {
            kind: Kind::Reply { id },
            data: start..end,
            raw,
            reply_to: None,
        });
    }
    let len = rmp::decode::read_str_len(&mut rd).map_err(|_| bad("event name"))? as usize;
    let name = rd.get(..len).ok_or_else(|| bad("event name cut short"))?;
    let event = std::str::from_utf8(name)
        .map_err(|_| bad("event name is not UTF-8"))?
        .to_string();
    rd = &rd[len..];
    let start = raw.len() - rd.len();
    skip_value(&mut rd, 0)?;
    let end = raw.len() - rd.len();
    let ack = if n == 3 {
        Some(rmp::decode::read_int(&mut rd).map_err(|_| bad("ack id"))?)
    } else {
        None
    };
    if !rd.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok(Message {
        kind: Kind::Event { event, ack },
        data: start..end,
        raw,
        reply_to: None,
    })
}

/// Advances `rd` past one MessagePack value, checking that it is all there.
fn skip_value(rd: &mut &[u8], depth: usize) -> Result<(), Error> {
    let bad = |what: &str| Error::Decode(what.to_string());
    if depth > MAX_DEPTH {
        return Err(bad("nested too deeply"));
    }
    let (&m, rest) = rd.split_first().ok_or_else(|| bad("cut short"))?;
    *rd = rest;
    let take = |rd: &mut &[u8], n: usize| -> Result<(), Error> {
        if rd.len() < n {
            return Err(Error::Decode("cut short".into()));
        }
        *rd = &rd[n..];
        Ok(())
    };
    let be = |rd: &mut &[u8], n: usize| -> Result<usize, Error> {
        let b = rd
            .get(..n)
            .ok_or_else(|| Error::Decode("cut short".into()))?;
        let v = b.iter().fold(0usize, |acc, x| (acc << 8) | *x as usize);
        *rd = &rd[n..];
        Ok(v)
    };
    match Marker::from_u8(m) {
        Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
            Ok(())
        }
        Marker::U8 | Marker::I8 => take(rd, 1),
        Marker::U16 | Marker::I16 => take(rd, 2),
        Marker::U32 | Marker::I32 | Marker::F32 => take(rd, 4),
        Marker::U64 | Marker::I64 | Marker::F64 => take(rd, 8),
        Marker::FixStr(n) => take(rd, n as usize),
        Marker::Str8 | Marker::Bin8 => {
            let n = be(rd, 1)?;
            take(rd, n)
        }
        Marker::Str16 | Marker::Bin16 => {
            let n = be(rd, 2)?;
            take(rd, n)
        }
        Marker::Str32 | Marker::Bin32 => {
            let n = be(rd, 4)?;
            take(rd, n)
        }
        Marker::FixArray(n) => skip_many(rd, n as usize, depth),
        Marker::Array16 => {
            let n = be(rd, 2)?;
            skip_many(rd, n, depth)
        }
        Marker::Array32 => {
            let n = be(rd, 4)?;
            skip_many(rd, n, depth)
        }
        Marker::FixMap(n) => skip_many(rd, 2 * n as usize, depth),
        Marker::Map16 => {
            let n = be(rd, 2)?;
            skip_many(rd, 2 * n, depth)
        }
        Marker::Map32 => {
            let n = be(rd, 4)?;
            skip_many(rd, n.saturating_mul(2), depth)
        }
        Marker::FixExt1 => take(rd, 2),
        Marker::FixExt2 => take(rd, 3),
        Marker::FixExt4 => take(rd, 5),
        Marker::FixExt8 => take(rd, 9),
        Marker::FixExt16 => take(rd, 17),
        Marker::Ext8 => {
            let n = be(rd, 1)?;
            take(rd, n + 1)
        }
        Marker::Ext16 => {
            let n = be(rd, 2)?;
            take(rd, n + 1)
        }
        Marker::Ext32 => {
            let n = be(rd, 4)?;
            take(rd, n + 1)
        }
        Marker::Reserved => Err(bad("reserved marker")),
    }
}

fn skip_many(rd: &mut &[u8], n: usize, depth: usize) -> Result<(), Error> {
    for _ in 0..n {
        // Every element takes at least a byte: a huge count with few bytes fails fast.
        if rd.is_empty() {
            return Err(Error::Decode("cut short".into()));
        }
        skip_value(rd, depth + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct File {
        filename: String,
        filesize: u64,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Chunk {
        #[serde(with = "serde_bytes")]
        chunk: Vec<u8>,
    }

    fn body(frame: &[u8]) -> Bytes {
        let len = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
        assert_eq!(len, frame.len() - 4);
        Bytes::copy_from_slice(&frame[4..])
    }

    #[test]
    fn event_round_trip_with_named_fields_and_bin() {
        let f = File {
            filename: "a.txt".into(),
            filesize: 1 << 40,
        };
        let m = decode(body(&encode_event("file", &f, None).expect("encode"))).expect("decode");
        assert_eq!(m.event(), "file");
        assert!(!m.wants_reply());
        assert_eq!(m.data::<File>().expect("data"), f);
        // Field names are in the encoding (a map), as JavaScript expects.
        assert!(m.raw_data().windows(8).any(|w| w == b"filename"));

        let c = Chunk {
            chunk: vec![1, 2, 3, 255],
        };
        let frame = encode_event("chunk", &c, Some(7)).expect("encode");
        // bin 8 marker, length 4, then the bytes.
        assert!(frame.windows(6).any(|w| w == [0xc4, 4, 1, 2, 3, 255]));
        let m = decode(body(&frame)).expect("decode");
        assert_eq!(
            m.kind,
            Kind::Event {
                event: "chunk".into(),
                ack: Some(7)
            }
        );
        assert_eq!(m.data::<Chunk>().expect("data"), c);
    }

    #[test]
    fn bytes_head_and_payload_decode_as_one_bin_message() {
        for len in [0usize, 5, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut frame = encode_bytes_head("data", len).expect("head");
            frame.extend_from_slice(&payload);
            let m = decode(body(&frame)).expect("decode");
            assert_eq!(m.event(), "data");
            let got = m.data_bytes().expect("bin");
            assert_eq!(&got[..], &payload[..]);
            // The same bytes read through serde, as a JavaScript `Uint8Array` would be.
            let via_serde: serde_bytes::ByteBuf = m.data().expect("serde");
            assert_eq!(via_serde.as_ref(), &payload[..]);
        }
        // Data that is not a bin is refused, not misread.
        let m = decode(body(
            &encode_event("data", &[1u8, 2], None).expect("encode"),
        ))
        .expect("decode");
        assert!(m.data_bytes().is_err());
    }

    #[test]
    fn reply_round_trip() {
        let m = decode(body(&encode_reply(99, "ok").expect("encode"))).expect("decode");
        assert_eq!(m.kind, Kind::Reply { id: 99 });
        assert_eq!(m.data::<String>().expect("data"), "ok");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x90],
            vec![0x92],
            vec![0x92, 0xa1],
            vec![0x92, 0xa1, b'x'],
            vec![0x92, 0xa1, b'x', 0xdd, 0xff, 0xff, 0xff, 0xff],
            vec![0x92, 0xa1, b'x', 0xc4, 10, 1],
            vec![0x92, 0xc1, 0],
            vec![0x93, 0xa1, b'x', 0xc0, 0xa1, b'y'],
            vec![0x92, 0xa1, b'x', 0xc0, 0xc0],
            vec![0x92, 0xa2, 0xff, 0xfe, 0xc0],
        ];
        for c in cases {
            assert!(decode(Bytes::from(c.clone())).is_err(), "{c:?}");
        }
        // Deep nesting is refused, not a stack overflow.
        let mut deep = vec![0x92, 0xa1, b'x'];
        deep.extend(std::iter::repeat_n(0x91, 100_000));
        deep.push(0xc0);
        assert!(decode(Bytes::from(deep)).is_err());
    }

    #[test]
    fn wrong_data_type_is_a_decode_error() {
        let m = decode(body(&encode_event("file", &5u8, None).expect("encode"))).expect("decode");
        assert!(matches!(m.data::<File>(), Err(Error::Decode(_))));
    }
}
