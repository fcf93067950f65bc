//! One throughput run: a server and a client of one transport on 127.0.0.1, each on
//! its own single-threaded tokio runtime on its own OS thread, timed from the client's
//! start to the receiver's last byte.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};
use crate::measure::{process_cpu, thread_cpu};
use crate::{quic, tcp, udpack_run};

const GIB: f64 = (1u64 << 30) as f64;

/// A transport under test.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Kind {
    Udpack,
    Tcp,
    Quinn,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Udpack => "udpack",
            Kind::Tcp => "tcp",
            Kind::Quinn => "quinn",
        }
    }
}

/// What every run of a benchmark shares.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// MiB per run, split evenly over the streams.
    pub size_mib: u64,
    /// quinn's stream receive window in MiB (0: quinn's defaults).
    pub quinn_window_mib: u64,
    /// Whether quinn negotiates ChaCha20-Poly1305 rather than AES-128-GCM.
    pub quinn_chacha: bool,
    pub udpack_cc: udpack::ControllerKind,
}

/// The figures of one run.
pub struct Outcome {
    pub bytes: u64,
    pub wall: Duration,
    /// The whole process, both sides together.
    pub cpu: Duration,
    pub send_cpu: Duration,
    pub recv_cpu: Duration,
    /// The sender's view of the connection: losses, RTT.
    pub note: String,
}

impl Outcome {
    pub fn goodput_mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall.as_secs_f64()
    }

    pub fn cpu_per_gib(&self) -> f64 {
        self.cpu.as_secs_f64() / (self.bytes as f64 / GIB)
    }
}

/// What the server side needs, prepared before the clock starts.
enum ServerSide {
    Udpack(udpack::PrivateKey),
    Tcp,
    Quinn(quinn::ServerConfig),
}

/// What the client side needs, prepared before the clock starts.
enum ClientSide {
    /// The key the client pins: the server's.
    Udpack(udpack::PublicKey),
    Tcp,
    Quinn(quinn::ClientConfig),
}

/// Tells the client thread where the server listens, once it does.
pub type BoundTx = std::sync::mpsc::Sender<SocketAddr>;

/// Moves `streams × (size / streams)` bytes over `kind` and measures it.
pub fn run(kind: Kind, streams: usize, config: &RunConfig) -> Result<Outcome> {
    let per_stream = (config.size_mib << 20) / streams as u64;
    let transport = udpack::TransportConfig {
        congestion: config.udpack_cc,
        ..Default::default()
    };
    let server_transport = transport.clone();
    let (server_side, client_side) = match kind {
        Kind::Udpack => {
            let key = udpack::PrivateKey::generate();
            let public = key.public_key();
            (ServerSide::Udpack(key), ClientSide::Udpack(public))
        }
        Kind::Tcp => (ServerSide::Tcp, ClientSide::Tcp),
        Kind::Quinn => {
            let (server, client) = quic::setup(config.quinn_window_mib, config.quinn_chacha)?;
            (ServerSide::Quinn(server), ClientSide::Quinn(client))
        }
    };
    let (server_rt, client_rt) = (crate::runtime()?, crate::runtime()?);

    let cpu0 = process_cpu();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let server = std::thread::Builder::new()
        .name("bench-server".into())
        .spawn(move || -> Result<(u64, Instant, Duration)> {
            let (n, end) = server_rt.block_on(async move {
                match server_side {
                    ServerSide::Udpack(key) => {
                        udpack_run::server(key, server_transport, streams, bound_tx).await
                    }
                    ServerSide::Tcp => tcp::server(streams, bound_tx).await,
                    ServerSide::Quinn(server) => quic::server(server, streams, bound_tx).await,
                }
            })?;
            drop(server_rt);
            Ok((n, end, thread_cpu()))
        })?;
    // The server thread drops the sender without sending if it fails to bind; its
    // error comes from join below.
    let Ok(addr) = bound_rx.recv() else {
        return Err(server_error(server.join()));
    };
    let start = Instant::now();
    let client = std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || -> Result<(Duration, String)> {
            let note = client_rt.block_on(async move {
                match client_side {
                    ClientSide::Udpack(key) => {
                        udpack_run::client(addr, key, transport, streams, per_stream).await
                    }
                    ClientSide::Tcp => tcp::client(addr, streams, per_stream).await,
                    ClientSide::Quinn(config) => {
                        quic::client(config, addr, streams, per_stream).await
                    }
                }
            })?;
            drop(client_rt);
            Ok((thread_cpu(), note))
        })?;
    let (send_cpu, note) = client
        .join()
        .map_err(|_| BenchError::ThreadPanicked("client"))??;
    let (bytes, end, recv_cpu) = server
        .join()
        .map_err(|_| BenchError::ThreadPanicked("server"))??;
    let cpu = process_cpu() - cpu0;
    let expected = per_stream * streams as u64;
    if bytes != expected {
        return Err(BenchError::ByteCount {
            received: bytes,
            expected,
        });
    }
    Ok(Outcome {
        bytes,
        wall: end.duration_since(start),
        cpu,
        send_cpu,
        recv_cpu,
        note,
    })
}

/// The error of a server thread that ended before it was bound.
fn server_error(joined: std::thread::Result<Result<(u64, Instant, Duration)>>) -> BenchError {
    match joined {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => BenchError::NotBound,
        Err(_) => BenchError::ThreadPanicked("server"),
    }
}
