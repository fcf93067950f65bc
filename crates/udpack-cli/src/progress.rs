//! Progress display: bars on a terminal (indicatif), otherwise one plain line a second
//! such as `[43.20%] [send.speed 11523.4 KB/s]`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use udpack_io::Speed;

enum Mode {
    Bars {
        multi: MultiProgress,
        overall: ProgressBar,
        files: Mutex<Vec<(String, ProgressBar)>>,
    },
    Plain,
}

/// Progress of the bytes of one side of a transfer.
pub struct Progress {
    mode: Mode,
    /// "send" or "recv": the direction the plain lines name and report the speed of.
    label: &'static str,
    total: AtomicU64,
    done: AtomicU64,
}

impl Progress {
    /// Bars if stdout is a terminal, plain lines otherwise.
    pub fn new(label: &'static str, total: u64) -> Self {
        let mode = if std::io::stdout().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            let overall = multi.add(ProgressBar::new(total));
            overall.set_style(
                ProgressStyle::with_template(
                    "{prefix:>5} [{bar:32.cyan/blue}] {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            overall.set_prefix("total");
            Mode::Bars {
                multi,
                overall,
                files: Mutex::new(Vec::new()),
            }
        } else {
            Mode::Plain
        };
        Progress {
            mode,
            label,
            total: AtomicU64::new(total),
            done: AtomicU64::new(0),
        }
    }

    /// More bytes are expected (the receiving side learns them file by file).
    pub fn add_total(&self, n: u64) {
        let t = self.total.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if let Mode::Bars { overall, .. } = &self.mode {
            overall.set_length(t);
        }
    }

    /// A file starts; `offset` bytes of it are already there (resumed).
    pub fn start_file(&self, name: &str, size: u64, offset: u64) {
        self.advance_total(offset);
        if let Mode::Bars { multi, files, .. } = &self.mode {
            let bar = multi.insert_from_back(1, ProgressBar::new(size));
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>30.dim} [{bar:32}] {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(short(name));
            bar.set_position(offset);
            if let Ok(mut f) = files.lock() {
                f.push((name.to_string(), bar));
            }
        }
    }

    /// `n` more bytes of `name` moved.
    pub fn advance(&self, name: &str, n: u64) {
        self.advance_total(n);
        if let Mode::Bars { files, .. } = &self.mode {
            if let Ok(f) = files.lock() {
                if let Some((_, bar)) = f.iter().find(|(x, _)| x == name) {
                    bar.inc(n);
                }
            }
        }
    }

    fn advance_total(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Mode::Bars { overall, .. } = &self.mode {
            overall.inc(n);
        }
    }

    /// A file is done (or failed); `note` is shown in its place.
    pub fn finish_file(&self, name: &str, note: &str) {
        match &self.mode {
            Mode::Bars { files, multi, .. } => {
                if let Ok(mut f) = files.lock() {
                    if let Some(i) = f.iter().position(|(x, _)| x == name) {
                        let (_, bar) = f.remove(i);
                        bar.finish_and_clear();
                        multi.remove(&bar);
                    }
                }
                let _ = multi.println(format!("{name}: {note}"));
            }
            Mode::Plain => println!("{name}: {note}"),
        }
    }

    /// Once a second: the plain line.
    pub fn tick(&self, speed: Speed) {
        if let Mode::Plain = self.mode {
            let kbps = match self.label {
                "recv" => speed.recv,
                _ => speed.send,
            };
            println!(
                "[{:.2}%] [{}.speed {:.1} KB/s]",
                self.percent(),
                self.label,
                kbps
            );
        }
    }

    pub fn percent(&self) -> f64 {
        let total = self.total.load(Ordering::Relaxed);
        if total == 0 {
            return 100.0;
        }
        self.done.load(Ordering::Relaxed) as f64 / total as f64 * 100.0
    }

    /// Removes the bars.
    pub fn clear(&self) {
        if let Mode::Bars { overall, .. } = &self.mode {
            overall.finish_and_clear();
        }
    }
}

fn short(name: &str) -> String {
    if name.chars().count() <= 30 {
        return name.to_string();
    }
    let tail: String = name
        .chars()
        .rev()
        .take(29)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}
