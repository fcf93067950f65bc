//! The kernel-TCP side of a throughput run: one connection per stream, default socket
//! options.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::Result;
use crate::payload::{check, join_all, write_stream, CHUNK};
use crate::throughput::BoundTx;

/// Accepts `streams` connections and reads each to the end into a CHUNK-sized buffer;
/// returns the bytes read and when the last one arrived.
pub async fn server(streams: usize, bound: BoundTx) -> Result<(u64, Instant)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let _ = bound.send(listener.local_addr()?);
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (mut conn, _) = listener.accept().await?;
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            let mut off = 0u64;
            loop {
                let n = conn.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                check(off, &buf[..n])?;
                off += n as u64;
            }
            Ok(off)
        }));
    }
    let n = join_all(tasks).await?;
    Ok((n, Instant::now()))
}

/// Opens `streams` connections and writes `per_stream` bytes on each. TCP has no
/// sender-side note.
pub async fn client(addr: SocketAddr, streams: usize, per_stream: u64) -> Result<String> {
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        tasks.push(tokio::spawn(async move {
            let n = write_stream(&mut conn, per_stream).await?;
            conn.shutdown().await?;
            Ok(n)
        }));
    }
    join_all(tasks).await?;
    Ok(String::new())
}
