//! A synchronous program feeding and draining a bulk call with blocking calls, from a source
//! that is not `Send`: no async main, no connector tasks.
//!
//! A plain thread owns the `!Send` source and pushes into a bounded channel (blocking when the
//! pool is busy: backpressure); the main thread drains results as a blocking iterator.
//!
//! Run with `cargo run --release --example sync_feeder`.

use std::rc::Rc;
use std::time::Duration;

use async_rayon::{Scope, ThreadPoolInner};

fn main() {
    let pool = ThreadPoolInner::new(2, Some(1_000));
    let scope = Scope::new(pool.clone());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(64);

    let producer = std::thread::spawn(move || {
        // Rc makes this source !Send: it stays on this thread.
        let source = Rc::new((0..10_000u64).collect::<Vec<_>>());
        for &item in source.iter() {
            if tx.blocking_send(item).is_err() {
                break;
            }
        }
    });

    let source = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let results = scope
        .stream_process_stream(source, 100, |item| async move {
            tokio::time::sleep(Duration::from_micros(100)).await;
            item * 2
        })
        .ordered();
    // Entering the pool's runtime lets the blocking iterator drive tokio timers.
    let _enter = pool.runtime_handle().enter();
    let mut sum = 0u64;
    for r in futures::executor::block_on_stream(results) {
        sum += r.expect("item ran");
    }
    producer.join().expect("producer finished");
    println!("sync feeder: sum of doubled items = {sum}");
    assert_eq!(sum, 2 * (0..10_000u64).sum::<u64>());
}
