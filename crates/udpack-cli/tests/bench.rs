//! End-to-end tests of `udpack bench` through the binary, on loopback: the summary of
//! each mode, the JSON document, exit codes as `send` has them, one test at a time and
//! a client that vanishes.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{assert_code, describe, udpack};

const TOKEN: &str = "bench-token";
const LIMIT: Duration = Duration::from_secs(60);

fn run(cmd: Command, what: &str) -> Output {
    common::run(cmd, LIMIT, what)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A key pair from `udpack keygen` and a running `udpack bench --listen`.
struct Bench {
    dir: tempfile::TempDir,
    child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Bench {
    fn start() -> Bench {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = udpack();
        c.arg("keygen").arg("--out").arg(dir.path().join("keys"));
        assert_code(&run(c, "keygen"), 0, "keygen");
        let mut child = udpack()
            .args(["bench", "--listen", "127.0.0.1:0", "--key"])
            .arg(dir.path().join("keys/prikey.pem"))
            .args(["--token", TOKEN])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the bench server");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stdout.take().expect("stdout");
        let kept = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.strip_prefix("listening on ") {
                    if let Ok(a) = a.trim().parse::<SocketAddr>() {
                        let _ = tx.send(a);
                    }
                }
                kept.lock().expect("lock").push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("the bench server did not say where it listens");
            }
        };
        Bench {
            dir,
            child,
            addr,
            lines,
        }
    }

    fn pubkey(&self) -> PathBuf {
        self.dir.path().join("keys/pubkey.pem")
    }

    /// `udpack bench --connect` with the right key and token.
    fn client(&self, extra: &[&str]) -> Command {
        let mut c = udpack();
        c.args(["bench", "--connect", &self.addr.to_string(), "--pubkey"])
            .arg(self.pubkey())
            .args(["--token", TOKEN])
            .args(extra);
        c
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    fn output(&self) -> String {
        self.lines.lock().expect("lock").join("\n")
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The summary line of `direction`, if there is one.
fn summary<'a>(out: &'a str, direction: &str) -> Option<&'a str> {
    let head = format!("summary {direction}: ");
    out.lines().find(|l| l.starts_with(&head))
}

/// The number after `label` in `line`.
fn number_after(line: &str, label: &str) -> f64 {
    let (_, rest) = line
        .split_once(label)
        .unwrap_or_else(|| panic!("no {label:?} in {line:?}"));
    let n: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    n.parse()
        .unwrap_or_else(|_| panic!("no number after {label:?} in {line:?}"))
}

#[test]
fn upload_reports_intervals_and_a_summary() {
    let bench = Bench::start();
    let o = run(bench.client(&["--duration", "2"]), "bench upload");
    assert_code(&o, 0, "bench upload");
    let out = stdout(&o);
    let line = summary(&out, "upload").unwrap_or_else(|| panic!("no summary\n{out}"));
    assert!(number_after(line, "goodput") > 0.0, "{line}");
    assert!(line.contains("(measured by the server)"), "{line}");
    assert!(line.contains("(from the client's session)"), "{line}");
    assert!(summary(&out, "download").is_none(), "{out}");
    let intervals: Vec<&str> = out.lines().filter(|l| l.contains("] upload")).collect();
    assert!(intervals.len() >= 2, "a line a second:\n{out}");
    for l in &intervals {
        for field in ["Mbit/s", "rtt", "min", "lost", "retx", "cwnd"] {
            assert!(l.contains(field), "{field} missing in {l}");
        }
    }
    assert!(
        bench.output().contains("upload for 2.0 s"),
        "{}",
        bench.output()
    );
}

#[test]
fn json_is_the_only_output_and_has_the_fields() {
    let bench = Bench::start();
    let o = run(
        bench.client(&["--duration", "2", "--bidir", "--streams", "2", "--json"]),
        "bench --json",
    );
    assert_code(&o, 0, "bench --json");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e})\n{}", describe(&o)));
    assert_eq!(doc["mode"], "bidir");
    assert_eq!(doc["streams"], 2);
    assert_eq!(doc["duration_s"], 2.0);
    let intervals = doc["intervals"].as_array().expect("intervals");
    assert!(intervals.len() >= 4, "{doc:#}");
    for i in intervals {
        for f in ["direction", "start_s", "end_s", "bytes", "goodput_mbps"] {
            assert!(!i[f].is_null(), "{f} missing in {i}");
        }
        for f in [
            "measured_by",
            "smoothed_rtt_ms",
            "min_rtt_ms",
            "packets_lost",
            "bytes_retransmitted",
            "cwnd_bytes",
            "datagram_size",
        ] {
            assert!(!i["transport"][f].is_null(), "{f} missing in {i}");
        }
    }
    let summary = doc["summary"].as_array().expect("summary");
    let by = |d: &str| {
        summary
            .iter()
            .find(|s| s["direction"] == d)
            .unwrap_or_else(|| panic!("no {d} summary in {doc:#}"))
    };
    let (up, down) = (by("upload"), by("download"));
    assert_eq!(up["goodput_measured_by"], "server");
    assert_eq!(up["transport"]["measured_by"], "client");
    assert_eq!(down["goodput_measured_by"], "client");
    assert_eq!(down["transport"]["measured_by"], "server");
    for s in [up, down] {
        assert!(s["bytes"].as_u64().unwrap_or(0) > 0, "{s}");
        assert!(s["goodput_mbps"].as_f64().unwrap_or(0.0) > 0.0, "{s}");
        assert!(s["seconds"].as_f64().unwrap_or(0.0) > 1.0, "{s}");
        // Loopback carries the largest datagram UDP allows: both senders found it.
        assert_eq!(s["transport"]["datagram_size"], 65_507, "{s}");
    }
}

#[test]
fn reverse_moves_data_from_the_server_to_the_client() {
    let bench = Bench::start();
    let o = run(
        bench.client(&["--duration", "2", "--reverse"]),
        "bench --reverse",
    );
    assert_code(&o, 0, "bench --reverse");
    let out = stdout(&o);
    assert!(summary(&out, "upload").is_none(), "{out}");
    let line = summary(&out, "download").unwrap_or_else(|| panic!("no summary\n{out}"));
    assert!(number_after(line, "goodput") > 0.0, "{line}");
    assert!(line.contains("(measured by the client)"), "{line}");
    assert!(line.contains("(from the server's session)"), "{line}");
    assert!(out.lines().any(|l| l.contains("] download")), "{out}");
    assert!(
        bench.output().contains("download for 2.0 s"),
        "{}",
        bench.output()
    );
}

#[test]
fn messages_report_round_trip_percentiles() {
    let bench = Bench::start();
    let o = run(
        bench.client(&[
            "--duration",
            "2",
            "--messages",
            "--rate",
            "50",
            "--size",
            "512",
        ]),
        "bench --messages",
    );
    assert_code(&o, 0, "bench --messages");
    let out = stdout(&o);
    let line = summary(&out, "messages").unwrap_or_else(|| panic!("no summary\n{out}"));
    let (sent, echoed) = (number_after(line, ":"), number_after(line, "sent,"));
    assert!((90.0..=101.0).contains(&sent), "50/s for 2 s: {line}");
    assert_eq!(sent, echoed, "{line}");
    assert!(line.contains("512 B each"), "{line}");
    assert!(line.contains("client -> server -> client"), "{line}");
    let (p50, p99, max) = (
        number_after(line, "p50"),
        number_after(line, "p99"),
        number_after(line, "max"),
    );
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{line}");
    assert!(
        out.lines()
            .any(|l| l.contains("] messages") && l.contains("p99")),
        "{out}"
    );
}

#[test]
fn exit_codes_are_those_of_send() {
    let bench = Bench::start();
    let addr = bench.addr.to_string();
    let pubkey = bench.pubkey();

    let mut c = udpack();
    c.args(["bench", "--connect", &addr, "--pubkey"])
        .arg(&pubkey)
        .args(["--token", "wrong-token", "--duration", "1"]);
    assert_code(&run(c, "wrong token"), 3, "wrong token");

    let other = tempfile::tempdir().expect("tempdir");
    let mut c = udpack();
    c.arg("keygen").arg("--out").arg(other.path());
    assert_code(&run(c, "keygen"), 0, "second keygen");
    let mut c = udpack();
    c.args(["bench", "--connect", &addr, "--pubkey"])
        .arg(other.path().join("pubkey.pem"))
        .args(["--token", TOKEN, "--timeout", "3", "--duration", "1"]);
    assert_code(&run(c, "wrong key"), 4, "wrong public key");

    let mut c = udpack();
    c.args(["bench", "--connect", &addr, "--pubkey"])
        .arg(&pubkey);
    let o = run(c, "no token");
    assert_code(&o, 2, "no token");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("token"),
        "{}",
        describe(&o)
    );

    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut c = udpack();
    c.args(["bench", "--connect"])
        .arg(silent.local_addr().expect("addr").to_string())
        .arg("--pubkey")
        .arg(&pubkey)
        .args(["--token", TOKEN, "--timeout", "1"]);
    assert_code(&run(c, "silent server"), 5, "silent server");

    for bad in [
        &["--duration", "0"][..],
        &["--streams", "0"],
        &["--messages", "--rate", "0"],
        &["--messages", "--size", "0"],
        &["--reverse", "--bidir"],
        &["--rate", "10"],
    ] {
        let o = run(bench.client(bad), "bad options");
        assert_code(&o, 2, &format!("{bad:?}"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("error: "), "{bad:?}: {err}");
    }

    let mut c = udpack();
    c.args(["bench", "--listen", "127.0.0.1:0", "--key"])
        .arg(bench.dir.path().join("keys/prikey.pem"));
    assert_code(&run(c, "server without token"), 2, "server without token");

    let mut bench = bench;
    assert!(bench.running(), "the server died\n{}", bench.output());
    let o = run(bench.client(&["--duration", "1"]), "bench after failures");
    assert_code(&o, 0, "a good run after the failures");
}

#[test]
fn one_test_at_a_time_and_a_vanished_client_does_not_stop_the_server() {
    let mut bench = Bench::start();
    // Long enough that the second client surely arrives during it.
    let mut first = bench
        .client(&["--duration", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the first client");
    // Its header says the test was accepted and runs.
    let mut header = String::new();
    BufReader::new(first.stdout.as_mut().expect("stdout"))
        .read_line(&mut header)
        .expect("read the header");
    assert!(header.starts_with("bench "), "{header}");

    let o = run(bench.client(&["--duration", "1"]), "a second client");
    assert_code(&o, 1, "a second client during a test");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("busy"),
        "{}",
        describe(&o)
    );

    // The first client vanishes without a word; its test ends at its deadline.
    let _ = first.kill();
    let _ = first.wait();
    let started = Instant::now();
    let served = loop {
        let o = run(bench.client(&["--duration", "1"]), "a later client");
        if o.status.code() == Some(0) {
            break o;
        }
        assert_code(&o, 1, "a later client while the vanished one's test lasts");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not served after the vanished client\n{}",
            bench.output()
        );
        thread::sleep(Duration::from_millis(500));
    };
    assert!(summary(&stdout(&served), "upload").is_some());
    assert!(bench.running(), "{}", bench.output());
    assert!(
        bench.output().contains("ended early"),
        "the vanished client's test is reported\n{}",
        bench.output()
    );
}
