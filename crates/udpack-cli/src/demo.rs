//! `udpack demo`: fresh keys in a temporary directory, a server and a client on
//! loopback, a generated file uploaded with the progress display, the result checked.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use udpack_io::{KeyFile, PrivateKey, PublicKey};

use crate::error::CliError;
use crate::keygen::keygen;
use crate::send::{send, SendOptions};
use crate::serve::{Receiver, ServeOptions};

/// Size of the generated file.
const DEMO_SIZE: usize = 256 * 1024 * 1024;

pub async fn demo() -> Result<(), CliError> {
    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys");
    let (pri, publ) = keygen(&keys, false)?;
    println!("keys:   {} and {}", pri.display(), publ.display());
    let src = dir.path().join("demo.bin");
    let mut data = vec![0u8; DEMO_SIZE];
    rand::rngs::StdRng::from_entropy().fill_bytes(&mut data);
    let want = Sha256::digest(&data);
    std::fs::write(&src, &data)?;
    drop(data);
    println!("file:   {} ({} MiB)", src.display(), DEMO_SIZE >> 20);
    let out = dir.path().join("received");
    let mut token = [0u8; 16];
    rand::rngs::StdRng::from_entropy().fill_bytes(&mut token);
    let token = hex::encode(token);
    let key = PrivateKey::load(&pri).map_err(CliError::other)?;
    let receiver = Receiver::bind(ServeOptions {
        key,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tokens: vec![token.clone()],
        out: out.clone(),
        once: true,
        show_progress: false,
    })
    .await?;
    let addr = receiver.local_addr();
    println!("server: {addr}, receiving into {}", out.display());
    let server = tokio::spawn(receiver.run(std::future::pending()));
    let summary = send(SendOptions {
        server: addr.to_string(),
        pubkey: PublicKey::load(&publ).map_err(CliError::other)?,
        token,
        paths: vec![src.clone()],
        timeout: Duration::from_secs(10),
    })
    .await?;
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .map_err(|_| CliError::other("the server did not finish"))?
        .map_err(CliError::other)??;
    let got: PathBuf = out.join("demo.bin");
    let digest = Sha256::digest(std::fs::read(&got)?);
    let secs = summary.elapsed.as_secs_f64();
    println!(
        "sent {} bytes in {secs:.2} s ({:.1} MB/s)",
        summary.bytes,
        summary.bytes as f64 / 1e6 / secs
    );
    if digest != want {
        return Err(CliError::Integrity(format!(
            "{} differs from the original",
            got.display()
        )));
    }
    println!(
        "check:  {} matches the original (SHA-256 {})",
        got.display(),
        hex::encode(want)
    );
    Ok(())
}
