//! `batch_process` and `par_map_async`: many items, one pool task per batch.
//!
//! The caller cuts the items into batches and runs each batch as one *carrier* task
//! ([`BatchBody`]) that drives its items' futures concurrently, each item a unit with its
//! own outcome, timeout and panic isolation. No task is allocated per item: an item whose
//! future finishes in its first poll reuses one box per batch and skips the rest of
//! [`Guarded`](crate::task::Guarded); only items that suspend become `Guarded` units with a
//! node in the batch's `FuturesUnordered`. Each batch writes its results straight into its
//! range of the final vector ([`Output`]), so no result is copied after it is made.
//! `par_map_async` builds each batch's futures just before the batch is spawned.
//!
//! # Admission
//! A chunk of items takes one slot per item, in one CAS when there is room, before it starts:
//! the caller takes them before spawning a batch (waiting for room, first come first served),
//! a batch that takes its next chunk from the feed only if there is room now. The batch gives
//! them all back in one `fetch_sub` when the chunk's last item has finished (every item's
//! future has been dropped by then). Outcomes are tallied per item as each finishes and added
//! to the pool's counters once per chunk.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::Scope;
use super::output::{OutRange, Output};
use crate::error::TaskError;
use crate::metrics::Outcome;
use crate::registry::Shared;
use crate::sync::Mutex;
use crate::task::CancelProbe;
use crate::task::{self, Guarded, TaskHandle, TaskMeta};
use crate::unwind::panic_message;

/// Most items per batch when the size is chosen automatically.
const MAX_AUTO_BATCH: usize = 4096;
/// Batches per worker aimed for when the size is chosen automatically, for load balance.
const BATCHES_PER_WORKER: usize = 4;

/// Settings for [`Scope::batch_process_with`].
///
/// ```
/// use async_rayon::BatchOptions;
/// let options = BatchOptions::new(8).batch_size(256);
/// assert_eq!(options.max_concurrent_batches, 8);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchOptions {
    /// Most batches running at once. Must be at least 1.
    pub max_concurrent_batches: usize,
    /// Items per batch; `None` chooses from the item count, the thread count and
    /// `max_pending`.
    pub batch_size: Option<usize>,
}

impl BatchOptions {
    /// At most `max_concurrent_batches` batches at once, batch size chosen automatically.
    pub fn new(max_concurrent_batches: usize) -> Self {
        BatchOptions {
            max_concurrent_batches,
            batch_size: None,
        }
    }

    /// Sets the number of items per batch (at least 1; capped at `max_pending`).
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = Some(size);
        self
    }
}

/// The batch size used when none is given: a few batches per worker, at most
/// [`MAX_AUTO_BATCH`] items, and small enough that all concurrent batches fit in
/// `max_pending` together.
fn auto_batch_size(
    items: usize,
    threads: usize,
    concurrent: usize,
    max_pending: Option<usize>,
) -> usize {
    let target_batches = threads.max(1) * BATCHES_PER_WORKER;
    let size = items.div_ceil(target_batches).clamp(1, MAX_AUTO_BATCH);
    match max_pending {
        Some(mp) => size.min((mp / concurrent.max(1)).max(1)),
        None => size,
    }
}

impl Scope {
    /// Runs `f` on every item, in batches, and returns the results in input order.
    ///
    /// The items are cut into batches (size chosen from the item count, the thread count
    /// and `max_pending`; see [`batch_process_with`](Self::batch_process_with) to set it).
    /// Each batch is one pool task that drives its items' futures concurrently, and at most
    /// `max_concurrent_batches` batches run at once. Each item is one unit for `max_pending`
    /// (a batch waits for room rather than being rejected), for `task_timeout`, and for the
    /// metrics. A panic, timeout or cancellation of an item is that item's `Err`; the other
    /// items go on. Errors of your own are values: make `R` a `Result`.
    ///
    /// Dropping the returned future cancels the batches in flight.
    ///
    /// # Panics
    /// If `max_concurrent_batches` is 0.
    ///
    /// ```
    /// use async_rayon::{Config, Scope, ThreadPoolInner};
    ///
    /// let pool = ThreadPoolInner::with_config(Config::cpu_bound());
    /// let scope = Scope::new(pool.clone());
    /// let data: Vec<u64> = (0..100_000).collect();
    /// let results = pool.block_on(scope.batch_process(data, 50, |item| {
    ///     Box::pin(async move { item * item })
    /// }));
    /// assert_eq!(results.len(), 100_000);
    /// assert_eq!(results[3], Ok(9));
    /// ```
    pub async fn batch_process<T, R, F, Fut>(
        &self,
        items: impl IntoIterator<Item = T>,
        max_concurrent_batches: usize,
        f: F,
    ) -> Vec<Result<R, TaskError>>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        assert!(
            max_concurrent_batches > 0,
            "Scope::batch_process: max_concurrent_batches must be at least 1, got 0"
        );
        self.batch_process_with(items, BatchOptions::new(max_concurrent_batches), f)
            .await
    }

    /// [`batch_process`](Self::batch_process) with every setting in [`BatchOptions`].
    ///
    /// # Panics
    /// If `options.max_concurrent_batches` or `options.batch_size` is 0.
    pub async fn batch_process_with<T, R, F, Fut>(
        &self,
        items: impl IntoIterator<Item = T>,
        options: BatchOptions,
        f: F,
    ) -> Vec<Result<R, TaskError>>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        let concurrent = options.max_concurrent_batches;
        assert!(
            concurrent > 0,
            "Scope::batch_process_with: max_concurrent_batches must be at least 1, got 0"
        );
        assert!(
            options.batch_size != Some(0),
            "Scope::batch_process_with: batch_size must be at least 1, got 0"
        );
        let items: Vec<T> = items.into_iter().collect();
        let n = items.len();
        let size = self.batch_size(n, concurrent, options.batch_size);
        let out = Output::new(n);
        let feed = Arc::new(Feed {
            rest: Mutex::new(items.into_iter()),
            out: out.clone(),
            size,
        });
        self.run_batches(out, size, concurrent, feed, f).await
    }

    /// Runs `f` on every element of `items` concurrently on the pool and returns the results
    /// in input order: the async counterpart of rayon's `par_iter().map()`.
    ///
    /// `f` is called on the calling thread to build each item's future (so the future must
    /// own what it needs: it is `'static`), one batch at a time, just before the batch is
    /// spawned: at most a few batches of futures exist at once, however long `items` is.
    /// The futures run in batches as in [`batch_process`](Self::batch_process), with one
    /// batch in flight per worker and one spare. A panic in `f` propagates to the caller
    /// (and cancels the batches in flight), as in an iterator's `map`.
    ///
    /// ```
    /// use async_rayon::{Config, Scope, ThreadPoolInner};
    ///
    /// let pool = ThreadPoolInner::with_config(Config::io_bound());
    /// let scope = Scope::new(pool.clone());
    /// let user_ids = vec![1, 2, 3, 4, 5];
    /// let results = pool.block_on(scope.par_map_async(&user_ids, |&id| async move {
    ///     format!("user-{id}")
    /// }));
    /// assert_eq!(results[4], Ok("user-5".to_string()));
    /// ```
    pub async fn par_map_async<T, R, G, Fut>(&self, items: &[T], f: G) -> Vec<Result<R, TaskError>>
    where
        G: Fn(&T) -> Fut,
        Fut: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        let concurrent = self.pool.num_threads() + 1;
        let size = self.batch_size(items.len(), concurrent, None);
        let out = Output::new(items.len());
        let source = Built {
            rest: items,
            f,
            out: out.clone(),
        };
        self.run_batches(out, size, concurrent, source, std::convert::identity)
            .await
    }

    /// Items per batch: `requested` (capped at `max_pending`), or chosen by
    /// [`auto_batch_size`].
    fn batch_size(&self, n: usize, concurrent: usize, requested: Option<usize>) -> usize {
        let max_pending = self.pool.max_pending();
        match requested {
            Some(s) => s.min(max_pending.unwrap_or(usize::MAX)),
            None => auto_batch_size(n, self.pool.num_threads(), concurrent, max_pending),
        }
    }

    /// The engine of the bulk calls: the items of `source` cut into batches of up to
    /// `size`, at most `concurrent` batches in flight, each one pool task ([`BatchBody`])
    /// applying `f` to its items and writing their results into its range of `out`.
    ///
    /// The caller admits and spawns batches until `concurrent` are in flight, then waits for
    /// one to finish. With a [`Feed`] source, a batch that finishes its items takes the next
    /// ones itself while the pool has room, so the caller is woken about once per
    /// `concurrent` batches rather than once per batch, and the items are cut on the
    /// workers.
    async fn run_batches<X, F, Fut>(
        &self,
        out: Arc<Output<Fut::Output>>,
        size: usize,
        concurrent: usize,
        mut source: impl Source<X, Fut::Output>,
        f: F,
    ) -> Vec<Result<Fut::Output, TaskError>>
    where
        X: Send + 'static,
        F: Fn(X) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let pool = &self.shared.pool;
        let f = Arc::new(f);
        let mut in_flight = CancelOnDrop(FuturesUnordered::new());
        loop {
            while in_flight.0.len() < concurrent {
                let want = size.min(source.remaining());
                if want == 0 {
                    break;
                }
                // As many slots as are free, at least one: a smaller batch now rather than
                // holding slots while waiting for more (admission.rs, "No hold-and-wait").
                let got = match pool.admission.acquire_up_to(want).await {
                    Ok(got) => got,
                    Err(e) => {
                        // Shutdown began: every item not started yet is refused.
                        source.refuse_rest(&e.into());
                        break;
                    }
                };
                // The batches in flight may have taken items meanwhile.
                let Some((chunk, range)) = take_admitted(pool, &mut source, got) else {
                    break;
                };
                let (f, feed) = (f.clone(), source.feed());
                // SAFETY: `BatchBody` keeps `meta` in a field and lends it only to the
                // `Guarded` items it owns and drops before itself; nothing of it outlives the
                // body.
                let handle = unsafe {
                    task::spawn_task(&self.shared, move |meta| {
                        BatchBody::new(meta, chunk, f, range, feed)
                    })
                };
                in_flight.0.push(handle);
            }
            // A batch task fails as a whole only if this crate's own code panicked; its
            // items not written by then read `Cancelled` (see `OutRange`).
            if in_flight.0.next().await.is_none() {
                break;
            }
        }
        drop(source);
        // Every range was handed out and every batch task has finished, and a task's body
        // (holding its range) is dropped before its handle resolves.
        match out.into_vec() {
            Ok(v) => v,
            Err(_) => unreachable!("run_batches: a batch outlived its handle"),
        }
    }
}

/// Takes up to `want` items from `source` for which `want` admission slots are already held:
/// gives back the slots of the items it did not get (others may have taken them) and counts
/// the items it got as submitted. Used by the caller and by a batch refilling itself.
fn take_admitted<X, R>(
    pool: &Arc<Shared>,
    source: &mut impl Source<X, R>,
    want: usize,
) -> Option<(Vec<X>, OutRange<R>)> {
    let taken = source.take(want);
    let got = taken.as_ref().map_or(0, |(chunk, _)| chunk.len());
    pool.admission.release_many(want - got);
    if got > 0 {
        let worker = pool.counter_row();
        pool.counters.submitted_n(worker, got as u64);
    }
    taken
}

/// Where a bulk call's batches get their items, each chunk with its range of the output
/// (handed out in input order).
trait Source<X, R> {
    /// Items not given to a batch yet.
    fn remaining(&self) -> usize;
    /// Up to `len` items and their output range; `None` when no item is left.
    fn take(&mut self, len: usize) -> Option<(Vec<X>, OutRange<R>)>;
    /// Every item left is refused with `err`: its slot gets the error, it never starts.
    fn refuse_rest(&mut self, err: &TaskError);
    /// The items, if batches may take more of them themselves.
    fn feed(&self) -> Option<Arc<Feed<X, R>>>;
}

/// `batch_process`'s items, shared by the caller and the batches: whoever takes items
/// takes their output range with them, under one lock, so ranges follow input order.
pub(crate) struct Feed<T, R> {
    rest: Mutex<std::vec::IntoIter<T>>,
    out: Arc<Output<R>>,
    /// Items a batch takes at a time.
    size: usize,
}

impl<T, R> Source<T, R> for Arc<Feed<T, R>> {
    fn remaining(&self) -> usize {
        self.rest.lock().len()
    }

    fn take(&mut self, len: usize) -> Option<(Vec<T>, OutRange<R>)> {
        let mut rest = self.rest.lock();
        let len = len.min(rest.len());
        if len == 0 {
            return None;
        }
        let chunk = rest.by_ref().take(len).collect();
        Some((chunk, self.out.range(len)))
    }

    fn refuse_rest(&mut self, err: &TaskError) {
        let mut rest = self.rest.lock();
        let left = std::mem::take(&mut *rest);
        self.out.range(left.len()).fill(err);
        drop(rest);
        drop(left);
    }

    fn feed(&self) -> Option<Arc<Feed<T, R>>> {
        Some(self.clone())
    }
}

/// `par_map_async`'s items: futures built by the caller's `f`, one batch at a time.
struct Built<'a, T, G, R> {
    rest: &'a [T],
    f: G,
    out: Arc<Output<R>>,
}

impl<T, G, Fut> Source<Fut, Fut::Output> for Built<'_, T, G, Fut::Output>
where
    G: Fn(&T) -> Fut,
    Fut: Future,
{
    fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn take(&mut self, len: usize) -> Option<(Vec<Fut>, OutRange<Fut::Output>)> {
        let len = len.min(self.rest.len());
        if len == 0 {
            return None;
        }
        let (chunk, tail) = self.rest.split_at(len);
        self.rest = tail;
        Some((chunk.iter().map(&self.f).collect(), self.out.range(len)))
    }

    fn refuse_rest(&mut self, err: &TaskError) {
        self.out.range(self.rest.len()).fill(err);
        self.rest = &[];
    }

    fn feed(&self) -> Option<Arc<Feed<Fut, Fut::Output>>> {
        None
    }
}

/// Cancels every batch still in flight when the caller's future is dropped.
struct CancelOnDrop(FuturesUnordered<TaskHandle<()>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        for handle in self.0.iter() {
            handle.cancel();
        }
    }
}

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
    items: std::vec::IntoIter<T>,
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
    /// Where to take more items when these are done (`batch_process`), if any.
    feed: Option<Arc<Feed<T, Fut::Output>>>,
}

// Nothing in a batch body is pinned in place (pinned items live in boxes), so moving it is
// fine whatever `T` and the outputs are.
impl<T, F, Fut: Future> Unpin for BatchBody<'_, T, F, Fut> {}

impl<'m, T, F, Fut> BatchBody<'m, T, F, Fut>
where
    F: Fn(T) -> Fut,
    Fut: Future,
{
    fn new(
        meta: &'m TaskMeta,
        chunk: Vec<T>,
        f: Arc<F>,
        out: OutRange<Fut::Output>,
        feed: Option<Arc<Feed<T, Fut::Output>>>,
    ) -> Self {
        let n = chunk.len();
        BatchBody {
            meta,
            items: chunk.into_iter(),
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
                .map_err(|p| TaskError::Panicked(panic_message(&*p)))
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
        let mut slot = self.spare.take().unwrap_or_else(|| Box::pin(None));
        while !cancel.requested() {
            let Some(item) = self.items.next() else {
                break;
            };
            let f = &*self.f;
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
            let result = match ran {
                Ok(Poll::Ready(v)) => Ok(v),
                Ok(Poll::Pending) => {
                    // The unit takes the box; the next item gets a fresh one. Made here even
                    // if no item follows (then it waits in `spare` for a refill): at most one
                    // allocation per suspending item, where keeping the box in an `Option`
                    // instead cost every item ~3 instructions (callgrind, 42.3 -> 45.2).
                    let suspended = std::mem::replace(&mut slot, Box::pin(None));
                    let unit = Guarded::item(self.meta, Ok(Slot(suspended)));
                    self.suspend(unit);
                    continue;
                }
                // `f`, `poll` or the future's `Drop` panicked: drop what is left of the
                // future (a panic there too is the same outcome) and report the first panic.
                Err(p) => {
                    let _ = catch_unwind(AssertUnwindSafe(|| slot.set(None)));
                    Err(TaskError::Panicked(panic_message(&*p)))
                }
            };
            self.finished(None, result);
        }
        self.spare = Some(slot);
    }
}

impl<T, F, Fut: Future> BatchBody<'_, T, F, Fut> {
    /// Takes the next items from the feed, as many as the pool has room for now, up to a
    /// batch (never waits: if it is full, or others wait for room, this batch finishes and
    /// the caller waits in the queue instead). Call
    /// after `settle`. True if there are new items to run.
    fn refill(&mut self) -> bool {
        let Some(feed) = &mut self.feed else {
            return false;
        };
        let pool = self.meta.pool();
        let want = feed.size.min(feed.remaining());
        if want == 0 {
            return false;
        }
        let Ok(got) = pool.admission.try_acquire_up_to(want) else {
            return false;
        };
        let Some((chunk, range)) = take_admitted(pool, feed, got) else {
            return false;
        };
        self.slots = chunk.len();
        self.items = chunk.into_iter();
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
        pool.admission.release_many(n);
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
        if !cancel.requested() && this.refill() {
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

#[cfg(test)]
mod tests {
    use super::auto_batch_size;

    #[test]
    fn auto_batch_size_balances_and_fits_admission() {
        assert_eq!(auto_batch_size(0, 2, 4, None), 1);
        assert_eq!(auto_batch_size(80, 2, 4, None), 10);
        assert_eq!(auto_batch_size(1_000_000, 2, 4, None), 4096);
        assert_eq!(auto_batch_size(1_000_000, 2, 50, Some(10_000)), 200);
        assert_eq!(auto_batch_size(1_000_000, 2, 50_000, Some(10_000)), 1);
    }
}
