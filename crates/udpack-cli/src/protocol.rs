//! The upload protocol of the `udpack` command, over udpack.io channels. One channel
//! per file:
//!
//! 1. client → `file {filename, filesize, sha256}` (with ack) → server answers
//!    `{ok, offset, code, message}`: `offset` is where to resume (0 for a new upload);
//! 2. client → `chunk {chunk}` messages from `offset` to the end, 1 MiB each;
//! 3. client → `finish {}` (with ack) → server checks size and SHA-256, renames
//!    `NAME.part` to its final name and answers `{ok, name, code, message}`.
//!
//! The server may send `error {code, message}` at any time (a write failed) and then
//! closes the channel.

use serde::{Deserialize, Serialize};

pub const FILE: &str = "file";
pub const CHUNK: &str = "chunk";
pub const FINISH: &str = "finish";
pub const ERROR: &str = "error";

/// Bytes per `chunk` message.
pub const CHUNK_SIZE: usize = 1024 * 1024;

/// Error codes in answers and `error` events.
pub mod code {
    /// The path is not acceptable (absolute, `..`, control characters, device names...).
    pub const BAD_PATH: &str = "bad_path";
    /// Another upload of the same file is in progress.
    pub const BUSY: &str = "busy";
    /// Reading or writing on the server failed (disk full, permissions...).
    pub const IO: &str = "io";
    /// The received bytes do not match the announced size and SHA-256.
    pub const INTEGRITY: &str = "integrity";
    /// The request itself was malformed.
    pub const PROTOCOL: &str = "protocol";
    /// The server's file system has no room for the announced size.
    pub const NO_SPACE: &str = "no_space";
    /// The upload would take the output directory over the server's `--quota`.
    pub const QUOTA: &str = "quota";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileOffer {
    /// Relative path, components separated by `/`.
    pub filename: String,
    pub filesize: u64,
    #[serde(with = "serde_bytes")]
    pub sha256: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileAnswer {
    pub ok: bool,
    pub offset: u64,
    pub code: String,
    pub message: String,
}

/// A chunk, borrowed: from the read buffer when sending, from the received message
/// when receiving (no copy either way).
#[derive(Debug, Serialize, Deserialize)]
pub struct ChunkRef<'a> {
    #[serde(borrow, with = "serde_bytes")]
    pub chunk: &'a [u8],
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Finish {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FinishAnswer {
    pub ok: bool,
    /// Final relative path on the server (a new name if the asked-for one existed).
    pub name: String,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorEvent {
    pub code: String,
    pub message: String,
}

/// The simpler upload the udpack.io upload examples speak: `file {filename, filesize}`
/// (no hash, no answer), the same [`ChunkRef`] `chunk`s and [`Finish`] `finish`, then
/// `done` from the server and `done` back from the client: no resume, no integrity
/// check. Named `js` because it follows the upload of the JavaScript udpack.io
/// examples (the API mapping is in `udpack_io`'s crate docs).
pub mod js {
    use serde::{Deserialize, Serialize};

    pub const DONE: &str = "done";

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct FileInfo {
        pub filename: String,
        pub filesize: u64,
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    pub struct Done {}
}
