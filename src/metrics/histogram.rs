//! The latency histograms: a log-scale [`Histogram`] per row, written by one worker (or, for
//! the shared row, with `fetch_add`), and [`Merged`], their sum on read, which yields the
//! percentiles of a [`LatencySummary`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::snapshot::LatencySummary;

/// Sub-buckets per power of two in a [`Histogram`]: values are kept to within 25 %.
const SUB: usize = 4;
/// Buckets cover 1 ns .. 2^40 ns (about 18 minutes); longer values land in the last one.
const BUCKETS: usize = 40 * SUB;

/// A log-scale histogram of nanosecond values: bucket `SUB * floor(log2 v) + next two bits`.
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    let v = ns.max(1);
    let log = 63 - v.leading_zeros() as usize;
    let sub = if log >= 2 {
        ((v >> (log - 2)) & 0b11) as usize
    } else {
        ((v << (2 - log)) & 0b11) as usize
    };
    (log * SUB + sub).min(BUCKETS - 1)
}

/// The smallest value a bucket holds (its lower bound).
fn bucket_floor(b: usize) -> u64 {
    let (log, sub) = (b / SUB, (b % SUB) as u64);
    if log >= 2 {
        (1u64 << log) + (sub << (log - 2))
    } else {
        1u64 << log
    }
}

impl Histogram {
    pub(super) fn record(&self, ns: u64, single_writer: bool) {
        let b = &self.buckets[bucket_of(ns)];
        if single_writer {
            b.store(b.load(Relaxed) + 1, Relaxed);
        } else {
            b.fetch_add(1, Relaxed);
        }
    }
}

/// Sums of histograms, for percentiles; the difference of two sums is the distribution of
/// the samples recorded between them (a monitoring interval).
#[derive(Clone)]
pub(crate) struct Merged([u64; BUCKETS]);

impl Merged {
    pub(crate) fn new() -> Self {
        Merged([0; BUCKETS])
    }

    /// The samples recorded since `earlier` (a previous reading of the same histograms).
    pub(crate) fn since(&self, earlier: &Merged) -> Merged {
        let mut d = Merged::new();
        for ((d, now), then) in d.0.iter_mut().zip(&self.0).zip(&earlier.0) {
            *d = now.saturating_sub(*then);
        }
        d
    }

    /// Each non-empty bucket as (a value inside it, in seconds: the middle of its range;
    /// samples in it), for a histogram of the `metrics` facade.
    pub(crate) fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(b, n)| {
                let low = bucket_floor(b) as f64;
                let high = if b + 1 < BUCKETS {
                    bucket_floor(b + 1) as f64
                } else {
                    low
                };
                ((low + high) / 2.0 / 1e9, *n)
            })
    }

    pub(super) fn add(&mut self, h: &Histogram) {
        for (m, b) in self.0.iter_mut().zip(h.buckets.iter()) {
            *m += b.load(Relaxed);
        }
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let samples: u64 = self.0.iter().sum();
        let at = |q: f64| -> Duration {
            if samples == 0 {
                return Duration::ZERO;
            }
            let rank = ((samples as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (b, n) in self.0.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Duration::from_nanos(bucket_floor(b));
                }
            }
            Duration::from_nanos(bucket_floor(BUCKETS - 1))
        };
        LatencySummary {
            p50: at(0.50),
            p99: at(0.99),
            samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [
            1u64,
            2,
            3,
            4,
            5,
            7,
            8,
            100,
            1_000,
            1_500,
            1_000_000,
            123_456_789,
        ] {
            let b = bucket_of(v);
            assert!(b >= last, "bucket of {v}");
            last = b;
            let floor = bucket_floor(b);
            assert!(
                floor <= v && v - floor <= v / 4 + 1,
                "{v} in bucket with floor {floor}"
            );
        }
    }

    #[test]
    fn percentiles() {
        let h = Histogram::default();
        for v in 1..=100u64 {
            h.record(v * 1_000, true);
        }
        let mut m = Merged::new();
        m.add(&h);
        let s = m.summary();
        assert_eq!(s.samples, 100);
        let p50 = s.p50.as_nanos() as u64;
        let p99 = s.p99.as_nanos() as u64;
        assert!((37_000..=50_000).contains(&p50), "{p50}");
        assert!((74_000..=99_000).contains(&p99), "{p99}");
    }

    #[test]
    fn an_interval_holds_only_its_own_samples() {
        let h = Histogram::default();
        for _ in 0..100_000 {
            h.record(1_000, true);
        }
        let mut before = Merged::new();
        before.add(&h);
        for _ in 0..100 {
            h.record(50_000_000, true);
        }
        let mut after = Merged::new();
        after.add(&h);
        let interval = after.since(&before);
        let s = interval.summary();
        assert_eq!(s.samples, 100);
        // Over the whole life p99 is still the 1 µs bulk; over the interval it is the spike.
        assert!(after.summary().p99 < std::time::Duration::from_micros(2));
        assert!(s.p50 >= std::time::Duration::from_millis(40), "{s:?}");
        let buckets: Vec<_> = interval.buckets().collect();
        assert_eq!(buckets.len(), 1);
        let (value, count) = buckets[0];
        assert_eq!(count, 100);
        assert!((0.04..0.06).contains(&value), "{value}");
    }
}
