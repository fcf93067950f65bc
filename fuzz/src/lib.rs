//! What the fuzz targets share: endpoints set up like the protocol tests set them up,
//! a way to cut one fuzz input into several datagrams, and the Noise side the fuzzer
//! cannot play itself (so handshake plaintexts can be fuzzed, not only ciphertexts).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use udpack_proto::testing::wire::{long, BODY_OFFSET, MIN_HELLO_LEN, VERSION};
use udpack_proto::testing::{client_config, server_config, Sim};
use udpack_proto::{Endpoint, EndpointConfig, TransportConfig};

/// Seed of the test key pair (the server key of `udpack_proto::testing`).
pub const SEED: u64 = 1;
/// Where the fuzzed datagrams come from.
pub const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4000);
/// The server the client endpoint connects to.
pub const SERVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5000);

/// Noise protocol of the handshake (`handshake::NOISE_PARAMS`).
const NOISE_PARAMS: &str = "Noise_NK_25519_ChaChaPoly_BLAKE2s";

/// The handshake prologue (`handshake::prologue`): binds the version and the client's
/// session id. [`check_noise_format`] fails loudly if this drifts from the crate's.
fn prologue(sid: u64) -> [u8; 20] {
    let mut p = [0u8; 20];
    p[..8].copy_from_slice(b"udpack/1");
    p[8..12].copy_from_slice(&VERSION.to_be_bytes());
    p[12..].copy_from_slice(&sid.to_be_bytes());
    p
}

fn builder() -> snow::Builder<'static> {
    snow::Builder::new(NOISE_PARAMS.parse().expect("valid noise params"))
}

/// A server endpoint that accepts the token "letmein", with a fixed random seed.
pub fn server_endpoint() -> Endpoint {
    let config = server_config(SEED, TransportConfig::default());
    Endpoint::new(EndpointConfig { rng_seed: Some(7), ..EndpointConfig::default() }, Some(Arc::new(config)))
}

/// A client endpoint that has sent its hello to [`SERVER`]: returns the endpoint, the
/// client's session id and the hello datagram.
pub fn client_mid_handshake(now: Instant) -> (Endpoint, u64, Vec<u8>) {
    let mut ep = Endpoint::new(EndpointConfig { rng_seed: Some(9), ..EndpointConfig::default() }, None);
    let h = ep.connect(
        now,
        SERVER,
        &client_config(SEED, TransportConfig::default()),
    );
    let mut hello = Vec::new();
    let t = ep
        .poll_transmit(now, &mut hello)
        .expect("a connecting client sends its hello");
    hello.truncate(t.size);
    (ep, h.0, hello)
}

/// Runs the endpoint a little: sends what it wants to send, takes its events and new
/// sessions, fires its timers a few times (so what a datagram scheduled also runs).
pub fn drain(ep: &mut Endpoint, mut now: Instant) {
    let mut buf = Vec::new();
    for _ in 0..4 {
        for _ in 0..64 {
            if ep.poll_transmit(now, &mut buf).is_none() {
                break;
            }
        }
        while ep.poll_event().is_some() {}
        while ep.accept().is_some() {}
        match ep.poll_timeout() {
            Some(t) => {
                now = now.max(t);
                ep.handle_timeout(now);
            }
            None => break,
        }
    }
}

/// Hands one datagram from `from` to the endpoint and drains it.
pub fn feed(ep: &mut Endpoint, now: Instant, from: SocketAddr, datagram: &[u8]) {
    ep.handle(now, from, &mut datagram.to_vec());
    drain(ep, now);
}

/// Cuts a fuzz input into records: a flags byte, a big-endian u16 length, then that
/// many bytes (fewer at the end of the input). Keeps several datagrams per input
/// mutation-friendly.
pub fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&flags, rest) = data.split_first()?;
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]) as usize, rest),
            _ => (rest.len(), &[][..]),
        };
        let len = len.min(rest.len());
        let (body, rest) = rest.split_at(len);
        data = rest;
        Some((flags, body))
    })
}

/// A small time step taken from a flags byte, so timers get a chance between records.
pub fn step(flags: u8) -> Duration {
    Duration::from_millis(u64::from(flags >> 4) * 50)
}

/// Writes the long header of type `ty` (version, session id) into `out`.
pub fn long_header(out: &mut Vec<u8>, ty: u8, version: u32, sid: u64) {
    out.push(ty);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&sid.to_be_bytes());
    debug_assert_eq!(out.len(), BODY_OFFSET);
}

/// A HELLO datagram that really is encrypted to the test server key, carrying
/// `plaintext` (token and transport parameters, as the fuzzer makes them up).
pub fn sealed_hello(sid: u64, plaintext: &[u8]) -> Option<Vec<u8>> {
    let server = Sim::server_key(SEED).public_key();
    let pro = prologue(sid);
    let mut state = builder()
        .remote_public_key(server.as_bytes())
        .prologue(&pro)
        .build_initiator()
        .ok()?;
    let mut msg = vec![0u8; plaintext.len() + 64 + 16];
    let n = state.write_message(plaintext, &mut msg).ok()?;
    let mut out = Vec::with_capacity(MIN_HELLO_LEN);
    long_header(&mut out, long::HELLO, VERSION, sid);
    out.extend_from_slice(&u16::try_from(n).ok()?.to_be_bytes());
    out.extend_from_slice(&msg[..n]);
    if out.len() < MIN_HELLO_LEN {
        out.resize(MIN_HELLO_LEN, 0);
    }
    Some(out)
}

/// A REPLY datagram that the server holding the test key would send for `hello`, with
/// `plaintext` (status, session id, parameters or reject reason) made up by the fuzzer.
pub fn sealed_reply(sid: u64, hello: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
    let secret = Sim::server_key(SEED).to_bytes();
    let pro = prologue(sid);
    let mut state = builder()
        .local_private_key(&secret)
        .prologue(&pro)
        .build_responder()
        .ok()?;
    let body = hello.get(BODY_OFFSET..)?;
    let len = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let msg = body.get(2..2 + len)?;
    let mut scratch = vec![0u8; msg.len()];
    state.read_message(msg, &mut scratch).ok()?;
    let mut out = vec![0u8; plaintext.len() + 64 + 16];
    let n = state.write_message(plaintext, &mut out).ok()?;
    let mut reply = Vec::new();
    long_header(&mut reply, long::REPLY, VERSION, sid);
    reply.extend_from_slice(&u16::try_from(n).ok()?.to_be_bytes());
    reply.extend_from_slice(&out[..n]);
    Some(reply)
}

/// Panics unless a hello built by [`sealed_hello`] decrypts with the crate's own
/// `ServerHello::read`: a drifted prologue or Noise pattern would silently make the
/// sealed modes of the handshake targets useless.
pub fn check_noise_format() {
    use udpack_proto::testing::wire::{ServerHello, TransportParams};
    let params = TransportParams {
        max_data: 1 << 20,
        max_stream_data: 1 << 20,
        max_streams: 100,
        idle_timeout_ms: 30_000,
        max_datagram_size: 1200,
        max_ack_delay_ms: 25,
    };
    let mut hello = Vec::new();
    udpack_proto::testing::wire::ClientHandshake::start(
        &Sim::server_key(SEED).public_key(),
        42,
        b"letmein",
        &params,
        0,
        &mut hello,
    )
    .expect("hello");
    // The crate's hello answers to our responder, and ours to the crate's server.
    assert!(
        sealed_reply(42, &hello, &[1, 0, 0]).is_some(),
        "prologue drifted"
    );
    let mine = sealed_hello(42, &[0]).expect("hello");
    // The token length alone: malformed, but it decrypted.
    let read = ServerHello::read(&Sim::server_key(SEED), 42, &mine[BODY_OFFSET..]);
    assert!(
        !matches!(read, Err(ref e) if format!("{e:?}") == "Crypto"),
        "prologue drifted"
    );
}
