//! The application a simulated node runs: it opens streams, writes patterned data on
//! them, reads and verifies what the peer sends, and records what happens.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::{CloseReason, Endpoint, Event, SessionHandle, StreamError, StreamId};

/// What the application on a node does with its sessions.
#[derive(Default)]
pub struct App {
    /// Streams to open on each connected session, with the bytes to send on each.
    pub open: Vec<u64>,
    pub sessions: Vec<SessionHandle>,
    pub connected: Vec<SessionHandle>,
    pub connect_errors: Vec<CloseReason>,
    pub closed: Vec<(SessionHandle, CloseReason)>,
    pub goaways: Vec<(SessionHandle, u64)>,
    pub senders: BTreeMap<(SessionHandle, StreamId), Sender>,
    pub receivers: BTreeMap<(SessionHandle, StreamId), Receiver>,
    /// Once every stream it opened is finished and every stream it accepted ended,
    /// send GOAWAY with this code.
    pub goaway_when_done: Option<u64>,
    pub goaway_sent: Vec<SessionHandle>,
    /// Bytes received in order by all receivers.
    pub bytes_read: u64,
    /// (time, bytes_read) samples for goodput windows.
    pub read_log: Vec<(Instant, u64)>,
    pub errors: Vec<String>,
    /// When set, every event is recorded here with the time it was polled.
    pub event_log: Option<Vec<(Instant, SessionHandle, Event)>>,
    /// When set, the application only takes sessions and records events (connections,
    /// closes, the event log): the test drives the streams itself.
    pub passive: bool,
    scratch: Vec<u8>,
}

pub struct Sender {
    pub seed: u64,
    pub total: u64,
    pub written: u64,
    pub finished: bool,
    pub acked: bool,
    pub peer_ended: bool,
}

pub struct Receiver {
    pub seed: u64,
    pub read: u64,
    pub ended: bool,
    pub expected: Option<u64>,
}

/// The byte of the pattern of stream seed `seed` at `offset`.
pub fn pattern_word(seed: u64, word: u64) -> u64 {
    let mut z = seed ^ word.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Length of the pattern table: a prime, so a byte misplaced by any offset shorter than
/// a block lands on a different table byte.
const PATTERN_PERIOD: usize = 65_521;

fn pattern_table() -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..PATTERN_PERIOD as u64)
            .map(|i| pattern_word(0x5eed, i) as u8)
            .collect()
    })
}

/// The stream pattern: a table byte, shifted per stream and whitened per table period,
/// so that bytes from another offset or another stream do not match.
pub fn fill_pattern(seed: u64, offset: u64, out: &mut [u8]) {
    let table = pattern_table();
    let shift = (seed % PATTERN_PERIOD as u64) as usize;
    let mut done = 0;
    while done < out.len() {
        let off = offset + done as u64;
        let block = off / PATTERN_PERIOD as u64;
        let pos = ((off % PATTERN_PERIOD as u64) as usize + shift) % PATTERN_PERIOD;
        let in_block = PATTERN_PERIOD - (off % PATTERN_PERIOD as u64) as usize;
        let n = (PATTERN_PERIOD - pos).min(in_block).min(out.len() - done);
        let mask = pattern_word(seed, block) as u8;
        for (o, t) in out[done..done + n].iter_mut().zip(&table[pos..pos + n]) {
            *o = t ^ mask;
        }
        done += n;
    }
}

fn stream_seed(h: SessionHandle, id: StreamId, server_side_opened: bool) -> u64 {
    // Both ends derive the same seed from what they both know: the stream id and who
    // opened it. Session handles differ per side, so they are not used.
    let _ = h;
    id.0.wrapping_mul(1_000_003) ^ u64::from(server_side_opened)
}

impl App {
    pub fn sending(open: Vec<u64>) -> Self {
        App {
            open,
            ..App::default()
        }
    }

    pub(super) fn step(&mut self, now: Instant, ep: &mut Endpoint, is_server: bool) {
        while let Some(h) = ep.accept() {
            self.sessions.push(h);
        }
        while let Some((h, ev)) = ep.poll_event() {
            if let Some(log) = &mut self.event_log {
                log.push((now, h, ev.clone()));
            }
            match ev {
                Event::Connected => {
                    self.connected.push(h);
                    let Some(s) = ep.session(h) else { continue };
                    for (i, &size) in self.open.iter().enumerate() {
                        match s.open_stream() {
                            Ok(id) => {
                                self.senders.insert(
                                    (h, id),
                                    Sender {
                                        seed: stream_seed(h, id, is_server),
                                        total: size,
                                        written: 0,
                                        finished: false,
                                        acked: false,
                                        peer_ended: false,
                                    },
                                );
                            }
                            Err(e) => self.errors.push(format!("open stream {i}: {e}")),
                        }
                    }
                }
                Event::StreamOpened(_) if !self.passive => {
                    if let Some(s) = ep.session(h) {
                        while let Some(id) = s.accept_stream() {
                            // This side sends nothing back on the peer's streams.
                            if let Err(e) = s.finish(id) {
                                self.errors.push(format!("finish accepted {id}: {e}"));
                            }
                            self.receivers.insert(
                                (h, id),
                                Receiver {
                                    seed: stream_seed(h, id, !is_server),
                                    read: 0,
                                    ended: false,
                                    expected: None,
                                },
                            );
                        }
                    }
                }
                Event::StreamFinished(id) => {
                    if let Some(s) = self.senders.get_mut(&(h, id)) {
                        s.acked = true;
                    }
                }
                Event::Closed(r) => {
                    if matches!(r, CloseReason::ConnectFailed(_)) {
                        self.connect_errors.push(r.clone());
                    }
                    self.closed.push((h, r));
                }
                Event::GoAway { code, .. } => self.goaways.push((h, code)),
                _ => {}
            }
        }
        if self.passive {
            return;
        }
        let buf = &mut self.scratch;
        buf.resize(64 * 1024, 0);
        for (&(h, id), snd) in self.senders.iter_mut() {
            let Some(s) = ep.session(h) else { continue };
            while snd.written < snd.total {
                let room = match s.write_capacity(id) {
                    Ok(0) => break,
                    Ok(room) => room,
                    Err(_) => u64::MAX,
                };
                let n = ((snd.total - snd.written).min(room) as usize).min(buf.len());
                fill_pattern(snd.seed, snd.written, &mut buf[..n]);
                match s.write(id, &buf[..n]) {
                    Ok(w) => snd.written += w as u64,
                    Err(StreamError::Blocked) => break,
                    Err(e) => {
                        self.errors.push(format!("write {id}: {e}"));
                        snd.written = snd.total;
                    }
                }
            }
            if snd.written == snd.total && !snd.finished {
                snd.finished = true;
                if let Err(e) = s.finish(id) {
                    self.errors.push(format!("finish {id}: {e}"));
                }
            }
        }
        // The peer sends nothing on our streams: read its end so the stream completes.
        for (&(h, id), snd) in self.senders.iter_mut() {
            if snd.peer_ended {
                continue;
            }
            let Some(s) = ep.session(h) else { continue };
            match s.read(id, 1024) {
                Ok(None) => snd.peer_ended = true,
                Ok(Some(_)) => self
                    .errors
                    .push(format!("unexpected data on our stream {id}")),
                Err(StreamError::Blocked) | Err(StreamError::SessionClosed) => {}
                Err(e) => self.errors.push(format!("read our stream {id}: {e}")),
            }
        }
        let expect = &mut self.scratch;
        for (&(h, id), rcv) in self.receivers.iter_mut() {
            if rcv.ended {
                continue;
            }
            let Some(s) = ep.session(h) else { continue };
            loop {
                match s.read(id, 64 * 1024) {
                    Ok(Some(data)) => {
                        fill_pattern(rcv.seed, rcv.read, &mut expect[..data.len()]);
                        if data[..] != expect[..data.len()] {
                            self.errors
                                .push(format!("stream {id}: wrong bytes at offset {}", rcv.read));
                        }
                        rcv.read += data.len() as u64;
                        self.bytes_read += data.len() as u64;
                    }
                    Ok(None) => {
                        rcv.ended = true;
                        break;
                    }
                    Err(StreamError::Blocked) | Err(StreamError::SessionClosed) => break,
                    Err(e) => {
                        self.errors.push(format!("read {id}: {e}"));
                        rcv.ended = true;
                        break;
                    }
                }
            }
        }
        self.read_log.push((now, self.bytes_read));
        if let Some(code) = self.goaway_when_done {
            for &h in &self.connected.clone() {
                if self.goaway_sent.contains(&h) {
                    continue;
                }
                let sends_done = self
                    .senders
                    .iter()
                    .filter(|(k, _)| k.0 == h)
                    .all(|(_, s)| s.finished);
                if sends_done && !self.open.is_empty() {
                    if let Some(s) = ep.session(h) {
                        s.goaway(code, "done");
                        self.goaway_sent.push(h);
                    }
                }
            }
        }
    }

    /// Bytes read between two virtual times.
    pub fn bytes_between(&self, from: Instant, to: Instant) -> u64 {
        let at = |t: Instant| {
            let i = self.read_log.partition_point(|(x, _)| *x <= t);
            if i == 0 {
                0
            } else {
                self.read_log[i - 1].1
            }
        };
        at(to) - at(from)
    }
}
