//! The carrier: the body of one batch task ([`BatchBody`]), which runs a chunk of a bulk
//! call's items as units without a task per item.
//!
//! Each item is started and polled once inline in a box the batch reuses ([`Slot`]); an item
//! that finishes there costs no allocation of its own. An item that suspends keeps its box
//! and becomes a full [`Guarded`] unit ([`Suspended`]) in the batch's `FuturesUnordered`.
//! Results go straight into the batch's range of the output; outcomes are tallied and
//! flushed, and the chunk's admission slots released, once per chunk. A carrier whose chunk
//! is done takes the next one from the [`Feed`] itself while the pool has room
//! ([`BatchBody::refill`]). How batches are cut, admitted and spawned is in `batch.rs`.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::batch::{Feed, take_admitted};
use super::input::InRange;
use super::output::OutRange;
use crate::error::TaskError;
use crate::metrics::Outcome;
use crate::task::CancelProbe;
use crate::task::{Guarded, TaskMeta};
use crate::unwind::panic_message;

/// An item's future in a box that is reused from item to item; the item is polled in place,
/// so a future that suspends stays where it is and the box moves into [`Suspended`].
struct Slot<Fut>(Pin<Box<Option<Fut>>>);

impl<Fut: Future> Future for Slot<Fut> {
    type Output = Fut::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Fut::Output> {
        match self.0.as_mut().as_pin_mut() {
            Some(f) => f.poll(cx),
            None => Poll::Pending,
        }
    }
}

/// An item that suspended, driven by the batch's `FuturesUnordered`: from here on a full
/// [`Guarded`] unit (cancellation, panic isolation, latency sample).
struct Suspended<'m, Fut: Future> {
    index: usize,
    unit: Guarded<'m, Slot<Fut>>,
}

impl<'m, Fut: Future> Future for Suspended<'m, Fut> {
    type Output = (usize, Result<Fut::Output, TaskError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let index = self.index;
        Pin::new(&mut self.unit).poll(cx).map(|r| (index, r))
    }
}

/// The body of a batch task (a carrier): starts each item and polls it once inline, then
/// drives the items that suspended. Finishes when every item has; on cancellation, polls
/// every suspended item once so that it sees the cancel and finishes as `Cancelled`.
///
/// Exactly once per item, in this order: its result is written to the batch's range of the
/// output, its outcome is counted (in `tally`, flushed to the pool's counters when the batch
/// finishes or is dropped), then its slot is released (all of the batch's slots at once,
/// after the flush).
pub(crate) struct BatchBody<'m, T, F, Fut: Future> {
    meta: &'m TaskMeta,
    items: InRange<T>,
    f: Arc<F>,
    /// One slot per item, in input order, written as items start; a suspended item's slot
    /// holds a placeholder until it finishes.
    out: OutRange<Fut::Output>,
    /// A finished item's box, reused for the next item.
    spare: Option<Pin<Box<Option<Fut>>>>,
    suspended: FuturesUnordered<Suspended<'m, Fut>>,
    /// Outcomes of finished items not yet added to the pool's counters, by `Outcome::index`.
    tally: [u64; 4],
    /// Admission slots this batch holds, released when it finishes or is dropped.
    slots: usize,
    /// Where to take more items when these are done.
    feed: Arc<Feed<T, Fut::Output>>,
}

// Nothing in a batch body is pinned in place (pinned items live in boxes), so moving it is
// fine whatever `T` and the outputs are.
impl<T, F, Fut: Future> Unpin for BatchBody<'_, T, F, Fut> {}

impl<'m, T, F, Fut> BatchBody<'m, T, F, Fut>
where
    F: Fn(T) -> Fut,
    Fut: Future,
{
    pub(super) fn new(
        meta: &'m TaskMeta,
        chunk: InRange<T>,
        f: Arc<F>,
        out: OutRange<Fut::Output>,
        feed: Arc<Feed<T, Fut::Output>>,
    ) -> Self {
        let n = chunk.len();
        BatchBody {
            meta,
            items: chunk,
            f,
            out,
            spare: None,
            suspended: FuturesUnordered::new(),
            tally: [0; 4],
            slots: n,
            feed,
        }
    }

    /// Writes a finished item's result (`index`: a suspended item's slot; `None`: the next
    /// slot) and tallies its outcome.
    #[inline(always)]
    fn finished(&mut self, index: Option<usize>, result: Result<Fut::Output, TaskError>) {
        self.tally[Outcome::of(&result).index()] += 1;
        match index {
            None => self.out.push(result),
            Some(i) => self.out.set(i, result),
        }
    }

    /// The general path for one item, used when the fast path does not apply (a
    /// `task_timeout` is set, or the batch is cancelled): a [`Guarded`] unit from its first
    /// poll.
    fn start_guarded(&mut self, item: T, cx: &mut Context<'_>) {
        let meta = self.meta;
        let future = if meta.cancel_requested() {
            Err(TaskError::Cancelled)
        } else {
            catch_unwind(AssertUnwindSafe(|| (self.f)(item)))
                .map_err(|p| TaskError::Panicked(panic_message(&*p).into()))
                .map(|f| Slot(Box::pin(Some(f))))
        };
        let mut unit = Guarded::item(meta, future);
        match Pin::new(&mut unit).poll(cx) {
            Poll::Ready(r) => self.finished(None, r),
            Poll::Pending => self.suspend(unit),
        }
    }

    /// Parks an item that returned `Pending` in its first poll: a placeholder in its slot,
    /// and the unit in `suspended`.
    fn suspend(&mut self, unit: Guarded<'m, Slot<Fut>>) {
        let index = self.out.written();
        self.out.push(Err(TaskError::Cancelled)); // placeholder
        self.suspended.push(Suspended { index, unit });
    }

    /// The fast path, item after item until the items run out or the batch is cancelled:
    /// call `f` and poll its future once, in a box kept across the items, under one panic
    /// guard per item. An item done in that poll (the common case for CPU work) needs none
    /// of `Guarded`'s other machinery: no timer (the fast path is only taken without
    /// `task_timeout`), no latency sample, and its outcome goes to the batch's tally. One
    /// that suspends becomes a `Guarded` unit from there on, taking the box with it.
    ///
    /// Returns with the items used up or the batch cancelled; the caller runs what is left
    /// on the general path. The box it leaves in `spare` is always empty (`None` inside).
    #[inline(always)]
    fn start_fast(&mut self, cancel: &CancelProbe<'_>, cx: &mut Context<'_>) {
        let meta = self.meta;
        let f = &*self.f;
        let mut slot = self.spare.take().unwrap_or_else(|| Box::pin(None));
        // The items read and the output written through cursors, and the items that
        // finished counted here: locals the loop keeps in registers, stored back once at
        // the end.
        let mut out = self.out.cursor();
        let mut items = self.items.cursor();
        let mut done_ok = 0;
        while !cancel.requested() {
            let Some(item) = items.next() else {
                break;
            };
            let ran = catch_unwind(AssertUnwindSafe(|| {
                slot.set(Some(f(item)));
                let polled = match slot.as_mut().as_pin_mut() {
                    Some(fut) => fut.poll(cx),
                    None => Poll::Pending,
                };
                if polled.is_ready() {
                    // Done in one poll: drop the future in place.
                    slot.set(None);
                }
                polled
            }));
            match ran {
                Ok(Poll::Ready(v)) => {
                    done_ok += 1;
                    out.push(Ok(v));
                }
                Ok(Poll::Pending) => {
                    // The unit takes the box; the next item gets a fresh one. Made here even
                    // if no item follows (then it waits in `spare` for a refill): at most one
                    // allocation per suspending item, where keeping the box in an `Option`
                    // instead cost every item ~3 instructions (callgrind, 42.3 -> 45.2).
                    let suspended = std::mem::replace(&mut slot, Box::pin(None));
                    let unit = Guarded::item(meta, Ok(Slot(suspended)));
                    // A placeholder in its output slot until it finishes.
                    let index = out.written();
                    out.push(Err(TaskError::Cancelled));
                    self.suspended.push(Suspended { index, unit });
                }
                // `f`, `poll` or the future's `Drop` panicked: drop what is left of the
                // future (a panic there too is the same outcome) and report the first panic.
                Err(p) => {
                    let _ = catch_unwind(AssertUnwindSafe(|| slot.set(None)));
                    self.tally[Outcome::Panicked.index()] += 1;
                    out.push(Err(meta.panicked(panic_message(&*p))));
                }
            }
        }
        drop((out, items));
        self.tally[Outcome::Completed.index()] += done_ok;
        self.spare = Some(slot);
    }
}

impl<T, F, Fut: Future> BatchBody<'_, T, F, Fut> {
    /// Takes the next items from the feed, up to a batch, and tells whether there are any.
    /// Call after `settle`.
    ///
    /// Items that still need admission are taken as many as the pool has room for now,
    /// and not at all once the batch is cancelled: this never waits (if the pool is full,
    /// or others wait for room, this batch finishes and the caller waits in the queue
    /// instead). Admitted items are taken even when cancelled, to be finished as
    /// `Cancelled` at once: their slots are held, and the caller may be waiting for them.
    fn refill(&mut self, cancelled: bool) -> bool {
        let feed = &*self.feed;
        let taken = if feed.admitted() {
            feed.take(feed.size)
        } else {
            let want = feed.size.min(feed.remaining());
            if cancelled || want == 0 {
                return false;
            }
            let Ok(got) = self.meta.scope.try_admit_up_to(want) else {
                return false;
            };
            take_admitted(self.meta.pool(), feed, got)
        };
        let Some((chunk, range)) = taken else {
            return false;
        };
        self.slots = chunk.len();
        self.items = chunk;
        self.out = range; // the old range is full: dropping it writes nothing
        true
    }

    /// Counts the tallied outcomes, then releases the batch's slots. Items not finished by
    /// now (the batch is being dropped) count as cancelled.
    fn settle(&mut self, unfinished: u64) {
        let pool = self.meta.pool();
        let worker = pool.counter_row();
        self.tally[Outcome::Cancelled.index()] += unfinished;
        for outcome in Outcome::ALL {
            let n = std::mem::take(&mut self.tally[outcome.index()]);
            pool.counters.record_n(worker, outcome, n);
        }
        let n = std::mem::take(&mut self.slots);
        pool.admission.release_at(worker, n);
    }
}

impl<T, F, Fut> Future for BatchBody<'_, T, F, Fut>
where
    F: Fn(T) -> Fut,
    Fut: Future,
{
    type Output = Result<(), TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let meta = this.meta;
        // Start every item not started yet, polling each once in place. Cancellation is
        // checked before each item.
        let cancel = meta.cancel_probe();
        if meta.pool().task_timeout.is_none() {
            this.start_fast(&cancel, cx);
        }
        // With a `task_timeout`, or once cancelled: the rest take the general path.
        while let Some(item) = this.items.next() {
            this.start_guarded(item, cx);
        }
        if meta.cancel_requested() {
            // Suspended items are only polled when woken; poll each once so it finishes.
            let mut finished_now = Vec::new();
            for s in this.suspended.iter_mut() {
                if let Poll::Ready(r) = Pin::new(&mut s.unit).poll(cx) {
                    finished_now.push((s.index, r));
                }
            }
            // One that did not finish on that poll (it cannot happen: a polled unit sees the
            // cancel) is dropped by `clear` below and keeps its `Cancelled` placeholder.
            let dropped = this.suspended.len() - finished_now.len();
            this.tally[Outcome::Cancelled.index()] += dropped as u64;
            this.suspended.clear();
            for (index, r) in finished_now {
                this.finished(Some(index), r);
            }
        }
        while let Poll::Ready(Some((index, r))) = this.suspended.poll_next_unpin(cx) {
            this.finished(Some(index), r);
        }
        if !this.suspended.is_empty() {
            return Poll::Pending;
        }
        this.settle(0);
        if this.refill(cancel.requested()) {
            // Go round the run queue before the next items, as a task that yields does.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.spare = None;
        Poll::Ready(Ok(()))
    }
}

impl<T, F, Fut: Future> Drop for BatchBody<'_, T, F, Fut> {
    fn drop(&mut self) {
        if self.slots == 0 && self.tally == [0; 4] {
            return; // settled when it finished
        }
        // Items still running are dropped first (their futures go before their slots); the
        // range fills the slots of items never written as cancelled when it is dropped.
        let unfinished = (self.suspended.len() + self.items.len()) as u64;
        self.suspended.clear();
        self.spare = None;
        self.settle(unfinished);
    }
}
