//! Task counters, sharded per worker so that no cache line is written by every task.
//!
//! Each worker owns one [`CachePadded`] row and is its only writer, so it bumps its counters
//! with a plain load and store (no locked instruction). Threads that are not workers of the
//! pool (a spawner outside the pool, a shutdown draining leftovers) share one extra row and
//! use `fetch_add`. Readers sum the rows; a snapshot taken while tasks run may be a few
//! tasks stale, but every counter only grows.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;

/// How a task ended. Exactly one is recorded per admitted task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Panicked,
    Cancelled,
    TimedOut,
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

/// Sums of all rows at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) submitted: u64,
    pub(crate) completed: u64,
    pub(crate) panicked: u64,
    pub(crate) cancelled: u64,
    pub(crate) timed_out: u64,
    pub(crate) rejected: u64,
    pub(crate) retries: u64,
}

pub(crate) struct Counters {
    workers: Box<[CachePadded<Row>]>,
    shared: CachePadded<Row>,
}

/// Adds one to a counter only the calling worker writes.
#[inline]
fn bump_owned(c: &AtomicU64) {
    c.store(c.load(Relaxed) + 1, Relaxed);
}

impl Counters {
    pub(crate) fn new(num_workers: usize) -> Self {
        Counters {
            workers: (0..num_workers).map(|_| CachePadded::default()).collect(),
            shared: CachePadded::default(),
        }
    }

    /// `worker` is the index of the calling thread if it is one of this pool's workers.
    #[inline]
    fn bump(&self, worker: Option<usize>, pick: impl Fn(&Row) -> &AtomicU64) {
        match worker.and_then(|i| self.workers.get(i)) {
            Some(row) => bump_owned(pick(row)),
            None => {
                pick(&self.shared).fetch_add(1, Relaxed);
            }
        }
    }

    pub(crate) fn record(&self, worker: Option<usize>, outcome: Outcome) {
        self.bump(worker, |r| r.field(outcome));
    }

    pub(crate) fn submitted(&self, worker: Option<usize>) {
        self.bump(worker, |r| &r.submitted);
    }

    /// Counts `n` admitted units at once (a batch).
    pub(crate) fn submitted_n(&self, worker: Option<usize>, n: u64) {
        match worker.and_then(|i| self.workers.get(i)) {
            Some(row) => row
                .submitted
                .store(row.submitted.load(Relaxed) + n, Relaxed),
            None => {
                self.shared.submitted.fetch_add(n, Relaxed);
            }
        }
    }

    pub(crate) fn rejected(&self, worker: Option<usize>) {
        self.bump(worker, |r| &r.rejected);
    }

    pub(crate) fn retried(&self, worker: Option<usize>) {
        self.bump(worker, |r| &r.retries);
    }

    pub(crate) fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for row in self.workers.iter().map(|r| &**r).chain([&*self.shared]) {
            t.submitted += row.submitted.load(Relaxed);
            t.completed += row.completed.load(Relaxed);
            t.panicked += row.panicked.load(Relaxed);
            t.cancelled += row.cancelled.load(Relaxed);
            t.timed_out += row.timed_out.load(Relaxed);
            t.rejected += row.rejected.load(Relaxed);
            t.retries += row.retries.load(Relaxed);
        }
        t
    }
}
