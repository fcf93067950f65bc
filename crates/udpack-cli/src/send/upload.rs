//! One file on its own channel: sent whole in its offer when small, otherwise offered,
//! streamed from where the server has it (after checking the server's prefix), and
//! checked by the server. Failures say whether the session was lost (the file is
//! retried on the next session) or the file itself failed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use udpack_io::{Channel, Socket};

use super::collect::Item;
use super::source::{self, Piece};
use super::SendError;
use crate::progress::Progress;
use crate::protocol::{
    code, upload_id, ErrorEvent, Finish, FinishAnswer, Offer, OfferAnswer, Restart, DATA, ERROR,
    FINISH, INLINE_MAX, OFFER, RESTART,
};

/// Longest wait for the answer to an offer or a restart.
const OFFER_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the answer to `finish`: the server makes the file durable first.
const FINISH_TIMEOUT: Duration = Duration::from_secs(600);
/// Bytes of a channel's stream that are not file data, at most, before the data: the
/// offer and `data` heads. Progress from acknowledged stream bytes leaves them out.
const HEAD_ALLOWANCE: u64 = 512;

/// How one file's upload ended, short of success.
#[derive(Debug)]
pub(super) enum Failure {
    /// The session ended under it: send it again on the next one.
    SessionLost(SendError),
    /// The file failed for good.
    Fatal(SendError),
}

/// A file stored on the server.
pub(super) struct Sent {
    /// Its final name there.
    pub name: String,
    /// Bytes of the file the server already had (resumed from there).
    pub resumed: u64,
}

/// One attempt at a file: how it ended, and the file's bytes it put on the network
/// (counted for a failed attempt too).
pub(super) struct Attempt {
    pub result: Result<Sent, Failure>,
    pub sent: u64,
}

/// Sends `item` on a new channel of `socket`.
pub(super) async fn send_one(
    socket: &Socket,
    token: &str,
    item: &Item,
    progress: &Progress,
) -> Attempt {
    let wire = AtomicU64::new(0);
    let result = attempt(socket, token, item, progress, &wire).await;
    Attempt {
        result,
        sent: wire.load(Ordering::Relaxed),
    }
}

async fn attempt(
    socket: &Socket,
    token: &str,
    item: &Item,
    progress: &Progress,
    wire: &AtomicU64,
) -> Result<Sent, Failure> {
    let lost_or = |e: SendError| {
        if socket.session().close_reason().is_some() {
            Failure::SessionLost(e)
        } else {
            Failure::Fatal(e)
        }
    };
    let channel = socket
        .open_channel()
        .await
        .map_err(|e| lost_or(SendError::from(e)))?;
    let server_error: Arc<Mutex<Option<ErrorEvent>>> = Arc::new(Mutex::new(None));
    {
        let slot = server_error.clone();
        channel.on_data(ERROR, move |e: ErrorEvent| {
            if let Ok(mut s) = slot.lock() {
                *s = Some(e);
            }
        });
    }
    let file = FileUpload {
        channel: &channel,
        item,
        id: upload_id(token, &item.name, item.size, item.mtime_ns),
        progress,
        server_error: &server_error,
        wire,
    };
    let result = if item.size <= INLINE_MAX {
        file.send_whole().await
    } else {
        file.stream().await
    };
    channel.close().await;
    result.map_err(|e| match e {
        // A refusal or a failed check is the server's word, whatever the session does.
        e @ (SendError::Refused { .. }
        | SendError::IntegrityRejected(_)
        | SendError::IntegrityFailed { .. }
        | SendError::NotStored { .. }
        | SendError::ServerFailed { .. }
        | SendError::Shrank(_)
        | SendError::Access { .. }) => Failure::Fatal(e),
        e => lost_or(e),
    })
}

struct FileUpload<'a> {
    channel: &'a Channel,
    item: &'a Item,
    id: Vec<u8>,
    progress: &'a Progress,
    server_error: &'a Mutex<Option<ErrorEvent>>,
    /// The file's bytes put on the network by this attempt.
    wire: &'a AtomicU64,
}

impl FileUpload<'_> {
    /// A small file: content and hash in the offer, stored by the one answer.
    async fn send_whole(&self) -> Result<Sent, SendError> {
        let (data, hash) = source::read_whole(&self.item.path, self.item.size).await?;
        #[cfg(feature = "test-faults")]
        let data = {
            let mut data = data;
            super::faults::Faults::from_env().tamper(&mut data, 0);
            data
        };
        let offer = Offer {
            name: self.item.name.clone(),
            size: self.item.size,
            id: self.id.clone(),
            data: Some(data),
            hash: Some(hash.to_vec()),
        };
        self.wire.fetch_add(self.item.size, Ordering::Relaxed);
        let answer = self.ask(OFFER, &offer).await?;
        self.progress.advance_total(self.item.size);
        Ok(Sent {
            name: answer.name,
            resumed: 0,
        })
    }

    /// A large file: offered, then streamed from the server's offset, then finished.
    async fn stream(&self) -> Result<Sent, SendError> {
        let offer = Offer {
            name: self.item.name.clone(),
            size: self.item.size,
            id: self.id.clone(),
            data: None,
            hash: None,
        };
        let answer = self.ask(OFFER, &offer).await?;
        let mut offset = answer.offset.min(self.item.size);
        if offset > 0 {
            tracing::info!(name = %self.item.name, offset, "resuming");
        }
        let sent = Arc::new(AtomicU64::new(0));
        self.show(offset, &sent);
        let mut pieces = source::stream(&self.item.path, self.item.size, offset, answer.prefix);
        #[cfg(feature = "test-faults")]
        let faults = super::faults::Faults::from_env();
        let hash = loop {
            let piece = pieces
                .recv()
                .await
                .ok_or_else(|| SendError::Read(std::io::Error::other("the reader stopped")))??;
            match piece {
                Piece::Restart => {
                    tracing::info!(name = %self.item.name, "the file changed since the part was written: restarting");
                    self.ask(RESTART, &Restart {}).await?;
                    offset = 0;
                    self.show(offset, &sent);
                }
                Piece::Data(chunk) => {
                    let n = chunk.len() as u64;
                    #[cfg(feature = "test-faults")]
                    let chunk = faults.tampered(chunk, sent.load(Ordering::Relaxed));
                    // Waits while the send buffer is full: back-pressure on the reader.
                    if let Err(e) = self.channel.send_bytes(DATA, chunk).await {
                        return Err(self.channel_error(e));
                    }
                    if let Some(e) = self.server_failure() {
                        return Err(e);
                    }
                    sent.fetch_add(n, Ordering::Relaxed);
                    self.wire.fetch_add(n, Ordering::Relaxed);
                }
                Piece::End(hash) => break hash,
            }
        };
        let finish: FinishAnswer = self
            .channel
            .send_with_ack_timeout(
                FINISH,
                &Finish {
                    hash: hash.to_vec(),
                },
                FINISH_TIMEOUT,
            )
            .await
            .map_err(|e| self.channel_error(e))?;
        if finish.ok {
            return Ok(Sent {
                name: finish.name,
                resumed: offset,
            });
        }
        if finish.code == code::INTEGRITY {
            return Err(SendError::IntegrityRejected(finish.message));
        }
        Err(SendError::NotStored {
            name: self.item.name.clone(),
            code: finish.code,
            message: finish.message,
        })
    }

    /// Shows the file from `offset`, its position following what the server
    /// acknowledged of the bytes `sent` since.
    fn show(&self, offset: u64, sent: &Arc<AtomicU64>) {
        sent.store(0, Ordering::Relaxed);
        let channel = self.channel.clone();
        let sent = sent.clone();
        let base = channel.acked().unwrap_or(0) + HEAD_ALLOWANCE;
        let probe = move || {
            let s = sent.load(Ordering::Relaxed);
            let through = match channel.acked() {
                Some(acked) => acked.saturating_sub(base).min(s),
                None => s,
            };
            offset + through
        };
        self.progress.start_file_probed(
            &self.item.name,
            self.item.size,
            offset,
            Some(Box::new(probe)),
        );
    }

    /// Sends an offer or a restart and waits for its answer; a refusal is an error.
    async fn ask<T: serde::Serialize>(
        &self,
        event: &str,
        msg: &T,
    ) -> Result<OfferAnswer, SendError> {
        let answer: OfferAnswer = self
            .channel
            .send_with_ack_timeout(event, msg, OFFER_TIMEOUT)
            .await
            .map_err(|e| self.channel_error(e))?;
        if answer.ok {
            return Ok(answer);
        }
        if answer.code == code::INTEGRITY {
            return Err(SendError::IntegrityRejected(answer.message));
        }
        Err(self.refusal(answer.code, answer.message))
    }

    fn refusal(&self, code: String, message: String) -> SendError {
        SendError::Refused {
            name: self.item.name.clone(),
            code,
            message,
        }
    }

    /// What a failed message means: the server's own `error`, if it sent one.
    fn channel_error(&self, source: udpack_io::Error) -> SendError {
        self.server_failure().unwrap_or_else(|| SendError::Channel {
            name: self.item.name.clone(),
            source,
        })
    }

    /// The failure the server reported with an `error` event, if it did.
    fn server_failure(&self) -> Option<SendError> {
        let e = self.server_error.lock().ok()?.take()?;
        let name = self.item.name.clone();
        Some(if e.code == code::INTEGRITY {
            SendError::IntegrityFailed {
                name,
                message: e.message,
            }
        } else {
            SendError::ServerFailed {
                name,
                code: e.code,
                message: e.message,
            }
        })
    }
}
