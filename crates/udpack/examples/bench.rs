//! Loopback benchmark: udpack against kernel TCP and quinn (QUIC), plus the memory an
//! idle udpack session costs a server.
//!
//! ```sh
//! cargo run --release -p udpack --example bench
//! cargo run --release -p udpack --example bench -- --size-mib 256 --only udpack --streams 16
//! ```
//!
//! Throughput: for each transport and stream count, a server and a client run in this
//! process on 127.0.0.1, each on its own single-threaded tokio runtime on its own OS
//! thread. The client writes `--size-mib` MiB in total, split evenly over the streams
//! (TCP: one connection per stream), in 256 KiB writes; the receiver reads and discards,
//! checking the first and last byte of every read against the pattern. Goodput is
//! payload bytes over the wall time from the client's start to the receiver's last
//! byte. CPU is the process's user + system time (`getrusage(RUSAGE_SELF)`) over the
//! whole run, both sides together, and each side's thread on its own
//! (`RUSAGE_THREAD`).
//!
//! Idle sessions: a child process (this binary, `--idle-server`) runs one udpack server
//! endpoint; this process opens `--idle-sessions` sessions to it from 10 client
//! endpoints, holds them open past the idle timeout, and the child reports its own RSS
//! and heap in use before and after.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

/// Size of every write, and of the TCP receiver's read buffer.
const CHUNK: usize = 256 * 1024;
/// Largest chunk taken by one zero-copy read (udpack, quinn).
const READ_MAX: usize = 1024 * 1024;
const TOKEN: &str = "bench";
const GIB: f64 = (1u64 << 30) as f64;

/// The byte at `offset` of every stream: writes always start at a multiple of CHUNK,
/// so the sender fills one buffer once and the receiver recomputes any byte cheaply.
fn pattern(offset: u64) -> u8 {
    let i = offset % CHUNK as u64;
    (i.wrapping_mul(0x9e37_79b9) >> 11) as u8
}

fn pattern_buf() -> Vec<u8> {
    (0..CHUNK as u64).map(pattern).collect()
}

/// Checks a received piece at stream offset `offset`: first and last byte.
fn check(offset: u64, data: &[u8]) -> Result<()> {
    let last = data.len() - 1;
    if data[0] != pattern(offset) || data[last] != pattern(offset + last as u64) {
        return Err(format!("corrupt data at offset {offset}").into());
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Udpack,
    Tcp,
    Quinn,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Udpack => "udpack",
            Kind::Tcp => "tcp",
            Kind::Quinn => "quinn",
        }
    }

    fn parse(s: &str) -> Result<Kind> {
        match s {
            "udpack" => Ok(Kind::Udpack),
            "tcp" => Ok(Kind::Tcp),
            "quinn" => Ok(Kind::Quinn),
            _ => Err(format!("unknown transport {s:?} (udpack, tcp, quinn)").into()),
        }
    }
}

struct Opts {
    size_mib: u64,
    kinds: Vec<Kind>,
    streams: Vec<usize>,
    repeat: usize,
    idle_sessions: usize,
    idle_hold: Duration,
    quinn_window_mib: u64,
    udpack_cc: udpack::ControllerKind,
    quinn_chacha: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench [--size-mib N] [--only udpack,tcp,quinn] [--streams 1,16] [--repeat N]\n\
         \x20            [--idle-sessions N] [--idle-hold-secs S] [--quinn-window-mib N]\n\
         \x20            [--quinn-cipher aes|chacha] [--udpack-cc bbr|newreno]\n\
         defaults: --size-mib 1024 --only udpack,tcp,quinn --streams 1,16 --repeat 1\n\
         \x20         --idle-sessions 10000 --idle-hold-secs 35 --quinn-window-mib 16\n\
         \x20         --quinn-cipher aes --udpack-cc bbr\n\
         --idle-sessions 0 skips the idle-session measurement; --quinn-window-mib 0 keeps\n\
         quinn's default flow-control windows; --quinn-cipher chacha makes quinn negotiate\n\
         ChaCha20-Poly1305 (udpack's cipher) rather than AES-128-GCM"
    );
    std::process::exit(2)
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        size_mib: 1024,
        kinds: vec![Kind::Udpack, Kind::Tcp, Kind::Quinn],
        streams: vec![1, 16],
        repeat: 1,
        idle_sessions: 10_000,
        idle_hold: Duration::from_secs(35),
        quinn_window_mib: 16,
        udpack_cc: udpack::ControllerKind::Bbr,
        quinn_chacha: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| usage());
        match a.as_str() {
            "--size-mib" => o.size_mib = val().parse()?,
            "--only" => o.kinds = val().split(',').map(Kind::parse).collect::<Result<_>>()?,
            "--streams" => {
                o.streams = val()
                    .split(',')
                    .map(|s| s.parse::<usize>())
                    .collect::<std::result::Result<_, _>>()?
            }
            "--repeat" => o.repeat = val().parse()?,
            "--idle-sessions" => o.idle_sessions = val().parse()?,
            "--idle-hold-secs" => o.idle_hold = Duration::from_secs(val().parse()?),
            "--quinn-window-mib" => o.quinn_window_mib = val().parse()?,
            "--quinn-cipher" => {
                o.quinn_chacha = match val().as_str() {
                    "aes" => false,
                    "chacha" => true,
                    other => return Err(format!("unknown cipher {other:?}").into()),
                }
            }
            "--udpack-cc" => {
                o.udpack_cc = match val().as_str() {
                    "bbr" => udpack::ControllerKind::Bbr,
                    "newreno" => udpack::ControllerKind::NewReno,
                    other => return Err(format!("unknown controller {other:?}").into()),
                }
            }
            "-h" | "--help" => usage(),
            _ => {
                eprintln!("unknown argument {a:?}");
                usage()
            }
        }
    }
    if o.streams.contains(&0) || o.size_mib == 0 {
        return Err("--streams and --size-mib must be positive".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------
// CPU time and memory

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn process_cpu() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

fn thread_cpu() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

/// Resident set size of this process, in bytes, after handing the allocator's free
/// memory back to the kernel (so memory freed by earlier runs does not count).
fn rss_bytes() -> u64 {
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}

/// Bytes of heap the allocator has handed out and not got back (all arenas, mmapped
/// chunks included).
fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let mi = unsafe { libc::mallinfo2() };
    (mi.uordblks + mi.hblkhd) as u64
}

// ---------------------------------------------------------------------------------------
// Throughput runs

/// What the server side needs, prepared before the clock starts.
enum Setup {
    Udpack(udpack::PrivateKey),
    Tcp,
    Quinn(quinn::ServerConfig),
}

struct Outcome {
    bytes: u64,
    wall: Duration,
    cpu: Duration,
    send_cpu: Duration,
    recv_cpu: Duration,
    /// The sender's view of the connection: losses, RTT.
    note: String,
}

impl Outcome {
    fn goodput_mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall.as_secs_f64()
    }

    fn cpu_per_gib(&self) -> f64 {
        self.cpu.as_secs_f64() / (self.bytes as f64 / GIB)
    }
}

fn runtime() -> Result<Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn quinn_setup(
    window_mib: u64,
    chacha: bool,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig)> {
    use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
    use rustls::pki_types::PrivatePkcs8KeyDer;

    let mut provider = rustls::crypto::ring::default_provider();
    if chacha {
        // The client offers ChaCha20-Poly1305 first and the server follows the client's
        // order; AES-128-GCM stays available for QUIC's Initial packets.
        provider
            .cipher_suites
            .sort_by_key(|cs| cs.suite() != rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    }
    let provider = Arc::new(provider);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let cert_der = cert.cert.der().clone();
    let key_der = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());

    let mut transport = quinn::TransportConfig::default();
    if window_mib > 0 {
        let w = window_mib << 20;
        transport.stream_receive_window(quinn::VarInt::from_u64(w)?);
        transport.receive_window(quinn::VarInt::from_u64(w.max(64 << 20))?);
        transport.send_window(w.max(64 << 20));
    }
    let transport = Arc::new(transport);

    let tls_server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der.into())?;
    let mut server =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls_server)?));
    server.transport_config(transport.clone());

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der)?;
    let tls_client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls_client)?));
    client.transport_config(transport);
    Ok((server, client))
}

/// The server's answer once bound: where to connect, and the udpack key to pin.
struct Bound {
    addr: SocketAddr,
    key: Option<udpack::PublicKey>,
}

fn run(kind: Kind, streams: usize, opts: &Opts) -> Result<Outcome> {
    let per_stream = (opts.size_mib << 20) / streams as u64;
    let transport = udpack::TransportConfig {
        congestion: opts.udpack_cc,
        ..Default::default()
    };
    let server_transport = transport.clone();
    let mut quinn_client_config = None;
    let server_setup = match kind {
        Kind::Udpack => Setup::Udpack(udpack::PrivateKey::generate()),
        Kind::Tcp => Setup::Tcp,
        Kind::Quinn => {
            let (server, client) = quinn_setup(opts.quinn_window_mib, opts.quinn_chacha)?;
            quinn_client_config = Some(client);
            Setup::Quinn(server)
        }
    };
    let (server_rt, client_rt) = (runtime()?, runtime()?);

    let cpu0 = process_cpu();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<Result<Bound>>();
    let server = std::thread::Builder::new()
        .name("bench-server".into())
        .spawn(move || -> Result<(u64, Instant, Duration)> {
            let (n, end) = server_rt.block_on(async move {
                match server_setup {
                    Setup::Udpack(key) => {
                        udpack_server(key, server_transport, streams, bound_tx).await
                    }
                    Setup::Tcp => tcp_server(streams, bound_tx).await,
                    Setup::Quinn(server) => quinn_server(server, streams, bound_tx).await,
                }
            })?;
            drop(server_rt);
            Ok((n, end, thread_cpu()))
        })?;
    let bound = bound_rx.recv()??;
    let start = Instant::now();
    let client = std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || -> Result<(Duration, String)> {
            let note = client_rt.block_on(async move {
                match kind {
                    Kind::Udpack => udpack_client(bound, transport, streams, per_stream).await,
                    Kind::Tcp => tcp_client(bound, streams, per_stream).await,
                    Kind::Quinn => {
                        let config = quinn_client_config.ok_or("no quinn client config")?;
                        quinn_client(config, bound, streams, per_stream).await
                    }
                }
            })?;
            drop(client_rt);
            Ok((thread_cpu(), note))
        })?;
    let (send_cpu, note) = client.join().map_err(|_| "client thread panicked")??;
    let (bytes, end, recv_cpu) = server.join().map_err(|_| "server thread panicked")??;
    let cpu = process_cpu() - cpu0;
    let expected = per_stream * streams as u64;
    if bytes != expected {
        return Err(format!("received {bytes} bytes, expected {expected}").into());
    }
    Ok(Outcome {
        bytes,
        wall: end.duration_since(start),
        cpu,
        send_cpu,
        recv_cpu,
        note,
    })
}

/// Runs each stream's future as a task; returns the sum of their results.
async fn join_all(tasks: Vec<tokio::task::JoinHandle<Result<u64>>>) -> Result<u64> {
    let mut n = 0;
    for t in tasks {
        n += t.await??;
    }
    Ok(n)
}

async fn write_stream<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, len: u64) -> Result<u64> {
    let buf = pattern_buf();
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(CHUNK as u64) as usize;
        w.write_all(&buf[..n]).await?;
        off += n as u64;
    }
    Ok(off)
}

// udpack --------------------------------------------------------------------------------

async fn udpack_server(
    key: udpack::PrivateKey,
    transport: udpack::TransportConfig,
    streams: usize,
    bound: std::sync::mpsc::Sender<Result<Bound>>,
) -> Result<(u64, Instant)> {
    let public = key.public_key();
    let config = udpack::ServerConfig::new(key)
        .auth(|t| t == TOKEN.as_bytes())
        .transport(transport);
    let endpoint = udpack::Endpoint::server(config).bind("127.0.0.1:0").await?;
    let _ = bound.send(Ok(Bound {
        addr: endpoint.local_addr(),
        key: Some(public),
    }));
    let session = endpoint.accept().await.ok_or("no session")?;
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut stream = session.accept_stream().await.ok_or("no stream")?;
        tasks.push(tokio::spawn(async move {
            let mut off = 0u64;
            while let Some(chunk) = stream.read_chunk(READ_MAX).await? {
                check(off, &chunk)?;
                off += chunk.len() as u64;
            }
            Ok(off)
        }));
    }
    let n = join_all(tasks).await?;
    let end = Instant::now();
    // Let the client see its data acknowledged and close first.
    tokio::time::timeout(Duration::from_secs(5), session.closed())
        .await
        .ok();
    Ok((n, end))
}

async fn udpack_client(
    bound: Bound,
    transport: udpack::TransportConfig,
    streams: usize,
    per_stream: u64,
) -> Result<String> {
    let config = udpack::ClientConfig::new(bound.key.ok_or("no key")?)
        .token(TOKEN)
        .transport(transport);
    let endpoint = udpack::Endpoint::client(config).bind("127.0.0.1:0").await?;
    let session = endpoint.connect(bound.addr).await?;
    // Once a millisecond, whether the congestion window is what holds the sender back:
    // samples are taken when this thread has nothing else to run. Counts: samples,
    // samples with the window full, sum of the windows.
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let sampler = {
        let (session, counts) = (session.clone(), counts.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            loop {
                tick.tick().await;
                let st = session.stats();
                if st.stream_bytes_sent > 0 {
                    counts[0].fetch_add(1, Ordering::Relaxed);
                    if st.bytes_in_flight + 1452 > st.congestion_window {
                        counts[1].fetch_add(1, Ordering::Relaxed);
                    }
                    counts[2].fetch_add(st.congestion_window, Ordering::Relaxed);
                }
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut stream = session.open_stream().await?;
        tasks.push(tokio::spawn(async move {
            let n = write_stream(&mut stream, per_stream).await?;
            stream.finished().await?;
            Ok(n)
        }));
    }
    join_all(tasks).await?;
    sampler.abort();
    let st = session.stats();
    let [samples, full, cwnd_sum] = [0, 1, 2].map(|i| counts[i].load(Ordering::Relaxed));
    session.close(0, "done");
    tokio::time::timeout(Duration::from_secs(5), session.closed())
        .await
        .ok();
    Ok(format!(
        "{} packets sent, {} lost ({:.3}%), {} MiB retransmitted, srtt {:?}, min rtt {:?}, \
         cwnd {} KiB at the end, {} KiB on average; window full in {:.0}% of {samples} idle samples",
        st.packets_sent,
        st.packets_lost,
        100.0 * st.packets_lost as f64 / st.packets_sent.max(1) as f64,
        st.bytes_retransmitted >> 20,
        st.smoothed_rtt,
        st.min_rtt,
        st.congestion_window >> 10,
        (cwnd_sum / samples.max(1)) >> 10,
        100.0 * full as f64 / samples.max(1) as f64,
    ))
}

// TCP -----------------------------------------------------------------------------------

async fn tcp_server(
    streams: usize,
    bound: std::sync::mpsc::Sender<Result<Bound>>,
) -> Result<(u64, Instant)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let _ = bound.send(Ok(Bound {
        addr: listener.local_addr()?,
        key: None,
    }));
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (mut conn, _) = listener.accept().await?;
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            let mut off = 0u64;
            loop {
                let n = conn.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                check(off, &buf[..n])?;
                off += n as u64;
            }
            Ok(off)
        }));
    }
    let n = join_all(tasks).await?;
    Ok((n, Instant::now()))
}

async fn tcp_client(bound: Bound, streams: usize, per_stream: u64) -> Result<String> {
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut conn = tokio::net::TcpStream::connect(bound.addr).await?;
        tasks.push(tokio::spawn(async move {
            let n = write_stream(&mut conn, per_stream).await?;
            conn.shutdown().await?;
            Ok(n)
        }));
    }
    join_all(tasks).await?;
    Ok(String::new())
}

// quinn ---------------------------------------------------------------------------------

async fn quinn_server(
    config: quinn::ServerConfig,
    streams: usize,
    bound: std::sync::mpsc::Sender<Result<Bound>>,
) -> Result<(u64, Instant)> {
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse()?)?;
    let _ = bound.send(Ok(Bound {
        addr: endpoint.local_addr()?,
        key: None,
    }));
    let conn = endpoint.accept().await.ok_or("no connection")?.await?;
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut recv = conn.accept_uni().await?;
        tasks.push(tokio::spawn(async move {
            let mut off = 0u64;
            while let Some(chunk) = recv.read_chunk(READ_MAX, true).await? {
                check(off, &chunk.bytes)?;
                off += chunk.bytes.len() as u64;
            }
            Ok(off)
        }));
    }
    let n = join_all(tasks).await?;
    let end = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .ok();
    Ok((n, end))
}

async fn quinn_client(
    config: quinn::ClientConfig,
    bound: Bound,
    streams: usize,
    per_stream: u64,
) -> Result<String> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(config);
    let conn = endpoint.connect(bound.addr, "localhost")?.await?;
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut send = conn.open_uni().await?;
        tasks.push(tokio::spawn(async move {
            let n = write_stream(&mut send, per_stream).await?;
            send.finish()?;
            // Resolves once the peer has read everything (or stopped the stream).
            send.stopped().await?;
            Ok(n)
        }));
    }
    join_all(tasks).await?;
    let st = conn.stats();
    conn.close(0u32.into(), b"done");
    tokio::time::timeout(Duration::from_secs(5), endpoint.wait_idle())
        .await
        .ok();
    Ok(format!(
        "{} packets sent, {} lost ({:.3}%), {} MiB lost, rtt {:?}, cwnd {} KiB",
        st.path.sent_packets,
        st.path.lost_packets,
        100.0 * st.path.lost_packets as f64 / st.path.sent_packets.max(1) as f64,
        st.path.lost_bytes >> 20,
        st.path.rtt,
        st.path.cwnd >> 10
    ))
}

// ---------------------------------------------------------------------------------------
// Idle sessions

/// The child: one udpack server endpoint that accepts and holds sessions, answering
/// `measure` on stdin with its counts and memory, until `quit` or end of input.
fn idle_server() -> Result<()> {
    let rt = runtime()?;
    rt.block_on(async {
        let key = udpack::PrivateKey::generate();
        let public = key.public_key();
        let config = udpack::ServerConfig::new(key).auth(|t| t == TOKEN.as_bytes());
        let endpoint = udpack::Endpoint::server(config).bind("127.0.0.1:0").await?;
        let sessions = Arc::new(std::sync::Mutex::new(Vec::new()));
        let accepter = {
            let (endpoint, sessions) = (endpoint.clone(), sessions.clone());
            tokio::spawn(async move {
                while let Some(s) = endpoint.accept().await {
                    sessions.lock().unwrap().push(s);
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
                        let s = sessions.lock().unwrap();
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
        Ok::<_, BoxError>(())
    })
}

struct ChildStat {
    held: usize,
    open: usize,
    rss: u64,
    heap: u64,
    /// The child's CPU time so far (user + system).
    cpu: Duration,
}

fn parse_stat(line: &str) -> Result<ChildStat> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 7 || f[0] != "stat" {
        return Err(format!("unexpected line from the idle server: {line:?}").into());
    }
    Ok(ChildStat {
        held: f[1].parse()?,
        open: f[2].parse()?,
        rss: f[4].parse()?,
        heap: f[5].parse()?,
        cpu: Duration::from_nanos(f[6].parse()?),
    })
}

fn idle_sessions(n: usize, hold: Duration) -> Result<()> {
    const CLIENT_ENDPOINTS: usize = 10;
    const IN_FLIGHT: usize = 500;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("--idle-server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut to_child = child.stdin.take().ok_or("no stdin")?;
    let mut from_child = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let mut next_line =
        move || -> Result<String> { Ok(from_child.next().ok_or("the idle server exited")??) };
    let first = next_line()?;
    let f: Vec<&str> = first.split_whitespace().collect();
    if f.len() != 3 || f[0] != "bound" {
        return Err(format!("unexpected line from the idle server: {first:?}").into());
    }
    let addr: SocketAddr = f[1].parse()?;
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(f[2].get(2 * i..2 * i + 2).ok_or("bad key")?, 16)?;
    }
    let key = udpack::PublicKey::from_bytes(key);
    let mut measure = |to_child: &mut std::process::ChildStdin| -> Result<ChildStat> {
        writeln!(to_child, "measure")?;
        to_child.flush()?;
        parse_stat(&next_line()?)
    };

    let before = measure(&mut to_child)?;
    // A worker thread of its own, so the client endpoints keep running while this
    // thread waits for the child's answers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let endpoints = rt.block_on(async {
        let config = udpack::ClientConfig::new(key).token(TOKEN);
        let mut endpoints = Vec::new();
        for _ in 0..CLIENT_ENDPOINTS {
            endpoints.push(
                udpack::Endpoint::client(config.clone())
                    .bind("127.0.0.1:0")
                    .await?,
            );
        }
        Ok::<_, BoxError>(endpoints)
    })?;
    let client_rss0 = rss_bytes();
    let client_heap0 = heap_in_use();
    let (sessions, connect_time) = rt.block_on(async {
        let t0 = Instant::now();
        let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let endpoint = endpoints[i % CLIENT_ENDPOINTS].clone();
            let permit = permits.clone().acquire_owned().await?;
            tasks.push(tokio::spawn(async move {
                let s = endpoint.connect(addr).await;
                drop(permit);
                s
            }));
        }
        let mut sessions = Vec::with_capacity(n);
        for t in tasks {
            sessions.push(t.await??);
        }
        Ok::<_, BoxError>((sessions, t0.elapsed()))
    })?;
    // Let the last handshakes settle on the server.
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(1)).await });
    let client_rss1 = rss_bytes();
    let client_heap1 = heap_in_use();
    let after = measure(&mut to_child)?;
    println!(
        "{n} sessions connected in {:.2} s ({:.0} handshakes/s)",
        connect_time.as_secs_f64(),
        n as f64 / connect_time.as_secs_f64()
    );
    // Hold them past the idle timeout: only keepalives keep them up.
    let client_cpu0 = process_cpu();
    let hold_start = Instant::now();
    rt.block_on(async { tokio::time::sleep(hold).await });
    let held = measure(&mut to_child)?;
    let hold_secs = hold_start.elapsed().as_secs_f64();
    let client_hold_cpu = (process_cpu() - client_cpu0).as_secs_f64();
    let client_open = sessions
        .iter()
        .filter(|s| s.close_reason().is_none())
        .count();
    writeln!(to_child, "quit")?;
    drop(to_child);
    child.wait()?;
    drop(sessions);
    drop(endpoints);
    drop(rt);

    let per = |a: u64, b: u64| (b as f64 - a as f64) / n as f64;
    println!();
    println!(
        "### Idle udpack sessions: {n} on one server endpoint (held {} s)",
        hold.as_secs()
    );
    println!();
    println!("| side | measured | before | after connect | after hold | per session (after connect) | per session (after hold) |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    println!(
        "| server (child process) | RSS | {} | {} | {} | {:.0} B | {:.0} B |",
        mib(before.rss),
        mib(after.rss),
        mib(held.rss),
        per(before.rss, after.rss),
        per(before.rss, held.rss)
    );
    println!(
        "| server (child process) | heap in use | {} | {} | {} | {:.0} B | {:.0} B |",
        mib(before.heap),
        mib(after.heap),
        mib(held.heap),
        per(before.heap, after.heap),
        per(before.heap, held.heap)
    );
    println!(
        "| clients ({CLIENT_ENDPOINTS} endpoints, this process) | RSS | {} | {} | | {:.0} B | |",
        mib(client_rss0),
        mib(client_rss1),
        per(client_rss0, client_rss1)
    );
    println!(
        "| clients ({CLIENT_ENDPOINTS} endpoints, this process) | heap in use | {} | {} | | {:.0} B | |",
        mib(client_heap0),
        mib(client_heap1),
        per(client_heap0, client_heap1)
    );
    println!();
    println!(
        "server sessions held/open: {}/{} after connect, {}/{} after the hold; client sessions open after the hold: {client_open}/{n}",
        after.held, after.open, held.held, held.open
    );
    let server_hold_cpu = (held.cpu - after.cpu).as_secs_f64();
    println!(
        "CPU while holding {n} idle sessions for {hold_secs:.1} s: server {server_hold_cpu:.2} s ({:.1}% of a core), clients {client_hold_cpu:.2} s ({:.1}% of a core)",
        100.0 * server_hold_cpu / hold_secs,
        100.0 * client_hold_cpu / hold_secs
    );
    if held.open != n || client_open != n {
        return Err("idle sessions did not all stay open".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--idle-server") {
        return idle_server();
    }
    let opts = parse_opts(&args)?;
    println!(
        "loopback 127.0.0.1, {} MiB per run, server and client each on a current-thread tokio runtime on its own thread, {} CPUs",
        opts.size_mib,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let quinn_window = if opts.quinn_window_mib == 0 {
        "quinn's default windows".to_string()
    } else {
        format!(
            "quinn: stream receive window {} MiB, connection receive and send windows {} MiB",
            opts.quinn_window_mib,
            opts.quinn_window_mib.max(64)
        )
    };
    let quinn_cipher = if opts.quinn_chacha {
        "ChaCha20-Poly1305"
    } else {
        "AES-128-GCM"
    };
    println!(
        "{quinn_window}, {quinn_cipher}; udpack: default transport config, congestion control {:?}",
        opts.udpack_cc
    );
    println!();

    struct Row {
        kind: Kind,
        streams: usize,
        o: Outcome,
    }
    let mut rows: Vec<Row> = Vec::new();
    println!("| transport | streams | MiB | wall s | MB/s | Mbit/s | CPU s | CPU s/GiB | sender CPU s | receiver CPU s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for _ in 0..opts.repeat {
        for &streams in &opts.streams {
            for &kind in &opts.kinds {
                let o = run(kind, streams, &opts)
                    .map_err(|e| format!("{} x{streams}: {e}", kind.name()))?;
                let secs = o.wall.as_secs_f64();
                println!(
                    "| {} | {streams} | {} | {:.2} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    kind.name(),
                    o.bytes >> 20,
                    secs,
                    o.goodput_mb_s(),
                    o.goodput_mb_s() * 8.0,
                    o.cpu.as_secs_f64(),
                    o.cpu_per_gib(),
                    o.send_cpu.as_secs_f64(),
                    o.recv_cpu.as_secs_f64(),
                );
                rows.push(Row { kind, streams, o });
            }
        }
    }
    println!();
    for r in &rows {
        if !r.o.note.is_empty() {
            println!("- {} x{}: {}", r.kind.name(), r.streams, r.o.note);
        }
    }

    // Ratios of udpack to each other transport, from the medians over the repeats
    // (on a shared machine the median resists a run disturbed by other load).
    let median = |kind: Kind, streams: usize| -> Option<(f64, f64)> {
        let rs: Vec<&Row> = rows
            .iter()
            .filter(|r| r.kind == kind && r.streams == streams)
            .collect();
        if rs.is_empty() {
            return None;
        }
        let mid = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            let n = v.len();
            if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            }
        };
        let goodput = mid(rs.iter().map(|r| r.o.goodput_mb_s()).collect());
        let cpu = mid(rs.iter().map(|r| r.o.cpu_per_gib()).collect());
        Some((goodput, cpu))
    };
    let mut ratio_rows = Vec::new();
    for &streams in &opts.streams {
        let Some((u_goodput, u_cpu)) = median(Kind::Udpack, streams) else {
            continue;
        };
        for other in [Kind::Tcp, Kind::Quinn] {
            if let Some((g, c)) = median(other, streams) {
                ratio_rows.push(format!(
                    "| udpack / {} | {streams} | {:.2} | {:.2} |",
                    other.name(),
                    u_goodput / g,
                    u_cpu / c
                ));
            }
        }
    }
    if !ratio_rows.is_empty() {
        println!();
        println!("| ratio (medians) | streams | goodput | CPU per GiB |");
        println!("|---|---:|---:|---:|");
        for r in ratio_rows {
            println!("{r}");
        }
    }

    if opts.idle_sessions > 0 {
        println!();
        idle_sessions(opts.idle_sessions, opts.idle_hold)?;
    }
    Ok(())
}
