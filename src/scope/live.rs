//! A scope's count of unfinished tasks, split by who writes it.
//!
//! A task is counted when it is spawned, on the spawning thread, and uncounted when it
//! ends, usually on a worker. One shared word written at both ends crossed between cores
//! twice per task, and the spawning thread, which spawns in a loop, waited for it at every
//! spawn (benches/NOTES.md). So the count is two words on two cache lines:
//!
//! ```text
//! started   tasks ever counted    written by the spawning threads
//! ended     tasks ever uncounted  written by the threads tasks end on (workers, mostly)
//! waiting   callers in wait()     written only by them; read at every end
//! live    = started - ended       (wrapping; `ended` read first)
//! ```
//!
//! # Protocol
//! - **Start** (before the task exists): `started += 1`.
//! - **End** (after the task's future was dropped): `ended += 1`, fence, then read `waiting`;
//!   if a caller waits and `started` equals the `ended` this end produced, the count is zero:
//!   notify. Of several ends racing to zero, the one last in `ended`'s order sees
//!   `started` equal to its value (no start can be missing from `started` by then: each was
//!   made before its task could end).
//! - **Wait**: `waiting += 1`, fence, register for the notification, then read the count.
//!
//! # Why no end is missed
//! An end writes `ended` then reads `waiting`; a waiter writes `waiting` then reads `ended`,
//! each with a `SeqCst` fence between: at least one sees the other. So either the waiter
//! reads the count after the last end, or that end sees the waiter and notifies it. (Checked
//! by loom: `loom_scope_wait_vs_last_tasks`.) Reading `ended` before `started` means a
//! reading is never below the true count: each task counted in `ended` was counted in
//! `started` before it could end.

use std::sync::atomic::Ordering::SeqCst;

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicUsize, fence};

pub(crate) struct LiveCount {
    started: CachePadded<AtomicUsize>,
    ended: CachePadded<AtomicUsize>,
    waiting: AtomicUsize,
}

impl LiveCount {
    pub(crate) fn new() -> Self {
        LiveCount {
            started: CachePadded::new(AtomicUsize::new(0)),
            ended: CachePadded::new(AtomicUsize::new(0)),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Counts a task about to be created.
    #[inline]
    pub(crate) fn start(&self) {
        self.started.fetch_add(1, SeqCst);
    }

    /// Uncounts a task that ended. True if that took the count to zero while a caller is
    /// in `wait()`: the caller of `end` must then notify the waiters.
    #[inline]
    pub(crate) fn end(&self) -> bool {
        let ended = self.ended.fetch_add(1, SeqCst).wrapping_add(1);
        fence(SeqCst);
        self.waiting.load(SeqCst) > 0 && self.started.load(SeqCst) == ended
    }

    /// Unfinished tasks: never below the count at some moment of the call.
    pub(crate) fn live(&self) -> usize {
        let ended = self.ended.load(SeqCst);
        self.started.load(SeqCst).wrapping_sub(ended)
    }

    /// Counts the caller in `waiting` until the guard drops. Register for the notification
    /// after this returns, then read [`live`](Self::live).
    pub(crate) fn enter_wait(&self) -> WaitGuard<'_> {
        self.waiting.fetch_add(1, SeqCst);
        fence(SeqCst);
        WaitGuard(&self.waiting)
    }
}

/// A caller counted in `waiting` (see [`LiveCount::enter_wait`]).
pub(crate) struct WaitGuard<'a>(&'a AtomicUsize);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn only_the_end_that_reaches_zero_with_a_waiter_asks_for_a_notification() {
        let live = LiveCount::new();
        live.start();
        live.start();
        assert!(!live.end(), "no one waits");
        let waiting = live.enter_wait();
        assert_eq!(live.live(), 1);
        live.start();
        assert!(!live.end(), "one still live");
        assert!(live.end(), "the count reached zero with a waiter");
        assert_eq!(live.live(), 0);
        drop(waiting);
        live.start();
        assert!(!live.end(), "no one waits any more");
    }
}
