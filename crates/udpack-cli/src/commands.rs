//! The subcommands as the binary runs them: options resolved from the arguments, the
//! files they name and the environment (`UDPACK_TOKEN`), the work done, the outcome
//! printed.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use udpack_io::{KeyFile, PrivateKey, PublicKey};

use crate::bench::{BenchError, ConnectOptions, ListenOptions, Listener, Mode, Spec};
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
    let tokens = server_tokens(args.tokens, args.tokens_file.as_deref())?;
    let key = load_private_key(&args.key)?;
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

/// The tokens a server accepts: `--token`s, then the tokens file's, then
/// `UDPACK_TOKEN`.
fn server_tokens(mut tokens: Vec<String>, file: Option<&Path>) -> Result<Vec<String>, UsageError> {
    if let Some(f) = file {
        tokens.extend(read_tokens_file(f)?);
    }
    if let Ok(t) = std::env::var("UDPACK_TOKEN") {
        if !t.is_empty() {
            tokens.push(t);
        }
    }
    Ok(tokens)
}

fn load_private_key(path: &Path) -> Result<PrivateKey, UsageError> {
    PrivateKey::load(path).map_err(|e| UsageError::KeyFile {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

fn load_public_key(path: &Path) -> Result<PublicKey, UsageError> {
    PublicKey::load(path).map_err(|e| UsageError::KeyFile {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// The token a client presents: `--token`, or `UDPACK_TOKEN`.
fn client_token(token: Option<String>) -> Result<String, UsageError> {
    token
        .or_else(|| std::env::var("UDPACK_TOKEN").ok())
        .filter(|t| !t.is_empty())
        .ok_or(UsageError::NoToken)
}

/// `--timeout` in seconds, as a duration; one too large for a duration is refused
/// rather than a panic.
fn timeout(secs: f64) -> Result<Duration, UsageError> {
    if !(secs.is_finite() && secs > 0.0) {
        return Err(UsageError::BadTimeout);
    }
    Duration::try_from_secs_f64(secs).map_err(|_| UsageError::BadTimeout)
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
    let token = client_token(args.token)?;
    let timeout = timeout(args.timeout)?;
    let pubkey = load_public_key(&args.pubkey)?;
    let summary = crate::send::send(SendOptions {
        server: args.server,
        pubkey,
        token,
        paths: args.paths,
        timeout,
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

/// The arguments of `udpack bench --listen` (logging aside).
pub struct BenchListenArgs {
    pub key: PathBuf,
    pub listen: SocketAddr,
    pub tokens: Vec<String>,
    pub tokens_file: Option<PathBuf>,
}

/// `udpack bench --listen`: serves bench clients until `stop` resolves (called once
/// bound, as for [`serve`]).
pub async fn bench_listen<F: Future<Output = ()>>(
    args: BenchListenArgs,
    stop: impl FnOnce() -> F,
) -> Result<(), CliError> {
    let tokens = server_tokens(args.tokens, args.tokens_file.as_deref())?;
    let key = load_private_key(&args.key)?;
    let listener = Listener::bind(ListenOptions {
        key,
        listen: args.listen,
        tokens,
    })
    .await?;
    listener.run(stop()).await?;
    Ok(())
}

/// The arguments of `udpack bench --connect` (logging aside).
pub struct BenchConnectArgs {
    pub server: String,
    pub pubkey: PathBuf,
    /// From `--token` (at most one for a client); `UDPACK_TOKEN` otherwise.
    pub tokens: Vec<String>,
    /// Seconds.
    pub timeout: f64,
    pub mode: Mode,
    /// Seconds.
    pub duration: f64,
    pub streams: u32,
    pub size: u32,
    pub rate: u32,
    pub json: bool,
}

/// `udpack bench --connect`: runs one test; its intervals as they come and a summary,
/// or with `json` one JSON document at the end and nothing else on stdout.
pub async fn bench_connect(args: BenchConnectArgs) -> Result<(), CliError> {
    if args.tokens.len() > 1 {
        return Err(UsageError::ManyTokens.into());
    }
    let token = client_token(args.tokens.into_iter().next())?;
    let timeout = timeout(args.timeout)?;
    let spec = Spec::new(args.mode, args.duration, args.streams, args.size, args.rate)
        .map_err(BenchError::from)?;
    let pubkey = load_public_key(&args.pubkey)?;
    let report = crate::bench::connect(ConnectOptions {
        server: args.server,
        pubkey,
        token,
        timeout,
        spec,
        json: args.json,
    })
    .await?;
    if args.json {
        let doc = serde_json::to_string_pretty(&report).map_err(BenchError::from)?;
        println!("{doc}");
    } else {
        for s in &report.summary {
            println!("{}", s.line());
        }
    }
    Ok(())
}
