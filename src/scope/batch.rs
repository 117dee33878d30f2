//! `batch_process` and `par_map_async`: many items, one pool task per batch.
//!
//! The caller cuts the items into batches and runs each batch as one *carrier* task
//! ([`BatchBody`], in `carrier.rs`) that drives its items' futures concurrently, each item
//! a unit with its own outcome, timeout and panic isolation. No task is allocated per item: an item whose
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
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::Scope;
use super::carrier::BatchBody;
use super::output::{OutRange, Output};
use crate::error::TaskError;
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
                let got = match self.shared.admit_up_to(want).await {
                    Ok(got) => got,
                    Err(e) => {
                        // Shutdown began or the scope was closed: every item not started
                        // yet is refused.
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
pub(super) fn take_admitted<X, R>(
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
pub(super) trait Source<X, R> {
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
    pub(super) size: usize,
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
