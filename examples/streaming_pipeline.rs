//! A multi-stage streaming pipeline with ordered output and a progress bar: stage A
//! "downloads", stage B "parses", stage C "stores", each bounded, and the final output comes
//! out in input order.
//!
//! Run with `cargo run --release --example streaming_pipeline [items]`.

use std::time::{Duration, Instant};

use async_rayon::progress::{Progress, ProgressStreamExt};
use async_rayon::{Scope, TaskError, ThreadPoolInner};
use futures::StreamExt;

fn main() {
    let items: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let pool = ThreadPoolInner::new(4, Some(2_000));
    let scope = Scope::new(pool.clone());

    let flatten =
        |r: Result<Result<u64, String>, TaskError>| r.map_err(|e| e.to_string()).and_then(|r| r);

    // Stage A: I/O-like, 200 in flight.
    let downloaded = scope.stream_process(0..items, 200, |i| async move {
        tokio::time::sleep(Duration::from_micros(500 + i % 1_000)).await;
        Ok::<u64, String>(i)
    });
    // Stage B: CPU-like, 8 in flight.
    let parsed = scope.stream_process_stream(downloaded, 8, move |r| async move {
        flatten(r).map(|i| (0..200u64).fold(i, |a, k| a.rotate_left(5) ^ k))
    });
    // Stage C: I/O-like, 100 in flight; output in input order.
    let stored = scope
        .stream_process_stream(parsed, 100, move |r| async move {
            tokio::time::sleep(Duration::from_micros(200)).await;
            flatten(r)
        })
        .ordered();

    let progress = Progress::new(items);
    let start = Instant::now();
    let out: Vec<_> = pool.block_on(stored.with_progress(&progress).collect());
    progress.finish("stored");
    let ok = out.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    println!(
        "pipeline: {ok}/{items} stored in input order in {:.2} s",
        start.elapsed().as_secs_f64()
    );
}
