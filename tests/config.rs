//! Configuration: presets, validation errors naming the field, panicking constructors, the
//! builder's names and thread hooks.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_rayon::{Config, ConfigError, Scope, SpawnError, TaskError, ThreadPoolInner};
use common::eventually;

fn expect_config_error(r: Result<Arc<ThreadPoolInner>, ConfigError>, what: &str) -> ConfigError {
    match r {
        Err(e) => e,
        Ok(_) => panic!("{what}: expected a ConfigError, the pool was built"),
    }
}

/// cpu_bound uses one thread per core; both presets bound max_pending at 10 000, steal, no timeout.
#[test]
fn presets_have_documented_values() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = Config::cpu_bound();
    assert_eq!(cpu.num_threads, cores);
    assert_eq!(cpu.max_pending, Some(10_000));
    assert!(cpu.enable_work_stealing);
    assert_eq!(cpu.task_timeout, None);

    let io = Config::io_bound();
    assert_eq!(io.num_threads, cores * 2);
    assert_eq!(io.max_pending, Some(10_000));
    assert!(io.enable_work_stealing);
    assert_eq!(io.task_timeout, None);

    let def = Config::default();
    assert_eq!(def.num_threads, cpu.num_threads);
    assert_eq!(def.max_pending, cpu.max_pending);
    assert_eq!(def.enable_work_stealing, cpu.enable_work_stealing);
    assert_eq!(def.task_timeout, cpu.task_timeout);
}

/// A pool built from a preset runs tasks.
#[test]
fn preset_pools_run_tasks() {
    for config in [Config::cpu_bound(), Config::io_bound(), Config::default()] {
        let pool = ThreadPoolInner::try_with_config(config).expect("preset is valid");
        let scope = Scope::new(pool.clone());
        let h = scope.spawn_with_handle(async { 1 + 1 });
        assert_eq!(pool.block_on(h), Ok(2));
    }
}

/// num_threads == 0 is a ConfigError naming num_threads (try_with_config and builder).
#[test]
fn zero_threads_is_an_error_naming_the_field() {
    let e = expect_config_error(
        ThreadPoolInner::try_with_config(Config {
            num_threads: 0,
            ..Config::default()
        }),
        "try_with_config(num_threads: 0)",
    );
    assert!(e.to_string().contains("num_threads"), "message: {e}");
    let e = expect_config_error(
        ThreadPoolInner::builder().num_threads(0).build(),
        "builder().num_threads(0)",
    );
    assert!(e.to_string().contains("num_threads"), "message: {e}");
    // It is a std error usable with `?` and Box<dyn Error>.
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
    assert!(boxed.to_string().contains("num_threads"));
}

/// max_pending == Some(0) is a ConfigError naming max_pending (try_with_config and builder).
#[test]
fn zero_max_pending_is_an_error_naming_the_field() {
    let e = expect_config_error(
        ThreadPoolInner::try_with_config(Config {
            num_threads: 1,
            max_pending: Some(0),
            enable_work_stealing: true,
            task_timeout: None,
        }),
        "try_with_config(max_pending: Some(0))",
    );
    assert!(e.to_string().contains("max_pending"), "message: {e}");
    let e = expect_config_error(
        ThreadPoolInner::builder()
            .num_threads(1)
            .max_pending(0)
            .build(),
        "builder().max_pending(0)",
    );
    assert!(e.to_string().contains("max_pending"), "message: {e}");
}

/// max_pending None (unbounded) and Some(1) are valid.
#[test]
fn boundary_values_are_accepted() {
    for max_pending in [None, Some(1)] {
        let pool = ThreadPoolInner::try_with_config(Config {
            num_threads: 1,
            max_pending,
            enable_work_stealing: false,
            task_timeout: None,
        })
        .expect("valid boundary configuration");
        let scope = Scope::new(pool.clone());
        assert_eq!(pool.block_on(scope.spawn_with_handle(async { 3 })), Ok(3));
    }
}

/// with_config panics with the ConfigError text for num_threads == 0.
#[test]
#[should_panic(expected = "num_threads")]
fn with_config_panics_on_zero_threads() {
    let _ = ThreadPoolInner::with_config(Config {
        num_threads: 0,
        ..Config::default()
    });
}

/// with_config panics with the ConfigError text for max_pending == Some(0).
#[test]
#[should_panic(expected = "max_pending")]
fn with_config_panics_on_zero_max_pending() {
    let _ = ThreadPoolInner::with_config(Config {
        max_pending: Some(0),
        ..Config::default()
    });
}

/// new panics with the ConfigError text for num_threads == 0.
#[test]
#[should_panic(expected = "num_threads")]
fn new_panics_on_zero_threads() {
    let _ = ThreadPoolInner::new(0, None);
}

/// new panics with the ConfigError text for max_pending == Some(0).
#[test]
#[should_panic(expected = "max_pending")]
fn new_panics_on_zero_max_pending() {
    let _ = ThreadPoolInner::new(1, Some(0));
}

/// The exact panic text of with_config is the ConfigError's Display text.
#[test]
fn with_config_panic_message_is_the_error_text() {
    let bad = || Config {
        num_threads: 0,
        ..Config::default()
    };
    let expected = expect_config_error(ThreadPoolInner::try_with_config(bad()), "bad").to_string();
    let caught = std::panic::catch_unwind(|| ThreadPoolInner::with_config(bad()));
    let payload = match caught {
        Err(p) => p,
        Ok(_) => panic!("with_config accepted num_threads: 0"),
    };
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .expect("string panic payload");
    assert!(
        msg.contains(&expected),
        "panic {msg:?} does not contain {expected:?}"
    );
}

/// Runs two tasks that must be on different workers at the same time (each waits, with a
/// deadline, for the other to arrive) and returns the worker thread names they saw.
fn names_seen_by_two_concurrent_tasks(pool: &Arc<ThreadPoolInner>) -> BTreeSet<String> {
    let scope = Scope::new(pool.clone());
    let arrived = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let arrived = arrived.clone();
            scope.spawn_with_handle(async move {
                arrived.fetch_add(1, Ordering::SeqCst);
                let end = Instant::now() + Duration::from_secs(2);
                while arrived.load(Ordering::SeqCst) < 2 && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::current()
                    .name()
                    .unwrap_or("<unnamed>")
                    .to_string()
            })
        })
        .collect();
    pool.block_on(scope.join_handles(handles))
        .into_iter()
        .map(|r| r.expect("name task ok"))
        .collect()
}

/// Worker threads are named "{pool name}-{index}" by default.
#[test]
fn threads_are_named_after_the_pool() {
    let pool = ThreadPoolInner::builder()
        .name("cfgpool")
        .num_threads(2)
        .build()
        .expect("valid configuration");
    let names = names_seen_by_two_concurrent_tasks(&pool);
    let expected: BTreeSet<String> = ["cfgpool-0", "cfgpool-1"].map(String::from).into();
    assert_eq!(names, expected);
}

/// thread_name sets the prefix: worker threads are "{prefix}-{index}".
#[test]
fn thread_name_sets_the_prefix() {
    let pool = ThreadPoolInner::builder()
        .name("named-pool")
        .num_threads(2)
        .thread_name("wkr")
        .build()
        .expect("valid configuration");
    let names = names_seen_by_two_concurrent_tasks(&pool);
    let expected: BTreeSet<String> = ["wkr-0", "wkr-1"].map(String::from).into();
    assert_eq!(names, expected);
}

/// A pool with no name has threads "async_rayon-{index}".
#[test]
fn default_thread_names() {
    let pool = ThreadPoolInner::new(2, None);
    let names = names_seen_by_two_concurrent_tasks(&pool);
    let expected: BTreeSet<String> = ["async_rayon-0", "async_rayon-1"].map(String::from).into();
    assert_eq!(names, expected);
}

/// on_thread_start runs once on each worker thread, on that thread.
#[test]
fn on_thread_start_runs_on_every_worker() {
    let count = Arc::new(AtomicUsize::new(0));
    let names = Arc::new(Mutex::new(Vec::<String>::new()));
    let (c, n) = (count.clone(), names.clone());
    let pool = ThreadPoolInner::builder()
        .num_threads(3)
        .thread_name("hook")
        .on_thread_start(move || {
            n.lock()
                .expect("names lock")
                .push(std::thread::current().name().unwrap_or("").to_string());
            c.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .expect("valid configuration");
    assert!(
        eventually(Duration::from_secs(2), || count.load(Ordering::SeqCst) == 3),
        "on_thread_start ran {} times for 3 workers",
        count.load(Ordering::SeqCst)
    );
    // Running tasks does not call it again.
    let scope = Scope::new(pool.clone());
    let hs: Vec<_> = (0..50)
        .map(|i| scope.spawn_with_handle(async move { i }))
        .collect();
    assert!(
        pool.block_on(scope.join_handles(hs))
            .iter()
            .all(Result::is_ok)
    );
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(count.load(Ordering::SeqCst), 3);
    let mut seen = names.lock().expect("names lock").clone();
    seen.sort();
    assert_eq!(seen, vec!["hook-0", "hook-1", "hook-2"]);
}

/// Builder settings take effect: max_pending bounds admission and task_timeout applies.
#[test]
fn builder_settings_take_effect() {
    let pool = ThreadPoolInner::builder()
        .name("settings")
        .num_threads(1)
        .max_pending(1)
        .enable_work_stealing(false)
        .task_timeout(Duration::from_millis(50))
        .build()
        .expect("valid configuration");
    let scope = Scope::new(pool.clone());
    let stuck = scope.spawn_with_handle(std::future::pending::<()>());
    let res = scope.try_spawn_with_handle(async {});
    assert!(matches!(res, Err(SpawnError::Full)), "{res:?}");
    assert_eq!(pool.block_on(stuck), Err(TaskError::TimedOut));
    let h = scope
        .try_spawn_with_handle(async { 9 })
        .expect("slot free after the timed-out task");
    assert_eq!(pool.block_on(h), Ok(9));
}

/// Names of this process's threads, from /proc/self/task/*/comm.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

/// `PoolBuilder::runtime`: tasks use the given runtime for their timers, and the pool starts
/// no runtime thread of its own even when built outside any runtime; without it, it does.
#[test]
fn builder_runtime_is_used_instead_of_a_runtime_of_the_pools_own() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let given = async_rayon::ThreadPoolInner::builder()
        .name("given-rt")
        .num_threads(1)
        .runtime(rt.handle().clone())
        .build()
        .expect("valid settings");
    let own = async_rayon::ThreadPoolInner::builder()
        .name("own-rt")
        .num_threads(1)
        .build()
        .expect("valid settings");
    // A new thread names itself once it runs, and until then carries its creator's name
    // (this test's, cut to 15 bytes): wait until only the test thread has that name.
    let all_named = || {
        let names = thread_names();
        names.iter().filter(|n| *n == "builder_runtime").count() == 1
            && ["given-rt-0", "own-rt-0", "own-rt-io"]
                .iter()
                .all(|want| names.iter().any(|n| n == want))
    };
    assert!(
        eventually(Duration::from_secs(5), all_named),
        "{:?}",
        thread_names()
    );
    let names = thread_names();
    assert!(!names.iter().any(|n| n == "given-rt-io"), "{names:?}");
    let scope = given.scope();
    let slept = given.block_on(scope.spawn_with_handle(async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        "slept"
    }));
    assert_eq!(slept, Ok("slept"));
    drop(own);
}
