//! A set of `u64` values stored as disjoint half-open ranges. Used for received packet
//! numbers (ACK ranges), received and acknowledged stream offsets, and data to resend.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent half-open ranges, keyed by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    /// True when `v` is in the set.
    pub fn contains(&self, v: u64) -> bool {
        self.map
            .range(..=v)
            .next_back()
            .is_some_and(|(_, &end)| v < end)
    }

    /// Adds `r`; returns true if any value in it was new.
    pub fn insert(&mut self, r: Range<u64>) -> bool {
        if r.start >= r.end {
            return false;
        }
        let (mut start, mut end) = (r.start, r.end);
        // Merge with a range that starts before and touches `start`.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= end {
                return false;
            }
            if e >= start {
                start = s;
                self.map.remove(&s);
            }
        }
        // Swallow ranges that start inside or touch [start, end].
        while let Some((&s, &e)) = self.map.range(start..=end).next() {
            self.map.remove(&s);
            end = end.max(e);
        }
        self.map.insert(start, end);
        true
    }

    /// Removes every value of `r` from the set.
    pub fn remove(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        if let Some((&s, &e)) = self.map.range(..r.start).next_back() {
            if e > r.start {
                self.map.insert(s, r.start);
                if e > r.end {
                    self.map.insert(r.end, e);
                    return;
                }
            }
        }
        while let Some((&s, &e)) = self.map.range(r.start..r.end).next() {
            self.map.remove(&s);
            if e > r.end {
                self.map.insert(r.end, e);
                break;
            }
        }
    }

    #[cfg(test)]
    /// Smallest value, if any.
    pub fn min(&self) -> Option<u64> {
        self.map.keys().next().copied()
    }

    /// Largest value, if any.
    pub fn max(&self) -> Option<u64> {
        self.map.values().next_back().map(|e| e - 1)
    }

    /// The first range, if any.
    pub fn first(&self) -> Option<Range<u64>> {
        self.map.iter().next().map(|(&s, &e)| s..e)
    }

    /// Removes and returns up to `max_len` values from the front of the first range.
    pub fn pop_front(&mut self, max_len: u64) -> Option<Range<u64>> {
        let (&s, &e) = self.map.iter().next()?;
        self.map.remove(&s);
        let end = if e - s > max_len {
            let cut = s + max_len;
            self.map.insert(cut, e);
            cut
        } else {
            e
        };
        Some(s..end)
    }

    /// Removes every value below `v`.
    pub fn remove_below(&mut self, v: u64) {
        self.remove(0..v);
    }

    /// Ranges in ascending order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Range<u64>> + '_ {
        self.map.iter().map(|(&s, &e)| s..e)
    }

    /// Ranges that intersect `r`, clipped to it.
    pub fn intersecting(&self, r: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let before = self
            .map
            .range(..r.start)
            .next_back()
            .filter(|(_, &e)| e > r.start)
            .map(|(&s, &e)| s..e);
        before
            .into_iter()
            .chain(self.map.range(r.start..r.end).map(|(&s, &e)| s..e))
            .map(move |x| x.start.max(r.start)..x.end.min(r.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn merges_adjacent_and_overlapping() {
        let mut s = RangeSet::new();
        assert!(s.insert(0..2));
        assert!(s.insert(4..6));
        assert!(s.insert(2..4));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..6]);
        assert!(!s.insert(1..5));
        s.remove(2..3);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..2, 3..6]);
        assert_eq!(s.pop_front(1), Some(0..1));
        assert_eq!(s.min(), Some(1));
        assert_eq!(s.max(), Some(5));
    }

    proptest! {
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec((any::<bool>(), 0u64..200, 0u64..20), 0..60)) {
            let mut s = RangeSet::new();
            let mut model = BTreeSet::new();
            for (add, start, len) in ops {
                let r = start..start + len;
                if add {
                    let new = r.clone().any(|v| !model.contains(&v));
                    prop_assert_eq!(s.insert(r.clone()), new);
                    model.extend(r);
                } else {
                    s.remove(r.clone());
                    for v in r { model.remove(&v); }
                }
                let flat: BTreeSet<u64> = s.iter().flatten().collect();
                prop_assert_eq!(&flat, &model);
                // Disjoint and non-adjacent.
                let rs: Vec<_> = s.iter().collect();
                for w in rs.windows(2) { prop_assert!(w[0].end < w[1].start); }
                for v in 0..230 { prop_assert_eq!(s.contains(v), model.contains(&v)); }
                let inter: BTreeSet<u64> = s.intersecting(50..120).flatten().collect();
                let want: BTreeSet<u64> = model.range(50..120).copied().collect();
                prop_assert_eq!(inter, want);
            }
        }
    }
}
