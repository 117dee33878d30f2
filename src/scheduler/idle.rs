//! Which workers are parked and which are searching; who to wake.
//!
//! The protocol is tokio's (`runtime/scheduler/multi_thread/idle.rs`), described in
//! `scheduler/README.md`. One atomic word holds two counts:
//!
//! ```text
//! state: | parked workers (bits 16..) | searching workers (bits 0..16) |
//! ```
//!
//! A *searching* worker has no task and is looking in the injector and its peers' queues.
//! At most half the workers search at once, and a push wakes a sleeper only if none is
//! searching: the searcher will find the new task, and when it does it wakes the next
//! sleeper itself if it was the last searcher. This chains wake-ups one at a time
//! instead of waking every sleeper for every push.
//!
//! The word counts *parked* workers (tokio counts unparked ones against a fixed total):
//! the pool's size changes at run time (`resize`), and "is anyone asleep?" must not
//! depend on a second word that a resize changes. The number of live workers is kept
//! beside it, `Relaxed`, only for the at-most-half rule, where a stale value is harmless.
//!
//! # Memory ordering
//! Every access to `state` is `SeqCst`. A pusher does `push; fence(SeqCst); load state`; a
//! worker going to sleep, or retiring, does `RMW state; fence(SeqCst); check queues`.
//! Whichever of the two comes second in the single total order sees the other's write, so a
//! task is never left in a queue with every worker asleep.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use crate::sync::{AtomicUsize, Mutex};

const SEARCH_MASK: usize = (1 << PARK_SHIFT) - 1;
const PARK_SHIFT: usize = 16;
/// Adding this to the state counts one more parked worker and one fewer searcher (the
/// searcher count is at least one whenever it is used so, so nothing borrows across).
const PARK_ONE_SEARCHER: usize = (1 << PARK_SHIFT) - 1;

/// The most worker threads a pool can have at once (the searcher count's width).
pub(crate) const MAX_WORKERS: usize = SEARCH_MASK;

pub(crate) struct Idle {
    state: AtomicUsize,
    /// Workers in their loop (started and not retired). Only the at-most-half rule reads it.
    live: AtomicUsize,
    /// Indexes of parked workers. Changes to the parked count happen under this lock so the
    /// list and the count agree.
    sleepers: Mutex<Vec<usize>>,
}

fn searching(state: usize) -> usize {
    state & SEARCH_MASK
}

fn parked(state: usize) -> usize {
    state >> PARK_SHIFT
}

impl Idle {
    pub(crate) fn new(live: usize, capacity: usize) -> Idle {
        assert!(
            capacity <= MAX_WORKERS,
            "num_threads must be at most {MAX_WORKERS}"
        );
        Idle {
            // Workers start unparked and not searching.
            state: AtomicUsize::new(0),
            live: AtomicUsize::new(live),
            sleepers: Mutex::new(Vec::with_capacity(capacity)),
        }
    }

    /// Should a push wake someone? Only if nobody is searching and somebody is asleep.
    fn should_wake(&self) -> bool {
        let s = self.state.load(SeqCst);
        searching(s) == 0 && parked(s) > 0
    }

    /// Picks a sleeper to wake and counts it as unparked and searching, or `None` if a worker
    /// is already searching or none sleeps. The caller unparks the returned worker.
    pub(crate) fn worker_to_notify(&self) -> Option<usize> {
        if !self.should_wake() {
            return None;
        }
        let mut sleepers = self.sleepers.lock();
        // Checked again under the lock: another pusher may have woken someone meanwhile.
        if !self.should_wake() {
            return None;
        }
        self.pop_sleeper(&mut sleepers)
    }

    /// Takes a sleeper off the list whether or not anyone searches, counted as a notifier
    /// counts it, for a shrinking pool to unpark so it can retire. `None` if none sleeps.
    pub(crate) fn any_sleeper(&self) -> Option<usize> {
        self.pop_sleeper(&mut self.sleepers.lock())
    }

    /// Pops a sleeper and counts it unparked and searching (the caller holds the lock and
    /// unparks the worker returned).
    fn pop_sleeper(&self, sleepers: &mut Vec<usize>) -> Option<usize> {
        let worker = sleepers.pop()?;
        self.state.fetch_sub(PARK_ONE_SEARCHER, SeqCst);
        Some(worker)
    }

    /// Marks `worker` parked. Returns true if it was the last searcher, in which case the
    /// caller must look at the queues again before sleeping (see the module doc).
    pub(crate) fn transition_worker_to_parked(&self, worker: usize, is_searching: bool) -> bool {
        let mut sleepers = self.sleepers.lock();
        let prev = if is_searching {
            self.state.fetch_add(PARK_ONE_SEARCHER, SeqCst)
        } else {
            self.state.fetch_add(1 << PARK_SHIFT, SeqCst)
        };
        sleepers.push(worker);
        is_searching && searching(prev) == 1
    }

    /// Starts searching, unless half the workers already are.
    pub(crate) fn transition_worker_to_searching(&self) -> bool {
        let s = self.state.load(SeqCst);
        if 2 * searching(s) >= self.live.load(Relaxed) {
            return false;
        }
        self.state.fetch_add(1, SeqCst);
        true
    }

    /// Stops searching (a task was found, or the worker retires). Returns true if this was
    /// the last searcher, in which case the caller wakes another worker if any sleeps: there
    /// may be more work.
    pub(crate) fn transition_worker_from_searching(&self) -> bool {
        searching(self.state.fetch_sub(1, SeqCst)) == 1
    }

    /// A worker is about to start (`resize` grows the pool).
    pub(crate) fn worker_started(&self) {
        self.live.fetch_add(1, Relaxed);
    }

    /// A worker has left its loop for good (it retired, or its start failed). It must not be
    /// parked or searching.
    pub(crate) fn worker_retired(&self) {
        self.live.fetch_sub(1, Relaxed);
    }

    /// Workers in their loop (started and not retired).
    pub(crate) fn live(&self) -> usize {
        self.live.load(Relaxed)
    }

    /// Number of workers parked right now.
    pub(crate) fn num_parked(&self) -> usize {
        parked(self.state.load(SeqCst))
    }

    /// Number of workers currently searching (for tests).
    #[cfg(test)]
    pub(crate) fn num_searching(&self) -> usize {
        searching(self.state.load(SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_one_at_a_time() {
        let idle = Idle::new(2, 2);
        assert!(idle.transition_worker_to_searching());
        assert!(
            !idle.transition_worker_to_searching(),
            "at most half search"
        );
        assert!(idle.transition_worker_to_parked(0, true), "last searcher");
        assert!(!idle.transition_worker_to_parked(1, false));
        assert_eq!(idle.num_parked(), 2);
        assert_eq!(idle.worker_to_notify(), Some(1));
        assert_eq!(idle.num_searching(), 1);
        assert_eq!(
            idle.worker_to_notify(),
            None,
            "someone is searching already"
        );
        assert!(idle.transition_worker_from_searching());
        assert_eq!(idle.worker_to_notify(), Some(0));
        assert_eq!(idle.num_parked(), 0);
    }

    #[test]
    fn a_shrinking_pool_takes_a_sleeper_even_while_someone_searches() {
        let idle = Idle::new(3, 4);
        assert!(!idle.transition_worker_to_parked(2, false));
        assert!(idle.transition_worker_to_searching());
        assert_eq!(idle.worker_to_notify(), None, "a searcher covers pushes");
        assert_eq!(idle.any_sleeper(), Some(2));
        assert_eq!((idle.num_parked(), idle.num_searching()), (0, 2));
        assert_eq!(idle.any_sleeper(), None);
        idle.worker_retired();
        assert_eq!(idle.live(), 2);
    }
}
