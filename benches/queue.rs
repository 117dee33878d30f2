//! The Redis Streams job queue against a raw redis-rs loop doing the same work, on a
//! redis-server of its own: `cargo bench --features redis --bench queue`.
//!
//! Raw loop: pipelined XADD, `XREADGROUP COUNT 100`, one `MULTI` of XACK + XDEL per read,
//! jobs run inline (no-op) or as tokio tasks with at most `concurrency` in flight (sleep).
//! Queue: `Worker::run_until` on a pool with the same concurrency. Both start with the same
//! jobs already enqueued and stop when every job is acknowledged; rounds rotate which system
//! runs first. Prints, per workload and system, the median jobs/s and the per-job latency
//! (enqueue to finish) p50 / p99 over the rounds:
//!
//! ```text
//! queue <workload> <system> jobs_per_s=<n> p50_ms=<x> p99_ms=<y> rounds=<n>
//! ```
//!
//! `ROUNDS=<n>` (default 3), `JOBS=<n>` (default 20000).

#[allow(dead_code)] // the bench uses only part of the test helper
#[path = "../tests/common/redis.rs"]
mod redis_server;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_rayon::ThreadPoolInner;
use async_rayon::queue::{Job, JobError, Producer, QueueConfig, Worker};
use redis::AsyncCommands;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis_server::RedisServer;

#[derive(Clone, Copy)]
enum Work {
    Noop,
    Sleep1ms,
}

/// Nanoseconds since `epoch`, as the payload's 8 bytes.
fn stamp(epoch: Instant) -> [u8; 8] {
    (epoch.elapsed().as_nanos() as u64).to_le_bytes()
}

fn latency(epoch: Instant, payload: &[u8]) -> Duration {
    let sent = u64::from_le_bytes(payload[..8].try_into().unwrap_or([0; 8]));
    epoch.elapsed().saturating_sub(Duration::from_nanos(sent))
}

/// One run: returns (jobs/s, latencies).
async fn run_queue(
    url: &str,
    name: &str,
    jobs: usize,
    work: Work,
    concurrency: usize,
    epoch: Instant,
) -> (f64, Vec<Duration>) {
    let cfg = QueueConfig::new(url, name).concurrency(concurrency);
    let producer = Producer::connect(&cfg).await.expect("producer");
    enqueue(&producer, jobs, epoch).await;
    let pool = ThreadPoolInner::builder()
        .num_threads(2)
        .max_pending(concurrency.max(1_000))
        .build()
        .expect("pool");
    let scope = pool.scope();
    let lat = Arc::new(Mutex::new(Vec::with_capacity(jobs)));
    let l = lat.clone();
    let done = lat.clone();
    let start = Instant::now();
    let worker = Worker::connect(cfg).await.expect("worker");
    let p2 = producer.clone();
    worker
        .run_until(
            &scope,
            move |job: Job| {
                let l = l.clone();
                async move {
                    if let Work::Sleep1ms = work {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    l.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(latency(epoch, &job.payload));
                    Ok::<(), JobError<String>>(())
                }
            },
            async move {
                loop {
                    if done.lock().unwrap_or_else(|p| p.into_inner()).len() >= jobs {
                        let s = p2.stats().await.expect("stats");
                        if s.pending == 0 && s.backlog == 0 {
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            },
            Duration::from_secs(5),
        )
        .await
        .expect("run");
    let secs = start.elapsed().as_secs_f64();
    let lat = std::mem::take(&mut *lat.lock().unwrap_or_else(|p| p.into_inner()));
    (jobs as f64 / secs, lat)
}

async fn enqueue(producer: &Producer, jobs: usize, epoch: Instant) {
    let mut sent = 0;
    while sent < jobs {
        let n = 1_000.min(jobs - sent);
        producer
            .enqueue_many((0..n).map(|_| stamp(epoch)))
            .await
            .expect("enqueue");
        sent += n;
    }
}

/// The raw redis-rs loop.
async fn run_raw(
    url: &str,
    name: &str,
    jobs: usize,
    work: Work,
    concurrency: usize,
    epoch: Instant,
) -> (f64, Vec<Duration>) {
    let cfg = QueueConfig::new(url, name);
    let producer = Producer::connect(&cfg).await.expect("producer");
    let key = cfg.jobs_key();
    let client = redis::Client::open(url).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let _: redis::RedisResult<()> = con.xgroup_create_mkstream(&key, "workers", "0").await;
    enqueue(&producer, jobs, epoch).await;
    let start = Instant::now();
    let mut lat = Vec::with_capacity(jobs);
    let mut acked = 0;
    let mut in_flight = tokio::task::JoinSet::new();
    let mut finished: Vec<String> = Vec::new();
    while acked < jobs {
        let room = concurrency.saturating_sub(in_flight.len()).min(100);
        if room > 0 {
            let options = StreamReadOptions::default()
                .group("workers", "raw")
                .count(room)
                .block(if in_flight.is_empty() { 100 } else { 1 });
            let reply: Option<StreamReadReply> = con
                .xread_options(&[&key], &[">"], &options)
                .await
                .expect("XREADGROUP");
            for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                let payload: Vec<u8> = entry.get("payload").unwrap_or_default();
                match work {
                    Work::Noop => {
                        lat.push(latency(epoch, &payload));
                        finished.push(entry.id);
                    }
                    Work::Sleep1ms => {
                        in_flight.spawn(async move {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            (entry.id, latency(epoch, &payload))
                        });
                    }
                }
            }
        }
        while let Some(Ok((id, l))) = in_flight.try_join_next() {
            lat.push(l);
            finished.push(id);
        }
        if finished.is_empty()
            && !in_flight.is_empty()
            && room == 0
            && let Some(Ok((id, l))) = in_flight.join_next().await
        {
            lat.push(l);
            finished.push(id);
        }
        if !finished.is_empty() {
            let ids: Vec<&str> = finished.iter().map(String::as_str).collect();
            let _: (usize, usize) = redis::pipe()
                .atomic()
                .xack(&key, "workers", &ids)
                .xdel(&key, &ids)
                .query_async(&mut con)
                .await
                .expect("ack");
            acked += finished.len();
            finished.clear();
        }
    }
    (jobs as f64 / start.elapsed().as_secs_f64(), lat)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let jobs: usize = std::env::var("JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let server = RedisServer::start();
    let url = server.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let epoch = Instant::now();
    let mut seq = 0;
    for (workload, work, concurrency) in [
        ("noop", Work::Noop, 256),
        ("sleep_1ms_c1000", Work::Sleep1ms, 1_000),
    ] {
        let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut lats: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        for round in 0..=rounds {
            for k in 0..2 {
                let system = (k + round) % 2;
                seq += 1;
                let name = format!("bench{seq}");
                let (rate, lat) = rt.block_on(async {
                    if system == 0 {
                        run_raw(&url, &name, jobs, work, concurrency, epoch).await
                    } else {
                        run_queue(&url, &name, jobs, work, concurrency, epoch).await
                    }
                });
                // Round 0 is a warm-up.
                if round > 0 {
                    rates[system].push(rate);
                    lats[system].extend(lat);
                }
            }
        }
        for (system, label) in [(0, "raw_redis_rs"), (1, "async_rayon_queue")] {
            let mut l = std::mem::take(&mut lats[system]);
            l.sort();
            println!(
                "queue {workload} {label} jobs_per_s={:.0} p50_ms={:.2} p99_ms={:.2} rounds={rounds}",
                median(rates[system].clone()),
                percentile(&l, 0.50).as_secs_f64() * 1e3,
                percentile(&l, 0.99).as_secs_f64() * 1e3,
            );
        }
        println!(
            "queue {workload} ratio async_rayon_queue/raw_redis_rs={:.2}",
            median(rates[1].clone()) / median(rates[0].clone())
        );
    }
}
