//! What a bench run measures, and the ranges both sides accept: the client checks its
//! options against them (exit 2), the server checks the request (a refusal).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::wire::{Request, VERSION};

/// Longest test, in milliseconds: an hour.
pub const MAX_DURATION_MS: u64 = 3_600_000;
/// Most streams per direction: a bidirectional test with the control stream stays
/// well under the default limit of 128 concurrent streams.
pub const MAX_STREAMS: u32 = 32;
/// Largest message.
pub const MAX_SIZE: u32 = 1024 * 1024;
/// Most messages per second.
pub const MAX_RATE: u32 = 100_000;

/// Which way data flows, or the message round trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Client to server.
    Upload,
    /// Server to client (`--reverse`).
    Download,
    /// Both at once (`--bidir`).
    Bidir,
    /// Small messages echoed by the server (`--messages`).
    Messages,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Upload => "upload",
            Mode::Download => "download",
            Mode::Bidir => "bidir",
            Mode::Messages => "messages",
        }
    }

    pub fn uploads(self) -> bool {
        matches!(self, Mode::Upload | Mode::Bidir)
    }

    pub fn downloads(self) -> bool {
        matches!(self, Mode::Download | Mode::Bidir)
    }
}

/// A test as asked for, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub mode: Mode,
    pub duration: Duration,
    pub streams: u32,
    pub size: u32,
    pub rate: u32,
}

/// An option or request field out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("--duration must be more than 0 and at most 3600 seconds")]
    Duration,
    #[error("--streams must be from 1 to 32")]
    Streams,
    #[error("--size must be from 1 to 1048576 bytes")]
    Size,
    #[error("--rate must be from 1 to 100000 messages per second")]
    Rate,
    #[error("the client speaks bench protocol version {0}, this server version 1")]
    Version(u32),
}

impl Spec {
    /// Checks the client's options; `duration` in seconds.
    pub fn new(
        mode: Mode,
        duration: f64,
        streams: u32,
        size: u32,
        rate: u32,
    ) -> Result<Spec, SpecError> {
        if !(duration.is_finite() && duration > 0.0) {
            return Err(SpecError::Duration);
        }
        let duration_ms = (duration * 1000.0).round();
        if !(1.0..=MAX_DURATION_MS as f64).contains(&duration_ms) {
            return Err(SpecError::Duration);
        }
        Spec::from_request(&Request {
            version: VERSION,
            mode,
            duration_ms: duration_ms as u64,
            streams,
            size,
            rate,
        })
    }

    /// Checks a client's request.
    pub fn from_request(r: &Request) -> Result<Spec, SpecError> {
        if r.version != VERSION {
            return Err(SpecError::Version(r.version));
        }
        if !(1..=MAX_DURATION_MS).contains(&r.duration_ms) {
            return Err(SpecError::Duration);
        }
        if !(1..=MAX_STREAMS).contains(&r.streams) {
            return Err(SpecError::Streams);
        }
        if !(1..=MAX_SIZE).contains(&r.size) {
            return Err(SpecError::Size);
        }
        if !(1..=MAX_RATE).contains(&r.rate) {
            return Err(SpecError::Rate);
        }
        Ok(Spec {
            mode: r.mode,
            duration: Duration::from_millis(r.duration_ms),
            streams: r.streams,
            size: r.size,
            rate: r.rate,
        })
    }

    pub fn request(&self) -> Request {
        Request {
            version: VERSION,
            mode: self.mode,
            duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(MAX_DURATION_MS),
            streams: self.streams,
            size: self.size,
            rate: self.rate,
        }
    }

    /// The data streams the client opens.
    pub fn data_streams(&self) -> u32 {
        match self.mode {
            Mode::Bidir => 2 * self.streams,
            _ => self.streams,
        }
    }

    /// How long after the data phase the last bytes may take to arrive before a side
    /// gives up on its peer: 5 s, plus a quarter of the duration for slow links with
    /// deep buffers.
    pub fn tail(&self) -> Duration {
        Duration::from_secs(5) + self.duration / 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let ok = Spec::new(Mode::Upload, 2.0, 1, 1024, 100).expect("valid");
        assert_eq!(ok.duration, Duration::from_secs(2));
        assert_eq!(Spec::from_request(&ok.request()), Ok(ok));
        for d in [0.0, -1.0, f64::NAN, f64::INFINITY, 3600.001, 0.0001] {
            assert_eq!(
                Spec::new(Mode::Upload, d, 1, 1024, 100),
                Err(SpecError::Duration)
            );
        }
        assert_eq!(
            Spec::new(Mode::Upload, 1.0, 0, 1, 1),
            Err(SpecError::Streams)
        );
        assert_eq!(
            Spec::new(Mode::Upload, 1.0, 33, 1, 1),
            Err(SpecError::Streams)
        );
        assert_eq!(
            Spec::new(Mode::Messages, 1.0, 1, 0, 1),
            Err(SpecError::Size)
        );
        assert_eq!(
            Spec::new(Mode::Messages, 1.0, 1, MAX_SIZE + 1, 1),
            Err(SpecError::Size)
        );
        assert_eq!(
            Spec::new(Mode::Messages, 1.0, 1, 1, 0),
            Err(SpecError::Rate)
        );
        let mut r = ok.request();
        r.version = 2;
        assert_eq!(Spec::from_request(&r), Err(SpecError::Version(2)));
        assert_eq!(
            Spec::new(Mode::Bidir, 1.0, 3, 1, 1).map(|s| s.data_streams()),
            Ok(6)
        );
    }
}
