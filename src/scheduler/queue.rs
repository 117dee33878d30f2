//! The run queues: crossbeam-deque's `Worker` and `Stealer` and the crate's copy of its
//! `Injector` (`injector.rs`, blocks recycled), or a `Mutex<VecDeque>` stand-in under Miri
//! and loom (`injector.rs`'s own tests run under Miri).
//!
//! crossbeam-deque's epoch GC casts integers to pointers, which Miri's strict-provenance mode
//! rejects, and it cannot run under loom. Those builds use `mutex_deque` (below), which offers the
//! same API subset with the same semantics (a FIFO owner queue, stealing from the other end,
//! batch steals that move part of a queue), so the scheduler's own protocols are what the
//! checkers exercise. crossbeam is model- and Miri-checked upstream.

#[cfg(not(any(miri, loom)))]
pub(crate) use super::injector::Injector;
#[cfg(not(any(miri, loom)))]
pub(crate) use crossbeam_deque::{Steal, Stealer, Worker};

#[cfg(any(miri, loom))]
pub(crate) use mutex_deque::{Injector, Steal, Stealer, Worker};

#[cfg(any(miri, loom))]
mod mutex_deque {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex, MutexGuard};

    /// What a steal found.
    pub(crate) enum Steal<T> {
        Empty,
        Success(T),
        #[allow(dead_code)] // never produced here; matched by the scheduler
        Retry,
    }

    fn lock<T>(m: &Mutex<VecDeque<T>>) -> MutexGuard<'_, VecDeque<T>> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves up to half of `from` (at most 32) into `to`, returning the first.
    fn batch<T>(from: &Mutex<VecDeque<T>>, to: &Worker<T>) -> Steal<T> {
        let mut src = lock(from);
        let Some(first) = src.pop_front() else {
            return Steal::Empty;
        };
        let n = (src.len() / 2).min(32);
        let mut dst = lock(&to.0);
        for _ in 0..n {
            if let Some(x) = src.pop_front() {
                dst.push_back(x);
            }
        }
        Steal::Success(first)
    }

    pub(crate) struct Injector<T>(Mutex<VecDeque<T>>);

    impl<T> Injector<T> {
        pub(crate) fn new() -> Self {
            Injector(Mutex::new(VecDeque::new()))
        }
        pub(crate) fn push(&self, x: T) {
            lock(&self.0).push_back(x);
        }
        pub(crate) fn steal(&self) -> Steal<T> {
            lock(&self.0)
                .pop_front()
                .map_or(Steal::Empty, Steal::Success)
        }
        pub(crate) fn steal_batch_and_pop(&self, to: &Worker<T>) -> Steal<T> {
            batch(&self.0, to)
        }
        pub(crate) fn is_empty(&self) -> bool {
            lock(&self.0).is_empty()
        }
        pub(crate) fn len(&self) -> usize {
            lock(&self.0).len()
        }
    }

    pub(crate) struct Worker<T>(Arc<Mutex<VecDeque<T>>>);

    impl<T> Worker<T> {
        pub(crate) fn new_fifo() -> Self {
            Worker(Arc::new(Mutex::new(VecDeque::new())))
        }
        pub(crate) fn push(&self, x: T) {
            lock(&self.0).push_back(x);
        }
        pub(crate) fn pop(&self) -> Option<T> {
            lock(&self.0).pop_front()
        }
        pub(crate) fn stealer(&self) -> Stealer<T> {
            Stealer(self.0.clone())
        }
        pub(crate) fn is_empty(&self) -> bool {
            lock(&self.0).is_empty()
        }
    }

    pub(crate) struct Stealer<T>(Arc<Mutex<VecDeque<T>>>);

    impl<T> Stealer<T> {
        pub(crate) fn steal(&self) -> Steal<T> {
            lock(&self.0)
                .pop_front()
                .map_or(Steal::Empty, Steal::Success)
        }
        pub(crate) fn steal_batch_and_pop(&self, to: &Worker<T>) -> Steal<T> {
            batch(&self.0, to)
        }
        pub(crate) fn is_empty(&self) -> bool {
            lock(&self.0).is_empty()
        }
        pub(crate) fn len(&self) -> usize {
            lock(&self.0).len()
        }
    }
}
