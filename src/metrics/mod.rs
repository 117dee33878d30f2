//! Task counters, busy time and latency histograms, sharded per worker so that no cache line
//! is written by every task; [`PoolMetrics`] is their sum at one moment.
//!
//! # Sharding
//! Each worker owns one [`CachePadded`](crossbeam_utils::CachePadded) row and is its only
//! writer, so it bumps its counters with a plain load and store (no locked instruction).
//! Threads that are not workers of the pool (a spawner outside the pool, a shutdown draining
//! leftovers) share one extra row and use `fetch_add`. Readers sum the rows: a snapshot taken
//! while tasks run may be a few tasks stale, but every counter only grows, and an outcome is
//! counted before its task stops counting as pending, so when the pool is idle
//! `submitted == completed + panicked + cancelled + timed_out` exactly.
//!
//! # Utilization
//! A worker reads the clock only when it starts a *run streak* (finds a task after having
//! none) and when it ends one (finds none), adding the streak to its `busy_ns`. While a streak
//! runs, `busy_since` holds its start so a reader can add the part not yet counted.
//!
//! # Latency
//! One unit in [`SAMPLE_EVERY`](counters::SAMPLE_EVERY) (per spawning thread) is sampled:
//! its queue wait (spawn to first poll) and run time (first poll to finish) go into
//! per-worker log-scale histograms ([`Histogram`](histogram::Histogram)), merged on read.
//! Unsampled units pay one thread-local increment. The merged sums only grow, so a monitor
//! keeps the previous reading and gets an interval's distribution as the difference
//! ([`Latency::since`]): that is what its callback's percentiles and the exported histograms
//! cover.
//!
//! # Layout
//! - [`counters`]: [`Outcome`], the per-worker [`Row`](counters::Row)s and [`Counters`],
//!   which records into them, keeps the pool's clock and sums the rows into a
//!   [`Snapshot`](snapshot::Snapshot).
//! - [`histogram`]: the log-scale [`Histogram`](histogram::Histogram) and its merge into
//!   percentiles.
//! - [`snapshot`]: the raw sums, [`PoolMetrics`] with its derived figures (utilization, queue
//!   pressure, success rate), and [`LatencySummary`].

mod counters;
mod histogram;
mod snapshot;

pub(crate) use counters::{Counters, Latency, Outcome};
pub use snapshot::{LatencySummary, PoolMetrics};
