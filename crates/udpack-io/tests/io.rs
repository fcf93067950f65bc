//! udpack.io over real sockets on 127.0.0.1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use udpack_io::{
    codes, ChannelClosed, Client, ClientEvent, ClientOptions, ConnectError, Error, HandshakeError,
    PrivateKey, Reconnect, Server, ServerEvent, ServerOptions,
};

const TOKEN: &str = "letmein";
const T: Duration = Duration::from_secs(10);

async fn server_on(key: &PrivateKey, port: u16) -> Server {
    Server::bind(
        ServerOptions::new(key.clone())
            .host("127.0.0.1")
            .port(port)
            .auth(|t| t == TOKEN.as_bytes())
            .ack_timeout(Duration::from_millis(500)),
    )
    .await
    .expect("bind server")
}

fn client_opts(key: &PrivateKey) -> ClientOptions {
    ClientOptions::new(key.public_key())
        .host("127.0.0.1")
        .token(TOKEN)
        .handshake_timeout(Duration::from_secs(2))
        .ack_timeout(Duration::from_millis(500))
}

async fn next_server<F: Fn(&ServerEvent) -> bool>(s: &Server, want: F) -> ServerEvent {
    tokio::time::timeout(T, async {
        loop {
            let e = s.next_event().await.expect("server event");
            if want(&e) {
                return e;
            }
        }
    })
    .await
    .expect("server event in time")
}

async fn next_client<F: Fn(&ClientEvent) -> bool>(c: &Client, want: F) -> ClientEvent {
    tokio::time::timeout(T, async {
        loop {
            let e = c.next_event().await.expect("client event");
            if want(&e) {
                return e;
            }
        }
    })
    .await
    .expect("client event in time")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Greeting {
    text: String,
    n: u32,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
}

#[tokio::test]
async fn events_messages_and_handlers_both_ways() {
    let key = PrivateKey::generate();
    let server = server_on(&key, 0).await;
    match server.next_event().await {
        Some(ServerEvent::Listening(a)) => assert_eq!(a, server.local_addr()),
        other => panic!("first event {other:?}"),
    }
    let client = Client::bind(client_opts(&key)).await.expect("bind client");
    assert!(matches!(
        client.next_event().await,
        Some(ClientEvent::Listening(_))
    ));
    let socket = client
        .connect(server.local_addr().to_string())
        .await
        .expect("connect");
    match next_client(&client, |e| matches!(e, ClientEvent::Connection { .. })).await {
        ClientEvent::Connection {
            socket: s,
            reconnect,
        } => {
            assert!(!reconnect);
            assert_eq!(s.id_str(), socket.id_str());
        }
        _ => unreachable!(),
    }
    let server_socket =
        match next_server(&server, |e| matches!(e, ServerEvent::Connection(_))).await {
            ServerEvent::Connection(s) => s,
            _ => unreachable!(),
        };

    let ch = client.open_channel().await.expect("open");
    let g = Greeting {
        text: "hello".into(),
        n: 7,
        blob: vec![0, 1, 2, 255],
    };
    ch.send("greet", &g).await.expect("send");
    let sch = match next_server(&server, |e| matches!(e, ServerEvent::Channel(_))).await {
        ServerEvent::Channel(c) => c,
        _ => unreachable!(),
    };
    assert_eq!(sch.socket().id_str(), server_socket.id_str());
    let m = sch.recv().await.expect("message");
    assert_eq!(m.event(), "greet");
    assert_eq!(m.data::<Greeting>().expect("typed"), g);

    // A handler registered after the messages arrived still gets them, in order.
    for i in 0..5u32 {
        ch.send("count", &i).await.expect("send");
    }
    ch.send("other", &"x").await.expect("send");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    sch.on_data("count", move |i: u32| s2.lock().expect("lock").push(i));
    // Messages that do not decode as the handler's type are dropped; the channel lives.
    ch.send("count", &"not a number").await.expect("send");
    ch.send("count", &5u32).await.expect("send");
    let m = sch.recv().await.expect("the unhandled event");
    assert_eq!(m.event(), "other");
    tokio::time::timeout(T, async {
        while seen.lock().expect("lock").len() < 6 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("handler saw all");
    assert_eq!(*seen.lock().expect("lock"), vec![0, 1, 2, 3, 4, 5]);

    // The other way: the server sends on the same channel.
    sch.send("reply", &"from server").await.expect("send");
    let m = ch.recv().await.expect("message");
    assert_eq!(m.data::<String>().expect("typed"), "from server");

    // Speed figures arrive once a second on both sides.
    next_server(&server, |e| matches!(e, ServerEvent::Speed(_))).await;
    next_client(&client, |e| matches!(e, ClientEvent::Speed(_))).await;

    // Closing the channel: the peer sees the end.
    ch.close().await;
    assert_eq!(ch.close_reason(), Some(ChannelClosed::Local));
    assert_eq!(
        tokio::time::timeout(T, sch.closed()).await.expect("closed"),
        ChannelClosed::Finished
    );
    assert!(sch.recv().await.is_none());

    // Closing the client ends the server's socket with a Disconnect event.
    client.close();
    match next_server(&server, |e| matches!(e, ServerEvent::Disconnect(..))).await {
        ServerEvent::Disconnect(s, reason) => {
            assert_eq!(s.id_str(), server_socket.id_str());
            assert_eq!(reason.code(), Some(0), "{reason:?}");
        }
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn acks_and_ack_timeout() {
    let key = PrivateKey::generate();
    let server = server_on(&key, 0).await;
    let client = Client::bind(client_opts(&key)).await.expect("bind");
    client
        .connect(server.local_addr().to_string())
        .await
        .expect("connect");
    let ch = client.open_channel().await.expect("open");
    ch.send("hi", &()).await.expect("send");
    let sch = match next_server(&server, |e| matches!(e, ServerEvent::Channel(_))).await {
        ServerEvent::Channel(c) => c,
        _ => unreachable!(),
    };
    assert_eq!(sch.recv().await.expect("hi").event(), "hi");
    let answered = Arc::new(AtomicUsize::new(0));
    let a = answered.clone();
    let replier = sch.clone();
    let _keep = replier.clone();
    sch.on("add", move |m| {
        let (x, y): (i64, i64) = m.data().expect("pair");
        assert!(m.wants_reply());
        a.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move { m.reply(&(x + y)).await.expect("reply") });
    });
    let sum: i64 = ch.send_with_ack("add", &(40, 2)).await.expect("ack");
    assert_eq!(sum, 42);
    let sum: i64 = ch.send_with_ack("add", &(-1, 1)).await.expect("ack");
    assert_eq!(sum, 0);
    assert_eq!(answered.load(Ordering::Relaxed), 2);
    // Nobody answers "ignored": the ack times out, and the channel still works.
    sch.on("ignored", |_| {});
    let t0 = std::time::Instant::now();
    match ch.send_with_ack::<_, i64>("ignored", &1).await {
        Err(Error::AckTimeout) => {}
        other => panic!("expected AckTimeout, got {other:?}"),
    }
    assert!(t0.elapsed() >= Duration::from_millis(450));
    let sum: i64 = ch
        .send_with_ack("add", &(1, 2))
        .await
        .expect("ack after a timeout");
    assert_eq!(sum, 3);
}

#[tokio::test]
async fn malformed_messages_are_dropped_and_oversized_ones_close_the_channel() {
    let key = PrivateKey::generate();
    let server = Server::bind(
        ServerOptions::new(key.clone())
            .host("127.0.0.1")
            .port(0)
            .auth(|t| t == TOKEN.as_bytes())
            .max_message_size(1024),
    )
    .await
    .expect("bind");
    let client = Client::bind(client_opts(&key)).await.expect("bind");
    let socket = client
        .connect(server.local_addr().to_string())
        .await
        .expect("connect");
    // Raw frames through the transport, bypassing the encoder.
    let mut raw = socket.session().open_stream().await.expect("open");
    let frame = |body: &[u8]| {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    };
    raw.write_all(&frame(&[0xc1, 0xc1])).await.expect("garbage");
    raw.write_all(&frame(&[0x92, 0xa1, b'x']))
        .await
        .expect("truncated");
    raw.write_all(&frame(&[0x92, 0x05, 0xc0]))
        .await
        .expect("reply to nothing");
    // A valid ["ok", 1] after the garbage.
    raw.write_all(&frame(&[0x92, 0xa2, b'o', b'k', 0x01]))
        .await
        .expect("valid");
    let sch = match next_server(&server, |e| matches!(e, ServerEvent::Channel(_))).await {
        ServerEvent::Channel(c) => c,
        _ => unreachable!(),
    };
    let m = tokio::time::timeout(T, sch.recv())
        .await
        .expect("in time")
        .expect("the valid one");
    assert_eq!(m.event(), "ok");
    assert_eq!(m.data::<u8>().expect("1"), 1);
    assert!(sch.close_reason().is_none());

    // Over the limit: the receiving side closes the channel with a clear code.
    raw.write_all(&(2000u32).to_be_bytes())
        .await
        .expect("oversized header");
    raw.write_all(&vec![0u8; 2000])
        .await
        .expect("oversized body");
    let why = tokio::time::timeout(T, sch.closed()).await.expect("closed");
    assert_eq!(why, ChannelClosed::MessageTooLarge(2000));
    // The sender sees the stream stopped/reset with MESSAGE_TOO_LARGE.
    let mut buf = Vec::new();
    use tokio::io::AsyncReadExt;
    let err = tokio::time::timeout(T, raw.read_to_end(&mut buf))
        .await
        .expect("in time")
        .expect_err("reset");
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<udpack::StreamError>());
    assert_eq!(
        inner,
        Some(&udpack::StreamError::Reset(codes::MESSAGE_TOO_LARGE))
    );
    // Our own sends over the limit are refused before they go out.
    let ch = client.open_channel().await.expect("open");
    let big = vec![0u8; 20 * 1024 * 1024];
    match ch.send("big", &serde_bytes::Bytes::new(&big)).await {
        Err(Error::TooLarge(n)) => assert!(n > 16 * 1024 * 1024),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn connect_errors_are_typed_events() {
    let key = PrivateKey::generate();
    let server = server_on(&key, 0).await;
    let client = Client::bind(client_opts(&key).token("wrong"))
        .await
        .expect("bind");
    match client.connect(server.local_addr().to_string()).await {
        Err(Error::Connect(ConnectError::Handshake(HandshakeError::Rejected { .. }))) => {}
        other => panic!("expected Rejected, got {other:?}"),
    }
    match next_client(&client, |e| matches!(e, ClientEvent::ConnectError(_))).await {
        ClientEvent::ConnectError(ConnectError::Handshake(HandshakeError::Rejected { .. })) => {}
        other => panic!("{other:?}"),
    }
    let other = PrivateKey::generate();
    let client = Client::bind(client_opts(&other)).await.expect("bind");
    match client.connect(server.local_addr().to_string()).await {
        Err(Error::Connect(ConnectError::Handshake(HandshakeError::KeyMismatch))) => {}
        other => panic!("expected KeyMismatch, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_after_the_server_restarts_on_the_same_port() {
    let key = PrivateKey::generate();
    let server = server_on(&key, 0).await;
    let port = server.local_addr().port();
    let client = Client::bind(client_opts(&key).reconnect(Reconnect {
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(500),
        max_attempts: Some(50),
        ..Reconnect::default()
    }))
    .await
    .expect("bind");
    let first = client
        .connect(server.local_addr().to_string())
        .await
        .expect("connect");
    next_client(&client, |e| matches!(e, ClientEvent::Connection { .. })).await;

    // The server goes away (closing every session with a code), then comes back.
    server.close(5);
    drop(server);
    match next_client(&client, |e| matches!(e, ClientEvent::Disconnect(_))).await {
        ClientEvent::Disconnect(r) => assert_eq!(r.code(), Some(5), "{r:?}"),
        _ => unreachable!(),
    }
    next_client(&client, |e| matches!(e, ClientEvent::Reconnecting { .. })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = server_on(&key, port).await;
    let socket = match next_client(&client, |e| matches!(e, ClientEvent::Connection { .. })).await {
        ClientEvent::Connection { socket, reconnect } => {
            assert!(reconnect, "a reconnection says so");
            socket
        }
        _ => unreachable!(),
    };
    assert_ne!(socket.id_str(), first.id_str());
    // And it works.
    let ch = client.open_channel().await.expect("open");
    ch.send("back", &1u8).await.expect("send");
    let sch = match next_server(&server, |e| matches!(e, ServerEvent::Channel(_))).await {
        ServerEvent::Channel(c) => c,
        _ => unreachable!(),
    };
    assert_eq!(sch.recv().await.expect("msg").event(), "back");
}

#[tokio::test]
async fn reconnection_gives_up_after_the_limit() {
    let key = PrivateKey::generate();
    let server = server_on(&key, 0).await;
    let client = Client::bind(
        client_opts(&key)
            .handshake_timeout(Duration::from_millis(300))
            .reconnect(Reconnect {
                initial_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(20),
                max_attempts: Some(2),
                ..Reconnect::default()
            }),
    )
    .await
    .expect("bind");
    client
        .connect(server.local_addr().to_string())
        .await
        .expect("connect");
    server.close(1);
    drop(server);
    let mut errors = 0;
    tokio::time::timeout(T, async {
        loop {
            match client.next_event().await.expect("event") {
                ClientEvent::ConnectError(_) => errors += 1,
                ClientEvent::GaveUp => break,
                _ => {}
            }
        }
    })
    .await
    .expect("gives up in time");
    assert_eq!(errors, 2);
    assert!(client.socket().is_none());
}

#[tokio::test]
async fn a_panicking_handler_closes_its_channel_instead_of_hanging_it() {
    let key = PrivateKey::generate();
    let server = server_on(&key, 0).await;
    let client = Client::bind(client_opts(&key)).await.expect("bind");
    client
        .connect(server.local_addr().to_string())
        .await
        .expect("connect");
    let ch = client.open_channel().await.expect("open");
    ch.send("hello", &1u8).await.expect("send");
    let sch = match next_server(&server, |e| matches!(e, ServerEvent::Channel(_))).await {
        ServerEvent::Channel(c) => c,
        _ => unreachable!(),
    };
    sch.on("boom", |_| panic!("handler bug"));
    ch.send("boom", &()).await.expect("send");
    let why = tokio::time::timeout(T, sch.closed())
        .await
        .expect("closed, not hung");
    assert!(matches!(why, ChannelClosed::SessionClosed(_)), "{why:?}");
    // recv ends instead of waiting forever (the first message may still be queued).
    let rest = tokio::time::timeout(T, async {
        let mut n = 0;
        while sch.recv().await.is_some() {
            n += 1;
        }
        n
    })
    .await
    .expect("recv ends");
    assert!(rest <= 1);
}

/// Streams that a peer opens and ends without a byte never become channels (so they
/// cost no reader task and no application task); the first one with data does, and its
/// first bytes are not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_without_data_become_no_channel() {
    let key = PrivateKey::generate();
    let server = server_on(&key, 0).await;
    let client = Client::bind(client_opts(&key)).await.expect("bind");
    let socket = client
        .connect(server.local_addr().to_string())
        .await
        .expect("connect");
    for _ in 0..100 {
        let mut empty = socket.session().open_stream().await.expect("open");
        empty.finish().expect("finish");
        empty.finished().await.expect("the empty stream ends");
    }
    let ch = client.open_channel().await.expect("channel");
    ch.send("hello", &7u32).await.expect("send");
    let mut channels = Vec::new();
    let got = tokio::time::timeout(T, async {
        loop {
            match server.next_event().await.expect("server event") {
                ServerEvent::Channel(c) => {
                    let first = c.recv().await;
                    channels.push(c);
                    if let Some(m) = first {
                        return m;
                    }
                }
                _ => continue,
            }
        }
    })
    .await
    .expect("the channel with data in time");
    assert_eq!(got.event(), "hello");
    assert_eq!(got.data::<u32>().expect("data"), 7);
    assert_eq!(channels.len(), 1, "the empty streams became channels");
}
