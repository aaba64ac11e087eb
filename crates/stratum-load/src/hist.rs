//! Latency histograms with bounded memory: log-linear buckets over microseconds (exact below
//! 64 µs, then 32 sub-buckets per power of two, so a reported percentile is within about 3% of
//! the true value), recorded lock-free from many tasks ([`AtomicHistogram`]) and merged across
//! worker processes ([`Histogram`], serialized sparsely).

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Values below this are their own bucket (µs).
const LINEAR: u64 = 64;
/// Sub-buckets per power of two above [`LINEAR`].
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two covered above [`LINEAR`] (2^6 .. 2^46 µs, about 2.2 years: every value fits).
const OCTAVES: u64 = 40;
/// Number of buckets.
pub(crate) const BUCKETS: usize = (LINEAR + OCTAVES * SUB) as usize;

/// Bucket index of `us` microseconds.
pub(crate) fn bucket_of(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = 63 - u64::from(us.leading_zeros()); // >= 6
    let octave = (exp - 6).min(OCTAVES - 1);
    let exp = octave + 6;
    let sub = ((us >> (exp - u64::from(SUB_BITS))) & (SUB - 1)).min(SUB - 1);
    (LINEAR + octave * SUB + sub) as usize
}

/// Lowest and highest value (µs, inclusive) of bucket `i`.
pub(crate) fn bucket_bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < LINEAR {
        return (i, i);
    }
    let octave = (i - LINEAR) / SUB;
    let sub = (i - LINEAR) % SUB;
    let exp = octave + 6;
    let width = 1u64 << (exp - u64::from(SUB_BITS));
    let low = (1u64 << exp) + sub * width;
    (low, low + width - 1)
}

/// A histogram many tasks record into at once (relaxed atomic adds; no locks).
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    counts: Box<[AtomicU64]>,
    sum_us: AtomicU64,
    max_us: AtomicU64,
    min_us: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
            min_us: AtomicU64::new(u64::MAX),
        }
    }
}

impl AtomicHistogram {
    /// Records one duration (rounded down to whole microseconds).
    pub(crate) fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if let Some(c) = self.counts.get(bucket_of(us)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        self.min_us.fetch_min(us, Ordering::Relaxed);
    }

    /// A copy of the current counts.
    pub(crate) fn snapshot(&self) -> Histogram {
        let mut h = Histogram::default();
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                h.buckets.push((i as u32, n));
                h.count += n;
            }
        }
        h.sum_us = self.sum_us.load(Ordering::Relaxed);
        h.max_us = self.max_us.load(Ordering::Relaxed);
        h.min_us = if h.count == 0 {
            0
        } else {
            self.min_us.load(Ordering::Relaxed)
        };
        h
    }
}

/// A histogram snapshot: sparse `(bucket, count)` pairs sorted by bucket, plus exact count,
/// sum, minimum and maximum (µs). This is what workers send to the coordinator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Histogram {
    /// Non-empty buckets, ascending.
    pub(crate) buckets: Vec<(u32, u64)>,
    /// Number of recorded values.
    pub(crate) count: u64,
    /// Sum of the recorded values, µs (saturating).
    pub(crate) sum_us: u64,
    /// Smallest recorded value, µs (0 when empty).
    pub(crate) min_us: u64,
    /// Largest recorded value, µs.
    pub(crate) max_us: u64,
}

/// Percentiles of a [`Histogram`], microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// Number of values.
    pub(crate) count: u64,
    /// Arithmetic mean, µs.
    pub(crate) mean_us: f64,
    /// Median, µs.
    pub(crate) p50_us: u64,
    /// 90th percentile, µs.
    pub(crate) p90_us: u64,
    /// 99th percentile, µs.
    pub(crate) p99_us: u64,
    /// 99.9th percentile, µs.
    pub(crate) p999_us: u64,
    /// Largest value, µs.
    pub(crate) max_us: u64,
}

impl Histogram {
    /// Adds `other`'s counts to this one.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        let mut merged = Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let (mut a, mut b) = (
            self.buckets.iter().peekable(),
            other.buckets.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&(ia, na)), Some(&&(ib, nb))) => {
                    if ia == ib {
                        merged.push((ia, na + nb));
                        a.next();
                        b.next();
                    } else if ia < ib {
                        merged.push((ia, na));
                        a.next();
                    } else {
                        merged.push((ib, nb));
                        b.next();
                    }
                }
                (Some(&&x), None) => {
                    merged.push(x);
                    a.next();
                }
                (None, Some(&&x)) => {
                    merged.push(x);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.buckets = merged;
        self.min_us = if self.count == 0 {
            other.min_us
        } else {
            self.min_us.min(other.min_us)
        };
        self.count += other.count;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The value at quantile `q` (0..=1), µs: the smallest bucket whose cumulative count reaches
    /// `ceil(q * count)`, reported as that bucket's midpoint clamped to the observed min/max.
    /// 0 for an empty histogram.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for &(i, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                let (lo, hi) = bucket_bounds(i as usize);
                return (lo + (hi - lo) / 2).clamp(self.min_us, self.max_us);
            }
        }
        self.max_us
    }

    /// Count, mean and the usual percentiles.
    pub(crate) fn summary(&self) -> Summary {
        Summary {
            count: self.count,
            mean_us: if self.count == 0 {
                0.0
            } else {
                self.sum_us as f64 / self.count as f64
            },
            p50_us: self.quantile(0.50),
            p90_us: self.quantile(0.90),
            p99_us: self.quantile(0.99),
            p999_us: self.quantile(0.999),
            max_us: self.max_us,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn buckets_cover_every_value_and_are_ordered() {
        let mut last = 0;
        for us in [
            0u64,
            1,
            63,
            64,
            65,
            100,
            127,
            128,
            1_000,
            65_535,
            1 << 40,
            u64::MAX,
        ] {
            let b = bucket_of(us);
            assert!(b < BUCKETS, "{us} -> {b}");
            assert!(b >= last, "{us}");
            last = b;
            let (lo, hi) = bucket_bounds(b);
            if us < (1 << 46) {
                assert!(lo <= us && us <= hi, "{us} not in [{lo}, {hi}]");
                // relative width at most 1/32
                assert!((hi - lo) as f64 <= lo as f64 / 32.0 + 1.0, "{us}");
            }
        }
    }

    #[test]
    fn percentiles_of_uniform_values() {
        let h = AtomicHistogram::default();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot().summary();
        assert_eq!(s.count, 10_000);
        assert_eq!(s.max_us, 10_000);
        assert!((s.mean_us - 5_000.5).abs() < 1e-9);
        for (got, want) in [
            (s.p50_us, 5_000.0),
            (s.p99_us, 9_900.0),
            (s.p999_us, 9_990.0),
        ] {
            let err = (got as f64 - want).abs() / want;
            assert!(err < 0.035, "got {got}, want ~{want}");
        }
    }

    #[test]
    fn small_values_are_exact_and_empty_is_zero() {
        let h = AtomicHistogram::default();
        assert_eq!(h.snapshot().summary(), Summary::default());
        for _ in 0..99 {
            h.record(Duration::from_micros(10));
        }
        h.record(Duration::from_micros(50));
        let s = h.snapshot().summary();
        assert_eq!((s.p50_us, s.p99_us, s.p999_us, s.max_us), (10, 10, 50, 50));
    }

    #[test]
    fn merge_equals_recording_into_one() {
        let (a, b, all) = (
            AtomicHistogram::default(),
            AtomicHistogram::default(),
            AtomicHistogram::default(),
        );
        for us in 0..5_000u64 {
            let d = Duration::from_micros(us * 7 % 3_001);
            if us % 3 == 0 { &a } else { &b }.record(d);
            all.record(d);
        }
        let mut merged = a.snapshot();
        merged.merge(&b.snapshot());
        assert_eq!(merged, all.snapshot());
        // merging into an empty histogram copies min
        let mut empty = Histogram::default();
        empty.merge(&merged);
        assert_eq!(empty, merged);
    }

    #[test]
    fn sparse_json_round_trip() {
        let h = AtomicHistogram::default();
        h.record(Duration::from_millis(3));
        let snap = h.snapshot();
        let json = serde_json::to_string(&snap).unwrap();
        let back: Histogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snap);
        assert_eq!(back.buckets.len(), 1);
    }
}
