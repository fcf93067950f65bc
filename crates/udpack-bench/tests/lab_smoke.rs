//! The link lab end to end, as root: a 20 ms RTT, 1% loss (each way), 50 Mbit/s link,
//! every bulk protocol for 2 s after a 1 s warm-up. Each must move a non-trivial
//! goodput, the run must take well under a minute, the udpack sender must trace its
//! session (`--trace-ms`), and the namespaces must be gone afterwards. Without root it says why and passes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// BBR-based flows and udpack keep close to the rate at 1% loss.
const MIN_MBIT: f64 = 5.0;
/// Loss-based Cubic is held near the Mathis bound (MSS / RTT × 1.22 / √p, about 7
/// Mbit/s here, and less with losses of ACKs and of retransmissions): it only has to
/// move data.
const MIN_MBIT_CUBIC: f64 = 1.0;

#[test]
fn every_protocol_moves_data_through_a_lossy_link() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "lab_smoke: skipped, the link lab needs root (network namespaces and TUN devices)"
        );
        return;
    }
    let out = std::env::temp_dir().join(format!("udpack-lab-smoke-{}", std::process::id()));
    let start = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_udpack-bench"))
        .args(["lab", "--rtt", "20", "--loss", "1", "--rate-mbit", "50"])
        .args([
            "--duration",
            "2",
            "--warmup",
            "1",
            "--trace-ms",
            "500",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("the bench binary runs");
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "lab failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    // The udpack sender traced its session: phase, window and rates twice a second.
    let stderr = String::from_utf8_lossy(&run.stderr);
    let traces: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("trace udpack"))
        .collect();
    assert!(traces.len() >= 4, "{stderr}");
    assert!(
        traces
            .iter()
            .any(|l| l.contains(" probe-bw-") && l.contains(" cwnd ")),
        "{stderr}"
    );
    for ns in ["udpl_a", "udpl_b"] {
        assert!(
            !Path::new("/run/netns").join(ns).exists(),
            "{ns} left behind"
        );
    }

    let json = std::fs::read(out.join("results.json")).expect("results.json");
    let results: serde_json::Value = serde_json::from_slice(&json).expect("valid JSON");
    let records = results["records"].as_array().expect("records");
    let mut seen = Vec::new();
    for r in records {
        for f in r["flows"].as_array().expect("flows") {
            let proto = f["proto"].as_str().expect("proto").to_string();
            let goodput = f["goodput_mbit"].as_f64().unwrap_or(0.0);
            let min = if proto.ends_with("cubic") {
                MIN_MBIT_CUBIC
            } else {
                MIN_MBIT
            };
            assert!(goodput > min, "{proto}: {goodput} Mbit/s ({f})");
            seen.push(proto);
        }
    }
    seen.sort();
    // Without TCP BBR in the kernel the lab runs kernel TCP with Cubic only.
    let bbr = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .is_ok_and(|s| s.split_whitespace().any(|cc| cc == "bbr"));
    let mut expected = vec!["quinn-bbr", "quinn-cubic", "tcp-bbr", "tcp-cubic", "udpack"];
    expected.retain(|p| bbr || *p != "tcp-bbr");
    assert_eq!(seen, expected);
    let _ = std::fs::remove_dir_all(&out);
}
