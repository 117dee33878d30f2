//! A durable job queue on Redis Streams (feature `redis`): many processes on many machines
//! share one queue; each runs its jobs on its own pool, bounded by its own admission.
//!
//! Delivery is **at least once**: a job is acknowledged only after its handler succeeded;
//! a worker that dies leaves its jobs pending, and the others take them over once their lease
//! has lapsed. A job that keeps failing ends in a dead-letter stream with its last error.
//!
//! ```no_run
//! use async_rayon::queue::{Job, JobError, Producer, QueueConfig, Worker};
//! use async_rayon::ThreadPoolInner;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), async_rayon::queue::QueueError> {
//! let cfg = QueueConfig::new("redis://127.0.0.1:6379", "emails").concurrency(64);
//! let producer = Producer::connect(&cfg).await?;
//! producer.enqueue(b"hello").await?;
//!
//! let pool = ThreadPoolInner::new(4, Some(1_000));
//! let scope = pool.scope();
//! let worker = Worker::connect(cfg).await?;
//! let report = worker
//!     .run_until(
//!         &scope,
//!         |job: Job| async move {
//!             println!("{} ({} bytes)", job.id, job.payload.len());
//!             Ok::<(), JobError<std::io::Error>>(())
//!         },
//!         tokio::time::sleep(Duration::from_secs(10)), // stop signal
//!         Duration::from_secs(5),                      // grace for held jobs
//!     )
//!     .await?;
//! println!("{report:?}");
//! # Ok(()) }
//! ```
//!
//! # Protocol (Redis >= 7.0)
//! - The stream `<name>:jobs` holds the jobs that wait or are held, one consumer group reads
//!   it; `<name>:dead` holds dead letters. The job stream is never trimmed with MAXLEN (a
//!   held job would vanish): finished jobs are removed by `XACK` + `XDEL` in one `MULTI`.
//! - Enqueue is `XADD`; `enqueue_unique` is one Lua call that looks up and sets a dedup key
//!   `<name>:unique:<key>` and adds the job only if the key was new.
//! - A worker reads with `XREADGROUP ... COUNT k BLOCK 1000`, k = its free capacity, on a
//!   connection of its own (a blocking read never delays an ack), so it never holds more
//!   than `concurrency` jobs. Each job runs as a pool task on the caller's scope: the pool's
//!   admission, `task_timeout`, cancellation and metrics apply to it.
//! - **Leases.** A held job's idle time is its lease: every `claim_idle / 3` the worker
//!   resets it (`XCLAIM ... JUSTID`, in a Lua script that does so only where this consumer
//!   still owns the job); a job it no longer owns is cancelled locally (`lease_lost`).
//! - **Takeover.** Every `claim_interval` a worker runs `XAUTOCLAIM` with `claim_idle` (its
//!   cursor kept between passes) for as many jobs as it has room for; a claimed job past
//!   `max_deliveries` goes to the dead letters instead of running.
//! - **Failure.** `JobError::Retry`, a panic or a timeout: the job stays held, waits its
//!   backoff (without a pool slot), then runs again, its delivery count raised in Redis
//!   (`XCLAIM ... RETRYCOUNT`, owner-checked) so a crash in between does not reset it. At
//!   `max_deliveries`, or at once for `JobError::Fatal`, a Lua script adds the job to the
//!   dead letters with its error text, then acks and deletes it, atomically.
//! - **Graceful stop.** Stop reading; held jobs get `grace` to finish; the rest are
//!   cancelled and handed back: marked idle for `claim_idle` with their delivery count
//!   lowered by one (`XCLAIM ... IDLE RETRYCOUNT`), so another worker's next claim pass
//!   takes them without counting a delivery. The consumer is deleted from the group only if
//!   it holds nothing.
//! - A `NOGROUP` error (a server that lost its data) recreates the group and goes on; a lost
//!   connection is retried with backoff (counted in `reconnects`) while nothing is acked that
//!   did not succeed.

mod config;
mod producer;
mod worker;

use std::fmt;

pub use config::QueueConfig;
pub use producer::{DeadLetter, Enqueued, Producer, QueueStats};
pub use worker::{Worker, WorkerReport};

/// A job's id: its entry id in the job stream (`<ms>-<seq>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub(crate) String);

impl JobId {
    /// The stream entry id, as Redis writes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job handed to a worker's handler.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Job {
    /// Its id in the queue.
    pub id: JobId,
    /// The bytes given to `enqueue`.
    pub payload: Vec<u8>,
    /// How many times it has been delivered, this time included (1 the first time).
    pub deliveries: u32,
}

/// How a job's handler failed.
#[derive(Debug)]
pub enum JobError<E> {
    /// Run it again after a backoff (until `max_deliveries`, then a dead letter).
    Retry(E),
    /// Do not run it again: straight to the dead letters.
    Fatal(E),
}

impl<E: fmt::Display> fmt::Display for JobError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Retry(e) => write!(f, "retry: {e}"),
            JobError::Fatal(e) => write!(f, "fatal: {e}"),
        }
    }
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// A setting is out of range; names the field.
    #[error("queue setting `{field}`: {reason}")]
    Config {
        /// The [`QueueConfig`] field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The server could not be reached (or did not answer) within the connect timeout.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL given.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A command failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The payload is larger than `max_payload`.
    #[error("payload of {len} bytes is larger than max_payload ({max})")]
    PayloadTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The worker's concurrency is above what the pool admits.
    #[error("concurrency {concurrency} is above the pool's max_pending ({max_pending})")]
    ConcurrencyAbovePool {
        /// The worker's setting.
        concurrency: usize,
        /// The pool's bound.
        max_pending: usize,
    },
}

/// Connects to `cfg`'s server with a connection that reconnects by itself, within the
/// connect timeout; checks the server answers.
async fn connect(cfg: &QueueConfig) -> Result<redis::aio::ConnectionManager, QueueError> {
    let fail = |reason: String| QueueError::Connect {
        url: cfg.url.clone(),
        reason,
    };
    let client = redis::Client::open(cfg.url.as_str()).map_err(|e| fail(e.to_string()))?;
    let connecting = async {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(None)
            .set_number_of_retries(2);
        let mut con = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let _: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(con)
    };
    match tokio::time::timeout(cfg.connect_timeout, connecting).await {
        Ok(result) => result,
        Err(_) => Err(fail(format!("no answer within {:?}", cfg.connect_timeout))),
    }
}
