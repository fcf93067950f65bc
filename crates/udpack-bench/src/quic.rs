//! The quinn (QUIC) side of a throughput run: one connection, unidirectional streams,
//! rustls with the ring provider and a self-signed certificate the client trusts.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;

use crate::error::{BenchError, Result};
use crate::payload::{check, join_all, write_stream, READ_MAX};
use crate::throughput::BoundTx;

/// 127.0.0.1, any port.
const LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Server and client configurations with windows of `window_mib` MiB (0: quinn's
/// defaults), so that quinn is not window-limited where udpack is not.
pub fn setup(window_mib: u64, chacha: bool) -> Result<(quinn::ServerConfig, quinn::ClientConfig)> {
    let transport = Arc::new(transport(window_mib)?);
    let (server, cert_der) = server_config(transport.clone(), chacha)?;
    let client = client_config(transport, chacha, cert_der)?;
    Ok((server, client))
}

/// rustls' ring provider; with `chacha`, ChaCha20-Poly1305 first.
fn provider(chacha: bool) -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    if chacha {
        // The client offers ChaCha20-Poly1305 first and the server follows the client's
        // order; AES-128-GCM stays available for QUIC's Initial packets.
        provider
            .cipher_suites
            .sort_by_key(|cs| cs.suite() != rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    }
    Arc::new(provider)
}

/// quinn's default transport with the flow-control windows raised to `window_mib` MiB
/// (0: quinn's defaults).
pub fn transport(window_mib: u64) -> Result<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    if window_mib > 0 {
        let w = window_mib << 20;
        transport.stream_receive_window(quinn::VarInt::from_u64(w)?);
        transport.receive_window(quinn::VarInt::from_u64(w.max(64 << 20))?);
        transport.send_window(w.max(64 << 20));
    }
    Ok(transport)
}

/// A server configuration with a fresh self-signed certificate for "localhost";
/// returns the certificate too, for the client to trust.
pub fn server_config(
    transport: Arc<quinn::TransportConfig>,
    chacha: bool,
) -> Result<(quinn::ServerConfig, CertificateDer<'static>)> {
    use quinn::crypto::rustls::QuicServerConfig;
    use rustls::pki_types::PrivatePkcs8KeyDer;

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let cert_der = cert.cert.der().clone();
    let key_der = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    let tls_server = rustls::ServerConfig::builder_with_provider(provider(chacha))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der.into())?;
    let mut server =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls_server)?));
    server.transport_config(transport);
    Ok((server, cert_der))
}

/// A client configuration that trusts only `cert_der`.
pub fn client_config(
    transport: Arc<quinn::TransportConfig>,
    chacha: bool,
    cert_der: CertificateDer<'static>,
) -> Result<quinn::ClientConfig> {
    use quinn::crypto::rustls::QuicClientConfig;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der)?;
    let tls_client = rustls::ClientConfig::builder_with_provider(provider(chacha))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls_client)?));
    client.transport_config(transport);
    Ok(client)
}

/// Accepts one connection and `streams` unidirectional streams, reads them to the end;
/// returns the bytes read and when the last one arrived.
pub async fn server(
    config: quinn::ServerConfig,
    streams: usize,
    bound: BoundTx,
) -> Result<(u64, Instant)> {
    let endpoint = quinn::Endpoint::server(config, LOCAL)?;
    let _ = bound.send(endpoint.local_addr()?);
    let conn = endpoint
        .accept()
        .await
        .ok_or(BenchError::NoConnection)?
        .await?;
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut recv = conn.accept_uni().await?;
        tasks.push(tokio::spawn(async move {
            let mut off = 0u64;
            while let Some(chunk) = recv.read_chunk(READ_MAX, true).await? {
                check(off, &chunk.bytes)?;
                off += chunk.bytes.len() as u64;
            }
            Ok(off)
        }));
    }
    let n = join_all(tasks).await?;
    let end = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .ok();
    Ok((n, end))
}

/// Opens one connection to `addr` and writes `per_stream` bytes on each of `streams`
/// unidirectional streams; returns the sender's view of the connection.
pub async fn client(
    config: quinn::ClientConfig,
    addr: SocketAddr,
    streams: usize,
    per_stream: u64,
) -> Result<String> {
    let mut endpoint = quinn::Endpoint::client(LOCAL)?;
    endpoint.set_default_client_config(config);
    let conn = endpoint.connect(addr, "localhost")?.await?;
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut send = conn.open_uni().await?;
        tasks.push(tokio::spawn(async move {
            let n = write_stream(&mut send, per_stream).await?;
            send.finish()?;
            // Resolves once the peer has read everything (or stopped the stream).
            send.stopped().await?;
            Ok(n)
        }));
    }
    join_all(tasks).await?;
    let st = conn.stats();
    conn.close(0u32.into(), b"done");
    tokio::time::timeout(Duration::from_secs(5), endpoint.wait_idle())
        .await
        .ok();
    Ok(format!(
        "{} packets sent, {} lost ({:.3}%), {} MiB lost, rtt {:?}, cwnd {} KiB",
        st.path.sent_packets,
        st.path.lost_packets,
        100.0 * st.path.lost_packets as f64 / st.path.sent_packets.max(1) as f64,
        st.path.lost_bytes >> 20,
        st.path.rtt,
        st.path.cwnd >> 10
    ))
}
