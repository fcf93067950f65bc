//! The loopback upload's tables (a row per upload as it ends, then the medians and the
//! ratios the goals name) and its JSON document.

use serde::Serialize;

use super::{Measured, Upload};
use crate::error::Result;
use crate::loopback::median;

/// What the run was.
#[derive(Serialize)]
pub struct Header {
    pub size: u64,
    pub runs: u64,
    /// How `udpack send` ran.
    pub udpack: String,
    pub cpus: usize,
}

#[derive(Serialize)]
pub struct Row {
    pub round: u64,
    pub upload: Upload,
    #[serde(flatten)]
    pub m: Measured,
}

/// The median of each upload over the rounds.
#[derive(Serialize)]
pub struct Median {
    pub upload: Upload,
    pub mb_s: f64,
    /// CPU seconds per GiB, both ends and this process's share.
    pub cpu_s_per_gib: f64,
    pub send_cpu_s_per_gib: Option<f64>,
    pub recv_cpu_s_per_gib: Option<f64>,
}

/// A ratio of medians of MB/s, with its goal.
#[derive(Serialize)]
pub struct Ratio {
    pub name: String,
    pub value: f64,
    pub goal: f64,
    pub met: bool,
}

#[derive(Serialize)]
pub struct Summary {
    pub medians: Vec<Median>,
    pub ratios: Vec<Ratio>,
}

/// `udpack send` against each of the others, with the goals.
const GOALS: [(Upload, f64); 3] = [(Upload::Quinn, 1.0), (Upload::Raw, 0.9), (Upload::Tcp, 0.5)];

pub fn summarise(rows: &[Row]) -> Summary {
    let medians: Vec<Median> = Upload::ALL
        .iter()
        .filter_map(|&u| {
            let of: Vec<&Measured> = rows
                .iter()
                .filter(|r| r.upload == u)
                .map(|r| &r.m)
                .collect();
            let per = |f: &dyn Fn(&Measured) -> Option<f64>| -> Option<f64> {
                median(of.iter().filter_map(|m| f(m)).collect())
            };
            Some(Median {
                upload: u,
                mb_s: per(&|m| Some(m.mb_s()))?,
                cpu_s_per_gib: per(&|m| Some(m.per_gib(m.cpu)))?,
                send_cpu_s_per_gib: per(&|m| m.send_cpu.map(|c| m.per_gib(c))),
                recv_cpu_s_per_gib: per(&|m| m.recv_cpu.map(|c| m.per_gib(c))),
            })
        })
        .collect();
    let mb_s = |u: Upload| medians.iter().find(|m| m.upload == u).map(|m| m.mb_s);
    let ratios = GOALS
        .iter()
        .filter_map(|&(other, goal)| {
            let value = mb_s(Upload::UdpackSend)? / mb_s(other)?;
            Some(Ratio {
                name: format!("{} / {}", Upload::UdpackSend.name(), other.name()),
                value,
                goal,
                met: value >= goal,
            })
        })
        .collect();
    Summary { medians, ratios }
}

pub fn print_header(h: &Header) {
    println!(
        "upload on loopback 127.0.0.1: one file of {} MiB ({} bytes), {} interleaved round(s), {} CPUs; udpack send through {}",
        h.size >> 20,
        h.size,
        h.runs,
        h.cpus,
        h.udpack
    );
    println!(
        "time: the sender's clock, from before it connects to the receiver's word that the file is on disk (fsynced); \
         udpack send: BLAKE3 checked by the server; TCP and quinn: no hashing; raw stream: memory to memory, no file"
    );
    println!();
    println!("| round | upload | MB/s | s | processes' wall s | sender CPU s/GiB | receiver CPU s/GiB | CPU s/GiB |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

pub fn print_row(round: u64, upload: Upload, m: &Measured) {
    println!(
        "| {round} | {} | {:.0} | {:.3} | {} | {} | {} | {:.2} |",
        upload.name(),
        m.mb_s(),
        m.secs,
        opt(m.wall.map(|w| w.as_secs_f64()), 3),
        opt(m.send_cpu.map(|c| m.per_gib(c)), 2),
        opt(m.recv_cpu.map(|c| m.per_gib(c)), 2),
        m.per_gib(m.cpu),
    );
}

pub fn print_summary(s: &Summary) {
    println!();
    println!("| upload (medians) | MB/s | sender CPU s/GiB | receiver CPU s/GiB | CPU s/GiB |");
    println!("|---|---:|---:|---:|---:|");
    for m in &s.medians {
        println!(
            "| {} | {:.0} | {} | {} | {:.2} |",
            m.upload.name(),
            m.mb_s,
            opt(m.send_cpu_s_per_gib, 2),
            opt(m.recv_cpu_s_per_gib, 2),
            m.cpu_s_per_gib
        );
    }
    println!();
    println!("| ratio of median MB/s | value | goal | met |");
    println!("|---|---:|---:|---|");
    for r in &s.ratios {
        let met = if r.met { "yes" } else { "no" };
        println!("| {} | {:.2} | ≥ {:.1} | {met} |", r.name, r.value, r.goal);
    }
}

pub fn print_json(h: &Header, rows: &[Row], s: &Summary) -> Result<()> {
    #[derive(Serialize)]
    struct Doc<'a> {
        header: &'a Header,
        rows: &'a [Row],
        #[serde(flatten)]
        summary: &'a Summary,
    }
    let doc = Doc {
        header: h,
        rows,
        summary: s,
    };
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn m(bytes: u64, secs: f64) -> Measured {
        Measured {
            bytes,
            secs,
            send_cpu: Some(Duration::from_secs(1)),
            recv_cpu: None,
            wall: None,
            cpu: Duration::from_secs(2),
        }
    }

    #[test]
    fn ratios_are_of_medians_and_say_whether_the_goal_is_met() {
        let mut rows = Vec::new();
        for (round, secs) in [(1, 1.0), (2, 4.0), (3, 2.0)] {
            for (upload, factor) in [
                (Upload::UdpackSend, 1.0),
                (Upload::Tcp, 0.5),
                (Upload::Quinn, 2.0),
                (Upload::Raw, 1.0),
            ] {
                rows.push(Row {
                    round,
                    upload,
                    m: m(1 << 30, secs * factor),
                });
            }
        }
        let s = summarise(&rows);
        let udpack = &s.medians[0];
        // The median time is 2 s for 1 GiB.
        assert!((udpack.mb_s - (1u64 << 30) as f64 / 1e6 / 2.0).abs() < 1e-6);
        assert_eq!(udpack.cpu_s_per_gib, 2.0);
        assert_eq!(udpack.recv_cpu_s_per_gib, None);
        let value = |name: &str| {
            let r = s.ratios.iter().find(|r| r.name.ends_with(name)).unwrap();
            (r.value, r.met)
        };
        assert_eq!(value("quinn upload"), (2.0, true));
        assert_eq!(value("raw stream"), (1.0, true));
        assert_eq!(value("TCP upload"), (0.5, true));
        let mut slow = rows;
        slow.retain(|r| r.upload != Upload::Tcp);
        assert_eq!(summarise(&slow).ratios.len(), 2);
    }
}
