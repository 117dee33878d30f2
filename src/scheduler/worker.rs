//! The worker loop: find a task, run it, park when there is none.
//!
//! Where a worker looks, in order:
//! 1. the lanes, by the pick rule below: the `High` queue, the Normal queues (its own deque,
//!    then the injector, taking a batch into its own deque; every
//!    [`GLOBAL_QUEUE_INTERVAL`]th turn the injector comes first, so tasks from outside are not
//!    starved by a worker that keeps waking its own), the `Low` queue;
//! 2. as a *searcher* (at most half the workers at once), the `High` queue, the injector,
//!    every peer's deque from a random start (skipped when work stealing is off), the `Low`
//!    queue;
//! 3. nothing found: park (see `idle` and `README.md`).
//!
//! **The pick rule.** Pick `k` (the worker's `k`th look for a task, counted from 1) tries
//! the lanes in this order:
//! - `k % 8 == 0`: Low, High, Normal ([`LOW_FIRST`]);
//! - `k % 8 == 4`: Normal, High, Low ([`NORMAL_FIRST`]);
//! - otherwise: High, Normal, Low.
//!
//! So while a lane has tasks it gets at least one pick in eight of every worker, whatever the
//! others hold, and `High` gets at least six in eight. Lane queues hand out one task per
//! pick (never a batch into the worker's deque, where it would be run as `Normal`).
//! While `Scheduler::lanes_queued` says both lane queues are empty, a pick is the Normal
//! order alone (one load more than before lanes existed).

use std::cell::{Cell, OnceCell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{
    Ordering::{Relaxed, SeqCst},
    fence,
};

use super::queue::{Steal, Worker};
use crossbeam_utils::sync::Parker;

use super::reclaim::Batch;
use super::{Priority, Scheduler, WorkerParts};
use crate::registry::Shared;
use crate::task::Runnable;

/// How many turns between injector-first turns (tokio uses the same figure).
const GLOBAL_QUEUE_INTERVAL: u32 = 61;

/// The picks `k` with `k % LANE_ROUND == LOW_FIRST` try `Low` first, those with
/// `k % LANE_ROUND == NORMAL_FIRST` try `Normal` first; the others try `High` first.
///
/// Eight: a lane that is never empty gets at least 1/8 of each worker's picks, which
/// keeps a starved lane moving at an eighth of the pool's rate at worst, while `High`, the
/// lane meant for latency, gives up only 2 picks in 8 to the others (so a burst of `High`
/// tasks behind a saturated `Low` lane drains at 3/4 of the pool's rate, not much slower
/// than alone). A power of two makes the test a mask. Four or fewer would hand `High` 50%
/// or less under load; sixteen or more would halve the floor of the others for no gain
/// in `High`'s wait, which a pick at most one task long bounds anyway.
const LANE_ROUND: u32 = 8;
const LOW_FIRST: u32 = 0;
const NORMAL_FIRST: u32 = 4;

/// How many picks a busy worker makes between two looks at `Scheduler::surplus` (a worker
/// that finds no task looks every time): the figure of [`GLOBAL_QUEUE_INTERVAL`], so a busy
/// worker retires within about the same number of tasks as it waits to look at the injector.
pub(crate) const RETIRE_CHECK_INTERVAL: u32 = GLOBAL_QUEUE_INTERVAL;

/// The state a worker thread keeps in thread-local storage, so a waker firing on this
/// thread can push to this worker's deque.
struct WorkerContext {
    pool: Arc<Shared>,
    /// The worker's slot: its deque and parker belong to the slot, not to the thread.
    index: usize,
    local: Worker<Runnable>,
    parker: Parker,
    /// False once the loop has ended: later wakes on this thread go to the injector.
    running: Cell<bool>,
    /// Set when the worker retired (`resize` down): dropping the context, as the thread
    /// exits, gives the slot back.
    retired: Cell<bool>,
    /// References to finished detached tasks, handed to the pool's spawners a batch at a
    /// time (see `reclaim`).
    gathered: RefCell<Batch<std::task::Waker>>,
}

thread_local! {
    /// Set once when a worker thread starts. A thread is a worker of at most one pool for its
    /// whole life, which is what lets `schedule` decide "local or injector" by comparing the
    /// task's pool with this context's, and lets the counters use its index as the row only
    /// this thread writes.
    static CURRENT: OnceCell<WorkerContext> = const { OnceCell::new() };
}

/// The index of the calling thread in `pool`, if it is one of `pool`'s workers.
#[inline]
pub(crate) fn current_worker_index(pool: &Arc<Shared>) -> Option<usize> {
    CURRENT
        .try_with(|c| {
            c.get()
                .filter(|ctx| Arc::ptr_eq(&ctx.pool, pool))
                .map(|ctx| ctx.index)
        })
        .ok()
        .flatten()
}

/// Counts one retry in the pool of the calling worker thread, if it is one.
pub(crate) fn count_retry_on_current_worker() {
    let _ = CURRENT.try_with(|c| {
        if let Some(ctx) = c.get() {
            ctx.pool.counters.retried(Some(ctx.index));
        }
    });
}

/// Pushes onto the calling worker's deque if it is a running worker of the task's pool;
/// otherwise gives the runnable back.
#[inline]
pub(super) fn try_push_local(runnable: Runnable) -> Option<Runnable> {
    let mut slot = Some(runnable);
    let _ = CURRENT.try_with(|c| {
        if let Some(ctx) = c.get()
            && ctx.running.get()
            && let Some(r) = slot.take_if(|r| Arc::ptr_eq(&ctx.pool, r.metadata().pool()))
        {
            ctx.local.push(r);
            let sched = &ctx.pool.sched;
            if sched.stealing {
                // Peers may take it: wake one if nobody is searching.
                fence(SeqCst);
                sched.notify_one();
            }
        }
    });
    slot
}

/// The schedule function of every task: called by async-task when a task is woken.
pub(crate) fn schedule(runnable: Runnable) {
    let lane = runnable.metadata().scope.priority();
    if lane != Priority::Normal {
        // Its lane's global queue, from a worker or not. Hold the pool while pushing (as
        // below).
        let pool = runnable.metadata().pool().clone();
        pool.sched.push_lane(runnable, lane);
    } else if let Some(runnable) = try_push_local(runnable) {
        // Off the pool's own workers: hold the pool while pushing, since once the runnable is
        // queued another thread may finish the task and drop what it referenced.
        let pool = runnable.metadata().pool().clone();
        pool.sched.push_remote(runnable);
    }
}

/// Takes a free slot of `pool` and runs it as a worker on the calling (new) thread until
/// terminate or until it retires. Returns at once if the pool terminates before a slot is
/// free.
pub(crate) fn run_worker(pool: Arc<Shared>) {
    let Some((index, WorkerParts { local, parker })) = pool.sched.take_slot() else {
        return;
    };
    CURRENT.with(|c| {
        let ctx = c.get_or_init(|| WorkerContext {
            pool,
            index,
            local,
            parker,
            running: Cell::new(true),
            retired: Cell::new(false),
            gathered: RefCell::new(Batch::new()),
        });
        ctx.run();
        if !ctx.retired.get() {
            ctx.running.set(false);
            ctx.drain();
        }
    });
}

impl Drop for WorkerContext {
    /// A retired worker's thread is exiting: its slot goes back for a later thread. (The
    /// deque and parker are replaced by fresh ones only to move the slot's own out.)
    ///
    /// Until here the slot is this thread's: its counter row is written with plain loads and
    /// stores (`metrics/counters.rs`), and the thread may still write it after retiring (an
    /// `on_thread_stop` hook that spawns is counted in this row). Returning the slot under
    /// the free list's lock orders all of that before the next thread of the slot starts.
    fn drop(&mut self) {
        if self.retired.get() {
            let parts = WorkerParts {
                local: std::mem::replace(&mut self.local, Worker::new_fifo()),
                parker: std::mem::replace(&mut self.parker, Parker::new()),
            };
            self.pool.sched.return_slot(self.index, parts);
        }
    }
}

impl WorkerContext {
    fn run(&self) {
        let sched = &self.pool.sched;
        let counters = &self.pool.counters;
        let mut searching = false;
        // In a run streak: the clock is read only when one starts or ends (utilization).
        let mut busy = false;
        let mut tick: u32 = 0;
        loop {
            tick = tick.wrapping_add(1);
            let mut task = if sched.lanes_may_have_work() {
                self.pick_by_lane(tick)
            } else {
                self.pop_normal(tick)
            };
            if task.is_none() {
                if busy {
                    busy = false;
                    counters.busy_end(self.index);
                }
                if sched.is_terminated() {
                    return;
                }
                if sched.retire_requested() && sched.take_retirement() {
                    self.retire(searching);
                    return;
                }
                if !searching {
                    searching = sched.idle.transition_worker_to_searching();
                }
                if searching {
                    task = self.steal();
                }
            }
            match task {
                Some(runnable) => {
                    if !busy {
                        busy = true;
                        counters.busy_start(self.index);
                    }
                    if searching {
                        searching = false;
                        if sched.idle.transition_worker_from_searching() {
                            // We were the last searcher and there may be more work: hand the
                            // search on to one sleeper.
                            sched.notify_one();
                        }
                    }
                    if let Some(reference) = Scheduler::run_task(runnable) {
                        self.gather(reference);
                    }
                    if tick.is_multiple_of(RETIRE_CHECK_INTERVAL)
                        && sched.retire_requested()
                        && sched.take_retirement()
                    {
                        counters.busy_end(self.index);
                        self.retire(false);
                        return;
                    }
                }
                None => {
                    if !self.park(&mut searching) {
                        return;
                    }
                }
            }
        }
    }

    /// The pick rule (module doc) while a lane queue may hold tasks.
    #[inline(never)]
    fn pick_by_lane(&self, tick: u32) -> Option<Runnable> {
        let sched = &self.pool.sched;
        match tick % LANE_ROUND {
            LOW_FIRST => sched
                .pop_lane(&sched.low)
                .or_else(|| sched.pop_lane(&sched.high))
                .or_else(|| self.pop_normal(tick)),
            NORMAL_FIRST => self
                .pop_normal(tick)
                .or_else(|| sched.pop_lane(&sched.high))
                .or_else(|| sched.pop_lane(&sched.low)),
            _ => sched
                .pop_lane(&sched.high)
                .or_else(|| self.pop_normal(tick))
                .or_else(|| sched.pop_lane(&sched.low)),
        }
    }

    /// The Normal lane: the own deque, then the injector (the other way round every
    /// [`GLOBAL_QUEUE_INTERVAL`]th turn).
    #[inline]
    fn pop_normal(&self, tick: u32) -> Option<Runnable> {
        if tick.is_multiple_of(GLOBAL_QUEUE_INTERVAL) {
            self.pop_injector().or_else(|| self.local.pop())
        } else {
            self.local.pop().or_else(|| self.pop_injector())
        }
    }

    /// A task from the injector, with a batch more moved to this worker's deque. Peers may
    /// steal from the batch: as for a local push, wake one if nobody is searching, or the
    /// batch could wait behind a long task here while a peer sleeps.
    fn pop_injector(&self) -> Option<Runnable> {
        let sched = &self.pool.sched;
        loop {
            match sched.injector.steal_batch_and_pop(&self.local) {
                Steal::Success(r) => {
                    if sched.stealing && !self.local.is_empty() {
                        fence(SeqCst);
                        sched.notify_one();
                    }
                    return Some(r);
                }
                Steal::Empty => return None,
                Steal::Retry => continue,
            }
        }
    }

    fn steal(&self) -> Option<Runnable> {
        let sched = &self.pool.sched;
        let n = sched.high_water.load(Relaxed);
        loop {
            let mut retry = false;
            let lanes = sched.lanes_may_have_work();
            if lanes && let Some(r) = sched.pop_lane(&sched.high) {
                return Some(r);
            }
            match sched.injector.steal_batch_and_pop(&self.local) {
                Steal::Success(r) => return Some(r),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            if sched.stealing && n > 1 {
                let start = crate::rand::next_below(n);
                for k in 0..n {
                    let j = (start + k) % n;
                    if j == self.index {
                        continue;
                    }
                    match sched.stealers[j].steal_batch_and_pop(&self.local) {
                        Steal::Success(r) => return Some(r),
                        Steal::Retry => retry = true,
                        Steal::Empty => {}
                    }
                }
            }
            if lanes && let Some(r) = sched.pop_lane(&sched.low) {
                return Some(r);
            }
            if !retry {
                return None;
            }
        }
    }

    /// Retires this worker, which has taken a retirement request (`resize` down): stops
    /// searching, moves the tasks of its deque to the injector and hands its gathered
    /// references over; the caller then leaves the loop, and the thread exits.
    ///
    /// Leaving the search is the park step's (`README.md`, step 4) without the sleep: a push
    /// may have seen this worker searching and left the wake-up to it, so if it was the last
    /// searcher it looks at the queues again after a `SeqCst` fence and wakes a worker if
    /// anything is there (loom: `loom_retire_vs_push_and_steal`).
    #[cold]
    fn retire(&self, searching: bool) {
        let sched = &self.pool.sched;
        // Wakes on this thread from now on go to the injector, not to this deque.
        self.running.set(false);
        if searching {
            let was_last_searcher = sched.idle.transition_worker_from_searching();
            fence(SeqCst);
            if was_last_searcher && sched.has_work() {
                sched.notify_one();
            }
        }
        // Only this thread pushes to its deque, so once drained it stays empty; peers may be
        // stealing from it meanwhile, which the deque allows.
        while let Some(r) = self.local.pop() {
            sched.push_remote(r);
        }
        let gathered = self.gathered.borrow_mut().take();
        if let Some(batch) = gathered {
            sched.reclaim.defer(batch);
        }
        sched.idle.worker_retired();
        self.retired.set(true);
        #[cfg(feature = "tracing")]
        tracing::debug!(target: "async_rayon", slot = self.index, "worker retired");
    }

    /// Parks until notified. Returns false if the pool is terminating. On return the worker
    /// is searching (its notifier counted it so).
    fn park(&self, searching: &mut bool) -> bool {
        let parker = &self.parker;
        let sched = &self.pool.sched;
        // Nothing waits in this worker while it sleeps. (The borrow ends before `defer`,
        // which may drop the batch.)
        let gathered = self.gathered.borrow_mut().take();
        if let Some(batch) = gathered {
            sched.reclaim.defer(batch);
        }
        sched
            .idle
            .transition_worker_to_parked(self.index, *searching);
        *searching = false;
        fence(SeqCst);
        if sched.has_work() {
            // A push may have seen us searching and left the wake-up to us, or a searcher
            // that found a batch may have looked for sleepers before we joined them.
            sched.notify_one();
        }
        if sched.retire_requested() {
            // A shrinking resize may have looked for sleepers before we joined them: wake one
            // (perhaps us) to take the retirement. (The resize raised `surplus` before it took
            // the sleepers' lock, and we joined under that lock before this load.)
            sched.wake_a_sleeper();
        }
        if sched.is_terminated() {
            return false;
        }
        parker.park();
        if sched.is_terminated() {
            return false;
        }
        *searching = true;
        true
    }

    /// Keeps a reference to a finished detached task; hands the batch over when it is full.
    #[inline]
    fn gather(&self, reference: std::task::Waker) {
        let full = self.gathered.borrow_mut().add(reference);
        if let Some(batch) = full {
            self.pool.sched.reclaim.defer(batch);
        }
    }

    /// After terminate: run everything still queued anywhere (all of it cancelled).
    fn drain(&self) {
        while let Some(r) = self.local.pop() {
            // Terminated: the pool frees what it kept, so free here too.
            drop(Scheduler::run_task(r));
        }
        self.pool.sched.drain_here();
    }
}
