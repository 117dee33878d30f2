//! Pool configuration: the [`Config`] presets, the [`PoolBuilder`], and validation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ConfigError;
use crate::pool::ThreadPoolInner;
use crate::scheduler::MAX_WORKERS;

/// The four settings that shape a pool. Build a pool from it with
/// [`ThreadPoolInner::with_config`] or [`ThreadPoolInner::try_with_config`]; use
/// [`ThreadPoolInner::builder`] for names and thread hooks as well.
///
/// ```
/// use async_rayon::{Config, ThreadPoolInner};
/// use std::time::Duration;
///
/// let pool = ThreadPoolInner::with_config(Config {
///     num_threads: 2,
///     max_pending: Some(50_000),
///     enable_work_stealing: true,
///     task_timeout: Some(Duration::from_secs(30)),
/// });
/// assert_eq!(pool.num_threads(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Number of OS worker threads that poll tasks. Must be at least 1.
    pub num_threads: usize,
    /// Most admitted, unfinished tasks (queued, running or suspended) at any time; `None`
    /// for no bound. `Some(0)` is invalid.
    pub max_pending: Option<usize>,
    /// Whether an idle worker steals queued tasks from its peers' queues. With `false`, a
    /// task woken on a worker stays on that worker (tasks from outside the pool still go to
    /// whichever worker is free first).
    pub enable_work_stealing: bool,
    /// Longest a task may run, from its first poll to its end; past it the task is cancelled
    /// and resolves to [`TaskError::TimedOut`](crate::TaskError::TimedOut). `None` for no limit.
    pub task_timeout: Option<Duration>,
}

/// The `max_pending` both presets use.
const PRESET_MAX_PENDING: usize = 10_000;

/// The CPUs this process may use (affinity and cgroup quota), at least 1.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// For CPU-bound work: one worker per core, `max_pending` 10 000, stealing on, no timeout.
    ///
    /// "Cores" is [`std::thread::available_parallelism`]: the CPUs this process may run on,
    /// after its affinity mask and cgroup CPU quota (1 if it cannot be read).
    ///
    /// ```
    /// use async_rayon::Config;
    /// let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    /// assert_eq!(Config::cpu_bound().num_threads, cores);
    /// ```
    pub fn cpu_bound() -> Self {
        Config {
            num_threads: cores(),
            max_pending: Some(PRESET_MAX_PENDING),
            enable_work_stealing: true,
            task_timeout: None,
        }
    }

    /// For I/O-bound work: two workers per core, `max_pending` 10 000, stealing on, no timeout.
    ///
    /// ```
    /// use async_rayon::Config;
    /// let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    /// assert_eq!(Config::io_bound().num_threads, cores * 2);
    /// ```
    pub fn io_bound() -> Self {
        Config {
            num_threads: cores() * 2,
            ..Config::cpu_bound()
        }
    }

    /// Checks every field; the error names the first one that is out of range.
    ///
    /// ```
    /// use async_rayon::Config;
    /// let bad = Config { max_pending: Some(0), ..Config::default() };
    /// assert!(bad.validate().unwrap_err().to_string().contains("max_pending"));
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.num_threads == 0 {
            return Err(ConfigError::ZeroThreads);
        }
        if self.max_pending == Some(0) {
            return Err(ConfigError::ZeroMaxPending);
        }
        if self.task_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroTaskTimeout);
        }
        Ok(())
    }
}

impl Default for Config {
    /// The same as [`Config::cpu_bound`].
    fn default() -> Self {
        Config::cpu_bound()
    }
}

/// A callback run on each worker thread as it starts or stops.
pub(crate) type ThreadHook = Arc<dyn Fn() + Send + Sync + 'static>;

/// A panic handler: see [`PoolBuilder::panic_handler`].
pub(crate) type PanicHandler = Arc<dyn Fn(crate::TaskId, &str) + Send + Sync + 'static>;

/// Builds a pool with a name, thread names and thread hooks beside the [`Config`] fields.
///
/// ```
/// use async_rayon::ThreadPoolInner;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// let started = Arc::new(AtomicUsize::new(0));
/// let seen = started.clone();
/// let pool = ThreadPoolInner::builder()
///     .name("ingest")
///     .num_threads(2)
///     .max_pending(1_000)
///     .thread_name("ingest-worker")
///     .on_thread_start(move || { seen.fetch_add(1, Ordering::SeqCst); })
///     .build()
///     .expect("valid configuration");
/// assert_eq!(pool.name(), "ingest");
/// ```
#[must_use = "a builder does nothing until .build() is called"]
pub struct PoolBuilder {
    pub(crate) config: Config,
    pub(crate) name: String,
    pub(crate) thread_name: Option<String>,
    pub(crate) stack_size: Option<usize>,
    pub(crate) on_thread_start: Option<ThreadHook>,
    pub(crate) on_thread_stop: Option<ThreadHook>,
    pub(crate) runtime: Option<tokio::runtime::Handle>,
    pub(crate) panic_handler: Option<PanicHandler>,
    max_threads: Option<usize>,
    autoscale_range: Option<(usize, usize)>,
    autoscale_windows: (Duration, Duration),
}

/// The worker slots a pool has when [`PoolBuilder::max_threads`] is not set, unless
/// `num_threads` or the autoscale `max` is larger.
pub const DEFAULT_MAX_THREADS: usize = 64;

/// The pool name used when none is given; also the metrics label.
pub(crate) const DEFAULT_NAME: &str = "async_rayon";

impl PoolBuilder {
    pub(crate) fn new() -> Self {
        PoolBuilder {
            config: Config::default(),
            name: DEFAULT_NAME.to_string(),
            thread_name: None,
            stack_size: None,
            on_thread_start: None,
            on_thread_stop: None,
            runtime: None,
            panic_handler: None,
            max_threads: None,
            autoscale_range: None,
            autoscale_windows: (
                crate::sizing::DEFAULT_GROW_AFTER,
                crate::sizing::DEFAULT_SHRINK_AFTER,
            ),
        }
    }

    /// Starts from all four fields of `config` (the default is [`Config::cpu_bound`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The pool's name, used as the thread-name prefix unless
    /// [`thread_name`](Self::thread_name) is set, and as the `pool` label on exported
    /// metrics. Default `async_rayon`.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Number of worker threads (must be at least 1).
    pub fn num_threads(mut self, n: usize) -> Self {
        self.config.num_threads = n;
        self
    }

    /// Bound on admitted, unfinished tasks (must be at least 1).
    pub fn max_pending(mut self, n: usize) -> Self {
        self.config.max_pending = Some(n);
        self
    }

    /// Removes the bound on admitted, unfinished tasks.
    pub fn unbounded(mut self) -> Self {
        self.config.max_pending = None;
        self
    }

    /// Whether idle workers steal from their peers.
    pub fn enable_work_stealing(mut self, enabled: bool) -> Self {
        self.config.enable_work_stealing = enabled;
        self
    }

    /// Longest a task may run from its first poll (must be greater than zero).
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.config.task_timeout = Some(timeout);
        self
    }

    /// Prefix of the worker threads' names: they are called `"{prefix}-{index}"`.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = Some(prefix.into());
        self
    }

    /// Stack size of each worker thread, in bytes (default: the standard library's, usually
    /// 2 MiB). A size the operating system refuses makes [`build`](Self::build) fail with
    /// [`ConfigError::ThreadSpawn`].
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// The tokio runtime whose timers and I/O the pool's tasks use. Without it, the pool
    /// uses the runtime current when [`build`](Self::build) runs, and outside any runtime it
    /// starts a small current-thread runtime of its own on one thread (`{name}-io`).
    ///
    /// ```
    /// use async_rayon::ThreadPoolInner;
    /// use std::time::Duration;
    ///
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// let pool = ThreadPoolInner::builder()
    ///     .num_threads(2)
    ///     .runtime(rt.handle().clone())
    ///     .build()
    ///     .expect("valid settings");
    /// let scope = pool.scope();
    /// // Tasks' timers run on `rt`, which something must drive: here `rt.block_on`.
    /// let slept = rt.block_on(scope.spawn_with_handle(async {
    ///     tokio::time::sleep(Duration::from_millis(1)).await;
    ///     "slept"
    /// }));
    /// assert_eq!(slept, Ok("slept"));
    /// ```
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Runs `f` on each worker thread when it starts, before it polls any task.
    pub fn on_thread_start(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_thread_start = Some(Arc::new(f));
        self
    }

    /// Runs `f` on each worker thread as it stops. When
    /// [`shutdown`](ThreadPoolInner::shutdown) returns, it has run on every worker.
    pub fn on_thread_stop(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_thread_stop = Some(Arc::new(f));
        self
    }

    /// Calls `f` with the task's id and the panic message each time a task's future panics
    /// (while polled or dropped); for an item of a bulk call, the id is that of the batch
    /// task that carried it. The task resolves to `Err(TaskError::Panicked)` either way.
    /// Without a handler the pool reports nothing itself (Rust's panic hook has already
    /// printed the panic); with the `tracing` feature each panic is also a `warn` event
    /// with the task id. A panic inside `f` is caught and ignored.
    ///
    /// ```
    /// use async_rayon::ThreadPoolInner;
    /// use std::sync::{Arc, Mutex};
    ///
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let pool = ThreadPoolInner::builder()
    ///     .num_threads(1)
    ///     .panic_handler(move |id, msg| log.lock().unwrap().push((id, msg.to_string())))
    ///     .build()
    ///     .expect("valid configuration");
    /// let scope = pool.scope();
    /// let handle = scope.spawn_with_handle(async { panic!("bad input") });
    /// let id = handle.id();
    /// assert!(pool.block_on(handle).is_err_and(|e| e.is_panic()));
    /// assert_eq!(seen.lock().unwrap().as_slice(), &[(id, "bad input".to_string())]);
    /// ```
    pub fn panic_handler(
        mut self,
        f: impl Fn(crate::TaskId, &str) + Send + Sync + 'static,
    ) -> Self {
        self.panic_handler = Some(Arc::new(f));
        self
    }

    /// The most worker threads the pool can have at once, and so the largest size
    /// [`ThreadPoolInner::resize`] accepts. Default: the largest of `num_threads`, the
    /// autoscale `max` and [`DEFAULT_MAX_THREADS`]. Each slot costs a few kilobytes (a
    /// deque and a row of counters) whether or not a thread runs in it.
    ///
    /// ```
    /// use async_rayon::{ConfigError, ThreadPoolInner};
    ///
    /// let pool = ThreadPoolInner::builder().num_threads(2).max_threads(4).build().unwrap();
    /// pool.resize(4).expect("within max_threads");
    /// assert!(matches!(pool.resize(5), Err(ConfigError::ResizeOutOfRange { max: 4, .. })));
    /// # pool.block_on(pool.shutdown());
    /// ```
    pub fn max_threads(mut self, n: usize) -> Self {
        self.max_threads = Some(n);
        self
    }

    /// Lets the pool size itself between `min` and `max` threads. It starts with
    /// `num_threads` clamped to that range, then:
    /// - grows by one thread when tasks have waited in the queues with no worker idle for a
    ///   whole `grow_after` window (default 100 ms), repeatedly while that lasts, up to `max`;
    /// - shrinks when some workers have sat idle for a whole `shrink_after` window (default
    ///   10 s), by the fewest idle during it, down to `min`.
    ///
    /// The windows are set with [`autoscale_windows`](Self::autoscale_windows). A thread of
    /// the pool's (`{prefix}-autoscale`) samples it four times per shorter window. Each change
    /// shows in [`ThreadPoolInner::num_threads`], in
    /// [`PoolMetrics::num_threads`](crate::PoolMetrics::num_threads) and in the exported
    /// `async_rayon_worker_threads` gauge, and with the `tracing` feature is an `info`
    /// event. [`ThreadPoolInner::resize`] still works, within `min..=max`.
    ///
    /// # Errors (from [`build`](Self::build))
    /// [`ConfigError::Autoscale`] if `min == 0` or `min > max`.
    ///
    /// ```
    /// use async_rayon::ThreadPoolInner;
    /// use std::time::Duration;
    ///
    /// let pool = ThreadPoolInner::builder()
    ///     .num_threads(1)
    ///     .autoscale(1, 8)
    ///     .autoscale_windows(Duration::from_millis(50), Duration::from_secs(30))
    ///     .build()
    ///     .expect("valid settings");
    /// assert_eq!(pool.num_threads(), 1);
    /// # pool.block_on(pool.shutdown());
    /// ```
    pub fn autoscale(mut self, min: usize, max: usize) -> Self {
        self.autoscale_range = Some((min, max));
        self
    }

    /// The windows of [`autoscale`](Self::autoscale): how long the pool must be saturated
    /// (tasks queued, no worker idle) before it grows by a thread, and how long workers must
    /// sit idle before they retire. Both must be greater than zero.
    pub fn autoscale_windows(mut self, grow_after: Duration, shrink_after: Duration) -> Self {
        self.autoscale_windows = (grow_after, shrink_after);
        self
    }

    /// The autoscale settings, if autoscaling is on.
    pub(crate) fn autoscale_settings(&self) -> Option<crate::sizing::Autoscale> {
        let (min, max) = self.autoscale_range?;
        let (grow_after, shrink_after) = self.autoscale_windows;
        Some(crate::sizing::Autoscale {
            min,
            max,
            grow_after,
            shrink_after,
        })
    }

    /// How many threads the pool starts with.
    pub(crate) fn initial_threads(&self) -> usize {
        match self.autoscale_range {
            // Not `clamp`, which panics when `min > max`: this also runs before validation
            // (the builder's `Debug`).
            Some((min, max)) => self.config.num_threads.max(min).min(max),
            None => self.config.num_threads,
        }
    }

    /// The number of worker slots (see [`max_threads`](Self::max_threads)).
    pub(crate) fn capacity(&self) -> usize {
        let at_least = self.at_least_threads();
        self.max_threads
            .unwrap_or_else(|| at_least.clamp(DEFAULT_MAX_THREADS, MAX_WORKERS))
    }

    fn at_least_threads(&self) -> usize {
        let max = self.autoscale_range.map_or(0, |(_, max)| max);
        self.initial_threads().max(max)
    }

    /// The checks of the settings beyond [`Config::validate`].
    fn validate_sizing(&self) -> Result<(), ConfigError> {
        if let Some((min, max)) = self.autoscale_range {
            if min == 0 {
                return Err(ConfigError::Autoscale("min must be at least 1, got 0"));
            }
            if min > max {
                return Err(ConfigError::Autoscale("min must be at most max"));
            }
            let (grow, shrink) = self.autoscale_windows;
            if grow.is_zero() || shrink.is_zero() {
                return Err(ConfigError::Autoscale(
                    "autoscale_windows must both be greater than zero",
                ));
            }
        }
        let at_least = self.at_least_threads();
        let capacity = self.capacity();
        if capacity < at_least || capacity > MAX_WORKERS {
            return Err(ConfigError::MaxThreads {
                max_threads: capacity,
                at_least,
                limit: MAX_WORKERS,
            });
        }
        Ok(())
    }

    /// Validates the settings, then starts the worker threads.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field that is out of range, or the thread or runtime that
    /// could not be started.
    pub fn build(self) -> Result<Arc<ThreadPoolInner>, ConfigError> {
        self.config.validate()?;
        self.validate_sizing()?;
        ThreadPoolInner::start(self)
    }
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("config", &self.config)
            .field("name", &self.name)
            .field("thread_name", &self.thread_name)
            .field("stack_size", &self.stack_size)
            .field("on_thread_start", &self.on_thread_start.is_some())
            .field("on_thread_stop", &self.on_thread_stop.is_some())
            .field("panic_handler", &self.panic_handler.is_some())
            .field("max_threads", &self.capacity())
            .field("autoscale", &self.autoscale_range)
            .field("autoscale_windows", &self.autoscale_windows)
            .finish()
    }
}
