//! The scheduler: run queues, worker threads, and the sleep/wake protocol.
//!
//! - [`worker`]: the loop each OS worker thread runs: find a task, run it, park when idle.
//! - [`idle`]: the counts of parked and searching workers that decide whom a push wakes.
//! - `README.md` beside this file: the sleep/wake protocol in steps, and the races it prevents.
//!
//! Queues: each worker has a crossbeam-deque `Worker` (FIFO) that only it pushes to; there is
//! one global `Injector` for tasks scheduled from outside the pool. A task woken on one of
//! the pool's own workers goes to that worker's deque; any other wake or spawn goes to the
//! injector. That is the path of `Normal` tasks. A `High` or `Low` task (its scope's
//! [`Priority`]) goes to its lane's own global `Injector`, wherever it is spawned or woken;
//! workers pick from the lanes in the order given in `worker.rs` (and `README.md`).

pub(crate) mod idle;
#[cfg(not(loom))]
mod injector;
mod priority;
mod queue;
pub(crate) mod reclaim;
mod worker;

use std::sync::atomic::{
    AtomicBool, AtomicUsize,
    Ordering::{Relaxed, SeqCst},
    fence,
};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use crossbeam_utils::sync::{Parker, Unparker};
use parking_lot::{Condvar, Mutex};
use queue::{Injector, Steal, Stealer, Worker};

use crate::task::Runnable;
use idle::Idle;
use reclaim::Reclaim;

pub use priority::Priority;

pub(crate) use idle::MAX_WORKERS;

pub(crate) use worker::{
    RETIRE_CHECK_INTERVAL, count_retry_on_current_worker, current_worker_index, run_worker,
    schedule,
};

/// What a worker thread takes from its slot when it starts, and gives back when it retires:
/// the deque whose [`Stealer`] its peers hold and the parker whose [`Unparker`] notifiers
/// hold (both sit at the slot's index in `Scheduler::{stealers, unparkers}`).
pub(crate) struct WorkerParts {
    local: Worker<Runnable>,
    parker: Parker,
}

pub(crate) struct Scheduler {
    injector: Injector<Runnable>,
    /// The `High` lane: every runnable of a `High` scope, one at a time to whoever picks.
    high: Injector<Runnable>,
    /// The `Low` lane, likewise.
    low: Injector<Runnable>,
    /// At least the number of runnables in `high` and `low` (raised before a push, lowered
    /// after a pop). Zero lets a worker's pick skip both lanes with one load of a line that
    /// only lane traffic writes: the Normal path's whole cost of the lanes. A hint, never
    /// the wake-up protocol's evidence: a parking searcher reads the queues themselves.
    lanes_queued: CachePadded<AtomicUsize>,
    /// One per worker slot (`capacity` of them, fixed at build); a thread holds a slot while
    /// it runs.
    stealers: Box<[Stealer<Runnable>]>,
    unparkers: Box<[Unparker]>,
    /// The parts of the slots no thread holds, the lowest index last (taken first).
    free: Mutex<Vec<(usize, WorkerParts)>>,
    free_cv: Condvar,
    /// One more than the highest slot index ever taken: searchers steal from slots below it,
    /// and `has_work`, `queued` and the metrics read only those (a slot above has never held
    /// a task). The drains look at every slot.
    high_water: AtomicUsize,
    /// Workers asked to retire and not yet retired (`resize` down). Read by each worker
    /// between tasks (every [`worker::RETIRE_CHECK_INTERVAL`] tasks, and when it finds none).
    surplus: CachePadded<AtomicUsize>,
    pub(crate) idle: Idle,
    /// References to finished detached tasks, for spawning threads to free (see `reclaim`).
    pub(crate) reclaim: Reclaim<std::task::Waker>,
    stealing: bool,
    /// Set once by shutdown or drop: workers drain what is queued and exit.
    terminate: AtomicBool,
    /// Workers that have left their loop and run their stop hook.
    exited: Mutex<usize>,
    exited_cv: Condvar,
}

impl Scheduler {
    /// A scheduler with `capacity` worker slots, all free, and no worker yet.
    pub(crate) fn new(capacity: usize, stealing: bool) -> Scheduler {
        let mut free = Vec::with_capacity(capacity);
        let mut stealers = Vec::with_capacity(capacity);
        let mut unparkers = Vec::with_capacity(capacity);
        for index in 0..capacity {
            let local = Worker::new_fifo();
            let parker = Parker::new();
            stealers.push(local.stealer());
            unparkers.push(parker.unparker().clone());
            free.push((index, WorkerParts { local, parker }));
        }
        free.reverse();
        Scheduler {
            injector: Injector::new(),
            high: Injector::new(),
            low: Injector::new(),
            lanes_queued: CachePadded::new(AtomicUsize::new(0)),
            stealers: stealers.into(),
            unparkers: unparkers.into(),
            free: Mutex::new(free),
            free_cv: Condvar::new(),
            high_water: AtomicUsize::new(0),
            surplus: CachePadded::new(AtomicUsize::new(0)),
            idle: Idle::new(0, capacity),
            reclaim: Reclaim::new(),
            stealing,
            terminate: AtomicBool::new(false),
            exited: Mutex::new(0),
            exited_cv: Condvar::new(),
        }
    }

    /// Number of worker slots: the most threads the pool can run at once.
    pub(crate) fn capacity(&self) -> usize {
        self.stealers.len()
    }

    /// One more than the highest slot index a thread has taken: slots (and counter rows)
    /// from there on were never used.
    pub(crate) fn slots_ever_used(&self) -> usize {
        self.high_water.load(SeqCst)
    }

    /// Takes a free slot for the calling (new) worker thread, waiting while a retiring
    /// thread still holds the one it frees (its thread-local context returns it as the
    /// thread exits). `None` if the pool terminates first.
    pub(crate) fn take_slot(&self) -> Option<(usize, WorkerParts)> {
        let mut free = self.free.lock();
        loop {
            if self.is_terminated() {
                return None;
            }
            if let Some((index, parts)) = free.pop() {
                self.high_water.fetch_max(index + 1, SeqCst);
                return Some((index, parts));
            }
            // `resize` never starts more threads than there are slots, so one is being
            // returned (or terminate notifies).
            self.free_cv.wait(&mut free);
        }
    }

    /// Gives slot `index` back (its deque empty) for a later thread.
    pub(crate) fn return_slot(&self, index: usize, parts: WorkerParts) {
        debug_assert!(parts.local.is_empty(), "a returned deque holds tasks");
        self.free.lock().push((index, parts));
        self.free_cv.notify_one();
    }

    /// Asks `n` more running workers to retire, and unparks up to `n` sleepers so that idle
    /// workers retire now rather than at their next wake-up.
    pub(crate) fn request_retire(&self, n: usize) {
        self.surplus.fetch_add(n, SeqCst);
        for _ in 0..n {
            if !self.wake_a_sleeper() {
                break;
            }
        }
    }

    /// Unparks one sleeper whether or not anyone searches (counted unparked and searching);
    /// false if none sleeps.
    fn wake_a_sleeper(&self) -> bool {
        match self.idle.any_sleeper() {
            Some(i) => {
                self.unparkers[i].unpark();
                true
            }
            None => false,
        }
    }

    /// Withdraws up to `n` retirement requests not yet taken; returns how many it withdrew.
    pub(crate) fn withdraw_retire(&self, n: usize) -> usize {
        let mut taken = 0;
        let _ = self.surplus.try_update(SeqCst, SeqCst, |s| {
            taken = s.min(n);
            Some(s - taken)
        });
        taken
    }

    /// Is a retirement waiting to be taken? One `Relaxed` load: the worker loop's check.
    #[inline]
    fn retire_requested(&self) -> bool {
        self.surplus.load(Relaxed) != 0
    }

    /// Takes one retirement request; true if the caller got one and must retire. (A request
    /// another worker took first leaves this one working.)
    fn take_retirement(&self) -> bool {
        self.surplus
            .try_update(SeqCst, SeqCst, |s| s.checked_sub(1))
            .is_ok()
    }

    /// Schedules a freshly spawned task of a scope of lane `lane`: a `Normal` one onto the
    /// current worker's deque if the spawner is a worker of this pool, else onto the
    /// injector; a `High` or `Low` one onto its lane.
    /// The caller holds `pool` (through the scope), which keeps it alive during the push.
    #[inline]
    pub(crate) fn schedule_new(&self, runnable: Runnable, lane: Priority) {
        if lane != Priority::Normal {
            self.push_lane(runnable, lane);
        } else if let Some(runnable) = worker::try_push_local(runnable) {
            self.push_remote(runnable);
        }
    }

    /// Pushes onto the injector and wakes a worker if none is searching.
    #[inline]
    fn push_remote(&self, runnable: Runnable) {
        self.push_global(&self.injector, runnable);
    }

    /// Pushes onto the queue of lane `lane` (`High` or `Low`) and wakes a worker if none is
    /// searching: the same protocol as an injector push. The caller holds the pool.
    #[cold]
    fn push_lane(&self, runnable: Runnable, lane: Priority) {
        let queue = if lane == Priority::High {
            &self.high
        } else {
            &self.low
        };
        self.lanes_queued.fetch_add(1, Relaxed);
        self.push_global(queue, runnable);
    }

    /// Could a lane queue hold a task? False only when both are empty (or a push is just
    /// starting): a worker's pick then goes straight to the Normal lane.
    #[inline]
    fn lanes_may_have_work(&self) -> bool {
        self.lanes_queued.load(Relaxed) != 0
    }

    /// One task from the lane queue `queue` (`high` or `low`). The emptiness check comes
    /// first: crossbeam's `steal` on an empty injector also pays a `SeqCst` fence.
    fn pop_lane(&self, queue: &Injector<Runnable>) -> Option<Runnable> {
        while !queue.is_empty() {
            match queue.steal() {
                Steal::Success(r) => {
                    self.lanes_queued.fetch_sub(1, Relaxed);
                    return Some(r);
                }
                Steal::Retry => continue,
                Steal::Empty => return None,
            }
        }
        None
    }

    /// Pushes onto `queue`, one of the global queues (injector or a lane), then notifies:
    /// push; `fence(SeqCst)`; read the idle state (`README.md`, "Lost wake-up").
    #[inline(always)]
    fn push_global(&self, queue: &Injector<Runnable>, runnable: Runnable) {
        queue.push(runnable);
        if self.terminate.load(SeqCst) {
            // Workers may have drained and exited already: finish the task here. It is
            // cancelled (terminate implies cancel-all or no admitted task), so this drops the
            // user's future without polling it.
            self.drain_here();
            return;
        }
        fence(SeqCst);
        self.notify_one();
    }

    /// Wakes one parked worker, unless one is already searching (see `idle`).
    #[inline]
    fn notify_one(&self) {
        if let Some(i) = self.idle.worker_to_notify() {
            self.unparkers[i].unpark();
        }
    }

    /// Is there anything a searching worker could take?
    fn has_work(&self) -> bool {
        !self.injector.is_empty()
            || !self.high.is_empty()
            || !self.low.is_empty()
            || (self.stealing && self.used_stealers().iter().any(|s| !s.is_empty()))
    }

    /// The stealers of the slots ever used (the others never held a task). Read after a
    /// `SeqCst` fence by a parking worker, this covers any slot whose first push could have
    /// left its wake-up to that worker: the slot's thread raised `high_water` before it
    /// pushed.
    fn used_stealers(&self) -> &[Stealer<Runnable>] {
        &self.stealers[..self.slots_ever_used()]
    }

    fn is_terminated(&self) -> bool {
        self.terminate.load(SeqCst)
    }

    /// Tells every worker to drain its queue and exit.
    pub(crate) fn terminate(&self) {
        self.terminate.store(true, SeqCst);
        // The caller holds the pool (see `reclaim`'s last rule).
        self.reclaim.close();
        for u in self.unparkers.iter() {
            u.unpark();
        }
        // A thread waiting for a slot stops waiting (under the lock, so it cannot miss this).
        let _free = self.free.lock();
        self.free_cv.notify_all();
    }

    /// Runs one task. `TaskFuture` catches every panic of the user's future; this catches what
    /// async-task itself may raise while running it, such as a panic in the `Drop` of a
    /// detached task's output, so that the thread survives.
    ///
    /// A small detached task may finish in this run and leave its allocation to be freed
    /// by whoever drops the last reference. For such a task this returns a reference kept
    /// across the run, for the worker to hand to a spawning thread (see `reclaim`); dropping
    /// it instead frees the task here, as without it.
    #[must_use = "dropping the kept reference frees the task on this thread"]
    pub(crate) fn run_task(runnable: Runnable) -> Option<std::task::Waker> {
        let keep = runnable
            .metadata()
            .free_by_spawner()
            .then(|| runnable.waker());
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runnable.run()));
        // A panic outside the task's future (in the drop of its output?) is not the task's
        // outcome; Rust's panic hook has printed it, and with `tracing` it is an event.
        if let Err(p) = ran {
            #[cfg(feature = "tracing")]
            tracing::error!(
                target: "async_rayon",
                "a task panicked outside its future: {}",
                crate::unwind::panic_message(&*p)
            );
            #[cfg(not(feature = "tracing"))]
            drop(p);
        }
        keep
    }

    /// Pops and runs whatever is still queued anywhere (lane queues included), on the calling
    /// thread. Used after terminate, when every queued task is cancelled and only needs to be
    /// finished.
    pub(crate) fn drain_here(&self) {
        loop {
            let mut found = false;
            for lane in [&self.high, &self.low] {
                while let Some(r) = self.pop_lane(lane) {
                    found = true;
                    drop(Scheduler::run_task(r));
                }
            }
            loop {
                match self.injector.steal() {
                    Steal::Success(r) => {
                        found = true;
                        drop(Scheduler::run_task(r));
                    }
                    Steal::Retry => continue,
                    Steal::Empty => break,
                }
            }
            for s in self.stealers.iter() {
                loop {
                    match s.steal() {
                        Steal::Success(r) => {
                            found = true;
                            drop(Scheduler::run_task(r));
                        }
                        Steal::Retry => continue,
                        Steal::Empty => break,
                    }
                }
            }
            if !found {
                return;
            }
        }
    }

    /// Called by a worker thread once it has drained and run its stop hook.
    pub(crate) fn worker_exited(&self) {
        *self.exited.lock() += 1;
        self.exited_cv.notify_all();
    }

    /// Number of workers that have finished their loop and stop hook.
    pub(crate) fn num_exited(&self) -> usize {
        *self.exited.lock()
    }

    /// Blocks until `n` workers have exited or `timeout` passes. True if they all exited.
    pub(crate) fn wait_exited_blocking(&self, n: usize, timeout: Duration) -> bool {
        let mut exited = self.exited.lock();
        let _ = self
            .exited_cv
            .wait_while_for(&mut exited, |e| *e < n, timeout);
        *exited >= n
    }

    /// Runnables waiting in any queue right now (approximate while workers run).
    pub(crate) fn queued(&self) -> usize {
        self.injector.len()
            + self.high.len()
            + self.low.len()
            + self.used_stealers().iter().map(Stealer::len).sum::<usize>()
    }
}
