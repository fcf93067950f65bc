//! `udpack`: file upload and link measurement over UDPack. See `udpack --help`. Parses
//! the arguments and dispatches to [`udpack_cli::commands`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand};
use udpack_cli::bench::Mode;
use udpack_cli::commands::{self, BenchConnectArgs, BenchListenArgs, SendArgs, ServeArgs};
use udpack_cli::error::UsageError;
use udpack_cli::{logs, serve, shutdown, CliError};
use udpack_io::logging::LogGuard;

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
        /// Most bytes the output directory may hold (final files and parts); K, M, G,
        /// T suffixes are powers of 1024. No quota by default.
        #[arg(long, value_parser = serve::parse_size)]
        quota: Option<u64>,
        /// Bytes to keep free on the output file system after an accepted upload.
        #[arg(long, value_parser = serve::parse_size, default_value = "0")]
        min_free: u64,
        /// Remove `.part` files untouched this long (s, m, h, d), at start and
        /// periodically.
        #[arg(long, value_parser = serve::parse_age, default_value = "7d")]
        part_max_age: Duration,
        /// Sessions one token may hold at once; more clients with it are refused as
        /// busy ("too many sessions with this token"). 0: no limit.
        #[arg(long, default_value_t = udpack_io::DEFAULT_MAX_SESSIONS_PER_TOKEN)]
        max_sessions_per_token: usize,
        /// Uploads in progress one token may have at once; more files are refused
        /// with `busy`. 0: no limit.
        #[arg(long, default_value_t = serve::DEFAULT_MAX_UPLOADS_PER_TOKEN)]
        max_uploads_per_token: usize,
        /// Close a channel that sends no offer within this long (s, m, h, d).
        #[arg(long, value_parser = serve::parse_age, default_value = "30s")]
        offer_timeout: Duration,
        /// Abandon an upload (keeping its part) when the client takes no answer for
        /// this long (s, m, h, d): a client that stops reading.
        #[arg(long, value_parser = serve::parse_age, default_value = "30s")]
        reply_timeout: Duration,
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
        /// Files in flight at once (files over 1 MiB: at most 4 of them).
        #[arg(long, default_value_t = udpack_cli::send::DEFAULT_PARALLEL)]
        parallel: usize,
        /// When the session drops, reconnect and resume for up to this many seconds
        /// (0: exit at once); exit 5 after that.
        #[arg(long, default_value_t = udpack_cli::send::DEFAULT_RETRY_FOR.as_secs_f64())]
        retry_for: f64,
        /// Send at most this many bits per second (800k, 50M, 1.5G), to share a link.
        #[arg(long, value_parser = commands::parse_rate)]
        rate: Option<u64>,
        /// Print a JSON summary on stdout instead of the progress and the summary line.
        #[arg(long)]
        json: bool,
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
    /// Measures a link, as iperf3 does (goodput, RTT, loss, retransmissions, cwnd).
    ///
    /// One host runs `--listen ADDR --key PRIKEY`, the other `--connect ADDR --pubkey
    /// PUBKEY`; the client shows a line per direction and second, then a summary.
    Bench(BenchCli),
    /// Fresh keys, a server and a client on loopback, a generated file uploaded and
    /// checked.
    Demo,
}

#[derive(clap::Args)]
#[command(group(ArgGroup::new("role").required(true).args(["listen", "connect"])))]
struct BenchCli {
    /// Serve bench clients on this address, one test at a time.
    #[arg(long, requires = "key")]
    listen: Option<SocketAddr>,
    /// The server's private key (PEM), with --listen.
    #[arg(long, requires = "listen")]
    key: Option<PathBuf>,
    /// With --listen: a token clients may present (repeatable; also UDPACK_TOKEN).
    /// With --connect: the token (or UDPACK_TOKEN, which keeps it out of `ps`).
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// With --listen: a file of tokens, one per line (`#` starts a comment).
    #[arg(long, requires = "listen")]
    tokens_file: Option<PathBuf>,
    /// Run a test against the server at this address (host:port).
    #[arg(long, requires = "pubkey")]
    connect: Option<String>,
    /// The server's public key (PEM), with --connect.
    #[arg(long, requires = "connect")]
    pubkey: Option<PathBuf>,
    /// Seconds of data.
    #[arg(long, default_value_t = 10.0, conflicts_with = "listen")]
    duration: f64,
    /// The server sends and the client receives.
    #[arg(long, conflicts_with_all = ["listen", "bidir", "messages"])]
    reverse: bool,
    /// Both directions at once.
    #[arg(long, conflicts_with_all = ["listen", "messages"])]
    bidir: bool,
    /// Small messages echoed by the server: round-trip percentiles instead of goodput.
    #[arg(long, conflicts_with = "listen")]
    messages: bool,
    /// Messages per second, with --messages.
    #[arg(long, default_value_t = 100, requires = "messages")]
    rate: u32,
    /// Bytes per message, with --messages.
    #[arg(long, default_value_t = 1024, requires = "messages")]
    size: u32,
    /// Streams per direction (echo streams with --messages).
    #[arg(long, default_value_t = 1, conflicts_with = "listen")]
    streams: u32,
    /// One JSON document at the end, nothing else on stdout.
    #[arg(long, conflicts_with = "listen")]
    json: bool,
    /// Give up connecting, or waiting for the server's answer, after this many seconds.
    #[arg(long, default_value_t = 10.0, conflicts_with = "listen")]
    timeout: f64,
    /// Write udpack.log, udpack.io.log and server.log / client.log here.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// More detailed logs.
    #[arg(short, long)]
    verbose: bool,
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
    let result = runtime.block_on(run(cli.command, &mut log_guard));
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

/// Runs the command; the log guard is kept by the caller until the runtime has stopped.
async fn run(command: Command, log_guard: &mut Option<LogGuard>) -> Result<(), CliError> {
    match command {
        Command::Keygen { out, force } => commands::keygen(&out, force),
        Command::Serve {
            key,
            listen,
            tokens,
            tokens_file,
            out,
            once,
            quota,
            min_free,
            part_max_age,
            max_sessions_per_token,
            max_uploads_per_token,
            offer_timeout,
            reply_timeout,
            log_dir,
            verbose,
        } => {
            *log_guard = logs::init(log_dir.as_deref(), "server", verbose)?;
            let args = ServeArgs {
                key,
                listen,
                tokens,
                tokens_file,
                out,
                once,
                limits: serve::Limits {
                    quota,
                    min_free,
                    part_max_age,
                    max_sessions_per_token,
                    max_uploads_per_token,
                    offer_timeout,
                    reply_timeout,
                },
            };
            commands::serve(args, shutdown::signal).await
        }
        Command::Send {
            server,
            pubkey,
            token,
            timeout,
            parallel,
            retry_for,
            rate,
            json,
            log_dir,
            verbose,
            paths,
        } => {
            *log_guard = logs::init(log_dir.as_deref(), "client", verbose)?;
            let args = SendArgs {
                server,
                pubkey,
                token,
                timeout,
                paths,
                parallel,
                retry_for,
                rate,
                json,
            };
            commands::send(args).await
        }
        Command::Bench(b) => bench(b, log_guard).await,
        Command::Demo => commands::demo().await,
    }
}

/// `udpack bench`, as server or client.
async fn bench(b: BenchCli, log_guard: &mut Option<LogGuard>) -> Result<(), CliError> {
    match (b.listen, b.key, b.connect, b.pubkey) {
        (Some(listen), Some(key), _, _) => {
            *log_guard = logs::init(b.log_dir.as_deref(), "server", b.verbose)?;
            let args = BenchListenArgs {
                key,
                listen,
                tokens: b.tokens,
                tokens_file: b.tokens_file,
            };
            commands::bench_listen(args, shutdown::signal).await
        }
        (_, _, Some(server), Some(pubkey)) => {
            *log_guard = logs::init(b.log_dir.as_deref(), "client", b.verbose)?;
            let mode = match (b.reverse, b.bidir, b.messages) {
                (true, _, _) => Mode::Download,
                (_, true, _) => Mode::Bidir,
                (_, _, true) => Mode::Messages,
                _ => Mode::Upload,
            };
            let args = BenchConnectArgs {
                server,
                pubkey,
                tokens: b.tokens,
                timeout: b.timeout,
                mode,
                duration: b.duration,
                streams: b.streams,
                size: b.size,
                rate: b.rate,
                json: b.json,
            };
            commands::bench_connect(args).await
        }
        // clap requires --listen with --key or --connect with --pubkey.
        _ => Err(UsageError::BenchRole.into()),
    }
}
