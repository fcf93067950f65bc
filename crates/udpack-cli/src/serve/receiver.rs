//! The session loop: server events in, one task per channel out, until stopped.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use udpack_io::{Server, ServerEvent, ServerOptions};

use super::receive::receive;
use super::{ServeError, ServeOptions, State};

/// Abandoned parts are looked for as often as they may age, but at most every second
/// and at least hourly.
const SWEEP_MIN: Duration = Duration::from_secs(1);
const SWEEP_MAX: Duration = Duration::from_secs(3600);

/// A bound receiver.
pub struct Receiver {
    server: Server,
    state: Arc<State>,
    once: bool,
    show_progress: bool,
}

/// What the loop does after an event.
#[derive(PartialEq, Eq)]
enum Next {
    Continue,
    /// With `--once`: a session that completed an upload ended.
    Done,
}

impl Receiver {
    pub async fn bind(opts: ServeOptions) -> Result<Receiver, ServeError> {
        if opts.tokens.is_empty() {
            return Err(ServeError::NoToken);
        }
        std::fs::create_dir_all(&opts.out).map_err(|source| ServeError::CreateOut {
            path: opts.out.clone(),
            source,
        })?;
        let out = super::dir::Dir::open(&opts.out).map_err(|source| ServeError::CreateOut {
            path: opts.out.clone(),
            source,
        })?;
        let state = Arc::new(State::new(out, opts.limits, opts.show_progress));
        let removed = state.sweep();
        if removed > 0 {
            tracing::info!(removed, "removed abandoned parts at start");
        }
        let tokens: HashSet<Vec<u8>> = opts.tokens.iter().map(|t| t.as_bytes().to_vec()).collect();
        let server = Server::bind(
            ServerOptions::new(opts.key)
                .host(opts.listen.ip().to_string())
                .port(opts.listen.port())
                .auth(move |t| tokens.contains(t))
                .max_sessions_per_token(super::limits::or_unlimited(
                    state.limits.max_sessions_per_token,
                )),
        )
        .await
        .map_err(|source| ServeError::Listen {
            addr: opts.listen,
            source,
        })?;
        Ok(Receiver {
            server,
            state,
            once: opts.once,
            show_progress: opts.show_progress,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Serves until `stop` resolves (then lets uploads in flight finish or leaves them
    /// resumable) or, with `--once`, until the first upload session completed.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), ServeError> {
        tokio::pin!(stop);
        let mut uploads = JoinSet::new();
        let every = self.state.limits.part_max_age.clamp(SWEEP_MIN, SWEEP_MAX);
        let mut sweep = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                _ = &mut stop => {
                    tracing::info!("stopping");
                    break;
                }
                Some(_) = uploads.join_next(), if !uploads.is_empty() => continue,
                _ = sweep.tick() => {
                    let state = self.state.clone();
                    drop(tokio::task::spawn_blocking(move || state.sweep()));
                    continue;
                }
                event = self.server.next_event() => event,
            };
            let Some(event) = event else { break };
            if self.handle(event, &mut uploads) == Next::Done {
                // Let the channels of that session wind up first, unless a signal says
                // to stop now.
                tokio::select! {
                    _ = async { while uploads.join_next().await.is_some() {} } => {}
                    _ = &mut stop => {}
                }
                break;
            }
        }
        self.state.progress.clear();
        // Uploads still running keep their `.part` file: the client can resume.
        uploads.abort_all();
        self.server.close(0);
        Ok(())
    }

    fn handle(&self, event: ServerEvent, uploads: &mut JoinSet<()>) -> Next {
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
                uploads.spawn(receive(channel, self.state.clone()));
            }
            ServerEvent::Disconnect(socket, reason) => {
                tracing::info!(socket = %socket.id_str(), %reason, "disconnected");
                if self.once && self.state.completed_by(&socket.id_str()) > 0 {
                    return Next::Done;
                }
            }
            ServerEvent::Speed(speed) => {
                if self.show_progress && !uploads.is_empty() {
                    self.state.progress.tick(speed);
                }
            }
        }
        Next::Continue
    }
}
