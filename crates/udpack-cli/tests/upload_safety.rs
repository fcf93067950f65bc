//! The upload server against a hostile output directory and hostile offers, through the
//! `udpack` binary: links planted in the directory, names one file system stores as one,
//! offers beyond the free space or the quota, abandoned parts, a token that takes more
//! than its share of sessions or uploads.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use udpack::KeyFile;
use udpack_cli::protocol::{Finish, FinishAnswer, Offer, OfferAnswer};

const TOKEN: &str = "s3cret-token";

/// A scratch directory with keys, an output directory and a running server (killed
/// when dropped).
struct Env {
    dir: tempfile::TempDir,
    server: Option<Child>,
    addr: Option<SocketAddr>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new(assert_cmd::cargo::cargo_bin("udpack"))
            .arg("keygen")
            .arg("--out")
            .arg(dir.path().join("keys"))
            .stdout(Stdio::null())
            .status()
            .expect("keygen");
        assert!(status.success(), "keygen failed");
        std::fs::create_dir_all(dir.path().join("out")).expect("mkdir out");
        std::fs::create_dir_all(dir.path().join("outside")).expect("mkdir outside");
        Env {
            dir,
            server: None,
            addr: None,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Starts `udpack serve` into `out` and waits for its address.
    fn serve(&mut self, extra: &[&str]) {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("udpack"))
            .env_remove("UDPACK_TOKEN")
            .env_remove("RUST_LOG")
            .arg("serve")
            .arg("--key")
            .arg(self.path("keys/prikey.pem"))
            .args(["--listen", "127.0.0.1:0", "--token", TOKEN, "--out"])
            .arg(self.path("out"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the server");
        let pipe = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.strip_prefix("listening on ") {
                    if let Ok(a) = a.trim().parse::<SocketAddr>() {
                        let _ = tx.send(a);
                    }
                }
            }
        });
        self.server = Some(child);
        self.addr = Some(
            rx.recv_timeout(Duration::from_secs(20))
                .expect("the server reports its address"),
        );
    }

    /// A raw udpack.io client connected to the server, with the right key and token.
    async fn connect(&self) -> (udpack_io::Client, udpack_io::Socket) {
        let (client, socket) = self.connect_as(TOKEN).await;
        (client, socket.expect("connect"))
    }

    /// A raw udpack.io client with the right key and `token`, and how connecting went.
    async fn connect_as(
        &self,
        token: &str,
    ) -> (
        udpack_io::Client,
        Result<udpack_io::Socket, udpack_io::Error>,
    ) {
        let pubkey = udpack::PublicKey::load(self.path("keys/pubkey.pem")).expect("pubkey");
        let addr = self.addr.expect("serving");
        let client = udpack_io::Client::bind(
            udpack_io::ClientOptions::new(pubkey)
                .token(token)
                .handshake_timeout(Duration::from_secs(10))
                .reconnect(udpack_io::Reconnect::off()),
        )
        .await
        .expect("bind");
        let socket = client.connect(addr.to_string()).await;
        (client, socket)
    }

    /// A raw client: offers each of `offers` (name, content) on its own channel and,
    /// when accepted, uploads and finishes it; returns the answers.
    fn upload(&self, offers: &[(&str, &[u8])]) -> Vec<(OfferAnswer, Option<FinishAnswer>)> {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let (client, socket) = self.connect().await;
            let mut out = Vec::new();
            for (name, content) in offers {
                let channel = client.open_channel().await.expect("channel");
                let a: OfferAnswer = channel
                    .send_with_ack_timeout("offer", &offer(name, content), Duration::from_secs(10))
                    .await
                    .expect("answer");
                let mut f = None;
                if a.ok {
                    channel
                        .send_bytes("data", content.to_vec().into())
                        .await
                        .expect("data");
                    let finish = Finish {
                        hash: blake3::hash(content).as_bytes().to_vec(),
                    };
                    f = Some(
                        channel
                            .send_with_ack_timeout("finish", &finish, Duration::from_secs(10))
                            .await
                            .expect("finish answer"),
                    );
                }
                channel.close().await;
                out.push((a, f));
            }
            socket.close(0, "done");
            let _ = tokio::time::timeout(Duration::from_secs(3), socket.closed()).await;
            client.close();
            out
        })
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A streamed offer of `content` (the data follows in `data` messages).
fn offer(name: &str, content: &[u8]) -> Offer {
    Offer {
        name: name.into(),
        size: content.len() as u64,
        id: blake3::hash(name.as_bytes()).as_bytes()[..16].to_vec(),
        data: None,
        hash: None,
    }
}

fn assert_refused(a: &OfferAnswer, code: &str, words: &str, what: &str) {
    assert!(!a.ok, "{what} was accepted: {a:?}");
    assert_eq!(a.code, code, "{what}: {a:?}");
    assert!(a.message.contains(words), "{what}: {a:?}");
}

/// Every file below `root`, with its content.
fn contents(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn links_in_the_output_directory_are_never_followed() {
    let mut env = Env::new();
    let (out, outside) = (env.path("out"), env.path("outside"));
    for v in ["victim-part", "victim-sidecar", "victim-final"] {
        std::fs::write(outside.join(v), b"keep").expect("write");
    }
    let link = |target: &str, at: &str| {
        std::os::unix::fs::symlink(outside.join(target), out.join(at)).expect("symlink")
    };
    link("victim-part", "a.bin.part");
    link("victim-sidecar", "b.bin.part.id");
    link("victim-final", "c.bin");
    std::os::unix::fs::symlink(&outside, out.join("sub")).expect("symlink");
    let before = contents(&outside);
    env.serve(&[]);
    let payload = b"hostile peers write through links".to_vec();
    let answers = env.upload(&[
        ("a.bin", &payload),
        ("b.bin", &payload),
        ("c.bin", &payload),
        ("sub/d.bin", &payload),
        ("fine.bin", &payload),
    ]);
    for ((a, _), what) in answers.iter().zip(["a.bin", "b.bin", "c.bin", "sub/d.bin"]) {
        assert_refused(a, "bad_path", "symbolic link", what);
    }
    let (a, f) = &answers[4];
    assert!(a.ok, "fine.bin refused: {a:?}");
    assert!(
        f.as_ref().is_some_and(|f| f.ok && f.name == "fine.bin"),
        "{f:?}"
    );
    assert_eq!(
        contents(&outside),
        before,
        "something changed outside --out"
    );
    for l in ["a.bin.part", "b.bin.part.id", "c.bin", "sub"] {
        assert!(out.join(l).is_symlink(), "{l} was replaced");
    }
}

#[test]
fn colons_and_names_a_file_system_folds_together() {
    let mut env = Env::new();
    env.serve(&[]);
    let answers = env.upload(&[("notes.txt:stream", b"x"), ("dir:x/y", b"x")]);
    for (a, _) in &answers {
        assert_refused(a, "bad_path", "`:`", "a name with a colon");
    }
    // Two uploads whose names differ in case and normalisation only cannot run at the
    // same time: the second is busy while the first holds its claim.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let second = rt.block_on(async {
        let (client, _socket) = env.connect().await;
        let first = client.open_channel().await.expect("channel");
        let a: OfferAnswer = first
            .send_with_ack_timeout(
                "offer",
                &offer("Caf\u{e9}.TXT", &[1; 100]),
                Duration::from_secs(10),
            )
            .await
            .expect("answer");
        assert!(a.ok, "{a:?}");
        let other = client.open_channel().await.expect("channel");
        let b: OfferAnswer = other
            .send_with_ack_timeout(
                "offer",
                &offer("cafe\u{301}.txt", &[2; 100]),
                Duration::from_secs(10),
            )
            .await
            .expect("answer");
        client.close();
        b
    });
    assert_refused(&second, "busy", "another client", "the case-folded twin");
}

#[test]
fn offers_beyond_free_space_or_quota_are_refused() {
    let mut env = Env::new();
    std::fs::write(env.path("out/old.bin"), vec![0u8; 8192]).expect("write");
    env.serve(&["--quota", "10K"]);
    let huge = Offer {
        size: 1 << 60,
        ..offer("huge.bin", b"")
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let a = rt.block_on(async {
        let (client, _socket) = env.connect().await;
        let ch = client.open_channel().await.expect("channel");
        let a: OfferAnswer = ch
            .send_with_ack_timeout("offer", &huge, Duration::from_secs(10))
            .await
            .expect("answer");
        client.close();
        a
    });
    assert_refused(&a, "no_space", "free space", "2^60 bytes");
    assert!(!env.path("out/huge.bin.part").exists());
    let answers = env.upload(&[("big.bin", &[7; 4096]), ("small.bin", &[7; 1024])]);
    assert_refused(
        &answers[0].0,
        "quota",
        "quota",
        "8 KiB + 4 KiB within 10 KiB",
    );
    assert!(answers[1].1.as_ref().is_some_and(|f| f.ok), "{answers:?}");
    assert!(!env.path("out/big.bin.part").exists());
}

#[test]
fn abandoned_parts_are_removed_at_start_and_periodically() {
    let mut env = Env::new();
    let week_ago = SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
    for name in [
        "old.bin.part",
        "old.bin.part.sha256",
        "old.bin.part.id",
        "d/old2.bin.part",
    ] {
        let p = env.path("out").join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        let f = std::fs::File::create(&p).expect("create");
        f.set_modified(week_ago).expect("set mtime");
    }
    std::fs::write(env.path("out/fresh.bin.part"), b"x").expect("write");
    std::fs::write(env.path("out/kept.bin"), b"x").expect("write");
    let old_final = std::fs::File::create(env.path("out/old-final.bin")).expect("create");
    old_final.set_modified(week_ago).expect("set mtime");
    env.serve(&[]);
    for gone in [
        "old.bin.part",
        "old.bin.part.sha256",
        "old.bin.part.id",
        "d/old2.bin.part",
    ] {
        assert!(!env.path("out").join(gone).exists(), "{gone} kept");
    }
    for kept in ["fresh.bin.part", "kept.bin", "old-final.bin"] {
        assert!(env.path("out").join(kept).exists(), "{kept} removed");
    }
    drop(env);

    // With a short age, a part left behind goes while the server runs.
    let mut env = Env::new();
    env.serve(&["--part-max-age", "2s"]);
    std::fs::write(env.path("out/left.bin.part"), b"x").expect("write");
    let started = Instant::now();
    while env.path("out/left.bin.part").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "left.bin.part was not removed"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Offers `name` (100 bytes, streamed) on a new channel of `client`; the channel and
/// the answer.
async fn offer_on(client: &udpack_io::Client, name: &str) -> (udpack_io::Channel, OfferAnswer) {
    let channel = client.open_channel().await.expect("channel");
    let a: OfferAnswer = channel
        .send_with_ack_timeout("offer", &offer(name, &[3; 100]), Duration::from_secs(10))
        .await
        .expect("answer");
    (channel, a)
}

#[test]
fn a_token_gets_its_share_of_sessions_and_uploads_only() {
    let mut env = Env::new();
    env.serve(&[
        "--token",
        "other-token",
        "--max-sessions-per-token",
        "1",
        "--max-uploads-per-token",
        "1",
    ]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // The token's one session is taken: a second client with it is told why.
        let (client, _socket) = env.connect().await;
        let (second, refused) = env.connect_as(TOKEN).await;
        let e = refused.expect_err("a second session with the token is refused");
        assert!(
            e.to_string().contains("too many sessions with this token"),
            "{e}"
        );
        second.close();

        // Its one upload is in progress: another file is refused as busy, with a
        // message that says why; another token's upload is not affected.
        let (held, a) = offer_on(&client, "first.bin").await;
        assert!(a.ok, "{a:?}");
        let (_, b) = offer_on(&client, "second.bin").await;
        assert_refused(&b, "busy", "uploads in progress", "a second upload");
        let (other, socket) = env.connect_as("other-token").await;
        socket.expect("another token connects");
        let (_, c) = offer_on(&other, "second.bin").await;
        assert!(c.ok, "another token's upload: {c:?}");
        other.close();

        // Once the first upload is done, the token's next one is accepted.
        held.send_bytes("data", vec![3u8; 100].into())
            .await
            .expect("data");
        let finish = Finish {
            hash: blake3::hash(&[3; 100]).as_bytes().to_vec(),
        };
        let f: FinishAnswer = held
            .send_with_ack_timeout("finish", &finish, Duration::from_secs(10))
            .await
            .expect("finish answer");
        assert!(f.ok, "{f:?}");
        let (_, d) = offer_on(&client, "third.bin").await;
        assert!(d.ok, "after the first upload: {d:?}");
        client.close();
    });
    assert!(env.path("out/first.bin").exists());
}

#[test]
fn serve_help_shows_the_per_token_limits_the_timeouts_and_their_defaults() {
    let out = Command::new(assert_cmd::cargo::cargo_bin("udpack"))
        .args(["serve", "--help"])
        .output()
        .expect("run udpack serve --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    for (flag, default) in [
        ("--max-sessions-per-token", "[default: 1024]"),
        ("--max-uploads-per-token", "[default: 256]"),
        ("--offer-timeout", "[default: 30s]"),
        ("--reply-timeout", "[default: 30s]"),
    ] {
        let at = help
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} missing: {help}"));
        let rest = &help[at..];
        let next = rest[2..].find(" --").map_or(rest.len(), |i| i + 2);
        assert!(rest[..next].contains(default), "{flag}: {}", &rest[..next]);
    }
}

#[test]
fn a_channel_that_sends_no_offer_is_closed_after_the_offer_timeout() {
    let mut env = Env::new();
    env.serve(&["--offer-timeout", "1s"]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (client, socket) = env.connect().await;
        // Two bytes of a frame header and no more: the server has a channel (and a
        // task) for it, but never a first message.
        let mut stream = socket.session().open_stream().await.expect("open");
        stream
            .write_all_bytes(vec![0u8, 0].into())
            .await
            .expect("write");
        let started = Instant::now();
        let mut answer = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(15), async {
            while let Ok(Some(b)) = stream.read_chunk(usize::MAX).await {
                answer.extend_from_slice(&b);
            }
        })
        .await;
        assert!(ended.is_ok(), "the server closed the channel");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900),
            "not before the timeout: {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(10),
            "at the timeout, not the default 30 s: {waited:?}"
        );
        let text = String::from_utf8_lossy(&answer);
        assert!(text.contains("no offer in time"), "told why: {text:?}");
        // The session stays usable: a real upload on it goes through.
        let (ch, a) = offer_on(&client, "after.bin").await;
        assert!(a.ok, "{a:?}");
        drop(ch);
        client.close();
    });
}
