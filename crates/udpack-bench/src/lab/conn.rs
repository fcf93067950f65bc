//! One bidirectional byte stream over each protocol under test, so that the bulk,
//! echo and latency peers are written once for all of them: a udpack stream, a kernel
//! TCP connection with a chosen congestion controller, or a quinn bidirectional stream
//! with a chosen congestion controller.
//!
//! The server prints a secret the client needs: udpack's public key, or quinn's
//! self-signed certificate, as hex ("-" for TCP).

use std::any::Any;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{BenchError, Result};
use crate::quic;
use crate::TOKEN;

/// A protocol and, for TCP and quinn, the sender's congestion controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    Udpack,
    TcpBbr,
    TcpCubic,
    QuinnBbr,
    QuinnCubic,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Udpack => "udpack",
            Proto::TcpBbr => "tcp-bbr",
            Proto::TcpCubic => "tcp-cubic",
            Proto::QuinnBbr => "quinn-bbr",
            Proto::QuinnCubic => "quinn-cubic",
        }
    }

    fn bbr(self) -> bool {
        matches!(self, Proto::TcpBbr | Proto::QuinnBbr)
    }
}

/// quinn's stream receive window in MiB, as in the loopback benchmark.
const QUINN_WINDOW_MIB: u64 = 16;

/// The reading half of a stream.
pub type Reader = Box<dyn AsyncRead + Unpin + Send>;
/// The writing half of a stream.
pub type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// Both halves of a stream, and what must stay alive while it is used.
pub struct Conn {
    pub r: Reader,
    pub w: Writer,
    pub keep: Box<dyn Any + Send>,
    /// The udpack session, for its stats (`lab --trace-ms`).
    pub udpack: Option<udpack::Session>,
}

/// A bound server of one protocol.
pub enum Listener {
    Udpack(udpack::Endpoint),
    Tcp(tokio::net::TcpListener, Proto),
    Quinn(quinn::Endpoint),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    let bad = || BenchError::BadSecret;
    if s.len() % 2 != 0 {
        return Err(bad());
    }
    (0..s.len() / 2)
        .map(|i| {
            let pair = s.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            u8::from_str_radix(pair, 16).map_err(|_| bad())
        })
        .collect()
}

fn quinn_transport(proto: Proto) -> Result<Arc<quinn::TransportConfig>> {
    use quinn::congestion::{BbrConfig, CubicConfig};
    let mut t = quic::transport(QUINN_WINDOW_MIB)?;
    if proto.bbr() {
        t.congestion_controller_factory(Arc::new(BbrConfig::default()));
    } else {
        t.congestion_controller_factory(Arc::new(CubicConfig::default()));
    }
    Ok(Arc::new(t))
}

/// Selects the kernel's congestion controller of a TCP socket and checks it took.
fn set_tcp_cc(fd: &impl AsRawFd, proto: Proto) -> Result<()> {
    let name: &[u8] = if proto.bbr() { b"bbr" } else { b"cubic" };
    // SAFETY: TCP_CONGESTION reads `name.len()` bytes from `name`.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    let mut got = [0u8; 16];
    let mut len = got.len() as libc::socklen_t;
    // SAFETY: TCP_CONGESTION writes at most `len` bytes into `got` and updates `len`.
    let rc2 = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            got.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 || rc2 != 0 || !got.starts_with(name) {
        return Err(BenchError::CongestionControl(proto.name()));
    }
    Ok(())
}

fn tcp_conn(stream: tokio::net::TcpStream, proto: Proto) -> Result<Conn> {
    set_tcp_cc(&stream, proto)?;
    stream.set_nodelay(true)?;
    let (r, w) = stream.into_split();
    Ok(Conn {
        r: Box::new(r),
        w: Box::new(w),
        keep: Box::new(()),
        udpack: None,
    })
}

/// Binds a server of `proto` at `addr`; returns it and the secret its clients need.
pub async fn listen(proto: Proto, addr: SocketAddr) -> Result<(Listener, String)> {
    match proto {
        Proto::Udpack => {
            let key = udpack::PrivateKey::generate();
            let secret = hex(key.public_key().as_bytes());
            let config = udpack::ServerConfig::new(key).auth(|t| t == TOKEN.as_bytes());
            let endpoint = udpack::Endpoint::server(config).bind(addr).await?;
            Ok((Listener::Udpack(endpoint), secret))
        }
        Proto::TcpBbr | Proto::TcpCubic => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            set_tcp_cc(&socket, proto)?;
            socket.bind(addr)?;
            Ok((Listener::Tcp(socket.listen(16)?, proto), "-".to_string()))
        }
        Proto::QuinnBbr | Proto::QuinnCubic => {
            let (config, cert) = quic::server_config(quinn_transport(proto)?, false)?;
            let endpoint = quinn::Endpoint::server(config, addr)?;
            Ok((Listener::Quinn(endpoint), hex(&cert)))
        }
    }
}

impl Listener {
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(match self {
            Listener::Udpack(e) => e.local_addr(),
            Listener::Tcp(l, _) => l.local_addr()?,
            Listener::Quinn(e) => e.local_addr()?,
        })
    }

    /// Accepts one connection and its first stream (which the client opens by writing).
    pub async fn accept(self) -> Result<Conn> {
        match self {
            Listener::Udpack(endpoint) => {
                let session = endpoint.accept().await.ok_or(BenchError::NoSession)?;
                let stream = session.accept_stream().await.ok_or(BenchError::NoStream)?;
                let (r, w) = tokio::io::split(stream);
                Ok(Conn {
                    r: Box::new(r),
                    w: Box::new(w),
                    keep: Box::new(endpoint),
                    udpack: Some(session),
                })
            }
            Listener::Tcp(listener, proto) => tcp_conn(listener.accept().await?.0, proto),
            Listener::Quinn(endpoint) => {
                let incoming = endpoint.accept().await.ok_or(BenchError::NoConnection)?;
                let conn = incoming.await?;
                let (send, recv) = conn.accept_bi().await?;
                Ok(Conn {
                    r: Box::new(recv),
                    w: Box::new(send),
                    keep: Box::new((endpoint, conn)),
                    udpack: None,
                })
            }
        }
    }
}

/// Connects from `local` to a server of `proto` at `addr` with its secret and opens one
/// stream.
pub async fn connect(
    proto: Proto,
    local: SocketAddr,
    addr: SocketAddr,
    secret: &str,
) -> Result<Conn> {
    match proto {
        Proto::Udpack => {
            let key: [u8; 32] = unhex(secret)?
                .try_into()
                .map_err(|_| BenchError::BadSecret)?;
            let config = udpack::ClientConfig::new(udpack::PublicKey::from_bytes(key)).token(TOKEN);
            let endpoint = udpack::Endpoint::client(config).bind(local).await?;
            let session = endpoint.connect(addr).await?;
            let stream = session.open_stream().await?;
            let (r, w) = tokio::io::split(stream);
            Ok(Conn {
                r: Box::new(r),
                w: Box::new(w),
                keep: Box::new(endpoint),
                udpack: Some(session),
            })
        }
        Proto::TcpBbr | Proto::TcpCubic => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            set_tcp_cc(&socket, proto)?;
            tcp_conn(socket.connect(addr).await?, proto)
        }
        Proto::QuinnBbr | Proto::QuinnCubic => {
            let cert = rustls::pki_types::CertificateDer::from(unhex(secret)?);
            let config = quic::client_config(quinn_transport(proto)?, false, cert)?;
            let mut endpoint = quinn::Endpoint::client(local)?;
            endpoint.set_default_client_config(config);
            let conn = endpoint.connect(addr, "localhost")?.await?;
            let (send, recv) = conn.open_bi().await?;
            Ok(Conn {
                r: Box::new(recv),
                w: Box::new(send),
                keep: Box::new((endpoint, conn)),
                udpack: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }
}
