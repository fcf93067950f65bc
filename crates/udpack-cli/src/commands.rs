//! The subcommands as the binary runs them: options resolved from the arguments, the
//! files they name and the environment (`UDPACK_TOKEN`), the work done, the outcome
//! printed.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use udpack_io::{KeyFile, PrivateKey, PublicKey};

use crate::error::{CliError, UsageError};
use crate::send::SendOptions;
use crate::serve::{Limits, Receiver, ServeOptions};

/// `udpack keygen`.
pub fn keygen(out: &Path, force: bool) -> Result<(), CliError> {
    let (pri, publ) = crate::keygen::keygen(out, force)?;
    println!("wrote {} and {}", pri.display(), publ.display());
    Ok(())
}

/// The arguments of `udpack serve` (logging aside).
pub struct ServeArgs {
    pub key: PathBuf,
    pub listen: SocketAddr,
    pub tokens: Vec<String>,
    pub tokens_file: Option<PathBuf>,
    pub out: PathBuf,
    pub once: bool,
    pub limits: Limits,
}

/// `udpack serve`: serves until the future `stop` returns resolves. `stop` is called
/// only once the server is bound: a signal handler it installs replaces the default
/// action (exit at once) from then on, not while the arguments are still checked.
pub async fn serve<F: Future<Output = ()>>(
    args: ServeArgs,
    stop: impl FnOnce() -> F,
) -> Result<(), CliError> {
    let mut tokens = args.tokens;
    if let Some(f) = &args.tokens_file {
        tokens.extend(read_tokens_file(f)?);
    }
    if let Ok(t) = std::env::var("UDPACK_TOKEN") {
        if !t.is_empty() {
            tokens.push(t);
        }
    }
    let key = PrivateKey::load(&args.key).map_err(|e| UsageError::KeyFile {
        path: args.key.clone(),
        source: e.into(),
    })?;
    let receiver = Receiver::bind(ServeOptions {
        key,
        listen: args.listen,
        tokens,
        out: args.out,
        once: args.once,
        limits: args.limits,
        show_progress: true,
    })
    .await?;
    receiver.run(stop()).await?;
    Ok(())
}

/// The tokens of a tokens file: one per line, `#` starts a comment.
fn read_tokens_file(path: &Path) -> Result<Vec<String>, UsageError> {
    let text = std::fs::read_to_string(path).map_err(|source| UsageError::TokensFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// The arguments of `udpack send` (logging aside).
pub struct SendArgs {
    pub server: String,
    pub pubkey: PathBuf,
    /// From `--token`; `UDPACK_TOKEN` otherwise.
    pub token: Option<String>,
    /// Seconds.
    pub timeout: f64,
    pub paths: Vec<PathBuf>,
}

/// `udpack send`, with its summary line.
pub async fn send(args: SendArgs) -> Result<(), CliError> {
    let token = args
        .token
        .or_else(|| std::env::var("UDPACK_TOKEN").ok())
        .filter(|t| !t.is_empty())
        .ok_or(UsageError::NoToken)?;
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(UsageError::BadTimeout.into());
    }
    let pubkey = PublicKey::load(&args.pubkey).map_err(|e| UsageError::KeyFile {
        path: args.pubkey.clone(),
        source: e.into(),
    })?;
    let summary = crate::send::send(SendOptions {
        server: args.server,
        pubkey,
        token,
        paths: args.paths,
        timeout: Duration::from_secs_f64(args.timeout),
    })
    .await?;
    let secs = summary.elapsed.as_secs_f64().max(1e-9);
    println!(
        "sent {} file(s), {} bytes ({} over the network) in {secs:.2} s, {:.1} MB/s; SHA-256 verified by the server",
        summary.files,
        summary.bytes,
        summary.sent,
        summary.sent as f64 / 1e6 / secs
    );
    Ok(())
}

/// `udpack demo`.
pub async fn demo() -> Result<(), CliError> {
    crate::demo::demo().await
}
