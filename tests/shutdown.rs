//! Shutdown: graceful (waits for every admitted task), bounded (cancels what is left at the
//! deadline, returns on time even with a blocked thread), thread hooks, and dropping the pool.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_rayon::{Scope, TaskError, ThreadPoolInner};
use common::{
    SHUTDOWN_SLACK, best_of_async, drop_flag, eventually, eventually_async, pool,
    spawn_detached_forever, thread_count, within,
};

/// shutdown() waits for every admitted task, detached ones included, to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_all_admitted_tasks() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let done = Arc::new(AtomicUsize::new(0));
    let mut kept = Vec::new();
    for i in 0..20u64 {
        let d = done.clone();
        let h = scope.spawn_with_handle(async move {
            tokio::time::sleep(Duration::from_millis(50 + 5 * i)).await;
            d.fetch_add(1, Ordering::SeqCst);
            i
        });
        if i.is_multiple_of(2) {
            kept.push(h);
        } else {
            drop(h); // detached: shutdown still waits for it
        }
    }
    within(5, "shutdown", pool.shutdown()).await;
    assert_eq!(
        done.load(Ordering::SeqCst),
        20,
        "shutdown returned before all tasks finished"
    );
    let results = scope.join_handles(kept).await;
    assert_eq!(results, (0..20u64).step_by(2).map(Ok).collect::<Vec<_>>());
}

/// shutdown() works from a sync main through block_on, and returns once tasks finish.
#[test]
fn shutdown_through_block_on() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let h = scope.spawn_with_handle(async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        4
    });
    let t = Instant::now();
    pool.block_on(pool.shutdown());
    assert!(
        t.elapsed() >= Duration::from_millis(20),
        "shutdown did not wait"
    );
    assert!(h.is_finished());
    assert_eq!(pool.block_on(h), Ok(4));
}

/// shutdown_timeout returns true when every task finishes in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_true_when_all_finish() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let hs: Vec<_> = (0..10u32)
        .map(|i| {
            scope.spawn_with_handle(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                i
            })
        })
        .collect();
    let all = within(
        5,
        "shutdown_timeout",
        pool.shutdown_timeout(Duration::from_secs(3)),
    )
    .await;
    assert!(all, "shutdown_timeout reported unfinished tasks");
    assert_eq!(
        scope.join_handles(hs).await,
        (0..10u32).map(Ok).collect::<Vec<_>>()
    );
}

/// Tries per shutdown timing check: the bound must hold in the best of them (see
/// `common::best_of`).
const TRIES: usize = 5;

/// The shutdown timing checks in this file run one at a time, so they do not compete for the
/// two cores. (A tokio mutex: it is held across awaits, and works across the tests' runtimes.)
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// shutdown_timeout returns false at the deadline, and within `d + SHUTDOWN_SLACK` (best of
/// TRIES); what was left resolves Cancelled (future dropped) while tasks that finished in time
/// keep their values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_cancels_what_is_left() {
    let _serial = SERIAL.lock().await;
    let d = Duration::from_millis(200);
    best_of_async(
        "shutdown_timeout(200 ms) lateness",
        TRIES,
        SHUTDOWN_SLACK,
        || async {
            let pool = pool(2);
            let scope = Scope::new(pool.clone());
            let quick = scope.spawn_with_handle(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                "quick"
            });
            let mut stuck = Vec::new();
            let mut flags = Vec::new();
            for _ in 0..5 {
                let (guard, flag) = drop_flag();
                flags.push(flag);
                stuck.push(scope.spawn_with_handle(async move {
                    let _guard = guard;
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }));
            }
            let det_flag = spawn_detached_forever(&scope);
            let t = Instant::now();
            let all = within(3, "shutdown_timeout", pool.shutdown_timeout(d)).await;
            let took = t.elapsed();
            assert!(!all, "shutdown_timeout returned true with stuck tasks");
            assert!(
                took >= d - Duration::from_millis(20),
                "returned before the deadline: {took:?}"
            );
            assert_eq!(within(1, "quick", quick).await, Ok("quick"));
            for h in stuck {
                assert_eq!(within(1, "stuck task", h).await, Err(TaskError::Cancelled));
            }
            for f in &flags {
                assert!(
                    f.load(Ordering::SeqCst),
                    "cancelled task's future was not dropped"
                );
            }
            assert!(
                eventually_async(Duration::from_secs(1), || det_flag.load(Ordering::SeqCst)).await,
                "detached stuck task not dropped by shutdown"
            );
            took.saturating_sub(d)
        },
    )
    .await;
}

/// Spawns a task that blocks its worker thread for `d` without yielding; the flag is set
/// once it has started.
fn spawn_blocker(scope: &Scope, d: Duration) -> (async_rayon::TaskHandle<()>, Arc<AtomicBool>) {
    let started = Arc::new(AtomicBool::new(false));
    let flag = started.clone();
    let handle = scope.spawn_with_handle(async move {
        flag.store(true, Ordering::SeqCst);
        std::thread::sleep(d);
    });
    (handle, started)
}

/// shutdown_timeout(d) returns within `d + SHUTDOWN_SLACK` (best of TRIES) even if a task
/// blocks its worker thread and never yields: that worker is detached, not joined, and the
/// stuck task still resolves Ok once its poll returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_returns_on_time_with_a_blocked_thread() {
    let _serial = SERIAL.lock().await;
    let d = Duration::from_millis(100);
    best_of_async(
        "shutdown_timeout(100 ms) with a blocked thread, lateness",
        TRIES,
        SHUTDOWN_SLACK,
        || async {
            let pool = pool(2);
            let scope = Scope::new(pool.clone());
            let (blocker, blocking) = spawn_blocker(&scope, Duration::from_millis(1500));
            let sleeper = scope.spawn_with_handle(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            });
            assert!(
                eventually_async(Duration::from_secs(2), || blocking.load(Ordering::SeqCst)).await,
                "blocker never started"
            );
            let t = Instant::now();
            let all = within(3, "shutdown_timeout", pool.shutdown_timeout(d)).await;
            let took = t.elapsed();
            assert!(!all);
            assert_eq!(
                within(1, "sleeper", sleeper).await,
                Err(TaskError::Cancelled)
            );
            // Its thread is detached, not joined; the task still ends when its poll returns.
            assert_eq!(
                within(3, "blocker", blocker).await,
                Ok(()),
                "the stuck task ends when its poll returns"
            );
            took.saturating_sub(d)
        },
    )
    .await;
}

/// shutdown_timeout(ZERO) returns within SHUTDOWN_SLACK (best of TRIES), cancelling
/// everything, even with a blocked thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_zero_returns_at_once() {
    let _serial = SERIAL.lock().await;
    best_of_async(
        "shutdown_timeout(0) with a blocked thread, lateness",
        TRIES,
        SHUTDOWN_SLACK,
        || async {
            let pool = pool(2);
            let scope = Scope::new(pool.clone());
            let (blocker, blocking) = spawn_blocker(&scope, Duration::from_millis(1000));
            let stuck: Vec<_> = (0..5)
                .map(|_| scope.spawn_with_handle(std::future::pending::<()>()))
                .collect();
            assert!(
                eventually_async(Duration::from_secs(2), || blocking.load(Ordering::SeqCst)).await
            );
            let t = Instant::now();
            let all = within(
                2,
                "shutdown_timeout(0)",
                pool.shutdown_timeout(Duration::ZERO),
            )
            .await;
            let took = t.elapsed();
            assert!(!all);
            for h in stuck {
                assert_eq!(within(1, "stuck", h).await, Err(TaskError::Cancelled));
            }
            drop(blocker);
            took
        },
    )
    .await;
}

/// When shutdown() returns, on_thread_stop has run on every worker (and on_thread_start had too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_thread_stop_ran_on_every_worker_when_shutdown_returns() {
    let started = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicUsize::new(0));
    let stop_names = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (s1, s2, names) = (started.clone(), stopped.clone(), stop_names.clone());
    let pool = ThreadPoolInner::builder()
        .name("stophook")
        .num_threads(3)
        .on_thread_start(move || {
            s1.fetch_add(1, Ordering::SeqCst);
        })
        .on_thread_stop(move || {
            // A little slow, so a shutdown that does not join the workers would return first.
            std::thread::sleep(Duration::from_millis(30));
            names
                .lock()
                .expect("names lock")
                .push(std::thread::current().name().unwrap_or("").to_string());
            s2.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .expect("valid configuration");
    let scope = Scope::new(pool.clone());
    let hs: Vec<_> = (0..10)
        .map(|_| {
            scope.spawn_with_handle(async { tokio::time::sleep(Duration::from_millis(10)).await })
        })
        .collect();
    let _ = scope.join_handles(hs).await;
    assert_eq!(
        stopped.load(Ordering::SeqCst),
        0,
        "on_thread_stop ran before shutdown"
    );
    within(5, "shutdown", pool.shutdown()).await;
    assert_eq!(
        stopped.load(Ordering::SeqCst),
        3,
        "on_thread_stop had not run on every worker"
    );
    assert_eq!(started.load(Ordering::SeqCst), 3);
    let mut names = stop_names.lock().expect("names lock").clone();
    names.sort();
    assert_eq!(names, vec!["stophook-0", "stophook-1", "stophook-2"]);
}

/// Dropping the last Arc of the pool without shutdown cancels what is left and stops the workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_pool_cancels_pending_tasks() {
    let stopped = Arc::new(AtomicUsize::new(0));
    let s = stopped.clone();
    let pool = ThreadPoolInner::builder()
        .num_threads(2)
        .on_thread_stop(move || {
            s.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .expect("valid configuration");
    let scope = Scope::new(pool.clone());
    let (guard, dropped) = drop_flag();
    let h = scope.spawn_with_handle(async move {
        let _guard = guard;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let det_dropped = spawn_detached_forever(&scope);
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The scope holds an Arc of the pool, so the last Arc goes with it.
    drop(pool);
    drop(scope);
    assert_eq!(
        within(2, "task of dropped pool", h).await,
        Err(TaskError::Cancelled)
    );
    assert!(dropped.load(Ordering::SeqCst));
    assert!(
        eventually_async(Duration::from_secs(2), || det_dropped
            .load(Ordering::SeqCst))
        .await,
        "detached task not dropped with the pool"
    );
    assert!(
        eventually_async(Duration::from_secs(2), || stopped.load(Ordering::SeqCst)
            == 2)
        .await,
        "workers did not stop after the pool was dropped"
    );
}

const CYCLES_CHILD_ENV: &str = "ASYNC_RAYON_TEST_CYCLES_CHILD";

/// 100 create/use/drop cycles leave the process thread count flat (run in a child process so
/// other tests' threads do not disturb the count).
#[test]
fn create_drop_cycles_keep_thread_count_flat() {
    common::run_child_test("create_drop_cycles_child", CYCLES_CHILD_ENV);
}

/// Child half of create_drop_cycles_keep_thread_count_flat (ignored unless run by it).
#[test]
#[ignore = "run as a child process by create_drop_cycles_keep_thread_count_flat"]
fn create_drop_cycles_child() {
    if std::env::var_os(CYCLES_CHILD_ENV).is_none() {
        return;
    }
    fn cycle() {
        let pool = pool(2);
        let scope = Scope::new(pool.clone());
        let done = scope.spawn_with_handle(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            1
        });
        // Left pending when the pool is dropped: must be cancelled and freed.
        drop(scope.spawn_with_handle(std::future::pending::<()>()));
        let pending = scope.spawn_with_handle(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        assert_eq!(pool.block_on(done), Ok(1));
        drop(scope);
        drop(pool);
        drop(pending);
    }
    // Warm up once so lazily created process-wide threads (if any) exist before the baseline.
    cycle();
    let settle = Duration::from_secs(3);
    let mut baseline = thread_count();
    eventually(Duration::from_millis(500), || {
        let now = thread_count();
        baseline = baseline.min(now);
        false
    });
    let t = Instant::now();
    for _ in 0..100 {
        cycle();
    }
    let mut last = thread_count();
    let flat = eventually(settle, || {
        last = thread_count();
        last <= baseline + 1
    });
    assert!(
        flat,
        "thread count grew from {baseline} to {last} after 100 create/drop cycles ({:?})",
        t.elapsed()
    );
}
