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

/// Sums of histograms, for percentiles.
pub(super) struct Merged([u64; BUCKETS]);

impl Merged {
    pub(super) fn new() -> Self {
        Merged([0; BUCKETS])
    }

    pub(super) fn add(&mut self, h: &Histogram) {
        for (m, b) in self.0.iter_mut().zip(h.buckets.iter()) {
            *m += b.load(Relaxed);
        }
    }

    pub(super) fn summary(&self) -> LatencySummary {
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
}
