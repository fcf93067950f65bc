//! Key files: loading and saving the PEM keys of `udpack-proto`, which only parses and
//! encodes them (the sans-IO core does no file I/O).
//!
//! ```no_run
//! use udpack::{KeyFile, PrivateKey, PublicKey};
//!
//! # fn demo() -> Result<(), udpack::KeyFileError> {
//! let key = PrivateKey::generate();
//! key.save("server.key")?; // mode 0600
//! key.public_key().save("server.pub")?;
//! let key = PrivateKey::load("server.key")?;
//! # Ok(()) }
//! ```

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use udpack_proto::{KeyError, PrivateKey, PublicKey};
use zeroize::Zeroizing;

/// Key files larger than this are rejected without being read completely
/// (an X25519 PEM file is about 120 bytes).
const MAX_FILE_LEN: u64 = 64 * 1024;

/// Errors from loading or saving a key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Reading or writing a key file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file the operation was applied to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file does not hold a usable key; a file that is not UTF-8 text or is
    /// implausibly large is [`KeyError::Pem`].
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Only the two key types have files: the trait is not for other crates to implement.
mod sealed {
    pub trait Sealed {}
    impl Sealed for udpack_proto::PrivateKey {}
    impl Sealed for udpack_proto::PublicKey {}
}

/// Loading and saving [`PrivateKey`] and [`PublicKey`] as PEM files, in the formats
/// OpenSSL reads and writes (see `from_pem` / `to_pem`).
///
/// Saving writes a new temporary file in the same directory, syncs it and renames it
/// over the path, so an existing file is replaced atomically and its old, possibly
/// wider permissions are not inherited. On Unix a private key file is created with
/// mode 0600 before any key material is written, a public key file with 0644 (both
/// minus the process umask).
pub trait KeyFile: Sized + sealed::Sealed {
    /// Reads a key from a PEM file.
    fn load(path: impl AsRef<Path>) -> Result<Self, KeyFileError>;
    /// Writes the key as a PEM file, replacing `path` atomically.
    fn save(&self, path: impl AsRef<Path>) -> Result<(), KeyFileError>;
}

impl KeyFile for PrivateKey {
    fn load(path: impl AsRef<Path>) -> Result<Self, KeyFileError> {
        load_pem(path.as_ref(), PrivateKey::from_pem)
    }

    fn save(&self, path: impl AsRef<Path>) -> Result<(), KeyFileError> {
        let text = Zeroizing::new(self.to_pem());
        write_file_atomic(path.as_ref(), text.as_bytes(), 0o600)
    }
}

impl KeyFile for PublicKey {
    fn load(path: impl AsRef<Path>) -> Result<Self, KeyFileError> {
        load_pem(path.as_ref(), PublicKey::from_pem)
    }

    fn save(&self, path: impl AsRef<Path>) -> Result<(), KeyFileError> {
        write_file_atomic(path.as_ref(), self.to_pem().as_bytes(), 0o644)
    }
}

/// Reads `path` (see [`read_key_file`]) and parses it as UTF-8 PEM; the file's bytes
/// are zeroized afterwards, as they may be a private key.
fn load_pem<T>(path: &Path, parse: fn(&str) -> Result<T, KeyError>) -> Result<T, KeyFileError> {
    let bytes = read_key_file(path)?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| KeyError::Pem("file is not UTF-8 text".into()))?;
    Ok(parse(text)?)
}

/// Reads a key file, refusing files larger than [`MAX_FILE_LEN`] (so that
/// pointing at e.g. `/dev/zero` fails instead of exhausting memory).
fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let io_err = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(KeyError::Pem(format!("file is larger than {MAX_FILE_LEN} bytes")).into());
    }
    Ok(bytes)
}

/// Writes `contents` to a fresh temporary file next to `path` (created with
/// `mode` on Unix), syncs it and renames it over `path`. The temporary file is
/// removed if anything fails.
fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyFileError> {
    let io_err = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path.file_name().ok_or_else(|| {
        io_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path has no file name",
        ))
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(file_name);
    prefix.push(".tmp-");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut tmp = builder.tempfile_in(dir).map_err(io_err)?;
    tmp.write_all(contents)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err)?;
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::process::Command;

    use super::*;

    /// A fresh directory under the system's temporary directory, removed on drop.
    fn test_dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("udpack-keys-test-{name}-"))
            .tempdir()
            .unwrap()
    }

    /// Whether an `openssl` executable is on `PATH`.
    fn have_openssl() -> bool {
        let found = std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join("openssl").is_file())
        });
        if !found {
            eprintln!("openssl not found on PATH; skipping OpenSSL interoperability test");
        }
        found
    }

    /// Runs `openssl args...`, panicking with its stderr on failure, and
    /// returns its stdout.
    fn openssl(args: &[&std::ffi::OsStr]) -> String {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    macro_rules! os {
        ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new($a)),*] };
    }

    #[test]
    fn error_messages() {
        let e = PublicKey::load("/nonexistent/udpack/key.pub").unwrap_err();
        assert!(
            matches!(&e, KeyFileError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        assert!(
            e.to_string()
                .starts_with("I/O error on /nonexistent/udpack/key.pub: "),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
        // Parse errors read as they do from `from_pem`.
        let dir = test_dir("messages");
        let path = dir.path().join("empty.pem");
        fs::write(&path, "").unwrap();
        let e = PrivateKey::load(&path).unwrap_err();
        assert_eq!(e.to_string(), "not PEM: no PEM block found");
        fs::write(&path, [0xff]).unwrap();
        let e = PrivateKey::load(&path).unwrap_err();
        assert_eq!(e.to_string(), "not PEM: file is not UTF-8 text");
    }

    #[test]
    fn save_and_load_files() {
        let dir = test_dir("save");
        let key = PrivateKey::generate();
        let public = key.public_key();

        let key_path = dir.path().join("server.key");
        let pub_path = dir.path().join("server.pub");
        key.save(&key_path).unwrap();
        public.save(&pub_path).unwrap();

        assert_eq!(fs::read_to_string(&key_path).unwrap(), key.to_pem());
        assert_eq!(fs::read_to_string(&pub_path).unwrap(), public.to_pem());
        assert_eq!(
            PrivateKey::load(&key_path).unwrap().to_bytes(),
            key.to_bytes()
        );
        assert_eq!(PublicKey::load(&pub_path).unwrap(), public);

        // Overwriting works and leaves no temporary files behind.
        let key2 = PrivateKey::generate();
        key2.save(&key_path).unwrap();
        assert_eq!(
            PrivateKey::load(&key_path).unwrap().to_bytes(),
            key2.to_bytes()
        );
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["server.key", "server.pub"]);

        // Errors.
        assert!(matches!(
            PrivateKey::load(dir.path().join("missing.key")),
            Err(KeyFileError::Io { .. })
        ));
        assert!(matches!(
            key.save(dir.path().join("no-such-dir").join("k.pem")),
            Err(KeyFileError::Io { .. })
        ));
        assert!(matches!(key.save("/"), Err(KeyFileError::Io { .. })));
        fs::write(dir.path().join("binary"), [0xff, 0xfe, 0x00, 0x80]).unwrap();
        assert!(matches!(
            PrivateKey::load(dir.path().join("binary")),
            Err(KeyFileError::Key(KeyError::Pem(_)))
        ));
        fs::write(
            dir.path().join("big"),
            vec![b'A'; MAX_FILE_LEN as usize + 1],
        )
        .unwrap();
        assert!(matches!(
            PublicKey::load(dir.path().join("big")),
            Err(KeyFileError::Key(KeyError::Pem(_)))
        ));
        assert!(matches!(
            PrivateKey::load(dir.path()),
            Err(KeyFileError::Io { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn save_file_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = test_dir("mode");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;

        let key = PrivateKey::generate();
        let key_path = dir.path().join("server.key");
        key.save(&key_path).unwrap();
        assert_eq!(mode(&key_path), 0o600);

        // Replacing a world-readable file still yields 0600.
        let loose = dir.path().join("loose.key");
        fs::write(&loose, "old").unwrap();
        fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
        key.save(&loose).unwrap();
        assert_eq!(mode(&loose), 0o600);

        let pub_path = dir.path().join("server.pub");
        key.public_key().save(&pub_path).unwrap();
        let m = mode(&pub_path);
        assert_eq!(m & 0o600, 0o600, "{m:o}");
        assert_eq!(m & 0o133, 0, "{m:o}"); // at most 0644
    }

    #[test]
    fn openssl_generated_key_loads() {
        if !have_openssl() {
            return;
        }
        let dir = test_dir("ossl-gen");
        let k = dir.path().join("k.pem");
        openssl(os![
            "genpkey",
            "-algorithm",
            "x25519",
            "-out",
            k.as_os_str()
        ]);
        let pub_text = openssl(os!["pkey", "-in", k.as_os_str(), "-pubout"]);

        let key = PrivateKey::load(&k).unwrap();
        let openssl_public = PublicKey::from_pem(&pub_text).unwrap();
        assert_eq!(key.public_key(), openssl_public);

        // Our encoders reproduce OpenSSL's files byte for byte.
        assert_eq!(key.to_pem(), fs::read_to_string(&k).unwrap());
        assert_eq!(openssl_public.to_pem(), pub_text);
    }

    #[test]
    fn openssl_reads_our_keys() {
        if !have_openssl() {
            return;
        }
        let dir = test_dir("ossl-read");
        let ours = dir.path().join("ours.pem");
        let key = PrivateKey::generate();
        key.save(&ours).unwrap();
        let pub_text = openssl(os!["pkey", "-in", ours.as_os_str(), "-pubout"]);
        assert_eq!(PublicKey::from_pem(&pub_text).unwrap(), key.public_key());

        // OpenSSL also accepts our public key file and re-emits it unchanged.
        let ours_pub = dir.path().join("ours.pub");
        key.public_key().save(&ours_pub).unwrap();
        let again = openssl(os![
            "pkey",
            "-pubin",
            "-in",
            ours_pub.as_os_str(),
            "-pubout"
        ]);
        assert_eq!(again, key.public_key().to_pem());
    }

    #[test]
    fn openssl_other_algorithms_are_rejected() {
        if !have_openssl() {
            return;
        }
        let dir = test_dir("ossl-other");
        let cases: &[(&str, &[&str])] = &[
            ("ed25519", &["-algorithm", "ed25519"]),
            ("x448", &["-algorithm", "x448"]),
            ("ed448", &["-algorithm", "ed448"]),
            (
                "rsa",
                &["-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:1024"],
            ),
            (
                "ec",
                &["-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            ),
        ];
        for (name, args) in cases {
            let k = dir.path().join(format!("{name}.pem"));
            let mut full = vec![std::ffi::OsStr::new("genpkey")];
            full.extend(args.iter().map(std::ffi::OsStr::new));
            full.extend([std::ffi::OsStr::new("-out"), k.as_os_str()]);
            openssl(&full);
            let pub_text = openssl(os!["pkey", "-in", k.as_os_str(), "-pubout"]);

            let r = PrivateKey::load(&k);
            assert!(
                matches!(r, Err(KeyFileError::Key(KeyError::NotX25519))),
                "{name}: {r:?}"
            );
            let r = PublicKey::from_pem(&pub_text);
            assert!(matches!(r, Err(KeyError::NotX25519)), "{name}: {r:?}");
        }

        // A passphrase-protected X25519 key is refused by label.
        let enc = dir.path().join("enc.pem");
        openssl(os![
            "genpkey",
            "-algorithm",
            "x25519",
            "-aes-128-cbc",
            "-pass",
            "pass:x",
            "-out",
            enc.as_os_str()
        ]);
        let r = PrivateKey::load(&enc);
        assert!(
            matches!(&r, Err(KeyFileError::Key(KeyError::WrongLabel { found, .. })) if found == "ENCRYPTED PRIVATE KEY"),
            "{r:?}"
        );
    }
}
