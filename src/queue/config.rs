//! [`QueueConfig`]: where the queue lives and how a worker holds its jobs.

use std::time::Duration;

use super::QueueError;
use crate::retry::RetryPolicy;

/// Where a queue lives and how workers hold its jobs. Built with [`QueueConfig::new`] and
/// checked when a [`Producer`](super::Producer) or [`Worker`](super::Worker) connects.
///
/// ```
/// use async_rayon::queue::QueueConfig;
/// use std::time::Duration;
///
/// let cfg = QueueConfig::new("redis://127.0.0.1:6379", "emails")
///     .group("senders")
///     .concurrency(64)
///     .claim_idle(Duration::from_secs(30))
///     .max_deliveries(5);
/// assert_eq!(cfg.jobs_key(), "emails:jobs");
/// assert_eq!(cfg.dead_key(), "emails:dead");
/// ```
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub(crate) url: String,
    pub(crate) name: String,
    pub(crate) group: String,
    pub(crate) consumer: Option<String>,
    pub(crate) concurrency: usize,
    pub(crate) claim_idle: Duration,
    pub(crate) claim_interval: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) max_payload: usize,
    pub(crate) retry: RetryPolicy,
    pub(crate) connect_timeout: Duration,
}

impl QueueConfig {
    /// A queue named `name` on the server at `url` (`redis://host:port[/db]`, or
    /// `redis+unix:///path`), with the defaults: group `workers`, a consumer name unique to
    /// this process start, concurrency 256, `claim_idle` 30 s, `claim_interval` 5 s,
    /// `max_deliveries` 5, `max_payload` 1 MiB, retries after `RetryPolicy::default()`'s
    /// backoff.
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        QueueConfig {
            url: url.into(),
            name: name.into(),
            group: "workers".to_string(),
            consumer: None,
            concurrency: 256,
            claim_idle: Duration::from_secs(30),
            claim_interval: Duration::from_secs(5),
            max_deliveries: 5,
            max_payload: 1 << 20,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// The consumer group the workers share (default `workers`).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// This worker's consumer name. The default, `<host>-<pid>-<random>`, is new at every
    /// process start: a name reused by a new process would take over the old one's pending
    /// jobs as if they were its own and defeat their recovery.
    pub fn consumer(mut self, consumer: impl Into<String>) -> Self {
        self.consumer = Some(consumer.into());
        self
    }

    /// Jobs a worker holds at once (read and not yet finished); at most the pool's
    /// `max_pending`. Default 256.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// A job whose holder has not renewed its lease for this long may be taken over by
    /// another worker (workers renew every `claim_idle / 3`). Default 30 s.
    pub fn claim_idle(mut self, d: Duration) -> Self {
        self.claim_idle = d;
        self
    }

    /// How often a worker looks for abandoned jobs to take over. Default 5 s.
    pub fn claim_interval(mut self, d: Duration) -> Self {
        self.claim_interval = d;
        self
    }

    /// Deliveries after which a failing job goes to the dead-letter stream. Default 5.
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// The largest payload `enqueue` accepts, in bytes. Default 1 MiB.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// The backoff before a job that failed (`JobError::Retry`, a panic or a timeout) runs
    /// again; only its delays are used (`max_deliveries` bounds the attempts).
    pub fn retry_backoff(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How long connecting may take before it fails. Default 5 s.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// The stream that holds the queue's waiting and held jobs: `<name>:jobs`.
    pub fn jobs_key(&self) -> String {
        format!("{}:jobs", self.name)
    }

    /// The dead-letter stream: `<name>:dead`.
    pub fn dead_key(&self) -> String {
        format!("{}:dead", self.name)
    }

    pub(crate) fn unique_key(&self, key: &str) -> String {
        format!("{}:unique:{key}", self.name)
    }

    pub(crate) fn consumer_name(&self) -> String {
        self.consumer.clone().unwrap_or_else(default_consumer)
    }

    /// Checks every field; the error names the one at fault.
    pub(crate) fn validate(&self) -> Result<(), QueueError> {
        let bad = |field: &'static str, reason: String| Err(QueueError::Config { field, reason });
        if !(self.url.starts_with("redis://")
            || self.url.starts_with("rediss://")
            || self.url.starts_with("redis+unix://")
            || self.url.starts_with("unix://"))
        {
            return bad(
                "url",
                format!("{:?} is not a redis:// or redis+unix:// URL", self.url),
            );
        }
        for (field, value) in [("name", &self.name), ("group", &self.group)] {
            if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad(
                    field,
                    format!("{value:?} must be non-empty, without spaces or control characters"),
                );
            }
        }
        if let Some(c) = &self.consumer
            && (c.is_empty() || c.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return bad(
                "consumer",
                format!("{c:?} must be non-empty, without spaces or control characters"),
            );
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1".into());
        }
        if self.claim_idle < Duration::from_millis(30) {
            return bad(
                "claim_idle",
                format!("{:?} is too short (at least 30 ms)", self.claim_idle),
            );
        }
        if self.claim_interval.is_zero() {
            return bad("claim_interval", "must be greater than zero".into());
        }
        if self.max_deliveries == 0 {
            return bad("max_deliveries", "must be at least 1".into());
        }
        if self.max_payload == 0 {
            return bad("max_payload", "must be at least 1 byte".into());
        }
        Ok(())
    }
}

/// `<host>-<pid>-<random>`: unique per process start.
fn default_consumer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".to_string());
    // The clock makes it differ between starts of the same pid; the per-thread generator
    // (seeded from an address) between processes started in the same nanosecond.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let random = (nanos ^ crate::rand::next_u64()) as u32;
    format!("{host}-{}-{random:08x}", std::process::id())
}
