//! State shared by the driver task and the application's handles: the sans-IO
//! endpoint and, per session, who waits for what.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use tokio::sync::watch;
use udpack_proto::{CloseReason, Event, SessionHandle, StreamId};

use crate::speed::Speed;

/// Everything behind the endpoint's lock.
pub(crate) struct State {
    pub proto: udpack_proto::Endpoint,
    pub sessions: HashMap<SessionHandle, SessionSlot>,
    /// Sessions a client opened to us, not yet taken by `accept`.
    pub incoming: VecDeque<SessionHandle>,
    pub accept_wakers: Vec<Waker>,
    /// The driver task, woken when the application changed something.
    pub driver: Option<Waker>,
    /// `close` or `shutdown` was called: no new sessions.
    pub closing: bool,
    /// Wakers of `shutdown` callers, woken when the last session is gone.
    pub idle_wakers: Vec<Waker>,
    /// The driver stopped (socket error or everything closed).
    pub driver_done: bool,
    /// Endpoint handles alive; at zero (and no session handles) the driver winds down.
    pub endpoint_refs: usize,
    pub speed: watch::Sender<Speed>,
}

/// Adds `w` to a list of waiters unless it would wake the same task as one already
/// there: futures re-polled in a loop must not grow the list.
pub(crate) fn add_waker(list: &mut Vec<Waker>, w: &Waker) {
    if !list.iter().any(|x| x.will_wake(w)) {
        list.push(w.clone());
    }
}

/// What the runtime keeps per session.
#[derive(Default)]
pub(crate) struct SessionSlot {
    pub connected: bool,
    pub connect_waker: Option<Waker>,
    pub close: Option<CloseReason>,
    pub goaway: Option<(u64, String)>,
    pub closed_wakers: Vec<Waker>,
    pub accept_stream_wakers: Vec<Waker>,
    pub open_wakers: Vec<Waker>,
    pub read_wakers: HashMap<StreamId, Waker>,
    pub write_wakers: HashMap<StreamId, Waker>,
    pub finish_wakers: HashMap<StreamId, Waker>,
    /// Streams whose written data was all acknowledged, kept until their `SendStream`
    /// asks or is dropped.
    pub finished: Vec<StreamId>,
    /// Streams whose `SendStream` was dropped before the acknowledgment came: their
    /// `StreamFinished` is not kept.
    pub orphans: std::collections::HashSet<StreamId>,
    /// Streams the peer stopped (STOP_SENDING), with its code.
    pub stopped: HashMap<StreamId, u64>,
    /// Session and Stream handles alive.
    pub refs: usize,
    /// The application let go of every handle: release once closed.
    pub released: bool,
    /// Speed over the last full second, and the byte counters it was computed from.
    pub speed: Speed,
    pub last_counts: (u64, u64),
}

impl SessionSlot {
    fn wake_all(&mut self) {
        let wakers = self
            .connect_waker
            .take()
            .into_iter()
            .chain(self.closed_wakers.drain(..))
            .chain(self.accept_stream_wakers.drain(..))
            .chain(self.open_wakers.drain(..))
            .chain(self.read_wakers.drain().map(|(_, w)| w))
            .chain(self.write_wakers.drain().map(|(_, w)| w))
            .chain(self.finish_wakers.drain().map(|(_, w)| w));
        for w in wakers {
            w.wake();
        }
    }
}

impl State {
    /// Routes the sans-IO endpoint's events to whoever waits for them.
    pub fn dispatch_events(&mut self, now: Instant) {
        let mut closed = false;
        while let Some(h) = self.proto.accept() {
            if self.closing {
                closed = true;
                if let Some(s) = self.proto.session(h) {
                    s.close(now, 0, "endpoint closing");
                }
                self.sessions.insert(
                    h,
                    SessionSlot {
                        released: true,
                        ..Default::default()
                    },
                );
                continue;
            }
            self.sessions.insert(h, SessionSlot::default());
            self.incoming.push_back(h);
            for w in self.accept_wakers.drain(..) {
                w.wake();
            }
        }
        while let Some((h, ev)) = self.proto.poll_event() {
            let Some(slot) = self.sessions.get_mut(&h) else {
                continue;
            };
            match ev {
                Event::Connected => {
                    slot.connected = true;
                    if let Some(w) = slot.connect_waker.take() {
                        w.wake();
                    }
                }
                Event::StreamOpened(_) => {
                    for w in slot.accept_stream_wakers.drain(..) {
                        w.wake();
                    }
                }
                Event::StreamReadable(id) => {
                    if let Some(w) = slot.read_wakers.remove(&id) {
                        w.wake();
                    }
                }
                Event::StreamWritable(id) => {
                    if let Some(w) = slot.write_wakers.remove(&id) {
                        w.wake();
                    }
                }
                Event::StreamsAvailable => {
                    for w in slot.open_wakers.drain(..) {
                        w.wake();
                    }
                }
                Event::StreamFinished(id) => {
                    if !slot.orphans.remove(&id) {
                        slot.finished.push(id);
                    }
                    if let Some(w) = slot.finish_wakers.remove(&id) {
                        w.wake();
                    }
                }
                Event::StreamStopped { id, code } => {
                    // Kept only for a sender that is still there to ask.
                    if !slot.orphans.remove(&id) {
                        slot.stopped.insert(id, code);
                    }
                    if let Some(w) = slot.write_wakers.remove(&id) {
                        w.wake();
                    }
                    if let Some(w) = slot.finish_wakers.remove(&id) {
                        w.wake();
                    }
                }
                Event::GoAway { code, reason } => {
                    tracing::debug!(target: "udpack", session = %format_args!("{:016x}", h.0), code, %reason, "goaway received");
                    slot.goaway = Some((code, reason));
                    // Opens now fail; let waiting openers see it.
                    for w in slot.open_wakers.drain(..) {
                        w.wake();
                    }
                }
                Event::Closed(reason) => {
                    tracing::debug!(target: "udpack", session = %format_args!("{:016x}", h.0), %reason, "session closed");
                    slot.close = Some(reason);
                    slot.wake_all();
                    closed = true;
                }
            }
        }
        // Collecting scans every session: do it only when one may have become
        // collectable here, or while the driver winds down (it releases every slot),
        // not on every wake-up of an endpoint holding many idle sessions.
        if closed || self.endpoint_refs == 0 {
            self.collect_released(now);
        }
    }

    /// Lets the sans-IO endpoint forget sessions nobody holds any more.
    pub fn collect_released(&mut self, now: Instant) {
        let gone: Vec<SessionHandle> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.released && s.refs == 0 && s.close.is_some())
            .map(|(h, _)| *h)
            .collect();
        for h in gone {
            self.proto.release(now, h);
            self.sessions.remove(&h);
        }
        if self.sessions.values().all(|s| s.close.is_some()) {
            for w in self.idle_wakers.drain(..) {
                w.wake();
            }
        }
    }

    /// Sends GOAWAY on a session; openers waiting at the stream limit now get
    /// `GoingAway` instead of waiting.
    pub fn goaway(&mut self, h: SessionHandle, code: u64, reason: &str) {
        if let Some(s) = self.proto.session(h) {
            s.goaway(code, reason);
        }
        if let Some(slot) = self.sessions.get_mut(&h) {
            for w in slot.open_wakers.drain(..) {
                w.wake();
            }
        }
        self.wake_driver();
    }

    /// Wakes everyone waiting on any session (the driver is going away).
    pub fn wake_all_sessions(&mut self) {
        for slot in self.sessions.values_mut() {
            slot.wake_all();
        }
        for w in self
            .accept_wakers
            .drain(..)
            .chain(self.idle_wakers.drain(..))
        {
            w.wake();
        }
    }

    pub fn wake_driver(&mut self) {
        if let Some(w) = &self.driver {
            w.wake_by_ref();
        }
    }

    /// Session handles alive across all sessions.
    pub fn session_refs(&self) -> usize {
        self.sessions.values().map(|s| s.refs).sum()
    }
}

/// The lock and the driver's wake-up, shared by every handle.
pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    pub fn new(state: State) -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(state),
        })
    }

    /// Locks the state. A panic while holding the lock poisons it; the state is still
    /// consistent enough to close sessions, so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
