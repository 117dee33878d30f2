//! [`TaskFuture`]: the future stored in every pool task.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::TaskMeta;
use super::rare_box::RareBox;
use crate::error::TaskError;
use crate::unwind::panic_message;

pin_project! {
    /// One pool task: a body (a [`Guarded`](super::Guarded) user future, or a batch of them)
    /// plus what belongs to the task rather than to a unit of work:
    ///
    /// - **cancel wake-up**: on the first `Pending` the task registers its waker with its
    ///   scope, so cancelling the task, its scope or the pool wakes it even while its I/O is
    ///   idle; the woken body then sees the cancel flag and finishes. If the handle made the
    ///   task's own token, the task also waits on it;
    /// - **scope count**: the task leaves its scope exactly once, after the body finished
    ///   (so after every unit's slot was released), or in `drop`;
    /// - **panic backstop**: a panic escaping the body becomes `Err(Panicked)`.
    pub(crate) struct TaskFuture<'m, B> {
        meta: &'m TaskMeta,
        #[pin]
        body: Option<B>,
        // A wait on the task's own token, made only if the handle made that token.
        cancel_wait: RareBox<WaitForCancellationFutureOwned>,
        left_scope: bool,
        registered: bool,
    }

    impl<'m, B> PinnedDrop for TaskFuture<'m, B> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if !*this.left_scope {
                *this.left_scope = true;
                // Drop the body first: its unfinished units finish (count, release their
                // slots) in their own `drop`, before the scope stops counting this task.
                let _ = catch_unwind(AssertUnwindSafe(|| this.body.set(None)));
                leave_scope(this.meta, *this.registered);
            }
        }
    }
}

/// The task's body has finished (or was dropped): forget its waker if it registered one,
/// then leave the scope. Once per task (`left_scope` guards both callers).
#[inline]
fn leave_scope(meta: &TaskMeta, registered: bool) {
    if registered {
        meta.unregister_suspended();
    }
    meta.scope.task_finished();
}

impl<'m, B> TaskFuture<'m, B> {
    pub(crate) fn new(meta: &'m TaskMeta, body: B) -> Self {
        TaskFuture {
            meta,
            body: Some(body),
            cancel_wait: RareBox::new(),
            left_scope: false,
            registered: false,
        }
    }
}

impl<T, B> Future for TaskFuture<'_, B>
where
    B: Future<Output = Result<T, TaskError>>,
{
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let meta = *this.meta;
        if *this.left_scope {
            return Poll::Pending;
        }
        // At most two rounds: the second only if the task's own token fired without the flag
        // being set (someone cancelled the token directly), after we set the flag.
        for _ in 0..2 {
            let Some(body) = this.body.as_mut().as_pin_mut() else {
                return Poll::Pending;
            };
            let polled = catch_unwind(AssertUnwindSafe(|| body.poll(cx)));
            let result = match polled {
                Ok(Poll::Pending) => None,
                Ok(Poll::Ready(result)) => Some(result),
                Err(payload) => Some(Err(meta.panicked(panic_message(&*payload)))),
            };
            if let Some(result) = result {
                *this.left_scope = true;
                leave_scope(meta, *this.registered);
                return Poll::Ready(result);
            }
            if !*this.registered {
                // The cancel handshake (`super::cancel`): registered before the flags are read.
                meta.register_suspended(cx.waker());
                *this.registered = true;
            }
            let mut token_fired = false;
            if let Some(token) = meta.token_if_made() {
                let wait = this
                    .cancel_wait
                    .get_or_insert_with(|| token.clone().cancelled_owned());
                token_fired = wait.poll(cx).is_ready();
            }
            if !token_fired && !meta.cancel_requested() {
                return Poll::Pending;
            }
            // Cancelled meanwhile: make it visible to the body and poll it again.
            meta.mark_cancelled();
        }
        // Unreachable in practice: a body that sees the cancel flag finishes. Stay pending
        // rather than spin; the pool's drain finishes it at shutdown.
        Poll::Pending
    }
}
