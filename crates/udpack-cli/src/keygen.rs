//! `udpack keygen`: a server key pair as PEM files OpenSSL reads.

use std::path::{Path, PathBuf};

use udpack_io::{KeyFile, PrivateKey};

use crate::error::CliError;

/// Writes `dir/prikey.pem` (mode 0600) and `dir/pubkey.pem`; refuses to replace
/// existing keys unless `force`.
pub fn keygen(dir: &Path, force: bool) -> Result<(PathBuf, PathBuf), CliError> {
    let pri = dir.join("prikey.pem");
    let publ = dir.join("pubkey.pem");
    if !force {
        for p in [&pri, &publ] {
            if p.exists() {
                return Err(CliError::Other(format!(
                    "{} exists; pass --force to replace the keys",
                    p.display()
                )));
            }
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", dir.display())))?;
    let key = PrivateKey::generate();
    key.save(&pri)
        .map_err(|e| CliError::Other(format!("{}: {e}", pri.display())))?;
    key.public_key()
        .save(&publ)
        .map_err(|e| CliError::Other(format!("{}: {e}", publ.display())))?;
    Ok((pri, publ))
}
