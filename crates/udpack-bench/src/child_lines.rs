//! A child process's standard output as lines, read on a thread of its own, so that
//! the bench can wait for one line with a timeout.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc::{self, Receiver};

use crate::error::{BenchError, Result};

/// Takes `child`'s piped stdout and forwards its lines (a thread named `name`) until
/// the pipe ends or the receiver is dropped.
pub fn lines(child: &mut Child, name: &str) -> Result<Receiver<String>> {
    let out = child.stdout.take().ok_or(BenchError::ChildPipe("stdout"))?;
    let (tx, lines) = mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        })?;
    Ok(lines)
}
