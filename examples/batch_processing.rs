//! Batch processing with `batch_process`: 100 000 items, 50 batches in flight.
//!
//! Run with `cargo run --release --example batch_processing`.

use std::time::Instant;

use async_rayon::{Config, Scope, ThreadPoolInner};

/// Some CPU work per item.
async fn process_item(item: u64) -> u64 {
    (0..100).fold(item, |acc, k| {
        acc.wrapping_mul(6364136223846793005).wrapping_add(k)
    })
}

fn main() {
    let pool = ThreadPoolInner::with_config(Config::cpu_bound());
    let scope = Scope::new(pool.clone());
    let data: Vec<u64> = (0..100_000).collect();

    let start = Instant::now();
    let results = pool.block_on(scope.batch_process(
        data,
        50, // max concurrent batches
        |item| Box::pin(async move { process_item(item).await }),
    ));
    let ok = results.iter().filter(|r| r.is_ok()).count();
    println!(
        "batch_process: {ok}/{} items ok in {:.1} ms on {} threads",
        results.len(),
        start.elapsed().as_secs_f64() * 1e3,
        pool.num_threads()
    );
}
