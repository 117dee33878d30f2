//! [`Worker`]: takes jobs from the queue and runs them on a pool scope (the protocol is in
//! the module doc of `queue`).

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamPendingCountReply,
    StreamReadOptions, StreamReadReply,
};
use redis::{AsyncCommands, RedisError, RedisResult};
use tokio_util::sync::CancellationToken;

use super::{Job, JobError, JobId, QueueConfig, QueueError};
use crate::error::TaskError;
use crate::scope::Scope;

/// Resets the lease (idle time) of each held job this consumer still owns; returns the ids
/// it no longer owns. KEYS: jobs stream. ARGV: group, consumer, ids...
const RENEW: &str = r"
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', 0, ARGV[i], ARGV[i], 1)
  if #p == 0 or p[1][2] ~= ARGV[2] then
    table.insert(lost, ARGV[i])
  else
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
return lost
";

/// Sets a held job's idle time and delivery count, if this consumer still owns it: 1 if
/// done. KEYS: jobs stream. ARGV: group, consumer, id, idle ms, delivery count.
const SET_LEASE: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', 0, ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'RETRYCOUNT', ARGV[5], 'JUSTID')
return 1
";

/// Moves a held job to the dead letters, atomically, if this consumer still owns it: 1 if
/// done. KEYS: jobs stream, dead stream. ARGV: group, consumer, id, payload, deliveries, error.
const DEAD_LETTER: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', 0, ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XADD', KEYS[2], '*', 'id', ARGV[3], 'payload', ARGV[4], 'deliveries', ARGV[5], 'error', ARGV[6])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
";

/// The longest a blocking read waits, so a stop is noticed within it.
const READ_BLOCK: Duration = Duration::from_secs(1);

/// Takes jobs from a queue and runs them on a pool. One per process start (its consumer
/// name must not be reused by another process).
pub struct Worker {
    cfg: QueueConfig,
    consumer: String,
    control: ConnectionManager,
    reader: ConnectionManager,
    /// The reader connection's `CLIENT ID`, to end its blocking read at once at a stop
    /// (`CLIENT UNBLOCK`); fetched again after the connection failed.
    reader_id: Option<i64>,
    renew: redis::Script,
    set_lease: redis::Script,
    dead_letter: redis::Script,
}

/// What a [`Worker::run_until`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Jobs read from the queue for the first time.
    pub fetched: u64,
    /// Jobs that succeeded and were acknowledged.
    pub acked: u64,
    /// Failed deliveries run again after a backoff.
    pub retried: u64,
    /// Jobs moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Jobs taken over from other consumers.
    pub claimed: u64,
    /// Jobs cancelled here because another consumer took them over.
    pub lease_lost: u64,
    /// Jobs handed back unfinished at the stop.
    pub handed_back: u64,
    /// Commands that failed on a lost connection and were retried.
    pub reconnects: u64,
}

/// A job held by this worker: read (or claimed), not yet acked, dead-lettered or handed back.
struct Held {
    payload: Arc<Vec<u8>>,
    deliveries: u32,
    /// Running on the pool (else waiting out a retry backoff, or taken at the stop).
    running: bool,
    /// Cancels the job's run (lease lost, or the stop's grace is over).
    cancel: CancellationToken,
}

type Running<'a> = Pin<Box<dyn Future<Output = (JobId, Outcome)> + Send + 'a>>;
type Reading = Pin<Box<dyn Future<Output = RedisResult<Option<StreamReadReply>>> + Send>>;

/// How one run of a job ended.
enum Outcome {
    Done,
    Failed(String),
    Fatal(String),
    /// Cancelled or refused by the pool: not the job's fault.
    NotRun,
}

impl Worker {
    /// Connects (two connections: one for blocking reads, one for everything else) and
    /// creates the consumer group if it does not exist.
    ///
    /// # Errors
    /// `QueueError::Config` naming a bad setting, `QueueError::Connect` when the server does
    /// not answer within the connect timeout.
    pub async fn connect(cfg: QueueConfig) -> Result<Worker, QueueError> {
        cfg.validate()?;
        let control = super::connect(&cfg).await?;
        let mut reader = super::connect(&cfg).await?;
        let reader_id = client_id(&mut reader).await;
        let worker = Worker {
            consumer: cfg.consumer_name(),
            cfg,
            control,
            reader,
            reader_id,
            renew: redis::Script::new(RENEW),
            set_lease: redis::Script::new(SET_LEASE),
            dead_letter: redis::Script::new(DEAD_LETTER),
        };
        worker.ensure_group().await?;
        Ok(worker)
    }

    /// This worker's consumer name in the group.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    async fn ensure_group(&self) -> Result<(), QueueError> {
        let mut con = self.control.clone();
        match con
            .xgroup_create_mkstream::<_, _, _, ()>(self.cfg.jobs_key(), &self.cfg.group, "0")
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs jobs with `handler` on `scope`'s pool until `stop` resolves (or the scope is
    /// cancelled or closed, or its pool shuts down), then stops as the module doc says: no
    /// new reads, `grace` for the jobs held, the rest handed back.
    /// Runs on the caller's task (inside a tokio runtime); each job is one pool task on
    /// `scope`, so the pool's admission, `task_timeout`, cancellation and metrics apply to
    /// it. At most `concurrency` jobs are held at once.
    ///
    /// # Errors
    /// `QueueError::ConcurrencyAbovePool` before any job is taken if `concurrency` is above
    /// the pool's `max_pending`. Lost connections are retried, not returned.
    pub async fn run_until<H, Fut, E, S>(
        self,
        scope: &Scope,
        handler: H,
        stop: S,
        grace: Duration,
    ) -> Result<WorkerReport, QueueError>
    where
        H: Fn(Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError<E>>> + Send + 'static,
        E: Display + Send + 'static,
        S: Future<Output = ()>,
    {
        if let Some(max_pending) = scope.pool().max_pending()
            && self.cfg.concurrency > max_pending
        {
            return Err(QueueError::ConcurrencyAbovePool {
                concurrency: self.cfg.concurrency,
                max_pending,
            });
        }
        let mut run = Run {
            reader_id: self.reader_id,
            w: &self,
            scope,
            handler: Arc::new(handler),
            held: HashMap::new(),
            running: FuturesUnordered::new(),
            waiting: FuturesUnordered::new(),
            acks: Vec::new(),
            report: WorkerReport::default(),
            claim_cursor: "0-0".to_string(),
            stopping: false,
        };
        run.serve(stop).await;
        run.drain(grace).await;
        Ok(run.report)
    }
}

/// One `run_until`'s state.
struct Run<'a, H> {
    w: &'a Worker,
    reader_id: Option<i64>,
    scope: &'a Scope,
    handler: Arc<H>,
    held: HashMap<JobId, Held>,
    running: FuturesUnordered<Running<'a>>,
    /// Failed jobs waiting out their backoff (held, not running, no pool slot).
    waiting: FuturesUnordered<Pin<Box<dyn Future<Output = JobId> + Send>>>,
    /// Succeeded, not yet acknowledged (acked in batches).
    acks: Vec<JobId>,
    report: WorkerReport,
    claim_cursor: String,
    stopping: bool,
}

impl<'a, H, Fut, E> Run<'a, H>
where
    H: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError<E>>> + Send + 'static,
    E: Display + Send + 'static,
{
    fn cfg(&self) -> &QueueConfig {
        &self.w.cfg
    }

    fn free(&self) -> usize {
        self.cfg().concurrency.saturating_sub(self.held.len())
    }

    /// The serving loop: read, run, ack, renew leases, take over abandoned jobs.
    async fn serve<S: Future<Output = ()>>(&mut self, stop: S) {
        let mut stop = std::pin::pin!(stop);
        let mut lease_tick = tokio::time::interval(self.cfg().claim_idle / 3);
        let mut claim_tick = tokio::time::interval(self.cfg().claim_interval);
        for tick in [&mut lease_tick, &mut claim_tick] {
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let mut reading: Option<Reading> = None;
        let mut read_backoff = Duration::ZERO;
        loop {
            // A scope that can run no more jobs (cancelled, closed, its pool shutting down)
            // ends the run like the stop signal, rather than reading jobs only to hand them
            // back.
            if self.scope.is_cancelled()
                || self.scope.is_closed()
                || self.scope.pool().is_shutdown()
            {
                break;
            }
            if reading.is_none() && self.free() > 0 {
                reading = Some(self.start_read(self.free(), read_backoff));
            }
            tokio::select! {
                biased;
                () = &mut stop => break,
                Some((id, outcome)) = self.running.next(), if !self.running.is_empty() => {
                    self.finished(id, outcome).await;
                    // Take every other run that is done too, then ack them in one go.
                    while let Some(Some((id, outcome))) = self.running.next().now_or_never() {
                        self.finished(id, outcome).await;
                    }
                }
                Some(id) = self.waiting.next(), if !self.waiting.is_empty() => {
                    self.redeliver(id).await;
                }
                read = async { reading.as_mut().expect("guarded").await }, if reading.is_some() => {
                    reading = None;
                    read_backoff = match read {
                        Ok(reply) => {
                            self.took(reply, false);
                            Duration::ZERO
                        }
                        Err(e) => self.read_failed(e, read_backoff).await,
                    };
                }
                _ = lease_tick.tick() => self.renew().await,
                _ = claim_tick.tick() => self.claim().await,
            }
            self.flush_acks().await;
        }
        self.stopping = true;
        // A read in flight may still deliver jobs to this consumer: end its wait at once
        // (else it blocks up to a second), then take what it brought (to hand back).
        if reading.is_some()
            && let Some(id) = self.reader_id
        {
            let mut con = self.w.control.clone();
            let _: RedisResult<i64> = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(id)
                .query_async(&mut con)
                .await;
        }
        if let Some(read) = reading
            && let Ok(reply) = read.await
        {
            self.took(reply, true);
        }
    }

    /// Graceful stop: `grace` for the running jobs, then cancel and hand back the rest.
    async fn drain(&mut self, grace: Duration) {
        // Jobs waiting out a backoff are not running: hand them back now.
        self.waiting = FuturesUnordered::new();
        let not_running: Vec<JobId> = self
            .held
            .iter()
            .filter(|(_, h)| !h.running)
            .map(|(id, _)| id.clone())
            .collect();
        for id in not_running {
            self.hand_back(id).await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        let mut lease_tick = tokio::time::interval(self.cfg().claim_idle / 3);
        while !self.running.is_empty() {
            tokio::select! {
                Some((id, outcome)) = self.running.next() => self.finished(id, outcome).await,
                _ = lease_tick.tick() => self.renew().await,
                () = tokio::time::sleep_until(deadline) => {
                    for held in self.held.values() {
                        held.cancel.cancel();
                    }
                    while let Some((id, outcome)) = self.running.next().await {
                        self.finished(id, outcome).await;
                    }
                }
            }
            self.flush_acks().await;
        }
        self.flush_acks().await;
        // Leave the group only if Redis shows nothing pending for this consumer: deleting a
        // consumer drops its pending entries (handed-back ones included), and nobody could
        // claim them any more.
        let mut con = self.w.control.clone();
        let (key, group) = (self.cfg().jobs_key(), &self.cfg().group);
        let mine: RedisResult<StreamPendingCountReply> = con
            .xpending_consumer_count(&key, group, "-", "+", 1, &self.w.consumer)
            .await;
        if mine.is_ok_and(|p| p.ids.is_empty()) {
            let _: RedisResult<usize> = con.xgroup_delconsumer(&key, group, &self.w.consumer).await;
        }
    }

    fn start_read(&self, count: usize, backoff: Duration) -> Reading {
        let mut con = self.w.reader.clone();
        let key = self.cfg().jobs_key();
        let options = StreamReadOptions::default()
            .group(&self.cfg().group, &self.w.consumer)
            .count(count)
            .block(READ_BLOCK.as_millis() as usize);
        Box::pin(async move {
            if !backoff.is_zero() {
                tokio::time::sleep(backoff).await;
            }
            con.xread_options(&[key], &[">"], &options).await
        })
    }

    /// A read failed: recreate the group if the server lost it, else back off (100 ms,
    /// doubling to 2 s) before the next read. Returns the next backoff.
    async fn read_failed(&mut self, e: RedisError, backoff: Duration) -> Duration {
        if e.code() == Some("NOGROUP") {
            let _ = self.w.ensure_group().await;
            return Duration::ZERO;
        }
        self.note(Event::Reconnect, 1);
        // The connection may come back as a new client.
        let mut reader = self.w.reader.clone();
        self.reader_id = client_id(&mut reader).await;
        (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// Starts the jobs of a read (new deliveries) or hands them back at once when stopping.
    fn took(&mut self, reply: Option<StreamReadReply>, hand_back: bool) {
        let Some(reply) = reply else { return };
        for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
            self.note(Event::Fetched, 1);
            let id = JobId(entry.id.clone());
            let payload = Arc::new(payload_of(&entry));
            self.hold(id.clone(), payload, 1);
            if hand_back {
                // Handed back by `drain` with the other jobs that are not running.
                continue;
            }
            self.start(id);
        }
    }

    fn hold(&mut self, id: JobId, payload: Arc<Vec<u8>>, deliveries: u32) {
        self.held.insert(
            id,
            Held {
                payload,
                deliveries,
                running: false,
                cancel: CancellationToken::new(),
            },
        );
    }

    /// Runs a held job on the pool (waiting for room in the pool's admission).
    fn start(&mut self, id: JobId) {
        let Some(held) = self.held.get_mut(&id) else {
            return;
        };
        held.running = true;
        let job = Job {
            id: id.clone(),
            payload: held.payload.as_ref().clone(),
            deliveries: held.deliveries,
        };
        let cancel = held.cancel.clone();
        let (handler, scope) = (self.handler.clone(), self.scope);
        self.running.push(Box::pin(async move {
            let permit = tokio::select! {
                permit = scope.reserve() => permit,
                () = cancel.cancelled() => return (id, Outcome::NotRun),
            };
            let Ok(permit) = permit else {
                return (id, Outcome::NotRun);
            };
            let mut handle = permit.spawn_with_handle(handler(job));
            let result = tokio::select! {
                result = &mut handle => result,
                () = cancel.cancelled() => {
                    handle.cancel();
                    handle.await
                }
            };
            let outcome = match result {
                Ok(Ok(())) => Outcome::Done,
                Ok(Err(JobError::Retry(e))) => Outcome::Failed(e.to_string()),
                Ok(Err(JobError::Fatal(e))) => Outcome::Fatal(e.to_string()),
                Err(TaskError::Panicked(msg)) => Outcome::Failed(format!("panicked: {msg}")),
                Err(TaskError::TimedOut) => Outcome::Failed("timed out".to_string()),
                Err(_) => Outcome::NotRun,
            };
            (id, outcome)
        }));
    }

    /// A run ended: ack, retry, dead-letter, or (not run: cancelled or refused) hand back.
    async fn finished(&mut self, id: JobId, outcome: Outcome) {
        let Some(held) = self.held.get_mut(&id) else {
            // Its lease was lost meanwhile: another consumer has it now.
            return;
        };
        held.running = false;
        match outcome {
            Outcome::Done => {
                self.held.remove(&id);
                self.acks.push(id);
            }
            Outcome::Fatal(error) => self.bury(id, format!("fatal: {error}")).await,
            Outcome::Failed(error) if held.deliveries >= self.w.cfg.max_deliveries => {
                let error = format!("{error} (after {} deliveries)", held.deliveries);
                self.bury(id, error).await;
            }
            Outcome::Failed(_) => {
                let wait = self.w.cfg.retry.wait(held.deliveries.saturating_sub(1));
                let id2 = id.clone();
                self.waiting.push(Box::pin(async move {
                    tokio::time::sleep(wait).await;
                    id2
                }));
            }
            Outcome::NotRun => self.hand_back(id).await,
        }
    }

    /// After its backoff, a failed job runs again, its delivery count raised in Redis first
    /// (so a crash now does not reset it).
    async fn redeliver(&mut self, id: JobId) {
        let Some(held) = self.held.get_mut(&id) else {
            return;
        };
        let deliveries = held.deliveries + 1;
        let mut con = self.w.control.clone();
        let owned: RedisResult<u8> = self
            .w
            .set_lease
            .key(self.w.cfg.jobs_key())
            .arg(&self.w.cfg.group)
            .arg(&self.w.consumer)
            .arg(id.as_str())
            .arg(0)
            .arg(deliveries)
            .invoke_async(&mut con)
            .await;
        match owned {
            Ok(1) => {
                held.deliveries = deliveries;
                held.cancel = CancellationToken::new();
                self.note(Event::Retried, 1);
                self.start(id);
            }
            Ok(_) => {
                self.held.remove(&id);
                self.note(Event::LeaseLost, 1);
            }
            Err(_) => {
                // Connection trouble: try again shortly.
                self.note(Event::Reconnect, 1);
                self.waiting.push(Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    id
                }));
            }
        }
    }

    /// Moves a held job to the dead letters (owner-checked, atomic).
    async fn bury(&mut self, id: JobId, error: String) {
        let Some(held) = self.held.remove(&id) else {
            return;
        };
        let mut con = self.w.control.clone();
        let moved: RedisResult<u8> = self
            .w
            .dead_letter
            .key(self.w.cfg.jobs_key())
            .key(self.w.cfg.dead_key())
            .arg(&self.w.cfg.group)
            .arg(&self.w.consumer)
            .arg(id.as_str())
            .arg(held.payload.as_slice())
            .arg(held.deliveries)
            .arg(error)
            .invoke_async(&mut con)
            .await;
        if let Ok(1) = moved {
            self.note(Event::DeadLettered, 1);
        }
        // Not moved (lease lost, or the connection failed): it stays pending and another
        // pass or consumer decides again; nothing is lost.
    }

    /// Hands a held job back: idle for `claim_idle` (so the next claim pass anywhere takes
    /// it) with its delivery count lowered by one (so that claim does not count).
    async fn hand_back(&mut self, id: JobId) {
        let Some(held) = self.held.remove(&id) else {
            return;
        };
        let mut con = self.w.control.clone();
        let idle_ms = self.w.cfg.claim_idle.as_millis() as u64;
        let done: RedisResult<u8> = self
            .w
            .set_lease
            .key(self.w.cfg.jobs_key())
            .arg(&self.w.cfg.group)
            .arg(&self.w.consumer)
            .arg(id.as_str())
            .arg(idle_ms)
            .arg(held.deliveries.saturating_sub(1))
            .invoke_async(&mut con)
            .await;
        if let Ok(1) = done {
            self.note(Event::HandedBack, 1);
        }
    }

    /// Renews the leases of the held jobs; cancels those another consumer took over.
    async fn renew(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut invocation = self.w.renew.key(self.w.cfg.jobs_key());
        invocation.arg(&self.w.cfg.group).arg(&self.w.consumer);
        for id in self.held.keys() {
            invocation.arg(id.as_str());
        }
        let mut con = self.w.control.clone();
        let lost: RedisResult<Vec<String>> = invocation.invoke_async(&mut con).await;
        match lost {
            Ok(lost) => {
                for id in lost {
                    if let Some(held) = self.held.remove(&JobId(id)) {
                        held.cancel.cancel();
                        self.note(Event::LeaseLost, 1);
                    }
                }
            }
            Err(_) => self.note(Event::Reconnect, 1),
        }
    }

    /// One takeover pass: `XAUTOCLAIM` jobs idle for `claim_idle`, as many as there is room
    /// for; runs them, or dead-letters those past `max_deliveries`.
    async fn claim(&mut self) {
        let room = self.free();
        if room == 0 || self.stopping {
            return;
        }
        let cfg = self.cfg().clone();
        let mut con = self.w.control.clone();
        let reply: RedisResult<StreamAutoClaimReply> = con
            .xautoclaim_options(
                cfg.jobs_key(),
                &cfg.group,
                &self.w.consumer,
                cfg.claim_idle.as_millis() as u64,
                &self.claim_cursor,
                StreamAutoClaimOptions::default().count(room),
            )
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) if e.code() == Some("NOGROUP") => {
                let _ = self.w.ensure_group().await;
                return;
            }
            Err(_) => {
                self.note(Event::Reconnect, 1);
                return;
            }
        };
        self.claim_cursor = reply.next_stream_id.clone();
        if !reply.deleted_ids.is_empty() {
            // Entries deleted while pending: nothing to run, clear them from the group.
            let _: RedisResult<usize> = con
                .xack(cfg.jobs_key(), &cfg.group, &reply.deleted_ids)
                .await;
        }
        if reply.claimed.is_empty() {
            return;
        }
        // Delivery counts (raised by the claim) in one round trip.
        let mut pipe = redis::pipe();
        for entry in &reply.claimed {
            pipe.xpending_count(cfg.jobs_key(), &cfg.group, &entry.id, &entry.id, 1);
        }
        let counts: Vec<StreamPendingCountReply> =
            pipe.query_async(&mut con).await.unwrap_or_default();
        for (i, entry) in reply.claimed.iter().enumerate() {
            let deliveries = counts
                .get(i)
                .and_then(|c| c.ids.first())
                .map_or(1, |p| p.times_delivered as u32);
            let id = JobId(entry.id.clone());
            self.note(Event::Claimed, 1);
            self.hold(id.clone(), Arc::new(payload_of(entry)), deliveries);
            if deliveries > cfg.max_deliveries {
                let error =
                    format!("delivered {deliveries} times without finishing (its workers stopped)");
                self.bury(id, error).await;
            } else {
                self.start(id);
            }
        }
    }

    /// Acknowledges and deletes the succeeded jobs, in one `MULTI`. On a connection error
    /// they stay queued for the next flush (never acked before they succeeded).
    async fn flush_acks(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        let key = self.cfg().jobs_key();
        let ids: Vec<&str> = self.acks.iter().map(JobId::as_str).collect();
        let mut con = self.w.control.clone();
        let result: RedisResult<(usize, usize)> = redis::pipe()
            .atomic()
            .xack(&key, &self.cfg().group, &ids)
            .xdel(&key, &ids)
            .query_async(&mut con)
            .await;
        match result {
            Ok(_) => {
                let n = self.acks.len() as u64;
                self.note(Event::Acked, n);
                self.acks.clear();
            }
            Err(_) => self.note(Event::Reconnect, 1),
        }
    }

    /// Counts `n` events of one kind: in the run's report and through the `metrics` facade
    /// (label `queue`), with the held gauge beside them.
    fn note(&mut self, event: Event, n: u64) {
        *event.field(&mut self.report) += n;
        let queue = self.w.cfg.name.clone();
        metrics::counter!(event.metric(), "queue" => queue.clone()).increment(n);
        metrics::gauge!("async_rayon_queue_held", "queue" => queue).set(self.held.len() as f64);
    }
}

/// What a run counts, each in its report field and its exported counter.
#[derive(Clone, Copy)]
enum Event {
    Fetched,
    Acked,
    Retried,
    DeadLettered,
    Claimed,
    LeaseLost,
    HandedBack,
    Reconnect,
}

impl Event {
    fn field(self, report: &mut WorkerReport) -> &mut u64 {
        match self {
            Event::Fetched => &mut report.fetched,
            Event::Acked => &mut report.acked,
            Event::Retried => &mut report.retried,
            Event::DeadLettered => &mut report.dead_lettered,
            Event::Claimed => &mut report.claimed,
            Event::LeaseLost => &mut report.lease_lost,
            Event::HandedBack => &mut report.handed_back,
            Event::Reconnect => &mut report.reconnects,
        }
    }

    fn metric(self) -> &'static str {
        match self {
            Event::Fetched => "async_rayon_queue_fetched_total",
            Event::Acked => "async_rayon_queue_acked_total",
            Event::Retried => "async_rayon_queue_retried_total",
            Event::DeadLettered => "async_rayon_queue_dead_lettered_total",
            Event::Claimed => "async_rayon_queue_claimed_total",
            Event::LeaseLost => "async_rayon_queue_lease_lost_total",
            Event::HandedBack => "async_rayon_queue_handed_back_total",
            Event::Reconnect => "async_rayon_queue_reconnects_total",
        }
    }
}

/// The connection's `CLIENT ID`, if it answers.
async fn client_id(con: &mut ConnectionManager) -> Option<i64> {
    redis::cmd("CLIENT").arg("ID").query_async(con).await.ok()
}

fn payload_of(entry: &StreamId) -> Vec<u8> {
    entry.get::<Vec<u8>>("payload").unwrap_or_default()
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.cfg.name)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}
