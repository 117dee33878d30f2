//! Autoscale: a pool that sizes itself between 1 and 4 threads. A backlog of tasks that block
//! their thread makes it grow one thread at a time; once the backlog is gone and the extra
//! workers sit idle, it shrinks back to 1. `resize` still sets the size by hand, within range.
//!
//! Run with `cargo run --example autoscale`.

use std::time::{Duration, Instant};

use async_rayon::ThreadPoolInner;

const TASKS: usize = 400;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = ThreadPoolInner::builder()
        .num_threads(1)
        .thread_name("scaled")
        .autoscale(1, 4)
        // Grow after 20 ms saturated (tasks queued, no worker idle); shrink after 300 ms idle.
        .autoscale_windows(Duration::from_millis(20), Duration::from_millis(300))
        .build()?;
    println!("start: {} thread(s)", pool.num_threads());

    // Each task blocks its worker for 5 ms: 2 s of work for a single thread.
    let scope = pool.scope();
    let start = Instant::now();
    let handles: Vec<_> = (0..TASKS)
        .map(|i| {
            scope.spawn_with_handle(async move {
                std::thread::sleep(Duration::from_millis(5));
                i
            })
        })
        .collect();

    // Watch the size while the backlog drains.
    let mut seen = pool.num_threads();
    let mut peak = seen;
    loop {
        let drained = pool.pending_tasks() == 0;
        let now = pool.num_threads();
        if now != seen {
            println!("threads: {seen} -> {now}");
            seen = now;
            peak = peak.max(now);
        }
        if drained {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let results = pool.block_on(scope.join_handles(handles));
    let ok = results.iter().filter(|r| r.is_ok()).count();
    println!(
        "{ok}/{TASKS} tasks done in {:?} (one thread alone would take ~2 s), peak {peak} threads",
        start.elapsed()
    );

    // Idle now: after a 300 ms idle window the extra workers retire.
    let idle = Instant::now();
    while pool.num_threads() > 1 && idle.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = pool.metrics_fast().num_threads;
    println!("idle for {:?}: {after} thread(s)", idle.elapsed());

    // By hand: resize works too, within the autoscale range (1..=4); the autoscaler keeps
    // watching and would retire idle threads again after its window.
    pool.resize(3)?;
    println!("resize(3): {} threads", pool.num_threads());
    pool.resize(1)?;
    let shrinking = Instant::now();
    while pool.num_threads() > 1 && shrinking.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("resize(1): {} thread(s)", pool.num_threads());
    if let Err(e) = pool.resize(5) {
        println!("rejected: {e}");
    }

    pool.block_on(pool.shutdown());

    if ok != TASKS || peak != 4 || after != 1 {
        return Err(
            format!("expected {TASKS} ok, peak 4, back to 1; got {ok}, {peak}, {after}").into(),
        );
    }
    println!("grew to {peak} threads, shrank back to {after}");
    Ok(())
}
