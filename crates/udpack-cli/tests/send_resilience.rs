//! `udpack send` as a user runs it over a real socket: it survives a server restart and
//! a network outage (reconnecting and resuming), keeps many files in flight over a
//! long link, keeps below `--rate`, and leaves a clean terminal behind.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A UDP relay between the client and a server: each way delayed by `delay`, and
/// everything dropped while `blackout` is set. Stops with the test process.
struct Relay {
    addr: SocketAddr,
    blackout: Arc<AtomicBool>,
}

impl Relay {
    fn start(server: SocketAddr, delay: Duration) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind front");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind back");
        let addr = front.local_addr().expect("addr");
        let blackout = Arc::new(AtomicBool::new(false));
        let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        let pipe = |from: UdpSocket, to: UdpSocket, up: bool| {
            let blackout = blackout.clone();
            let seen = client.clone();
            let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
            thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, src)) = from.recv_from(&mut buf) {
                    if up {
                        *seen.lock().expect("lock") = Some(src);
                    }
                    if !blackout.load(Ordering::Relaxed) {
                        let _ = tx.send((Instant::now() + delay, buf[..n].to_vec()));
                    }
                }
            });
            let client = client.clone();
            thread::spawn(move || {
                while let Ok((at, d)) = rx.recv() {
                    let now = Instant::now();
                    if at > now {
                        thread::sleep(at - now);
                    }
                    let dest = if up {
                        Some(server)
                    } else {
                        *client.lock().expect("lock")
                    };
                    if let Some(dest) = dest {
                        let _ = to.send_to(&d, dest);
                    }
                }
            });
        };
        pipe(
            front.try_clone().expect("clone"),
            back.try_clone().expect("clone"),
            true,
        );
        pipe(back, front, false);
        Relay { addr, blackout }
    }
}

/// The `--json` summary on the last line of stdout.
fn json_summary(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("no JSON summary ({e}) in:\n{stdout}"))
}

fn spawn_send(
    s: &Setup,
    server: SocketAddr,
    paths: &[PathBuf],
    extra: &[&str],
) -> std::process::Child {
    let mut c = s.send(server, paths);
    c.args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().expect("spawn send")
}

/// Waits for `child` with a limit (killed past it); its output.
fn wait_output(child: std::process::Child, limit: Duration, what: &str) -> std::process::Output {
    finish(child, limit, what)
}

#[test]
fn one_send_survives_a_server_restart_and_the_file_arrives_intact() {
    let s = Setup::new();
    let file = s.path("restart.bin");
    write_file(&file, &data(24 * MIB, 41));
    let mut server = s.serve(&[]);
    let addr = server.addr;
    // 40 Mbit/s: the upload takes about 5 s, so the restart lands in its middle.
    let send = spawn_send(
        &s,
        addr,
        std::slice::from_ref(&file),
        &["--rate", "40M", "--json"],
    );
    thread::sleep(Duration::from_millis(1500));
    signal(server.pid(), libc::SIGKILL);
    assert!(server.wait_exit(Duration::from_secs(5)).is_some());
    let part = s.out().join("restart.bin.part");
    let kept = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(kept > 0, "the killed server kept no part");
    thread::sleep(Duration::from_secs(1));
    // The same port and directory, as a restarted service would have.
    let mut c = udpack();
    c.arg("serve")
        .arg("--key")
        .arg(s.prikey())
        .args(["--listen", &addr.to_string(), "--token", TOKEN, "--out"])
        .arg(s.out());
    let again = Server::start(c);
    let o = wait_output(send, Duration::from_secs(60), "send across a restart");
    assert_code(&o, 0, "send across a restart");
    let summary = json_summary(&text(&o.stdout));
    assert!(
        summary["reconnects"].as_u64() >= Some(1),
        "{summary}\n{}",
        again.output()
    );
    assert_eq!(
        sha256_of(&s.out().join("restart.bin")),
        sha256_of(&file),
        "the file differs"
    );
    // It resumed from what the restarted server found in the part.
    let resumed = summary["resumed"].as_u64().unwrap_or(0);
    assert!(
        resumed > 0 && resumed <= kept,
        "resumed {resumed}, kept {kept}: {summary}"
    );
    let sent = summary["sent"].as_u64().unwrap_or(0);
    assert!(sent >= 24 * MIB as u64 - resumed, "{summary}");
    assert!(!part.exists());
}

/// `udpack send` of a 16 MiB file at 40 Mbit/s through a relay that drops everything
/// from `after` on, for `outage` (`None`: for good); the output, and the file.
fn send_across_an_outage(
    s: &Setup,
    name: &str,
    after: Duration,
    outage: Option<Duration>,
    extra: &[&str],
) -> (std::process::Output, PathBuf) {
    let file = s.path(name);
    write_file(&file, &data(16 * MIB, 42));
    let server = s.serve(&[]);
    let relay = Relay::start(server.addr, Duration::ZERO);
    let mut args = vec!["--rate", "40M"];
    args.extend_from_slice(extra);
    let send = spawn_send(s, relay.addr, std::slice::from_ref(&file), &args);
    thread::sleep(after);
    relay.blackout.store(true, Ordering::Relaxed);
    if let Some(outage) = outage {
        thread::sleep(outage);
        relay.blackout.store(false, Ordering::Relaxed);
    }
    (wait_output(send, Duration::from_secs(60), name), file)
}

#[test]
fn one_send_survives_a_network_outage_longer_than_the_idle_timeout() {
    let s = Setup::new();
    // Longer than the client's 8-second idle timeout: the session is lost.
    let (o, file) = send_across_an_outage(
        &s,
        "outage.bin",
        Duration::from_millis(1200),
        Some(Duration::from_secs(10)),
        &["--json"],
    );
    assert_code(&o, 0, "send across an outage");
    let summary = json_summary(&text(&o.stdout));
    assert!(summary["reconnects"].as_u64() >= Some(1), "{summary}");
    assert!(summary["resumed"].as_u64() > Some(0), "{summary}");
    assert_eq!(sha256_of(&s.out().join("outage.bin")), sha256_of(&file));
}

#[test]
fn without_retrying_a_lost_session_exits_5() {
    let s = Setup::new();
    let (o, _) = send_across_an_outage(
        &s,
        "lost.bin",
        Duration::from_millis(800),
        None,
        &["--retry-for", "0"],
    );
    assert_code(&o, 5, "a lost session without retrying");
    assert!(
        text(&o.stderr).contains("session was lost"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        !s.out().join("lost.bin").exists(),
        "a half file under the final name"
    );
}

#[test]
fn many_small_files_are_in_flight_at_once_over_a_long_link() {
    let s = Setup::new();
    let dir = s.path("many");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let files = 120;
    for i in 0..files {
        write_file(&dir.join(format!("f{i:03}.bin")), &data(16 * 1024, 100 + i));
    }
    let server = s.serve(&[]);
    // 20 ms each way: 40 ms per round trip.
    let rtt = Duration::from_millis(40);
    let relay = Relay::start(server.addr, rtt / 2);
    let started = Instant::now();
    let o = wait_output(
        spawn_send(&s, relay.addr, std::slice::from_ref(&dir), &["--json"]),
        Duration::from_secs(60),
        "send of many files",
    );
    let took = started.elapsed();
    assert_code(&o, 0, "send of many files");
    let summary = json_summary(&text(&o.stdout));
    assert_eq!(summary["files"].as_u64(), Some(files));
    for i in 0..files {
        let name = format!("f{i:03}.bin");
        assert_eq!(
            std::fs::read(s.out().join("many").join(&name)).expect("received"),
            data(16 * 1024, 100 + i),
            "{name}"
        );
    }
    // One file after another costs at least a round trip each; in flight together
    // they take a fraction of that (handshake and start-up included).
    let one_by_one = rtt * files as u32;
    assert!(
        took < one_by_one / 2,
        "{files} files took {took:?}; one by one would take at least {one_by_one:?}"
    );
}

#[test]
fn the_upload_keeps_below_its_rate() {
    let s = Setup::new();
    let file = s.path("capped.bin");
    let size = 3 * MIB;
    write_file(&file, &data(size, 44));
    let server = s.serve(&[]);
    let started = Instant::now();
    let o = wait_output(
        spawn_send(
            &s,
            server.addr,
            std::slice::from_ref(&file),
            &["--rate", "8M", "--json"],
        ),
        Duration::from_secs(60),
        "capped send",
    );
    let took = started.elapsed();
    assert_code(&o, 0, "capped send");
    // 8 Mbit/s is 1 MB/s: 3 MiB cannot take much less than 3.1 s (a burst of a few
    // packets aside), on any machine.
    assert!(took >= Duration::from_millis(2800), "took {took:?}");
    assert_eq!(sha256_of(&s.out().join("capped.bin")), sha256_of(&file));
}

/// The screen of a tmux pane, as text.
fn capture(session: &str) -> String {
    let o = Command::new("tmux")
        .args(["capture-pane", "-p", "-t", session])
        .output()
        .expect("tmux capture-pane");
    text(&o.stdout)
}

#[test]
fn the_terminal_shows_bars_while_sending_and_nothing_stale_after() {
    if Command::new("tmux").arg("-V").output().is_err() {
        println!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let s = Setup::new();
    let dir = s.path("tty");
    std::fs::create_dir_all(&dir).expect("mkdir");
    write_file(&dir.join("big-one.bin"), &data(4 * MIB, 45));
    write_file(&dir.join("big-two.bin"), &data(4 * MIB, 46));
    let server = s.serve(&[]);
    let session = format!("udpack-test-{}", std::process::id());
    let command = format!(
        "{} send --server {} --pubkey {} --token {TOKEN} --rate 16M {}; echo EXIT=$?; sleep 60",
        bin().display(),
        server.addr,
        s.pubkey().display(),
        dir.display()
    );
    let started = Command::new("tmux")
        .args(["new-session", "-d", "-x", "150", "-y", "30", "-s", &session])
        .arg(&command)
        .status()
        .expect("tmux new-session");
    assert!(started.success());
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["kill-session", "-t", &self.0])
                .status();
        }
    }
    let _kill = Kill(session.clone());
    // Mid-upload (8 MiB at 2 MB/s take 4 s): the total bar and the files' bars.
    let mut mid = String::new();
    let seen_bars = wait_until(Duration::from_secs(10), || {
        mid = capture(&session);
        mid.contains("total") && mid.contains("big-one.bin") && mid.contains("big-two.bin")
    });
    assert!(seen_bars, "no bars on the screen:\n{mid}");
    let mut end = String::new();
    let exited = wait_until(Duration::from_secs(40), || {
        end = capture(&session);
        end.contains("EXIT=")
    });
    assert!(exited, "send did not finish:\n{end}");
    assert!(end.contains("EXIT=0"), "{end}");
    assert!(end.contains("sent 2 file(s)"), "{end}");
    // Each file got its line; no bar is left behind.
    assert!(end.contains("big-one.bin: sent as"), "{end}");
    assert!(end.contains("big-two.bin: sent as"), "{end}");
    assert!(
        !end.lines()
            .any(|l| l.contains("total") || l.contains('[') && l.contains('%')),
        "stale bars left on the screen:\n{end}"
    );
}
