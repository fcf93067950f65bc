//! Logging to one directory, one file per category: the transport (`udpack`), the
//! event framework (`udpack.io`) and the application each write to their own file, at
//! one level.

use std::io;
use std::path::Path;

use tracing::level_filters::LevelFilter;
use tracing::Metadata;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Keeps the log writers running; logs are flushed when it is dropped.
#[must_use = "logs stop when the guard is dropped"]
pub struct LogGuard {
    _guards: Vec<WorkerGuard>,
}

/// The transport logs under the target `udpack` (set explicitly, so a binary that is
/// itself named `udpack` keeps its own module targets out of this file).
fn is_transport(m: &Metadata<'_>) -> bool {
    let t = m.target();
    t == "udpack" || t.starts_with("udpack_proto")
}

fn is_framework(m: &Metadata<'_>) -> bool {
    let t = m.target();
    t == "udpack.io" || t.starts_with("udpack_io")
}

/// Writes `udpack.log`, `udpack.io.log` and `<app>.log` under `dir` (created if
/// needed), each with the events of its category at `level` or above. Installs the
/// global `tracing` subscriber; fails if one is already set.
pub fn init(dir: impl AsRef<Path>, app: &str, level: LevelFilter) -> io::Result<LogGuard> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir)?;
    let mut guards = Vec::new();
    let mut writer = |name: &str| {
        let appender = tracing_appender::rolling::never(dir, format!("{name}.log"));
        let (w, g) = tracing_appender::non_blocking(appender);
        guards.push(g);
        w
    };
    let transport = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(writer("udpack"))
        .with_filter(level)
        .with_filter(filter_fn(is_transport));
    let framework = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(writer("udpack.io"))
        .with_filter(level)
        .with_filter(filter_fn(is_framework));
    let application = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(writer(app))
        .with_filter(level)
        .with_filter(filter_fn(|m| !is_transport(m) && !is_framework(m)));
    tracing_subscriber::registry()
        .with(transport)
        .with(framework)
        .with(application)
        .try_init()
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(LogGuard { _guards: guards })
}
