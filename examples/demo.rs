//! The main demo: fetch 100 000 URLs from a real HTTP server on 127.0.0.1 through an I/O
//! pool, hash each body on a CPU pool, retry failed requests, and watch it happen.
//!
//! - The server (hyper, on loopback) answers `/item/N` after 1-10 ms and fails with 503 at
//!   `--fail-rate`.
//! - Stage 1, I/O pool: `stream_process` with `--concurrency` requests in flight under
//!   `--max-pending`, each retried with backoff (`with_retry`).
//! - Stage 2, CPU pool: each body is hashed (FNV-1a, a stand-in for parsing).
//! - A progress bar shows rate and ETA, with live metrics from `start_monitoring`; a summary
//!   table follows.
//!
//! Run with `cargo run --release --example demo` (`--help` for the flags).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use async_rayon::progress::{Progress, ProgressStreamExt};
use async_rayon::{
    Config, PoolMetrics, RetryPolicy, Scope, TaskError, ThreadPoolInner, with_retry,
};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

const USAGE: &str = "\
usage: demo [--items N] [--concurrency N] [--max-pending N] [--fail-rate F]

  --items N         URLs to fetch (default 100000)
  --concurrency N   requests in flight (default 1000)
  --max-pending N   the I/O pool's max_pending (default 2000)
  --fail-rate F     share of requests the server fails with 503, 0.0-1.0 (default 0.05)
  -h, --help        this text";

#[derive(Debug, Clone, Copy)]
struct Opts {
    items: u64,
    concurrency: usize,
    max_pending: usize,
    fail_rate: f64,
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        items: 100_000,
        concurrency: 1_000,
        max_pending: 2_000,
        fail_rate: 0.05,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |what: &str| format!("{flag}: {what}, got {value:?}");
        match flag.as_str() {
            "--items" => o.items = value.parse().map_err(|_| bad("expected a whole number"))?,
            "--concurrency" => {
                o.concurrency = value.parse().map_err(|_| bad("expected a whole number"))?
            }
            "--max-pending" => {
                o.max_pending = value.parse().map_err(|_| bad("expected a whole number"))?
            }
            "--fail-rate" => o.fail_rate = value.parse().map_err(|_| bad("expected a number"))?,
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    if o.concurrency == 0 || o.max_pending == 0 {
        return Err("--concurrency and --max-pending must be at least 1".into());
    }
    if !(0.0..1.0).contains(&o.fail_rate) {
        return Err(format!(
            "--fail-rate must be in [0, 1), got {}",
            o.fail_rate
        ));
    }
    Ok(o)
}

/// The server: `/item/N` answers after 1-10 ms with a 2 KiB body, or 503 at `fail_rate`.
async fn start_server(fail_rate: f64) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counter = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let ticket = counter.fetch_add(1, Relaxed);
                    handle(req, ticket, fail_rate)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn handle(
    req: Request<Incoming>,
    ticket: u64,
    fail_rate: f64,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let n: u64 = req
        .uri()
        .path()
        .trim_start_matches("/item/")
        .parse()
        .unwrap_or(0);
    let r = splitmix(ticket);
    tokio::time::sleep(Duration::from_millis(1 + r % 10)).await;
    let fail = ((r >> 16) % 10_000) as f64 / 10_000.0 < fail_rate;
    let resp = if fail {
        Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Full::new(Bytes::from_static(b"try again")))
    } else {
        let body: Vec<u8> = (0..2048u64)
            .map(|k| (n.wrapping_mul(31) ^ k) as u8)
            .collect();
        Response::builder().body(Full::new(Bytes::from(body)))
    };
    Ok(resp.unwrap_or_else(|_| Response::new(Full::default())))
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[derive(Debug)]
enum FetchError {
    Status(StatusCode),
    Http(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Status(s) => write!(f, "HTTP {s}"),
            FetchError::Http(e) => write!(f, "{e}"),
        }
    }
}

async fn fetch(
    client: Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    n: u64,
) -> Result<Bytes, FetchError> {
    let uri = format!("http://{addr}/item/{n}")
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| FetchError::Http(e.to_string()))?;
    let resp = client
        .get(uri)
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(FetchError::Status(resp.status()));
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    Ok(body.to_bytes())
}

/// FNV-1a, a few rounds: a stand-in for parsing the body.
fn digest(body: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for _ in 0..8 {
        for b in body {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn live_line(m: &PoolMetrics) -> String {
    format!(
        "io act {} q {} util {:.0}% ok {:.1}% retry {}",
        m.active_tasks,
        m.queued_tasks,
        m.utilization() * 100.0,
        m.success_rate() * 100.0,
        m.retries
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(o).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(o: Opts) -> Result<(), Box<dyn std::error::Error>> {
    let addr = start_server(o.fail_rate).await?;
    // Built inside the runtime: the pools use its timers and I/O.
    let io_pool = ThreadPoolInner::builder()
        .name("io")
        .config(Config {
            max_pending: Some(o.max_pending),
            ..Config::io_bound()
        })
        .task_timeout(Duration::from_secs(10))
        .build()?;
    let cpu_pool = ThreadPoolInner::builder()
        .name("cpu")
        .config(Config::cpu_bound())
        .build()?;
    let (io, cpu) = (Scope::new(io_pool.clone()), Scope::new(cpu_pool.clone()));
    println!(
        "server on http://{addr}, fail rate {:.0}%; {} items, {} in flight, io pool {} threads \
         (max_pending {}), cpu pool {} threads",
        o.fail_rate * 100.0,
        o.items,
        o.concurrency,
        io_pool.num_threads(),
        o.max_pending,
        cpu_pool.num_threads()
    );

    let progress = Progress::new(o.items);
    let p = progress.clone();
    let monitor = io_pool.start_monitoring(Duration::from_millis(250), move |m| {
        p.set_message(live_line(m))
    });

    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(o.concurrency)
        .build_http();
    let policy = RetryPolicy::new(4).initial_backoff(Duration::from_millis(5));
    let fetched = io.stream_process(
        0..o.items,
        o.concurrency,
        with_retry(policy, move |n| fetch(client.clone(), addr, n)),
    );
    let hashed = cpu.stream_process_stream(fetched, cpu_pool.num_threads() * 4, |r| async move {
        r.map(|fetched| fetched.map(|body| digest(&body)))
    });

    let start = Instant::now();
    let mut outcomes: [u64; 6] = [0; 6]; // ok, failed after retries, panicked, cancelled, timed out, refused
    let mut checksum = 0u64;
    let mut last_failure = String::from("-");
    let mut results = hashed.with_progress(&progress);
    while let Some(r) = results.next().await {
        let k = match r {
            Ok(Ok(Ok(h))) => {
                checksum ^= h;
                0
            }
            Ok(Ok(Err(e))) => {
                last_failure = e.to_string();
                1
            }
            Err(e) | Ok(Err(e)) => match e {
                TaskError::Panicked(_) => 2,
                TaskError::Cancelled => 3,
                TaskError::TimedOut => 4,
                _ => 5,
            },
        };
        outcomes[k] += 1;
    }
    let elapsed = start.elapsed();
    ThreadPoolInner::stop_monitoring(monitor);
    progress.finish("done");
    let m = io_pool.metrics_fast();

    let rows = [
        ("items", format!("{}", o.items)),
        ("elapsed", format!("{:.2} s", elapsed.as_secs_f64())),
        (
            "throughput",
            format!("{:.0} items/s", o.items as f64 / elapsed.as_secs_f64()),
        ),
        (
            "request p50 / p99",
            format!(
                "{:.1?} / {:.1?} (incl. retries)",
                m.run_time.p50, m.run_time.p99
            ),
        ),
        (
            "queue wait p50 / p99",
            format!("{:.1?} / {:.1?}", m.queue_wait.p50, m.queue_wait.p99),
        ),
        ("ok", format!("{}", outcomes[0])),
        ("failed after retries", format!("{}", outcomes[1])),
        ("retries", format!("{}", m.retries)),
        ("last failure", last_failure),
        (
            "panicked / cancelled / timed out",
            format!("{} / {} / {}", outcomes[2], outcomes[3], outcomes[4]),
        ),
        ("refused (shutdown)", format!("{}", outcomes[5])),
        (
            "io pool utilization",
            format!("{:.0}%", m.utilization() * 100.0),
        ),
        ("peak RSS", format!("{:.1} MiB", peak_rss_mib())),
        ("checksum", format!("{checksum:016x}")),
    ];
    println!("\nsummary");
    println!("{}", "-".repeat(60));
    for (k, v) in rows {
        println!("{k:<34} {v}");
    }
    let all = outcomes.iter().sum::<u64>();
    if all != o.items {
        return Err(format!("{} items unaccounted for", o.items - all).into());
    }
    io_pool.shutdown_timeout(Duration::from_secs(5)).await;
    cpu_pool.shutdown_timeout(Duration::from_secs(5)).await;
    Ok(())
}
