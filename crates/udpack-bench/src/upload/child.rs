//! One child process of an upload run: its stdout read line by line on a thread, and
//! its end waited for with `wait4`, which also gives the CPU time it used.

use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::child_lines;
use crate::error::{BenchError, Result};

/// How often a child's exit is polled while waiting for it.
const POLL: Duration = Duration::from_millis(2);

/// A running child; killed (and reaped) if dropped before [`Proc::wait`].
pub struct Proc {
    pub what: String,
    child: Option<Child>,
    lines: Receiver<String>,
    pub started: Instant,
}

/// How a child ended.
pub struct Exit {
    pub success: bool,
    /// User + system time of the child, as `wait4` reports it.
    pub cpu: Duration,
    /// From the spawn to the moment its exit was seen.
    pub wall: Duration,
}

impl Proc {
    /// Starts `cmd` with stdin closed, stdout piped and stderr dropped (the progress
    /// display and logs are not part of the measurement).
    pub fn spawn(what: impl Into<String>, mut cmd: Command) -> Result<Proc> {
        let what = what.into();
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::Spawn(what.clone(), e))?;
        let lines = child_lines::lines(&mut child, "upload-child-out")?;
        Ok(Proc {
            what,
            child: Some(child),
            lines,
            started,
        })
    }

    /// The next line that starts with `prefix`, waiting up to `timeout`; a line
    /// `error MESSAGE` (a peer's own failure) ends the wait with that message.
    pub fn line(&self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if line.starts_with(prefix) {
                        return Ok(line);
                    }
                    if let Some(msg) = line.strip_prefix("error ") {
                        return Err(BenchError::PeerFailed(self.what.clone(), msg.into()));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(BenchError::PeerTimeout(self.what.clone(), prefix.into()))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(BenchError::PeerExited(self.what.clone()))
                }
            }
        }
    }

    /// The rest of the next line that starts with `prefix`, trimmed.
    pub fn expect(&self, prefix: &str, timeout: Duration) -> Result<String> {
        let line = self.line(prefix, timeout)?;
        Ok(line[prefix.len()..].trim().to_string())
    }

    /// Waits up to `timeout` for the child to exit (then kills it and fails).
    pub fn wait(mut self, timeout: Duration) -> Result<Exit> {
        let Some(child) = self.child.take() else {
            return Err(BenchError::PeerExited(self.what.clone()));
        };
        let pid = child.id() as libc::pid_t;
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: wait4 writes only the status and the rusage it is given; the pid
            // is our own child, not reaped yet (std reaps only in wait and try_wait,
            // which are never called on it).
            let (rc, ru) = unsafe {
                let mut ru: libc::rusage = std::mem::zeroed();
                let rc = libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru);
                (rc, ru)
            };
            if rc == pid {
                let wall = self.started.elapsed();
                let success = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
                return Ok(Exit {
                    success,
                    cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
                    wall,
                });
            }
            if rc < 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            if Instant::now() >= deadline {
                self.child = Some(child);
                return Err(BenchError::PeerTimeout(self.what.clone(), "exit".into()));
            }
            std::thread::sleep(POLL);
        }
    }
}

fn tv(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000)
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
