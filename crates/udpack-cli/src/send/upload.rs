//! One file on its own channel: hashed, offered, sent from where the server has it,
//! and checked by the server.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use udpack_io::Client;

use super::collect::Item;
use super::SendError;
use crate::progress::Progress;
use crate::protocol::{
    code, ChunkRef, ErrorEvent, FileAnswer, FileOffer, Finish, FinishAnswer, CHUNK, CHUNK_SIZE,
    ERROR, FILE, FINISH,
};

/// Sends one file on its own channel; returns its final name and the bytes sent.
pub(super) async fn send_one(
    client: &Client,
    item: &Item,
    progress: &Progress,
) -> Result<(String, u64), SendError> {
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
        .map_err(|source| SendError::Channel {
            name: item.name.clone(),
            source,
        })?;
    if !answer.ok {
        return Err(SendError::Refused {
            name: item.name.clone(),
            code: answer.code,
            message: answer.message,
        });
    }
    let offset = answer.offset.min(item.size);
    if offset > 0 {
        tracing::info!(name = %item.name, offset, "resuming");
    }
    progress.start_file(&item.name, item.size, offset);
    let mut file = tokio::fs::File::open(&item.path)
        .await
        .map_err(|e| SendError::access(&item.path, e))?;
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    // Exactly the announced bytes, even if the file grows meanwhile.
    let mut file = file.take(item.size - offset);
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut sent = 0u64;
    #[cfg(feature = "test-faults")]
    let faults = super::faults::Faults::from_env();
    loop {
        let n = read_up_to(&mut file, &mut buf).await?;
        if n == 0 {
            break;
        }
        #[cfg(feature = "test-faults")]
        faults.tamper(&mut buf[..n], sent);
        // The next read waits until this chunk is taken: back-pressure.
        if let Err(source) = channel.send(CHUNK, &ChunkRef { chunk: &buf[..n] }).await {
            return Err(
                server_failure(&server_error, &item.name).unwrap_or_else(|| SendError::Channel {
                    name: item.name.clone(),
                    source,
                }),
            );
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
        .map_err(|source| {
            server_failure(&server_error, &item.name).unwrap_or_else(|| SendError::Channel {
                name: item.name.clone(),
                source,
            })
        })?;
    channel.close().await;
    if finish.ok {
        return Ok((finish.name, sent));
    }
    if finish.code == code::INTEGRITY {
        return Err(SendError::IntegrityRejected(finish.message));
    }
    Err(SendError::NotStored {
        name: item.name.clone(),
        code: finish.code,
        message: finish.message,
    })
}

/// SHA-256 of the first `size` bytes of the file: what will be announced and sent,
/// even if the file grows meanwhile.
async fn sha256_file(path: &Path, size: u64) -> Result<Vec<u8>, SendError> {
    let f = tokio::fs::File::open(path)
        .await
        .map_err(|e| SendError::access(path, e))?;
    let mut f = f.take(size);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut n_total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .await
            .map_err(|e| SendError::access(path, e))?;
        if n == 0 {
            break;
        }
        n_total += n as u64;
        h.update(&buf[..n]);
    }
    if n_total != size {
        return Err(SendError::Shrank(path.to_path_buf()));
    }
    Ok(h.finalize().to_vec())
}

/// The failure the server reported with an `error` event, if it did.
fn server_failure(slot: &Mutex<Option<ErrorEvent>>, name: &str) -> Option<SendError> {
    let e = slot.lock().ok()?.take()?;
    Some(if e.code == code::INTEGRITY {
        SendError::IntegrityFailed {
            name: name.to_string(),
            message: e.message,
        }
    } else {
        SendError::ServerFailed {
            name: name.to_string(),
            code: e.code,
            message: e.message,
        }
    })
}

/// Fills `buf` unless the file ends first; returns the bytes read.
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
