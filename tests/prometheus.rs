//! Prometheus export over real HTTP: a metrics-exporter-prometheus recorder listens on
//! 127.0.0.1, the pool exports to it, and a plain TCP GET scrapes /metrics; the counters
//! match `metrics_fast`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use async_rayon::{LATENCY_BUCKETS_SECONDS, Scope, ThreadPoolInner};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// The value of `name{pool="scraped"}` in a scrape, if present.
fn value(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name) && l.contains("pool=\"scraped\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Scraped counters equal metrics_fast once the pool is idle.
#[test]
fn scraped_counters_match_metrics_fast() {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Prefix("async_rayon_task_".into()),
            LATENCY_BUCKETS_SECONDS,
        )
        .expect("valid buckets")
        .install()
        .expect("install the exporter");
    std::panic::set_hook(Box::new(|_| {}));

    let pool = ThreadPoolInner::builder()
        .name("scraped")
        .num_threads(2)
        .max_pending(100)
        .build()
        .expect("valid");
    let scope = Scope::new(pool.clone());
    let handles: Vec<_> = (0..150u32)
        .map(|i| {
            scope.spawn_with_handle(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                assert!(i % 10 != 3, "failure {i}");
            })
        })
        .collect();
    pool.block_on(scope.join_handles(handles));
    let m = pool.metrics_fast();
    assert_eq!((m.submitted, m.rejected), (100, 50));
    // Enough units for latency samples (about one in 64 is sampled).
    let more: Vec<_> = (0..2_000u32)
        .map(|_| scope.spawn_with_handle(async {}))
        .collect();
    pool.block_on(scope.join_handles(more));
    let m = pool.metrics_fast();
    assert!(m.run_time.samples > 0 && m.queue_wait.samples > 0);
    let _export = pool.start_metrics_export(Duration::from_millis(20));

    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let body = scrape(addr).unwrap_or_default();
        if value(&body, "async_rayon_tasks_submitted_total") == Some(m.submitted as f64) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no matching scrape; last:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    for (name, want) in [
        ("async_rayon_tasks_completed_total", m.completed),
        ("async_rayon_tasks_panicked_total", m.panicked),
        ("async_rayon_tasks_cancelled_total", m.cancelled),
        ("async_rayon_tasks_timed_out_total", m.timed_out),
        ("async_rayon_tasks_rejected_total", m.rejected),
    ] {
        assert_eq!(value(&body, name), Some(want as f64), "{name}\n{body}");
    }
    assert_eq!(value(&body, "async_rayon_worker_threads"), Some(2.0));
    assert!(value(&body, "async_rayon_utilization").is_some());
    assert_eq!(value(&body, "async_rayon_max_pending"), Some(100.0));
    assert_eq!(value(&body, "async_rayon_tasks_pending"), Some(0.0));
    assert_eq!(value(&body, "async_rayon_reserve_waiters"), Some(0.0));
    // Latency as real histograms: buckets, sum and count, the count being every sample.
    for (name, samples) in [
        ("async_rayon_task_queue_wait_seconds", m.queue_wait.samples),
        ("async_rayon_task_run_seconds", m.run_time.samples),
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} histogram")),
            "{name} is not a histogram:\n{body}"
        );
        assert!(
            body.lines()
                .any(|l| l.starts_with(&format!("{name}_bucket{{")) && l.contains("le=\"+Inf\"")),
            "{name}_bucket\n{body}"
        );
        assert!(value(&body, &format!("{name}_sum")).is_some_and(|v| v > 0.0));
        assert_eq!(value(&body, &format!("{name}_count")), Some(samples as f64));
    }
}
