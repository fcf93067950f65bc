//! Why a benchmark run failed.

use std::io;

/// A failure of a measurement. Each run stops at the first one: a figure from a run
/// that lost or corrupted data would mean nothing.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A failure inside one throughput run, with the run it happened in.
    #[error("{transport} x{streams}: {source}")]
    Run {
        transport: &'static str,
        streams: usize,
        source: Box<BenchError>,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    UdpackConnect(#[from] udpack::ConnectError),
    #[error("{0}")]
    UdpackStream(#[from] udpack::StreamError),
    #[error("{0}")]
    QuinnConnect(#[from] quinn::ConnectError),
    #[error("{0}")]
    QuinnConnection(#[from] quinn::ConnectionError),
    #[error("{0}")]
    QuinnRead(#[from] quinn::ReadError),
    #[error("{0}")]
    QuinnClosedStream(#[from] quinn::ClosedStream),
    #[error("{0}")]
    QuinnStopped(#[from] quinn::StoppedError),
    #[error("{0}")]
    QuinnVarInt(#[from] quinn::VarIntBoundsExceeded),
    #[error("{0}")]
    QuinnCipherSuite(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Certificate(#[from] rcgen::Error),
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Semaphore(#[from] tokio::sync::AcquireError),
    /// The server side did not say where it listens.
    #[error("the server thread exited before it was bound")]
    NotBound,
    #[error("{0} thread panicked")]
    ThreadPanicked(&'static str),
    #[error("no session")]
    NoSession,
    #[error("no stream")]
    NoStream,
    #[error("no connection")]
    NoConnection,
    /// A received byte differs from the pattern the sender wrote.
    #[error("corrupt data at offset {0}")]
    Corrupt(u64),
    #[error("received {received} bytes, expected {expected}")]
    ByteCount { received: u64, expected: u64 },
    #[error("{0}")]
    ParseInt(#[from] std::num::ParseIntError),
    #[error("{0}")]
    ParseAddr(#[from] std::net::AddrParseError),
    #[error("the idle server has no {0} pipe")]
    ChildPipe(&'static str),
    #[error("the idle server exited")]
    IdleServerExited,
    #[error("unexpected line from the idle server: {0:?}")]
    IdleServerLine(String),
    #[error("idle sessions did not all stay open")]
    IdleSessionsClosed,
    /// A setup command of the link lab failed.
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    /// The kernel refused the TCP congestion controller (is its module loaded?).
    #[error("the kernel did not select congestion control for {0}")]
    CongestionControl(&'static str),
    #[error("the server's secret is not valid hex of the right length")]
    BadSecret,
    /// A lab peer (named by protocol and role) exited before it said what was expected.
    #[error("lab peer {0} exited early")]
    PeerExited(String),
    /// A lab peer's own error, as it reported it.
    #[error("lab peer {0}: {1}")]
    PeerFailed(String, String),
    #[error("lab peer {0} did not report {1:?} in time")]
    PeerTimeout(String, String),
    #[error("unexpected line from a lab peer: {0:?}")]
    PeerLine(String),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// plotters' errors are generic over the backend; the message is what is kept.
    #[error("plot: {0}")]
    Plot(String),
    #[error("no TrueType font found for the plots (Debian: fonts-dejavu-core)")]
    NoFont,
    /// A received file is missing or differs from the one sent.
    #[error("{} is missing or differs from the file sent", .0.display())]
    Differs(std::path::PathBuf),
    #[error("cannot start {0}: {1}")]
    Spawn(String, #[source] io::Error),
    /// A child process of the upload benchmark exited with a failure.
    #[error("{0} failed")]
    ChildFailed(String),
    #[error("the quinn upload peer needs --cert")]
    NoCertPath,
    #[error("{0}")]
    QuinnWrite(#[from] quinn::WriteError),
    #[error("{0}")]
    Keygen(#[from] udpack_cli::keygen::KeygenError),
    #[error("{0}")]
    KeyFile(#[from] udpack::KeyFileError),
    #[error("udpack send: {0}")]
    Send(#[from] udpack_cli::send::SendError),
    #[error("udpack serve: {0}")]
    Serve(#[from] udpack_cli::serve::ServeError),
    #[error("unexpected line from {0}: {1:?}")]
    ChildLine(String, String),
    #[error("no udpack binary at {} (build it: cargo build --release -p udpack-cli; or --udpack-bin, --in-process)", .0.display())]
    NoUdpackBinary(std::path::PathBuf),
    #[error("the link lab needs root (network namespaces and TUN devices)")]
    NeedsRoot,
    #[error("the lab runs the udpack binary in its namespaces: --in-process does not apply")]
    LabNeedsBinary,
}

pub type Result<T> = std::result::Result<T, BenchError>;

impl BenchError {
    /// Tags a failure with the throughput run it happened in.
    pub fn in_run(self, transport: &'static str, streams: usize) -> Self {
        BenchError::Run {
            transport,
            streams,
            source: Box::new(self),
        }
    }
}
