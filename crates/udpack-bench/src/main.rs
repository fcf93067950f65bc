//! `udpack-bench`: udpack against kernel TCP and quinn (QUIC) on loopback, plus the
//! memory an idle udpack session costs a server.
//!
//! ```sh
//! cargo run --release -p udpack-bench -- loopback
//! cargo run --release -p udpack-bench -- loopback --size-mib 256 --only udpack --streams 16
//! cargo run --release -p udpack-bench -- idle --idle-sessions 2000
//! sudo target/release/udpack-bench lab --rtt 40 --loss 0,1,5
//! sudo target/release/udpack-bench lab --grid
//! target/release/udpack-bench upload --size 256M --runs 5
//! sudo target/release/udpack-bench upload --lab --files 500 --file-size 16K
//! ```
//!
//! Throughput (`loopback`): for each transport and stream count, a server and a client
//! run in this process on 127.0.0.1, each on its own single-threaded tokio runtime on
//! its own OS thread. The client writes `--size-mib` MiB in total, split evenly over the
//! streams (TCP: one connection per stream), in 256 KiB writes; the receiver reads and
//! discards, checking the first and last byte of every read against the pattern.
//! Goodput is payload bytes over the wall time from the client's start to the
//! receiver's last byte. CPU is the process's user + system time
//! (`getrusage(RUSAGE_SELF)`) over the whole run, both sides together, and each side's
//! thread on its own (`RUSAGE_THREAD`). `loopback` then measures idle sessions too,
//! unless `--idle-sessions 0`.
//!
//! Idle sessions (`idle`, and the end of `loopback`): a child process (this binary,
//! `idle-server`) runs one udpack server endpoint; this process opens
//! `--idle-sessions` sessions to it from 10 client endpoints, holds them open past the
//! idle timeout, and the child reports its own RSS and heap in use before and after.
//!
//! The link lab (`lab`, as root): the transports through an emulated real link between
//! two network namespaces; see [`lab`].
//!
//! Uploads (`upload`): `udpack send` of a file against TCP and quinn uploads of it and
//! udpack's raw stream, on loopback; small files through the lab with `--lab`; see
//! [`upload`].

mod child_lines;
mod error;
mod idle;
mod idle_server;
mod lab;
mod loopback;
mod measure;
mod payload;
mod quic;
mod tcp;
mod throughput;
mod udpack_run;
mod upload;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::Result;
use crate::throughput::{Kind, RunConfig};

/// The token every udpack client presents and every udpack server accepts.
const TOKEN: &str = "bench";

/// A single-threaded runtime: each side of a run, and the idle server, on one thread.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

#[derive(Parser)]
#[command(
    name = "udpack-bench",
    version,
    about = "Benchmarks of udpack; each prints Markdown tables"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// udpack, kernel TCP and quinn on 127.0.0.1, then the idle-session measurement.
    Loopback(LoopbackArgs),
    /// Only the memory and CPU that idle udpack sessions cost a server.
    Idle(IdleArgs),
    /// The child process of the idle-session measurement.
    #[command(name = idle_server::SUBCOMMAND, hide = true)]
    IdleServer,
    /// As root: udpack, kernel TCP and quinn through an emulated link between two
    /// network namespaces (delay, jitter, loss, rate, queue, duplication).
    Lab(lab::LabArgs),
    /// One end of one flow of the link lab, run inside a namespace.
    #[command(name = lab::peer::SUBCOMMAND, hide = true)]
    LabPeer(lab::peer::PeerArgs),
    /// `udpack send` of a file against TCP and quinn uploads and udpack's raw stream on
    /// loopback; with --lab, small files against one file through the link lab.
    Upload(upload::UploadArgs),
    /// One end of a TCP or quinn upload (the upload benchmark's child process).
    #[command(name = upload::peer::SUBCOMMAND, hide = true)]
    UploadPeer(upload::peer::PeerArgs),
}

#[derive(Args)]
struct LoopbackArgs {
    /// MiB per run, split evenly over the streams.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    size_mib: u64,
    /// Transports to run.
    #[arg(long, value_delimiter = ',', default_value = "udpack,tcp,quinn")]
    only: Vec<Kind>,
    /// Stream counts.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,16",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    streams: Vec<usize>,
    /// Rounds; the ratios are computed from the medians.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    #[command(flatten)]
    idle: IdleArgs,
    /// quinn's stream receive window in MiB (0 keeps quinn's default windows).
    #[arg(long, default_value_t = 16)]
    quinn_window_mib: u64,
    /// quinn's cipher: chacha makes it negotiate ChaCha20-Poly1305 (udpack's former
    /// cipher) rather than AES-128-GCM.
    #[arg(long, value_enum, default_value_t = Cipher::Aes)]
    quinn_cipher: Cipher,
    /// udpack's congestion controller.
    #[arg(long, value_enum, default_value_t = Congestion::Bbr)]
    udpack_cc: Congestion,
}

#[derive(Args)]
struct IdleArgs {
    /// Idle sessions on one server endpoint (0 skips the measurement).
    #[arg(long, default_value_t = 10_000)]
    idle_sessions: usize,
    /// How long the idle sessions are held, in seconds (past the 30 s idle timeout).
    #[arg(long, default_value_t = 35)]
    idle_hold_secs: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Cipher {
    Aes,
    Chacha,
}

#[derive(Clone, Copy, ValueEnum)]
enum Congestion {
    Bbr,
    #[value(name = "newreno")]
    NewReno,
}

impl LoopbackArgs {
    fn run_config(&self) -> RunConfig {
        RunConfig {
            size_mib: self.size_mib,
            quinn_window_mib: self.quinn_window_mib,
            quinn_chacha: matches!(self.quinn_cipher, Cipher::Chacha),
            udpack_cc: match self.udpack_cc {
                Congestion::Bbr => udpack::ControllerKind::Bbr,
                Congestion::NewReno => udpack::ControllerKind::NewReno,
            },
        }
    }
}

impl IdleArgs {
    fn run(&self) -> Result<()> {
        if self.idle_sessions == 0 {
            return Ok(());
        }
        idle::run(self.idle_sessions, Duration::from_secs(self.idle_hold_secs))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Loopback(args) => loopback(args),
        Command::Idle(args) => args.run(),
        Command::IdleServer => idle_server::run(),
        Command::Lab(args) => lab::run(&args),
        Command::LabPeer(args) => lab::peer::run(&args),
        Command::Upload(args) => upload::run(&args),
        Command::UploadPeer(args) => upload::peer::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn loopback(args: LoopbackArgs) -> Result<()> {
    let plan = loopback::Plan {
        kinds: args.only.clone(),
        streams: args.streams.clone(),
        repeat: args.repeat,
    };
    loopback::run(&plan, &args.run_config())?;
    if args.idle.idle_sessions > 0 {
        println!();
    }
    args.idle.run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn loopback_defaults_are_the_documented_ones() {
        let Command::Loopback(a) = Cli::parse_from(["udpack-bench", "loopback"]).command else {
            panic!("not loopback");
        };
        assert_eq!(a.size_mib, 1024);
        assert_eq!(a.only, [Kind::Udpack, Kind::Tcp, Kind::Quinn]);
        assert_eq!(a.streams, [1, 16]);
        assert_eq!(a.repeat, 1);
        assert_eq!(a.idle.idle_sessions, 10_000);
        assert_eq!(a.idle.idle_hold_secs, 35);
        let c = a.run_config();
        assert_eq!(c.quinn_window_mib, 16);
        assert!(!c.quinn_chacha);
        assert_eq!(c.udpack_cc, udpack::ControllerKind::Bbr);
    }

    #[test]
    fn loopback_takes_lists_and_choices() {
        let cli = Cli::parse_from([
            "udpack-bench",
            "loopback",
            "--only",
            "quinn,udpack",
            "--streams",
            "4",
            "--quinn-cipher",
            "chacha",
            "--udpack-cc",
            "newreno",
            "--idle-sessions",
            "0",
        ]);
        let Command::Loopback(a) = cli.command else {
            panic!("not loopback");
        };
        assert_eq!(a.only, [Kind::Quinn, Kind::Udpack]);
        assert_eq!(a.streams, [4]);
        assert_eq!(a.idle.idle_sessions, 0);
        let c = a.run_config();
        assert!(c.quinn_chacha);
        assert_eq!(c.udpack_cc, udpack::ControllerKind::NewReno);
    }

    #[test]
    fn zero_counts_and_unknown_transports_are_refused() {
        for bad in [
            ["--streams", "1,0"],
            ["--size-mib", "0"],
            ["--only", "sctp"],
        ] {
            let args = ["udpack-bench", "loopback", bad[0], bad[1]];
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
    }
}
