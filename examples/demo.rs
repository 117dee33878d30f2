//! A tour of async_rayon's core: bounded spawning, cancellation, timeouts, panics and a
//! bounded shutdown, on a real loopback TCP server.
//!
//! Run with `cargo run --release --example demo`.

use std::time::{Duration, Instant};

use async_rayon::{Config, Scope, TaskError, ThreadPoolInner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const REQUESTS: u64 = 20_000;

/// An echo server on 127.0.0.1 that answers each line after 1-3 ms.
async fn start_echo_server() -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 8];
                while sock.read_exact(&mut buf).await.is_ok() {
                    let n = u64::from_le_bytes(buf);
                    tokio::time::sleep(Duration::from_millis(1 + n % 3)).await;
                    if sock.write_all(&(n * 2).to_le_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// One request over a fresh connection.
async fn call(addr: std::net::SocketAddr, n: u64) -> std::io::Result<u64> {
    let mut sock = TcpStream::connect(addr).await?;
    sock.write_all(&n.to_le_bytes()).await?;
    let mut buf = [0u8; 8];
    sock.read_exact(&mut buf).await?;
    Ok(u64::from_le_bytes(buf))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = ThreadPoolInner::try_with_config(Config {
        max_pending: Some(1_000),
        task_timeout: Some(Duration::from_secs(5)),
        ..Config::io_bound()
    })?;
    let scope = Scope::new(pool.clone());
    println!(
        "pool: {} workers, max_pending {:?}",
        pool.num_threads(),
        pool.max_pending()
    );

    pool.block_on(async {
        let addr = scope
            .spawn_with_handle(start_echo_server())
            .await
            .map_err(|e| format!("server task: {e}"))??;

        // 1. Backpressure: reserve() waits for room, so at most 1 000 requests are in flight.
        let start = Instant::now();
        let mut handles = Vec::with_capacity(REQUESTS as usize);
        for n in 0..REQUESTS {
            let permit = scope.reserve().await?;
            handles.push(permit.spawn_with_handle(call(addr, n)));
        }
        let results = scope.join_handles(handles).await;
        let ok = results
            .iter()
            .enumerate()
            .filter(|(n, r)| matches!(r, Ok(Ok(v)) if *v == 2 * *n as u64))
            .count();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{REQUESTS} TCP requests, at most 1000 in flight: {ok} correct in {secs:.2}s ({:.0}/s)",
            REQUESTS as f64 / secs
        );

        // 2. Load shedding: spawn_with_handle refuses past max_pending instead of queueing.
        let (tx, rx) = tokio::sync::watch::channel(false);
        let burst: Vec<_> = (0..1_500)
            .map(|_| {
                let mut rx = rx.clone();
                scope.spawn_with_handle(async move {
                    let _ = rx.wait_for(|go| *go).await;
                })
            })
            .collect();
        let _ = tx.send(true);
        let burst = scope.join_handles(burst).await;
        let rejected = burst
            .iter()
            .filter(|r| r == &&Err(TaskError::Rejected))
            .count();
        println!("burst of 1500 spawns: {rejected} rejected at once, the rest ran");

        // 3. Cancellation, timeouts and panics are values, not crashes.
        let slow = scope.spawn_with_handle(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        slow.cancel();
        println!("cancelled a 60 s sleep: {:?}", slow.await);
        let late = scope.spawn_with_handle(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        println!(
            "await_timeout(20 ms) on a 60 s sleep: {:?}",
            late.await_timeout(Duration::from_millis(20)).await
        );
        let boom = scope.spawn_with_handle(async { panic!("task failed on purpose") });
        println!("a panicking task: {:?}", boom.await);

        // 4. Bounded shutdown: a never-ending task is cancelled at the deadline.
        let _forever = scope.spawn_with_handle(std::future::pending::<()>());
        let t = Instant::now();
        let clean = pool.shutdown_timeout(Duration::from_millis(100)).await;
        println!(
            "shutdown_timeout(100 ms) with a stuck task: all finished = {clean}, took {} ms",
            t.elapsed().as_millis()
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
