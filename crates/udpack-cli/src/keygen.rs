//! `udpack keygen`: a server key pair as PEM files OpenSSL reads.

use std::path::{Path, PathBuf};

use udpack_io::{KeyFile, PrivateKey};

use crate::error::KeyFileError;

/// Why no key pair was written (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("{} exists; pass --force to replace the keys", .0.display())]
    Exists(PathBuf),
    #[error("cannot create {}: {source}", .path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Save {
        path: PathBuf,
        #[source]
        source: KeyFileError,
    },
}

/// Writes `dir/prikey.pem` (mode 0600) and `dir/pubkey.pem`; refuses to replace
/// existing keys unless `force`.
pub fn keygen(dir: &Path, force: bool) -> Result<(PathBuf, PathBuf), KeygenError> {
    let pri = dir.join("prikey.pem");
    let publ = dir.join("pubkey.pem");
    if !force {
        for p in [&pri, &publ] {
            if p.exists() {
                return Err(KeygenError::Exists(p.clone()));
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| KeygenError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let key = PrivateKey::generate();
    key.save(&pri).map_err(|e| KeygenError::Save {
        path: pri.clone(),
        source: e.into(),
    })?;
    key.public_key()
        .save(&publ)
        .map_err(|e| KeygenError::Save {
            path: publ.clone(),
            source: e.into(),
        })?;
    Ok((pri, publ))
}
