//! Monitoring: a thread of its own (a [`Ticker`], whose doc gives the stop protocol) that hands
//! a [`PoolMetrics`] to a callback at a fixed interval, and the export of those figures through
//! the `metrics` facade.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{Latency, PoolMetrics};
use crate::registry::Shared;
use crate::ticker::Ticker;

/// A running monitor, from [`ThreadPoolInner::start_monitoring`](crate::ThreadPoolInner::start_monitoring)
/// or [`start_metrics_export`](crate::ThreadPoolInner::start_metrics_export).
///
/// **Dropping it stops the monitor**, as does
/// [`ThreadPoolInner::stop_monitoring`](crate::ThreadPoolInner::stop_monitoring): once either
/// returns, the callback is never called again.
#[must_use = "dropping a MonitorHandle stops the monitor"]
pub struct MonitorHandle {
    ticker: Ticker,
}

impl MonitorHandle {
    pub(crate) fn stop(mut self) {
        self.ticker.stop();
    }
}

impl std::fmt::Debug for MonitorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorHandle")
            .field("running", &self.ticker.is_running())
            .finish()
    }
}

/// Starts the monitor thread. `f` gets metrics whose `busy_time`, `window` and latency
/// percentiles cover the last interval only, with that interval's latency histograms. With
/// `from_zero`, the first interval's latency covers every sample since the pool started (an
/// exporter whose histograms, like its counters, count from the start).
pub(crate) fn start(
    thread_name: String,
    every: Duration,
    pool: Arc<Shared>,
    from_zero: bool,
    mut f: impl FnMut(&PoolMetrics, &Latency) + Send + 'static,
) -> std::io::Result<MonitorHandle> {
    let (mut last, mut last_latency) = pool.metrics_with_latency();
    if from_zero {
        last_latency = Latency::zero();
    }
    let ticker = Ticker::start(thread_name, every, move || {
        let (now, now_latency) = pool.metrics_with_latency();
        let mut interval = now.clone();
        interval.busy_time = now.busy_time.saturating_sub(last.busy_time);
        interval.window = now.window.saturating_sub(last.window);
        let latency = now_latency.since(&last_latency);
        interval.queue_wait = latency.queue_wait.summary();
        interval.run_time = latency.run_time.summary();
        (last, last_latency) = (now, now_latency);
        // A panic in the callback does not stop monitoring (Rust's panic hook has printed
        // it; with `tracing` it is also an event).
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&interval, &latency))) {
            #[cfg(feature = "tracing")]
            tracing::error!(
                target: "async_rayon",
                "monitoring callback panicked (monitoring goes on): {}",
                crate::unwind::panic_message(&*p)
            );
            #[cfg(not(feature = "tracing"))]
            drop(p);
        }
        true
    })?;
    Ok(MonitorHandle { ticker })
}

/// Bucket bounds, in seconds, that suit the latency histograms the pool exports
/// (`async_rayon_task_queue_wait_seconds`, `async_rayon_task_run_seconds`): give them to your
/// exporter, e.g. `PrometheusBuilder::set_buckets_for_metric(Matcher::Prefix("async_rayon_task_".into()), LATENCY_BUCKETS_SECONDS)`.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0,
];

/// Publishes `m` and the interval's latency histograms through the `metrics` facade,
/// labelled `pool = name`. `waiters` is the number of callers queued for room.
pub(crate) fn export(name: &str, m: &PoolMetrics, latency: &Latency, waiters: usize) {
    let pool = ("pool", name.to_string());
    let counters = [
        ("async_rayon_tasks_submitted_total", m.submitted),
        ("async_rayon_tasks_completed_total", m.completed),
        ("async_rayon_tasks_panicked_total", m.panicked),
        ("async_rayon_tasks_cancelled_total", m.cancelled),
        ("async_rayon_tasks_timed_out_total", m.timed_out),
        ("async_rayon_tasks_rejected_total", m.rejected),
        ("async_rayon_task_retries_total", m.retries),
        ("async_rayon_task_restarts_total", m.restarts),
    ];
    for (key, value) in counters {
        metrics::counter!(key, std::slice::from_ref(&pool)).absolute(value);
    }
    let mut gauges = vec![
        ("async_rayon_tasks_active", m.active_tasks as f64),
        ("async_rayon_tasks_queued", m.queued_tasks as f64),
        (
            "async_rayon_tasks_pending",
            (m.active_tasks + m.queued_tasks) as f64,
        ),
        ("async_rayon_reserve_waiters", waiters as f64),
        ("async_rayon_worker_threads", m.num_threads as f64),
        ("async_rayon_utilization", m.utilization()),
    ];
    if let Some(max) = m.max_pending {
        gauges.push(("async_rayon_max_pending", max as f64));
    }
    for (key, value) in gauges {
        metrics::gauge!(key, std::slice::from_ref(&pool)).set(value);
    }
    // Latency as histograms: each sample of the interval, by bucket (the middle of our
    // bucket's range stands for its samples, so `_sum` is within 12.5 %).
    for (key, merged) in [
        ("async_rayon_task_queue_wait_seconds", &latency.queue_wait),
        ("async_rayon_task_run_seconds", &latency.run_time),
    ] {
        let histogram = metrics::histogram!(key, std::slice::from_ref(&pool));
        for (value, count) in merged.buckets() {
            histogram.record_many(value, usize::try_from(count).unwrap_or(usize::MAX));
        }
    }
}
