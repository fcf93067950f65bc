//! What the output directory may hold: a quota on its total size, the free space kept
//! on its file system, and how long abandoned `.part` files are kept. A hostile or
//! broken client could otherwise fill the disk or litter it with parts. And what one
//! token may hold: sessions and uploads in progress, so that one leaked or greedy
//! token cannot take the server from the others.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{FileType, Stat};

use super::dir::Dir;
use crate::paths::upload_key;

/// Walks no deeper than accepted names go (plus one).
const MAX_WALK_DEPTH: usize = 65;

/// The limits of `udpack serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of final files and parts the output directory may hold; `None`:
    /// no quota.
    pub quota: Option<u64>,
    /// Bytes left free on the file system after an accepted upload.
    pub min_free: u64,
    /// Parts (and sidecars) untouched for longer are removed.
    pub part_max_age: Duration,
    /// Sessions one token may hold at once (the endpoint refuses more as busy);
    /// 0: no limit.
    pub max_sessions_per_token: usize,
    /// Uploads in progress one token may have (more are refused as `busy`); 0: no
    /// limit.
    pub max_uploads_per_token: usize,
    /// A channel that sends no offer within this long is closed: an open channel
    /// costs a task.
    pub offer_timeout: Duration,
    /// Longest an answer may wait to be taken by a client that does not read (its
    /// credit used up); the upload is abandoned then, its part kept.
    pub reply_timeout: Duration,
}

/// Default of [`Limits::offer_timeout`] and [`Limits::reply_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Uploads in progress per token by default: eight senders at their default
/// `--parallel` (32).
pub const DEFAULT_MAX_UPLOADS_PER_TOKEN: usize = 256;

/// A limit where 0 means none.
pub(super) fn or_unlimited(n: usize) -> usize {
    if n == 0 {
        usize::MAX
    } else {
        n
    }
}

/// A week: long enough to resume over a holiday.
pub const DEFAULT_PART_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            quota: None,
            min_free: 0,
            part_max_age: DEFAULT_PART_MAX_AGE,
            max_sessions_per_token: udpack_io::DEFAULT_MAX_SESSIONS_PER_TOKEN,
            max_uploads_per_token: DEFAULT_MAX_UPLOADS_PER_TOKEN,
            offer_timeout: DEFAULT_TIMEOUT,
            reply_timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A limit given on the command line that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "`{0}` is not a size: a number of bytes, optionally with K, M, G or T (powers of 1024)"
    )]
    Size(String),
    #[error("`{0}` is not a duration: a number with s, m, h or d (seconds if none)")]
    Age(String),
}

/// `1048576`, `512K`, `10M`, `2G`, `1T`.
pub fn parse_size(s: &str) -> Result<u64, LimitError> {
    let bad = || LimitError::Size(s.to_string());
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(bad()),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(mult).ok_or_else(bad)
}

/// `3600`, `90s`, `30m`, `12h`, `7d`.
pub fn parse_age(s: &str) -> Result<Duration, LimitError> {
    let bad = || LimitError::Age(s.to_string());
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return Err(bad()),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .filter(|d| !d.is_zero())
        .ok_or_else(bad)
}

/// Whether `name` is an upload in progress or its sidecar; with the key of its upload.
fn part_key(dir: &Path, name: &OsStr) -> Option<String> {
    let b = name.as_bytes();
    let stem = b
        .strip_suffix(b".part")
        .or_else(|| b.strip_suffix(b".part.id"))
        // The sidecar of the first version of the protocol.
        .or_else(|| b.strip_suffix(b".part.sha256"))?;
    Some(upload_key(&dir.join(OsStr::from_bytes(stem))))
}

/// Calls `f(relative dir, dir handle, name, stat)` for every entry below `root`,
/// never through a link; unreadable directories are skipped.
fn walk(root: &Dir, f: &mut dyn FnMut(&Path, &Dir, &OsStr, &Stat)) {
    fn go(
        dir: &Dir,
        rel: &mut PathBuf,
        depth: usize,
        f: &mut dyn FnMut(&Path, &Dir, &OsStr, &Stat),
    ) {
        let Ok(names) = dir.entries() else { return };
        for name in names {
            let Ok(Some(st)) = dir.stat(&name) else {
                continue;
            };
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                if depth < MAX_WALK_DEPTH {
                    if let Some(sub) = dir.walk_child(&name) {
                        rel.push(&name);
                        go(&sub, rel, depth + 1, f);
                        rel.pop();
                    }
                }
            } else {
                f(rel, dir, &name, &st);
            }
        }
    }
    go(root, &mut PathBuf::new(), 0, f);
}

/// Bytes of the regular files below `root`, leaving out the parts of the uploads in
/// `active` (counted at their announced size by the caller).
pub(super) fn usage(root: &Dir, active: &HashSet<String>) -> u64 {
    let mut total = 0u64;
    walk(root, &mut |rel, _, name, st| {
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return;
        }
        if name.as_bytes().ends_with(b".part")
            && part_key(rel, name).is_some_and(|k| active.contains(&k))
        {
            return;
        }
        total = total.saturating_add(u64::try_from(st.st_size).unwrap_or(0));
    });
    total
}

/// Removes the parts and sidecars below `root` not modified for `max_age`, except
/// those of the uploads in `active`; returns how many files went.
pub(super) fn sweep(root: &Dir, max_age: Duration, active: &HashSet<String>) -> usize {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cutoff = i128::from(now) - i128::from(max_age.as_secs());
    let mut removed = 0;
    walk(root, &mut |rel, dir, name, st| {
        let Some(key) = part_key(rel, name) else {
            return;
        };
        if active.contains(&key) || i128::from(st.st_mtime) > cutoff {
            return;
        }
        match dir.remove(name) {
            Ok(()) => {
                removed += 1;
                tracing::info!(name = %rel.join(name).display(), "removed an abandoned part");
            }
            Err(e) => {
                tracing::warn!(name = %rel.join(name).display(), error = %e, "cannot remove an abandoned part")
            }
        }
    });
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_parse() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2K"), Ok(2048));
        assert_eq!(parse_size("3m"), Ok(3 << 20));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        for bad in ["", "K", "-1", "1.5G", "2X", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_age("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("7d"), Ok(DEFAULT_PART_MAX_AGE));
        assert_eq!(parse_age("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "0", "0s", "d", "1w", "-3h"] {
            assert!(parse_age(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usage_leaves_out_active_parts() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("d")).expect("mkdir");
        std::fs::write(dir.path().join("a"), [0u8; 10]).expect("write");
        std::fs::write(dir.path().join("d/B.part"), [0u8; 100]).expect("write");
        let d = Dir::open(dir.path()).expect("open");
        assert_eq!(usage(&d, &HashSet::new()), 110);
        let active = HashSet::from([upload_key(Path::new("d/b"))]);
        assert_eq!(usage(&d, &active), 10);
    }
}
