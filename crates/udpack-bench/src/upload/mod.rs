//! The upload benchmark (`upload`): `udpack send` of a file against a plain TCP upload
//! and a quinn upload of the same file, and udpack's raw stream of as many bytes, side
//! by side in one run on loopback; with `--lab`, many small files against one file of
//! the same total size through the link lab.
//!
//! Loopback: one random file in a work directory (a temporary one unless `--keep`),
//! received into directories on the same file system. The runs are interleaved
//! (`udpack send`, TCP, quinn, raw, then again, `--runs` times) and the medians are
//! compared. Each upload's time is its sender's own clock, from before it connects to
//! the receiver's word that the file is on disk: `udpack send`'s `elapsed` (the
//! server has checked the BLAKE3 hash and made the file durable), the baselines'
//! `done` line (the receiver wrote and fsynced the file, no hashing; see [`peer`]).
//! The raw stream is the loopback comparison's run: memory to memory, no file.
//! Every received file is compared with the original after its run.

pub mod baseline;
pub mod child;
pub mod files;
pub mod peer;
mod report;
mod small;
pub mod udpack_send;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::error::Result;
use udpack_send::Keys;

const GIB: f64 = (1u64 << 30) as f64;

#[derive(Args, Debug)]
pub struct UploadArgs {
    /// Size of the file (K, M, G: powers of 1024); the raw stream moves as many whole
    /// MiB (at least one).
    #[arg(long, default_value = "256M", value_parser = udpack_cli::serve::parse_size)]
    pub size: u64,
    /// Rounds of every upload, interleaved; the figures compared are the medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,
    /// Print one JSON document instead of the Markdown tables.
    #[arg(long)]
    pub json: bool,
    /// The `udpack` binary (default: the one next to this binary).
    #[arg(long)]
    pub udpack_bin: Option<PathBuf>,
    /// Run `udpack send` and `udpack serve` as a library in this process rather than
    /// as the binaries (their CPU then counts only as one sum).
    #[arg(long)]
    pub in_process: bool,
    /// Work in this directory and keep its files (`sent/`, `received-*/`).
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// The small-files case through the link lab (root): --files x --file-size
    /// against one file of the same total size.
    #[arg(long)]
    pub lab: bool,
    /// Files of the small-files case.
    #[arg(long, default_value_t = 500, requires = "lab")]
    pub files: usize,
    /// Size of each small file.
    #[arg(long, default_value = "16K", value_parser = udpack_cli::serve::parse_size, requires = "lab")]
    pub file_size: u64,
    /// The lab link's rate each way, in Mbit/s.
    #[arg(long, default_value_t = 100.0, requires = "lab")]
    pub rate_mbit: f64,
    /// The lab link's round-trip time, in ms.
    #[arg(long, default_value_t = 40.0, requires = "lab")]
    pub rtt: f64,
}

/// One upload's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    pub bytes: u64,
    /// The sender's clock (see the module's doc).
    pub secs: f64,
    /// Each end's CPU (user + system), where each end is its own process or thread.
    #[serde(serialize_with = "opt_secs")]
    pub send_cpu: Option<Duration>,
    #[serde(serialize_with = "opt_secs")]
    pub recv_cpu: Option<Duration>,
    /// The longer of the two children's lifetimes, spawn to exit (none for the raw
    /// stream, which has no children).
    #[serde(serialize_with = "opt_secs")]
    pub wall: Option<Duration>,
    /// Everything the upload cost: both ends and this process's share.
    #[serde(serialize_with = "secs")]
    pub cpu: Duration,
}

impl Measured {
    pub fn mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs.max(1e-9)
    }

    pub fn mbit_s(&self) -> f64 {
        self.mb_s() * 8.0
    }

    /// CPU seconds per GiB moved.
    pub fn per_gib(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() / (self.bytes.max(1) as f64 / GIB)
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn opt_secs<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// An upload of the loopback comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Upload {
    UdpackSend,
    Tcp,
    Quinn,
    Raw,
}

impl Upload {
    pub const ALL: [Upload; 4] = [Upload::UdpackSend, Upload::Tcp, Upload::Quinn, Upload::Raw];

    pub fn name(self) -> &'static str {
        match self {
            Upload::UdpackSend => "udpack send",
            Upload::Tcp => "TCP upload",
            Upload::Quinn => "quinn upload",
            Upload::Raw => "udpack raw stream",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Upload::UdpackSend => "received-udpack",
            Upload::Tcp => "received-tcp",
            Upload::Quinn => "received-quinn",
            Upload::Raw => "",
        }
    }
}

/// How `udpack send` is run.
pub enum Udpack {
    Binary(PathBuf),
    InProcess,
}

impl Udpack {
    fn describe(&self) -> String {
        match self {
            Udpack::Binary(p) => format!("the binaries ({})", p.display()),
            Udpack::InProcess => "the library, in this process".into(),
        }
    }
}

/// The work directory: kept, or removed when dropped.
enum Work {
    Kept(PathBuf),
    Temp(tempfile::TempDir),
}

impl Work {
    fn new(keep: Option<&Path>) -> Result<Work> {
        Ok(match keep {
            Some(p) => {
                std::fs::create_dir_all(p)?;
                Work::Kept(p.to_path_buf())
            }
            None => Work::Temp(
                tempfile::Builder::new()
                    .prefix("udpack-upload-")
                    .tempdir()?,
            ),
        })
    }

    fn path(&self) -> &Path {
        match self {
            Work::Kept(p) => p,
            Work::Temp(t) => t.path(),
        }
    }
}

/// Runs the benchmark the arguments describe.
pub fn run(args: &UploadArgs) -> Result<()> {
    let udpack = if args.in_process {
        Udpack::InProcess
    } else {
        let bin = match &args.udpack_bin {
            Some(p) => p.clone(),
            None => std::env::current_exe()?.with_file_name("udpack"),
        };
        if !bin.exists() {
            return Err(crate::error::BenchError::NoUdpackBinary(bin));
        }
        Udpack::Binary(bin)
    };
    let work = Work::new(args.keep.as_deref())?;
    let keys = Keys::make(&work.path().join("keys"))?;
    if args.lab {
        return small::run(args, &udpack, &keys, work.path());
    }
    let sent = work.path().join("sent");
    std::fs::create_dir_all(&sent)?;
    let name = "upload.bin".to_string();
    files::make_file(&sent.join(&name), args.size, 0x5eed)?;
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    let header = report::Header {
        size: args.size,
        runs: args.runs,
        udpack: udpack.describe(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
    };
    if !args.json {
        report::print_header(&header);
    }
    for round in 1..=args.runs {
        for upload in Upload::ALL {
            let m = one(upload, &udpack, &keys, &exe, work.path(), &name, args.size)?;
            if !args.json {
                report::print_row(round, upload, &m);
            }
            rows.push(report::Row { round, upload, m });
        }
    }
    let summary = report::summarise(&rows);
    if args.json {
        report::print_json(&header, &rows, &summary)?;
    } else {
        report::print_summary(&summary);
    }
    Ok(())
}

/// One upload of the file `name` (in `work/sent`), checked after the clock stopped.
fn one(
    upload: Upload,
    udpack: &Udpack,
    keys: &Keys,
    exe: &Path,
    work: &Path,
    name: &str,
    size: u64,
) -> Result<Measured> {
    let sent = work.join("sent");
    let src = sent.join(name);
    let out = work.join(upload.dir());
    if upload != Upload::Raw {
        files::fresh_dir(&out)?;
    }
    let m = match upload {
        Upload::UdpackSend => {
            let paths = [src];
            match udpack {
                Udpack::Binary(bin) => {
                    let command = |_: usize, p: &Path| std::process::Command::new(p);
                    let place = udpack_send::Place {
                        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                        command: &command,
                    };
                    udpack_send::with_binary(bin, &place, keys, &paths, &out)?
                }
                Udpack::InProcess => udpack_send::in_process(keys, &paths, &out)?,
            }
        }
        Upload::Tcp | Upload::Quinn => {
            baseline::file_copy(exe, upload == Upload::Quinn, &src, &out.join(name), work)?
        }
        Upload::Raw => return baseline::raw_stream((size >> 20).max(1)),
    };
    files::verify(&sent, &out, &[name.to_string()])?;
    Ok(m)
}
