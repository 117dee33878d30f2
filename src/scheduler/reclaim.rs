//! [`Reclaim`]: detached tasks' allocations, handed back to be freed by a spawning thread.
//!
//! A task's allocation is freed by whoever drops its last reference. For a task whose handle
//! was dropped (detached), that is the worker that runs it to completion, while the thread
//! that allocated it keeps spawning. With glibc's allocator the two then meet on the
//! allocating thread's arena lock, which sleeps on a futex when contended: in the bounded
//! 1M-task bench (`reserve()`, handles dropped) 64% of all context switches were workers
//! asleep on that lock inside the task's `free` (benches/NOTES.md).
//!
//! So a worker about to run a small detached task keeps a [`Waker`](std::task::Waker) of it
//! (a reference to the allocation), gathers such references in a [`Batch`] of its own, and
//! hands each full batch here (and a partial one before it parks); each spawn on the pool
//! drops one batch, so the memory is freed on the spawning thread (into its own cache, where
//! its next allocations find it) and the workers never free a task. Batches keep the queue's
//! shared cache lines out of the per-task path: handing references over one at a time cost
//! the workers 30% of their samples in the queue's `push` (perf, bounded 1M bench). The
//! task's future and output are dropped when it finishes, as before; only the bytes of its
//! allocation wait.
//!
//! # Protocol
//! 1. [`Reclaim::defer`] keeps a batch, unless the queue is full (then it is dropped at
//!    once, the old behaviour) or the pool is closed.
//! 2. [`Reclaim::release`] drops one kept batch on the calling thread.
//! 3. [`Reclaim::close`] (pool termination) sets `closed`, then drops everything kept. A
//!    `defer` racing it pushes, fences, then reads `closed`; `close` stores `closed`, fences,
//!    then drains. Whichever comes second sees the other, so nothing is left behind (loom
//!    model `loom_reclaim_defer_vs_close`). This matters beyond memory: a kept task holds
//!    its scope, which holds the pool, so a reference left here would keep the pool alive.
//!
//! # Bounds
//! At most [`CAPACITY`] batches of [`BATCH`] references are kept per pool, plus one partial
//! batch per worker, and only for tasks whose future is at most [`MAX_DEFERRED_FUTURE`]
//! bytes, so at most about a MiB waits here however the pool is used; a pool that stops
//! spawning keeps them until it is dropped.
//!
//! Whoever calls `release` or `close` must hold a strong reference to the pool: dropping a
//! kept reference may drop the task's scope, and the pool must outlive this queue's use.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::fence;

use crate::sync::AtomicBool;

/// References handed over at a time.
pub(crate) const BATCH: usize = 16;
/// Most batches kept per pool.
pub(crate) const CAPACITY: usize = 64;
/// Largest task future (in bytes) whose allocation is handed back rather than freed by the
/// worker: small allocations are the ones the allocator caches per thread.
pub(crate) const MAX_DEFERRED_FUTURE: usize = 512;
/// Up to [`BATCH`] references gathered by one worker. Dropping it drops them.
pub(crate) struct Batch<T> {
    refs: [Option<T>; BATCH],
    len: usize,
}

impl<T> Batch<T> {
    pub(crate) fn new() -> Self {
        Batch {
            refs: std::array::from_fn(|_| None),
            len: 0,
        }
    }

    /// Adds `reference`; when that fills the batch, returns it (leaving an empty one here).
    #[inline]
    pub(crate) fn add(&mut self, reference: T) -> Option<Batch<T>> {
        self.refs[self.len] = Some(reference);
        self.len += 1;
        (self.len == BATCH).then(|| std::mem::replace(self, Batch::new()))
    }

    /// The references gathered so far, if any, leaving an empty batch here.
    pub(crate) fn take(&mut self) -> Option<Batch<T>> {
        (self.len > 0).then(|| std::mem::replace(self, Batch::new()))
    }
}

/// See the module doc. `T` is a task's `Waker`; anything whose drop releases a reference.
pub(crate) struct Reclaim<T> {
    queue: Queue<Batch<T>>,
    closed: AtomicBool,
}

impl<T> Reclaim<T> {
    pub(crate) fn new() -> Self {
        Reclaim {
            queue: Queue::new(CAPACITY),
            closed: AtomicBool::new(false),
        }
    }

    /// Step 1: keep `batch` for a spawning thread to drop.
    pub(crate) fn defer(&self, batch: Batch<T>) {
        if self.closed.load(SeqCst) {
            return; // dropped here
        }
        if self.queue.push(batch).is_err() {
            return; // full: dropped here
        }
        fence(SeqCst);
        if self.closed.load(SeqCst) {
            // `close` may have drained before our push: drain it ourselves.
            self.drain();
        }
    }

    /// Step 2: drops one kept batch on the calling thread.
    #[inline]
    pub(crate) fn release(&self) {
        // Checked first because a pop that finds the queue empty costs a `SeqCst` fence,
        // and most spawns find it empty (no detached tasks).
        if !self.queue.is_empty() {
            drop(self.queue.pop());
        }
    }

    /// Step 3: keeps nothing from now on and drops what is kept.
    pub(crate) fn close(&self) {
        self.closed.store(true, SeqCst);
        fence(SeqCst);
        self.drain();
    }

    fn drain(&self) {
        while let Some(batch) = self.queue.pop() {
            drop(batch);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

/// crossbeam's bounded lock-free queue; under loom a `Mutex<VecDeque>` with the same
/// semantics, so the model exercises the protocol above.
#[cfg(not(loom))]
struct Queue<T>(crossbeam_queue::ArrayQueue<T>);

#[cfg(not(loom))]
impl<T> Queue<T> {
    fn new(capacity: usize) -> Self {
        Queue(crossbeam_queue::ArrayQueue::new(capacity))
    }
    fn push(&self, value: T) -> Result<(), T> {
        self.0.push(value)
    }
    fn pop(&self) -> Option<T> {
        self.0.pop()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(loom)]
struct Queue<T>(crate::sync::Mutex<std::collections::VecDeque<T>>, usize);

#[cfg(loom)]
impl<T> Queue<T> {
    fn new(capacity: usize) -> Self {
        Queue(
            crate::sync::Mutex::new(std::collections::VecDeque::new()),
            capacity,
        )
    }
    fn push(&self, value: T) -> Result<(), T> {
        let mut q = self.0.lock();
        if q.len() == self.1 {
            return Err(value);
        }
        q.push_back(value);
        Ok(())
    }
    fn pop(&self) -> Option<T> {
        self.0.lock().pop_front()
    }
    fn is_empty(&self) -> bool {
        self.0.lock().is_empty()
    }
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().len()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn batch_of(counted: &Arc<()>, n: usize) -> Batch<Arc<()>> {
        let mut batch = Batch::new();
        for _ in 0..n {
            assert!(batch.add(counted.clone()).is_none());
        }
        batch
    }

    #[test]
    fn a_batch_is_handed_over_when_full() {
        let counted = Arc::new(());
        let mut batch = batch_of(&counted, BATCH - 1);
        let full = batch.add(counted.clone()).expect("full at BATCH");
        assert_eq!((full.len, batch.len), (BATCH, 0));
        assert!(batch.take().is_none(), "nothing gathered");
        drop(full);
        assert_eq!(Arc::strong_count(&counted), 1);
    }

    #[test]
    fn kept_batches_are_dropped_by_release_then_close() {
        let reclaim = Reclaim::new();
        let counted = Arc::new(());
        for _ in 0..3 {
            reclaim.defer(batch_of(&counted, 2));
        }
        assert_eq!(Arc::strong_count(&counted), 7);
        reclaim.release();
        assert_eq!(Arc::strong_count(&counted), 5);
        reclaim.close();
        assert_eq!(Arc::strong_count(&counted), 1);
        reclaim.defer(batch_of(&counted, 1));
        assert_eq!(Arc::strong_count(&counted), 1, "closed: dropped at once");
    }

    #[test]
    fn a_full_queue_drops_the_batch_at_once() {
        let reclaim = Reclaim::new();
        let counted = Arc::new(());
        for _ in 0..CAPACITY + 10 {
            reclaim.defer(batch_of(&counted, 1));
        }
        assert_eq!(reclaim.len(), CAPACITY);
        assert_eq!(Arc::strong_count(&counted), CAPACITY + 1);
        reclaim.close();
        assert_eq!(Arc::strong_count(&counted), 1);
    }
}
