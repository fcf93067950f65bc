//! Refusing a replayed hello (PROTOCOL.md §3.5): the server remembers the ephemeral
//! key of every hello it accepted for a while, and, where both sides know the wall
//! clock, refuses hellos whose timestamp is older than that memory reaches.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// The whole ephemeral key is the replay key: a hello that differs from an accepted
/// one anywhere in it is another hello (which will not decrypt, if forged).
const KEY_LEN: usize = 32;
/// Most hellos remembered; beyond it the oldest are forgotten early (counted in
/// `EndpointStats::replay_memory_evicted`). Accepted hellos only enter it, so this
/// is many seconds of the server's session limit.
pub const MAX_REMEMBERED_HELLOS: usize = 65_536;

/// The replay keys of accepted hellos, oldest first.
#[derive(Debug, Default)]
pub(super) struct ReplayMemory {
    keys: HashSet<[u8; KEY_LEN]>,
    order: VecDeque<(Instant, [u8; KEY_LEN])>,
}

fn key(ephemeral: &[u8]) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    let n = ephemeral.len().min(KEY_LEN);
    k[..n].copy_from_slice(&ephemeral[..n]);
    k
}

impl ReplayMemory {
    /// Hellos remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether a hello with this ephemeral key was accepted within `keep`.
    pub fn seen(&mut self, now: Instant, keep: Duration, ephemeral: &[u8]) -> bool {
        self.expire(now, keep);
        self.keys.contains(&key(ephemeral))
    }

    /// Remembers an accepted hello; returns how many older ones it pushed out.
    pub fn remember(&mut self, now: Instant, ephemeral: &[u8]) -> u64 {
        let k = key(ephemeral);
        let mut evicted = 0;
        while self.order.len() >= MAX_REMEMBERED_HELLOS {
            if let Some((_, old)) = self.order.pop_front() {
                self.keys.remove(&old);
                evicted += 1;
            }
        }
        if self.keys.insert(k) {
            self.order.push_back((now, k));
        }
        evicted
    }

    fn expire(&mut self, now: Instant, keep: Duration) {
        while let Some(&(t, k)) = self.order.front() {
            if now.saturating_duration_since(t) < keep {
                break;
            }
            self.order.pop_front();
            self.keys.remove(&k);
        }
    }
}

/// Whether a hello's timestamp (Unix nanoseconds, 0 = none) is within `max_age` of
/// the server's clock (`None` = unknown). Without both clocks only the memory counts.
pub(super) fn fresh(timestamp: u64, server_unix: Option<Duration>, max_age: Duration) -> bool {
    let Some(server) = server_unix else {
        return true;
    };
    if timestamp == 0 {
        return true;
    }
    let client = Duration::from_nanos(timestamp);
    client.abs_diff(server) <= max_age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_for_a_while_and_bounded() {
        let mut m = ReplayMemory::default();
        let t0 = Instant::now();
        let keep = Duration::from_secs(10);
        assert!(!m.seen(t0, keep, &[1; 32]));
        assert_eq!(m.remember(t0, &[1; 32]), 0);
        assert!(m.seen(t0 + keep / 2, keep, &[1; 32]));
        assert!(!m.seen(t0 + keep / 2, keep, &[2; 32]));
        assert!(!m.seen(t0 + keep, keep, &[1; 32]), "forgotten");
        let mut evicted = 0;
        for i in 0..MAX_REMEMBERED_HELLOS as u32 + 10 {
            let mut e = [0u8; 32];
            e[..4].copy_from_slice(&i.to_be_bytes());
            evicted += m.remember(t0 + keep, &e);
        }
        assert_eq!(evicted, 10);
        assert_eq!(m.keys.len(), MAX_REMEMBERED_HELLOS);
    }

    #[test]
    fn timestamps_count_only_with_both_clocks() {
        let max = Duration::from_secs(120);
        let now = Duration::from_secs(1_700_000_000);
        let ns = |d: Duration| d.as_nanos() as u64;
        assert!(fresh(ns(now - max), Some(now), max));
        assert!(fresh(ns(now + max), Some(now), max));
        assert!(!fresh(ns(now - max) - 1, Some(now), max));
        assert!(!fresh(ns(now + max) + 1, Some(now), max));
        assert!(fresh(1, None, max), "the server has no clock");
        assert!(fresh(0, Some(now), max), "the client had none");
    }
}
