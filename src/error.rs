//! Error types: how a task ended badly, why a spawn was refused, why a pool
//! could not be built.

use std::fmt;
use std::io;

/// Why a task did not produce its value.
///
/// Every [`TaskHandle`](crate::TaskHandle) resolves exactly once, to `Ok(value)` or to one of
/// these. An `Err` is only reported after the task's future has been dropped, so any
/// resources the future owned are released by the time you see it.
///
/// ```
/// use async_rayon::{Scope, TaskError, ThreadPoolInner};
///
/// let pool = ThreadPoolInner::new(1, None);
/// let scope = Scope::new(pool.clone());
/// let handle = scope.spawn_with_handle(async { panic!("boom") });
/// let result: Result<(), TaskError> = pool.block_on(handle);
/// assert_eq!(result, Err(TaskError::Panicked("boom".into())));
/// assert!(result.unwrap_err().is_panic());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskError {
    /// The task was cancelled: by [`TaskHandle::cancel`](crate::TaskHandle::cancel), by its
    /// [`Scope`](crate::Scope) being cancelled or dropped, or by a shutdown that ran out of time.
    Cancelled,
    /// The task ran longer than its timeout (the pool's `task_timeout`, or
    /// [`TaskHandle::await_timeout`](crate::TaskHandle::await_timeout)) and was cancelled.
    TimedOut,
    /// The task's future panicked while being polled or dropped; the panic message.
    Panicked(PanicMessage),
    /// The pool had `max_pending` unfinished tasks, so the task was refused and its future
    /// dropped without being polled.
    Rejected,
    /// The pool was shutting down, so the task was refused and its future dropped without
    /// being polled.
    Shutdown,
    /// Its [`Scope`](crate::Scope) was closed ([`Scope::close`](crate::Scope::close)), so the
    /// task was refused and its future dropped without being polled.
    Closed,
}

impl TaskError {
    /// True for [`TaskError::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, TaskError::Cancelled)
    }

    /// True for [`TaskError::TimedOut`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, TaskError::TimedOut)
    }

    /// True for [`TaskError::Panicked`].
    pub fn is_panic(&self) -> bool {
        matches!(self, TaskError::Panicked(_))
    }

    /// True for [`TaskError::Rejected`], [`TaskError::Shutdown`] and [`TaskError::Closed`]:
    /// the task never ran.
    pub fn is_refused(&self) -> bool {
        matches!(
            self,
            TaskError::Rejected | TaskError::Shutdown | TaskError::Closed
        )
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Cancelled => f.write_str("task was cancelled"),
            TaskError::TimedOut => f.write_str("task timed out and was cancelled"),
            TaskError::Panicked(msg) => write!(f, "task panicked: {msg}"),
            TaskError::Rejected => {
                f.write_str("task rejected: the pool already has max_pending unfinished tasks")
            }
            TaskError::Shutdown => f.write_str("task refused: the pool is shutting down"),
            TaskError::Closed => f.write_str("task refused: its scope is closed"),
        }
    }
}

impl std::error::Error for TaskError {}

/// Why [`Scope::try_spawn_with_handle`](crate::Scope::try_spawn_with_handle) or
/// [`Scope::reserve`](crate::Scope::reserve) could not admit a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The pool already has `max_pending` admitted, unfinished tasks.
    #[error("the pool already has max_pending unfinished tasks")]
    Full,
    /// The pool is shutting down and admits no new tasks.
    #[error("the pool is shutting down")]
    Shutdown,
    /// The scope was closed with [`Scope::close`](crate::Scope::close) and admits no new
    /// tasks (the rest of the pool may still be serving).
    #[error("the scope is closed")]
    Closed,
}

impl From<SpawnError> for TaskError {
    fn from(e: SpawnError) -> Self {
        match e {
            SpawnError::Full => TaskError::Rejected,
            SpawnError::Shutdown => TaskError::Shutdown,
            SpawnError::Closed => TaskError::Closed,
        }
    }
}

/// Why a pool could not be built. The message names the field or the resource at fault.
///
/// ```
/// use async_rayon::{Config, ThreadPoolInner};
///
/// let err = ThreadPoolInner::try_with_config(Config { num_threads: 0, ..Config::default() })
///     .unwrap_err();
/// assert!(err.to_string().contains("num_threads"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `num_threads` was 0.
    #[error("invalid Config: num_threads must be at least 1, got 0")]
    ZeroThreads,
    /// `max_pending` was `Some(0)`, which would refuse every task.
    #[error("invalid Config: max_pending must be None (unbounded) or at least 1, got Some(0)")]
    ZeroMaxPending,
    /// `task_timeout` was `Some(Duration::ZERO)`, which would time out every task.
    #[error("invalid Config: task_timeout must be None or greater than zero, got Some(0s)")]
    ZeroTaskTimeout,
    /// The operating system refused to start a worker thread (for example `RLIMIT_NPROC`).
    #[error("could not start worker thread {index} of the pool: {source}")]
    ThreadSpawn {
        /// Index of the worker that could not be started.
        index: usize,
        /// The operating system's error.
        source: io::Error,
    },
    /// The pool's own tokio runtime (for timers and I/O) could not be started.
    #[error("could not start the pool's tokio runtime for timers and I/O: {0}")]
    Runtime(io::Error),
    /// [`ThreadPoolInner::resize`](crate::ThreadPoolInner::resize) was asked for a size
    /// outside what the pool allows: at least 1 and at most its `max_threads`, or within
    /// `autoscale(min, max)` when that is set.
    #[error(
        "resize({requested}): the pool's size must be within {min}..={max} \
         (at least 1, at most PoolBuilder::max_threads, within autoscale(min, max) if set)"
    )]
    ResizeOutOfRange {
        /// The size asked for.
        requested: usize,
        /// The least size allowed.
        min: usize,
        /// The greatest size allowed.
        max: usize,
    },
    /// [`PoolBuilder::autoscale`](crate::PoolBuilder::autoscale) was given `min == 0`,
    /// `min > max`, or a zero window.
    #[error("invalid autoscale: {0}")]
    Autoscale(&'static str),
    /// [`PoolBuilder::max_threads`](crate::PoolBuilder::max_threads) was below `num_threads`
    /// or the autoscale `max`, or above the scheduler's limit.
    #[error(
        "invalid max_threads {max_threads}: it must be at least num_threads and the autoscale \
         max ({at_least}) and at most {limit}"
    )]
    MaxThreads {
        /// The value given.
        max_threads: usize,
        /// The least value allowed by the other settings.
        at_least: usize,
        /// The scheduler's limit.
        limit: usize,
    },
    /// The thread of [`PoolBuilder::autoscale`](crate::PoolBuilder::autoscale) could not be
    /// started.
    #[error("could not start the pool's autoscale thread: {0}")]
    AutoscaleThread(io::Error),
    /// The pool's size cannot change: it is shutting down or shut down.
    #[error("the pool is shutting down: its size can no longer change")]
    ShuttingDown,
}

/// The message of a panic that ended a task: what
/// [`TaskError::Panicked`] carries.
///
/// It reads as a `str` (through `Deref`, `Display` and comparisons with `str`). It is one
/// pointer wide, so a `TaskError` is 16 bytes and a `Result<u64, TaskError>` is too: the
/// bulk calls return one such `Result` per item, and panics are rare enough that the message
/// can live behind a second allocation.
///
/// ```
/// use async_rayon::{PanicMessage, TaskError};
///
/// let err = TaskError::Panicked(PanicMessage::from("boom"));
/// if let TaskError::Panicked(message) = &err {
///     assert_eq!(message, "boom");
///     assert!(message.starts_with("bo"));
/// }
/// assert_eq!(err.to_string(), "task panicked: boom");
/// assert_eq!(std::mem::size_of::<Result<u64, TaskError>>(), 16);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
// The box is the point: a `String` is three words, the box one.
#[allow(clippy::box_collection)]
pub struct PanicMessage(Box<String>);

impl PanicMessage {
    /// The message as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The message as an owned `String` (no copy).
    pub fn into_string(self) -> String {
        *self.0
    }
}

impl std::ops::Deref for PanicMessage {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for PanicMessage {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PanicMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for PanicMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for PanicMessage {
    fn from(message: String) -> Self {
        PanicMessage(Box::new(message))
    }
}

impl From<&str> for PanicMessage {
    fn from(message: &str) -> Self {
        PanicMessage(Box::new(message.to_owned()))
    }
}

impl From<PanicMessage> for String {
    fn from(message: PanicMessage) -> Self {
        message.into_string()
    }
}

impl PartialEq<str> for PanicMessage {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for PanicMessage {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for PanicMessage {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}
