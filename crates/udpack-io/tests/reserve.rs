//! A message's announced length reserves nothing by itself: a peer that announces a
//! 15 MB message and sends a few bytes of it costs the receiver those bytes, not 15 MB
//! (nor the 257 KiB a body gets reserved once 64 KiB of it have arrived). Measured
//! with a counting allocator (this binary's only test, so nothing else allocates
//! beside it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use udpack_io::{Client, ClientOptions, PrivateKey, Server, ServerEvent, ServerOptions};

/// Bytes the allocator has handed out and not got back.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's guarantees are the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const TOKEN: &str = "reserve-token";

#[tokio::test]
async fn an_announced_length_reserves_only_what_has_arrived() {
    let key = PrivateKey::generate();
    let server = Server::bind(
        ServerOptions::new(key.clone())
            .host("127.0.0.1")
            .port(0)
            .auth(|t| t == TOKEN.as_bytes()),
    )
    .await
    .expect("bind server");
    let client = Client::bind(
        ClientOptions::new(key.public_key())
            .host("127.0.0.1")
            .token(TOKEN)
            .handshake_timeout(Duration::from_secs(5)),
    )
    .await
    .expect("bind client");
    let socket = client
        .connect(server.local_addr().to_string())
        .await
        .expect("connect");
    // Everything is set up; what follows is the announced message alone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = LIVE.load(Ordering::Relaxed);
    let announced: u32 = 15_000_000;
    let mut frame = announced.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0x92; 1000]);
    let mut stream = socket.session().open_stream().await.expect("open");
    stream
        .write_all_bytes(frame.into())
        .await
        .expect("write the start of the message");
    // The server makes a channel of the stream and starts reading the body.
    let channel = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let ServerEvent::Channel(c) = server.next_event().await.expect("server event") {
                return c;
            }
        }
    })
    .await
    .expect("a channel");
    let waiting = tokio::time::timeout(Duration::from_millis(500), channel.recv()).await;
    assert!(waiting.is_err(), "no message: it is not all here");
    let grown = LIVE.load(Ordering::Relaxed) - before;
    assert!(
        grown < 192 << 10,
        "{grown} bytes held for 1 KB of a {announced}-byte message"
    );
    client.close();
}
