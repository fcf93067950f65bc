//! The peer's address: the amplification limit while it is unproven (at most three
//! times what it sent), and migration: a packet from a new address starts a
//! PATH_CHALLENGE, and the session moves only when the answer comes back.

use std::net::SocketAddr;
use std::time::Instant;

use rand::RngCore;

use super::packet_builder::Sent;
use super::{Session, Transmit};
use crate::datagram::DatagramBuf;
use crate::frame::Frame;
use crate::packet::{MAX_DATA_HEADER_LEN, TAG_LEN};

/// Probe timeouts a new peer address gets to answer a PATH_CHALLENGE before it is
/// given up.
pub(crate) const PATH_PROBE_TRIES: u32 = 8;
/// Size of a probe: header, PATH_CHALLENGE, maybe PATH_RESPONSE, tag.
const PROBE_SIZE: u64 = (MAX_DATA_HEADER_LEN + 1 + 8 + 1 + 8 + TAG_LEN) as u64;

/// A new peer address being validated.
#[derive(Debug)]
pub(crate) struct PathProbe {
    pub addr: SocketAddr,
    challenge: [u8; 8],
    bytes_received: u64,
    pub bytes_sent: u64,
    pub next_send: Instant,
    tries: u32,
}

/// The peer's address and what we may send to it.
#[derive(Debug)]
pub(crate) struct PathState {
    /// The peer's current (validated) address.
    pub remote: SocketAddr,
    /// False until the address is proven: sends are capped at 3x received.
    pub validated: bool,
    amp_received: u64,
    amp_sent: u64,
    /// A new address being validated.
    pub probe: Option<PathProbe>,
    /// The address and challenge of the last probe given up: a new probe of the same
    /// address asks the same, so a late answer to the old one still counts.
    given_up: Option<(SocketAddr, [u8; 8])>,
}

impl PathState {
    pub fn new(remote: SocketAddr, validated: bool) -> Self {
        PathState {
            remote,
            validated,
            amp_received: 0,
            amp_sent: 0,
            probe: None,
            given_up: None,
        }
    }

    /// Bytes received from the unproven address (hellos).
    pub fn on_received(&mut self, n: u64) {
        self.amp_received += n;
    }

    /// Bytes we may still send to the current address.
    pub fn budget(&self) -> u64 {
        if self.validated {
            u64::MAX
        } else {
            (self.amp_received * 3).saturating_sub(self.amp_sent)
        }
    }

    /// Takes `n` bytes from the budget; false (and nothing taken) if they do not fit.
    pub fn spend(&mut self, n: u64) -> bool {
        if self.validated {
            return true;
        }
        if n > self.budget() {
            return false;
        }
        self.amp_sent += n;
        true
    }

    /// True while `addr` is being validated.
    pub fn probing(&self, addr: SocketAddr) -> bool {
        self.probe.as_ref().is_some_and(|p| p.addr == addr)
    }
}

impl Session {
    /// An authentic packet came from an address that is not the peer's: validate it,
    /// unless it is an old reordered one.
    pub(super) fn on_new_address(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        number: u64,
        largest_before: Option<u64>,
        len: usize,
    ) {
        if let Some(p) = self.path.probe.as_mut().filter(|p| p.addr == remote) {
            p.bytes_received += len as u64;
            return;
        }
        // Only the newest packets move the session: old reordered ones do not.
        if largest_before.is_some_and(|l| number < l) {
            return;
        }
        let challenge = match self.path.given_up {
            Some((addr, c)) if addr == remote => c,
            _ => {
                let mut c = [0u8; 8];
                self.rng.fill_bytes(&mut c);
                c
            }
        };
        tracing::debug!(target: "udpack", sid = %self.id_str(), %remote, "validating new peer address");
        self.path.probe = Some(PathProbe {
            addr: remote,
            challenge,
            bytes_received: len as u64,
            bytes_sent: 0,
            next_send: now,
            tries: 0,
        });
    }

    /// A PATH_RESPONSE: if it answers our challenge, the session moves there.
    pub(super) fn on_path_response(&mut self, data: [u8; 8]) {
        if let Some(p) = self.path.probe.take() {
            if p.challenge == data {
                tracing::debug!(target: "udpack", sid = %self.id_str(), to = %p.addr, "peer address validated; session moved");
                self.path.remote = p.addr;
                self.path.validated = true;
                self.path.given_up = None;
                let size = self.mtu.on_path_change(p.addr);
                self.set_datagram_size(size);
            } else {
                self.path.probe = Some(p);
            }
        }
    }

    /// A PATH_CHALLENGE (with a PATH_RESPONSE if one is owed) to an address being
    /// validated.
    pub(super) fn transmit_probe(
        &mut self,
        now: Instant,
        buf: &mut DatagramBuf<'_>,
    ) -> Option<Transmit> {
        let pto = self.recovery.rtt.pto(self.config.max_ack_delay);
        let probe = self.path.probe.as_mut()?;
        if now < probe.next_send {
            return None;
        }
        self.keys.as_ref()?;
        if probe.tries >= PATH_PROBE_TRIES {
            // The address never answered: stay where we were.
            self.path.given_up = Some((probe.addr, probe.challenge));
            self.path.probe = None;
            return None;
        }
        if probe.bytes_sent + PROBE_SIZE > probe.bytes_received * 3 {
            // Wait for the peer to send more from there. The wait counts as a try, so
            // an address that stays silent is given up like one that does not answer.
            probe.tries += 1;
            probe.next_send = now + pto;
            return None;
        }
        let (addr, challenge) = (probe.addr, probe.challenge);
        let pn = self.begin_packet(buf)?;
        Frame::PathChallenge(challenge).encode(buf);
        if let Some((data, to)) = self.pending.path_response {
            if to == addr {
                Frame::PathResponse(data).encode(buf);
                self.pending.path_response = None;
            }
        }
        let t = self.finish_packet(now, buf, pn, addr, Sent::probe())?;
        if let Some(probe) = self.path.probe.as_mut() {
            probe.bytes_sent += t.size as u64;
            probe.tries += 1;
            probe.next_send = now + pto;
        }
        Some(t)
    }
}
