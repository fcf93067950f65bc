//! Fault injection for the tests, compiled only with the `test-faults` feature (which
//! `cargo test` turns on and release builds do not):
//! `UDPACK_TEST_FAULTS=flip-first-byte` flips a bit of the first byte sent, so that
//! the server's integrity check fails.

/// The faults `UDPACK_TEST_FAULTS` asks for (a comma-separated list).
pub(super) struct Faults {
    flip_first_byte: bool,
}

impl Faults {
    pub fn from_env() -> Self {
        let asked = |name: &str| {
            std::env::var("UDPACK_TEST_FAULTS").is_ok_and(|v| v.split(',').any(|f| f == name))
        };
        Faults {
            flip_first_byte: asked("flip-first-byte"),
        }
    }

    /// `chunk`, damaged if asked for (it starts `sent` bytes into what this upload
    /// sends).
    pub fn tampered(&self, chunk: bytes::Bytes, sent: u64) -> bytes::Bytes {
        if !(self.flip_first_byte && sent == 0) {
            return chunk;
        }
        let mut v = chunk.to_vec();
        self.tamper(&mut v, sent);
        bytes::Bytes::from(v)
    }

    /// Damages `chunk`, which starts `sent` bytes into what this upload sends.
    pub fn tamper(&self, chunk: &mut [u8], sent: u64) {
        if self.flip_first_byte && sent == 0 {
            if let Some(b) = chunk.first_mut() {
                *b ^= 1;
            }
        }
    }
}
