//! [`Scope::supervise`]: a long-running task restarted when it fails, like an Erlang
//! supervisor with one child.
//!
//! # How it runs
//! Each run of the child is an ordinary pool task on a child scope of its own (so it is
//! admitted, counted, timed out and cancelled like any task). The loop that watches the runs
//! and sleeps between them is a small tokio task on the pool's runtime
//! ([`ThreadPoolInner::runtime_handle`](crate::ThreadPoolInner::runtime_handle)), not a pool
//! task: it never occupies a worker thread, does not hold a `max_pending` slot while it waits
//! for room for the next run (which would deadlock a pool with room for one task), is not
//! cut short by the pool's `task_timeout`, and holds the child scope's shared half only
//! (never the pool's user handle, so a dropped pool still shuts down). It still counts as one live task of the child
//! scope (and so of every ancestor) from `supervise` until it ends, so `wait()` on the parent
//! scope waits for the supervisor, backoff gaps included.
//!
//! # Intensity
//! The loop keeps the instants of the restarts made within the last `period`. On a failure it
//! first forgets the ones older than `period`; if `max_restarts` are left, it gives up,
//! otherwise it sleeps the backoff for retry number `k` (`k` = the restarts kept, so the wait
//! grows while failures come fast and falls back once they stop) and starts the next run.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::{Scope, ScopeShared};
use crate::error::TaskError;
use crate::retry::RetryPolicy;

/// When a supervisor restarts its task and when it gives up: at most `max_restarts` restarts
/// within any `period` (a sliding window, Erlang's restart intensity), each after a wait
/// computed by a [`RetryPolicy`].
///
/// ```
/// use async_rayon::{RetryPolicy, SupervisorPolicy};
/// use std::time::Duration;
///
/// // Up to 5 restarts in any 10 s, waiting 50 ms before the first, doubling.
/// let policy = SupervisorPolicy::new(5, Duration::from_secs(10))
///     .backoff(RetryPolicy::new(0).initial_backoff(Duration::from_millis(50)));
/// assert_eq!(policy.max_restarts, 5);
/// assert_eq!(policy.backoff.initial_backoff, Duration::from_millis(50));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SupervisorPolicy {
    /// Restarts allowed within [`period`](Self::period); one more failure gives up. 0 gives
    /// up at the first failure.
    pub max_restarts: u32,
    /// The sliding window the restarts are counted in. `Duration::ZERO` is taken as a window
    /// that never slides: at most `max_restarts` restarts over the supervisor's life.
    pub period: Duration,
    /// The wait before each restart: its [`RetryPolicy::backoff`] for retry number `k` (the
    /// restarts made within the last `period`), jittered if its `jitter` is on. Its
    /// `max_retries` is not used.
    pub backoff: RetryPolicy,
}

impl SupervisorPolicy {
    /// At most `max_restarts` restarts within any `period`, with the default backoff
    /// ([`RetryPolicy::default`]: 100 ms doubling to at most 10 s, with jitter). Never
    /// panics; a zero `period` means "over the supervisor's life" (see
    /// [`period`](Self::period)).
    ///
    /// ```
    /// use async_rayon::SupervisorPolicy;
    /// use std::time::Duration;
    ///
    /// let policy = SupervisorPolicy::new(3, Duration::from_secs(60));
    /// assert_eq!(policy.period, Duration::from_secs(60));
    /// assert_eq!(policy.backoff.initial_backoff, Duration::from_millis(100));
    /// ```
    pub fn new(max_restarts: u32, period: Duration) -> Self {
        SupervisorPolicy {
            max_restarts,
            period,
            backoff: RetryPolicy::default(),
        }
    }

    /// Sets the waits before restarts (see [`backoff`](Self::backoff)).
    ///
    /// ```
    /// use async_rayon::{RetryPolicy, SupervisorPolicy};
    /// use std::time::Duration;
    ///
    /// let fixed = RetryPolicy::new(0)
    ///     .initial_backoff(Duration::from_millis(20))
    ///     .multiplier(1.0)
    ///     .jitter(false);
    /// let policy = SupervisorPolicy::new(3, Duration::from_secs(1)).backoff(fixed.clone());
    /// assert_eq!(policy.backoff, fixed);
    /// ```
    pub fn backoff(mut self, policy: RetryPolicy) -> Self {
        self.backoff = policy;
        self
    }

    /// The window as used: a zero `period` never forgets a restart.
    fn window(&self) -> Duration {
        if self.period.is_zero() {
            Duration::MAX
        } else {
            self.period
        }
    }
}

/// How one run of a supervised task failed.
///
/// ```
/// use async_rayon::SupervisedFailure;
///
/// let failure: SupervisedFailure<String> = SupervisedFailure::Failed("disk full".into());
/// assert_eq!(failure.to_string(), "failed: disk full");
/// assert_eq!(SupervisedFailure::<String>::Panicked("boom".into()).to_string(), "panicked: boom");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SupervisedFailure<E> {
    /// The run returned `Err(e)`.
    Failed(E),
    /// The run panicked (in its future's `poll` or drop, or in the factory that made it);
    /// the panic message.
    Panicked(String),
    /// The run was stopped by the pool's `task_timeout`.
    TimedOut,
}

impl<E: fmt::Display> fmt::Display for SupervisedFailure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisedFailure::Failed(e) => write!(f, "failed: {e}"),
            SupervisedFailure::Panicked(message) => write!(f, "panicked: {message}"),
            SupervisedFailure::TimedOut => f.write_str("timed out"),
        }
    }
}

/// How a supervisor ended: the output of its [`SupervisorHandle`].
///
/// ```
/// use async_rayon::{SupervisedFailure, SupervisorExit};
///
/// let exit: SupervisorExit<&str> = SupervisorExit::GaveUp {
///     restarts: 3,
///     last: SupervisedFailure::Failed("refused"),
/// };
/// assert!(matches!(exit, SupervisorExit::GaveUp { restarts: 3, .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SupervisorExit<E> {
    /// A run returned `Ok(())`: the task is done and was not restarted.
    Completed,
    /// [`SupervisorHandle::stop`] was called, the scope (or an ancestor, or the pool) was
    /// cancelled, or the next run could not be admitted because the scope was closed or the
    /// pool is shutting down. No run was started after that.
    Stopped,
    /// A run failed with `max_restarts` restarts already made within `period`.
    GaveUp {
        /// Restarts made over the supervisor's life.
        restarts: u32,
        /// How the last run failed.
        last: SupervisedFailure<E>,
    },
}

/// A running supervisor, from [`Scope::supervise`]. Await it for how the supervisor ended.
///
/// Dropping the handle detaches the supervisor (it goes on; cancel its scope to stop it),
/// as dropping a [`TaskHandle`](crate::TaskHandle) detaches a task.
///
/// ```
/// use async_rayon::{SupervisorExit, SupervisorPolicy, ThreadPoolInner};
/// use std::time::Duration;
///
/// let pool = ThreadPoolInner::new(1, None);
/// let scope = pool.scope();
/// let handle = scope.supervise(SupervisorPolicy::new(3, Duration::from_secs(1)), || {
///     std::future::pending::<Result<(), String>>()
/// });
/// assert_eq!(handle.restarts(), 0);
/// handle.stop();
/// assert_eq!(pool.block_on(handle), SupervisorExit::Stopped);
/// ```
#[must_use = "dropping a SupervisorHandle detaches the supervisor; keep it to stop it or see how it ended"]
pub struct SupervisorHandle<E> {
    join: tokio::task::JoinHandle<SupervisorExit<E>>,
    restarts: Arc<AtomicU32>,
    scope: Arc<ScopeShared>,
}

impl<E> SupervisorHandle<E> {
    /// Restarts made so far.
    ///
    /// ```
    /// use async_rayon::{RetryPolicy, SupervisorExit, SupervisorPolicy, ThreadPoolInner};
    /// use std::time::Duration;
    ///
    /// let pool = ThreadPoolInner::new(1, None);
    /// let scope = pool.scope();
    /// let policy = SupervisorPolicy::new(2, Duration::from_secs(60))
    ///     .backoff(RetryPolicy::new(0).initial_backoff(Duration::from_millis(1)));
    /// let handle = scope.supervise(policy, || async { Err::<(), _>("always fails") });
    /// pool.block_on(async {
    ///     while handle.restarts() < 2 {
    ///         tokio::time::sleep(Duration::from_millis(1)).await;
    ///     }
    /// });
    /// assert_eq!(handle.restarts(), 2);
    /// ```
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::SeqCst)
    }

    /// Stops the supervisor: cancels the running run (as [`Scope::cancel`] would) and starts
    /// no other. The handle then resolves to [`SupervisorExit::Stopped`] (or to how it had
    /// already ended). Does not wait; await the handle for that.
    ///
    /// ```
    /// use async_rayon::{SupervisorExit, SupervisorPolicy, ThreadPoolInner};
    /// use std::time::Duration;
    ///
    /// let pool = ThreadPoolInner::new(1, None);
    /// let scope = pool.scope();
    /// let handle = scope.supervise(SupervisorPolicy::new(1, Duration::from_secs(1)), || async {
    ///     tokio::time::sleep(Duration::from_secs(3600)).await;
    ///     Ok::<(), String>(())
    /// });
    /// handle.stop();
    /// assert_eq!(pool.block_on(handle), SupervisorExit::Stopped);
    /// ```
    pub fn stop(&self) {
        self.scope.cancel();
    }

    /// True once the supervisor has ended (awaiting the handle then returns at once). The
    /// scope's [`wait`](Scope::wait) may return a moment before this turns true: the
    /// supervisor stops counting as a live task just before its outcome is stored.
    ///
    /// ```
    /// use async_rayon::{SupervisorExit, SupervisorPolicy, ThreadPoolInner};
    /// use std::time::Duration;
    ///
    /// let pool = ThreadPoolInner::new(1, None);
    /// let scope = pool.scope();
    /// let handle = scope.supervise(SupervisorPolicy::new(0, Duration::from_secs(1)), || async {
    ///     Ok::<(), String>(())
    /// });
    /// while !handle.is_finished() {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// assert_eq!(pool.block_on(handle), SupervisorExit::Completed);
    /// ```
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}

impl<E> Future for SupervisorHandle<E> {
    type Output = SupervisorExit<E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.join)
            .poll(cx)
            .map(|joined| match joined {
                Ok(exit) => exit,
                // The loop catches the panics of user code it calls; one that still escapes
                // (an `E` whose drop panics) is the awaiter's, as with a tokio `JoinHandle`.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // The runtime shut down (the pool's own, when the pool was dropped).
                Err(_) => SupervisorExit::Stopped,
            })
    }
}

impl<E> fmt::Debug for SupervisorHandle<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorHandle")
            .field("restarts", &self.restarts())
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Counts the supervisor as a live task of its scope (and ancestors) while the loop exists.
struct Live(Arc<ScopeShared>);

impl Live {
    fn new(scope: &Arc<ScopeShared>) -> Live {
        scope.task_started();
        Live(scope.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.task_finished();
    }
}

impl Scope {
    /// Runs `factory()`'s future as a pool task on a child scope of this one and restarts it
    /// (a fresh `factory()`) when it returns `Err` or panics, after a backoff, at most
    /// `policy.max_restarts` times within any `policy.period`; one more failure gives up. A
    /// run that returns `Ok(())` ends the supervisor. Each run is an ordinary task: it waits
    /// for room like [`reserve`](Self::reserve) (never refused for a full pool), and the
    /// pool's `task_timeout` applies to it (a timed-out run is a failure, restarted).
    ///
    /// The loop that watches the runs is a tokio task on the pool's runtime, not a pool
    /// task: it takes no worker thread and no `max_pending` slot, and holds no reference to
    /// the pool's user handle (see the module docs). It counts as a live task of this scope
    /// until it ends, so [`wait`](Self::wait) waits for it. Cancelling this scope (or
    /// dropping it, or an ancestor's cancel, or the pool's) stops the supervisor, as does
    /// [`SupervisorHandle::stop`]; closing it stops it at the next restart. Restarts are
    /// counted in [`PoolMetrics::restarts`](crate::PoolMetrics).
    ///
    /// ```
    /// use async_rayon::{RetryPolicy, SupervisorExit, SupervisorPolicy, ThreadPoolInner};
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::time::Duration;
    ///
    /// let pool = ThreadPoolInner::new(2, None);
    /// let scope = pool.scope();
    /// let runs = Arc::new(AtomicU32::new(0));
    /// let counter = runs.clone();
    /// let policy = SupervisorPolicy::new(5, Duration::from_secs(10))
    ///     .backoff(RetryPolicy::new(0).initial_backoff(Duration::from_millis(1)));
    /// // Fails twice, then finishes.
    /// let handle = scope.supervise(policy, move || {
    ///     let run = counter.fetch_add(1, Ordering::SeqCst);
    ///     async move { if run < 2 { Err(format!("run {run} failed")) } else { Ok(()) } }
    /// });
    /// assert_eq!(pool.block_on(handle), SupervisorExit::Completed);
    /// assert_eq!(runs.load(Ordering::SeqCst), 3);
    /// assert_eq!(pool.metrics_fast().restarts, 2);
    /// ```
    pub fn supervise<F, Fut, E>(&self, policy: SupervisorPolicy, factory: F) -> SupervisorHandle<E>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Send + 'static,
    {
        // The child's shared half only, as `child()` makes it: a `Scope` would hold the pool's
        // user handle (keeping a dropped pool alive from its own runtime) and cancel the
        // child when dropped.
        let scope = self.shared.child();
        let restarts = Arc::new(AtomicU32::new(0));
        let live = Live::new(&scope);
        let join = self.pool.runtime_handle().spawn(supervise_loop(
            scope.clone(),
            policy,
            factory,
            restarts.clone(),
            live,
        ));
        SupervisorHandle {
            join,
            restarts,
            scope,
        }
    }
}

/// Runs, watches and restarts; returns how the supervisor ended.
async fn supervise_loop<F, Fut, E>(
    scope: Arc<ScopeShared>,
    policy: SupervisorPolicy,
    mut factory: F,
    restarts: Arc<AtomicU32>,
    _live: Live,
) -> SupervisorExit<E>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Send + 'static,
{
    let token = scope.token.clone();
    let stopped = || scope.is_cancelled() || scope.pool.is_cancelling();
    let window = policy.window();
    // Instants of the restarts made within the last `window`, oldest first.
    let mut recent: VecDeque<Instant> = VecDeque::new();
    loop {
        // One run: room for it (as `reserve()`), then a fresh future, then the task.
        match token.run_until_cancelled(scope.admit_one()).await {
            Some(Ok(())) if !stopped() => {}
            Some(Ok(())) => {
                scope.pool.admission.release();
                return SupervisorExit::Stopped;
            }
            // Cancelled, closed, or the pool is shutting down.
            None | Some(Err(_)) => return SupervisorExit::Stopped,
        }
        let failure = match catch_unwind(AssertUnwindSafe(&mut factory)) {
            Ok(future) => match crate::task::spawn_admitted(&scope, future).await {
                Ok(Ok(())) => return SupervisorExit::Completed,
                Ok(Err(e)) => SupervisedFailure::Failed(e),
                Err(TaskError::Panicked(message)) => SupervisedFailure::Panicked(message.into()),
                Err(TaskError::TimedOut) => SupervisedFailure::TimedOut,
                // Cancelled by a stop, a scope or the pool (an admitted spawn is never refused).
                Err(_) => return SupervisorExit::Stopped,
            },
            Err(payload) => {
                scope.pool.admission.release();
                SupervisedFailure::Panicked(crate::unwind::panic_message(&*payload))
            }
        };
        if stopped() {
            return SupervisorExit::Stopped;
        }
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|&at| now.duration_since(at) >= window)
        {
            recent.pop_front();
        }
        if recent.len() >= policy.max_restarts as usize {
            return SupervisorExit::GaveUp {
                restarts: restarts.load(Ordering::SeqCst),
                last: failure,
            };
        }
        let delay = policy.backoff.wait(recent.len() as u32);
        if token
            .run_until_cancelled(tokio::time::sleep(delay))
            .await
            .is_none()
        {
            return SupervisorExit::Stopped;
        }
        recent.push_back(Instant::now());
        restarts.fetch_add(1, Ordering::SeqCst);
        scope.pool.counters.restarted(scope.pool.counter_row());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_period_never_forgets_a_restart() {
        assert_eq!(
            SupervisorPolicy::new(1, Duration::ZERO).window(),
            Duration::MAX
        );
        assert_eq!(
            SupervisorPolicy::new(1, Duration::from_secs(2)).window(),
            Duration::from_secs(2)
        );
    }
}
