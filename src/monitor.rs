//! Monitoring: a thread of its own that hands a [`PoolMetrics`] to a callback at a fixed
//! interval, and the export of those figures through the `metrics` facade.
//!
//! # Stop protocol
//! 1. The monitor thread waits on a condvar for `every` or until `stopped` is set.
//! 2. [`MonitorHandle`]'s drop (or `stop_monitoring`) sets `stopped` under the lock, notifies,
//!    then joins the thread. The thread checks `stopped` after every wait, before calling the
//!    callback, so once the join returns the callback is never called again.
//! 3. Called from inside the callback itself (on the monitor thread), the stop sets the flag
//!    and returns without joining; the loop ends when the callback returns.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::metrics::PoolMetrics;
use crate::registry::Shared;

struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
}

/// A running monitor, from [`ThreadPoolInner::start_monitoring`](crate::ThreadPoolInner::start_monitoring)
/// or [`start_metrics_export`](crate::ThreadPoolInner::start_metrics_export).
///
/// **Dropping it stops the monitor**, as does
/// [`ThreadPoolInner::stop_monitoring`](crate::ThreadPoolInner::stop_monitoring): once either
/// returns, the callback is never called again.
#[must_use = "dropping a MonitorHandle stops the monitor"]
pub struct MonitorHandle {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

impl MonitorHandle {
    pub(crate) fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        *self.stop.stopped.lock() = true;
        self.stop.cv.notify_all();
        if let Some(t) = self.thread.take()
            && t.thread().id() != thread::current().id()
        {
            let _ = t.join();
        }
    }
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

impl std::fmt::Debug for MonitorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorHandle")
            .field("running", &!*self.stop.stopped.lock())
            .finish()
    }
}

/// Starts the monitor thread. `f` gets metrics whose `busy_time` and `window` cover the last
/// interval only.
pub(crate) fn start(
    thread_name: String,
    every: Duration,
    pool: Arc<Shared>,
    mut f: impl FnMut(&PoolMetrics) + Send + 'static,
) -> std::io::Result<MonitorHandle> {
    let stop = Arc::new(Stop {
        stopped: Mutex::new(false),
        cv: Condvar::new(),
    });
    let s = stop.clone();
    let thread = thread::Builder::new().name(thread_name).spawn(move || {
        let mut last = pool.metrics();
        loop {
            {
                let mut stopped = s.stopped.lock();
                if !*stopped {
                    let _ = s.cv.wait_for(&mut stopped, every);
                }
                if *stopped {
                    return;
                }
            }
            let now = pool.metrics();
            let mut interval = now.clone();
            interval.busy_time = now.busy_time.saturating_sub(last.busy_time);
            interval.window = now.window.saturating_sub(last.window);
            last = now;
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&interval))) {
                eprintln!(
                    "async_rayon: monitoring callback panicked (monitoring goes on): {}",
                    crate::unwind::panic_message(&*p)
                );
            }
        }
    })?;
    Ok(MonitorHandle {
        stop,
        thread: Some(thread),
    })
}

/// Publishes `m` through the `metrics` facade, labelled `pool = name`.
pub(crate) fn export(name: &str, m: &PoolMetrics) {
    let pool = ("pool", name.to_string());
    let counters = [
        ("async_rayon_tasks_submitted_total", m.submitted),
        ("async_rayon_tasks_completed_total", m.completed),
        ("async_rayon_tasks_panicked_total", m.panicked),
        ("async_rayon_tasks_cancelled_total", m.cancelled),
        ("async_rayon_tasks_timed_out_total", m.timed_out),
        ("async_rayon_tasks_rejected_total", m.rejected),
        ("async_rayon_task_retries_total", m.retries),
    ];
    for (key, value) in counters {
        metrics::counter!(key, std::slice::from_ref(&pool)).absolute(value);
    }
    let gauges = [
        ("async_rayon_tasks_active", m.active_tasks as f64),
        ("async_rayon_tasks_queued", m.queued_tasks as f64),
        ("async_rayon_worker_threads", m.num_threads as f64),
        ("async_rayon_utilization", m.utilization()),
    ];
    for (key, value) in gauges {
        metrics::gauge!(key, std::slice::from_ref(&pool)).set(value);
    }
    // Latency as a summary: one gauge per quantile.
    for (key, summary) in [
        ("async_rayon_task_queue_wait_seconds", m.queue_wait),
        ("async_rayon_task_run_seconds", m.run_time),
    ] {
        for (q, v) in [("0.5", summary.p50), ("0.99", summary.p99)] {
            let labels = [pool.clone(), ("quantile", q.to_string())];
            metrics::gauge!(key, &labels).set(v.as_secs_f64());
        }
    }
}
