//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Builds example `name` (debug) with the cargo running these tests and returns its path.
pub fn build_example(name: &str) -> PathBuf {
    build_example_with(name, &[])
}

/// [`build_example`] with cargo features turned on (for examples that require them).
pub fn build_example_with(name: &str, features: &[&str]) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let features = features.join(",");
    let mut args = vec![
        "build",
        "--quiet",
        "--example",
        name,
        "--message-format=json",
    ];
    if !features.is_empty() {
        args.extend(["--features", features.as_str()]);
    }
    let out = Command::new(cargo)
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "building example {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        if line.contains("\"reason\":\"compiler-artifact\"")
            && line.contains(&format!("\"name\":\"{name}\""))
            && let Some(start) = line.find("\"executable\":\"")
        {
            let rest = &line[start + "\"executable\":\"".len()..];
            if let Some(end) = rest.find('"') {
                return PathBuf::from(&rest[..end]);
            }
        }
    }
    panic!("cargo did not report an executable for example {name}");
}

/// Polls `cond` every few milliseconds until it holds or `limit` passes; returns the last
/// answer. Timing checks use this instead of asserting once.
pub fn eventually(limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    cond()
}

// ---------------------------------------------------------------------------------------
// Helpers for the behaviour suites (spawn, admission, cancel, timeout, panic, shutdown,
// config, scheduling).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Sets its flag when dropped: put one inside a task's future to see when the future is
/// dropped.
pub struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A guard to move into a future, and the flag it sets when that future is dropped.
pub fn drop_flag() -> (DropFlag, Arc<AtomicBool>) {
    let flag = Arc::new(AtomicBool::new(false));
    (DropFlag(flag.clone()), flag)
}

/// What became of a future made by [`probed`]: whether it was ever polled, and whether it
/// has been dropped.
pub struct Probe {
    polled: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
}

impl Probe {
    pub fn polled(&self) -> bool {
        self.polled.load(Ordering::SeqCst)
    }

    pub fn dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }
}

/// A future that yields `value` at its first poll, and the [`Probe`] watching it: for tests
/// of futures that must be refused or cancelled without ever running.
pub fn probed<T: Send + 'static>(
    value: T,
) -> (impl std::future::Future<Output = T> + Send + 'static, Probe) {
    let polled = Arc::new(AtomicBool::new(false));
    let (guard, dropped) = drop_flag();
    let p = polled.clone();
    let future = async move {
        let _guard = guard;
        p.store(true, Ordering::SeqCst);
        value
    };
    (future, Probe { polled, dropped })
}

/// Spawns a detached task on `scope` whose future never finishes; returns the flag set when
/// that future is dropped (by a cancel, a scope drop or a shutdown).
pub fn spawn_detached_forever(scope: &async_rayon::Scope) -> Arc<AtomicBool> {
    let (guard, dropped) = drop_flag();
    drop(scope.spawn_with_handle(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    }));
    dropped
}

/// Async version of [`eventually`]: polls `cond` every few milliseconds with a tokio timer
/// until it holds or `limit` passes; returns the last answer.
pub async fn eventually_async(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

/// Busy-spins the calling thread for `d` of wall-clock time.
pub fn spin_for(d: Duration) {
    let end = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < end {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
    std::hint::black_box(x);
}

/// Number of OS threads of this process, from /proc/self/task.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .count()
}

/// Starts a loopback TCP echo server on the current tokio runtime; returns its address.
pub async fn start_echo_server() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback echo server");
    let addr = listener.local_addr().expect("echo server address");
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if sock.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Starts a loopback TCP server that accepts connections and never writes to them. Each
/// time a client closes its end (the server's read sees EOF or an error), a `()` is sent
/// on the returned receiver.
pub async fn start_silent_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback silent server");
    let addr = listener.local_addr().expect("silent server address");
    let (closed_tx, closed_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = closed_tx.send(());
                            return;
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    (addr, closed_rx)
}

/// A pool of `threads` workers with no admission bound, stealing on, no task timeout.
pub fn pool(threads: usize) -> std::sync::Arc<async_rayon::ThreadPoolInner> {
    async_rayon::ThreadPoolInner::with_config(async_rayon::Config {
        num_threads: threads,
        max_pending: None,
        enable_work_stealing: true,
        task_timeout: None,
    })
}

/// Resolves `fut` or fails the test after `secs` seconds.
pub async fn within<F: std::future::Future>(secs: u64, what: &str, fut: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: did not finish within {secs}s"))
}

// ---------------------------------------------------------------------------------------
// Fixed-work CPU spinning and speed-up measurement, for the "CPU work runs in parallel"
// checks. Wall-clock spinning (`spin_for`) cannot show parallelism: a task that spins for
// 60 ms takes 60 ms whether or not it shares its core. These spin a counted amount of work,
// so two workers on one core take twice as long as on two cores.

/// Busy work of exactly `iters` steps, whatever the clock says.
pub fn spin_iters(iters: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..iters {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
    }
    x
}

/// How many [`spin_iters`] steps take about `target` on one otherwise idle core. Calibrated
/// once per test binary (best of several runs, so a noisy neighbour only makes it smaller).
pub fn iters_for(target: Duration) -> u64 {
    static PER_MS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let per_ms = *PER_MS.get_or_init(|| {
        const PROBE: u64 = 200_000;
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            std::hint::black_box(spin_iters(PROBE));
            best = best.min(t.elapsed());
        }
        let nanos = best.as_nanos().max(1) as u64;
        (PROBE * 1_000_000 / nanos).max(1)
    });
    per_ms * target.as_millis().max(1) as u64
}

/// Online CPUs of the machine (not the affinity mask: a process pinned with `taskset -c 0`
/// on a 2-core machine still reports 2 here, so the parallelism checks run, and fail, under
/// it).
pub fn machine_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 { n as usize } else { 1 }
}

/// True (after printing why) when this machine has fewer than two CPUs, so a parallel
/// speed-up cannot exist and `test` should be skipped.
pub fn skip_without_two_cpus(test: &str) -> bool {
    let cpus = machine_cpus();
    let affinity = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!(
            "SKIPPED {test}: the machine has {cpus} CPU(s) (available_parallelism = {affinity}); \
             a parallel speed-up needs 2"
        );
        return true;
    }
    false
}

/// The speed-up a parallel check requires of 2 workers over 1 worker doing the same work.
pub const MIN_SPEEDUP: f64 = 1.5;

/// Runs `run(1)` and `run(2)` (the same fixed work on a 1-thread and on a 2-thread pool,
/// returning its wall time) interleaved, at least `attempts` times and then on until
/// `patience` has passed, and returns `Ok(speed-up)` as soon as the best 1-thread time over
/// the best 2-thread time reaches [`MIN_SPEEDUP`]; otherwise `Err` with every measurement.
/// Noise (other processes on a shared machine) only makes runs slower, so best-of-N is what
/// the hardware can do; the patience waits out a neighbour's burst of CPU use.
pub fn measure_speedup(
    attempts: usize,
    patience: Duration,
    mut run: impl FnMut(usize) -> Duration,
) -> Result<f64, String> {
    let (mut best1, mut best2) = (Duration::MAX, Duration::MAX);
    let mut log = Vec::new();
    let start = Instant::now();
    while log.len() < attempts || start.elapsed() < patience {
        let one = run(1);
        let two = run(2);
        best1 = best1.min(one);
        best2 = best2.min(two);
        log.push((one, two));
        let speedup = best1.as_secs_f64() / best2.as_secs_f64();
        if speedup >= MIN_SPEEDUP {
            return Ok(speedup);
        }
    }
    Err(format!(
        "best 1-thread {best1:?} / best 2-thread {best2:?} = {:.2}x speed-up, need >= \
         {MIN_SPEEDUP}x (machine CPUs {}, available_parallelism {:?}); (1-thread, 2-thread) \
         runs: {log:?}",
        best1.as_secs_f64() / best2.as_secs_f64(),
        machine_cpus(),
        std::thread::available_parallelism().map(|n| n.get()),
    ))
}

// ---------------------------------------------------------------------------------------
// Helpers for the tight timing checks (how late a timeout, a cancel or a shutdown takes
// effect). A single run on a shared two-core machine can be descheduled for tens of
// milliseconds, so these checks take the best of a few tries: a mechanism that is late by
// design is late in every try, while noise rarely hits all of them.

/// Records the instant it is dropped: put one inside a task's future to see when the pool
/// dropped that future.
pub struct DropTime(Arc<std::sync::OnceLock<Instant>>);

impl Drop for DropTime {
    fn drop(&mut self) {
        let _ = self.0.set(Instant::now());
    }
}

/// A guard to move into a future, and the cell that holds the instant that future was dropped.
pub fn drop_time() -> (DropTime, Arc<std::sync::OnceLock<Instant>>) {
    let cell = Arc::new(std::sync::OnceLock::new());
    (DropTime(cell.clone()), cell)
}

/// Environment variable: when set to `n`, [`best_of`] runs `n` tries without stopping early
/// and prints their distribution, to re-measure what a bound should be, e.g.
/// `ASYNC_RAYON_TIMING_SAMPLES=50 cargo test --test cancel -- --nocapture promptly`.
pub const TIMING_SAMPLES_ENV: &str = "ASYNC_RAYON_TIMING_SAMPLES";

/// The slack the docs promise for `shutdown_timeout(d)`: it returns within `d` plus this
/// (ARCHITECTURE.md, "shutdown is bounded"; the doc of `shutdown_timeout`). The tests gate
/// it with [`best_of`]/[`best_of_async`].
pub const SHUTDOWN_SLACK: Duration = Duration::from_millis(30);

fn timing_samples() -> Option<usize> {
    std::env::var(TIMING_SAMPLES_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
}

/// How many tries to run, and whether to stop at the first within the bound.
fn tries_and_early_stop(tries: usize) -> (usize, bool) {
    match timing_samples() {
        Some(n) => (n.max(1), false),
        None => (tries.max(1), true),
    }
}

/// Prints the distribution (when sampling) and fails unless the best try is within `bound`.
fn judge(what: &str, bound: Duration, seen: &[Duration]) -> Duration {
    let mut sorted = seen.to_vec();
    sorted.sort();
    let best = sorted[0];
    if timing_samples().is_some() {
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        println!(
            "{what}: {} samples: min {:?} p50 {:?} p90 {:?} p99 {:?} max {:?} (bound {bound:?})",
            sorted.len(),
            sorted[0],
            at(0.5),
            at(0.9),
            at(0.99),
            sorted[sorted.len() - 1],
        );
    }
    assert!(
        best <= bound,
        "{what}: late by more than {bound:?} in every one of {} tries: {seen:?}",
        seen.len()
    );
    best
}

/// Runs `attempt` (which returns a measured lateness) up to `tries` times, stopping at the
/// first within `bound`, and fails the test if none was. Returns the best lateness.
pub fn best_of(
    what: &str,
    tries: usize,
    bound: Duration,
    mut attempt: impl FnMut() -> Duration,
) -> Duration {
    // Its own loop, not `best_of_async` under an executor: callers may already run inside
    // one (`pool.block_on`), where a nested `block_on` panics.
    let (n, early) = tries_and_early_stop(tries);
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(attempt());
        if early && seen.last().is_some_and(|&l| l <= bound) {
            break;
        }
    }
    judge(what, bound, &seen)
}

/// [`best_of`] for tries that are futures.
pub async fn best_of_async<F: std::future::Future<Output = Duration>>(
    what: &str,
    tries: usize,
    bound: Duration,
    mut attempt: impl FnMut() -> F,
) -> Duration {
    let (n, early) = tries_and_early_stop(tries);
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(attempt().await);
        if early && seen.last().is_some_and(|&l| l <= bound) {
            break;
        }
    }
    judge(what, bound, &seen)
}

/// Runs the ignored test `name` of the current test binary alone in a child process, with
/// `env` set to "1" (the child checks it), and returns the child's stdout. Panics with the
/// child's output if it did not pass. For measurements that other tests' threads and
/// allocations would disturb.
pub fn run_child_test(name: &str, env: &str) -> String {
    let exe = std::env::current_exe().expect("path of this test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env, "1")
        .output()
        .expect("run the child test process");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child test {name} failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout
}

/// Counts values alive at once (entered, not yet dropped) and the most ever seen, kept by the
/// values themselves: put a [`Counted`] inside a future to check a bound independently of
/// the pool's own counters.
#[derive(Clone, Default)]
pub struct Census {
    live: Arc<std::sync::atomic::AtomicUsize>,
    peak: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counted in its [`Census`] from [`Census::enter`] until dropped.
pub struct Counted(Census);

impl Census {
    /// Counts one more value alive until the returned guard is dropped.
    pub fn enter(&self) -> Counted {
        let now = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        Counted(self.clone())
    }

    /// Values alive now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// The most values alive at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------
// A real redis-server per test, for the Redis Streams job queue (`async_rayon::queue`).

#[cfg(feature = "redis")]
pub mod redis;

/// Spawns a task on `scope` that blocks the pool's only worker until the returned sender is
/// dropped or sent to; returns once it runs (so tasks spawned after it stay queued).
pub fn occupy_the_worker(scope: &async_rayon::Scope) -> std::sync::mpsc::Sender<()> {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = std::sync::mpsc::channel::<()>();
    drop(scope.spawn_with_handle(async move {
        let _ = started_tx.send(());
        let _ = wait.recv();
    }));
    started
        .recv_timeout(Duration::from_secs(5))
        .expect("the blocking task started");
    release
}
