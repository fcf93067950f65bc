//! Where the command's logs go: with a directory, one file per category (`udpack.log`,
//! `udpack.io.log`, and `server.log` or `client.log`); without, only with `-v`, to
//! stderr.

use std::path::Path;

use tracing::level_filters::LevelFilter;
use udpack_io::logging::LogGuard;

use crate::error::UsageError;

/// Sets up logging for `app` ("server" or "client"); keep the guard until exit.
pub fn init(dir: Option<&Path>, app: &str, verbose: bool) -> Result<Option<LogGuard>, UsageError> {
    let level = if verbose {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    };
    match dir {
        Some(d) => udpack_io::logging::init(d, app, level)
            .map(Some)
            .map_err(|source| UsageError::LogDir {
                path: d.to_path_buf(),
                source,
            }),
        None => {
            if verbose {
                let _ = tracing_subscriber::fmt()
                    .with_writer(std::io::stderr)
                    .with_max_level(LevelFilter::DEBUG)
                    .try_init();
            }
            Ok(None)
        }
    }
}
