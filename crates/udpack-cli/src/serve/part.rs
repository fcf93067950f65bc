//! The `.part` file an upload is written to, and its `.part.sha256` sidecar naming the
//! content it belongs to: resumed when both match the offer, started afresh otherwise,
//! discarded when the upload is damaged, moved to a free name when complete.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::paths::{claim_free_name, with_suffix};

/// Why a part file could not be made ready.
#[derive(Debug, thiserror::Error)]
pub(super) enum PartError {
    #[error("cannot create the directory: {0}")]
    CreateDir(#[source] std::io::Error),
    #[error("cannot open the partial file: {0}")]
    Open(#[source] std::io::Error),
    #[error("cannot read the partial file: {0}")]
    Read(#[source] std::io::Error),
    #[error("cannot truncate: {0}")]
    Truncate(#[source] std::io::Error),
    #[error("cannot seek: {0}")]
    Seek(#[source] std::io::Error),
    #[error("cannot create the file: {0}")]
    Create(#[source] std::io::Error),
    #[error("cannot write: {0}")]
    WriteSidecar(#[source] std::io::Error),
}

/// Where one upload goes.
pub(super) struct Destination {
    /// The sanitized relative path, for messages.
    pub rel: PathBuf,
    /// The final path (or, if taken, the first free variant of it).
    pub target: PathBuf,
    /// The file written meanwhile: `target.part`.
    pub part: PathBuf,
}

impl Destination {
    pub fn new(out: &Path, rel: PathBuf) -> Self {
        let target = out.join(&rel);
        let part = with_suffix(&target, ".part");
        Destination { rel, target, part }
    }
}

/// A part file open for writing at its end.
pub(super) struct Part {
    pub file: File,
    /// Bytes in the file.
    pub len: u64,
    /// SHA-256 of those bytes, to be continued with the rest.
    pub hasher: Sha256,
}

/// Where a resumable upload keeps the hash of the content it belongs to.
fn sidecar(part: &Path) -> PathBuf {
    with_suffix(part, ".sha256")
}

/// Creates the directories of the target, then resumes the part file if it holds a
/// prefix of the content hashed `sha256_hex` (of `filesize` bytes), or starts it afresh.
pub(super) async fn open(
    dest: &Destination,
    sha256_hex: &str,
    filesize: u64,
) -> Result<Part, PartError> {
    let part = dest.part.as_path();
    if let Some(dir) = dest.target.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(PartError::CreateDir)?;
    }
    let same_content = tokio::fs::read_to_string(sidecar(part))
        .await
        .is_ok_and(|h| h.trim() == sha256_hex);
    let existing = tokio::fs::metadata(part).await.map(|m| m.len()).ok();
    match existing {
        Some(len) if same_content && len <= filesize => resume(part, len).await,
        _ => start(part, sha256_hex).await,
    }
}

/// Hashes the `len` bytes already in `part` and positions at their end (cutting
/// anything after what could be read).
async fn resume(part: &Path, len: u64) -> Result<Part, PartError> {
    let mut hasher = Sha256::new();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(part)
        .await
        .map_err(PartError::Open)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = f.read(&mut buf[..want]).await.map_err(PartError::Read)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let have = len - left;
    f.set_len(have).await.map_err(PartError::Truncate)?;
    f.seek(std::io::SeekFrom::Start(have))
        .await
        .map_err(PartError::Seek)?;
    Ok(Part {
        file: f,
        len: have,
        hasher,
    })
}

/// An empty `part`, with the sidecar naming its content.
async fn start(part: &Path, sha256_hex: &str) -> Result<Part, PartError> {
    let file = File::create(part).await.map_err(PartError::Create)?;
    tokio::fs::write(sidecar(part), sha256_hex)
        .await
        .map_err(PartError::WriteSidecar)?;
    Ok(Part {
        file,
        len: 0,
        hasher: Sha256::new(),
    })
}

/// Removes a damaged part and its sidecar: the next upload starts afresh.
pub(super) async fn discard(part: &Path) {
    let _ = tokio::fs::remove_file(part).await;
    let _ = tokio::fs::remove_file(sidecar(part)).await;
}

/// Moves a complete part to the first free name of `target`, `target.1`... (never
/// replacing a file) and removes its sidecar; returns the path it got.
pub(super) async fn place(dest: &Destination) -> std::io::Result<PathBuf> {
    let final_path = {
        let (part, target) = (dest.part.clone(), dest.target.clone());
        tokio::task::spawn_blocking(move || claim_free_name(&part, &target))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    }?;
    let _ = tokio::fs::remove_file(sidecar(&dest.part)).await;
    Ok(final_path)
}
