//! Run huge numbers of async tasks on a pool of your own OS threads, with resource control.
//!
//! `tokio::spawn` admits without limit, rayon blocks its threads on I/O, and hand-rolled
//! semaphore + `JoinSet` code is easy to get wrong. async_rayon is a work-stealing executor
//! whose tasks may use tokio (timers, sockets, channels, `tokio::spawn`), with the controls a
//! service needs built in:
//!
//! - **Admission control**: `max_pending` bounds admitted, unfinished tasks. Spawns past it
//!   are refused at once ([`Scope::spawn_with_handle`] resolves `Err(Rejected)`,
//!   [`Scope::try_spawn_with_handle`] returns `Err(Full)`) or wait their turn
//!   ([`Scope::reserve`]). Memory stays bounded whatever the load.
//! - **Cancellation**: per task ([`TaskHandle::cancel`], a per-task
//!   [`CancellationToken`]), per [`Scope`] (cancel, or
//!   drop it), or for the whole pool at shutdown. A suspended task is dropped promptly, not
//!   when its I/O completes.
//! - **Timeouts**: per pool (`task_timeout`, from a task's first poll) or per await
//!   ([`TaskHandle::await_timeout`]).
//! - **Panic isolation**: a panic in a task's `poll` or `Drop` becomes that task's
//!   [`TaskError::Panicked`]; the worker thread carries on.
//! - **Bounded shutdown**: [`ThreadPoolInner::shutdown_timeout`] stops admission, lets tasks
//!   finish until the deadline, cancels the rest, and returns on time even if a task blocks
//!   its thread.
//!
//! # The model
//! A [`ThreadPoolInner`] owns the worker threads. Work reaches it through a [`Scope`], which
//! groups tasks for cancellation and waiting. Spawning returns a [`TaskHandle`], a future of
//! `Result<T, TaskError>` that resolves exactly once. Dropping a handle detaches the task;
//! dropping a scope cancels its tasks; dropping the pool cancels everything.
//!
//! ```
//! use async_rayon::{Config, Scope, TaskError, ThreadPoolInner};
//! use std::time::Duration;
//!
//! let pool = ThreadPoolInner::with_config(Config {
//!     num_threads: 2,
//!     max_pending: Some(10_000),
//!     enable_work_stealing: true,
//!     task_timeout: Some(Duration::from_secs(5)),
//! });
//! let scope = Scope::new(pool.clone());
//!
//! pool.block_on(async {
//!     let handles: Vec<_> = (0..1_000u64)
//!         .map(|i| {
//!             scope.spawn_with_handle(async move {
//!                 tokio::time::sleep(Duration::from_millis(1)).await;
//!                 i * 2
//!             })
//!         })
//!         .collect();
//!     let results = scope.join_handles(handles).await;
//!     assert!(results.iter().all(Result::is_ok));
//!
//!     let slow = scope.spawn_with_handle(async { tokio::time::sleep(Duration::from_secs(60)).await });
//!     assert_eq!(slow.await_timeout(Duration::from_millis(10)).await, Err(TaskError::TimedOut));
//!
//!     assert!(pool.shutdown_timeout(Duration::from_secs(1)).await);
//! });
//! ```
//!
//! See `ARCHITECTURE.md` for how it works inside and the invariants it keeps.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

mod admission;
mod config;
mod error;
mod metrics;
mod monitor;
mod pool;
pub mod progress;
#[cfg(feature = "redis")]
pub mod queue;
mod rand;
mod registry;
mod retry;
mod scheduler;
mod scope;
mod sizing;
mod sync;
mod task;
mod ticker;
mod unwind;

#[cfg(all(test, loom))]
mod loom_models;

pub use config::{Config, DEFAULT_MAX_THREADS, PoolBuilder};
pub use error::{ConfigError, PanicMessage, SpawnError, TaskError};
pub use metrics::{LatencySummary, PoolMetrics};
pub use monitor::{LATENCY_BUCKETS_SECONDS, MonitorHandle};
pub use pool::ThreadPoolInner;
pub use retry::{RetryFuture, RetryPolicy, with_retry};
pub use scheduler::Priority;
pub use scope::{
    BatchOptions, Collect, Ordered, ProcessStream, Scope, SpawnPermit, SupervisedFailure,
    SupervisorExit, SupervisorHandle, SupervisorPolicy, TaskSet,
};
pub use task::{CancelOnDrop, TaskHandle, TaskId};
/// tokio-util's cancellation token, re-exported because it appears in this crate's
/// signatures ([`TaskHandle::cancellation_token`], [`Scope::cancellation_token`]): use this
/// path and no direct dependency on tokio-util is needed to name it.
pub use tokio_util::sync::CancellationToken;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
