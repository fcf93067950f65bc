//! The bytes every throughput run sends, and how the receiver checks them.

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::{BenchError, Result};

/// Size of every write, and of the TCP receiver's read buffer.
pub const CHUNK: usize = 256 * 1024;
/// Largest chunk taken by one zero-copy read (udpack, quinn).
pub const READ_MAX: usize = 1024 * 1024;

/// The byte at `offset` of every stream: writes always start at a multiple of CHUNK,
/// so the sender fills one buffer once and the receiver recomputes any byte cheaply.
fn pattern(offset: u64) -> u8 {
    let i = offset % CHUNK as u64;
    (i.wrapping_mul(0x9e37_79b9) >> 11) as u8
}

fn pattern_buf() -> Vec<u8> {
    (0..CHUNK as u64).map(pattern).collect()
}

/// Checks a received piece at stream offset `offset`: first and last byte. An empty
/// piece has nothing to check.
pub fn check(offset: u64, data: &[u8]) -> Result<()> {
    let (Some(&first), Some(&last)) = (data.first(), data.last()) else {
        return Ok(());
    };
    if first != pattern(offset) || last != pattern(offset + data.len() as u64 - 1) {
        return Err(BenchError::Corrupt(offset));
    }
    Ok(())
}

/// Writes `len` bytes of the pattern in CHUNK-sized writes; returns the count.
pub async fn write_stream<W: AsyncWrite + Unpin>(w: &mut W, len: u64) -> Result<u64> {
    let buf = pattern_buf();
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(CHUNK as u64) as usize;
        w.write_all(&buf[..n]).await?;
        off += n as u64;
    }
    Ok(off)
}

/// Waits for each stream's task; returns the sum of their byte counts.
pub async fn join_all(tasks: Vec<tokio::task::JoinHandle<Result<u64>>>) -> Result<u64> {
    let mut n = 0;
    for t in tasks {
        n += t.await??;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_accepts_the_pattern_at_any_offset() {
        let buf = pattern_buf();
        let stream: Vec<u8> = buf.iter().chain(buf.iter()).copied().collect();
        for (off, len) in [
            (0, 1),
            (0, CHUNK),
            (100, 5000),
            (CHUNK - 1, 2),
            (3, 2 * CHUNK - 3),
        ] {
            check(off as u64, &stream[off..off + len]).unwrap();
        }
        check(7, &[]).unwrap();
    }

    #[test]
    fn check_rejects_a_wrong_first_or_last_byte() {
        let mut piece = pattern_buf()[10..1000].to_vec();
        piece[0] ^= 1;
        assert!(matches!(check(10, &piece), Err(BenchError::Corrupt(10))));
        piece[0] ^= 1;
        let last = piece.len() - 1;
        piece[last] ^= 1;
        assert!(matches!(check(10, &piece), Err(BenchError::Corrupt(10))));
    }

    #[tokio::test]
    async fn write_stream_writes_the_pattern() {
        let mut out = Vec::new();
        let n = write_stream(&mut out, CHUNK as u64 + 17).await.unwrap();
        assert_eq!(n, CHUNK as u64 + 17);
        assert_eq!(out.len(), CHUNK + 17);
        assert!(out.iter().enumerate().all(|(i, &b)| b == pattern(i as u64)));
    }
}
