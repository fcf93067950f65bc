//! The upload benchmark end to end at a small size: every upload's received file is
//! the one sent, and every figure is positive. No timing is asserted.

use std::path::Path;
use std::process::Command;

fn same(a: &Path, b: &Path) -> bool {
    std::fs::read(a).expect("sent file") == std::fs::read(b).expect("received file")
}

#[test]
fn every_upload_delivers_the_file_and_reports_positive_figures() {
    let dir = tempfile::tempdir().expect("temp dir");
    // udpack send through the library: `cargo test` builds this crate's binary, not
    // the `udpack` one (the binaries are what the release runs use).
    let run = Command::new(env!("CARGO_BIN_EXE_udpack-bench"))
        .args([
            "upload",
            "--size",
            "8M",
            "--runs",
            "1",
            "--json",
            "--in-process",
        ])
        .arg("--keep")
        .arg(dir.path())
        .output()
        .expect("the bench binary runs");
    assert!(
        run.status.success(),
        "upload failed: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&run.stdout).expect("one JSON document");

    let sent = dir.path().join("sent/upload.bin");
    assert_eq!(std::fs::metadata(&sent).expect("sent file").len(), 8 << 20);
    for received in ["received-udpack", "received-tcp", "received-quinn"] {
        let got = dir.path().join(received).join("upload.bin");
        assert!(same(&sent, &got), "{} differs", got.display());
    }

    let rows = doc["rows"].as_array().expect("rows");
    let uploads: Vec<&str> = rows.iter().map(|r| r["upload"].as_str().unwrap()).collect();
    assert_eq!(uploads, ["udpack-send", "tcp", "quinn", "raw"]);
    for r in rows {
        assert_eq!(r["bytes"].as_u64(), Some(8 << 20), "{r}");
        assert!(r["secs"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["cpu"].as_f64().unwrap() > 0.0, "{r}");
    }
    // The baselines run as child processes: each end's CPU is its own.
    for r in &rows[1..] {
        assert!(r["send_cpu"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["recv_cpu"].as_f64().unwrap() > 0.0, "{r}");
    }
    let medians = doc["medians"].as_array().expect("medians");
    assert_eq!(medians.len(), 4);
    assert!(medians.iter().all(|m| m["mb_s"].as_f64().unwrap() > 0.0));
    let ratios = doc["ratios"].as_array().expect("ratios");
    assert_eq!(ratios.len(), 3);
    for r in ratios {
        assert!(r["value"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["met"].is_boolean(), "{r}");
    }
}

#[test]
fn a_missing_udpack_binary_is_named() {
    let run = Command::new(env!("CARGO_BIN_EXE_udpack-bench"))
        .args([
            "upload",
            "--size",
            "1M",
            "--udpack-bin",
            "/nonexistent/udpack",
        ])
        .output()
        .expect("the bench binary runs");
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("/nonexistent/udpack"), "{err}");
}
