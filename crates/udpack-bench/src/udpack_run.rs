//! The udpack side of a throughput run: one session, one bidirectional stream per
//! stream of the run, zero-copy reads on the server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};
use crate::payload::{check, join_all, write_stream, READ_MAX};
use crate::throughput::BoundTx;
use crate::TOKEN;

/// Accepts one session and `streams` streams, reads them to the end; returns the bytes
/// read and when the last one arrived.
pub async fn server(
    key: udpack::PrivateKey,
    transport: udpack::TransportConfig,
    streams: usize,
    bound: BoundTx,
) -> Result<(u64, Instant)> {
    let config = udpack::ServerConfig::new(key)
        .auth(|t| t == TOKEN.as_bytes())
        .transport(transport);
    let endpoint = udpack::Endpoint::server(config).bind("127.0.0.1:0").await?;
    let _ = bound.send(endpoint.local_addr());
    let session = endpoint.accept().await.ok_or(BenchError::NoSession)?;
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut stream = session.accept_stream().await.ok_or(BenchError::NoStream)?;
        tasks.push(tokio::spawn(async move {
            let mut off = 0u64;
            while let Some(chunk) = stream.read_chunk(READ_MAX).await? {
                check(off, &chunk)?;
                off += chunk.len() as u64;
            }
            Ok(off)
        }));
    }
    let n = join_all(tasks).await?;
    let end = Instant::now();
    // Let the client see its data acknowledged and close first.
    tokio::time::timeout(Duration::from_secs(5), session.closed())
        .await
        .ok();
    Ok((n, end))
}

/// Opens one session to `addr` and writes `per_stream` bytes on each of `streams`
/// streams; returns the sender's view of the session.
pub async fn client(
    addr: SocketAddr,
    key: udpack::PublicKey,
    transport: udpack::TransportConfig,
    streams: usize,
    per_stream: u64,
) -> Result<String> {
    let config = udpack::ClientConfig::new(key)
        .token(TOKEN)
        .transport(transport);
    let endpoint = udpack::Endpoint::client(config).bind("127.0.0.1:0").await?;
    let session = endpoint.connect(addr).await?;
    // Once a millisecond, whether the congestion window is what holds the sender back:
    // samples are taken when this thread has nothing else to run. Counts: samples,
    // samples with the window full, sum of the windows.
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let sampler = {
        let (session, counts) = (session.clone(), counts.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            loop {
                tick.tick().await;
                let st = session.stats();
                if st.stream_bytes_sent > 0 {
                    counts[0].fetch_add(1, Ordering::Relaxed);
                    if st.bytes_in_flight + 1452 > st.congestion_window {
                        counts[1].fetch_add(1, Ordering::Relaxed);
                    }
                    counts[2].fetch_add(st.congestion_window, Ordering::Relaxed);
                }
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut stream = session.open_stream().await?;
        tasks.push(tokio::spawn(async move {
            let n = write_stream(&mut stream, per_stream).await?;
            stream.finished().await?;
            Ok(n)
        }));
    }
    join_all(tasks).await?;
    sampler.abort();
    let st = session.stats();
    let [samples, full, cwnd_sum] = [0, 1, 2].map(|i| counts[i].load(Ordering::Relaxed));
    session.close(0, "done");
    tokio::time::timeout(Duration::from_secs(5), session.closed())
        .await
        .ok();
    Ok(format!(
        "{} packets sent, {} lost ({:.3}%), {} MiB retransmitted, srtt {:?}, min rtt {:?}, \
         cwnd {} KiB at the end, {} KiB on average; window full in {:.0}% of {samples} idle samples",
        st.packets_sent,
        st.packets_lost,
        100.0 * st.packets_lost as f64 / st.packets_sent.max(1) as f64,
        st.bytes_retransmitted >> 20,
        st.smoothed_rtt,
        st.min_rtt,
        st.congestion_window >> 10,
        (cwnd_sum / samples.max(1)) >> 10,
        100.0 * full as f64 / samples.max(1) as f64,
    ))
}
