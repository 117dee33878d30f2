//! [`TaskHandle`]: awaiting, cancelling and detaching a task.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{Either, select};
use tokio_util::sync::CancellationToken;

use super::{JoinTask, TaskId};
use crate::error::TaskError;

/// An owned permission to await a task's result and to cancel it.
///
/// `TaskHandle<T>` is a future resolving to `Result<T, TaskError>`: `Ok` with the task's
/// value, or the [`TaskError`] that says why there is none. It resolves exactly once; an `Err`
/// is reported only after the task's future has been dropped.
///
/// **Dropping a handle detaches the task**: it keeps running, its value is dropped when it
/// finishes, and it still counts for [`Scope::wait`](crate::Scope::wait),
/// [`Scope::cancel`](crate::Scope::cancel) and shutdown. To stop a task, call
/// [`cancel`](Self::cancel).
///
/// ```
/// use async_rayon::{Scope, TaskError, ThreadPoolInner};
/// use std::time::Duration;
///
/// let pool = ThreadPoolInner::new(2, Some(100));
/// let scope = Scope::new(pool.clone());
/// pool.block_on(async {
///     let quick = scope.spawn_with_handle(async { 21 * 2 });
///     assert_eq!(quick.await, Ok(42));
///
///     let slow = scope.spawn_with_handle(async { tokio::time::sleep(Duration::from_secs(60)).await });
///     slow.cancel();
///     assert_eq!(slow.await, Err(TaskError::Cancelled));
/// });
/// ```
#[must_use = "dropping a TaskHandle detaches the task; await it or call .cancel()"]
pub struct TaskHandle<T> {
    state: State<T>,
}

/// What a handle holds: 16 bytes (a pointer and a tag), where a handle is kept per live task.
enum State<T> {
    /// The task (running or finished), its result not yet returned through this handle.
    Live(JoinTask<T>),
    /// The result was returned; the task is kept (for `id()`) until the handle is dropped.
    Resolved(JoinTask<T>),
    /// Refused at spawn (the task never existed): its id, and its error until returned. Rare,
    /// so boxed.
    Refused(Box<(TaskId, Option<TaskError>)>),
    /// Only while `poll` moves the task from `Live` to `Resolved`.
    Moving,
}

impl<T> TaskHandle<T> {
    pub(crate) fn new(task: JoinTask<T>) -> Self {
        TaskHandle {
            state: State::Live(task),
        }
    }

    /// A handle already resolved to `err` (`Rejected`, `Shutdown` or `Closed`).
    pub(crate) fn refused(err: TaskError) -> Self {
        TaskHandle {
            state: State::Refused(Box::new((TaskId::next(), Some(err)))),
        }
    }

    /// The error a handle built by [`refused`](Self::refused) resolves to.
    pub(crate) fn refusal(&self) -> Option<&TaskError> {
        match &self.state {
            State::Refused(r) => r.1.as_ref(),
            _ => None,
        }
    }

    fn task(&self) -> Option<&JoinTask<T>> {
        match &self.state {
            State::Live(t) | State::Resolved(t) => Some(t),
            State::Refused(_) | State::Moving => None,
        }
    }

    /// True once this handle returned its result.
    fn is_resolved(&self) -> bool {
        match &self.state {
            State::Live(_) | State::Moving => false,
            State::Resolved(_) => true,
            State::Refused(r) => r.1.is_none(),
        }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        match &self.state {
            State::Live(t) | State::Resolved(t) => t.metadata().id(),
            State::Refused(r) => r.0,
            State::Moving => unreachable!("TaskHandle::id during poll"),
        }
    }

    /// True once the task has finished (or was refused): awaiting the handle will not wait.
    pub fn is_finished(&self) -> bool {
        match &self.state {
            State::Live(t) => t.is_finished(),
            _ => true,
        }
    }

    /// Cancels the task. A task that has not started never starts; a suspended task is
    /// dropped promptly (it does not wait for the I/O it is suspended on); a task in the
    /// middle of a poll is dropped when that poll returns. A task that already finished keeps
    /// its value. The handle then resolves to `Err(TaskError::Cancelled)` unless the task
    /// finished first.
    pub fn cancel(&self) {
        if let Some(t) = self.task() {
            t.metadata().request_cancel();
        }
    }

    /// The task's [`CancellationToken`], a child of its scope's token (cancelling the scope
    /// cancels it). Cancelling the token cancels the task at its next suspension point; for
    /// immediate effect on a queued task use [`cancel`](Self::cancel), which also cancels
    /// the token. A refused task's token is already cancelled.
    pub fn cancellation_token(&self) -> CancellationToken {
        match self.task() {
            Some(t) => t.metadata().token().clone(),
            None => {
                let token = CancellationToken::new();
                token.cancel();
                token
            }
        }
    }

    /// Waits at most `timeout` for the task. If it has not finished by then, cancels it,
    /// waits for its future to be dropped, and returns `Err(TaskError::TimedOut)`. A task that
    /// finished in the meantime keeps its result.
    ///
    /// The timer runs on the pool's tokio runtime, so this works from any executor.
    ///
    /// ```
    /// use async_rayon::{Scope, TaskError, ThreadPoolInner};
    /// use std::time::Duration;
    ///
    /// let pool = ThreadPoolInner::new(1, None);
    /// let scope = Scope::new(pool.clone());
    /// let handle = scope.spawn_with_handle(async { tokio::time::sleep(Duration::from_secs(60)).await });
    /// let result = pool.block_on(handle.await_timeout(Duration::from_millis(10)));
    /// assert_eq!(result, Err(TaskError::TimedOut));
    /// ```
    pub async fn await_timeout(mut self, timeout: Duration) -> Result<T, TaskError> {
        let sleep = match &self.state {
            State::Live(t) => {
                let _enter = t.metadata().pool().rt.enter();
                tokio::time::sleep(timeout)
            }
            _ => return (&mut self).await,
        };
        tokio::pin!(sleep);
        match select(&mut self, sleep).await {
            Either::Left((result, _)) => result,
            Either::Right(((), _)) => {
                self.cancel();
                match (&mut self).await {
                    Err(TaskError::Cancelled) => Err(TaskError::TimedOut),
                    other => other,
                }
            }
        }
    }
}

impl<T> TaskHandle<T> {
    /// Lets the task run on without its handle: the same as dropping the handle, said out
    /// loud. The task keeps running, its value is dropped when it finishes, and it still
    /// counts for [`Scope::wait`](crate::Scope::wait), [`Scope::cancel`](crate::Scope::cancel)
    /// and shutdown.
    ///
    /// ```
    /// use async_rayon::ThreadPoolInner;
    ///
    /// let pool = ThreadPoolInner::new(1, None);
    /// let scope = pool.scope();
    /// scope.spawn_with_handle(async { /* background work */ }).detach();
    /// pool.block_on(scope.wait());
    /// ```
    pub fn detach(self) {
        drop(self);
    }

    /// This handle as a future that **cancels the task if it is dropped before the task
    /// finished**, where a plain handle would detach it. It is what a request handler needs:
    /// when the client goes away, the server drops the handler's future, and the task stops
    /// instead of running on and holding its `max_pending` slot for nobody.
    ///
    /// ```
    /// use async_rayon::{TaskError, ThreadPoolInner};
    /// use std::time::Duration;
    ///
    /// let pool = ThreadPoolInner::new(1, Some(1));
    /// let scope = pool.scope();
    /// pool.block_on(async {
    ///     let slow = scope
    ///         .spawn_with_handle(async { tokio::time::sleep(Duration::from_secs(60)).await })
    ///         .cancel_on_drop();
    ///     // The request is abandoned: its future is dropped mid-way.
    ///     let _ = tokio::time::timeout(Duration::from_millis(10), slow).await;
    ///     scope.wait().await; // returns at once: the task was cancelled, its slot is free
    ///     assert_eq!(pool.pending_tasks(), 0);
    /// });
    /// ```
    pub fn cancel_on_drop(self) -> CancelOnDrop<T> {
        CancelOnDrop { handle: Some(self) }
    }
}

/// A [`TaskHandle`] that cancels its task when dropped before the task finished; from
/// [`TaskHandle::cancel_on_drop`]. As a future it resolves exactly like the handle.
#[must_use = "dropping a CancelOnDrop cancels the task; await it"]
pub struct CancelOnDrop<T> {
    /// `None` only after [`into_handle`](Self::into_handle).
    handle: Option<TaskHandle<T>>,
}

impl<T> CancelOnDrop<T> {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.handle().id()
    }

    /// Cancels the task now (see [`TaskHandle::cancel`]).
    pub fn cancel(&self) {
        self.handle().cancel();
    }

    /// The plain handle back: dropping it detaches the task again.
    pub fn into_handle(mut self) -> TaskHandle<T> {
        match self.handle.take() {
            Some(handle) => handle,
            None => unreachable!("CancelOnDrop holds its handle until into_handle"),
        }
    }

    fn handle(&self) -> &TaskHandle<T> {
        match &self.handle {
            Some(handle) => handle,
            None => unreachable!("CancelOnDrop holds its handle until into_handle"),
        }
    }
}

impl<T> Future for CancelOnDrop<T> {
    type Output = Result<T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.handle.as_mut() {
            Some(handle) => Pin::new(handle).poll(cx),
            None => unreachable!("CancelOnDrop holds its handle until into_handle"),
        }
    }
}

impl<T> Drop for CancelOnDrop<T> {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle
            && !handle.is_resolved()
        {
            // A task that finished meanwhile keeps its value; this only stops one that runs.
            handle.cancel();
        }
    }
}

impl<T> fmt::Debug for CancelOnDrop<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CancelOnDrop").field(&self.handle).finish()
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match &mut this.state {
            State::Live(task) => match Pin::new(task).poll(cx) {
                Poll::Ready(result) => {
                    if let State::Live(task) = std::mem::replace(&mut this.state, State::Moving) {
                        this.state = State::Resolved(task);
                    }
                    Poll::Ready(result)
                }
                Poll::Pending => Poll::Pending,
            },
            State::Refused(r) => match r.1.take() {
                Some(err) => Poll::Ready(Err(err)),
                None => panic!("TaskHandle polled after it resolved"),
            },
            State::Resolved(_) | State::Moving => panic!("TaskHandle polled after it resolved"),
        }
    }
}

impl<T> Drop for TaskHandle<T> {
    fn drop(&mut self) {
        if let State::Live(task) | State::Resolved(task) =
            std::mem::replace(&mut self.state, State::Moving)
        {
            if !task.is_finished() {
                task.metadata().mark_detached();
            }
            task.detach();
        }
    }
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id())
            .field("finished", &self.is_finished())
            .finish()
    }
}
