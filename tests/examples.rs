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

/// The seed's sections and the other seeds' patterns, each as a runnable example.
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
    for row in [
        "throughput",
        "request p50 / p99",
        "retries",
        "peak RSS",
        "ok",
    ] {
        assert!(out.contains(row), "summary row {row:?} missing:\n{out}");
    }
}

/// Bad flags: a clear message naming the flag, and a non-zero exit.
#[test]
fn demo_rejects_bad_flags() {
    let exe = common::build_example("demo");
    for args in [
        &["--items", "many"][..],
        &["--fail-rate", "2"],
        &["--bogus", "1"],
    ] {
        let out = Command::new(&exe)
            .args(args)
            .output()
            .expect("run the demo");
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(args[0]) || err.contains("--fail-rate"),
            "{args:?}: {err}"
        );
    }
    let help = Command::new(&exe)
        .arg("--help")
        .output()
        .expect("run the demo");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--max-pending"));
}
