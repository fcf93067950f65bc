//! The one task per endpoint that moves datagrams between the socket and the sans-IO
//! endpoint, fires its timers and wakes the application's handles. No task or channel
//! hop per packet: received datagrams go straight into the state machine under the
//! lock, and transmissions are pulled from it in batches.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;
use udpack_proto::{transport_error, CloseReason};

use crate::socket::Socket;
use crate::speed::Speed;
use crate::state::{Shared, State};

/// Receive batches handled per wake-up before the driver yields to other tasks.
const RECV_BATCHES_PER_POLL: usize = 32;
/// Datagrams pulled from the state machine per send round.
const SEND_QUEUE: usize = 64;
/// Largest GSO send (bytes): the kernel's limit for one UDP super-datagram.
const MAX_GSO_BYTES: usize = 65_000;
/// Interval of the speed figures.
const SPEED_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct Driver {
    shared: Arc<Shared>,
    socket: Socket,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    /// Datagrams waiting to be sent: their bytes back to back, and (destination, size,
    /// alone: an MTU probe, never in a GSO batch).
    out: Vec<u8>,
    out_meta: Vec<(SocketAddr, usize, bool)>,
    /// How many of `out_meta` (and bytes of `out`) were already sent.
    out_sent: usize,
    out_sent_bytes: usize,
    speed_at: Instant,
    speed_counts: (u64, u64),
}

impl Driver {
    pub fn new(shared: Arc<Shared>, socket: Socket) -> Self {
        let now = Instant::now();
        Driver {
            shared,
            socket,
            timer: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            timer_at: None,
            out: Vec::with_capacity(SEND_QUEUE * 1500),
            out_meta: Vec::with_capacity(SEND_QUEUE),
            out_sent: 0,
            out_sent_bytes: 0,
            speed_at: now + SPEED_INTERVAL,
            speed_counts: (0, 0),
        }
    }

    /// Sends what is queued, then pulls more from the state machine until it has
    /// nothing to send or the socket is full. Returns false if the socket is full.
    fn flush(&mut self, cx: &mut Context<'_>, st: &mut State, now: Instant) -> bool {
        let max_segments = self.socket.max_gso_segments();
        loop {
            // Send the queue in runs that GSO can take as one: same destination, same
            // size (the last of a run may be shorter).
            while self.out_sent < self.out_meta.len() {
                let (dest, size, alone) = self.out_meta[self.out_sent];
                let mut n = 1;
                let mut bytes = size;
                // An MTU probe goes on its own: in a batch, a segment larger than the
                // path fails the whole batch (and the kernel's answer, EINVAL, would
                // turn GSO off for good).
                while !alone
                    && self.out_sent + n < self.out_meta.len()
                    && n < max_segments
                    && bytes + size <= MAX_GSO_BYTES
                {
                    let (d, s, a) = self.out_meta[self.out_sent + n];
                    if d != dest || s > size || a {
                        break;
                    }
                    n += 1;
                    bytes += s;
                    if s < size {
                        break;
                    }
                }
                let contents = &self.out[self.out_sent_bytes..self.out_sent_bytes + bytes];
                let segment = (n > 1).then_some(size);
                match self.socket.poll_send(cx, dest, contents, segment) {
                    Poll::Pending => return false,
                    Poll::Ready(Err(e)) => {
                        // Send errors are not fatal: the protocol retransmits.
                        tracing::debug!(target: "udpack", error = %e, %dest, "send failed");
                    }
                    Poll::Ready(Ok(())) => {}
                }
                self.out_sent += n;
                self.out_sent_bytes += bytes;
            }
            self.out.clear();
            self.out_meta.clear();
            self.out_sent = 0;
            self.out_sent_bytes = 0;
            // Each datagram is written in place at the end of the batch.
            while self.out_meta.len() < SEND_QUEUE {
                match st.proto.poll_transmit_append(now, &mut self.out) {
                    Some(t) => self.out_meta.push((t.destination, t.size, t.mtu_probe)),
                    None => break,
                }
            }
            if self.out_meta.is_empty() {
                return true;
            }
        }
    }

    fn update_speed(&mut self, st: &mut State, now: Instant) {
        if now < self.speed_at {
            return;
        }
        // Once a second, so that the endpoint follows the clock if it is set.
        tell_wall_clock(&mut st.proto, now);
        let secs = SPEED_INTERVAL.as_secs_f64() + now.duration_since(self.speed_at).as_secs_f64();
        self.speed_at = now + SPEED_INTERVAL;
        let stats = st.proto.stats();
        let speed = Speed::from_deltas(
            stats.bytes_sent - self.speed_counts.0,
            stats.bytes_received - self.speed_counts.1,
            secs,
        );
        self.speed_counts = (stats.bytes_sent, stats.bytes_received);
        st.speed.send_replace(speed);
        let State {
            proto, sessions, ..
        } = st;
        for (h, slot) in sessions.iter_mut() {
            if let Some(s) = proto.session_ref(*h) {
                let ss = s.stats();
                slot.speed = Speed::from_deltas(
                    ss.bytes_sent.saturating_sub(slot.last_counts.0),
                    ss.bytes_received.saturating_sub(slot.last_counts.1),
                    secs,
                );
                slot.last_counts = (ss.bytes_sent, ss.bytes_received);
            }
        }
    }

    /// With no handle left anywhere, closes every session; true once all are gone.
    fn wind_down(&mut self, st: &mut State, now: Instant) -> bool {
        let flushed = self.out_sent == self.out_meta.len();
        if st.endpoint_refs == 0 && st.closing {
            // Closed and no endpoint handle left: the CLOSE frames went out with the
            // last flush; free the socket now (its port may be bound again at once)
            // rather than linger for peers that may never answer.
            if flushed {
                for slot in st.sessions.values_mut() {
                    if slot.close.is_none() {
                        slot.close = Some(CloseReason::Local {
                            code: 0,
                            reason: "endpoint closed".into(),
                        });
                    }
                }
                st.wake_all_sessions();
            }
            return flushed;
        }
        if st.endpoint_refs > 0 || st.session_refs() > 0 {
            return false;
        }
        let handles: Vec<_> = st.sessions.keys().copied().collect();
        for h in handles {
            if let Some(slot) = st.sessions.get_mut(&h) {
                slot.released = true;
                if slot.close.is_none() {
                    if let Some(s) = st.proto.session(h) {
                        s.close(now, 0, "endpoint dropped");
                    }
                }
            }
        }
        st.proto.session_count() == 0 && flushed
    }

    fn fail(&mut self, st: &mut State, error: std::io::Error) {
        tracing::error!(target: "udpack", %error, "socket failed; closing every session");
        st.driver_done = true;
        st.closing = true;
        for slot in st.sessions.values_mut() {
            if slot.close.is_none() {
                slot.close = Some(CloseReason::Transport {
                    code: transport_error::INTERNAL,
                    reason: format!("socket error: {error}"),
                    by_peer: false,
                });
            }
        }
        // The driver is gone after this: every waiter must see the end now.
        st.wake_all_sessions();
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let shared = this.shared.clone();
        let mut st = shared.lock();
        if !st.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.driver = Some(cx.waker().clone());
        }
        // Bounded, so a deadline that stays in the past cannot spin the task forever.
        for _ in 0..64 {
            let mut busy = false;
            let mut batches = 0;
            while batches < RECV_BATCHES_PER_POLL {
                // Each batch is stamped as it is taken from the socket, after the
                // receive call (see `Socket::poll_recv`): a stamp older than an ACK's
                // arrival gives an RTT sample below the path's, which then sets min_rtt
                // too low for ten seconds and reads as a standing queue.
                let st = &mut *st;
                match this.socket.poll_recv(cx, |now, addr, datagram| {
                    st.proto.handle(now, addr, datagram)
                }) {
                    Poll::Ready(Ok(_)) => batches += 1,
                    Poll::Ready(Err(e)) => {
                        this.fail(st, e);
                        return Poll::Ready(());
                    }
                    Poll::Pending => break,
                }
            }
            if batches == RECV_BATCHES_PER_POLL {
                busy = true;
            }
            // Packets are stamped with this time as they are built and sent.
            let now = Instant::now();
            st.proto.handle_timeout(now);
            this.flush(cx, &mut st, now);
            st.dispatch_events(now);
            this.update_speed(&mut st, now);
            if this.wind_down(&mut st, now) {
                st.driver_done = true;
                return Poll::Ready(());
            }
            let next = match st.proto.poll_timeout() {
                Some(t) => t.min(this.speed_at),
                None => this.speed_at,
            };
            if this.timer_at != Some(next) {
                this.timer_at = Some(next);
                this.timer
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(next));
            }
            if this.timer.as_mut().poll(cx).is_ready() {
                this.timer_at = None;
                continue;
            }
            if busy {
                // More may be waiting in the socket: come back after other tasks ran.
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Tells the state machine the wall clock at `now` (it has none of its own).
pub(crate) fn tell_wall_clock(proto: &mut udpack_proto::Endpoint, now: Instant) {
    if let Ok(since_epoch) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        proto.set_unix_time(now, since_epoch);
    }
}
