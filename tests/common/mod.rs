//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Builds example `name` (debug) with the cargo running these tests and returns its path.
pub fn build_example(name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--example",
            name,
            "--message-format=json",
        ])
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
