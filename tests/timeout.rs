//! The pool's `task_timeout`: measured from a task's first poll to its end; past it the task is
//! cancelled and yields Err(TimedOut).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_rayon::{Config, Scope, TaskError, ThreadPoolInner};
use common::{
    best_of, drop_flag, drop_time, eventually_async, spawn_detached_forever, start_silent_server,
    within,
};
use tokio::io::AsyncReadExt;

fn pool_with_timeout(threads: usize, timeout: Duration) -> Arc<ThreadPoolInner> {
    ThreadPoolInner::with_config(Config {
        num_threads: threads,
        max_pending: None,
        enable_work_stealing: true,
        task_timeout: Some(timeout),
    })
}

/// A task that runs past task_timeout resolves TimedOut, after its future was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_past_timeout_times_out() {
    let pool = pool_with_timeout(2, Duration::from_millis(100));
    let scope = Scope::new(pool.clone());
    let (guard, dropped) = drop_flag();
    let t = Instant::now();
    let h = scope.spawn_with_handle(async move {
        let _guard = guard;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        "never"
    });
    let res = within(3, "timed-out task", h).await;
    let was_dropped = dropped.load(Ordering::SeqCst);
    let took = t.elapsed();
    assert_eq!(res, Err(TaskError::TimedOut));
    assert!(
        was_dropped,
        "TimedOut reported before the future was dropped"
    );
    assert!(
        took >= Duration::from_millis(90),
        "timed out early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(1000),
        "timed out late: {took:?}"
    );
}

/// A task timed out by task_timeout is cancelled: its cancellation token is cancelled too
/// (as it is for cancel() and await_timeout), so work tied to the token stops with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_task_token_is_cancelled() {
    let pool = pool_with_timeout(2, Duration::from_millis(50));
    let scope = Scope::new(pool.clone());
    let h = scope.spawn_with_handle(std::future::pending::<()>());
    let token = h.cancellation_token();
    assert_eq!(
        within(3, "timed-out task", h).await,
        Err(TaskError::TimedOut)
    );
    assert!(
        token.is_cancelled(),
        "task_timeout ended the task but left its cancellation token uncancelled"
    );
}

/// Tasks that finish within task_timeout return their values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_within_timeout_succeeds() {
    let pool = pool_with_timeout(2, Duration::from_millis(500));
    let scope = Scope::new(pool.clone());
    let handles: Vec<_> = (0..20u64)
        .map(|i| {
            scope.spawn_with_handle(async move {
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                i
            })
        })
        .collect();
    let results = within(3, "quick tasks", scope.join_handles(handles)).await;
    assert_eq!(results, (0..20u64).map(Ok).collect::<Vec<_>>());
}

/// Queue time does not count: with one thread busy on a long blocking task, a queued short
/// task still succeeds even though its total time since spawn exceeds the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_time_does_not_count() {
    let timeout = Duration::from_millis(500);
    let pool = pool_with_timeout(1, timeout);
    let scope = Scope::new(pool.clone());
    let blocking = Arc::new(AtomicBool::new(false));
    let b = blocking.clone();
    let blocker = scope.spawn_with_handle(async move {
        b.store(true, Ordering::SeqCst);
        // Blocks the only worker for less than the timeout.
        std::thread::sleep(Duration::from_millis(400));
    });
    assert!(
        eventually_async(Duration::from_secs(2), || blocking.load(Ordering::SeqCst)).await,
        "blocker never started"
    );
    let spawned_at = Instant::now();
    let queued = scope.spawn_with_handle(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        "queued task ok"
    });
    let res = within(3, "queued task", queued).await;
    let total = spawned_at.elapsed();
    assert_eq!(
        res,
        Ok("queued task ok"),
        "queued task timed out after {total:?} in all; its time in the queue was counted"
    );
    // Make sure the scenario really exceeded the timeout counted from spawn.
    assert!(
        total > timeout,
        "test scenario too fast to be meaningful: {total:?}"
    );
    let _ = within(3, "blocker", blocker).await;
}

/// task_timeout cancels a task stuck on a TCP read that never arrives, and closes its socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_on_stuck_tcp_read() {
    let (addr, mut closed) = start_silent_server().await;
    let pool = pool_with_timeout(2, Duration::from_millis(150));
    let scope = Scope::new(pool.clone());
    let t = Instant::now();
    let h = scope.spawn_with_handle(async move {
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut buf = [0u8; 8];
        conn.read(&mut buf).await.expect("read")
    });
    assert_eq!(within(3, "stuck reader", h).await, Err(TaskError::TimedOut));
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "took {:?}",
        t.elapsed()
    );
    within(2, "server sees the connection closed", closed.recv())
        .await
        .expect("silent server alive");
}

/// The timeout also applies to detached tasks and to tasks whose handle is awaited later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_applies_without_anyone_awaiting() {
    let pool = pool_with_timeout(2, Duration::from_millis(100));
    let scope = Scope::new(pool.clone());
    let dropped = spawn_detached_forever(&scope);
    let h = scope.spawn_with_handle(std::future::pending::<()>());
    assert!(
        eventually_async(Duration::from_secs(2), || dropped.load(Ordering::SeqCst)).await,
        "detached task was not timed out"
    );
    assert!(eventually_async(Duration::from_secs(2), || h.is_finished()).await);
    assert_eq!(h.await, Err(TaskError::TimedOut));
    within(2, "scope.wait", scope.wait()).await;
}

/// A builder-configured task_timeout behaves the same, from a plain thread with block_on.
#[test]
fn builder_task_timeout_with_block_on() {
    let pool = ThreadPoolInner::builder()
        .num_threads(1)
        .task_timeout(Duration::from_millis(50))
        .build()
        .expect("valid configuration");
    let scope = Scope::new(pool.clone());
    let slow = scope.spawn_with_handle(async {
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let fast = scope.spawn_with_handle(async { 3 });
    let t = Instant::now();
    assert_eq!(pool.block_on(slow), Err(TaskError::TimedOut));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(pool.block_on(fast), Ok(3));
}

/// How late `task_timeout` may take effect (from the deadline to the handle resolving, the
/// future dropped before), in the best of [`TRIES`]. Measured on a 2-core machine, debug build
/// (`ASYNC_RAYON_TIMING_SAMPLES=50 cargo test --test timeout -- --nocapture promptly`), three
/// runs of 50: p50 1.3 ms, p99 1.5 to 9.5 ms (the pool's tokio timer, 1 ms resolution, waking
/// the task); with both cores saturated by two busy loops: p50 6 ms, p90 24 ms, p99 46 ms,
/// which the best of 5 still keeps far below the bound.
const TIMEOUT_LATENESS: Duration = Duration::from_millis(20);
const TRIES: usize = 5;

/// Timing checks in this file run one at a time, so they do not compete for the two cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// task_timeout takes effect promptly: the handle resolves TimedOut (future dropped first)
/// within TIMEOUT_LATENESS of the deadline (first poll + task_timeout), in the best of TRIES.
#[test]
fn task_timeout_takes_effect_promptly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let limit = Duration::from_millis(30);
    let pool = pool_with_timeout(2, limit);
    let scope = Scope::new(pool.clone());
    best_of("task_timeout lateness", TRIES, TIMEOUT_LATENESS, || {
        let first_poll = Arc::new(OnceLock::new());
        let (guard, dropped_at) = drop_time();
        let fp = first_poll.clone();
        let h = scope.spawn_with_handle(async move {
            let _guard = guard;
            let _ = fp.set(Instant::now());
            std::future::pending::<()>().await;
        });
        let res = pool.block_on(h);
        let resolved = Instant::now();
        assert_eq!(res, Err(TaskError::TimedOut));
        let deadline = *first_poll.get().expect("task was polled") + limit;
        let dropped = *dropped_at
            .get()
            .expect("TimedOut reported before the future was dropped");
        assert!(
            dropped + Duration::from_millis(1) >= deadline,
            "timed out {:?} early",
            deadline - dropped
        );
        resolved.saturating_duration_since(deadline)
    });
}
