//! The per-worker counter rows and their recording: [`Outcome`], [`Row`], [`Counters`] (the
//! rows plus the pool's clock), the latency sampling tick, and the sum of the rows into a
//! [`Snapshot`].

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use super::histogram::{Histogram, Merged};
use super::snapshot::Snapshot;

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

#[derive(Default)]
pub(crate) struct Row {
    submitted: AtomicU64,
    completed: AtomicU64,
    panicked: AtomicU64,
    cancelled: AtomicU64,
    timed_out: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
    restarts: AtomicU64,
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

    /// Counts one restart of a supervised task (`Scope::supervise`).
    pub(crate) fn restarted(&self, worker: Option<usize>) {
        self.bump(worker, 1, |r| &r.restarts);
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

    /// Sums the first `rows` worker rows and the shared row, and returns the summed latency
    /// histograms behind its percentiles (queue wait, run time): a monitor keeps them to
    /// compute an interval's. O(rows); no allocation, no lock. Rows past those of worker
    /// slots ever used were never written, so the caller passes that count.
    pub(crate) fn snapshot_with_latency(&self, rows: usize) -> (Snapshot, Latency) {
        let now = self.now_ns();
        let mut s = Snapshot {
            uptime: Duration::from_nanos(now - 1),
            ..Snapshot::default()
        };
        let mut queue_wait = Merged::new();
        let mut run_time = Merged::new();
        for row in self
            .workers
            .iter()
            .take(rows)
            .map(|r| &**r)
            .chain([&*self.shared])
        {
            s.submitted += row.submitted.load(Relaxed);
            s.completed += row.completed.load(Relaxed);
            s.panicked += row.panicked.load(Relaxed);
            s.cancelled += row.cancelled.load(Relaxed);
            s.timed_out += row.timed_out.load(Relaxed);
            s.rejected += row.rejected.load(Relaxed);
            s.retries += row.retries.load(Relaxed);
            s.restarts += row.restarts.load(Relaxed);
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
        (
            s,
            Latency {
                queue_wait,
                run_time,
            },
        )
    }
}

/// The summed latency histograms of a reading.
#[derive(Clone)]
pub(crate) struct Latency {
    pub(crate) queue_wait: Merged,
    pub(crate) run_time: Merged,
}

impl Latency {
    /// No samples.
    pub(crate) fn zero() -> Latency {
        Latency {
            queue_wait: Merged::new(),
            run_time: Merged::new(),
        }
    }

    /// The samples recorded since `earlier`.
    pub(crate) fn since(&self, earlier: &Latency) -> Latency {
        Latency {
            queue_wait: self.queue_wait.since(&earlier.queue_wait),
            run_time: self.run_time.since(&earlier.run_time),
        }
    }
}
