//! What the end-to-end tests of the `udpack` binary share: the binary, scratch
//! directories with keys, a running server, child processes and their output.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub const TOKEN: &str = "s3cret-token";
pub const MIB: usize = 1024 * 1024;

pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("udpack")
}

/// The binary with a clean environment for the variables it reads.
pub fn udpack() -> Command {
    let mut c = Command::new(bin());
    c.env_remove("UDPACK_TOKEN")
        .env_remove("UDPACK_TEST_FAULTS")
        .env_remove("RUST_LOG");
    c
}

/// Deterministic pseudo-random bytes (splitmix64), distinct per seed.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    while out.len() < len {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create the directory");
    }
    std::fs::write(path, bytes).expect("write the file");
}

pub fn sha256_of(path: &Path) -> Vec<u8> {
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().to_vec()
}

/// Marks a directory in [`tree`].
pub const DIR: u64 = u64::MAX;

/// Everything under `root` by relative path: a file's size, or [`DIR`].
pub fn tree(root: &Path) -> BTreeMap<PathBuf, u64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, u64>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.expect("dir entry");
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).expect("metadata");
            let rel = p.strip_prefix(root).expect("prefix").to_path_buf();
            if meta.is_dir() {
                out.insert(rel, DIR);
                walk(root, &p, out);
            } else {
                out.insert(rel, meta.len());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Waits for a child, killing it (and failing) after `limit`; collects its output.
pub fn finish(mut child: Child, limit: Duration, what: &str) -> Output {
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = so.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = se.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
            let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
            panic!("{what} did not finish within {limit:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

pub fn run(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    finish(child, limit, what)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn describe(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    )
}

pub fn assert_code(o: &Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: expected exit {code}\n{}",
        describe(o)
    );
}

pub fn signal(pid: u32, sig: libc::c_int) {
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// Polls `cond` every few milliseconds until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if started.elapsed() > limit {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A scratch directory with a key pair made by `udpack keygen`.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = udpack();
        c.arg("keygen").arg("--out").arg(dir.path().join("keys"));
        let o = run(c, Duration::from_secs(20), "keygen");
        assert_code(&o, 0, "keygen");
        Setup { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn prikey(&self) -> PathBuf {
        self.path("keys/prikey.pem")
    }

    pub fn pubkey(&self) -> PathBuf {
        self.path("keys/pubkey.pem")
    }

    pub fn out(&self) -> PathBuf {
        self.path("out")
    }

    /// `udpack serve` on 127.0.0.1 (a port the system picks) into `out`.
    pub fn serve(&self, extra: &[&str]) -> Server {
        let mut c = udpack();
        c.arg("serve")
            .arg("--key")
            .arg(self.prikey())
            .args(["--listen", "127.0.0.1:0", "--token", TOKEN, "--out"])
            .arg(self.out())
            .args(extra);
        Server::start(c)
    }

    /// `udpack send` to `server` with the right key and token (as arguments).
    pub fn send(&self, server: SocketAddr, paths: &[PathBuf]) -> Command {
        let mut c = udpack();
        c.arg("send")
            .arg("--server")
            .arg(server.to_string())
            .arg("--pubkey")
            .arg(self.pubkey())
            .args(["--token", TOKEN])
            .args(paths);
        c
    }
}

/// A running `udpack serve`: killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server and waits for its `listening on ADDR` line.
    pub fn start(mut cmd: Command) -> Server {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the server");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        {
            let lines = stdout.clone();
            let pipe = child.stdout.take().expect("stdout");
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(a) = line.strip_prefix("listening on ") {
                        if let Ok(a) = a.trim().parse() {
                            let _ = tx.send(a);
                        }
                    }
                    lines.lock().expect("lock").push(line);
                }
            });
        }
        {
            let lines = stderr.clone();
            let pipe = child.stderr.take().expect("stderr");
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().expect("lock").push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "the server did not report its address ({status:?})\nstdout: {:?}\nstderr: {:?}",
                    stdout.lock().expect("lock"),
                    stderr.lock().expect("lock")
                );
            }
        };
        Server {
            child,
            addr,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the server to exit by itself, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            if started.elapsed() > limit {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn output(&self) -> String {
        format!(
            "server stdout:\n{}\nserver stderr:\n{}",
            self.stdout.lock().expect("lock").join("\n"),
            self.stderr.lock().expect("lock").join("\n")
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A child process killed (SIGKILL) when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The `sent N file(s), B bytes (S over the network) in T s` line: (N, B, S).
pub fn summary(stdout: &str) -> (u64, u64, u64) {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("sent ") && l.contains(" over the network) in "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .filter(|s| !s.is_empty() && !s.contains('.'))
        .take(3)
        .map(|s| s.parse().expect("number"))
        .collect();
    assert_eq!(nums.len(), 3, "cannot parse {line:?}");
    (nums[0], nums[1], nums[2])
}
