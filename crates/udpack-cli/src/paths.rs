//! Which upload names the server accepts, and where they land.

use std::path::{Path, PathBuf};

use unicode_normalization::UnicodeNormalization;

/// Longest accepted path component, in bytes: room is left for the `.part.sha256`
/// (the longest sidecar name, of upload protocol 1)
/// of an upload in progress and a `.N` suffix, within the usual 255-byte limit.
const MAX_COMPONENT: usize = 255 - ".part.sha256".len() - ".9999".len();
/// Deepest accepted path.
const MAX_DEPTH: usize = 64;

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    #[error("empty path")]
    Empty,
    #[error("absolute path")]
    Absolute,
    #[error("`{0}` is not a plain name")]
    Component(String),
    #[error("control character in the name")]
    Control,
    #[error("backslash in the name")]
    Backslash,
    #[error("`{0}` is a reserved device name")]
    Device(String),
    #[error("name too long")]
    TooLong,
    #[error("path too deep")]
    TooDeep,
    #[error("ends with `.part`, `.part.id` or `.part.sha256`, the names of uploads in progress")]
    PartSuffix,
    #[error("`:` in the name")]
    Colon,
}

/// Turns a client's `/`-separated relative name into a relative path that stays
/// inside the output directory, or says why it cannot.
pub fn sanitize(name: &str) -> Result<PathBuf, BadPath> {
    if name.is_empty() {
        return Err(BadPath::Empty);
    }
    if name.starts_with('/') || name.contains(':') && name.chars().nth(1) == Some(':') {
        return Err(BadPath::Absolute);
    }
    if name.contains('\\') {
        return Err(BadPath::Backslash);
    }
    // Alternate data streams on NTFS, the path separator of old macOS APIs.
    if name.contains(':') {
        return Err(BadPath::Colon);
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(BadPath::Control);
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return Err(BadPath::TooDeep);
    }
    let mut out = PathBuf::new();
    for p in parts {
        if p.is_empty() || p == "." || p == ".." || p.trim() != p || p.ends_with('.') {
            return Err(BadPath::Component(p.to_string()));
        }
        if p.len() > MAX_COMPONENT {
            return Err(BadPath::TooLong);
        }
        if is_device_name(p) {
            return Err(BadPath::Device(p.to_string()));
        }
        // The names of uploads in progress (and their hash files) are the server's own,
        // for files and directories alike, in any letter case.
        let lower = p.to_ascii_lowercase();
        if lower.ends_with(".part")
            || lower.ends_with(".part.id")
            || lower.ends_with(".part.sha256")
        {
            return Err(BadPath::PartSuffix);
        }
        out.push(p);
    }
    Ok(out)
}

/// Windows device names (with or without an extension): refused everywhere, so that
/// an upload directory can be shared with Windows machines.
fn is_device_name(p: &str) -> bool {
    let stem = p.split('.').next().unwrap_or(p).to_ascii_uppercase();
    matches!(
        stem.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) || (stem.len() == 4
        && (stem.starts_with("COM") || stem.starts_with("LPT"))
        && stem.as_bytes()[3].is_ascii_digit())
}

/// The name uploads in progress are told apart by: NFC, then lower case. Two names a
/// case-insensitive or normalising file system (APFS, NTFS, most SMB shares) would
/// store as one get one key, so they cannot write one part file at the same time.
pub fn upload_key(rel: &Path) -> String {
    rel.to_string_lossy()
        .nfc()
        .collect::<String>()
        .to_lowercase()
}

/// `path` with `suffix` appended to its file name.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_names_pass() {
        assert_eq!(sanitize("a.txt"), Ok(PathBuf::from("a.txt")));
        assert_eq!(
            sanitize("dir/sub/b c.bin"),
            Ok(PathBuf::from("dir/sub/b c.bin"))
        );
        assert_eq!(sanitize("été/日本.txt"), Ok(PathBuf::from("été/日本.txt")));
    }

    #[test]
    fn traversal_and_hostile_names_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "./a",
            "a//b",
            "a/",
            "..",
            "C:\\x",
            "c:/x",
            "a\\b",
            "x\ny",
            "x\0y",
            "tab\there",
            "CON",
            "con.txt",
            "dir/NUL",
            "lpt1.log",
            "COM9",
            "x.part",
            "x.part.id",
            "X.PART.ID",
            "trailing.",
            " lead",
            "trail ",
            "a:b",
            "file.txt:stream",
            "dir:/x",
        ] {
            assert!(sanitize(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(sanitize(&"a".repeat(256)).is_err());
        assert!(sanitize(&vec!["d"; 65].join("/")).is_err());
        // Device-like but not devices.
        assert!(sanitize("console.txt").is_ok());
        assert!(sanitize("COMX").is_ok());
    }

    #[test]
    fn keys_fold_case_and_normalisation() {
        // "é" precomposed and as e + combining acute, in two letter cases.
        let composed = upload_key(Path::new("Dir/\u{e9}t\u{e9}.TXT"));
        let decomposed = upload_key(Path::new("dir/e\u{301}te\u{301}.txt"));
        assert_eq!(composed, decomposed);
        assert_ne!(
            upload_key(Path::new("a.txt")),
            upload_key(Path::new("b.txt"))
        );
    }
}
