//! The child process of the idle-session measurement: one udpack server endpoint that
//! accepts and holds sessions, so that its memory figures hold no client state. It
//! talks over stdin and stdout, one line at a time:
//!
//! - it starts with `bound ADDR KEY-HEX`;
//! - `measure` on stdin: it answers `stat HELD OPEN SESSIONS RSS HEAP CPU-NS`;
//! - anything else, or the end of stdin: it exits.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use crate::error::{BenchError, Result};
use crate::measure::{heap_in_use, process_cpu, rss_bytes};
use crate::TOKEN;

/// The child's hidden subcommand.
pub const SUBCOMMAND: &str = "idle-server";

/// Runs the child until `quit` or the end of its input.
pub fn run() -> Result<()> {
    let rt = crate::runtime()?;
    rt.block_on(async {
        let key = udpack::PrivateKey::generate();
        let public = key.public_key();
        let config = udpack::ServerConfig::new(key).auth(|t| t == TOKEN.as_bytes());
        let endpoint = udpack::Endpoint::server(config).bind("127.0.0.1:0").await?;
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let accepter = {
            let (endpoint, sessions) = (endpoint.clone(), sessions.clone());
            tokio::spawn(async move {
                while let Some(s) = endpoint.accept().await {
                    sessions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(s);
                }
            })
        };
        tokio::task::yield_now().await;
        let hex: String = public
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        println!("bound {} {hex}", endpoint.local_addr());
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await? {
            match line.trim() {
                "measure" => {
                    let (held, open) = {
                        let s = sessions.lock().unwrap_or_else(PoisonError::into_inner);
                        let open = s.iter().filter(|s| s.close_reason().is_none()).count();
                        (s.len(), open)
                    };
                    println!(
                        "stat {held} {open} {} {} {} {}",
                        endpoint.session_count(),
                        rss_bytes(),
                        heap_in_use(),
                        process_cpu().as_nanos()
                    );
                }
                _ => break,
            }
        }
        accepter.abort();
        Ok(())
    })
}

/// The child's first line: where it listens and the key to pin.
pub fn parse_bound(line: &str) -> Result<(SocketAddr, udpack::PublicKey)> {
    let bad = || BenchError::IdleServerLine(line.to_string());
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 3 || f[0] != "bound" {
        return Err(bad());
    }
    let addr: SocketAddr = f[1].parse()?;
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(f[2].get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)?;
    }
    Ok((addr, udpack::PublicKey::from_bytes(key)))
}

/// The child's answer to `measure`.
pub struct ChildStat {
    pub held: usize,
    pub open: usize,
    pub rss: u64,
    pub heap: u64,
    /// The child's CPU time so far (user + system).
    pub cpu: Duration,
}

pub fn parse_stat(line: &str) -> Result<ChildStat> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 7 || f[0] != "stat" {
        return Err(BenchError::IdleServerLine(line.to_string()));
    }
    Ok(ChildStat {
        held: f[1].parse()?,
        open: f[2].parse()?,
        rss: f[4].parse()?,
        heap: f[5].parse()?,
        cpu: Duration::from_nanos(f[6].parse()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_bound_line() {
        let key = udpack::PrivateKey::generate().public_key();
        let hex: String = key.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let (addr, parsed) = parse_bound(&format!("bound 127.0.0.1:4000 {hex}")).unwrap();
        assert_eq!(addr, "127.0.0.1:4000".parse::<SocketAddr>().unwrap());
        assert_eq!(parsed.as_bytes(), key.as_bytes());
        assert!(parse_bound("bound 127.0.0.1:4000 abcd").is_err());
        assert!(parse_bound("hello").is_err());
    }

    #[test]
    fn parses_the_stat_line() {
        let st = parse_stat("stat 10 9 9 4096 2048 1500000000").unwrap();
        assert_eq!((st.held, st.open, st.rss, st.heap), (10, 9, 4096, 2048));
        assert_eq!(st.cpu, Duration::from_millis(1500));
        assert!(parse_stat("stat 1 2 3").is_err());
        assert!(parse_stat("stat x 2 3 4 5 6").is_err());
    }
}
