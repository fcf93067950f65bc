//! A stream: reliable, ordered bytes in both directions, independent of the session's
//! other streams.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use udpack_proto::{SessionHandle, StreamError, StreamId};

use crate::error::stream_io_error;
use crate::session::Session;
use crate::state::{SessionSlot, State};

/// One stream of a session. Implements tokio's `AsyncRead` and `AsyncWrite`.
///
/// A write resolves once its bytes are taken into the session's send buffer and waits
/// while that buffer (or the peer's flow-control credit) is full, so a writer that awaits
/// its writes cannot outrun the link. Dropping a stream finishes its sending side (what
/// was written is still delivered) and stops its receiving side.
///
/// [`Stream::into_split`] gives the two directions as separate handles, for a reader
/// and a writer in different tasks.
pub struct Stream {
    send: SendStream,
    recv: RecvStream,
}

/// The sending half of a [`Stream`]; dropping it finishes the stream.
pub struct SendStream {
    session: Session,
    id: StreamId,
    write_closed: bool,
    reset: bool,
}

/// The receiving half of a [`Stream`]; dropping it before the end stops the stream.
pub struct RecvStream {
    session: Session,
    id: StreamId,
    read_done: bool,
}

impl std::fmt::Debug for SendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendStream")
            .field("session", &self.session.id_str())
            .field("id", &self.id.0)
            .finish()
    }
}

impl std::fmt::Debug for RecvStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvStream")
            .field("session", &self.session.id_str())
            .field("id", &self.id.0)
            .finish()
    }
}

/// What a poll of the state machine gave for a read.
enum ReadOutcome {
    Data(Bytes),
    End,
}

/// After `Blocked`: waits in the waker map `pick` selects, unless the session has
/// ended meanwhile.
fn park<T>(
    st: &mut State,
    h: SessionHandle,
    id: StreamId,
    cx: &Context<'_>,
    pick: fn(&mut SessionSlot) -> &mut HashMap<StreamId, Waker>,
) -> Poll<Result<T, StreamError>> {
    match st.sessions.get_mut(&h) {
        Some(slot) if slot.close.is_none() => {
            pick(slot).insert(id, cx.waker().clone());
            Poll::Pending
        }
        _ => Poll::Ready(Err(StreamError::SessionClosed)),
    }
}

enum WriteInput<'a> {
    Slice(&'a [u8]),
    Bytes(&'a Bytes),
}

impl Stream {
    pub(crate) fn new(session: Session, id: StreamId) -> Self {
        tracing::trace!(target: "udpack", session = %session.id_str(), stream = id.0, "stream");
        Stream {
            send: SendStream {
                session: session.clone(),
                id,
                write_closed: false,
                reset: false,
            },
            recv: RecvStream {
                session,
                id,
                read_done: false,
            },
        }
    }

    /// The stream id (its lowest bit says which side opened it).
    pub fn id(&self) -> u64 {
        self.send.id.0
    }

    /// The session this stream belongs to.
    pub fn session(&self) -> &Session {
        &self.send.session
    }

    /// The two directions as separate handles.
    pub fn into_split(self) -> (SendStream, RecvStream) {
        (self.send, self.recv)
    }

    /// Reads the next in-order bytes, up to `max`, without copying them out of the
    /// stream's buffer (the chunk shares a receive segment of at most 64 KiB);
    /// `None` at the end of the stream.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StreamError> {
        self.recv.read_chunk(max).await
    }

    /// Writes all of `data`, waiting for room as needed.
    pub async fn write_all_bytes(&mut self, data: Bytes) -> Result<(), StreamError> {
        self.send.write_all_bytes(data).await
    }

    /// Bytes written on this stream that the peer acknowledged, from the start without a
    /// gap: what a progress display can honestly call delivered. `None` once the stream
    /// is gone from the session (everything acknowledged, or the session closed).
    pub fn acked(&self) -> Option<u64> {
        self.send.acked()
    }

    /// Ends the sending side: the peer reads everything written, then the end of the
    /// stream. Returns at once; [`Stream::finished`] waits for the acknowledgment.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        self.send.finish()
    }

    /// Resolves once everything written before [`Stream::finish`] was acknowledged by
    /// the peer.
    pub async fn finished(&mut self) -> Result<(), StreamError> {
        self.send.finished().await
    }

    /// Abandons the sending side with `code`: unsent data is dropped and the peer's
    /// reads fail with [`StreamError::Reset`].
    pub fn reset(&mut self, code: u64) -> Result<(), StreamError> {
        self.send.reset(code)
    }

    /// Tells the peer to stop sending on this stream with `code`; unread data is
    /// discarded.
    pub fn stop(&mut self, code: u64) -> Result<(), StreamError> {
        self.recv.stop(code)
    }
}

impl RecvStream {
    /// The stream id.
    pub fn id(&self) -> u64 {
        self.id.0
    }

    /// The session this stream belongs to.
    pub fn session(&self) -> &Session {
        &self.session
    }

    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<ReadOutcome, StreamError>> {
        self.poll_read_with(cx, |s, id| s.read(id, max))
            .map_ok(|r| r.map_or(ReadOutcome::End, ReadOutcome::Data))
    }

    /// Polls one read of the state machine (`read` gives `Ok(None)` at the end).
    fn poll_read_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        read: impl FnOnce(&mut udpack_proto::Session, StreamId) -> Result<Option<T>, StreamError>,
    ) -> Poll<Result<Option<T>, StreamError>> {
        if self.read_done {
            return Poll::Ready(Ok(None));
        }
        let h = self.session.handle();
        let mut st = self.session.shared().lock();
        let st = &mut *st;
        let Some(s) = st.proto.session(h) else {
            return Poll::Ready(Err(StreamError::SessionClosed));
        };
        match read(s, self.id) {
            Ok(Some(data)) => {
                // Reading frees credit: the driver sends the window update, if one is
                // owed (woken only then: a read per packet must not cost a wake-up).
                if s.owes_control() {
                    st.wake_driver();
                }
                Poll::Ready(Ok(Some(data)))
            }
            Ok(None) => {
                self.read_done = true;
                // The stream's end may free a stream slot the peer is told about.
                if s.owes_control() {
                    st.wake_driver();
                }
                Poll::Ready(Ok(None))
            }
            Err(StreamError::Blocked) => park(st, h, self.id, cx, |s| &mut s.read_wakers),
            Err(e) => {
                self.read_done = true;
                Poll::Ready(Err(e))
            }
        }
    }

    /// Reads the next in-order bytes, up to `max`, without copying them out of the
    /// stream's buffer (the chunk shares a receive segment of at most 64 KiB);
    /// `None` at the end of the stream.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StreamError> {
        match poll_fn(|cx| self.poll_read_chunk(cx, max)).await? {
            ReadOutcome::Data(d) => Ok(Some(d)),
            ReadOutcome::End => Ok(None),
        }
    }

    /// Appends up to `max` bytes to `buf`: every byte that is ready, in one call,
    /// copied (so nothing holds the stream's receive segments) into room reserved
    /// for bytes that are here. Returns how many; `None` at the end of the stream.
    /// The way to gather a long message.
    pub async fn read_into(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<usize>, StreamError> {
        if max == 0 {
            return Ok(Some(0));
        }
        poll_fn(|cx| self.poll_read_with(cx, |s, id| s.read_into(id, max, buf))).await
    }

    /// Tells the peer to stop sending on this stream with `code`; unread data is
    /// discarded.
    pub fn stop(&mut self, code: u64) -> Result<(), StreamError> {
        if self.read_done {
            return Ok(());
        }
        let id = self.id;
        self.session.with_proto(|s| s.stop(id, code))?;
        self.read_done = true;
        Ok(())
    }
}

impl SendStream {
    /// The stream id.
    pub fn id(&self) -> u64 {
        self.id.0
    }

    /// The session this stream belongs to.
    pub fn session(&self) -> &Session {
        &self.session
    }

    fn poll_write_inner(
        &mut self,
        cx: &mut Context<'_>,
        data: WriteInput<'_>,
    ) -> Poll<Result<usize, StreamError>> {
        let h = self.session.handle();
        let mut st = self.session.shared().lock();
        let st = &mut *st;
        let Some(s) = st.proto.session(h) else {
            return Poll::Ready(Err(StreamError::SessionClosed));
        };
        let r = match data {
            WriteInput::Slice(b) => s.write(self.id, b),
            WriteInput::Bytes(b) => s.write_bytes(self.id, b.clone()),
        };
        match r {
            Ok(n) => {
                st.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(StreamError::Blocked) => park(st, h, self.id, cx, |s| &mut s.write_wakers),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Writes all of `data`, waiting for room as needed; no copy on the way in.
    pub async fn write_all_bytes(&mut self, mut data: Bytes) -> Result<(), StreamError> {
        while !data.is_empty() {
            let n = poll_fn(|cx| self.poll_write_inner(cx, WriteInput::Bytes(&data))).await?;
            let _ = data.split_to(n);
        }
        Ok(())
    }

    /// Bytes written on this stream that the peer acknowledged, from the start without a
    /// gap. `None` once the stream is gone from the session (everything acknowledged, or
    /// the session closed).
    pub fn acked(&self) -> Option<u64> {
        self.session.stream_acked(self.id.0)
    }

    /// Ends the sending side: the peer reads everything written, then the end of the
    /// stream. Returns at once; [`SendStream::finished`] waits for the acknowledgment.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        if self.write_closed {
            return Ok(());
        }
        let id = self.id;
        self.session.with_proto(|s| s.finish(id))?;
        self.write_closed = true;
        Ok(())
    }

    /// Resolves once everything written before [`SendStream::finish`] was acknowledged
    /// by the peer.
    pub async fn finished(&mut self) -> Result<(), StreamError> {
        if self.reset {
            // A reset stream is never acknowledged as finished.
            return Err(StreamError::Finished);
        }
        self.finish()?;
        let shared = self.session.shared().clone();
        let h = self.session.handle();
        let id = self.id;
        poll_fn(|cx| {
            let mut st = shared.lock();
            let Some(slot) = st.sessions.get_mut(&h) else {
                return Poll::Ready(Err(StreamError::SessionClosed));
            };
            if let Some(i) = slot.finished.iter().position(|x| *x == id) {
                slot.finished.swap_remove(i);
                return Poll::Ready(Ok(()));
            }
            if let Some(&code) = slot.stopped.get(&id) {
                return Poll::Ready(Err(StreamError::Stopped(code)));
            }
            if slot.close.is_some() {
                return Poll::Ready(Err(StreamError::SessionClosed));
            }
            slot.finish_wakers.insert(id, cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Abandons the sending side with `code`: unsent data is dropped and the peer's
    /// reads fail with [`StreamError::Reset`].
    pub fn reset(&mut self, code: u64) -> Result<(), StreamError> {
        let id = self.id;
        self.session.with_proto(|s| s.reset(id, code))?;
        self.write_closed = true;
        self.reset = true;
        Ok(())
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        match this.poll_read_chunk(cx, buf.remaining()) {
            Poll::Ready(Ok(ReadOutcome::Data(d))) => {
                buf.put_slice(&d);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(ReadOutcome::End)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(stream_io_error(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.poll_write_inner(cx, WriteInput::Slice(buf))
            .map_err(stream_io_error)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are already in the session's send buffer, on their way.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().finish().map_err(stream_io_error))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().send).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().send).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().send).poll_shutdown(cx)
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        let mut st = self.session.shared().lock();
        let h = self.session.handle();
        if let Some(slot) = st.sessions.get_mut(&h) {
            slot.write_wakers.remove(&self.id);
            slot.finish_wakers.remove(&self.id);
            let stopped = slot.stopped.remove(&self.id).is_some();
            let before = slot.finished.len();
            slot.finished.retain(|x| *x != self.id);
            if slot.finished.len() == before && !self.reset && !stopped {
                // Its acknowledgment may still come: nobody will ask for it.
                slot.orphans.insert(self.id);
            }
        }
        if !self.write_closed {
            if let Some(s) = st.proto.session(h) {
                let _ = s.finish(self.id);
            }
        }
        st.wake_driver();
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        let mut st = self.session.shared().lock();
        let h = self.session.handle();
        if let Some(slot) = st.sessions.get_mut(&h) {
            slot.read_wakers.remove(&self.id);
        }
        if !self.read_done {
            if let Some(s) = st.proto.session(h) {
                let _ = s.stop(self.id, 0);
            }
        }
        st.wake_driver();
    }
}
