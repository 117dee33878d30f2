#![cfg(feature = "redis")]
//! The Redis Streams job queue against a real redis-server (tests/common/redis.rs): round
//! trip, retries and dead letters, idempotent enqueue, backpressure, leases, hand-back at a
//! stop, a server restart mid-run, and bad input.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_rayon::queue::{Job, JobError, Producer, QueueConfig, QueueError, Worker};
use async_rayon::{RetryPolicy, ThreadPoolInner};
use common::redis::RedisServer;
use common::{Census, within};
use tokio_util::sync::CancellationToken;

/// How many times each job id was handled to completion.
#[derive(Clone, Default)]
struct Tally(Arc<Mutex<HashMap<String, usize>>>);

impl Tally {
    fn done(&self, job: &Job) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(job.id.to_string())
            .or_default() += 1;
    }
    fn distinct(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
    /// A job handler that waits `work`, then records the job as done.
    fn recorder(
        &self,
        work: Duration,
    ) -> impl Fn(Job) -> futures::future::BoxFuture<'static, Result<(), JobError<String>>>
    + Send
    + Sync
    + 'static {
        let tally = self.clone();
        move |job: Job| {
            let tally = tally.clone();
            Box::pin(async move {
                tokio::time::sleep(work).await;
                tally.done(&job);
                Ok(())
            })
        }
    }

    fn max_count(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }
}

fn fast_cfg(server: &RedisServer, name: &str) -> QueueConfig {
    QueueConfig::new(server.url(), name)
        .claim_idle(Duration::from_millis(600))
        .claim_interval(Duration::from_millis(100))
        .retry_backoff(
            RetryPolicy::new(10)
                .initial_backoff(Duration::from_millis(5))
                .max_backoff(Duration::from_millis(20)),
        )
}

/// A stop signal that fires once `tally` has `n` distinct jobs (or the token is cancelled).
fn stop_when(tally: &Tally, n: usize, token: &CancellationToken) -> impl Future<Output = ()> {
    let (tally, token) = (tally.clone(), token.clone());
    async move {
        while tally.distinct() < n && !token.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_10k_jobs_each_handled_once() {
    within(120, "round trip", async {
        let server = RedisServer::start();
        let cfg = fast_cfg(&server, "rt").concurrency(256);
        let producer = Producer::connect(&cfg).await.expect("producer");
        let ids = producer
            .enqueue_many((0..10_000u32).map(|i| i.to_le_bytes()))
            .await
            .expect("enqueue");
        assert_eq!(ids.len(), 10_000);
        let stats = producer.stats().await.expect("stats");
        assert_eq!((stats.backlog, stats.pending, stats.dead), (10_000, 0, 0));

        let pool = ThreadPoolInner::new(2, Some(1_000));
        let scope = pool.scope();
        let tally = Tally::default();
        let t = tally.clone();
        let worker = Worker::connect(cfg).await.expect("worker");
        let report = worker
            .run_until(
                &scope,
                move |job: Job| {
                    let t = t.clone();
                    async move {
                        assert_eq!(job.payload.len(), 4);
                        t.done(&job);
                        Ok::<(), JobError<String>>(())
                    }
                },
                stop_when(&tally, 10_000, &CancellationToken::new()),
                Duration::from_secs(5),
            )
            .await
            .expect("run");
        assert_eq!(tally.distinct(), 10_000);
        assert_eq!(tally.max_count(), 1, "a job ran twice");
        assert_eq!(report.acked, 10_000, "{report:?}");
        let stats = producer.stats().await.expect("stats");
        assert_eq!((stats.backlog, stats.pending, stats.dead), (0, 0, 0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_jobs_retry_then_dead_letter() {
    within(60, "retries and dead letters", async {
        let server = RedisServer::start();
        let cfg = fast_cfg(&server, "dl").max_deliveries(3).concurrency(16);
        let producer = Producer::connect(&cfg).await.expect("producer");
        producer.enqueue(b"poison").await.expect("enqueue");
        producer.enqueue(b"fatal").await.expect("enqueue");
        producer.enqueue(b"flaky").await.expect("enqueue");
        for _ in 0..20 {
            producer.enqueue(b"fine").await.expect("enqueue");
        }
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));

        let pool = ThreadPoolInner::new(2, Some(100));
        let scope = pool.scope();
        let ok = Tally::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (o, r) = (ok.clone(), runs.clone());
        let worker = Worker::connect(cfg).await.expect("worker");
        let stop = {
            let producer = producer.clone();
            let ok = ok.clone();
            async move {
                loop {
                    let s = producer.stats().await.expect("stats");
                    if s.dead == 2 && ok.distinct() == 21 && s.pending == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let report = worker
            .run_until(
                &scope,
                move |job: Job| {
                    let (o, r) = (o.clone(), r.clone());
                    async move {
                        r.fetch_add(1, Ordering::SeqCst);
                        match job.payload.as_slice() {
                            b"poison" => panic!("poison job"),
                            b"fatal" => Err(JobError::Fatal("cannot parse".to_string())),
                            b"flaky" if job.deliveries < 3 => {
                                Err(JobError::Retry(format!("attempt {}", job.deliveries)))
                            }
                            _ => {
                                o.done(&job);
                                Ok(())
                            }
                        }
                    }
                },
                stop,
                Duration::from_secs(5),
            )
            .await
            .expect("run");
        std::panic::set_hook(quiet);
        let dead = producer.dead_letters(10).await.expect("dead letters");
        assert_eq!(dead.len(), 2, "{dead:?}");
        let poison = dead
            .iter()
            .find(|d| d.payload == b"poison")
            .expect("poison");
        assert_eq!(poison.deliveries, 3);
        assert!(
            poison.error.contains("panicked: poison job"),
            "{}",
            poison.error
        );
        let fatal = dead.iter().find(|d| d.payload == b"fatal").expect("fatal");
        assert_eq!(fatal.deliveries, 1);
        assert!(fatal.error.contains("cannot parse"), "{}", fatal.error);
        // 20 fine + flaky on its third delivery.
        assert_eq!(ok.distinct(), 21);
        assert_eq!(ok.max_count(), 1);
        // poison 3 runs, fatal 1, flaky 3, fine 20.
        assert_eq!(runs.load(Ordering::SeqCst), 27);
        assert_eq!(report.retried, 4, "{report:?}");
        assert_eq!(report.dead_lettered, 2);
        assert_eq!(report.acked, 21);
    })
    .await;
}

#[tokio::test]
async fn enqueue_unique_adds_once() {
    within(30, "idempotent enqueue", async {
        let server = RedisServer::start();
        let cfg = fast_cfg(&server, "uniq");
        let producer = Producer::connect(&cfg).await.expect("producer");
        let first = producer
            .enqueue_unique("order-42", b"ship")
            .await
            .expect("first");
        let again = producer
            .enqueue_unique("order-42", b"ship again")
            .await
            .expect("again");
        assert!(!first.duplicate);
        assert!(again.duplicate);
        assert_eq!(first.id, again.id);
        let other = producer
            .enqueue_unique("order-43", b"ship")
            .await
            .expect("other");
        assert!(!other.duplicate);
        assert_eq!(producer.stats().await.expect("stats").backlog, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_never_holds_more_than_its_concurrency() {
    within(60, "backpressure", async {
        let server = RedisServer::start();
        let cfg = fast_cfg(&server, "bp").concurrency(8);
        let producer = Producer::connect(&cfg).await.expect("producer");
        producer
            .enqueue_many((0..200u32).map(|i| i.to_le_bytes()))
            .await
            .expect("enqueue");
        let pool = ThreadPoolInner::new(2, Some(1_000));
        let scope = pool.scope();
        let census = Census::default();
        let tally = Tally::default();
        let (c, t) = (census.clone(), tally.clone());
        // Sampled from Redis while the worker runs: jobs delivered and unfinished.
        let peak_pending = Arc::new(AtomicUsize::new(0));
        let sampler = {
            let (producer, peak) = (producer.clone(), peak_pending.clone());
            let tally = tally.clone();
            tokio::spawn(async move {
                while tally.distinct() < 200 {
                    let s = producer.stats().await.expect("stats");
                    peak.fetch_max(s.pending as usize, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        let worker = Worker::connect(cfg).await.expect("worker");
        worker
            .run_until(
                &scope,
                move |job: Job| {
                    let (c, t) = (c.clone(), t.clone());
                    async move {
                        let _alive = c.enter();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        t.done(&job);
                        Ok::<(), JobError<String>>(())
                    }
                },
                stop_when(&tally, 200, &CancellationToken::new()),
                Duration::from_secs(5),
            )
            .await
            .expect("run");
        sampler.await.expect("sampler");
        assert_eq!(tally.distinct(), 200);
        assert!(
            census.peak() <= 8,
            "{} handlers alive at once",
            census.peak()
        );
        assert!(census.peak() >= 2, "ran one at a time ({})", census.peak());
        let peak = peak_pending.load(Ordering::SeqCst);
        assert!(peak <= 8, "{peak} jobs pending in Redis at once");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_claim_idle_is_not_taken_over_while_its_worker_lives() {
    within(60, "lease renewal", async {
        let server = RedisServer::start();
        let cfg = fast_cfg(&server, "lease").concurrency(4);
        let producer = Producer::connect(&cfg).await.expect("producer");
        producer.enqueue(b"long").await.expect("enqueue");
        let pool = ThreadPoolInner::new(2, Some(100));
        let tally = Tally::default();
        let started = Arc::new(AtomicUsize::new(0));
        let token = CancellationToken::new();
        let run = |name: &'static str| {
            let cfg = cfg.clone().consumer(name);
            let (pool, tally, started, token) =
                (pool.clone(), tally.clone(), started.clone(), token.clone());
            async move {
                let scope = pool.scope();
                let worker = Worker::connect(cfg).await.expect("worker");
                let t = tally.clone();
                worker
                    .run_until(
                        &scope,
                        move |job: Job| {
                            let (t, s) = (t.clone(), started.clone());
                            async move {
                                s.fetch_add(1, Ordering::SeqCst);
                                // Three times claim_idle.
                                tokio::time::sleep(Duration::from_millis(1_800)).await;
                                t.done(&job);
                                Ok::<(), JobError<String>>(())
                            }
                        },
                        stop_when(&tally, 1, &token),
                        Duration::from_secs(5),
                    )
                    .await
                    .expect("run")
            }
        };
        let (a, b) = tokio::join!(run("a"), run("b"));
        token.cancel();
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "the job was started twice"
        );
        assert_eq!(tally.max_count(), 1);
        assert_eq!(a.claimed + b.claimed, 0, "{a:?} {b:?}");
        assert_eq!(a.lease_lost + b.lease_lost, 0);
        assert_eq!(producer.stats().await.expect("stats").pending, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_handed_back_at_a_stop_are_finished_by_another_worker_without_duplicates() {
    within(60, "hand-back", async {
        let server = RedisServer::start();
        // claim_idle 60 s: without the hand-back, nobody could take the jobs for a minute.
        let cfg = QueueConfig::new(server.url(), "handback")
            .claim_idle(Duration::from_secs(60))
            .claim_interval(Duration::from_millis(200))
            .concurrency(20);
        let producer = Producer::connect(&cfg).await.expect("producer");
        producer
            .enqueue_many((0..20u32).map(|i| i.to_le_bytes()))
            .await
            .expect("enqueue");
        let pool = ThreadPoolInner::new(2, Some(100));
        let tally = Tally::default();

        // Worker A takes all 20 and is stopped while they run.
        let scope_a = pool.scope();
        let a = Worker::connect(cfg.clone().consumer("a")).await.expect("a");
        let all_started = Arc::new(AtomicUsize::new(0));
        let s = all_started.clone();
        let stop_a = {
            let s = all_started.clone();
            async move {
                while s.load(Ordering::SeqCst) < 20 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        let report_a = a
            .run_until(
                &scope_a,
                move |_job: Job| {
                    let s = s.clone();
                    async move {
                        s.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Ok::<(), JobError<String>>(())
                    }
                },
                stop_a,
                Duration::from_millis(100),
            )
            .await
            .expect("run a");
        assert_eq!(report_a.handed_back, 20, "{report_a:?}");
        assert_eq!(report_a.acked, 0);

        // Worker B finishes them within seconds, each once.
        let t = tally.clone();
        let started = Instant::now();
        let scope_b = pool.scope();
        let b = Worker::connect(cfg.clone().consumer("b")).await.expect("b");
        let report_b = b
            .run_until(
                &scope_b,
                move |job: Job| {
                    let t = t.clone();
                    async move {
                        // The hand-back did not count as a delivery.
                        assert_eq!(job.deliveries, 1, "{job:?}");
                        t.done(&job);
                        Ok::<(), JobError<String>>(())
                    }
                },
                stop_when(&tally, 20, &CancellationToken::new()),
                Duration::from_secs(5),
            )
            .await
            .expect("run b");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(tally.distinct(), 20);
        assert_eq!(tally.max_count(), 1);
        assert_eq!(report_b.claimed, 20, "{report_b:?}");
        assert_eq!(producer.stats().await.expect("stats").pending, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_run_loses_nothing() {
    within(120, "server restart", async {
        let mut server = RedisServer::start();
        let cfg = fast_cfg(&server, "restart").concurrency(32);
        let producer = Producer::connect(&cfg).await.expect("producer");
        producer
            .enqueue_many((0..2_000u32).map(|i| i.to_le_bytes()))
            .await
            .expect("enqueue");
        let pool = ThreadPoolInner::new(2, Some(1_000));
        let scope = pool.scope();
        let tally = Tally::default();
        let worker = Worker::connect(cfg).await.expect("worker");
        let never = CancellationToken::new();
        let run = worker.run_until(
            &scope,
            tally.recorder(Duration::from_millis(2)),
            stop_when(&tally, 2_000, &never),
            Duration::from_secs(5),
        );
        let restart = async {
            stop_when(&tally, 300, &never).await;
            let restarting = tokio::task::spawn_blocking(move || {
                server.restart();
                server
            });
            restarting.await.expect("restart")
        };
        let (report, server) = tokio::join!(run, restart);
        let report = report.expect("run");
        assert_eq!(tally.distinct(), 2_000);
        assert!(
            report.reconnects > 0,
            "the restart went unnoticed: {report:?}"
        );
        // Jobs done but not yet acked when the server went down ran again: duplicates are
        // allowed (at least once), losses are not.
        let producer = Producer::connect(&fast_cfg(&server, "restart"))
            .await
            .expect("producer after restart");
        let stats = producer.stats().await.expect("stats");
        assert_eq!((stats.backlog, stats.pending), (0, 0), "{stats:?}");
    })
    .await;
}

#[tokio::test]
async fn bad_input_is_an_error_naming_its_cause() {
    within(30, "bad input", async {
        let field = |r: Result<Producer, QueueError>| match r {
            Err(QueueError::Config { field, .. }) => field,
            other => panic!("expected a Config error, got {other:?}"),
        };
        assert_eq!(
            field(Producer::connect(&QueueConfig::new("http://localhost", "q")).await),
            "url"
        );
        assert_eq!(
            field(
                Producer::connect(&QueueConfig::new("redis://127.0.0.1:1", "q").group("my group"))
                    .await
            ),
            "group"
        );
        assert_eq!(
            field(
                Producer::connect(&QueueConfig::new("redis://127.0.0.1:1", "q").concurrency(0))
                    .await
            ),
            "concurrency"
        );
        // Nothing listens on this port: a Connect error, within a few seconds.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let t = Instant::now();
        let err = Producer::connect(
            &QueueConfig::new(format!("redis://127.0.0.1:{port}"), "q")
                .connect_timeout(Duration::from_secs(2)),
        )
        .await
        .expect_err("no server");
        assert!(matches!(err, QueueError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains(&port.to_string()), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

        let server = RedisServer::start();
        let cfg = fast_cfg(&server, "bad").max_payload(16).concurrency(64);
        let producer = Producer::connect(&cfg).await.expect("producer");
        let err = producer.enqueue(&[0u8; 17]).await.expect_err("too large");
        assert!(matches!(
            err,
            QueueError::PayloadTooLarge { len: 17, max: 16 }
        ));
        assert_eq!(producer.stats().await.expect("stats").backlog, 0);
        producer.enqueue(b"x").await.expect("enqueue");
        // Concurrency above the pool's bound: refused before any job is taken.
        let pool = ThreadPoolInner::new(1, Some(10));
        let scope = pool.scope();
        let worker = Worker::connect(cfg).await.expect("worker");
        let err = worker
            .run_until(
                &scope,
                |_job: Job| async { Ok::<(), JobError<String>>(()) },
                async {},
                Duration::ZERO,
            )
            .await
            .expect_err("above max_pending");
        assert!(
            matches!(
                err,
                QueueError::ConcurrencyAbovePool {
                    concurrency: 64,
                    max_pending: 10
                }
            ),
            "{err:?}"
        );
        let stats = producer.stats().await.expect("stats");
        assert_eq!((stats.backlog, stats.pending), (1, 0));
    })
    .await;
}

/// Three worker processes (examples/queue_worker.rs); one is killed with SIGKILL mid-run. No
/// job is lost: every job succeeds at least once, the jobs done twice are at most what the
/// killed worker held (its concurrency), and nothing stays pending. The two others then stop
/// on SIGTERM and exit 0.
#[test]
fn killing_one_of_three_worker_processes_loses_no_job() {
    use std::process::{Command, Stdio};
    let exe = common::build_example_with("queue_worker", &["redis"]);
    let server = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cfg = QueueConfig::new(server.url(), "crash");
    let producer = rt.block_on(Producer::connect(&cfg)).expect("producer");
    let jobs = 3_000u32;
    rt.block_on(producer.enqueue_many((0..jobs).map(|i| i.to_le_bytes())))
        .expect("enqueue");
    let dir = tempfile::tempdir().expect("temp dir");
    let concurrency = 16;
    let start = |i: usize| {
        Command::new(&exe)
            .args([
                "--url",
                &server.url(),
                "--queue",
                "crash",
                "--concurrency",
                &concurrency.to_string(),
                "--work-ms",
                "3",
                "--claim-idle-ms",
                "1000",
                "--grace-ms",
                "2000",
                "--done-log",
            ])
            .arg(dir.path().join(format!("done-{i}.log")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a worker process")
    };
    let mut workers: Vec<_> = (0..3).map(start).collect();
    let done_lines = || -> Vec<String> {
        (0..3)
            .flat_map(|i| {
                std::fs::read_to_string(dir.path().join(format!("done-{i}.log")))
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    // Kill worker 0 once a third of the jobs are done.
    assert!(
        common::eventually(Duration::from_secs(60), || done_lines().len() >= 1_000),
        "workers made no progress"
    );
    workers[0].kill().expect("SIGKILL worker 0");
    workers[0].wait().expect("reap worker 0");
    let all_done = || {
        let mut ids = done_lines();
        ids.sort();
        ids.dedup();
        ids.len() == jobs as usize
    };
    assert!(
        common::eventually(Duration::from_secs(90), all_done),
        "jobs lost: {} distinct done of {jobs}",
        {
            let mut ids = done_lines();
            ids.sort();
            ids.dedup();
            ids.len()
        }
    );
    let lines = done_lines();
    let duplicates = lines.len() - jobs as usize;
    assert!(
        duplicates <= concurrency,
        "{duplicates} jobs ran twice; the killed worker held at most {concurrency}"
    );
    assert!(common::eventually(Duration::from_secs(10), || {
        let s = rt.block_on(producer.stats()).expect("stats");
        (s.backlog, s.pending) == (0, 0)
    }));
    for w in &mut workers[1..] {
        let pid = w.id() as i32;
        // SAFETY: sends SIGTERM to a child process this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }
    for w in &mut workers[1..] {
        let status = w.wait().expect("worker exits");
        assert!(status.success(), "a worker stopped with {status}");
    }
}

/// A job whose lease another consumer took (here by a direct `XCLAIM`) is cancelled where it
/// ran: its future is dropped, the worker counts a lost lease and does not ack it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_lease_is_taken_is_cancelled_locally() {
    use redis::AsyncCommands;
    within(60, "lease lost", async {
        let server = RedisServer::start();
        let cfg = fast_cfg(&server, "stolen").concurrency(4);
        let producer = Producer::connect(&cfg).await.expect("producer");
        let id = producer.enqueue(b"long").await.expect("enqueue");
        let pool = ThreadPoolInner::new(2, Some(100));
        let scope = pool.scope();
        let (guard, dropped) = common::drop_flag();
        let guard = Arc::new(Mutex::new(Some(guard)));
        let started = CancellationToken::new();
        let (g, s) = (guard.clone(), started.clone());
        let worker = Worker::connect(cfg.clone().consumer("victim"))
            .await
            .expect("worker");
        let client = redis::Client::open(server.url()).expect("client");
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .expect("connection");
        let key = cfg.jobs_key();
        let thief = async {
            started.cancelled().await;
            let _: redis::Value = redis::cmd("XCLAIM")
                .arg(&key)
                .arg("workers")
                .arg("thief")
                .arg(0)
                .arg(id.as_str())
                .query_async(&mut con)
                .await
                .expect("XCLAIM by another consumer");
        };
        let dropped2 = dropped.clone();
        let run = worker.run_until(
            &scope,
            move |_job: Job| {
                let (g, s) = (g.clone(), s.clone());
                async move {
                    let _guard = g.lock().unwrap_or_else(|p| p.into_inner()).take();
                    s.cancel();
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok::<(), JobError<String>>(())
                }
            },
            async move {
                while !dropped2.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Duration::from_secs(1),
        );
        let (report, ()) = tokio::join!(run, thief);
        let report = report.expect("run");
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(report.lease_lost, 1, "{report:?}");
        assert_eq!(report.acked, 0);
        // Still pending, now the thief's.
        let pending: redis::streams::StreamPendingCountReply = con
            .xpending_count(&key, "workers", "-", "+", 10)
            .await
            .expect("XPENDING");
        assert_eq!(pending.ids.len(), 1);
        assert_eq!(pending.ids[0].consumer, "thief");
    })
    .await;
}

/// The consumer group vanishes mid-run (a server that lost its data, here `XGROUP DESTROY`):
/// the worker recreates it on `NOGROUP` and finishes every job still in the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_consumer_group_is_recreated() {
    within(60, "NOGROUP", async {
        let server = RedisServer::start();
        let cfg = fast_cfg(&server, "nogroup").concurrency(8);
        let producer = Producer::connect(&cfg).await.expect("producer");
        producer
            .enqueue_many((0..400u32).map(|i| i.to_le_bytes()))
            .await
            .expect("enqueue");
        let pool = ThreadPoolInner::new(2, Some(100));
        let scope = pool.scope();
        let tally = Tally::default();
        let worker = Worker::connect(cfg.clone()).await.expect("worker");
        let never = CancellationToken::new();
        let run = worker.run_until(
            &scope,
            tally.recorder(Duration::from_millis(2)),
            stop_when(&tally, 400, &never),
            Duration::from_secs(5),
        );
        let destroy = async {
            stop_when(&tally, 100, &never).await;
            let client = redis::Client::open(server.url()).expect("client");
            let mut con = client
                .get_multiplexed_async_connection()
                .await
                .expect("connection");
            let destroyed: i64 = redis::cmd("XGROUP")
                .arg("DESTROY")
                .arg(cfg.jobs_key())
                .arg("workers")
                .query_async(&mut con)
                .await
                .expect("XGROUP DESTROY");
            assert_eq!(destroyed, 1);
        };
        let (report, ()) = tokio::join!(run, destroy);
        report.expect("run");
        assert_eq!(tally.distinct(), 400);
        let stats = producer.stats().await.expect("stats");
        assert_eq!((stats.backlog, stats.pending), (0, 0), "{stats:?}");
    })
    .await;
}

/// Closing the worker's scope ends the run like a stop signal: the jobs admitted before the
/// close finish and are acked, any read after it are handed back, the rest stay in the
/// backlog; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_scope_ends_the_run() {
    within(60, "scope closed", async {
        let server = RedisServer::start();
        let cfg = fast_cfg(&server, "closed").concurrency(4);
        let producer = Producer::connect(&cfg).await.expect("producer");
        producer
            .enqueue_many((0..200u32).map(|i| i.to_le_bytes()))
            .await
            .expect("enqueue");
        let pool = ThreadPoolInner::new(2, Some(100));
        let scope = Arc::new(pool.scope());
        let tally = Tally::default();
        let (t, s) = (tally.clone(), scope.clone());
        let worker = Worker::connect(cfg).await.expect("worker");
        let report = worker
            .run_until(
                &scope,
                move |job: Job| {
                    let (t, s) = (t.clone(), s.clone());
                    async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        t.done(&job);
                        if t.distinct() == 20 {
                            s.close();
                        }
                        Ok::<(), JobError<String>>(())
                    }
                },
                std::future::pending::<()>(), // never: only the close ends it
                Duration::from_secs(2),
            )
            .await
            .expect("run");
        let done = tally.distinct() as u64;
        assert!((20..=24).contains(&done), "{done} done");
        // Jobs read after the close were handed back (pending, idle, for another worker).
        let stats = producer.stats().await.expect("stats");
        assert_eq!(stats.pending, report.handed_back, "{stats:?} {report:?}");
        assert_eq!(report.acked, done, "{report:?}");
        assert_eq!(
            stats.backlog + stats.pending + done,
            200,
            "{stats:?} {report:?}"
        );
    })
    .await;
}
