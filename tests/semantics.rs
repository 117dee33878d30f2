//! The core contract, point by point (the numbered points p1-p12, then bad input),
//! as a user would call it, with real tokio I/O where the point involves I/O. Timing checks
//! poll with generous deadlines.

mod common;

use common::{
    drop_flag, eventually, iters_for, measure_speedup, probed, skip_without_two_cpus, spin_iters,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use async_rayon::{Config, Scope, SpawnError, TaskError, TaskHandle, ThreadPoolInner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback TCP server that accepts connections and never answers.
async fn silent_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            keep.push(sock);
        }
    });
    addr
}

/// The basic pattern: 1000 tasks spawned through handles and joined, each with its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_spawn_through_handles() {
    let pool = ThreadPoolInner::with_config(Config::io_bound());
    let scope = Scope::new(pool.clone());
    let handles: Vec<_> = (0..1000)
        .map(|i| {
            scope.spawn_with_handle(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                i * 2
            })
        })
        .collect();
    let results = scope.join_handles(handles).await;
    assert_eq!(results.len(), 1000);
    assert!(results.iter().enumerate().all(|(i, r)| r == &Ok(i * 2)));
    pool.shutdown().await;
}

/// Sleeps 100 ms in its Drop before dropping the value it holds.
struct SlowDrop<T>(T);
impl<T> Drop for SlowDrop<T> {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Handles are Send + Unpin futures; the scope is Send + Sync.
#[test]
fn handle_and_scope_auto_traits() {
    fn send_unpin<T: Send + Unpin + std::future::Future>() {}
    fn send_sync<T: Send + Sync>() {}
    send_unpin::<TaskHandle<String>>();
    send_sync::<Scope>();
    send_sync::<Arc<ThreadPoolInner>>();
}

/// Point 1: Every handle resolves exactly once, to the value or the error; an Err only after the
/// future was dropped.
#[test]
fn p1_each_handle_resolves_once_after_the_future_is_dropped() {
    let pool = ThreadPoolInner::new(2, None);
    let scope = Scope::new(pool.clone());
    assert_eq!(
        pool.block_on(scope.spawn_with_handle(async { "v" })),
        Ok("v")
    );
    // The future's Drop takes 100 ms before it sets the flag: if the Err were reported before
    // (or while) the future is dropped, block_on would return with the flag still unset.
    let (flag, dropped) = drop_flag();
    let h = scope.spawn_with_handle(async move {
        let _flag = SlowDrop(flag);
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    std::thread::sleep(Duration::from_millis(20));
    h.cancel();
    let mut h = h;
    assert_eq!(pool.block_on(&mut h), Err(TaskError::Cancelled));
    assert!(
        dropped.load(SeqCst),
        "the future was dropped before the Err was reported"
    );
    assert!(h.is_finished());
}

/// Point 2: spawn_with_handle never blocks: when full it resolves Rejected at once and drops the
/// future; try_spawn says Full; reserve waits first come first served; a permit holds its
/// slot until it spawns or drops.
#[test]
fn p2_admission_refuses_or_waits() {
    let pool = ThreadPoolInner::new(2, Some(2));
    let scope = Scope::new(pool.clone());
    let (tx_a, rx_a) = tokio::sync::watch::channel(false);
    let (tx_b, rx_b) = tokio::sync::watch::channel(false);
    let hold = |rx: tokio::sync::watch::Receiver<bool>| async move {
        let mut rx = rx;
        let _ = rx.wait_for(|go| *go).await;
    };
    let a = scope.spawn_with_handle(hold(rx_a));
    let b = scope.spawn_with_handle(hold(rx_b));
    let (future, probe) = probed(());
    let t = Instant::now();
    let c = scope.spawn_with_handle(future);
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "spawn_with_handle did not block"
    );
    assert!(c.is_finished());
    assert!(probe.dropped(), "the refused future was dropped at once");
    assert_eq!(pool.block_on(c), Err(TaskError::Rejected));
    assert!(!probe.polled(), "the refused future was polled");
    assert_eq!(
        scope.try_spawn_with_handle(async {}).err(),
        Some(SpawnError::Full)
    );

    // reserve(): two waiters queue in order. One slot is freed: the first waiter gets it,
    // records its turn and runs a task, whose end frees the slot for the second.
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let scope = Arc::new(scope);
    let waiters: Vec<_> = (0..2)
        .map(|i| {
            let (scope, order) = (scope.clone(), order.clone());
            let pool = pool.clone();
            let t = std::thread::spawn(move || {
                pool.block_on(async {
                    let permit = scope.reserve().await.expect("running");
                    order.lock().push(i);
                    permit.spawn_with_handle(async {}).await
                })
            });
            // Queue the first before the second.
            std::thread::sleep(Duration::from_millis(50));
            t
        })
        .collect();
    assert!(order.lock().is_empty(), "nobody got a slot while full");
    tx_a.send(true).expect("receiver alive");
    for w in waiters {
        assert_eq!(w.join().expect("waiter"), Ok(()));
    }
    assert_eq!(*order.lock(), vec![0, 1]);
    tx_b.send(true).expect("receiver alive");
    assert_eq!(pool.block_on(a), Ok(()));
    assert_eq!(pool.block_on(b), Ok(()));

    // A dropped permit frees its slot.
    pool.block_on(async {
        let p1 = scope.reserve().await.expect("slot");
        let p2 = scope.reserve().await.expect("slot");
        assert_eq!(
            scope.try_spawn_with_handle(async {}).err(),
            Some(SpawnError::Full)
        );
        drop(p1);
        let h = scope
            .try_spawn_with_handle(async { 1 })
            .expect("room after drop");
        assert_eq!(h.await, Ok(1));
        drop(p2);
    });
    assert!(eventually(Duration::from_secs(5), || pool.pending_tasks() == 0));
}

/// Point 2 (admission) + the slot contract: a caller that saw a handle resolve can spawn at once.
#[test]
fn p2_slot_is_free_when_the_handle_resolves() {
    let pool = ThreadPoolInner::new(2, Some(1));
    let scope = Scope::new(pool.clone());
    pool.block_on(async {
        for i in 0..2_000u32 {
            let h = scope
                .try_spawn_with_handle(async move { i })
                .expect("the previous task's slot was freed before its handle resolved");
            assert_eq!(h.await, Ok(i));
        }
    });
}

/// Point 3: cancel(): not started never starts; suspended on I/O is dropped promptly; mid-poll is
/// dropped when the poll returns; finished keeps its value.
#[test]
fn p3_cancel_in_every_state() {
    let pool = ThreadPoolInner::new(1, None);
    let scope = Scope::new(pool.clone());
    // Not started: the only worker is busy, the second task is queued.
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    let busy = scope.spawn_with_handle(async move {
        while !g.load(SeqCst) {
            std::thread::yield_now();
        }
    });
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let queued = scope.spawn_with_handle(async move { s.store(true, SeqCst) });
    queued.cancel();
    gate.store(true, SeqCst);
    assert_eq!(pool.block_on(queued), Err(TaskError::Cancelled));
    assert!(
        !started.load(SeqCst),
        "a cancelled queued task never starts"
    );
    assert_eq!(pool.block_on(busy), Ok(()));

    // Suspended on a TCP read that never completes: dropped promptly.
    let (flag, dropped) = drop_flag();
    let addr = pool.block_on(silent_server());
    let reading = scope.spawn_with_handle(async move {
        let _flag = flag;
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let mut buf = [0u8; 1];
        s.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(())
    });
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    reading.cancel();
    assert!(matches!(pool.block_on(reading), Err(TaskError::Cancelled)));
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(dropped.load(SeqCst));

    // Mid-poll: dropped when that poll returns.
    let in_poll = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let (ip, rel) = (in_poll.clone(), release.clone());
    let mid = scope.spawn_with_handle(async move {
        ip.store(true, SeqCst);
        while !rel.load(SeqCst) {
            std::thread::yield_now();
        }
        tokio::task::yield_now().await;
        "not reached"
    });
    assert!(eventually(Duration::from_secs(5), || in_poll.load(SeqCst)));
    mid.cancel();
    release.store(true, SeqCst);
    assert_eq!(pool.block_on(mid), Err(TaskError::Cancelled));

    // Finished: keeps its value.
    let mut done = scope.spawn_with_handle(async { 9 });
    assert!(eventually(Duration::from_secs(5), || done.is_finished()));
    let cancelled_before = pool.metrics_fast().cancelled;
    done.cancel();
    assert_eq!(pool.block_on(&mut done), Ok(9));
    assert_eq!(
        pool.metrics_fast().cancelled,
        cancelled_before,
        "cancelling a finished task counted it as cancelled"
    );
}

/// Point 3 (token): cancel() cancels the task's token; cancelling the token cancels the task.
#[test]
fn p3_cancellation_token_is_the_tasks() {
    let pool = ThreadPoolInner::new(2, None);
    let scope = Scope::new(pool.clone());
    let h = scope.spawn_with_handle(async { tokio::time::sleep(Duration::from_secs(3600)).await });
    let token = h.cancellation_token();
    assert!(!token.is_cancelled());
    h.cancel();
    assert!(token.is_cancelled());
    assert_eq!(pool.block_on(h), Err(TaskError::Cancelled));

    let h = scope.spawn_with_handle(async { tokio::time::sleep(Duration::from_secs(3600)).await });
    std::thread::sleep(Duration::from_millis(20));
    h.cancellation_token().cancel();
    assert_eq!(pool.block_on(h), Err(TaskError::Cancelled));
}

/// Point 4: await_timeout waits at most d, then cancels and yields TimedOut.
#[test]
fn p4_await_timeout() {
    let pool = ThreadPoolInner::new(2, None);
    let scope = Scope::new(pool.clone());
    let (flag, dropped) = drop_flag();
    let h = scope.spawn_with_handle(async move {
        let _flag = flag;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let t = Instant::now();
    assert_eq!(
        pool.block_on(h.await_timeout(Duration::from_millis(50))),
        Err(TaskError::TimedOut)
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(45) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(dropped.load(SeqCst), "the task was cancelled and dropped");
    // A task that finishes in time keeps its value.
    let h = scope.spawn_with_handle(async { 3 });
    assert_eq!(
        pool.block_on(h.await_timeout(Duration::from_secs(5))),
        Ok(3)
    );
}

/// Point 5: task_timeout runs from the first poll: queue time does not count.
#[test]
fn p5_task_timeout_from_first_poll() {
    let pool = ThreadPoolInner::with_config(Config {
        num_threads: 1,
        max_pending: None,
        enable_work_stealing: true,
        task_timeout: Some(Duration::from_millis(100)),
    });
    let scope = Scope::new(pool.clone());
    // Blocks the only worker for 300 ms: the next task waits in the queue that long.
    let blocker = scope.spawn_with_handle(async { std::thread::sleep(Duration::from_millis(300)) });
    let queued = scope.spawn_with_handle(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        "in time"
    });
    let slow = scope.spawn_with_handle(async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        "never"
    });
    assert_eq!(pool.block_on(blocker), Ok(()));
    assert_eq!(pool.block_on(queued), Ok("in time"));
    let t = Instant::now();
    assert_eq!(pool.block_on(slow), Err(TaskError::TimedOut));
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// Point 6: Dropping a handle detaches: the task still runs, counts for wait(), cancel() and
/// shutdown.
#[test]
fn p6_dropped_handle_detaches() {
    let pool = ThreadPoolInner::new(2, None);
    let scope = Scope::new(pool.clone());
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let d = done.clone();
        drop(scope.spawn_with_handle(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            d.fetch_add(1, SeqCst);
        }));
    }
    pool.block_on(scope.wait());
    assert_eq!(done.load(SeqCst), 10, "wait() waited for detached tasks");
    let (flag, dropped) = drop_flag();
    drop(scope.spawn_with_handle(async move {
        let _flag = flag;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }));
    scope.cancel();
    pool.block_on(scope.wait());
    assert!(dropped.load(SeqCst), "cancel() reached the detached task");
}

/// Point 7: Scope::cancel cancels that scope's tasks only; drop(scope) cancels without waiting.
#[test]
fn p7_scope_cancel_and_drop() {
    let pool = ThreadPoolInner::new(2, None);
    let a = Scope::new(pool.clone());
    let b = Scope::new(pool.clone());
    let long = || async { tokio::time::sleep(Duration::from_secs(3600)).await };
    let ha: Vec<_> = (0..5).map(|_| a.spawn_with_handle(long())).collect();
    let hb = b.spawn_with_handle(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        "b survives"
    });
    a.cancel();
    assert_eq!(
        pool.block_on(a.join_handles(ha)),
        vec![Err(TaskError::Cancelled); 5]
    );
    assert_eq!(pool.block_on(hb), Ok("b survives"));

    let (flag, dropped) = drop_flag();
    let c = Scope::new(pool.clone());
    let hc = c.spawn_with_handle(async move {
        let _flag = flag;
        long().await
    });
    let t = Instant::now();
    drop(c);
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "drop did not wait"
    );
    assert_eq!(pool.block_on(hc), Err(TaskError::Cancelled));
    assert!(dropped.load(SeqCst));
}

/// Point 8: A task awaiting another task's handle never deadlocks, even with one thread.
#[test]
fn p8_awaiting_another_task_on_one_thread() {
    let pool = ThreadPoolInner::new(1, None);
    let scope = Arc::new(Scope::new(pool.clone()));
    let s = scope.clone();
    let outer = scope.spawn_with_handle(async move {
        let mut total = 0;
        for i in 0..100 {
            let inner = s.spawn_with_handle(async move {
                tokio::task::yield_now().await;
                i
            });
            total += inner.await.expect("inner ran");
        }
        total
    });
    assert_eq!(pool.block_on(outer), Ok(4950));
}

/// Point 9: shutdown: new spawns refused with Shutdown; admitted tasks finish; workers joined and
/// their stop hook has run. shutdown_timeout cancels the rest at the deadline and is bounded
/// even when a task blocks its thread; shutdown_timeout(0) returns at once.
#[test]
fn p9_shutdown() {
    let stopped = Arc::new(AtomicUsize::new(0));
    let s = stopped.clone();
    let pool = ThreadPoolInner::builder()
        .num_threads(2)
        .on_thread_stop(move || {
            s.fetch_add(1, SeqCst);
        })
        .build()
        .expect("valid");
    let scope = Scope::new(pool.clone());
    let finished = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let f = finished.clone();
            scope.spawn_with_handle(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                f.fetch_add(1, SeqCst);
            })
        })
        .collect();
    pool.block_on(pool.shutdown());
    assert_eq!(finished.load(SeqCst), 20, "every admitted task finished");
    assert_eq!(
        stopped.load(SeqCst),
        2,
        "on_thread_stop ran on every worker"
    );
    assert_eq!(pool.block_on(scope.join_handles(handles)), vec![Ok(()); 20]);
    assert!(pool.is_shutdown());
    assert_eq!(
        pool.block_on(scope.spawn_with_handle(async {})),
        Err(TaskError::Shutdown)
    );
    assert_eq!(
        scope.try_spawn_with_handle(async {}).err(),
        Some(SpawnError::Shutdown)
    );
    assert_eq!(
        pool.block_on(scope.reserve()).err(),
        Some(SpawnError::Shutdown)
    );

    // Deadline with a task that blocks its thread.
    let pool = ThreadPoolInner::new(2, None);
    let scope = Scope::new(pool.clone());
    let stuck = scope.spawn_with_handle(async { std::thread::sleep(Duration::from_millis(500)) });
    let sleepers: Vec<_> = (0..50)
        .map(|_| {
            scope.spawn_with_handle(async { tokio::time::sleep(Duration::from_secs(60)).await })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    let t = Instant::now();
    assert!(!pool.block_on(pool.shutdown_timeout(Duration::from_millis(100))));
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(100 + 50 + 100),
        "took {took:?}"
    );
    let results = pool.block_on(scope.join_handles(sleepers));
    assert_eq!(results, vec![Err(TaskError::Cancelled); 50]);
    assert_eq!(
        pool.block_on(stuck),
        Ok(()),
        "the stuck task ends when its poll returns"
    );

    // Zero deadline.
    let pool = ThreadPoolInner::new(2, None);
    let scope = Scope::new(pool.clone());
    let h = scope.spawn_with_handle(async { tokio::time::sleep(Duration::from_secs(60)).await });
    let t = Instant::now();
    assert!(!pool.block_on(pool.shutdown_timeout(Duration::ZERO)));
    assert!(t.elapsed() < Duration::from_millis(150));
    assert_eq!(pool.block_on(h), Err(TaskError::Cancelled));
}

/// Held by the tests that start extra pools for long (p12) or count the process's threads
/// (p10), so one does not see the other's worker threads.
static THREADS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn threads_lock() -> std::sync::MutexGuard<'static, ()> {
    THREADS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Adds one to its counter when dropped.
struct Count(Arc<AtomicUsize>);
impl Drop for Count {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// Point 10: Dropping the last Arc without shutdown cancels what is left and stops the workers;
/// 100 create/drop cycles keep the thread count flat.
#[test]
fn p10_drop_without_shutdown() {
    let _threads = threads_lock();
    let base = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0);
    let dropped = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let pool = ThreadPoolInner::new(2, None);
        let scope = Scope::new(pool.clone());
        for _ in 0..3 {
            // Counted when the future is dropped, whether or not it ever ran.
            let count = Count(dropped.clone());
            drop(scope.spawn_with_handle(async move {
                let _count = count;
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }));
        }
        drop(scope);
        drop(pool);
    }
    assert!(eventually(Duration::from_secs(10), || dropped.load(SeqCst) == 300));
    let threads = || {
        std::fs::read_dir("/proc/self/task")
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(10), || threads() <= base + 2),
        "threads {} vs {base} before",
        threads()
    );
}

/// Point 11: block_on runs a future on the calling thread with the pool's tokio entered; from a
/// worker of the same pool it panics with a clear message.
#[test]
fn p11_block_on() {
    let pool = ThreadPoolInner::new(1, None);
    let v = pool.block_on(async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move { tx.send(8).ok() });
        rx.await.unwrap_or(0)
    });
    assert_eq!(v, 8);
    let scope = Scope::new(pool.clone());
    let p = pool.clone();
    let r = pool.block_on(scope.spawn_with_handle(async move { p.block_on(async { 1 }) }));
    match r {
        Err(TaskError::Panicked(msg)) => assert!(msg.contains("block_on"), "{msg}"),
        other => panic!("expected a panic, got {other:?}"),
    }
}

/// Point 12: CPU-bound tasks run in parallel on all workers: 8 tasks of the same fixed work
/// finish at least 1.5x faster on 2 threads than on 1.
#[test]
fn p12_cpu_tasks_run_in_parallel() {
    if skip_without_two_cpus("p12_cpu_tasks_run_in_parallel") {
        return;
    }
    let _threads = threads_lock();
    let iters = iters_for(Duration::from_millis(30));
    let pools = [ThreadPoolInner::new(1, None), ThreadPoolInner::new(2, None)];
    let expected = spin_iters(iters);
    let speedup = measure_speedup(5, Duration::from_secs(20), |threads| {
        let pool = &pools[threads - 1];
        let scope = Scope::new(pool.clone());
        let t = Instant::now();
        let hs: Vec<_> = (0..8)
            .map(|_| scope.spawn_with_handle(async move { spin_iters(iters) }))
            .collect();
        let results = pool.block_on(scope.join_handles(hs));
        let took = t.elapsed();
        assert_eq!(
            results,
            vec![Ok(expected); 8],
            "every CPU task returned its value"
        );
        took
    });
    if let Err(e) = speedup {
        panic!("8 CPU tasks did not run in parallel on 2 threads: {e}");
    }
}

/// Tasks use tokio: timers, sync, tokio::spawn and real loopback TCP.
#[test]
fn tasks_use_tokio_io() {
    let pool = ThreadPoolInner::new(2, None);
    let scope = Scope::new(pool.clone());
    let results = pool.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = scope.spawn_with_handle(async move {
            for _ in 0..20 {
                let (mut s, _) = listener.accept().await?;
                tokio::spawn(async move {
                    let mut b = [0u8; 5];
                    if s.read_exact(&mut b).await.is_ok() {
                        let _ = s.write_all(&b).await;
                    }
                });
            }
            Ok::<_, std::io::Error>(())
        });
        let clients: Vec<_> = (0..20)
            .map(|_| {
                scope.spawn_with_handle(async move {
                    let mut s = tokio::net::TcpStream::connect(addr).await?;
                    s.write_all(b"hello").await?;
                    let mut b = [0u8; 5];
                    s.read_exact(&mut b).await?;
                    Ok::<_, std::io::Error>(b)
                })
            })
            .collect();
        let r = scope.join_handles(clients).await;
        server.await.expect("server task").expect("server io");
        r
    });
    for r in results {
        assert_eq!(&r.expect("task").expect("io"), b"hello");
    }
}

/// Bad input: num_threads == 0 or max_pending == Some(0) is a ConfigError naming the field;
/// with_config and new panic with that message.
#[test]
fn bad_config_is_an_error_naming_the_field() {
    let e = ThreadPoolInner::try_with_config(Config {
        num_threads: 0,
        ..Config::default()
    })
    .expect_err("0 threads");
    assert!(e.to_string().contains("num_threads"), "{e}");
    let e = ThreadPoolInner::builder()
        .max_pending(0)
        .build()
        .expect_err("max_pending 0");
    assert!(e.to_string().contains("max_pending"), "{e}");
    let r = std::panic::catch_unwind(|| ThreadPoolInner::new(1, Some(0)));
    let msg = r
        .expect_err("panics")
        .downcast::<String>()
        .map(|s| *s)
        .unwrap_or_default();
    assert!(msg.contains("max_pending"), "{msg}");
}

/// Presets: cpu_bound = cores, io_bound = 2 x cores, both max_pending 10 000, stealing on,
/// no timeout; Default = cpu_bound; builder names the threads.
#[test]
fn presets_and_thread_names() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let c = Config::cpu_bound();
    assert_eq!(
        (
            c.num_threads,
            c.max_pending,
            c.enable_work_stealing,
            c.task_timeout
        ),
        (cores, Some(10_000), true, None)
    );
    let io = Config::io_bound();
    assert_eq!((io.num_threads, io.max_pending), (cores * 2, Some(10_000)));
    assert_eq!(Config::default(), c);
    let pool = ThreadPoolInner::builder()
        .num_threads(1)
        .thread_name("named")
        .build()
        .expect("valid");
    let scope = Scope::new(pool.clone());
    let name = pool.block_on(
        scope.spawn_with_handle(async { std::thread::current().name().map(str::to_string) }),
    );
    assert_eq!(name, Ok(Some("named-0".to_string())));
}

/// Work stealing off still runs everything.
#[test]
fn without_work_stealing_everything_runs() {
    let pool = ThreadPoolInner::with_config(Config {
        num_threads: 2,
        max_pending: None,
        enable_work_stealing: false,
        task_timeout: None,
    });
    let scope = Arc::new(Scope::new(pool.clone()));
    let s = scope.clone();
    let total = pool.block_on(scope.spawn_with_handle(async move {
        let hs: Vec<_> = (0..1_000u64)
            .map(|i| s.spawn_with_handle(async move { i }))
            .collect();
        s.join_handles(hs)
            .await
            .into_iter()
            .map(|r| r.expect("ran"))
            .sum::<u64>()
    }));
    assert_eq!(total, Ok(499_500));
}
