//! The one path from a short header to a sealed datagram: every data packet (stream
//! data, control frames, ACKs, path probes, CLOSE) starts with [`Session::begin_packet`]
//! and ends with [`Session::finish_packet`], which holds it back if it would break the
//! amplification limit, seals it in the current key phase, records it for loss
//! recovery and counts it.

use std::net::SocketAddr;
use std::time::Instant;

use super::error::transport_error;
use super::pending::SentFrames;
use super::{Session, Transmit};
use crate::datagram::DatagramBuf;
use crate::packet::{data_header_len, encode_data_header};
use crate::recovery::{SentPacket, PACKET_NUMBER_LIMIT};

/// How a packet counts for loss recovery and congestion control.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    /// The peer must acknowledge it.
    ack_eliciting: bool,
    /// It counts in bytes in flight and takes a delivery-rate snapshot.
    in_flight: bool,
    /// What it carried, to requeue if it is lost.
    frames: SentFrames,
}

impl Sent {
    /// A packet without retransmittable frames (an ACK, a CLOSE).
    pub fn control() -> Self {
        Sent::default()
    }

    /// A path probe: acknowledged, but on another path, so not in flight on this one.
    pub fn probe() -> Self {
        Sent {
            ack_eliciting: true,
            ..Sent::default()
        }
    }

    /// A path MTU probe: a path probe (not in flight) whose frames say what it was.
    pub fn mtu_probe(frames: SentFrames) -> Self {
        Sent {
            frames,
            ..Sent::probe()
        }
    }

    /// A packet of the data path; ack-eliciting ones are in flight.
    pub fn data(ack_eliciting: bool, frames: SentFrames) -> Self {
        Sent {
            ack_eliciting,
            in_flight: ack_eliciting,
            frames,
        }
    }
}

/// Packet numbers kept back for the CLOSE packets of a session that ran out of them.
pub(crate) const CLOSE_PACKET_NUMBERS: u64 = 64;
/// A record of sent packets longer than this many (and than four of the largest
/// windows' worth) means
/// the peer does not acknowledge what it receives: the session closes rather than grow
/// the record without end.
const MAX_SENT_RECORD: usize = 64 * 1024;

impl Session {
    /// Closes the session when it can no longer send safely: its packet numbers are
    /// running out, or the peer leaves everything unacknowledged.
    pub(super) fn check_send_limits(&mut self, now: Instant) {
        if self.recovery.next_packet_number() >= PACKET_NUMBER_LIMIT - CLOSE_PACKET_NUMBERS {
            self.close_with_error(now, transport_error::INTERNAL, "packet numbers exhausted");
            return;
        }
        self.transmit.peak_window = self.transmit.peak_window.max(self.cc.window());
        let mtu = usize::from(self.mtu.current()).max(1);
        let windows = (self.transmit.peak_window as usize / mtu).saturating_mul(4);
        if self.recovery.record_len() > MAX_SENT_RECORD.max(windows) {
            self.close_with_error(
                now,
                transport_error::PROTOCOL_VIOLATION,
                "the peer does not acknowledge",
            );
        }
    }

    /// Writes the header of the next packet into `buf`; returns its number. `None`
    /// before the session has keys.
    pub(super) fn begin_packet(&self, buf: &mut DatagramBuf<'_>) -> Option<u64> {
        let keys = self.keys.as_ref()?;
        let pn = self.recovery.next_packet_number();
        if pn >= PACKET_NUMBER_LIMIT || !keys.can_seal() {
            return None;
        }
        encode_data_header(
            buf,
            self.remote_sid,
            pn,
            self.recovery.largest_acked(),
            keys.phase(),
        );
        Some(pn)
    }

    /// Seals the packet in `buf` and records it. `None` (and `buf` cleared) when it
    /// would exceed the amplification budget of an unvalidated peer address: it is
    /// still owed and goes out once the address is proven.
    pub(super) fn finish_packet(
        &mut self,
        now: Instant,
        buf: &mut DatagramBuf<'_>,
        pn: u64,
        destination: SocketAddr,
        sent: Sent,
    ) -> Option<Transmit> {
        let size = buf.len() + crate::packet::TAG_LEN;
        if destination == self.path.remote && !self.path.spend(size as u64) {
            buf.clear();
            return None;
        }
        let keys = self.keys.as_mut()?;
        let header_len = buf.first().map_or(0, |&b| data_header_len(b));
        keys.seal(pn, buf, header_len);
        if let Some(largest) = sent.frames.largest_acked {
            keys.on_ack_sent(largest);
        }
        let rate = sent.in_flight.then(|| {
            self.rate
                .on_sent(now, size as u64, self.recovery.bytes_in_flight())
        });
        self.recovery.on_sent(SentPacket {
            time: now,
            size: size as u16,
            ack_eliciting: sent.ack_eliciting,
            in_flight: sent.in_flight,
            rate,
            frames: sent.frames,
        });
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += size as u64;
        Some(Transmit {
            destination,
            size,
            mtu_probe: false,
        })
    }
}
