//! Key update and the AEAD usage limits (RFC 9001 §6, in UDPack's terms; PROTOCOL.md
//! §2.11).
//!
//! Both directions move to the next key phase together, and both sides derive the same
//! chain of keys (`PacketKeys::next`), so nothing but the phase bit is ever sent.
//!
//! ```text
//!  phase n --we sealed limit/2 packets, a phase-n packet of ours was acked,
//!            the keys of phase n-1 are gone--> phase n+1            (we start it)
//!  phase n --a packet with the flipped bit opens with the next keys, and we
//!            had acked a phase-n packet of the peer in phase n--> phase n+1
//!                                                                   (the peer starts it)
//! ```
//!
//! One update is in flight at a time: we start none until a packet we sent in the
//! current phase was acknowledged, and a peer that starts one before it can know we
//! saw its current phase is closed with `KEY_UPDATE_ERROR`. The old opening key stays
//! for 3 PTO after the first packet of the new phase arrived, for reordered packets.
//! The next opening key is derived the first time a packet with the flipped bit
//! arrives and kept: an idle session holds no extra key schedule, and the phase bit is
//! in clear anyway, so the time the derivation takes tells an observer nothing new.

use std::ops::DerefMut;
use std::time::{Duration, Instant};

use bytes::BufMut;

use super::error::transport_error;
use super::Session;
use crate::config::TransportConfig;
use crate::packet::{key_phase, PacketKey, PacketKeys};

/// Sealed packets kept back at the confidentiality limit for the CLOSE packets (at
/// most a quarter of the limit, for the low limits of tests).
const CLOSE_PACKETS: u64 = 64;

/// An old phase's opening key, kept for packets reordered across the update.
struct OldKey {
    open: PacketKey,
    /// Set when the first packet of the new phase arrived: 3 PTO after it.
    discard_at: Option<Instant>,
}

/// What came of opening a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opened {
    /// It opened with the current or the old keys: `len` bytes of plaintext.
    Packet(usize),
    /// It opened with the next keys: the peer started an update, and we follow.
    Updated(usize),
    /// It opened with the next keys, but the peer cannot have seen our ACK of its
    /// current phase yet: it updated twice without waiting. Nothing changed.
    EarlyUpdate,
    /// It did not authenticate (and counts toward the integrity limit).
    Failed,
}

/// The session's packet protection across key phases, and the AEAD usage counters.
pub(crate) struct SessionKeys {
    current: PacketKeys,
    /// The phase bit of the current keys.
    phase: bool,
    /// Key updates so far (either side's).
    updates: u64,
    /// The next phase's opening key, derived on first need.
    next_open: Option<Box<PacketKey>>,
    old: Option<Box<OldKey>>,
    /// The smallest packet number opened with the current keys: older packets with the
    /// other phase bit are the old phase's, newer ones the next phase's.
    recv_start: Option<u64>,
    /// The first packet number we sealed with the current keys.
    send_start: Option<u64>,
    /// A packet we sent in the current phase was acknowledged.
    confirmed: bool,
    /// We sent, in the current phase, an ACK of a packet the peer sent in it: only
    /// then may the peer update again.
    peer_may_update: bool,
    /// Packets sealed with the current sending key.
    sealed: u64,
    /// Packets that failed authentication, over the session's life.
    failed: u64,
    confidentiality_limit: u64,
    integrity_limit: u64,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("phase", &self.phase)
            .field("updates", &self.updates)
            .field("sealed", &self.sealed)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// Phase 0, from the handshake's keys; the limits from the (normalized) config.
    pub fn new(keys: PacketKeys, config: &TransportConfig) -> Self {
        SessionKeys {
            current: keys,
            phase: false,
            updates: 0,
            next_open: None,
            old: None,
            recv_start: None,
            send_start: None,
            confirmed: false,
            peer_may_update: false,
            sealed: 0,
            failed: 0,
            confidentiality_limit: config.aead_confidentiality_limit,
            integrity_limit: config.aead_integrity_limit,
        }
    }

    /// The phase bit of what we send.
    pub fn phase(&self) -> bool {
        self.phase
    }

    /// Key updates so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// True while the sending key may seal another packet: never past the limit.
    pub fn can_seal(&self) -> bool {
        self.sealed < self.confidentiality_limit
    }

    /// Seals with the current sending key and counts the use.
    pub fn seal<P>(&mut self, number: u64, packet: &mut P, header_len: usize)
    where
        P: DerefMut<Target = [u8]> + BufMut,
    {
        self.current.seal(number, packet, header_len);
        self.sealed += 1;
        self.send_start.get_or_insert(number);
    }

    /// Opens a packet, whose clear header is its first `header_len` bytes, with the keys
    /// its phase bit and number point to. `linger` is how long the old key outlives the
    /// first packet of a new phase (3 PTO).
    pub fn open(
        &mut self,
        now: Instant,
        number: u64,
        packet: &mut [u8],
        header_len: usize,
        linger: Duration,
    ) -> Opened {
        let phase = key_phase(packet);
        let opened = if phase == self.phase {
            self.current.open(number, packet, header_len).map(|n| {
                self.on_current(now, number, linger);
                Opened::Packet(n)
            })
        } else if let Some(old) = self
            .old
            .as_ref()
            .filter(|_| self.recv_start.is_none_or(|s| number < s))
        {
            old.open
                .open(number, packet, header_len)
                .map(Opened::Packet)
        } else {
            let current = &self.current;
            let next = self
                .next_open
                .get_or_insert_with(|| Box::new(current.next_open()));
            next.open(number, packet, header_len).map(|n| {
                if !self.peer_may_update {
                    return Opened::EarlyUpdate;
                }
                self.advance();
                self.on_current(now, number, linger);
                Opened::Updated(n)
            })
        };
        opened.unwrap_or_else(|_| {
            self.failed += 1;
            Opened::Failed
        })
    }

    /// A packet opened with the current keys.
    fn on_current(&mut self, now: Instant, number: u64, linger: Duration) {
        self.recv_start = Some(self.recv_start.map_or(number, |s| s.min(number)));
        if let Some(old) = self.old.as_mut().filter(|o| o.discard_at.is_none()) {
            old.discard_at = now.checked_add(linger);
        }
    }

    /// True when the integrity limit is passed: the session must close.
    pub fn integrity_exceeded(&self) -> bool {
        self.failed > self.integrity_limit
    }

    /// True when we should start an update: half the sending key is used, the current
    /// phase is confirmed, and the old key is gone (so at most two phases are live).
    pub fn wants_update(&self) -> bool {
        self.sealed >= self.confidentiality_limit / 2 && self.confirmed && self.old.is_none()
    }

    /// True when the sending key is used up but for the CLOSE packets: the update did
    /// not happen in time.
    pub fn must_close(&self) -> bool {
        let reserve = CLOSE_PACKETS.min(self.confidentiality_limit / 4);
        self.sealed >= self.confidentiality_limit - reserve
    }

    /// Moves to the next phase on our own initiative.
    pub fn start_update(&mut self) {
        self.advance();
    }

    fn advance(&mut self) {
        let next = self.current.next();
        let old = std::mem::replace(&mut self.current, next);
        self.old = Some(Box::new(OldKey {
            open: old.into_open(),
            discard_at: None,
        }));
        self.next_open = None;
        self.phase = !self.phase;
        self.updates += 1;
        self.recv_start = None;
        self.send_start = None;
        self.confirmed = false;
        self.peer_may_update = false;
        self.sealed = 0;
    }

    /// The peer acknowledged packets up to `largest`.
    pub fn on_acked(&mut self, largest: u64) {
        if self.send_start.is_some_and(|s| largest >= s) {
            self.confirmed = true;
        }
    }

    /// We sent an ACK frame acknowledging up to `largest`, in the current phase.
    pub fn on_ack_sent(&mut self, largest: u64) {
        if self.recv_start.is_some_and(|s| largest >= s) {
            self.peer_may_update = true;
        }
    }

    /// When the old opening key goes.
    pub fn discard_at(&self) -> Option<Instant> {
        self.old.as_ref().and_then(|o| o.discard_at)
    }

    /// Drops the old opening key if its time has come.
    pub fn discard_old(&mut self, now: Instant) {
        if self.discard_at().is_some_and(|t| now >= t) {
            self.old = None;
        }
    }
}

impl Session {
    /// Before each packet: starts a key update when half the sending key is used, and
    /// closes the session when the key is used up because no update could happen.
    pub(super) fn check_key_limits(&mut self, now: Instant) {
        let Some(keys) = self.keys.as_mut() else {
            return;
        };
        if keys.must_close() {
            self.close_with_error(
                now,
                transport_error::AEAD_LIMIT_REACHED,
                "key used up: the peer did not confirm the key update",
            );
        } else if keys.wants_update() {
            keys.start_update();
            let updates = keys.updates();
            tracing::debug!(target: "udpack", sid = %self.id_str(), updates, "key update");
        }
    }

    /// Opens a data packet in place (its clear header is its first `header_len` bytes);
    /// returns its plaintext length, or `None` when it is dropped (and the session
    /// closed, if a limit or a rule says so).
    pub(super) fn open_packet(
        &mut self,
        now: Instant,
        number: u64,
        datagram: &mut [u8],
        header_len: usize,
    ) -> Option<usize> {
        let linger = self.recovery.rtt.pto(self.config.max_ack_delay) * 3;
        let keys = self.keys.as_mut()?;
        match keys.open(now, number, datagram, header_len, linger) {
            Opened::Packet(n) | Opened::Updated(n) => Some(n),
            Opened::EarlyUpdate => {
                self.stats.packets_dropped += 1;
                self.close_with_error(
                    now,
                    transport_error::KEY_UPDATE_ERROR,
                    "key update before the previous one was acknowledged",
                );
                None
            }
            Opened::Failed => {
                self.stats.packets_dropped += 1;
                if keys.integrity_exceeded() {
                    self.close_with_error(
                        now,
                        transport_error::AEAD_LIMIT_REACHED,
                        "too many packets failed authentication",
                    );
                }
                None
            }
        }
    }

    /// The timer that drops the old phase's opening key.
    pub(super) fn key_discard_deadline(&self) -> Option<Instant> {
        self.keys.as_ref().and_then(SessionKeys::discard_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_millis(30);
    /// The header of the test packets: their numbers are small, cut to 2 bytes.
    const HEADER_LEN: usize = 1 + 8 + 2;

    fn pair() -> (SessionKeys, SessionKeys) {
        let config = TransportConfig {
            aead_confidentiality_limit: 64,
            ..TransportConfig::default()
        }
        .normalized();
        (
            SessionKeys::new(PacketKeys::new(&[1; 32], &[2; 32]), &config),
            SessionKeys::new(PacketKeys::new(&[2; 32], &[1; 32]), &config),
        )
    }

    fn packet(keys: &mut SessionKeys, pn: u64) -> Vec<u8> {
        let mut p = Vec::new();
        let header_len = crate::packet::encode_data_header(&mut p, 7, pn, None, keys.phase());
        p.extend_from_slice(b"frames");
        keys.seal(pn, &mut p, header_len);
        p
    }

    fn deliver(from: &mut SessionKeys, to: &mut SessionKeys, now: Instant, pn: u64) -> Opened {
        let mut p = packet(from, pn);
        to.open(now, pn, &mut p, HEADER_LEN, LINGER)
    }

    #[test]
    fn one_update_at_a_time_and_the_old_key_only_for_a_while() {
        let now = Instant::now();
        let (mut a, mut b) = pair();
        for pn in 0..32 {
            assert_eq!(deliver(&mut a, &mut b, now, pn), Opened::Packet(6));
        }
        assert!(!a.wants_update(), "half used, but nothing acknowledged yet");
        a.on_acked(31);
        assert!(a.wants_update());
        // b sealed a packet in phase 0 that arrives after a moved on.
        let mut late = packet(&mut b, 0);
        a.start_update();
        assert!(a.phase() && a.updates() == 1 && !a.wants_update());

        // b has not acknowledged a's phase 0 in phase 0: a's update is refused.
        assert_eq!(deliver(&mut a, &mut b, now, 32), Opened::EarlyUpdate);
        assert!(!b.phase());
        b.on_ack_sent(31);
        assert_eq!(deliver(&mut a, &mut b, now, 33), Opened::Updated(6));
        assert!(b.phase() && b.updates() == 1);
        // a's old phase-0 packet still opens with the old key: none of b's phase-1
        // packets arrived yet.
        assert_eq!(
            a.open(now, 0, &mut late, HEADER_LEN, LINGER),
            Opened::Packet(6)
        );

        // Confirmed, but the old key is still there: no new update yet.
        for pn in 34..64 {
            deliver(&mut a, &mut b, now, pn);
        }
        a.on_acked(40);
        assert!(!a.wants_update(), "old key still live");
        // b's first phase-1 packet starts the old key's last 3 PTO at a.
        assert_eq!(deliver(&mut b, &mut a, now, 1), Opened::Packet(6));
        assert_eq!(a.discard_at(), Some(now + LINGER));
        a.discard_old(now + LINGER / 2);
        assert!(!a.wants_update());
        a.discard_old(now + LINGER);
        assert!(a.wants_update());
        // A packet of the old phase now fails, and counts.
        let mut old = packet(
            &mut SessionKeys::new(
                PacketKeys::new(&[2; 32], &[1; 32]),
                &TransportConfig::default(),
            ),
            0,
        );
        assert_eq!(a.open(now, 0, &mut old, HEADER_LEN, LINGER), Opened::Failed);
        assert_eq!(a.failed, 1);
    }

    #[test]
    fn a_bad_packet_with_the_flipped_bit_changes_nothing() {
        let now = Instant::now();
        let (mut a, mut b) = pair();
        assert_eq!(deliver(&mut a, &mut b, now, 0), Opened::Packet(6));
        b.on_ack_sent(0);
        let mut p = packet(&mut a, 1);
        p[0] ^= crate::packet::KEY_PHASE;
        assert_eq!(b.open(now, 1, &mut p, HEADER_LEN, LINGER), Opened::Failed);
        assert!(!b.phase() && b.updates() == 0 && b.failed == 1);
        assert_eq!(deliver(&mut a, &mut b, now, 2), Opened::Packet(6));
    }

    #[test]
    fn the_sending_key_is_never_used_past_its_limit() {
        let (mut a, _) = pair();
        let mut pn = 0;
        while !a.must_close() {
            assert!(a.can_seal());
            packet(&mut a, pn);
            pn += 1;
        }
        assert_eq!(pn, 64 - 16, "a quarter of a low limit is kept for CLOSE");
        while a.can_seal() {
            packet(&mut a, pn);
            pn += 1;
        }
        assert_eq!(pn, 64);
    }
}
