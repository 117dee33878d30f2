//! A worker process of the Redis Streams job queue: takes jobs from the queue, runs each on
//! its pool (a few milliseconds of simulated work), prints a live line every second, and on
//! SIGTERM or Ctrl-C stops reading, gives held jobs `--grace-ms` to finish, hands the rest
//! back to the other workers and exits 0.
//!
//! Start a local server (`redis-server --port 6379`), then in three terminals:
//! ```text
//! cargo run --release --features redis --example queue_worker
//! cargo run --release --features redis --example queue_worker
//! cargo run --release --features redis --example queue_producer -- --jobs 100000
//! ```

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use async_rayon::ThreadPoolInner;
use async_rayon::queue::{Job, JobError, Producer, QueueConfig, Worker};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "\
usage: queue_worker [--url URL] [--queue NAME] [--concurrency N] [--work-ms MS]
                    [--claim-idle-ms MS] [--grace-ms MS] [--done-log FILE]
  --url            redis server (default redis://127.0.0.1:6379)
  --queue          queue name (default jobs)
  --concurrency    jobs held at once (default 64)
  --work-ms        simulated work per job (default 2)
  --claim-idle-ms  lease: another worker may take a job held this long without renewal
                   (default 30000)
  --grace-ms       at SIGTERM, time for held jobs to finish (default 5000)
  --done-log       append the id of every job that succeeded to FILE (one per line)";

struct Args {
    url: String,
    queue: String,
    concurrency: usize,
    work: Duration,
    claim_idle: Duration,
    grace: Duration,
    done_log: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        url: "redis://127.0.0.1:6379".into(),
        queue: "jobs".into(),
        concurrency: 64,
        work: Duration::from_millis(2),
        claim_idle: Duration::from_secs(30),
        grace: Duration::from_secs(5),
        done_log: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let ms = |v: &str| -> Result<Duration, String> {
            v.parse()
                .map(Duration::from_millis)
                .map_err(|_| format!("{flag}: not a number of milliseconds: {v:?}"))
        };
        match flag.as_str() {
            "--url" => a.url = value,
            "--queue" => a.queue = value,
            "--concurrency" => {
                a.concurrency = value
                    .parse()
                    .map_err(|_| format!("--concurrency: not a number: {value:?}"))?
            }
            "--work-ms" => a.work = ms(&value)?,
            "--claim-idle-ms" => a.claim_idle = ms(&value)?,
            "--grace-ms" => a.grace = ms(&value)?,
            "--done-log" => a.done_log = Some(value),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let cfg = QueueConfig::new(&args.url, &args.queue)
        .concurrency(args.concurrency)
        .claim_idle(args.claim_idle)
        .claim_interval((args.claim_idle / 6).max(Duration::from_millis(100)));
    let pool = ThreadPoolInner::builder()
        .name("queue_worker")
        .max_pending(args.concurrency.max(1_000))
        .build()?;
    let scope = pool.scope();
    let worker = Worker::connect(cfg.clone()).await?;
    let producer = Producer::connect(&cfg).await?;
    println!(
        "worker {} on {} queue {:?}",
        worker.consumer(),
        args.url,
        args.queue
    );

    // Live line: the pool's figures and the queue's.
    let (p, live_pool) = (producer.clone(), pool.clone());
    let live = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let m = live_pool.metrics_fast();
            match p.stats().await {
                Ok(s) => println!(
                    "done {} | running {} | queue backlog {} pending {} dead {}",
                    m.completed, m.active_tasks, s.backlog, s.pending, s.dead
                ),
                Err(e) => println!("done {} | queue unreachable: {e}", m.completed),
            }
        }
    });

    let log = match &args.done_log {
        Some(path) => Some(Arc::new(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ))),
        None => None,
    };
    let work = args.work;
    let mut term = signal(SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let report = worker
        .run_until(
            &scope,
            move |job: Job| {
                let log = log.clone();
                async move {
                    tokio::time::sleep(work).await;
                    if let Some(log) = log {
                        let mut f = log.lock().unwrap_or_else(|p| p.into_inner());
                        writeln!(f, "{}", job.id).map_err(|e| JobError::Retry(e.to_string()))?;
                    }
                    Ok::<(), JobError<String>>(())
                }
            },
            stop,
            args.grace,
        )
        .await?;
    live.abort();
    println!("stopped: {report:?}");
    pool.shutdown_timeout(Duration::from_secs(1)).await;
    Ok(())
}
