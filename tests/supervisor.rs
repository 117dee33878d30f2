//! Supervised tasks (`Scope::supervise`), as a user calls them: restarts after an error or a
//! panic, the restart intensity (max restarts within a sliding period), backoff between
//! restarts, stop, cancellation through the scope tree, normal completion, and the metrics.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_rayon::{
    Config, RetryPolicy, SupervisedFailure, SupervisorExit, SupervisorPolicy, ThreadPoolInner,
};
use common::{drop_flag, eventually, pool, within};
use parking_lot::Mutex;

/// A backoff of `ms` before every restart: no growth, no jitter.
fn fixed(ms: u64) -> RetryPolicy {
    RetryPolicy::new(0)
        .initial_backoff(Duration::from_millis(ms))
        .multiplier(1.0)
        .jitter(false)
}

/// A policy of `max_restarts` within a minute, restarting after 1 ms.
fn quick(max_restarts: u32) -> SupervisorPolicy {
    SupervisorPolicy::new(max_restarts, Duration::from_secs(60)).backoff(fixed(1))
}

/// A counter of runs, and a clone to move into the factory.
fn runs() -> (Arc<AtomicU32>, Arc<AtomicU32>) {
    let runs = Arc::new(AtomicU32::new(0));
    (runs.clone(), runs)
}

/// Run 0 returns `Err`, run 1 panics, run 2 returns `Ok`: two restarts, then `Completed`.
#[test]
fn restarts_after_an_error_and_after_a_panic() {
    let pool = pool(2);
    let scope = pool.scope();
    let (count, seen) = runs();
    let handle = scope.supervise(quick(5), move || {
        let run = count.fetch_add(1, Ordering::SeqCst);
        async move {
            match run {
                0 => Err("connection reset"),
                1 => panic!("poisoned message"),
                _ => Ok(()),
            }
        }
    });
    let exit = pool.block_on(within(10, "supervisor", handle));
    assert_eq!(exit, SupervisorExit::Completed);
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

/// A run that panics with no restarts allowed: gives up, reporting the panic message; a
/// factory that panics counts as a panicked run too.
#[test]
fn a_panic_is_reported_as_the_last_failure() {
    let pool = pool(2);
    let scope = pool.scope();
    let handle = scope.supervise(quick(0), || async {
        panic!("poisoned message");
        #[allow(unreachable_code)]
        Ok::<(), String>(())
    });
    assert_eq!(
        pool.block_on(within(10, "supervisor", handle)),
        SupervisorExit::GaveUp {
            restarts: 0,
            last: SupervisedFailure::Panicked("poisoned message".into()),
        }
    );

    let (count, seen) = runs();
    let handle = scope.supervise(quick(1), move || {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("factory broke");
        }
        async { Err::<(), _>("second run fails") }
    });
    assert_eq!(
        pool.block_on(within(10, "supervisor", handle)),
        SupervisorExit::GaveUp {
            restarts: 1,
            last: SupervisedFailure::Failed("second run fails"),
        }
    );
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

/// Always failing, with 3 restarts allowed in a minute: exactly 3 restarts (4 runs), then
/// `GaveUp` with the last run's error.
#[test]
fn gives_up_after_max_restarts_within_the_period() {
    let pool = pool(2);
    let scope = pool.scope();
    let (count, seen) = runs();
    let handle = scope.supervise(quick(3), move || {
        let run = count.fetch_add(1, Ordering::SeqCst);
        async move { Err::<(), _>(format!("run {run} failed")) }
    });
    let exit = pool.block_on(within(10, "supervisor", handle));
    assert_eq!(
        exit,
        SupervisorExit::GaveUp {
            restarts: 3,
            last: SupervisedFailure::Failed("run 3 failed".to_string()),
        }
    );
    assert_eq!(seen.load(Ordering::SeqCst), 4);
}

/// The window slides: with one restart allowed per 30 ms and runs that fail after 60 ms,
/// the last restart is always older than the window when the next failure comes, so the
/// supervisor keeps restarting (6 failures, then success) instead of giving up at the
/// second failure.
#[test]
fn restarts_older_than_the_period_are_forgotten() {
    let pool = pool(2);
    let scope = pool.scope();
    let (count, seen) = runs();
    let policy = SupervisorPolicy::new(1, Duration::from_millis(30)).backoff(fixed(1));
    let handle = scope.supervise(policy, move || {
        let run = count.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(60)).await;
            if run < 6 { Err("flaky") } else { Ok(()) }
        }
    });
    let exit = pool.block_on(within(20, "supervisor", handle));
    assert_eq!(exit, SupervisorExit::Completed);
    assert_eq!(seen.load(Ordering::SeqCst), 7);
}

/// A zero period is a window that never slides: `max_restarts` over the supervisor's life.
#[test]
fn a_zero_period_counts_restarts_over_the_whole_life() {
    let pool = pool(2);
    let scope = pool.scope();
    let policy = SupervisorPolicy::new(2, Duration::ZERO).backoff(fixed(20));
    let handle = scope.supervise(policy, || async { Err::<(), _>("down") });
    assert_eq!(
        pool.block_on(within(10, "supervisor", handle)),
        SupervisorExit::GaveUp {
            restarts: 2,
            last: SupervisedFailure::Failed("down"),
        }
    );
}

/// Restarts wait the backoff for retry k (k = restarts within the period): 40, 80, 160 ms
/// between one run's failure and the next run's start (never less; at most a second more).
#[test]
fn restarts_are_spaced_by_the_backoff() {
    let pool = pool(2);
    let scope = pool.scope();
    let starts = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let record = starts.clone();
    let policy = SupervisorPolicy::new(3, Duration::from_secs(60)).backoff(
        RetryPolicy::new(0)
            .initial_backoff(Duration::from_millis(40))
            .multiplier(2.0)
            .jitter(false),
    );
    let handle = scope.supervise(policy, move || {
        record.lock().push(Instant::now());
        async { Err::<(), _>("fails at once") }
    });
    let exit = pool.block_on(within(10, "supervisor", handle));
    assert!(
        matches!(exit, SupervisorExit::GaveUp { restarts: 3, .. }),
        "{exit:?}"
    );
    let starts = starts.lock();
    assert_eq!(starts.len(), 4);
    for (k, pair) in starts.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let backoff = Duration::from_millis(40 << k);
        assert!(
            gap >= backoff && gap < backoff + Duration::from_secs(1),
            "gap before restart {k}: {gap:?}, backoff {backoff:?}"
        );
    }
}

/// `stop()` cancels the running run (its future is dropped), the handle resolves `Stopped`,
/// and nothing is started again.
#[test]
fn stop_ends_with_stopped_and_no_further_restart() {
    let pool = pool(2);
    let scope = pool.scope();
    let (count, seen) = runs();
    let dropped = Arc::new(Mutex::new(Vec::new()));
    let flags = dropped.clone();
    let handle = scope.supervise(quick(10), move || {
        count.fetch_add(1, Ordering::SeqCst);
        let (guard, flag) = drop_flag();
        flags.lock().push(flag);
        async move {
            let _guard = guard;
            std::future::pending::<Result<(), String>>().await
        }
    });
    assert!(eventually(Duration::from_secs(5), || seen
        .load(Ordering::SeqCst)
        == 1));
    handle.stop();
    let restarts_before = handle.restarts();
    assert_eq!(
        pool.block_on(within(5, "stopped supervisor", handle)),
        SupervisorExit::Stopped
    );
    assert!(
        dropped.lock()[0].load(Ordering::SeqCst),
        "the run was not dropped"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(seen.load(Ordering::SeqCst), 1, "a run started after stop()");
    assert_eq!(restarts_before, 0);
    assert_eq!(scope.live_tasks(), 0);
}

/// `stop()` during the backoff before a restart: `Stopped` at once, no further run.
#[test]
fn stop_during_the_backoff_starts_nothing() {
    let pool = pool(2);
    let scope = pool.scope();
    let (count, seen) = runs();
    let policy = SupervisorPolicy::new(5, Duration::from_secs(60)).backoff(fixed(60_000));
    let mut handle = scope.supervise(policy, move || {
        count.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>("fails") }
    });
    assert!(eventually(Duration::from_secs(5), || seen
        .load(Ordering::SeqCst)
        == 1));
    std::thread::sleep(Duration::from_millis(20));
    handle.stop();
    let started = Instant::now();
    assert_eq!(
        pool.block_on(within(5, "stopped supervisor", &mut handle)),
        SupervisorExit::Stopped
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(handle.restarts(), 0, "a restart counted after stop()");
    assert_eq!(pool.metrics_fast().restarts, 0);
}

/// Cancelling the scope the supervisor was started on (or dropping it) stops it.
#[test]
fn cancelling_the_parent_scope_stops_it() {
    let pool = pool(2);
    let parent = pool.scope();
    let (guard, dropped) = drop_flag();
    let guard = Arc::new(Mutex::new(Some(guard)));
    let handle = parent.supervise(quick(10), move || {
        let guard = guard.lock().take();
        async move {
            let _guard = guard;
            std::future::pending::<Result<(), String>>().await
        }
    });
    assert!(eventually(Duration::from_secs(5), || parent.live_tasks() == 2));
    parent.cancel();
    assert_eq!(
        pool.block_on(within(5, "supervisor of a cancelled scope", handle)),
        SupervisorExit::Stopped
    );
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(parent.live_tasks(), 0);

    // Dropping the scope cancels it too, with the supervisor's handle still held.
    let parent = pool.scope();
    let handle = parent.supervise(quick(10), std::future::pending::<Result<(), String>>);
    drop(parent);
    assert_eq!(
        pool.block_on(within(5, "supervisor of a dropped scope", handle)),
        SupervisorExit::Stopped
    );
}

/// A run that returns `Ok(())` ends the supervisor: `Completed`, no restart.
#[test]
fn completed_when_the_task_returns_ok() {
    let pool = pool(2);
    let scope = pool.scope();
    let (count, seen) = runs();
    let handle = scope.supervise(quick(10), move || {
        count.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<(), String>(())
        }
    });
    assert_eq!(
        pool.block_on(within(5, "supervisor", handle)),
        SupervisorExit::Completed
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(pool.metrics_fast().restarts, 0);
}

/// `PoolMetrics::restarts` counts the restarts of every supervisor on the pool, as their
/// handles do.
#[test]
fn metrics_count_restarts_like_the_handle() {
    let pool = pool(2);
    let scope = pool.scope();
    let first = scope.supervise(quick(4), || async { Err::<(), _>("down") });
    let (count, _) = runs();
    let second = scope.supervise(quick(10), move || {
        let run = count.fetch_add(1, Ordering::SeqCst);
        async move { if run < 2 { Err("flaky") } else { Ok(()) } }
    });
    let (mut first, mut second) = (first, second);
    let exits = pool.block_on(within(10, "supervisors", async {
        ((&mut first).await, (&mut second).await)
    }));
    assert!(
        matches!(exits.0, SupervisorExit::GaveUp { restarts: 4, .. }),
        "{exits:?}"
    );
    assert_eq!(exits.1, SupervisorExit::Completed);
    assert_eq!((first.restarts(), second.restarts()), (4, 2));
    assert_eq!(
        pool.metrics_fast().restarts,
        u64::from(first.restarts() + second.restarts())
    );
}

/// `scope.wait()` waits for a supervisor, backoff gaps included.
#[test]
fn wait_covers_the_supervisor_between_runs() {
    let pool = pool(2);
    let scope = pool.scope();
    let (count, seen) = runs();
    let policy = SupervisorPolicy::new(5, Duration::from_secs(60)).backoff(fixed(50));
    let handle = scope.supervise(policy, move || {
        let run = count.fetch_add(1, Ordering::SeqCst);
        async move { if run < 2 { Err("flaky") } else { Ok(()) } }
    });
    pool.block_on(within(10, "scope.wait()", scope.wait()));
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "wait() returned before the last run"
    );
    assert!(handle.is_finished() || eventually(Duration::from_secs(1), || handle.is_finished()));
    assert_eq!(pool.block_on(handle), SupervisorExit::Completed);
}

/// A pool with room for one task still runs a supervised task: the supervisor itself takes
/// no slot. A run past `task_timeout` is a failure like any other.
#[test]
fn runs_on_a_pool_with_room_for_one_task_and_times_out_runs() {
    let pool = ThreadPoolInner::with_config(Config {
        num_threads: 1,
        max_pending: Some(1),
        enable_work_stealing: true,
        task_timeout: Some(Duration::from_millis(30)),
    });
    let scope = pool.scope();
    let handle = scope.supervise(quick(2), || async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok::<(), String>(())
    });
    assert_eq!(
        pool.block_on(within(10, "supervisor on a one-slot pool", handle)),
        SupervisorExit::GaveUp {
            restarts: 2,
            last: SupervisedFailure::TimedOut,
        }
    );
}

/// Closing the scope stops the supervisor at its next restart; the running run goes on.
#[test]
fn closing_the_scope_stops_at_the_next_restart() {
    let pool = pool(2);
    let scope = pool.scope();
    let (count, seen) = runs();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = Arc::new(Mutex::new(rx));
    let handle = scope.supervise(quick(10), move || {
        count.fetch_add(1, Ordering::SeqCst);
        let rx = rx.clone();
        async move {
            while rx.lock().try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err::<(), _>("failed after close")
        }
    });
    assert!(eventually(Duration::from_secs(5), || seen
        .load(Ordering::SeqCst)
        == 1));
    scope.close();
    tx.send(()).unwrap();
    assert_eq!(
        pool.block_on(within(5, "supervisor of a closed scope", handle)),
        SupervisorExit::Stopped
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}
