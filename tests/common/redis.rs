//! A real redis-server for one test: a free loopback port, its own temporary directory, the
//! append-only file on (so [`RedisServer::restart`] after a `kill -9` keeps what was
//! acknowledged), killed when dropped.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The oldest redis-server the tests accept (streams with XAUTOCLAIM's three-part reply,
/// XINFO's `entries-read`/`lag`, multi-part AOF).
const MIN_VERSION: (u32, u32) = (7, 0);

/// How long a start or a restart may take to answer PING.
const READY_WITHIN: Duration = Duration::from_secs(10);

const INSTALL_HINT: &str = "the tests of feature `redis` start a real redis-server (>= 7.0), \
     found on PATH; install it: `apt-get install redis-server` (Debian/Ubuntu), \
     `dnf install redis` (Fedora), `brew install redis` (macOS)";

/// A redis-server child process on 127.0.0.1, with its data and log in a temporary directory.
pub struct RedisServer {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers PING. Panics (with
    /// how to install it) when redis-server is missing or older than 7.0.
    pub fn start() -> RedisServer {
        check_version();
        let dir = tempfile::Builder::new()
            .prefix("async_rayon-redis-")
            .tempdir()
            .expect("create a temporary directory for redis-server");
        // The port is free when picked but not reserved: another process may take it before
        // redis-server binds it. Then redis-server exits, and a fresh port is tried.
        let mut failures = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = spawn(port, dir.path());
            match wait_ready(&mut child, port) {
                Ok(()) => return RedisServer { child, dir, port },
                Err(why) => {
                    failures.push(format!("port {port}: {why}"));
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!(
            "redis-server did not start: {failures:?}\n--- log\n{}",
            log_tail(dir.path())
        );
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data directory (its AOF is under `appendonlydir/`, its log in
    /// `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Crashes the server (SIGKILL, no shutdown save) and starts it again on the same port
    /// and directory; it replays its AOF, so every acknowledged write survives. Returns once
    /// the new process answers PING.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(self.port, self.dir.path());
        if let Err(why) = wait_ready(&mut self.child, self.port) {
            panic!(
                "redis-server did not come back on port {}: {why}\n--- log\n{}",
                self.port,
                log_tail(self.dir.path())
            );
        }
    }

    /// SIGKILL and reap the current process.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits (up to [`READY_WITHIN`]) until `child` itself (its pid, from `INFO server`) answers
/// PING with `+PONG` on the port.
/// Fails early when the child exits (the port was taken, a bad option).
fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let end = Instant::now() + READY_WITHIN;
    let mut last;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("redis-server exited with {status}"));
        }
        match ping(addr) {
            // The pid tells our child from a stranger that holds the port (then our child,
            // unable to bind, is about to exit).
            Ok(pid) if pid == child.id() => return Ok(()),
            Ok(pid) => last = format!("+PONG from process {pid}, not {}", child.id()),
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= end {
            return Err(format!(
                "no +PONG within {READY_WITHIN:?} (last attempt: {last})"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port that was free a moment ago: bind port 0, read what the kernel chose,
/// release it.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Starts redis-server on `port` with its data in `dir`, output appended to `dir/redis.log`.
fn spawn(port: u16, dir: &Path) -> Child {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("redis.log"))
        .expect("open redis.log");
    let log_err = log.try_clone().expect("clone the redis.log handle");
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(dir)
        // No RDB snapshots; every write goes to the AOF and is fsynced before the reply, so a
        // SIGKILL loses nothing that was acknowledged.
        .args(["--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .args(["--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .unwrap_or_else(|e| match e.kind() {
            io::ErrorKind::NotFound => panic!("redis-server not found: {INSTALL_HINT}"),
            _ => panic!("cannot run redis-server ({e}): {INSTALL_HINT}"),
        })
}

/// PING and `INFO server` in raw RESP; when the first answer is `+PONG`, returns the
/// `process_id` the second one reports.
fn ping(addr: SocketAddr) -> io::Result<u32> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        // Enough once the first line is in and, after `+PONG`, the INFO bulk string
        // (`$<len>\r\n<len bytes>\r\n`).
        let text = String::from_utf8_lossy(&reply);
        let Some((first, rest)) = text.split_once("\r\n") else {
            continue;
        };
        if first != "+PONG" {
            break;
        }
        if let Some((len, body)) = rest.split_once("\r\n")
            && let Some(len) = len.strip_prefix('$').and_then(|l| l.parse::<usize>().ok())
            && body.len() >= len + 2
        {
            return body
                .lines()
                .find_map(|l| l.strip_prefix("process_id:"))
                .and_then(|pid| pid.trim().parse().ok())
                .ok_or_else(|| io::Error::other("INFO server has no process_id"));
        }
    }
    // `-LOADING ...` while the AOF is replayed, a closed connection, or a stranger.
    Err(io::Error::other(format!(
        "PING answered {:?}",
        String::from_utf8_lossy(&reply)
    )))
}

/// Panics unless `redis-server --version` says at least [`MIN_VERSION`]; checked once.
fn check_version() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let verdict = CHECKED.get_or_init(|| {
        let out = Command::new("redis-server")
            .arg("--version")
            .output()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => format!("redis-server not found: {INSTALL_HINT}"),
                _ => format!("cannot run redis-server ({e}): {INSTALL_HINT}"),
            })?;
        // "Redis server v=7.0.15 sha=... malloc=... bits=64 build=..."
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let version = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("v="))
            .ok_or_else(|| format!("cannot read the version in {text:?}"))?;
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if found < MIN_VERSION {
            return Err(format!(
                "redis-server {version} is too old, need >= {}.{}: {INSTALL_HINT}",
                MIN_VERSION.0, MIN_VERSION.1
            ));
        }
        Ok(())
    });
    if let Err(why) = verdict {
        panic!("{why}");
    }
}

/// The last lines of the server's log, for failure messages.
fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
