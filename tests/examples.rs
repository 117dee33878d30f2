//! Every example builds and runs to completion with short inputs, as a user would run it;
//! bad flags are a clear message and a non-zero exit.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

/// Runs example `name` with `args`; returns its stdout after checking it exited 0 in time.
fn run(name: &str, args: &[&str]) -> String {
    let exe = common::build_example(name);
    let start = Instant::now();
    let out = Command::new(exe)
        .args(args)
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "example {name} {args:?} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "example {name} took too long"
    );
    stdout
}

/// The examples, built and run as a user would run them, each with its expected output.
#[test]
fn examples_run_to_completion() {
    for (name, args, expect) in [
        ("basic_spawn", &[][..], "Processed: 1000"),
        ("batch_processing", &[], "100000/100000 items ok"),
        ("stream_processing", &["20000"], "20000/20000 ok"),
        ("parallel_map", &[], "User:"),
        ("cancellation_timeout", &[], "100/100 cancelled"),
        ("custom_configuration", &[], "num_threads"),
        ("monitoring", &[], "final:"),
        ("etl_pipeline", &["300"], "300 records loaded"),
        ("sync_feeder", &[], "sum of doubled items"),
        ("prometheus", &["--seconds", "1"], "final:"),
        ("channel_pool", &[], "channel pool: 1484 ok, 16 failed"),
        ("supervisor", &[], "supervisor stopped after 6 restarts"),
        ("autoscale", &[], "grew to 4 threads, shrank back to 1"),
        (
            "streaming_pipeline",
            &["3000"],
            "3000/3000 stored in input order",
        ),
    ] {
        let out = run(name, args);
        assert!(
            out.contains(expect),
            "example {name}: expected {expect:?} in:\n{out}"
        );
    }
}

/// The demo with a small input: every item accounted for, a summary table printed.
#[test]
fn demo_runs_and_summarizes() {
    let out = run(
        "demo",
        &[
            "--items",
            "2000",
            "--concurrency",
            "200",
            "--fail-rate",
            "0.1",
        ],
    );
    for row in ["throughput", "request p50 / p99", "peak RSS"] {
        assert!(
            summary_row(&out, row).is_some(),
            "summary row {row:?} missing:\n{out}"
        );
    }
    // Every item accounted for: ok + failed after retries = items = 2000, and none panicked,
    // was cancelled or timed out.
    let number = |row: &str| -> u64 {
        summary_row(&out, row)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("summary row {row:?} is not a number:\n{out}"))
    };
    assert_eq!(number("items"), 2000, "{out}");
    assert_eq!(
        number("ok") + number("failed after retries"),
        2000,
        "items lost or double counted:\n{out}"
    );
    assert_eq!(
        summary_row(&out, "panicked / cancelled / timed out"),
        Some("0 / 0 / 0"),
        "{out}"
    );
    // With --fail-rate 0.1 about 200 of 2000 first requests fail: the flag took effect.
    assert!(
        number("retries") > 0,
        "--fail-rate 0.1 caused no retries:\n{out}"
    );
}

/// The value of the demo summary's row `label` (the text after the label on its line).
fn summary_row<'a>(out: &'a str, label: &str) -> Option<&'a str> {
    out.lines().find_map(|line| {
        let rest = line.strip_prefix(label)?;
        // The label must be the whole label, followed by the padding before the value.
        rest.starts_with("  ").then(|| rest.trim())
    })
}

/// Bad flags: a clear message naming the flag, and a non-zero exit.
#[test]
fn demo_rejects_bad_flags() {
    let exe = common::build_example("demo");
    // (args, what the first line of stderr must name). The usage text that follows lists
    // every flag, so only the error line itself can show which flag was at fault.
    for (args, named) in [
        (&["--items", "many"][..], &["--items", "\"many\""][..]),
        (&["--fail-rate", "2"], &["--fail-rate", "2"]),
        (&["--bogus", "1"], &["\"--bogus\""]),
    ] {
        let out = Command::new(&exe)
            .args(args)
            .output()
            .expect("run the demo");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(c) if c != 0 && c != 101),
            "{args:?} should exit with a non-zero code, not succeed, panic or die: {:?}\n{err}",
            out.status
        );
        let first = err.lines().next().unwrap_or("");
        assert!(
            first.starts_with("error:") && named.iter().all(|n| first.contains(n)),
            "{args:?}: the error line should name {named:?}, got {first:?}\n{err}"
        );
    }
    let help = Command::new(&exe)
        .arg("--help")
        .output()
        .expect("run the demo");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--max-pending"));
}
