//! A server and a client on 127.0.0.1: the client uploads generated data over several
//! streams, the server checks every byte (SHA-256 per stream), and both print the
//! speed once a second.
//!
//! ```sh
//! cargo run --release -p udpack --example loopback -- [MiB] [streams]
//! ```

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use udpack::{ClientConfig, Endpoint, PrivateKey, ServerConfig};

const TOKEN: &str = "loopback-demo";

/// The bytes of stream `i`: a cheap deterministic pattern both sides can recompute.
fn chunk(i: u64, offset: u64, out: &mut [u8]) {
    for (k, b) in out.iter_mut().enumerate() {
        let x = (offset + k as u64)
            .wrapping_mul(0x9e37_79b9)
            .wrapping_add(i * 7919);
        *b = (x >> 13) as u8;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let streams: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(4);
    let per_stream = mib * 1024 * 1024 / streams.max(1);

    let key = PrivateKey::generate();
    let server = Endpoint::server(ServerConfig::new(key.clone()).auth(|t| t == TOKEN.as_bytes()))
        .bind("127.0.0.1:0")
        .await?;
    let client = Endpoint::client(ClientConfig::new(key.public_key()).token(TOKEN))
        .bind("127.0.0.1:0")
        .await?;
    println!(
        "server on {}, client on {}: {mib} MiB over {streams} streams",
        server.local_addr(),
        client.local_addr()
    );

    let receiver = {
        let server = server.clone();
        tokio::spawn(async move {
            let session = server.accept().await.ok_or("no session")?;
            let mut tasks = Vec::new();
            while let Some(mut stream) = session.accept_stream().await {
                tasks.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut hash = Sha256::new();
                    let mut n = 0u64;
                    loop {
                        let got = stream.read(&mut buf).await?;
                        if got == 0 {
                            break;
                        }
                        hash.update(&buf[..got]);
                        n += got as u64;
                    }
                    Ok::<_, std::io::Error>((stream.id(), n, hash.finalize()))
                }));
            }
            let mut results = Vec::new();
            for t in tasks {
                results.push(t.await??);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(results)
        })
    };

    let mut speed = client.speed();
    let progress = tokio::spawn(async move {
        while speed.changed().await.is_ok() {
            println!("{}", *speed.borrow());
        }
    });

    let t0 = Instant::now();
    let session = client.connect(server.local_addr()).await?;
    let mut senders = Vec::new();
    for i in 0..streams {
        let mut stream = session.open_stream().await?;
        senders.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            let mut hash = Sha256::new();
            let mut off = 0u64;
            while off < per_stream {
                let n = (per_stream - off).min(buf.len() as u64) as usize;
                chunk(i, off, &mut buf[..n]);
                hash.update(&buf[..n]);
                stream.write_all(&buf[..n]).await?;
                off += n as u64;
            }
            stream.finished().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((stream.id(), off, hash.finalize()))
        }));
    }
    let mut sent = Vec::new();
    for s in senders {
        sent.push(
            s.await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?,
        );
    }
    session.goaway(0, "done");
    let mut received = receiver
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let elapsed = t0.elapsed();
    progress.abort();
    sent.sort();
    received.sort();
    let total: u64 = received.iter().map(|r| r.1).sum();
    let ok = sent == received;
    println!(
        "{} MiB in {:.2} s: {:.1} MB/s, {:.0} Mbit/s; every stream's SHA-256 {}",
        total / (1024 * 1024),
        elapsed.as_secs_f64(),
        total as f64 / 1e6 / elapsed.as_secs_f64(),
        total as f64 * 8.0 / 1e6 / elapsed.as_secs_f64(),
        if ok { "matches" } else { "DIFFERS" }
    );
    let stats = session.stats();
    println!(
        "client: {} packets sent, {} lost, {} KB retransmitted, srtt {:?}",
        stats.packets_sent,
        stats.packets_lost,
        stats.bytes_retransmitted / 1000,
        stats.smoothed_rtt
    );
    tokio::time::timeout(Duration::from_secs(5), session.closed())
        .await
        .ok();
    if !ok {
        return Err("integrity check failed".into());
    }
    Ok(())
}
