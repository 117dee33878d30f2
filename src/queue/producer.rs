//! [`Producer`]: adds jobs, reads the queue's figures and its dead letters.

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::{StreamPendingReply, StreamRangeReply};

use super::{JobId, QueueConfig, QueueError};

/// Adds a job unless its dedup key was already set: `{id, 1}` for a duplicate (the id of the
/// job that set the key), `{id, 0}` for a new job. KEYS: jobs stream, dedup key. ARGV: payload.
const ENQUEUE_UNIQUE: &str = r"
local existing = redis.call('GET', KEYS[2])
if existing then return {existing, 1} end
local id = redis.call('XADD', KEYS[1], '*', 'payload', ARGV[1])
redis.call('SET', KEYS[2], id)
return {id, 0}
";

/// Adds jobs to a queue. `Clone` (clones share one connection, which reconnects by itself).
///
/// ```no_run
/// use async_rayon::queue::{Producer, QueueConfig};
///
/// # async fn run() -> Result<(), async_rayon::queue::QueueError> {
/// let cfg = QueueConfig::new("redis://127.0.0.1:6379", "emails");
/// let producer = Producer::connect(&cfg).await?;
/// let id = producer.enqueue(b"to: a@example.com").await?;
/// let again = producer.enqueue_unique("order-42", b"ship it").await?;
/// println!("{id}, {} (duplicate: {})", again.id, again.duplicate);
/// println!("{:?}", producer.stats().await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    con: ConnectionManager,
    cfg: QueueConfig,
    script: redis::Script,
}

/// What [`Producer::enqueue_unique`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id: the new one, or for a duplicate the one that first used the key.
    pub id: JobId,
    /// True if the key was used before and nothing was added.
    pub duplicate: bool,
}

/// A queue's figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct QueueStats {
    /// Jobs never delivered to a worker yet.
    pub backlog: u64,
    /// Jobs delivered and not finished: held by a worker (or by one that died, until they
    /// are taken over).
    pub pending: u64,
    /// Jobs in the dead-letter stream.
    pub dead: u64,
}

/// A job that failed for good, from the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id in the job stream.
    pub id: JobId,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Deliveries made before it was given up.
    pub deliveries: u32,
    /// The last error (a `JobError`'s text, a panic message, or the timeout).
    pub error: String,
}

impl Producer {
    /// Connects to `cfg`'s server.
    ///
    /// # Errors
    /// `QueueError::Config` naming a bad setting, `QueueError::Connect` if the server does
    /// not answer within the connect timeout.
    pub async fn connect(cfg: &QueueConfig) -> Result<Producer, QueueError> {
        cfg.validate()?;
        Ok(Producer {
            con: super::connect(cfg).await?,
            cfg: cfg.clone(),
            script: redis::Script::new(ENQUEUE_UNIQUE),
        })
    }

    fn check(&self, payload: &[u8]) -> Result<(), QueueError> {
        if payload.len() > self.cfg.max_payload {
            return Err(QueueError::PayloadTooLarge {
                len: payload.len(),
                max: self.cfg.max_payload,
            });
        }
        Ok(())
    }

    /// Adds one job.
    ///
    /// # Errors
    /// `PayloadTooLarge` (nothing sent), or the server's error.
    pub async fn enqueue(&self, payload: &[u8]) -> Result<JobId, QueueError> {
        self.check(payload)?;
        let mut con = self.con.clone();
        let id: String = con
            .xadd(self.cfg.jobs_key(), "*", &[("payload", payload)])
            .await?;
        Ok(JobId(id))
    }

    /// Adds many jobs in one pipelined round trip; their ids in the same order.
    ///
    /// # Errors
    /// `PayloadTooLarge` if any payload is too large (then nothing is sent), or the server's
    /// error.
    pub async fn enqueue_many<P: AsRef<[u8]>>(
        &self,
        payloads: impl IntoIterator<Item = P>,
    ) -> Result<Vec<JobId>, QueueError> {
        let payloads: Vec<P> = payloads.into_iter().collect();
        for p in &payloads {
            self.check(p.as_ref())?;
        }
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.cfg.jobs_key();
        let mut pipe = redis::pipe();
        for p in &payloads {
            pipe.xadd(&key, "*", &[("payload", p.as_ref())]);
        }
        let mut con = self.con.clone();
        let ids: Vec<String> = pipe.query_async(&mut con).await?;
        Ok(ids.into_iter().map(JobId).collect())
    }

    /// Adds a job unless one was already added with the same `key` (in one atomic step);
    /// the key is remembered for as long as the queue exists.
    ///
    /// # Errors
    /// `PayloadTooLarge`, or the server's error.
    pub async fn enqueue_unique(&self, key: &str, payload: &[u8]) -> Result<Enqueued, QueueError> {
        self.check(payload)?;
        let mut con = self.con.clone();
        let (id, duplicate): (String, u8) = self
            .script
            .key(self.cfg.jobs_key())
            .key(self.cfg.unique_key(key))
            .arg(payload)
            .invoke_async(&mut con)
            .await?;
        Ok(Enqueued {
            id: JobId(id),
            duplicate: duplicate == 1,
        })
    }

    /// The queue's backlog, pending and dead counts. The job stream holds only jobs that wait
    /// or are held (finished ones are deleted), so backlog = its length - pending.
    ///
    /// # Errors
    /// The server's error.
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        let mut con = self.con.clone();
        let (len, dead): (u64, u64) = redis::pipe()
            .xlen(self.cfg.jobs_key())
            .xlen(self.cfg.dead_key())
            .query_async(&mut con)
            .await?;
        let pending = match con
            .xpending::<_, _, StreamPendingReply>(self.cfg.jobs_key(), &self.cfg.group)
            .await
        {
            Ok(reply) => reply.count() as u64,
            // No group yet: no worker ever connected, nothing is pending.
            Err(e) if e.code() == Some("NOGROUP") => 0,
            Err(e) => return Err(e.into()),
        };
        Ok(QueueStats {
            backlog: len.saturating_sub(pending),
            pending,
            dead,
        })
    }

    /// Up to `count` dead letters, oldest first.
    ///
    /// # Errors
    /// The server's error.
    pub async fn dead_letters(&self, count: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let mut con = self.con.clone();
        let reply: StreamRangeReply = con
            .xrange_count(self.cfg.dead_key(), "-", "+", count)
            .await?;
        Ok(reply
            .ids
            .iter()
            .map(|e| DeadLetter {
                id: JobId(e.get::<String>("id").unwrap_or_default()),
                payload: e.get::<Vec<u8>>("payload").unwrap_or_default(),
                deliveries: e.get::<u32>("deliveries").unwrap_or(0),
                error: e.get::<String>("error").unwrap_or_default(),
            })
            .collect())
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("queue", &self.cfg.name)
            .finish_non_exhaustive()
    }
}
