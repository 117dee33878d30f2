//! An open-loop HTTP/1.1 load generator, for measuring a server (such as the `http_service`
//! example) at and past its capacity, with no external tools.
//!
//! # What it measures
//!
//! It sends `GET --url` at a fixed `--rate` for `--warmup-seconds` (results thrown away),
//! then for `--seconds` (the measured window), waits for the answers still in flight, and
//! prints one JSON line on stdout (and a summary line on stderr) with the outcome of the
//! requests scheduled inside the measured window:
//!
//! - `sent`: requests issued; each ends as exactly one of `ok_200`, `shed_503`,
//!   `timeout_504`, `other_status`, `errors` (connect or I/O errors) or `client_timeout`
//!   (no full answer within 10 s).
//! - `dropped_by_client`: requests not issued because `--connections` requests were already in
//!   flight at their scheduled time (the generator never waits for a slot, see below).
//! - `goodput_per_s`: 200 answers per second of the measured window.
//! - `ok_p50_ms`, `ok_p99_ms`, `ok_max_ms`, `shed_p50_ms`, `shed_p99_ms`: exact percentiles
//!   (nearest rank) of the latency of the 200 and the 503 answers, `null` if there were none.
//! - `server_peak_rss_kib`: with `--pid`, the server's `VmHWM` from `/proc/PID/status` at the
//!   end (its peak resident set over its whole life).
//! - `send_lag_max_ms`: how late, at worst, a request left compared to its schedule; more
//!   than a few ms means the generator itself could not keep up (CPU starved).
//! - `client_cpu_pct`: CPU time of this process (user + system) over the measured window and
//!   the drain after it, as a percentage of one core.
//!
//! # Open loop, and latency from the scheduled time
//!
//! Request `i` is due at `start + i / rate`, whether or not earlier requests have been
//! answered: a slow server does not slow the sender down, as real independent clients would
//! not wait for each other. (A closed loop, where each client sends its next request after the
//! previous answer, quietly lowers the offered load as the server slows down, and never shows
//! what overload does.) In-flight requests are capped at `--connections`; a request that
//! finds no free slot at its due time is counted as `dropped_by_client` rather than queued.
//!
//! Latency is measured from the *scheduled* send time to the last byte of the response body,
//! not from when the request actually left. If the generator falls behind (its own CPU is
//! busy, or the timer fires late), the time a request spent waiting to be sent is a delay a
//! real client would have seen too; measuring from the actual send would hide it
//! ("coordinated omission") and flatter the tail percentiles.
//!
//! Connections are reused (a keep-alive pool of up to `--connections` idle connections per
//! host, `TCP_NODELAY` on). The generator runs on one thread by default to stay cheap next to
//! the server on a small machine; per request it clones a parsed `Uri` and records two
//! numbers.
//!
//! # Running it
//!
//! ```text
//! cargo run --release --example http_service -- --addr 127.0.0.1:3000 --max-pending 64 &
//! cargo run --release --example load -- --url 'http://127.0.0.1:3000/work?ms=50&cpu_us=200' \
//!     --rate 2000 --seconds 10 --warmup-seconds 2 --connections 512 --pid $! --label pending64
//! ```
//!
//! Exit status: 0 after printing the result, 2 on bad arguments, 1 if the run failed.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Uri;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{Semaphore, TryAcquireError};
use tokio::time::Instant;

const USAGE: &str = "\
usage: load --url URL --rate N --seconds S [--warmup-seconds S] [--connections N]
            [--pid PID] [--label NAME] [--threads N]

  --url URL             http:// URL to GET (no https)
  --rate N              requests per second, sent on a fixed schedule (open loop)
  --seconds S           length of the measured window
  --warmup-seconds S    sent before the measured window, results discarded (default 2)
  --connections N       most requests in flight (and idle keep-alive connections);
                        a request finding none free is dropped_by_client (default 512)
  --pid PID             report the peak RSS (VmHWM) of this process at the end
  --label NAME          copied into the JSON output (default \"load\")
  --threads N           runtime worker threads of the generator (default 1)

Prints one JSON line on stdout and a summary on stderr. Each request times out after 10 s.";

/// A request without its full answer after this long counts as `client_timeout`.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Delay between setting up and the first scheduled request.
const START_DELAY: Duration = Duration::from_millis(20);

/// More requests than this in one run is surely a typo (and would need GBs for latencies).
const MAX_REQUESTS: f64 = 100_000_000.0;

struct Args {
    url: Uri,
    rate: f64,
    seconds: f64,
    warmup: f64,
    connections: usize,
    pid: Option<u32>,
    label: String,
    threads: usize,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut url = None;
    let mut rate = None;
    let mut seconds = None;
    let mut warmup = 2.0;
    let mut connections = 512;
    let mut pid = None;
    let mut label = String::from("load");
    let mut threads = 1;
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        const FLAGS: [&str; 8] = [
            "--url",
            "--rate",
            "--seconds",
            "--warmup-seconds",
            "--connections",
            "--pid",
            "--label",
            "--threads",
        ];
        if !FLAGS.contains(&flag.as_str()) {
            return Err(format!("unknown argument {flag:?}"));
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => url = Some(parse_url(&value)?),
            "--rate" => rate = Some(positive(&flag, &value)?),
            "--seconds" => seconds = Some(positive(&flag, &value)?),
            "--warmup-seconds" => {
                warmup = number(&flag, &value)?;
                if warmup < 0.0 {
                    return Err(format!("--warmup-seconds must be >= 0, got {value}"));
                }
            }
            "--connections" => {
                connections = integer(&flag, &value)?;
                let max = Semaphore::MAX_PERMITS.min(u32::MAX as usize);
                if connections == 0 || connections > max {
                    return Err(format!("--connections must be in 1..={max}, got {value}"));
                }
            }
            "--pid" => pid = Some(integer::<u32>(&flag, &value)?),
            "--label" => label = value,
            "--threads" => {
                threads = integer(&flag, &value)?;
                if threads == 0 {
                    return Err("--threads must be at least 1".into());
                }
            }
            _ => unreachable!("checked against FLAGS"),
        }
    }
    let args = Args {
        url: url.ok_or("--url is required")?,
        rate: rate.ok_or("--rate is required")?,
        seconds: seconds.ok_or("--seconds is required")?,
        warmup,
        connections,
        pid,
        label,
        threads,
    };
    if args.rate * (args.warmup + args.seconds) > MAX_REQUESTS {
        return Err(format!(
            "--rate x (--warmup-seconds + --seconds) is over {MAX_REQUESTS} requests"
        ));
    }
    Ok(Some(args))
}

fn parse_url(value: &str) -> Result<Uri, String> {
    let uri: Uri = value
        .parse()
        .map_err(|e| format!("--url {value:?} is not a valid URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--url {value:?}: only http:// URLs are supported"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("--url {value:?} has no host"));
    }
    Ok(uri)
}

fn number(flag: &str, value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(format!("{flag} needs a number, got {value:?}")),
    }
}

fn positive(flag: &str, value: &str) -> Result<f64, String> {
    let x = number(flag, value)?;
    if x > 0.0 {
        Ok(x)
    } else {
        Err(format!("{flag} must be > 0, got {value}"))
    }
}

fn integer<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag} needs a non-negative integer, got {value:?}"))
}

/// How one request ended.
enum Outcome {
    Status(u16),
    Error,
    Timeout,
}

/// Results of the requests scheduled in the measured window.
#[derive(Default)]
struct Stats {
    sent: u64,
    ok: u64,
    shed: u64,
    timeout_504: u64,
    other_status: u64,
    errors: u64,
    client_timeout: u64,
    dropped: u64,
    /// Latencies in microseconds from the scheduled send time.
    ok_us: Vec<u64>,
    shed_us: Vec<u64>,
    max_lag_us: u64,
}

impl Stats {
    fn record(&mut self, outcome: Outcome, latency_us: u64) {
        match outcome {
            Outcome::Status(200) => {
                self.ok += 1;
                self.ok_us.push(latency_us);
            }
            Outcome::Status(503) => {
                self.shed += 1;
                self.shed_us.push(latency_us);
            }
            Outcome::Status(504) => self.timeout_504 += 1,
            Outcome::Status(_) => self.other_status += 1,
            Outcome::Error => self.errors += 1,
            Outcome::Timeout => self.client_timeout += 1,
        }
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Sends one GET and reads the whole body; the outcome once the last byte arrived.
async fn request(client: &HttpClient, uri: Uri) -> Outcome {
    let response = match client.get(uri).await {
        Ok(response) => response,
        Err(_) => return Outcome::Error,
    };
    let status = response.status().as_u16();
    let mut body: Incoming = response.into_body();
    // Drain frame by frame: nothing is kept, so nothing is copied or collected.
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return Outcome::Error;
        }
    }
    Outcome::Status(status)
}

/// Due time of request `i`, as an offset from the start.
fn due(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// `VmHWM` of `pid` in KiB, from `/proc/PID/status`.
fn peak_rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmHWM line in {path}"))
}

struct Report {
    stats: Stats,
    cpu_pct: f64,
    peak_rss_kib: Option<u64>,
}

async fn run(args: &Args) -> Report {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.connections)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector);

    let stats = Arc::new(Mutex::new(Stats::default()));
    let slots = Arc::new(Semaphore::new(args.connections));
    let warmup_n = (args.rate * args.warmup).round() as u64;
    let total = (args.rate * (args.warmup + args.seconds)).round() as u64;

    let start = Instant::now() + START_DELAY;
    let mut measure_start = None;
    let mut i = 0;
    while i < total {
        tokio::time::sleep_until(start + due(i, args.rate)).await;
        // The timer has about 1 ms resolution: send every request due by now, each keeping its
        // own scheduled time for the latency.
        let now = Instant::now();
        while i < total {
            let scheduled = start + due(i, args.rate);
            if scheduled > now {
                break;
            }
            let measured = i >= warmup_n;
            i += 1;
            if measured && measure_start.is_none() {
                measure_start = Some((now, cpu_time()));
            }
            let permit = match slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                    if measured {
                        stats.lock().unwrap_or_else(|e| e.into_inner()).dropped += 1;
                    }
                    continue;
                }
            };
            if measured {
                let lag = now.saturating_duration_since(scheduled).as_micros() as u64;
                let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                s.sent += 1;
                s.max_lag_us = s.max_lag_us.max(lag);
            }
            let client = client.clone();
            let uri = args.url.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                let outcome = tokio::time::timeout(CLIENT_TIMEOUT, request(&client, uri))
                    .await
                    .unwrap_or(Outcome::Timeout);
                let latency_us = scheduled.elapsed().as_micros() as u64;
                drop(permit);
                if measured {
                    stats
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(outcome, latency_us);
                }
            });
        }
    }

    // Drain: every request holds a slot until it ends, within CLIENT_TIMEOUT.
    let _all = slots.acquire_many(args.connections as u32).await;
    let end = (Instant::now(), cpu_time());
    let cpu_pct = match measure_start {
        Some((t0, cpu0)) => {
            let wall = end.0.saturating_duration_since(t0).as_secs_f64();
            if wall > 0.0 {
                100.0 * end.1.saturating_sub(cpu0).as_secs_f64() / wall
            } else {
                0.0
            }
        }
        None => 0.0,
    };

    let peak_rss_kib = args.pid.and_then(|pid| {
        peak_rss_kib(pid)
            .map_err(|e| eprintln!("load: warning: --pid {pid}: {e}"))
            .ok()
    });
    let stats = std::mem::take(&mut *stats.lock().unwrap_or_else(|e| e.into_inner()));
    Report {
        stats,
        cpu_pct,
        peak_rss_kib,
    }
}

/// Exact nearest-rank percentile of sorted microseconds, in ms.
fn percentile_ms(sorted_us: &[u64], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted_us.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted_us.len()) - 1;
    Some(sorted_us[idx] as f64 / 1000.0)
}

fn json_ms(x: Option<f64>) -> String {
    x.map_or_else(|| "null".into(), |ms| format!("{ms:.3}"))
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn print_report(args: &Args, report: Report) {
    let Report {
        mut stats,
        cpu_pct,
        peak_rss_kib,
    } = report;
    stats.ok_us.sort_unstable();
    stats.shed_us.sort_unstable();
    let ok_p50 = percentile_ms(&stats.ok_us, 50.0);
    let ok_p99 = percentile_ms(&stats.ok_us, 99.0);
    let ok_max = stats.ok_us.last().map(|&us| us as f64 / 1000.0);
    let shed_p50 = percentile_ms(&stats.shed_us, 50.0);
    let shed_p99 = percentile_ms(&stats.shed_us, 99.0);
    let goodput = stats.ok as f64 / args.seconds;
    let lag_ms = stats.max_lag_us as f64 / 1000.0;

    let mut json = format!(
        "{{\"label\":{},\"offered_rate\":{},\"seconds\":{},\"sent\":{},\"ok_200\":{},\
         \"shed_503\":{},\"timeout_504\":{},\"other_status\":{},\"errors\":{},\
         \"client_timeout\":{},\"dropped_by_client\":{},\"goodput_per_s\":{:.1},\
         \"ok_p50_ms\":{},\"ok_p99_ms\":{},\"ok_max_ms\":{},\"shed_p50_ms\":{},\
         \"shed_p99_ms\":{},\"send_lag_max_ms\":{:.3},\"client_cpu_pct\":{:.1}",
        json_string(&args.label),
        args.rate,
        args.seconds,
        stats.sent,
        stats.ok,
        stats.shed,
        stats.timeout_504,
        stats.other_status,
        stats.errors,
        stats.client_timeout,
        stats.dropped,
        goodput,
        json_ms(ok_p50),
        json_ms(ok_p99),
        json_ms(ok_max),
        json_ms(shed_p50),
        json_ms(shed_p99),
        lag_ms,
        cpu_pct,
    );
    if args.pid.is_some() {
        let rss = peak_rss_kib.map_or_else(|| "null".into(), |k| k.to_string());
        json.push_str(&format!(",\"server_peak_rss_kib\":{rss}"));
    }
    json.push('}');

    let ms = |x: Option<f64>| x.map_or_else(|| "-".into(), |ms| format!("{ms:.1}"));
    let rss = peak_rss_kib.map_or_else(String::new, |k| format!(", server peak RSS {k} KiB"));
    eprintln!(
        "load[{}]: offered {}/s for {} s: sent {}, 200 {} ({:.1}/s, p50 {} p99 {} max {} ms), \
         503 {} (p50 {} p99 {} ms), 504 {}, other {}, errors {}, client timeouts {}, \
         dropped {}; send lag max {:.1} ms, client CPU {:.0}%{}",
        args.label,
        args.rate,
        args.seconds,
        stats.sent,
        stats.ok,
        goodput,
        ms(ok_p50),
        ms(ok_p99),
        ms(ok_max),
        stats.shed,
        ms(shed_p50),
        ms(shed_p99),
        stats.timeout_504,
        stats.other_status,
        stats.errors,
        stats.client_timeout,
        stats.dropped,
        lag_ms,
        cpu_pct,
        rss,
    );
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{json}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(1);
    }
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("load: error: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("load: error: cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let report = runtime.block_on(run(&args));
    print_report(&args, report);
}
