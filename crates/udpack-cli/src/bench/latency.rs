//! Round-trip times of the messages test: a log-linear histogram (64 buckets per power
//! of two, so a percentile is within 1.6 % of the true value) that keeps memory flat
//! however long the test runs, with the exact maximum beside it.

use std::time::Duration;

use serde::Serialize;

/// Buckets per power of two, and the values below `2 * SUB` that get a bucket each.
const SUB: u64 = 64;

/// Counts of round-trip times, in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    max_us: u64,
}

/// The percentiles shown for a set of round trips.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn index(us: u64) -> usize {
    if us < 2 * SUB {
        return us as usize;
    }
    let log2 = 63 - u64::from(us.leading_zeros());
    let shift = log2 - 6;
    (shift * SUB + (us >> shift)) as usize
}

/// The middle of the values that fall into bucket `i`.
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let low = (i % SUB + SUB) << shift;
    low + ((1u64 << shift) - 1) / 2
}

impl Histogram {
    pub fn record(&mut self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        let i = index(us);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    /// The value at quantile `q` (0 to 1), in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value(i).min(self.max_us);
            }
        }
        self.max_us
    }

    pub fn percentiles(&self) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: self.count,
            p50_ms: ms(self.quantile_us(0.50)),
            p99_ms: ms(self.quantile_us(0.99)),
            max_ms: ms(self.max_us),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_values_fall_in_their_bucket() {
        let mut last = 0;
        for us in 0..100_000u64 {
            let i = index(us);
            assert!(i == last || i == last + 1, "{us}: {last} -> {i}");
            last = i;
            let v = value(i);
            assert_eq!(index(v), i, "{us}: the value {v} of bucket {i}");
            assert!(
                v.abs_diff(us) as f64 <= us as f64 / 64.0,
                "{us} shown as {v}"
            );
        }
        assert!(index(u64::MAX) < 4096);
    }

    #[test]
    fn percentiles_of_a_known_set() {
        let mut h = Histogram::default();
        assert_eq!(h.percentiles(), Percentiles::default());
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p = h.percentiles();
        assert_eq!(p.count, 100);
        assert!((p.p50_ms - 50.0).abs() <= 50.0 / 64.0, "{p:?}");
        assert!((p.p99_ms - 99.0).abs() <= 99.0 / 64.0, "{p:?}");
        assert_eq!(p.max_ms, 100.0);
        let mut one = Histogram::default();
        one.record(Duration::from_micros(1234));
        assert_eq!(one.quantile_us(0.5), 1234.min(value(index(1234))));
        assert!(one.percentiles().p99_ms <= one.percentiles().max_ms);
    }
}
