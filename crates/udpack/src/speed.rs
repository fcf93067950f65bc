//! Throughput figures, computed by the driver once a second from the byte counters.

/// Throughput over the last second, in kilobytes (1000 bytes) per second of UDP
/// payload: whole datagrams, retransmissions included, not only application bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Speed {
    pub send: f64,
    pub recv: f64,
}

impl Speed {
    pub(crate) fn from_deltas(sent: u64, received: u64, secs: f64) -> Self {
        if secs <= 0.0 {
            return Speed::default();
        }
        Speed {
            send: sent as f64 / 1000.0 / secs,
            recv: received as f64 / 1000.0 / secs,
        }
    }
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[send.speed {:.1} KB/s] [recv.speed {:.1} KB/s]",
            self.send, self.recv
        )
    }
}
