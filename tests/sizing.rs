//! The pool's size at run time: `resize` up and down under load, thread hooks, the hand-over
//! of a retiring worker's queued tasks, bad input, shutdown, and the autoscaler.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use async_rayon::{Config, ConfigError, Scope, ThreadPoolInner};

/// Polls `cond` every millisecond until it holds or `limit` passes; true if it held.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// Worker threads of this process named `{prefix}-{number}` (Linux: `/proc/self/task`).
fn os_workers_named(prefix: &str) -> usize {
    os_thread_names()
        .iter()
        .filter(|name| {
            name.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count()
}

/// Threads of this process named `name` (as the kernel keeps it: its first 15 bytes).
fn os_threads_called(name: &str) -> usize {
    let kept = &name[..name.len().min(15)];
    os_thread_names().iter().filter(|n| *n == kept).count()
}

fn os_thread_names() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|name| name.trim_end().to_string())
        .collect()
}

/// Counts of the thread hooks.
fn hooked_pool(
    prefix: &str,
    threads: usize,
    max: usize,
) -> (Arc<ThreadPoolInner>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (started, stopped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (s, t) = (started.clone(), stopped.clone());
    let pool = ThreadPoolInner::builder()
        .num_threads(threads)
        .max_threads(max)
        .thread_name(prefix)
        .on_thread_start(move || {
            s.fetch_add(1, SeqCst);
        })
        .on_thread_stop(move || {
            t.fetch_add(1, SeqCst);
        })
        .build()
        .expect("valid settings");
    (pool, started, stopped)
}

#[test]
fn resizing_up_and_down_under_100k_tasks_gives_every_task_one_outcome() {
    const TASKS: usize = 100_000;
    let pool = ThreadPoolInner::builder()
        .num_threads(2)
        .max_threads(8)
        .build()
        .expect("valid settings");
    let scope = Scope::new(pool.clone());
    let runs: Arc<Vec<AtomicU8>> = Arc::new((0..TASKS).map(|_| AtomicU8::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let resizer = {
        let (pool, done) = (pool.clone(), done.clone());
        thread::spawn(move || {
            let sizes = [5, 1, 8, 3, 1, 6, 2, 4];
            let mut resizes = 0;
            while !done.load(SeqCst) {
                let n = sizes[resizes % sizes.len()];
                pool.resize(n).expect("a size within max_threads");
                resizes += 1;
                thread::sleep(Duration::from_millis(2));
            }
            resizes
        })
    };
    let results = pool.block_on(async {
        let mut handles = Vec::with_capacity(TASKS);
        for i in 0..TASKS {
            let runs = runs.clone();
            let handle = scope.spawn_with_handle(async move {
                runs[i].fetch_add(1, SeqCst);
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
                if i % 1_000 == 0 {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                i
            });
            handles.push(handle);
        }
        tokio::time::timeout(Duration::from_secs(60), scope.join_handles(handles))
            .await
            .expect("the stream finished: no task was stranded or lost a wake-up")
    });
    done.store(true, SeqCst);
    let resizes = resizer.join().expect("resizer");
    assert!(resizes >= 5, "only {resizes} resizes ran during the stream");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(*r, Ok(i), "task {i}");
    }
    let twice: Vec<usize> = (0..TASKS).filter(|&i| runs[i].load(SeqCst) != 1).collect();
    assert!(twice.is_empty(), "tasks not run exactly once: {twice:?}");
    pool.block_on(pool.shutdown());
}

#[test]
fn added_and_retired_threads_run_their_hooks_and_retired_threads_exit() {
    let prefix = "sz-hooks";
    let (pool, started, stopped) = hooked_pool(prefix, 2, 8);
    assert!(eventually(Duration::from_secs(5), || started.load(SeqCst) == 2));

    pool.resize(5).expect("grow");
    assert_eq!(pool.num_threads(), 5, "new threads count at once");
    assert!(eventually(Duration::from_secs(5), || started.load(SeqCst) == 5));
    assert_eq!(os_workers_named(prefix), 5);

    // An idle pool shrinks without waiting for work: parked workers are woken to retire.
    pool.resize(2).expect("shrink");
    assert!(
        eventually(Duration::from_secs(5), || stopped.load(SeqCst) == 3
            && pool.num_threads() == 2),
        "stopped {} of 3, num_threads {}",
        stopped.load(SeqCst),
        pool.num_threads()
    );
    assert_eq!(pool.metrics_fast().num_threads, 2);
    assert!(
        eventually(Duration::from_secs(5), || os_workers_named(prefix) == 2),
        "the retired OS threads exit: {} left",
        os_workers_named(prefix)
    );

    // The pool still runs tasks on the threads it has, and can grow again into freed slots.
    let scope = pool.scope();
    assert_eq!(pool.block_on(scope.spawn_with_handle(async { 1 })), Ok(1));
    pool.resize(8).expect("grow to max_threads");
    assert_eq!(pool.num_threads(), 8);
    pool.block_on(pool.shutdown());
    assert_eq!(started.load(SeqCst), 11, "2 + 3 + 6 threads started");
    assert_eq!(
        stopped.load(SeqCst),
        11,
        "every thread ever started stopped"
    );
}

/// With work stealing off, tasks queued on a worker's own deque can leave it only through the
/// hand-over of a retiring worker. Worker A spawns 2 000 tasks onto its deque while worker B is
/// blocked; a resize to one thread makes A retire within 61 of them (B is busy), so the rest
/// must reach B through the shared queue.
#[test]
fn a_retiring_worker_hands_its_queued_tasks_to_the_others() {
    const CHILDREN: usize = 2_000;
    let pool = ThreadPoolInner::with_config(Config {
        num_threads: 2,
        max_pending: None,
        enable_work_stealing: false,
        ..Config::default()
    });
    let scope = Arc::new(Scope::new(pool.clone()));
    let ran_on: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let blocker_started = Arc::new(AtomicBool::new(false));
    let results = pool.block_on(async {
        let flag = blocker_started.clone();
        let blocker = scope.spawn_with_handle(async move {
            flag.store(true, SeqCst);
            thread::sleep(Duration::from_millis(300));
        });
        while !blocker_started.load(SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (inner, log, p) = (scope.clone(), ran_on.clone(), pool.clone());
        let parent = scope.spawn_with_handle(async move {
            let handles: Vec<_> = (0..CHILDREN)
                .map(|i| {
                    let log = log.clone();
                    inner.spawn_with_handle(async move {
                        let me = thread::current().name().unwrap_or("?").to_string();
                        log.lock().expect("log").push(me);
                        thread::sleep(Duration::from_micros(20));
                        i
                    })
                })
                .collect();
            // Ask for one thread while every child is still queued on this worker's deque.
            p.resize(1).expect("shrink");
            handles
        });
        let handles = parent.await.expect("parent ran");
        let outcomes = tokio::time::timeout(Duration::from_secs(20), scope.join_handles(handles))
            .await
            .expect("every queued task finished: none was stranded in a retired deque");
        blocker.await.expect("blocker ran");
        outcomes
    });
    for (i, r) in results.iter().enumerate() {
        assert_eq!(*r, Ok(i));
    }
    let names = ran_on.lock().expect("log");
    let mut distinct: Vec<&String> = names.iter().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 2, "both workers ran children: {distinct:?}");
    assert_eq!(pool.num_threads(), 1);
    pool.block_on(pool.shutdown());
}

#[test]
fn bad_sizes_are_errors_naming_the_setting() {
    let pool = ThreadPoolInner::builder()
        .num_threads(2)
        .max_threads(4)
        .build()
        .expect("valid settings");
    let err = pool.resize(0).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::ResizeOutOfRange {
            requested: 0,
            min: 1,
            max: 4
        }
    ));
    assert!(err.to_string().contains("resize(0)"), "{err}");
    let err = pool.resize(5).unwrap_err();
    assert!(err.to_string().contains("max_threads"), "{err}");
    assert_eq!(pool.num_threads(), 2, "a refused resize changes nothing");

    let build = |b: async_rayon::PoolBuilder| b.build().map(|_| ()).unwrap_err().to_string();
    let b = || ThreadPoolInner::builder().num_threads(2);
    assert!(build(b().autoscale(0, 4)).contains("min must be at least 1"));
    assert!(build(b().autoscale(5, 4)).contains("min must be at most max"));
    assert!(
        build(
            b().autoscale(1, 4)
                .autoscale_windows(Duration::ZERO, Duration::from_secs(1))
        )
        .contains("autoscale_windows")
    );
    assert!(build(b().max_threads(1)).contains("max_threads 1"));
    assert!(build(b().autoscale(1, 8).max_threads(4)).contains("max_threads 4"));

    let scaled = b().autoscale(2, 3).build().expect("valid settings");
    assert!(matches!(
        scaled.resize(4),
        Err(ConfigError::ResizeOutOfRange { min: 2, max: 3, .. })
    ));
    assert!(scaled.resize(3).is_ok());
}

#[test]
fn resizing_during_or_after_shutdown_is_an_error_not_a_hang() {
    let (pool, started, stopped) = hooked_pool("sz-shut", 2, 8);
    let scope = pool.scope();
    let slow = scope.spawn_with_handle(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    let stop = Arc::new(AtomicBool::new(false));
    let resizer = {
        let (pool, stop) = (pool.clone(), stop.clone());
        thread::spawn(move || {
            let mut n = 1;
            loop {
                match pool.resize(n) {
                    Ok(()) => n = n % 6 + 1,
                    Err(ConfigError::ShuttingDown) => return true,
                    Err(e) => panic!("unexpected {e}"),
                }
                if stop.load(SeqCst) {
                    return false;
                }
                thread::sleep(Duration::from_micros(500));
            }
        })
    };
    thread::sleep(Duration::from_millis(20));
    let begun = Instant::now();
    pool.block_on(pool.shutdown());
    assert!(
        begun.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        begun.elapsed()
    );
    stop.store(true, SeqCst);
    assert!(
        resizer.join().expect("resizer"),
        "a resize after shutdown began was refused"
    );
    assert_eq!(pool.block_on(slow), Ok(()));
    assert!(matches!(pool.resize(2), Err(ConfigError::ShuttingDown)));
    assert_eq!(
        started.load(SeqCst),
        stopped.load(SeqCst),
        "every thread started was stopped and counted by shutdown"
    );
}

#[test]
fn autoscale_grows_under_a_backlog_and_shrinks_when_idle() {
    let pool = ThreadPoolInner::builder()
        .num_threads(1)
        .thread_name("sz-auto")
        .autoscale(1, 4)
        .autoscale_windows(Duration::from_millis(20), Duration::from_millis(300))
        .build()
        .expect("valid settings");
    assert_eq!(pool.num_threads(), 1);
    let scope = pool.scope();
    let most = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (pool, most) = (pool.clone(), most.clone());
        thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end && most.load(SeqCst) < 4 {
                most.fetch_max(pool.metrics_fast().num_threads, SeqCst);
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // 600 tasks blocking their thread 5 ms each: 3 s on one thread, well under 1 s on four.
    let handles: Vec<_> = (0..600)
        .map(|_| scope.spawn_with_handle(async { thread::sleep(Duration::from_millis(5)) }))
        .collect();
    let begun = Instant::now();
    for r in pool.block_on(scope.join_handles(handles)) {
        assert_eq!(r, Ok(()));
    }
    let took = begun.elapsed();
    watcher.join().expect("watcher");
    assert_eq!(most.load(SeqCst), 4, "the backlog grew the pool to its max");
    assert!(
        took < Duration::from_millis(2_500),
        "the backlog took {took:?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || pool.num_threads() == 1),
        "idle workers retired down to min: {} left",
        pool.num_threads()
    );
    assert_eq!(os_threads_called("sz-auto-autoscale"), 1);
    pool.block_on(pool.shutdown());
    assert!(
        eventually(Duration::from_secs(2), || os_workers_named("sz-auto") == 0
            && os_threads_called("sz-auto-autoscale") == 0),
        "the autoscaler and the workers ended with the pool"
    );
}

#[test]
fn a_resize_by_hand_restarts_the_autoscale_windows() {
    let pool = ThreadPoolInner::builder()
        .num_threads(1)
        .autoscale(1, 4)
        .autoscale_windows(Duration::from_millis(20), Duration::from_millis(300))
        .build()
        .expect("valid settings");
    // Idle at min for longer than the shrink window.
    thread::sleep(Duration::from_millis(450));
    pool.resize(3).expect("within the autoscale range");
    let resized = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || pool.num_threads() < 3),
        "the idle pool shrinks again"
    );
    let kept = resized.elapsed();
    assert!(
        kept >= Duration::from_millis(250),
        "the new size was kept {kept:?}, less than the shrink window after the resize"
    );
    assert!(eventually(Duration::from_secs(10), || pool.num_threads() == 1));
}

#[test]
fn a_builder_with_bad_sizes_can_still_be_printed() {
    let b = ThreadPoolInner::builder().autoscale(5, 4);
    assert!(format!("{b:?}").contains("autoscale: Some((5, 4))"));
    assert!(b.build().is_err());
}
