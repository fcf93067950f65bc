//! `udpack send` to a `udpack serve --once` receiver: the real binaries as child
//! processes (on loopback or inside the lab's namespaces), or the same code as a
//! library in this process when there is no binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use udpack::KeyFile;
use udpack_cli::progress::Display;
use udpack_cli::send::{send, SendOptions};
use udpack_cli::serve::{Receiver, ServeOptions};

use super::child::Proc;
use super::Measured;
use crate::error::{BenchError, Result};
use crate::measure::process_cpu;
use crate::TOKEN;

/// How long a receiver may take to bind.
const BIND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one upload may take at most.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// A key pair on disk, for the binaries (and loaded by the library).
pub struct Keys {
    pub private: PathBuf,
    pub public: PathBuf,
}

impl Keys {
    pub fn make(dir: &Path) -> Result<Keys> {
        let (private, public) = udpack_cli::keygen::keygen(dir, true)?;
        Ok(Keys { private, public })
    }
}

/// Where the two ends run: which address the receiver binds and how each end's
/// command is made (0: the sender's side, 1: the receiver's, as the lab numbers its
/// namespaces).
pub struct Place<'a> {
    pub listen: SocketAddr,
    pub command: &'a dyn Fn(usize, &Path) -> Command,
}

/// One upload of `paths` into `out` (emptied first by the caller) by the binary
/// `udpack`.
pub fn with_binary(
    udpack: &Path,
    place: &Place<'_>,
    keys: &Keys,
    paths: &[PathBuf],
    out: &Path,
) -> Result<Measured> {
    let cpu0 = process_cpu();
    let mut serve = (place.command)(1, udpack);
    serve
        .args(["serve", "--once", "--token", TOKEN, "--key"])
        .arg(&keys.private)
        .arg("--listen")
        .arg(place.listen.to_string())
        .arg("--out")
        .arg(out);
    let serve = Proc::spawn("udpack serve", serve)?;
    let addr = serve.expect("listening on ", BIND_TIMEOUT)?;
    let mut send = (place.command)(0, udpack);
    send.args(["send", "--json", "--retry-for", "0", "--token", TOKEN])
        .args(["--server", &addr, "--pubkey"])
        .arg(&keys.public)
        .args(paths);
    let send = Proc::spawn("udpack send", send)?;
    let json = send.line("{", RUN_TIMEOUT);
    let sent = send.wait(RUN_TIMEOUT)?;
    let served = serve.wait(Duration::from_secs(30))?;
    let summary: serde_json::Value = serde_json::from_str(&json?)?;
    for (what, exit) in [("udpack send", &sent), ("udpack serve", &served)] {
        if !exit.success {
            return Err(BenchError::ChildFailed(what.into()));
        }
    }
    let (Some(bytes), Some(secs)) = (summary["bytes"].as_u64(), summary["elapsed"].as_f64()) else {
        return Err(BenchError::ChildLine(
            "udpack send".into(),
            summary.to_string(),
        ));
    };
    Ok(Measured {
        bytes,
        secs,
        send_cpu: Some(sent.cpu),
        recv_cpu: Some(served.cpu),
        wall: Some(sent.wall.max(served.wall)),
        cpu: process_cpu() - cpu0 + sent.cpu + served.cpu,
    })
}

/// The same upload through `udpack_cli` in this process, on one multi-threaded
/// runtime as the binary's: both ends' CPU only as one sum.
pub fn in_process(keys: &Keys, paths: &[PathBuf], out: &Path) -> Result<Measured> {
    let cpu0 = process_cpu();
    let start = Instant::now();
    let rt = tokio::runtime::Runtime::new()?;
    let summary = rt.block_on(async {
        let key = udpack::PrivateKey::load(&keys.private)?;
        let public = udpack::PublicKey::load(&keys.public)?;
        let receiver = Receiver::bind(ServeOptions {
            key,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tokens: vec![TOKEN.to_string()],
            out: out.to_path_buf(),
            once: true,
            limits: Default::default(),
            show_progress: false,
        })
        .await?;
        let addr = receiver.local_addr();
        let server = tokio::spawn(receiver.run(std::future::pending()));
        let mut opts =
            SendOptions::new(addr.to_string(), public, TOKEN.to_string(), paths.to_vec());
        opts.display = Display::Quiet;
        opts.retry_for = Duration::ZERO;
        let summary = send(opts).await?;
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .map_err(|_| BenchError::PeerTimeout("udpack serve".into(), "exit".into()))???;
        Ok::<_, BenchError>(summary)
    })?;
    drop(rt);
    Ok(Measured {
        bytes: summary.bytes,
        secs: summary.elapsed.as_secs_f64(),
        send_cpu: None,
        recv_cpu: None,
        wall: Some(start.elapsed()),
        cpu: process_cpu() - cpu0,
    })
}
