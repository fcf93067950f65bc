//! Progress display: bars on a terminal (indicatif: one total bar and one bar per file
//! in flight, all removed when done), otherwise one plain line a second such as
//! `[43.20%] [send.speed 11523.4 KB/s]`, or nothing at all (`--json`).
//!
//! A sender's positions are bytes the server acknowledged, not bytes handed to the
//! transport: each file in flight registers a probe that says how far it got, read by
//! [`Progress::refresh`] a few times a second, so the speeds shown are the link's.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use udpack_io::Speed;

/// Says how many bytes of a file are through (the resumed offset included).
pub type Probe = Box<dyn Fn() -> u64 + Send + Sync>;

/// Most per-file bars shown at once; more files in flight are summed in the total.
const MAX_FILE_BARS: usize = 8;

/// How the progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Bars if stdout is a terminal, plain lines otherwise.
    Auto,
    /// One line a second.
    Plain,
    /// Nothing (a machine reads stdout).
    Quiet,
}

struct FileState {
    size: u64,
    position: u64,
    bar: Option<ProgressBar>,
    probe: Option<Probe>,
}

enum Mode {
    Bars {
        multi: MultiProgress,
        overall: ProgressBar,
    },
    Plain,
    Quiet,
}

/// Progress of the bytes of one side of a transfer.
pub struct Progress {
    mode: Mode,
    /// "send" or "recv": the direction the plain lines name and report the speed of.
    label: &'static str,
    total: AtomicU64,
    /// Bytes of files no longer in flight (done, or resumed offsets counted at start).
    settled: AtomicU64,
    files: Mutex<HashMap<String, FileState>>,
}

impl Progress {
    /// Bars if stdout is a terminal, plain lines otherwise.
    pub fn new(label: &'static str, total: u64) -> Self {
        Progress::with_display(label, total, Display::Auto)
    }

    pub fn with_display(label: &'static str, total: u64, display: Display) -> Self {
        let bars = match display {
            Display::Auto => std::io::stdout().is_terminal(),
            Display::Plain | Display::Quiet => false,
        };
        let mode = if bars {
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
            Mode::Bars { multi, overall }
        } else if display == Display::Quiet {
            Mode::Quiet
        } else {
            Mode::Plain
        };
        Progress {
            mode,
            label,
            total: AtomicU64::new(total),
            settled: AtomicU64::new(0),
            files: Mutex::new(HashMap::new()),
        }
    }

    /// More bytes are expected (the receiving side learns them file by file).
    pub fn add_total(&self, n: u64) {
        let t = self.total.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if let Mode::Bars { overall, .. } = &self.mode {
            overall.set_length(t);
        }
    }

    /// A file starts (again); `offset` bytes of it are already there. Its position
    /// moves with [`Progress::advance`] or, if `probe` is given, with what the probe
    /// says at each [`Progress::refresh`].
    pub fn start_file(&self, name: &str, size: u64, offset: u64) {
        self.start_file_probed(name, size, offset, None);
    }

    pub fn start_file_probed(&self, name: &str, size: u64, offset: u64, probe: Option<Probe>) {
        let Ok(mut files) = self.files.lock() else {
            return;
        };
        if let Some(old) = files.remove(name) {
            self.drop_bar(&old);
        }
        let bar = match &self.mode {
            Mode::Bars { multi, .. } if files.len() < MAX_FILE_BARS => {
                Some(file_bar(multi, name, size, offset))
            }
            _ => None,
        };
        files.insert(
            name.to_string(),
            FileState {
                size,
                position: offset,
                bar,
                probe,
            },
        );
        drop(files);
        self.show_total();
    }

    /// `n` more bytes of `name` are through.
    pub fn advance(&self, name: &str, n: u64) {
        if let Ok(mut files) = self.files.lock() {
            if let Some(f) = files.get_mut(name) {
                f.position = (f.position + n).min(f.size);
                if let Some(bar) = &f.bar {
                    bar.set_position(f.position);
                }
            }
        }
        self.show_total();
    }

    /// Bytes through that belong to no file in flight (a file sent whole).
    pub fn advance_total(&self, n: u64) {
        self.settled.fetch_add(n, Ordering::Relaxed);
        self.show_total();
    }

    /// Reads every file's probe and moves the bars.
    pub fn refresh(&self) {
        if let Ok(mut files) = self.files.lock() {
            for f in files.values_mut() {
                if let Some(p) = &f.probe {
                    f.position = p().clamp(f.position, f.size);
                    if let Some(bar) = &f.bar {
                        bar.set_position(f.position);
                    }
                }
            }
        }
        self.show_total();
    }

    /// A file leaves the display: `done` if all of it is through (counted in the total
    /// for good), otherwise its bytes leave the total until it starts again. `note`, if
    /// any, is printed in its place.
    pub fn finish_file(&self, name: &str, done: bool, note: Option<&str>) {
        if let Ok(mut files) = self.files.lock() {
            if let Some(f) = files.remove(name) {
                if done {
                    self.settled.fetch_add(f.size, Ordering::Relaxed);
                }
                self.drop_bar(&f);
            }
            // A file waiting for a bar gets the one freed.
            if let Mode::Bars { multi, .. } = &self.mode {
                let shown = files.values().filter(|f| f.bar.is_some()).count();
                if let Some((n, f)) = files.iter_mut().find(|(_, f)| f.bar.is_none()) {
                    if shown < MAX_FILE_BARS {
                        f.bar = Some(file_bar(multi, n, f.size, f.position));
                    }
                }
            }
        }
        if let Some(note) = note {
            self.line(&format!("{name}: {note}"));
        }
        self.show_total();
    }

    /// A line of its own (above the bars on a terminal).
    pub fn line(&self, text: &str) {
        match &self.mode {
            Mode::Bars { multi, .. } => {
                let _ = multi.println(text);
            }
            Mode::Plain => println!("{text}"),
            Mode::Quiet => {}
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

    /// Bytes through: settled ones and the positions of the files in flight.
    pub fn done(&self) -> u64 {
        let in_flight: u64 = self
            .files
            .lock()
            .map(|f| f.values().map(|f| f.position).sum())
            .unwrap_or(0);
        self.settled.load(Ordering::Relaxed) + in_flight
    }

    pub fn percent(&self) -> f64 {
        let total = self.total.load(Ordering::Relaxed);
        if total == 0 {
            return 100.0;
        }
        (self.done() as f64 / total as f64 * 100.0).min(100.0)
    }

    /// Removes every bar, the total's included: nothing stale stays on the screen.
    pub fn clear(&self) {
        if let Ok(mut files) = self.files.lock() {
            for (_, f) in files.drain() {
                self.drop_bar(&f);
            }
        }
        if let Mode::Bars { multi, overall } = &self.mode {
            overall.finish_and_clear();
            multi.remove(overall);
            let _ = multi.clear();
        }
    }

    fn drop_bar(&self, f: &FileState) {
        if let (Some(bar), Mode::Bars { multi, .. }) = (&f.bar, &self.mode) {
            bar.finish_and_clear();
            multi.remove(bar);
        }
    }

    fn show_total(&self) {
        if let Mode::Bars { overall, .. } = &self.mode {
            overall.set_position(self.done());
        }
    }
}

/// A file's bar, at `position` of `size`.
fn file_bar(multi: &MultiProgress, name: &str, size: u64, position: u64) -> ProgressBar {
    let bar = multi.add(ProgressBar::new(size));
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>30.dim} [{bar:32}] {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(short(name));
    bar.set_position(position);
    bar.reset_eta();
    bar
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
