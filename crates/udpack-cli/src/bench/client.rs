//! `udpack bench --connect`: asks the server for a test, runs the client's streams,
//! and turns the server's reports and its own counters into intervals and a summary.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use udpack::{ClientConfig, Endpoint, Session};

use super::flows::{self, Counter, FlowError, Messages, Pacing};
use super::report::{header, BenchReport};
use super::spec::{Mode, Spec};
use super::tally::{Mark, Tally};
use super::wire::{self, kind, Answer, Figures, Report, WireError};
use super::{BenchError, ConnectOptions};
use crate::error::ConnectFailure;

/// How long the client waits for its session to close after the test.
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// After a stream of the client failed, how long it waits for the server's last report,
/// which may say why.
const LAST_WORD: Duration = Duration::from_secs(2);

/// Runs the test; prints the header and each interval as it comes unless `opts.json`.
pub async fn run(opts: ConnectOptions) -> Result<BenchReport, BenchError> {
    let remote = tokio::net::lookup_host(opts.server.as_str())
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| unresolved(&opts.server))?;
    let local = if remote.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let config = ClientConfig::new(opts.pubkey)
        .token(opts.token.clone())
        .handshake_timeout(opts.timeout);
    let endpoint = Endpoint::client(config)
        .bind(local)
        .await
        .map_err(BenchError::Bind)?;
    let session = endpoint
        .connect(remote)
        .await
        .map_err(ConnectFailure::from)?;
    tracing::info!(session = %session.id_str(), %remote, "connected");
    let result = Run {
        session: &session,
        opts: &opts,
    }
    .test()
    .await;
    session.goaway(0, "bench done");
    let _ = tokio::time::timeout(CLOSE_WAIT, session.closed()).await;
    endpoint.close(0, "bench done");
    result
}

/// The failure the lookup gets, so that it exits as `send` does (5).
fn unresolved(server: &str) -> BenchError {
    let e = std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("cannot resolve {server}"),
    );
    BenchError::Connect(ConnectFailure::from(udpack::ConnectError::from(e)))
}

struct Run<'a> {
    session: &'a Session,
    opts: &'a ConnectOptions,
}

/// The client's counters, read at each mark.
struct Counters {
    start: Instant,
    downloaded: Arc<Counter>,
    messages: Arc<Mutex<Messages>>,
}

impl Run<'_> {
    async fn test(&self) -> Result<BenchReport, BenchError> {
        let spec = self.opts.spec;
        let control = self
            .session
            .open_stream()
            .await
            .map_err(BenchError::Session)?;
        let (mut tx, mut rx) = control.into_split();
        tx.write_all_bytes(Bytes::from_static(&[kind::CONTROL]))
            .await
            .map_err(BenchError::Session)?;
        wire::write_frame(&mut tx, &spec.request()).await?;
        let answer: Answer = tokio::time::timeout(self.opts.timeout, wire::read_frame(&mut rx))
            .await
            .map_err(|_| BenchError::TimedOut)??;
        if !answer.ok {
            return Err(BenchError::Refused {
                code: answer.code,
                message: answer.message,
            });
        }
        let start = Instant::now();
        let counters = Counters {
            start,
            downloaded: Arc::new(Counter::new(start)),
            messages: Arc::new(Mutex::new(Messages::default())),
        };
        if !self.opts.json {
            println!("{}", header(&self.opts.server, &spec));
        }
        let (reports_tx, mut reports) = mpsc::channel(16);
        // One task reads the control stream: a frame is never cut by a select. In a
        // set, so that it ends with this function however it returns.
        let mut reader = JoinSet::new();
        reader.spawn(async move {
            loop {
                let r = wire::read_frame::<Report>(&mut rx).await;
                let end = !matches!(&r, Ok(rep) if !rep.done);
                if reports_tx.send(r).await.is_err() || end {
                    return;
                }
            }
        });
        let mut streams = self.start_streams(&spec, &counters).await?;
        let mut tally = Tally::new(spec, self.mark(&counters, Report::default()));
        // Past the server's own deadline, which ends the test with a last report.
        let mut deadline = counters.start + spec.duration + spec.tail() + Duration::from_secs(5);
        let mut failed: Option<FlowError> = None;
        let last = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(failed.map_or(BenchError::TimedOut, BenchError::Flow));
                }
                r = reports.recv() => {
                    let report = r.ok_or(WireError::Ended)??;
                    if report.done {
                        break report;
                    }
                    for i in tally.push(self.mark(&counters, report)) {
                        if !self.opts.json {
                            println!("{}", i.line());
                        }
                    }
                }
                Some(done) = streams.join_next(), if !streams.is_empty() => {
                    if let Err(e) = done.map_err(FlowError::from).and_then(|r| r) {
                        failed.get_or_insert(e);
                        deadline = deadline.min(Instant::now() + LAST_WORD);
                    }
                }
            }
        };
        if !last.error.is_empty() {
            return Err(BenchError::ServerFailed(last.error));
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
        // The server is done; the client's own streams finish their last reads.
        while let Some(done) = tokio::time::timeout_at(deadline, streams.join_next())
            .await
            .map_err(|_| BenchError::TimedOut)?
        {
            done.map_err(FlowError::from)??;
        }
        let round_trips = counters
            .messages
            .lock()
            .map(|m| m.total.percentiles())
            .unwrap_or_default();
        let (intervals, summary) = tally.finish(self.mark(&counters, last), round_trips);
        Ok(BenchReport {
            server: self.opts.server.clone(),
            mode: spec.mode,
            duration_s: spec.duration.as_secs_f64(),
            streams: spec.streams,
            intervals,
            summary,
        })
    }

    /// Opens the data streams, each named by its first byte, and starts their tasks.
    async fn start_streams(
        &self,
        spec: &Spec,
        counters: &Counters,
    ) -> Result<JoinSet<Result<(), FlowError>>, BenchError> {
        let mut set = JoinSet::new();
        let until = counters.start + spec.duration;
        let tail = spec.tail();
        let block = flows::block();
        let open = |k: u8| async move {
            let stream = self.session.open_stream().await?;
            let (mut tx, rx) = stream.into_split();
            tx.write_all_bytes(Bytes::copy_from_slice(&[k])).await?;
            Ok::<_, udpack::StreamError>((tx, rx))
        };
        for _ in 0..spec.streams {
            if spec.mode.uploads() {
                let (tx, _rx) = open(kind::UPLOAD).await.map_err(BenchError::Session)?;
                set.spawn(flows::send_until(tx, block.clone(), until, tail));
            }
            if spec.mode.downloads() {
                let (_tx, rx) = open(kind::DOWNLOAD).await.map_err(BenchError::Session)?;
                let counter = counters.downloaded.clone();
                set.spawn(async move { flows::count(rx, &counter).await });
            }
        }
        if spec.mode == Mode::Messages {
            // `rate` messages a second over all streams, the streams taking turns.
            let gap = Duration::from_secs(1) / spec.rate;
            for i in 0..spec.streams {
                let (tx, rx) = open(kind::ECHO).await.map_err(BenchError::Session)?;
                let pacing = Pacing {
                    first: counters.start + gap * i,
                    period: gap * spec.streams,
                    until,
                    size: spec.size as usize,
                };
                set.spawn(flows::messages(
                    tx,
                    rx,
                    pacing,
                    tail,
                    counters.messages.clone(),
                ));
            }
        }
        Ok(set)
    }

    /// What both sides had counted now, with the server's latest report.
    fn mark(&self, counters: &Counters, server: Report) -> Mark {
        let (sent, echoed, round_trips) = counters
            .messages
            .lock()
            .map(|mut m| {
                let interval = std::mem::take(&mut m.interval);
                (m.sent, m.echoed, interval.percentiles())
            })
            .unwrap_or_default();
        Mark {
            at: counters.start.elapsed(),
            server,
            downloaded: counters.downloaded.bytes(),
            last_download: counters.downloaded.last(),
            client: Figures::from(&self.session.stats()),
            sent,
            echoed,
            round_trips,
        }
    }
}
