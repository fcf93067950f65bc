//! Which upload owns a `.part` file: two uploads of one file cannot interleave. A
//! client that died mid-upload holds its part until its session times out; a new
//! session offering the same upload id (same token, same file: see
//! [`upload_id`](crate::protocol::upload_id)) takes the part over and resumes it. Uploads are
//! told apart by [`upload_key`](crate::paths::upload_key), so that names one file
//! system stores as one share one claim.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

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
}

/// The `.part` files being written.
#[derive(Default)]
pub(super) struct Claims {
    active: Mutex<HashMap<String, Active>>,
    /// Signalled whenever an upload leaves `active`.
    released: Notify,
    next_id: AtomicU64,
}

/// What one look at the active set found.
enum Attempt {
    Claimed,
    /// Another session's upload of the same content holds it and was asked to stop.
    TakingOver,
    Busy,
}

impl Claims {
    /// Claims the upload `key` (of `filesize` bytes, upload id `upload`) for `socket`: at
    /// once if it is free; once released if another session holds it under the same
    /// upload id (asked to stop, waited for up to [`TAKEOVER_WAIT`]); `None` if it stays
    /// busy.
    pub async fn claim(
        &self,
        key: &str,
        socket: &str,
        upload: &[u8],
        filesize: u64,
    ) -> Option<Claim<'_>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(Notify::new());
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        loop {
            // Registered before looking, so that a release in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.attempt(key, id, socket, upload, filesize, &stop) {
                Attempt::Claimed => {
                    return Some(Claim {
                        claims: self,
                        key: key.to_string(),
                        id,
                        stop,
                    })
                }
                Attempt::Busy => return None,
                Attempt::TakingOver => {
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    fn attempt(
        &self,
        key: &str,
        id: u64,
        socket: &str,
        upload: &[u8],
        filesize: u64,
        stop: &Arc<Notify>,
    ) -> Attempt {
        let Ok(mut active) = self.active.lock() else {
            return Attempt::Busy;
        };
        match active.get(key) {
            None => {
                active.insert(
                    key.to_string(),
                    Active {
                        id,
                        socket: socket.to_string(),
                        upload: upload.to_vec(),
                        filesize,
                        stop: stop.clone(),
                    },
                );
                Attempt::Claimed
            }
            Some(a) if a.socket != socket && a.upload == upload => {
                a.stop.notify_one();
                Attempt::TakingOver
            }
            Some(_) => Attempt::Busy,
        }
    }
}

impl Claims {
    /// The keys of the uploads in progress and the sum of their announced sizes.
    pub fn snapshot(&self) -> (HashSet<String>, u64) {
        let Ok(active) = self.active.lock() else {
            return (HashSet::new(), 0);
        };
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
        if let Ok(mut active) = self.claims.active.lock() {
            if active.get(&self.key).is_some_and(|a| a.id == self.id) {
                active.remove(&self.key);
            }
        }
        self.claims.released.notify_waiters();
    }
}
