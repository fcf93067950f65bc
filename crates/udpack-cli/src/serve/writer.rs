//! Writes and hashes an upload's data off the runtime: a task owns the part file and
//! its hasher and takes the received chunks, without copying them, through a short
//! queue; each write and hash runs on the blocking pool, which it holds only while it
//! writes (so uploads that stall cannot take the pool). The channel's task only routes
//! messages, so receiving the next chunks and writing the last ones overlap.
//!
//! Every [`SYNC_EVERY`] bytes the writer also starts a flush of what it wrote so far
//! (`fdatasync` on a second handle, on the pool, one at a time, not waited for): the
//! disk writes while the network delivers, and the `fsync` that makes the finished
//! file durable has only the last stretch left to write.

use bytes::Bytes;
use std::io::Write;
use tokio::sync::{mpsc, oneshot};

use super::part::Part;

/// Chunks queued for the writer: enough to ride over a slow write, few enough to keep
/// the back-pressure on the sender.
const QUEUE: usize = 8;
/// Bytes written between early flushes.
const SYNC_EVERY: u64 = 32 << 20;

enum Command {
    Data(Bytes),
    /// Empty the part (the client's file changed since the part was written).
    Restart(oneshot::Sender<std::io::Result<()>>),
}

/// The writer of one upload.
pub(super) struct Writer {
    tx: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<Result<Part, std::io::Error>>,
}

impl Writer {
    pub fn spawn(part: Part) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(part, rx));
        Writer { tx, task }
    }

    /// Queues `data` to be appended; false if the writer stopped (its error comes from
    /// [`Writer::finish`]).
    pub async fn write(&self, data: Bytes) -> bool {
        self.tx.send(Command::Data(data)).await.is_ok()
    }

    /// Empties the part once what is queued is written.
    pub async fn restart(&self) -> std::io::Result<()> {
        let (tx, rx) = oneshot::channel();
        let stopped = || std::io::Error::other("the writer stopped");
        self.tx
            .send(Command::Restart(tx))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Waits until everything queued is written; the part, or the first write error.
    pub async fn finish(self) -> Result<Part, std::io::Error> {
        drop(self.tx);
        self.task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("the writer failed: {e}"))))
    }
}

async fn run(mut part: Part, mut rx: mpsc::Receiver<Command>) -> Result<Part, std::io::Error> {
    let pool_failed = |e: tokio::task::JoinError| std::io::Error::other(e.to_string());
    let mut flush = EarlyFlush::default();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Data(data) => {
                let n = data.len() as u64;
                part = tokio::task::spawn_blocking(move || {
                    part.file.write_all(&data)?;
                    part.hasher.update(&data);
                    part.len += data.len() as u64;
                    Ok::<_, std::io::Error>(part)
                })
                .await
                .map_err(pool_failed)??;
                flush.wrote(n, &part.file).await?;
            }
            Command::Restart(done) => {
                let (back, r) = tokio::task::spawn_blocking(move || {
                    let r = restart(&mut part);
                    (part, r)
                })
                .await
                .map_err(pool_failed)?;
                part = back;
                let failed = r
                    .as_ref()
                    .err()
                    .map(|e| std::io::Error::new(e.kind(), e.to_string()));
                let _ = done.send(r);
                if let Some(e) = failed {
                    return Err(e);
                }
            }
        }
    }
    flush.wait().await?;
    Ok(part)
}

/// The early flushes of one part: at most one in flight.
#[derive(Default)]
struct EarlyFlush {
    unflushed: u64,
    running: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl EarlyFlush {
    /// Counts `n` bytes written to `file`; starts a flush when enough are waiting and
    /// none runs. A failed earlier flush is the write error it is.
    async fn wrote(&mut self, n: u64, file: &std::fs::File) -> std::io::Result<()> {
        self.unflushed += n;
        if self.unflushed < SYNC_EVERY {
            return Ok(());
        }
        if let Some(running) = &self.running {
            if !running.is_finished() {
                return Ok(());
            }
        }
        // Finished: its result is there at once.
        self.wait().await?;
        let handle = file.try_clone()?;
        self.unflushed = 0;
        self.running = Some(tokio::task::spawn_blocking(move || handle.sync_data()));
        Ok(())
    }

    /// Waits for the flush in flight, if any.
    async fn wait(&mut self) -> std::io::Result<()> {
        match self.running.take() {
            Some(h) => h
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))),
            None => Ok(()),
        }
    }
}

fn restart(part: &mut Part) -> std::io::Result<()> {
    use std::io::Seek;
    part.file.set_len(0)?;
    part.file.seek(std::io::SeekFrom::Start(0))?;
    part.len = 0;
    part.hasher = blake3::Hasher::new();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::dir::Dir;
    use super::*;

    #[tokio::test]
    async fn a_part_written_across_early_flushes_holds_every_byte_in_order() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = Dir::open(tmp.path()).expect("dir");
        let file = dir
            .open_file(std::ffi::OsStr::new("f.part"), true)
            .expect("part");
        let part = Part {
            file,
            len: 0,
            hasher: blake3::Hasher::new(),
            dir,
        };
        let writer = Writer::spawn(part);
        // 2.5 × SYNC_EVERY in 1 MiB chunks, each chunk's bytes its own index: two early
        // flushes start while the writes go on.
        let chunk = 1 << 20;
        let chunks = (5 * SYNC_EVERY / 2) as usize / chunk;
        let mut hasher = blake3::Hasher::new();
        for i in 0..chunks {
            let data = Bytes::from(vec![i as u8; chunk]);
            hasher.update(&data);
            assert!(writer.write(data).await, "the writer stopped at chunk {i}");
        }
        let part = writer.finish().await.expect("finish");
        assert_eq!(part.len, (chunks * chunk) as u64);
        assert_eq!(part.hasher.finalize(), hasher.finalize());
        let written = std::fs::read(tmp.path().join("f.part")).expect("read back");
        assert_eq!(written.len(), chunks * chunk);
        for (i, c) in written.chunks(chunk).enumerate() {
            assert!(c.iter().all(|&b| b == i as u8), "chunk {i} is out of place");
        }
    }
}
