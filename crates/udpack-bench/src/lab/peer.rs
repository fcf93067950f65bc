//! The lab's child processes (`lab-peer`, hidden): this binary run inside a namespace
//! as one end of one flow. Each talks to the lab over stdout, one line at a time:
//!
//! - servers start with `bound ADDR SECRET`;
//! - a bulk server ends with `result BYTES NANOS`: the bytes it received in the
//!   measurement window (after the warm-up, from its own start) and the window's length;
//! - a latency client ends with `latency COUNT P50_US P99_US MAX_US`: round-trip times
//!   of the echoed messages sent after the warm-up;
//! - a peer that fails says `error MESSAGE` (the error and its causes) before it exits.
//!
//! Clients and the echo server run until the lab kills them (or a deadline passes).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::conn::{self, Proto};
use crate::error::Result;
use crate::payload::{check, write_stream, CHUNK};

/// The hidden subcommand.
pub const SUBCOMMAND: &str = "lab-peer";

/// How long past its window a client or echo server lives at most.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    BulkServer,
    BulkClient,
    EchoServer,
    LatencyClient,
}

#[derive(clap::Args, Debug)]
pub struct PeerArgs {
    #[arg(value_enum)]
    pub role: Role,
    #[arg(value_enum)]
    pub proto: Proto,
    /// Where a server binds, or where a client connects.
    pub addr: SocketAddr,
    /// The client's own address.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub local: SocketAddr,
    /// The server's secret (from its `bound` line).
    #[arg(long, default_value = "-")]
    pub secret: String,
    #[arg(long, default_value_t = 2000)]
    pub warmup_ms: u64,
    #[arg(long, default_value_t = 8000)]
    pub duration_ms: u64,
    /// Messages per second of a latency client.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Bytes per message of a latency client (at least 16: a time stamp and a count).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..=65536))]
    pub size: u64,
    /// A udpack bulk client prints its session's state on stderr this often (0: never).
    #[arg(long, default_value_t = 0)]
    pub trace_ms: u64,
}

impl PeerArgs {
    fn warmup(&self) -> Duration {
        Duration::from_millis(self.warmup_ms)
    }

    fn window(&self) -> Duration {
        Duration::from_millis(self.duration_ms)
    }
}

/// Runs the peer; the process exits when it returns.
pub fn run(args: &PeerArgs) -> Result<()> {
    let rt = crate::runtime()?;
    let result = rt.block_on(async {
        match args.role {
            Role::BulkServer => bulk_server(args).await,
            Role::BulkClient => bulk_client(args).await,
            Role::EchoServer => echo_server(args).await,
            Role::LatencyClient => latency_client(args).await,
        }
    });
    if let Err(e) = &result {
        println!("error {}", causes(e));
    }
    result
}

/// An error and its chain of sources, each message once.
fn causes(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if parts.last() != Some(&msg) {
            parts.push(msg);
        }
        source = s.source();
    }
    parts.join(": ")
}

async fn bind(args: &PeerArgs) -> Result<conn::Listener> {
    let (listener, secret) = conn::listen(args.proto, args.addr).await?;
    println!("bound {} {secret}", listener.local_addr()?);
    Ok(listener)
}

/// Counts the bytes received from the start (when it is bound) and reports those of the
/// window after the warm-up; it measures even if nothing arrives.
async fn bulk_server(args: &PeerArgs) -> Result<()> {
    let listener = bind(args).await?;
    let start = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut conn = listener.accept().await?;
            let mut buf = vec![0u8; CHUNK];
            let mut off = 0u64;
            loop {
                let n = conn.r.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                check(off, &buf[..n])?;
                off += n as u64;
                received.store(off, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep_until(start + args.warmup()).await;
    let (b0, t0) = (received.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep_until(start + args.warmup() + args.window()).await;
    let (b1, t1) = (received.load(Ordering::Relaxed), Instant::now());
    if reader.is_finished() {
        // A failed reader (corrupt data) fails the run rather than report a figure.
        let done: Result<()> = reader.await?;
        done?;
    }
    println!("result {} {}", b1 - b0, (t1 - t0).as_nanos());
    Ok(())
}

/// Sends the pattern until the lab stops it, the connection fails, or the deadline.
async fn bulk_client(args: &PeerArgs) -> Result<()> {
    let deadline = args.warmup() + args.window() + GRACE;
    let start = Instant::now();
    let send = async {
        let mut conn = conn::connect(args.proto, args.local, args.addr, &args.secret).await?;
        if let (Some(session), 1..) = (conn.udpack.clone(), args.trace_ms) {
            let period = Duration::from_millis(args.trace_ms);
            tokio::spawn(trace(session, args.proto, start, period));
        }
        write_stream(&mut conn.w, u64::MAX).await?;
        Ok::<_, crate::error::BenchError>(())
    };
    // The end of a bulk client is always the lab's doing (or the server exiting).
    let _ = tokio::time::timeout(deadline, send).await;
    Ok(())
}

/// Prints the session's state on stderr every `period`, from when it connected; the
/// time is from the client's start.
async fn trace(session: udpack::Session, proto: Proto, start: Instant, period: Duration) {
    let mbit = |bytes_per_s: u64| bytes_per_s as f64 * 8.0 / 1e6;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let s = session.stats();
        eprintln!(
            "trace {} {:7.2}s {:<15}{} cwnd {:6}K flight {:6}K pacing {:6.1} delivery {:6.1} Mbit/s \
             srtt {:6.1} min {:6.2} ms lost {} spurious {} retx {}K written {}K \
             credit {}K stream {}",
            proto.name(),
            start.elapsed().as_secs_f64(),
            s.congestion_phase,
            if s.congestion_competing { " competing" } else { "" },
            s.congestion_window / 1024,
            s.bytes_in_flight / 1024,
            mbit(s.pacing_rate),
            mbit(s.delivery_rate),
            ms(s.smoothed_rtt),
            ms(s.min_rtt),
            s.packets_lost,
            s.spurious_losses,
            s.bytes_retransmitted / 1024,
            s.stream_bytes_sent / 1024,
            s.send_credit / 1024,
            match s.stream_send_credit {
                u64::MAX => "-".to_string(),
                c => format!("{}K", c / 1024),
            },
        );
    }
}

/// Writes back whatever it reads, flushing each piece at once.
async fn echo_server(args: &PeerArgs) -> Result<()> {
    let listener = bind(args).await?;
    let deadline = args.warmup() + args.window() + GRACE;
    let echo = async {
        let mut conn = listener.accept().await?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = conn.r.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            conn.w.write_all(&buf[..n]).await?;
            conn.w.flush().await?;
        }
    };
    match tokio::time::timeout(deadline, echo).await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}

/// Sends `size`-byte messages at `rate` per second, each stamped with the time it was
/// due (so a stalled sender counts against the protocol), and measures how long each
/// takes to come back.
async fn latency_client(args: &PeerArgs) -> Result<()> {
    let conn = conn::connect(args.proto, args.local, args.addr, &args.secret).await?;
    let (r, w, _keep) = (conn.r, conn.w, (conn.keep, conn.udpack));
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let writer = tokio::spawn(send_stamped(w, args.size as usize, period, start));
    let (warmup, end) = (args.warmup(), args.warmup() + args.window());
    let mut rtts = Vec::with_capacity((args.rate as u64 * (args.duration_ms / 1000 + 1)) as usize);
    // Reading stops at the end of the window; an error ends it early.
    let outcome = tokio::time::timeout(
        end,
        read_echoes(r, args.size as usize, start, warmup, &mut rtts),
    )
    .await;
    writer.abort();
    if let Ok(Err(e)) = outcome {
        return Err(e);
    }
    let (n, p50, p99, max) = percentiles(&mut rtts);
    println!(
        "latency {n} {} {} {}",
        p50.as_micros(),
        p99.as_micros(),
        max.as_micros()
    );
    Ok(())
}

/// Writes a message every `period`: its due time since `start` in nanoseconds, then a
/// count, then zeros.
async fn send_stamped(
    mut w: conn::Writer,
    size: usize,
    period: Duration,
    start: Instant,
) -> Result<()> {
    let mut tick = tokio::time::interval(period);
    let mut msg = vec![0u8; size];
    let mut seq = 0u64;
    loop {
        let due = tick.tick().await;
        msg[..8].copy_from_slice(&((due - start).as_nanos() as u64).to_le_bytes());
        msg[8..16].copy_from_slice(&seq.to_le_bytes());
        w.write_all(&msg).await?;
        w.flush().await?;
        seq += 1;
    }
}

/// Reads echoed messages and keeps the round-trip time of those due after `warmup`.
async fn read_echoes(
    mut r: conn::Reader,
    size: usize,
    start: Instant,
    warmup: Duration,
    rtts: &mut Vec<Duration>,
) -> Result<()> {
    let mut msg = vec![0u8; size];
    loop {
        r.read_exact(&mut msg).await?;
        let now = start.elapsed();
        let mut stamp = [0u8; 8];
        stamp.copy_from_slice(&msg[..8]);
        let sent = Duration::from_nanos(u64::from_le_bytes(stamp));
        if sent >= warmup {
            rtts.push(now.saturating_sub(sent));
        }
    }
}

/// Count, median, 99th percentile (nearest rank) and maximum; zeros when empty.
pub fn percentiles(v: &mut [Duration]) -> (usize, Duration, Duration, Duration) {
    v.sort_unstable();
    let n = v.len();
    if n == 0 {
        return (0, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    }
    let rank = |p: f64| v[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    (n, rank(0.5), rank(0.99), v[n - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let (n, p50, p99, max) = percentiles(&mut v);
        assert_eq!(n, 100);
        assert_eq!(p50, Duration::from_millis(50));
        assert_eq!(p99, Duration::from_millis(99));
        assert_eq!(max, Duration::from_millis(100));
        assert_eq!(percentiles(&mut []).0, 0);
    }
}
