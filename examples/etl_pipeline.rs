//! ETL pipeline with separate I/O and CPU pools.
//!
//! Extract: fetch records from a loopback TCP server on an I/O pool. Transform: hash each
//! record on a CPU pool. Load: write the digests to a file on the I/O pool. Each stage is a
//! bounded stream feeding the next, so at most a few hundred records exist at any moment,
//! however many flow through. Failed fetches are retried with backoff.
//!
//! Run with `cargo run --release --example etl_pipeline [records]`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_rayon::{Config, RetryPolicy, Scope, ThreadPoolInner, with_retry};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves 1 KiB records: send a u64 id, get the record back. Every 50th first request fails.
async fn serve(listener: tokio::net::TcpListener) {
    let failed_once =
        std::sync::Arc::new(parking_lot::Mutex::new(std::collections::HashSet::new()));
    while let Ok((mut sock, _)) = listener.accept().await {
        let failed_once = failed_once.clone();
        tokio::spawn(async move {
            let mut id = [0u8; 8];
            if sock.read_exact(&mut id).await.is_err() {
                return;
            }
            let id = u64::from_le_bytes(id);
            if id % 50 == 0 && failed_once.lock().insert(id) {
                return; // close without answering: the client retries
            }
            let record: Vec<u8> = (0..1024u64)
                .map(|k| (id.wrapping_mul(31) ^ k) as u8)
                .collect();
            let _ = sock.write_all(&record).await;
        });
    }
}

async fn extract(addr: SocketAddr, id: u64) -> std::io::Result<(u64, Vec<u8>)> {
    let mut sock = tokio::net::TcpStream::connect(addr).await?;
    sock.write_all(&id.to_le_bytes()).await?;
    let mut record = vec![0u8; 1024];
    sock.read_exact(&mut record).await?;
    Ok((id, record))
}

/// FNV-1a over the record, 64 rounds: a stand-in for real parsing work.
fn transform(record: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for _ in 0..64 {
        for b in record {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let records: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000);
    let io_pool = ThreadPoolInner::with_config(Config::io_bound());
    let cpu_pool = ThreadPoolInner::with_config(Config::cpu_bound());
    let io_scope = Scope::new(io_pool.clone());
    let cpu_scope = Scope::new(cpu_pool.clone());
    let out_path = std::env::temp_dir().join("async_rayon_etl_digests.txt");

    let start = Instant::now();
    let (loaded, failed) = io_pool.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(serve(listener));
        let file = tokio::fs::File::create(&out_path).await?;
        let file = std::sync::Arc::new(tokio::sync::Mutex::new(tokio::io::BufWriter::new(file)));

        // Extract (I/O pool), 200 requests in flight, each retried up to 3 times.
        let policy = RetryPolicy::new(3).initial_backoff(Duration::from_millis(5));
        let extracted = io_scope.stream_process(
            0..records,
            200,
            with_retry(policy, move |id| extract(addr, id)),
        );
        // Transform (CPU pool), one item per core in flight.
        let transformed = cpu_scope.stream_process_stream(
            extracted,
            cpu_pool.num_threads(),
            |fetched| async move {
                match fetched {
                    Ok(Ok((id, record))) => Ok((id, transform(&record))),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            },
        );
        // Load (I/O pool), 50 writes in flight.
        let loads = io_scope.stream_process_stream(transformed, 50, move |digest| {
            let file = file.clone();
            async move {
                let (id, h) = match digest {
                    Ok(Ok(d)) => d,
                    Ok(Err(e)) => return Err(e),
                    Err(e) => return Err(e.to_string()),
                };
                let mut f = file.lock().await;
                f.write_all(format!("{id} {h:016x}\n").as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
        });
        let outcomes: Vec<_> = loads.collect().await;
        let loaded = outcomes.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
        Ok::<_, std::io::Error>((loaded, outcomes.len() - loaded))
    })?;
    println!(
        "ETL: {loaded} records loaded, {failed} failed, in {:.2} s -> {}",
        start.elapsed().as_secs_f64(),
        out_path.display()
    );
    Ok(())
}
