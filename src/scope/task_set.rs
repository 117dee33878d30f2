//! [`TaskSet`]: a typed group of tasks joined in completion order, like tokio's `JoinSet`.

use std::future::Future;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::Scope;
use crate::error::{SpawnError, TaskError};
use crate::task::{TaskHandle, TaskId};

/// A set of tasks of one output type on a pool, joined in the order they finish. From
/// [`Scope::task_set`].
///
/// The set spawns on a child scope of its own: cancelling or dropping the parent scope
/// cancels the set's tasks, and **dropping the set cancels its unfinished tasks** (as
/// tokio's `JoinSet` aborts them). Admission is the pool's: [`try_spawn`](Self::try_spawn)
/// refuses when the pool is full, [`spawn`](Self::spawn) waits for room.
///
/// ```
/// use async_rayon::ThreadPoolInner;
/// use std::time::Duration;
///
/// let pool = ThreadPoolInner::new(2, Some(64));
/// let scope = pool.scope();
/// let mut set = scope.task_set::<u64>();
/// pool.block_on(async {
///     for ms in [30u64, 10, 20] {
///         set.spawn(async move {
///             tokio::time::sleep(Duration::from_millis(ms)).await;
///             ms
///         })
///         .await
///         .expect("pool is running");
///     }
///     let mut order = Vec::new();
///     while let Some(result) = set.join_next().await {
///         order.push(result.expect("no task failed"));
///     }
///     assert_eq!(order, [10, 20, 30]);
/// });
/// ```
pub struct TaskSet<T> {
    scope: Scope,
    handles: FuturesUnordered<TaskHandle<T>>,
}

impl<T: Send + 'static> TaskSet<T> {
    pub(super) fn new(scope: Scope) -> Self {
        TaskSet {
            scope,
            handles: FuturesUnordered::new(),
        }
    }

    /// Spawns `future` into the set if the pool has room now.
    ///
    /// # Errors
    /// As [`Scope::try_spawn_with_handle`]: `Full`, `Shutdown`, or `Closed` (the parent
    /// scope was closed); `future` is then dropped unpolled and the set is unchanged.
    pub fn try_spawn<F>(&mut self, future: F) -> Result<TaskId, SpawnError>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let handle = self.scope.try_spawn_with_handle(future)?;
        let id = handle.id();
        self.handles.push(handle);
        Ok(id)
    }

    /// Waits for room in the pool (first come first served, as
    /// [`Scope::reserve`]), then spawns `future` into the set.
    ///
    /// # Errors
    /// `Shutdown` or `Closed`, as [`Scope::reserve`]; `future` is then dropped unpolled.
    pub async fn spawn<F>(&mut self, future: F) -> Result<TaskId, SpawnError>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let handle = match self.scope.reserve().await {
            Ok(permit) => permit.spawn_with_handle(future),
            Err(e) => {
                crate::task::drop_refused(future);
                return Err(e);
            }
        };
        let id = handle.id();
        self.handles.push(handle);
        Ok(id)
    }

    /// Waits for the next task of the set to finish and returns its result, in completion
    /// order; `None` when the set is empty.
    pub async fn join_next(&mut self) -> Option<Result<T, TaskError>> {
        self.handles.next().await
    }

    /// Tasks in the set: spawned and not yet returned by [`join_next`](Self::join_next).
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// True if the set holds no task.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Cancels every task in the set (as [`TaskHandle::cancel`]); their results, mostly
    /// `Err(TaskError::Cancelled)`, still come out of [`join_next`](Self::join_next). The
    /// set stays usable.
    pub fn cancel_all(&self) {
        for handle in self.handles.iter() {
            handle.cancel();
        }
    }
}

impl<T> std::fmt::Debug for TaskSet<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskSet")
            .field("len", &self.handles.len())
            .field("scope", &self.scope)
            .finish()
    }
}
