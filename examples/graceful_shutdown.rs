//! A service that keeps submitting work (tasks of 0.1-3 s) until SIGTERM or Ctrl-C, then
//! stops admitting, gives the running tasks `--grace` seconds (default 5) to finish, cancels
//! the rest, accounts for every task and exits 0.
//!
//! Run with `cargo run --release --example graceful_shutdown -- --grace 2`, then press
//! Ctrl-C or send SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use async_rayon::{Scope, TaskError, ThreadPoolInner};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Default)]
struct Tally {
    submitted: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    rejected: AtomicU64,
    other: AtomicU64,
}

fn parse_grace() -> Result<Duration, String> {
    let mut args = std::env::args().skip(1);
    let mut grace = Duration::from_secs(5);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--grace" => {
                let v = args.next().ok_or("--grace needs a number of seconds")?;
                let secs: f64 = v
                    .parse()
                    .map_err(|_| format!("--grace: not a number of seconds: {v:?}"))?;
                grace = Duration::try_from_secs_f64(secs)
                    .map_err(|_| format!("--grace: out of range: {v:?}"))?;
            }
            "-h" | "--help" => {
                println!("usage: graceful_shutdown [--grace SECONDS]   (default 5)");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(grace)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let grace = match parse_grace() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let pool = ThreadPoolInner::builder()
        .name("service")
        .num_threads(4)
        .max_pending(200)
        .build()?;
    let scope = Scope::new(pool.clone());
    let tally = Arc::new(Tally::default());
    let mut sigterm = signal(SignalKind::terminate())?;
    println!(
        "service running (pid {}); Ctrl-C or SIGTERM to stop",
        std::process::id()
    );

    // Submit a task every 5 ms and collect every handle's outcome.
    let mut outcomes = FuturesUnordered::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            Some(outcome) = outcomes.next(), if !outcomes.is_empty() => count(&tally, outcome),
            _ = tick.tick() => {
                seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
                let ms = 100 + seed % 2_900;
                tally.submitted.fetch_add(1, SeqCst);
                outcomes.push(scope.spawn_with_handle(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }));
            }
        }
    }

    // Stop admitting, then give what runs `grace` to finish.
    let started = Instant::now();
    println!(
        "signal received: stopping admission, grace {:.1} s",
        grace.as_secs_f64()
    );
    let finished_on_time = pool.shutdown_timeout(grace).await;
    // Every handle resolves: completed, or cancelled at the deadline.
    while let Some(outcome) = outcomes.next().await {
        count(&tally, outcome);
    }
    let t = &*tally;
    let (sub, done, canc, rej, other) = (
        t.submitted.load(SeqCst),
        t.completed.load(SeqCst),
        t.cancelled.load(SeqCst),
        t.rejected.load(SeqCst),
        t.other.load(SeqCst),
    );
    println!(
        "shutdown in {} ms (all finished on their own: {finished_on_time})",
        started.elapsed().as_millis()
    );
    println!("submitted={sub} completed={done} cancelled={canc} rejected={rej} other={other}");
    if done + canc + rej + other != sub {
        eprintln!(
            "error: {} tasks unaccounted for",
            sub - (done + canc + rej + other)
        );
        std::process::exit(1);
    }
    Ok(())
}

fn count(tally: &Tally, outcome: Result<(), TaskError>) {
    let c = match outcome {
        Ok(()) => &tally.completed,
        Err(TaskError::Cancelled) => &tally.cancelled,
        Err(TaskError::Rejected) => &tally.rejected,
        Err(_) => &tally.other,
    };
    c.fetch_add(1, SeqCst);
}
