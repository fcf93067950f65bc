//! The run: files handed out to tasks, at most `parallel` in flight and
//! [`MAX_STREAMED`] of them streamed; when the session is lost, the files in flight
//! go back to the queue, the client reconnects with backoff for up to `retry_for`,
//! and each file resumes from what the server holds.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use udpack_io::{Client, ClientOptions, Reconnect, Socket, TransportConfig};

use super::collect::{self, Item};
use super::upload::{self, Attempt, Failure};
use super::{SendError, SendOptions, Summary, MAX_STREAMED};
use crate::progress::Progress;
use crate::protocol::INLINE_MAX;

/// A session that hears nothing for this long is given up and made again: an outage
/// or a restarted server is noticed in seconds, and the upload resumes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(8);
const KEEPALIVE: Duration = Duration::from_secs(2);
/// Backoff between connection attempts: doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// How one session's share of the run ended.
enum Round {
    /// Every file is done.
    Done,
    /// The session was lost; the files not done are queued again.
    Lost(String),
    Failed(SendError),
}

/// Uploads everything; the first failure of a file ends the run.
pub async fn send(opts: SendOptions) -> Result<Summary, SendError> {
    let items = collect::collect(&opts.paths)?;
    let total: u64 = items.iter().map(|i| i.size).sum();
    let transport = TransportConfig {
        idle_timeout: IDLE_TIMEOUT,
        keepalive: Some(KEEPALIVE),
        max_send_rate: opts.rate,
        ..TransportConfig::default()
    };
    let client = Client::bind(
        ClientOptions::new(opts.pubkey)
            .token(opts.token.clone())
            .handshake_timeout(opts.timeout)
            .transport(transport)
            .reconnect(Reconnect::off()),
    )
    .await?;
    let started = Instant::now();
    let mut socket = client.connect(opts.server.clone()).await?;
    tracing::info!(socket = %socket.id_str(), server = %opts.server, "connected");
    let progress = Arc::new(Progress::with_display("send", total, opts.display));
    let ticker = {
        let progress = progress.clone();
        let mut speed = client.endpoint().speed();
        tokio::spawn(async move {
            let mut refresh = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    changed = speed.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let s = *speed.borrow();
                        progress.tick(s);
                    }
                    _ = refresh.tick() => progress.refresh(),
                }
            }
        })
    };
    let mut queue: VecDeque<Item> = items.into();
    let mut summary = Summary::default();
    let result = loop {
        match round(&opts, &socket, &mut queue, &progress, &mut summary).await {
            Round::Done => break Ok(()),
            Round::Failed(e) => break Err(e),
            Round::Lost(why) => {
                if opts.retry_for.is_zero() {
                    break Err(SendError::SessionLost(why));
                }
                tracing::warn!(reason = %why, "connection lost; reconnecting");
                let lost_at = Instant::now();
                match reconnect(&client, &opts, &progress).await {
                    Ok(s) => {
                        socket = s;
                        summary.reconnects += 1;
                        // One line per reconnect.
                        progress.line(&format!(
                            "connection lost ({why}); reconnected after {:.1} s, resuming {} file(s)",
                            lost_at.elapsed().as_secs_f64(),
                            queue.len()
                        ));
                    }
                    Err(e) => break Err(e),
                }
            }
        }
    };
    ticker.abort();
    progress.clear();
    summary.elapsed = started.elapsed();
    // A graceful close: the server sees the session end once everything is through.
    socket.close(0, "done");
    let _ = tokio::time::timeout(Duration::from_secs(3), socket.closed()).await;
    client.close();
    result.map(|()| summary)
}

/// Sends queued files on `socket` until the queue is empty, a file fails, or the
/// session is lost.
async fn round(
    opts: &SendOptions,
    socket: &Socket,
    queue: &mut VecDeque<Item>,
    progress: &Arc<Progress>,
    summary: &mut Summary,
) -> Round {
    let parallel = opts.parallel.max(1);
    let streamed = Arc::new(Semaphore::new(MAX_STREAMED.min(parallel)));
    let mut tasks: JoinSet<(Item, Attempt)> = JoinSet::new();
    let mut lost: Option<String> = None;
    loop {
        while lost.is_none() && tasks.len() < parallel {
            let Some(item) = queue.pop_front() else { break };
            let socket = socket.clone();
            let progress = progress.clone();
            let token = opts.token.clone();
            let streamed = streamed.clone();
            tasks.spawn(async move {
                // Large files wait for a streaming slot; small ones go at once.
                let _slot = if item.size > INLINE_MAX {
                    streamed.acquire_owned().await.ok()
                } else {
                    None
                };
                let r = upload::send_one(&socket, &token, &item, &progress).await;
                (item, r)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            return match lost {
                Some(why) => Round::Lost(why),
                None => Round::Done,
            };
        };
        let (item, attempt) = match joined {
            Ok(r) => r,
            Err(e) => {
                return Round::Failed(SendError::Read(std::io::Error::other(e.to_string())));
            }
        };
        summary.sent += attempt.sent;
        match attempt.result {
            Ok(sent) => {
                summary.files += 1;
                summary.bytes += item.size;
                summary.resumed += sent.resumed;
                progress.finish_file(
                    &item.name,
                    true,
                    Some(&format!(
                        "sent as {}, BLAKE3 verified by the server",
                        sent.name
                    )),
                );
                summary.names.push(sent.name);
            }
            Err(Failure::SessionLost(e)) => {
                tracing::info!(name = %item.name, error = %e, "session lost during the upload");
                progress.finish_file(&item.name, false, None);
                if lost.is_none() {
                    let why = socket
                        .session()
                        .close_reason()
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| e.to_string());
                    lost = Some(why);
                }
                queue.push_front(item);
            }
            Err(Failure::Fatal(e)) => {
                progress.finish_file(&item.name, false, Some(&format!("failed: {e}")));
                tasks.abort_all();
                return Round::Failed(e);
            }
        }
    }
}

/// Connects again, with backoff, for up to `retry_for`; a refused token or a wrong key
/// ends it at once.
async fn reconnect(
    client: &Client,
    opts: &SendOptions,
    progress: &Progress,
) -> Result<Socket, SendError> {
    let deadline = Instant::now() + opts.retry_for;
    let mut wait = BACKOFF_FIRST;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match client.connect(opts.server.clone()).await {
            Ok(s) => {
                tracing::info!(socket = %s.id_str(), attempt, "reconnected");
                return Ok(s);
            }
            Err(e) => {
                let e = SendError::from(e);
                if !e.is_transient() {
                    return Err(e);
                }
                let now = Instant::now();
                if now + wait >= deadline {
                    return Err(SendError::GaveUp {
                        after: opts.retry_for,
                        last: Box::new(e),
                    });
                }
                tracing::info!(attempt, error = %e, "reconnecting failed; trying again");
                // A long outage shows now and then, not at every attempt.
                if attempt >= 4 && attempt.is_power_of_two() {
                    progress.line(&format!("still reconnecting (attempt {attempt}): {e}"));
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(BACKOFF_MAX);
            }
        }
    }
}
