//! Scheduling: CPU parallelism across workers, stealing, tasks awaiting tasks without
//! deadlock, block_on from plain threads (and its refusal on a worker), stealing turned off.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_rayon::{Config, Scope, TaskError, TaskHandle, ThreadPoolInner};
use common::{iters_for, measure_speedup, skip_without_two_cpus, spin_for, spin_iters, within};

/// Tests in this file that measure CPU time hold this lock so they do not compete for the
/// machine's two cores with each other.
static CPU: Mutex<()> = Mutex::new(());

fn cpu_lock() -> MutexGuard<'static, ()> {
    CPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn pool(threads: usize, stealing: bool) -> Arc<ThreadPoolInner> {
    ThreadPoolInner::with_config(Config {
        num_threads: threads,
        max_pending: None,
        enable_work_stealing: stealing,
        task_timeout: None,
    })
}

/// Each CPU task spins this long's worth of fixed work (calibrated on one core).
const TASK_WORK: Duration = Duration::from_millis(30);
/// Speed-up measurements tried at least before a parallelism check fails.
const ATTEMPTS: usize = 5;
/// ... and for how long at least, to wait out other processes' bursts of CPU use.
const PATIENCE: Duration = Duration::from_secs(20);

/// Runs 8 CPU-bound tasks of `iters` fixed steps each, spawned from outside the pool; returns
/// the wall time and the set of threads that ran them.
fn run_cpu_batch_from_outside(
    pool: &Arc<ThreadPoolInner>,
    iters: u64,
) -> (Duration, HashSet<String>) {
    let scope = Scope::new(pool.clone());
    let t = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            scope.spawn_with_handle(async move {
                std::hint::black_box(spin_iters(iters));
                std::thread::current().name().unwrap_or("").to_string()
            })
        })
        .collect();
    let names = pool
        .block_on(scope.join_handles(handles))
        .into_iter()
        .map(|r| r.expect("cpu task ok"))
        .collect();
    (t.elapsed(), names)
}

/// Runs 8 CPU-bound tasks of `iters` fixed steps each, spawned from inside one task (so onto
/// one worker's queue); returns the wall time and the set of threads that ran them.
fn run_cpu_batch_from_a_worker(
    pool: &Arc<ThreadPoolInner>,
    iters: u64,
) -> (Duration, HashSet<String>) {
    let scope = Arc::new(Scope::new(pool.clone()));
    let inner_scope = scope.clone();
    let parent = scope.spawn_with_handle(async move {
        let t = Instant::now();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                inner_scope.spawn_with_handle(async move {
                    std::hint::black_box(spin_iters(iters));
                    std::thread::current().name().unwrap_or("").to_string()
                })
            })
            .collect();
        let names: HashSet<String> = inner_scope
            .join_handles(handles)
            .await
            .into_iter()
            .map(|r| r.expect("cpu task ok"))
            .collect();
        (t.elapsed(), names)
    });
    pool.block_on(parent).expect("parent task ok")
}

/// The batch `run` makes (8 fixed-work CPU tasks) finishes at least 1.5x faster on a 2-worker
/// pool than on a 1-worker pool, and both workers run some of it. `slow` and `one_worker` are
/// the failure messages for a missing speed-up and for a batch never spread over both.
fn assert_batch_uses_both_workers(
    name: &str,
    run: fn(&Arc<ThreadPoolInner>, u64) -> (Duration, HashSet<String>),
    slow: &str,
    one_worker: &str,
) {
    if skip_without_two_cpus(name) {
        return;
    }
    let _cpu = cpu_lock();
    let iters = iters_for(TASK_WORK);
    let pools = [pool(1, true), pool(2, true)];
    let mut both_workers_ran = false;
    let speedup = measure_speedup(ATTEMPTS, PATIENCE, |threads| {
        let (took, names) = run(&pools[threads - 1], iters);
        if threads == 2 && names.len() == 2 {
            both_workers_ran = true;
        }
        took
    });
    if let Err(e) = speedup {
        panic!("{slow}: {e}");
    }
    assert!(both_workers_ran, "{one_worker}");
}

/// 8 CPU tasks spawned from outside run in parallel: the same fixed work finishes at least
/// 1.5x faster on 2 workers than on 1, and both workers run some of it.
#[test]
fn cpu_tasks_run_in_parallel_on_all_workers() {
    assert_batch_uses_both_workers(
        "cpu_tasks_run_in_parallel_on_all_workers",
        run_cpu_batch_from_outside,
        "8 CPU tasks from outside did not run in parallel",
        "a 2-thread pool never ran the batch on both workers",
    );
}

/// CPU tasks spawned from inside a task (onto one worker) are stolen by the other worker: the
/// batch finishes at least 1.5x faster on 2 workers than on 1, run by both.
#[test]
fn cpu_tasks_spawned_from_a_worker_are_stolen() {
    assert_batch_uses_both_workers(
        "cpu_tasks_spawned_from_a_worker_are_stolen",
        run_cpu_batch_from_a_worker,
        "tasks spawned on one worker were not spread over both",
        "no task spawned on one worker was ever stolen by the other",
    );
}

/// A task that blocks its worker does not starve a task it spawned: an idle peer steals it.
#[test]
fn spawned_task_is_stolen_while_its_spawner_blocks() {
    let _cpu = cpu_lock();
    let pool = pool(2, true);
    let scope = Arc::new(Scope::new(pool.clone()));
    let inner_scope = scope.clone();
    let parent = scope.spawn_with_handle(async move {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let child = inner_scope.spawn_with_handle(async move {
            f.store(true, Ordering::SeqCst);
        });
        // Block this worker (never yield) until the child has run elsewhere, or give up.
        let end = Instant::now() + Duration::from_secs(2);
        while !flag.load(Ordering::SeqCst) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        let seen = flag.load(Ordering::SeqCst);
        (seen, child.await)
    });
    assert_eq!(
        pool.block_on(parent),
        Ok((true, Ok(()))),
        "a task spawned from a blocked worker was not run by the idle worker"
    );
}

/// A task awaiting another task's handle does not deadlock with num_threads = 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awaiting_another_task_does_not_deadlock_on_one_thread() {
    let pool = pool(1, true);
    let scope = Arc::new(Scope::new(pool.clone()));

    // Parent spawns its child from inside and awaits it.
    let s = scope.clone();
    let parent = scope.spawn_with_handle(async move {
        let child = s.spawn_with_handle(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            20
        });
        child.await.expect("child ok") + 1
    });
    let res = within(2, "parent awaiting child deadlocked", parent).await;
    assert_eq!(res, Ok(21));

    // The waiter is spawned first and gets the handle of a task spawned after it.
    let (tx, rx) = tokio::sync::oneshot::channel::<TaskHandle<u32>>();
    let waiter = scope.spawn_with_handle(async move {
        let h = rx.await.expect("handle sent");
        h.await.expect("later task ok") * 2
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let later = scope.spawn_with_handle(async { 4u32 });
    tx.send(later).expect("waiter alive");
    let res = within(2, "waiter deadlocked", waiter).await;
    assert_eq!(res, Ok(8));

    // A chain: each task awaits the previous one.
    let mut prev: Option<TaskHandle<u64>> = None;
    for i in 0..20u64 {
        let p = prev.take();
        prev = Some(scope.spawn_with_handle(async move {
            match p {
                Some(h) => h.await.expect("previous link ok") + i,
                None => i,
            }
        }));
    }
    let last = prev.expect("chain built");
    let res = within(2, "chain deadlocked", last).await;
    assert_eq!(res, Ok((0..20u64).sum()));
}

/// Awaiting, from a task, a handle of a task that is queued behind it on the same single worker works.
#[test]
fn one_thread_pool_parent_waits_for_queued_children_via_block_on() {
    let pool = pool(1, false);
    let scope = Arc::new(Scope::new(pool.clone()));
    let s = scope.clone();
    let parent = scope.spawn_with_handle(async move {
        let children: Vec<_> = (0..10u32)
            .map(|i| s.spawn_with_handle(async move { i }))
            .collect();
        s.join_handles(children)
            .await
            .into_iter()
            .map(|r| r.expect("child ok"))
            .sum::<u32>()
    });
    let res = pool.block_on(async { within(2, "parent deadlocked", parent).await });
    assert_eq!(res, Ok(45));
}

/// block_on from a plain OS thread works, with tokio timers available inside.
#[test]
fn block_on_from_plain_threads() {
    let pool = pool(2, true);
    let threads: Vec<_> = (0..3u64)
        .map(|i| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let scope = Scope::new(pool.clone());
                pool.block_on(async move {
                    let t = Instant::now();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    assert!(t.elapsed() >= Duration::from_millis(15));
                    let timed_out = tokio::time::timeout(
                        Duration::from_millis(5),
                        std::future::pending::<()>(),
                    )
                    .await
                    .is_err();
                    assert!(timed_out);
                    let h = scope.spawn_with_handle(async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        i * 10
                    });
                    h.await.expect("task ok")
                })
            })
        })
        .collect();
    let mut results: Vec<u64> = threads
        .into_iter()
        .map(|t| t.join().expect("block_on thread did not panic"))
        .collect();
    results.sort();
    assert_eq!(results, vec![0, 10, 20]);
}

/// block_on from a plain thread also works for a pool built inside a tokio runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_on_from_plain_thread_with_pool_from_runtime() {
    let pool = pool(2, true);
    let p = pool.clone();
    let value = tokio::task::spawn_blocking(move || {
        p.block_on(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            3
        })
    })
    .await
    .expect("blocking thread joined");
    assert_eq!(value, 3);
    let p = pool.clone();
    let value = std::thread::spawn(move || {
        let scope = Scope::new(p.clone());
        p.block_on(scope.spawn_with_handle(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            4
        }))
    })
    .join()
    .expect("plain thread joined");
    assert_eq!(value, Ok(4));
}

/// block_on called from inside one of the pool's tasks panics (seen as Err(Panicked)), and
/// the worker carries on.
#[test]
fn block_on_inside_a_pool_task_panics() {
    let pool = pool(1, true);
    let scope = Scope::new(pool.clone());
    let p = pool.clone();
    let h = scope.spawn_with_handle(async move { p.block_on(async { 1 }) });
    match pool.block_on(h) {
        Err(TaskError::Panicked(msg)) => {
            assert!(
                msg.contains("block_on"),
                "the panic message does not say block_on was misused: {msg:?}"
            );
        }
        other => panic!("expected Err(Panicked) from block_on on a worker, got {other:?}"),
    }
    assert_eq!(pool.block_on(scope.spawn_with_handle(async { 2 })), Ok(2));
}

/// With enable_work_stealing = false every task still completes (spawned from outside,
/// from inside, woken by timers and by other tasks).
#[test]
fn without_work_stealing_everything_completes() {
    let _cpu = cpu_lock();
    let pool = pool(2, false);
    let scope = Arc::new(Scope::new(pool.clone()));
    let done = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..200u64 {
        let s = scope.clone();
        let d = done.clone();
        handles.push(scope.spawn_with_handle(async move {
            let mut v = i;
            if i.is_multiple_of(3) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if i.is_multiple_of(5) {
                tokio::task::yield_now().await;
            }
            if i.is_multiple_of(7) {
                v += s
                    .spawn_with_handle(async move { i })
                    .await
                    .expect("nested task ok");
                v -= i;
            }
            if i.is_multiple_of(11) {
                spin_for(Duration::from_millis(2));
            }
            d.fetch_add(1, Ordering::SeqCst);
            v
        }));
    }
    let results = pool.block_on(async {
        within(
            5,
            "all tasks finished without stealing",
            scope.join_handles(handles),
        )
        .await
    });
    assert_eq!(results, (0..200u64).map(Ok).collect::<Vec<_>>());
    assert_eq!(done.load(Ordering::SeqCst), 200);
    // CPU-bound work from outside still completes on a pool without stealing, and is run by
    // the pool's own workers (not inline on the thread calling block_on).
    let (took, names) = run_cpu_batch_from_outside(&pool, iters_for(Duration::from_millis(5)));
    assert!(took < Duration::from_secs(2), "cpu batch took {took:?}");
    let workers: HashSet<String> = (0..2).map(|i| format!("{}-{i}", pool.name())).collect();
    assert!(
        names.is_subset(&workers),
        "cpu tasks ran on {names:?}, not only on the pool's workers {workers:?}"
    );
}
