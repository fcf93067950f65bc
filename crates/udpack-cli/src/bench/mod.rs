//! `udpack bench`: the iperf3 of udpack, for measuring a real link. A server
//! (`--listen`) runs one client's test at a time; the client (`--connect`) asks for
//! bulk data one way or both (`--reverse`, `--bidir`) or small echoed messages
//! (`--messages`), and shows a line per direction and second and a summary.
//!
//! `wire` is what the two sides say, `spec` what a test may ask for, `flows` the data
//! streams, `server` and `client` the two roles, `tally` the figures made from the
//! counters, `report` how they are shown, `latency` the round-trip percentiles.

mod client;
mod flows;
mod latency;
mod report;
mod server;
mod spec;
mod tally;
mod wire;

use std::net::SocketAddr;
use std::time::Duration;

use udpack::{PrivateKey, PublicKey, StreamError};

use crate::error::{exit, ConnectFailure};

pub use client::run as connect;
pub use flows::FlowError;
pub use report::BenchReport;
pub use server::Listener;
pub use spec::{Mode, Spec, SpecError};
pub use wire::WireError;

/// What the bench server needs.
pub struct ListenOptions {
    pub key: PrivateKey,
    pub listen: SocketAddr,
    pub tokens: Vec<String>,
}

/// What the bench client needs.
pub struct ConnectOptions {
    /// host:port.
    pub server: String,
    pub pubkey: PublicKey,
    pub token: String,
    /// For the handshake, and for the server's answer to the request.
    pub timeout: Duration,
    pub spec: Spec,
    /// Print nothing while the test runs (the caller prints the JSON document).
    pub json: bool,
}

/// Why a bench run failed, on either side.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Exit 2.
    #[error("no token configured: pass --token, --tokens-file or set UDPACK_TOKEN")]
    NoToken,
    /// Exit 2.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Exit 1.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Exit 1.
    #[error("cannot bind a local socket: {0}")]
    Bind(#[source] std::io::Error),
    /// Exit 3, 4 or 5, as for `send`.
    #[error(transparent)]
    Connect(#[from] ConnectFailure),
    /// Exit 1.
    #[error("the server refused the test ({code}): {message}")]
    Refused { code: String, message: String },
    /// Exit 5.
    #[error("the server did not answer in time")]
    TimedOut,
    /// Exit 1.
    #[error("the session failed: {0}")]
    Session(#[source] StreamError),
    /// Exit 1.
    #[error(transparent)]
    Control(#[from] WireError),
    /// Exit 1.
    #[error("a data stream failed: {0}")]
    Flow(#[from] FlowError),
    /// Exit 1: the server's own words.
    #[error("the server ended the test: {0}")]
    ServerFailed(String),
    /// Exit 1.
    #[error("cannot write the JSON document: {0}")]
    Json(#[from] serde_json::Error),
}

impl BenchError {
    pub fn code(&self) -> u8 {
        match self {
            BenchError::NoToken | BenchError::Spec(_) => exit::USAGE,
            BenchError::Connect(c) => c.code(),
            BenchError::TimedOut => exit::UNREACHABLE,
            _ => exit::OTHER,
        }
    }
}
