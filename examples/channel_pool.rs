//! A long-running worker pool fed by a channel, without hand-written workers or connectors:
//! producers send jobs into a bounded channel and feel backpressure, the pool processes them
//! with bounded concurrency, results flow out as they finish, and closing the channel drains
//! the pool cleanly.
//!
//! Run with `cargo run --release --example channel_pool`.

use std::time::Duration;

use async_rayon::{Scope, ThreadPoolInner};
use futures::StreamExt;

#[derive(Debug)]
struct Job {
    id: u64,
    payload: String,
}

async fn process(job: Job) -> Result<usize, String> {
    tokio::time::sleep(Duration::from_millis(2 + job.id % 5)).await;
    if job.id.is_multiple_of(97) {
        return Err(format!("job {} rejected by the backend", job.id));
    }
    Ok(job.payload.len())
}

#[tokio::main]
async fn main() {
    let pool = ThreadPoolInner::new(4, Some(500));
    let scope = Scope::new(pool.clone());
    let (jobs_tx, mut jobs_rx) = tokio::sync::mpsc::channel::<Job>(64);

    // Three producers; each blocks on send while the pool is saturated.
    let producers: Vec<_> = (0..3u64)
        .map(|p| {
            let tx = jobs_tx.clone();
            tokio::spawn(async move {
                for i in 0..500u64 {
                    let id = p * 1_000 + i;
                    let job = Job {
                        id,
                        payload: format!("payload-{id}"),
                    };
                    if tx.send(job).await.is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    drop(jobs_tx); // the stream ends when every producer is done

    let jobs = futures::stream::poll_fn(move |cx| jobs_rx.poll_recv(cx));
    let mut results = scope.stream_process_stream(jobs, 100, process);
    let (mut ok, mut failed, mut bytes) = (0, 0, 0);
    while let Some(r) = results.next().await {
        match r {
            Ok(Ok(n)) => {
                ok += 1;
                bytes += n;
            }
            Ok(Err(e)) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("{e}");
                }
            }
            Err(e) => eprintln!("task error: {e}"),
        }
    }
    for p in producers {
        p.await.expect("producer");
    }
    println!("channel pool: {ok} ok, {failed} failed, {bytes} payload bytes");
    pool.shutdown().await;
}
