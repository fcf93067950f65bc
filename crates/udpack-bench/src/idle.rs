//! The memory and CPU that idle udpack sessions cost a server. A child process (this
//! binary, `idle-server`) runs one server endpoint; this process opens the sessions
//! from [`CLIENT_ENDPOINTS`] client endpoints, holds them open past the idle timeout,
//! and asks the child for its RSS and heap in use before and after.

use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};
use crate::idle_server::{self, ChildStat};
use crate::measure::{heap_in_use, process_cpu, rss_bytes};
use crate::TOKEN;

const CLIENT_ENDPOINTS: usize = 10;
/// Handshakes in flight at once.
const IN_FLIGHT: usize = 500;

/// The benchmark's end of the child's pipes.
struct Child {
    to: ChildStdin,
    from: Lines<BufReader<ChildStdout>>,
}

impl Child {
    fn next_line(&mut self) -> Result<String> {
        Ok(self.from.next().ok_or(BenchError::IdleServerExited)??)
    }

    fn measure(&mut self) -> Result<ChildStat> {
        writeln!(self.to, "measure")?;
        self.to.flush()?;
        idle_server::parse_stat(&self.next_line()?)
    }
}

/// The client side's figures, from this process.
struct ClientFigures {
    rss0: u64,
    rss1: u64,
    heap0: u64,
    heap1: u64,
    /// CPU time of this process while the sessions were held, in seconds.
    hold_cpu: f64,
    /// Sessions still open on this side after the hold.
    open: usize,
}

/// Opens `n` sessions, holds them for `hold` and prints the table.
pub fn run(n: usize, hold: Duration) -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut process = Command::new(exe)
        .arg(idle_server::SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let to = process.stdin.take().ok_or(BenchError::ChildPipe("stdin"))?;
    let from = process
        .stdout
        .take()
        .ok_or(BenchError::ChildPipe("stdout"))?;
    let mut child = Child {
        to,
        from: BufReader::new(from).lines(),
    };
    let (addr, key) = idle_server::parse_bound(&child.next_line()?)?;

    let before = child.measure()?;
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
        Ok::<_, BenchError>(endpoints)
    })?;
    let rss0 = rss_bytes();
    let heap0 = heap_in_use();
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
        Ok::<_, BenchError>((sessions, t0.elapsed()))
    })?;
    // Let the last handshakes settle on the server.
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(1)).await });
    let rss1 = rss_bytes();
    let heap1 = heap_in_use();
    let after = child.measure()?;
    println!(
        "{n} sessions connected in {:.2} s ({:.0} handshakes/s)",
        connect_time.as_secs_f64(),
        n as f64 / connect_time.as_secs_f64()
    );
    // Hold them past the idle timeout: only keepalives keep them up.
    let client_cpu0 = process_cpu();
    let hold_start = Instant::now();
    rt.block_on(async { tokio::time::sleep(hold).await });
    let held = child.measure()?;
    let hold_secs = hold_start.elapsed().as_secs_f64();
    let hold_cpu = (process_cpu() - client_cpu0).as_secs_f64();
    let open = sessions
        .iter()
        .filter(|s| s.close_reason().is_none())
        .count();
    writeln!(child.to, "quit")?;
    drop(child);
    process.wait()?;
    drop(sessions);
    drop(endpoints);
    drop(rt);

    let clients = ClientFigures {
        rss0,
        rss1,
        heap0,
        heap1,
        hold_cpu,
        open,
    };
    report(n, hold, hold_secs, [&before, &after, &held], &clients);
    if held.open != n || clients.open != n {
        return Err(BenchError::IdleSessionsClosed);
    }
    Ok(())
}

/// Prints the table and the summary lines; `server` is the child's figures before,
/// after connecting and after the hold.
fn report(
    n: usize,
    hold: Duration,
    hold_secs: f64,
    server: [&ChildStat; 3],
    clients: &ClientFigures,
) {
    let [before, after, held] = server;
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
        mib(clients.rss0),
        mib(clients.rss1),
        per(clients.rss0, clients.rss1)
    );
    println!(
        "| clients ({CLIENT_ENDPOINTS} endpoints, this process) | heap in use | {} | {} | | {:.0} B | |",
        mib(clients.heap0),
        mib(clients.heap1),
        per(clients.heap0, clients.heap1)
    );
    println!();
    println!(
        "server sessions held/open: {}/{} after connect, {}/{} after the hold; client sessions open after the hold: {}/{n}",
        after.held, after.open, held.held, held.open, clients.open
    );
    let server_hold_cpu = (held.cpu - after.cpu).as_secs_f64();
    println!(
        "CPU while holding {n} idle sessions for {hold_secs:.1} s: server {server_hold_cpu:.2} s ({:.1}% of a core), clients {:.2} s ({:.1}% of a core)",
        100.0 * server_hold_cpu / hold_secs,
        clients.hold_cpu,
        100.0 * clients.hold_cpu / hold_secs
    );
}
