//! Reading a file to send, off the runtime: a blocking task reads it once, hashes it
//! (BLAKE3) as it goes and hands the chunks over without copying them again. The
//! prefix a resumed upload skips is read and hashed too, to check it against the
//! server's and to carry the hash on.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::SendError;
use crate::protocol::CHUNK_SIZE;

/// Chunks read ahead of the sender.
const READ_AHEAD: usize = 4;
/// Chunk buffers one file keeps for reuse once the transport is done with them (at
/// [`CHUNK_SIZE`] each, 4 MiB).
const POOL_KEEP: usize = 16;

/// Buffers of chunks the transport has acknowledged and dropped, kept to read the next
/// chunks into: a fresh buffer per chunk cost a page fault and a page zeroed per 4 KiB
/// read (the allocator hands chunks this large back to the system).
#[derive(Default)]
struct ChunkPool(Arc<Mutex<Vec<Vec<u8>>>>);

impl ChunkPool {
    /// An empty buffer that holds `want` bytes.
    fn take(&self, want: usize) -> Vec<u8> {
        let reused = self.0.lock().ok().and_then(|mut free| free.pop());
        match reused {
            Some(mut buf) => {
                buf.clear();
                buf.reserve(want);
                buf
            }
            None => Vec::with_capacity(want),
        }
    }

    /// `buf`, filled, as a chunk that goes back to the pool when its last holder drops it.
    fn chunk(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: Arc::downgrade(&self.0),
        })
    }
}

/// A chunk's buffer on its way through the transport.
struct Pooled {
    buf: Vec<u8>,
    pool: Weak<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        if let Ok(mut free) = pool.lock() {
            if free.len() < POOL_KEEP {
                free.push(std::mem::take(&mut self.buf));
            }
        };
    }
}

/// What the reader hands over, in order.
pub(super) enum Piece {
    /// The server's prefix differs from the file's: send `restart`, then everything.
    Restart,
    Data(Bytes),
    /// The end of the file, with the hash of all of it.
    End([u8; 32]),
}

/// Reads a whole small file (exactly `size` bytes) and hashes it.
pub(super) async fn read_whole(path: &Path, size: u64) -> Result<(Vec<u8>, [u8; 32]), SendError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f = File::open(&path).map_err(|e| SendError::access(&path, e))?;
        let mut data = Vec::with_capacity(size as usize);
        (&mut f)
            .take(size)
            .read_to_end(&mut data)
            .map_err(|e| SendError::access(&path, e))?;
        if (data.len() as u64) < size {
            return Err(SendError::Shrank(path));
        }
        let hash = *blake3::hash(&data).as_bytes();
        Ok((data, hash))
    })
    .await
    .unwrap_or_else(|e| Err(SendError::Read(std::io::Error::other(e.to_string()))))
}

/// Starts reading `path` (`size` bytes, even if it grows meanwhile) for an upload the
/// server holds `offset` bytes of, hashed `prefix`.
pub(super) fn stream(
    path: &Path,
    size: u64,
    offset: u64,
    prefix: Vec<u8>,
) -> mpsc::Receiver<Result<Piece, SendError>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = read_into(&path, size, offset, &prefix, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

fn read_into(
    path: &PathBuf,
    size: u64,
    offset: u64,
    prefix: &[u8],
    tx: &mpsc::Sender<Result<Piece, SendError>>,
) -> Result<(), SendError> {
    let access = |e| SendError::access(path, e);
    let mut f = File::open(path).map_err(access)?;
    let mut hasher = blake3::Hasher::new();
    let mut pos = 0;
    if offset > 0 {
        let mut buf = vec![0u8; CHUNK_SIZE];
        while pos < offset {
            let want = (offset - pos).min(CHUNK_SIZE as u64) as usize;
            let n = read_up_to(&mut f, &mut buf[..want]).map_err(access)?;
            if n == 0 {
                return Err(SendError::Shrank(path.clone()));
            }
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
        if hasher.finalize().as_bytes().as_slice() != prefix {
            if tx.blocking_send(Ok(Piece::Restart)).is_err() {
                return Ok(());
            }
            hasher = blake3::Hasher::new();
            f.seek(SeekFrom::Start(0)).map_err(access)?;
            pos = 0;
        }
    }
    let pool = ChunkPool::default();
    while pos < size {
        let want = (size - pos).min(CHUNK_SIZE as u64) as usize;
        // `read_to_end` reads into the spare capacity: no zero-fill of a buffer the
        // read overwrites anyway.
        let mut buf = pool.take(want);
        let n = read_all(&mut f, want as u64, &mut buf).map_err(access)?;
        if n < want {
            return Err(SendError::Shrank(path.clone()));
        }
        hasher.update(&buf);
        pos += n as u64;
        if tx.blocking_send(Ok(Piece::Data(pool.chunk(buf)))).is_err() {
            // The upload stopped: nobody reads on.
            return Ok(());
        }
    }
    let _ = tx.blocking_send(Ok(Piece::End(*hasher.finalize().as_bytes())));
    Ok(())
}

/// Appends the next `want` bytes of `f` to `buf` unless the file ends first; returns
/// the bytes read.
fn read_all(f: &mut File, want: u64, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    f.take(want).read_to_end(buf)
}

/// Fills `buf` unless the file ends first; returns the bytes read.
fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(got) => n += got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_chunk_lends_its_buffer_to_the_next_read() {
        let pool = ChunkPool::default();
        let mut buf = pool.take(CHUNK_SIZE);
        buf.extend_from_slice(&[7; 1000]);
        let first = buf.as_ptr();
        let chunk = pool.chunk(buf);
        let held = chunk.slice(10..20);
        drop(chunk);
        // A slice still holds it: the next read gets a buffer of its own.
        let other = pool.take(CHUNK_SIZE);
        assert_ne!(other.as_ptr(), first);
        assert_eq!(&held[..], &[7; 10]);
        drop(held);
        let again = pool.take(CHUNK_SIZE);
        assert_eq!(
            again.as_ptr(),
            first,
            "the buffer came back once nothing held it"
        );
        assert!(again.is_empty() && again.capacity() >= CHUNK_SIZE);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_buffers() {
        let pool = ChunkPool::default();
        let chunks: Vec<Bytes> = (0..POOL_KEEP + 5)
            .map(|_| pool.chunk(pool.take(64)))
            .collect();
        drop(chunks);
        assert_eq!(pool.0.lock().map(|f| f.len()).unwrap_or(0), POOL_KEEP);
    }
}
