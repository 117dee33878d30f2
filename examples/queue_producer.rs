//! Adds jobs to the Redis Streams job queue, in pipelined batches, then prints the queue's
//! figures. See `queue_worker.rs` for the workers.
//!
//! `cargo run --release --features redis --example queue_producer -- --jobs 100000`

use std::time::Instant;

use async_rayon::queue::{Producer, QueueConfig};

const USAGE: &str = "\
usage: queue_producer [--url URL] [--queue NAME] [--jobs N] [--batch N]
  --url    redis server (default redis://127.0.0.1:6379)
  --queue  queue name (default jobs)
  --jobs   jobs to add (default 10000)
  --batch  jobs per pipelined round trip (default 500)";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut url, mut queue, mut jobs, mut batch) = (
        "redis://127.0.0.1:6379".to_string(),
        "jobs".to_string(),
        10_000u64,
        500u64,
    );
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            return Ok(());
        }
        let Some(value) = args.next() else {
            eprintln!("error: {flag} needs a value\n{USAGE}");
            std::process::exit(2);
        };
        let number = |v: &str| {
            v.parse::<u64>().unwrap_or_else(|_| {
                eprintln!("error: {flag}: not a number: {v:?}");
                std::process::exit(2)
            })
        };
        match flag.as_str() {
            "--url" => url = value,
            "--queue" => queue = value,
            "--jobs" => jobs = number(&value),
            "--batch" => batch = number(&value).max(1),
            other => {
                eprintln!("error: unknown argument {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let producer = Producer::connect(&QueueConfig::new(&url, &queue)).await?;
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < jobs {
        let n = batch.min(jobs - sent);
        producer
            .enqueue_many((sent..sent + n).map(|i| i.to_le_bytes()))
            .await?;
        sent += n;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "enqueued {jobs} jobs in {secs:.2} s ({:.0} jobs/s); {:?}",
        jobs as f64 / secs.max(1e-9),
        producer.stats().await?
    );
    Ok(())
}
