//! One file on one channel: the offer checked, the part file claimed and opened, the
//! data handed to the writer, the whole checked and moved into place, each step
//! answered. A file sent whole in its offer is checked and stored in one step.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Notify;
use udpack_io::{Channel, Message};

use super::claim::{Claimant, Refused};
use super::part::{self, Destination, Part, PartError};
use super::writer::Writer;
use super::State;
use crate::paths::sanitize;
use crate::protocol::{
    code, ErrorEvent, Finish, FinishAnswer, Offer, OfferAnswer, DATA, ERROR, FINISH, HASH_LEN,
    ID_LEN, INLINE_MAX, OFFER, RESTART,
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
    #[error("a `data` message is not a bin: {0}")]
    BadData(udpack_io::Error),
    #[error(
        "{name}: received {received} of {size} bytes, BLAKE3 {}",
        if *.hash_matches { "matches" } else { "differs" }
    )]
    Mismatch {
        name: String,
        received: u64,
        size: u64,
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
    #[error("the client took no answer for {} s", .0.as_secs())]
    ReplyTimeout(Duration),
}

impl UploadError {
    /// The protocol's error code for it.
    fn code(&self) -> &'static str {
        match self {
            UploadError::TooLong { .. } | UploadError::Mismatch { .. } => code::INTEGRITY,
            UploadError::BadData(_) => code::PROTOCOL,
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
    let wait = state.limits.reply_timeout;
    let first = match tokio::time::timeout(state.limits.offer_timeout, channel.recv()).await {
        Ok(Some(m)) => m,
        Ok(None) => return,
        Err(_) => {
            tracing::info!(%socket, "closed a channel that sent no offer");
            fail(&channel, wait, code::PROTOCOL, "no offer in time").await;
            return;
        }
    };
    let Some((mut offer, rel)) = read_offer(&channel, &first, wait).await else {
        return;
    };
    // A small file's content, moved out of the offer (no copy).
    let whole = offer.data.take();
    let dest = Destination::new(rel);
    let claimant = Claimant {
        socket: &socket,
        token: channel.socket().token_id(),
    };
    let claimed = state
        .claims
        .claim(&dest.key, &claimant, &offer.id, offer.size)
        .await;
    let claim = match claimed {
        Ok(c) => c,
        Err(why) => {
            let message = match why {
                Refused::Busy => format!("{} is being uploaded by another client", offer.name),
                Refused::TokenLimit(n) => {
                    tracing::info!(name = %offer.name, uploads = n, "refused: the token's uploads limit");
                    format!("{}: this token already has {n} uploads in progress, the server's limit; retry when some are done", offer.name)
                }
            };
            let _ = reply(&first, &refuse(code::BUSY, message), wait).await;
            return;
        }
    };
    let upload = Upload {
        channel: &channel,
        first: &first,
        offer: &offer,
        dest: &dest,
        state: &state,
        stop: claim.stop(),
        claim: std::sync::Mutex::new(Some(claim)),
    };
    let result = match whole {
        Some(data) => upload.run_whole(Bytes::from(data)).await,
        None => upload.run().await,
    };
    upload.release();
    match result {
        Ok(Outcome::Received(name)) => {
            state.count_completed(socket);
            state.note(
                &offer.name,
                true,
                &format!("received as {name}, BLAKE3 verified"),
            );
        }
        Ok(Outcome::Interrupted) => {
            state.note(&offer.name, false, "interrupted; kept for resuming");
        }
        Err(e) => {
            tracing::warn!(name = %offer.name, error = %e, "upload failed");
            state.note(&offer.name, false, &format!("failed: {e}"));
        }
    }
}

/// The offer in the channel's first message and the relative path it may be stored
/// at; `None` once a refusal has been sent.
async fn read_offer(
    channel: &Channel,
    first: &Message,
    wait: Duration,
) -> Option<(Offer, PathBuf)> {
    if first.event() != OFFER {
        fail(
            channel,
            wait,
            code::PROTOCOL,
            &format!(
                "expected `offer` (upload protocol 2), got `{}`",
                first.event()
            ),
        )
        .await;
        return None;
    }
    let offer: Offer = match first.data() {
        Ok(o) => o,
        Err(e) => {
            let _ = reply(first, &refuse(code::PROTOCOL, e.to_string()), wait).await;
            return None;
        }
    };
    let rel = match sanitize(&offer.name) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(name = %offer.name.escape_debug(), error = %e, "refused a path");
            let message = format!("{}: {e}", offer.name.escape_debug());
            let _ = reply(first, &refuse(code::BAD_PATH, message), wait).await;
            return None;
        }
    };
    if let Some(problem) = malformed(&offer) {
        let _ = reply(first, &refuse(code::PROTOCOL, problem.into()), wait).await;
        return None;
    }
    Some((offer, rel))
}

/// What is wrong with an offer's fields, if anything.
fn malformed(offer: &Offer) -> Option<&'static str> {
    if offer.id.len() != ID_LEN {
        return Some("the upload id must be 16 bytes");
    }
    match (&offer.data, &offer.hash) {
        (Some(data), Some(hash)) => {
            if hash.len() != HASH_LEN {
                Some("the hash must be 32 bytes")
            } else if data.len() as u64 != offer.size {
                Some("the data does not have the announced size")
            } else if offer.size > INLINE_MAX {
                Some("a file sent in its offer has at most 1 MiB")
            } else {
                None
            }
        }
        (Some(_), None) => Some("data without its hash"),
        (None, _) => None,
    }
}

/// An accepted upload, its part file claimed.
struct Upload<'a> {
    channel: &'a Channel,
    /// The `offer` message, answered once the part file is ready.
    first: &'a Message,
    offer: &'a Offer,
    dest: &'a Destination,
    state: &'a State,
    /// Notified when another session takes the upload over.
    stop: Arc<Notify>,
    /// The hold on the part file, let go before the last answer: a client that sends
    /// its next offer at once finds this upload's name and reservation free.
    claim: std::sync::Mutex<Option<super::claim::Claim<'a>>>,
}

impl Upload<'_> {
    /// How long an answer may wait for the client to take it.
    fn wait(&self) -> Duration {
        self.state.limits.reply_timeout
    }

    /// Lets go of the part file's claim (once; later calls do nothing).
    fn release(&self) {
        if let Ok(mut c) = self.claim.lock() {
            c.take();
        }
    }

    /// A file sent whole in its offer: checked, stored and answered.
    async fn run_whole(&self, data: Bytes) -> Result<Outcome, UploadError> {
        let hash_matches = self
            .offer
            .hash
            .as_deref()
            .is_some_and(|h| blake3::hash(&data).as_bytes() == h);
        let stored = if hash_matches {
            part::store_whole(
                self.state.out.clone(),
                self.dest,
                data,
                self.state.admission(),
            )
            .await
            .map_err(UploadError::Part)
        } else {
            Err(UploadError::Mismatch {
                name: self.offer.name.clone(),
                received: data.len() as u64,
                size: self.offer.size,
                hash_matches,
            })
        };
        let answer = match &stored {
            Ok(path) => OfferAnswer {
                ok: true,
                offset: self.offer.size,
                name: path.to_string_lossy().into_owned(),
                ..OfferAnswer::default()
            },
            Err(e) => refuse(e.code(), e.to_string()),
        };
        self.state.progress.add_total(self.offer.size);
        self.state.progress.advance_total(self.offer.size);
        self.release();
        reply(self.first, &answer, self.wait()).await?;
        let name = stored?.to_string_lossy().into_owned();
        tracing::info!(%name, bytes = self.offer.size, "received");
        Ok(Outcome::Received(name))
    }

    /// Receives into the part file until `finish`, then checks and places the file.
    async fn run(&self) -> Result<Outcome, UploadError> {
        let started = Instant::now();
        let part = self.open().await?;
        let offset = part.len;
        let writer = Writer::spawn(part);
        let Some((finish, writer)) = self.receive_data(writer, offset).await? else {
            return Ok(Outcome::Interrupted);
        };
        let part = writer
            .finish()
            .await
            .map_err(|source| self.write_error(source))?;
        let received = part.len;
        let name = match self.complete(part, &finish).await {
            Ok(name) => name,
            Err(e) => {
                self.release();
                let _ = reply(&finish, &finish_answer(Err(&e)), self.wait()).await;
                return Err(e);
            }
        };
        tracing::info!(%name, bytes = received, secs = started.elapsed().as_secs_f64(), "received");
        self.release();
        reply(&finish, &finish_answer(Ok(&name)), self.wait()).await?;
        Ok(Outcome::Received(name))
    }

    /// Opens (or resumes) the part file and answers the offer with where to start and
    /// the hash of what is there.
    async fn open(&self) -> Result<Part, UploadError> {
        let id_hex = hex::encode(&self.offer.id);
        let out = self.state.out.clone();
        let admission = self.state.admission();
        let opened = part::open(out, self.dest, &id_hex, self.offer.size, admission);
        let part = match opened.await {
            Ok(p) => p,
            Err(e) => {
                let e = UploadError::Part(e);
                tracing::warn!(name = %self.offer.name, error = %e, "refused an upload");
                self.release();
                let _ = reply(self.first, &refuse(e.code(), e.to_string()), self.wait()).await;
                return Err(e);
            }
        };
        let offset = part.len;
        if offset > 0 {
            tracing::info!(name = %self.offer.name, offset, "resuming");
        }
        let progress = &self.state.progress;
        progress.add_total(self.offer.size);
        progress.start_file(&self.offer.name, self.offer.size, offset);
        let prefix = if offset > 0 {
            part.hasher.finalize().as_bytes().to_vec()
        } else {
            Vec::new()
        };
        reply(
            self.first,
            &OfferAnswer {
                ok: true,
                offset,
                prefix,
                ..OfferAnswer::default()
            },
            self.wait(),
        )
        .await?;
        Ok(part)
    }

    /// Hands `data` messages to the writer until `finish` arrives (returned with the
    /// writer); `None` when the client went away or another session took over.
    async fn receive_data(
        &self,
        writer: Writer,
        mut len: u64,
    ) -> Result<Option<(Message, Writer)>, UploadError> {
        loop {
            let next = tokio::select! {
                m = self.channel.recv() => m,
                _ = self.stop.notified() => {
                    let _ = writer.finish().await;
                    fail(self.channel, self.wait(), code::BUSY, "taken over by another upload of the same file").await;
                    return Ok(None);
                }
            };
            let Some(m) = next else {
                let _ = writer.finish().await;
                return Ok(None);
            };
            match m.event() {
                DATA => {
                    let data = match m.data_bytes() {
                        Ok(d) => d,
                        Err(e) => return Err(self.abandon(writer, UploadError::BadData(e)).await),
                    };
                    let n = data.len() as u64;
                    if len + n > self.offer.size {
                        let e = UploadError::TooLong {
                            announced: self.offer.size,
                        };
                        return Err(self.abandon(writer, e).await);
                    }
                    if !writer.write(data).await {
                        let e = match writer.finish().await {
                            Err(source) => self.write_error(source),
                            Ok(_) => self.write_error(std::io::Error::other("the writer stopped")),
                        };
                        fail(self.channel, self.wait(), e.code(), &e.to_string()).await;
                        return Err(e);
                    }
                    len += n;
                    self.state.progress.advance(&self.offer.name, n);
                }
                RESTART => {
                    if let Err(source) = writer.restart().await {
                        let e = self.write_error(source);
                        let _ = reply(&m, &refuse(e.code(), e.to_string()), self.wait()).await;
                        return Err(e);
                    }
                    tracing::info!(name = %self.offer.name, "restarting: the client's file changed");
                    self.state
                        .progress
                        .start_file(&self.offer.name, self.offer.size, 0);
                    len = 0;
                    let answer = OfferAnswer {
                        ok: true,
                        ..OfferAnswer::default()
                    };
                    reply(&m, &answer, self.wait()).await?;
                }
                FINISH => return Ok(Some((m, writer))),
                other => {
                    tracing::warn!(event = other, "unexpected event during an upload")
                }
            }
        }
    }

    /// Ends a damaged upload: the client is told, the part discarded.
    async fn abandon(&self, writer: Writer, e: UploadError) -> UploadError {
        fail(self.channel, self.wait(), e.code(), &e.to_string()).await;
        if let Ok(part) = writer.finish().await {
            part::discard(&part.dir, self.dest);
        }
        e
    }

    fn write_error(&self, source: std::io::Error) -> UploadError {
        UploadError::Write {
            path: self.dest.rel.clone(),
            source,
        }
    }

    /// Makes the part durable, checks size and hash, and moves it to a free name;
    /// returns that name relative to the output directory.
    async fn complete(&self, part: Part, finish: &Message) -> Result<String, UploadError> {
        let claimed: Finish = finish.data().unwrap_or_default();
        let Part {
            file,
            len: received,
            hasher,
            dir,
        } = part;
        let hash_matches = hasher.finalize().as_bytes().as_slice() == claimed.hash.as_slice();
        let size_matches = received == self.offer.size;
        let dest = self.dest.clone();
        let placed = tokio::task::spawn_blocking(move || {
            if !(hash_matches && size_matches) {
                drop(file);
                part::discard(&dir, &dest);
                return Ok(None);
            }
            file.sync_all().map_err(|e| (true, e))?;
            drop(file);
            part::place(&dir, &dest).map(Some).map_err(|e| (false, e))
        })
        .await
        .map_err(|e| self.write_error(std::io::Error::other(e.to_string())))?;
        match placed {
            Ok(Some(path)) => Ok(path.to_string_lossy().into_owned()),
            Ok(None) => Err(UploadError::Mismatch {
                name: self.offer.name.clone(),
                received,
                size: self.offer.size,
                hash_matches,
            }),
            Err((true, source)) => Err(self.write_error(source)),
            Err((false, source)) => Err(UploadError::Place {
                path: self.dest.rel.clone(),
                source,
            }),
        }
    }
}

/// Answers `m`, giving up after `wait` ([`Limits::reply_timeout`]).
async fn reply<T: Serialize>(m: &Message, answer: &T, wait: Duration) -> Result<(), UploadError> {
    match tokio::time::timeout(wait, m.reply(answer)).await {
        Ok(r) => r.map_err(UploadError::Reply),
        Err(_) => Err(UploadError::ReplyTimeout(wait)),
    }
}

fn refuse(code: &str, message: String) -> OfferAnswer {
    OfferAnswer {
        ok: false,
        code: code.into(),
        message,
        ..OfferAnswer::default()
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

/// Tells the client why the upload stopped and closes the channel; neither waits for
/// longer than `wait` ([`Limits::reply_timeout`]).
async fn fail(channel: &Channel, wait: Duration, code: &str, message: &str) {
    let event = ErrorEvent {
        code: code.into(),
        message: message.into(),
    };
    let _ = tokio::time::timeout(wait, channel.send(ERROR, &event)).await;
    let _ = tokio::time::timeout(wait, channel.close()).await;
}
