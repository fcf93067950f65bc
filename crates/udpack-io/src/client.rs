//! The client: connects, reports events, and reconnects by itself when its socket goes
//! away.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch, Mutex};
use udpack::{
    ClientConfig, CloseReason, ConnectError, Endpoint, PublicKey, Speed, TransportConfig,
};

use crate::channel::{Channel, ChannelLimits};
use crate::error::Error;
use crate::message::DEFAULT_MAX_MESSAGE_SIZE;
use crate::server::socket_loop_events;
use crate::socket::Socket;

const EVENT_QUEUE: usize = 1024;
/// Queue slots speed figures leave free.
const RESERVED_FOR_LIFECYCLE: usize = 64;

/// When and how often a client reconnects after its socket went away.
#[derive(Debug, Clone)]
pub struct Reconnect {
    /// Reconnect at all.
    pub enabled: bool,
    /// Delay before the first attempt...
    pub initial_delay: Duration,
    /// ...multiplied by this after each failed attempt...
    pub factor: f64,
    /// ...up to this.
    pub max_delay: Duration,
    /// Each delay is shortened by a random fraction up to this (0 to 1), so that many
    /// clients of one server do not come back in step.
    pub jitter: f64,
    /// Give up after this many failed attempts in a row; `None` never gives up.
    pub max_attempts: Option<u32>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            enabled: true,
            initial_delay: Duration::from_millis(200),
            factor: 2.0,
            max_delay: Duration::from_secs(10),
            jitter: 0.5,
            max_attempts: Some(20),
        }
    }
}

impl Reconnect {
    /// No reconnection.
    pub fn off() -> Self {
        Reconnect {
            enabled: false,
            ..Reconnect::default()
        }
    }

    /// The delay before attempt `n` (0-based).
    fn delay(&self, n: u32, rng: &mut impl Rng) -> Duration {
        let base = self.initial_delay.as_secs_f64() * self.factor.max(1.0).powi(n.min(64) as i32);
        let capped = base.min(self.max_delay.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0) * rng.gen::<f64>();
        Duration::from_secs_f64(capped * (1.0 - jitter))
    }
}

/// What a client needs: the server's public key and a token, the local address to bind,
/// plus limits and the reconnection policy. The server's address goes to
/// [`Client::connect`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Local address to bind (default 0.0.0.0, port 0: any).
    pub host: String,
    pub port: u16,
    pub server_public_key: PublicKey,
    pub token: Vec<u8>,
    pub transport: TransportConfig,
    pub handshake_timeout: Duration,
    pub reconnect: Reconnect,
    pub max_message_size: usize,
    pub ack_timeout: Duration,
}

impl ClientOptions {
    pub fn new(server_public_key: PublicKey) -> Self {
        ClientOptions {
            host: "0.0.0.0".into(),
            port: 0,
            server_public_key,
            token: Vec::new(),
            transport: TransportConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            reconnect: Reconnect::default(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            ack_timeout: Duration::from_secs(10),
        }
    }

    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn token(mut self, token: impl Into<Vec<u8>>) -> Self {
        self.token = token.into();
        self
    }

    pub fn transport(mut self, t: TransportConfig) -> Self {
        self.transport = t;
        self
    }

    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    pub fn reconnect(mut self, r: Reconnect) -> Self {
        self.reconnect = r;
        self
    }

    pub fn max_message_size(mut self, n: usize) -> Self {
        self.max_message_size = n;
        self
    }

    pub fn ack_timeout(mut self, d: Duration) -> Self {
        self.ack_timeout = d;
        self
    }

    fn client_config(&self) -> ClientConfig {
        ClientConfig::new(self.server_public_key)
            .token(self.token.clone())
            .transport(self.transport.clone())
            .handshake_timeout(self.handshake_timeout)
    }
}

/// What happens on a client, as [`Client::next_event`] reports it.
#[derive(Debug)]
pub enum ClientEvent {
    /// Bound, on this local address (first event).
    Listening(SocketAddr),
    /// Connected; `reconnect` is true when this replaces a socket that went away.
    Connection { socket: Socket, reconnect: bool },
    /// A connection attempt failed, with the typed reason.
    ConnectError(ConnectError),
    /// The socket went away, and why.
    Disconnect(CloseReason),
    /// The next reconnection attempt (1-based) starts after `delay`.
    Reconnecting { attempt: u32, delay: Duration },
    /// Reconnection stopped after too many failed attempts.
    GaveUp,
    /// The server opened a channel (reported with its first message).
    Channel(Channel),
    /// Throughput over the last second.
    Speed(Speed),
}

struct Shared {
    endpoint: Endpoint,
    opts: ClientOptions,
    limits: ChannelLimits,
    current: watch::Sender<Option<Socket>>,
    tx: mpsc::Sender<ClientEvent>,
    closed: watch::Sender<bool>,
}

/// A udpack.io client.
pub struct Client {
    shared: Arc<Shared>,
    events: Mutex<mpsc::Receiver<ClientEvent>>,
    speed_task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("local_addr", &self.shared.endpoint.local_addr())
            .finish()
    }
}

impl Client {
    /// Binds the local socket.
    pub async fn bind(opts: ClientOptions) -> Result<Client, Error> {
        let endpoint = Endpoint::client(opts.client_config())
            .bind((opts.host.as_str(), opts.port))
            .await?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let _ = tx.try_send(ClientEvent::Listening(endpoint.local_addr()));
        let limits = ChannelLimits {
            max_message_size: opts.max_message_size,
            ack_timeout: opts.ack_timeout,
        };
        let speed_task = tokio::spawn(speed_loop(endpoint.clone(), tx.clone()));
        let (current, _) = watch::channel(None);
        let (closed, _) = watch::channel(false);
        Ok(Client {
            shared: Arc::new(Shared {
                endpoint,
                opts,
                limits,
                current,
                tx,
                closed,
            }),
            events: Mutex::new(rx),
            speed_task,
        })
    }

    /// The local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.endpoint.local_addr()
    }

    /// Connects to the server; once connected, the client reconnects by itself
    /// (per [`ClientOptions::reconnect`]) whenever the socket goes away.
    pub async fn connect(&self, server: impl Into<String>) -> Result<Socket, Error> {
        let server = server.into();
        match attempt(&self.shared, &server).await {
            Ok(socket) => {
                self.shared.current.send_replace(Some(socket.clone()));
                emit(
                    &self.shared.tx,
                    ClientEvent::Connection {
                        socket: socket.clone(),
                        reconnect: false,
                    },
                );
                tokio::spawn(supervise(self.shared.clone(), server, socket.clone()));
                Ok(socket)
            }
            Err(e) => {
                emit(&self.shared.tx, ClientEvent::ConnectError(e.clone()));
                Err(Error::Connect(e))
            }
        }
    }

    /// The socket in use, if connected.
    pub fn socket(&self) -> Option<Socket> {
        self.shared.current.borrow().clone()
    }

    /// Waits until connected (or reconnected), up to `timeout`.
    pub async fn connected(&self, timeout: Duration) -> Result<Socket, Error> {
        let mut rx = self.shared.current.subscribe();
        let socket = match tokio::time::timeout(timeout, rx.wait_for(|s| s.is_some())).await {
            Ok(Ok(s)) => s.clone(),
            _ => None,
        };
        socket.ok_or(Error::NotConnected)
    }

    /// Opens a channel on the current socket; [`Error::NotConnected`] without one.
    pub async fn open_channel(&self) -> Result<Channel, Error> {
        let socket = self.socket().ok_or(Error::NotConnected)?;
        socket.open_channel().await
    }

    /// The next event; `None` once the client is closed.
    pub async fn next_event(&self) -> Option<ClientEvent> {
        let mut rx = self.events.lock().await;
        let mut closed = self.shared.closed.subscribe();
        tokio::select! {
            e = rx.recv() => e,
            _ = closed.wait_for(|c| *c) => rx.try_recv().ok(),
        }
    }

    /// Closes the socket (gracefully: what was sent is delivered) and stops
    /// reconnecting.
    pub fn close(&self) {
        self.shared.closed.send_replace(true);
        if let Some(s) = self.shared.current.send_replace(None) {
            s.close(0, "client closing");
        }
    }

    /// The underlying endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.shared.endpoint
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shared.closed.send_replace(true);
        self.speed_task.abort();
    }
}

async fn attempt(shared: &Shared, server: &str) -> Result<Socket, ConnectError> {
    let session = shared.endpoint.connect(server).await?;
    Ok(Socket::new(session, shared.limits.clone()))
}

/// Queues a lifecycle event without waiting: an application that does not read its
/// events must not stop the reconnection.
fn emit(tx: &mpsc::Sender<ClientEvent>, event: ClientEvent) {
    if let Err(mpsc::error::TrySendError::Full(e)) = tx.try_send(event) {
        tracing::warn!(target: "udpack.io", event = ?e, "event queue full: event dropped");
    }
}

/// Reports the socket's channels; when it goes away, reconnects with backoff.
async fn supervise(shared: Arc<Shared>, server: String, mut socket: Socket) {
    let mut closed = shared.closed.subscribe();
    let mut rng = rand::rngs::StdRng::from_entropy();
    loop {
        let reason = tokio::select! {
            r = socket_loop_events(socket.clone(), shared.tx.clone(), ClientEvent::Channel) => r,
            _ = closed.wait_for(|c| *c) => return,
        };
        shared.current.send_replace(None);
        if *shared.closed.borrow() {
            return;
        }
        emit(&shared.tx, ClientEvent::Disconnect(reason));
        if !shared.opts.reconnect.enabled {
            return;
        }
        let mut failures = 0u32;
        socket = loop {
            if shared
                .opts
                .reconnect
                .max_attempts
                .is_some_and(|m| failures >= m)
            {
                tracing::warn!(target: "udpack.io", failures, "giving up reconnecting");
                emit(&shared.tx, ClientEvent::GaveUp);
                return;
            }
            let delay = shared.opts.reconnect.delay(failures, &mut rng);
            emit(
                &shared.tx,
                ClientEvent::Reconnecting {
                    attempt: failures + 1,
                    delay,
                },
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = closed.wait_for(|c| *c) => return,
            }
            tracing::debug!(target: "udpack.io", attempt = failures + 1, %server, "reconnecting");
            let result = tokio::select! {
                r = attempt(&shared, &server) => r,
                _ = closed.wait_for(|c| *c) => return,
            };
            match result {
                Ok(s) => break s,
                Err(e) => {
                    failures += 1;
                    emit(&shared.tx, ClientEvent::ConnectError(e));
                }
            }
        };
        shared.current.send_replace(Some(socket.clone()));
        emit(
            &shared.tx,
            ClientEvent::Connection {
                socket: socket.clone(),
                reconnect: true,
            },
        );
    }
}

async fn speed_loop(endpoint: Endpoint, tx: mpsc::Sender<ClientEvent>) {
    let mut speed = endpoint.speed();
    while speed.changed().await.is_ok() {
        let s = *speed.borrow();
        if tx.is_closed() {
            return;
        }
        // Figures are only of use fresh; they never take the room lifecycle events need.
        if tx.capacity() > RESERVED_FOR_LIFECYCLE {
            let _ = tx.try_send(ClientEvent::Speed(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_below_it() {
        let r = Reconnect::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let d: Vec<Duration> = (0..10).map(|n| r.delay(n, &mut rng)).collect();
        for (n, d) in d.iter().enumerate() {
            let base = (0.2 * 2f64.powi(n as i32)).min(10.0);
            assert!(d.as_secs_f64() <= base + 1e-9, "{n}: {d:?}");
            assert!(d.as_secs_f64() >= base * 0.5 - 1e-9, "{n}: {d:?}");
        }
        let no_jitter = Reconnect {
            jitter: 0.0,
            ..Reconnect::default()
        };
        assert_eq!(no_jitter.delay(20, &mut rng), Duration::from_secs(10));
        assert_eq!(no_jitter.delay(0, &mut rng), Duration::from_millis(200));
    }
}
