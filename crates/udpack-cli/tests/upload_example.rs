//! The upload examples (the JavaScript version's protocol over udpack.io) on real
//! sockets on 127.0.0.1.

#[path = "../examples/common/upload.rs"]
mod upload;

use std::time::Duration;

use sha2::{Digest, Sha256};
use udpack_io::{Client, ClientOptions, PrivateKey, Server, ServerOptions, TransportConfig};

const TOKEN: &str = "letmein";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_example_moves_a_64_mib_file_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src_dir = dir.path().join("src");
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&src_dir).expect("mkdir");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let src = src_dir.join("big.bin");
    let mut data = vec![0u8; 64 * 1024 * 1024];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    std::fs::write(&src, &data).expect("write");
    let key = PrivateKey::generate();
    let server = server_on(&key, 0).await;
    let client = Client::bind(client_opts(&key).transport(TransportConfig::default()))
        .await
        .expect("bind");
    client
        .connect(server.local_addr().to_string())
        .await
        .expect("connect");
    let out = out_dir.clone();
    let receiving = tokio::spawn(async move { upload::serve_one(&server, &out, true).await });
    let sent = tokio::time::timeout(
        Duration::from_secs(120),
        upload::send_file(&client, &src, true),
    )
    .await
    .expect("in time")
    .expect("upload");
    assert_eq!(sent, data.len() as u64);
    let path = receiving.await.expect("task").expect("received");
    assert_eq!(path, out_dir.join("big.bin"));
    let got = std::fs::read(&path).expect("read");
    assert_eq!(got.len(), data.len());
    assert_eq!(Sha256::digest(&got), Sha256::digest(&data));
}
