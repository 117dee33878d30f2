//! Pool configuration: the [`Config`] presets, the [`PoolBuilder`], and validation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ConfigError;
use crate::pool::ThreadPoolInner;

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
}

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

    /// Validates the settings, then starts the worker threads.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field that is out of range, or the thread or runtime that
    /// could not be started.
    pub fn build(self) -> Result<Arc<ThreadPoolInner>, ConfigError> {
        self.config.validate()?;
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
            .finish()
    }
}
