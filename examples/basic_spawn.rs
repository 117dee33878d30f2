//! Basic spawn: 1 000 tasks on an I/O pool, each awaited through its handle, joined in order.
//!
//! Run with `cargo run --release --example basic_spawn`.

use std::time::Duration;

use async_rayon::{Config, Scope, ThreadPoolInner};

#[tokio::main]
async fn main() {
    let pool = ThreadPoolInner::with_config(Config::io_bound());
    let scope = Scope::new(pool.clone());

    let handles: Vec<_> = (0..1000)
        .map(|i| {
            scope.spawn_with_handle(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                i * 2
            })
        })
        .collect();

    let results = scope.join_handles(handles).await;
    println!("Processed: {}", results.len());
    assert!(results.iter().enumerate().all(|(i, r)| r == &Ok(i * 2)));

    pool.shutdown().await;
}
