//! `udpack send`: uploads files and directories.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use udpack_io::{Channel, Client, ClientOptions, PublicKey, Reconnect};

use crate::error::CliError;
use crate::progress::Progress;
use crate::protocol::{
    code, ChunkRef, ErrorEvent, FileAnswer, FileOffer, Finish, FinishAnswer, CHUNK, CHUNK_SIZE,
    ERROR, FILE, FINISH,
};

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

/// A local file and the name it gets on the server.
#[derive(Debug, Clone)]
struct Item {
    path: PathBuf,
    name: String,
    size: u64,
}

/// Files to send: plain files by their name, directories recursively under their own
/// name, with `/` between components.
fn collect(paths: &[PathBuf]) -> Result<Vec<Item>, CliError> {
    let mut items = Vec::new();
    for p in paths {
        let meta =
            std::fs::metadata(p).map_err(|e| CliError::Other(format!("{}: {e}", p.display())))?;
        let base = p
            .canonicalize()
            .ok()
            .and_then(|c| c.file_name().map(|n| n.to_owned()))
            .ok_or_else(|| CliError::Other(format!("{}: no file name", p.display())))?;
        let base = base
            .to_str()
            .ok_or_else(|| CliError::Other(format!("{}: the name is not UTF-8", p.display())))?
            .to_string();
        if meta.is_dir() {
            walk(p, &base, &mut items)?;
        } else if meta.is_file() {
            items.push(Item {
                path: p.clone(),
                name: base,
                size: meta.len(),
            });
        } else {
            return Err(CliError::Other(format!(
                "{}: not a file or directory",
                p.display()
            )));
        }
    }
    Ok(items)
}

fn walk(dir: &Path, prefix: &str, items: &mut Vec<Item>) -> Result<(), CliError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| CliError::Other(format!("{}: {e}", dir.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| CliError::Other(format!("{}: {e}", dir.display())))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            return Err(CliError::Other(format!(
                "{}: a name is not UTF-8",
                dir.display()
            )));
        };
        let path = e.path();
        let meta = std::fs::metadata(&path)
            .map_err(|err| CliError::Other(format!("{}: {err}", path.display())))?;
        let rel = format!("{prefix}/{name}");
        if meta.is_dir() {
            walk(&path, &rel, items)?;
        } else if meta.is_file() {
            items.push(Item {
                path,
                name: rel,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

/// SHA-256 of the first `size` bytes of the file: what will be announced and sent,
/// even if the file grows meanwhile.
async fn sha256_file(path: &Path, size: u64) -> Result<Vec<u8>, CliError> {
    let f = tokio::fs::File::open(path)
        .await
        .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?;
    let mut f = f.take(size);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut n_total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .await
            .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        n_total += n as u64;
        h.update(&buf[..n]);
    }
    if n_total != size {
        return Err(CliError::Other(format!(
            "{}: the file shrank while being sent",
            path.display()
        )));
    }
    Ok(h.finalize().to_vec())
}

/// Uploads everything; the first failure ends the run.
pub async fn send(opts: SendOptions) -> Result<Summary, CliError> {
    let items = collect(&opts.paths)?;
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
        match send_one(&client, item, &progress).await {
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

/// Fault injection for tests: `UDPACK_TEST_FAULTS=flip-first-byte` flips a bit of the
/// first byte sent, so that the server's integrity check fails.
fn fault(name: &str) -> bool {
    std::env::var("UDPACK_TEST_FAULTS").is_ok_and(|v| v.split(',').any(|f| f == name))
}

/// Sends one file on its own channel; returns its final name and the bytes sent.
async fn send_one(
    client: &Client,
    item: &Item,
    progress: &Progress,
) -> Result<(String, u64), CliError> {
    let sha256 = sha256_file(&item.path, item.size).await?;
    let channel = client.open_channel().await?;
    let server_error: Arc<Mutex<Option<ErrorEvent>>> = Arc::new(Mutex::new(None));
    {
        let slot = server_error.clone();
        channel.on_data(ERROR, move |e: ErrorEvent| {
            if let Ok(mut s) = slot.lock() {
                *s = Some(e);
            }
        });
    }
    let answer: FileAnswer = channel
        .send_with_ack_timeout(
            FILE,
            &FileOffer {
                filename: item.name.clone(),
                filesize: item.size,
                sha256: sha256.clone(),
            },
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| CliError::Other(format!("{}: {e}", item.name)))?;
    if !answer.ok {
        return Err(CliError::Other(format!(
            "{}: the server refused the upload ({}): {}",
            item.name, answer.code, answer.message
        )));
    }
    let offset = answer.offset.min(item.size);
    if offset > 0 {
        tracing::info!(name = %item.name, offset, "resuming");
    }
    progress.start_file(&item.name, item.size, offset);
    let mut file = tokio::fs::File::open(&item.path)
        .await
        .map_err(|e| CliError::Other(format!("{}: {e}", item.path.display())))?;
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    // Exactly the announced bytes, even if the file grows meanwhile.
    let mut file = file.take(item.size - offset);
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut sent = 0u64;
    let flip = fault("flip-first-byte");
    loop {
        let n = read_up_to(&mut file, &mut buf).await?;
        if n == 0 {
            break;
        }
        if flip && sent == 0 {
            buf[0] ^= 1;
        }
        // The next read waits until this chunk is taken: back-pressure.
        if let Err(e) = channel.send(CHUNK, &ChunkRef { chunk: &buf[..n] }).await {
            return Err(server_failure(&server_error, &item.name)
                .unwrap_or_else(|| CliError::Other(format!("{}: {e}", item.name))));
        }
        if let Some(e) = server_failure(&server_error, &item.name) {
            return Err(e);
        }
        sent += n as u64;
        progress.advance(&item.name, n as u64);
    }
    // The server hashes what it has; give it time for big files.
    let finish: FinishAnswer = channel
        .send_with_ack_timeout(FINISH, &Finish {}, Duration::from_secs(600))
        .await
        .map_err(|e| {
            server_failure(&server_error, &item.name)
                .unwrap_or_else(|| CliError::Other(format!("{}: {e}", item.name)))
        })?;
    close(&channel).await;
    if finish.ok {
        return Ok((finish.name, sent));
    }
    if finish.code == code::INTEGRITY {
        return Err(CliError::Integrity(finish.message));
    }
    Err(CliError::Other(format!(
        "{}: the server could not store the file ({}): {}",
        item.name, finish.code, finish.message
    )))
}

async fn close(channel: &Channel) {
    channel.close().await;
}

fn server_failure(slot: &Mutex<Option<ErrorEvent>>, name: &str) -> Option<CliError> {
    let e = slot.lock().ok()?.take()?;
    Some(if e.code == code::INTEGRITY {
        CliError::Integrity(format!("{name}: {}", e.message))
    } else {
        CliError::Other(format!(
            "{name}: the server failed ({}): {}",
            e.code, e.message
        ))
    })
}

async fn read_up_to(
    file: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let got = file.read(&mut buf[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(n)
}
