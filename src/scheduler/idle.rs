//! Which workers are parked and which are searching; who to wake.
//!
//! The protocol is tokio's (`runtime/scheduler/multi_thread/idle.rs`), described in
//! `scheduler/README.md`. One atomic word holds two counts:
//!
//! ```text
//! state: | unparked workers (bits 16..) | searching workers (bits 0..16) |
//! ```
//!
//! A *searching* worker has no task and is looking in the injector and its peers' queues.
//! At most half the workers search at once, and a push wakes a sleeper only if none is
//! searching: the searcher will find the new task, and when it does it wakes the next
//! sleeper itself if it was the last searcher. This chains wake-ups one at a time
//! instead of waking every sleeper for every push.
//!
//! # Memory ordering
//! Every access to `state` is `SeqCst`. A pusher does `push; fence(SeqCst); load state`; a
//! worker going to sleep does `RMW state; fence(SeqCst); check queues`. Whichever of the two
//! comes second in the single total order sees the other's write, so a task is never left
//! in a queue with every worker asleep.

use std::sync::atomic::Ordering::SeqCst;

use crate::sync::{AtomicUsize, Mutex};

const SEARCH_MASK: usize = (1 << UNPARK_SHIFT) - 1;
const UNPARK_SHIFT: usize = 16;

pub(crate) struct Idle {
    state: AtomicUsize,
    num_workers: usize,
    /// Indexes of parked workers. Changes to `unparked` happen under this lock so the list and
    /// the count agree.
    sleepers: Mutex<Vec<usize>>,
}

fn searching(state: usize) -> usize {
    state & SEARCH_MASK
}

fn unparked(state: usize) -> usize {
    state >> UNPARK_SHIFT
}

impl Idle {
    pub(crate) fn new(num_workers: usize) -> Idle {
        assert!(
            num_workers <= SEARCH_MASK,
            "num_threads must be below {SEARCH_MASK}"
        );
        Idle {
            // Workers start unparked and not searching.
            state: AtomicUsize::new(num_workers << UNPARK_SHIFT),
            num_workers,
            sleepers: Mutex::new(Vec::with_capacity(num_workers)),
        }
    }

    /// Should a push wake someone? Only if nobody is searching and somebody is asleep.
    fn should_wake(&self) -> bool {
        let s = self.state.load(SeqCst);
        searching(s) == 0 && unparked(s) < self.num_workers
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
        let worker = sleepers.pop()?;
        self.state.fetch_add((1 << UNPARK_SHIFT) | 1, SeqCst);
        Some(worker)
    }

    /// Marks `worker` parked. Returns true if it was the last searcher, in which case the
    /// caller must look at the queues again before sleeping (see the module doc).
    pub(crate) fn transition_worker_to_parked(&self, worker: usize, is_searching: bool) -> bool {
        let mut sleepers = self.sleepers.lock();
        let dec = (1 << UNPARK_SHIFT) | usize::from(is_searching);
        let prev = self.state.fetch_sub(dec, SeqCst);
        sleepers.push(worker);
        is_searching && searching(prev) == 1
    }

    /// Starts searching, unless half the workers already are.
    pub(crate) fn transition_worker_to_searching(&self) -> bool {
        let s = self.state.load(SeqCst);
        if 2 * searching(s) >= self.num_workers {
            return false;
        }
        self.state.fetch_add(1, SeqCst);
        true
    }

    /// Stops searching (a task was found). Returns true if this was the last searcher, in
    /// which case the caller wakes another worker if any sleeps: there may be more work.
    pub(crate) fn transition_worker_from_searching(&self) -> bool {
        searching(self.state.fetch_sub(1, SeqCst)) == 1
    }

    /// Number of workers currently searching (for tests and metrics).
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
        let idle = Idle::new(2);
        assert!(idle.transition_worker_to_searching());
        assert!(
            !idle.transition_worker_to_searching(),
            "at most half search"
        );
        assert!(idle.transition_worker_to_parked(0, true), "last searcher");
        assert!(!idle.transition_worker_to_parked(1, false));
        assert_eq!(idle.worker_to_notify(), Some(1));
        assert_eq!(idle.num_searching(), 1);
        assert_eq!(
            idle.worker_to_notify(),
            None,
            "someone is searching already"
        );
        assert!(idle.transition_worker_from_searching());
        assert_eq!(idle.worker_to_notify(), Some(0));
    }
}
