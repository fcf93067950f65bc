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
use crate::progress::Display;
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

/// `--retry-for` in seconds (zero: no reconnecting).
fn seconds(secs: f64) -> Result<Duration, UsageError> {
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(UsageError::BadRetryFor);
    }
    Duration::try_from_secs_f64(secs).map_err(|_| UsageError::BadRetryFor)
}

/// `--rate`: bits per second, with an optional decimal suffix `k`, `M` or `G` (as
/// iperf3's `-b`): `50M` is 50 Mbit/s.
pub fn parse_rate(s: &str) -> Result<u64, UsageError> {
    let bad = || UsageError::BadRate(s.to_string());
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1_000),
        Some('m' | 'M') => (&t[..t.len() - 1], 1_000_000),
        Some('g' | 'G') => (&t[..t.len() - 1], 1_000_000_000),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let bits = n * mult as f64;
    if !(bits.is_finite() && (8.0..1e15).contains(&bits)) {
        return Err(bad());
    }
    Ok(bits as u64)
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
    /// Files in flight at once.
    pub parallel: usize,
    /// Seconds of reconnecting before giving up.
    pub retry_for: f64,
    /// Bits per second.
    pub rate: Option<u64>,
    /// A JSON summary instead of the progress and the summary line.
    pub json: bool,
}

/// `udpack send`, with its summary line.
pub async fn send(args: SendArgs) -> Result<(), CliError> {
    let token = client_token(args.token)?;
    let timeout = timeout(args.timeout)?;
    let pubkey = load_public_key(&args.pubkey)?;
    if args.parallel == 0 {
        return Err(UsageError::Parallel.into());
    }
    let retry_for = seconds(args.retry_for)?;
    let mut opts = SendOptions::new(args.server, pubkey, token, args.paths);
    opts.timeout = timeout;
    opts.parallel = args.parallel;
    opts.retry_for = retry_for;
    opts.rate = args.rate.map(|bits| (bits / 8).max(1));
    if args.json {
        opts.display = Display::Quiet;
    }
    let summary = crate::send::send(opts).await?;
    if args.json {
        let line = serde_json::to_string(&summary)
            .map_err(|e| CliError::Usage(UsageError::Json(e.to_string())))?;
        println!("{line}");
        return Ok(());
    }
    let secs = summary.elapsed.as_secs_f64().max(1e-9);
    println!(
        "sent {} file(s), {} bytes ({} over the network) in {secs:.2} s, {:.1} MB/s; BLAKE3 verified by the server",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_bits_per_second_with_decimal_suffixes() {
        assert_eq!(parse_rate("50M").ok(), Some(50_000_000));
        assert_eq!(parse_rate("1.5k").ok(), Some(1_500));
        assert_eq!(parse_rate("2G").ok(), Some(2_000_000_000));
        assert_eq!(parse_rate("800").ok(), Some(800));
        for bad in ["", "M", "-5M", "1", "nanM", "5X"] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
    }
}
