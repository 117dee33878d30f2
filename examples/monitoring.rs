//! Real-time monitoring with `start_monitoring`: a callback every 200 ms
//! prints load, utilization, pressure and success rate while a workload runs.
//!
//! Run with `cargo run --release --example monitoring`.

use std::time::Duration;

use async_rayon::{Scope, ThreadPoolInner};

fn main() {
    let pool = ThreadPoolInner::new(8, Some(1_000));

    let monitor = pool.start_monitoring(Duration::from_millis(200), |metrics| {
        println!(
            "Active: {:>5}, Queue: {:>5}, Utilization: {:>5.1}%, Pressure: {:.2}, Success: {:.1}%, p99 run {:?}",
            metrics.active_tasks,
            metrics.queued_tasks,
            metrics.utilization() * 100.0,
            metrics.queue_pressure(),
            metrics.success_rate() * 100.0,
            metrics.run_time.p99,
        );
    });

    // Do work: 50 000 tasks of 5-50 ms, at most 1 000 at once, a few of which fail.
    let scope = Scope::new(pool.clone());
    pool.block_on(async {
        for i in 0..50_000u64 {
            let permit = scope.reserve().await.expect("pool is running");
            drop(permit.spawn_with_handle(async move {
                tokio::time::sleep(Duration::from_millis(5 + i % 46)).await;
                assert!(i % 997 != 0, "simulated failure");
            }));
        }
        scope.wait().await;
    });

    ThreadPoolInner::stop_monitoring(monitor);
    println!("final: {:?}", pool.metrics_fast());
}
