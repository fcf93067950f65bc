//! The udpack.io message decoder (`udpack_io::message::from_msgpack`, what every
//! channel frame goes through): arbitrary MessagePack envelopes, their data decoded
//! generically, and a re-framed copy of every decoded event decoding the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use udpack_io::message::{from_msgpack, to_msgpack};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = from_msgpack(data) else {
        return;
    };
    let raw = m.raw_data();
    assert!(!raw.is_empty(), "the data is one whole value");
    let _ = m.data::<IgnoredAny>();
    let _ = m.data::<String>();
    let _ = m.data::<Vec<u64>>();
    let _ = m.wants_reply();
    let event = m.event();
    if event.is_empty() {
        return;
    }
    // `[event, nil]` re-encoded, with the nil swapped for the decoded data.
    let mut frame = to_msgpack(event, &()).expect("encodes");
    assert_eq!(frame.pop(), Some(0xc0), "nil data");
    frame.extend_from_slice(raw);
    let back = from_msgpack(&frame).expect("a re-framed event decodes");
    assert_eq!(back.event(), event);
    assert_eq!(back.raw_data(), raw);
    assert!(!back.wants_reply());
});
