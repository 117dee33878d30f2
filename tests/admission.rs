//! Admission control: `max_pending` bounds admitted, unfinished tasks; refusal, waiting for
//! room with `reserve()`, permits, and refusal once shutdown has begun.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_rayon::{Config, Scope, SpawnError, TaskError, ThreadPoolInner};
use common::{probed, within};
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

fn bounded_pool(threads: usize, max_pending: usize) -> Arc<ThreadPoolInner> {
    ThreadPoolInner::with_config(Config {
        num_threads: threads,
        max_pending: Some(max_pending),
        enable_work_stealing: true,
        task_timeout: None,
    })
}

/// Spawns `n` tasks that stay suspended until `gate` is cancelled; returns their handles.
fn occupy(
    scope: &Scope,
    gate: &CancellationToken,
    n: usize,
) -> Vec<async_rayon::TaskHandle<usize>> {
    (0..n)
        .map(|i| {
            let g = gate.clone();
            scope.spawn_with_handle(async move {
                g.cancelled().await;
                i
            })
        })
        .collect()
}

/// When full, spawn_with_handle returns an already-resolved Err(Rejected) handle, dropping the
/// future at once without polling it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_when_full_is_rejected_without_running() {
    let pool = bounded_pool(2, 2);
    let scope = Scope::new(pool.clone());
    let gate = CancellationToken::new();
    let held = occupy(&scope, &gate, 2);

    let (future, probe) = probed(1);
    let rejected = scope.spawn_with_handle(future);
    assert!(probe.dropped(), "rejected future was not dropped at once");
    assert!(
        rejected.is_finished(),
        "rejected handle is not already finished"
    );
    assert_eq!(rejected.now_or_never(), Some(Err(TaskError::Rejected)));
    assert!(!probe.polled(), "rejected future was polled");

    // The admitted tasks are unaffected.
    gate.cancel();
    let results = scope.join_handles(held).await;
    assert_eq!(results, vec![Ok(0), Ok(1)]);
}

/// When full, try_spawn_with_handle returns SpawnError::Full and drops the future unpolled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_spawn_when_full_returns_full() {
    let pool = bounded_pool(2, 3);
    let scope = Scope::new(pool.clone());
    let gate = CancellationToken::new();
    let held = occupy(&scope, &gate, 3);

    let (future, probe) = probed(());
    let res = scope.try_spawn_with_handle(future);
    assert!(matches!(res, Err(SpawnError::Full)), "{res:?}");
    assert!(probe.dropped(), "refused future was not dropped");
    // Another scope on the same pool sees the same bound.
    let other = Scope::new(pool.clone());
    assert!(matches!(
        other.try_spawn_with_handle(async {}),
        Err(SpawnError::Full)
    ));

    gate.cancel();
    assert_eq!(scope.join_handles(held).await, vec![Ok(0), Ok(1), Ok(2)]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!probe.polled(), "refused future ran");
}

/// The bound is per pool and frees up: with room again, try_spawn succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_spawn_succeeds_below_bound() {
    let pool = bounded_pool(2, 2);
    let scope = Scope::new(pool.clone());
    let a = scope
        .try_spawn_with_handle(async { 1 })
        .expect("room for first");
    let b = scope
        .try_spawn_with_handle(async { 2 })
        .expect("room for second");
    assert_eq!(a.await, Ok(1));
    assert_eq!(b.await, Ok(2));
}

/// A slot is freed before the handle resolves, however the task ended, so the caller can
/// spawn again right after seeing the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_is_free_as_soon_as_handle_resolves() {
    let pool = bounded_pool(2, 1);
    let scope = Scope::new(pool.clone());
    for i in 0..2_000u32 {
        let h = scope
            .try_spawn_with_handle(async move { i })
            .unwrap_or_else(|e| {
                panic!("round {i}: slot not free after previous handle resolved: {e:?}")
            });
        assert_eq!(h.await, Ok(i));
    }
    // After a panic.
    let h = scope
        .try_spawn_with_handle(async { panic!("boom") })
        .expect("room before panic task");
    assert!(matches!(h.await, Err(TaskError::Panicked(_))));
    let h = scope
        .try_spawn_with_handle(async { 1 })
        .expect("slot freed after a panicked task");
    assert_eq!(h.await, Ok(1));
    // After a cancel.
    let h = scope
        .try_spawn_with_handle(std::future::pending::<()>())
        .expect("room before cancelled task");
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.cancel();
    assert_eq!(h.await, Err(TaskError::Cancelled));
    let h = scope
        .try_spawn_with_handle(async { 2 })
        .expect("slot freed after a cancelled task");
    assert_eq!(h.await, Ok(2));
    // After await_timeout.
    let h = scope
        .try_spawn_with_handle(std::future::pending::<()>())
        .expect("room before timed-out task");
    assert_eq!(
        h.await_timeout(Duration::from_millis(20)).await,
        Err(TaskError::TimedOut)
    );
    let h = scope
        .try_spawn_with_handle(async { 3 })
        .expect("slot freed after a timed-out task");
    assert_eq!(h.await, Ok(3));
}

/// A task that is woken and re-polled many times still holds only one slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewoken_task_counts_once() {
    let pool = bounded_pool(2, 2);
    let scope = Scope::new(pool.clone());
    let stop = CancellationToken::new();
    let s = stop.clone();
    let busy = scope.spawn_with_handle(async move {
        let mut polls = 0u64;
        while !s.is_cancelled() {
            tokio::task::yield_now().await;
            polls += 1;
            if polls.is_multiple_of(50) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        polls
    });
    for i in 0..100u32 {
        let h = scope
            .try_spawn_with_handle(async move { i })
            .unwrap_or_else(|e| {
                panic!("round {i}: a re-woken task took more than one slot: {e:?}")
            });
        assert_eq!(h.await, Ok(i));
    }
    stop.cancel();
    let polls = busy.await.expect("busy task ends");
    assert!(polls > 0);
}

/// reserve() waits while the pool is full and completes once a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_waits_for_room() {
    let pool = bounded_pool(2, 1);
    let scope = Scope::new(pool.clone());
    let gate = CancellationToken::new();
    let held = occupy(&scope, &gate, 1);

    let waited = tokio::time::timeout(Duration::from_millis(100), scope.reserve()).await;
    assert!(
        waited.is_err(),
        "reserve() returned while the pool was full"
    );

    let mut reserve = Box::pin(scope.reserve());
    assert!(futures::poll!(reserve.as_mut()).is_pending());
    gate.cancel();
    let permit = within(2, "reserve() completes once a slot frees", reserve)
        .await
        .expect("pool is running");
    let h = permit.spawn_with_handle(async { "reserved" });
    assert_eq!(h.await, Ok("reserved"));
    assert_eq!(scope.join_handles(held).await, vec![Ok(0)]);
}

/// reserve() waiters get slots first come, first served, whatever order they are polled in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_is_fifo() {
    let pool = bounded_pool(2, 1);
    let scope = Scope::new(pool.clone());
    let gate = CancellationToken::new();
    let held = occupy(&scope, &gate, 1);
    let order = Mutex::new(Vec::new());

    let n = 6usize;
    let mut waiters: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = (0..n)
        .map(|i| {
            let scope = &scope;
            let order = &order;
            Box::pin(async move {
                let permit = scope.reserve().await.expect("pool is running");
                order.lock().expect("order lock").push(i);
                let h = permit.spawn_with_handle(async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    i
                });
                assert_eq!(h.await, Ok(i));
            }) as Pin<Box<dyn Future<Output = ()> + Send + '_>>
        })
        .collect();
    // Register the waiters in order 0..n.
    for w in waiters.iter_mut() {
        assert!(futures::poll!(w.as_mut()).is_pending());
    }
    // Free the slot; poll the waiters in reverse so a "whoever polls first" scheme would fail.
    gate.cancel();
    waiters.reverse();
    within(
        5,
        "all reserve() waiters served",
        futures::future::join_all(waiters),
    )
    .await;
    assert_eq!(
        *order.lock().expect("order lock"),
        (0..n).collect::<Vec<_>>()
    );
    assert_eq!(scope.join_handles(held).await, vec![Ok(0)]);
}

/// While reserve() callers are queued, try_spawn does not jump the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_spawn_does_not_overtake_reserve_waiters() {
    let pool = bounded_pool(2, 1);
    let scope = Scope::new(pool.clone());
    let gate = CancellationToken::new();
    let held = occupy(&scope, &gate, 1);
    let mut waiter = Box::pin(scope.reserve());
    assert!(futures::poll!(waiter.as_mut()).is_pending());
    gate.cancel();
    assert_eq!(scope.join_handles(held).await, vec![Ok(0)]);
    // The freed slot belongs to the queued waiter.
    let res = scope.try_spawn_with_handle(async {});
    assert!(matches!(res, Err(SpawnError::Full)), "{res:?}");
    let permit = within(2, "waiter served", waiter)
        .await
        .expect("pool is running");
    assert_eq!(permit.spawn_with_handle(async { 5 }).await, Ok(5));
}

/// A permit holds a slot; dropping it unused frees the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_permit_frees_its_slot() {
    let pool = bounded_pool(2, 1);
    let scope = Scope::new(pool.clone());
    let permit = within(2, "reserve on an empty pool is immediate", scope.reserve())
        .await
        .expect("pool is running");
    let res = scope.try_spawn_with_handle(async {});
    assert!(
        matches!(res, Err(SpawnError::Full)),
        "permit did not hold the slot: {res:?}"
    );
    assert_eq!(
        scope.spawn_with_handle(async {}).await,
        Err(TaskError::Rejected)
    );
    drop(permit);
    let h = scope
        .try_spawn_with_handle(async { 11 })
        .expect("slot freed by dropping the permit");
    assert_eq!(h.await, Ok(11));
    // And a waiter is served by a dropped permit too.
    let permit = scope.reserve().await.expect("pool is running");
    let mut waiter = Box::pin(scope.reserve());
    assert!(futures::poll!(waiter.as_mut()).is_pending());
    drop(permit);
    let p2 = within(2, "waiter served after permit dropped", waiter)
        .await
        .expect("pool is running");
    assert_eq!(p2.spawn_with_handle(async { 12 }).await, Ok(12));
}

/// Once shutdown has begun, try_spawn and reserve return SpawnError::Shutdown and
/// spawn_with_handle resolves Err(Shutdown) without running the future.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_work() {
    let pool = bounded_pool(2, 10);
    let scope = Scope::new(pool.clone());
    let before = scope.spawn_with_handle(async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        1
    });
    within(5, "shutdown finished", pool.shutdown()).await;
    assert_eq!(before.await, Ok(1));
    assert!(pool.is_shutdown());

    let res = scope.try_spawn_with_handle(async {});
    assert!(matches!(res, Err(SpawnError::Shutdown)), "{res:?}");
    let res = within(1, "reserve after shutdown returns at once", scope.reserve()).await;
    assert!(matches!(res, Err(SpawnError::Shutdown)), "{res:?}");

    let (future, probe) = probed(());
    let h = scope.spawn_with_handle(future);
    assert!(probe.dropped(), "refused future not dropped at once");
    assert_eq!(h.now_or_never(), Some(Err(TaskError::Shutdown)));
    assert!(!probe.polled(), "refused future was polled");
    // A new scope on the shut-down pool is refused too.
    let late = Scope::new(pool.clone());
    assert_eq!(
        late.spawn_with_handle(async {}).await,
        Err(TaskError::Shutdown)
    );
}

/// Spawns are refused with Shutdown from the moment shutdown begins, while it is still
/// waiting for admitted tasks; a queued reserve() waiter gets Shutdown too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_in_progress_refuses_spawns_and_waiters() {
    let pool = bounded_pool(2, 1);
    let scope = Scope::new(pool.clone());
    let gate = CancellationToken::new();
    let held = occupy(&scope, &gate, 1);
    let mut waiter = Box::pin(scope.reserve());
    assert!(futures::poll!(waiter.as_mut()).is_pending());

    let p = pool.clone();
    let shutting = tokio::spawn(async move { p.shutdown_timeout(Duration::from_secs(5)).await });
    let refused = common::eventually_async(Duration::from_secs(2), || {
        matches!(
            scope.try_spawn_with_handle(async {}),
            Err(SpawnError::Shutdown)
        )
    })
    .await;
    assert!(
        refused,
        "try_spawn not refused with Shutdown while shutdown waits"
    );
    assert_eq!(
        scope.spawn_with_handle(async {}).await,
        Err(TaskError::Shutdown)
    );
    let res = within(1, "a queued reserve() returns once shutdown begins", waiter).await;
    assert!(matches!(res, Err(SpawnError::Shutdown)), "{res:?}");

    // The admitted task still finishes normally, then shutdown completes.
    gate.cancel();
    assert_eq!(scope.join_handles(held).await, vec![Ok(0)]);
    let all_finished = shutting.await.expect("shutdown task joined");
    assert!(all_finished, "shutdown_timeout reported unfinished tasks");
}
