//! Packet decode and decrypt: arbitrary datagrams (data packets and long headers) into
//! `Endpoint::handle` of a server endpoint holding one accepted session, and of a
//! client endpoint mid-handshake (its datagrams come from the server's address, which
//! it checks).
//!
//! Input: records (flags, u16 length, bytes; see `udpack_fuzz::records`). Flag bit 0
//! picks the client endpoint; bit 1 points the datagram at a live session (overwrites
//! the destination / session id field) so it reaches the session's decryption instead
//! of the unknown-session drop; the high nibble advances the clock.

#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use udpack_fuzz::{
    client_mid_handshake, drain, feed, records, server_endpoint, step, PEER, SERVER,
};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    // A server with a real session, accepted from a real client hello.
    let (mut client, client_sid, hello) = client_mid_handshake(now);
    let mut server = server_endpoint();
    server.handle(now, PEER, &mut hello.to_vec());
    let live_server_sid = server.accept().map(|h| h.0);
    drain(&mut server, now);
    for (flags, body) in records(data) {
        now += step(flags);
        let mut d = body.to_vec();
        let to_client = flags & 1 != 0;
        if flags & 2 != 0 {
            let sid = if to_client {
                Some(client_sid)
            } else {
                live_server_sid
            };
            if let Some(sid) = sid {
                // Data packets name the destination at 1..9, long ones at 5..13.
                let at = if d.first().is_some_and(|b| b & 0x80 == 0) {
                    1
                } else {
                    5
                };
                if d.len() >= at + 8 {
                    d[at..at + 8].copy_from_slice(&sid.to_be_bytes());
                }
            }
        }
        if to_client {
            feed(&mut client, now, SERVER, &d);
        } else {
            feed(&mut server, now, PEER, &d);
        }
    }
});
