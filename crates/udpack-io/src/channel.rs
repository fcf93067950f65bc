//! A channel: one stream of a socket carrying `[event, data]` messages both ways.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{oneshot, watch, Notify};
use udpack::{RecvStream, SendStream, Stream, StreamError};

use crate::error::{codes, ChannelClosed, Error};
use crate::message::{self, Kind, Message, FRAME_HEADER_LEN};
use crate::socket::Socket;

/// Messages queued for `recv` before the channel stops reading (back-pressure).
const MAX_QUEUED: usize = 64;
/// Bytes of messages a channel's inbox holds at most (one message of any size is always
/// let in, so a message up to the size limit never waits forever).
const MAX_QUEUED_BYTES: usize = 16 << 20;

type Handler = Arc<dyn Fn(Message) + Send + Sync>;

/// Limits of a channel.
#[derive(Debug, Clone)]
pub(crate) struct ChannelLimits {
    pub max_message_size: usize,
    pub ack_timeout: Duration,
}

#[derive(Default)]
struct Inbox {
    queue: VecDeque<Message>,
    /// Bytes of the queued messages.
    queued_bytes: usize,
    handlers: HashMap<String, Handler>,
}

impl Inbox {
    fn has_room_for(&self, m: &Message) -> bool {
        self.queue.is_empty()
            || (self.queue.len() < MAX_QUEUED
                && self.queued_bytes + m.raw.len() <= MAX_QUEUED_BYTES)
    }

    fn push(&mut self, m: Message) {
        self.queued_bytes += m.raw.len();
        self.queue.push_back(m);
    }

    fn pop(&mut self) -> Option<Message> {
        let m = self.queue.pop_front()?;
        self.queued_bytes -= m.raw.len();
        Some(m)
    }
}

pub(crate) struct Core {
    id: u64,
    socket: Socket,
    writer: tokio::sync::Mutex<Option<SendStream>>,
    next_ack: AtomicU64,
    acks: Mutex<HashMap<u64, oneshot::Sender<Message>>>,
    inbox: Mutex<Inbox>,
    /// Shared with the reader task, which waits on it without keeping the channel alive.
    inbox_changed: Arc<Notify>,
    closed: watch::Sender<Option<ChannelClosed>>,
    reader: Mutex<Option<tokio::task::AbortHandle>>,
    limits: ChannelLimits,
}

impl Drop for Core {
    fn drop(&mut self) {
        if let Ok(mut r) = self.reader.lock() {
            if let Some(h) = r.take() {
                h.abort();
            }
        }
        // A reader waiting for room in the inbox wakes, finds the channel gone, ends.
        self.inbox_changed.notify_waiters();
    }
}

/// Sends replies for received messages; weak, so queued messages do not keep their
/// channel alive.
#[derive(Clone)]
pub(crate) struct Replier {
    core: Weak<Core>,
}

impl std::fmt::Debug for Replier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replier")
    }
}

impl Replier {
    pub(crate) async fn send_reply<R: Serialize + ?Sized>(
        &self,
        id: u64,
        data: &R,
    ) -> Result<(), Error> {
        let core = self.core.upgrade().ok_or(Error::ChannelClosed)?;
        let frame = message::encode_reply(id, data)?;
        core.write_frame(frame).await
    }
}

impl Core {
    async fn write_frame(&self, frame: Vec<u8>) -> Result<(), Error> {
        let body = frame.len() - FRAME_HEADER_LEN;
        if body > self.limits.max_message_size {
            return Err(Error::TooLarge(body));
        }
        let mut w = self.writer.lock().await;
        let w = w.as_mut().ok_or(Error::ChannelClosed)?;
        w.write_all_bytes(Bytes::from(frame)).await?;
        Ok(())
    }

    /// Writes a frame's head and its payload under one lock, so that no other message
    /// comes between them; the payload is not copied.
    async fn write_frame_parts(&self, head: Vec<u8>, payload: Bytes) -> Result<(), Error> {
        let body = head.len() - FRAME_HEADER_LEN + payload.len();
        if body > self.limits.max_message_size {
            return Err(Error::TooLarge(body));
        }
        let mut w = self.writer.lock().await;
        let w = w.as_mut().ok_or(Error::ChannelClosed)?;
        w.write_all_bytes(Bytes::from(head)).await?;
        w.write_all_bytes(payload).await?;
        Ok(())
    }

    fn set_closed(&self, why: ChannelClosed) {
        self.closed.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(why);
                true
            } else {
                false
            }
        });
        self.inbox_changed.notify_waiters();
        if let Ok(mut acks) = self.acks.lock() {
            acks.clear();
        }
    }
}

/// A channel: one UDPack stream carrying messages both ways. Cheap to clone; the stream
/// is closed when the last clone is dropped.
#[derive(Clone)]
pub struct Channel {
    core: Arc<Core>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("socket", &self.core.socket.id_str())
            .field("id", &self.core.id)
            .finish()
    }
}

impl Channel {
    pub(crate) fn new(stream: Stream, socket: Socket, limits: ChannelLimits) -> Self {
        Channel::with_first(stream, None, socket, limits)
    }

    /// A channel whose stream's first bytes were already read (`first`): the peer's
    /// channels get a reader task only once they carry data.
    pub(crate) fn with_first(
        stream: Stream,
        first: Option<Bytes>,
        socket: Socket,
        limits: ChannelLimits,
    ) -> Self {
        let id = stream.id();
        let (send, recv) = stream.into_split();
        let (closed, _) = watch::channel(None);
        let core = Arc::new(Core {
            id,
            socket,
            writer: tokio::sync::Mutex::new(Some(send)),
            next_ack: AtomicU64::new(0),
            acks: Mutex::new(HashMap::new()),
            inbox: Mutex::new(Inbox::default()),
            inbox_changed: Arc::new(Notify::new()),
            closed,
            reader: Mutex::new(None),
            limits,
        });
        let task = tokio::spawn(read_loop(
            Arc::downgrade(&core),
            core.inbox_changed.clone(),
            Reader { first, rs: recv },
        ));
        if let Ok(mut r) = core.reader.lock() {
            *r = Some(task.abort_handle());
        }
        tracing::debug!(target: "udpack.io", socket = %core.socket.id_str(), channel = id, "channel open");
        Channel { core }
    }

    /// The stream id.
    pub fn id(&self) -> u64 {
        self.core.id
    }

    /// The socket (session) this channel belongs to.
    pub fn socket(&self) -> &Socket {
        &self.core.socket
    }

    /// Sends `[event, data]`. Resolves when the message is taken into the send buffer,
    /// so a sender that awaits each send cannot outrun the link.
    pub async fn send<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), Error> {
        let frame = message::encode_event(event, data, None)?;
        tracing::trace!(target: "udpack.io", socket = %self.core.socket.id_str(), channel = self.core.id, event, len = frame.len(), "send");
        self.core.write_frame(frame).await
    }

    /// Sends `[event, data]` with `data` a MessagePack `bin` of these bytes, without
    /// copying them: the way to move bulk data. The peer reads them with
    /// [`Message::data_bytes`](crate::Message::data_bytes) (also without a copy).
    pub async fn send_bytes(&self, event: &str, data: Bytes) -> Result<(), Error> {
        let head = message::encode_bytes_head(event, data.len())?;
        tracing::trace!(target: "udpack.io", socket = %self.core.socket.id_str(), channel = self.core.id, event, len = data.len(), "send bytes");
        self.core.write_frame_parts(head, data).await
    }

    /// Bytes of this channel's stream (frames, heads included) the peer acknowledged,
    /// from the start without a gap; `None` once the stream is gone. What a progress
    /// display counts as delivered, rather than what was taken into the send buffer.
    pub fn acked(&self) -> Option<u64> {
        self.core.socket.session().stream_acked(self.core.id)
    }

    /// Sends `[event, data, id]` and waits for the peer's reply, decoded as `R`; sending
    /// and waiting together take at most the channel's ack timeout.
    pub async fn send_with_ack<T: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<R, Error> {
        self.send_with_ack_timeout(event, data, self.core.limits.ack_timeout)
            .await
    }

    /// [`Channel::send_with_ack`] with its own timeout.
    pub async fn send_with_ack_timeout<T: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        event: &str,
        data: &T,
        timeout: Duration,
    ) -> Result<R, Error> {
        let id = self.core.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if self.core.closed.borrow().is_some() {
            return Err(Error::ChannelClosed);
        }
        self.core
            .acks
            .lock()
            .map_err(|_| Error::ChannelClosed)?
            .insert(id, tx);
        let frame = message::encode_event(event, data, Some(id))?;
        // The timeout covers the whole exchange, waiting for room to send included.
        let exchange = async {
            self.core.write_frame(frame).await?;
            rx.await.map_err(|_| Error::ChannelClosed)
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(reply)) => reply.data(),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::AckTimeout),
        };
        if result.is_err() {
            if let Ok(mut acks) = self.core.acks.lock() {
                acks.remove(&id);
            }
        }
        result
    }

    /// The next message without a registered handler; `None` once the channel is
    /// closed and drained.
    pub async fn recv(&self) -> Option<Message> {
        loop {
            let notified = self.core.inbox_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = self.core.inbox.lock().ok().and_then(|mut i| i.pop());
            if let Some(m) = next {
                self.core.inbox_changed.notify_waiters();
                return Some(m);
            }
            if self.core.closed.borrow().is_some() {
                return None;
            }
            notified.await;
        }
    }

    /// Calls `handler` for every message with this event (including ones that arrived
    /// before it was registered and are still queued). Replaces an earlier handler.
    pub fn on<F: Fn(Message) + Send + Sync + 'static>(&self, event: &str, handler: F) {
        let handler: Handler = Arc::new(handler);
        let queued: Vec<Message> = match self.core.inbox.lock() {
            Ok(mut inbox) => {
                inbox.handlers.insert(event.to_string(), handler.clone());
                let (mine, rest): (Vec<_>, Vec<_>) =
                    inbox.queue.drain(..).partition(|m| m.event() == event);
                inbox.queued_bytes = rest.iter().map(|m| m.raw.len()).sum();
                inbox.queue = rest.into();
                mine
            }
            Err(_) => Vec::new(),
        };
        if !queued.is_empty() {
            self.core.inbox_changed.notify_waiters();
        }
        for m in queued {
            handler(m);
        }
    }

    /// [`Channel::on`] with the data decoded as `T`; a message whose data does not
    /// decode is logged and dropped.
    pub fn on_data<T, F>(&self, event: &str, handler: F)
    where
        T: DeserializeOwned,
        F: Fn(T) + Send + Sync + 'static,
    {
        let name = event.to_string();
        let socket = self.core.socket.id_str();
        let channel = self.core.id;
        self.on(event, move |m| match m.data::<T>() {
            Ok(d) => handler(d),
            Err(e) => {
                tracing::warn!(target: "udpack.io", socket = %socket, channel, event = %name, error = %e, "dropped a message whose data did not decode");
            }
        });
    }

    /// Closes the channel: what was sent is still delivered, then the peer sees the
    /// end; nothing more is read.
    pub async fn close(&self) {
        self.core.set_closed(ChannelClosed::Local);
        if let Ok(mut r) = self.core.reader.lock() {
            if let Some(h) = r.take() {
                h.abort();
            }
        }
        if let Some(mut w) = self.core.writer.lock().await.take() {
            let _ = w.finish();
        }
    }

    /// Resolves when the channel ends, with why.
    pub async fn closed(&self) -> ChannelClosed {
        let mut rx = self.core.closed.subscribe();
        let why = match rx.wait_for(|c| c.is_some()).await {
            Ok(c) => c.clone().unwrap_or(ChannelClosed::Local),
            Err(_) => ChannelClosed::Local,
        };
        why
    }

    /// Why the channel ended, if it has.
    pub fn close_reason(&self) -> Option<ChannelClosed> {
        self.core.closed.borrow().clone()
    }
}

/// Marks the channel closed when the reader ends for any reason, a panicking handler
/// included, so that `recv` and `closed` callers do not wait forever.
struct ReaderGuard {
    core: Weak<Core>,
    why: Option<ChannelClosed>,
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        if let Some(c) = self.core.upgrade() {
            let why = self.why.take().unwrap_or_else(|| {
                ChannelClosed::SessionClosed("the channel's reader stopped".into())
            });
            c.set_closed(why);
        }
    }
}

/// Reads frames until the stream ends, dispatching each message. Holds the channel only
/// weakly: when the application drops it, the reader ends too.
/// The receiving half, with bytes read before the reader started served first.
struct Reader {
    first: Option<Bytes>,
    rs: RecvStream,
}

impl Reader {
    /// The next chunk of at most `max` bytes, without copying; `None` at the end.
    async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StreamError> {
        if let Some(first) = self.read_chunk_buffered(max) {
            return Ok(Some(first));
        }
        self.rs.read_chunk(max).await
    }

    /// Appends up to `max` bytes to `buf` (see [`RecvStream::read_into`]).
    async fn read_into(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<usize>, StreamError> {
        if let Some(first) = self.read_chunk_buffered(max) {
            buf.extend_from_slice(&first);
            return Ok(Some(first.len()));
        }
        self.rs.read_into(buf, max).await
    }

    /// What is left of the bytes read before the reader started, at most `max`.
    fn read_chunk_buffered(&mut self, max: usize) -> Option<Bytes> {
        let first = self.first.as_mut()?;
        if first.len() > max {
            return Some(first.split_to(max));
        }
        self.first.take().filter(|b| !b.is_empty())
    }

    fn stop(&mut self, code: u64) -> Result<(), StreamError> {
        self.rs.stop(code)
    }
}

async fn read_loop(core: Weak<Core>, changed: Arc<Notify>, mut rs: Reader) {
    let mut guard = ReaderGuard {
        core: core.clone(),
        why: None,
    };
    let why = loop {
        let Some(c) = core.upgrade() else { return };
        let max = c.limits.max_message_size;
        drop(c);
        let mut head = [0u8; FRAME_HEADER_LEN];
        match read_full(&mut rs, &mut head).await {
            Ok(0) => break ChannelClosed::Finished,
            Ok(n) if n < FRAME_HEADER_LEN => {
                tracing::warn!(target: "udpack.io", "channel ended inside a frame header");
                break ChannelClosed::Finished;
            }
            Ok(_) => {}
            Err(e) => break closed_by_stream(e),
        }
        let len = u32::from_be_bytes(head) as usize;
        if len > max {
            tracing::warn!(target: "udpack.io", len, max, "message over the size limit: closing the channel");
            let _ = rs.stop(codes::MESSAGE_TOO_LARGE);
            if let Some(c) = core.upgrade() {
                if let Some(mut w) = c.writer.lock().await.take() {
                    let _ = w.reset(codes::MESSAGE_TOO_LARGE);
                }
            }
            break ChannelClosed::MessageTooLarge(len);
        }
        let body = match read_message(&mut rs, len).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                tracing::warn!(target: "udpack.io", "channel ended inside a message");
                break ChannelClosed::Finished;
            }
            Err(e) => break closed_by_stream(e),
        };
        match message::decode(body) {
            Ok(m) => {
                if !dispatch(&core, &changed, m).await {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(target: "udpack.io", len, error = %e, "dropped a message that did not decode");
            }
        }
    };
    tracing::debug!(target: "udpack.io", reason = %why, "channel closed");
    guard.why = Some(why);
}

/// Hands a message to its handler, its waiting request, or the inbox (waiting for
/// room). False if the channel is gone.
async fn dispatch(core: &Weak<Core>, changed: &Notify, mut m: Message) -> bool {
    let Some(c) = core.upgrade() else {
        return false;
    };
    if let Kind::Reply { id } = m.kind {
        let waiter = c.acks.lock().ok().and_then(|mut a| a.remove(&id));
        match waiter {
            Some(tx) => {
                let _ = tx.send(m);
            }
            None => tracing::debug!(target: "udpack.io", id, "reply to no pending request"),
        }
        return true;
    }
    m.reply_to = Some(Replier { core: core.clone() });
    drop(c);
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let Some(c) = core.upgrade() else {
                return false;
            };
            let Ok(mut inbox) = c.inbox.lock() else {
                return false;
            };
            // The handler is looked up under the same lock as the queue, so one
            // registered meanwhile (which drains the queue) cannot be missed.
            if let Some(h) = inbox.handlers.get(m.event()).cloned() {
                drop(inbox);
                drop(c);
                h(m);
                return true;
            }
            if inbox.has_room_for(&m) {
                inbox.push(m);
                break;
            }
        }
        notified.await;
    }
    changed.notify_waiters();
    true
}

/// Most of an announced body reserved ahead of its bytes: more than an upload's data
/// message (256 KiB and its head).
const BODY_RESERVE_MAX: usize = 256 * 1024 + 1024;
/// Bytes of a body that must have arrived before the rest is reserved: a peer that
/// announces large bodies makes the receiver reserve at most four times what it sent
/// of them (and flow control bounds that), not 257 KiB per stream for a 4-byte head.
const BODY_RESERVE_AFTER: usize = 64 * 1024;

/// Reads one message body of `len` bytes, copied out of the stream's receive
/// segments into a buffer of its own, every ready byte per read. The buffer grows with
/// what has arrived until [`BODY_RESERVE_AFTER`] bytes are in; then it is reserved at
/// once up to [`BODY_RESERVE_MAX`] of the announced length (growing a large body step
/// by step reallocated and copied it several times, each time into fresh pages), and
/// grows with what arrives past that. `None` if the stream ends first.
async fn read_message(rs: &mut Reader, len: usize) -> Result<Option<Bytes>, StreamError> {
    let mut body = BytesMut::new();
    let reserve_to = len.min(BODY_RESERVE_MAX);
    while body.len() < len {
        if body.len() >= BODY_RESERVE_AFTER && body.capacity() < reserve_to {
            body.reserve(reserve_to - body.len());
        }
        let want = len - body.len();
        if rs.read_into(&mut body, want).await?.is_none() {
            return Ok(None);
        }
    }
    Ok(Some(body.freeze()))
}

/// Reads until `buf` is full or the stream ends; returns how much was read.
async fn read_full(rs: &mut Reader, buf: &mut [u8]) -> Result<usize, StreamError> {
    let mut n = 0;
    while n < buf.len() {
        let Some(chunk) = rs.read_chunk(buf.len() - n).await? else {
            break;
        };
        buf[n..n + chunk.len()].copy_from_slice(&chunk);
        n += chunk.len();
    }
    Ok(n)
}

fn closed_by_stream(e: StreamError) -> ChannelClosed {
    match e {
        StreamError::Reset(code) => ChannelClosed::Reset(code),
        other => ChannelClosed::SessionClosed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{decode, encode_event, FRAME_HEADER_LEN};

    fn message(size: usize) -> Message {
        let frame =
            encode_event("m", &serde_bytes::ByteBuf::from(vec![7u8; size]), None).expect("encode");
        decode(Bytes::from(frame).slice(FRAME_HEADER_LEN..)).expect("decode")
    }

    #[test]
    fn the_inbox_is_bounded_in_bytes_and_in_messages() {
        let mut inbox = Inbox::default();
        // One message of any size is let in.
        let big = message(MAX_QUEUED_BYTES + 10);
        assert!(inbox.has_room_for(&big));
        inbox.push(big);
        assert!(!inbox.has_room_for(&message(1)));
        assert!(inbox.pop().is_some());
        assert_eq!(inbox.queued_bytes, 0);
        // Then bytes bound it: two 6 MiB messages fit in 16 MiB, a third does not.
        for _ in 0..2 {
            let m = message(6 << 20);
            assert!(inbox.has_room_for(&m));
            inbox.push(m);
        }
        assert!(!inbox.has_room_for(&message(6 << 20)));
        while inbox.pop().is_some() {}
        // And the count: small messages stop at MAX_QUEUED.
        for _ in 0..MAX_QUEUED {
            let m = message(10);
            assert!(inbox.has_room_for(&m));
            inbox.push(m);
        }
        assert!(!inbox.has_room_for(&message(10)));
    }
}
