//! The output directory as a handle. Every file of an upload is opened, created,
//! linked and removed relative to a directory handle, one path component at a time,
//! and no component is ever a symbolic link followed: a link planted in the output
//! directory (as a sub-directory, `NAME.part`, its sidecar or the final name) cannot
//! make the server write outside it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// Why a directory or file of an upload could not be used.
#[derive(Debug, thiserror::Error)]
pub(super) enum DirError {
    #[error("`{0}` is a symbolic link: refused")]
    Link(String),
    #[error("`{0}` is not a regular file")]
    NotFile(String),
    #[error("`{0}` has other hard links: refused")]
    HardLinked(String),
    #[error("`{name}`: {source}")]
    Io {
        name: String,
        #[source]
        source: io::Error,
    },
}

impl DirError {
    /// Attributes a failed system call on `name`: a link met where none may be
    /// (`ELOOP` from `O_NOFOLLOW`) is said so.
    fn at(name: &OsStr, e: Errno) -> DirError {
        let name = name.to_string_lossy().into_owned();
        if e == Errno::LOOP {
            DirError::Link(name)
        } else {
            DirError::Io {
                name,
                source: e.into(),
            }
        }
    }
}

/// Flags for every directory opened: never through a link at the last component.
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// A directory handle: the output directory or one below it.
#[derive(Debug)]
pub(super) struct Dir {
    fd: OwnedFd,
}

impl Dir {
    /// Opens the output directory itself (which the operator chose: it may be a link).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(rustix::fs::CWD, path, flags, Mode::empty())?;
        Ok(Dir { fd })
    }

    /// The directory `rel` names below this one, created as needed, each component
    /// opened without following links.
    pub fn subdir(&self, rel: &Path) -> Result<Dir, DirError> {
        let mut cur: Option<Dir> = None;
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return Err(DirError::NotFile(rel.to_string_lossy().into_owned()));
            };
            let next = cur.as_ref().unwrap_or(self).child(name)?;
            cur = Some(next);
        }
        match cur {
            Some(d) => Ok(d),
            None => Ok(Dir {
                fd: self.fd.try_clone().map_err(|source| DirError::Io {
                    name: ".".into(),
                    source,
                })?,
            }),
        }
    }

    /// Opens (creating if missing) the sub-directory `name`, refusing a link.
    fn child(&self, name: &OsStr) -> Result<Dir, DirError> {
        match rustix::fs::openat(&self.fd, name, dir_flags(), Mode::empty()) {
            Ok(fd) => return Ok(Dir { fd }),
            Err(Errno::NOENT) => {}
            // `O_DIRECTORY` reports a link as "not a directory": say which it is.
            Err(Errno::NOTDIR) => {
                let st = self.stat(name)?;
                if st.is_some_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink) {
                    return Err(DirError::Link(name.to_string_lossy().into_owned()));
                }
                return Err(DirError::at(name, Errno::NOTDIR));
            }
            Err(e) => return Err(DirError::at(name, e)),
        }
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_bits_truncate(0o777)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(DirError::at(name, e)),
        }
        match rustix::fs::openat(&self.fd, name, dir_flags(), Mode::empty()) {
            Ok(fd) => Ok(Dir { fd }),
            Err(e) => Err(DirError::at(name, e)),
        }
    }

    /// What is at `name`, without following a link; `None` if nothing.
    pub fn stat(&self, name: &OsStr) -> Result<Option<Stat>, DirError> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => Ok(Some(s)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(DirError::at(name, e)),
        }
    }

    /// Refuses `name` if it exists as anything but a regular file of one link: a
    /// symbolic link, a directory, a hard link to a file elsewhere.
    pub fn check_file(&self, name: &OsStr) -> Result<Option<Stat>, DirError> {
        let Some(st) = self.stat(name)? else {
            return Ok(None);
        };
        check_stat(name, &st)?;
        Ok(Some(st))
    }

    /// Opens the regular file `name` for reading and writing, creating it if `create`;
    /// never through a link, never a file with other hard links.
    pub fn open_file(&self, name: &OsStr, create: bool) -> Result<File, DirError> {
        let mut flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        if create {
            flags |= OFlags::CREATE;
        }
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_bits_truncate(0o666))
            .map_err(|e| DirError::at(name, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| DirError::at(name, e))?;
        check_stat(name, &st)?;
        // Back to blocking writes (the flag only kept a FIFO from blocking the open).
        let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| DirError::at(name, e))?;
        rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)
            .map_err(|e| DirError::at(name, e))?;
        Ok(File::from(fd))
    }

    /// Reads a small file (a sidecar), at most `limit` bytes; `None` if absent.
    pub fn read_small(&self, name: &OsStr, limit: u64) -> Result<Option<Vec<u8>>, DirError> {
        use std::io::Read;
        if self.check_file(name)?.is_none() {
            return Ok(None);
        }
        let f = self.open_file(name, false)?;
        let mut out = Vec::new();
        f.take(limit)
            .read_to_end(&mut out)
            .map_err(|source| DirError::Io {
                name: name.to_string_lossy().into_owned(),
                source,
            })?;
        Ok(Some(out))
    }

    /// Removes the file `name` (a link itself, never its target); absent is fine.
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Free bytes for unprivileged writers on the directory's file system.
    pub fn free_space(&self) -> io::Result<u64> {
        let s = rustix::fs::fstatvfs(&self.fd)?;
        Ok(s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// The sub-directory `name` if it is a real directory (for walking); `None` if it
    /// is a link or anything else.
    pub fn walk_child(&self, name: &OsStr) -> Option<Dir> {
        rustix::fs::openat(&self.fd, name, dir_flags(), Mode::empty())
            .ok()
            .map(|fd| Dir { fd })
    }

    /// The names in this directory (`.` and `..` left out).
    pub fn entries(&self) -> io::Result<Vec<OsString>> {
        use std::os::unix::ffi::OsStrExt;
        let mut out = Vec::new();
        for e in rustix::fs::Dir::read_from(&self.fd)? {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(OsStr::from_bytes(name).to_owned());
            }
        }
        Ok(out)
    }

    /// Moves `part` to the first of `name`, `name.1`, `name.2`... that does not exist
    /// and returns that name. Uploads never overwrite a file: the name is claimed with
    /// a hard link (which fails if the name is taken, by a link too, even by an upload
    /// finishing at the same moment), and only then is the part removed.
    pub fn claim_free_name(&self, part: &OsStr, name: &OsStr) -> io::Result<OsString> {
        for n in 0u32..10_000 {
            let mut candidate = name.to_owned();
            if n > 0 {
                candidate.push(format!(".{n}"));
            }
            match rustix::fs::linkat(&self.fd, part, &self.fd, &candidate, AtFlags::empty()) {
                Ok(()) => {
                    self.remove(part)?;
                    return Ok(candidate);
                }
                Err(Errno::EXIST) => continue,
                // File systems without hard links: check, then rename (a narrow race).
                Err(Errno::PERM | Errno::OPNOTSUPP | Errno::ACCESS) => {
                    if self.stat(&candidate).map_err(to_io)?.is_some() {
                        continue;
                    }
                    rustix::fs::renameat(&self.fd, part, &self.fd, &candidate)?;
                    return Ok(candidate);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} and 9999 variants exist", name.to_string_lossy()),
        ))
    }
}

/// Refuses anything but a regular file with one link.
fn check_stat(name: &OsStr, st: &Stat) -> Result<(), DirError> {
    let shown = || name.to_string_lossy().into_owned();
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Symlink => Err(DirError::Link(shown())),
        FileType::RegularFile if st.st_nlink > 1 => Err(DirError::HardLinked(shown())),
        FileType::RegularFile => Ok(()),
        _ => Err(DirError::NotFile(shown())),
    }
}

fn to_io(e: DirError) -> io::Error {
    match e {
        DirError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claiming_a_name_never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = Dir::open(dir.path()).expect("open");
        let part = dir.path().join("f.txt.part");
        for (i, want) in ["f.txt", "f.txt.1", "f.txt.2"].into_iter().enumerate() {
            std::fs::write(&part, [i as u8]).expect("write");
            let got = d
                .claim_free_name(OsStr::new("f.txt.part"), OsStr::new("f.txt"))
                .expect("claim");
            assert_eq!(dir.path().join(got), dir.path().join(want));
            assert!(!part.exists());
        }
        // Each file kept its own content.
        for (i, name) in ["f.txt", "f.txt.1", "f.txt.2"].into_iter().enumerate() {
            assert_eq!(
                std::fs::read(dir.path().join(name)).expect("read"),
                [i as u8]
            );
        }
    }

    #[test]
    fn links_are_never_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep").expect("write");
        std::os::unix::fs::symlink(&victim, dir.path().join("x.part")).expect("symlink");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("sub")).expect("symlink");
        let d = Dir::open(dir.path()).expect("open");
        assert!(matches!(
            d.open_file(OsStr::new("x.part"), true),
            Err(DirError::Link(_))
        ));
        assert!(matches!(
            d.subdir(Path::new("sub/deeper")),
            Err(DirError::Link(_))
        ));
        std::fs::hard_link(&victim, dir.path().join("h.part")).expect("hard link");
        assert!(matches!(
            d.check_file(OsStr::new("h.part")),
            Err(DirError::HardLinked(_))
        ));
        assert_eq!(std::fs::read(&victim).expect("read"), b"keep");
    }
}
