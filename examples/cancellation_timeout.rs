//! Cancellation and timeouts: cancel a task, bound an await, give every task a deadline, and
//! cancel a whole scope.
//!
//! Run with `cargo run --release --example cancellation_timeout`.

use std::time::{Duration, Instant};

use async_rayon::{Config, Scope, TaskError, ThreadPoolInner};

async fn long_running_task() -> &'static str {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    "finished"
}

#[tokio::main]
async fn main() {
    let pool = ThreadPoolInner::with_config(Config {
        task_timeout: Some(Duration::from_millis(200)),
        ..Config::io_bound()
    });
    let scope = Scope::new(pool.clone());

    // Cancel anytime: the task is dropped at once, not when its sleep ends.
    let handle = scope.spawn_with_handle(async move { long_running_task().await });
    handle.cancel();
    println!("cancelled: {:?}", handle.await);

    // Or bound the wait: the task is cancelled when the wait times out.
    let handle = scope.spawn_with_handle(long_running_task());
    let t = Instant::now();
    let result = handle.await_timeout(Duration::from_millis(50)).await;
    println!(
        "await_timeout(50 ms): {result:?} after {} ms",
        t.elapsed().as_millis()
    );

    // The pool's task_timeout (200 ms here) applies to every task from its first poll.
    let result = scope.spawn_with_handle(long_running_task()).await;
    println!("task_timeout(200 ms): {result:?}");
    assert_eq!(result, Err(TaskError::TimedOut));

    // Cooperative code can watch the task's token.
    let handle = scope.spawn_with_handle(async { 42 });
    let token = handle.cancellation_token();
    println!("token cancelled before cancel(): {}", token.is_cancelled());

    // Cancelling a scope cancels its tasks and no others.
    let batch = Scope::new(pool.clone());
    let handles: Vec<_> = (0..100)
        .map(|_| batch.spawn_with_handle(long_running_task()))
        .collect();
    batch.cancel();
    let results = batch.join_handles(handles).await;
    let cancelled = results
        .iter()
        .filter(|r| r == &&Err(TaskError::Cancelled))
        .count();
    println!(
        "scope.cancel(): {cancelled}/100 cancelled; other scope still works: {:?}",
        handle.await
    );

    pool.shutdown().await;
}
