//! The data streams: bulk senders that write until a deadline, receivers that count
//! what they read, the server's echo, and the client's paced messages with their
//! round-trip times.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use udpack::{RecvStream, SendStream, StreamError};

use super::latency::Histogram;

/// Bytes per bulk write: one shared buffer, written again and again without copying.
const BLOCK: usize = 256 * 1024;
/// Most bytes taken from a stream per read.
const READ_MAX: usize = 1 << 20;

/// Why a data stream failed.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("a stream of unknown kind {0}")]
    UnknownKind(u8),
    #[error("a {0} stream, which this test does not have")]
    UnexpectedKind(&'static str),
    #[error("a stream ended before saying what it is for")]
    NoKind,
    #[error("the peer echoed more than was sent")]
    EchoedMore,
    #[error("the last bytes were not acknowledged in time")]
    TailTimedOut,
    #[error("a stream task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The payload of bulk writes: random, so that nothing on the path compresses it.
pub fn block() -> Bytes {
    use rand::RngCore;
    let mut b = vec![0u8; BLOCK];
    rand::thread_rng().fill_bytes(&mut b);
    Bytes::from(b)
}

/// Bytes received on one side, with the time of the last one.
#[derive(Debug)]
pub struct Counter {
    start: Instant,
    bytes: AtomicU64,
    last_us: AtomicU64,
}

impl Counter {
    pub fn new(start: Instant) -> Self {
        Counter {
            start,
            bytes: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
        }
    }

    fn add(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let us = super::wire::micros(self.start.elapsed());
        self.last_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// When the last byte arrived, from the start.
    pub fn last(&self) -> Duration {
        Duration::from_micros(self.last_us.load(Ordering::Relaxed))
    }
}

/// Writes `block` again and again until `until`, then finishes the stream and waits,
/// up to `tail` more, for the peer to acknowledge everything.
pub async fn send_until(
    mut tx: SendStream,
    block: Bytes,
    until: Instant,
    tail: Duration,
) -> Result<(), FlowError> {
    loop {
        match tokio::time::timeout_at(until, tx.write_all_bytes(block.clone())).await {
            Ok(r) => r?,
            // Whatever part of the block was taken is sent; the rest is not needed.
            Err(_) => break,
        }
        if Instant::now() >= until {
            break;
        }
    }
    tx.finish()?;
    tokio::time::timeout(tail, tx.finished())
        .await
        .map_err(|_| FlowError::TailTimedOut)??;
    Ok(())
}

/// Reads until the end of the stream, counting the bytes.
pub async fn count(mut rx: RecvStream, counter: &Counter) -> Result<(), FlowError> {
    while let Some(chunk) = rx.read_chunk(READ_MAX).await? {
        counter.add(chunk.len());
    }
    Ok(())
}

/// Writes back whatever arrives, as it arrives, until the end of the stream.
pub async fn echo(mut rx: RecvStream, mut tx: SendStream) -> Result<(), FlowError> {
    while let Some(chunk) = rx.read_chunk(READ_MAX).await? {
        tx.write_all_bytes(chunk).await?;
    }
    tx.finish()?;
    tx.finished().await?;
    Ok(())
}

/// What the messages test has measured so far.
#[derive(Debug, Default)]
pub struct Messages {
    pub sent: u64,
    pub echoed: u64,
    /// Since the last interval was taken.
    pub interval: Histogram,
    pub total: Histogram,
}

impl Messages {
    fn record(&mut self, rtt: Duration) {
        self.echoed += 1;
        self.interval.record(rtt);
        self.total.record(rtt);
    }
}

/// How one echo stream sends its messages.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// The first message.
    pub first: Instant,
    /// Between two messages on this stream.
    pub period: Duration,
    /// No message is sent at or after this.
    pub until: Instant,
    pub size: usize,
}

/// Sends a message every `period` and times each one until its last byte is back. A
/// stream keeps order, so the echoes come back in the order the messages left.
pub async fn messages(
    tx: SendStream,
    rx: RecvStream,
    pacing: Pacing,
    tail: Duration,
    stats: Arc<Mutex<Messages>>,
) -> Result<(), FlowError> {
    let in_flight = Arc::new(Mutex::new(VecDeque::new()));
    // Separate tasks: a writer blocked by flow control must not stop the reading
    // that would free it. In a set, so that it ends with this future.
    let mut writer = JoinSet::new();
    writer.spawn(write_messages(
        tx,
        pacing,
        tail,
        in_flight.clone(),
        stats.clone(),
    ));
    let read = read_echoes(rx, pacing.size, &in_flight, &stats).await;
    let written = match writer.join_next().await {
        Some(r) => r?,
        None => Ok(()),
    };
    read.and(written)
}

async fn write_messages(
    mut tx: SendStream,
    pacing: Pacing,
    tail: Duration,
    in_flight: Arc<Mutex<VecDeque<Instant>>>,
    stats: Arc<Mutex<Messages>>,
) -> Result<(), FlowError> {
    let message = Bytes::from(vec![0x5a; pacing.size]);
    let mut ticker = tokio::time::interval_at(pacing.first, pacing.period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    loop {
        let at = ticker.tick().await;
        if at >= pacing.until || Instant::now() >= pacing.until {
            break;
        }
        // Noted before writing: the echo may be back before the write returns.
        if let Ok(mut q) = in_flight.lock() {
            q.push_back(Instant::now());
        }
        tx.write_all_bytes(message.clone()).await?;
        if let Ok(mut s) = stats.lock() {
            s.sent += 1;
        }
    }
    tx.finish()?;
    tokio::time::timeout(tail, tx.finished())
        .await
        .map_err(|_| FlowError::TailTimedOut)??;
    Ok(())
}

async fn read_echoes(
    mut rx: RecvStream,
    size: usize,
    in_flight: &Mutex<VecDeque<Instant>>,
    stats: &Mutex<Messages>,
) -> Result<(), FlowError> {
    let mut partial = 0usize;
    while let Some(chunk) = rx.read_chunk(READ_MAX).await? {
        let now = Instant::now();
        partial += chunk.len();
        while partial >= size {
            partial -= size;
            let sent = in_flight.lock().ok().and_then(|mut q| q.pop_front());
            let Some(sent) = sent else {
                return Err(FlowError::EchoedMore);
            };
            if let Ok(mut s) = stats.lock() {
                s.record(now - sent);
            }
        }
    }
    Ok(())
}
