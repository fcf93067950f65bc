//! The loopback comparison: every transport at every stream count, as a Markdown table
//! with the senders' notes and the ratios of udpack to the others.

use crate::error::Result;
use crate::throughput::{self, Kind, Outcome, RunConfig};

/// Which runs to make.
pub struct Plan {
    pub kinds: Vec<Kind>,
    pub streams: Vec<usize>,
    pub repeat: usize,
}

struct Row {
    kind: Kind,
    streams: usize,
    o: Outcome,
}

/// Runs the plan and prints the header, the table (a row as each run ends), the notes
/// and the ratios.
pub fn run(plan: &Plan, config: &RunConfig) -> Result<()> {
    print_header(config);
    let mut rows: Vec<Row> = Vec::new();
    println!("| transport | streams | MiB | wall s | MB/s | Mbit/s | CPU s | CPU s/GiB | sender CPU s | receiver CPU s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for _ in 0..plan.repeat {
        for &streams in &plan.streams {
            for &kind in &plan.kinds {
                let o = throughput::run(kind, streams, config)
                    .map_err(|e| e.in_run(kind.name(), streams))?;
                print_row(kind, streams, &o);
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
    print_ratios(&rows, &plan.streams);
    Ok(())
}

fn print_header(config: &RunConfig) {
    println!(
        "loopback 127.0.0.1, {} MiB per run, server and client each on a current-thread tokio runtime on its own thread, {} CPUs",
        config.size_mib,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let quinn_window = if config.quinn_window_mib == 0 {
        "quinn's default windows".to_string()
    } else {
        format!(
            "quinn: stream receive window {} MiB, connection receive and send windows {} MiB",
            config.quinn_window_mib,
            config.quinn_window_mib.max(64)
        )
    };
    let quinn_cipher = if config.quinn_chacha {
        "ChaCha20-Poly1305"
    } else {
        "AES-128-GCM"
    };
    println!(
        "{quinn_window}, {quinn_cipher}; udpack: default transport config, congestion control {:?}",
        config.udpack_cc
    );
    println!();
}

fn print_row(kind: Kind, streams: usize, o: &Outcome) {
    println!(
        "| {} | {streams} | {} | {:.2} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
        kind.name(),
        o.bytes >> 20,
        o.wall.as_secs_f64(),
        o.goodput_mb_s(),
        o.goodput_mb_s() * 8.0,
        o.cpu.as_secs_f64(),
        o.cpu_per_gib(),
        o.send_cpu.as_secs_f64(),
        o.recv_cpu.as_secs_f64(),
    );
}

/// The median of `v` (the mean of the middle two for an even count); `None` if empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Median goodput and CPU per GiB of `kind` at `streams`, over the repeats.
fn medians(rows: &[Row], kind: Kind, streams: usize) -> Option<(f64, f64)> {
    let rs: Vec<&Row> = rows
        .iter()
        .filter(|r| r.kind == kind && r.streams == streams)
        .collect();
    let goodput = median(rs.iter().map(|r| r.o.goodput_mb_s()).collect())?;
    let cpu = median(rs.iter().map(|r| r.o.cpu_per_gib()).collect())?;
    Some((goodput, cpu))
}

/// Ratios of udpack to each other transport, from the medians over the repeats (on a
/// shared machine the median resists a run disturbed by other load).
fn print_ratios(rows: &[Row], stream_counts: &[usize]) {
    let mut ratio_rows = Vec::new();
    for &streams in stream_counts {
        let Some((u_goodput, u_cpu)) = medians(rows, Kind::Udpack, streams) else {
            continue;
        };
        for other in [Kind::Tcp, Kind::Quinn] {
            if let Some((g, c)) = medians(rows, other, streams) {
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
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }
}
