//! The lab's small-files scenario (`upload --lab`): `udpack send`, the real binary in
//! namespace A, uploads many small files to `udpack serve --once` in namespace B, and
//! then one file of the same total size, over the same emulated link. The wire is
//! restarted for every upload, so each starts on an empty queue.

use std::path::{Path, PathBuf};

use super::link::{DirConfig, LossAt, QueueLimit};
use super::netns::{self, Netns, ADDR};
use super::wire::Wire;
use crate::error::Result;
use crate::upload::udpack_send::{self, Keys, Place};
use crate::upload::Measured;

/// The link: the same both ways, no loss, a drop-tail queue of one RTT (at least 10
/// ms), as the lab's default link.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct LinkSpec {
    pub rate_mbit: f64,
    pub rtt_ms: f64,
}

impl LinkSpec {
    fn dirs(&self) -> [DirConfig; 2] {
        let d = DirConfig {
            delay_us: (self.rtt_ms * 500.0).round() as u64,
            rate_bps: (self.rate_mbit * 1e6) as u64,
            queue: QueueLimit::Micros((self.rtt_ms.max(10.0) * 1000.0).round() as u64),
            loss_at: LossAt::After,
            ..DirConfig::default()
        };
        [d.clone(), d]
    }
}

/// One case: the paths `udpack send` is given.
pub struct Case<'a> {
    pub paths: &'a [PathBuf],
    /// Where the receiver writes (emptied before each upload).
    pub out: &'a Path,
}

/// The built lab, for as many uploads as the caller makes.
pub struct SmallFilesLab {
    net: Netns,
    link: LinkSpec,
}

impl SmallFilesLab {
    /// Builds the namespaces (waiting for the lab's lock if another lab runs); `None`
    /// without root.
    pub fn create(link: LinkSpec) -> Result<Option<SmallFilesLab>> {
        if !netns::is_root() {
            return Ok(None);
        }
        netns::teardown_on_signal()?;
        Ok(Some(SmallFilesLab {
            net: Netns::create()?,
            link,
        }))
    }

    /// One upload of `case` through a fresh wire; also the packets the wire dropped
    /// (queue overflow, or its buffer pool empty), both ways.
    pub fn upload(&self, udpack: &Path, keys: &Keys, case: &Case<'_>) -> Result<(Measured, u64)> {
        crate::upload::files::fresh_dir(case.out)?;
        let wire = Wire::start(self.net.tun_fds(), self.link.dirs(), 1)?;
        let command = |i: usize, program: &Path| self.net.command(i, program);
        let place = Place {
            listen: std::net::SocketAddr::new(ADDR[1].into(), 0),
            command: &command,
        };
        let measured = udpack_send::with_binary(udpack, &place, keys, case.paths, case.out);
        let report = wire.stop()?;
        let drops: u64 = report
            .iter()
            .map(|d| d.stats.queue_drops + d.stats.pool_drops)
            .sum();
        Ok((measured?, drops))
    }
}
