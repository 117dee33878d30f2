//! `batch_process` and `par_map_async`: many items, one pool task per batch.
//!
//! The caller cuts the items into batches and runs each batch as one *carrier* task
//! ([`BatchBody`], in `carrier.rs`) that drives its items' futures concurrently, each item
//! a unit with its own outcome, timeout and panic isolation. No task is allocated per item: an item whose
//! future finishes in its first poll reuses one box per batch and skips the rest of
//! [`Guarded`](crate::task::Guarded); only items that suspend become `Guarded` units with a
//! node in the batch's `FuturesUnordered`. Each batch writes its results straight into its
//! range of the final vector ([`Output`]), so no result is copied after it is made.
//!
//! # The feed
//! Items wait in a [`Feed`] shared by the caller and the batches. A batch that has finished
//! its items takes the next ones from the feed itself, so the caller starts a batch only
//! when one ended, and is not woken per batch. A chunk added to the feed is handed to a
//! batch whole, without a copy, when the batch takes exactly that many.
//! - `batch_process`: the feed holds every item from the start, not yet admitted.
//! - `par_map_async`: the caller builds the futures (its `f` need not be `Send`), only for
//!   admitted items, and keeps the feed topped up to `ahead` of them (one batch per batch in
//!   flight). It sleeps until the feed falls below half of that, then adds at once all the
//!   room the finished batches gave back. Waking the caller for each batch that finished
//!   cost a context switch per batch on the caller and on the worker that had parked.
//!
//! # Admission
//! Each item holds one slot from its admission until its future has been dropped.
//! - `batch_process`: a chunk of items takes its slots in one CAS when there is room, before
//!   it starts: the caller takes them before spawning a batch (waiting for room, first come
//!   first served), a batch that takes its next chunk from the feed only if there is room now.
//! - `par_map_async`: the caller takes the slots before it builds the futures, so futures
//!   alive never exceed `max_pending`; half of `max_pending` goes to the batches running and
//!   half to the futures built ahead (see `par_map_async`'s batch size).
//!
//! The batch gives a chunk's slots back in one `fetch_sub` when the chunk's last item has
//! finished (every item's future has been dropped by then). Outcomes are tallied per item as
//! each finishes and added to the pool's counters once per chunk.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use futures::task::AtomicWaker;

use super::Scope;
use super::carrier::BatchBody;
use super::input::{InRange, Input};
use super::output::{OutRange, Output};
use crate::error::{SpawnError, TaskError};
use crate::metrics::Outcome;
use crate::registry::Shared;
use crate::sync::Mutex;
use crate::task::{self, TaskHandle};

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
        let feed = Feed::new(&self.shared.pool, items, out.clone(), size, 0);
        self.run_batches(out, concurrent, feed, Prebuilt, f).await
    }

    /// Runs `f` on every element of `items` concurrently on the pool and returns the results
    /// in input order: the async counterpart of rayon's `par_iter().map()`.
    ///
    /// `f` is called on the calling thread to build each item's future (so the future must
    /// own what it needs: it is `'static`), ahead of the batches that run them: about one
    /// batch per batch in flight is built and waiting, however long `items` is, and only
    /// for items admitted under `max_pending`. The futures run in batches as in
    /// [`batch_process`](Self::batch_process), with one batch in flight per worker and one
    /// spare. A panic in `f` propagates to the caller (and cancels the batches in flight),
    /// as in an iterator's `map`. Once the scope is cancelled, `f` is called for no further
    /// item: the items not built yet are `Err(Cancelled)`, as those built are.
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
        // Half of `max_pending` for the batches running, half for the futures built ahead.
        let size = self.batch_size(items.len(), 2 * concurrent, None);
        let out = Output::new(items.len());
        let feed = Feed::new(
            &self.shared.pool,
            Vec::new(),
            out.clone(),
            size,
            size * concurrent,
        );
        let builder = Builder { rest: items, f };
        self.run_batches(out, concurrent, feed, builder, std::convert::identity)
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

    /// The engine of the bulk calls: the items of `feed` (and those `more` adds to it) cut
    /// into batches of up to `feed.size`, at most `concurrent` batches in flight, each one
    /// pool task ([`BatchBody`]) applying `f` to its items and writing their results into
    /// its range of `out`.
    ///
    /// The caller starts batches for the waiting items until `concurrent` are in flight
    /// (admitting them first unless the feed holds admitted items), then waits for a batch
    /// to end, or, with items still to add, for the feed to run low and then for room to
    /// add more. A batch that finishes its items takes the next ones itself, so the caller
    /// is woken only when a batch ended or the feed needs more.
    async fn run_batches<X, F, Fut>(
        &self,
        out: Arc<Output<Fut::Output>>,
        concurrent: usize,
        feed: Arc<Feed<X, Fut::Output>>,
        mut more: impl MoreItems<X>,
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
        // Items never added, because admission refused them or the scope was cancelled, and
        // why: their slots of the output follow those of the items in the feed, so they are
        // filled last.
        let mut refused = None;
        loop {
            while in_flight.0.len() < concurrent && feed.remaining() > 0 {
                let taken = if feed.admitted() {
                    feed.take(feed.size)
                } else {
                    // As many slots as are free, at least one: a smaller batch now rather
                    // than holding slots while waiting for more (admission.rs, "No
                    // hold-and-wait").
                    let want = feed.size.min(feed.remaining());
                    match self.shared.admit_up_to(want).await {
                        // The batches in flight may have taken items meanwhile.
                        Ok(got) => take_admitted(pool, &feed, got),
                        Err(e) => {
                            // Shutdown began or the scope was closed: every item not
                            // started yet is refused.
                            feed.refuse_rest(&e.into());
                            None
                        }
                    }
                };
                let Some((chunk, range)) = taken else {
                    break;
                };
                let (f, feed) = (f.clone(), feed.clone());
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
            if in_flight.0.is_empty() && feed.remaining() == 0 && more.remaining() == 0 {
                break;
            }
            // Besides a batch ending, what the caller waits for. Room for more items is
            // waited for together with the batches: a batch that ended while this call
            // holds slots for items in the feed must be replaced, or those items would wait
            // for a batch while this call waits for their slots.
            let mut wait = Wait::Nothing;
            if more.remaining() > 0 {
                if feed.wants_more() {
                    let want = more.remaining().min(feed.ahead - feed.remaining());
                    // Whatever room there is now, without queueing: the batches give their
                    // slots back one by one, and the caller adds them together when the
                    // feed runs low rather than being woken by each release.
                    match self.shared.try_admit_up_to(want) {
                        Ok(got) => {
                            if let Some(gave_up) = self.add_admitted(&mut more, &feed, got) {
                                refused = Some(gave_up);
                            }
                            continue;
                        }
                        Err(SpawnError::Full) if feed.remaining() >= feed.size => {
                            wait = Wait::Below(feed.size);
                        }
                        Err(SpawnError::Full) => wait = Wait::Room(want),
                        Err(e) => {
                            refused = Some((TaskError::from(e), more.take_rest()));
                            continue;
                        }
                    }
                } else {
                    wait = Wait::Below(feed.ahead.div_ceil(2));
                }
            }
            let mut admit = pin!(async {
                match wait {
                    Wait::Room(want) => self.shared.admit_up_to(want).await,
                    _ => std::future::pending().await,
                }
            });
            if let Wait::Below(n) = wait {
                feed.low.store(n, Relaxed);
            }
            let event = poll_fn(|cx| {
                match wait {
                    Wait::Room(_) => {
                        if let Poll::Ready(r) = admit.as_mut().poll(cx) {
                            return Poll::Ready(Event::Admitted(r));
                        }
                    }
                    Wait::Below(n) => {
                        // Registered before the check, so a batch that takes the feed below
                        // `n` after the check wakes this task.
                        feed.caller.register(cx.waker());
                        if feed.remaining() < n {
                            return Poll::Ready(Event::Low);
                        }
                    }
                    Wait::Nothing => {}
                }
                // A batch task fails as a whole only if this crate's own code panicked;
                // its items not written by then read `Cancelled` (see `OutRange`).
                match in_flight.0.poll_next_unpin(cx) {
                    Poll::Ready(Some(_)) => Poll::Ready(Event::BatchEnded),
                    // No batch in flight: only room for more items can be waited for (with
                    // items waiting, a batch would have been started above).
                    Poll::Ready(None) | Poll::Pending => Poll::Pending,
                }
            })
            .await;
            match event {
                Event::Admitted(Ok(got)) => {
                    if let Some(gave_up) = self.add_admitted(&mut more, &feed, got) {
                        refused = Some(gave_up);
                    }
                }
                Event::Admitted(Err(e)) => refused = Some((TaskError::from(e), more.take_rest())),
                Event::Low | Event::BatchEnded => {}
            }
        }
        drop(feed);
        if let Some((err, n)) = refused {
            out.range(n).fill(&err);
        }
        // Every range was handed out and every batch task has finished, and a task's body
        // (holding its range) is dropped before its handle resolves.
        match out.into_vec() {
            Ok(v) => v,
            Err(_) => unreachable!("run_batches: a batch outlived its handle"),
        }
    }
}

impl Scope {
    /// Adds `got` newly admitted items to `feed`; or, once the scope is cancelled (their
    /// batches would only cancel them), builds none: gives the slots back and gives up
    /// every item not added yet, counted as submitted and cancelled as a cancelled scope's
    /// spawns are. Returns the items given up and their error.
    fn add_admitted<X, R>(
        &self,
        more: &mut impl MoreItems<X>,
        feed: &Feed<X, R>,
        got: usize,
    ) -> Option<(TaskError, usize)> {
        if !self.is_cancelled() {
            more.add(feed, got);
            return None;
        }
        let pool = &self.shared.pool;
        pool.admission.release_many(got);
        let n = more.take_rest();
        let worker = pool.counter_row();
        pool.counters.submitted_n(worker, n as u64);
        pool.counters.record_n(worker, Outcome::Cancelled, n as u64);
        Some((TaskError::Cancelled, n))
    }
}

/// What the caller of [`Scope::run_batches`] waits for, besides a batch ending.
#[derive(Clone, Copy)]
enum Wait {
    /// Room in the pool for up to this many more items.
    Room(usize),
    /// Fewer than this many items waiting in the feed.
    Below(usize),
    /// Only a batch ending.
    Nothing,
}

/// What the caller of [`Scope::run_batches`] was woken for.
enum Event {
    /// Room for more items (or the reason there will be none).
    Admitted(Result<usize, SpawnError>),
    /// The feed ran low.
    Low,
    /// A batch ended.
    BatchEnded,
}

/// Takes up to `want` items from `feed` for which `want` admission slots are already held:
/// gives back the slots of the items it did not get (others may have taken them) and counts
/// the items it got as submitted. Used by the caller and by a batch refilling itself.
pub(super) fn take_admitted<X, R>(
    pool: &Arc<Shared>,
    feed: &Feed<X, R>,
    want: usize,
) -> Option<(InRange<X>, OutRange<R>)> {
    let taken = feed.take(want);
    let got = taken.as_ref().map_or(0, |(chunk, _)| chunk.len());
    pool.admission.release_many(want - got);
    if got > 0 {
        let worker = pool.counter_row();
        pool.counters.submitted_n(worker, got as u64);
    }
    taken
}

/// A bulk call's items not handed to a batch yet, shared by the caller and the batches:
/// whoever takes items takes their output range with them, under one lock, so ranges
/// follow input order.
pub(crate) struct Feed<T, R> {
    pool: Arc<Shared>,
    rest: Mutex<Waiting<T>>,
    out: Arc<Output<R>>,
    /// Items a batch takes at a time.
    pub(super) size: usize,
    /// The caller adds items while fewer than half of this many are waiting, up to this
    /// many (0 for a feed that is never added to). A feed that is added to holds admitted
    /// items: see [`admitted`](Self::admitted).
    ahead: usize,
    /// A take that leaves fewer than this many items waiting wakes `caller`. Written by the
    /// caller before it checks the count under the lock, read by takers under the lock.
    low: AtomicUsize,
    /// The caller, when it has more items to add.
    caller: AtomicWaker,
}

/// The items waiting in a [`Feed`], in input order, in the chunks they were added in.
struct Waiting<T> {
    chunks: VecDeque<InRange<T>>,
    /// Items in `chunks`.
    len: usize,
}

impl<T> Waiting<T> {
    /// The first `len` items (at most `self.len`). Taken from one chunk, they stay in its
    /// buffer (a split chunk shares it); only a batch that spans chunks (`par_map_async`
    /// adds its futures as they are admitted, in chunks of any size) is copied together.
    fn take(&mut self, len: usize) -> Option<InRange<T>> {
        let len = len.min(self.len);
        let front = self.chunks.front_mut()?;
        self.len -= len;
        if front.len() > len {
            return Some(front.split_to(len));
        }
        if front.len() == len {
            return self.chunks.pop_front();
        }
        let mut taken = Vec::with_capacity(len);
        while taken.len() < len {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            taken.extend(front.by_ref().take(len - taken.len()));
            if front.len() == 0 {
                self.chunks.pop_front();
            }
        }
        Some(Input::whole(taken))
    }
}

impl<T, R> Feed<T, R> {
    /// A feed of `items` (not admitted yet) or, with `ahead > 0`, an empty feed of admitted
    /// items kept topped up to `ahead` by the caller.
    fn new(
        pool: &Arc<Shared>,
        items: Vec<T>,
        out: Arc<Output<R>>,
        size: usize,
        ahead: usize,
    ) -> Arc<Self> {
        let len = items.len();
        let chunks = if len == 0 {
            VecDeque::new()
        } else {
            VecDeque::from([Input::whole(items)])
        };
        Arc::new(Feed {
            pool: pool.clone(),
            rest: Mutex::new(Waiting { chunks, len }),
            out,
            size,
            ahead,
            low: AtomicUsize::new(0),
            caller: AtomicWaker::new(),
        })
    }

    /// The items waiting already hold their admission slots (`par_map_async`: the caller
    /// admits before it builds), rather than being admitted as batches take them.
    pub(super) fn admitted(&self) -> bool {
        self.ahead > 0
    }

    /// Items waiting.
    pub(super) fn remaining(&self) -> usize {
        self.rest.lock().len
    }

    /// Fewer than half of `ahead` items are waiting.
    fn wants_more(&self) -> bool {
        self.remaining() < self.ahead.div_ceil(2)
    }

    /// Up to `len` items and their output range; `None` when no item is left. Wakes the
    /// caller if this leaves fewer than `low` items waiting.
    pub(super) fn take(&self, len: usize) -> Option<(InRange<T>, OutRange<R>)> {
        let mut rest = self.rest.lock();
        let chunk = rest.take(len).filter(|chunk| chunk.len() > 0)?;
        let range = self.out.range(chunk.len());
        let low = rest.len < self.low.load(Relaxed);
        drop(rest);
        if low {
            self.caller.wake();
        }
        Some((chunk, range))
    }

    /// Adds a chunk of admitted items at the back and counts them as submitted.
    fn push(&self, chunk: Vec<T>) {
        if chunk.is_empty() {
            return;
        }
        let n = chunk.len();
        let mut rest = self.rest.lock();
        rest.len += n;
        rest.chunks.push_back(Input::whole(chunk));
        drop(rest);
        let worker = self.pool.counter_row();
        self.pool.counters.submitted_n(worker, n as u64);
    }

    /// Every item waiting (none of which was admitted) is refused with `err`: its slot gets
    /// the error, it never starts.
    fn refuse_rest(&self, err: &TaskError) {
        debug_assert!(
            !self.admitted(),
            "admitted items run or are cancelled, never refused"
        );
        let mut rest = self.rest.lock();
        let left = std::mem::take(&mut rest.chunks);
        self.out.range(rest.len).fill(err);
        rest.len = 0;
        drop(rest);
        drop(left);
    }
}

impl<T, R> Drop for Feed<T, R> {
    /// Admitted items still waiting when the call and its batches are gone count as
    /// cancelled, and their slots are given back. Cancelled batches drain the feed (see
    /// `BatchBody::refill`), so this is reached only when batch tasks were dropped without
    /// running to the end, as a pool's queue is when it is dropped.
    fn drop(&mut self) {
        let mut rest = self.rest.lock();
        let left = std::mem::take(&mut rest.len);
        let items = std::mem::take(&mut rest.chunks);
        drop(rest);
        if !self.admitted() || left == 0 {
            return;
        }
        let worker = self.pool.counter_row();
        self.pool
            .counters
            .record_n(worker, Outcome::Cancelled, left as u64);
        // The slots are given back once the futures are dropped, even if one panics.
        let _held = HeldSlots(&self.pool, left);
        drop(items);
    }
}

/// Items a bulk call adds to its feed once they are admitted.
trait MoreItems<T> {
    /// Items not added yet.
    fn remaining(&self) -> usize;
    /// Adds the next `n` items (at most `remaining`) to `feed`; their slots are held.
    fn add<R>(&mut self, feed: &Feed<T, R>, n: usize);
    /// Gives up the items not added yet; returns how many there were.
    fn take_rest(&mut self) -> usize;
}

/// `batch_process`'s feed holds every item from the start.
struct Prebuilt;

impl<T> MoreItems<T> for Prebuilt {
    fn remaining(&self) -> usize {
        0
    }
    fn add<R>(&mut self, _: &Feed<T, R>, _: usize) {}
    fn take_rest(&mut self) -> usize {
        0
    }
}

/// `par_map_async`'s items: futures built by the caller's `f` as they are admitted.
struct Builder<'a, T, G> {
    rest: &'a [T],
    f: G,
}

impl<T, G, Fut> MoreItems<Fut> for Builder<'_, T, G>
where
    G: Fn(&T) -> Fut,
{
    fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn add<R>(&mut self, feed: &Feed<Fut, R>, n: usize) {
        let (now, tail) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = tail;
        // The slots of the items not in the feed yet, given back if `f` panics.
        let mut unbuilt = HeldSlots(&feed.pool, n);
        // Built outside the feed's lock (`f` is the user's code), a batch at a time so
        // that batches see the first ones early and take each as it is.
        for part in now.chunks(feed.size.max(1)) {
            feed.push(part.iter().map(&self.f).collect());
            unbuilt.1 -= part.len();
        }
    }

    fn take_rest(&mut self) -> usize {
        std::mem::take(&mut self.rest).len()
    }
}

/// Admission slots given back when this is dropped.
struct HeldSlots<'a>(&'a Shared, usize);

impl Drop for HeldSlots<'_> {
    fn drop(&mut self) {
        self.0.admission.release_many(self.1);
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
