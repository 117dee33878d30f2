//! [`Guarded`]: one admitted unit of work with its controls.
//!
//! A unit is either a whole task (spawned with `spawn_with_handle`) or one item of a bulk
//! call driven inside a batch task. Either way it holds one admission slot, and `Guarded`
//! gives it the same guarantees:
//!
//! 1. cancellation (of the unit's task, scope or pool) is seen at every poll;
//! 2. `task_timeout` runs from the unit's first poll, with a timer created only if it suspends;
//! 3. a panic in `poll` or in the future's `Drop` becomes `TaskError::Panicked`;
//! 4. **finish exactly once**: drop the future, count the outcome, release the slot, in that
//!    order, either when `poll` returns `Ready` or, if it is dropped unfinished, in `drop`.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::TaskMeta;
use super::rare_box::RareBox;
use crate::error::TaskError;
use crate::metrics::Outcome;
use crate::unwind::panic_message;

pin_project! {
    /// See the module doc.
    #[project = GuardedProj]
    pub(crate) struct Guarded<'m, F> {
        meta: &'m TaskMeta,
        #[pin]
        inner: Option<F>,
        // A result decided before the first poll (the future could not even be built). Rare,
        // so boxed: every byte here is in every task's allocation.
        preset: Option<Box<TaskError>>,
        // `task_timeout`'s deadline, in the pool's clock (`Counters::now_ns`); 0 if none yet.
        deadline_ns: u64,
        timer: RareBox<Sleep>,
        // Latency sampling (see `metrics`): when the unit was created, then, once `started`,
        // when it was first polled; 0 if not sampled.
        sample_ns: u64,
        started: bool,
        // True for a batch item: its batch counts its outcome and releases its slot, so the
        // item itself does neither.
        batch_item: bool,
        finished: bool,
    }

    impl<'m, F> PinnedDrop for Guarded<'m, F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if !*this.finished {
                *this.finished = true;
                let outcome = match drop_inner(this.inner.as_mut()) {
                    Ok(()) => Outcome::Cancelled,
                    Err(message) => {
                        this.meta.pool().report_panic(this.meta.id(), &message);
                        Outcome::Panicked
                    }
                };
                this.timer.clear();
                if !*this.batch_item {
                    this.meta.unit_finished(outcome);
                }
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

impl<'m, F: Future> Guarded<'m, F> {
    /// A unit that runs `future` and releases its admission slot (already held) when it
    /// finishes.
    pub(crate) fn new(meta: &'m TaskMeta, future: F) -> Self {
        Guarded {
            meta,
            inner: Some(future),
            preset: None,
            deadline_ns: 0,
            timer: RareBox::new(),
            sample_ns: meta.pool().counters.sample_start(),
            started: false,
            batch_item: false,
            finished: false,
        }
    }

    /// A batch item: like [`new`](Self::new), but its batch counts its outcome (from the
    /// result, see [`Outcome::of`]) and releases its slot. With `Err`, the unit finishes with
    /// that error at its first poll (its future could not be built, e.g. the user's function
    /// panicked).
    pub(crate) fn item(meta: &'m TaskMeta, future: Result<F, TaskError>) -> Self {
        let (inner, preset) = match future {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(Box::new(e))),
        };
        Guarded {
            meta,
            inner,
            preset,
            deadline_ns: 0,
            timer: RareBox::new(),
            sample_ns: meta.pool().counters.sample_start(),
            started: false,
            batch_item: true,
            finished: false,
        }
    }
}

/// Step 4: drop the future, then count and release. Returns what the awaiter sees.
fn finish<F: Future>(
    this: &mut GuardedProj<'_, '_, F>,
    result: Result<F::Output, TaskError>,
) -> Poll<Result<F::Output, TaskError>> {
    let result = match drop_inner(this.inner.as_mut()) {
        Ok(()) => result,
        Err(msg) => Err(TaskError::Panicked(msg.into())),
    };
    this.timer.clear();
    *this.finished = true;
    if *this.started && *this.sample_ns != 0 {
        let counters = &this.meta.pool().counters;
        let worker = this.meta.pool().counter_row();
        counters.record_run_time(worker, counters.now_ns().saturating_sub(*this.sample_ns));
    }
    if let Err(TaskError::Panicked(message)) = &result {
        this.meta.pool().report_panic(this.meta.id(), message);
    }
    let outcome = Outcome::of(&result);
    #[cfg(feature = "tracing")]
    tracing::trace!(target: "async_rayon", outcome = ?outcome, "task finished");
    #[cfg(not(feature = "tracing"))]
    let _ = &outcome;
    if !*this.batch_item {
        if outcome == Outcome::TimedOut {
            this.meta.cancel_token_on_timeout();
        }
        this.meta.unit_finished(outcome);
    }
    Poll::Ready(result)
}

impl<F: Future> Future for Guarded<'_, F> {
    type Output = Result<F::Output, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let meta = *this.meta;
        if *this.finished {
            return Poll::Pending;
        }
        if let Some(err) = this.preset.take() {
            return finish(&mut this, Err(*err));
        }
        // A unit cancelled while queued never starts; one cancelled while suspended finishes
        // here without being polled again.
        if meta.cancel_requested() {
            return finish(&mut this, Err(TaskError::Cancelled));
        }
        if this.timer.as_ref().is_some_and(|t| t.is_elapsed()) {
            return finish(&mut this, Err(TaskError::TimedOut));
        }
        if !*this.started {
            *this.started = true;
            let pool = meta.pool();
            let sampled = *this.sample_ns != 0;
            if sampled || pool.task_timeout.is_some() {
                let now = pool.counters.now_ns();
                if sampled {
                    let worker = pool.counter_row();
                    let waited = now.saturating_sub(*this.sample_ns);
                    pool.counters.record_queue_wait(worker, waited);
                    *this.sample_ns = now;
                }
                if let Some(limit) = pool.task_timeout {
                    // The clock starts at the first poll: queue time does not count.
                    let limit = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
                    *this.deadline_ns = now.saturating_add(limit);
                }
            }
        }

        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(value)) => return finish(&mut this, Ok(value)),
            Err(payload) => {
                return finish(
                    &mut this,
                    Err(TaskError::Panicked(panic_message(&*payload).into())),
                );
            }
            Ok(Poll::Pending) => {}
        }
        // Suspending with a deadline: a timer wakes us when it passes.
        if *this.deadline_ns != 0 {
            let deadline = meta.pool().counters.instant_of(*this.deadline_ns);
            let timer = this
                .timer
                .get_or_insert_with(|| tokio::time::sleep_until(deadline.into()));
            if timer.poll(cx).is_ready() {
                return finish(&mut this, Err(TaskError::TimedOut));
            }
        }
        Poll::Pending
    }
}
