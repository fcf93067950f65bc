//! The model of one direction of the emulated link: what happens to each packet, as a
//! pure function of the packet's size, its arrival time and a seeded random stream, so
//! that it can be tested without devices or clocks.
//!
//! Order of events for a packet: loss (when placed before the bottleneck), the
//! bottleneck (a drop-tail queue drained at the rate), loss (when placed after it, so a
//! lost packet still used its share of the rate), then the one-way delay plus a uniform
//! jitter (packets reorder when the jitter exceeds their spacing), and duplication.

use serde::Serialize;

/// Where random and bursty loss strike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossAt {
    /// Lost packets never reach the bottleneck.
    Before,
    /// Lost packets are sent at the rate and vanish after it (the stricter case).
    After,
}

/// Gilbert-Elliott bursty loss: a two-state chain stepped once per packet.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GilbertElliott {
    /// Probability of going from the good to the bad state.
    pub p_good_bad: f64,
    /// Probability of going from the bad to the good state.
    pub p_bad_good: f64,
    /// Loss probability in the bad state (the good state loses nothing of its own).
    pub loss_bad: f64,
}

/// How much the bottleneck's queue may hold before it drops arriving packets.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueLimit {
    /// At most this much waiting time, in microseconds at the link rate.
    Micros(u64),
    /// At most this many bytes waiting.
    Bytes(u64),
}

/// One direction of the link.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DirConfig {
    pub delay_us: u64,
    /// Upper bound of the uniform extra delay of each packet.
    pub jitter_us: u64,
    /// Random (independent) loss probability.
    pub loss: f64,
    pub gilbert: Option<GilbertElliott>,
    pub loss_at: LossAt,
    /// Bits per second; 0 is unlimited (no bottleneck, no queue).
    pub rate_bps: u64,
    pub queue: QueueLimit,
    /// Probability that a delivered packet is delivered twice.
    pub dup: f64,
}

impl Default for DirConfig {
    fn default() -> Self {
        DirConfig {
            delay_us: 0,
            jitter_us: 0,
            loss: 0.0,
            gilbert: None,
            loss_at: LossAt::After,
            rate_bps: 0,
            queue: QueueLimit::Micros(50_000),
            dup: 0.0,
        }
    }
}

/// What the link does with a packet: times are nanoseconds on the wire's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Deliver { at: u64, copy_at: Option<u64> },
}

/// Packet counts of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub lost: u64,
    pub queue_drops: u64,
    pub duplicated: u64,
    /// Packets the wire could not hold (its buffer pool was empty).
    pub pool_drops: u64,
    pub write_errors: u64,
    pub forwarded: u64,
}

/// A small, fast, seedable generator (SplitMix64): the link needs reproducible
/// randomness, not cryptographic quality.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Uniform in [0, max].
    fn upto(&mut self, max: u64) -> u64 {
        if max == 0 {
            0
        } else {
            self.next_u64() % (max + 1)
        }
    }
}

/// The state of one direction: its bottleneck's clock, its loss chain, its counts.
pub struct DirModel {
    cfg: DirConfig,
    rng: Rng,
    /// When the bottleneck finishes sending what it holds.
    next_free: u64,
    bad: bool,
    pub stats: DirStats,
}

impl DirModel {
    pub fn new(cfg: DirConfig, seed: u64) -> Self {
        DirModel {
            cfg,
            rng: Rng::new(seed),
            next_free: 0,
            bad: false,
            stats: DirStats::default(),
        }
    }

    /// Whether random or bursty loss strikes this packet; steps the chain once.
    fn strikes(&mut self) -> bool {
        let mut lost = self.rng.chance(self.cfg.loss);
        if let Some(ge) = self.cfg.gilbert {
            let flip = if self.bad {
                ge.p_bad_good
            } else {
                ge.p_good_bad
            };
            if self.rng.chance(flip) {
                self.bad = !self.bad;
            }
            lost |= self.bad && self.rng.chance(ge.loss_bad);
        }
        lost
    }

    /// When the packet leaves the bottleneck, or `None` if its queue is full.
    fn bottleneck(&mut self, now: u64, len: usize) -> Option<u64> {
        let rate = self.cfg.rate_bps;
        if rate == 0 {
            return Some(now);
        }
        let start = now.max(self.next_free);
        let backlog_ns = start - now;
        let full = match self.cfg.queue {
            QueueLimit::Micros(us) => backlog_ns > us * 1000,
            QueueLimit::Bytes(b) => {
                let waiting = (backlog_ns as u128 * rate as u128 / 8_000_000_000) as u64;
                waiting + len as u64 > b
            }
        };
        if full {
            return None;
        }
        let tx = (len as u128 * 8 * 1_000_000_000 / rate as u128) as u64;
        self.next_free = start + tx;
        Some(self.next_free)
    }

    /// Decides the fate of a packet of `len` bytes read at `now`.
    pub fn admit(&mut self, now: u64, len: usize) -> Verdict {
        self.stats.packets_in += 1;
        self.stats.bytes_in += len as u64;
        let lost = self.strikes();
        if lost && self.cfg.loss_at == LossAt::Before {
            self.stats.lost += 1;
            return Verdict::Drop;
        }
        let Some(depart) = self.bottleneck(now, len) else {
            self.stats.queue_drops += 1;
            return Verdict::Drop;
        };
        if lost {
            self.stats.lost += 1;
            return Verdict::Drop;
        }
        let base = depart + self.cfg.delay_us * 1000;
        let jitter_ns = self.cfg.jitter_us * 1000;
        let at = base + self.rng.upto(jitter_ns);
        let copy_at = if self.rng.chance(self.cfg.dup) {
            self.stats.duplicated += 1;
            Some(base + self.rng.upto(jitter_ns))
        } else {
            None
        };
        Verdict::Deliver { at, copy_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl GilbertElliott {
        /// The long-run loss rate: the bad state's share of time times its loss.
        fn mean_loss(&self) -> f64 {
            let sum = self.p_good_bad + self.p_bad_good;
            if sum == 0.0 {
                return 0.0;
            }
            self.p_good_bad / sum * self.loss_bad
        }
    }

    fn run(cfg: DirConfig, n: u64, spacing_ns: u64, len: usize) -> (DirModel, Vec<Verdict>) {
        let mut m = DirModel::new(cfg, 7);
        let v = (0..n).map(|i| m.admit(i * spacing_ns, len)).collect();
        (m, v)
    }

    #[test]
    fn random_loss_is_close_to_its_probability() {
        let cfg = DirConfig {
            loss: 0.05,
            ..Default::default()
        };
        let (m, _) = run(cfg, 100_000, 1000, 1000);
        let rate = m.stats.lost as f64 / 100_000.0;
        assert!((rate - 0.05).abs() < 0.005, "{rate}");
    }

    #[test]
    fn gilbert_elliott_loses_its_mean_in_bursts() {
        let ge = GilbertElliott {
            p_good_bad: 0.01,
            p_bad_good: 0.2,
            loss_bad: 0.5,
        };
        let cfg = DirConfig {
            gilbert: Some(ge),
            ..Default::default()
        };
        let (m, v) = run(cfg, 200_000, 1000, 1000);
        let rate = m.stats.lost as f64 / 200_000.0;
        assert!((rate - ge.mean_loss()).abs() < 0.005, "{rate}");
        // Bursts: a loss is followed by another far more often than the mean rate.
        let drops: Vec<bool> = v.iter().map(|x| *x == Verdict::Drop).collect();
        let pairs = drops.windows(2).filter(|w| w[0] && w[1]).count() as f64;
        assert!(pairs / m.stats.lost as f64 > 3.0 * rate);
    }

    #[test]
    fn the_rate_spaces_packets_and_the_delay_adds() {
        let cfg = DirConfig {
            delay_us: 10_000,
            rate_bps: 8_000_000, // 1 byte per microsecond
            queue: QueueLimit::Micros(1_000_000),
            ..Default::default()
        };
        let (_, v) = run(cfg, 3, 0, 1000);
        let at: Vec<u64> = v
            .iter()
            .map(|x| match x {
                Verdict::Deliver { at, .. } => *at,
                Verdict::Drop => panic!("dropped"),
            })
            .collect();
        assert_eq!(at, [11_000_000, 12_000_000, 13_000_000]);
    }

    #[test]
    fn a_full_queue_drops_by_time_and_by_bytes() {
        let by_time = DirConfig {
            rate_bps: 8_000_000,
            queue: QueueLimit::Micros(5_000),
            ..Default::default()
        };
        // A burst of 20 packets of 1000 bytes: 1 ms each; up to 5 ms may wait.
        let (m, _) = run(by_time, 20, 0, 1000);
        assert_eq!(m.stats.queue_drops, 14);
        let by_bytes = DirConfig {
            rate_bps: 8_000_000,
            queue: QueueLimit::Bytes(3000),
            ..Default::default()
        };
        let (m, _) = run(by_bytes, 20, 0, 1000);
        assert_eq!(m.stats.queue_drops, 17);
    }

    #[test]
    fn loss_after_the_bottleneck_still_uses_the_rate() {
        let base = DirConfig {
            rate_bps: 8_000_000,
            queue: QueueLimit::Micros(10_000_000),
            loss: 0.5,
            ..Default::default()
        };
        let last = |cfg: DirConfig| {
            let (_, v) = run(cfg, 1000, 0, 1000);
            v.iter()
                .filter_map(|x| match x {
                    Verdict::Deliver { at, .. } => Some(*at),
                    Verdict::Drop => None,
                })
                .max()
                .unwrap_or(0)
        };
        let after = last(base.clone());
        let before = last(DirConfig {
            loss_at: LossAt::Before,
            ..base
        });
        // After: all 1000 packets took their millisecond; before: only the survivors.
        assert!(after >= 990_000_000, "{after}");
        assert!(before < 600_000_000, "{before}");
    }

    #[test]
    fn jitter_reorders_and_duplication_copies() {
        let cfg = DirConfig {
            delay_us: 1000,
            jitter_us: 5000,
            dup: 0.1,
            ..Default::default()
        };
        let (m, v) = run(cfg, 10_000, 100_000, 1000);
        let at: Vec<u64> = v
            .iter()
            .filter_map(|x| match x {
                Verdict::Deliver { at, .. } => Some(*at),
                Verdict::Drop => None,
            })
            .collect();
        assert!(at.windows(2).any(|w| w[1] < w[0]), "no reordering");
        assert!(at
            .iter()
            .enumerate()
            .all(|(i, &t)| t >= i as u64 * 100_000 + 1_000_000
                && t <= i as u64 * 100_000 + 6_000_000));
        let dup = m.stats.duplicated as f64 / 10_000.0;
        assert!((dup - 0.1).abs() < 0.02, "{dup}");
    }
}
