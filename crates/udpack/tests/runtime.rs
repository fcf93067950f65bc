//! The runtime over real UDP sockets on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use udpack::{
    reject, ClientConfig, CloseReason, ConnectError, Endpoint, HandshakeError, PrivateKey,
    ServerConfig, Session, TransportConfig,
};

const TOKEN: &str = "letmein";

async fn server(key: &PrivateKey, transport: TransportConfig) -> Endpoint {
    Endpoint::server(
        ServerConfig::new(key.clone())
            .auth(|t| t == TOKEN.as_bytes())
            .transport(transport),
    )
    .bind("127.0.0.1:0")
    .await
    .expect("bind server")
}

fn client_config(key: &PrivateKey, transport: TransportConfig) -> ClientConfig {
    ClientConfig::new(key.public_key())
        .token(TOKEN)
        .transport(transport)
        .handshake_timeout(Duration::from_secs(5))
}

async fn client(key: &PrivateKey, transport: TransportConfig) -> Endpoint {
    Endpoint::client(client_config(key, transport))
        .bind("127.0.0.1:0")
        .await
        .expect("bind client")
}

/// Deterministic pseudo-random bytes.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn digest(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Echo-less exchange: each side of each stream sends its payload and the SHA-256 of
/// what it received is compared with what the other side sent.
async fn serve_streams(session: Session) -> Vec<[u8; 32]> {
    let mut tasks = Vec::new();
    while let Some(mut stream) = session.accept_stream().await {
        tasks.push(tokio::spawn(async move {
            // The first 8 bytes: seed and length of what to send back.
            let mut head = [0u8; 16];
            stream.read_exact(&mut head).await.expect("read head");
            let seed = u64::from_be_bytes(head[..8].try_into().expect("8 bytes"));
            let back = u64::from_be_bytes(head[8..].try_into().expect("8 bytes")) as usize;
            let mut got = Vec::new();
            let write = payload(seed ^ 0xffff, back);
            stream.read_to_end(&mut got).await.expect("read body");
            stream.write_all(&write).await.expect("write back");
            stream.finished().await.expect("finish back");
            digest(&got)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("stream task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sessions_many_streams_both_ways_verified_by_hash() {
    let key = PrivateKey::generate();
    let server = server(&key, TransportConfig::default()).await;
    let addr = server.local_addr();
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let acceptor = {
        let received = received.clone();
        let server = server.clone();
        tokio::spawn(async move {
            let mut sessions = Vec::new();
            while let Some(s) = server.accept().await {
                let received = received.clone();
                sessions.push(tokio::spawn(async move {
                    let digests = serve_streams(s).await;
                    received.lock().expect("lock").extend(digests);
                }));
            }
            for s in sessions {
                s.await.expect("session task");
            }
        })
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut clients = Vec::new();
    let mut expected_at_server = Vec::new();
    for c in 0..6u64 {
        let ep = client(&key, TransportConfig::default()).await;
        let streams: Vec<(u64, usize, usize)> = (0..8)
            .map(|i| {
                (
                    c * 100 + i,
                    rng.gen_range(0..2_000_000usize),
                    rng.gen_range(0..500_000usize),
                )
            })
            .collect();
        for &(seed, up, _) in &streams {
            expected_at_server.push(digest(&payload(seed, up)));
        }
        clients.push(tokio::spawn(async move {
            let session = ep.connect(addr).await.expect("connect");
            let mut tasks = Vec::new();
            for (seed, up, down) in streams {
                let mut stream = session.open_stream().await.expect("open");
                tasks.push(tokio::spawn(async move {
                    let mut head = Vec::new();
                    head.extend_from_slice(&seed.to_be_bytes());
                    head.extend_from_slice(&(down as u64).to_be_bytes());
                    stream.write_all(&head).await.expect("write head");
                    stream.write_all(&payload(seed, up)).await.expect("write");
                    stream.finish().expect("finish");
                    let mut back = Vec::new();
                    stream.read_to_end(&mut back).await.expect("read back");
                    assert_eq!(
                        digest(&back),
                        digest(&payload(seed ^ 0xffff, down)),
                        "stream {seed}"
                    );
                    assert_eq!(back.len(), down);
                }));
            }
            for t in tasks {
                t.await.expect("client stream");
            }
            session.goaway(0, "done");
            let reason = session.closed().await;
            assert_eq!(reason.code(), Some(0), "{reason:?}");
            drop(ep);
        }));
    }
    for c in clients {
        tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("clients finish in time")
            .expect("client task");
    }
    server.close(0, "test over");
    tokio::time::timeout(Duration::from_secs(10), acceptor)
        .await
        .expect("server finishes")
        .expect("acceptor");
    let mut got = received.lock().expect("lock").clone();
    got.sort();
    expected_at_server.sort();
    assert_eq!(got, expected_at_server);
}

#[tokio::test]
async fn connect_errors_are_told_apart() {
    let key = PrivateKey::generate();
    let server = server(&key, TransportConfig::default()).await;
    let addr = server.local_addr();
    let ep = Endpoint::builder().bind("127.0.0.1:0").await.expect("bind");

    // Wrong token: an authenticated reject, fast.
    let t0 = Instant::now();
    let wrong_token = client_config(&key, TransportConfig::default()).token("nope");
    match ep.connect_with(addr, &wrong_token).await {
        Err(ConnectError::Handshake(HandshakeError::Rejected { code, .. })) => {
            assert_eq!(code, reject::TOKEN_REJECTED)
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(server.session_count(), 0);

    // Wrong server key.
    let other = PrivateKey::generate();
    let t0 = Instant::now();
    match ep
        .connect_with(addr, &client_config(&other, TransportConfig::default()))
        .await
    {
        Err(ConnectError::Handshake(HandshakeError::KeyMismatch)) => {}
        other => panic!("expected KeyMismatch, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(2));

    // Nobody answers: a socket that reads and drops everything.
    let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind silent");
    let silent_addr = silent.local_addr().expect("addr");
    let sink = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while silent.recv_from(&mut buf).await.is_ok() {}
    });
    let t0 = Instant::now();
    let cfg =
        client_config(&key, TransportConfig::default()).handshake_timeout(Duration::from_secs(1));
    match ep.connect_with(silent_addr, &cfg).await {
        Err(ConnectError::Handshake(HandshakeError::TimedOut)) => {}
        other => panic!("expected TimedOut, got {other:?}"),
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    sink.abort();

    // And the right one still works.
    let s = ep
        .connect_with(addr, &client_config(&key, TransportConfig::default()))
        .await
        .expect("connect");
    assert!(s.remote_addr().is_some());
    assert_eq!(s.id_str().len(), 16);
}

#[tokio::test]
async fn close_ends_the_peer_session_with_its_code() {
    let key = PrivateKey::generate();
    let server = server(&key, TransportConfig::default()).await;
    let client = client(&key, TransportConfig::default()).await;
    let session = client.connect(server.local_addr()).await.expect("connect");
    let accepted = server.accept().await.expect("accept");
    server.close(42, "bye");
    let reason = tokio::time::timeout(Duration::from_secs(5), session.closed())
        .await
        .expect("closed in time");
    assert_eq!(
        reason,
        CloseReason::Peer {
            code: 42,
            reason: "bye".into()
        }
    );
    assert_eq!(accepted.closed().await.code(), Some(42));
    assert!(
        server.accept().await.is_none(),
        "a closed endpoint accepts nothing"
    );
}

#[tokio::test]
async fn goaway_code_reaches_the_peer_after_streams_finish() {
    let key = PrivateKey::generate();
    let server = server(&key, TransportConfig::default()).await;
    let client = client(&key, TransportConfig::default()).await;
    let session = client.connect(server.local_addr()).await.expect("connect");
    let data = payload(3, 3_000_000);
    let mut stream = session.open_stream().await.expect("open");
    let writer = {
        let data = data.clone();
        let session = session.clone();
        tokio::spawn(async move {
            stream.write_all(&data).await.expect("write");
            stream.finish().expect("finish");
            session.goaway(7, "finished uploading");
            stream
        })
    };
    let accepted = server.accept().await.expect("accept");
    let mut s = accepted.accept_stream().await.expect("stream");
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.expect("read");
    assert_eq!(digest(&got), digest(&data));
    drop(s);
    // The client's stream is done once it lets go of it (its end was never read).
    drop(writer.await.expect("writer"));
    let r = tokio::time::timeout(Duration::from_secs(10), accepted.closed())
        .await
        .expect("closed");
    assert_eq!(r.code(), Some(7), "{r:?}");
    assert_eq!(accepted.goaway_received().map(|g| g.0), Some(7));
    let r = session.closed().await;
    assert_eq!(r.code(), Some(7), "{r:?}");
}

#[tokio::test]
async fn graceful_shutdown_delivers_every_byte_written_before_it() {
    let key = PrivateKey::generate();
    let server = server(&key, TransportConfig::default()).await;
    let client = client(&key, TransportConfig::default()).await;
    let addr = server.local_addr();
    let data = payload(9, 8_000_000);
    let expected = digest(&data);
    let reader = tokio::spawn(async move {
        let s = server.accept().await.expect("accept");
        let mut stream = s.accept_stream().await.expect("stream");
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.expect("read");
        digest(&got)
    });
    let session = client.connect(addr).await.expect("connect");
    let mut stream = session.open_stream().await.expect("open");
    stream.write_all(&data).await.expect("write");
    drop(stream);
    tokio::time::timeout(Duration::from_secs(20), client.shutdown())
        .await
        .expect("shutdown completes");
    assert_eq!(reader.await.expect("reader"), expected);
    assert!(session.close_reason().is_some());
}

#[tokio::test]
async fn idle_timeout_and_keepalive() {
    let key = PrivateKey::generate();
    let short = TransportConfig {
        idle_timeout: Duration::from_millis(600),
        keepalive: Some(Duration::from_millis(150)),
        ..TransportConfig::default()
    };
    let server = server(&key, short.clone()).await;
    let addr = server.local_addr();
    // Keepalive on: the session outlives several idle timeouts.
    let client_ep = client(&key, short.clone()).await;
    let session = client_ep.connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        session.close_reason().is_none(),
        "{:?}",
        session.close_reason()
    );

    // Keepalive off on both ends: it times out.
    let quiet = TransportConfig {
        keepalive: None,
        ..short
    };
    let server2 = server_with(&key, quiet.clone()).await;
    let client2 = client(&key, quiet).await;
    let session = client2
        .connect(server2.local_addr())
        .await
        .expect("connect");
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), session.closed())
        .await
        .expect("times out");
    assert_eq!(r, CloseReason::TimedOut);
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
}

async fn server_with(key: &PrivateKey, t: TransportConfig) -> Endpoint {
    server(key, t).await
}

/// A UDP relay between one client and the server that can move its client-facing
/// traffic to a new source port (a NAT rebinding), record datagrams, and replay them.
struct Relay {
    addr: SocketAddr,
    rebind: Arc<AtomicBool>,
    forwarded: Arc<AtomicUsize>,
    recorded: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

async fn relay(server: SocketAddr) -> Relay {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
    let addr = front.local_addr().expect("addr");
    let rebind = Arc::new(AtomicBool::new(false));
    let forwarded = Arc::new(AtomicUsize::new(0));
    let recorded = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (r, f, rec) = (rebind.clone(), forwarded.clone(), recorded.clone());
    tokio::spawn(async move {
        let mut back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind back"));
        let client: Arc<std::sync::Mutex<Option<SocketAddr>>> =
            Arc::new(std::sync::Mutex::new(None));
        let mut back_task = spawn_back(back.clone(), front.clone(), client.clone());
        let mut rebound = false;
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = front.recv_from(&mut buf).await else {
                return;
            };
            *client.lock().expect("lock") = Some(from);
            if r.load(Ordering::Relaxed) && !rebound {
                rebound = true;
                back_task.abort();
                back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind new back"));
                back_task = spawn_back(back.clone(), front.clone(), client.clone());
            }
            rec.lock().expect("lock").push(buf[..n].to_vec());
            f.fetch_add(1, Ordering::Relaxed);
            let _ = back.send_to(&buf[..n], server).await;
        }
    });
    Relay {
        addr,
        rebind,
        forwarded,
        recorded,
    }
}

fn spawn_back(
    back: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: Arc<std::sync::Mutex<Option<SocketAddr>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, _)) = back.recv_from(&mut buf).await else {
                return;
            };
            let to = *client.lock().expect("lock");
            if let Some(to) = to {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_survives_nat_rebinding_mid_transfer() {
    let key = PrivateKey::generate();
    let server = server(&key, TransportConfig::default()).await;
    let relay = relay(server.local_addr()).await;
    let client = client(&key, TransportConfig::default()).await;
    let data = payload(11, 20_000_000);
    let expected = digest(&data);
    let session = client.connect(relay.addr).await.expect("connect");
    let accepted = server.accept().await.expect("accept");
    let first_addr = accepted.remote_addr().expect("addr");
    let reader = tokio::spawn(async move {
        let mut s = accepted.accept_stream().await.expect("stream");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("read");
        (digest(&got), accepted.remote_addr())
    });
    let mut stream = session.open_stream().await.expect("open");
    let (a, b) = data.split_at(data.len() / 3);
    stream.write_all(a).await.expect("write");
    relay.rebind.store(true, Ordering::Relaxed);
    stream.write_all(b).await.expect("write");
    stream.finished().await.expect("finished");
    let (got, new_addr) = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("in time")
        .expect("reader");
    assert_eq!(got, expected);
    assert_ne!(
        new_addr,
        Some(first_addr),
        "the server moved to the new address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_replayed_datagrams_change_nothing() {
    let key = PrivateKey::generate();
    let server = server(&key, TransportConfig::default()).await;
    let relay = relay(server.local_addr()).await;
    let client = client(&key, TransportConfig::default()).await;
    let session = client.connect(relay.addr).await.expect("connect");
    let accepted = server.accept().await.expect("accept");
    let data = payload(5, 2_000_000);
    let mut stream = session.open_stream().await.expect("open");
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            stream.write_all(&data).await.expect("write");
            stream.finish().expect("finish");
            stream
        })
    };
    let mut s = accepted.accept_stream().await.expect("stream");
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.expect("read");
    assert_eq!(got.len(), data.len());
    drop(writer.await.expect("writer"));
    assert!(relay.forwarded.load(Ordering::Relaxed) > 10);

    let client_addr = accepted.remote_addr();
    // Replay everything the client sent, from another socket, and spray garbage.
    let attacker = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let recorded = relay.recorded.lock().expect("lock").clone();
    for d in &recorded {
        attacker
            .send_to(d, server.local_addr())
            .await
            .expect("send");
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    for i in 0..2000 {
        let len = rng.gen_range(0..1500);
        let mut g = vec![0u8; len];
        rng.fill_bytes(&mut g);
        if i % 3 == 0 && !g.is_empty() {
            g[0] = [0x40, 0x80, 0x81, 0x82, 0x83][i % 5];
        }
        attacker
            .send_to(&g, server.local_addr())
            .await
            .expect("send");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No new session, no new stream, no extra bytes; the session still works.
    assert_eq!(server.session_count(), 1);
    assert_eq!(accepted.remote_addr(), client_addr);
    let mut stream2 = session.open_stream().await.expect("open 2");
    stream2.write_all(b"still here").await.expect("write");
    stream2.finish().expect("finish");
    let mut s2 = accepted.accept_stream().await.expect("stream 2");
    let mut got2 = Vec::new();
    s2.read_to_end(&mut got2).await.expect("read");
    assert_eq!(got2, b"still here");
    // Garbage dies at the endpoint; authentic replays at the session's replay window.
    assert!(server.stats().datagrams_dropped > 0);
    assert!(accepted.stats().packets_dropped > 0);
    assert_eq!(
        accepted.stats().stream_bytes_received,
        data.len() as u64 + 10
    );
}

#[tokio::test]
async fn speed_is_published_every_second() {
    let key = PrivateKey::generate();
    let server = server(&key, TransportConfig::default()).await;
    let client = client(&key, TransportConfig::default()).await;
    let mut speed = server.speed();
    let session = client.connect(server.local_addr()).await.expect("connect");
    let accepted = server.accept().await.expect("accept");
    let writer = tokio::spawn(async move {
        let mut s = session.open_stream().await.expect("open");
        let chunk = vec![7u8; 64 * 1024];
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(2500) {
            s.write_all(&chunk).await.expect("write");
        }
        s.finish().expect("finish");
        session
    });
    let mut s = accepted.accept_stream().await.expect("stream");
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        while s.read(&mut buf).await.expect("read") > 0 {}
    });
    speed.changed().await.expect("first figure");
    speed.changed().await.expect("second figure");
    let v = *speed.borrow();
    assert!(v.recv > 100.0, "{v:?}");
    // The session's own figure, computed in the same pass.
    assert!(accepted.speed().recv > 100.0, "{:?}", accepted.speed());
    let _session = writer.await.expect("writer");
    reader.await.expect("reader");
}

#[tokio::test]
async fn finished_reports_a_reset_or_a_stop_instead_of_waiting() {
    let key = PrivateKey::generate();
    let server = server(&key, TransportConfig::default()).await;
    let client = client(&key, TransportConfig::default()).await;
    let session = client.connect(server.local_addr()).await.expect("connect");
    let accepted = server.accept().await.expect("accept");

    // Our own reset: finished() answers at once.
    let mut s = session.open_stream().await.expect("open");
    s.write_all(b"partial").await.expect("write");
    s.reset(9).expect("reset");
    let r = tokio::time::timeout(Duration::from_secs(2), s.finished())
        .await
        .expect("answers at once");
    assert!(r.is_err(), "{r:?}");

    // The peer stops reading: finished() reports the stop.
    let mut s = session.open_stream().await.expect("open");
    s.write_all(b"hello").await.expect("write");
    let mut peer = loop {
        let st = accepted.accept_stream().await.expect("stream");
        let mut probe = [0u8; 1];
        // Skip the reset stream.
        let (_, mut recv) = st.into_split();
        if let Ok(1) = recv.read(&mut probe).await {
            break (probe[0], recv);
        }
    };
    assert_eq!(peer.0, b'h');
    peer.1.stop(77).expect("stop");
    let r = tokio::time::timeout(Duration::from_secs(5), s.finished())
        .await
        .expect("answers");
    assert_eq!(r, Err(udpack::StreamError::Stopped(77)));
}

#[tokio::test]
async fn sessions_name_their_token_and_a_token_holds_its_limit() {
    let key = PrivateKey::generate();
    let server = Endpoint::server(
        ServerConfig::new(key.clone())
            .auth(|t| t == TOKEN.as_bytes() || t == b"other")
            .max_sessions_per_token(1),
    )
    .bind("127.0.0.1:0")
    .await
    .expect("bind server");
    let addr = server.local_addr();
    let ep = Endpoint::builder().bind("127.0.0.1:0").await.expect("bind");
    let cfg = client_config(&key, TransportConfig::default());

    let first = ep.connect_with(addr, &cfg).await.expect("connect");
    assert_eq!(first.token_id(), None, "a client's session has none");
    let accepted = server.accept().await.expect("accepted");
    let id = accepted.token_id().expect("a server session's token id");
    // The id is not the token.
    assert!(!id
        .as_bytes()
        .windows(TOKEN.len())
        .any(|w| w == TOKEN.as_bytes()));

    // The token's one session is taken: the second is refused, and says why.
    match ep.connect_with(addr, &cfg).await {
        Err(ConnectError::Handshake(HandshakeError::Rejected { code, reason })) => {
            assert_eq!(code, reject::SERVER_BUSY);
            assert_eq!(reason, "too many sessions with this token");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(server.stats().hellos_over_token_limit, 1);

    // Another token gets in, under another id.
    let _other = ep
        .connect_with(addr, &cfg.clone().token("other"))
        .await
        .expect("connect with another token");
    let other_id = server.accept().await.expect("accepted").token_id();
    assert!(other_id.is_some_and(|o| o != id));

    // Once the first session closed, its token connects again, under the same id.
    first.close(0, "done");
    let reason = tokio::time::timeout(Duration::from_secs(5), accepted.closed())
        .await
        .expect("the server saw the close");
    assert!(reason.code().is_some(), "{reason:?}");
    let again = ep.connect_with(addr, &cfg).await.expect("connect again");
    let again_id = server.accept().await.expect("accepted").token_id();
    assert_eq!(again_id, Some(id));
    drop(again);
}

/// Linux's loopback carries 65,536-byte IPv4 packets: path MTU discovery finds the
/// largest datagram UDP allows (the socket forbids fragmentation, so the probe passed
/// whole), and the data arrives intact in datagrams of that size.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_finds_the_largest_datagram_and_the_data_arrives_intact() {
    let key = PrivateKey::generate();
    let server = server(&key, TransportConfig::default()).await;
    let client = client(&key, TransportConfig::default()).await;
    let addr = server.local_addr();
    let data = payload(11, 16_000_000);
    let expected = digest(&data);
    let reader = tokio::spawn(async move {
        let s = server.accept().await.expect("accept");
        let mut stream = s.accept_stream().await.expect("stream");
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.expect("read");
        (digest(&got), s.stats())
    });
    let session = client.connect(addr).await.expect("connect");
    // The initial size, or the first candidate the initial window holds four times:
    // a probe may go out with the handshake's last frames and be acknowledged (also
    // after it was declared lost, on loopback's microsecond RTT) before `connect`
    // returns. Nothing larger is tried before the window grows.
    let first = session.stats().datagram_size;
    assert!(matches!(first, 1452 | 1472), "{first} at the start");
    let mut stream = session.open_stream().await.expect("open");
    stream.write_all(&data).await.expect("write");
    stream.finish().expect("finish");
    tokio::time::timeout(Duration::from_secs(20), stream.finished())
        .await
        .expect("acknowledged in time")
        .expect("finished");
    let (got, server_stats) = reader.await.expect("reader");
    assert_eq!(got, expected);
    let stats = session.stats();
    assert_eq!(stats.datagram_size, 65_507);
    // Most of the data went in large datagrams: far fewer packets than 1452-byte
    // ones would take (11,500 for 16 MB).
    assert!(
        server_stats.packets_received < 3_000,
        "{} packets received",
        server_stats.packets_received
    );
}
