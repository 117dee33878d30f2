//! Cancellation: per task (cancel, await_timeout, token), of detached tasks, per scope
//! (cancel and drop), at every stage of a task's life.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_rayon::{Scope, TaskError, ThreadPoolInner};
use common::{
    best_of, drop_flag, drop_time, eventually, eventually_async, pool, probed,
    spawn_detached_forever, start_silent_server, within,
};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// A task cancelled before it starts never runs; its future is dropped and it resolves Cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_start_never_runs() {
    let pool = pool(1);
    let scope = Scope::new(pool.clone());
    // Block the only worker until we say so.
    let release = Arc::new(AtomicBool::new(false));
    let blocking = Arc::new(AtomicBool::new(false));
    let (rel, blk) = (release.clone(), blocking.clone());
    let blocker = scope.spawn_with_handle(async move {
        blk.store(true, Ordering::SeqCst);
        let end = Instant::now() + Duration::from_secs(5);
        while !rel.load(Ordering::SeqCst) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    assert!(
        eventually_async(Duration::from_secs(2), || blocking.load(Ordering::SeqCst)).await,
        "blocker never started"
    );

    let (future, probe) = probed(5);
    let target = scope.spawn_with_handle(future);
    target.cancel();
    release.store(true, Ordering::SeqCst);
    assert_eq!(
        within(2, "cancelled queued task", target).await,
        Err(TaskError::Cancelled)
    );
    assert!(probe.dropped(), "future not dropped before handle resolved");
    assert!(!probe.polled(), "cancelled-before-start task ran");
    assert_eq!(within(2, "blocker", blocker).await, Ok(()));
}

/// Cancelling a task suspended on a long sleep resolves Cancelled promptly, after dropping its future.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_suspended_sleep_is_prompt() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let started = Arc::new(AtomicBool::new(false));
    let (guard, dropped) = drop_flag();
    let s = started.clone();
    let h = scope.spawn_with_handle(async move {
        let _guard = guard;
        s.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        "woke up"
    });
    assert!(eventually_async(Duration::from_secs(2), || started.load(Ordering::SeqCst)).await);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!h.is_finished());
    let t = Instant::now();
    h.cancel();
    let res = within(2, "cancelled sleeper", h).await;
    // Checked before anything else can run: the future was dropped before the handle resolved.
    let was_dropped = dropped.load(Ordering::SeqCst);
    let took = t.elapsed();
    assert_eq!(res, Err(TaskError::Cancelled));
    assert!(was_dropped, "handle resolved before the future was dropped");
    assert!(took < Duration::from_millis(500), "cancel took {took:?}");
}

/// Cancelling a task suspended on a TCP read that never arrives resolves Cancelled promptly
/// and closes its socket (the future, and the connection it owns, are dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_suspended_tcp_read_is_prompt() {
    let (addr, mut closed) = start_silent_server().await;
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let connected = Arc::new(AtomicBool::new(false));
    let (guard, dropped) = drop_flag();
    let c = connected.clone();
    let h = scope.spawn_with_handle(async move {
        let _guard = guard;
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.store(true, Ordering::SeqCst);
        let mut buf = [0u8; 16];
        conn.read(&mut buf).await.expect("read")
    });
    assert!(
        eventually_async(Duration::from_secs(2), || connected.load(Ordering::SeqCst)).await,
        "task never connected"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !h.is_finished(),
        "read returned although the server never writes"
    );
    let t = Instant::now();
    h.cancel();
    let res = within(2, "cancelled reader", h).await;
    let was_dropped = dropped.load(Ordering::SeqCst);
    let took = t.elapsed();
    assert_eq!(res, Err(TaskError::Cancelled));
    assert!(was_dropped, "handle resolved before the future was dropped");
    assert!(took < Duration::from_millis(500), "cancel took {took:?}");
    within(2, "server sees the connection closed", closed.recv())
        .await
        .expect("silent server alive");
}

/// A task cancelled in the middle of a (blocking) poll is dropped when that poll returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_poll_takes_effect_when_poll_returns() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let in_poll = Arc::new(AtomicBool::new(false));
    let (guard, dropped) = drop_flag();
    let p = in_poll.clone();
    let h = scope.spawn_with_handle(async move {
        let _guard = guard;
        p.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        std::future::pending::<()>().await;
    });
    assert!(eventually_async(Duration::from_secs(2), || in_poll.load(Ordering::SeqCst)).await);
    h.cancel();
    let res = within(3, "task cancelled mid-poll", h).await;
    assert_eq!(res, Err(TaskError::Cancelled));
    assert!(dropped.load(Ordering::SeqCst));
}

/// Cancelling a task that already finished keeps its value and is not counted as a cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_after_finish_keeps_value() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let h = scope.spawn_with_handle(async { 77 });
    assert!(
        eventually_async(Duration::from_secs(2), || h.is_finished()).await,
        "quick task never finished"
    );
    let cancelled_before = pool.metrics_fast().cancelled;
    h.cancel();
    h.cancel();
    assert_eq!(within(2, "finished task", h).await, Ok(77));
    assert_eq!(
        pool.metrics_fast().cancelled,
        cancelled_before,
        "cancelling a finished task counted it as cancelled"
    );
}

/// Cancelling twice, or cancelling then awaiting later, still resolves exactly once as Cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_is_idempotent() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let h = scope.spawn_with_handle(std::future::pending::<u8>());
    h.cancel();
    h.cancel();
    tokio::time::sleep(Duration::from_millis(20)).await;
    h.cancel();
    assert_eq!(
        within(2, "cancelled task", h).await,
        Err(TaskError::Cancelled)
    );
}

/// await_timeout waits at most d, then cancels the task (future dropped) and yields TimedOut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_timeout_times_out_and_cancels() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let (guard, dropped) = drop_flag();
    let h = scope.spawn_with_handle(async move {
        let _guard = guard;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let token = h.cancellation_token();
    let t = Instant::now();
    let res = within(
        2,
        "await_timeout",
        h.await_timeout(Duration::from_millis(100)),
    )
    .await;
    let took = t.elapsed();
    let was_dropped = dropped.load(Ordering::SeqCst);
    assert_eq!(res, Err(TaskError::TimedOut));
    assert!(
        took >= Duration::from_millis(90),
        "returned early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(800),
        "took {took:?} for a 100ms timeout"
    );
    assert!(
        was_dropped,
        "TimedOut reported before the future was dropped"
    );
    assert!(token.is_cancelled(), "timed-out task's token not cancelled");
}

/// await_timeout returns the value when the task finishes in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_timeout_returns_value_in_time() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let h = scope.spawn_with_handle(async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        "done"
    });
    assert_eq!(h.await_timeout(Duration::from_secs(2)).await, Ok("done"));
}

/// await_timeout also works from a plain thread through the pool's block_on.
#[test]
fn await_timeout_from_block_on() {
    let pool = pool(1);
    let scope = Scope::new(pool.clone());
    let h = scope.spawn_with_handle(std::future::pending::<()>());
    let t = Instant::now();
    let res = pool.block_on(h.await_timeout(Duration::from_millis(50)));
    assert_eq!(res, Err(TaskError::TimedOut));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
}

/// The task's cancellation token is not cancelled while it runs and is cancelled after cancel().
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_token_follows_cancel() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let h = scope.spawn_with_handle(std::future::pending::<()>());
    let token = h.cancellation_token();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!token.is_cancelled());
    h.cancel();
    assert!(
        token.is_cancelled(),
        "token not cancelled right after cancel()"
    );
    within(1, "token.cancelled()", token.cancelled()).await;
    assert_eq!(
        within(2, "cancelled task", h).await,
        Err(TaskError::Cancelled)
    );
}

/// The task token is a child of its scope's: scope.cancel() cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_cancel_cancels_task_tokens() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let h = scope.spawn_with_handle(std::future::pending::<()>());
    let token = h.cancellation_token();
    scope.cancel();
    within(1, "task token cancelled by scope", token.cancelled()).await;
    assert_eq!(within(2, "task", h).await, Err(TaskError::Cancelled));
}

/// Sleeps 100 ms in its Drop before dropping the value it holds.
struct SlowDrop<T>(T);
impl<T> Drop for SlowDrop<T> {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every handle resolves exactly once, to the value or the error; an Err only after the
/// future was dropped.
#[test]
fn p1_each_handle_resolves_once_after_the_future_is_dropped() {
    let pool = ThreadPoolInner::new(2, None);
    let scope = Scope::new(pool.clone());
    assert_eq!(
        pool.block_on(scope.spawn_with_handle(async { "v" })),
        Ok("v")
    );
    // The future's Drop takes 100 ms before it sets the flag: if the Err were reported before
    // (or while) the future is dropped, block_on would return with the flag still unset.
    let (flag, dropped) = drop_flag();
    let h = scope.spawn_with_handle(async move {
        let _flag = SlowDrop(flag);
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    std::thread::sleep(Duration::from_millis(20));
    h.cancel();
    let mut h = h;
    assert_eq!(pool.block_on(&mut h), Err(TaskError::Cancelled));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the future was dropped before the Err was reported"
    );
    assert!(h.is_finished());
}

/// The token is the task's: cancel() cancels the task's token; cancelling the token cancels
/// the task.
#[test]
fn p3_cancellation_token_is_the_tasks() {
    let pool = ThreadPoolInner::new(2, None);
    let scope = Scope::new(pool.clone());
    let h = scope.spawn_with_handle(async { tokio::time::sleep(Duration::from_secs(3600)).await });
    let token = h.cancellation_token();
    assert!(!token.is_cancelled());
    h.cancel();
    assert!(token.is_cancelled());
    assert_eq!(pool.block_on(h), Err(TaskError::Cancelled));

    let h = scope.spawn_with_handle(async { tokio::time::sleep(Duration::from_secs(3600)).await });
    std::thread::sleep(Duration::from_millis(20));
    h.cancellation_token().cancel();
    assert_eq!(pool.block_on(h), Err(TaskError::Cancelled));
}

/// Dropping a handle detaches the task: it keeps running to the end and scope.wait waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_handle_detaches_and_scope_wait_waits() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let d = done.clone();
        let h = scope.spawn_with_handle(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            d.fetch_add(1, Ordering::SeqCst);
        });
        drop(h);
    }
    let t = Instant::now();
    within(3, "scope.wait", scope.wait()).await;
    assert_eq!(
        done.load(Ordering::SeqCst),
        3,
        "wait returned before detached tasks finished"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "wait returned after {:?}",
        t.elapsed()
    );
    // With nothing left, wait returns at once.
    within(1, "idle scope.wait", scope.wait()).await;
}

/// scope.cancel() cancels that scope's tasks (detached ones included) and no others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_cancel_only_affects_its_own_tasks() {
    let pool = pool(2);
    let a = Scope::new(pool.clone());
    let b = Scope::new(pool.clone());
    let mut a_handles = Vec::new();
    let mut a_flags = Vec::new();
    for _ in 0..3 {
        let (guard, flag) = drop_flag();
        a_flags.push(flag);
        a_handles.push(a.spawn_with_handle(async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            1
        }));
    }
    let det_flag = spawn_detached_forever(&a);
    let b_gate = CancellationToken::new();
    let g = b_gate.clone();
    let b_handle = b.spawn_with_handle(async move {
        g.cancelled().await;
        2
    });
    tokio::time::sleep(Duration::from_millis(20)).await;

    a.cancel();
    let t = Instant::now();
    within(2, "scope a wait after cancel", a.wait()).await;
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "wait took {:?}",
        t.elapsed()
    );
    for r in a.join_handles(a_handles).await {
        assert_eq!(r, Err(TaskError::Cancelled));
    }
    for f in &a_flags {
        assert!(f.load(Ordering::SeqCst));
    }
    assert!(
        det_flag.load(Ordering::SeqCst),
        "detached task of the cancelled scope not dropped"
    );

    // Scope b's task is untouched.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !b_handle.is_finished(),
        "task of another scope was cancelled"
    );
    b_gate.cancel();
    assert_eq!(within(2, "scope b task", b_handle).await, Ok(2));
    let c = b.spawn_with_handle(async { 3 });
    assert_eq!(within(2, "new task on scope b", c).await, Ok(3));
}

/// Dropping a Scope cancels its unfinished tasks without waiting for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_scope_cancels_its_tasks() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let other = Scope::new(pool.clone());
    let (guard, dropped) = drop_flag();
    let h = scope.spawn_with_handle(async move {
        let _guard = guard;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let det_dropped = spawn_detached_forever(&scope);
    let survivor = other.spawn_with_handle(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        "survived"
    });
    tokio::time::sleep(Duration::from_millis(20)).await;

    let t = Instant::now();
    drop(scope);
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "dropping the scope waited: {:?}",
        t.elapsed()
    );
    assert_eq!(
        within(2, "task of dropped scope", h).await,
        Err(TaskError::Cancelled)
    );
    assert!(dropped.load(Ordering::SeqCst));
    assert!(
        eventually_async(Duration::from_secs(2), || det_dropped
            .load(Ordering::SeqCst))
        .await,
        "detached task of the dropped scope was not dropped"
    );
    assert_eq!(
        within(2, "task of other scope", survivor).await,
        Ok("survived")
    );
}

/// How late `await_timeout` may take effect (from the call plus its timeout to the result),
/// in the best of [`TRIES`]. Measured on a 2-core machine, debug build
/// (`ASYNC_RAYON_TIMING_SAMPLES=50 cargo test --test cancel -- --nocapture promptly`), three
/// runs of 50: p50 1.4 ms, p99 3.9 to 9.1 ms (a tokio timer of 1 ms resolution, then a
/// cancel); with both cores saturated by two busy loops: p50 6 ms, p90 15 ms, p99 62 ms.
const AWAIT_TIMEOUT_LATENESS: Duration = Duration::from_millis(20);
/// How late `cancel()` of a suspended task may take effect (from the call to the handle
/// resolving), in the best of [`TRIES`]. Measured as above: p50 0.06 to 0.13 ms, p99 0.1 to
/// 4.1 ms; with both cores saturated: p50 0.01 ms, p99 4 ms.
const CANCEL_LATENESS: Duration = Duration::from_millis(10);
const TRIES: usize = 5;

/// Timing checks in this file run one at a time, so they do not compete for the two cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// await_timeout(d) takes effect promptly: it returns TimedOut (future dropped first) within
/// AWAIT_TIMEOUT_LATENESS of the call plus d, in the best of TRIES.
#[test]
fn await_timeout_takes_effect_promptly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let d = Duration::from_millis(30);
    best_of(
        "await_timeout lateness",
        TRIES,
        AWAIT_TIMEOUT_LATENESS,
        || {
            let (guard, dropped_at) = drop_time();
            let h = scope.spawn_with_handle(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            });
            let called = Instant::now();
            let res = pool.block_on(h.await_timeout(d));
            let returned = Instant::now();
            assert_eq!(res, Err(TaskError::TimedOut));
            let dropped = *dropped_at
                .get()
                .expect("TimedOut reported before the future was dropped");
            assert!(dropped >= called + d, "timed out early");
            returned.saturating_duration_since(called + d)
        },
    );
}

/// cancel() of a task suspended on a long sleep takes effect promptly: its future is dropped
/// and its handle resolves Cancelled within CANCEL_LATENESS of the call, in the best of TRIES.
#[test]
fn cancel_of_a_suspended_task_takes_effect_promptly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    best_of("cancel lateness", TRIES, CANCEL_LATENESS, || {
        let started = Arc::new(AtomicBool::new(false));
        let (guard, dropped_at) = drop_time();
        let s = started.clone();
        let h = scope.spawn_with_handle(async move {
            let _guard = guard;
            s.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        assert!(
            eventually(Duration::from_secs(2), || started.load(Ordering::SeqCst)),
            "task never started"
        );
        // Let it reach its suspension.
        std::thread::sleep(Duration::from_millis(5));
        assert!(!h.is_finished());
        let called = Instant::now();
        h.cancel();
        let res = pool.block_on(h);
        let resolved = Instant::now();
        assert_eq!(res, Err(TaskError::Cancelled));
        let dropped = *dropped_at
            .get()
            .expect("Cancelled reported before the future was dropped");
        assert!(dropped >= called);
        resolved.saturating_duration_since(called)
    });
}

/// `cancel_on_drop`: dropping the future before the task finished cancels the task (its
/// future is dropped, its slot freed, it counts as cancelled); awaiting it to the end gives
/// the value as the plain handle would; `into_handle` disarms it.
#[test]
fn cancel_on_drop_cancels_an_abandoned_task_and_only_that() {
    let pool = async_rayon::ThreadPoolInner::new(2, Some(1));
    let scope = pool.scope();
    let (guard, dropped) = common::drop_flag();
    pool.block_on(async {
        let abandoned = scope
            .spawn_with_handle(async move {
                let _guard = guard;
                tokio::time::sleep(Duration::from_secs(60)).await;
            })
            .cancel_on_drop();
        // The caller gives up (a client disconnecting): the future is dropped unfinished.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), abandoned)
                .await
                .is_err()
        );
        common::within(5, "the abandoned task ends", scope.wait()).await;
    });
    assert!(
        dropped.load(Ordering::SeqCst),
        "the task's future was dropped"
    );
    assert_eq!(pool.pending_tasks(), 0, "its slot is free");
    assert_eq!(pool.metrics_fast().cancelled, 1);

    let value = pool.block_on(scope.spawn_with_handle(async { 5 }).cancel_on_drop());
    assert_eq!(value, Ok(5));

    let (guard, dropped) = common::drop_flag();
    let (tx, rx) = std::sync::mpsc::channel();
    let disarmed = scope
        .spawn_with_handle(async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_millis(30)).await;
            tx.send(()).expect("receiver alive");
        })
        .cancel_on_drop()
        .into_handle();
    disarmed.detach();
    rx.recv_timeout(Duration::from_secs(5))
        .expect("a detached task runs to its end");
    assert!(common::eventually(Duration::from_secs(5), || dropped.load(Ordering::SeqCst)));
    assert_eq!(
        pool.metrics_fast().cancelled,
        1,
        "detaching cancelled nothing"
    );
}

/// Cancelling a scope's token directly (not through `Scope::cancel`) wakes and cancels its
/// suspended tasks and those of its child scopes, and the scope then reports itself
/// cancelled; a scope beside it is untouched.
#[test]
fn cancelling_a_scope_token_directly_cancels_its_suspended_tasks() {
    let pool = ThreadPoolInner::new(2, None);
    let scope = Scope::new(pool.clone());
    let child = scope.child();
    let other = Scope::new(pool.clone());
    let forever = || async { tokio::time::sleep(Duration::from_secs(3600)).await };
    let mine: Vec<_> = (0..50)
        .map(|i| {
            if i % 2 == 0 {
                scope.spawn_with_handle(forever())
            } else {
                child.spawn_with_handle(forever())
            }
        })
        .collect();
    let bystander = other.spawn_with_handle(async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        "finished"
    });
    // Let every task reach its suspension.
    assert!(eventually(Duration::from_secs(5), || pool
        .metrics_fast()
        .active_tasks
        == 51));
    std::thread::sleep(Duration::from_millis(20));
    scope.cancellation_token().cancel();
    let results = pool.block_on(within(
        2,
        "suspended tasks cancelled through the scope's token",
        scope.join_handles(mine),
    ));
    assert!(
        results.iter().all(|r| *r == Err(TaskError::Cancelled)),
        "{results:?}"
    );
    assert!(scope.is_cancelled() && child.is_cancelled());
    assert!(!other.is_cancelled());
    assert_eq!(pool.block_on(bystander), Ok("finished"));
}
