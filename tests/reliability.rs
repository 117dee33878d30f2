//! Reliability: leak checks over many pool lifecycles, the shutdown time bounds, panics in
//! `Drop` during cancel and shutdown, and thread-spawn failure.
//!
//! Timing tests here serialize on a lock so they do not compete with each other for the
//! machine's two cores.

mod common;

use common::{SHUTDOWN_SLACK, best_of, eventually};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_rayon::{ConfigError, Scope, TaskError, ThreadPoolInner};

/// Counts live heap bytes, to check that pool lifecycles leave the heap flat.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; the counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged (see the impl).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged (see the impl).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, SeqCst);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One pool lifecycle of kind `k`: graceful shutdown, shutdown_timeout with a stuck task, or
/// a plain drop with pending, panicking and cancelled tasks.
fn lifecycle(k: usize) {
    let pool = ThreadPoolInner::new(2, Some(64));
    let scope = Scope::new(pool.clone());
    let mut handles = Vec::new();
    for i in 0..16u64 {
        handles.push(scope.spawn_with_handle(async move {
            match i % 4 {
                0 => panic!("lifecycle panic"),
                1 => tokio::time::sleep(Duration::from_secs(3600)).await,
                _ => tokio::task::yield_now().await,
            }
            i
        }));
    }
    handles[2].cancel();
    match k % 3 {
        0 => {
            // Graceful: cancel the sleepers first so it can finish.
            for h in handles.iter().skip(1).step_by(4) {
                h.cancel();
            }
            pool.block_on(pool.shutdown());
        }
        1 => {
            // A task that blocks its thread briefly and a pile of sleepers.
            let _stuck = scope.spawn_with_handle(async {
                std::thread::sleep(Duration::from_millis(30));
            });
            let finished = pool.block_on(pool.shutdown_timeout(Duration::from_millis(5)));
            assert!(!finished);
        }
        _ => {} // plain drop below
    }
    drop(handles);
    drop(scope);
    drop(pool);
}

const LIFECYCLES_CHILD_ENV: &str = "ASYNC_RAYON_TEST_LIFECYCLES_CHILD";

/// The most the live heap may grow over a hundred lifecycles after the first hundred, and in
/// how many hundreds it may try (see the child test).
const LEAK_TOLERANCE: isize = 32 * 1024;
const LEAK_TRIES: usize = 3;

/// Pool lifecycles leak neither threads nor memory: run in a child process, so that no other
/// test allocates while the live heap is measured.
#[test]
fn hundred_lifecycles_leak_no_threads_or_memory() {
    let _g = serial();
    let stdout = common::run_child_test("lifecycles_leak_child", LIFECYCLES_CHILD_ENV);
    if let Some(line) = stdout.lines().find(|l| l.contains("lifecycles:")) {
        println!("{line}");
    }
}

/// Waits until the thread count is back to `threads` (detached workers have exited) and
/// returns the live heap then.
fn settled_heap(threads: usize) -> isize {
    assert!(
        eventually(Duration::from_secs(10), || thread_count() <= threads),
        "threads: {} now, {threads} before",
        thread_count()
    );
    LIVE.load(SeqCst)
}

/// Child half of hundred_lifecycles_leak_no_threads_or_memory (ignored unless run by it).
///
/// After a warm-up, the live heap is read after 100 lifecycles, then after each further
/// hundred. Whatever pools cache once (lazily initialized globals, tables that grow by
/// doubling) shows in the first hundred; a leak of `L` bytes per lifecycle shows in *every*
/// later hundred as `100 * L`. The heap is counted exactly (the counting allocator above);
/// measured over 6 runs x 8 hundreds (debug build), a hundred's growth is -9 KB..+21 KB,
/// about +6 KB on average. So a hundred may grow by at most LEAK_TOLERANCE (32 KiB), in the
/// best of up to LEAK_TRIES hundreds: noise rarely exceeds it even once, while a leak of
/// 1 KiB per lifecycle (+100 KiB per hundred) exceeds it every time. The thread count must
/// be back to its baseline after each hundred too.
#[test]
#[ignore = "run as a child process by hundred_lifecycles_leak_no_threads_or_memory"]
fn lifecycles_leak_child() {
    if std::env::var_os(LIFECYCLES_CHILD_ENV).is_none() {
        return;
    }
    // Before any pool: the test harness's threads only.
    let threads = thread_count();
    std::panic::set_hook(Box::new(|_| {}));
    // Warm up lazily initialized globals (tokio, std) before taking the baseline.
    for k in 0..30 {
        lifecycle(k);
    }
    let base = settled_heap(threads);
    for k in 0..100 {
        lifecycle(k);
    }
    let mut last = settled_heap(threads);
    let first = last - base;
    let mut hundreds = Vec::new();
    for _ in 0..LEAK_TRIES {
        for k in 0..100 {
            lifecycle(k);
        }
        let now = settled_heap(threads);
        let grown = now - last;
        hundreds.push(grown);
        last = now;
        if grown <= LEAK_TOLERANCE {
            break;
        }
    }
    println!(
        "lifecycles: live heap grew by {first} bytes over the first 100, then by {hundreds:?} \
         over each next 100; threads back to {threads}"
    );
    let best = hundreds.iter().copied().min().unwrap_or(0);
    assert!(
        best <= LEAK_TOLERANCE,
        "live heap grew by more than {LEAK_TOLERANCE} bytes in every hundred lifecycles after \
         the first: {hundreds:?} (about {} bytes per lifecycle)",
        best / 100
    );
}

/// Tries per shutdown timing check: the bound must hold in the best of them.
const TRIES: usize = 5;

/// One shutdown_timeout(`d`) of a pool under load (200 sleepers) with a task that blocks its
/// thread for 400 ms and never yields; returns how long it took.
fn shutdown_with_a_stuck_task(d: Duration) -> Duration {
    let pool = ThreadPoolInner::new(2, Some(1_000));
    let scope = Scope::new(pool.clone());
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let _stuck = scope.spawn_with_handle(async move {
        s.store(true, SeqCst);
        std::thread::sleep(STUCK_FOR); // never yields
    });
    let _load: Vec<_> = (0..200)
        .map(|_| {
            scope.spawn_with_handle(async {
                tokio::time::sleep(Duration::from_secs(60)).await;
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(5), || started.load(SeqCst)));
    let t = Instant::now();
    let finished = pool.block_on(pool.shutdown_timeout(d));
    let took = t.elapsed();
    assert!(!finished);
    took
}

const STUCK_FOR: Duration = Duration::from_millis(400);

/// shutdown_timeout(100 ms) under load with a task that never yields returns within
/// `d + SHUTDOWN_SLACK` (best of TRIES), the bound the docs state.
#[test]
fn shutdown_timeout_is_bounded_with_a_stuck_task() {
    let _g = serial();
    let d = Duration::from_millis(100);
    best_of(
        "shutdown_timeout(100 ms) with a stuck task, lateness",
        TRIES,
        SHUTDOWN_SLACK,
        || shutdown_with_a_stuck_task(d).saturating_sub(d),
    );
}

/// Every one of many shutdowns with a stuck task returns well before that task lets go of its
/// thread: the stuck worker is detached, never waited for, whatever the interleaving. (Not
/// the time bound, which is gated above: a hang check, loose for a loaded machine.)
#[test]
fn shutdown_timeout_never_waits_for_a_stuck_task() {
    let _g = serial();
    let d = Duration::from_millis(100);
    let mut worst = Duration::ZERO;
    let runs = if cfg!(debug_assertions) { 50 } else { 200 };
    for _ in 0..runs {
        let took = shutdown_with_a_stuck_task(d);
        worst = worst.max(took);
        assert!(
            took < d + Duration::from_millis(250),
            "shutdown_timeout(100 ms) took {took:?}: it waited for the stuck task ({STUCK_FOR:?})"
        );
    }
    println!("shutdown_timeout(100 ms) x{runs}: worst {worst:?}");
}

/// shutdown_timeout(0) under load returns within SHUTDOWN_SLACK (best of TRIES), and cancels
/// what was left.
#[test]
fn shutdown_timeout_zero_returns_at_once() {
    let _g = serial();
    best_of(
        "shutdown_timeout(0) under load, lateness",
        TRIES,
        SHUTDOWN_SLACK,
        || {
            let pool = ThreadPoolInner::new(2, None);
            let scope = Scope::new(pool.clone());
            let handles: Vec<_> = (0..500)
                .map(|_| {
                    scope.spawn_with_handle(async {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    })
                })
                .collect();
            let t = Instant::now();
            assert!(!pool.block_on(pool.shutdown_timeout(Duration::ZERO)));
            let took = t.elapsed();
            let results = pool.block_on(scope.join_handles(handles));
            assert!(results.iter().all(|r| r == &Err(TaskError::Cancelled)));
            took
        },
    );
}

/// A graceful shutdown returns within 20 ms of the last task's end.
#[test]
fn graceful_shutdown_returns_soon_after_the_last_task() {
    let _g = serial();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let pool = ThreadPoolInner::new(2, None);
        let scope = Scope::new(pool.clone());
        let ended = Arc::new(Mutex::new(None::<Instant>));
        let e = ended.clone();
        let _h = scope.spawn_with_handle(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            *e.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        });
        pool.block_on(pool.shutdown());
        let returned = Instant::now();
        let end = ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expect("task ran to its end");
        let after = returned - end;
        worst = worst.max(after);
        assert!(
            after <= Duration::from_millis(20),
            "returned {after:?} after the last task"
        );
    }
    println!("graceful shutdown x20: worst {worst:?} after the last task ended");
}

/// A future that panics when dropped.
struct PanicOnDrop;
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("panic in drop");
    }
}

/// A panic in Drop while being cancelled, or cancelled by shutdown, is reported as Panicked
/// and the worker survives; a panic in poll followed by a panic in Drop does not abort.
#[test]
fn panics_in_drop_during_cancel_and_shutdown_are_contained() {
    let _g = serial();
    let pool = ThreadPoolInner::new(1, None);
    let scope = Scope::new(pool.clone());
    let pending_forever = || {
        let guard = PanicOnDrop;
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        }
    };
    // Cancel: the drop panics.
    let h = scope.spawn_with_handle(pending_forever());
    std::thread::sleep(Duration::from_millis(20));
    h.cancel();
    assert_eq!(
        pool.block_on(h),
        Err(TaskError::Panicked("panic in drop".into()))
    );
    // Panic in poll, then in the future's own Drop when the pool drops it: one Panicked,
    // no abort. (A Drop of a *local* that panics while its frame unwinds is a double panic
    // inside one unwind, which Rust itself aborts; no executor can catch that.)
    struct PanicsTwice {
        _guard: PanicOnDrop,
    }
    impl std::future::Future for PanicsTwice {
        type Output = ();
        fn poll(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<()> {
            panic!("panic in poll");
        }
    }
    let h = scope.spawn_with_handle(PanicsTwice {
        _guard: PanicOnDrop,
    });
    assert!(matches!(pool.block_on(h), Err(TaskError::Panicked(_))));
    // The single worker survived.
    assert_eq!(pool.block_on(scope.spawn_with_handle(async { 5 })), Ok(5));
    // Shutdown cancels a task whose drop panics.
    let h = scope.spawn_with_handle(pending_forever());
    std::thread::sleep(Duration::from_millis(20));
    assert!(!pool.block_on(pool.shutdown_timeout(Duration::from_millis(10))));
    assert_eq!(
        pool.block_on(h),
        Err(TaskError::Panicked("panic in drop".into()))
    );
}

/// A worker thread the OS refuses to start is a clear error from build(), not a hang.
#[test]
fn thread_spawn_failure_is_an_error() {
    let _g = serial();
    let before = thread_count();
    let err = ThreadPoolInner::builder()
        .num_threads(4)
        .stack_size(usize::MAX / 2)
        .build()
        .expect_err("an impossible stack size cannot start");
    assert!(
        matches!(err, ConfigError::ThreadSpawn { index: 0, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("could not start worker thread 0"),
        "{err}"
    );
    assert!(eventually(Duration::from_secs(5), || thread_count() <= before));
}

/// Under RLIMIT_NPROC the same: run in a child process so the limit does not touch the rest
/// of the suite. Root is exempt from RLIMIT_NPROC, so a child started as root first gives up
/// its privileges (to the `nobody` ids, 65534) and the limit applies to it too.
#[test]
fn rlimit_nproc_is_an_error_not_a_hang() {
    if std::env::var_os("ASYNC_RAYON_NPROC_CHILD").is_some() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // SAFETY: setgid/setuid take plain ids; glibc applies them to every thread of the
            // process. The group goes first: without root, it could no longer be changed.
            let dropped = unsafe { libc::setgid(65534) == 0 && libc::setuid(65534) == 0 };
            assert!(dropped, "could not drop root privileges in the child");
        }
        let lim = libc::rlimit {
            rlim_cur: 1,
            rlim_max: 1,
        };
        // SAFETY: setrlimit reads the struct we pass; no memory is shared.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &lim) };
        assert_eq!(rc, 0, "setrlimit");
        let r = ThreadPoolInner::builder().num_threads(8).build();
        match r {
            Err(ConfigError::ThreadSpawn { .. }) | Err(ConfigError::Runtime(_)) => {
                println!("NPROC_CHILD_OK")
            }
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("8 threads started under RLIMIT_NPROC=1"),
        }
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args([
            "rlimit_nproc_is_an_error_not_a_hang",
            "--exact",
            "--nocapture",
        ])
        .env("ASYNC_RAYON_NPROC_CHILD", "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("NPROC_CHILD_OK"), "child said:\n{stdout}");
}

/// Many tasks woken from foreign threads long after they finished do nothing harmful.
#[test]
fn late_foreign_wakes_are_harmless() {
    let _g = serial();
    let pool = ThreadPoolInner::new(2, None);
    let scope = Scope::new(pool.clone());
    let wakers = Arc::new(Mutex::new(Vec::new()));
    let polls = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..1_000)
        .map(|_| {
            let (w, p) = (wakers.clone(), polls.clone());
            scope.spawn_with_handle(std::future::poll_fn(move |cx| {
                p.fetch_add(1, SeqCst);
                w.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(cx.waker().clone());
                std::task::Poll::Ready(())
            }))
        })
        .collect();
    assert!(
        pool.block_on(scope.join_handles(handles))
            .iter()
            .all(Result::is_ok)
    );
    let ws = std::mem::take(&mut *wakers.lock().unwrap_or_else(|e| e.into_inner()));
    std::thread::spawn(move || ws.into_iter().for_each(|w| w.wake()))
        .join()
        .expect("waker thread");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        polls.load(SeqCst),
        1_000,
        "a finished task is never polled again"
    );
    assert!(pool.block_on(pool.shutdown_timeout(Duration::from_secs(1))));
}
