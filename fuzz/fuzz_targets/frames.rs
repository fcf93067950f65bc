//! Every frame decoder: iterate `Frames` over an arbitrary decrypted payload to its
//! end, and for each frame that decoded check that encoding gives `encoded_len` bytes
//! and decodes back to the same frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use udpack_proto::testing::wire::{Frame, Frames};

/// Most ranges an encoded ACK carries (`frame::MAX_ACK_RANGES`): a decoded ACK may
/// have more, and re-encoding keeps the newest ones.
const MAX_ACK_RANGES: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut frames = Frames::new(data);
    let mut count = 0usize;
    for res in &mut frames {
        count += 1;
        let Ok(frame) = res else {
            continue;
        };
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        assert_eq!(buf.len(), frame.encoded_len(), "encoded_len of {frame:?}");
        let mut again = Frames::new(&buf);
        let back = again
            .next()
            .expect("one frame")
            .expect("an encoded frame decodes");
        assert!(again.next().is_none(), "one frame encodes as one frame");
        match (&frame, &back) {
            (Frame::Ack(a), Frame::Ack(b)) if a.ranges.len() > MAX_ACK_RANGES => {
                assert_eq!(&a.ranges[..MAX_ACK_RANGES], &b.ranges[..]);
                assert_eq!(a.delay_micros, b.delay_micros);
            }
            _ => assert_eq!(frame, back),
        }
    }
    // Each frame takes at least one byte, and iteration stops at the end.
    assert!(count <= data.len());
});
