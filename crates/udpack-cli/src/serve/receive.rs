//! One file on one channel: the offer checked, the part file claimed and opened, the
//! chunks written, the whole checked and moved into place, each step answered.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use sha2::Digest;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use udpack_io::{Channel, Message};

use super::part::{self, Destination, Part, PartError};
use super::State;
use crate::paths::sanitize;
use crate::protocol::{
    code, ChunkRef, ErrorEvent, FileAnswer, FileOffer, FinishAnswer, CHUNK, ERROR, FILE, FINISH,
};

/// Why an accepted upload failed; its `Display` is the message the client gets.
#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error(transparent)]
    Part(#[from] PartError),
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("more than the announced {announced} bytes")]
    TooLong { announced: u64 },
    #[error(
        "{name}: received {received} of {filesize} bytes, SHA-256 {}",
        if *.hash_matches { "matches" } else { "differs" }
    )]
    Mismatch {
        name: String,
        received: u64,
        filesize: u64,
        hash_matches: bool,
    },
    #[error("cannot move {} into place: {source}", .path.display())]
    Place {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Answering the client failed.
    #[error(transparent)]
    Reply(udpack_io::Error),
}

impl UploadError {
    /// The protocol's error code for it.
    fn code(&self) -> &'static str {
        match self {
            UploadError::TooLong { .. } | UploadError::Mismatch { .. } => code::INTEGRITY,
            UploadError::Part(e) => e.code(),
            _ => code::IO,
        }
    }
}

/// How an accepted upload ended, short of failing.
enum Outcome {
    /// Complete, under this final relative name.
    Received(String),
    /// The client went away or another session took over: the part stays for resuming.
    Interrupted,
}

/// Receives one file on `channel`; failures are answered to the client and logged.
pub(super) async fn receive(channel: Channel, state: Arc<State>) {
    let socket = channel.socket().id_str();
    let Some(first) = channel.recv().await else {
        return;
    };
    let Some((offer, rel)) = read_offer(&channel, &first).await else {
        return;
    };
    let dest = Destination::new(rel);
    let claimed = state
        .claims
        .claim(&dest.key, &socket, &offer.sha256, offer.filesize)
        .await;
    let Some(claim) = claimed else {
        let _ = first
            .reply(&refuse(
                code::BUSY,
                format!("{} is being uploaded by another client", offer.filename),
            ))
            .await;
        return;
    };
    let upload = Upload {
        channel: &channel,
        first: &first,
        offer: &offer,
        dest: &dest,
        state: &state,
        stop: claim.stop(),
    };
    let result = upload.run().await;
    drop(claim);
    match result {
        Ok(Outcome::Received(name)) => {
            state.count_completed(socket);
            state.note(
                &offer.filename,
                &format!("received as {name}, SHA-256 verified"),
            );
        }
        Ok(Outcome::Interrupted) => {
            state.note(&offer.filename, "interrupted; kept for resuming");
        }
        Err(e) => {
            tracing::warn!(name = %offer.filename, error = %e, "upload failed");
            state.note(&offer.filename, &format!("failed: {e}"));
        }
    }
}

/// The offer in the channel's first message and the relative path it may be stored
/// at; `None` once a refusal has been sent.
async fn read_offer(channel: &Channel, first: &Message) -> Option<(FileOffer, PathBuf)> {
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
        return None;
    }
    let offer: FileOffer = match first.data() {
        Ok(o) => o,
        Err(e) => {
            let _ = first.reply(&refuse(code::PROTOCOL, e.to_string())).await;
            return None;
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
            return None;
        }
    };
    if offer.sha256.len() != 32 {
        let _ = first
            .reply(&refuse(code::PROTOCOL, "sha256 must be 32 bytes".into()))
            .await;
        return None;
    }
    Some((offer, rel))
}

/// An accepted upload, its part file claimed.
struct Upload<'a> {
    channel: &'a Channel,
    /// The `file` message, answered once the part file is ready.
    first: &'a Message,
    offer: &'a FileOffer,
    dest: &'a Destination,
    state: &'a State,
    /// Notified when another session takes the upload over.
    stop: &'a Notify,
}

impl Upload<'_> {
    /// Receives into the part file until `finish`, then checks and places the file.
    async fn run(&self) -> Result<Outcome, UploadError> {
        let started = Instant::now();
        let mut part = self.open().await?;
        let Some(finish) = self.write_chunks(&mut part).await? else {
            return Ok(Outcome::Interrupted);
        };
        let received = part.len;
        let name = match self.complete(part).await {
            Ok(name) => name,
            Err(e) => {
                let _ = finish.reply(&finish_answer(Err(&e))).await;
                return Err(e);
            }
        };
        tracing::info!(%name, bytes = received, secs = started.elapsed().as_secs_f64(), "received");
        finish
            .reply(&finish_answer(Ok(&name)))
            .await
            .map_err(UploadError::Reply)?;
        Ok(Outcome::Received(name))
    }

    /// Opens (or resumes) the part file and answers the offer with where to start.
    async fn open(&self) -> Result<Part, UploadError> {
        let expected_hex = hex::encode(&self.offer.sha256);
        let out = self.state.out.clone();
        let admission = self.state.admission();
        let opened = part::open(
            out,
            self.dest,
            &expected_hex,
            self.offer.filesize,
            admission,
        );
        let part = match opened.await {
            Ok(p) => p,
            Err(e) => {
                let e = UploadError::Part(e);
                tracing::warn!(name = %self.offer.filename, error = %e, "refused an upload");
                let _ = self.first.reply(&refuse(e.code(), e.to_string())).await;
                return Err(e);
            }
        };
        let offset = part.len;
        if offset > 0 {
            tracing::info!(name = %self.offer.filename, offset, "resuming");
        }
        let progress = &self.state.progress;
        progress.add_total(self.offer.filesize);
        progress.start_file(&self.offer.filename, self.offer.filesize, offset);
        self.first
            .reply(&FileAnswer {
                ok: true,
                offset,
                code: String::new(),
                message: String::new(),
            })
            .await
            .map_err(UploadError::Reply)?;
        Ok(part)
    }

    /// Writes chunks until `finish` arrives (returned); `None` when the client went
    /// away or another session took over.
    async fn write_chunks(&self, part: &mut Part) -> Result<Option<Message>, UploadError> {
        loop {
            let next = tokio::select! {
                m = self.channel.recv() => m,
                _ = self.stop.notified() => {
                    let _ = part.file.flush().await;
                    fail(self.channel, code::BUSY, "taken over by another upload of the same file").await;
                    return Ok(None);
                }
            };
            let Some(m) = next else {
                let _ = part.file.flush().await;
                return Ok(None);
            };
            match m.event() {
                CHUNK => self.write_chunk(&m, part).await?,
                FINISH => return Ok(Some(m)),
                other => {
                    tracing::warn!(event = other, "unexpected event during an upload")
                }
            }
        }
    }

    /// Appends one `chunk` message; a malformed one is dropped, one past the announced
    /// size ends the upload and discards the part.
    async fn write_chunk(&self, m: &Message, part: &mut Part) -> Result<(), UploadError> {
        let c: ChunkRef = match m.data() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "dropped a malformed chunk");
                return Ok(());
            }
        };
        let n = c.chunk.len() as u64;
        if part.len + n > self.offer.filesize {
            let e = UploadError::TooLong {
                announced: self.offer.filesize,
            };
            fail(self.channel, e.code(), &e.to_string()).await;
            part::discard(&part.dir, self.dest);
            return Err(e);
        }
        if let Err(source) = part.file.write_all(c.chunk).await {
            let e = UploadError::Write {
                path: self.dest.rel.clone(),
                source,
            };
            fail(self.channel, e.code(), &e.to_string()).await;
            return Err(e);
        }
        part.hasher.update(c.chunk);
        part.len += n;
        self.state.progress.advance(&self.offer.filename, n);
        Ok(())
    }

    /// Makes the part durable, checks size and SHA-256, and moves it to a free name;
    /// returns that name relative to the output directory.
    async fn complete(&self, part: Part) -> Result<String, UploadError> {
        let Part {
            mut file,
            len: received,
            hasher,
            dir,
        } = part;
        if let Err(source) = async {
            file.flush().await?;
            file.sync_all().await
        }
        .await
        {
            return Err(UploadError::Write {
                path: self.dest.rel.clone(),
                source,
            });
        }
        drop(file);
        let digest = hasher.finalize();
        let hash_matches = digest.as_slice() == self.offer.sha256.as_slice();
        if received != self.offer.filesize || !hash_matches {
            part::discard(&dir, self.dest);
            return Err(UploadError::Mismatch {
                name: self.offer.filename.clone(),
                received,
                filesize: self.offer.filesize,
                hash_matches,
            });
        }
        let final_path = part::place(&dir, self.dest).map_err(|source| UploadError::Place {
            path: self.dest.rel.clone(),
            source,
        })?;
        Ok(final_path.to_string_lossy().into_owned())
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

/// The answer to `finish`: the final name, or why there is none.
fn finish_answer(result: Result<&str, &UploadError>) -> FinishAnswer {
    match result {
        Ok(name) => FinishAnswer {
            ok: true,
            name: name.to_string(),
            code: String::new(),
            message: String::new(),
        },
        Err(e) => FinishAnswer {
            ok: false,
            name: String::new(),
            code: e.code().into(),
            message: e.to_string(),
        },
    }
}

/// Tells the client why the upload stopped and closes the channel.
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
