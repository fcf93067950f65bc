//! `udpack serve`: receives uploads into a directory.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Notify;
use udpack_io::{Channel, PrivateKey, Server, ServerEvent, ServerOptions};

use crate::error::CliError;
use crate::paths::{claim_free_name, sanitize, with_suffix};
use crate::progress::Progress;
use crate::protocol::{
    code, ChunkRef, ErrorEvent, FileAnswer, FileOffer, FinishAnswer, CHUNK, ERROR, FILE, FINISH,
};

/// What `serve` needs.
pub struct ServeOptions {
    pub key: PrivateKey,
    pub listen: SocketAddr,
    pub tokens: Vec<String>,
    pub out: PathBuf,
    pub once: bool,
    /// Show the receiving progress (the demo shows only the sender's).
    pub show_progress: bool,
}

/// How long a new session waits for an upload of the same content it takes over.
const TAKEOVER_WAIT: Duration = Duration::from_secs(10);

/// An upload in progress.
struct Active {
    id: u64,
    socket: String,
    sha256: Vec<u8>,
    /// Asks the upload to stop and keep its part file (another session resumes it).
    stop: Arc<Notify>,
}

/// Shared by the uploads in progress.
struct State {
    out: PathBuf,
    /// `.part` files being written: two uploads of one file cannot interleave.
    active: Mutex<HashMap<PathBuf, Active>>,
    /// Signalled whenever an upload leaves `active`.
    released: Notify,
    next_id: AtomicU64,
    /// Completed files per socket.
    completed: Mutex<HashMap<String, usize>>,
    progress: Progress,
    show_progress: bool,
}

impl State {
    fn note(&self, name: &str, what: &str) {
        if self.show_progress {
            self.progress.finish_file(name, what);
        }
    }
}

/// A bound receiver.
pub struct Receiver {
    server: Server,
    state: Arc<State>,
    once: bool,
    show_progress: bool,
}

impl Receiver {
    pub async fn bind(opts: ServeOptions) -> Result<Receiver, CliError> {
        if opts.tokens.is_empty() {
            return Err(CliError::Usage(
                "no token configured: pass --token, --tokens-file or set UDPACK_TOKEN".into(),
            ));
        }
        std::fs::create_dir_all(&opts.out)
            .map_err(|e| CliError::Other(format!("cannot create {}: {e}", opts.out.display())))?;
        let tokens: HashSet<Vec<u8>> = opts.tokens.iter().map(|t| t.as_bytes().to_vec()).collect();
        let server = Server::bind(
            ServerOptions::new(opts.key)
                .host(opts.listen.ip().to_string())
                .port(opts.listen.port())
                .auth(move |t| tokens.contains(t)),
        )
        .await
        .map_err(|e| CliError::Other(format!("cannot listen on {}: {e}", opts.listen)))?;
        Ok(Receiver {
            server,
            state: Arc::new(State {
                out: opts.out,
                active: Mutex::new(HashMap::new()),
                released: Notify::new(),
                next_id: AtomicU64::new(0),
                completed: Mutex::new(HashMap::new()),
                progress: Progress::new("recv", 0),
                show_progress: opts.show_progress,
            }),
            once: opts.once,
            show_progress: opts.show_progress,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Serves until `stop` resolves (then lets uploads in flight finish or leaves them
    /// resumable) or, with `--once`, until the first upload session completed.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), CliError> {
        tokio::pin!(stop);
        let mut uploads = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stop => {
                    tracing::info!("stopping");
                    break;
                }
                Some(_) = uploads.join_next(), if !uploads.is_empty() => {}
                event = self.server.next_event() => {
                    let Some(event) = event else { break };
                    match event {
                        ServerEvent::Listening(addr) => {
                            if self.show_progress {
                                println!("listening on {addr}");
                            }
                        }
                        ServerEvent::Connection(socket) => {
                            tracing::info!(socket = %socket.id_str(), remote = ?socket.remote_addr(), "connection");
                        }
                        ServerEvent::Channel(channel) => {
                            let state = self.state.clone();
                            uploads.spawn(async move { receive(channel, state).await });
                        }
                        ServerEvent::Disconnect(socket, reason) => {
                            tracing::info!(socket = %socket.id_str(), %reason, "disconnected");
                            let done = self
                                .state
                                .completed
                                .lock()
                                .map(|c| c.get(&socket.id_str()).copied().unwrap_or(0))
                                .unwrap_or(0);
                            if self.once && done > 0 {
                                // Let the channels of that session wind up first,
                                // unless a signal says to stop now.
                                tokio::select! {
                                    _ = async { while uploads.join_next().await.is_some() {} } => {}
                                    _ = &mut stop => {}
                                }
                                break;
                            }
                        }
                        ServerEvent::Speed(speed) => {
                            if self.show_progress && !uploads.is_empty() {
                                self.state.progress.tick(speed);
                            }
                        }
                    }
                }
            }
        }
        self.state.progress.clear();
        // Uploads still running keep their `.part` file: the client can resume.
        uploads.abort_all();
        self.server.close(0);
        Ok(())
    }
}

/// One file on one channel.
async fn receive(channel: Channel, state: Arc<State>) {
    let socket = channel.socket().id_str();
    let Some(first) = channel.recv().await else {
        return;
    };
    if first.event() != FILE {
        let _ = channel
            .send(
                ERROR,
                &ErrorEvent {
                    code: code::PROTOCOL.into(),
                    message: format!("expected `file`, got `{}`", first.event()),
                },
            )
            .await;
        return;
    }
    let offer: FileOffer = match first.data() {
        Ok(o) => o,
        Err(e) => {
            let _ = first.reply(&refuse(code::PROTOCOL, e.to_string())).await;
            return;
        }
    };
    let rel = match sanitize(&offer.filename) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(name = %offer.filename.escape_debug(), error = %e, "refused a path");
            let _ = first
                .reply(&refuse(
                    code::BAD_PATH,
                    format!("{}: {e}", offer.filename.escape_debug()),
                ))
                .await;
            return;
        }
    };
    if offer.sha256.len() != 32 {
        let _ = first
            .reply(&refuse(code::PROTOCOL, "sha256 must be 32 bytes".into()))
            .await;
        return;
    }
    let target = state.out.join(&rel);
    let part = with_suffix(&target, ".part");
    // A client that died mid-upload holds its part until its session times out; a new
    // session offering the same content takes the part over and resumes it.
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let stop = Arc::new(Notify::new());
    let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
    let claimed = loop {
        let released = state.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        let holder = match state.active.lock() {
            Ok(mut active) => match active.get(&part) {
                None => {
                    active.insert(
                        part.clone(),
                        Active {
                            id,
                            socket: socket.clone(),
                            sha256: offer.sha256.clone(),
                            stop: stop.clone(),
                        },
                    );
                    None
                }
                Some(a) if a.socket != socket && a.sha256 == offer.sha256 => {
                    a.stop.notify_one();
                    Some(true)
                }
                Some(_) => Some(false),
            },
            Err(_) => Some(false),
        };
        match holder {
            None => break true,
            Some(false) => break false,
            Some(true) => {
                if tokio::time::timeout_at(deadline, released).await.is_err() {
                    break false;
                }
            }
        }
    };
    if !claimed {
        let _ = first
            .reply(&refuse(
                code::BUSY,
                format!("{} is being uploaded by another client", offer.filename),
            ))
            .await;
        return;
    }
    // Released however the upload ends, a panic included.
    let guard = ActiveGuard {
        state: &state,
        part: part.clone(),
        id,
    };
    let result = receive_file(
        &channel, &first, &offer, &rel, &target, &part, &state, &stop,
    )
    .await;
    drop(guard);
    match result {
        Ok(Some(name)) => {
            if let Ok(mut c) = state.completed.lock() {
                *c.entry(socket).or_default() += 1;
            }
            state.note(
                &offer.filename,
                &format!("received as {name}, SHA-256 verified"),
            );
        }
        Ok(None) => {
            state.note(&offer.filename, "interrupted; kept for resuming");
        }
        Err(e) => {
            tracing::warn!(name = %offer.filename, error = %e, "upload failed");
            state.note(&offer.filename, &format!("failed: {e}"));
        }
    }
}

/// Removes an upload from the active set when it ends.
struct ActiveGuard<'a> {
    state: &'a State,
    part: PathBuf,
    id: u64,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut active) = self.state.active.lock() {
            if active.get(&self.part).is_some_and(|a| a.id == self.id) {
                active.remove(&self.part);
            }
        }
        self.state.released.notify_waiters();
    }
}

fn refuse(code: &str, message: String) -> FileAnswer {
    FileAnswer {
        ok: false,
        offset: 0,
        code: code.into(),
        message,
    }
}

/// Where a resumable upload keeps the hash of the content it belongs to.
fn sidecar(part: &Path) -> PathBuf {
    with_suffix(part, ".sha256")
}

/// Receives into `part`; `Ok(Some(final name))` when complete, `Ok(None)` when the
/// client went away or `stop` was signalled (the part stays for resuming).
#[allow(clippy::too_many_arguments)]
async fn receive_file(
    channel: &Channel,
    first: &udpack_io::Message,
    offer: &FileOffer,
    rel: &Path,
    target: &Path,
    part: &Path,
    state: &State,
    stop: &Notify,
) -> Result<Option<String>, String> {
    let started = Instant::now();
    let expected_hex = hex::encode(&offer.sha256);
    let io_fail = |what: &str, e: std::io::Error| format!("{what}: {e}");
    // Create the directories, then resume or start the part file.
    let prepared: Result<(File, u64, Sha256), String> = async {
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_fail("cannot create the directory", e))?;
        }
        let same_content = tokio::fs::read_to_string(sidecar(part))
            .await
            .is_ok_and(|h| h.trim() == expected_hex);
        let existing = tokio::fs::metadata(part).await.map(|m| m.len()).ok();
        let mut hasher = Sha256::new();
        match existing {
            Some(len) if same_content && len <= offer.filesize => {
                let mut f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(part)
                    .await
                    .map_err(|e| io_fail("cannot open the partial file", e))?;
                let mut buf = vec![0u8; 1 << 20];
                let mut left = len;
                while left > 0 {
                    let want = left.min(buf.len() as u64) as usize;
                    let n = f
                        .read(&mut buf[..want])
                        .await
                        .map_err(|e| io_fail("cannot read the partial file", e))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    left -= n as u64;
                }
                let have = len - left;
                f.set_len(have)
                    .await
                    .map_err(|e| io_fail("cannot truncate", e))?;
                f.seek(std::io::SeekFrom::Start(have))
                    .await
                    .map_err(|e| io_fail("cannot seek", e))?;
                Ok((f, have, hasher))
            }
            _ => {
                let f = File::create(part)
                    .await
                    .map_err(|e| io_fail("cannot create the file", e))?;
                tokio::fs::write(sidecar(part), &expected_hex)
                    .await
                    .map_err(|e| io_fail("cannot write", e))?;
                Ok((f, 0, hasher))
            }
        }
    }
    .await;
    let (mut file, offset, mut hasher) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = first.reply(&refuse(code::IO, e.clone())).await;
            return Err(e);
        }
    };
    if offset > 0 {
        tracing::info!(name = %offer.filename, offset, "resuming");
    }
    state.progress.add_total(offer.filesize);
    state
        .progress
        .start_file(&offer.filename, offer.filesize, offset);
    first
        .reply(&FileAnswer {
            ok: true,
            offset,
            code: String::new(),
            message: String::new(),
        })
        .await
        .map_err(|e| e.to_string())?;

    let mut received = offset;
    let finish = loop {
        let next = tokio::select! {
            m = channel.recv() => m,
            _ = stop.notified() => {
                let _ = file.flush().await;
                fail(channel, code::BUSY, "taken over by another upload of the same file").await;
                return Ok(None);
            }
        };
        let Some(m) = next else {
            let _ = file.flush().await;
            return Ok(None);
        };
        match m.event() {
            CHUNK => {
                let c: ChunkRef = match m.data() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "dropped a malformed chunk");
                        continue;
                    }
                };
                if received + c.chunk.len() as u64 > offer.filesize {
                    let msg = format!("more than the announced {} bytes", offer.filesize);
                    fail(channel, code::INTEGRITY, &msg).await;
                    discard(part).await;
                    return Err(msg);
                }
                if let Err(e) = file.write_all(c.chunk).await {
                    let msg = format!("cannot write {}: {e}", rel.display());
                    fail(channel, code::IO, &msg).await;
                    return Err(msg);
                }
                hasher.update(c.chunk);
                received += c.chunk.len() as u64;
                state
                    .progress
                    .advance(&offer.filename, c.chunk.len() as u64);
            }
            FINISH => break m,
            other => {
                tracing::warn!(event = other, "unexpected event during an upload")
            }
        }
    };
    let answer = |ok: bool, name: String, code: &str, message: String| FinishAnswer {
        ok,
        name,
        code: code.into(),
        message,
    };
    if let Err(e) = async {
        file.flush().await?;
        file.sync_all().await
    }
    .await
    {
        let msg = format!("cannot write {}: {e}", rel.display());
        let _ = finish
            .reply(&answer(false, String::new(), code::IO, msg.clone()))
            .await;
        return Err(msg);
    }
    drop(file);
    let digest = hasher.finalize();
    if received != offer.filesize || digest.as_slice() != offer.sha256.as_slice() {
        discard(part).await;
        let msg = format!(
            "{}: received {received} of {} bytes, SHA-256 {}",
            offer.filename,
            offer.filesize,
            if digest.as_slice() == offer.sha256.as_slice() {
                "matches"
            } else {
                "differs"
            }
        );
        let _ = finish
            .reply(&answer(false, String::new(), code::INTEGRITY, msg.clone()))
            .await;
        return Err(msg);
    }
    let claim = {
        let (part, target) = (part.to_path_buf(), target.to_path_buf());
        tokio::task::spawn_blocking(move || claim_free_name(&part, &target))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    };
    let final_path = match claim {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("cannot move {} into place: {e}", rel.display());
            let _ = finish
                .reply(&answer(false, String::new(), code::IO, msg.clone()))
                .await;
            return Err(msg);
        }
    };
    let _ = tokio::fs::remove_file(sidecar(part)).await;
    let name = final_path
        .strip_prefix(&state.out)
        .unwrap_or(&final_path)
        .to_string_lossy()
        .into_owned();
    tracing::info!(%name, bytes = received, secs = started.elapsed().as_secs_f64(), "received");
    finish
        .reply(&answer(true, name.clone(), "", String::new()))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(name))
}

async fn fail(channel: &Channel, code: &str, message: &str) {
    let _ = channel
        .send(
            ERROR,
            &ErrorEvent {
                code: code.into(),
                message: message.into(),
            },
        )
        .await;
    channel.close().await;
}

async fn discard(part: &Path) {
    let _ = tokio::fs::remove_file(part).await;
    let _ = tokio::fs::remove_file(sidecar(part)).await;
}
