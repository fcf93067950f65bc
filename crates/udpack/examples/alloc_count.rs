//! Counts heap allocations per datagram on the hot path: a loopback transfer through
//! the runtime with a counting global allocator.
//!
//! ```sh
//! cargo run --release -p udpack --example alloc_count -- [MiB]
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;
use udpack::{ClientConfig, Endpoint, PrivateKey, ServerConfig};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Allocations by size class (powers of two), to tell where they come from.
static BY_SIZE: [AtomicU64; 32] = [const { AtomicU64::new(0) }; 32];

fn record(size: usize) {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    let class = (usize::BITS - size.max(1).leading_zeros()) as usize;
    BY_SIZE[class.min(31)].fetch_add(1, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(256);
    let key = PrivateKey::generate();
    let server = Endpoint::server(ServerConfig::new(key.clone()).auth(|_| true))
        .bind("127.0.0.1:0")
        .await?;
    let client = Endpoint::client(ClientConfig::new(key.public_key()))
        .bind("127.0.0.1:0")
        .await?;
    let session = client.connect(server.local_addr()).await?;
    let accepted = server.accept().await.ok_or("no session")?;
    let reader = tokio::spawn(async move {
        let mut s = accepted.accept_stream().await.ok_or("no stream")?;
        let mut n = 0usize;
        while let Some(chunk) = s.read_chunk(1 << 20).await? {
            n += chunk.len();
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((n, accepted))
    });
    let mut stream = session.open_stream().await?;
    let buf = bytes::Bytes::from(vec![7u8; 1 << 20]);
    // Warm up: buffers, maps and windows reach their working size.
    for _ in 0..16 {
        stream.write_all_bytes(buf.clone()).await?;
    }
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let s0: Vec<u64> = BY_SIZE.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let p0 = session.stats().packets_sent;
    for _ in 16..mib {
        stream.write_all_bytes(buf.clone()).await?;
    }
    stream.finished().await?;
    let a1 = ALLOCS.load(Ordering::Relaxed);
    let by_size: Vec<(usize, u64)> = BY_SIZE
        .iter()
        .zip(&s0)
        .enumerate()
        .map(|(i, (c, b))| (1usize << i.saturating_sub(1), c.load(Ordering::Relaxed) - b))
        .filter(|(_, n)| *n > 0)
        .collect();
    let p1 = session.stats().packets_sent;
    let (n, accepted) = reader.await?.map_err(|e| e.to_string())?;
    let received = accepted.stats().packets_received;
    let _ = stream.write_all(b"").await;
    println!("allocations by size (from bytes, count): {by_size:?}");
    println!(
        "{} MiB moved; {} allocations for {} datagrams sent (and about as many received): {:.2} per datagram sent, both sides together; {} received by the server",
        n >> 20,
        a1 - a0,
        p1 - p0,
        (a1 - a0) as f64 / (p1 - p0) as f64,
        received
    );
    Ok(())
}
