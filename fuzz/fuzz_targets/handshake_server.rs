//! The server side of the handshake: arbitrary HELLOs into a server endpoint.
//!
//! Input: a mode byte, an 8-byte client session id, then the body. Mode bit 0 seals the
//! body as the Noise plaintext (token, transport parameters, timestamp) of a hello really
//! encrypted to the server key; otherwise the body follows a clear long header as is.
//! Bit 1 prefixes the plaintext with the accepted token, bit 2 takes the version from
//! the body (raw hellos), bit 3 skips the padding to the minimum hello size, bit 4
//! sends the hello again, bit 5 from another address.

#![no_main]

use std::net::SocketAddr;
use std::sync::Once;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use udpack_fuzz::{
    check_noise_format, drain, feed, long_header, sealed_hello, server_endpoint, PEER,
};
use udpack_proto::testing::wire::{long, MIN_HELLO_LEN, VERSION};

static CHECK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    CHECK.call_once(check_noise_format);
    let [mode, rest @ ..] = data else {
        return;
    };
    let Some((sid, mut body)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let sid = u64::from_be_bytes(*sid);
    let hello = if mode & 1 != 0 {
        let mut plain = Vec::new();
        if mode & 2 != 0 {
            plain.push(7);
            plain.extend_from_slice(b"letmein");
        }
        plain.extend_from_slice(body);
        match sealed_hello(sid, &plain) {
            Some(h) => h,
            None => return,
        }
    } else {
        let mut version = VERSION;
        if mode & 4 != 0 {
            if let Some((v, b)) = body.split_first_chunk::<4>() {
                version = u32::from_be_bytes(*v);
                body = b;
            }
        }
        let mut h = Vec::new();
        long_header(&mut h, long::HELLO, version, sid);
        h.extend_from_slice(body);
        if mode & 8 == 0 && h.len() < MIN_HELLO_LEN {
            h.resize(MIN_HELLO_LEN, 0);
        }
        h
    };
    let now = Instant::now();
    let mut server = server_endpoint();
    feed(&mut server, now, PEER, &hello);
    if mode & 16 != 0 {
        feed(&mut server, now, PEER, &hello);
    }
    if mode & 32 != 0 {
        let other: SocketAddr = ([10, 0, 0, 1], 9).into();
        feed(&mut server, now, other, &hello);
    }
    drain(&mut server, now);
});
