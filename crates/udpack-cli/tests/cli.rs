//! End-to-end tests of the `udpack` binary: keys, exit codes, uploads, resuming,
//! hostile names, signals, logs, and a lossy link between network namespaces.

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use udpack::KeyFile;
use udpack_cli::protocol::{Finish, FinishAnswer, Offer, OfferAnswer};

mod common;
use common::*;

// 1.
#[test]
fn keygen_writes_a_key_pair_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("k");
    let (pri, publ) = (keys.join("prikey.pem"), keys.join("pubkey.pem"));
    let keygen = |force: bool| {
        let mut c = udpack();
        c.arg("keygen").arg("--out").arg(&keys);
        if force {
            c.arg("--force");
        }
        run(c, Duration::from_secs(20), "keygen")
    };

    let o = keygen(false);
    assert_code(&o, 0, "first keygen");
    assert!(pri.is_file() && publ.is_file(), "{}", describe(&o));
    let mode = std::fs::metadata(&pri)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "prikey.pem mode {mode:o}");
    let pri1 = std::fs::read(&pri).expect("read");
    let pub1 = std::fs::read(&publ).expect("read");
    assert!(text(&pri1).contains("-----BEGIN PRIVATE KEY-----"));
    assert!(text(&pub1).contains("-----BEGIN PUBLIC KEY-----"));

    match Command::new("openssl")
        .args(["pkey", "-in"])
        .arg(&pri)
        .arg("-pubout")
        .output()
    {
        Ok(o) if o.status.success() => assert_eq!(
            text(&o.stdout).trim(),
            text(&pub1).trim(),
            "openssl derives another public key from prikey.pem"
        ),
        Ok(o) => panic!("openssl cannot read prikey.pem: {}", text(&o.stderr)),
        Err(e) => println!("note: openssl not available ({e}); public key check skipped"),
    }

    let o = keygen(false);
    assert_code(&o, 1, "keygen over existing keys");
    assert!(text(&o.stderr).contains("--force"), "{}", describe(&o));
    assert_eq!(
        std::fs::read(&pri).expect("read"),
        pri1,
        "prikey.pem changed"
    );
    assert_eq!(
        std::fs::read(&publ).expect("read"),
        pub1,
        "pubkey.pem changed"
    );

    let o = keygen(true);
    assert_code(&o, 0, "keygen --force");
    let pri2 = std::fs::read(&pri).expect("read");
    let pub2 = std::fs::read(&publ).expect("read");
    assert_ne!(pri2, pri1, "--force kept the old private key");
    assert_ne!(pub2, pub1, "--force kept the old public key");
    let mode = std::fs::metadata(&pri)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "replaced prikey.pem mode {mode:o}");
}

// 2.
#[test]
fn serve_without_token_and_bad_arguments_exit_2() {
    let s = Setup::new();
    let limit = Duration::from_secs(20);

    let mut c = udpack();
    c.arg("serve")
        .arg("--key")
        .arg(s.prikey())
        .args(["--listen", "127.0.0.1:0", "--out"])
        .arg(s.out());
    let o = run(c, limit, "serve without a token");
    assert_code(&o, 2, "serve without a token");
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{err}");
    assert!(lines[0].contains("token"), "unclear message: {err}");

    // An empty UDPACK_TOKEN and a tokens file with only comments are no tokens either.
    let tokens = s.path("tokens.txt");
    write_file(&tokens, b"# nobody\n\n   # still nobody\n");
    let mut c = udpack();
    c.env("UDPACK_TOKEN", "")
        .arg("serve")
        .arg("--key")
        .arg(s.prikey())
        .args(["--listen", "127.0.0.1:0", "--tokens-file"])
        .arg(&tokens)
        .arg("--out")
        .arg(s.out());
    let o = run(c, limit, "serve with an empty tokens file");
    assert_code(&o, 2, "serve with an empty tokens file");

    let key = s.prikey();
    let key = key.to_str().expect("utf-8 path");
    let missing = s.path("missing.pem");
    let missing = missing.to_str().expect("utf-8 path");
    let pubkey = s.pubkey();
    let pubkey = pubkey.to_str().expect("utf-8 path");
    let bad: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["serve", "--token", "t"],
        &[
            "serve",
            "--key",
            key,
            "--token",
            "t",
            "--listen",
            "not-an-address",
        ],
        &["serve", "--key", key, "--token", "t", "--bogus"],
        &[
            "serve",
            "--key",
            missing,
            "--token",
            "t",
            "--listen",
            "127.0.0.1:0",
        ],
        &[
            "send",
            "--server",
            "127.0.0.1:9",
            "--pubkey",
            pubkey,
            "--token",
            "t",
        ],
        &["send", "--server", "127.0.0.1:9", "--token", "t", "x"],
        &[
            "send",
            "--server",
            "127.0.0.1:9",
            "--pubkey",
            pubkey,
            "--token",
            "t",
            "--timeout",
            "0",
            "x",
        ],
        &[
            "send",
            "--server",
            "127.0.0.1:9",
            "--pubkey",
            pubkey,
            "--token",
            "t",
            "--timeout",
            "abc",
            "x",
        ],
        &[
            "send",
            "--server",
            "127.0.0.1:9",
            "--pubkey",
            missing,
            "--token",
            "t",
            "x",
        ],
    ];
    for args in bad {
        let mut c = udpack();
        c.args(*args);
        let o = run(c, limit, &format!("udpack {args:?}"));
        assert_code(&o, 2, &format!("udpack {args:?}"));
        assert!(!o.stderr.is_empty(), "udpack {args:?}: nothing on stderr");
    }
    assert!(
        !s.out().exists(),
        "a refused server created its out directory"
    );
}

// 3.
#[test]
fn send_exit_codes() {
    let s = Setup::new();
    let mut server = s.serve(&[]);
    let file = s.path("src/one.bin");
    write_file(&file, &data(300_000, 1));
    let limit = Duration::from_secs(30);

    // Wrong token: 3.
    let mut c = udpack();
    c.arg("send")
        .arg("--server")
        .arg(server.addr.to_string())
        .arg("--pubkey")
        .arg(s.pubkey())
        .args(["--token", "wrong-token"])
        .arg(&file);
    let o = run(c, limit, "send with a wrong token");
    assert_code(&o, 3, "wrong token");

    // Someone else's public key: 4.
    let other = tempfile::tempdir().expect("tempdir");
    let mut c = udpack();
    c.arg("keygen").arg("--out").arg(other.path());
    assert_code(&run(c, limit, "keygen"), 0, "second keygen");
    let mut c = udpack();
    c.arg("send")
        .arg("--server")
        .arg(server.addr.to_string())
        .arg("--pubkey")
        .arg(other.path().join("pubkey.pem"))
        .args(["--token", TOKEN, "--timeout", "3"])
        .arg(&file);
    let o = run(c, limit, "send with a wrong public key");
    assert_code(&o, 4, "wrong public key");

    // No token at all: 2.
    let mut c = udpack();
    c.arg("send")
        .arg("--server")
        .arg(server.addr.to_string())
        .arg("--pubkey")
        .arg(s.pubkey())
        .arg(&file);
    let o = run(c, limit, "send without a token");
    assert_code(&o, 2, "missing token");
    assert!(text(&o.stderr).contains("token"), "{}", describe(&o));

    // Nobody answers (a bound socket that never replies): 5 after --timeout.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let started = Instant::now();
    let mut c = udpack();
    c.arg("send")
        .arg("--server")
        .arg(silent.local_addr().expect("addr").to_string())
        .arg("--pubkey")
        .arg(s.pubkey())
        .args(["--token", TOKEN, "--timeout", "1"])
        .arg(&file);
    let o = run(c, limit, "send to a silent port");
    let took = started.elapsed();
    assert_code(&o, 5, "silent server");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "timed out after {took:?} with --timeout 1"
    );
    drop(silent);

    // Nothing bound on the port at all: 5 as well, within the timeout.
    let closed_port = UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let started = Instant::now();
    let mut c = udpack();
    c.arg("send")
        .arg("--server")
        .arg(closed_port.to_string())
        .arg("--pubkey")
        .arg(s.pubkey())
        .args(["--token", TOKEN, "--timeout", "1"])
        .arg(&file);
    let o = run(c, limit, "send to a closed port");
    let took = started.elapsed();
    assert_code(&o, 5, "closed port");
    assert!(took < Duration::from_secs(4), "took {took:?}");

    // A damaged upload: 6, and nothing kept on the server.
    let mut c = s.send(server.addr, std::slice::from_ref(&file));
    c.env("UDPACK_TEST_FAULTS", "flip-first-byte");
    let o = run(c, limit, "send with a flipped byte");
    assert_code(&o, 6, "flipped byte");
    assert!(text(&o.stderr).contains("integrity"), "{}", describe(&o));
    let out = s.out();
    for name in ["one.bin", "one.bin.part", "one.bin.part.id", "one.bin.1"] {
        assert!(
            !out.join(name).exists(),
            "{name} exists after a failed integrity check: {:?}",
            tree(&out)
        );
    }

    // The server survived all of that and still takes a good upload.
    assert!(server.running(), "the server died\n{}", server.output());
    let o = run(
        s.send(server.addr, std::slice::from_ref(&file)),
        limit,
        "send",
    );
    assert_code(&o, 0, "good upload after the failures");
    assert_eq!(sha256_of(&out.join("one.bin")), sha256_of(&file));
    assert_eq!(
        tree(&out).keys().cloned().collect::<Vec<_>>(),
        vec![PathBuf::from("one.bin")]
    );
}

// 4.
#[test]
fn upload_files_and_directories_keeps_paths_and_never_overwrites() {
    let s = Setup::new();
    let server = s.serve(&[]);
    let src = s.path("src");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a.txt", b"hello, udpack\n".to_vec()),
        ("tree/empty.bin", Vec::new()),
        ("tree/space name.txt", data(1000, 2)),
        ("tree/sub/deeper/five.bin", data(5 * MIB, 3)),
        ("tree/sub/note.txt", data(70_000, 4)),
        ("tree/été/日本.txt", data(10, 5)),
    ];
    for (rel, bytes) in &files {
        write_file(&src.join(rel), bytes);
    }
    let total: usize = files.iter().map(|(_, b)| b.len()).sum();

    // The token from the environment this time.
    let mut c = udpack();
    c.env("UDPACK_TOKEN", TOKEN)
        .arg("send")
        .arg("--server")
        .arg(server.addr.to_string())
        .arg("--pubkey")
        .arg(s.pubkey())
        .arg(src.join("a.txt"))
        .arg(src.join("tree"));
    let o = run(c, Duration::from_secs(60), "send a tree");
    assert_code(&o, 0, "send a tree");
    let stdout = text(&o.stdout);
    let (n, bytes, sent) = summary(&stdout);
    assert_eq!(n, files.len() as u64, "{stdout}");
    assert_eq!(bytes, total as u64, "{stdout}");
    assert_eq!(sent, total as u64, "{stdout}");

    let out = s.out();
    for (rel, bytes) in &files {
        let got = out.join(rel);
        assert!(got.is_file(), "{rel} missing: {:?}", tree(&out));
        assert_eq!(
            sha256_of(&got),
            Sha256::digest(bytes).to_vec(),
            "{rel} differs"
        );
    }
    let got_files: Vec<PathBuf> = tree(&out)
        .into_iter()
        .filter(|(_, len)| *len != DIR)
        .map(|(p, _)| p)
        .collect();
    let mut want: Vec<PathBuf> = files.iter().map(|(r, _)| PathBuf::from(r)).collect();
    want.sort();
    assert_eq!(got_files, want, "unexpected files on the server");

    // The same file again: a new name, the first copy untouched.
    let o = run(
        s.send(server.addr, &[src.join("a.txt")]),
        Duration::from_secs(30),
        "send again",
    );
    assert_code(&o, 0, "send again");
    assert!(
        text(&o.stdout).contains("sent as a.txt.1"),
        "{}",
        describe(&o)
    );
    assert_eq!(
        std::fs::read(out.join("a.txt.1")).expect("read"),
        files[0].1
    );

    // Another file with the same name: yet another name, nothing overwritten.
    let other = s.path("other/a.txt");
    write_file(&other, b"different content");
    let o = run(
        s.send(server.addr, std::slice::from_ref(&other)),
        Duration::from_secs(30),
        "send a different a.txt",
    );
    assert_code(&o, 0, "send a different a.txt");
    assert_eq!(
        std::fs::read(out.join("a.txt.2")).expect("read"),
        b"different content"
    );
    assert_eq!(std::fs::read(out.join("a.txt")).expect("read"), files[0].1);
    assert_eq!(
        std::fs::read(out.join("a.txt.1")).expect("read"),
        files[0].1
    );
}

// 5.
#[test]
fn interrupted_upload_resumes_from_the_part_file() {
    const SIZE: usize = 300 * MIB;
    const CUT: u64 = 30 * MIB as u64;
    let s = Setup::new();
    let mut server = s.serve(&[]);
    let big = s.path("src/big.bin");
    write_file(&big, &data(SIZE, 6));
    let want = sha256_of(&big);
    let out = s.out();
    let part = out.join("big.bin.part");

    let child = s
        .send(server.addr, std::slice::from_ref(&big))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn send");
    let mut client = KillOnDrop(child);
    let mut seen = 0;
    let cut = wait_until(Duration::from_secs(60), || {
        seen = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        seen > CUT
    });
    assert!(
        cut,
        "big.bin.part never exceeded {CUT} bytes (last {seen})\n{}",
        server.output()
    );
    client.0.kill().expect("kill the client");
    let status = client.0.wait().expect("wait");
    assert!(
        !status.success(),
        "the client finished before it was killed"
    );
    assert!(
        !out.join("big.bin").exists(),
        "big.bin exists after the kill"
    );
    let kept = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(kept > CUT, "the part shrank to {kept}");
    assert!(kept < SIZE as u64, "the whole file arrived before the kill");

    let o = run(
        s.send(server.addr, std::slice::from_ref(&big)),
        Duration::from_secs(120),
        "resumed send",
    );
    assert_code(&o, 0, "resumed send");
    let (n, bytes, sent) = summary(&text(&o.stdout));
    assert_eq!((n, bytes), (1, SIZE as u64));
    assert!(
        sent <= SIZE as u64 - CUT,
        "{sent} bytes went over the network for a resumed upload of {SIZE} (part had {kept})"
    );
    assert_eq!(sha256_of(&out.join("big.bin")), want, "big.bin differs");
    assert!(!part.exists(), "the part file is still there");
    assert!(
        !out.join("big.bin.part.id").exists(),
        "the sidecar is still there"
    );
    assert!(!out.join("big.bin.1").exists(), "a second copy appeared");
    assert!(server.running(), "the server died\n{}", server.output());
}

// 6.
#[test]
fn hostile_names_are_refused_and_nothing_lands_outside_out() {
    let s = Setup::new();
    let root = s.path("root");
    let out = root.join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    let mut c = udpack();
    c.arg("serve")
        .arg("--key")
        .arg(s.prikey())
        .args(["--listen", "127.0.0.1:0", "--token", TOKEN, "--out"])
        .arg(&out);
    let server = Server::start(c);
    let before_root = tree(&root);
    let before_dir = tree(s.dir.path()).keys().cloned().collect::<Vec<_>>();
    let abs_evil = root.join("abs-evil.txt");
    let abs_evil_name = abs_evil.to_str().expect("utf-8").to_string();
    let etc_x = Path::new("/etc/x");
    let etc_x_existed = etc_x.exists();

    let names: Vec<String> = [
        "../evil.txt",
        "/etc/x",
        "a/../../x",
        "CON",
        "x\u{0}y",
        "dir\\x",
        "..",
        "./../evil.txt",
        "sub/../../../evil.txt",
        "nul.txt",
        "evil.txt.part",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([abs_evil_name])
    .collect();

    let pubkey = udpack::PublicKey::load(s.pubkey()).expect("public key");
    let addr = server.addr;
    let payload = data(4096, 7);
    let payload_hash = blake3::hash(&payload).as_bytes().to_vec();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (answers, good) = rt.block_on(async {
        let client = udpack_io::Client::bind(
            udpack_io::ClientOptions::new(pubkey)
                .token(TOKEN)
                .handshake_timeout(Duration::from_secs(10))
                .reconnect(udpack_io::Reconnect::off()),
        )
        .await
        .expect("bind");
        let socket = client.connect(addr.to_string()).await.expect("connect");
        let mut answers = Vec::new();
        for name in &names {
            let channel = client.open_channel().await.expect("channel");
            let a: OfferAnswer = channel
                .send_with_ack_timeout(
                    "offer",
                    &Offer {
                        name: name.clone(),
                        size: payload.len() as u64,
                        id: vec![1; 16],
                        data: None,
                        hash: None,
                    },
                    Duration::from_secs(10),
                )
                .await
                .unwrap_or_else(|e| panic!("{name:?}: no answer: {e}"));
            channel.close().await;
            answers.push((name.clone(), a));
        }
        // The same raw client with a plain name works: the refusals are about names.
        let channel = client.open_channel().await.expect("channel");
        let a: OfferAnswer = channel
            .send_with_ack_timeout(
                "offer",
                &Offer {
                    name: "fine.txt".into(),
                    size: payload.len() as u64,
                    id: vec![2; 16],
                    data: None,
                    hash: None,
                },
                Duration::from_secs(10),
            )
            .await
            .expect("answer");
        assert!(a.ok && a.offset == 0, "fine.txt refused: {a:?}");
        channel
            .send_bytes("data", payload.clone().into())
            .await
            .expect("data");
        let finish = Finish { hash: payload_hash };
        let f: FinishAnswer = channel
            .send_with_ack_timeout("finish", &finish, Duration::from_secs(10))
            .await
            .expect("finish answer");
        channel.close().await;
        socket.close(0, "done");
        let _ = tokio::time::timeout(Duration::from_secs(3), socket.closed()).await;
        client.close();
        (answers, f)
    });

    for (name, a) in &answers {
        assert!(!a.ok, "{name:?} was accepted: {a:?}");
        assert_eq!(a.code, "bad_path", "{name:?}: {a:?}");
        assert!(!a.message.is_empty(), "{name:?}: no message");
    }
    assert!(
        good.ok && good.name == "fine.txt",
        "fine.txt: {} {}",
        good.code,
        good.message
    );
    assert_eq!(
        std::fs::read(out.join("fine.txt")).expect("fine.txt"),
        payload
    );

    // Only fine.txt appeared, inside out; nothing next to it or above it.
    let mut after_root = tree(&root);
    assert_eq!(after_root.remove(Path::new("out/fine.txt")), Some(4096));
    assert_eq!(after_root, before_root, "something changed around --out");
    assert_eq!(
        tree(s.dir.path()).keys().cloned().collect::<Vec<_>>().len(),
        before_dir.len() + 1,
        "files appeared next to the root"
    );
    assert!(!abs_evil.exists());
    assert!(!root.join("evil.txt").exists() && !s.path("evil.txt").exists());
    assert!(!root.join("x").exists());
    assert_eq!(etc_x.exists(), etc_x_existed, "/etc/x was created");
    drop(server);
}

// 7.
#[test]
fn two_clients_at_once() {
    let s = Setup::new();
    let mut server = s.serve(&[]);
    let a = s.path("src/first.bin");
    let b = s.path("src/second.bin");
    write_file(&a, &data(20 * MIB, 8));
    write_file(&b, &data(20 * MIB, 9));
    let spawn = |p: &PathBuf| {
        s.send(server.addr, std::slice::from_ref(p))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn send")
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    let ta = thread::spawn(move || finish(ca, Duration::from_secs(90), "first send"));
    let tb = thread::spawn(move || finish(cb, Duration::from_secs(90), "second send"));
    let oa = ta.join().expect("first");
    let ob = tb.join().expect("second");
    assert_code(&oa, 0, "first client");
    assert_code(&ob, 0, "second client");
    let out = s.out();
    assert_eq!(sha256_of(&out.join("first.bin")), sha256_of(&a));
    assert_eq!(sha256_of(&out.join("second.bin")), sha256_of(&b));
    assert!(server.running(), "the server died\n{}", server.output());
}

// 8.
#[test]
fn once_exits_after_the_first_upload() {
    let s = Setup::new();
    let mut server = s.serve(&["--once"]);
    let f = s.path("src/only.bin");
    write_file(&f, &data(2 * MIB, 10));
    assert!(server.running(), "--once server exited before any upload");
    let o = run(
        s.send(server.addr, std::slice::from_ref(&f)),
        Duration::from_secs(30),
        "send",
    );
    assert_code(&o, 0, "send to a --once server");
    let status = server
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("the --once server is still running\n{}", server.output()));
    assert_eq!(status.code(), Some(0), "{}", server.output());
    assert_eq!(sha256_of(&s.out().join("only.bin")), sha256_of(&f));
}

// 9.
#[test]
fn log_dir_gets_the_three_logs() {
    let s = Setup::new();
    let server_logs = s.path("logs/server");
    let client_logs = s.path("logs/client");
    let mut server = s.serve(&["--log-dir", server_logs.to_str().expect("utf-8")]);
    let f = s.path("src/logged.bin");
    write_file(&f, &data(MIB, 11));
    let mut c = s.send(server.addr, std::slice::from_ref(&f));
    c.arg("--log-dir").arg(&client_logs);
    let o = run(c, Duration::from_secs(30), "send with --log-dir");
    assert_code(&o, 0, "send with --log-dir");

    // Logs are complete once the server has stopped.
    signal(server.pid(), libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server did not stop");
    assert_eq!(status.code(), Some(0));

    let read =
        |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    for dir in [&server_logs, &client_logs] {
        for name in ["udpack.log", "udpack.io.log"] {
            assert!(
                dir.join(name).is_file(),
                "{} missing",
                dir.join(name).display()
            );
        }
    }
    let server_log = read(server_logs.join("server.log"));
    let client_log = read(client_logs.join("client.log"));
    let server_io = read(server_logs.join("udpack.io.log"));
    assert!(
        !server_log.is_empty() || !server_io.is_empty(),
        "server.log and udpack.io.log are both empty"
    );
    assert!(
        server_log.contains("received") && server_log.contains("logged.bin"),
        "server.log does not mention the upload:\n{server_log}"
    );
    assert!(
        client_log.contains("connected"),
        "client.log does not mention the connection:\n{client_log}"
    );
    // Application lines stay out of the transport's file.
    let transport = read(server_logs.join("udpack.log"));
    assert!(!transport.contains("logged.bin"), "{transport}");
}

// 10.
#[test]
fn sigterm_and_sigint_stop_the_server_with_0() {
    let s = Setup::new();
    // Several rounds: the signal comes right after "listening on", the earliest moment
    // a script can know the server is up.
    let rounds = [libc::SIGTERM, libc::SIGINT].repeat(4);
    for sig in rounds {
        let mut server = s.serve(&[]);
        assert!(server.running());
        signal(server.pid(), sig);
        let status = server
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("signal {sig} did not stop the server"));
        assert_eq!(status.code(), Some(0), "signal {sig}\n{}", server.output());
    }
}

// 11.
/// The link emulator between namespaces ue_a and ue_b: stopped with SIGTERM when
/// dropped (it then removes the namespaces).
struct Linkem(Child);

impl Drop for Linkem {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            signal(self.0.id(), libc::SIGTERM);
            let started = Instant::now();
            while self.0.try_wait().ok().flatten().is_none() {
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = self.0.kill();
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = self.0.wait();
        }
    }
}

fn netns_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            text(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name))
        })
        .unwrap_or(false)
}

#[test]
fn upload_through_a_lossy_link() {
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: the lossy link needs root (network namespaces)");
        return;
    }
    let linkem = std::env::var_os("UDPACK_LINKEM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools/linkem.py")
        });
    if !linkem.is_file() {
        println!(
            "skipped: {} not found (set UDPACK_LINKEM)",
            linkem.display()
        );
        return;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        println!("skipped: the `ip` command is missing");
        return;
    }
    if Command::new("python3").arg("--version").output().is_err() {
        println!("skipped: python3 is missing");
        return;
    }
    if netns_exists("ue_a") || netns_exists("ue_b") {
        println!("skipped: namespaces ue_a/ue_b exist already (another link emulator running?)");
        return;
    }

    let mut child = Command::new("python3")
        .arg(&linkem)
        .args([
            "--delay-ms",
            "20",
            "--loss",
            "0.05",
            "--rate-mbit",
            "100",
            "--queue-ms",
            "50",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn linkem");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let link = Linkem(child);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.trim() == "ready" {
                let _ = tx.send(());
            }
        }
    });
    let link_stats = thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(30)).is_ok(),
        "linkem did not become ready"
    );

    let s = Setup::new();
    let mut c = Command::new("ip");
    c.args(["netns", "exec", "ue_b"])
        .arg(bin())
        .env_remove("UDPACK_TOKEN")
        .env_remove("UDPACK_TEST_FAULTS")
        .arg("serve")
        .arg("--key")
        .arg(s.prikey())
        .args(["--listen", "198.18.0.2:0", "--token", TOKEN, "--out"])
        .arg(s.out());
    let mut server = Server::start(c);
    assert_eq!(server.addr.ip().to_string(), "198.18.0.2");

    const SIZE: usize = 32 * MIB;
    let f = s.path("src/lossy.bin");
    write_file(&f, &data(SIZE, 12));
    let mut c = Command::new("ip");
    c.args(["netns", "exec", "ue_a"])
        .arg(bin())
        .env_remove("UDPACK_TOKEN")
        .env_remove("UDPACK_TEST_FAULTS")
        .arg("send")
        .arg("--server")
        .arg(server.addr.to_string())
        .arg("--pubkey")
        .arg(s.pubkey())
        .args(["--token", TOKEN])
        .arg(&f);
    let started = Instant::now();
    let o = run(c, Duration::from_secs(120), "send over the lossy link");
    let elapsed = started.elapsed().as_secs_f64();
    assert_code(&o, 0, "send over the lossy link");
    assert_eq!(sha256_of(&s.out().join("lossy.bin")), sha256_of(&f));
    assert!(server.running(), "the server died\n{}", server.output());
    drop(server);
    drop(link);
    let stats = link_stats.join().unwrap_or_default();
    println!(
        "lossy link (20 ms one way, 5% loss, 100 Mbit/s, 50 ms queue): {} MiB in {elapsed:.2} s, goodput {:.2} Mbit/s ({:.2} MB/s)\nclient: {}\nlinkem: {}",
        SIZE / MIB,
        SIZE as f64 * 8.0 / 1e6 / elapsed,
        SIZE as f64 / 1e6 / elapsed,
        text(&o.stdout).lines().last().unwrap_or(""),
        stats.trim()
    );
    assert!(!netns_exists("ue_a"), "linkem left ue_a behind");
}
