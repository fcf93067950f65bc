//! The endpoint: one UDP socket, many sessions, one driver task.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use tokio::net::{ToSocketAddrs, UdpSocket};
use tokio::sync::watch;
use udpack_proto::{
    ClientConfig, CloseReason, EndpointConfig, EndpointStats, ServerConfig, SessionHandle,
};

use crate::driver::Driver;
use crate::error::ConnectError;
use crate::session::Session;
use crate::socket::Socket;
use crate::speed::Speed;
use crate::state::{add_waker, SessionSlot, Shared, State};

/// Builds an [`Endpoint`]: a server config to accept sessions, a client config to open
/// them, or both.
#[derive(Default)]
pub struct EndpointBuilder {
    server: Option<ServerConfig>,
    client: Option<ClientConfig>,
    rng_seed: Option<u64>,
}

impl EndpointBuilder {
    /// Accepts sessions with this config.
    pub fn server(mut self, config: ServerConfig) -> Self {
        self.server = Some(config);
        self
    }

    /// Opens sessions with this config (see [`Endpoint::connect`]).
    pub fn client(mut self, config: ClientConfig) -> Self {
        self.client = Some(config);
        self
    }

    /// Seeds session ids and path challenges (for reproducible tests); by default they
    /// come from the OS.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    /// Binds the socket (port 0 picks a free one) and starts the driver task on the
    /// current tokio runtime.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> io::Result<Endpoint> {
        let socket = UdpSocket::bind(addr).await?;
        self.with_socket(socket)
    }

    /// Uses an already bound socket.
    pub fn with_socket(self, socket: UdpSocket) -> io::Result<Endpoint> {
        let socket = Socket::new(socket)?;
        let local_addr = socket.local_addr()?;
        let mut proto = udpack_proto::Endpoint::new(
            EndpointConfig {
                rng_seed: self.rng_seed,
                may_fragment: socket.may_fragment(),
            },
            self.server.map(Arc::new),
        );
        // Hellos carry the wall clock, and a server refuses those too old (replays).
        crate::driver::tell_wall_clock(&mut proto, std::time::Instant::now());
        let (speed, _) = watch::channel(Speed::default());
        let shared = Shared::new(State {
            proto,
            sessions: HashMap::new(),
            incoming: VecDeque::new(),
            accept_wakers: Vec::new(),
            driver: None,
            closing: false,
            idle_wakers: Vec::new(),
            driver_done: false,
            endpoint_refs: 1,
            speed,
        });
        tokio::spawn(Driver::new(shared.clone(), socket));
        tracing::debug!(target: "udpack", %local_addr, "endpoint bound");
        Ok(Endpoint {
            inner: Arc::new(EndpointRef {
                shared,
                local_addr,
                client: self.client.map(Arc::new),
            }),
        })
    }
}

struct EndpointRef {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    client: Option<Arc<ClientConfig>>,
}

impl Drop for EndpointRef {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.endpoint_refs = st.endpoint_refs.saturating_sub(1);
        st.wake_driver();
    }
}

/// A UDP socket carrying any number of sessions. Cheap to clone; the socket closes when
/// every clone and every session handle is gone.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<EndpointRef>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A builder for an endpoint that accepts sessions.
    pub fn server(config: ServerConfig) -> EndpointBuilder {
        EndpointBuilder::default().server(config)
    }

    /// A builder for an endpoint that opens sessions.
    pub fn client(config: ClientConfig) -> EndpointBuilder {
        EndpointBuilder::default().client(config)
    }

    /// A builder with neither config set.
    pub fn builder() -> EndpointBuilder {
        EndpointBuilder::default()
    }

    /// The bound address (with the port the OS picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The next session a client opened to this endpoint; `None` once the endpoint is
    /// closing and the sessions accepted before that were handed out.
    pub async fn accept(&self) -> Option<Session> {
        let shared = &self.inner.shared;
        poll_fn(|cx| {
            let mut st = shared.lock();
            if let Some(h) = st.incoming.pop_front() {
                let token_id = st.proto.session_ref(h).and_then(|s| s.token_id());
                if let Some(slot) = st.sessions.get_mut(&h) {
                    slot.refs += 1;
                    return Poll::Ready(Some(Session::new(shared.clone(), h, token_id)));
                }
            }
            if st.closing || st.driver_done {
                return Poll::Ready(None);
            }
            add_waker(&mut st.accept_wakers, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Opens a session to `addr` with the endpoint's client config.
    pub async fn connect(&self, addr: impl ToSocketAddrs) -> Result<Session, ConnectError> {
        let config = self
            .inner
            .client
            .clone()
            .ok_or(ConnectError::NoClientConfig)?;
        self.connect_with(addr, &config).await
    }

    /// Opens a session to `addr` with `config`. Resolves when the handshake completes,
    /// or with the reason it failed (within the config's handshake timeout).
    pub async fn connect_with(
        &self,
        addr: impl ToSocketAddrs,
        config: &ClientConfig,
    ) -> Result<Session, ConnectError> {
        let remote = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to")
        })?;
        let shared = &self.inner.shared;
        let h = {
            let mut st = shared.lock();
            if st.closing || st.driver_done {
                return Err(ConnectError::EndpointClosed);
            }
            let h = st.proto.connect(Instant::now(), remote, config);
            st.sessions.insert(
                h,
                SessionSlot {
                    refs: 1,
                    ..Default::default()
                },
            );
            st.wake_driver();
            h
        };
        // From here the session handle owns the slot's reference: dropping this future
        // releases the half-open session.
        let session = Session::new(shared.clone(), h, None);
        poll_fn(|cx| {
            let mut st = shared.lock();
            let Some(slot) = st.sessions.get_mut(&h) else {
                return Poll::Ready(Err(ConnectError::EndpointClosed));
            };
            if slot.connected {
                return Poll::Ready(Ok(()));
            }
            match &slot.close {
                Some(CloseReason::ConnectFailed(e)) => Poll::Ready(Err(e.clone().into())),
                Some(_) => Poll::Ready(Err(ConnectError::EndpointClosed)),
                None => {
                    slot.connect_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await?;
        tracing::debug!(target: "udpack", session = %session.id_str(), %remote, "connected");
        Ok(session)
    }

    /// Closes every session at once with `code` (the peers see it as the close code)
    /// and accepts no more. Unsent data is dropped; see [`Endpoint::shutdown`].
    pub fn close(&self, code: u64, reason: &str) {
        let mut st = self.inner.shared.lock();
        st.closing = true;
        // New hellos get no answer at all.
        st.proto.set_server_config(None);
        let now = Instant::now();
        let handles: Vec<SessionHandle> = st.sessions.keys().copied().collect();
        for h in handles {
            if let Some(s) = st.proto.session(h) {
                s.close(now, code, reason);
            }
        }
        for w in st.accept_wakers.drain(..) {
            w.wake();
        }
        st.wake_driver();
    }

    /// Graceful shutdown: sends GOAWAY on every session, lets every stream finish
    /// (everything written is delivered), and resolves once every session has closed.
    pub async fn shutdown(&self) {
        let shared = &self.inner.shared;
        {
            let mut st = shared.lock();
            st.closing = true;
            st.proto.set_server_config(None);
            let handles: Vec<SessionHandle> = st.sessions.keys().copied().collect();
            for h in handles {
                st.goaway(h, 0, "shutdown");
            }
            for w in st.accept_wakers.drain(..) {
                w.wake();
            }
            st.wake_driver();
        }
        poll_fn(|cx| {
            let mut st = shared.lock();
            if st.driver_done || st.sessions.values().all(|s| s.close.is_some()) {
                return Poll::Ready(());
            }
            add_waker(&mut st.idle_wakers, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Throughput of the whole endpoint over the last second, updated once a second.
    pub fn speed(&self) -> watch::Receiver<Speed> {
        self.inner.shared.lock().speed.subscribe()
    }

    /// Endpoint-wide counters.
    pub fn stats(&self) -> EndpointStats {
        self.inner.shared.lock().proto.stats()
    }

    /// Sessions held, including closed ones still referenced by handles.
    pub fn session_count(&self) -> usize {
        self.inner.shared.lock().sessions.len()
    }
}
