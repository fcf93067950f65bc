//! Packet layer: the clear headers, AEAD sealing of data packets with the packet number
//! as nonce, the key schedule the packet keys come from, and the replay window.
//!
//! ```text
//! data packet:  [0x40|len|phase 1B] [dst session id 8B] [packet number 2, 4 or 8B] [ciphertext .. | tag 16B]
//! long packet:  [0x80|type 1B] [version 4B] [session id 8B] [type-specific body]
//! ```
//! All integers big-endian. See `docs/PROTOCOL.md` for the long-packet bodies.

use std::ops::DerefMut;

use bytes::BufMut;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hkdf;
use zeroize::Zeroizing;

use crate::coding::{DecodeError, Reader};

/// The protocol version this implementation speaks. Version 2 added the HELLO's
/// timestamp and cookie and the COOKIE answer; version 3 truncated the packet numbers
/// of data packets and let a STREAM frame run to the packet's end. A peer of another
/// version is refused with VERSION_MISMATCH (PROTOCOL.md §2.6).
pub const VERSION: u32 = 0x5544_0003;

/// First byte of a data packet in key phase 0 with a 2-byte packet number.
pub const DATA_PACKET: u8 = 0x40;
/// The key phase bit of a data packet's first byte: flipped at every key update.
pub const KEY_PHASE: u8 = 0x01;
/// The two bits of a data packet's first byte that give its packet number's length:
/// `00` 2 bytes, `01` 4 bytes, `10` 8 bytes (`11` is invalid).
const NUMBER_LEN_BITS: u8 = 0x06;
/// Long packet type bytes.
pub mod long {
    /// Client hello: Noise NK message 1, padded.
    pub const HELLO: u8 = 0x80;
    /// Server reply: Noise NK message 2 (accept or authenticated reject).
    pub const REPLY: u8 = 0x81;
    /// Server could not decrypt the hello: probably the client pinned a wrong key.
    pub const UNDECRYPTABLE: u8 = 0x82;
    /// Server does not speak the hello's version; the body lists versions it does.
    pub const VERSION_MISMATCH: u8 = 0x83;
    /// Server under load: echo this cookie in your hello (stateless, smaller than
    /// the hello it answers).
    pub const COOKIE: u8 = 0x84;
}

/// Size of the longest data packet header (an 8-byte packet number).
pub const MAX_DATA_HEADER_LEN: usize = 1 + 8 + 8;
/// Size of a long packet header.
pub const LONG_HEADER_LEN: usize = 1 + 4 + 8;
/// AEAD tag size.
pub const TAG_LEN: usize = 16;
/// Smallest datagram a hello is padded to, so a server reply is never an amplifier.
pub const MIN_HELLO_LEN: usize = 1200;

/// A parsed clear header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A data packet for session `dst`. `number` is the packet number as sent: its
    /// low `number_len` bytes; [`decode_packet_number`] restores the whole of it.
    Data {
        dst: u64,
        number: u64,
        number_len: usize,
    },
    /// A handshake-phase packet.
    Long { ty: u8, version: u32, sid: u64 },
}

impl Header {
    /// Parses the clear header at the front of a datagram; returns it and its length.
    pub fn decode(datagram: &[u8]) -> Result<(Header, usize), DecodeError> {
        let mut r = Reader::new(datagram);
        let first = r.u8()?;
        if let Some(number_len) = number_len(first) {
            let dst = r.u64()?;
            let mut number = 0u64;
            for _ in 0..number_len {
                number = number << 8 | u64::from(r.u8()?);
            }
            if r.remaining() < TAG_LEN {
                return Err(DecodeError::UnexpectedEnd);
            }
            Ok((
                Header::Data {
                    dst,
                    number,
                    number_len,
                },
                r.position(),
            ))
        } else if first & 0xc0 == 0x80 {
            let version = r.u32()?;
            let sid = r.u64()?;
            Ok((
                Header::Long {
                    ty: first,
                    version,
                    sid,
                },
                r.position(),
            ))
        } else {
            Err(DecodeError::Invalid("first byte"))
        }
    }
}

/// The key phase bit of a data packet (the endpoint routes by session id only; which
/// keys open the packet is the session's business).
pub fn key_phase(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| b & KEY_PHASE != 0)
}

/// The packet number length a data packet's first byte gives; `None` if the byte is
/// not a data packet's.
fn number_len(first: u8) -> Option<usize> {
    if first & !(NUMBER_LEN_BITS | KEY_PHASE) != DATA_PACKET {
        return None;
    }
    match (first & NUMBER_LEN_BITS) >> 1 {
        0 => Some(2),
        1 => Some(4),
        2 => Some(8),
        _ => None,
    }
}

/// The header length of a data packet whose first byte is `first` (one this
/// implementation wrote, or one [`Header::decode`] accepted).
pub fn data_header_len(first: u8) -> usize {
    1 + 8 + number_len(first).unwrap_or(8)
}

/// True if `first` is the first byte of a data packet.
pub fn is_data_packet(first: u8) -> bool {
    number_len(first).is_some()
}

/// Writes a data packet header and returns its length; `phase` is the sender's key
/// phase bit. The packet number is cut to the fewest bytes (2, 4 or 8) that span
/// twice the distance from the largest number the peer acknowledged (RFC 9000
/// §17.1), so the receiver can restore it from the largest it received.
pub fn encode_data_header<B: BufMut>(
    buf: &mut B,
    dst: u64,
    number: u64,
    largest_acked: Option<u64>,
    phase: bool,
) -> usize {
    let unacked = largest_acked.map_or(number.saturating_add(1), |l| number.saturating_sub(l));
    let (code, len) = if unacked < 1 << 15 {
        (0u8, 2)
    } else if unacked < 1 << 31 {
        (1, 4)
    } else {
        (2, 8)
    };
    buf.put_u8(DATA_PACKET | code << 1 | if phase { KEY_PHASE } else { 0 });
    buf.put_u64(dst);
    buf.put_uint(number, len);
    1 + 8 + len
}

/// The whole packet number of a packet whose number came as its low `len` bytes
/// (`truncated`), given the largest number received so far: the candidate nearest to
/// the next expected one (RFC 9000 §A.3).
pub fn decode_packet_number(largest: Option<u64>, truncated: u64, len: usize) -> u64 {
    if len >= 8 {
        return truncated;
    }
    let expected = largest.map_or(0, |l| l + 1);
    let window = 1u64 << (8 * len);
    let half = window / 2;
    let candidate = (expected & !(window - 1)) | truncated;
    if candidate + half <= expected && candidate < (1 << 62) - window {
        candidate + window
    } else if candidate > expected + half && candidate >= window {
        candidate - window
    } else {
        candidate
    }
}

/// Writes a long packet header.
pub fn encode_long_header(buf: &mut Vec<u8>, ty: u8, sid: u64) {
    buf.push(ty);
    buf.extend_from_slice(&VERSION.to_be_bytes());
    buf.extend_from_slice(&sid.to_be_bytes());
}

fn nonce(number: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&number.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// HKDF label of a secret's packet key.
const KEY_LABEL: &[u8] = b"udpack key";
/// HKDF label of the next key phase's secret (RFC 9001's "quic ku", in our name).
const UPDATE_LABEL: &[u8] = b"udpack ku";

/// A 32-byte secret, zeroed when dropped.
type Secret = Zeroizing<[u8; 32]>;

/// HKDF-Expand-SHA256(secret, label, 32): the secret is already uniform (a Noise split
/// output or an earlier expansion), so it serves as the PRK without an extract step.
fn expand(secret: &[u8; 32], label: &[u8]) -> Secret {
    let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, secret);
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is one SHA-256 block of output, always within HKDF's bounds.
    prk.expand(&[label], hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut out[..]))
        .expect("32-byte HKDF-SHA256 output");
    out
}

/// One direction's AES-256-GCM key of one key phase.
pub struct PacketKey(LessSafeKey);

impl std::fmt::Debug for PacketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PacketKey(..)")
    }
}

impl PacketKey {
    /// The key of `secret`: HKDF-Expand(secret, "udpack key"). The packet key is never
    /// the secret itself, so a leaked packet key does not give the next phases' keys.
    fn from_secret(secret: &[u8; 32]) -> Self {
        let key = expand(secret, KEY_LABEL);
        // A 32-byte key is always the right length for AES-256-GCM.
        PacketKey(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &key[..]).expect("32-byte key"),
        ))
    }

    /// Encrypts `packet[header_len..]` in place and appends the tag. The header is
    /// authenticated as associated data.
    pub fn seal<P>(&self, number: u64, packet: &mut P, header_len: usize)
    where
        P: DerefMut<Target = [u8]> + BufMut,
    {
        let (header, payload) = packet.split_at_mut(header_len);
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce(number), Aad::from(&*header), payload)
            // ring fails only for inputs beyond 2^38 bytes; a datagram never is.
            .expect("datagram-sized payload");
        packet.put_slice(tag.as_ref());
    }

    /// Decrypts `packet[header_len..]` in place; returns the plaintext length.
    pub fn open(
        &self,
        number: u64,
        packet: &mut [u8],
        header_len: usize,
    ) -> Result<usize, ring::error::Unspecified> {
        let (header, payload) = packet.split_at_mut(header_len);
        let plain = self
            .0
            .open_in_place(nonce(number), Aad::from(&*header), payload)?;
        Ok(plain.len())
    }
}

/// The keys of one key phase, both directions, and the secrets the next phase's keys
/// are derived from. The secrets are zeroed when dropped; the AES key schedules inside
/// ring are not (ring offers no way to).
pub struct PacketKeys {
    seal: PacketKey,
    open: PacketKey,
    seal_secret: Secret,
    open_secret: Secret,
}

impl std::fmt::Debug for PacketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PacketKeys(..)")
    }
}

impl PacketKeys {
    /// Phase-0 keys from the handshake's split: `seal` is the secret of what we send,
    /// `open` of what we get.
    pub fn new(seal: &[u8; 32], open: &[u8; 32]) -> Self {
        PacketKeys {
            seal: PacketKey::from_secret(seal),
            open: PacketKey::from_secret(open),
            seal_secret: Zeroizing::new(*seal),
            open_secret: Zeroizing::new(*open),
        }
    }

    /// The keys of the next key phase: each secret becomes HKDF-Expand(secret,
    /// "udpack ku"). Both sides derive the same chain, so no key is ever sent.
    pub fn next(&self) -> PacketKeys {
        PacketKeys::new(
            &expand(&self.seal_secret, UPDATE_LABEL),
            &expand(&self.open_secret, UPDATE_LABEL),
        )
    }

    /// The next phase's opening key alone, to try a packet with the flipped phase bit.
    pub fn next_open(&self) -> PacketKey {
        PacketKey::from_secret(&expand(&self.open_secret, UPDATE_LABEL))
    }

    /// Keeps only the opening key: what an old phase still needs for late packets.
    pub fn into_open(self) -> PacketKey {
        self.open
    }

    /// Seals with this phase's sending key (see [`PacketKey::seal`]).
    pub fn seal<P>(&self, number: u64, packet: &mut P, header_len: usize)
    where
        P: DerefMut<Target = [u8]> + BufMut,
    {
        self.seal.seal(number, packet, header_len);
    }

    /// Opens with this phase's receiving key (see [`PacketKey::open`]).
    pub fn open(
        &self,
        number: u64,
        packet: &mut [u8],
        header_len: usize,
    ) -> Result<usize, ring::error::Unspecified> {
        self.open.open(number, packet, header_len)
    }
}

/// Rejects packet numbers seen before, and ones too old to tell.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Largest accepted packet number, plus one (0 = nothing yet).
    top: u64,
    /// A ring of bits: packet `n` is bit `n % 64` of word `(n / 64) % WORDS`. Moving
    /// the top clears only the words it enters (RFC 6479), not a shift of the whole
    /// window per packet; one word more than the window holds keeps the oldest
    /// accepted packets' bits while the top's word is being filled.
    bits: Box<[u64; Self::WORDS]>,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            top: 0,
            bits: Box::new([0; Self::WORDS]),
        }
    }
}

impl ReplayWindow {
    const WORDS: usize = 65;
    /// How far behind the largest packet number a packet may still be accepted.
    pub const SIZE: u64 = 64 * (Self::WORDS as u64 - 1);

    /// True if `n` is new and not too old. Does not record it.
    pub fn check(&self, n: u64) -> bool {
        if n >= self.top {
            return true;
        }
        let back = self.top - 1 - n;
        back < Self::SIZE && !self.get(n)
    }

    /// Records `n` as accepted (call after the packet authenticated).
    pub fn accept(&mut self, n: u64) {
        if n >= self.top {
            self.advance_to(n);
            self.top = n + 1;
            self.set(n);
        } else if self.top - 1 - n < Self::SIZE {
            self.set(n);
        }
    }

    /// Largest accepted packet number.
    pub fn largest(&self) -> Option<u64> {
        self.top.checked_sub(1)
    }

    fn slot(n: u64) -> (usize, u64) {
        (((n / 64) % Self::WORDS as u64) as usize, 1 << (n % 64))
    }

    fn get(&self, n: u64) -> bool {
        let (w, bit) = Self::slot(n);
        self.bits[w] & bit != 0
    }

    fn set(&mut self, n: u64) {
        let (w, bit) = Self::slot(n);
        self.bits[w] |= bit;
    }

    /// Clears the words the top enters on its way to `n` (they hold bits of packets a
    /// whole ring older).
    fn advance_to(&mut self, n: u64) {
        // Nothing accepted yet: every word is clear.
        let Some(last) = self.top.checked_sub(1) else {
            return;
        };
        let (from, to) = (last / 64, n / 64);
        if to - from >= Self::WORDS as u64 {
            self.bits.fill(0);
            return;
        }
        for word in from + 1..=to {
            self.bits[(word % Self::WORDS as u64) as usize] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let a = PacketKeys::new(&[1; 32], &[2; 32]);
        let b = PacketKeys::new(&[2; 32], &[1; 32]);
        let mut p = Vec::new();
        let len = encode_data_header(&mut p, 42, 7, None, false);
        p.extend_from_slice(b"hello");
        a.seal(7, &mut p, len);
        let (h, hl) = Header::decode(&p).unwrap();
        assert_eq!(
            h,
            Header::Data {
                dst: 42,
                number: 7,
                number_len: 2
            }
        );
        assert_eq!((hl, data_header_len(p[0])), (len, len));
        let mut q = p.clone();
        let n = b.open(7, &mut q, hl).unwrap();
        assert_eq!(&q[hl..hl + n], b"hello");
        // Any flipped bit, header or body, fails authentication.
        for i in 0..p.len() {
            let mut t = p.clone();
            t[i] ^= 0x10;
            assert!(b.open(7, &mut t, hl).is_err(), "byte {i}");
        }
        // Wrong packet number (nonce) fails.
        assert!(b.open(8, &mut p.clone(), hl).is_err());
    }

    #[test]
    fn key_updates_derive_the_same_chain_on_both_sides() {
        let a0 = PacketKeys::new(&[1; 32], &[2; 32]);
        let b0 = PacketKeys::new(&[2; 32], &[1; 32]);
        let (a1, b1) = (a0.next(), b0.next());
        let (a2, b2) = (a1.next(), b1.next());
        let mut p = Vec::new();
        let hl = encode_data_header(&mut p, 1, 3, None, true);
        p.extend_from_slice(b"phase two");
        a2.seal(3, &mut p, hl);
        // Only the matching phase opens it; the precomputed next key of phase 1 does.
        for wrong in [&b0, &b1] {
            assert!(wrong.open(3, &mut p.clone(), hl).is_err());
        }
        assert!(b1.next_open().open(3, &mut p.clone(), hl).is_ok());
        let n = b2.open(3, &mut p, hl).expect("opens");
        assert_eq!(&p[hl..hl + n], b"phase two");
        // The packet key is not the raw secret: a split output used directly fails.
        let raw = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[1; 32]).expect("key"));
        let mut q = Vec::new();
        let hl = encode_data_header(&mut q, 1, 0, None, false);
        PacketKey(raw).seal(0, &mut q, hl);
        assert!(b0.open(0, &mut q, hl).is_err());
    }

    #[test]
    fn the_first_byte_gives_the_key_phase_and_the_number_length_and_nothing_else() {
        let mut p = Vec::new();
        encode_data_header(&mut p, 5, 6, None, true);
        p.extend_from_slice(&[0; 8 + TAG_LEN]);
        assert_eq!(p[0], DATA_PACKET | KEY_PHASE);
        assert!(key_phase(&p));
        assert!(matches!(
            Header::decode(&p),
            Ok((
                Header::Data {
                    dst: 5,
                    number: 6,
                    number_len: 2
                },
                11
            ))
        ));
        for (first, len) in [(0x42u8, 4), (0x43, 4), (0x44, 8), (0x45, 8)] {
            p[0] = first;
            let (h, hl) = Header::decode(&p).expect("a data packet");
            assert_eq!(hl, 1 + 8 + len, "{first:#x}");
            assert!(matches!(h, Header::Data { number_len, .. } if number_len == len));
        }
        for first in [0x46u8, 0x47, 0x48, 0x4f, 0x60, 0x7f, 0x00] {
            p[0] = first;
            assert!(Header::decode(&p).is_err(), "{first:#x}");
        }
    }

    #[test]
    fn packet_numbers_are_cut_to_what_the_unacknowledged_span_needs() {
        let cases = [
            (0, None, 2),
            (32_766, None, 2),
            (32_767, None, 4),
            (40_000, Some(10_000), 2),
            (42_768, Some(10_000), 4),
            (1 << 40, Some((1 << 40) - (1 << 31)), 8),
            (1 << 40, None, 8),
        ];
        for (number, acked, len) in cases {
            let mut p = Vec::new();
            assert_eq!(
                encode_data_header(&mut p, 1, number, acked, false),
                1 + 8 + len,
                "{number} {acked:?}"
            );
        }
    }

    #[test]
    fn a_cut_number_is_restored_across_its_wrap() {
        // RFC 9000 §A.3's example: largest 0xa82f30ea, 2 bytes 0x9b32.
        assert_eq!(
            decode_packet_number(Some(0xa82f_30ea), 0x9b32, 2),
            0xa82f_9b32
        );
        // Just past a wrap, and a late packet from just before it.
        assert_eq!(decode_packet_number(Some(0xfffe), 0x0003, 2), 0x1_0003);
        assert_eq!(decode_packet_number(Some(0x1_0003), 0xfffe, 2), 0xfffe);
        assert_eq!(decode_packet_number(None, 0x0005, 2), 5);
        assert_eq!(decode_packet_number(Some(7), 0x1234_5678, 8), 0x1234_5678);
    }

    #[test]
    fn replay_window_rejects_duplicates_and_old() {
        let mut w = ReplayWindow::default();
        assert!(w.check(0));
        w.accept(0);
        assert!(!w.check(0));
        w.accept(10);
        assert!(w.check(5));
        w.accept(5);
        assert!(!w.check(5));
        w.accept(10 + ReplayWindow::SIZE + 3);
        assert!(!w.check(5), "too old");
        assert!(!w.check(10 + ReplayWindow::SIZE + 3));
        assert!(w.check(10 + ReplayWindow::SIZE + 2));
    }

    proptest! {
        #[test]
        fn data_packets_round_trip(
            dst in any::<u64>(),
            number in any::<u64>(),
            behind in 0u64..5_000,
            lag in 0u64..100_000,
            late in 0u64..4_096,
            payload in proptest::collection::vec(any::<u8>(), 0..1400),
            key in any::<[u8; 32]>(),
            phase in any::<bool>(),
        ) {
            let keys = PacketKeys::new(&key, &key);
            let number = number >> 2;
            // The sender has `lag` packets before this one unacknowledged; the
            // receiver has the acknowledged ones and up to `behind` more, or (a late
            // packet) `late` after this one: the number comes back whole.
            let acked = number.checked_sub(1 + lag);
            let largest = if late > 0 {
                Some(number + late)
            } else {
                number.checked_sub(1 + behind.min(lag))
            };
            let mut p = Vec::new();
            let len = encode_data_header(&mut p, dst, number, acked, phase);
            p.extend_from_slice(&payload);
            keys.seal(number, &mut p, len);
            prop_assert_eq!(p.len(), len + payload.len() + TAG_LEN);
            let (h, hl) = Header::decode(&p).expect("header");
            let Header::Data { dst: d, number: cut, number_len } = h else {
                return Err(TestCaseError::fail("not a data header"));
            };
            prop_assert_eq!(d, dst);
            prop_assert_eq!(hl, len);
            prop_assert_eq!(decode_packet_number(largest, cut, number_len), number);
            prop_assert_eq!(key_phase(&p), phase);
            let n = keys.open(number, &mut p, hl).expect("opens");
            prop_assert_eq!(&p[hl..hl + n], &payload[..]);
        }

        #[test]
        fn long_headers_round_trip(
            ty in prop::sample::select(vec![long::HELLO, long::REPLY, long::UNDECRYPTABLE, long::VERSION_MISMATCH, long::COOKIE]),
            sid in any::<u64>(),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut p = Vec::new();
            encode_long_header(&mut p, ty, sid);
            p.extend_from_slice(&body);
            let (h, hl) = Header::decode(&p).expect("header");
            prop_assert_eq!(h, Header::Long { ty, version: VERSION, sid });
            prop_assert_eq!(hl, LONG_HEADER_LEN);
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok((h, hl)) = Header::decode(&bytes) {
                prop_assert!(hl <= bytes.len());
                if let Header::Data { .. } = h {
                    prop_assert!(bytes.len() >= hl + TAG_LEN);
                }
            }
        }

        #[test]
        fn replay_window_matches_model(ns in proptest::collection::vec(0u64..20_000, 1..300)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::BTreeSet::new();
            let mut top = 0u64;
            for n in ns {
                let fresh = !seen.contains(&n) && (n >= top || top - 1 - n < ReplayWindow::SIZE);
                prop_assert_eq!(w.check(n), fresh);
                if fresh {
                    w.accept(n);
                    seen.insert(n);
                    top = top.max(n + 1);
                }
            }
        }

        #[test]
        fn header_decode_never_panics(d in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Header::decode(&d);
        }
    }
}
