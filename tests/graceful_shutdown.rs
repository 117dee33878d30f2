//! The graceful_shutdown example, run as a user would: SIGTERM makes it exit 0 within
//! grace + 1 s, with every task accounted for.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// SIGTERM mid-run: exit 0 within grace + 1 s, every submitted task completed or cancelled.
#[test]
fn sigterm_shuts_down_within_grace_and_accounts_for_every_task() {
    let exe = common::build_example("graceful_shutdown");
    let mut child = Command::new(exe)
        .args(["--grace", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read the banner");
    assert!(first.contains("service running"), "banner: {first:?}");
    // Let it build up a backlog of 0.1-3 s tasks.
    std::thread::sleep(Duration::from_millis(1_500));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let sent = Instant::now();
    let deadline = sent + Duration::from_secs(2); // grace 1 s + 1 s
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("poll the child") {
            break exit;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(5),
            "did not exit at all"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = sent.elapsed();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("read the report");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        exit.success(),
        "exit {exit:?}\nstdout:\n{rest}\nstderr:\n{err}"
    );
    assert!(
        took <= Duration::from_secs(2),
        "took {took:?} after SIGTERM\n{rest}"
    );

    let tally = rest
        .lines()
        .find(|l| l.starts_with("submitted="))
        .unwrap_or_else(|| panic!("no tally line in:\n{rest}"));
    let field = |k: &str| -> u64 {
        tally
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {tally:?}"))
    };
    let (sub, done, canc, rej, other) = (
        field("submitted"),
        field("completed"),
        field("cancelled"),
        field("rejected"),
        field("other"),
    );
    assert_eq!(done + canc + rej + other, sub, "{tally}");
    assert!(sub > 100, "the service was submitting: {tally}");
    assert!(
        canc > 0,
        "tasks of up to 3 s cannot all finish in a 1 s grace: {tally}"
    );
    assert_eq!(other, 0, "{tally}");
}

/// A bad flag is a clear message and a non-zero exit.
#[test]
fn bad_flag_is_rejected() {
    let exe = common::build_example("graceful_shutdown");
    let out = Command::new(exe)
        .args(["--grace", "soon"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--grace"), "stderr: {err}");
}
