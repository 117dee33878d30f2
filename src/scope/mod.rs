//! [`Scope`]: the way work gets onto a pool, and the unit of cancellation and waiting.
//!
//! A scope owns a cancellation token (a child of the pool's) and counts its live tasks.
//! Tasks reference the scope's shared half ([`ScopeShared`]), never the user-facing
//! [`Scope`], so a detached task does not keep the pool's user handle alive.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, OnceLock, Weak};
use std::task::Wake;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::error::{SpawnError, TaskError};
use crate::pool::ThreadPoolInner;
use crate::registry::Shared;
use crate::scheduler::Priority;
use crate::task::cancel::SuspendedTasks;
use crate::task::{self, TaskHandle};
use live::LiveCount;

mod batch;
mod carrier;
mod input;
pub(crate) mod live;
mod output;
mod stream;
mod supervisor;
mod task_set;

pub use batch::BatchOptions;
pub use stream::{Collect, Ordered, ProcessStream};
pub use supervisor::{SupervisedFailure, SupervisorExit, SupervisorHandle, SupervisorPolicy};
pub use task_set::TaskSet;

/// The half of a scope that its tasks share.
///
/// # Child scopes
/// A child (`Scope::child`) holds its parent's `ScopeShared`, and the parent a weak list of
/// its children. Counting: a task counts in `live` of its scope **and of every ancestor**,
/// incremented on the way down before the task exists and decremented on the way up after
/// it finished, so an ancestor's `live` is never below the sum of its subtree and its
/// `wait()` covers the live children. Cancel and close walk the other way: a scope sets its
/// own flag, then cancels or closes the children it finds in its list; a child registers in
/// its parent's list under the list's lock and then reads the parent's flags, so a child
/// created while its parent is being cancelled either is found by the walk or sees the flag
/// (both sides take the same lock).
pub(crate) struct ScopeShared {
    pub(crate) pool: Arc<Shared>,
    pub(crate) token: CancellationToken,
    cancelled: AtomicBool,
    /// The lane its tasks are queued in, read (one byte, beside `pool` and `cancelled`) at
    /// every spawn and wake; fixed for the scope's life, and a child's is its parent's.
    priority: Priority,
    /// Admitted, unfinished tasks of this scope and of its child scopes, detached ones
    /// included, and the callers in `wait()` (`live.rs`). Its words are padded: they change
    /// at every spawn and every finish, and on a shared cache line they made each spawn's
    /// `Arc` clone of this struct (the header sits just before them) and every task's reads
    /// of `pool` and `cancelled` miss (perf: the clone and the count's increment were 80% of
    /// `spawn_admitted`'s samples).
    live: LiveCount,
    /// Notified when an end takes `live` to zero while someone waits.
    idle: Notify,
    /// Set by `Scope::close`: no new admissions.
    closed: AtomicBool,
    parent: Option<Arc<ScopeShared>>,
    /// Children that may still be alive (pruned as new ones register).
    children: Mutex<Vec<Weak<ScopeShared>>>,
    /// The wakers of this scope's suspended tasks (the cancel wake-up, `task::cancel`).
    pub(crate) suspended: SuspendedTasks,
    /// A wait on `token`, polled once with a waker that runs [`token_fired`](Self::token_fired),
    /// made when a task of this scope first suspends.
    watch: OnceLock<TokenWatch>,
}

/// The wait a scope keeps on its own token (see `ScopeShared::watch`): kept, never polled
/// again, so that it stays registered with the token.
struct TokenWatch {
    _wait: Pin<Box<WaitForCancellationFutureOwned>>,
}

/// The waker of a scope's token watch: the scope's cancel wake-up for its suspended tasks.
struct OnTokenCancelled(Weak<ScopeShared>);

impl Wake for OnTokenCancelled {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(scope) = self.0.upgrade() {
            scope.token_fired();
        }
    }
}

impl ScopeShared {
    fn new(
        pool: Arc<Shared>,
        token: CancellationToken,
        priority: Priority,
        parent: Option<Arc<ScopeShared>>,
    ) -> Self {
        ScopeShared {
            pool,
            token,
            cancelled: AtomicBool::new(false),
            priority,
            live: LiveCount::new(),
            idle: Notify::new(),
            closed: AtomicBool::new(false),
            parent,
            children: Mutex::new(Vec::new()),
            suspended: SuspendedTasks::new(),
            watch: OnceLock::new(),
        }
    }

    /// A task of this scope suspends: make sure the scope watches its token, then register
    /// the task's waker. The caller reads the cancel flags afterwards (`task::cancel`).
    pub(crate) fn task_suspended<T>(
        self: &Arc<Self>,
        task: &crate::task::cancel::CancelState<T>,
        waker: &std::task::Waker,
    ) {
        if self.watch.get().is_none() {
            self.watch.get_or_init(|| {
                let mut wait = Box::pin(self.token.clone().cancelled_owned());
                let on_cancel =
                    std::task::Waker::from(Arc::new(OnTokenCancelled(Arc::downgrade(self))));
                // Pending: the token's cancellation wakes `on_cancel` (tokio's `Notified`
                // counts cancellations from its creation, so none is missed before this
                // poll). Ready: it is cancelled already.
                if wait
                    .as_mut()
                    .poll(&mut std::task::Context::from_waker(&on_cancel))
                    .is_ready()
                {
                    self.token_fired();
                }
                TokenWatch { _wait: wait }
            });
        }
        self.suspended.register(task, waker);
    }

    /// The scope's token was cancelled (by this scope, an ancestor, the pool or the user):
    /// set the flag, then wake every suspended task, which then sees it.
    fn token_fired(&self) {
        self.cancelled.store(true, SeqCst);
        self.suspended.wake_all();
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The flag behind [`is_cancelled`](Self::is_cancelled).
    #[inline]
    pub(crate) fn cancelled_flag(&self) -> &AtomicBool {
        &self.cancelled
    }

    /// The lane of this scope's tasks.
    #[inline]
    pub(crate) fn priority(&self) -> Priority {
        self.priority
    }

    /// True once the scope was closed: it admits no more tasks.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Counts a new task here and in every ancestor (see the type's doc).
    #[inline]
    pub(crate) fn task_started(&self) {
        self.live.start();
        let mut up = &self.parent;
        while let Some(scope) = up {
            scope.live.start();
            up = &scope.parent;
        }
    }

    /// Uncounts a finished task here, then in every ancestor.
    #[inline]
    pub(crate) fn task_finished(&self) {
        self.leave();
        let mut up = &self.parent;
        while let Some(scope) = up {
            scope.leave();
            up = &scope.parent;
        }
    }

    /// Uncounts one task here, and notifies `wait()` callers if that was the last.
    #[inline]
    fn leave(&self) {
        if self.live.end() {
            self.idle.notify_waiters();
        }
    }

    /// Sets the flag, cancels the live children, then the token (which wakes suspended tasks
    /// of this scope and its children: their tokens descend from it).
    fn cancel(&self) {
        self.cancelled.store(true, SeqCst);
        for child in self.live_children() {
            child.cancel();
        }
        self.token.cancel();
    }

    /// Closes this scope and its live children.
    fn close(&self) {
        self.closed.store(true, SeqCst);
        for child in self.live_children() {
            child.close();
        }
    }

    fn live_children(&self) -> Vec<Arc<ScopeShared>> {
        self.children
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// A child of `self`: registered in `self`'s list, then given `self`'s state (see the
    /// type's doc for why this order).
    fn child(self: &Arc<Self>) -> Arc<ScopeShared> {
        let child = Arc::new(ScopeShared::new(
            self.pool.clone(),
            self.token.child_token(),
            self.priority,
            Some(self.clone()),
        ));
        {
            let mut children = self.children.lock();
            // Drop the entries of children gone, at most once per doubling of the list.
            if children.len() == children.capacity() {
                children.retain(|c| c.strong_count() > 0);
            }
            children.push(Arc::downgrade(&child));
        }
        if self.is_closed() {
            child.close();
        }
        if self.is_cancelled() {
            child.cancel();
        }
        child
    }

    /// Admits one task now, unless the scope is closed or the pool full or shutting down.
    pub(crate) fn try_admit(&self) -> Result<(), SpawnError> {
        if self.is_closed() {
            return Err(SpawnError::Closed);
        }
        self.pool.admission.try_acquire()
    }

    /// Admits up to `n` tasks (at least one) if the pool has room now, without waiting, unless
    /// the scope is closed. For a batch that refills itself.
    #[inline]
    pub(crate) fn try_admit_up_to(&self, n: usize) -> Result<usize, SpawnError> {
        if self.is_closed() {
            return Err(SpawnError::Closed);
        }
        self.pool.admission.try_acquire_up_to(n)
    }

    /// Keeps `got` slots just granted after a wait, or gives them back and refuses if the
    /// scope was closed while it waited. Every admission that waits ends here, so a close
    /// is never outrun by a grant that was already under way.
    #[inline]
    pub(crate) fn keep_granted(&self, got: usize) -> Result<usize, SpawnError> {
        if self.is_closed() {
            self.pool.admission.release_many(got);
            return Err(SpawnError::Closed);
        }
        Ok(got)
    }

    /// Waits for room for one task and admits it, unless the scope is or becomes closed.
    pub(crate) async fn admit_one(&self) -> Result<(), SpawnError> {
        if self.is_closed() {
            return Err(SpawnError::Closed);
        }
        self.pool.admission.acquire().await?;
        self.keep_granted(1).map(drop)
    }

    /// Waits for room for up to `n` tasks (at least one) and admits them, unless the scope
    /// is or becomes closed (then what was granted is given back).
    pub(crate) async fn admit_up_to(&self, n: usize) -> Result<usize, SpawnError> {
        if self.is_closed() {
            return Err(SpawnError::Closed);
        }
        let got = self.pool.admission.acquire_up_to(n).await?;
        self.keep_granted(got)
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
    /// A new scope on `pool`, in the `Normal` lane ([`Priority`]).
    pub fn new(pool: Arc<ThreadPoolInner>) -> Scope {
        Scope::in_lane(pool, Priority::Normal)
    }

    /// A new scope on `pool` whose tasks are queued in lane `priority`.
    pub(crate) fn in_lane(pool: Arc<ThreadPoolInner>, priority: Priority) -> Scope {
        let shared = Arc::new(ScopeShared::new(
            pool.shared().clone(),
            pool.shared().token.child_token(),
            priority,
            None,
        ));
        Scope { pool, shared }
    }

    /// The lane this scope's tasks are queued in: the one given to
    /// [`ThreadPoolInner::scope_with_priority`], `Normal` for [`Scope::new`], the parent's
    /// for a [`child`](Self::child) (and so for a [`task_set`](Self::task_set) and the runs
    /// of [`supervise`](Self::supervise)).
    pub fn priority(&self) -> Priority {
        self.shared.priority
    }

    /// A scope on `pool` that is also cancelled when `parent` (the application's own
    /// shutdown token, say) is cancelled, as if [`cancel`](Self::cancel) were called. A small
    /// task on the pool's tokio runtime watches `parent` (it ends when either token is
    /// cancelled), so the cancel arrives as soon as that runtime runs it. The pool's own
    /// cancellation (shutdown past its deadline) reaches the scope too.
    ///
    /// ```
    /// use async_rayon::{CancellationToken, Scope, TaskError, ThreadPoolInner};
    ///
    /// let pool = ThreadPoolInner::new(1, None);
    /// let app_shutdown = CancellationToken::new();
    /// let scope = Scope::with_parent_token(pool.clone(), &app_shutdown);
    /// let task = scope.spawn_with_handle(std::future::pending::<()>());
    /// app_shutdown.cancel();
    /// assert_eq!(pool.block_on(task), Err(TaskError::Cancelled));
    /// ```
    pub fn with_parent_token(pool: Arc<ThreadPoolInner>, parent: &CancellationToken) -> Scope {
        let scope = Scope::new(pool);
        if parent.is_cancelled() {
            scope.cancel();
            return scope;
        }
        // Links the two: ends when either token is cancelled (the scope's is when the scope
        // is dropped), so it never outlives both.
        let (parent, weak, own) = (
            parent.clone(),
            Arc::downgrade(&scope.shared),
            scope.shared.token.clone(),
        );
        scope.pool.runtime_handle().spawn(async move {
            if own.run_until_cancelled(parent.cancelled()).await.is_some()
                && let Some(shared) = weak.upgrade()
            {
                shared.cancel();
            }
        });
        scope
    }

    /// A child scope: a group of its own on the same pool, inside this one, in the same
    /// lane ([`priority`](Self::priority)). Cancelling or
    /// dropping this scope cancels the child's tasks (and its children's, down the tree);
    /// cancelling the child leaves this scope alone. [`wait`](Self::wait) on this scope also
    /// waits for the tasks of its live children, and [`live_tasks`](Self::live_tasks)
    /// counts them. [`close`](Self::close) on this scope closes its children too. A child of
    /// a cancelled or closed scope starts cancelled or closed.
    ///
    /// ```
    /// use async_rayon::{TaskError, ThreadPoolInner};
    ///
    /// let pool = ThreadPoolInner::new(1, None);
    /// let service = pool.scope();
    /// let cache_refresh = service.child();
    /// let task = cache_refresh.spawn_with_handle(std::future::pending::<()>());
    /// service.cancel(); // reaches the child's tasks
    /// assert_eq!(pool.block_on(task), Err(TaskError::Cancelled));
    /// ```
    pub fn child(&self) -> Scope {
        Scope {
            pool: self.pool.clone(),
            shared: self.shared.child(),
        }
    }

    /// A [`TaskSet`] on a child scope of this one: a typed group joined in completion order,
    /// whose tasks are cancelled when it is dropped. On a cancelled or closed scope its
    /// spawns are cancelled or refused like the scope's own.
    pub fn task_set<T: Send + 'static>(&self) -> TaskSet<T> {
        TaskSet::new(self.child())
    }

    /// Stops admitting tasks on this scope (and its children): spawns on it fail with
    /// [`SpawnError::Closed`] (`TaskError::Closed` through a handle), `reserve()` too, and a
    /// bulk call refuses its items not yet started with `TaskError::Closed`. Tasks already
    /// admitted run on; with [`wait`](Self::wait) this shuts one component down while the
    /// rest of the pool keeps serving. Permits already granted by `reserve()` still spawn.
    ///
    /// ```
    /// use async_rayon::{SpawnError, ThreadPoolInner};
    ///
    /// let pool = ThreadPoolInner::new(1, None);
    /// let scope = pool.scope();
    /// let running = scope.spawn_with_handle(async { 1 });
    /// scope.close();
    /// assert!(scope.is_closed());
    /// assert_eq!(scope.try_spawn_with_handle(async { 2 }).err(), Some(SpawnError::Closed));
    /// pool.block_on(scope.wait());
    /// assert_eq!(pool.block_on(running), Ok(1));
    /// ```
    pub fn close(&self) {
        self.shared.close();
    }

    /// True once [`close`](Self::close) was called on this scope or an ancestor.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// The pool this scope spawns onto.
    pub fn pool(&self) -> &Arc<ThreadPoolInner> {
        &self.pool
    }

    /// Spawns `future` and returns its handle. Never blocks and never waits: if the pool
    /// already has `max_pending` unfinished tasks the handle is already resolved to
    /// `Err(TaskError::Rejected)`, after shutdown began to `Err(TaskError::Shutdown)`, and on
    /// a closed scope to `Err(TaskError::Closed)`; in each case `future` is dropped without
    /// being polled. Use
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
    /// are already queued for room), [`SpawnError::Shutdown`] once shutdown has begun,
    /// [`SpawnError::Closed`] once the scope is closed. The future is dropped without being
    /// polled.
    pub fn try_spawn_with_handle<F>(&self, future: F) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let pool = &self.shared.pool;
        match self.shared.try_admit() {
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
    /// [`SpawnError::Shutdown`] if shutdown begins before room is found,
    /// [`SpawnError::Closed`] if the scope is closed before.
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
        self.shared.admit_one().await?;
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

    /// True once [`cancel`](Self::cancel) was called, the pool cancelled everything, or the
    /// scope's token was cancelled otherwise (through an ancestor, or directly).
    pub fn is_cancelled(&self) -> bool {
        self.shared.is_cancelled()
            || self.shared.pool.is_cancelling()
            || self.shared.token.is_cancelled()
    }

    /// The scope's cancellation token: a child of the pool's, parent of each task's.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.shared.token.clone()
    }

    /// Admitted, unfinished tasks of this scope and of its child scopes, detached ones
    /// included.
    ///
    /// Read while tasks are ending, it may still count one that ended during the call; it
    /// is never below the number live at some moment of the call.
    pub fn live_tasks(&self) -> usize {
        self.shared.live.live()
    }

    /// Resolves when every task spawned on this scope so far, and on its live child scopes,
    /// has finished, detached ones included.
    pub async fn wait(&self) {
        let s = &*self.shared;
        // Counted as waiting before reading the count (`live.rs`, "Why no end is missed").
        let _waiting = s.live.enter_wait();
        loop {
            let notified = s.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if s.live.live() == 0 {
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
