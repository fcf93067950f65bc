//! The baselines of the loopback upload: one file over plain TCP and over quinn (two
//! child processes of this binary each, see [`super::peer`]), and udpack's raw stream
//! of the same number of bytes, memory to memory, as the loopback comparison runs it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::child::Proc;
use super::peer::{self, Role};
use super::udpack_send::RUN_TIMEOUT;
use super::Measured;
use crate::error::{BenchError, Result};
use crate::measure::process_cpu;
use crate::throughput::{self, Kind, RunConfig};

/// A file copy over kernel TCP (`tcp`) or quinn (`quic`): `src` to `dest`.
pub fn file_copy(
    exe: &Path,
    quinn: bool,
    src: &Path,
    dest: &Path,
    work: &Path,
) -> Result<Measured> {
    let cpu0 = process_cpu();
    let (recv_role, send_role, name) = if quinn {
        (Role::QuinnRecv, Role::QuinnSend, "quinn")
    } else {
        (Role::TcpRecv, Role::TcpSend, "tcp")
    };
    let cert = work.join("quinn-cert.der");
    let command = |role: Role, file: &Path| {
        let mut cmd = Command::new(exe);
        cmd.arg(peer::SUBCOMMAND)
            .arg(role_name(role))
            .arg("--file")
            .arg(file)
            .arg("--cert")
            .arg(&cert);
        cmd
    };
    let recv = Proc::spawn(format!("{name} receiver"), command(recv_role, dest))?;
    let addr = recv.expect("bound ", Duration::from_secs(10))?;
    let mut send_cmd = command(send_role, src);
    send_cmd.args(["--addr", &addr]);
    let send = Proc::spawn(format!("{name} sender"), send_cmd)?;
    let done = send.expect("done ", RUN_TIMEOUT);
    let sent = send.wait(RUN_TIMEOUT)?;
    let received = recv.wait(Duration::from_secs(30))?;
    let done = done?;
    let (bytes, nanos) = parse_done(&done).ok_or(BenchError::ChildLine(name.into(), done))?;
    for (what, exit) in [("sender", &sent), ("receiver", &received)] {
        if !exit.success {
            return Err(BenchError::ChildFailed(format!("{name} {what}")));
        }
    }
    Ok(Measured {
        bytes,
        secs: nanos as f64 / 1e9,
        send_cpu: Some(sent.cpu),
        recv_cpu: Some(received.cpu),
        wall: Some(sent.wall.max(received.wall)),
        cpu: process_cpu() - cpu0 + sent.cpu + received.cpu,
    })
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::TcpRecv => "tcp-recv",
        Role::TcpSend => "tcp-send",
        Role::QuinnRecv => "quinn-recv",
        Role::QuinnSend => "quinn-send",
    }
}

/// `BYTES NANOS` of a sender's `done` line.
fn parse_done(s: &str) -> Option<(u64, u64)> {
    let mut f = s.split_whitespace();
    let bytes = f.next()?.parse().ok()?;
    let nanos = f.next()?.parse().ok()?;
    f.next().is_none().then_some((bytes, nanos))
}

/// udpack's raw stream: `size_mib` MiB over one stream, memory to memory, both ends
/// in this process on their own threads (CPU per thread).
pub fn raw_stream(size_mib: u64) -> Result<Measured> {
    let config = RunConfig {
        size_mib,
        quinn_window_mib: peer::QUINN_WINDOW_MIB,
        quinn_chacha: false,
        udpack_cc: udpack::ControllerKind::Bbr,
    };
    let o = throughput::run(Kind::Udpack, 1, &config)?;
    Ok(Measured {
        bytes: o.bytes,
        secs: o.wall.as_secs_f64(),
        send_cpu: Some(o.send_cpu),
        recv_cpu: Some(o.recv_cpu),
        wall: None,
        cpu: o.cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn role_names_are_the_cli_names() {
        for role in Role::value_variants() {
            let v = role.to_possible_value().expect("visible");
            assert_eq!(v.get_name(), role_name(*role));
        }
    }

    #[test]
    fn done_lines_parse_or_are_refused() {
        assert_eq!(parse_done("42 1000"), Some((42, 1000)));
        assert_eq!(parse_done("42"), None);
        assert_eq!(parse_done("42 x"), None);
        assert_eq!(parse_done("1 2 3"), None);
    }
}
