//! Peak memory (VmHWM) of streaming many items that each hold 256 bytes across an await,
//! 10k in flight; each measurement runs in a process of its own.
//!
//! `cargo bench --bench memory` prints one line per measurement:
//! - async_rayon `stream_process`, 2M and 4M items;
//! - `tokio::spawn` held to the same 10k in flight (JoinHandles in `buffer_unordered`), 2M;
//! - unbounded `tokio::spawn` of 1M such tasks: what `max_pending` saves;
//! - memory per live task: 1M tasks alive at once (no bound, every handle kept), each holding
//!   256 bytes until a common deadline 5 s after the start, on async_rayon and on
//!   `tokio::spawn`.

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;

const IN_FLIGHT: usize = 10_000;

/// One item: 256 bytes held across an await.
async fn item(i: u64) -> u64 {
    let buf = [i as u8; 256];
    tokio::time::sleep(Duration::from_millis(1)).await;
    std::hint::black_box(&buf);
    u64::from(buf[0])
}

/// How long the live-task measurements keep every task alive (enough to spawn them all).
const LIVE_FOR: Duration = Duration::from_secs(5);

/// One live task: 256 bytes held until `until`.
async fn held_until(i: u64, until: tokio::time::Instant) -> u64 {
    let buf = [i as u8; 256];
    tokio::time::sleep_until(until).await;
    std::hint::black_box(&buf);
    u64::from(buf[0])
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn measure(system: &str, n: u64) {
    let start = Instant::now();
    let sum: u64 = match system {
        "async_rayon" => {
            let pool = async_rayon::ThreadPoolInner::new(2, Some(IN_FLIGHT));
            let scope = async_rayon::Scope::new(pool.clone());
            let stream = scope.stream_process(0..n, IN_FLIGHT, item);
            pool.block_on(stream.fold(0u64, |a, r| async move { a + r.unwrap_or(0) }))
        }
        "tokio_bounded" => tokio_rt().block_on(async {
            futures::stream::iter(0..n)
                .map(|i| tokio::spawn(item(i)))
                .buffer_unordered(IN_FLIGHT)
                .fold(0u64, |a, r| async move { a + r.unwrap_or(0) })
                .await
        }),
        "tokio_unbounded" => tokio_rt().block_on(async {
            let handles: Vec<_> = (0..n).map(|i| tokio::spawn(item(i))).collect();
            let mut sum = 0;
            for h in handles {
                sum += h.await.unwrap_or(0);
            }
            sum
        }),
        "async_rayon_live" => {
            let pool = async_rayon::ThreadPoolInner::new(2, None);
            let scope = async_rayon::Scope::new(pool.clone());
            let until = tokio::time::Instant::now() + LIVE_FOR;
            let handles: Vec<_> = (0..n)
                .map(|i| scope.spawn_with_handle(held_until(i, until)))
                .collect();
            pool.block_on(async {
                let mut sum = 0;
                for h in handles {
                    sum += h.await.unwrap_or(0);
                }
                sum
            })
        }
        "tokio_live" => tokio_rt().block_on(async {
            let until = tokio::time::Instant::now() + LIVE_FOR;
            let handles: Vec<_> = (0..n).map(|i| tokio::spawn(held_until(i, until))).collect();
            let mut sum = 0;
            for h in handles {
                sum += h.await.unwrap_or(0);
            }
            sum
        }),
        other => panic!("unknown system {other}"),
    };
    std::hint::black_box(sum);
    println!(
        "memory {system} items={n} peak_rss_mib={:.1} seconds={:.2}",
        peak_rss_kib() as f64 / 1024.0,
        start.elapsed().as_secs_f64()
    );
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let (Some(system), Some(n)) = (args.get(1), args.get(2).and_then(|s| s.parse().ok()))
        && system != "--bench"
    {
        measure(system, n);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench binaries without `--bench`: measure nothing.
        println!("memory bench: run it with `cargo bench --bench memory`");
        return;
    }
    // Parent: one child process per measurement, so each peak is its own.
    let exe = std::env::current_exe().expect("own path");
    for (system, n) in [
        ("async_rayon", 2_000_000u64),
        ("async_rayon", 4_000_000),
        ("tokio_bounded", 2_000_000),
        ("tokio_unbounded", 1_000_000),
        ("async_rayon_live", 1_000_000),
        ("tokio_live", 1_000_000),
    ] {
        let out = Command::new(&exe)
            .args([system, &n.to_string()])
            .output()
            .expect("run a measurement");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
