//! Which local files an upload sends, and the names they get on the server.

use std::path::{Path, PathBuf};

use super::SendError;

/// A local file and the name it gets on the server.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub path: PathBuf,
    pub name: String,
    pub size: u64,
    /// Modification time in nanoseconds since the epoch (0 if unknown): part of the
    /// upload id, so a changed file does not resume an old part.
    pub mtime_ns: i128,
}

fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Files to send: plain files by their name, directories recursively under their own
/// name, with `/` between components.
pub(super) fn collect(paths: &[PathBuf]) -> Result<Vec<Item>, SendError> {
    let mut items = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| SendError::access(p, e))?;
        let base = p
            .canonicalize()
            .ok()
            .and_then(|c| c.file_name().map(|n| n.to_owned()))
            .ok_or_else(|| SendError::NoFileName(p.clone()))?;
        let base = base
            .to_str()
            .ok_or_else(|| SendError::NameNotUtf8(p.clone()))?
            .to_string();
        if meta.is_dir() {
            walk(p, &base, &mut items)?;
        } else if meta.is_file() {
            items.push(Item {
                path: p.clone(),
                name: base,
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
            });
        } else {
            return Err(SendError::NotAFile(p.clone()));
        }
    }
    Ok(items)
}

/// Adds the files under `dir` (sorted by name, for a stable order), named
/// `prefix/...`.
fn walk(dir: &Path, prefix: &str, items: &mut Vec<Item>) -> Result<(), SendError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| SendError::access(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| SendError::access(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            return Err(SendError::EntryNotUtf8(dir.to_path_buf()));
        };
        let path = e.path();
        let meta = std::fs::metadata(&path).map_err(|err| SendError::access(&path, err))?;
        let rel = format!("{prefix}/{name}");
        if meta.is_dir() {
            walk(&path, &rel, items)?;
        } else if meta.is_file() {
            items.push(Item {
                path,
                name: rel,
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
            });
        }
    }
    Ok(())
}
