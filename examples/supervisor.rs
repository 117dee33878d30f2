//! A flaky queue consumer kept alive by a supervisor: it fails with an error every few
//! messages and panics once; the supervisor restarts it after a short backoff, a log line
//! per restart, until `stop()` is called.
//!
//! ```text
//! cargo run --example supervisor
//! ```
//! (The panic of the one run that panics is printed to stderr by Rust's panic hook.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_rayon::{RetryPolicy, SupervisorExit, SupervisorPolicy, ThreadPoolInner};
use parking_lot::Mutex;

/// Restarts to watch before stopping the supervisor.
const RESTARTS_TO_SEE: u32 = 6;

fn main() {
    let pool = ThreadPoolInner::new(2, Some(64));
    let scope = pool.scope();
    let (queue_tx, queue_rx) = tokio::sync::mpsc::channel::<u32>(16);
    let queue_rx = Arc::new(tokio::sync::Mutex::new(queue_rx));
    // What the last run died of, for the restart log (a run records it before failing).
    let last_failure = Arc::new(Mutex::new(String::new()));
    let runs = Arc::new(AtomicU32::new(0));

    // Up to 10 restarts in any 5 s, 20 ms before the first, doubling to at most 200 ms.
    let policy = SupervisorPolicy::new(10, Duration::from_secs(5)).backoff(
        RetryPolicy::new(0)
            .initial_backoff(Duration::from_millis(20))
            .max_backoff(Duration::from_millis(200)),
    );
    let supervisor = {
        let last_failure = last_failure.clone();
        scope.supervise(policy, move || {
            let run = runs.fetch_add(1, Ordering::SeqCst);
            if run > 0 {
                println!("restart #{run}: last run {}", last_failure.lock());
            }
            consumer(run, queue_rx.clone(), last_failure.clone())
        })
    };

    pool.block_on(async {
        // The producer: a message every 5 ms until the supervisor has restarted enough.
        let mut next = 0;
        while supervisor.restarts() < RESTARTS_TO_SEE {
            if queue_tx.try_send(next).is_ok() {
                next += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    supervisor.stop();
    let restarts = supervisor.restarts();
    let exit = pool.block_on(supervisor);
    assert_eq!(exit, SupervisorExit::Stopped);
    println!(
        "supervisor stopped after {restarts} restarts ({:?}); pool counted {} restarts",
        exit,
        pool.metrics_fast().restarts
    );
}

/// One run of the consumer: takes messages off the shared queue; run 2 panics on its third
/// message, every other run returns an error on its fourth.
async fn consumer(
    run: u32,
    queue: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<u32>>>,
    last_failure: Arc<Mutex<String>>,
) -> Result<(), String> {
    let mut handled = 0;
    loop {
        let next = queue.lock().await.recv().await;
        let Some(message) = next else {
            return Ok(()); // the queue was closed: nothing more to consume
        };
        handled += 1;
        if run == 2 && handled == 3 {
            *last_failure.lock() = format!("panicked on message {message}");
            panic!("corrupt message {message}");
        }
        if handled == 4 {
            let error = format!("lost the broker connection after message {message}");
            *last_failure.lock() = format!("failed: {error}");
            return Err(error);
        }
    }
}
