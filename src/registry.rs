//! The pool's shared state and how it is brought up.
//!
//! [`Shared`] is what tasks, workers and scopes reference: the scheduler, the admission word,
//! the counters, the pool's cancellation token and the tokio runtime handle. [`start`] builds
//! it, picks the runtime (the one current at build time, else a small one of the pool's own on
//! an `{prefix}-io` thread) and starts the worker threads with their hooks. The user-facing
//! handle, its entry points and the shutdown protocol are in `pool.rs`, which is the only
//! module that calls [`start`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::config::{PanicHandler, PoolBuilder, ThreadHook};
use crate::error::ConfigError;
use crate::metrics::{Counters, Latency, PoolMetrics};
use crate::scheduler::{self, Scheduler};

/// Pool state that tasks and workers reference. The user-facing
/// [`ThreadPoolInner`](crate::ThreadPoolInner) owns the threads; this half can outlive it
/// while detached tasks finish.
pub(crate) struct Shared {
    pub(crate) sched: Scheduler,
    pub(crate) admission: Admission,
    pub(crate) counters: Counters,
    /// Parent of every scope's token.
    pub(crate) token: CancellationToken,
    cancelling: AtomicBool,
    pub(crate) rt: Handle,
    pub(crate) task_timeout: Option<Duration>,
    max_pending: Option<usize>,
    panic_handler: Option<PanicHandler>,
    /// `(min, max)` of [`PoolBuilder::autoscale`], if set: `resize` stays within it.
    pub(crate) autoscale: Option<crate::sizing::Autoscale>,
    pub(crate) threads: Threads,
}

impl Shared {
    /// A task's future panicked: tell the user's handler (and, with `tracing`, log it).
    #[cold]
    pub(crate) fn report_panic(&self, id: crate::TaskId, message: &str) {
        #[cfg(feature = "tracing")]
        tracing::warn!(target: "async_rayon", task = id.as_u64(), "task panicked: {message}");
        if let Some(handler) = &self.panic_handler {
            let _ = catch_unwind(AssertUnwindSafe(|| handler(id, message)));
        }
    }

    /// True once shutdown ran out of time or the pool was dropped: every task is cancelled.
    #[inline]
    pub(crate) fn is_cancelling(&self) -> bool {
        self.cancelling.load(Ordering::Acquire)
    }

    /// The flag behind [`is_cancelling`](Self::is_cancelling).
    #[inline]
    pub(crate) fn cancelling_flag(&self) -> &AtomicBool {
        &self.cancelling
    }

    /// The row of `counters` the calling thread writes: its own row if it is one of this
    /// pool's workers, else the row shared by other threads (`metrics.rs`). The one place
    /// that picks a row, so the task and scope code do not reach into the scheduler for it.
    #[inline]
    pub(crate) fn counter_row(self: &Arc<Self>) -> Option<usize> {
        scheduler::current_worker_index(self)
    }

    /// The figures of [`ThreadPoolInner::metrics_fast`](crate::ThreadPoolInner::metrics_fast).
    pub(crate) fn metrics(&self) -> PoolMetrics {
        self.metrics_with_latency().0
    }

    /// [`metrics`](Self::metrics) with the latency histograms behind its percentiles.
    pub(crate) fn metrics_with_latency(&self) -> (PoolMetrics, Latency) {
        let (snapshot, latency) = self
            .counters
            .snapshot_with_latency(self.sched.slots_ever_used());
        let metrics = PoolMetrics::from_snapshot(
            &snapshot,
            self.sched.idle.live(),
            self.max_pending,
            self.admission.pending(),
            self.sched.queued(),
        );
        (metrics, latency)
    }

    /// Callers queued in `reserve()`, bulk calls or streams for admission slots.
    pub(crate) fn reserve_waiters(&self) -> usize {
        self.admission.waiters()
    }

    /// Step 3 of the shutdown protocol (`pool.rs`).
    pub(crate) fn cancel_all(&self) {
        self.cancelling.store(true, Ordering::SeqCst);
        self.token.cancel();
    }
}

/// The pool's own current-thread tokio runtime, driven by one thread, for pools built
/// outside any runtime.
pub(crate) struct IoThread {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl IoThread {
    fn start(prefix: &str) -> Result<(Handle, IoThread), ConfigError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ConfigError::Runtime)?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name(format!("{prefix}-io"))
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
                rt.shutdown_background();
            })
            .map_err(ConfigError::Runtime)?;
        Ok((handle, IoThread { stop, thread }))
    }

    /// The id of the thread that drives the runtime.
    pub(crate) fn thread_id(&self) -> ThreadId {
        self.thread.thread().id()
    }

    /// Stops the runtime; joins its thread unless called on it.
    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.thread().id() != thread::current().id() {
            let _ = self.thread.join();
        }
    }
}

/// What [`start`] brings up, for `pool.rs` to own.
pub(crate) struct Started {
    pub(crate) shared: Arc<Shared>,
    pub(crate) io: Option<IoThread>,
}

/// The pool's worker threads: how to start one, and every one started.
///
/// # Size protocol
/// The lock over [`ThreadList`] orders every change of size (build, `resize`, the
/// autoscaler) against shutdown, which sets `closed` under it before it counts the threads
/// to wait for: no thread starts after that count. With the lock held, the size asked for is
/// `target`, and `target == live - surplus - retiring`, where `live` (`Idle::live`) counts
/// threads started and not yet retired, `surplus` the retirement requests no worker has
/// taken yet, and `retiring` the workers that took one and are still handing their tasks
/// over (they leave `live` when done). Growing first withdraws untaken requests and starts
/// threads for the rest, so the threads holding or waiting for a slot never outnumber
/// `max(target, previous count) <= capacity`: a new thread always finds a slot, at worst
/// after a retiring thread returns the one it holds.
pub(crate) struct Threads {
    prefix: String,
    stack_size: Option<usize>,
    on_start: Option<ThreadHook>,
    on_stop: Option<ThreadHook>,
    list: Mutex<ThreadList>,
}

pub(crate) struct ThreadList {
    /// Every thread started whose handle is still kept (a resize lets go of the handles of
    /// retired threads that have ended; shutdown joins the rest).
    pub(crate) handles: Vec<JoinHandle<()>>,
    /// Threads ever started; each one counts once in `Scheduler::num_exited` when it ends.
    pub(crate) started: usize,
    /// The size asked for.
    pub(crate) target: usize,
    /// Set by shutdown and drop: the size no longer changes.
    pub(crate) closed: bool,
}

impl Threads {
    /// The list, under the size lock.
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, ThreadList> {
        self.list.lock()
    }

    /// Starts one worker thread, counted live before it starts (so `num_threads()` includes
    /// it once this returns). The caller holds the size lock.
    pub(crate) fn start_one(
        &self,
        shared: &Arc<Shared>,
        list: &mut ThreadList,
    ) -> Result<(), ConfigError> {
        let index = list.started;
        let mut builder = thread::Builder::new().name(format!("{}-{index}", self.prefix));
        if let Some(bytes) = self.stack_size {
            builder = builder.stack_size(bytes);
        }
        let (on_start, on_stop) = (self.on_start.clone(), self.on_stop.clone());
        let pool = shared.clone();
        shared.sched.idle.worker_started();
        let spawned = builder.spawn(move || {
            let _enter = pool.rt.enter();
            run_hook("on_thread_start", on_start.as_ref());
            scheduler::run_worker(pool.clone());
            run_hook("on_thread_stop", on_stop.as_ref());
            pool.sched.worker_exited();
        });
        match spawned {
            Ok(handle) => {
                list.handles.push(handle);
                list.started += 1;
                Ok(())
            }
            Err(source) => {
                shared.sched.idle.worker_retired();
                Err(ConfigError::ThreadSpawn { index, source })
            }
        }
    }
}

/// Builds the shared state and starts the worker threads (and, outside any tokio runtime,
/// the pool's own runtime thread). If a worker thread cannot be started, stops what was
/// started and reports which.
pub(crate) fn start(b: &PoolBuilder) -> Result<Started, ConfigError> {
    let config = &b.config;
    let prefix = b.thread_name.clone().unwrap_or_else(|| b.name.clone());
    // The runtime given to the builder, else the one current now, else one of our own.
    let runtime = b.runtime.clone().or_else(|| Handle::try_current().ok());
    let (rt, io) = match runtime {
        Some(handle) => (handle, None),
        None => {
            let (handle, io) = IoThread::start(&prefix)?;
            (handle, Some(io))
        }
    };
    let initial = b.initial_threads();
    let capacity = b.capacity();
    let shared = Arc::new(Shared {
        sched: Scheduler::new(capacity, config.enable_work_stealing),
        // The same worker rows as the counters: a worker gives slots back on its own line.
        admission: Admission::new(config.max_pending, capacity),
        counters: Counters::new(capacity),
        token: CancellationToken::new(),
        cancelling: AtomicBool::new(false),
        rt,
        task_timeout: config.task_timeout,
        max_pending: config.max_pending,
        panic_handler: b.panic_handler.clone(),
        autoscale: b.autoscale_settings(),
        threads: Threads {
            prefix,
            stack_size: b.stack_size,
            on_start: b.on_thread_start.clone(),
            on_stop: b.on_thread_stop.clone(),
            list: Mutex::new(ThreadList {
                handles: Vec::with_capacity(initial),
                started: 0,
                target: initial,
                closed: false,
            }),
        },
    });
    let mut list = shared.threads.lock();
    for _ in 0..initial {
        if let Err(e) = shared.threads.start_one(&shared, &mut list) {
            list.closed = true;
            let handles = std::mem::take(&mut list.handles);
            drop(list);
            shared.admission.close();
            shared.cancel_all();
            shared.sched.terminate();
            for w in handles {
                let _ = w.join();
            }
            if let Some(io) = io {
                io.stop();
            }
            return Err(e);
        }
    }
    drop(list);
    Ok(Started { shared, io })
}

/// Runs a user hook; a panic in it does not take the worker down (Rust's panic hook has
/// printed it; with `tracing` it is also an `error` event).
fn run_hook(which: &str, hook: Option<&ThreadHook>) {
    if let Some(hook) = hook
        && let Err(p) = catch_unwind(AssertUnwindSafe(|| hook()))
    {
        #[cfg(feature = "tracing")]
        tracing::error!(
            target: "async_rayon",
            thread = thread::current().name().unwrap_or("?"),
            "{which} hook panicked: {}",
            crate::unwind::panic_message(&*p)
        );
        #[cfg(not(feature = "tracing"))]
        let _ = (which, p);
    }
}
