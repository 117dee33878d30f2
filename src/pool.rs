//! [`ThreadPoolInner`]: building a pool, its entry points, and shutting it down.
//!
//! # Shutdown protocol
//! `shutdown()` is `shutdown_timeout` without a deadline. `shutdown_timeout(d)`:
//! 1. **Close admission** (CLOSED set in the admission word): every later spawn is refused with
//!    `Shutdown`, queued `reserve()` callers get `Shutdown`. Admitted tasks keep running.
//!    Freeze the size (`closed` under the size lock, `registry::Threads`): later `resize`
//!    calls fail with `ShuttingDown`, no thread starts from here on, and the autoscaler
//!    thread is stopped and joined.
//! 2. **Wait** until the pending count is zero or `d` has passed.
//! 3. **Cancel what is left** (only if the deadline passed): set the pool's cancel flag, which
//!    every task checks at each poll, and cancel the pool's token, which wakes every suspended
//!    task through its own child token. They finish as `Cancelled`. Wait for them until
//!    [`CANCEL_GRACE`] after the deadline.
//! 4. **Terminate**: set the scheduler's terminate flag and unpark every worker. Each drains
//!    the queues (running, and so finishing, every cancelled task it finds), runs its stop
//!    hook and exits.
//! 5. **Join** the workers that exited (after a deadline: until the same `CANCEL_GRACE`
//!    bound, but at least [`EXIT_GRACE`] after terminate); a worker still stuck inside a task
//!    that never yields is detached, not joined. Anything still queued is drained on the
//!    calling thread. Stop the pool's own tokio runtime.
//!
//! So `shutdown_timeout(d)` returns within `d + 30 ms`: `d + CANCEL_GRACE + EXIT_GRACE`
//! (20 ms) plus timer and scheduling noise (measured `d + 22..30 ms`, median `d + 24 ms`), even
//! when a task blocks its thread. The tests gate `d + 30 ms` on the best of 5 tries, since a
//! loaded machine can delay a single run past it.
//!
//! Dropping the last `Arc<ThreadPoolInner>` without shutdown runs steps 1, 3 and 4 at once,
//! then joins the workers with a bound ([`DROP_JOIN_BOUND`]) unless it runs on one of them.

use std::fmt;
use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::runtime::Handle;

use crate::config::{Config, PoolBuilder};
use crate::error::ConfigError;
use crate::metrics::PoolMetrics;
use crate::monitor::{self, MonitorHandle};
use crate::registry::{self, IoThread, Shared, Started};
use crate::scheduler;
use crate::sizing;
use crate::ticker::Ticker;

/// After a shutdown deadline: how long cancelled tasks and then the workers get to finish,
/// together.
const CANCEL_GRACE: Duration = Duration::from_millis(15);
/// The least time workers get to exit after terminate, so healthy ones are joined.
const EXIT_GRACE: Duration = Duration::from_millis(5);
/// How long dropping a pool waits for its workers before detaching them.
const DROP_JOIN_BOUND: Duration = Duration::from_millis(250);

/// A pool of OS worker threads that run async tasks, with admission control, cancellation,
/// timeouts, panic isolation and bounded shutdown.
///
/// Build one with [`new`](Self::new), [`with_config`](Self::with_config) or
/// [`builder`](Self::builder); it comes in an `Arc`. Spawn onto it through a
/// [`Scope`](crate::Scope). Tasks may use tokio's timers, I/O, sync and `tokio::spawn`: a pool
/// built inside a tokio runtime uses that runtime for them, a pool built outside any runtime
/// starts a small one of its own (one thread).
///
/// **Dropping the last `Arc`** without [`shutdown`](Self::shutdown) cancels every unfinished
/// task and stops the workers (waiting briefly for them unless dropped on one of them).
///
/// ```
/// use async_rayon::{Scope, ThreadPoolInner};
///
/// let pool = ThreadPoolInner::new(2, Some(1_000));
/// let scope = Scope::new(pool.clone());
/// let sum = pool.block_on(async {
///     let handles: Vec<_> = (1..=10u64).map(|i| scope.spawn_with_handle(async move { i })).collect();
///     let results = scope.join_handles(handles).await;
///     pool.shutdown().await;
///     results.into_iter().map(|r| r.expect("task ran")).sum::<u64>()
/// });
/// assert_eq!(sum, 55);
/// ```
pub struct ThreadPoolInner {
    shared: Arc<Shared>,
    config: Config,
    name: String,
    autoscaler: Mutex<Option<Ticker>>,
    io: Mutex<Option<IoThread>>,
    io_thread_id: Option<ThreadId>,
    /// Set when a shutdown has completed step 5.
    shut_down: AtomicBool,
}

impl ThreadPoolInner {
    /// A pool with `num_threads` workers and at most `max_pending` unfinished tasks
    /// (`None`: unbounded); work stealing on, no task timeout.
    ///
    /// # Panics
    /// If `num_threads == 0` or `max_pending == Some(0)`, with the [`ConfigError`] message, or
    /// if the threads cannot be started. [`builder`](Self::builder) returns these as errors.
    pub fn new(num_threads: usize, max_pending: Option<usize>) -> Arc<ThreadPoolInner> {
        Self::with_config(Config {
            num_threads,
            max_pending,
            ..Config::default()
        })
    }

    /// A pool configured by `config`.
    ///
    /// # Panics
    /// If `config` is invalid, with the [`ConfigError`] message naming the field; use
    /// [`try_with_config`](Self::try_with_config) to get the error instead.
    pub fn with_config(config: Config) -> Arc<ThreadPoolInner> {
        match Self::try_with_config(config) {
            Ok(pool) => pool,
            Err(e) => panic!("{e}"),
        }
    }

    /// A pool configured by `config`, or the reason it cannot be built.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the invalid field, or the thread that could not start.
    pub fn try_with_config(config: Config) -> Result<Arc<ThreadPoolInner>, ConfigError> {
        Self::builder().config(config).build()
    }

    /// A [`PoolBuilder`] for the settings beyond [`Config`]: name, thread names, hooks.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    pub(crate) fn start(b: PoolBuilder) -> Result<Arc<ThreadPoolInner>, ConfigError> {
        let Started { shared, io } = registry::start(&b)?;
        let io_thread_id = io.as_ref().map(IoThread::thread_id);
        let pool = ThreadPoolInner {
            shared,
            config: b.config,
            name: b.name,
            autoscaler: Mutex::new(None),
            io: Mutex::new(io),
            io_thread_id,
            shut_down: AtomicBool::new(false),
        };
        if let Some(settings) = pool.shared.autoscale {
            let prefix = b.thread_name.unwrap_or_else(|| pool.name.clone());
            let autoscaler =
                sizing::start_autoscaler(&pool.shared, settings, format!("{prefix}-autoscale"))
                    .map_err(ConfigError::AutoscaleThread)?;
            *pool.autoscaler.lock() = Some(autoscaler);
        }
        Ok(Arc::new(pool))
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A new [`Scope`](crate::Scope) on this pool: the same as `Scope::new(pool.clone())`.
    /// Keep it while its tasks should run: dropping a scope cancels them, so a temporary
    /// (`pool.scope().spawn_with_handle(..)`) cancels its task at once.
    ///
    /// ```
    /// use async_rayon::ThreadPoolInner;
    ///
    /// let pool = ThreadPoolInner::new(2, Some(100));
    /// let scope = pool.scope();
    /// assert_eq!(pool.block_on(scope.spawn_with_handle(async { 7 })), Ok(7));
    /// ```
    pub fn scope(self: &Arc<Self>) -> crate::Scope {
        crate::Scope::new(self.clone())
    }

    /// A new [`Scope`](crate::Scope) whose tasks (and its children's) are queued in lane
    /// `priority`: workers take `High` tasks before `Normal` ones and those before `Low` ones,
    /// but give the lanes behind a fixed share of their picks so none starves
    /// ([`Priority`](crate::Priority)). `scope()` is `scope_with_priority(Priority::Normal)`.
    ///
    /// ```
    /// use async_rayon::{Priority, ThreadPoolInner};
    ///
    /// let pool = ThreadPoolInner::new(2, None);
    /// let health_checks = pool.scope_with_priority(Priority::High);
    /// assert_eq!(health_checks.priority(), Priority::High);
    /// assert_eq!(pool.block_on(health_checks.spawn_with_handle(async { "ok" })), Ok("ok"));
    /// ```
    pub fn scope_with_priority(self: &Arc<Self>, priority: crate::Priority) -> crate::Scope {
        crate::Scope::in_lane(self.clone(), priority)
    }

    /// The pool's name (the builder's `name`, default `async_rayon`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of worker threads running now. After [`resize`](Self::resize) grows the pool
    /// the new threads count at once; when it shrinks, each retiring thread counts until it
    /// leaves its loop (after the task it is running, at most
    /// [`RETIRE_CHECK_INTERVAL`](Self::RETIRE_CHECK_INTERVAL) tasks later).
    pub fn num_threads(&self) -> usize {
        self.shared.sched.idle.live()
    }

    /// A busy worker looks for a pending retirement once every this many tasks; an idle one
    /// at once.
    pub const RETIRE_CHECK_INTERVAL: u32 = scheduler::RETIRE_CHECK_INTERVAL;

    /// Grows or shrinks the pool to `n` worker threads.
    ///
    /// Growing starts the new threads before it returns (each runs the
    /// `on_thread_start` hook). Shrinking returns at once: `n` fewer workers retire, each
    /// after the task it is running (an idle one is woken for it), moving the tasks queued on
    /// it to the pool's shared queue, running `on_thread_stop` and ending its thread. No task
    /// is lost, run twice or left behind. Calls may overlap; the last one wins.
    ///
    /// # Errors
    /// [`ConfigError::ResizeOutOfRange`] if `n` is 0, above the pool's
    /// [`max_threads`](crate::PoolBuilder::max_threads), or outside the
    /// [`autoscale`](crate::PoolBuilder::autoscale) range when set;
    /// [`ConfigError::ShuttingDown`] once shutdown has begun or the pool is being dropped;
    /// [`ConfigError::ThreadSpawn`] if the operating system refuses a thread (the threads
    /// started before it stay).
    ///
    /// ```
    /// use async_rayon::{ConfigError, ThreadPoolInner};
    ///
    /// let pool = ThreadPoolInner::new(2, None);
    /// pool.resize(4).expect("grow");
    /// assert_eq!(pool.num_threads(), 4);
    /// pool.resize(1).expect("shrink");
    /// assert!(matches!(pool.resize(0), Err(ConfigError::ResizeOutOfRange { .. })));
    /// pool.block_on(pool.shutdown());
    /// assert!(matches!(pool.resize(2), Err(ConfigError::ShuttingDown)));
    /// ```
    pub fn resize(&self, n: usize) -> Result<(), ConfigError> {
        sizing::resize(&self.shared, n)
    }

    /// The bound on admitted, unfinished tasks, if any.
    pub fn max_pending(&self) -> Option<usize> {
        self.config.max_pending
    }

    /// The settings the pool was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Admitted, unfinished tasks right now (plus unspent [`SpawnPermit`](crate::SpawnPermit)s).
    ///
    /// Read while tasks are ending, it may still count one that ended during the call: it is
    /// never below the number pending at some moment of the call, and never above
    /// `max_pending`.
    pub fn pending_tasks(&self) -> usize {
        self.shared.admission.pending()
    }

    /// True once shutdown has begun (or the pool is being dropped).
    pub fn is_shutdown(&self) -> bool {
        self.shared.admission.is_closed()
    }

    /// The pool's figures now: load, outcomes so far, utilization and latency over its life.
    /// Lock-free and allocation-free, O(threads); cheap enough to call often. See
    /// [`PoolMetrics`] for the definitions.
    ///
    /// ```
    /// use async_rayon::ThreadPoolInner;
    ///
    /// let pool = ThreadPoolInner::new(2, Some(5_000));
    /// let metrics = pool.metrics_fast();
    /// println!("Utilization: {:.1}%", metrics.utilization() * 100.0);
    /// println!("Queue pressure: {}", metrics.queue_pressure());
    /// println!("Success rate: {:.2}%", metrics.success_rate() * 100.0);
    /// assert_eq!(metrics.submitted, 0);
    /// ```
    pub fn metrics_fast(&self) -> PoolMetrics {
        self.shared.metrics()
    }

    /// Calls `f` every `every` on a thread of its own (never a worker), with the pool's
    /// figures; `utilization()`, `busy_time` and the latency percentiles cover the last
    /// interval. Works with no tokio runtime around. A panic in `f` is caught (with `tracing`,
    /// an `error` event) and monitoring goes on. Stop it with
    /// [`stop_monitoring`](Self::stop_monitoring) or by dropping the handle.
    /// The monitor does not keep the pool alive.
    ///
    /// # Panics
    /// If `every` is zero, or the monitor thread cannot be started.
    ///
    /// ```
    /// use async_rayon::ThreadPoolInner;
    /// use std::time::Duration;
    ///
    /// let pool = ThreadPoolInner::new(2, Some(5_000));
    /// let monitor = pool.start_monitoring(Duration::from_millis(10), |metrics| {
    ///     println!("Active: {}, Queue: {}, Utilization: {:.1}%",
    ///              metrics.active_tasks,
    ///              metrics.queued_tasks,
    ///              metrics.utilization() * 100.0);
    /// });
    /// std::thread::sleep(Duration::from_millis(25));
    /// ThreadPoolInner::stop_monitoring(monitor);
    /// ```
    pub fn start_monitoring(
        &self,
        every: Duration,
        mut f: impl FnMut(&PoolMetrics) + Send + 'static,
    ) -> MonitorHandle {
        assert!(
            !every.is_zero(),
            "ThreadPoolInner::start_monitoring: the interval must be greater than zero"
        );
        match monitor::start(
            format!("{}-monitor", self.name),
            every,
            self.shared.clone(),
            false,
            move |m, _| f(m),
        ) {
            Ok(handle) => handle,
            Err(e) => {
                panic!("ThreadPoolInner::start_monitoring: could not start the monitor thread: {e}")
            }
        }
    }

    /// Stops a monitor: when this returns, its callback is never called again. (Dropping
    /// the handle does the same.)
    pub fn stop_monitoring(handle: MonitorHandle) {
        handle.stop();
    }

    /// Publishes the pool's figures through the [`metrics`](https://docs.rs/metrics) facade
    /// every `every`, labelled `pool` = the pool's [`name`](Self::name): counters
    /// `async_rayon_tasks_{submitted,completed,panicked,cancelled,timed_out,rejected}_total`
    /// `async_rayon_task_retries_total` and `async_rayon_task_restarts_total`; gauges `async_rayon_tasks_active`,
    /// `async_rayon_tasks_queued`, `async_rayon_tasks_pending` (admitted, unfinished),
    /// `async_rayon_max_pending` (when bounded), `async_rayon_reserve_waiters` (callers
    /// queued for room), `async_rayon_worker_threads`, `async_rayon_utilization` (over the
    /// last interval); histograms `async_rayon_task_queue_wait_seconds` and
    /// `async_rayon_task_run_seconds` (sampled units, about one in 64: the first pass records
    /// those since the pool started, each later pass those of its interval, so the recorder's
    /// histogram counts from the start like the counters; with metrics-exporter-prometheus,
    /// give it [`LATENCY_BUCKETS_SECONDS`](crate::LATENCY_BUCKETS_SECONDS) and the scrape has
    /// `_bucket`, `_sum` and `_count`). Start one export per pool. Install a recorder to see
    /// them; with none it does nothing, and the task path never touches the facade. Stopped
    /// like a monitor.
    ///
    /// # Panics
    /// As [`start_monitoring`](Self::start_monitoring).
    pub fn start_metrics_export(&self, every: Duration) -> MonitorHandle {
        let name = self.name.clone();
        let shared = self.shared.clone();
        assert!(
            !every.is_zero(),
            "ThreadPoolInner::start_metrics_export: the interval must be greater than zero"
        );
        match monitor::start(
            format!("{}-metrics", self.name),
            every,
            self.shared.clone(),
            true,
            move |m, latency| monitor::export(&name, m, latency, shared.reserve_waiters()),
        ) {
            Ok(handle) => handle,
            Err(e) => panic!(
                "ThreadPoolInner::start_metrics_export: could not start the monitor thread: {e}"
            ),
        }
    }

    /// The tokio runtime handle the pool's tasks use for timers, I/O and `tokio::spawn`.
    pub fn runtime_handle(&self) -> &Handle {
        &self.shared.rt
    }

    /// Runs `future` (anything `.await` accepts) to completion on the calling thread, with the
    /// pool's tokio runtime entered so timers and I/O work: the way a synchronous `main` uses
    /// the pool.
    ///
    /// # Panics
    /// If called from one of this pool's own worker threads (it would block the worker that
    /// may be needed to make progress), or from a thread that is running an async runtime
    /// (inside `#[tokio::main]`, `#[tokio::test]` or a tokio task, where it would stall that
    /// runtime's timers): `.await` the future there instead. From `spawn_blocking` it works.
    ///
    /// ```
    /// use async_rayon::ThreadPoolInner;
    /// use std::time::Duration;
    ///
    /// let pool = ThreadPoolInner::new(1, None);
    /// let value = pool.block_on(async {
    ///     tokio::time::sleep(Duration::from_millis(1)).await;
    ///     7
    /// });
    /// assert_eq!(value, 7);
    /// ```
    pub fn block_on<F: IntoFuture>(&self, future: F) -> F::Output {
        assert!(
            scheduler::current_worker_index(&self.shared).is_none(),
            "ThreadPoolInner::block_on called from one of the pool's own worker threads; \
             this would block the worker: .await the future instead"
        );
        // tokio's `Handle::block_on` refuses to run on a thread that is already driving an
        // async runtime (where blocking would stall that runtime's timers and tasks) by
        // panicking before the future is first polled: say which call it was.
        let polled = std::cell::Cell::new(false);
        let future = future.into_future();
        let watched = async {
            polled.set(true);
            future.await
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.shared.rt.block_on(watched)
        })) {
            Ok(output) => output,
            Err(payload) if !polled.get() => panic!(
                "ThreadPoolInner::block_on called from a thread that is running an async \
                 runtime (inside #[tokio::main], #[tokio::test] or a task): .await the future \
                 instead, or call block_on from a plain thread or spawn_blocking ({})",
                crate::unwind::panic_message(&*payload)
            ),
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }

    /// Stops admitting tasks, waits for every admitted task to finish, then stops and joins
    /// the workers. New spawns get [`TaskError::Shutdown`](crate::TaskError::Shutdown) from the
    /// moment it is called. Calling it again is harmless.
    ///
    /// # Panics
    /// If called from inside a task of this pool (it would wait for itself).
    pub async fn shutdown(&self) {
        self.shutdown_inner(None).await;
    }

    /// Like [`shutdown`](Self::shutdown), but when `timeout` passes the tasks still unfinished
    /// are cancelled (they resolve `Err(TaskError::Cancelled)`). Returns true if every task
    /// finished on its own. Returns within `timeout` + 30 ms (when its threads get the CPU)
    /// even if a task blocks its thread (that worker is detached, not joined);
    /// `shutdown_timeout(ZERO)` cancels everything at once.
    ///
    /// # Panics
    /// If called from inside a task of this pool (it would wait for itself).
    ///
    /// ```
    /// use async_rayon::{Scope, TaskError, ThreadPoolInner};
    /// use std::time::Duration;
    ///
    /// let pool = ThreadPoolInner::new(2, None);
    /// let scope = Scope::new(pool.clone());
    /// let stuck = scope.spawn_with_handle(async { tokio::time::sleep(Duration::from_secs(3600)).await });
    /// let all_finished = pool.block_on(pool.shutdown_timeout(Duration::from_millis(50)));
    /// assert!(!all_finished);
    /// assert_eq!(pool.block_on(stuck), Err(TaskError::Cancelled));
    /// ```
    pub async fn shutdown_timeout(&self, timeout: Duration) -> bool {
        self.shutdown_inner(Some(timeout)).await
    }

    async fn shutdown_inner(&self, timeout: Option<Duration>) -> bool {
        assert!(
            scheduler::current_worker_index(&self.shared).is_none(),
            "ThreadPoolInner::shutdown called from inside one of the pool's own tasks; \
             it would wait for itself: call it from outside the pool"
        );
        let deadline = timeout.map(|t| Instant::now() + t);
        let shared = &self.shared;
        // Step 1.
        shared.admission.close();
        self.freeze_size();
        // Step 2.
        let finished = self.wait_idle(deadline).await;
        // Step 3.
        let mut bound = None;
        if !finished {
            shared.cancel_all();
            let grace = Instant::now() + CANCEL_GRACE;
            self.wait_idle(Some(grace)).await;
            bound = Some(grace.max(Instant::now() + EXIT_GRACE));
        }
        // Step 4.
        shared.sched.terminate();
        // Step 5.
        self.join_workers(bound).await;
        shared.sched.drain_here();
        if let Some(io) = self.io.lock().take() {
            io.stop();
        }
        self.shut_down.store(true, Ordering::SeqCst);
        finished
    }

    /// Waits until no task is pending, or `deadline`. True if none is pending.
    async fn wait_idle(&self, deadline: Option<Instant>) -> bool {
        let adm = &self.shared.admission;
        let Some(deadline) = deadline else {
            adm.wait_idle().await;
            return true;
        };
        if adm.pending() == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        let sleep = self.sleep_until(deadline);
        let idle = adm.wait_idle();
        tokio::pin!(idle);
        tokio::pin!(sleep);
        futures::future::select(idle, sleep).await;
        adm.pending() == 0
    }

    /// A timer on the pool's runtime, so shutdown works whatever executor awaits it.
    fn sleep_until(&self, deadline: Instant) -> tokio::time::Sleep {
        let _enter = self.shared.rt.enter();
        tokio::time::sleep_until(deadline.into())
    }

    /// Waits for workers to exit (until `bound`, if any), joins those that did and detaches
    /// the rest.
    async fn join_workers(&self, bound: Option<Instant>) {
        // No thread starts once `closed` is set (step 1), so this count is final.
        let n = self.shared.threads.lock().started;
        while self.shared.sched.num_exited() < n {
            if bound.is_some_and(|b| Instant::now() >= b) {
                break;
            }
            self.sleep_until(Instant::now() + Duration::from_millis(1))
                .await;
        }
        let all_exited = self.shared.sched.num_exited() >= n;
        let workers = std::mem::take(&mut self.shared.threads.lock().handles);
        for w in workers {
            if all_exited || w.is_finished() {
                let _ = w.join();
            }
        }
    }
}

impl ThreadPoolInner {
    /// Step 1 of shutdown and of drop, after admission closed: no resize from now on (so the
    /// count of threads started is final) and the autoscaler thread ended.
    fn freeze_size(&self) {
        self.shared.threads.lock().closed = true;
        let autoscaler = self.autoscaler.lock().take();
        if let Some(mut a) = autoscaler {
            a.stop();
        }
    }
}

impl Drop for ThreadPoolInner {
    fn drop(&mut self) {
        let shared = &self.shared;
        if !self.shut_down.load(Ordering::SeqCst) {
            shared.admission.close();
            self.freeze_size();
            let (started, workers) = {
                let mut list = shared.threads.lock();
                (list.started, std::mem::take(&mut list.handles))
            };
            shared.cancel_all();
            shared.sched.terminate();
            let here = thread::current().id();
            let on_own_thread = scheduler::current_worker_index(shared).is_some()
                || self.io_thread_id == Some(here);
            if !on_own_thread {
                let all = shared.sched.wait_exited_blocking(started, DROP_JOIN_BOUND);
                for w in workers {
                    if all || w.is_finished() {
                        let _ = w.join();
                    }
                }
                shared.sched.drain_here();
            }
        }
        if let Some(io) = self.io.lock().take() {
            io.stop();
        }
    }
}

impl fmt::Debug for ThreadPoolInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolInner")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("pending_tasks", &self.pending_tasks())
            .field("queued", &self.shared.sched.queued())
            .field("metrics", &self.metrics_fast())
            .field("shutdown", &self.is_shutdown())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Scope, TaskError};

    /// Waits up to a minute (Miri is slow) for `cond`; returns whether it held.
    fn within_a_minute(mut cond: impl FnMut() -> bool) -> bool {
        let end = std::time::Instant::now() + Duration::from_secs(60);
        while !cond() && std::time::Instant::now() < end {
            thread::sleep(Duration::from_millis(1));
        }
        cond()
    }

    /// Resizing under Miri: threads start into free slots, retire (moving their deque's
    /// tasks on and giving the slot back from their thread-local context as they exit), and
    /// a later thread takes the slot again. Kept small: Miri is slow.
    #[test]
    fn resize_life_cycle() {
        let pool = ThreadPoolInner::builder()
            .num_threads(1)
            .max_threads(2)
            .build()
            .expect("valid settings");
        let scope = Scope::new(pool.clone());
        let run = |n: u64| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    scope.spawn_with_handle(async move {
                        tokio::task::yield_now().await;
                        i
                    })
                })
                .collect();
            pool.block_on(scope.join_handles(handles))
                .into_iter()
                .map(|r| r.expect("task ran"))
                .sum::<u64>()
        };
        pool.resize(2).expect("grow");
        assert_eq!(run(8), 28);
        pool.resize(1).expect("shrink");
        within_a_minute(|| pool.num_threads() == 1);
        assert_eq!(pool.num_threads(), 1);
        pool.resize(2).expect("grow into the returned slot");
        assert_eq!(run(8), 28);
        pool.block_on(pool.shutdown());
    }

    /// The life of a pool under Miri: spawn (the crate's one `unsafe`), wake, cancel, panic,
    /// shutdown. Kept small: Miri is slow.
    #[test]
    fn pool_life_cycle() {
        let pool = ThreadPoolInner::new(2, Some(8));
        let scope = Scope::new(pool.clone());
        let results = pool.block_on(async {
            let a = scope.spawn_with_handle(async { 1 });
            let b = scope.spawn_with_handle(async {
                tokio::task::yield_now().await;
                2
            });
            let c = scope.spawn_with_handle(async { panic!("boom") });
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let d = scope.spawn_with_handle(async move { rx.await.map(|()| 4).unwrap_or(0) });
            d.cancel();
            let r = (a.await, b.await, c.await, d.await);
            drop(tx);
            r
        });
        assert_eq!(results.0, Ok(1));
        assert_eq!(results.1, Ok(2));
        assert_eq!(results.2, Err(TaskError::Panicked("boom".into())));
        assert_eq!(results.3, Err(TaskError::Cancelled));
        assert!(pool.block_on(pool.shutdown_timeout(Duration::from_secs(5))));
    }

    /// Small detached tasks leave their allocations to the pool's spawners
    /// (`scheduler::reclaim`); spawns free them, and dropping the pool frees the rest, so
    /// nothing keeps the pool's shared state alive afterwards.
    #[test]
    fn detached_tasks_are_freed_by_spawns_and_by_termination() {
        use std::sync::Barrier;
        let pool = ThreadPoolInner::new(2, None);
        let scope = Scope::new(pool.clone());
        let shared = Arc::downgrade(&pool.shared);
        let kept = || pool.shared.sched.reclaim.len();
        // Holds both workers until `release`, so that tasks spawned meanwhile wait.
        let hold_workers = || {
            let (started, release) = (Arc::new(Barrier::new(3)), Arc::new(Barrier::new(3)));
            let blockers: Vec<_> = (0..2)
                .map(|_| {
                    let (s, r) = (started.clone(), release.clone());
                    scope.spawn_with_handle(async move {
                        s.wait();
                        r.wait();
                    })
                })
                .collect();
            started.wait();
            (release, blockers)
        };

        // Every handle is dropped before its task runs, so every task is detached.
        let (release, blockers) = hold_workers();
        for i in 0..100 {
            drop(scope.spawn_with_handle(async move { i }));
        }
        release.wait();
        pool.block_on(scope.join_handles(blockers));
        pool.block_on(scope.wait());
        // Workers hand their partial batches over when they park: allow for that.
        within_a_minute(|| kept() >= 100 / crate::scheduler::reclaim::BATCH);
        let before = kept();
        assert!(
            before >= 100 / crate::scheduler::reclaim::BATCH,
            "{before} batches kept"
        );

        // Each spawn frees one batch (the tasks spawned here do not run meanwhile).
        let (release, blockers) = hold_workers();
        for _ in 0..before {
            drop(scope.spawn_with_handle(async {}));
        }
        assert_eq!(kept(), 0, "spawns did not free the kept batches");
        release.wait();
        pool.block_on(scope.join_handles(blockers));

        drop(scope);
        drop(pool);
        // The drop joins the workers for at most `DROP_JOIN_BOUND`; under Miri's virtual
        // clock a worker's exit (which gives its cached task blocks back) can take longer,
        // and a worker holds the pool until it has exited. What must hold is that nothing
        // keeps it after that.
        within_a_minute(|| shared.upgrade().is_none());
        assert!(
            shared.upgrade().is_none(),
            "a kept task reference outlived the pool"
        );
    }
}
