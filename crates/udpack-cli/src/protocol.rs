//! The upload protocol of the `udpack` command (version 2), over udpack.io channels,
//! one channel per file. The hash is BLAKE3: computed while the file is read and
//! sent, never in a pass of its own.
//!
//! A file of at most [`INLINE_MAX`] bytes travels in its offer:
//!
//! 1. client → `offer {name, size, id, data, hash}` (with ack) → server writes it,
//!    checks size and hash, moves it into place and answers `{ok, name, ...}`: one
//!    round trip per file.
//!
//! A larger file is streamed and resumable:
//!
//! 1. client → `offer {name, size, id}` (with ack) → server answers `{ok, offset,
//!    prefix}`: `offset` bytes of the file are already there (0 for a new upload) and
//!    `prefix` is their BLAKE3 hash;
//! 2. if the client's own first `offset` bytes hash to something else (the file
//!    changed), client → `restart {}` (with ack) → the server empties the part and
//!    answers `{ok, offset: 0}`;
//! 3. client → `data` messages, each a MessagePack `bin` of up to [`CHUNK_SIZE`] bytes,
//!    from `offset` to the end;
//! 4. client → `finish {hash}` (with ack) → server checks size and hash of the whole
//!    file (the prefix it had included), renames `NAME.part` to its final name and
//!    answers `{ok, name, ...}`.
//!
//! `id` names the upload for taking it over and resuming it: a keyed hash of the token,
//! the name, the size and the modification time ([`upload_id`]), so that only a client
//! with the same token and the same file resumes (or takes over) a part. The server may
//! send `error {code, message}` at any time (a write failed) and then closes the
//! channel.

use serde::{Deserialize, Serialize};

pub const OFFER: &str = "offer";
pub const DATA: &str = "data";
pub const RESTART: &str = "restart";
pub const FINISH: &str = "finish";
pub const ERROR: &str = "error";

/// Bytes per `data` message: small enough that the server writes each body while it
/// is still in the CPU's cache (with 1 MiB the page-cache copy cost several times
/// more: BENCHMARKS.md, "Uploads").
pub const CHUNK_SIZE: usize = 256 * 1024;
/// Largest file sent inside its offer.
pub const INLINE_MAX: u64 = 1024 * 1024;
/// Bytes of an upload id.
pub const ID_LEN: usize = 16;
/// Bytes of a BLAKE3 hash.
pub const HASH_LEN: usize = 32;

/// Error codes in answers and `error` events.
pub mod code {
    /// The path is not acceptable (absolute, `..`, control characters, device names...).
    pub const BAD_PATH: &str = "bad_path";
    /// Another upload of the same file is in progress.
    pub const BUSY: &str = "busy";
    /// Reading or writing on the server failed (disk full, permissions...).
    pub const IO: &str = "io";
    /// The received bytes do not match the announced size and hash.
    pub const INTEGRITY: &str = "integrity";
    /// The request itself was malformed.
    pub const PROTOCOL: &str = "protocol";
    /// The server's file system has no room for the announced size.
    pub const NO_SPACE: &str = "no_space";
    /// The upload would take the output directory over the server's `--quota`.
    pub const QUOTA: &str = "quota";
}

/// The first message of a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    /// Relative path, components separated by `/`.
    pub name: String,
    pub size: u64,
    /// [`upload_id`] of the file.
    #[serde(with = "serde_bytes")]
    pub id: Vec<u8>,
    /// The whole content, for a file of at most [`INLINE_MAX`] bytes.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<u8>>,
    /// BLAKE3 of `data`, with it.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub hash: Option<Vec<u8>>,
}

/// The answer to an offer (and to `restart`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OfferAnswer {
    pub ok: bool,
    /// Where to continue: the bytes the server holds.
    pub offset: u64,
    /// BLAKE3 of those bytes (empty when `offset` is 0).
    #[serde(with = "serde_bytes")]
    pub prefix: Vec<u8>,
    /// For a file sent in its offer: the final relative path on the server.
    pub name: String,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Restart {}

/// The last message of a streamed file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    /// BLAKE3 of the whole file.
    #[serde(with = "serde_bytes")]
    pub hash: Vec<u8>,
}

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

/// The id of an upload of the file `name` of `size` bytes modified at `mtime_ns`, by a
/// client holding `token`: the same on every run while the file is unchanged, and
/// unknown to whoever lacks the token.
pub fn upload_id(token: &str, name: &str, size: u64, mtime_ns: i128) -> Vec<u8> {
    let key = blake3::derive_key("udpack upload id v2", token.as_bytes());
    let mut h = blake3::Hasher::new_keyed(&key);
    h.update(&(name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update(&size.to_le_bytes());
    h.update(&mtime_ns.to_le_bytes());
    h.finalize().as_bytes()[..ID_LEN].to_vec()
}

/// A chunk, borrowed: what the simpler upload of the examples sends (see [`js`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct ChunkRef<'a> {
    #[serde(borrow, with = "serde_bytes")]
    pub chunk: &'a [u8],
}

/// The simpler upload the udpack.io upload examples speak: `file {filename, filesize}`
/// (no hash, no answer), `chunk {chunk}`s ([`ChunkRef`]) and `finish {}`, then `done`
/// from the server and `done` back from the client: no resume, no integrity check.
/// Named `js` because it follows the upload of the JavaScript udpack.io examples (the
/// API mapping is in `udpack_io`'s crate docs).
pub mod js {
    use serde::{Deserialize, Serialize};

    pub const FILE: &str = "file";
    pub const CHUNK: &str = "chunk";
    pub const FINISH: &str = "finish";
    pub const DONE: &str = "done";

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct FileInfo {
        pub filename: String,
        pub filesize: u64,
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    pub struct Finish {}

    #[derive(Debug, Default, Serialize, Deserialize)]
    pub struct Done {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids_differ_by_token_name_size_and_time() {
        let base = upload_id("t", "a.bin", 10, 5);
        assert_eq!(base.len(), ID_LEN);
        assert_eq!(base, upload_id("t", "a.bin", 10, 5));
        for other in [
            upload_id("u", "a.bin", 10, 5),
            upload_id("t", "b.bin", 10, 5),
            upload_id("t", "a.bin", 11, 5),
            upload_id("t", "a.bin", 10, 6),
        ] {
            assert_ne!(base, other);
        }
    }
}
