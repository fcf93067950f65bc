//! The link lab (`lab`): udpack, kernel TCP (BBR, Cubic) and quinn (BBR, Cubic) through
//! the same emulated link, as root.
//!
//! Two network namespaces, A (clients) and B (servers), each hold one TUN device; the
//! wire, two threads of this process, moves every IP packet between the devices
//! through a model of each direction (delay, jitter, random and bursty loss before or
//! after a rate-limited drop-tail bottleneck, duplication). Each flow's ends are child
//! processes of this binary (`lab-peer`) started inside the namespaces. The wire is
//! restarted for every test, so each test's counts are its own.

mod conn;
mod link;
mod netns;
pub mod peer;
mod plan;
mod plot;
mod report;
mod runner;
pub mod small_files;
mod tun;
mod wire;

use std::path::PathBuf;

pub use plan::LabArgs;

use crate::error::Result;
use report::Record;
use runner::{Runner, Timing};
use wire::Wire;

/// Runs the lab; without root it says so in one line and runs nothing.
pub fn run(args: &LabArgs) -> Result<()> {
    if !netns::is_root() {
        println!("lab: skipped, it needs root (network namespaces and TUN devices)");
        return Ok(());
    }
    netns::teardown_on_signal()?;
    let mut scenarios = args.plan();
    let tcp_bbr = netns::tcp_bbr_available();
    if !tcp_bbr {
        println!("lab: the kernel has no TCP BBR (tcp_bbr); kernel TCP runs with Cubic only");
        for sc in &mut scenarios {
            sc.tests.retain(|&t| t != plan::Test::TcpBbr);
        }
    }
    let out = args
        .out
        .clone()
        .or_else(|| args.grid.then(|| PathBuf::from("lab-out")));
    if let Some(dir) = &out {
        std::fs::create_dir_all(dir)?;
    }
    let net = netns::Netns::create()?;
    let exe = std::env::current_exe()?;
    let runner = Runner {
        net: &net,
        exe: &exe,
        tcp_bbr,
    };
    println!(
        "link lab: namespaces {} ({}) and {} ({}), TUN devices, MTU 1500; {} s per run after the warm-up",
        netns::NS[0],
        netns::ADDR[0],
        netns::NS[1],
        netns::ADDR[1],
        args.duration
    );
    println!();
    report::print_header();
    let mut records = Vec::new();
    for sc in &scenarios {
        let timing = Timing {
            warmup: sc.warmup,
            window: args.window(),
            latency_rate: args.latency_rate,
            trace_ms: args.trace_ms,
        };
        for &test in &sc.tests {
            let link = if test == plan::Test::WireMax {
                plan::Link::unlimited()
            } else {
                sc.link.clone()
            };
            let wire = Wire::start(net.tun_fds(), link.dirs.clone(), args.seed)?;
            let flows = runner.run(test, &timing);
            let record = Record {
                test,
                link,
                warmup_s: timing.warmup.as_secs_f64(),
                window_s: timing.window.as_secs_f64(),
                flows,
                wire: wire.stop()?,
            };
            report::print_record(&record);
            records.push(record);
        }
    }
    drop(net);
    if netns::any_exists() {
        eprintln!("lab: the namespaces are still there after the teardown");
    }
    report::print_summary(&records);
    if let Some(dir) = &out {
        let json = dir.join("results.json");
        report::write_json(&json, &records)?;
        println!();
        println!("results: {}", json.display());
        match plot::goodput_vs_loss(&records, dir) {
            Ok(files) => files.iter().for_each(|f| println!("plot: {}", f.display())),
            Err(e) => println!("plots skipped: {e}"),
        }
    }
    Ok(())
}
