//! Path MTU discovery (DPLPMTUD, RFC 8899): data goes in datagrams of the largest size
//! known to pass, and now and then a probe (a PING padded to a larger size, not counted
//! in flight, so that its loss says nothing about congestion) tests a larger one. The
//! sizes tried are the few that real paths have, largest first: what both sides accept
//! (65,507 bytes at most), a 65,536-byte loopback packet, a 9,000-byte jumbo frame, a
//! 1,500-byte Ethernet frame, each less the IP and UDP headers of the path's address
//! family; each once the congestion window holds it. A size whose probe is
//! acknowledged is taken, and the larger ones are still tried; a size whose probe is
//! lost [`MAX_PROBES`] times in a row is given up. The search runs again
//! [`RAISE_INTERVAL`] after it ends (the path may have grown), and from the start when
//! the session moves to another address.
//!
//! A path whose MTU shrinks below the size in use drops every data packet while small
//! packets still pass: [`BLACK_HOLE_LOSSES`] large packets lost in a row, each sent
//! after the last large one that was acknowledged (a burst lost in a queue is followed
//! by large packets that arrive), or two probe timeouts in a row with nothing
//! acknowledged, fall back to [`BASE_DATAGRAM_SIZE`], which every path carries, and
//! search again from there.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The size every path carries (RFC 8899's BASE_PLPMTU for QUIC-like protocols).
pub(crate) const BASE_DATAGRAM_SIZE: u16 = 1200;
/// Lost probes of one size before it is given up (RFC 8899 MAX_PROBES).
pub(crate) const MAX_PROBES: u8 = 3;
/// How long after a search ends the next one starts (RFC 8899 PMTU_RAISE_TIMER).
pub(crate) const RAISE_INTERVAL: Duration = Duration::from_secs(600);
/// A probe is at most this share of the congestion window (1 / 4).
pub(crate) const PROBE_WINDOW_SHARE: u64 = 4;
/// Probe timeouts in a row, nothing acknowledged, that mean a black hole.
pub(crate) const BLACK_HOLE_PTOS: u32 = 2;
/// Packets larger than the base lost in a row, each sent after the last large packet
/// that was acknowledged, that mean a black hole (small packets may still pass).
pub(crate) const BLACK_HOLE_LOSSES: u32 = 6;

/// IP and UDP header bytes before the datagram: IPv4 20 + 8, IPv6 40 + 8.
fn header_len(remote: SocketAddr) -> u16 {
    match remote {
        SocketAddr::V4(_) => 28,
        SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some() => 28,
        SocketAddr::V6(_) => 48,
    }
}

/// The datagram size of the session's path and the search for a larger one.
#[derive(Debug)]
pub(crate) struct PathMtu {
    /// Datagrams of data go out at this size.
    current: u16,
    /// Where a session (and a move to a new address) starts.
    initial: u16,
    /// IP and UDP header bytes of the path's address family.
    header: u16,
    /// The largest both sides accept.
    upper: u16,
    enabled: bool,
    /// Sizes left to try, largest first.
    candidates: Vec<u16>,
    /// The probe in flight: its packet number and size.
    in_flight: Option<(u64, u16)>,
    /// The last probe declared lost, since the search (re)started: an ACK that comes
    /// after all (it was reordered or delayed past the loss threshold) still proves
    /// its size.
    lost_probe: Option<(u64, u16)>,
    /// Probes of `lost_size` lost in a row.
    lost: u8,
    lost_size: u16,
    /// When the latest-sent large packet (over the base size) that was acknowledged
    /// was sent.
    large_acked_sent: Option<Instant>,
    /// Large packets lost since, each sent after it.
    suspicious_losses: u32,
    /// The next search starts then (`None`: now, if there are candidates).
    next_search: Option<Instant>,
}

impl PathMtu {
    /// A path that starts at `initial` (at most `upper`), with discovery on or off.
    pub fn new(initial: u16, upper: u16, enabled: bool) -> Self {
        let upper = upper.max(BASE_DATAGRAM_SIZE);
        PathMtu {
            current: initial.clamp(BASE_DATAGRAM_SIZE, upper),
            initial,
            header: 28,
            upper,
            enabled,
            candidates: Vec::new(),
            in_flight: None,
            lost_probe: None,
            lost: 0,
            lost_size: 0,
            large_acked_sent: None,
            suspicious_losses: 0,
            next_search: None,
        }
    }

    /// No more probes: the size in use stays.
    pub fn stop(&mut self) {
        self.enabled = false;
        self.candidates.clear();
        self.in_flight = None;
    }

    /// The size data packets use.
    pub fn current(&self) -> u16 {
        self.current
    }

    /// The handshake is done: `upper` is the largest both sides accept. Returns the
    /// new current size.
    pub fn start(&mut self, remote: SocketAddr, upper: u16) -> u16 {
        self.upper = upper.max(BASE_DATAGRAM_SIZE);
        self.restart(remote, self.initial)
    }

    /// The session moved to `remote`: the new path is unknown, so start again from
    /// the initial size. Returns the new current size.
    pub fn on_path_change(&mut self, remote: SocketAddr) -> u16 {
        self.restart(remote, self.initial)
    }

    fn restart(&mut self, remote: SocketAddr, from: u16) -> u16 {
        self.current = from.clamp(BASE_DATAGRAM_SIZE, self.upper);
        self.in_flight = None;
        self.lost_probe = None;
        self.lost = 0;
        self.suspicious_losses = 0;
        self.next_search = None;
        self.header = header_len(remote);
        self.fill_candidates();
        self.current
    }

    /// The sizes above the current one, largest first.
    fn fill_candidates(&mut self) {
        self.candidates.clear();
        if !self.enabled {
            return;
        }
        let h = self.header;
        // Loopback's 65,536-byte MTU, a jumbo frame, an Ethernet frame.
        let loopback = u16::try_from(65_536 - u32::from(h)).unwrap_or(u16::MAX);
        for s in [self.upper, loopback, 9000 - h, 1500 - h, self.initial] {
            let s = s.min(self.upper);
            if s > self.current && !self.candidates.contains(&s) {
                self.candidates.push(s);
            }
        }
        self.candidates.sort_unstable_by(|a, b| b.cmp(a));
    }

    /// The size to probe now, if a probe is due: the largest candidate that a
    /// congestion window of `window` bytes holds [`PROBE_WINDOW_SHARE`] times (the
    /// path has shown it carries that much at once, and a probe takes no more than
    /// its share of the pacer's burst; a larger one waits for the window to grow).
    pub fn probe_due(&mut self, now: Instant, window: u64) -> Option<u16> {
        if !self.enabled || self.in_flight.is_some() {
            return None;
        }
        match self.next_search {
            Some(t) if now < t => return None,
            Some(_) => {
                self.next_search = None;
                self.lost = 0;
                self.fill_candidates();
            }
            None => {}
        }
        self.candidates
            .iter()
            .copied()
            .find(|&s| u64::from(s).saturating_mul(PROBE_WINDOW_SHARE) <= window)
    }

    /// The packet number of the last probe declared lost, while an ACK of it would
    /// still count ([`PathMtu::on_probe_acked`]).
    pub fn lost_probe(&self) -> Option<u64> {
        self.lost_probe.map(|(pn, _)| pn)
    }

    /// A probe of `size` went out as packet `pn`.
    pub fn on_probe_sent(&mut self, pn: u64, size: u16) {
        self.in_flight = Some((pn, size));
    }

    /// The probe `pn` was acknowledged: its size passes the path, also when the probe
    /// had been declared lost (the last one so declared, since the search started).
    /// Returns the new current size if it grew.
    pub fn on_probe_acked(&mut self, now: Instant, pn: u64) -> Option<u16> {
        let size = match (self.in_flight, self.lost_probe) {
            (Some((p, size)), _) if p == pn => {
                self.in_flight = None;
                size
            }
            (_, Some((p, size))) if p == pn => {
                // Another probe may be out meanwhile (a smaller size, or this one
                // again): it goes on, and its answer changes nothing below this size.
                self.lost_probe = None;
                size
            }
            _ => return None,
        };
        if size <= self.current {
            return None;
        }
        self.lost = 0;
        // Larger candidates (skipped while the window was small) are still tried;
        // nothing between two candidates is (such sizes are rare on real paths).
        self.candidates.retain(|&s| s > size);
        if self.candidates.is_empty() {
            self.next_search = Some(now + RAISE_INTERVAL);
        }
        self.current = size;
        Some(size)
    }

    /// The probe `pn` was declared lost.
    pub fn on_probe_lost(&mut self, now: Instant, pn: u64) {
        let Some((p, size)) = self.in_flight else {
            return;
        };
        if p != pn {
            return;
        }
        self.in_flight = None;
        self.lost_probe = Some((pn, size));
        if self.lost_size != size {
            self.lost_size = size;
            self.lost = 0;
        }
        self.lost += 1;
        if self.lost >= MAX_PROBES {
            self.lost = 0;
            self.candidates.retain(|&s| s != size);
            if self.candidates.is_empty() {
                self.next_search = Some(now + RAISE_INTERVAL);
            }
        }
    }

    /// A data packet of `size` bytes sent at `sent` was acknowledged.
    pub fn on_packet_acked(&mut self, size: u16, sent: Instant) {
        if size > BASE_DATAGRAM_SIZE {
            self.large_acked_sent = Some(self.large_acked_sent.map_or(sent, |t| t.max(sent)));
            self.suspicious_losses = 0;
        }
    }

    /// A data packet of `size` bytes sent at `sent` was declared lost. Returns the new
    /// current size if the path is taken for a black hole.
    pub fn on_packet_lost(&mut self, remote: SocketAddr, size: u16, sent: Instant) -> Option<u16> {
        if !self.enabled || size <= BASE_DATAGRAM_SIZE || self.current <= BASE_DATAGRAM_SIZE {
            return None;
        }
        if self.large_acked_sent.is_some_and(|t| sent <= t) {
            // A larger packet sent later arrived: this loss is not the path's size.
            return None;
        }
        self.suspicious_losses += 1;
        if self.suspicious_losses < BLACK_HOLE_LOSSES {
            return None;
        }
        Some(self.restart(remote, BASE_DATAGRAM_SIZE))
    }

    /// `ptos` probe timeouts in a row fired with nothing acknowledged. Returns the new
    /// current size if the path is taken for a black hole.
    pub fn on_probe_timeout(&mut self, remote: SocketAddr, ptos: u32) -> Option<u16> {
        if !self.enabled || ptos < BLACK_HOLE_PTOS || self.current <= BASE_DATAGRAM_SIZE {
            return None;
        }
        Some(self.restart(remote, BASE_DATAGRAM_SIZE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4() -> SocketAddr {
        "10.0.0.1:4000".parse().expect("address")
    }

    fn v6() -> SocketAddr {
        "[2001:db8::1]:4000".parse().expect("address")
    }

    /// Probes until the search settles, with `passes` saying which sizes the path
    /// carries; returns the sizes probed.
    fn search(m: &mut PathMtu, now: Instant, passes: impl Fn(u16) -> bool) -> Vec<u16> {
        let mut probed = Vec::new();
        let mut pn = 0;
        while let Some(size) = m.probe_due(now, u64::MAX) {
            pn += 1;
            m.on_probe_sent(pn, size);
            probed.push(size);
            if passes(size) {
                m.on_probe_acked(now, pn);
            } else {
                m.on_probe_lost(now, pn);
            }
            assert!(probed.len() < 32, "the search does not end: {probed:?}");
        }
        probed
    }

    #[test]
    fn the_largest_size_that_passes_is_found_and_each_failure_costs_three_probes() {
        let now = Instant::now();
        let mut m = PathMtu::new(1452, 65_507, true);
        m.start(v4(), 65_507);
        let probed = search(&mut m, now, |s| s <= 1472);
        assert_eq!(
            probed,
            [65_507, 65_507, 65_507, 8972, 8972, 8972, 1472],
            "largest first, three tries each"
        );
        assert_eq!(m.current(), 1472);
        assert_eq!(m.probe_due(now, u64::MAX), None, "the search is over");

        let mut m = PathMtu::new(1452, 65_507, true);
        m.start(v4(), 65_507);
        assert_eq!(search(&mut m, now, |_| true), [65_507]);
        assert_eq!(m.current(), 65_507);
    }

    #[test]
    fn ipv6_sizes_leave_room_for_the_larger_header() {
        let now = Instant::now();
        let mut m = PathMtu::new(1200, 65_507, true);
        m.start(v6(), 65_507);
        let probed = search(&mut m, now, |s| s <= 1452);
        assert_eq!(probed.last(), Some(&1452));
        assert!(probed.contains(&8952));
        assert_eq!(m.current(), 1452);
        // IPv6 loopback: 65,536 less 48 bytes of headers, after the 65,507 that
        // does not fit.
        let mut m = PathMtu::new(1452, 65_507, true);
        m.start(v6(), 65_507);
        let probed = search(&mut m, now, |s| s <= 65_488);
        assert_eq!(probed, [65_507, 65_507, 65_507, 65_488]);
        assert_eq!(m.current(), 65_488);
    }

    #[test]
    fn the_peers_limit_bounds_the_search_and_off_means_no_probe() {
        let now = Instant::now();
        let mut m = PathMtu::new(1452, 65_507, true);
        m.start(v4(), 1452);
        assert_eq!(m.probe_due(now, u64::MAX), None);
        assert_eq!(m.current(), 1452);

        let mut m = PathMtu::new(1452, 65_507, false);
        m.start(v4(), 65_507);
        assert_eq!(m.probe_due(now, u64::MAX), None);
        assert_eq!(m.current(), 1452);
    }

    #[test]
    fn a_black_hole_falls_back_to_the_base_and_searches_again() {
        let now = Instant::now();
        let mut m = PathMtu::new(1452, 65_507, true);
        m.start(v4(), 65_507);
        search(&mut m, now, |s| s <= 1472);
        assert_eq!(m.current(), 1472);
        assert_eq!(
            m.on_probe_timeout(v4(), 1),
            None,
            "one PTO is not a black hole"
        );
        assert_eq!(m.on_probe_timeout(v4(), 2), Some(BASE_DATAGRAM_SIZE));
        // The path now carries 1280-byte frames: none of the sizes above passes, and
        // the session stays at the base.
        let probed = search(&mut m, now, |s| s <= 1252);
        assert_eq!(probed.len(), 4 * 3, "{probed:?}");
        assert_eq!(m.current(), BASE_DATAGRAM_SIZE);
        assert_eq!(m.on_probe_timeout(v4(), 5), None, "nothing below the base");
    }

    #[test]
    fn the_search_runs_again_after_the_raise_interval() {
        let now = Instant::now();
        let mut m = PathMtu::new(1452, 65_507, true);
        m.start(v4(), 65_507);
        search(&mut m, now, |s| s <= 1472);
        assert_eq!(m.probe_due(now + RAISE_INTERVAL / 2, u64::MAX), None);
        // The two sizes that failed are tried again.
        let later = now + RAISE_INTERVAL;
        let probed = search(&mut m, later, |s| s <= 9000);
        assert_eq!(probed, [65_507, 65_507, 65_507, 8972]);
        assert_eq!(m.current(), 8972);
    }

    #[test]
    fn a_small_window_probes_the_largest_size_it_holds() {
        let now = Instant::now();
        let mut m = PathMtu::new(1452, 65_507, true);
        m.start(v4(), 65_507);
        assert_eq!(m.probe_due(now, 40_000), Some(8972));
        assert_eq!(m.probe_due(now, 8_000), Some(1472));
        assert_eq!(m.probe_due(now, 4_000), None);
    }

    #[test]
    fn large_losses_after_the_last_large_acknowledgement_are_a_black_hole() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut m = PathMtu::new(1452, 65_507, true);
        m.start(v4(), 65_507);
        m.on_packet_acked(1452, at(30));
        // A burst lost in a queue, sent before a large packet that arrived: nothing.
        for i in 0..20 {
            assert_eq!(m.on_packet_lost(v4(), 1452, at(i)), None);
        }
        // Small packets lost: nothing.
        for i in 0..20 {
            assert_eq!(m.on_packet_lost(v4(), 1200, at(20 + i)), None);
        }
        // Large ones sent after it, lost in a row: the path shrank.
        for i in 1..BLACK_HOLE_LOSSES {
            assert_eq!(m.on_packet_lost(v4(), 1452, at(50 + u64::from(i))), None);
        }
        m.on_packet_acked(1452, at(60));
        for i in 1..BLACK_HOLE_LOSSES {
            assert_eq!(m.on_packet_lost(v4(), 1452, at(70 + u64::from(i))), None);
        }
        assert_eq!(
            m.on_packet_lost(v4(), 1452, at(90)),
            Some(BASE_DATAGRAM_SIZE)
        );
    }

    #[test]
    fn a_late_or_foreign_acknowledgement_changes_nothing() {
        let now = Instant::now();
        let mut m = PathMtu::new(1452, 65_507, true);
        m.start(v4(), 65_507);
        let size = m.probe_due(now, u64::MAX).expect("a probe");
        m.on_probe_sent(7, size);
        assert_eq!(m.on_probe_acked(now, 8), None);
        m.on_probe_lost(now, 8);
        assert_eq!(m.on_probe_acked(now, 7), Some(65_507));
        assert_eq!(m.on_probe_acked(now, 7), None);
    }

    #[test]
    fn a_probe_acknowledged_after_it_was_declared_lost_proves_its_size() {
        let now = Instant::now();
        let mut m = PathMtu::new(1452, 65_507, true);
        m.start(v4(), 65_507);
        assert_eq!(m.probe_due(now, 40_000), Some(8972));
        m.on_probe_sent(1, 8972);
        m.on_probe_lost(now, 1);
        // The next probe goes out; then the first one's ACK arrives after all.
        assert_eq!(m.probe_due(now, 40_000), Some(8972));
        m.on_probe_sent(2, 8972);
        assert_eq!(m.on_probe_acked(now, 1), Some(8972));
        assert_eq!(m.current(), 8972);
        // The second probe's answer changes nothing, whatever it is.
        assert_eq!(m.on_probe_acked(now, 2), None);
        assert_eq!(m.current(), 8972);
        assert_eq!(m.on_probe_acked(now, 1), None, "only once");
        // Only the larger sizes are left to try.
        assert_eq!(m.probe_due(now, u64::MAX), Some(65_507));

        // A probe lost before the search started again (a black hole) proves
        // nothing about the path the session is on now.
        let mut m = PathMtu::new(1452, 65_507, true);
        m.start(v4(), 65_507);
        m.on_probe_sent(1, 1472);
        m.on_probe_lost(now, 1);
        assert_eq!(m.on_probe_timeout(v4(), 2), Some(BASE_DATAGRAM_SIZE));
        assert_eq!(m.on_probe_acked(now, 1), None);
        assert_eq!(m.current(), BASE_DATAGRAM_SIZE);
    }
}
