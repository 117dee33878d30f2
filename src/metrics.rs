//! Task counters, busy time and latency histograms, sharded per worker so that no cache line
//! is written by every task; [`PoolMetrics`] is their sum at one moment.
//!
//! # Sharding
//! Each worker owns one [`CachePadded`] row and is its only writer, so it bumps its counters
//! with a plain load and store (no locked instruction). Threads that are not workers of the
//! pool (a spawner outside the pool, a shutdown draining leftovers) share one extra row and
//! use `fetch_add`. Readers sum the rows: a snapshot taken while tasks run may be a few tasks
//! stale, but every counter only grows, and an outcome is counted before its task stops
//! counting as pending, so when the pool is idle
//! `submitted == completed + panicked + cancelled + timed_out` exactly.
//!
//! # Utilization
//! A worker reads the clock only when it starts a *run streak* (finds a task after having
//! none) and when it ends one (finds none), adding the streak to its `busy_ns`. While a streak
//! runs, `busy_since_ns` holds its start so a reader can add the part not yet counted.
//!
//! # Latency
//! One unit in [`SAMPLE_EVERY`] (per spawning thread) is sampled: its queue wait (spawn to
//! first poll) and run time (first poll to finish) go into per-worker log-scale histograms
//! ([`Histogram`]), merged on read. Unsampled units pay one thread-local increment.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

/// How a unit ended. Exactly one is recorded per admitted unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Panicked,
    Cancelled,
    TimedOut,
}

impl Outcome {
    /// The outcome a unit's result stands for.
    pub(crate) fn of<T>(result: &Result<T, crate::TaskError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Completed,
            Err(crate::TaskError::Panicked(_)) => Outcome::Panicked,
            Err(crate::TaskError::TimedOut) => Outcome::TimedOut,
            Err(_) => Outcome::Cancelled,
        }
    }

    pub(crate) const ALL: [Outcome; 4] = [
        Outcome::Completed,
        Outcome::Panicked,
        Outcome::Cancelled,
        Outcome::TimedOut,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One unit in this many has its latency sampled.
pub(crate) const SAMPLE_EVERY: u32 = 64;

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
    fn record(&self, ns: u64, single_writer: bool) {
        let b = &self.buckets[bucket_of(ns)];
        if single_writer {
            b.store(b.load(Relaxed) + 1, Relaxed);
        } else {
            b.fetch_add(1, Relaxed);
        }
    }
}

/// Sums of histograms, for percentiles.
struct Merged([u64; BUCKETS]);

impl Merged {
    fn new() -> Self {
        Merged([0; BUCKETS])
    }

    fn add(&mut self, h: &Histogram) {
        for (m, b) in self.0.iter_mut().zip(h.buckets.iter()) {
            *m += b.load(Relaxed);
        }
    }

    fn summary(&self) -> LatencySummary {
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

/// Percentiles of one latency distribution, from sampled tasks (about one in 64). Values are
/// the lower bound of a log-scale bucket: within 25 % below the true value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Number of sampled tasks behind the figures.
    pub samples: u64,
}

#[derive(Default)]
pub(crate) struct Row {
    submitted: AtomicU64,
    completed: AtomicU64,
    panicked: AtomicU64,
    cancelled: AtomicU64,
    timed_out: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
    busy_ns: AtomicU64,
    /// Start of the current run streak (ns since the pool's epoch + 1), or 0 if idle.
    busy_since: AtomicU64,
    queue_wait: Histogram,
    run_time: Histogram,
}

impl Row {
    fn field(&self, outcome: Outcome) -> &AtomicU64 {
        match outcome {
            Outcome::Completed => &self.completed,
            Outcome::Panicked => &self.panicked,
            Outcome::Cancelled => &self.cancelled,
            Outcome::TimedOut => &self.timed_out,
        }
    }
}

pub(crate) struct Counters {
    workers: Box<[CachePadded<Row>]>,
    shared: CachePadded<Row>,
    epoch: Instant,
}

/// Adds `n` to a counter only the calling worker writes.
#[inline]
fn bump_owned(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed) + n, Relaxed);
}

thread_local! {
    static SAMPLE_TICK: Cell<u32> = const { Cell::new(0) };
}

impl Counters {
    pub(crate) fn new(num_workers: usize) -> Self {
        Counters {
            workers: (0..num_workers).map(|_| CachePadded::default()).collect(),
            shared: CachePadded::default(),
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the pool started (never 0, so 0 can mean "none").
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// The `Instant` a [`now_ns`](Self::now_ns) reading stands for.
    pub(crate) fn instant_of(&self, ns: u64) -> Instant {
        let since = std::time::Duration::from_nanos(ns.saturating_sub(1));
        // A deadline past what `Instant` can hold is as good as never.
        self.epoch
            .checked_add(since)
            .unwrap_or_else(|| self.epoch + std::time::Duration::from_secs(100 * 365 * 86_400))
    }

    /// `worker` is the index of the calling thread if it is one of this pool's workers.
    #[inline]
    fn bump(&self, worker: Option<usize>, n: u64, pick: impl Fn(&Row) -> &AtomicU64) {
        match worker.and_then(|i| self.workers.get(i)) {
            Some(row) => bump_owned(pick(row), n),
            None => {
                pick(&self.shared).fetch_add(n, Relaxed);
            }
        }
    }

    pub(crate) fn record(&self, worker: Option<usize>, outcome: Outcome) {
        self.bump(worker, 1, |r| r.field(outcome));
    }

    /// Counts `n` units that ended with `outcome` (a batch's items).
    pub(crate) fn record_n(&self, worker: Option<usize>, outcome: Outcome, n: u64) {
        if n > 0 {
            self.bump(worker, n, |r| r.field(outcome));
        }
    }

    pub(crate) fn submitted(&self, worker: Option<usize>) {
        self.bump(worker, 1, |r| &r.submitted);
    }

    /// Counts `n` admitted units at once (a batch).
    pub(crate) fn submitted_n(&self, worker: Option<usize>, n: u64) {
        self.bump(worker, n, |r| &r.submitted);
    }

    pub(crate) fn rejected(&self, worker: Option<usize>) {
        self.bump(worker, 1, |r| &r.rejected);
    }

    pub(crate) fn retried(&self, worker: Option<usize>) {
        self.bump(worker, 1, |r| &r.retries);
    }

    /// Whether the unit being created now is sampled for latency; if so, its start time.
    #[inline]
    pub(crate) fn sample_start(&self) -> u64 {
        let sampled = SAMPLE_TICK
            .try_with(|t| {
                let n = t.get().wrapping_add(1);
                t.set(n);
                n % SAMPLE_EVERY == 0
            })
            .unwrap_or(false);
        if sampled { self.now_ns() } else { 0 }
    }

    pub(crate) fn record_queue_wait(&self, worker: Option<usize>, ns: u64) {
        self.histogram(worker, ns, |r| &r.queue_wait);
    }

    pub(crate) fn record_run_time(&self, worker: Option<usize>, ns: u64) {
        self.histogram(worker, ns, |r| &r.run_time);
    }

    fn histogram(&self, worker: Option<usize>, ns: u64, pick: impl Fn(&Row) -> &Histogram) {
        match worker.and_then(|i| self.workers.get(i)) {
            Some(row) => pick(row).record(ns, true),
            None => pick(&self.shared).record(ns, false),
        }
    }

    /// A worker starts a run streak.
    #[inline]
    pub(crate) fn busy_start(&self, worker: usize) {
        if let Some(row) = self.workers.get(worker) {
            row.busy_since.store(self.now_ns(), Relaxed);
        }
    }

    /// A worker ends a run streak.
    #[inline]
    pub(crate) fn busy_end(&self, worker: usize) {
        if let Some(row) = self.workers.get(worker) {
            let since = row.busy_since.swap(0, Relaxed);
            if since != 0 {
                bump_owned(&row.busy_ns, self.now_ns().saturating_sub(since));
            }
        }
    }

    /// Sums every row. O(workers); no allocation, no lock.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let now = self.now_ns();
        let mut s = Snapshot {
            uptime: Duration::from_nanos(now - 1),
            ..Snapshot::default()
        };
        let mut queue_wait = Merged::new();
        let mut run_time = Merged::new();
        for row in self.workers.iter().map(|r| &**r).chain([&*self.shared]) {
            s.submitted += row.submitted.load(Relaxed);
            s.completed += row.completed.load(Relaxed);
            s.panicked += row.panicked.load(Relaxed);
            s.cancelled += row.cancelled.load(Relaxed);
            s.timed_out += row.timed_out.load(Relaxed);
            s.rejected += row.rejected.load(Relaxed);
            s.retries += row.retries.load(Relaxed);
            let since = row.busy_since.load(Relaxed);
            let ongoing = if since == 0 {
                0
            } else {
                now.saturating_sub(since)
            };
            s.busy_ns += row.busy_ns.load(Relaxed) + ongoing;
            queue_wait.add(&row.queue_wait);
            run_time.add(&row.run_time);
        }
        s.queue_wait = queue_wait.summary();
        s.run_time = run_time.summary();
        s
    }
}

/// Raw sums, from which [`PoolMetrics`] is built.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Snapshot {
    pub(crate) uptime: Duration,
    pub(crate) submitted: u64,
    pub(crate) completed: u64,
    pub(crate) panicked: u64,
    pub(crate) cancelled: u64,
    pub(crate) timed_out: u64,
    pub(crate) rejected: u64,
    pub(crate) retries: u64,
    pub(crate) busy_ns: u64,
    pub(crate) queue_wait: LatencySummary,
    pub(crate) run_time: LatencySummary,
}

/// What a pool is doing: load now, outcomes so far, latency. From
/// [`ThreadPoolInner::metrics_fast`](crate::ThreadPoolInner::metrics_fast) (lock-free,
/// allocation-free, O(threads)) or passed to a
/// [`start_monitoring`](crate::ThreadPoolInner::start_monitoring) callback.
///
/// Definitions:
/// - `submitted`: units admitted (tasks, or items of bulk calls). `rejected`: spawns refused
///   because `max_pending` was reached (not in `submitted`; refusals after shutdown began are
///   not rejections).
/// - `completed`, `panicked`, `cancelled`, `timed_out`: finished units by outcome. `timed_out`
///   is `task_timeout` only; cancellation by `cancel()`, `await_timeout`, a scope or shutdown
///   is `cancelled`. When the pool is idle,
///   `submitted == completed + panicked + cancelled + timed_out` exactly.
/// - `queued_tasks`: admitted tasks waiting in a run queue now. `active_tasks`: admitted,
///   unfinished and not queued (being polled or suspended). A batch of `batch_process` is one
///   queue entry but counts all its unfinished items as active.
///
/// ```
/// use async_rayon::{Scope, ThreadPoolInner};
///
/// let pool = ThreadPoolInner::new(2, Some(100));
/// let scope = Scope::new(pool.clone());
/// pool.block_on(scope.join_handles((0..10).map(|i| scope.spawn_with_handle(async move { i })).collect()));
/// let m = pool.metrics_fast();
/// assert_eq!(m.submitted, 10);
/// assert_eq!(m.completed, 10);
/// assert_eq!(m.success_rate(), 1.0);
/// println!("utilization {:.1}%, queue pressure {:.2}", m.utilization() * 100.0, m.queue_pressure());
/// ```
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct PoolMetrics {
    /// Worker threads.
    pub num_threads: usize,
    /// The bound on admitted, unfinished units, if any.
    pub max_pending: Option<usize>,
    /// Admitted, unfinished and not queued: being polled or suspended.
    pub active_tasks: usize,
    /// Admitted and waiting in a run queue.
    pub queued_tasks: usize,
    /// Units admitted.
    pub submitted: u64,
    /// Units that produced their value.
    pub completed: u64,
    /// Units that panicked (in `poll` or `Drop`).
    pub panicked: u64,
    /// Units cancelled (task, scope, `await_timeout`, shutdown).
    pub cancelled: u64,
    /// Units past `task_timeout`.
    pub timed_out: u64,
    /// Spawns refused because `max_pending` was reached.
    pub rejected: u64,
    /// Retries made by [`with_retry`](crate::with_retry) functions on this pool's workers.
    pub retries: u64,
    /// Worker time spent running tasks within [`window`](Self::window), summed over workers.
    pub busy_time: Duration,
    /// The time the figures cover: the pool's life for `metrics_fast`, the last interval in a
    /// monitoring callback (where `busy_time` is that interval's too).
    pub window: Duration,
    /// Spawn to first poll, of sampled units over the pool's life.
    pub queue_wait: LatencySummary,
    /// First poll to finish, of sampled units over the pool's life.
    pub run_time: LatencySummary,
}

impl PoolMetrics {
    pub(crate) fn from_snapshot(
        s: &Snapshot,
        num_threads: usize,
        max_pending: Option<usize>,
        pending: usize,
        queued: usize,
    ) -> PoolMetrics {
        PoolMetrics {
            num_threads,
            max_pending,
            active_tasks: pending.saturating_sub(queued),
            queued_tasks: queued.min(pending),
            submitted: s.submitted,
            completed: s.completed,
            panicked: s.panicked,
            cancelled: s.cancelled,
            timed_out: s.timed_out,
            rejected: s.rejected,
            retries: s.retries,
            busy_time: Duration::from_nanos(s.busy_ns),
            window: s.uptime,
            queue_wait: s.queue_wait,
            run_time: s.run_time,
        }
    }

    /// Units finished, by any outcome.
    pub fn finished(&self) -> u64 {
        self.completed + self.panicked + self.cancelled + self.timed_out
    }

    /// Share of worker-thread time spent running tasks over [`window`](Self::window), in
    /// [0, 1]. Measured in wall-clock time from when a worker finds a task until it finds
    /// none, so with more workers than cores, time a worker is preempted mid-run counts as
    /// busy.
    pub fn utilization(&self) -> f64 {
        let capacity = self.window.as_secs_f64() * self.num_threads as f64;
        if capacity <= 0.0 {
            return 0.0;
        }
        (self.busy_time.as_secs_f64() / capacity).clamp(0.0, 1.0)
    }

    /// (active + queued) / `max_pending`, in [0, 1]; 0.0 when unbounded.
    pub fn queue_pressure(&self) -> f64 {
        match self.max_pending {
            Some(max) if max > 0 => {
                ((self.active_tasks + self.queued_tasks) as f64 / max as f64).clamp(0.0, 1.0)
            }
            _ => 0.0,
        }
    }

    /// completed / (completed + panicked + cancelled + timed_out), in [0, 1]; 1.0 when none
    /// finished.
    pub fn success_rate(&self) -> f64 {
        match self.finished() {
            0 => 1.0,
            n => self.completed as f64 / n as f64,
        }
    }
}

impl fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolMetrics")
            .field("num_threads", &self.num_threads)
            .field("max_pending", &self.max_pending)
            .field("active_tasks", &self.active_tasks)
            .field("queued_tasks", &self.queued_tasks)
            .field("submitted", &self.submitted)
            .field("completed", &self.completed)
            .field("panicked", &self.panicked)
            .field("cancelled", &self.cancelled)
            .field("timed_out", &self.timed_out)
            .field("rejected", &self.rejected)
            .field("retries", &self.retries)
            .field("utilization", &self.utilization())
            .field("queue_pressure", &self.queue_pressure())
            .field("success_rate", &self.success_rate())
            .field("queue_wait", &self.queue_wait)
            .field("run_time", &self.run_time)
            .finish()
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
