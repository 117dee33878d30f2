//! Metrics, as the crate documents them: counters per outcome, rejections, the idle balance
//! under a chaos mix, load gauges, utilization, latency, monitoring that stops when told,
//! and bulk calls counting items.

mod common;

use common::eventually;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use async_rayon::{Config, Scope, TaskError, ThreadPoolInner};

/// Silences the panics these tests cause on purpose (messages "chaos" and "callback
/// failed"); any other panic, such as a failing assertion in a test running beside them,
/// still reaches the default hook and is reported. Installed once for the whole binary.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or_default();
            if msg != "chaos" && msg != "callback failed" {
                default(info);
            }
        }));
    });
}

/// Every outcome is counted once; when idle, submitted == completed + panicked + cancelled +
/// timed_out exactly; rejections are counted apart and shutdown refusals are not rejections.
#[test]
fn counters_balance_under_a_chaos_mix() {
    quiet_panics();
    let pool = ThreadPoolInner::with_config(Config {
        num_threads: 2,
        max_pending: Some(50),
        enable_work_stealing: true,
        task_timeout: Some(Duration::from_millis(20)),
    });
    let scope = Scope::new(pool.clone());
    let mut expect = [0u64; 5]; // ok, panicked, cancelled, timed_out, rejected
    pool.block_on(async {
        for round in 0..20 {
            let mut handles = Vec::new();
            for i in 0..60u32 {
                let h = scope.spawn_with_handle(async move {
                    match i % 4 {
                        0 => panic!("chaos"),
                        1 => tokio::time::sleep(Duration::from_secs(10)).await, // times out
                        2 => tokio::time::sleep(Duration::from_secs(10)).await, // cancelled
                        _ => {}
                    }
                });
                if i % 4 == 2 {
                    h.cancel();
                }
                handles.push(h);
            }
            for r in scope.join_handles(handles).await {
                let k = match r {
                    Ok(()) => 0,
                    Err(TaskError::Panicked(_)) => 1,
                    Err(TaskError::Cancelled) => 2,
                    Err(TaskError::TimedOut) => 3,
                    Err(TaskError::Rejected) => 4,
                    Err(e) => panic!("round {round}: {e}"),
                };
                expect[k] += 1;
            }
        }
    });
    assert!(
        expect[4] > 0,
        "some spawns were rejected (60 per round, max_pending 50)"
    );
    assert!(eventually(Duration::from_secs(5), || pool.pending_tasks() == 0));
    let m = pool.metrics_fast();
    assert_eq!(
        (
            m.completed,
            m.panicked,
            m.cancelled,
            m.timed_out,
            m.rejected
        ),
        (expect[0], expect[1], expect[2], expect[3], expect[4])
    );
    assert_eq!(
        m.submitted,
        m.completed + m.panicked + m.cancelled + m.timed_out
    );
    assert_eq!(m.submitted + m.rejected, 20 * 60);
    let rate = m.completed as f64 / m.finished() as f64;
    assert!((m.success_rate() - rate).abs() < 1e-12);

    // After shutdown began, refusals are not rejections.
    pool.block_on(pool.shutdown());
    let refused = pool.block_on(scope.spawn_with_handle(async {}));
    assert_eq!(refused, Err(TaskError::Shutdown));
    assert_eq!(pool.metrics_fast().rejected, m.rejected);
}

/// queued_tasks counts tasks waiting in a run queue; active_tasks those running or
/// suspended; queue_pressure is their sum over max_pending; 0 when unbounded.
#[test]
fn load_gauges() {
    let pool = ThreadPoolInner::new(1, Some(100));
    let scope = Scope::new(pool.clone());
    let m = pool.metrics_fast();
    assert_eq!(
        (m.active_tasks, m.queued_tasks, m.num_threads, m.max_pending),
        (0, 0, 1, Some(100))
    );
    assert_eq!(m.success_rate(), 1.0);
    assert_eq!(m.queue_pressure(), 0.0);
    // One task blocks the only worker; nine wait in the queue; ten are suspended.
    let release = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicBool::new(false));
    let (r, run) = (release.clone(), running.clone());
    let _blocker = scope.spawn_with_handle(async move {
        run.store(true, SeqCst);
        while !r.load(SeqCst) {
            std::thread::yield_now();
        }
    });
    assert!(eventually(Duration::from_secs(5), || running.load(SeqCst)));
    let queued: Vec<_> = (0..9).map(|_| scope.spawn_with_handle(async {})).collect();
    let m = pool.metrics_fast();
    assert_eq!(m.queued_tasks, 9);
    assert_eq!(m.active_tasks, 1);
    assert!((m.queue_pressure() - 0.10).abs() < 1e-9);
    release.store(true, SeqCst);
    pool.block_on(scope.join_handles(queued));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let suspended: Vec<_> = (0..10)
        .map(|_| {
            let mut rx = rx.clone();
            scope.spawn_with_handle(async move {
                let _ = rx.wait_for(|go| *go).await;
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(5), || {
        let m = pool.metrics_fast();
        m.active_tasks == 10 && m.queued_tasks == 0
    }));
    tx.send(true).expect("receivers alive");
    pool.block_on(scope.join_handles(suspended));
    let unbounded = ThreadPoolInner::new(1, None);
    assert_eq!(unbounded.metrics_fast().queue_pressure(), 0.0);
}

/// utilization is the share of worker time spent running tasks: near 1 while both workers
/// spin, near 0 when idle.
#[test]
fn utilization_tracks_busy_workers() {
    let pool = ThreadPoolInner::new(2, None);
    let scope = Scope::new(pool.clone());
    let idle = pool.metrics_fast();
    assert!(
        idle.utilization() < 0.2,
        "idle pool: {}",
        idle.utilization()
    );
    // Both workers busy for ~300 ms, sampled over that interval by a monitor.
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let s = seen.clone();
    let monitor = pool.start_monitoring(Duration::from_millis(100), move |m| {
        s.lock().push(m.utilization())
    });
    let spin = || async {
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(300) {
            std::hint::black_box(0);
        }
    };
    pool.block_on(scope.join_handles(vec![
        scope.spawn_with_handle(spin()),
        scope.spawn_with_handle(spin()),
    ]));
    ThreadPoolInner::stop_monitoring(monitor);
    let seen = seen.lock().clone();
    assert!(
        seen.iter().any(|u| *u > 0.7),
        "interval utilizations while spinning: {seen:?}"
    );
    let life = pool.metrics_fast();
    assert!(
        life.utilization() > 0.2 && life.utilization() <= 1.0,
        "{}",
        life.utilization()
    );
}

/// Latency percentiles come from sampled tasks: a few thousand 2 ms sleeps give a run-time
/// median of about 2 ms.
#[test]
fn latency_summaries() {
    let pool = ThreadPoolInner::new(2, None);
    let scope = Scope::new(pool.clone());
    let hs: Vec<_> = (0..2_000)
        .map(|_| {
            scope.spawn_with_handle(async { tokio::time::sleep(Duration::from_millis(2)).await })
        })
        .collect();
    pool.block_on(scope.join_handles(hs));
    let m = pool.metrics_fast();
    assert!(m.run_time.samples >= 20, "{:?}", m.run_time);
    assert!(m.queue_wait.samples >= 20, "{:?}", m.queue_wait);
    let p50 = m.run_time.p50;
    assert!(
        p50 >= Duration::from_micros(1_400) && p50 <= Duration::from_millis(50),
        "{p50:?}"
    );
    assert!(m.run_time.p99 >= p50);
}

/// Monitoring calls f on its own thread with no runtime around; after stop_monitoring
/// returns (or the handle is dropped) f is never called again; a panicking f keeps being
/// called.
#[test]
fn monitoring_runs_and_stops() {
    let pool = ThreadPoolInner::builder()
        .name("watched")
        .num_threads(1)
        .build()
        .expect("valid");
    let calls = Arc::new(AtomicUsize::new(0));
    let on_worker = Arc::new(AtomicBool::new(false));
    let (c, w) = (calls.clone(), on_worker.clone());
    let monitor = pool.start_monitoring(Duration::from_millis(5), move |_| {
        c.fetch_add(1, SeqCst);
        let name = std::thread::current().name().unwrap_or("").to_string();
        if name != "watched-monitor" {
            w.store(true, SeqCst);
        }
    });
    assert!(eventually(Duration::from_secs(5), || calls.load(SeqCst) >= 3));
    ThreadPoolInner::stop_monitoring(monitor);
    let after = calls.load(SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        calls.load(SeqCst),
        after,
        "called after stop_monitoring returned"
    );
    assert!(!on_worker.load(SeqCst), "f ran on the monitor thread");

    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let monitor = pool.start_monitoring(Duration::from_millis(5), move |_| {
        c.fetch_add(1, SeqCst);
    });
    assert!(eventually(Duration::from_secs(5), || calls.load(SeqCst) >= 2));
    drop(monitor);
    let after = calls.load(SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        calls.load(SeqCst),
        after,
        "called after the handle was dropped"
    );

    quiet_panics();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let monitor = pool.start_monitoring(Duration::from_millis(5), move |_| {
        c.fetch_add(1, SeqCst);
        panic!("callback failed");
    });
    assert!(
        eventually(Duration::from_secs(5), || calls.load(SeqCst) >= 3),
        "kept calling after panics"
    );
    drop(monitor);
}

/// Bulk calls count items, not batches.
#[test]
fn bulk_calls_count_items() {
    quiet_panics();
    let pool = ThreadPoolInner::new(2, Some(1_000));
    let scope = Scope::new(pool.clone());
    let r = pool.block_on(scope.batch_process(0..500u32, 4, |i| async move {
        assert!(i % 100 != 7, "chaos");
        i
    }));
    assert_eq!(r.len(), 500);
    let s = pool.block_on(scope.stream_process(0..300u32, 16, |i| async move { i }));
    assert_eq!(s.len(), 300);
    assert!(eventually(Duration::from_secs(5), || pool.pending_tasks() == 0));
    let m = pool.metrics_fast();
    assert_eq!(m.submitted, 800);
    assert_eq!(m.panicked, 5);
    assert_eq!(m.completed, 795);
}

/// Export through the metrics facade with a recorder installed: the names and the pool label.
#[test]
fn export_publishes_through_the_facade() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).expect("first recorder in this test binary");
    let pool = ThreadPoolInner::builder()
        .name("exported")
        .num_threads(1)
        .build()
        .expect("valid");
    let scope = Scope::new(pool.clone());
    pool.block_on(
        scope.join_handles(
            (0..7)
                .map(|i| scope.spawn_with_handle(async move { i }))
                .collect(),
        ),
    );
    let export = pool.start_metrics_export(Duration::from_millis(5));
    // One snapshot per look: the debugging recorder may drain values when read.
    let snapshot = || -> std::collections::HashMap<String, DebugValue> {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, _, _, _)| {
                key.key()
                    .labels()
                    .any(|l| l.key() == "pool" && l.value() == "exported")
            })
            .map(|(key, _, _, value)| (key.key().name().to_string(), value))
            .collect()
    };
    let names = [
        "async_rayon_worker_threads",
        "async_rayon_tasks_active",
        "async_rayon_tasks_queued",
        "async_rayon_utilization",
        "async_rayon_tasks_rejected_total",
        "async_rayon_tasks_panicked_total",
        "async_rayon_tasks_cancelled_total",
        "async_rayon_tasks_timed_out_total",
        "async_rayon_task_run_seconds",
        "async_rayon_task_queue_wait_seconds",
    ];
    // Wait for a snapshot taken after a whole export pass: one taken while the exporter is
    // half-way through its first pass has the counters but not yet the gauges.
    let mut seen = std::collections::HashMap::new();
    let complete = eventually(Duration::from_secs(5), || {
        seen = snapshot();
        matches!(
            seen.get("async_rayon_tasks_completed_total"),
            Some(DebugValue::Counter(7))
        ) && names.iter().all(|name| seen.contains_key(*name))
    });
    assert!(complete, "no complete export pass seen: {:?}", seen.keys());
    assert!(matches!(
        seen.get("async_rayon_tasks_submitted_total"),
        Some(DebugValue::Counter(7))
    ));
    assert!(
        matches!(seen.get("async_rayon_worker_threads"), Some(DebugValue::Gauge(g)) if g.into_inner() == 1.0)
    );
    // A resize shows in the gauge at the next pass.
    pool.resize(3).expect("grow");
    assert!(
        eventually(Duration::from_secs(5), || matches!(
            snapshot().get("async_rayon_worker_threads"),
            Some(DebugValue::Gauge(g)) if g.into_inner() == 3.0
        )),
        "the worker_threads gauge followed the resize"
    );
    ThreadPoolInner::stop_monitoring(export);
}

/// The monitoring callback's latency covers its interval: a run-time spike moves p99 in the
/// next interval, and once fast tasks follow it an interval's p99 is small again, while the
/// pool-life figure from `metrics_fast` still shows the spike.
#[test]
fn a_latency_spike_shows_in_the_next_interval_only() {
    let pool = ThreadPoolInner::new(2, None);
    let scope = Scope::new(pool.clone());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let monitor = pool.start_monitoring(Duration::from_millis(20), move |m| {
        log.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((Instant::now(), m.run_time))
    });
    // Spawn from one thread so one in 64 units is sampled.
    let run = |n: usize, sleep: Duration| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                scope.spawn_with_handle(async move {
                    if !sleep.is_zero() {
                        tokio::time::sleep(sleep).await;
                    }
                })
            })
            .collect();
        pool.block_on(scope.join_handles(handles));
    };
    let quiet_interval = |after: Instant| {
        eventually(Duration::from_millis(100), || {
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|(t, rt)| *t > after && rt.samples > 0 && rt.p99 < Duration::from_millis(5))
        })
    };
    run(20_000, Duration::ZERO);
    let spike_start = Instant::now();
    run(1_280, Duration::from_millis(30));
    let spike_seen = eventually(Duration::from_secs(10), || {
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(t, rt)| *t > spike_start && rt.p99 >= Duration::from_millis(20))
    });
    assert!(spike_seen, "no interval showed the 30 ms run times");
    // Fast tasks after the spike, fed until an interval with samples shows a small p99.
    let after = Instant::now() + Duration::from_millis(25);
    let mut quiet = false;
    for _ in 0..50 {
        run(2_000, Duration::ZERO);
        if quiet_interval(after) {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "no interval after the spike came back below 5 ms");
    assert!(
        pool.metrics_fast().run_time.p99 >= Duration::from_millis(20),
        "the pool-life p99 keeps the spike"
    );
    ThreadPoolInner::stop_monitoring(monitor);
}

/// A panic handler sees each panicking task's id and message, once per panic; tasks that do
/// not panic are not reported.
#[test]
fn the_panic_handler_gets_each_task_panic() {
    quiet_panics();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let pool = ThreadPoolInner::builder()
        .num_threads(2)
        .panic_handler(move |id, msg| {
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((id, msg.to_string()))
        })
        .build()
        .expect("valid");
    let scope = Scope::new(pool.clone());
    let handles: Vec<_> = (0..10u32)
        .map(|i| {
            scope.spawn_with_handle(async move {
                tokio::task::yield_now().await;
                assert!(i % 3 != 0, "task {i} fails");
            })
        })
        .collect();
    let ids: Vec<_> = handles.iter().map(|h| h.id()).collect();
    let results = pool.block_on(scope.join_handles(handles));
    let mut want: Vec<_> = results
        .iter()
        .zip(&ids)
        .filter_map(|(r, id)| match r {
            Err(TaskError::Panicked(msg)) => Some((*id, msg.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(want.len(), 4);
    let mut got = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    got.sort_by_key(|(id, _)| *id);
    want.sort_by_key(|(id, _)| *id);
    assert_eq!(got, want);
    // Bulk items are reported too (under their batch task's id).
    seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let items = pool.block_on(scope.batch_process(0..6u32, 2, |i| async move {
        assert!(i != 4, "item {i} fails");
        i
    }));
    assert_eq!(items.iter().filter(|r| r.is_err()).count(), 1);
    let got = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, "item 4 fails");
}
