//! The lab's side of a test: it starts the peers (this binary, `lab-peer`) with the
//! servers in namespace B and the clients in namespace A, reads their figures, and
//! kills whatever is still running when the test ends.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use serde::Serialize;

use super::conn::Proto;
use super::netns::{Netns, ADDR};
use super::peer::SUBCOMMAND;
use super::plan::Test;
use crate::child_lines;
use crate::error::{BenchError, Result};

/// How long a peer may take to bind, and past its window to report.
const BIND_TIMEOUT: Duration = Duration::from_secs(10);
const REPORT_SLACK: Duration = Duration::from_secs(20);
/// Bytes per message of the latency test.
pub const LATENCY_SIZE: u64 = 1024;

/// How long each run warms up and then measures.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub warmup: Duration,
    pub window: Duration,
    /// Messages per second of the latency test.
    pub latency_rate: u32,
    /// The udpack bulk sender's trace period in ms (0: none).
    pub trace_ms: u64,
}

/// Round-trip times of the latency test, in ms.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The figures of one flow of a test.
#[derive(Clone, Debug, Serialize)]
pub struct Flow {
    pub proto: Proto,
    /// Application bytes received per second after the warm-up, in Mbit/s.
    pub goodput_mbit: Option<f64>,
    pub latency: Option<Latency>,
    /// Why this flow has no figure.
    pub error: Option<String>,
}

/// One child process; killed when dropped.
struct Peer {
    what: String,
    child: Child,
    lines: Receiver<String>,
}

impl Peer {
    fn spawn(net: &Netns, ns: usize, exe: &Path, what: String, args: Vec<String>) -> Result<Peer> {
        let mut child = net
            .command(ns, exe)
            .arg(SUBCOMMAND)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let lines = child_lines::lines(&mut child, "lab-peer-out")?;
        Ok(Peer { what, child, lines })
    }

    /// The fields after `tag` of the peer's next line with that tag.
    fn expect(&self, tag: &str, timeout: Duration) -> Result<Vec<String>> {
        loop {
            let line = match self.lines.recv_timeout(timeout) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(BenchError::PeerTimeout(self.what.clone(), tag.to_string()))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(BenchError::PeerExited(self.what.clone()))
                }
            };
            if let Some(msg) = line.strip_prefix("error ") {
                return Err(BenchError::PeerFailed(self.what.clone(), msg.to_string()));
            }
            let mut f = line.split_whitespace().map(str::to_string);
            if f.next().as_deref() == Some(tag) {
                return Ok(f.collect());
            }
        }
    }

    /// A server's address and secret.
    fn bound(&self) -> Result<(SocketAddr, String)> {
        let f = self.expect("bound", BIND_TIMEOUT)?;
        match &f[..] {
            [addr, secret] => Ok((addr.parse()?, secret.clone())),
            _ => Err(BenchError::PeerLine(f.join(" "))),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts tests' peers; one per lab.
pub struct Runner<'a> {
    pub net: &'a Netns,
    pub exe: &'a Path,
    /// Whether the kernel has TCP BBR; without it the fairness test pairs udpack with
    /// Cubic only.
    pub tcp_bbr: bool,
}

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

impl Runner<'_> {
    fn peer(&self, ns: usize, what: String, args: Vec<String>) -> Result<Peer> {
        Peer::spawn(self.net, ns, self.exe, what, args)
    }

    fn server(&self, role: &str, proto: Proto, t: &Timing) -> Result<Peer> {
        let args = vec![
            role.to_string(),
            proto.name().to_string(),
            format!("{}:0", ADDR[1]),
            format!("--warmup-ms={}", ms(t.warmup)),
            format!("--duration-ms={}", ms(t.window)),
        ];
        self.peer(1, format!("{} {role}", proto.name()), args)
    }

    fn client(&self, role: &str, proto: Proto, server: &Peer, t: &Timing) -> Result<Peer> {
        let (addr, secret) = server.bound()?;
        let args = vec![
            role.to_string(),
            proto.name().to_string(),
            addr.to_string(),
            format!("--local={}:0", ADDR[0]),
            format!("--secret={secret}"),
            format!("--warmup-ms={}", ms(t.warmup)),
            format!("--duration-ms={}", ms(t.window)),
            format!("--rate={}", t.latency_rate),
            format!("--size={LATENCY_SIZE}"),
            format!("--trace-ms={}", t.trace_ms),
        ];
        self.peer(0, format!("{} {role}", proto.name()), args)
    }

    /// Runs `test`; a flow that fails carries its error, the others their figures.
    pub fn run(&self, test: Test, t: &Timing) -> Vec<Flow> {
        match test {
            Test::Latency => [Proto::Udpack, Proto::TcpCubic, Proto::QuinnCubic]
                .into_iter()
                .map(|p| flow(p, self.latency(p, t).map(|l| (None, Some(l)))))
                .collect(),
            Test::Fairness => [Proto::TcpCubic, Proto::TcpBbr]
                .into_iter()
                .filter(|&p| p != Proto::TcpBbr || self.tcp_bbr)
                .flat_map(|tcp| self.bulk_flows(&[Proto::Udpack, tcp], t))
                .collect(),
            Test::WireMax => self.bulk_flows(&[Proto::TcpCubic], t),
            bulk => match bulk.proto() {
                Some(p) => self.bulk_flows(&[p], t),
                None => Vec::new(),
            },
        }
    }

    /// Bulk flows of `protos` through the link at the same time.
    fn bulk_flows(&self, protos: &[Proto], t: &Timing) -> Vec<Flow> {
        match self.bulk(protos, t) {
            Ok(goodputs) => protos
                .iter()
                .zip(goodputs)
                .map(|(&p, g)| flow(p, Ok((Some(g), None))))
                .collect(),
            Err(e) => {
                let msg = e.to_string();
                protos
                    .iter()
                    .map(|&p| Flow {
                        proto: p,
                        goodput_mbit: None,
                        latency: None,
                        error: Some(msg.clone()),
                    })
                    .collect()
            }
        }
    }

    fn bulk(&self, protos: &[Proto], t: &Timing) -> Result<Vec<f64>> {
        let servers = protos
            .iter()
            .map(|&p| self.server("bulk-server", p, t))
            .collect::<Result<Vec<_>>>()?;
        let _clients = protos
            .iter()
            .zip(&servers)
            .map(|(&p, s)| self.client("bulk-client", p, s, t))
            .collect::<Result<Vec<_>>>()?;
        let deadline = t.warmup + t.window + REPORT_SLACK;
        servers
            .iter()
            .map(|s| {
                let f = s.expect("result", deadline)?;
                let [bytes, nanos] = &f[..] else {
                    return Err(BenchError::PeerLine(f.join(" ")));
                };
                let (bytes, nanos): (u64, u64) = (bytes.parse()?, nanos.parse()?);
                Ok(bytes as f64 * 8.0 / 1e6 / (nanos.max(1) as f64 / 1e9))
            })
            .collect()
    }

    fn latency(&self, proto: Proto, t: &Timing) -> Result<Latency> {
        let server = self.server("echo-server", proto, t)?;
        let client = self.client("latency-client", proto, &server, t)?;
        let f = client.expect("latency", t.warmup + t.window + REPORT_SLACK)?;
        let [n, p50, p99, max] = &f[..] else {
            return Err(BenchError::PeerLine(f.join(" ")));
        };
        let ms = |s: &String| -> Result<f64> { Ok(s.parse::<u64>()? as f64 / 1000.0) };
        Ok(Latency {
            samples: n.parse()?,
            p50_ms: ms(p50)?,
            p99_ms: ms(p99)?,
            max_ms: ms(max)?,
        })
    }
}

fn flow(proto: Proto, r: Result<(Option<f64>, Option<Latency>)>) -> Flow {
    match r {
        Ok((goodput_mbit, latency)) => Flow {
            proto,
            goodput_mbit,
            latency,
            error: None,
        },
        Err(e) => Flow {
            proto,
            goodput_mbit: None,
            latency: None,
            error: Some(e.to_string()),
        },
    }
}
