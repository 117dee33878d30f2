//! Task groups: child scopes (supervision trees), close + wait per component, scopes tied to
//! an application token, `TaskSet`, `cancel_on_drop`, and `block_on` inside a runtime.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_rayon::{CancellationToken, Scope, SpawnError, TaskError, ThreadPoolInner};
use common::{best_of, drop_flag, eventually, occupy_the_worker, pool, probed, within};

/// Cancelling the root of a three-level tree reaches a grandchild's suspended task and a
/// grandchild's queued task (which then never starts); the root's own task too.
#[test]
fn cancelling_the_root_cancels_three_levels_down() {
    let pool = pool(1);
    let root = pool.scope();
    let child = root.child();
    let grandchild = child.child();
    let (guard, dropped) = drop_flag();
    let suspended = grandchild.spawn_with_handle(async move {
        let _guard = guard;
        std::future::pending::<()>().await
    });
    let own = root.spawn_with_handle(std::future::pending::<()>());
    assert!(eventually(Duration::from_secs(5), || pool
        .metrics_fast()
        .active_tasks
        == 2));
    let blocker_scope = Scope::new(pool.clone());
    let release = occupy_the_worker(&blocker_scope);
    let (queued_fut, queued_probe) = probed(7);
    let queued = grandchild.spawn_with_handle(queued_fut);

    root.cancel();
    drop(release);

    assert_eq!(pool.block_on(suspended), Err(TaskError::Cancelled));
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(pool.block_on(queued), Err(TaskError::Cancelled));
    assert!(
        !queued_probe.polled(),
        "a task cancelled while queued never starts"
    );
    assert_eq!(pool.block_on(own), Err(TaskError::Cancelled));
    assert!(child.is_cancelled() && grandchild.is_cancelled());
}

/// Dropping a parent scope cancels the tasks of a child that is still alive.
#[test]
fn dropping_the_parent_cancels_the_child() {
    let pool = pool(1);
    let parent = pool.scope();
    let child = parent.child();
    let task = child.spawn_with_handle(std::future::pending::<()>());
    drop(parent);
    assert_eq!(pool.block_on(task), Err(TaskError::Cancelled));
}

/// Cancelling a child leaves its parent and its siblings running.
#[test]
fn cancelling_a_child_leaves_parent_and_sibling_alone() {
    let pool = pool(1);
    let parent = pool.scope();
    let (a, b) = (parent.child(), parent.child());
    let doomed = a.spawn_with_handle(std::future::pending::<()>());
    let (tx_p, rx_p) = tokio::sync::oneshot::channel::<u8>();
    let (tx_b, rx_b) = tokio::sync::oneshot::channel::<u8>();
    let in_parent = parent.spawn_with_handle(async move { rx_p.await.ok() });
    let in_sibling = b.spawn_with_handle(async move { rx_b.await.ok() });
    a.cancel();
    assert_eq!(pool.block_on(doomed), Err(TaskError::Cancelled));
    assert!(!parent.is_cancelled() && !b.is_cancelled());
    tx_p.send(1).expect("parent task alive");
    tx_b.send(2).expect("sibling task alive");
    assert_eq!(pool.block_on(in_parent), Ok(Some(1)));
    assert_eq!(pool.block_on(in_sibling), Ok(Some(2)));
}

/// `parent.wait()` returns only once the tasks of its live children are done too, and
/// `live_tasks` counts them.
#[test]
fn parent_wait_covers_the_children() {
    let pool = pool(2);
    let parent = pool.scope();
    let child = parent.child();
    let grandchild = child.child();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    grandchild
        .spawn_with_handle(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            d.store(true, Ordering::SeqCst);
        })
        .detach();
    assert_eq!(parent.live_tasks(), 1);
    assert_eq!(child.live_tasks(), 1);
    pool.block_on(within(10, "parent.wait()", parent.wait()));
    assert!(
        done.load(Ordering::SeqCst),
        "wait returned before the grandchild's task"
    );
    assert_eq!(parent.live_tasks(), 0);
}

/// Close + wait on one component while another keeps spawning: the closed scope refuses with
/// `Closed` (not `Full`), its admitted tasks finish, the other scope is unaffected.
#[test]
fn close_and_wait_one_component_while_another_serves() {
    let pool = pool(2);
    let closing = pool.scope();
    let serving = pool.scope();
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..20 {
        let f = finished.clone();
        closing
            .spawn_with_handle(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                f.fetch_add(1, Ordering::SeqCst);
            })
            .detach();
    }
    closing.close();
    assert!(closing.is_closed() && !serving.is_closed());
    let (late, late_probe) = probed(());
    assert_eq!(
        closing.try_spawn_with_handle(late).err(),
        Some(SpawnError::Closed)
    );
    assert!(late_probe.dropped() && !late_probe.polled());
    assert_eq!(
        pool.block_on(closing.spawn_with_handle(async {})),
        Err(TaskError::Closed)
    );
    assert_eq!(
        pool.block_on(closing.reserve()).err(),
        Some(SpawnError::Closed)
    );
    pool.block_on(within(10, "closing.wait()", async {
        let waiting = closing.wait();
        tokio::pin!(waiting);
        let mut served = 0;
        loop {
            tokio::select! {
                _ = &mut waiting => break,
                r = serving.spawn_with_handle(async { 1 }) => served += r.expect("serving scope admits"),
            }
        }
        assert!(served > 0, "the other scope kept serving");
    }));
    assert_eq!(finished.load(Ordering::SeqCst), 20);
    assert!(!serving.is_closed());
}

/// Bulk calls on a closed scope refuse every item with `Closed`.
#[test]
fn bulk_calls_on_a_closed_scope_refuse_their_items() {
    let pool = pool(2);
    let scope = pool.scope();
    scope.close();
    let batch = pool.block_on(scope.batch_process(0..10u64, 4, |i| async move { i }));
    assert!(
        batch.iter().all(|r| r == &Err(TaskError::Closed)),
        "{batch:?}"
    );
    let mapped = pool.block_on(scope.par_map_async(&(0..10u64).collect::<Vec<_>>(), |i| {
        let i = *i;
        async move { i }
    }));
    assert!(
        mapped.iter().all(|r| r == &Err(TaskError::Closed)),
        "{mapped:?}"
    );
    let streamed: Vec<_> = pool.block_on(futures::StreamExt::collect(scope.stream_process(
        0..10u64,
        4,
        |i| async move { i },
    )));
    assert_eq!(streamed.len(), 10);
    assert!(streamed.iter().all(|r| r == &Err(TaskError::Closed)));
}

/// A child or task set made from a closed or cancelled scope starts closed or cancelled.
#[test]
fn groups_made_from_closed_or_cancelled_scopes_start_that_way() {
    let pool = pool(1);
    let closed = pool.scope();
    closed.close();
    assert!(closed.child().is_closed());
    let mut set = closed.task_set::<()>();
    assert_eq!(set.try_spawn(async {}).err(), Some(SpawnError::Closed));
    assert!(set.is_empty());

    let cancelled = pool.scope();
    cancelled.cancel();
    let child = cancelled.child();
    assert!(child.is_cancelled());
    let (fut, probe) = probed(());
    assert_eq!(
        pool.block_on(child.spawn_with_handle(fut)),
        Err(TaskError::Cancelled)
    );
    assert!(!probe.polled());
}

/// Closing a parent closes its live children.
#[test]
fn closing_a_parent_closes_its_children() {
    let pool = pool(1);
    let parent = pool.scope();
    let child = parent.child();
    parent.close();
    assert!(child.is_closed());
    assert_eq!(
        child.try_spawn_with_handle(async {}).err(),
        Some(SpawnError::Closed)
    );
}

/// A scope tied to an application token: cancelling the token cancels the scope's
/// suspended tasks promptly.
#[test]
fn a_scope_with_a_parent_token_follows_it() {
    let pool = pool(1);
    let app = CancellationToken::new();
    let scope = Scope::with_parent_token(pool.clone(), &app);
    let (guard, dropped) = drop_flag();
    let task = scope.spawn_with_handle(async move {
        let _guard = guard;
        std::future::pending::<()>().await
    });
    let t = Instant::now();
    app.cancel();
    assert_eq!(pool.block_on(task), Err(TaskError::Cancelled));
    assert!(dropped.load(Ordering::SeqCst));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    assert!(scope.is_cancelled());
    // Made from a token already cancelled: starts cancelled.
    let late = Scope::with_parent_token(pool.clone(), &app);
    assert!(late.is_cancelled());
}

/// The pool's own cancellation (shutdown past its deadline) reaches a scope tied to an
/// application token as it reaches any scope.
#[test]
fn shutdown_reaches_a_scope_with_a_parent_token() {
    let pool = pool(1);
    let app = CancellationToken::new();
    let scope = Scope::with_parent_token(pool.clone(), &app);
    let task = scope.spawn_with_handle(std::future::pending::<()>());
    assert!(!pool.block_on(pool.shutdown_timeout(Duration::from_millis(10))));
    assert_eq!(pool.block_on(task), Err(TaskError::Cancelled));
    assert!(
        !app.is_cancelled(),
        "the application's token is not the pool's to cancel"
    );
}

/// `TaskSet::join_next` yields results in completion order; `len` and `is_empty` follow.
#[test]
fn task_set_joins_in_completion_order() {
    let pool = pool(2);
    let scope = pool.scope();
    let mut set = scope.task_set::<u64>();
    pool.block_on(async {
        for ms in [60u64, 0, 30] {
            set.spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ms
            })
            .await
            .expect("admitted");
        }
        assert_eq!(set.len(), 3);
        let mut order = Vec::new();
        while let Some(r) = set.join_next().await {
            order.push(r.expect("finished"));
        }
        assert_eq!(order, [0, 30, 60]);
        assert!(set.is_empty());
        assert!(set.join_next().await.is_none());
    });
}

/// `try_spawn` refuses when the pool is full; `spawn` waits for room instead.
#[test]
fn task_set_try_spawn_refuses_when_full_and_spawn_waits() {
    let pool = ThreadPoolInner::new(1, Some(1));
    let scope = pool.scope();
    let mut set = scope.task_set::<u8>();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    set.try_spawn(async move {
        let _ = rx.await;
        1
    })
    .expect("room for one");
    let (refused, probe) = probed(2u8);
    assert_eq!(set.try_spawn(refused).err(), Some(SpawnError::Full));
    assert!(!probe.polled());
    assert_eq!(set.len(), 1);
    pool.block_on(async {
        let second = async {
            set.spawn(async { 3 })
                .await
                .expect("admitted once room frees");
        };
        let release = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send(()).expect("first task waiting");
        };
        within(
            10,
            "spawn waits for room",
            futures::future::join(second, release),
        )
        .await;
        let mut got = vec![
            set.join_next().await.expect("one").expect("ok"),
            set.join_next().await.expect("two").expect("ok"),
        ];
        got.sort();
        assert_eq!(got, [1, 3]);
    });
}

/// `cancel_all` cancels every task in the set, whose results still come out; dropping a set
/// cancels its unfinished tasks.
#[test]
fn task_set_cancel_all_and_drop_cancel() {
    let pool = pool(1);
    let scope = pool.scope();
    let mut set = scope.task_set::<()>();
    for _ in 0..3 {
        set.try_spawn(std::future::pending()).expect("admitted");
    }
    set.cancel_all();
    pool.block_on(async {
        for _ in 0..3 {
            assert_eq!(set.join_next().await, Some(Err(TaskError::Cancelled)));
        }
    });
    assert!(set.is_empty());
    // The set stays usable after cancel_all.
    set.try_spawn(async {}).expect("admitted");
    assert_eq!(pool.block_on(set.join_next()), Some(Ok(())));

    let mut dropped = Vec::new();
    for _ in 0..3 {
        let (guard, flag) = drop_flag();
        set.try_spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await
        })
        .expect("admitted");
        dropped.push(flag);
    }
    drop(set);
    assert!(eventually(Duration::from_secs(5), || dropped
        .iter()
        .all(|f| f.load(Ordering::SeqCst))));
    assert!(
        !scope.is_cancelled(),
        "dropping a set leaves its parent scope alone"
    );
    pool.block_on(within(10, "scope.wait()", scope.wait()));
}

/// A `cancel_on_drop` handle dropped unfinished frees the task's admission slot within 50 ms
/// (best of a few tries: a loaded two-core machine can deschedule any one of them).
#[test]
fn cancel_on_drop_frees_the_slot_within_50ms() {
    let pool = ThreadPoolInner::new(1, Some(1));
    let scope = pool.scope();
    best_of(
        "cancel_on_drop frees the slot",
        5,
        Duration::from_millis(50),
        || {
            let guarded = scope
                .spawn_with_handle(std::future::pending::<()>())
                .cancel_on_drop();
            assert_eq!(
                scope.try_spawn_with_handle(async {}).err(),
                Some(SpawnError::Full)
            );
            let t = Instant::now();
            drop(guarded);
            let freed = eventually(Duration::from_secs(1), || {
                // One reading: two snapshots could see the task queued, then running.
                pool.pending_tasks() == 0
            });
            let took = t.elapsed();
            assert!(freed, "slot still held after 1 s");
            took
        },
    );
    assert!(scope.try_spawn_with_handle(async {}).is_ok());
}

/// `block_on` called where a runtime is being driven panics with a message that names it,
/// instead of stalling that runtime's timers.
#[tokio::test(flavor = "current_thread")]
async fn block_on_inside_a_runtime_panics_with_its_message() {
    let pool = pool(1);
    let p = pool.clone();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        p.block_on(async { 1 })
    }));
    let payload = caught.expect_err("block_on inside a runtime must panic");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        msg.contains(
            "ThreadPoolInner::block_on called from a thread that is running an async runtime"
        ),
        "{msg}"
    );
    // From spawn_blocking it works.
    let value = tokio::task::spawn_blocking(move || pool.block_on(async { 2 }))
        .await
        .expect("spawn_blocking");
    assert_eq!(value, 2);
}
