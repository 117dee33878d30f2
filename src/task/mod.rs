//! Tasks: one allocation each, made by [`raw`] (async-task's raw task, carried in this crate
//! so that the block comes from a per-thread cache, `raw::cache`).
//!
//! A task is that raw task (header, schedule function, future-or-output) with a
//! [`TaskMeta`] as its metadata. The future stored in it is a [`TaskFuture`]: the user's
//! future wrapped with the controls this crate adds (cancellation, timeout, panic
//! isolation, admission bookkeeping). The user holds a [`TaskHandle`].
//!
//!
//! # Task life cycle
//! 1. **Admit**: the spawner takes an admission slot, bumps its scope's live count, builds
//!    the task and pushes its `Runnable` to a run queue.
//! 2. **Poll**: a worker runs the `Runnable`; `TaskFuture` checks for cancellation, starts
//!    the timeout clock on the first poll, and polls the user's future inside
//!    `catch_unwind`.
//! 3. **Suspend**: on the first `Pending` the task creates its cancellation token (a child of
//!    its scope's) and, with a timeout, its timer; both hold the task's waker, so a cancel or
//!    a deadline wakes a suspended task at once.
//! 4. **Finish** (exactly once per unit, see [`Guarded`]): drop the user's future (catching a
//!    panic in its `Drop`), count the outcome, release the admission slot; then the task
//!    leaves its scope ([`TaskFuture`]) and only then hands the result to `async-task`, which
//!    wakes the handle.
//!
//! A *unit* is one admitted piece of work with one slot: a whole task for
//! `spawn_with_handle`, or one item of a `batch_process` batch, where one task (a *carrier*)
//! drives many [`Guarded`] units. The controls live in [`Guarded`]; [`TaskFuture`] holds what
//! belongs to a pool task (scope membership and the cancel wake-up).
//!
//! Architecture invariant: a `Runnable` is never dropped unrun. Every queue that still holds
//! runnables at shutdown is drained by running them with cancellation requested, so the
//! handle of every admitted task resolves with a value or a `TaskError`, never a panic from
//! `async-task` about a closed task.

pub(crate) mod cancel;
mod future;
mod guard;
mod handle;
mod id;
mod rare_box;
mod raw;

use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use crate::error::TaskError;
use crate::metrics::Outcome;
use crate::registry::Shared;
use crate::scope::ScopeShared;
use cancel::{CANCEL_REQUESTED, CancelState};
use std::sync::Arc;

pub use handle::{CancelOnDrop, TaskHandle};
pub use id::TaskId;

pub(crate) use future::TaskFuture;
pub(crate) use guard::Guarded;

/// What the run queues hold.
pub(crate) type Runnable = raw::Runnable<TaskMeta>;
/// The join side of a task, wrapped by [`TaskHandle`].
pub(crate) type JoinTask<T> = raw::Task<Result<T, TaskError>, TaskMeta>;

/// Set when the task's handle is dropped.
const DETACHED: u8 = 2;
/// Set at spawn when the task's future is small enough for its allocation to be handed back
/// to a spawning thread once it finishes detached (see `scheduler::reclaim`).
const SMALL: u8 = 4;

/// Per-task state shared by the handle and the running future; lives in the task's own
/// allocation (async-task metadata), so it costs no extra allocation.
pub(crate) struct TaskMeta {
    pub(crate) scope: Arc<ScopeShared>,
    /// The flags (cancel requested, detached, small) and the cancellation token, created
    /// only when the handle asks for it (or at a timeout).
    cancel: CancelState<CancellationToken>,
}

impl TaskMeta {
    pub(crate) fn new(scope: Arc<ScopeShared>, id: TaskId, small: bool) -> Self {
        TaskMeta {
            scope,
            cancel: CancelState::new(id.as_u64(), if small { SMALL } else { 0 }),
        }
    }

    #[inline]
    pub(crate) fn pool(&self) -> &Arc<Shared> {
        &self.scope.pool
    }

    /// The task's id (the one its handle reports).
    pub(crate) fn id(&self) -> TaskId {
        TaskId::from_u64(self.cancel.id())
    }

    /// A panic caught while polling or dropping a unit of this task: reports it to the
    /// pool's panic handler and returns the error the unit resolves to.
    #[cold]
    pub(crate) fn panicked(&self, message: String) -> TaskError {
        self.pool().report_panic(self.id(), &message);
        TaskError::Panicked(message.into())
    }

    /// True once this task, its scope or its whole pool has been cancelled.
    #[inline]
    pub(crate) fn cancel_requested(&self) -> bool {
        self.cancel_probe().requested()
    }

    /// The three flags [`cancel_requested`](Self::cancel_requested) reads, looked up once:
    /// for a loop that checks before each of many items (a batch).
    #[inline]
    pub(crate) fn cancel_probe(&self) -> CancelProbe<'_> {
        CancelProbe {
            task: &self.cancel,
            scope: self.scope.cancelled_flag(),
            pool: self.pool().cancelling_flag(),
        }
    }

    /// The task's cancellation token, a child of its scope's token, made on first use. A
    /// task suspended before it existed is woken, so that it starts waiting on it.
    pub(crate) fn token(&self) -> &CancellationToken {
        if let Some(token) = self.cancel.token_if_made() {
            return token;
        }
        let token = self.cancel.token(|| self.scope.token.child_token());
        self.scope.suspended.wake(&self.cancel);
        token
    }

    /// The token, if the handle (or a timeout) made one.
    #[inline]
    pub(crate) fn token_if_made(&self) -> Option<&CancellationToken> {
        self.cancel.token_if_made()
    }

    /// The suspend side of the cancel handshake ([`cancel`]): registers `waker` with the
    /// scope (which watches its token); the caller then reads the flags.
    pub(crate) fn register_suspended(&self, waker: &std::task::Waker) {
        self.scope.task_suspended(&self.cancel, waker);
    }

    /// The task, registered at a suspension, finished.
    pub(crate) fn unregister_suspended(&self) {
        self.scope.suspended.unregister(&self.cancel);
    }

    /// Cancels this task: the canceller's side of the handshake ([`cancel`]): the flag (and
    /// the token, if made), then a wake-up if the task is suspended.
    pub(crate) fn request_cancel(&self) {
        self.cancel.request(CancellationToken::cancel);
        self.scope.suspended.wake(&self.cancel);
    }

    /// A task that timed out is cancelled like any other: its token is cancelled too, so
    /// work tied to `handle.cancellation_token()` stops with it (as for `cancel()` and
    /// `await_timeout`). Only for whole tasks: a batch item shares its batch's token.
    pub(crate) fn cancel_token_on_timeout(&self) {
        self.token().cancel();
    }

    /// The handle was dropped: the task runs on, detached.
    pub(crate) fn mark_detached(&self) {
        self.cancel.set(DETACHED, Ordering::Relaxed);
    }

    /// Should the allocation of this task, if it finishes in the coming run, be freed by a
    /// spawning thread rather than by the worker (see `scheduler::reclaim`)? A hint: a handle
    /// dropped during the run is simply not seen.
    #[inline]
    pub(crate) fn free_by_spawner(&self) -> bool {
        self.cancel.flags().load(Ordering::Relaxed) & (DETACHED | SMALL) == DETACHED | SMALL
    }

    /// Sets the cancel flag without touching the token (the token already fired).
    pub(crate) fn mark_cancelled(&self) {
        self.cancel.set(CANCEL_REQUESTED, Ordering::SeqCst);
    }

    /// A unit of work of this task finished (life-cycle step 4, after its future was
    /// dropped): count the outcome, then release its admission slot. Called exactly once per
    /// admitted unit that is not a batch item (a batch does both for its items).
    pub(crate) fn unit_finished(&self, outcome: Outcome) {
        let pool = self.pool();
        let worker = pool.counter_row();
        pool.counters.record(worker, outcome);
        pool.admission.release_at(worker, 1);
    }
}

/// The cancellation check, with the flags' addresses resolved: three independent loads and
/// one branch per check. [`TaskMeta::cancel_requested`] builds one per call; a loop over many
/// items (a batch) builds one per poll.
pub(crate) struct CancelProbe<'a> {
    task: &'a CancelState<CancellationToken>,
    scope: &'a std::sync::atomic::AtomicBool,
    pool: &'a std::sync::atomic::AtomicBool,
}

impl CancelProbe<'_> {
    /// True once the task, its scope or its pool has been cancelled.
    #[inline(always)]
    pub(crate) fn requested(&self) -> bool {
        self.task.requested()
            | self.scope.load(Ordering::Acquire)
            | self.pool.load(Ordering::Acquire)
    }
}

/// Builds and schedules a task for `future`. The caller has already taken an admission slot
/// for it; from here on the slot is released by the task itself (life-cycle step 4).
// Inlined with `spawn_task` into the spawn call: left to itself LLVM kept both out of line
// once the block cache's look-up was inlined into them, about 20 instructions per spawn
// (callgrind, benches/NOTES.md).
#[inline(always)]
pub(crate) fn spawn_admitted<F>(scope: &Arc<ScopeShared>, future: F) -> TaskHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let pool = &scope.pool;
    pool.counters.submitted(pool.counter_row());
    // SAFETY: `Guarded` keeps `meta` in a field of its own and never hands it out; it lives
    // exactly as long as the body.
    unsafe { spawn_task(scope, move |meta| Guarded::new(meta, future)) }
}

/// Drops a future that was refused admission, on the caller's thread. A panic in its `Drop`
/// is caught (the panic hook has reported it): the caller gets its refusal, not a panic.
pub(crate) fn drop_refused<F>(future: F) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(future)));
}

/// Finishes a unit that was admitted but whose future could not be built (the user's
/// function panicked): counts it as submitted and failed, releases its slot, and returns a
/// handle resolved to `err`.
pub(crate) fn fail_admitted<T>(scope: &Arc<ScopeShared>, err: TaskError) -> TaskHandle<T> {
    let pool = &scope.pool;
    let worker = pool.counter_row();
    pool.counters.submitted(worker);
    pool.counters
        .record(worker, Outcome::of::<()>(&Err(err.clone())));
    pool.admission.release();
    let handle = TaskHandle::refused(err);
    if let Some(TaskError::Panicked(message)) = handle.refusal() {
        pool.report_panic(handle.id(), message);
    }
    handle
}

/// Builds and schedules a pool task whose body `make_body` builds from the task's metadata.
/// The body is responsible for its units' admission slots; the task only joins the scope.
///
/// # Safety
/// The `&'static TaskMeta` handed to `make_body` really lives only as long as the task's
/// allocation, which outlives the body. The body (and `make_body`) may keep the reference
/// inside the body, but must never copy it anywhere that can outlive the body: not into a
/// `'static` global, another task, a thread, or the task's output.
#[inline(always)]
pub(crate) unsafe fn spawn_task<T, B>(
    scope: &Arc<ScopeShared>,
    make_body: impl FnOnce(&'static TaskMeta) -> B,
) -> TaskHandle<T>
where
    T: Send + 'static,
    B: std::future::Future<Output = Result<T, TaskError>> + Send + 'static,
{
    // Free what finished detached tasks left to this pool's spawners (see `scheduler::reclaim`);
    // `scope` holds the pool.
    scope.pool.sched.reclaim.release();
    scope.task_started();
    let small = std::mem::size_of::<TaskFuture<'static, B>>()
        <= crate::scheduler::reclaim::MAX_DEFERRED_FUTURE;
    let id = TaskId::next();
    let meta = TaskMeta::new(scope.clone(), id, small);
    // SAFETY: `spawn_unchecked` lets the future borrow the task's metadata, which async-task
    // keeps alive and in place for as long as the future exists. We name that borrow
    // `'static`; it is sound because the only code that sees it is the body built here, which
    // keeps it inside itself (this function's `# Safety` contract, upheld by each caller).
    // Every other requirement of the safe `spawn` holds: the future and its output are
    // `Send`, and the schedule function is a plain `fn`, so `Send + Sync + 'static`.
    let (runnable, task) = unsafe {
        raw::Builder::new()
            .metadata(meta)
            .spawn_unchecked::<'static, _, _, _>(
                |meta| TaskFuture::new(meta, make_body(meta)),
                crate::scheduler::schedule,
            )
    };
    scope.pool.sched.schedule_new(runnable, scope.priority());
    #[cfg(feature = "tracing")]
    tracing::trace!(target: "async_rayon", task = id.as_u64(), "task spawned");
    TaskHandle::new(task)
}
#[cfg(test)]
mod tests {
    /// Every byte of `TaskMeta` and `TaskFuture<Guarded<_>>` is in every task's one
    /// allocation: 160 bytes for a trivial future. Keep it from creeping back. The sizes
    /// behind the per-task memory figures (benches/NOTES.md):
    /// `cargo test --lib a_trivial_task -- --nocapture`.
    #[test]
    fn a_trivial_task_stays_small() {
        use std::mem::size_of;
        type Trivial = std::future::Ready<usize>;
        type Body = super::TaskFuture<'static, super::Guarded<'static, Trivial>>;
        type Output = Result<usize, crate::TaskError>;
        let block = super::raw::raw_block_size::<Body, Output, _, super::TaskMeta>(
            &crate::scheduler::schedule,
        );
        for (what, bytes) in [
            (
                "TaskMeta (scope Arc, id, flags, token cell, slab key)",
                size_of::<super::TaskMeta>(),
            ),
            ("TaskFuture<Guarded<Ready<usize>>>", size_of::<Body>()),
            ("Result<usize, TaskError>", size_of::<Output>()),
            (
                "task block, trivial future (header, metadata, future or output)",
                block,
            ),
            ("TaskHandle<u64>", size_of::<super::TaskHandle<u64>>()),
            ("TaskError", size_of::<crate::TaskError>()),
        ] {
            println!("{bytes:4} B  {what}");
        }
        assert!(block <= 160, "a trivial task's block grew to {block} bytes");
        // A handle is kept per live task by most callers (tokio's JoinHandle: 8 bytes).
        assert!(size_of::<super::TaskHandle<u64>>() <= 16);
    }
}
