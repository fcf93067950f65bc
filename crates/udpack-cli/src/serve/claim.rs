//! Which upload owns a `.part` file: two uploads of one file cannot interleave. A
//! client that died mid-upload holds its part until its session times out; a new
//! session offering the same upload id (same token, same file: see
//! [`upload_id`](crate::protocol::upload_id)) takes the part over and resumes it. Uploads are
//! told apart by [`upload_key`](crate::paths::upload_key), so that names one file
//! system stores as one share one claim. The claims also count the uploads of each
//! token (`--max-uploads-per-token`), in the same table so that an upload taken over
//! hands its place to the one that takes it over.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use udpack_io::TokenId;

/// How long a new session waits for an upload of the same content it takes over.
const TAKEOVER_WAIT: Duration = Duration::from_secs(10);

/// An upload in progress.
struct Active {
    id: u64,
    socket: String,
    upload: Vec<u8>,
    /// Announced size: what the upload may still add to the directory.
    filesize: u64,
    /// Asks the upload to stop and keep its part file (another session resumes it).
    stop: Arc<Notify>,
    /// The token of the upload's session, counted in `Table::per_token`.
    token: Option<TokenId>,
}

/// The uploads in progress, by upload key and by token.
#[derive(Default)]
struct Table {
    active: HashMap<String, Active>,
    /// Uploads in `active` per token; a token's entry goes with its last upload.
    per_token: HashMap<TokenId, usize>,
}

/// The `.part` files being written.
pub(super) struct Claims {
    table: Mutex<Table>,
    /// Signalled whenever an upload leaves `active`.
    released: Notify,
    next_id: AtomicU64,
    /// Most uploads in progress per token.
    max_per_token: usize,
}

/// Why an upload was not claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Another upload of that file holds it.
    Busy,
    /// The token has this many uploads in progress already.
    TokenLimit(usize),
}

/// What one look at the active set found.
enum Attempt {
    Claimed,
    /// Another session's upload of the same content holds it and was asked to stop.
    TakingOver,
    Refused(Refused),
}

/// Who claims an upload: its session and that session's token.
pub(super) struct Claimant<'a> {
    pub socket: &'a str,
    pub token: Option<TokenId>,
}

impl Claims {
    /// Claims that let each token have `max_per_token` uploads in progress.
    pub fn new(max_per_token: usize) -> Self {
        Claims {
            table: Mutex::default(),
            released: Notify::new(),
            next_id: AtomicU64::new(0),
            max_per_token,
        }
    }

    /// Claims the upload `key` (of `filesize` bytes, upload id `upload`) for `by`: at
    /// once if it is free and the token has room; once released if another session
    /// holds it under the same upload id (asked to stop, waited for up to
    /// [`TAKEOVER_WAIT`]); refused if it stays busy or the token has no room.
    pub async fn claim(
        &self,
        key: &str,
        by: &Claimant<'_>,
        upload: &[u8],
        filesize: u64,
    ) -> Result<Claim<'_>, Refused> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(Notify::new());
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        loop {
            // Registered before looking, so that a release in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.attempt(key, id, by, upload, filesize, &stop) {
                Attempt::Claimed => {
                    return Ok(Claim {
                        claims: self,
                        key: key.to_string(),
                        id,
                        stop,
                    })
                }
                Attempt::Refused(why) => return Err(why),
                Attempt::TakingOver => {
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return Err(Refused::Busy);
                    }
                }
            }
        }
    }

    fn attempt(
        &self,
        key: &str,
        id: u64,
        by: &Claimant<'_>,
        upload: &[u8],
        filesize: u64,
        stop: &Arc<Notify>,
    ) -> Attempt {
        let Ok(mut table) = self.table.lock() else {
            return Attempt::Refused(Refused::Busy);
        };
        match table.active.get(key) {
            None => {
                if let Some(t) = by.token {
                    let held = table.per_token.get(&t).copied().unwrap_or(0);
                    if held >= self.max_per_token {
                        return Attempt::Refused(Refused::TokenLimit(held));
                    }
                    *table.per_token.entry(t).or_insert(0) += 1;
                }
                table.active.insert(
                    key.to_string(),
                    Active {
                        id,
                        socket: by.socket.to_string(),
                        upload: upload.to_vec(),
                        filesize,
                        stop: stop.clone(),
                        token: by.token,
                    },
                );
                Attempt::Claimed
            }
            Some(a) if a.socket != by.socket && a.upload == upload => {
                a.stop.notify_one();
                Attempt::TakingOver
            }
            Some(_) => Attempt::Refused(Refused::Busy),
        }
    }
}

impl Table {
    /// Forgets the upload `key` if claim `id` holds it, and its place of its token.
    fn release(&mut self, key: &str, id: u64) {
        if self.active.get(key).is_none_or(|a| a.id != id) {
            return;
        }
        let Some(a) = self.active.remove(key) else {
            return;
        };
        if let Some(t) = a.token {
            if let Some(n) = self.per_token.get_mut(&t) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_token.remove(&t);
                }
            }
        }
    }
}

impl Claims {
    /// The keys of the uploads in progress and the sum of their announced sizes.
    pub fn snapshot(&self) -> (HashSet<String>, u64) {
        let Ok(table) = self.table.lock() else {
            return (HashSet::new(), 0);
        };
        let active = &table.active;
        let reserved = active
            .values()
            .map(|a| a.filesize)
            .fold(0u64, u64::saturating_add);
        (active.keys().cloned().collect(), reserved)
    }
}

/// An upload's hold on its part file, released when dropped however the upload ends,
/// a panic included.
pub(super) struct Claim<'a> {
    claims: &'a Claims,
    key: String,
    id: u64,
    stop: Arc<Notify>,
}

impl Claim<'_> {
    /// Notified when another session takes the part over.
    pub fn stop(&self) -> Arc<Notify> {
        self.stop.clone()
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Ok(mut table) = self.claims.table.lock() {
            table.release(&self.key, self.id);
        }
        self.claims.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by(socket: &str, token: u8) -> Claimant<'_> {
        Claimant {
            socket,
            token: Some(TokenId::from_bytes([token; 16])),
        }
    }

    #[tokio::test]
    async fn a_token_holds_its_limit_of_uploads_and_a_takeover_keeps_its_place() {
        let claims = Claims::new(2);
        let a = claims.claim("a", &by("s1", 1), b"ida", 1).await.expect("a");
        let _b = claims.claim("b", &by("s1", 1), b"idb", 1).await.expect("b");
        assert_eq!(
            claims.claim("c", &by("s2", 1), b"idc", 1).await.err(),
            Some(Refused::TokenLimit(2)),
            "the token's third upload, from any session"
        );
        let _c = claims
            .claim("c", &by("s3", 2), b"idc", 1)
            .await
            .expect("another token");
        // Another session resumes `a` (same upload id): the token is at its limit,
        // but the upload taken over hands its place over.
        let stop = a.stop();
        let releaser = async {
            stop.notified().await;
            drop(a);
        };
        let s4 = by("s4", 1);
        let (taken, ()) = tokio::join!(claims.claim("a", &s4, b"ida", 1), releaser);
        let taken = taken.expect("taken over");
        assert_eq!(
            claims.claim("d", &by("s4", 1), b"idd", 1).await.err(),
            Some(Refused::TokenLimit(2))
        );
        drop(taken);
        let _d = claims
            .claim("d", &by("s4", 1), b"idd", 1)
            .await
            .expect("room again");
        // Uploads of one file still exclude each other, whatever the token.
        assert_eq!(
            claims.claim("d", &by("s5", 3), b"other", 1).await.err(),
            Some(Refused::Busy)
        );
        let table = claims.table.lock().expect("lock");
        assert_eq!(table.per_token.len(), 2, "tokens 1 and 2 only");
    }
}
