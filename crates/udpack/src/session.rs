//! A session: one encrypted association with a peer, carrying many streams.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use udpack_proto::{CloseReason, SessionHandle, SessionStats, StreamError, TokenId};

use crate::speed::Speed;
use crate::state::{add_waker, Shared};
use crate::stream::Stream;

pub(crate) struct SessionRef {
    pub shared: Arc<Shared>,
    pub handle: SessionHandle,
    /// Server sessions: the id of the client's token, kept here so that it outlives
    /// the protocol session.
    pub token_id: Option<TokenId>,
}

impl Drop for SessionRef {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        let now = Instant::now();
        let h = self.handle;
        let Some(slot) = st.sessions.get_mut(&h) else {
            return;
        };
        slot.refs = slot.refs.saturating_sub(1);
        if slot.refs > 0 {
            return;
        }
        slot.released = true;
        let open = slot.close.is_none();
        if open {
            if let Some(s) = st.proto.session(h) {
                // Nobody will read streams the peer opens now: refuse them, and close
                // gracefully once what was written is delivered.
                while let Some(id) = s.accept_stream() {
                    let _ = s.stop(id, 0);
                    let _ = s.finish(id);
                }
                s.goaway(0, "session dropped");
            }
        }
        st.collect_released(now);
        st.wake_driver();
    }
}

/// A session: cheap to clone; when the last clone and every stream of it are dropped, it
/// sends GOAWAY and closes once its streams are done.
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<SessionRef>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id_str())
            .finish()
    }
}

impl Session {
    /// Wraps a handle whose slot already counts this reference.
    pub(crate) fn new(
        shared: Arc<Shared>,
        handle: SessionHandle,
        token_id: Option<TokenId>,
    ) -> Self {
        Session {
            inner: Arc::new(SessionRef {
                shared,
                handle,
                token_id,
            }),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    pub(crate) fn handle(&self) -> SessionHandle {
        self.inner.handle
    }

    /// Runs `f` on the session's state machine under the lock, then lets the driver
    /// send whatever it queued.
    pub(crate) fn with_proto<R>(
        &self,
        f: impl FnOnce(&mut udpack_proto::Session) -> Result<R, StreamError>,
    ) -> Result<R, StreamError> {
        let mut st = self.inner.shared.lock();
        let s = st
            .proto
            .session(self.inner.handle)
            .ok_or(StreamError::SessionClosed)?;
        let r = f(s);
        st.wake_driver();
        r
    }

    /// Bytes written on stream `id` that the peer acknowledged, from the start without
    /// a gap (see [`crate::SendStream::acked`]); `None` for a stream the session no
    /// longer holds.
    pub fn stream_acked(&self, id: u64) -> Option<u64> {
        let mut st = self.inner.shared.lock();
        let s = st.proto.session(self.inner.handle)?;
        s.stream_acked(udpack_proto::StreamId(id)).ok()
    }

    /// This side's session id.
    pub fn id(&self) -> u64 {
        self.inner.handle.0
    }

    /// The session id as 16 hex digits, as the logs show it.
    pub fn id_str(&self) -> String {
        format!("{:016x}", self.inner.handle.0)
    }

    /// Server side: which token the client presented, as an opaque id (a keyed hash,
    /// the same for all sessions with that token at this endpoint, never the token
    /// itself), to count or limit per token. `None` on a client.
    pub fn token_id(&self) -> Option<TokenId> {
        self.inner.token_id
    }

    /// The peer's current address (it changes when the peer's NAT rebinds).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        let st = self.inner.shared.lock();
        st.proto
            .session_ref(self.inner.handle)
            .map(|s| s.remote_addr())
    }

    /// Opens a stream; waits while the peer's concurrent stream limit is reached.
    pub async fn open_stream(&self) -> Result<Stream, StreamError> {
        let shared = self.shared();
        let h = self.handle();
        let id = poll_fn(|cx| {
            let mut st = shared.lock();
            let st = &mut *st;
            let Some(slot) = st.sessions.get_mut(&h) else {
                return Poll::Ready(Err(StreamError::SessionClosed));
            };
            if slot.close.is_some() {
                return Poll::Ready(Err(StreamError::SessionClosed));
            }
            let Some(s) = st.proto.session(h) else {
                return Poll::Ready(Err(StreamError::SessionClosed));
            };
            match s.open_stream() {
                Ok(id) => Poll::Ready(Ok(id)),
                Err(StreamError::LimitReached) => {
                    add_waker(&mut slot.open_wakers, cx.waker());
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await?;
        Ok(Stream::new(self.clone(), id))
    }

    /// The next stream the peer opened; `None` once the session is closed.
    pub async fn accept_stream(&self) -> Option<Stream> {
        let shared = self.shared();
        let h = self.handle();
        let id = poll_fn(|cx| {
            let mut st = shared.lock();
            let st = &mut *st;
            let Some(slot) = st.sessions.get_mut(&h) else {
                return Poll::Ready(None);
            };
            if let Some(id) = st.proto.session(h).and_then(|s| s.accept_stream()) {
                return Poll::Ready(Some(id));
            }
            if slot.close.is_some() {
                return Poll::Ready(None);
            }
            add_waker(&mut slot.accept_stream_wakers, cx.waker());
            Poll::Pending
        })
        .await?;
        Some(Stream::new(self.clone(), id))
    }

    /// Announces the end of the session with `code` and `reason` (a GOAWAY): no new
    /// streams either way; the session closes once the current streams are done, and both
    /// sides see `code`.
    pub fn goaway(&self, code: u64, reason: &str) {
        self.inner
            .shared
            .lock()
            .goaway(self.inner.handle, code, reason);
    }

    /// Closes the session now with `code`; data not yet delivered is dropped.
    pub fn close(&self, code: u64, reason: &str) {
        let _ = self.with_proto(|s| {
            s.close(Instant::now(), code, reason);
            Ok(())
        });
    }

    /// The GOAWAY the peer sent, if any: (code, reason).
    pub fn goaway_received(&self) -> Option<(u64, String)> {
        let st = self.inner.shared.lock();
        st.sessions
            .get(&self.inner.handle)
            .and_then(|s| s.goaway.clone())
    }

    /// Why the session ended, if it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        let st = self.inner.shared.lock();
        st.sessions
            .get(&self.inner.handle)
            .and_then(|s| s.close.clone())
    }

    /// Resolves when the session ends, with why; when either side's application ended it
    /// ([`Session::goaway`], [`Session::close`]), [`CloseReason::code`] is its code.
    pub async fn closed(&self) -> CloseReason {
        let shared = self.shared();
        let h = self.handle();
        poll_fn(|cx| {
            let mut st = shared.lock();
            let done = st.driver_done;
            let Some(slot) = st.sessions.get_mut(&h) else {
                return Poll::Ready(CloseReason::TimedOut);
            };
            if let Some(r) = &slot.close {
                return Poll::Ready(r.clone());
            }
            if done {
                return Poll::Ready(CloseReason::TimedOut);
            }
            add_waker(&mut slot.closed_wakers, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Counters, RTT, congestion window and rates of this session.
    pub fn stats(&self) -> SessionStats {
        let st = self.inner.shared.lock();
        st.proto
            .session_ref(self.inner.handle)
            .map(|s| s.stats())
            .unwrap_or_default()
    }

    /// This session's throughput over the last second.
    pub fn speed(&self) -> Speed {
        let st = self.inner.shared.lock();
        st.sessions
            .get(&self.inner.handle)
            .map(|s| s.speed)
            .unwrap_or_default()
    }
}
