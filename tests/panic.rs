//! Panic isolation: a panic in a task's poll or Drop becomes that task's Err(Panicked(..)); the
//! worker thread survives and keeps running tasks.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_rayon::{Scope, TaskError};
use common::{drop_flag, eventually_async, pool, within};

fn panic_message<T: std::fmt::Debug>(res: Result<T, TaskError>) -> String {
    match res {
        Err(TaskError::Panicked(msg)) => msg.into_string(),
        other => panic!("expected Err(Panicked(..)), got {other:?}"),
    }
}

/// A panic with a formatted message is reported as Panicked containing that text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_message_is_reported() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let formatted = scope.spawn_with_handle(async {
        let n = 7;
        if n == 7 {
            panic!("boom number {n}");
        }
        n
    });
    let literal = scope.spawn_with_handle(async {
        panic!("a static message");
    });
    let msg = panic_message(within(2, "formatted panic", formatted).await);
    assert!(msg.contains("boom number 7"), "message: {msg:?}");
    let msg = panic_message(within(2, "literal panic", literal).await);
    assert!(msg.contains("a static message"), "message: {msg:?}");
}

/// A panic after an await (in a later poll) is reported too, and its future's other locals are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_after_suspension_is_reported() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let (guard, dropped) = drop_flag();
    let h = scope.spawn_with_handle(async move {
        let _guard = guard;
        tokio::time::sleep(Duration::from_millis(10)).await;
        tokio::task::yield_now().await;
        panic!("late failure");
    });
    let msg = panic_message::<()>(within(2, "late panic", h).await);
    assert!(msg.contains("late failure"), "message: {msg:?}");
    assert!(dropped.load(Ordering::SeqCst));
}

/// A panic with a non-string payload still resolves to Panicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_string_panic_payload_is_reported() {
    let pool = pool(1);
    let scope = Scope::new(pool.clone());
    let h = scope.spawn_with_handle(async {
        std::panic::panic_any(42u32);
    });
    let msg = panic_message(within(2, "panic_any", h).await);
    assert!(
        !msg.is_empty(),
        "a non-string payload gave an empty message"
    );
}

/// The worker survives panics: on a one-thread pool, the same thread runs tasks after many panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_thread_survives_panics() {
    let pool = pool(1);
    let scope = Scope::new(pool.clone());
    let before = worker_thread(&scope, "first task").await;
    let panics: Vec<_> = (0..20)
        .map(|i: u32| {
            scope.spawn_with_handle(async move {
                if i.is_multiple_of(2) {
                    tokio::task::yield_now().await;
                }
                panic!("panic {i}");
            })
        })
        .collect();
    for (i, r) in within(3, "panicking tasks", scope.join_handles(panics))
        .await
        .into_iter()
        .enumerate()
    {
        let msg = panic_message::<()>(r);
        assert_eq!(msg, format!("panic {i}"), "task {i}");
    }
    let after = worker_thread(&scope, "task after panics").await;
    assert_eq!(before, after, "the worker thread was replaced after panics");
    let value = within(2, "more work", scope.spawn_with_handle(async { 5 })).await;
    assert_eq!(value, Ok(5));
}

/// The id of the worker thread that runs a task spawned on `scope` now.
async fn worker_thread(scope: &Scope, what: &str) -> std::thread::ThreadId {
    within(
        2,
        what,
        scope.spawn_with_handle(async { std::thread::current().id() }),
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"))
}

struct PanicOnDrop(&'static str);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("{}", self.0);
        }
    }
}

/// A panic in a future's Drop while it is being cancelled is reported as Panicked (the crate
/// promises a panic in `Drop` becomes `TaskError::Panicked`; `Cancelled` would hide it) and
/// does not kill the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_drop_during_cancel_is_contained() {
    let pool = pool(1);
    let scope = Scope::new(pool.clone());
    let before = worker_thread(&scope, "first task").await;
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let h = scope.spawn_with_handle(async move {
        let _bomb = PanicOnDrop("drop bomb on cancel");
        s.store(true, Ordering::SeqCst);
        std::future::pending::<()>().await;
    });
    assert!(eventually_async(Duration::from_secs(2), || started.load(Ordering::SeqCst)).await);
    h.cancel();
    let res = within(2, "cancelled task with panicking Drop", h).await;
    let msg = panic_message(res);
    assert!(msg.contains("drop bomb on cancel"), "message: {msg:?}");
    let after = worker_thread(&scope, "task after drop panic").await;
    assert_eq!(
        before, after,
        "the worker thread was replaced after a Drop panic"
    );
}

/// A panic in Drop of a cancelled-before-start task is reported as Panicked, and one of a
/// detached task dropped by scope cancellation is counted as a panic; neither kills the
/// worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_drop_of_unstarted_and_detached_tasks_is_contained() {
    let pool = pool(1);
    let scope = Scope::new(pool.clone());
    let blocking = Arc::new(AtomicBool::new(false));
    let b = blocking.clone();
    let blocker = scope.spawn_with_handle(async move {
        b.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
    });
    assert!(eventually_async(Duration::from_secs(2), || blocking.load(Ordering::SeqCst)).await);
    let bomb = PanicOnDrop("unstarted bomb");
    let unstarted = scope.spawn_with_handle(async move {
        let _b = bomb;
    });
    unstarted.cancel();
    let res = within(2, "unstarted bomb task", unstarted).await;
    let msg = panic_message(res);
    assert!(msg.contains("unstarted bomb"), "message: {msg:?}");
    assert_eq!(within(2, "blocker", blocker).await, Ok(()));
    let panicked_before = pool.metrics_fast().panicked;

    let other = Scope::new(pool.clone());
    drop(other.spawn_with_handle(async move {
        let _b = PanicOnDrop("detached bomb");
        std::future::pending::<()>().await;
    }));
    tokio::time::sleep(Duration::from_millis(20)).await;
    other.cancel();
    within(2, "scope wait after cancelling a bomb", other.wait()).await;
    assert!(
        eventually_async(Duration::from_secs(2), || {
            pool.metrics_fast().panicked == panicked_before + 1
        })
        .await,
        "the detached task's Drop panic was not counted as a panic: panicked = {}, was {}",
        pool.metrics_fast().panicked,
        panicked_before
    );
    assert_eq!(
        within(2, "task afterwards", scope.spawn_with_handle(async { 1 })).await,
        Ok(1)
    );
}

/// A panic raised while dropping a finishing future's locals is reported as Panicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_drop_at_completion_is_reported() {
    let pool = pool(1);
    let scope = Scope::new(pool.clone());
    let h = scope.spawn_with_handle(async {
        let _bomb = PanicOnDrop("bomb at completion");
        tokio::task::yield_now().await;
        1
    });
    let msg = panic_message(within(2, "bomb at completion", h).await);
    assert!(msg.contains("bomb at completion"), "message: {msg:?}");
    assert_eq!(
        within(2, "task afterwards", scope.spawn_with_handle(async { 2 })).await,
        Ok(2)
    );
}

/// Panics in one scope do not disturb another scope's tasks on the same pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_are_isolated_between_tasks() {
    let pool = pool(2);
    let a = Scope::new(pool.clone());
    let b = Scope::new(pool.clone());
    let good: Vec<_> = (0..50u32)
        .map(|i: u32| {
            b.spawn_with_handle(async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                i
            })
        })
        .collect();
    let bad: Vec<_> = (0..50u32)
        .map(|i| a.spawn_with_handle(async move { if i < 100 { panic!("bad {i}") } else { i } }))
        .collect();
    for (i, r) in within(3, "bad tasks", a.join_handles(bad))
        .await
        .into_iter()
        .enumerate()
    {
        let msg = panic_message(r);
        assert!(msg == format!("bad {i}"), "task {i}: message {msg:?}");
    }
    let results = within(3, "good tasks", b.join_handles(good)).await;
    assert_eq!(results, (0..50u32).map(Ok).collect::<Vec<_>>());
}
