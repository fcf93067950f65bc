//! What the bench client and server say to each other (docs/PROTOCOL.md, "The bench
//! protocol"): a kind byte at the start of every stream, then on the control stream
//! length-prefixed MessagePack frames; the data streams carry bytes that mean nothing.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use udpack::SessionStats;

use super::spec::Mode;

/// The version of this protocol the request carries.
pub const VERSION: u32 = 1;

/// Largest control frame: every message is a few hundred bytes, so anything bigger is
/// a confused or hostile peer, refused before any allocation.
pub const MAX_FRAME: u32 = 64 * 1024;

/// The first byte of each stream the client opens: what the stream is for.
pub mod kind {
    /// The request, the answer, then the server's reports.
    pub const CONTROL: u8 = 0;
    /// The client writes, the server counts.
    pub const UPLOAD: u8 = 1;
    /// The server writes, the client counts.
    pub const DOWNLOAD: u8 = 2;
    /// The client writes fixed-size messages, the server writes them back.
    pub const ECHO: u8 = 3;
}

/// Refusal codes in an [`Answer`].
pub mod code {
    /// Another client's test is running.
    pub const BUSY: &str = "busy";
    /// The request asks for something out of range or of another version.
    pub const BAD_REQUEST: &str = "bad_request";
}

/// The client's first control frame: what to measure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    pub mode: Mode,
    /// How long data flows, in milliseconds.
    pub duration_ms: u64,
    /// Streams per direction (bulk) or echo streams (messages).
    pub streams: u32,
    /// Bytes per message (messages mode).
    pub size: u32,
    /// Messages per second, over all streams (messages mode).
    pub rate: u32,
}

/// The server's answer to the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    pub code: String,
    pub message: String,
}

/// The figures of one session that the bench shows, as the sender's side sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    pub packets_lost: u64,
    pub bytes_retransmitted: u64,
    pub smoothed_rtt_us: u64,
    pub min_rtt_us: u64,
    pub congestion_window: u64,
    pub delivery_rate: u64,
    /// The datagram size path MTU discovery settled on (0 from a peer that does not
    /// say).
    #[serde(default)]
    pub datagram_size: u64,
}

impl From<&SessionStats> for Figures {
    /// Named fields only: figures the session gains later do not change the wire.
    fn from(s: &SessionStats) -> Self {
        Figures {
            packets_lost: s.packets_lost,
            bytes_retransmitted: s.bytes_retransmitted,
            smoothed_rtt_us: micros(s.smoothed_rtt),
            min_rtt_us: micros(s.min_rtt),
            congestion_window: s.congestion_window,
            delivery_rate: s.delivery_rate,
            datagram_size: s.datagram_size,
        }
    }
}

/// Once a second and at the end, from the server: what it counted, and its session's
/// figures (the sender's, for the download direction).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Microseconds since the server accepted the request.
    pub elapsed_us: u64,
    /// Bytes read on upload streams so far.
    pub received: u64,
    /// Microseconds from acceptance to the last upload byte read.
    pub last_byte_us: u64,
    pub figures: Figures,
    /// The last report: every stream is done.
    pub done: bool,
    /// Why the server ended the test early; empty if it did not.
    pub error: String,
}

/// Why a control frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot encode a control message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("malformed control message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("a control message of {0} bytes is over the limit")]
    TooLarge(u32),
    #[error("the control stream ended")]
    Ended,
    #[error("the control stream failed: {0}")]
    Io(#[source] std::io::Error),
    #[error("the first stream is of kind {0}, not control")]
    NotControl(u8),
}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Ended
        } else {
            WireError::Io(e)
        }
    }
}

/// Writes one frame: the length (u32, big-endian), then the MessagePack map.
pub async fn write_frame<T: Serialize>(
    w: &mut (impl AsyncWrite + Unpin),
    value: &T,
) -> Result<(), WireError> {
    let body = rmp_serde::to_vec_named(value)?;
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame).await?;
    Ok(())
}

/// Reads one frame. Not cancel-safe: a frame half read is lost, so callers read from
/// one task that does nothing else.
pub async fn read_frame<T: DeserializeOwned>(
    r: &mut (impl AsyncRead + Unpin),
) -> Result<T, WireError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    Ok(rmp_serde::from_slice(&body)?)
}

/// Reads the kind byte that starts a stream; `None` if the stream ended first.
pub async fn read_kind(r: &mut (impl AsyncRead + Unpin)) -> Result<Option<u8>, std::io::Error> {
    let mut b = [0u8; 1];
    match r.read(&mut b).await? {
        0 => Ok(None),
        _ => Ok(Some(b[0])),
    }
}

/// Microseconds, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_lengths_are_refused() {
        let req = Request {
            version: VERSION,
            mode: Mode::Bidir,
            duration_ms: 2500,
            streams: 4,
            size: 1024,
            rate: 100,
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).await.expect("write");
        let got: Request = read_frame(&mut buf.as_slice()).await.expect("read");
        assert_eq!(got, req);

        let mut huge = (MAX_FRAME + 1).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        let err = read_frame::<Request>(&mut huge.as_slice()).await;
        assert!(matches!(err, Err(WireError::TooLarge(n)) if n == MAX_FRAME + 1));

        let cut = &buf[..buf.len() - 1];
        let err = read_frame::<Request>(&mut &cut[..]).await;
        assert!(matches!(err, Err(WireError::Ended)), "{err:?}");
    }

    #[tokio::test]
    async fn unknown_fields_are_ignored() {
        #[derive(Serialize)]
        struct Newer {
            ok: bool,
            code: String,
            message: String,
            later: u64,
        }
        let mut buf = Vec::new();
        let newer = Newer {
            ok: true,
            code: String::new(),
            message: String::new(),
            later: 7,
        };
        write_frame(&mut buf, &newer).await.expect("write");
        let got: Answer = read_frame(&mut buf.as_slice()).await.expect("read");
        assert!(got.ok);
    }
}
