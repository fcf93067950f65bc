//! `udpack demo`: fresh keys in a temporary directory, a server and a client on
//! loopback, a generated file uploaded with the progress display, the result checked.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use udpack_io::{KeyFile, PrivateKey, PublicKey};

use crate::error::{exit, CliError, KeyFileError};
use crate::keygen::keygen;
use crate::send::{send, SendOptions};
use crate::serve::{Receiver, ServeOptions};

/// Size of the generated file.
const DEMO_SIZE: usize = 256 * 1024 * 1024;

/// What went wrong in the demo itself (the server's and the client's failures are
/// their own errors).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Writing or reading the demo's files (exit 1).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Loading the freshly written keys (exit 1).
    #[error("{0}")]
    Key(#[source] KeyFileError),
    /// The server did not stop after the upload (exit 1).
    #[error("the server did not finish")]
    ServerTimeout,
    /// The server's task failed (exit 1).
    #[error(transparent)]
    ServerTask(#[from] tokio::task::JoinError),
    /// The received file is not the original (exit 6).
    #[error("integrity check failed: {} differs from the original", .0.display())]
    Differs(PathBuf),
}

impl DemoError {
    pub fn code(&self) -> u8 {
        match self {
            DemoError::Differs(_) => exit::INTEGRITY,
            _ => exit::OTHER,
        }
    }
}

pub async fn demo() -> Result<(), CliError> {
    let dir = tempfile::tempdir().map_err(DemoError::Io)?;
    let keys = dir.path().join("keys");
    let (pri, publ) = keygen(&keys, false)?;
    println!("keys:   {} and {}", pri.display(), publ.display());
    let src = dir.path().join("demo.bin");
    let mut data = vec![0u8; DEMO_SIZE];
    rand::rngs::StdRng::from_entropy().fill_bytes(&mut data);
    let want = Sha256::digest(&data);
    std::fs::write(&src, &data).map_err(DemoError::Io)?;
    drop(data);
    println!("file:   {} ({} MiB)", src.display(), DEMO_SIZE >> 20);
    let out = dir.path().join("received");
    let mut token = [0u8; 16];
    rand::rngs::StdRng::from_entropy().fill_bytes(&mut token);
    let token = hex::encode(token);
    let key = PrivateKey::load(&pri).map_err(|e| DemoError::Key(e.into()))?;
    let receiver = Receiver::bind(ServeOptions {
        key,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tokens: vec![token.clone()],
        out: out.clone(),
        once: true,
        limits: Default::default(),
        show_progress: false,
    })
    .await?;
    let addr = receiver.local_addr();
    println!("server: {addr}, receiving into {}", out.display());
    let server = tokio::spawn(receiver.run(std::future::pending()));
    let summary = send(SendOptions::new(
        addr.to_string(),
        PublicKey::load(&publ).map_err(|e| DemoError::Key(e.into()))?,
        token,
        vec![src.clone()],
    ))
    .await?;
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .map_err(|_| DemoError::ServerTimeout)?
        .map_err(DemoError::ServerTask)??;
    let got: PathBuf = out.join("demo.bin");
    let digest = Sha256::digest(std::fs::read(&got).map_err(DemoError::Io)?);
    let secs = summary.elapsed.as_secs_f64();
    println!(
        "sent {} bytes in {secs:.2} s ({:.1} MB/s)",
        summary.bytes,
        summary.bytes as f64 / 1e6 / secs
    );
    if digest != want {
        return Err(DemoError::Differs(got).into());
    }
    println!(
        "check:  {} matches the original (SHA-256 {})",
        got.display(),
        hex::encode(want)
    );
    Ok(())
}
