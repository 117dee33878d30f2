//! Shared set-up for the benchmarks: the peers, built the same way in every bench.
#![allow(dead_code)]

use std::sync::Arc;

/// A 2-worker multi-thread tokio runtime: the `tokio::spawn` peer.
pub fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// async-executor on 2 threads: the smol peer. Dropping the guard stops its threads.
pub struct SmolPool {
    pub ex: Arc<async_executor::Executor<'static>>,
    stop: Option<async_channel_stop::Sender>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// A tiny stop signal for the executor threads.
pub mod async_channel_stop {
    pub type Sender = tokio::sync::watch::Sender<bool>;
}

impl SmolPool {
    pub fn new(threads: usize) -> SmolPool {
        let ex = Arc::new(async_executor::Executor::new());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let threads = (0..threads)
            .map(|_| {
                let (ex, mut rx) = (ex.clone(), rx.clone());
                std::thread::spawn(move || {
                    futures::executor::block_on(ex.run(async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    }))
                })
            })
            .collect();
        drop(rx);
        SmolPool {
            ex,
            stop: Some(tx),
            threads,
        }
    }
}

impl Drop for SmolPool {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The floor of the pool's design, as a reference peer: the same parts (async-task's task,
/// one allocation each; crossbeam's injector; workers that take batches from it and park
/// when it is empty) and nothing else: no admission count, no scope, no counters, no
/// cancellation, no timeout, no block cache. With `shared_counts` > 0, each task also bumps
/// that many shared counters of unfinished tasks at its spawn and its end, as the pool's
/// `max_pending` slot and its scope's live count do.
pub struct MinimalPool {
    shared: Arc<MinimalShared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

pub struct MinimalShared {
    injector: crossbeam_deque::Injector<async_task::Runnable>,
    /// One bit per parked (or parking) worker.
    sleeping: std::sync::atomic::AtomicUsize,
    unparkers: Vec<crossbeam_utils::sync::Unparker>,
    stop: std::sync::atomic::AtomicBool,
    shared_counts: usize,
    counts: [crossbeam_utils::CachePadded<std::sync::atomic::AtomicUsize>; 2],
}

impl MinimalShared {
    /// Wakes one parked worker, if any. A worker sets its bit, then looks at the injector
    /// again before it parks; a push, then this load of the bits: with both sides `SeqCst`,
    /// at least one sees the other, so no push is left with every worker asleep.
    fn notify(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let sleeping = self.sleeping.load(SeqCst);
        if sleeping != 0 {
            let bit = sleeping & sleeping.wrapping_neg();
            if self.sleeping.fetch_and(!bit, SeqCst) & bit != 0 {
                self.unparkers[bit.trailing_zeros() as usize].unpark();
            }
        }
    }

    fn work(&self, index: usize, parker: crossbeam_utils::sync::Parker) {
        use crossbeam_deque::Steal;
        use std::sync::atomic::Ordering::SeqCst;
        let local = crossbeam_deque::Worker::<async_task::Runnable>::new_fifo();
        let bit = 1usize << index;
        loop {
            if let Some(task) = local.pop() {
                task.run();
                continue;
            }
            match self.injector.steal_batch_and_pop(&local) {
                Steal::Success(task) => {
                    // More waiting: hand the search on, as the pool does.
                    if !self.injector.is_empty() {
                        self.notify();
                    }
                    task.run();
                    continue;
                }
                Steal::Retry => continue,
                Steal::Empty => {}
            }
            if self.stop.load(SeqCst) {
                return;
            }
            self.sleeping.fetch_or(bit, SeqCst);
            if !self.injector.is_empty() || self.stop.load(SeqCst) {
                self.sleeping.fetch_and(!bit, SeqCst);
                continue;
            }
            // An unpark that came first makes this return at once.
            parker.park();
            self.sleeping.fetch_and(!bit, SeqCst);
        }
    }
}

impl MinimalPool {
    pub fn new(threads: usize, shared_counts: usize) -> MinimalPool {
        assert!(threads <= usize::BITS as usize && shared_counts <= 2);
        let parkers: Vec<_> = (0..threads)
            .map(|_| crossbeam_utils::sync::Parker::new())
            .collect();
        let shared = Arc::new(MinimalShared {
            injector: crossbeam_deque::Injector::new(),
            sleeping: Default::default(),
            unparkers: parkers.iter().map(|p| p.unparker().clone()).collect(),
            stop: Default::default(),
            shared_counts,
            counts: Default::default(),
        });
        let threads = parkers
            .into_iter()
            .enumerate()
            .map(|(index, parker)| {
                let shared = shared.clone();
                std::thread::spawn(move || shared.work(index, parker))
            })
            .collect();
        MinimalPool { shared, threads }
    }

    pub fn spawn<F>(&self, future: F) -> async_task::Task<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        use std::sync::atomic::Ordering::SeqCst;
        let shared = self.shared.clone();
        for count in &shared.counts[..shared.shared_counts] {
            count.fetch_add(1, SeqCst);
        }
        let counted = shared.clone();
        let future = async move {
            let output = future.await;
            for count in &counted.counts[..counted.shared_counts] {
                count.fetch_sub(1, SeqCst);
            }
            output
        };
        let (runnable, task) = async_task::spawn(future, move |runnable| {
            shared.injector.push(runnable);
            shared.notify();
        });
        runnable.schedule();
        task
    }
}

impl Drop for MinimalPool {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for unparker in &self.shared.unparkers {
            unparker.unpark();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

// The workloads of the rows with targets, shared by the criterion benches and by the
// rotated-order harness (`benches/ratios.rs`), so both measure exactly the same code.

/// Spawns `n` trivial tasks with `tokio::spawn`, then awaits them all.
pub fn tokio_spawn_await(rt: &tokio::runtime::Runtime, n: usize) {
    rt.block_on(async {
        let hs: Vec<_> = (0..n).map(|i| tokio::spawn(async move { i })).collect();
        for h in hs {
            std::hint::black_box(h.await.expect("task"));
        }
    })
}

/// Spawns `n` trivial tasks with `scope.spawn_with_handle`, then awaits them all.
pub fn async_rayon_spawn_await(
    pool: &async_rayon::ThreadPoolInner,
    scope: &async_rayon::Scope,
    n: usize,
) {
    pool.block_on(async {
        let hs: Vec<_> = (0..n)
            .map(|i| scope.spawn_with_handle(async move { i }))
            .collect();
        for h in hs {
            std::hint::black_box(h.await.expect("task"));
        }
    })
}

/// Spawns `n` trivial tasks on the [`MinimalPool`], then awaits them all (from a thread of
/// its own, as `block_on` does for the other two).
pub fn minimal_spawn_await(pool: &MinimalPool, n: usize) {
    futures::executor::block_on(async {
        let hs: Vec<_> = (0..n).map(|i| pool.spawn(async move { i })).collect();
        for h in hs {
            std::hint::black_box(h.await);
        }
    })
}

/// `n` tasks, at most `bound` pending: tokio `JoinSet` + `Semaphore`, a permit taken
/// (`acquire_owned`) before each spawn and finished tasks reaped as it goes.
pub fn joinset_semaphore(rt: &tokio::runtime::Runtime, n: usize, bound: usize) {
    rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(bound));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let permit = sem.clone().acquire_owned().await.expect("open");
            set.spawn(async move {
                let _permit = permit;
                std::hint::black_box(i)
            });
            while let Some(r) = set.try_join_next() {
                std::hint::black_box(r.expect("task"));
            }
        }
        while let Some(r) = set.join_next().await {
            std::hint::black_box(r.expect("task"));
        }
    })
}

/// `n` tasks on a pool whose `max_pending` is the bound: `scope.reserve()` waits for a slot
/// before each spawn. Every task's output is collected, as [`joinset_semaphore`] does (the
/// same work on both sides): handles wait in spawn order and the finished ones at the front
/// are taken as it goes, so about `bound` handles are held at a time.
pub fn async_rayon_reserve(
    pool: &async_rayon::ThreadPoolInner,
    scope: &async_rayon::Scope,
    n: usize,
) {
    use futures::FutureExt;
    pool.block_on(async {
        let mut handles = std::collections::VecDeque::new();
        for i in 0..n {
            let permit = scope.reserve().await.expect("open");
            handles.push_back(permit.spawn_with_handle(async move { std::hint::black_box(i) }));
            while handles.front().is_some_and(|h| h.is_finished()) {
                let done = handles.pop_front().expect("front exists");
                let r = done.now_or_never().expect("a finished handle is ready");
                std::hint::black_box(r.expect("task"));
            }
        }
        for h in handles {
            std::hint::black_box(h.await.expect("task"));
        }
    })
}

/// The per-item work of the map benches.
#[inline]
pub fn work(x: u64) -> u64 {
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

/// rayon `par_iter().map().collect()` into a plain `Vec<u64>`.
pub fn rayon_map(rp: &rayon::ThreadPool, data: &[u64]) -> Vec<u64> {
    use rayon::prelude::*;
    rp.install(|| data.par_iter().map(|&x| work(x)).collect())
}

/// rayon producing the bulk calls' own output type, `Vec<Result<u64, TaskError>>`: what
/// the result type alone costs (16 bytes per item against 8, and a drop that visits each).
pub fn rayon_map_results(
    rp: &rayon::ThreadPool,
    data: &[u64],
) -> Vec<Result<u64, async_rayon::TaskError>> {
    use rayon::prelude::*;
    rp.install(|| data.par_iter().map(|&x| Ok(work(x))).collect())
}

/// rayon over an owned copy of `data` (`into_par_iter`), into the bulk calls' output type:
/// the peer that does what `batch_process` must, which takes its items by value.
pub fn rayon_map_results_owned(
    rp: &rayon::ThreadPool,
    data: &[u64],
) -> Vec<Result<u64, async_rayon::TaskError>> {
    use rayon::prelude::*;
    let owned = data.to_vec();
    rp.install(|| owned.into_par_iter().map(|x| Ok(work(x))).collect())
}

/// `scope.par_map_async` over `data`.
pub fn par_map_async(
    pool: &async_rayon::ThreadPoolInner,
    scope: &async_rayon::Scope,
    data: &[u64],
) -> Vec<Result<u64, async_rayon::TaskError>> {
    pool.block_on(scope.par_map_async(data, |&x| async move { work(x) }))
}

/// `scope.batch_process` over a copy of `data` (it takes its items by value), 4 batches
/// at a time.
pub fn batch_process(
    pool: &async_rayon::ThreadPoolInner,
    scope: &async_rayon::Scope,
    data: &[u64],
) -> Vec<Result<u64, async_rayon::TaskError>> {
    pool.block_on(scope.batch_process(data.to_vec(), 4, |x| async move { work(x) }))
}

/// Items of the CPU-scaling bench.
pub const SCALING_ITEMS: u64 = 2_000;

/// CPU-bound items (20k rounds of `work` each) through `batch_process_with`, 50 per batch,
/// 8 batches at a time: the CPU-scaling bench, run on a 1-thread and a 2-thread pool.
pub fn cpu_bound_batches(
    pool: &async_rayon::ThreadPoolInner,
    scope: &async_rayon::Scope,
) -> Vec<Result<u64, async_rayon::TaskError>> {
    fn spin(x: u64) -> u64 {
        (0..20_000u64).fold(x, |a, k| work(a ^ k))
    }
    pool.block_on(scope.batch_process_with(
        0..SCALING_ITEMS,
        async_rayon::BatchOptions::new(8).batch_size(50),
        |x| async move { spin(x) },
    ))
}

/// The "all controls on" pool of the spawn rows: 2 threads, `max_pending`, a 30 s
/// `task_timeout` (never reached; it is the per-task cost of having one that is measured).
pub fn controlled_pool(max_pending: usize) -> Arc<async_rayon::ThreadPoolInner> {
    async_rayon::ThreadPoolInner::with_config(async_rayon::Config {
        num_threads: 2,
        max_pending: Some(max_pending),
        enable_work_stealing: true,
        task_timeout: Some(std::time::Duration::from_secs(30)),
    })
}
