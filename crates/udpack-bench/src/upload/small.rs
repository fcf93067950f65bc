//! `upload --lab`: `--files` files of `--file-size` against one file of the same total
//! size, both uploaded by the `udpack` binary through the link lab, interleaved
//! `--runs` times; goodput is the total over `udpack send`'s own `elapsed`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{files, Measured, Udpack, UploadArgs};
use crate::error::{BenchError, Result};
use crate::lab::small_files::{Case, LinkSpec, SmallFilesLab};
use crate::loopback::median;
use crate::upload::udpack_send::Keys;

#[derive(Serialize)]
struct Run {
    round: u64,
    case: &'static str,
    files: usize,
    #[serde(flatten)]
    m: Measured,
    mbit_s: f64,
    /// Packets the wire dropped in this upload (queue overflow).
    wire_drops: u64,
}

pub fn run(args: &UploadArgs, udpack: &Udpack, keys: &Keys, work: &Path) -> Result<()> {
    let Udpack::Binary(bin) = udpack else {
        return Err(BenchError::LabNeedsBinary);
    };
    let many_dir = work.join("sent-small");
    let names = files::make_files(&many_dir, args.files, args.file_size)?;
    let many: Vec<PathBuf> = names.iter().map(|n| many_dir.join(n)).collect();
    let total = args.file_size * args.files as u64;
    let one_dir = work.join("sent-one");
    std::fs::create_dir_all(&one_dir)?;
    let one_name = vec!["one.bin".to_string()];
    files::make_file(&one_dir.join(&one_name[0]), total, 0x0e)?;
    let one = vec![one_dir.join(&one_name[0])];
    let link = LinkSpec {
        rate_mbit: args.rate_mbit,
        rtt_ms: args.rtt,
    };
    let Some(lab) = SmallFilesLab::create(link)? else {
        return Err(BenchError::NeedsRoot);
    };
    let out = work.join("received-lab");
    let cases: [(&'static str, &[PathBuf], &Path, &[String]); 2] = [
        ("small files", &many, &many_dir, &names),
        ("one file", &one, &one_dir, &one_name),
    ];
    if !args.json {
        println!(
            "upload through the link lab: {} Mbit/s each way, {} ms RTT, no loss, queue of one RTT; \
             {} files of {} KiB against one file of {} bytes; udpack send and serve: {}",
            args.rate_mbit,
            args.rtt,
            args.files,
            args.file_size >> 10,
            total,
            bin.display()
        );
        println!();
        println!(
            "| round | case | files | s | Mbit/s | sender CPU s | receiver CPU s | wire drops |"
        );
        println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    }
    let mut runs = Vec::new();
    for round in 1..=args.runs {
        for (case, paths, sent, names) in cases {
            let (m, wire_drops) = lab.upload(bin, keys, &Case { paths, out: &out })?;
            files::verify(sent, &out, names)?;
            let r = Run {
                round,
                case,
                files: paths.len(),
                mbit_s: m.mbit_s(),
                m,
                wire_drops,
            };
            if !args.json {
                let cpu = |c: Option<std::time::Duration>| c.map_or(0.0, |c| c.as_secs_f64());
                println!(
                    "| {round} | {case} | {} | {:.3} | {:.1} | {:.2} | {:.2} | {} |",
                    r.files,
                    r.m.secs,
                    r.mbit_s,
                    cpu(r.m.send_cpu),
                    cpu(r.m.recv_cpu),
                    r.wire_drops
                );
            }
            runs.push(r);
        }
    }
    drop(lab);
    let med = |case: &str| {
        median(
            runs.iter()
                .filter(|r| r.case == case)
                .map(|r| r.mbit_s)
                .collect(),
        )
        .unwrap_or(0.0)
    };
    let (small, whole) = (med("small files"), med("one file"));
    let ratio = small / whole.max(1e-9);
    if args.json {
        let doc = serde_json::json!({
            "link": link,
            "files": args.files,
            "file_size": args.file_size,
            "runs": runs,
            "median_mbit_s": { "small_files": small, "one_file": whole },
            "ratio": ratio,
            "goal": 0.5,
            "met": ratio >= 0.5,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!();
        println!(
            "medians: small files {small:.1} Mbit/s, one file {whole:.1} Mbit/s; ratio {ratio:.2} (goal ≥ 0.5: {})",
            if ratio >= 0.5 { "met" } else { "not met" }
        );
    }
    Ok(())
}
