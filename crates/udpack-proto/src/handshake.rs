//! The Noise NK handshake (via `snow`): the client knows the server's static X25519 key;
//! its token and transport parameters travel encrypted in message 1 (the HELLO), the
//! server's answer (accept with its session id and parameters, or an authenticated
//! reject with a code) in message 2 (the REPLY). Both sides then take the two transport
//! keys from the Noise split.
//!
//! Also the clear parts of a HELLO the server reads before any X25519: the client's
//! ephemeral key (the replay key) and the cookie a loaded server asked for, which sits
//! after the Noise message so that message stays byte for byte the one first sent.

use bytes::BufMut;
use thiserror::Error;

use crate::coding::{put_varint, DecodeError, Reader};
use crate::keys::{PrivateKey, PublicKey};
use crate::packet::{
    encode_long_header, long, PacketKeys, LONG_HEADER_LEN, MIN_HELLO_LEN, VERSION,
};

/// The Noise protocol name; part of the version's definition.
pub const NOISE_PARAMS: &str = "Noise_NK_25519_ChaChaPoly_BLAKE2s";
/// Longest token a client may present.
pub const MAX_TOKEN_LEN: usize = 512;
/// Longest reject reason text.
pub const MAX_REJECT_REASON: usize = 128;

const STATUS_ACCEPT: u8 = 0;
const STATUS_REJECT: u8 = 1;

/// Why a handshake step failed.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// Noise could not decrypt or authenticate a message.
    #[error("handshake message failed to authenticate")]
    Crypto,
    /// The decrypted contents are malformed.
    #[error("malformed handshake message: {0}")]
    Malformed(#[from] DecodeError),
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("token longer than {MAX_TOKEN_LEN} bytes")]
    TokenTooLong,
}

/// Limits each side announces in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportParams {
    /// Session-wide receive credit granted at start.
    pub max_data: u64,
    /// Per-stream receive credit granted at start.
    pub max_stream_data: u64,
    /// Streams the peer may open at start.
    pub max_streams: u64,
    /// Idle timeout in milliseconds (0 = none); the session uses the smaller non-zero one.
    pub idle_timeout_ms: u64,
    /// Largest datagram the sender of these parameters accepts.
    pub max_datagram_size: u64,
    /// Longest the sender of these parameters delays an ACK, in milliseconds.
    pub max_ack_delay_ms: u64,
}

impl TransportParams {
    fn encode<B: BufMut>(&self, buf: &mut B) {
        for v in [
            self.max_data,
            self.max_stream_data,
            self.max_streams,
            self.idle_timeout_ms,
            self.max_datagram_size,
            self.max_ack_delay_ms,
        ] {
            put_varint(buf, v);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let p = TransportParams {
            max_data: r.varint()?,
            max_stream_data: r.varint()?,
            max_streams: r.varint()?,
            idle_timeout_ms: r.varint()?,
            max_datagram_size: r.varint()?,
            max_ack_delay_ms: r.varint()?,
        };
        p.validate().map_err(DecodeError::Invalid)?;
        Ok(p)
    }

    /// Refuses parameters no honest peer sends: credit too small to make progress
    /// (a zero window would freeze every write to the peer), counts beyond what stream
    /// ids can carry, timers that overflow a clock.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.max_data < MIN_CREDIT {
            return Err("transport parameters: max_data below the minimum");
        }
        if self.max_stream_data < MIN_CREDIT {
            return Err("transport parameters: max_stream_data below the minimum");
        }
        if self.max_streams > MAX_STREAMS {
            return Err("transport parameters: max_streams beyond stream ids");
        }
        if self.idle_timeout_ms > MAX_IDLE_TIMEOUT_MS {
            return Err("transport parameters: idle_timeout_ms too long");
        }
        if !(MIN_DATAGRAM_SIZE..=MAX_DATAGRAM_SIZE).contains(&self.max_datagram_size) {
            return Err("transport parameters: max_datagram_size out of range");
        }
        if self.max_ack_delay_ms >= MAX_ACK_DELAY_MS {
            return Err("transport parameters: max_ack_delay_ms too long");
        }
        Ok(())
    }
}

/// Smallest `max_data` and `max_stream_data` a peer may announce (and this side
/// announces, whatever its configuration says).
pub const MIN_CREDIT: u64 = 16 * 1024;
/// Most streams a peer may allow: stream ids carry the index in 62 bits minus two.
pub const MAX_STREAMS: u64 = 1 << 60;
/// Longest idle timeout a peer may announce: one day.
pub const MAX_IDLE_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;
/// Smallest datagram every UDPack path must carry.
pub const MIN_DATAGRAM_SIZE: u64 = 1200;
/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM_SIZE: u64 = 65_507;
/// ACK delays are announced below this many milliseconds.
pub const MAX_ACK_DELAY_MS: u64 = 1 << 14;

fn builder() -> snow::Builder<'static> {
    // The constant name always parses.
    snow::Builder::new(NOISE_PARAMS.parse().expect("valid noise params"))
}

fn prologue(sid: u64) -> [u8; 20] {
    let mut p = [0u8; 20];
    p[..8].copy_from_slice(b"udpack/1");
    p[8..12].copy_from_slice(&VERSION.to_be_bytes());
    p[12..].copy_from_slice(&sid.to_be_bytes());
    p
}

/// Reads a u16-length-prefixed Noise message from a long packet body.
fn noise_message(body: &[u8]) -> Result<&[u8], DecodeError> {
    let mut r = Reader::new(body);
    let len = u16::from_be_bytes(r.array()?) as usize;
    r.bytes(len)
}

/// The client's side of a handshake in progress.
pub struct ClientHandshake {
    state: snow::HandshakeState,
}

impl std::fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientHandshake")
    }
}

/// How the server answered a hello.
#[derive(Debug)]
pub enum Reply {
    /// Accepted: use `server_sid` as the destination of data packets.
    Accepted {
        server_sid: u64,
        params: TransportParams,
        keys: Box<PacketKeys>,
    },
    /// Refused, authenticated by the server's static key.
    Rejected { code: u64, reason: String },
}

impl ClientHandshake {
    /// Starts a handshake; writes the whole HELLO datagram into `out`.
    pub fn start(
        server: &PublicKey,
        client_sid: u64,
        token: &[u8],
        params: &TransportParams,
        timestamp: u64,
        out: &mut Vec<u8>,
    ) -> Result<Self, HandshakeError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(HandshakeError::TokenTooLong);
        }
        let pro = prologue(client_sid);
        let mut state = builder()
            .remote_public_key(server.as_bytes())
            .prologue(&pro)
            .build_initiator()
            .map_err(|_| HandshakeError::Crypto)?;
        // The plaintext holds the token: wiped when it goes.
        let mut payload = zeroize::Zeroizing::new(Vec::with_capacity(token.len() + 32));
        put_varint(&mut *payload, token.len() as u64);
        payload.extend_from_slice(token);
        params.encode(&mut *payload);
        payload.extend_from_slice(&timestamp.to_be_bytes());
        let mut msg = vec![0u8; payload.len() + 64 + 16];
        let n = state
            .write_message(&payload, &mut msg)
            .map_err(|_| HandshakeError::Crypto)?;
        out.clear();
        encode_long_header(out, long::HELLO, client_sid);
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(&msg[..n]);
        if out.len() < MIN_HELLO_LEN {
            out.resize(MIN_HELLO_LEN, 0);
        }
        Ok(ClientHandshake { state })
    }

    /// Reads the body (after the long header) of a REPLY.
    pub fn on_reply(&mut self, body: &[u8]) -> Result<Reply, HandshakeError> {
        let msg = noise_message(body)?;
        let mut payload = vec![0u8; msg.len()];
        let n = self
            .state
            .read_message(msg, &mut payload)
            .map_err(|_| HandshakeError::Crypto)?;
        let mut r = Reader::new(&payload[..n]);
        match r.u8()? {
            STATUS_ACCEPT => {
                let server_sid = r.u64()?;
                let params = TransportParams::decode(&mut r)?;
                let (to_server, to_client) = self.state.dangerously_get_raw_split();
                Ok(Reply::Accepted {
                    server_sid,
                    params,
                    keys: Box::new(PacketKeys::new(&to_server, &to_client)),
                })
            }
            STATUS_REJECT => {
                let code = r.varint()?;
                let len = r.varint_len()?.min(MAX_REJECT_REASON);
                let reason = String::from_utf8_lossy(r.bytes(len)?).into_owned();
                Ok(Reply::Rejected { code, reason })
            }
            _ => Err(DecodeError::Invalid("reply status").into()),
        }
    }
}

/// A hello the server decrypted: the token and parameters, and the state to answer it.
pub struct ServerHello {
    state: snow::HandshakeState,
    /// The client's session id (destination of packets to the client).
    pub client_sid: u64,
    /// The token the client presented; wiped when the hello is dropped.
    pub token: zeroize::Zeroizing<Vec<u8>>,
    /// The client's transport parameters.
    pub params: TransportParams,
    /// The client's wall clock when it wrote the hello, in nanoseconds since the Unix
    /// epoch; 0 when it had none.
    pub timestamp: u64,
}

impl std::fmt::Debug for ServerHello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHello")
            .field("client_sid", &self.client_sid)
            .finish_non_exhaustive()
    }
}

impl ServerHello {
    /// Decrypts a HELLO body (after the long header). Fails with
    /// [`HandshakeError::Crypto`] when the client used another server key.
    pub fn read(key: &PrivateKey, client_sid: u64, body: &[u8]) -> Result<Self, HandshakeError> {
        let msg = noise_message(body)?;
        let pro = prologue(client_sid);
        let secret = key.to_bytes();
        let mut state = builder()
            .local_private_key(&secret)
            .prologue(&pro)
            .build_responder()
            .map_err(|_| HandshakeError::Crypto)?;
        // The plaintext holds the token: wiped when it goes.
        let mut payload = zeroize::Zeroizing::new(vec![0u8; msg.len()]);
        let n = state
            .read_message(msg, &mut payload)
            .map_err(|_| HandshakeError::Crypto)?;
        let mut r = Reader::new(&payload[..n]);
        let len = r.varint_len()?;
        if len > MAX_TOKEN_LEN {
            return Err(HandshakeError::TokenTooLong);
        }
        let token = zeroize::Zeroizing::new(r.bytes(len)?.to_vec());
        let params = TransportParams::decode(&mut r)?;
        let timestamp = r.u64()?;
        Ok(ServerHello {
            state,
            client_sid,
            token,
            params,
            timestamp,
        })
    }

    /// Accepts: writes the REPLY datagram into `out` and returns the session's keys.
    pub fn accept(
        mut self,
        server_sid: u64,
        params: &TransportParams,
        out: &mut Vec<u8>,
    ) -> Result<PacketKeys, HandshakeError> {
        let mut payload = vec![STATUS_ACCEPT];
        payload.extend_from_slice(&server_sid.to_be_bytes());
        params.encode(&mut payload);
        self.write(&payload, out)?;
        let (to_server, to_client) = self.state.dangerously_get_raw_split();
        Ok(PacketKeys::new(&to_client, &to_server))
    }

    /// Rejects with `code`: writes an authenticated REPLY datagram into `out`.
    pub fn reject(
        mut self,
        code: u64,
        reason: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), HandshakeError> {
        let reason = &reason.as_bytes()[..reason.len().min(MAX_REJECT_REASON)];
        let mut payload = vec![STATUS_REJECT];
        put_varint(&mut payload, code);
        put_varint(&mut payload, reason.len() as u64);
        payload.extend_from_slice(reason);
        self.write(&payload, out)
    }

    fn write(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), HandshakeError> {
        let mut msg = vec![0u8; payload.len() + 64 + 16];
        let n = self
            .state
            .write_message(payload, &mut msg)
            .map_err(|_| HandshakeError::Crypto)?;
        out.clear();
        encode_long_header(out, long::REPLY, self.client_sid);
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(&msg[..n]);
        Ok(())
    }
}

/// Length of the hello digest echoed in clear answers.
pub const HELLO_DIGEST_LEN: usize = 16;

/// The first 16 bytes of SHA-256 over a whole HELLO datagram. Clear answers echo it, so
/// the client acts only on answers to the hello it really sent, as it sent it: an
/// off-path forger cannot produce it, and a hello corrupted on the way gets an answer
/// the client ignores (it retries instead of reporting a key mismatch).
pub fn hello_digest(hello: &[u8]) -> [u8; HELLO_DIGEST_LEN] {
    let d = ring::digest::digest(&ring::digest::SHA256, hello);
    let mut out = [0u8; HELLO_DIGEST_LEN];
    out.copy_from_slice(&d.as_ref()[..HELLO_DIGEST_LEN]);
    out
}

/// Writes the clear "could not decrypt your hello" answer.
pub fn encode_undecryptable(client_sid: u64, hello: &[u8], out: &mut Vec<u8>) {
    out.clear();
    encode_long_header(out, long::UNDECRYPTABLE, client_sid);
    out.extend_from_slice(&hello_digest(hello));
}

/// Writes the clear "version not spoken" answer: the hello digest, then the versions
/// we speak.
pub fn encode_version_mismatch(client_sid: u64, hello: &[u8], out: &mut Vec<u8>) {
    out.clear();
    encode_long_header(out, long::VERSION_MISMATCH, client_sid);
    out.extend_from_slice(&hello_digest(hello));
    out.extend_from_slice(&VERSION.to_be_bytes());
}

/// Size of the clear header that precedes every long packet body.
pub const BODY_OFFSET: usize = LONG_HEADER_LEN;

/// Length of a cookie, in a COOKIE answer and in the hello that echoes it.
pub const COOKIE_LEN: usize = 16;
/// Length of the echo in a COOKIE answer: the start of the hello's ephemeral key.
pub const COOKIE_ECHO_LEN: usize = 16;
/// Marks the cookie after a hello's Noise message (padding is zeros).
const EXT_COOKIE: u8 = 0x01;
/// Noise's ephemeral public key opens message 1, in clear.
pub(crate) const EPHEMERAL_LEN: usize = 32;

/// Where the hello's Noise message ends, if it is all there.
fn noise_end(hello: &[u8]) -> Option<usize> {
    let body = hello.get(BODY_OFFSET..)?;
    let msg = noise_message(body).ok()?;
    Some(BODY_OFFSET + 2 + msg.len())
}

/// The client's ephemeral public key, in clear at the front of the Noise message:
/// fresh for every handshake, so the server uses it as the hello's replay key, and
/// unknown to anyone who has not seen the hello, so a COOKIE echoes it.
pub fn hello_ephemeral(hello: &[u8]) -> Option<&[u8; EPHEMERAL_LEN]> {
    let msg = noise_message(hello.get(BODY_OFFSET..)?).ok()?;
    msg.get(..EPHEMERAL_LEN)?.try_into().ok()
}

/// The cookie a hello echoes, if any: right after its Noise message, marked `0x01`.
pub fn hello_cookie(hello: &[u8]) -> Option<[u8; COOKIE_LEN]> {
    let at = noise_end(hello)?;
    if *hello.get(at)? != EXT_COOKIE {
        return None;
    }
    hello.get(at + 1..at + 1 + COOKIE_LEN)?.try_into().ok()
}

/// Puts `cookie` after the hello's Noise message (replacing any earlier cookie); the
/// Noise message itself is untouched, so it still authenticates as first written.
pub fn set_hello_cookie(hello: &mut Vec<u8>, cookie: &[u8; COOKIE_LEN]) {
    let Some(at) = noise_end(hello) else {
        return;
    };
    let end = at + 1 + COOKIE_LEN;
    if hello.len() < end {
        hello.resize(end, 0);
    }
    hello[at] = EXT_COOKIE;
    hello[at + 1..end].copy_from_slice(cookie);
    if hello.len() < MIN_HELLO_LEN {
        hello.resize(MIN_HELLO_LEN, 0);
    }
}

/// Writes the COOKIE answer to `hello`: the start of the hello's ephemeral key (the
/// echo that shows the answer comes from someone who saw the hello), then the cookie.
/// 45 bytes, far below the 1200 of the hello: no amplifier.
pub fn encode_cookie(client_sid: u64, hello: &[u8], cookie: &[u8; COOKIE_LEN], out: &mut Vec<u8>) {
    out.clear();
    encode_long_header(out, long::COOKIE, client_sid);
    let echo = hello_ephemeral(hello).map_or([0; COOKIE_ECHO_LEN], |e| {
        let mut x = [0; COOKIE_ECHO_LEN];
        x.copy_from_slice(&e[..COOKIE_ECHO_LEN]);
        x
    });
    out.extend_from_slice(&echo);
    out.extend_from_slice(cookie);
}

/// The cookie of a COOKIE body (after the long header), if it answers `hello`.
pub fn read_cookie_answer(body: &[u8], hello: &[u8]) -> Option<[u8; COOKIE_LEN]> {
    let mut r = Reader::new(body);
    let echo: [u8; COOKIE_ECHO_LEN] = r.array().ok()?;
    let cookie: [u8; COOKIE_LEN] = r.array().ok()?;
    let ours = hello_ephemeral(hello)?;
    (echo[..] == ours[..COOKIE_ECHO_LEN]).then_some(cookie)
}

/// Compares two secrets without stopping at the first difference.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    fn arb_params() -> impl Strategy<Value = TransportParams> {
        (
            MIN_CREDIT..crate::coding::VARINT_MAX,
            MIN_CREDIT..crate::coding::VARINT_MAX,
            0..=MAX_STREAMS,
            0..=MAX_IDLE_TIMEOUT_MS,
            MIN_DATAGRAM_SIZE..=MAX_DATAGRAM_SIZE,
            0u64..MAX_ACK_DELAY_MS,
        )
            .prop_map(|(a, b, c, d, e, f)| TransportParams {
                max_data: a,
                max_stream_data: b,
                max_streams: c,
                idle_timeout_ms: d,
                max_datagram_size: e,
                max_ack_delay_ms: f,
            })
    }

    #[test]
    fn transport_params_out_of_range_are_refused() {
        let good = params();
        assert_eq!(good.validate(), Ok(()));
        let bad = [
            TransportParams {
                max_data: 0,
                ..good
            },
            TransportParams {
                max_data: MIN_CREDIT - 1,
                ..good
            },
            TransportParams {
                max_stream_data: 0,
                ..good
            },
            TransportParams {
                max_streams: MAX_STREAMS + 1,
                ..good
            },
            TransportParams {
                idle_timeout_ms: MAX_IDLE_TIMEOUT_MS + 1,
                ..good
            },
            TransportParams {
                max_datagram_size: 1199,
                ..good
            },
            TransportParams {
                max_datagram_size: MAX_DATAGRAM_SIZE + 1,
                ..good
            },
            TransportParams {
                max_ack_delay_ms: MAX_ACK_DELAY_MS,
                ..good
            },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?}");
            let mut buf = Vec::new();
            p.encode(&mut buf);
            assert!(
                matches!(
                    TransportParams::decode(&mut Reader::new(&buf)),
                    Err(DecodeError::Invalid(_))
                ),
                "{p:?}"
            );
        }
    }

    #[test]
    fn a_configuration_below_the_minimums_is_announced_within_them() {
        let config = crate::TransportConfig {
            initial_stream_window: 0,
            initial_session_window: 1,
            max_datagram_size: u16::MAX,
            idle_timeout: std::time::Duration::MAX,
            max_ack_delay: std::time::Duration::from_secs(3600),
            ..crate::TransportConfig::default()
        };
        let p = crate::Session::local_params(&config);
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.max_stream_data, MIN_CREDIT);
        assert_eq!(p.max_data, MIN_CREDIT);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn transport_params_round_trip(p in arb_params()) {
            let mut buf = Vec::new();
            p.encode(&mut buf);
            let mut r = Reader::new(&buf);
            prop_assert_eq!(TransportParams::decode(&mut r).expect("decodes"), p);
            prop_assert_eq!(r.remaining(), 0);
        }

        #[test]
        fn hello_and_replies_round_trip(
            token in proptest::collection::vec(any::<u8>(), 0..=MAX_TOKEN_LEN),
            client_sid in any::<u64>(),
            server_sid in any::<u64>(),
            cp in arb_params(),
            sp in arb_params(),
            code in 0..crate::coding::VARINT_MAX,
            reason in "[ -~]{0,128}",
        ) {
            let key = PrivateKey::generate();
            let mut hello = Vec::new();
            let mut c = ClientHandshake::start(&key.public_key(), client_sid, &token, &cp, 7, &mut hello).expect("hello");
            prop_assert!(hello.len() >= crate::packet::MIN_HELLO_LEN);
            let (h, _) = Header::decode(&hello).expect("header");
            prop_assert_eq!(h, Header::Long { ty: crate::packet::long::HELLO, version: VERSION, sid: client_sid });
            let s = ServerHello::read(&key, client_sid, &hello[BODY_OFFSET..]).expect("server reads");
            prop_assert_eq!(&s.token[..], &token[..]);
            prop_assert_eq!(s.params, cp);
            // Accept: the client learns the server's session id and parameters.
            let mut reply = Vec::new();
            s.accept(server_sid, &sp, &mut reply).expect("accept");
            match c.on_reply(&reply[BODY_OFFSET..]).expect("reply") {
                Reply::Accepted { server_sid: got, params, .. } => {
                    prop_assert_eq!(got, server_sid);
                    prop_assert_eq!(params, sp);
                }
                Reply::Rejected { .. } => prop_assert!(false, "rejected"),
            }
            // Reject: the code and reason arrive intact.
            let mut c = ClientHandshake::start(&key.public_key(), client_sid, &token, &cp, 7, &mut hello).expect("hello");
            let s = ServerHello::read(&key, client_sid, &hello[BODY_OFFSET..]).expect("server reads");
            let mut reply = Vec::new();
            s.reject(code, &reason, &mut reply).expect("reject");
            match c.on_reply(&reply[BODY_OFFSET..]).expect("reply") {
                Reply::Rejected { code: got, reason: r } => {
                    prop_assert_eq!(got, code);
                    prop_assert_eq!(r, reason);
                }
                Reply::Accepted { .. } => prop_assert!(false, "accepted"),
            }
        }
    }

    use super::*;
    use crate::packet::Header;

    fn params() -> TransportParams {
        TransportParams {
            max_data: 1 << 20,
            max_stream_data: 1 << 18,
            max_streams: 100,
            idle_timeout_ms: 30_000,
            max_datagram_size: 1452,
            max_ack_delay_ms: 25,
        }
    }

    fn hello(server: &PublicKey, token: &[u8]) -> (ClientHandshake, Vec<u8>) {
        let mut out = Vec::new();
        let hs = ClientHandshake::start(
            server,
            77,
            token,
            &params(),
            1_700_000_000_000_000_000,
            &mut out,
        )
        .unwrap();
        (hs, out)
    }

    #[test]
    fn accept_gives_matching_keys() {
        let sk = PrivateKey::generate();
        let (mut c, h) = hello(&sk.public_key(), b"secret");
        assert!(h.len() >= MIN_HELLO_LEN);
        let (hdr, hl) = Header::decode(&h).unwrap();
        assert!(matches!(
            hdr,
            Header::Long {
                ty: long::HELLO,
                sid: 77,
                ..
            }
        ));
        let s = ServerHello::read(&sk, 77, &h[hl..]).unwrap();
        assert_eq!(&s.token[..], b"secret");
        assert_eq!(s.params, params());
        let mut reply = Vec::new();
        let skeys = s.accept(9, &params(), &mut reply).unwrap();
        assert!(reply.len() * 3 < h.len());
        let Reply::Accepted {
            server_sid, keys, ..
        } = c.on_reply(&reply[BODY_OFFSET..]).unwrap()
        else {
            panic!("not accepted");
        };
        assert_eq!(server_sid, 9);
        let mut p = vec![0u8; 4];
        p.extend_from_slice(b"data");
        keys.seal(1, &mut p, 4);
        let n = skeys.open(1, &mut p, 4).unwrap();
        assert_eq!(&p[4..4 + n], b"data");
    }

    #[test]
    fn reject_is_authenticated_and_wrong_key_fails() {
        let sk = PrivateKey::generate();
        let (mut c, h) = hello(&sk.public_key(), b"bad");
        let s = ServerHello::read(&sk, 77, &h[BODY_OFFSET..]).unwrap();
        let mut reply = Vec::new();
        s.reject(1, "token rejected", &mut reply).unwrap();
        let r = c.on_reply(&reply[BODY_OFFSET..]).unwrap();
        assert!(matches!(r, Reply::Rejected { code: 1, ref reason } if reason == "token rejected"));

        // A hello to another key does not decrypt.
        let other = PrivateKey::generate();
        assert!(matches!(
            ServerHello::read(&other, 77, &h[BODY_OFFSET..]),
            Err(HandshakeError::Crypto)
        ));
        // The session id is bound through the prologue.
        assert!(ServerHello::read(&sk, 78, &h[BODY_OFFSET..]).is_err());
        // A forged reply (from someone without the server key) does not authenticate.
        let (mut c2, h2) = hello(&sk.public_key(), b"x");
        let s2 = ServerHello::read(&other, 77, &h2[BODY_OFFSET..]);
        assert!(s2.is_err());
        let mut forged = reply.clone();
        forged[BODY_OFFSET + 10] ^= 1;
        assert!(c2.on_reply(&forged[BODY_OFFSET..]).is_err());
    }

    #[test]
    fn a_cookie_rides_after_the_noise_message_which_still_authenticates() {
        let sk = PrivateKey::generate();
        let (_, mut h) = hello(&sk.public_key(), b"secret");
        assert_eq!(hello_cookie(&h), None, "zero padding is no cookie");
        let e = *hello_ephemeral(&h).expect("ephemeral");
        let mut answer = Vec::new();
        encode_cookie(77, &h, &[9; COOKIE_LEN], &mut answer);
        assert!(answer.len() * 20 < h.len(), "never an amplifier");
        assert_eq!(answer[0], long::COOKIE);
        let cookie = read_cookie_answer(&answer[BODY_OFFSET..], &h).expect("answers our hello");
        assert_eq!(cookie, [9; COOKIE_LEN]);
        // An answer that does not echo our ephemeral key is not for us.
        let mut forged = answer.clone();
        forged[BODY_OFFSET] ^= 1;
        assert_eq!(read_cookie_answer(&forged[BODY_OFFSET..], &h), None);
        assert_eq!(
            read_cookie_answer(&answer[BODY_OFFSET..BODY_OFFSET + 20], &h),
            None
        );

        let len = h.len();
        set_hello_cookie(&mut h, &cookie);
        set_hello_cookie(&mut h, &[4; COOKIE_LEN]);
        assert_eq!(h.len(), len, "the cookie takes padding");
        assert_eq!(hello_cookie(&h), Some([4; COOKIE_LEN]), "the newest cookie");
        assert_eq!(hello_ephemeral(&h), Some(&e));
        let s = ServerHello::read(&sk, 77, &h[BODY_OFFSET..]).expect("still decrypts");
        assert_eq!(&s.token[..], b"secret");
        assert_eq!(s.timestamp, 1_700_000_000_000_000_000);
        // Truncated hellos have neither.
        assert_eq!(hello_cookie(&h[..40]), None);
        assert_eq!(hello_ephemeral(&h[..30]), None);
    }

    #[test]
    fn garbage_bodies_are_errors() {
        let sk = PrivateKey::generate();
        for body in [&[][..], &[0, 5, 1, 2], &[0xff; 300]] {
            assert!(ServerHello::read(&sk, 1, body).is_err());
        }
    }
}
