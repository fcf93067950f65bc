//! What a hello may cost the server before it is known to be honest: the load
//! counter that decides when hellos must bring a cookie, and the per-address limits
//! (hellos per second, failed tokens per minute) in a table of bounded size, so a
//! flood from spoofed addresses cannot grow memory.
//!
//! Each address has two sets of counters: all hellos, and hellos that echoed a valid
//! cookie (the sender owns the address). Over the first, a hello must bring a cookie;
//! over the second, it is dropped. So a spoofer can cost its victim a round trip, but
//! only the owner of an address can get it locked out.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The interval of the load counter and of the per-address hello limit.
pub const HELLO_INTERVAL: Duration = Duration::from_secs(1);
/// The interval of the failed-token limit.
pub const FAILURE_INTERVAL: Duration = Duration::from_secs(60);
/// At most one warning per limited address per this long.
pub const WARN_INTERVAL: Duration = Duration::from_secs(60);
/// Most addresses tracked at once. When full, addresses with nothing left to count
/// go first (one scan a second at most), then the oldest: a flood from spoofed
/// addresses churns the table but cannot grow it.
pub const MAX_TRACKED_ADDRESSES: usize = 4096;

/// Why a hello from an address was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limited {
    /// More hellos this second than `ServerConfig::max_hellos_per_address`.
    Hellos,
    /// More refused tokens this minute than `ServerConfig::max_failed_tokens_per_address`.
    FailedTokens,
}

/// Counts of one kind (all hellos, or verified ones) for one address.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    hellos: u32,
    failures: u32,
}

#[derive(Debug)]
struct Source {
    hellos_since: Instant,
    failures_since: Instant,
    /// `[all, verified]`.
    counts: [Counts; 2],
    /// COOKIE answers sent this second to an address over its limits.
    cookies: u32,
    warned: Option<Instant>,
}

impl Source {
    fn new(now: Instant) -> Self {
        Source {
            hellos_since: now,
            failures_since: now,
            counts: [Counts::default(); 2],
            cookies: 0,
            warned: None,
        }
    }

    fn roll(&mut self, now: Instant) {
        if now.saturating_duration_since(self.hellos_since) >= HELLO_INTERVAL {
            self.hellos_since = now;
            self.counts.iter_mut().for_each(|c| c.hellos = 0);
            self.cookies = 0;
        }
        if now.saturating_duration_since(self.failures_since) >= FAILURE_INTERVAL {
            self.failures_since = now;
            self.counts.iter_mut().for_each(|c| c.failures = 0);
        }
    }

    /// Nothing left to remember: both counters have run out.
    fn idle(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.hellos_since) >= HELLO_INTERVAL
            && now.saturating_duration_since(self.failures_since) >= FAILURE_INTERVAL
            && self
                .warned
                .is_none_or(|t| now.saturating_duration_since(t) >= WARN_INTERVAL)
    }
}

/// The server's hello bookkeeping.
#[derive(Debug, Default)]
pub(super) struct HelloGuard {
    /// Hellos the server did the X25519 for in the current interval.
    expensive: u32,
    interval_start: Option<Instant>,
    sources: HashMap<IpAddr, Source>,
    /// Insertion order of `sources`, oldest first (may name removed entries).
    order: VecDeque<IpAddr>,
    last_purge: Option<Instant>,
}

impl HelloGuard {
    /// Whether this interval's expensive hellos have reached `threshold`: hellos
    /// without a valid cookie then get a COOKIE instead of an X25519.
    pub fn under_load(&mut self, now: Instant, threshold: u32) -> bool {
        if self
            .interval_start
            .is_none_or(|t| now.saturating_duration_since(t) >= HELLO_INTERVAL)
        {
            self.interval_start = Some(now);
            self.expensive = 0;
        }
        self.expensive >= threshold
    }

    /// Counts a hello the server is about to do the X25519 for.
    pub fn count_expensive(&mut self) {
        self.expensive = self.expensive.saturating_add(1);
    }

    /// Checks a hello from `ip` (`verified`: it echoed a valid cookie) against the
    /// limits of its kind, and counts it if it is within them.
    pub fn admit(
        &mut self,
        now: Instant,
        ip: IpAddr,
        verified: bool,
        max_hellos: u32,
        max_failures: u32,
    ) -> Result<(), Limited> {
        let s = self.entry(now, ip);
        s.roll(now);
        let c = &mut s.counts[usize::from(verified)];
        if c.failures >= max_failures {
            return Err(Limited::FailedTokens);
        }
        if c.hellos >= max_hellos {
            return Err(Limited::Hellos);
        }
        c.hellos += 1;
        if verified {
            s.counts[0].hellos = s.counts[0].hellos.saturating_add(1);
        }
        Ok(())
    }

    /// Counts a refused token from `ip`.
    pub fn count_failure(&mut self, now: Instant, ip: IpAddr, verified: bool) {
        let s = self.entry(now, ip);
        s.roll(now);
        for c in &mut s.counts[..=usize::from(verified)] {
            c.failures = c.failures.saturating_add(1);
        }
    }

    /// Whether an address over its limits may have one more COOKIE this second (at
    /// most `max` a second, as WireGuard limits its answers per address): a flood from
    /// one address then costs no more answers than hellos it may have decrypted.
    pub fn cookie_allowed(&mut self, now: Instant, ip: IpAddr, max: u32) -> bool {
        let s = self.entry(now, ip);
        s.roll(now);
        if s.cookies >= max {
            return false;
        }
        s.cookies += 1;
        true
    }

    /// Whether a warning about `ip` is due (at most one per [`WARN_INTERVAL`]); marks
    /// it given.
    pub fn warn_due(&mut self, now: Instant, ip: IpAddr) -> bool {
        let s = self.entry(now, ip);
        if s.warned
            .is_some_and(|t| now.saturating_duration_since(t) < WARN_INTERVAL)
        {
            return false;
        }
        s.warned = Some(now);
        true
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    fn entry(&mut self, now: Instant, ip: IpAddr) -> &mut Source {
        if !self.sources.contains_key(&ip) {
            if self.sources.len() >= MAX_TRACKED_ADDRESSES {
                self.make_room(now);
            }
            self.order.push_back(ip);
        }
        self.sources.entry(ip).or_insert_with(|| Source::new(now))
    }

    /// Forgets idle addresses (at most one scan per interval), then the oldest.
    fn make_room(&mut self, now: Instant) {
        if self
            .last_purge
            .is_none_or(|t| now.saturating_duration_since(t) >= HELLO_INTERVAL)
        {
            self.last_purge = Some(now);
            self.sources.retain(|_, s| !s.idle(now));
            let sources = &self.sources;
            self.order.retain(|ip| sources.contains_key(ip));
        }
        while self.sources.len() >= MAX_TRACKED_ADDRESSES {
            let Some(ip) = self.order.pop_front() else {
                break;
            };
            self.sources.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn the_load_counter_resets_each_interval() {
        let mut g = HelloGuard::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(!g.under_load(t0, 3));
            g.count_expensive();
        }
        assert!(g.under_load(t0 + HELLO_INTERVAL / 2, 3));
        assert!(!g.under_load(t0 + HELLO_INTERVAL, 3));
    }

    #[test]
    fn limits_per_address_and_their_intervals() {
        let mut g = HelloGuard::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(g.admit(t0, ip(1), false, 5, 2), Ok(()));
        }
        assert_eq!(g.admit(t0, ip(1), false, 5, 2), Err(Limited::Hellos));
        // Spoofed hellos do not use up the verified ones' budget.
        assert_eq!(g.admit(t0, ip(1), true, 5, 2), Ok(()));
        assert_eq!(g.admit(t0, ip(2), false, 5, 2), Ok(()), "another address");
        assert_eq!(g.admit(t0 + HELLO_INTERVAL, ip(1), false, 5, 2), Ok(()));
        g.count_failure(t0, ip(1), false);
        g.count_failure(t0, ip(1), false);
        let t1 = t0 + 3 * HELLO_INTERVAL;
        assert_eq!(g.admit(t1, ip(1), false, 5, 2), Err(Limited::FailedTokens));
        assert_eq!(g.admit(t1, ip(1), true, 5, 2), Ok(()));
        g.count_failure(t1, ip(1), true);
        g.count_failure(t1, ip(1), true);
        assert_eq!(g.admit(t1, ip(1), true, 5, 2), Err(Limited::FailedTokens));
        // Verified hellos count as hellos too.
        for _ in 0..4 {
            assert_eq!(g.admit(t1 + HELLO_INTERVAL, ip(3), true, 5, 2), Ok(()));
        }
        assert_eq!(g.admit(t1 + HELLO_INTERVAL, ip(3), false, 5, 2), Ok(()));
        assert_eq!(
            g.admit(t1 + HELLO_INTERVAL, ip(3), false, 5, 2),
            Err(Limited::Hellos)
        );
        assert_eq!(g.admit(t0 + FAILURE_INTERVAL, ip(1), false, 5, 2), Ok(()));
        // Cookies to an address over its limits are limited too.
        let t2 = t0 + FAILURE_INTERVAL;
        assert!(g.cookie_allowed(t2, ip(1), 2));
        assert!(g.cookie_allowed(t2, ip(1), 2));
        assert!(!g.cookie_allowed(t2, ip(1), 2));
        assert!(g.cookie_allowed(t2 + HELLO_INTERVAL, ip(1), 2));
        // One warning per interval.
        assert!(g.warn_due(t0, ip(1)));
        assert!(!g.warn_due(t0 + WARN_INTERVAL / 2, ip(1)));
        assert!(g.warn_due(t0 + WARN_INTERVAL, ip(1)));
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_busy_addresses() {
        let mut g = HelloGuard::default();
        let t0 = Instant::now();
        // A busy address, then a spoofed crowd within the same second.
        for _ in 0..3 {
            g.admit(t0, ip(0), false, 3, 10).expect("admitted");
        }
        for i in 1..(3 * MAX_TRACKED_ADDRESSES as u32) {
            let _ = g.admit(t0 + Duration::from_micros(i.into()), ip(i), false, 3, 10);
            assert!(g.tracked() <= MAX_TRACKED_ADDRESSES);
        }
        // A second later, the idle crowd is purged first and the table refills.
        let t1 = t0 + HELLO_INTERVAL;
        g.count_failure(t1, ip(0), false);
        for i in 0..(2 * MAX_TRACKED_ADDRESSES as u32) {
            let _ = g.admit(t1, ip(1_000_000 + i), false, 3, 10);
            assert!(g.tracked() <= MAX_TRACKED_ADDRESSES);
        }
        assert_eq!(g.tracked(), MAX_TRACKED_ADDRESSES);
    }
}
