//! `udpack bench --listen`: accepts bench clients and runs one test at a time. A
//! client that arrives during another's test is told the server is busy; a client
//! that vanishes ends its test at the test's deadline, and the next one is served.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use udpack::{CloseReason, Endpoint, RecvStream, SendStream, ServerConfig, Session, Stream};

use super::flows::{self, Counter, FlowError};
use super::spec::{Mode, Spec};
use super::wire::{self, code, kind, Answer, Figures, Report, Request, WireError};
use super::{BenchError, ListenOptions};

/// How long a client has, once connected, to send its request.
const REQUEST_WAIT: Duration = Duration::from_secs(10);
/// How long a finished test waits for its client to close the session.
const LINGER: Duration = Duration::from_secs(3);
/// The close code of a session the server ends.
const CLOSE_CODE: u64 = 0;

/// A bound bench server.
pub struct Listener {
    endpoint: Endpoint,
}

/// Why one client's test ended early (the server goes on).
#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error("no request: {0}")]
    NoRequest(#[source] WireError),
    #[error("no request within {0:?}")]
    RequestTimeout(Duration),
    #[error("the session ended before a request")]
    NoControl,
    #[error(transparent)]
    Control(#[from] WireError),
    #[error("the session ended: {0}")]
    Vanished(CloseReason),
    #[error("the test ran past its deadline: the client is gone or the link too slow")]
    Deadline,
    #[error(transparent)]
    Flow(#[from] FlowError),
}

impl Listener {
    pub async fn bind(opts: ListenOptions) -> Result<Listener, BenchError> {
        if opts.tokens.is_empty() {
            return Err(BenchError::NoToken);
        }
        let tokens: HashSet<Vec<u8>> = opts.tokens.iter().map(|t| t.as_bytes().to_vec()).collect();
        let endpoint =
            Endpoint::server(ServerConfig::new(opts.key).auth(move |t| tokens.contains(t)))
                .bind(opts.listen)
                .await
                .map_err(|source| BenchError::Listen {
                    addr: opts.listen,
                    source,
                })?;
        Ok(Listener { endpoint })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    /// Serves clients until `stop` resolves; tests in progress are cut off then.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), BenchError> {
        println!("listening on {}", self.local_addr());
        tokio::pin!(stop);
        let one_test = Arc::new(Semaphore::new(1));
        let mut sessions = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                session = self.endpoint.accept() => {
                    let Some(session) = session else { break };
                    sessions.spawn(serve(session, one_test.clone()));
                }
            }
        }
        sessions.abort_all();
        self.endpoint.close(CLOSE_CODE, "server stopping");
        Ok(())
    }
}

/// One client: its request answered, its test run if the server is free, one line on
/// how it went.
async fn serve(session: Session, one_test: Arc<Semaphore>) {
    let who = session
        .remote_addr()
        .map_or_else(|| session.id_str(), |a| a.to_string());
    match test(&session, &one_test, &who).await {
        Ok(Some(line)) => println!("client {who}: {line}"),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(client = %who, error = %e, "bench ended early");
            println!("client {who}: ended early: {e}");
        }
    }
    session.goaway(CLOSE_CODE, "bench over");
    let _ = tokio::time::timeout(LINGER, session.closed()).await;
    session.close(CLOSE_CODE, "bench over");
}

/// Runs the client's test; `None` when it was refused.
async fn test(
    session: &Session,
    one_test: &Arc<Semaphore>,
    who: &str,
) -> Result<Option<String>, TestError> {
    let control = tokio::time::timeout(REQUEST_WAIT, session.accept_stream())
        .await
        .map_err(|_| TestError::RequestTimeout(REQUEST_WAIT))?
        .ok_or(TestError::NoControl)?;
    let (mut tx, mut rx) = control.into_split();
    let request = tokio::time::timeout(REQUEST_WAIT, read_request(&mut rx))
        .await
        .map_err(|_| TestError::RequestTimeout(REQUEST_WAIT))?
        .map_err(TestError::NoRequest)?;
    let spec = match Spec::from_request(&request) {
        Ok(s) => s,
        Err(e) => {
            refuse(&mut tx, code::BAD_REQUEST, e.to_string()).await?;
            return Ok(None);
        }
    };
    // Held until the test is over: one test at a time, so that tests do not share the
    // link they measure.
    let Ok(_permit) = one_test.clone().try_acquire_owned() else {
        refuse(
            &mut tx,
            code::BUSY,
            "another client's test is running".into(),
        )
        .await?;
        println!("client {who}: refused, another test is running");
        return Ok(None);
    };
    wire::write_frame(
        &mut tx,
        &Answer {
            ok: true,
            ..Answer::default()
        },
    )
    .await?;
    println!(
        "client {who}: {} for {:.1} s on {} stream(s)",
        spec.mode.name(),
        spec.duration.as_secs_f64(),
        spec.streams
    );
    let run = Run {
        session,
        spec,
        start: Instant::now(),
        block: flows::block(),
    };
    let received = Arc::new(Counter::new(run.start));
    let outcome = run.data(&mut tx, &received).await;
    let mut last = run.report(&received, true);
    if let Err(e) = &outcome {
        last.error = e.to_string();
    }
    // The client learns how it ended, unless it is gone.
    let told = match &outcome {
        Err(TestError::Vanished(_)) => Ok(()),
        _ => wire::write_frame(&mut tx, &last).await,
    };
    let _ = tx.finish();
    outcome?;
    told?;
    let secs = Duration::from_micros(last.last_byte_us).as_secs_f64();
    Ok(Some(if spec.mode.uploads() && secs > 0.0 {
        format!(
            "done, received {} bytes in {secs:.2} s ({:.2} Mbit/s)",
            last.received,
            last.received as f64 * 8.0 / 1e6 / secs
        )
    } else {
        "done".to_string()
    }))
}

async fn read_request(rx: &mut RecvStream) -> Result<Request, WireError> {
    match wire::read_kind(rx).await? {
        Some(kind::CONTROL) => wire::read_frame(rx).await,
        Some(other) => Err(WireError::NotControl(other)),
        None => Err(WireError::Ended),
    }
}

async fn refuse(tx: &mut SendStream, code: &str, message: String) -> Result<(), WireError> {
    let answer = Answer {
        ok: false,
        code: code.into(),
        message,
    };
    wire::write_frame(tx, &answer).await?;
    let _ = tx.finish();
    Ok(())
}

/// The server's side of an accepted test.
struct Run<'a> {
    session: &'a Session,
    spec: Spec,
    /// When the request was accepted.
    start: Instant,
    block: bytes::Bytes,
}

impl Run<'_> {
    /// Takes the client's data streams and runs them, with a report a second, until
    /// every stream is done or the deadline passes.
    async fn data(
        &self,
        control: &mut SendStream,
        received: &Arc<Counter>,
    ) -> Result<(), TestError> {
        let deadline = self.start + self.spec.duration + self.spec.tail() + Duration::from_secs(1);
        let expected = self.spec.data_streams();
        let mut accepted = 0u32;
        let mut streams = JoinSet::new();
        let mut ticker =
            tokio::time::interval_at(self.start + Duration::from_secs(1), Duration::from_secs(1));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break Err(TestError::Deadline),
                reason = self.session.closed() => break Err(TestError::Vanished(reason)),
                _ = ticker.tick() => {
                    wire::write_frame(control, &self.report(received, false)).await?;
                }
                stream = self.session.accept_stream(), if accepted < expected => {
                    let Some(stream) = stream else { continue };
                    accepted += 1;
                    streams.spawn(self.serve_stream(stream, received.clone()));
                }
                Some(done) = streams.join_next(), if !streams.is_empty() => {
                    if let Err(e) = done.map_err(FlowError::from).and_then(|r| r) {
                        break Err(e.into());
                    }
                    if accepted == expected && streams.is_empty() {
                        break Ok(());
                    }
                }
            }
        };
        streams.abort_all();
        result
    }

    /// Runs one data stream, by the kind its first byte names.
    fn serve_stream(
        &self,
        stream: Stream,
        received: Arc<Counter>,
    ) -> impl Future<Output = Result<(), FlowError>> + Send + 'static {
        let mode = self.spec.mode;
        let until = self.start + self.spec.duration;
        let tail = self.spec.tail();
        let block = self.block.clone();
        async move {
            let (tx, mut rx) = stream.into_split();
            let k = wire::read_kind(&mut rx)
                .await
                .map_err(|_| FlowError::NoKind)?
                .ok_or(FlowError::NoKind)?;
            match (k, mode) {
                (kind::UPLOAD, Mode::Upload | Mode::Bidir) => {
                    drop(tx);
                    flows::count(rx, &received).await
                }
                (kind::DOWNLOAD, Mode::Download | Mode::Bidir) => {
                    drop(rx);
                    flows::send_until(tx, block, until, tail).await
                }
                (kind::ECHO, Mode::Messages) => flows::echo(rx, tx).await,
                (kind::UPLOAD, _) => Err(FlowError::UnexpectedKind("upload")),
                (kind::DOWNLOAD, _) => Err(FlowError::UnexpectedKind("download")),
                (kind::ECHO, _) => Err(FlowError::UnexpectedKind("echo")),
                (other, _) => Err(FlowError::UnknownKind(other)),
            }
        }
    }

    fn report(&self, received: &Counter, done: bool) -> Report {
        Report {
            elapsed_us: wire::micros(self.start.elapsed()),
            received: received.bytes(),
            last_byte_us: wire::micros(received.last()),
            figures: Figures::from(&self.session.stats()),
            done,
            error: String::new(),
        }
    }
}
