//! The upload protocol, server side, without sockets: the per-file state machine
//! (`serve::receive`) runs on a live udpack.io channel and the file system, so this
//! target drives what it decodes instead. Each record is one channel message through
//! the udpack.io decoder, then into the upload message type its event names, as the
//! server reads it: `offer`s through the path check (`paths::sanitize`, whose result
//! must stay inside the output directory), `data` (a bin, read without a copy),
//! `restart` and `finish`; the answers the client decodes and the `js` upload's
//! messages too.

#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use udpack_cli::paths::sanitize;
use udpack_cli::protocol::{
    js, ChunkRef, ErrorEvent, Finish, FinishAnswer, Offer, OfferAnswer, Restart, DATA, ERROR,
    FINISH, OFFER, RESTART,
};
use udpack_fuzz::records;
use udpack_io::message::from_msgpack;

fn check_name(name: &str) {
    let Ok(rel) = sanitize(name) else {
        return;
    };
    assert!(!rel.as_os_str().is_empty());
    assert!(
        rel.components().all(|c| matches!(c, Component::Normal(_))),
        "{name:?} gave {rel:?}"
    );
    let out = Path::new("/srv/out");
    assert!(out.join(&rel).starts_with(out), "{name:?} escapes");
}

fuzz_target!(|data: &[u8]| {
    let mut chunk_bytes = 0u64;
    for (flags, body) in records(data) {
        if flags & 1 != 0 {
            // A bare name, to reach the path check without MessagePack around it.
            if let Ok(name) = std::str::from_utf8(body) {
                check_name(name);
            }
            continue;
        }
        let Ok(m) = from_msgpack(body) else {
            continue;
        };
        match m.event() {
            OFFER => {
                if let Ok(offer) = m.data::<Offer>() {
                    check_name(&offer.name);
                    if let Some(d) = &offer.data {
                        chunk_bytes = chunk_bytes.saturating_add(d.len() as u64);
                    }
                }
            }
            DATA => {
                if let Ok(b) = m.data_bytes() {
                    assert!(b.len() <= body.len());
                    chunk_bytes = chunk_bytes.saturating_add(b.len() as u64);
                }
            }
            RESTART => {
                let _ = m.data::<Restart>();
            }
            js::FILE => {
                if let Ok(info) = m.data::<js::FileInfo>() {
                    check_name(&info.filename);
                }
            }
            js::CHUNK => {
                if let Ok(c) = m.data::<ChunkRef>() {
                    chunk_bytes = chunk_bytes.saturating_add(c.chunk.len() as u64);
                }
            }
            FINISH => {
                let _ = m.data::<Finish>();
                let _ = m.data::<js::Finish>();
            }
            ERROR => {
                let _ = m.data::<ErrorEvent>();
            }
            js::DONE => {
                let _ = m.data::<js::Done>();
            }
            _ => {
                // Replies: what the client decodes from the server.
                let _ = m.data::<OfferAnswer>();
                let _ = m.data::<FinishAnswer>();
            }
        }
    }
    assert!(chunk_bytes <= data.len() as u64);
});
