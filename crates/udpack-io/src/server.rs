//! The server: accepts sockets and their channels, and reports them as events.

use bytes::Bytes;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};
use udpack::{CloseReason, Endpoint, PrivateKey, ServerConfig, Speed, Stream, TransportConfig};

use crate::channel::{Channel, ChannelLimits};
use crate::error::Error;
use crate::message::DEFAULT_MAX_MESSAGE_SIZE;
use crate::socket::Socket;

/// Events queued for the application before the server stops accepting.
const EVENT_QUEUE: usize = 1024;

type AuthFn = dyn Fn(&[u8]) -> bool + Send + Sync;

/// What a server needs: the address to listen on, its private key and who may connect
/// ([`ServerOptions::auth`]), plus limits.
#[derive(Clone)]
pub struct ServerOptions {
    pub host: String,
    pub port: u16,
    pub private_key: PrivateKey,
    auth: Arc<AuthFn>,
    pub transport: TransportConfig,
    /// Largest message accepted; a bigger one closes its channel.
    pub max_message_size: usize,
    /// How long `send_with_ack` waits for a reply.
    pub ack_timeout: Duration,
    /// Live sessions one token may hold (`ServerConfig::max_sessions_per_token`).
    pub max_sessions_per_token: usize,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("public_key", &self.private_key.public_key())
            .finish_non_exhaustive()
    }
}

impl ServerOptions {
    /// Listens on 0.0.0.0:45456 with this key; refuses every token until
    /// [`ServerOptions::auth`] is set.
    pub fn new(private_key: PrivateKey) -> Self {
        ServerOptions {
            host: "0.0.0.0".into(),
            port: 45456,
            private_key,
            auth: Arc::new(|_| false),
            transport: TransportConfig::default(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            ack_timeout: Duration::from_secs(10),
            max_sessions_per_token: udpack::DEFAULT_MAX_SESSIONS_PER_TOKEN,
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

    /// Decides who may connect: called with each client's token before the server keeps
    /// any state for it; `false` refuses the client.
    pub fn auth<F: Fn(&[u8]) -> bool + Send + Sync + 'static>(mut self, f: F) -> Self {
        self.auth = Arc::new(f);
        self
    }

    pub fn transport(mut self, t: TransportConfig) -> Self {
        self.transport = t;
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

    /// Sets how many live sessions one token may hold (default
    /// [`udpack::DEFAULT_MAX_SESSIONS_PER_TOKEN`]); more clients with it are refused as
    /// busy. `usize::MAX`: no limit.
    pub fn max_sessions_per_token(mut self, n: usize) -> Self {
        self.max_sessions_per_token = n;
        self
    }
}

/// What happens on a server, as [`Server::next_event`] reports it.
#[derive(Debug)]
pub enum ServerEvent {
    /// Bound and accepting, on this address (first event).
    Listening(SocketAddr),
    /// A client connected.
    Connection(Socket),
    /// A client opened a channel (reported with its first message; a stream the
    /// client ends without sending anything is no channel).
    Channel(Channel),
    /// A socket ended, and why (with the goaway code, if any).
    Disconnect(Socket, CloseReason),
    /// Throughput of the whole server over the last second.
    Speed(Speed),
}

/// A udpack.io server.
pub struct Server {
    endpoint: Endpoint,
    events: Mutex<mpsc::Receiver<ServerEvent>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.endpoint.local_addr())
            .finish()
    }
}

impl Server {
    /// Binds and starts accepting.
    pub async fn bind(opts: ServerOptions) -> Result<Server, Error> {
        let auth = opts.auth.clone();
        let config = ServerConfig::new(opts.private_key.clone())
            .auth(move |t| auth(t))
            .transport(opts.transport.clone())
            .max_sessions_per_token(opts.max_sessions_per_token);
        let endpoint = Endpoint::server(config)
            .bind((opts.host.as_str(), opts.port))
            .await?;
        let local = endpoint.local_addr();
        tracing::info!(target: "udpack.io", %local, "listening");
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let _ = tx.try_send(ServerEvent::Listening(local));
        let limits = ChannelLimits {
            max_message_size: opts.max_message_size,
            ack_timeout: opts.ack_timeout,
        };
        let accept = tokio::spawn(accept_loop(endpoint.clone(), tx.clone(), limits));
        let speed = tokio::spawn(speed_loop(endpoint.clone(), tx));
        Ok(Server {
            endpoint,
            events: Mutex::new(rx),
            tasks: vec![accept, speed],
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    /// The next event; `None` once the server is closed and every event was taken.
    pub async fn next_event(&self) -> Option<ServerEvent> {
        self.events.lock().await.recv().await
    }

    /// The underlying endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Closes every socket at once with `code` and stops accepting.
    pub fn close(&self, code: u64) {
        self.endpoint.close(code, "server closing");
    }

    /// Stops accepting, lets every socket finish what was sent, and resolves when all
    /// are closed.
    pub async fn shutdown(&self) {
        self.endpoint.shutdown().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.endpoint.close(0, "server dropped");
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn accept_loop(endpoint: Endpoint, tx: mpsc::Sender<ServerEvent>, limits: ChannelLimits) {
    while let Some(session) = endpoint.accept().await {
        let socket = Socket::new(session, limits.clone());
        tracing::debug!(target: "udpack.io", socket = %socket.id_str(), remote = ?socket.remote_addr(), "connection");
        if tx
            .send(ServerEvent::Connection(socket.clone()))
            .await
            .is_err()
        {
            return;
        }
        tokio::spawn(socket_loop(socket, tx.clone()));
    }
}

/// A stream the peer opened, waiting for its first bytes.
type Opening = Pin<Box<dyn Future<Output = Option<(Stream, Bytes)>> + Send>>;

/// Reports the channels a socket's peer opens, then the socket's end. A stream becomes
/// a channel (with its reader task) only once its first bytes arrive: until then it is
/// a small future in this loop, so streams opened without data cost no task; one that
/// ends or fails without data is dropped.
pub(crate) async fn socket_loop_events<E>(
    socket: Socket,
    tx: mpsc::Sender<E>,
    channel: fn(Channel) -> E,
) -> CloseReason {
    let mut opening: Vec<Opening> = Vec::new();
    loop {
        tokio::select! {
            accepted = socket.session().accept_stream() => {
                let Some(mut stream) = accepted else { break };
                opening.push(Box::pin(async move {
                    match stream.read_chunk(usize::MAX).await {
                        Ok(Some(first)) => Some((stream, first)),
                        _ => None,
                    }
                }));
            }
            ready = first_ready(&mut opening), if !opening.is_empty() => {
                let Some((stream, first)) = ready else { continue };
                let ch = Channel::with_first(stream, Some(first), socket.clone(), socket.limits().clone());
                if tx.send(channel(ch)).await.is_err() {
                    break;
                }
            }
        }
    }
    let reason = socket.closed().await;
    tracing::debug!(target: "udpack.io", socket = %socket.id_str(), %reason, "socket closed");
    reason
}

async fn socket_loop(socket: Socket, tx: mpsc::Sender<ServerEvent>) {
    let reason = socket_loop_events(socket.clone(), tx.clone(), ServerEvent::Channel).await;
    let _ = tx.send(ServerEvent::Disconnect(socket, reason)).await;
}

async fn speed_loop(endpoint: Endpoint, tx: mpsc::Sender<ServerEvent>) {
    let mut speed = endpoint.speed();
    while speed.changed().await.is_ok() {
        let s = *speed.borrow();
        if tx.is_closed() {
            return;
        }
        // Figures are only of use fresh; they never take the room that connections,
        // channels and disconnections need.
        if tx.capacity() > EVENT_QUEUE / 16 {
            let _ = tx.try_send(ServerEvent::Speed(s));
        }
    }
}

/// The first of `futures` to be ready (removed from the set); pending while none is.
fn first_ready<T>(
    futures: &mut Vec<Pin<Box<dyn Future<Output = T> + Send>>>,
) -> impl Future<Output = T> + '_ {
    std::future::poll_fn(move |cx| {
        for i in 0..futures.len() {
            if let Poll::Ready(t) = futures[i].as_mut().poll(cx) {
                drop(futures.swap_remove(i));
                return Poll::Ready(t);
            }
        }
        Poll::Pending
    })
}
