//! [`TaskFuture`]: the user's future plus cancellation, timeout and panic isolation.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{Ordering, fence};
use std::task::{Context, Poll};
use std::time::Instant;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{TaskMeta, panic_message};
use crate::error::TaskError;
use crate::metrics::Outcome;

pin_project! {
    /// What suspends with the task: its cancellation wait and, with a timeout, its timer.
    /// Boxed and created on the first `Pending`, so tasks that finish in one poll never pay
    /// for a token, a timer registration or this allocation.
    struct Suspend {
        #[pin]
        cancelled: WaitForCancellationFutureOwned,
        #[pin]
        deadline: Option<Sleep>,
    }
}

pin_project! {
    /// The future stored in every task.
    ///
    /// Exactly-once finish: `finished` is set by the one call to `finish`, which happens either
    /// when `poll` returns `Ready` or, if the task is dropped unfinished, in `drop`. Both drop
    /// the user's future first and only then count the outcome and release the slot.
    #[project = Projected]
    pub(crate) struct TaskFuture<'m, F> {
        meta: &'m TaskMeta,
        #[pin]
        inner: Option<F>,
        suspend: Option<Pin<Box<Suspend>>>,
        deadline: Option<Instant>,
        finished: bool,
    }

    impl<'m, F> PinnedDrop for TaskFuture<'m, F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if !*this.finished {
                // Dropped without finishing: the task was closed before it could run to an
                // end (its last waker vanished while detached). It counts as cancelled.
                *this.finished = true;
                let outcome = match drop_inner(this.inner.as_mut()) {
                    Ok(()) => Outcome::Cancelled,
                    Err(_) => Outcome::Panicked,
                };
                *this.suspend = None;
                this.meta.finish(outcome);
            }
        }
    }
}

/// Drops the user's future in place, catching a panic from its destructor.
fn drop_inner<F>(inner: Pin<&mut Option<F>>) -> Result<(), String> {
    // If the destructor panics, the assignment inside `set` still stores `None`, so the
    // future is never dropped twice.
    catch_unwind(AssertUnwindSafe(|| {
        let mut inner = inner;
        inner.set(None)
    }))
    .map_err(|p| panic_message(&*p))
}

impl<'m, F: Future> TaskFuture<'m, F> {
    pub(crate) fn new(meta: &'m TaskMeta, inner: F) -> Self {
        TaskFuture {
            meta,
            inner: Some(inner),
            suspend: None,
            deadline: None,
            finished: false,
        }
    }
}

/// Life-cycle step 4: drop the future, then count and release. Returns what the handle sees.
fn finish<F: Future>(
    this: &mut Projected<'_, '_, F>,
    result: Result<F::Output, TaskError>,
) -> Poll<Result<F::Output, TaskError>> {
    let result = match drop_inner(this.inner.as_mut()) {
        Ok(()) => result,
        Err(msg) => Err(TaskError::Panicked(msg)),
    };
    *this.suspend = None;
    *this.finished = true;
    let outcome = match &result {
        Ok(_) => Outcome::Completed,
        Err(TaskError::Panicked(_)) => Outcome::Panicked,
        Err(TaskError::TimedOut) => Outcome::TimedOut,
        Err(_) => Outcome::Cancelled,
    };
    this.meta.finish(outcome);
    Poll::Ready(result)
}

impl<F: Future> Future for TaskFuture<'_, F> {
    type Output = Result<F::Output, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let meta = *this.meta;
        if *this.finished {
            // async-task never polls a finished future; stay inert if it ever did.
            return Poll::Pending;
        }

        // A task cancelled while queued never starts; one cancelled while suspended is
        // finished here without being polled again.
        if meta.cancel_requested() {
            return finish(&mut this, Err(TaskError::Cancelled));
        }
        match (&*this.suspend, *this.deadline) {
            (Some(s), _) if s.deadline.as_ref().is_some_and(Sleep::is_elapsed) => {
                return finish(&mut this, Err(TaskError::TimedOut));
            }
            (_, None) => {
                // The timeout clock starts at the first poll: queue time does not count.
                if let Some(limit) = meta.pool().task_timeout {
                    *this.deadline = Some(Instant::now() + limit);
                }
            }
            _ => {}
        }

        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(value)) => return finish(&mut this, Ok(value)),
            Err(payload) => {
                return finish(
                    &mut this,
                    Err(TaskError::Panicked(panic_message(&*payload))),
                );
            }
            Ok(Poll::Pending) => {}
        }

        // Suspending: make sure a cancel or the deadline can wake us.
        let suspend = match this.suspend {
            Some(s) => s.as_mut().project(),
            None => {
                let cancelled = meta.token().clone().cancelled_owned();
                let deadline = this.deadline.map(|d| tokio::time::sleep_until(d.into()));
                // Pairs with the fence in `TaskMeta::request_cancel` (see there).
                fence(Ordering::SeqCst);
                this.suspend
                    .insert(Box::pin(Suspend {
                        cancelled,
                        deadline,
                    }))
                    .as_mut()
                    .project()
            }
        };
        if suspend.cancelled.poll(cx).is_ready() || meta.cancel_requested() {
            return finish(&mut this, Err(TaskError::Cancelled));
        }
        if let Some(deadline) = suspend.deadline.as_pin_mut()
            && deadline.poll(cx).is_ready()
        {
            return finish(&mut this, Err(TaskError::TimedOut));
        }
        Poll::Pending
    }
}
