//! The client side of the handshake: a client endpoint that sent a real hello gets an
//! arbitrary answer (REPLY, UNDECRYPTABLE or VERSION_MISMATCH).
//!
//! Input: a mode byte, then the body. Mode bits 0-1 pick the answer: 0 a REPLY with the
//! body as its Noise plaintext (status, session id, parameters or reject), really
//! encrypted by the server key to this hello; 1 UNDECRYPTABLE with the right hello
//! digest and the body after it; 2 VERSION_MISMATCH likewise; 3 a long packet whose
//! type is the body's first byte and whose body follows as is. Bit 2 puts the body in
//! place of the digest (a forged answer); bit 3 answers twice; bit 4 lets the client's
//! timers run first (a retransmitted hello).

#![no_main]

use std::sync::Once;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use udpack_fuzz::{
    check_noise_format, client_mid_handshake, drain, feed, long_header, sealed_reply, SERVER,
};
use udpack_proto::testing::wire::{
    encode_undecryptable, encode_version_mismatch, long, BODY_OFFSET, VERSION,
};

static CHECK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    CHECK.call_once(check_noise_format);
    let [mode, body @ ..] = data else {
        return;
    };
    let mut now = Instant::now();
    let (mut client, sid, hello) = client_mid_handshake(now);
    if mode & 16 != 0 {
        now += Duration::from_secs(1);
        client.handle_timeout(now);
        drain(&mut client, now);
    }
    let answer = match mode & 3 {
        0 => match sealed_reply(sid, &hello, body) {
            Some(r) => r,
            None => return,
        },
        kind => {
            let mut out = Vec::new();
            if kind == 3 {
                let Some((&ty, rest)) = body.split_first() else {
                    return;
                };
                long_header(&mut out, ty, VERSION, sid);
                out.extend_from_slice(rest);
            } else if mode & 4 != 0 {
                let ty = if kind == 1 {
                    long::UNDECRYPTABLE
                } else {
                    long::VERSION_MISMATCH
                };
                long_header(&mut out, ty, VERSION, sid);
                out.extend_from_slice(body);
            } else {
                if kind == 1 {
                    encode_undecryptable(sid, &hello, &mut out);
                } else {
                    encode_version_mismatch(sid, &hello, &mut out);
                    // Only the digest: the versions are the fuzzer's.
                    out.truncate(BODY_OFFSET + 16);
                }
                out.extend_from_slice(body);
            }
            out
        }
    };
    feed(&mut client, now, SERVER, &answer);
    if mode & 8 != 0 {
        feed(&mut client, now, SERVER, &answer);
    }
    drain(&mut client, now);
});
