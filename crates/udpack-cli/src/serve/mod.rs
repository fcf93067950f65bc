//! `udpack serve`: receives uploads into a directory.
//!
//! [`Receiver`] runs the session loop and spawns one task per channel; `receive`
//! handles one file on its channel; `claim` decides which upload owns a `.part` file;
//! `part` opens, resumes, discards and places part files, through the directory
//! handles of `dir` (never following a link); `limits` holds the quota, free-space and
//! part-age rules.

mod claim;
mod dir;
mod limits;
mod part;
mod receive;
mod receiver;
mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use udpack_io::PrivateKey;

use crate::error::exit;
use crate::progress::{Display, Progress};

pub use limits::{
    parse_age, parse_size, LimitError, Limits, DEFAULT_MAX_UPLOADS_PER_TOKEN, DEFAULT_PART_MAX_AGE,
};
pub use receiver::Receiver;

/// What `serve` needs.
pub struct ServeOptions {
    pub key: PrivateKey,
    pub listen: SocketAddr,
    pub tokens: Vec<String>,
    pub out: PathBuf,
    pub once: bool,
    /// Quota, free space, part age.
    pub limits: Limits,
    /// Show the receiving progress (the demo shows only the sender's).
    pub show_progress: bool,
}

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Exit 2.
    #[error("no token configured: pass --token, --tokens-file or set UDPACK_TOKEN")]
    NoToken,
    /// Exit 1.
    #[error("cannot create {}: {source}", .path.display())]
    CreateOut {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Exit 1.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: udpack_io::Error,
    },
}

impl ServeError {
    pub fn code(&self) -> u8 {
        match self {
            ServeError::NoToken => exit::USAGE,
            ServeError::CreateOut { .. } | ServeError::Listen { .. } => exit::OTHER,
        }
    }
}

/// Shared by the uploads in progress.
struct State {
    /// The output directory, every file opened relative to it.
    out: Arc<dir::Dir>,
    limits: Limits,
    /// Which upload writes which `.part` file.
    claims: claim::Claims,
    /// Completed files per socket.
    completed: Mutex<HashMap<String, usize>>,
    progress: Progress,
    show_progress: bool,
}

impl State {
    fn new(out: dir::Dir, limits: Limits, show_progress: bool) -> Self {
        State {
            out: Arc::new(out),
            claims: claim::Claims::new(limits::or_unlimited(limits.max_uploads_per_token)),
            limits,

            completed: Mutex::new(HashMap::new()),
            // Hidden, not only left unprinted: a hidden receiver (the demo's) must draw no
            // bars of its own over the sender's.
            progress: Progress::with_display(
                "recv",
                0,
                if show_progress {
                    Display::Auto
                } else {
                    Display::Quiet
                },
            ),
            show_progress,
        }
    }

    /// Shows how a file's upload ended (`done`: complete), unless the progress is
    /// hidden.
    fn note(&self, name: &str, done: bool, what: &str) {
        self.progress
            .finish_file(name, done, self.show_progress.then_some(what));
    }

    /// What an upload's limits are checked against, once it holds its claim.
    fn admission(&self) -> part::Admission {
        let (active, reserved) = self.claims.snapshot();
        part::Admission {
            limits: self.limits.clone(),
            active,
            reserved,
        }
    }

    /// Removes the abandoned parts (not those being written); blocking.
    fn sweep(&self) -> usize {
        let (active, _) = self.claims.snapshot();
        limits::sweep(&self.out, self.limits.part_max_age, &active)
    }

    fn count_completed(&self, socket: String) {
        if let Ok(mut c) = self.completed.lock() {
            *c.entry(socket).or_default() += 1;
        }
    }

    fn completed_by(&self, socket: &str) -> usize {
        self.completed
            .lock()
            .map(|c| c.get(socket).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}
