//! The file upload of the udpack.io examples, shared by `upload_server`,
//! `upload_client` and the tests, in the JavaScript version's protocol
//! ([`udpack_cli::protocol::js`]): the client sends `file {filename, filesize}`, then
//! `chunk {chunk}` per 1 MiB read (each read after the previous send was taken), then
//! `finish`; the server writes the file and answers `done`; the client answers `done`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use udpack_cli::protocol::js::{Done, FileInfo, Finish, CHUNK, DONE, FILE, FINISH};
use udpack_cli::protocol::{ChunkRef, CHUNK_SIZE};
use udpack_io::{Channel, Client, ClientEvent, Server, ServerEvent};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bytes done and expected, shared with the progress printer.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

impl Progress {
    pub fn percent(&self) -> f64 {
        let total = self.total.load(Ordering::Relaxed).max(1) as f64;
        self.done.load(Ordering::Relaxed) as f64 / total * 100.0
    }
}

/// Serves uploads into `out_dir` until one completes; returns the written file.
pub async fn serve_one(server: &Server, out_dir: &Path, quiet: bool) -> Result<PathBuf, BoxError> {
    let progress = Arc::new(Progress::default());
    let mut receiving: Option<tokio::task::JoinHandle<Result<PathBuf, BoxError>>> = None;
    loop {
        tokio::select! {
            event = server.next_event() => match event.ok_or("server closed")? {
                ServerEvent::Listening(addr) => tracing::info!("listening on {addr}"),
                ServerEvent::Connection(socket) => {
                    tracing::info!("connection {} from {:?}", socket.id_str(), socket.remote_addr())
                }
                ServerEvent::Channel(channel) => {
                    let (dir, p) = (out_dir.to_path_buf(), progress.clone());
                    receiving = Some(tokio::spawn(async move { receive_file(channel, &dir, &p).await }));
                }
                ServerEvent::Disconnect(socket, reason) => {
                    tracing::info!("socket {} closed: {reason}", socket.id_str())
                }
                ServerEvent::Speed(speed) => {
                    if !quiet {
                        println!("[{:.2}%] [recv.speed {:.1} KB/s]", progress.percent(), speed.recv);
                    }
                }
            },
            done = async { receiving.as_mut().expect("guarded").await }, if receiving.is_some() => {
                return done?;
            }
        }
    }
}

/// The server side of one upload on `channel`.
pub async fn receive_file(
    channel: Channel,
    out_dir: &Path,
    progress: &Progress,
) -> Result<PathBuf, BoxError> {
    let started = Instant::now();
    let first = channel.recv().await.ok_or("channel closed before `file`")?;
    if first.event() != FILE {
        return Err(format!("expected `file`, got `{}`", first.event()).into());
    }
    let info: FileInfo = first.data()?;
    // Only the file's own name: a client cannot write elsewhere.
    let name = Path::new(&info.filename)
        .file_name()
        .ok_or("no file name")?
        .to_owned();
    let path = out_dir.join(name);
    progress.total.store(info.filesize, Ordering::Relaxed);
    let mut file = tokio::fs::File::create(&path).await?;
    loop {
        let m = channel
            .recv()
            .await
            .ok_or("channel closed during the upload")?;
        match m.event() {
            CHUNK => {
                let c: ChunkRef = m.data()?;
                file.write_all(c.chunk).await?;
                progress
                    .done
                    .fetch_add(c.chunk.len() as u64, Ordering::Relaxed);
                tracing::debug!("received data {} bytes", c.chunk.len());
            }
            FINISH => break,
            other => tracing::warn!("unexpected event `{other}` during the upload"),
        }
    }
    file.flush().await?;
    file.sync_all().await?;
    tracing::info!("recv finished in {:?}", started.elapsed());
    channel.send(DONE, &Done {}).await?;
    // The client answers `done`; then the upload is over.
    while let Some(m) = channel.recv().await {
        if m.event() == DONE {
            break;
        }
    }
    Ok(path)
}

/// Uploads `path` over a new channel of `client`; returns the bytes sent.
pub async fn send_file(client: &Client, path: &Path, quiet: bool) -> Result<u64, BoxError> {
    let started = Instant::now();
    let filename = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("the path has no file name")?
        .to_string();
    let mut file = tokio::fs::File::open(path).await?;
    let filesize = file.metadata().await?.len();
    let progress = Arc::new(Progress::default());
    progress.total.store(filesize, Ordering::Relaxed);
    let channel = client.open_channel().await?;
    channel.send(FILE, &FileInfo { filename, filesize }).await?;
    let printer = {
        let p = progress.clone();
        let endpoint = client.endpoint().clone();
        tokio::spawn(async move {
            let mut speed = endpoint.speed();
            while speed.changed().await.is_ok() {
                let s = *speed.borrow();
                if !quiet {
                    println!("[{:.2}%] [send.speed {:.1} KB/s]", p.percent(), s.send);
                }
            }
        })
    };
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        let n = read_up_to(&mut file, &mut buf).await?;
        if n == 0 {
            break;
        }
        // The next read starts only once this chunk is taken: back-pressure.
        channel.send(CHUNK, &ChunkRef { chunk: &buf[..n] }).await?;
        progress.done.fetch_add(n as u64, Ordering::Relaxed);
        tracing::debug!("send data {n} bytes");
    }
    channel.send(FINISH, &Finish {}).await?;
    tracing::info!("send finished");
    let done = tokio::time::timeout(Duration::from_secs(120), channel.recv()).await?;
    match done {
        Some(m) if m.event() == DONE => channel.send(DONE, &Done {}).await?,
        Some(m) => return Err(format!("expected `done`, got `{}`", m.event()).into()),
        None => return Err("channel closed before `done`".into()),
    }
    printer.abort();
    let secs = started.elapsed().as_secs_f64();
    if !quiet {
        println!(
            "used: {secs:.3} s for {filesize} bytes ({:.1} MB/s)",
            filesize as f64 / 1e6 / secs
        );
    }
    Ok(filesize)
}

async fn read_up_to(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
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

/// Waits for the client's first connection event.
pub async fn wait_connected(client: &Client) -> Result<(), BoxError> {
    loop {
        match client.next_event().await.ok_or("client closed")? {
            ClientEvent::Connection { .. } => return Ok(()),
            ClientEvent::ConnectError(e) => return Err(e.into()),
            _ => {}
        }
    }
}
