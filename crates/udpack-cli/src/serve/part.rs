//! The `.part` file an upload is written to, and its `.part.id` sidecar naming the
//! upload it belongs to: resumed when the offer has the same upload id (the client
//! then checks the prefix's hash), started afresh otherwise,
//! discarded when the upload is damaged, moved to a free name when complete. All of it
//! through [`Dir`] handles, so never through a symbolic link; and only once the
//! directory's limits ([`Limits`]) leave room for the upload.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::FileType;

use super::dir::{Dir, DirError};
use super::limits::{usage, Limits};
use crate::paths::upload_key;
use crate::protocol::code;

/// Longest sidecar read: a hex upload id and some white space.
const SIDECAR_MAX: u64 = 256;

/// Why a part file could not be made ready.
#[derive(Debug, thiserror::Error)]
pub(super) enum PartError {
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error("cannot read the partial file: {0}")]
    Read(#[source] std::io::Error),
    #[error("cannot truncate: {0}")]
    Truncate(#[source] std::io::Error),
    #[error("cannot seek: {0}")]
    Seek(#[source] std::io::Error),
    #[error("cannot write: {0}")]
    WriteSidecar(#[source] std::io::Error),
    #[error("cannot check the free space: {0}")]
    Statvfs(#[source] std::io::Error),
    #[error("not enough free space: {need} bytes needed, {free} free (keeping {min_free})")]
    NoSpace { need: u64, free: u64, min_free: u64 },
    #[error("over the quota of {quota} bytes: {used} in use or reserved, {filesize} offered")]
    Quota {
        quota: u64,
        used: u64,
        filesize: u64,
    },
    #[error("cannot write: {0}")]
    Write(#[source] std::io::Error),
    #[error("the server failed opening the file")]
    Task,
}

impl PartError {
    /// The protocol's error code for it.
    pub fn code(&self) -> &'static str {
        match self {
            PartError::Dir(DirError::Link(_) | DirError::NotFile(_) | DirError::HardLinked(_)) => {
                code::BAD_PATH
            }
            PartError::NoSpace { .. } => code::NO_SPACE,
            PartError::Quota { .. } => code::QUOTA,
            _ => code::IO,
        }
    }
}

/// Where one upload goes.
#[derive(Debug, Clone)]
pub(super) struct Destination {
    /// The sanitized relative path, for messages.
    pub rel: PathBuf,
    /// What the upload is told apart by (see [`upload_key`]).
    pub key: String,
    /// The directory it lands in, relative to the output directory.
    parent: PathBuf,
    /// The final name (or, if taken, the first free variant of it).
    name: OsString,
    /// The file written meanwhile: `NAME.part`.
    part: OsString,
    /// The upload id the part belongs to: `NAME.part.id`.
    sidecar: OsString,
}

impl Destination {
    pub fn new(rel: PathBuf) -> Self {
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = rel.file_name().map(|n| n.to_owned()).unwrap_or_default();
        let mut part = name.clone();
        part.push(".part");
        let mut sidecar = part.clone();
        sidecar.push(".id");
        Destination {
            key: upload_key(&rel),
            rel,
            parent,
            name,
            part,
            sidecar,
        }
    }
}

/// A part file open for writing at its end.
pub(super) struct Part {
    pub file: std::fs::File,
    /// Bytes in the file.
    pub len: u64,
    /// BLAKE3 of those bytes, to be continued with the rest.
    pub hasher: blake3::Hasher,
    /// The directory holding it.
    pub dir: Dir,
}

/// What the limits are checked against: the uploads in progress (this one included).
pub(super) struct Admission {
    pub limits: Limits,
    pub active: HashSet<String>,
    /// Sum of their announced sizes.
    pub reserved: u64,
}

/// Creates the directories of the target, checks the limits, then resumes the part
/// file if it belongs to the upload `id_hex` (of `filesize` bytes), or starts it
/// afresh.
pub(super) async fn open(
    out: Arc<Dir>,
    dest: &Destination,
    id_hex: &str,
    filesize: u64,
    admission: Admission,
) -> Result<Part, PartError> {
    let dest = dest.clone();
    let hex = id_hex.to_string();
    tokio::task::spawn_blocking(move || open_blocking(&out, &dest, &hex, filesize, &admission))
        .await
        .unwrap_or(Err(PartError::Task))
}

/// The target's directory, refusing a final name that is a symbolic link.
fn target_dir(out: &Dir, dest: &Destination) -> Result<Dir, PartError> {
    let dir = out.subdir(&dest.parent)?;
    if let Some(st) = dir.stat(&dest.name)? {
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            return Err(DirError::Link(dest.rel.to_string_lossy().into_owned()).into());
        }
    }
    Ok(dir)
}

fn open_blocking(
    out: &Dir,
    dest: &Destination,
    id_hex: &str,
    filesize: u64,
    admission: &Admission,
) -> Result<Part, PartError> {
    let dir = target_dir(out, dest)?;
    let same_content = dir
        .read_small(&dest.sidecar, SIDECAR_MAX)?
        .is_some_and(|h| String::from_utf8_lossy(&h).trim() == id_hex);
    let existing = dir
        .check_file(&dest.part)?
        .map(|st| u64::try_from(st.st_size).unwrap_or(0));
    let resume_from = match existing {
        Some(len) if same_content && len <= filesize => Some(len),
        _ => None,
    };
    admit(
        out,
        filesize - resume_from.unwrap_or(0),
        filesize,
        admission,
    )?;
    let (file, len, hasher) = match resume_from {
        Some(len) => resume(&dir, dest, len)?,
        None => start(&dir, dest, id_hex)?,
    };
    Ok(Part {
        file,
        len,
        hasher,
        dir,
    })
}

/// Refuses an upload that needs `need` more bytes when the file system or the quota
/// has no room for them.
fn admit(out: &Dir, need: u64, filesize: u64, a: &Admission) -> Result<(), PartError> {
    let free = out.free_space().map_err(PartError::Statvfs)?;
    let min_free = a.limits.min_free;
    if free < need.saturating_add(min_free) {
        return Err(PartError::NoSpace {
            need,
            free,
            min_free,
        });
    }
    if let Some(quota) = a.limits.quota {
        // Uploads in progress count at their announced size, this one included.
        let used = usage(out, &a.active).saturating_add(a.reserved);
        if used > quota {
            return Err(PartError::Quota {
                quota,
                used: used.saturating_sub(filesize),
                filesize,
            });
        }
    }
    Ok(())
}

/// Hashes the `len` bytes already in the part and positions at their end (cutting
/// anything after what could be read).
fn resume(
    dir: &Dir,
    dest: &Destination,
    len: u64,
) -> Result<(std::fs::File, u64, blake3::Hasher), PartError> {
    let mut hasher = blake3::Hasher::new();
    let mut f = dir.open_file(&dest.part, false)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = f.read(&mut buf[..want]).map_err(PartError::Read)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let have = len - left;
    f.set_len(have).map_err(PartError::Truncate)?;
    f.seek(std::io::SeekFrom::Start(have))
        .map_err(PartError::Seek)?;
    Ok((f, have, hasher))
}

/// An empty part, with the sidecar naming its upload. Both are emptied only once
/// opened and checked (a regular file of one link), never by `O_TRUNC` on a name.
fn start(
    dir: &Dir,
    dest: &Destination,
    id_hex: &str,
) -> Result<(std::fs::File, u64, blake3::Hasher), PartError> {
    let file = dir.open_file(&dest.part, true)?;
    file.set_len(0).map_err(PartError::Truncate)?;
    let mut side = dir.open_file(&dest.sidecar, true)?;
    side.set_len(0)
        .and_then(|()| side.write_all(id_hex.as_bytes()))
        .map_err(PartError::WriteSidecar)?;
    Ok((file, 0, blake3::Hasher::new()))
}

/// A file sent whole in its offer, already checked against its hash: written to its
/// part, made durable and moved to a free name, in one blocking call. Returns the
/// relative path it got.
pub(super) async fn store_whole(
    out: Arc<Dir>,
    dest: &Destination,
    data: bytes::Bytes,
    admission: Admission,
) -> Result<PathBuf, PartError> {
    let dest = dest.clone();
    tokio::task::spawn_blocking(move || {
        let dir = target_dir(&out, &dest)?;
        let size = data.len() as u64;
        admit(&out, size, size, &admission)?;
        let mut file = dir.open_file(&dest.part, true)?;
        file.set_len(0)
            .and_then(|()| file.write_all(&data))
            .and_then(|()| file.sync_all())
            .map_err(PartError::Write)?;
        drop(file);
        place(&dir, &dest).map_err(PartError::Write)
    })
    .await
    .unwrap_or(Err(PartError::Task))
}

/// Removes a damaged part and its sidecar: the next upload starts afresh.
pub(super) fn discard(dir: &Dir, dest: &Destination) {
    let _ = dir.remove(&dest.part);
    let _ = dir.remove(&dest.sidecar);
}

/// Moves a complete part to the first free name of the target, `NAME.1`... (never
/// replacing a file) and removes its sidecar; returns the relative path it got.
pub(super) fn place(dir: &Dir, dest: &Destination) -> std::io::Result<PathBuf> {
    let name = dir.claim_free_name(&dest.part, &dest.name)?;
    let _ = dir.remove(&dest.sidecar);
    Ok(dest.parent.join(name))
}
