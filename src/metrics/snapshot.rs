//! What a reader gets: [`Snapshot`] (the raw sums of every row), the public [`PoolMetrics`]
//! built from it with the figures derived from them (utilization, queue pressure, success
//! rate), and [`LatencySummary`].

use std::fmt;
use std::time::Duration;

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
    pub(crate) restarts: u64,
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
    /// Worker threads running when read (see
    /// [`ThreadPoolInner::num_threads`](crate::ThreadPoolInner::num_threads)).
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
    /// Restarts of supervised tasks ([`Scope::supervise`](crate::Scope::supervise)) on this
    /// pool.
    pub restarts: u64,
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
            restarts: s.restarts,
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
    /// busy. The capacity is [`num_threads`](Self::num_threads) (the size when read) times
    /// the window, so after a resize within the window the figure is approximate.
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
            .field("restarts", &self.restarts)
            .field("utilization", &self.utilization())
            .field("queue_pressure", &self.queue_pressure())
            .field("success_rate", &self.success_rate())
            .field("queue_wait", &self.queue_wait)
            .field("run_time", &self.run_time)
            .finish()
    }
}
