//! The lab's results: one record per test, printed as a Markdown row when it ends,
//! a summary table of the bulk goodputs at the end, and all records as one JSON file.

use std::path::Path;

use serde::Serialize;

use super::plan::{Link, Test};
use super::runner::Flow;
use super::wire::DirReport;
use crate::error::Result;

/// One test through one link.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub test: Test,
    pub link: Link,
    pub warmup_s: f64,
    pub window_s: f64,
    pub flows: Vec<Flow>,
    /// The wire's counts: A to B (client to server), then B to A.
    pub wire: [DirReport; 2],
}

/// The JSON file's contents.
#[derive(Serialize)]
struct Results<'a> {
    machine: Machine,
    records: &'a [Record],
}

#[derive(Serialize)]
struct Machine {
    cpus: usize,
    kernel: String,
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn print_header() {
    println!(
        "| test | RTT ms | loss % | rate Mbit/s | jitter ms | flow | goodput Mbit/s | RTT p50 / p99 / max ms | wire A→B lost / queue drops | wire CPU s | wire late mean / max µs |"
    );
    println!("|---|---:|---:|---:|---:|---|---:|---|---:|---:|---|");
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(String::new, |v| format!("{v:.digits$}"))
}

/// Prints one row per flow of the record.
pub fn print_record(r: &Record) {
    let l = &r.link;
    let rate = if l.rate_mbit == 0.0 {
        "unlimited".to_string()
    } else {
        format!("{}", l.rate_mbit)
    };
    let mark = if l.extra { " *" } else { "" };
    let wire_cpu = r.wire[0].cpu_s + r.wire[1].cpu_s;
    let ab = &r.wire[0].stats;
    let late_mean = (r.wire[0].late_mean_us + r.wire[1].late_mean_us) / 2.0;
    let late_max = r.wire[0].late_max_us.max(r.wire[1].late_max_us);
    for f in &r.flows {
        let latency = f.latency.map_or_else(String::new, |l| {
            format!("{:.1} / {:.1} / {:.1}", l.p50_ms, l.p99_ms, l.max_ms)
        });
        let goodput = match &f.error {
            Some(e) => format!("failed: {e}"),
            None => opt(f.goodput_mbit, 1),
        };
        println!(
            "| {}{mark} | {} | {} | {rate} | {} | {} | {goodput} | {latency} | {} / {} | {wire_cpu:.2} | {late_mean:.0} / {late_max:.0} |",
            r.test.name(),
            l.rtt_ms,
            l.loss_pct,
            l.jitter_ms,
            f.proto.name(),
            ab.lost,
            ab.queue_drops,
        );
    }
}

/// Bulk goodput of `test` at `rtt`, `loss` and `jitter` (plain links only).
pub fn bulk_goodput(
    records: &[Record],
    test: Test,
    rtt: f64,
    loss: f64,
    jitter: f64,
) -> Option<f64> {
    records
        .iter()
        .find(|r| {
            r.test == test
                && !r.link.extra
                && r.link.rtt_ms == rtt
                && r.link.loss_pct == loss
                && r.link.jitter_ms == jitter
        })
        .and_then(|r| r.flows.first())
        .and_then(|f| f.goodput_mbit)
}

/// The bulk goodputs side by side: one row per link, one column per protocol.
pub fn print_summary(records: &[Record]) {
    let mut links: Vec<(f64, f64, f64)> = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.test.proto().is_some() && !r.link.extra)
    {
        let key = (r.link.rtt_ms, r.link.loss_pct, r.link.jitter_ms);
        if !links.contains(&key) {
            links.push(key);
        }
    }
    if links.is_empty() {
        return;
    }
    println!();
    println!("Bulk goodput, Mbit/s:");
    println!();
    let names: Vec<&str> = Test::BULK.iter().map(|t| t.name()).collect();
    println!("| RTT ms | loss % | jitter ms | {} |", names.join(" | "));
    println!("|---:|---:|---:|{}", "---:|".repeat(names.len()));
    for (rtt, loss, jitter) in links {
        let cells: Vec<String> = Test::BULK
            .iter()
            .map(|&t| opt(bulk_goodput(records, t, rtt, loss, jitter), 1))
            .collect();
        println!("| {rtt} | {loss} | {jitter} | {} |", cells.join(" | "));
    }
}

/// Writes every record, with the machine's CPU count and kernel, to `path`.
pub fn write_json(path: &Path, records: &[Record]) -> Result<()> {
    let results = Results {
        machine: Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: kernel(),
        },
        records,
    };
    std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
    Ok(())
}
