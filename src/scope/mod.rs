//! [`Scope`]: the way work gets onto a pool, and the unit of cancellation and waiting.
//!
//! A scope owns a cancellation token (a child of the pool's) and counts its live tasks.
//! Tasks reference the scope's shared half ([`ScopeShared`]), never the user-facing
//! [`Scope`], so a detached task does not keep the pool's user handle alive.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

use crossbeam_utils::CachePadded;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::{SpawnError, TaskError};
use crate::pool::ThreadPoolInner;
use crate::registry::Shared;
use crate::task::{self, TaskHandle};

mod batch;
mod carrier;
mod output;
mod stream;

pub use batch::BatchOptions;
pub use stream::{Collect, Ordered, ProcessStream};

/// The half of a scope that its tasks share.
pub(crate) struct ScopeShared {
    pub(crate) pool: Arc<Shared>,
    pub(crate) token: CancellationToken,
    cancelled: AtomicBool,
    /// Admitted, unfinished tasks of this scope, detached ones included. Padded: it changes
    /// at every spawn and every finish, and on a shared cache line it made each spawn's
    /// `Arc` clone of this struct (the header sits just before it) and every task's reads of
    /// `pool` and `cancelled` miss (perf: the clone and this increment were 80% of
    /// `spawn_admitted`'s samples).
    live: CachePadded<AtomicUsize>,
    /// Callers inside `wait()`; a task that takes `live` to zero notifies only if some exist.
    waiting: AtomicUsize,
    idle: Notify,
}

impl ScopeShared {
    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The flag behind [`is_cancelled`](Self::is_cancelled).
    #[inline]
    pub(crate) fn cancelled_flag(&self) -> &AtomicBool {
        &self.cancelled
    }

    #[inline]
    pub(crate) fn task_started(&self) {
        self.live.fetch_add(1, SeqCst);
    }

    /// `live -= 1`. The decrement, a `SeqCst` fence, then the load of `waiting` pairs with
    /// `wait()`'s increment of `waiting`, fence, then load of `live`: at least one side sees
    /// the other, so the last task never misses a waiter. The fence is paid only when `live`
    /// reaches zero. (Checked by loom: `loom_scope_wait_vs_last_task`.)
    #[inline]
    pub(crate) fn task_finished(&self) {
        if self.live.fetch_sub(1, SeqCst) == 1 {
            std::sync::atomic::fence(SeqCst);
            if self.waiting.load(SeqCst) > 0 {
                self.idle.notify_waiters();
            }
        }
    }

    fn cancel(&self) {
        self.cancelled.store(true, SeqCst);
        self.token.cancel();
    }
}

/// A group of tasks on one pool that can be cancelled and awaited together.
///
/// Spawning onto a pool always goes through a scope. `Scope` is `Send + Sync`; share it
/// between tasks in an `Arc`. It keeps its pool alive.
///
/// **Dropping a scope cancels its unfinished tasks** (detached ones included) without
/// waiting for them; call [`wait`](Self::wait) first to let them finish.
///
/// ```
/// use async_rayon::{Config, Scope, ThreadPoolInner};
/// use std::time::Duration;
///
/// let pool = ThreadPoolInner::with_config(Config::io_bound());
/// let scope = Scope::new(pool.clone());
/// let results = pool.block_on(async {
///     let handles: Vec<_> = (0..100u64)
///         .map(|i| {
///             scope.spawn_with_handle(async move {
///                 tokio::time::sleep(Duration::from_millis(1)).await;
///                 i * 2
///             })
///         })
///         .collect();
///     scope.join_handles(handles).await
/// });
/// assert_eq!(results.len(), 100);
/// assert_eq!(results[7], Ok(14));
/// ```
pub struct Scope {
    pool: Arc<ThreadPoolInner>,
    shared: Arc<ScopeShared>,
}

impl Scope {
    /// A new scope on `pool`.
    pub fn new(pool: Arc<ThreadPoolInner>) -> Scope {
        let shared = Arc::new(ScopeShared {
            pool: pool.shared().clone(),
            token: pool.shared().token.child_token(),
            cancelled: AtomicBool::new(false),
            live: CachePadded::new(AtomicUsize::new(0)),
            waiting: AtomicUsize::new(0),
            idle: Notify::new(),
        });
        Scope { pool, shared }
    }

    /// The pool this scope spawns onto.
    pub fn pool(&self) -> &Arc<ThreadPoolInner> {
        &self.pool
    }

    /// Spawns `future` and returns its handle. Never blocks and never waits: if the pool
    /// already has `max_pending` unfinished tasks the handle is already resolved to
    /// `Err(TaskError::Rejected)`, and after shutdown began to `Err(TaskError::Shutdown)`; in
    /// both cases `future` is dropped without being polled. Use
    /// [`reserve`](Self::reserve) to wait for room instead.
    ///
    /// ```
    /// use async_rayon::{Scope, TaskError, ThreadPoolInner};
    ///
    /// let pool = ThreadPoolInner::new(1, Some(1));
    /// let scope = Scope::new(pool.clone());
    /// let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    /// let first = scope.spawn_with_handle(async move { rx.await.ok() });
    /// let second = scope.spawn_with_handle(async { "never runs" });
    /// assert_eq!(pool.block_on(second), Err(TaskError::Rejected));
    /// tx.send(()).unwrap();
    /// assert_eq!(pool.block_on(first), Ok(Some(())));
    /// ```
    pub fn spawn_with_handle<F>(&self, future: F) -> TaskHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.try_spawn_with_handle(future) {
            Ok(handle) => handle,
            Err(e) => TaskHandle::refused(TaskError::from(e)),
        }
    }

    /// Spawns `future` if the pool has room, or says why not.
    ///
    /// # Errors
    /// [`SpawnError::Full`] when `max_pending` tasks are unfinished (or `reserve()` callers
    /// are already queued for room), [`SpawnError::Shutdown`] once shutdown has begun. The
    /// future is dropped without being polled.
    pub fn try_spawn_with_handle<F>(&self, future: F) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let pool = &self.shared.pool;
        match pool.admission.try_acquire() {
            Ok(()) => Ok(task::spawn_admitted(&self.shared, future)),
            Err(e) => {
                #[cfg(feature = "tracing")]
                tracing::trace!(target: "async_rayon", reason = %e, "spawn refused");
                if e == SpawnError::Full {
                    pool.counters.rejected(pool.counter_row());
                }
                task::drop_refused(future);
                Err(e)
            }
        }
    }

    /// Waits, asynchronously and first come first served, until the pool has room for one
    /// more task, and holds that room in a [`SpawnPermit`] until it spawns or is dropped.
    ///
    /// # Errors
    /// [`SpawnError::Shutdown`] if shutdown begins before room is found.
    ///
    /// ```
    /// use async_rayon::{Scope, ThreadPoolInner};
    ///
    /// let pool = ThreadPoolInner::new(2, Some(10));
    /// let scope = Scope::new(pool.clone());
    /// let total = pool.block_on(async {
    ///     let mut handles = Vec::new();
    ///     for i in 0..1_000u64 {
    ///         // Never more than 10 tasks exist at once; no spawn is ever rejected.
    ///         let permit = scope.reserve().await.expect("pool is running");
    ///         handles.push(permit.spawn_with_handle(async move { i }));
    ///     }
    ///     scope.join_handles(handles).await.into_iter().map(|r| r.unwrap()).sum::<u64>()
    /// });
    /// assert_eq!(total, 499_500);
    /// ```
    pub async fn reserve(&self) -> Result<SpawnPermit<'_>, SpawnError> {
        self.shared.pool.admission.acquire().await?;
        Ok(SpawnPermit {
            scope: self,
            spent: false,
        })
    }

    /// Awaits every handle and returns their results in the order given.
    pub async fn join_handles<T>(&self, handles: Vec<TaskHandle<T>>) -> Vec<Result<T, TaskError>> {
        futures::future::join_all(handles).await
    }

    /// Cancels this scope's unfinished tasks (and only them), including detached ones and
    /// any spawned on it later. Does not wait; see [`wait`](Self::wait).
    pub fn cancel(&self) {
        self.shared.cancel();
    }

    /// True once [`cancel`](Self::cancel) was called or the pool cancelled everything.
    pub fn is_cancelled(&self) -> bool {
        self.shared.is_cancelled() || self.shared.pool.is_cancelling()
    }

    /// The scope's cancellation token: a child of the pool's, parent of each task's.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.shared.token.clone()
    }

    /// Admitted, unfinished tasks of this scope, detached ones included.
    pub fn live_tasks(&self) -> usize {
        self.shared.live.load(SeqCst)
    }

    /// Resolves when every task spawned on this scope so far has finished, detached ones
    /// included.
    pub async fn wait(&self) {
        let s = &*self.shared;
        s.waiting.fetch_add(1, SeqCst);
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        let _leave = Leave(&s.waiting);
        std::sync::atomic::fence(SeqCst);
        loop {
            let notified = s.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if s.live.load(SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Scope {
    /// Cancels the scope's unfinished tasks without waiting for them.
    fn drop(&mut self) {
        self.shared.cancel();
    }
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("pool", &self.pool.name())
            .field("live_tasks", &self.live_tasks())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// Room for one task, held until it is used to spawn or dropped. From
/// [`Scope::reserve`].
///
/// A permit counts toward `max_pending` like a task does, and a graceful shutdown waits for
/// it: spend or drop permits promptly.
#[must_use = "a permit holds a slot of max_pending until it is spent or dropped"]
pub struct SpawnPermit<'a> {
    scope: &'a Scope,
    spent: bool,
}

impl SpawnPermit<'_> {
    /// Spawns `future` in the held slot. Never refused: the slot was admitted when the permit
    /// was granted (if the pool has cancelled everything since, the task resolves
    /// `Err(TaskError::Cancelled)` without running).
    pub fn spawn_with_handle<F>(mut self, future: F) -> TaskHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spent = true;
        task::spawn_admitted(&self.scope.shared, future)
    }
}

impl Drop for SpawnPermit<'_> {
    fn drop(&mut self) {
        if !self.spent {
            self.scope.shared.pool.admission.release();
        }
    }
}

impl std::fmt::Debug for SpawnPermit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpawnPermit").finish_non_exhaustive()
    }
}
