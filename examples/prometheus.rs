//! Serve the pool's metrics to Prometheus: metrics-exporter-prometheus listens on
//! 127.0.0.1 while a mixed workload runs, and `start_metrics_export` feeds it.
//!
//! Run with `cargo run --release --example prometheus -- --port 9000 --seconds 30`, then
//! `curl http://127.0.0.1:9000/metrics`. `--port 0` (the default) picks a free port.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use async_rayon::{LATENCY_BUCKETS_SECONDS, Scope, TaskError, ThreadPoolInner};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

fn parse() -> Result<(u16, u64), String> {
    let (mut port, mut seconds) = (0u16, 10u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value"));
        match a.as_str() {
            "--port" => {
                port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?
            }
            "--seconds" => {
                seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?
            }
            "-h" | "--help" => {
                println!("usage: prometheus [--port PORT] [--seconds N]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok((port, seconds))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (port, seconds) = parse().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    // Port 0: ask the OS for a free port, then hand it to the exporter.
    let port = match port {
        0 => TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port(),
        p => p,
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // Bucket bounds for the latency histograms, so the scrape has `_bucket` lines.
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Prefix("async_rayon_task_".into()),
            LATENCY_BUCKETS_SECONDS,
        )?
        .install()?;
    println!("serving metrics on http://{addr}/metrics for {seconds} s");

    let pool = ThreadPoolInner::builder()
        .name("prometheus_demo")
        .num_threads(2)
        .max_pending(500)
        .task_timeout(Duration::from_millis(50))
        .build()?;
    let _export = pool.start_metrics_export(Duration::from_millis(200));
    let scope = Scope::new(pool.clone());
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut i = 0u64;
    pool.block_on(async {
        while Instant::now() < end {
            let handles: Vec<_> = (0..600)
                .map(|_| {
                    i += 1;
                    let n = i;
                    scope.spawn_with_handle(async move {
                        match n % 50 {
                            0 => tokio::time::sleep(Duration::from_secs(1)).await, // times out
                            1 => panic!("simulated failure"),
                            _ => tokio::time::sleep(Duration::from_millis(n % 5)).await,
                        }
                    })
                })
                .collect();
            let results = scope.join_handles(handles).await;
            let rejected = results
                .iter()
                .filter(|r| **r == Err(TaskError::Rejected))
                .count();
            if rejected > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    println!("final: {:?}", pool.metrics_fast());
    Ok(())
}
