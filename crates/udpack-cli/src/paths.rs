//! Which upload names the server accepts, and where they land.

use std::path::{Path, PathBuf};

/// Longest accepted path component, in bytes.
const MAX_COMPONENT: usize = 255;
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
    #[error("ends with `.part`, the suffix of uploads in progress")]
    PartSuffix,
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
        out.push(p);
    }
    if name.ends_with(".part") {
        return Err(BadPath::PartSuffix);
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

/// The first of `path`, `path.1`, `path.2`... that does not exist: uploads never
/// overwrite a file.
pub fn free_name(path: &Path) -> PathBuf {
    if !path.exists() {
        return path.to_path_buf();
    }
    let mut n = 1u32;
    loop {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        let candidate = PathBuf::from(s);
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
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
            "trailing.",
            " lead",
            "trail ",
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
    fn free_name_never_picks_an_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.txt");
        assert_eq!(free_name(&p), p);
        std::fs::write(&p, b"1").expect("write");
        assert_eq!(free_name(&p), dir.path().join("f.txt.1"));
        std::fs::write(dir.path().join("f.txt.1"), b"2").expect("write");
        assert_eq!(free_name(&p), dir.path().join("f.txt.2"));
    }
}
