//! An HTTP service whose handlers run their work on an async_rayon pool: load shedding with
//! `try_spawn_with_handle` (503 + `Retry-After` at once, never queueing), task timeouts as
//! 504, panics as 500, cancellation of the task when the client goes away, Prometheus metrics
//! and a health check from the same router, and a graceful shutdown on SIGTERM or Ctrl-C.
//!
//! Run with
//! `cargo run --release --example http_service -- --addr 127.0.0.1:3000 --max-pending 256 --task-timeout-ms 2000`,
//! then for example:
//!
//! ```text
//! curl 'http://127.0.0.1:3000/work?ms=50&cpu_us=200'   # {"ms":50,"cpu_us":200}
//! curl 'http://127.0.0.1:3000/work?ms=5000'            # 504 after --task-timeout-ms
//! curl 'http://127.0.0.1:3000/work?panic=1'            # 500, the service carries on
//! curl http://127.0.0.1:3000/metrics                   # async_rayon_tasks_*_total, ...
//! curl http://127.0.0.1:3000/healthz                   # ok (503 once shutdown began)
//! ```
//!
//! The first line on stdout is `listening on http://ADDR` (the bound address, so
//! `--addr 127.0.0.1:0` picks a free port). On SIGTERM or Ctrl-C the service reports 503 on
//! `/healthz`, stops accepting, lets requests in flight finish for up to `--grace-ms`, shuts
//! the pool down, prints one `shutdown: ...` line and exits 0.
//!
//! `--stack tower` serves the same `/work` on plain tokio instead, bounded by tower's
//! `ConcurrencyLimit` + `LoadShed` (and `Timeout`) layers: the stack a service would build
//! without this crate, for the side-by-side overload measurement (`scripts/overload-bench`).

use std::future::{Future, IntoFuture};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use async_rayon::{Scope, SpawnError, TaskError, ThreadPoolInner};
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use futures::FutureExt;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use std::panic::AssertUnwindSafe;
use tower::ServiceBuilder;
use tower::timeout::TimeoutLayer;

const USAGE: &str = "\
usage: http_service [--addr ADDR] [--max-pending N] [--task-timeout-ms MS] [--threads N] [--grace-ms MS]
                    [--stack pool|tower]

  --addr ADDR           address to listen on (default 127.0.0.1:3000; port 0 picks a free one)
  --max-pending N       tasks in the pool at once; past it /work answers 503 (default 256)
  --task-timeout-ms MS  a /work task running longer answers 504; 0 = no limit (default 2000)
  --threads N           worker threads of the pool (default: one per core)
  --grace-ms MS         on SIGTERM/Ctrl-C, how long requests in flight may finish (default 5000)
  --stack STACK         pool: /work runs on the async_rayon pool (default); tower: on tokio,
                        behind tower's ConcurrencyLimit(max-pending) + LoadShed + Timeout

routes:
  GET /work?ms=M&cpu_us=C[&panic=1]  one pool task: sleep M ms, then spin C us of CPU
  GET /metrics                       Prometheus text
  GET /healthz                       ok, or 503 once shutdown has begun";

/// Longest CPU burn a request may ask for: a spinning task cannot be timed out mid-poll.
const MAX_CPU_US: u64 = 1_000_000;

/// `--task-timeout-ms 0` on the tower stack: a limit no request reaches.
const NO_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long the pool may take to finish what is left once the server has drained.
const POOL_SHUTDOWN: Duration = Duration::from_millis(500);

/// Where `/work` runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stack {
    /// On the async_rayon pool, shed by `try_spawn_with_handle`.
    Pool,
    /// On the tokio runtime, shed by tower's `ConcurrencyLimit` + `LoadShed`.
    Tower,
}

struct Args {
    addr: SocketAddr,
    max_pending: usize,
    task_timeout: Option<Duration>,
    threads: usize,
    grace: Duration,
    stack: Stack,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
        max_pending: 256,
        task_timeout: Some(Duration::from_millis(2000)),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        grace: Duration::from_millis(5000),
        stack: Stack::Pool,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value (try --help)"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: invalid value {value:?}: {e}");
        match flag.as_str() {
            "--addr" => args.addr = value.parse().map_err(|e| bad(&e))?,
            "--max-pending" => {
                args.max_pending = value.parse().map_err(|e| bad(&e))?;
                if args.max_pending == 0 {
                    return Err(bad(&"must be at least 1"));
                }
            }
            "--task-timeout-ms" => {
                let ms: u64 = value.parse().map_err(|e| bad(&e))?;
                args.task_timeout = (ms > 0).then(|| Duration::from_millis(ms));
            }
            "--threads" => {
                args.threads = value.parse().map_err(|e| bad(&e))?;
                if args.threads == 0 {
                    return Err(bad(&"must be at least 1"));
                }
            }
            "--grace-ms" => args.grace = Duration::from_millis(value.parse().map_err(|e| bad(&e))?),
            "--stack" => {
                args.stack = match value.as_str() {
                    "pool" => Stack::Pool,
                    "tower" => Stack::Tower,
                    _ => return Err(bad(&"expected pool or tower")),
                }
            }
            _ => return Err(format!("unknown argument {flag:?} (try --help)")),
        }
    }
    Ok(args)
}

/// What the handlers share: the scope that spawns onto the pool, the metrics handle, the
/// health flag and the outcome counters for the summary line.
struct App {
    scope: Scope,
    prometheus: PrometheusHandle,
    shutting_down: AtomicBool,
    served: AtomicU64,
    shed: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
    panicked: AtomicU64,
}

#[derive(Deserialize)]
struct WorkQuery {
    #[serde(default)]
    ms: u64,
    #[serde(default)]
    cpu_us: u64,
    #[serde(default)]
    panic: u8,
}

#[derive(Serialize)]
struct WorkReply {
    ms: u64,
    cpu_us: u64,
}

/// Spins the calling thread for `d`: the CPU part of a request.
fn burn_cpu(d: Duration) {
    let end = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < end {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
    std::hint::black_box(x);
}

fn unavailable(retry_after: bool, msg: &'static str) -> Response {
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, msg).into_response();
    if retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    resp
}

/// The work of one `/work` request, the same on both stacks.
async fn job(q: WorkQuery) {
    tokio::time::sleep(Duration::from_millis(q.ms)).await;
    if q.panic != 0 {
        panic!("panic requested by the client (panic={})", q.panic);
    }
    burn_cpu(Duration::from_micros(q.cpu_us));
}

fn too_much_cpu(q: &WorkQuery) -> Option<Response> {
    (q.cpu_us > MAX_CPU_US).then(|| {
        let msg = format!("cpu_us must be at most {MAX_CPU_US}");
        (StatusCode::BAD_REQUEST, msg).into_response()
    })
}

fn served(app: &App, q: &WorkQuery) -> Response {
    app.served.fetch_add(1, Relaxed);
    Json(WorkReply {
        ms: q.ms,
        cpu_us: q.cpu_us,
    })
    .into_response()
}

fn panicked(app: &App, msg: &str) -> Response {
    app.panicked.fetch_add(1, Relaxed);
    let body = format!("task panicked: {msg}\n");
    (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
}

fn timed_out(app: &App) -> Response {
    app.timed_out.fetch_add(1, Relaxed);
    (StatusCode::GATEWAY_TIMEOUT, "task timed out\n").into_response()
}

fn shed(app: &App) -> Response {
    app.shed.fetch_add(1, Relaxed);
    unavailable(true, "overloaded, retry later\n")
}

/// `/work` on the pool: one task per request, refused at once when the pool is full.
async fn work(State(app): State<Arc<App>>, Query(q): Query<WorkQuery>) -> Response {
    if let Some(bad) = too_much_cpu(&q) {
        return bad;
    }
    let WorkQuery { ms, cpu_us, panic } = q;
    let spawned = app
        .scope
        .try_spawn_with_handle(job(WorkQuery { ms, cpu_us, panic }));
    let handle = match spawned {
        Ok(handle) => handle,
        // Shed load at once: the client should come back later, not wait here.
        Err(SpawnError::Full) => return shed(&app),
        Err(_) => {
            app.refused.fetch_add(1, Relaxed);
            return unavailable(false, "shutting down\n");
        }
    };
    // Hyper drops this handler's future when its client disconnects. A plain `TaskHandle`
    // would then detach the task and let it run on, holding its `max_pending` slot, for
    // nobody; `cancel_on_drop` cancels it instead.
    match handle.cancel_on_drop().await {
        Ok(()) => served(&app, &q),
        Err(TaskError::TimedOut) => timed_out(&app),
        Err(TaskError::Panicked(msg)) => panicked(&app, &msg),
        // Cancelled: the pool's shutdown ran out of time.
        Err(_) => unavailable(false, "task cancelled\n"),
    }
}

/// `/work` on tokio, for `--stack tower`: the same job, run by the handler itself; the
/// layers in [`tower_stack`] bound and shed it. A panic is caught as the pool would catch it.
async fn work_on_tokio(State(app): State<Arc<App>>, Query(q): Query<WorkQuery>) -> Response {
    if let Some(bad) = too_much_cpu(&q) {
        return bad;
    }
    let WorkQuery { ms, cpu_us, panic } = q;
    match AssertUnwindSafe(job(WorkQuery { ms, cpu_us, panic }))
        .catch_unwind()
        .await
    {
        Ok(()) => served(&app, &q),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panicked(&app, &msg)
        }
    }
}

/// The `/work` route of `--stack tower`: at most `max_pending` requests run at once
/// (`ConcurrencyLimit`), one more is refused at once with 503 (`LoadShed`), and one running
/// past `task_timeout` answers 504 (`Timeout`).
fn tower_stack(
    app: &Arc<App>,
    max_pending: usize,
    task_timeout: Option<Duration>,
) -> Router<Arc<App>> {
    let on_error = {
        let app = app.clone();
        move |err: tower::BoxError| {
            let app = app.clone();
            async move {
                if err.is::<tower::load_shed::error::Overloaded>() {
                    shed(&app)
                } else if err.is::<tower::timeout::error::Elapsed>() {
                    timed_out(&app)
                } else {
                    (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response()
                }
            }
        }
    };
    let layers = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(on_error))
        .load_shed()
        .concurrency_limit(max_pending)
        .layer(TimeoutLayer::new(task_timeout.unwrap_or(NO_TIMEOUT)));
    Router::new().route("/work", get(work_on_tokio).layer(layers))
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    app.prometheus.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.prometheus.render(),
    )
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    if app.shutting_down.load(Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        "ok\n".into_response()
    }
}

/// Resolves at the first SIGTERM or Ctrl-C. The handlers are installed when this is called,
/// not when it is first polled, so a signal that arrives early is not lost.
fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        })
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    if let Err(e) = run(args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let signal = shutdown_signal()?;
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Prefix("async_rayon_task_".into()),
            async_rayon::LATENCY_BUCKETS_SECONDS,
        )?
        .install_recorder()?;

    // Built inside the tokio runtime, the pool uses it for its tasks' timers.
    let mut builder = ThreadPoolInner::builder()
        .name("http_service")
        .num_threads(args.threads)
        .max_pending(args.max_pending);
    if let Some(t) = args.task_timeout {
        builder = builder.task_timeout(t);
    }
    let pool = builder.build()?;
    let export = pool.start_metrics_export(Duration::from_millis(100));

    let app = Arc::new(App {
        scope: pool.scope(),
        prometheus,
        shutting_down: AtomicBool::new(false),
        served: AtomicU64::new(0),
        shed: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        timed_out: AtomicU64::new(0),
        panicked: AtomicU64::new(0),
    });
    let work_route = match args.stack {
        Stack::Pool => Router::new().route("/work", get(work)),
        Stack::Tower => tower_stack(&app, args.max_pending, args.task_timeout),
    };
    let router = work_route
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(app.clone());

    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    let addr = listener.local_addr()?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush()?;

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        })
        .into_future();
    let mut server = tokio::spawn(server);

    let name = tokio::select! {
        name = signal => name,
        ended = &mut server => {
            // The server stopped without being asked to: an accept error or a panic.
            return Err(match ended {
                Ok(Ok(())) => "the server stopped unexpectedly".into(),
                Ok(Err(e)) => format!("server error: {e}").into(),
                Err(e) => format!("server task failed: {e}").into(),
            });
        }
    };
    let began = Instant::now();
    eprintln!(
        "{name}: shutting down (grace {} ms)",
        args.grace.as_millis()
    );
    app.shutting_down.store(true, Relaxed);
    let _ = stop_tx.send(true);

    // Stop accepting and let the requests in flight finish, for at most the grace period.
    // Past it, stop waiting: the pool's shutdown below then cancels the tasks still running,
    // and their handlers answer 503 on connections that are still open.
    match tokio::time::timeout(args.grace, &mut server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("server error while draining: {e}"),
        Ok(Err(e)) => eprintln!("server task failed while draining: {e}"),
        Err(_) => {
            eprintln!("grace period over: no longer waiting for the requests in flight");
            server.abort();
            let _ = server.await;
        }
    }
    if !pool.shutdown_timeout(POOL_SHUTDOWN).await {
        eprintln!("pool shutdown: tasks still running were cancelled");
    }
    drop(export);

    let n = |c: &AtomicU64| c.load(Relaxed);
    writeln!(
        stdout,
        "shutdown: served={} shed={} refused={} timed_out={} cancelled={} panicked={} in {} ms",
        n(&app.served),
        n(&app.shed),
        n(&app.refused),
        n(&app.timed_out),
        pool.metrics_fast().cancelled,
        n(&app.panicked),
        began.elapsed().as_millis()
    )?;
    stdout.flush()?;
    Ok(())
}
