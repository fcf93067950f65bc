//! The baselines' child processes (`upload-peer`, hidden): this binary as the sender
//! or the receiver of one file over plain TCP or over quinn. No hashing on either side:
//! the receiver writes what arrives to its file and makes it durable (`fsync`, as
//! `udpack serve` does before it confirms a file), then tells the sender, whose clock
//! stops there. Lines on stdout:
//!
//! - a receiver starts with `bound ADDR` (quinn's has written its certificate first);
//! - a sender ends with `done BYTES NANOS`: the file's size, and the time from before
//!   it connected to the receiver's word that the file is on disk;
//! - a peer that fails says `error MESSAGE` on stdout and exits with status 1.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;

use crate::error::{BenchError, Result};
use crate::payload::READ_MAX;
use crate::quic;

/// The hidden subcommand.
pub const SUBCOMMAND: &str = "upload-peer";
/// quinn's stream window for the upload, as in the loopback comparison.
pub const QUINN_WINDOW_MIB: u64 = 16;
/// Size of each read of the file and of each socket read and write.
const BUF: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    TcpRecv,
    TcpSend,
    QuinnRecv,
    QuinnSend,
}

#[derive(clap::Args, Debug)]
pub struct PeerArgs {
    #[arg(value_enum)]
    pub role: Role,
    /// Where a receiver binds, or where a sender connects.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// The file a sender reads, or a receiver writes.
    #[arg(long)]
    pub file: PathBuf,
    /// quinn's certificate (DER): the receiver writes it, the sender trusts it.
    #[arg(long)]
    pub cert: Option<PathBuf>,
}

/// Runs the peer; its own failure is reported on stdout and is not an error of the
/// caller (the parent reads it there).
pub fn run(args: &PeerArgs) -> Result<()> {
    let result = match args.role {
        Role::TcpRecv => tcp_recv(args),
        Role::TcpSend => tcp_send(args),
        Role::QuinnRecv => quinn_side(args, true),
        Role::QuinnSend => quinn_side(args, false),
    };
    if let Err(e) = &result {
        println!("error {e}");
    }
    result
}

fn done(bytes: u64, start: Instant) {
    println!("done {bytes} {}", start.elapsed().as_nanos());
}

fn tcp_recv(args: &PeerArgs) -> Result<()> {
    let listener = TcpListener::bind(args.addr)?;
    println!("bound {}", listener.local_addr()?);
    let (mut conn, _) = listener.accept()?;
    let mut file = File::create(&args.file)?;
    let mut buf = vec![0u8; BUF];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])?;
    }
    file.sync_all()?;
    conn.write_all(b"k")?;
    Ok(())
}

fn tcp_send(args: &PeerArgs) -> Result<()> {
    let mut file = File::open(&args.file)?;
    let start = Instant::now();
    let mut conn = TcpStream::connect(args.addr)?;
    let mut buf = vec![0u8; BUF];
    let mut sent = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        conn.write_all(&buf[..n])?;
        sent += n as u64;
    }
    conn.shutdown(Shutdown::Write)?;
    let mut ack = [0u8; 1];
    conn.read_exact(&mut ack)?;
    done(sent, start);
    Ok(())
}

fn cert_path(args: &PeerArgs) -> Result<&Path> {
    args.cert.as_deref().ok_or(BenchError::NoCertPath)
}

fn quinn_side(args: &PeerArgs, receiver: bool) -> Result<()> {
    let rt = crate::runtime()?;
    rt.block_on(async {
        if receiver {
            quinn_recv(args).await
        } else {
            quinn_send(args).await
        }
    })
}

async fn quinn_recv(args: &PeerArgs) -> Result<()> {
    let transport = Arc::new(quic::transport(QUINN_WINDOW_MIB)?);
    let (config, cert) = quic::server_config(transport, false)?;
    std::fs::write(cert_path(args)?, cert.as_ref())?;
    let endpoint = quinn::Endpoint::server(config, args.addr)?;
    println!("bound {}", endpoint.local_addr()?);
    let conn = endpoint
        .accept()
        .await
        .ok_or(BenchError::NoConnection)?
        .await?;
    let mut recv = conn.accept_uni().await?;
    let mut file = File::create(&args.file)?;
    // Blocking writes on the one thread: they land in the page cache, as TCP's do.
    while let Some(chunk) = recv.read_chunk(READ_MAX, true).await? {
        file.write_all(&chunk.bytes)?;
    }
    file.sync_all()?;
    conn.close(0u32.into(), b"stored");
    tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle())
        .await
        .ok();
    Ok(())
}

async fn quinn_send(args: &PeerArgs) -> Result<()> {
    let cert = CertificateDer::from(std::fs::read(cert_path(args)?)?);
    let transport = Arc::new(quic::transport(QUINN_WINDOW_MIB)?);
    let config = quic::client_config(transport, false, cert)?;
    let mut file = File::open(&args.file)?;
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut endpoint = quinn::Endpoint::client(local)?;
    endpoint.set_default_client_config(config);
    let start = Instant::now();
    let conn = endpoint.connect(args.addr, "localhost")?.await?;
    let mut send = conn.open_uni().await?;
    let mut buf = vec![0u8; BUF];
    let mut sent = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        send.write_all(&buf[..n]).await?;
        sent += n as u64;
    }
    send.finish()?;
    // The receiver closes the connection once the file is on disk.
    match conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(_) => {}
        e => return Err(e.into()),
    }
    done(sent, start);
    endpoint.wait_idle().await;
    Ok(())
}
