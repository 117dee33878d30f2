//! Stream processing for large datasets with `stream_process`: a million
//! simulated requests, 10 000 in flight, memory flat whatever the item count.
//!
//! Run with `cargo run --release --example stream_processing [items]`.

use std::time::{Duration, Instant};

use async_rayon::{Config, Scope, ThreadPoolInner};
use futures::StreamExt;

fn main() {
    let items: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let pool = ThreadPoolInner::with_config(Config::io_bound());
    let scope = Scope::new(pool.clone());
    // The URLs are generated lazily: nothing holds all of them.
    let urls = (0..items).map(|i| format!("https://example.invalid/item/{i}"));

    let start = Instant::now();
    let mut results = scope.stream_process(urls, 10_000, |url| {
        Box::pin(async move {
            // Stands in for a network call.
            tokio::time::sleep(Duration::from_millis(5)).await;
            url.len()
        })
    });
    let (mut ok, mut bytes) = (0u64, 0usize);
    pool.block_on(async {
        while let Some(r) = results.next().await {
            if let Ok(len) = r {
                ok += 1;
                bytes += len;
            }
            if ok % 200_000 == 0 {
                println!("{ok} done, {:.1} s", start.elapsed().as_secs_f64());
            }
        }
    });
    println!(
        "stream_process: {ok}/{items} ok ({bytes} bytes of URLs) in {:.2} s",
        start.elapsed().as_secs_f64()
    );
}
