//! `udpack send`: uploads files and directories, several files at once, one channel per
//! file; reconnects and resumes when the session drops; the first failure of a file
//! ends the run.

mod collect;
mod error;
#[cfg(feature = "test-faults")]
mod faults;
mod run;
mod source;
mod upload;

use std::path::PathBuf;
use std::time::Duration;

use udpack_io::PublicKey;

use crate::progress::Display;

pub use error::SendError;
pub use run::send;

/// Files in flight at once, by default.
pub const DEFAULT_PARALLEL: usize = 32;
/// Files over [`crate::protocol::INLINE_MAX`] streamed at once, at most: one stream
/// already fills the path; a second keeps it full while the first waits for its check.
pub const MAX_STREAMED: usize = 4;
/// How long a lost session is retried, by default.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(300);

/// What `send` needs.
pub struct SendOptions {
    pub server: String,
    pub pubkey: PublicKey,
    pub token: String,
    pub paths: Vec<PathBuf>,
    /// For the handshake of each connection attempt.
    pub timeout: Duration,
    /// Files in flight at once (at least 1).
    pub parallel: usize,
    /// How long to keep reconnecting once the session is lost (zero: not at all).
    pub retry_for: Duration,
    /// Ceiling on the sending rate, bytes per second.
    pub rate: Option<u64>,
    pub display: Display,
}

impl SendOptions {
    /// Options with the defaults: [`DEFAULT_PARALLEL`], [`DEFAULT_RETRY_FOR`], no rate
    /// ceiling, the display chosen by the terminal.
    pub fn new(server: String, pubkey: PublicKey, token: String, paths: Vec<PathBuf>) -> Self {
        SendOptions {
            server,
            pubkey,
            token,
            paths,
            timeout: Duration::from_secs(10),
            parallel: DEFAULT_PARALLEL,
            retry_for: DEFAULT_RETRY_FOR,
            rate: None,
            display: Display::Auto,
        }
    }
}

/// What was sent.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub files: usize,
    pub bytes: u64,
    /// Bytes of the files put on the network, by every attempt (less than `bytes` when
    /// uploads resumed, more when a lost session cut an attempt short).
    pub sent: u64,
    /// Bytes the server already had when the files' last attempts began.
    pub resumed: u64,
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
    /// Times the session was lost and made again.
    pub reconnects: u32,
    /// Final names on the server.
    pub names: Vec<String>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
