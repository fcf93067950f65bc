//! `udpack`: file upload over UDPack. See `udpack --help`.

mod demo;
mod error;
mod keygen;
mod paths;
mod progress;
mod protocol;
mod send;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing::level_filters::LevelFilter;
use udpack_io::{KeyFile, PrivateKey, PublicKey};

use crate::error::CliError;

#[derive(Parser)]
#[command(
    name = "udpack",
    version,
    about = "Encrypted, resumable file upload over UDPack"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a server key pair: DIR/pubkey.pem and DIR/prikey.pem (mode 0600).
    Keygen {
        /// Directory for the keys.
        #[arg(long, default_value = "keys")]
        out: PathBuf,
        /// Replace existing keys.
        #[arg(long)]
        force: bool,
    },
    /// Receives uploads until stopped (SIGINT/SIGTERM).
    Serve {
        /// The server's private key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:45456")]
        listen: SocketAddr,
        /// A token clients may present (repeatable; also UDPACK_TOKEN).
        #[arg(long = "token")]
        tokens: Vec<String>,
        /// A file of tokens, one per line (`#` starts a comment).
        #[arg(long)]
        tokens_file: Option<PathBuf>,
        /// Directory the files go to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Exit after the first completed upload (one client session).
        #[arg(long)]
        once: bool,
        /// Write udpack.log, udpack.io.log and server.log here.
        #[arg(long)]
        log_dir: Option<PathBuf>,
        /// More detailed logs.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Uploads files and directories (recursively, keeping relative paths).
    Send {
        /// The server's address (host:port).
        #[arg(long)]
        server: String,
        /// The server's public key (PEM).
        #[arg(long)]
        pubkey: PathBuf,
        /// The token (or UDPACK_TOKEN, which keeps it out of `ps`).
        #[arg(long)]
        token: Option<String>,
        /// Give up connecting after this many seconds.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        /// Write udpack.log, udpack.io.log and client.log here.
        #[arg(long)]
        log_dir: Option<PathBuf>,
        /// More detailed logs.
        #[arg(short, long)]
        verbose: bool,
        /// Files and directories to upload.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Fresh keys, a server and a client on loopback, a generated file uploaded and
    /// checked.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let mut log_guard = None;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Keygen { out, force } => {
                let (pri, publ) = keygen::keygen(&out, force)?;
                println!("wrote {} and {}", pri.display(), publ.display());
                Ok(())
            }
            Command::Serve {
                key,
                listen,
                mut tokens,
                tokens_file,
                out,
                once,
                log_dir,
                verbose,
            } => {
                log_guard = logs(log_dir, "server", verbose)?;
                if let Some(f) = tokens_file {
                    let text = std::fs::read_to_string(&f)
                        .map_err(|e| CliError::Usage(format!("{}: {e}", f.display())))?;
                    tokens.extend(
                        text.lines()
                            .map(|l| l.split('#').next().unwrap_or("").trim())
                            .filter(|l| !l.is_empty())
                            .map(String::from),
                    );
                }
                if let Ok(t) = std::env::var("UDPACK_TOKEN") {
                    if !t.is_empty() {
                        tokens.push(t);
                    }
                }
                let key = PrivateKey::load(&key)
                    .map_err(|e| CliError::Usage(format!("{}: {e}", key.display())))?;
                let receiver = serve::Receiver::bind(serve::ServeOptions {
                    key,
                    listen,
                    tokens,
                    out,
                    once,
                    show_progress: true,
                })
                .await?;
                receiver.run(shutdown_signal()).await
            }
            Command::Send {
                server,
                pubkey,
                token,
                timeout,
                log_dir,
                verbose,
                paths,
            } => {
                log_guard = logs(log_dir, "client", verbose)?;
                let token = token
                    .or_else(|| std::env::var("UDPACK_TOKEN").ok())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| CliError::Usage("no token: pass --token or set UDPACK_TOKEN".into()))?;
                if !(timeout.is_finite() && timeout > 0.0) {
                    return Err(CliError::Usage("--timeout must be a positive number of seconds".into()));
                }
                let pubkey = PublicKey::load(&pubkey)
                    .map_err(|e| CliError::Usage(format!("{}: {e}", pubkey.display())))?;
                let summary = send::send(send::SendOptions {
                    server,
                    pubkey,
                    token,
                    paths,
                    timeout: Duration::from_secs_f64(timeout),
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
            Command::Demo => demo::demo().await,
        }
    });
    // Runtime tasks may hold sockets; stop them before exiting.
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(log_guard);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Sets up logging: with a directory, one file per category (the JavaScript version's layout);
/// without, only with `-v`, to stderr.
fn logs(
    dir: Option<PathBuf>,
    app: &str,
    verbose: bool,
) -> Result<Option<udpack_io::logging::LogGuard>, CliError> {
    let level = if verbose {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    };
    match dir {
        Some(d) => udpack_io::logging::init(&d, app, level)
            .map(Some)
            .map_err(|e| CliError::Usage(format!("log directory {}: {e}", d.display()))),
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

/// Resolves on SIGINT or SIGTERM. The handlers are installed by the call itself (not
/// on the first poll), so a signal sent once the server said "listening on" is handled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
