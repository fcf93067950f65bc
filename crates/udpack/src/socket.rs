//! Batched UDP I/O: `recvmmsg` and GRO on receive, GSO on send, where the kernel has
//! them (through `quinn-udp`), over a tokio socket.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Instant;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Largest datagram (or GRO super-datagram) one receive slot takes.
const RECV_SLOT: usize = 64 * 1024;
/// Socket buffer sizes asked for: a burst at a high rate must not overflow them.
const SOCKET_BUFFER: usize = 8 << 20;

/// A UDP socket with batched I/O.
#[derive(Debug)]
pub(crate) struct Socket {
    io: UdpSocket,
    state: UdpSocketState,
    recv_buf: Box<[u8]>,
    meta: Vec<RecvMeta>,
}

impl Socket {
    pub(crate) fn new(io: UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new((&io).into())?;
        // Best effort: the kernel caps these at its limits.
        let _ = state.set_send_buffer_size((&io).into(), SOCKET_BUFFER);
        let _ = state.set_recv_buffer_size((&io).into(), SOCKET_BUFFER);
        Ok(Socket {
            io,
            state,
            recv_buf: vec![0u8; RECV_SLOT * BATCH_SIZE].into_boxed_slice(),
            meta: vec![RecvMeta::default(); BATCH_SIZE],
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// True if the socket cannot set the don't-fragment bit (then path MTU discovery
    /// is off: fragments would pass a probe the path cannot carry whole).
    pub(crate) fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    /// Most datagrams one send may carry (1 without GSO).
    pub(crate) fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }

    /// Receives a batch; calls `on_datagram` for every datagram in it, with the time the
    /// batch was taken and in the receive slot it landed in (the protocol opens it there
    /// and copies out what it keeps).
    /// `Pending` once the socket is empty.
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        mut on_datagram: impl FnMut(Instant, SocketAddr, &mut [u8]),
    ) -> Poll<io::Result<usize>> {
        loop {
            if self.io.poll_recv_ready(cx).is_pending() {
                return Poll::Pending;
            }
            let Socket {
                io,
                state,
                recv_buf,
                meta,
            } = self;
            // On the stack: no allocation per receive call.
            let mut chunks = recv_buf.chunks_mut(RECV_SLOT);
            let mut slices: [IoSliceMut<'_>; BATCH_SIZE] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            let res = io.try_io(Interest::READABLE, || {
                state.recv((&*io).into(), &mut slices, meta)
            });
            match res {
                Ok(n) => {
                    // Stamped once the datagrams are in hand: a time read before the
                    // call can be older than their arrival (by however long the thread
                    // was preempted in between), and an ACK stamped before it arrived
                    // gives an RTT sample below the path's.
                    let now = Instant::now();
                    let mut count = 0;
                    for (m, buf) in meta.iter().zip(recv_buf.chunks_mut(RECV_SLOT)).take(n) {
                        let stride = if m.stride == 0 { m.len } else { m.stride };
                        for seg in buf[..m.len].chunks_mut(stride.max(1)) {
                            on_datagram(now, m.addr, seg);
                            count += 1;
                        }
                    }
                    return Poll::Ready(Ok(count));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // ICMP errors surface here on some systems; they do not stop the socket.
                Err(e) if is_transient(&e) => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Sends `contents` (one datagram, or several of `segment_size` bytes with GSO).
    /// `Pending` if the socket buffer is full; the caller keeps the batch and retries.
    pub(crate) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        destination: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> Poll<io::Result<()>> {
        let transmit = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        loop {
            if self.io.poll_send_ready(cx).is_pending() {
                return Poll::Pending;
            }
            let Socket { io, state, .. } = self;
            match io.try_io(Interest::WRITABLE, || state.send((&*io).into(), &transmit)) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
