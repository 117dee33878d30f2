//! `examples/http_service.rs` run as a user would: the binary on a free loopback port, spoken
//! to over real sockets. Answers, load shedding, timeouts, panics, cancellation of the task
//! when the client goes away, and a graceful shutdown on SIGTERM with requests in flight.
//!
//! The client is plain `std::net` HTTP/1.1 with `Connection: close`, so each request has a
//! connection of its own and every read is bounded by a socket timeout.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The example, built once for all the tests of this file.
fn exe() -> &'static PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| common::build_example("http_service"))
}

/// A running service; killed (if still running) when dropped.
struct Server {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<String>>,
    addr: SocketAddr,
}

impl Server {
    /// Starts the service on a free port with `args` (besides `--addr`) and waits for its
    /// `listening on` line.
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(exe())
            .args(["--addr", "127.0.0.1:0", "--threads", "2"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the http_service example");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("stderr buffer")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        // The first line is read on a thread of its own so that a binary that never prints
        // it (or never flushes it) fails the test in 10 s instead of hanging it; one that
        // dies first gives EOF, an empty line, and the assertion below reports it.
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut first = String::new();
            let read = stdout.read_line(&mut first).map(|_| first);
            let _ = tx.send((read, stdout));
        });
        let Ok((first, stdout)) = rx.recv_timeout(Duration::from_secs(10)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no `listening on` line within 10 s\nstderr:\n{}",
                stderr.lock().expect("stderr buffer")
            );
        };
        let first = first.expect("read the first line of stdout");
        let mut server = Server {
            child,
            stdout,
            stderr,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let Some(url) = first.trim().strip_prefix("listening on http://") else {
            panic!(
                "first stdout line should be `listening on http://ADDR`, got {first:?}\nstderr:\n{}",
                server.stderr()
            );
        };
        server.addr = url.parse().expect("the announced address parses");
        assert_ne!(server.addr.port(), 0, "the real port is announced");
        server
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    fn get(&self, path: &str) -> Reply {
        get(self.addr, path)
    }

    /// Waits up to `limit` for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The value of `name`'s sample in `/metrics`, if it is there yet.
    fn metric(&self, name: &str) -> Option<f64> {
        let reply = self.get("/metrics");
        assert_eq!(reply.status, 200, "/metrics: {reply:?}");
        reply
            .body
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    elapsed: Duration,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on a connection of its own; the answer, read to EOF. Panics after 10 s.
fn get(addr: SocketAddr, path: &str) -> Reply {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("GET {path}: reading the answer: {e}"));
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: not an HTTP answer: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status line: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
        elapsed,
    }
}

/// Starts `n` `GET path` at the same moment on threads of their own.
fn concurrent_gets(addr: SocketAddr, path: &str, n: usize) -> Vec<thread::JoinHandle<Reply>> {
    let barrier = Arc::new(Barrier::new(n));
    (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            let path = path.to_string();
            thread::spawn(move || {
                barrier.wait();
                get(addr, &path)
            })
        })
        .collect()
}

#[test]
fn work_healthz_and_metrics_answer() {
    let server = Server::start(&[]);
    let reply = server.get("/work?ms=10&cpu_us=100");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, r#"{"ms":10,"cpu_us":100}"#);
    assert_eq!(reply.header("content-type"), Some("application/json"));

    let reply = server.get("/work");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, r#"{"ms":0,"cpu_us":0}"#, "defaults are 0");

    let reply = server.get("/work?ms=abc");
    assert_eq!(reply.status, 400, "a non-numeric query is a 400: {reply:?}");

    let reply = server.get("/healthz");
    assert_eq!((reply.status, reply.body.trim()), (200, "ok"), "{reply:?}");

    let reply = server.get("/metrics");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    // The export runs every 100 ms; wait for its first round.
    assert!(
        common::eventually(Duration::from_secs(3), || {
            server
                .metric("async_rayon_tasks_completed_total")
                .is_some_and(|n| n >= 2.0)
        }),
        "async_rayon_tasks_completed_total should reach 2:\n{}",
        server.get("/metrics").body
    );
}

#[test]
fn overload_is_shed_at_once_with_retry_after() {
    let server = Server::start(&["--max-pending", "4"]);
    let replies: Vec<Reply> = concurrent_gets(server.addr, "/work?ms=1000", 40)
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let shed: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(ok + shed.len(), 40, "only 200s and 503s: {replies:?}");
    assert!(
        (1..=4).contains(&ok),
        "{ok} answered 200 with max-pending 4"
    );
    assert!(!shed.is_empty(), "some requests are shed");
    for r in &shed {
        assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
        assert!(
            r.elapsed < Duration::from_millis(500),
            "a 503 must not wait for room: took {:?}",
            r.elapsed
        );
    }
    for r in replies.iter().filter(|r| r.status == 200) {
        assert!(r.elapsed >= Duration::from_millis(1000), "{r:?}");
    }
}

#[test]
fn slow_task_times_out_as_504() {
    let server = Server::start(&["--task-timeout-ms", "100"]);
    let reply = server.get("/work?ms=2000");
    assert_eq!(reply.status, 504, "{reply:?}");
    assert!(
        reply.elapsed < Duration::from_millis(1000),
        "the 504 comes at the task timeout, took {:?}",
        reply.elapsed
    );
}

#[test]
fn panicking_task_is_a_500_and_the_service_goes_on() {
    let server = Server::start(&[]);
    let reply = server.get("/work?panic=1");
    assert_eq!(reply.status, 500, "{reply:?}");
    assert!(reply.body.contains("panicked"), "{reply:?}");
    for _ in 0..3 {
        let reply = server.get("/work?ms=1");
        assert_eq!(reply.status, 200, "after a panic: {reply:?}");
    }
}

#[test]
fn client_disconnect_cancels_the_task_and_frees_its_slot() {
    let server = Server::start(&["--max-pending", "1"]);
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    write!(
        stream,
        "GET /work?ms=5000 HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.addr
    )
    .expect("send the request");
    thread::sleep(Duration::from_millis(200));
    // The one slot is taken by the task of the request above.
    let reply = server.get("/work");
    assert_eq!(reply.status, 503, "the slot should be taken: {reply:?}");

    drop(stream);
    let cancelled = "async_rayon_tasks_cancelled_total";
    assert!(
        common::eventually(Duration::from_secs(3), || {
            server.metric(cancelled).is_some_and(|n| n >= 1.0)
        }),
        "{cancelled} should reach 1 after the client went away:\n{}\nstderr:\n{}",
        server.get("/metrics").body,
        server.stderr()
    );
    // Well before the 5 s task would have finished, its slot is free again.
    let reply = server.get("/work?ms=10");
    assert_eq!(reply.status, 200, "the slot should be free: {reply:?}");
}

#[test]
fn sigterm_drains_requests_in_flight_and_exits_0() {
    // 1000 ms tasks: longer than the example's bound on the pool's own shutdown (500 ms),
    // so only a server that really waits for its requests answers them all with 200.
    let mut server = Server::start(&["--grace-ms", "2000"]);
    let clients = concurrent_gets(server.addr, "/work?ms=1000", 5);
    // SIGTERM once all five are on the pool (the metrics are exported every 100 ms).
    assert!(
        common::eventually(Duration::from_secs(5), || {
            server
                .metric("async_rayon_tasks_submitted_total")
                .is_some_and(|n| n >= 5.0)
        }),
        "the five requests did not reach the pool"
    );
    let pid = libc::pid_t::try_from(server.child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "send SIGTERM");

    let status = server.wait_exit(Duration::from_millis(3000));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "should exit 0 within grace + 1 s, got {status:?}\nstderr:\n{}",
        server.stderr()
    );
    for client in clients {
        let reply = client.join().expect("client thread");
        assert_eq!(reply.status, 200, "in flight at SIGTERM: {reply:?}");
    }
    let mut rest = String::new();
    server
        .stdout
        .read_to_string(&mut rest)
        .expect("read the rest of stdout");
    let last = rest.lines().last().unwrap_or_default();
    assert!(last.starts_with("shutdown:"), "last stdout line: {rest:?}");
    assert!(last.contains("served=5"), "{last}");
}

#[test]
fn bad_flags_exit_2_and_help_prints_usage() {
    for args in [
        &["--max-pending", "many"][..],
        &["--max-pending", "0"],
        &["--addr", "nowhere"],
        &["--grace-ms"],
        &["--bogus", "1"],
    ] {
        let out = Command::new(exe())
            .args(args)
            .output()
            .expect("run the example");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(args[0]), "{args:?}: message {err:?}");
    }
    let out = Command::new(exe())
        .arg("--help")
        .output()
        .expect("run the example");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--max-pending"));
}

/// `--stack tower`, the peer of the overload benchmark, answers as the pool stack does:
/// 200, 503 with `Retry-After` past `--max-pending`, 504 past the timeout, 500 on a panic.
#[test]
fn tower_stack_answers_like_the_pool_stack() {
    let server = Server::start(&[
        "--stack",
        "tower",
        "--max-pending",
        "2",
        "--task-timeout-ms",
        "300",
    ]);
    assert_eq!(server.get("/work?ms=1&cpu_us=10").status, 200);
    assert_eq!(server.get("/work?ms=2000").status, 504);
    assert_eq!(server.get("/work?panic=1").status, 500);
    let replies: Vec<Reply> = concurrent_gets(server.addr, "/work?ms=200", 10)
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert!(
        (1..=2).contains(&ok),
        "{ok} answered 200 with max-pending 2"
    );
    for r in replies.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    }
}
