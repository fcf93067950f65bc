//! `udpack send`: uploads files and directories, one channel per file, the first
//! failure ending the run.

mod collect;
mod error;
#[cfg(feature = "test-faults")]
mod faults;
mod upload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use udpack_io::{Client, ClientOptions, PublicKey, Reconnect};

use crate::progress::Progress;

pub use error::SendError;

/// What `send` needs.
pub struct SendOptions {
    pub server: String,
    pub pubkey: PublicKey,
    pub token: String,
    pub paths: Vec<PathBuf>,
    pub timeout: Duration,
}

/// What was sent.
#[derive(Debug, Default)]
pub struct Summary {
    pub files: usize,
    pub bytes: u64,
    /// Bytes that went over the network (less than `bytes` when uploads resumed).
    pub sent: u64,
    pub elapsed: Duration,
    /// Final names on the server.
    pub names: Vec<String>,
}

/// Uploads everything; the first failure ends the run.
pub async fn send(opts: SendOptions) -> Result<Summary, SendError> {
    let items = collect::collect(&opts.paths)?;
    let total: u64 = items.iter().map(|i| i.size).sum();
    let client = Client::bind(
        ClientOptions::new(opts.pubkey)
            .token(opts.token.clone())
            .handshake_timeout(opts.timeout)
            .reconnect(Reconnect::off()),
    )
    .await?;
    let started = Instant::now();
    let socket = client.connect(opts.server.clone()).await?;
    tracing::info!(socket = %socket.id_str(), server = %opts.server, "connected");
    let progress = Arc::new(Progress::new("send", total));
    let ticker = {
        let progress = progress.clone();
        let mut speed = client.endpoint().speed();
        tokio::spawn(async move {
            while speed.changed().await.is_ok() {
                let s = *speed.borrow();
                progress.tick(s);
            }
        })
    };
    let mut summary = Summary::default();
    let mut result = Ok(());
    for item in &items {
        match upload::send_one(&client, item, &progress).await {
            Ok((name, sent)) => {
                summary.files += 1;
                summary.bytes += item.size;
                summary.sent += sent;
                progress.finish_file(
                    &item.name,
                    &format!("sent as {name}, SHA-256 verified by the server"),
                );
                summary.names.push(name);
            }
            Err(e) => {
                progress.finish_file(&item.name, &format!("failed: {e}"));
                result = Err(e);
                break;
            }
        }
    }
    ticker.abort();
    progress.clear();
    summary.elapsed = started.elapsed();
    // A graceful close: the server sees the session end once everything is through.
    socket.close(0, "done");
    let _ = tokio::time::timeout(Duration::from_secs(3), socket.closed()).await;
    client.close();
    result.map(|()| summary)
}
