//! One workload of the benches, run once, for instruction counting under callgrind:
//! `instructions --bench <system> <n> [--setup-only]`. `scripts/bench-report` runs each
//! system under `valgrind --tool=callgrind` twice, with and without `--setup-only` (which
//! builds the pool or runtime and the input but runs the workload on no items), and reports
//! the difference per item: what the workload itself executes.
//!
//! callgrind runs one thread at a time, so the counts leave out what the wall-clock benches
//! are most sensitive to (threads waiting for each other, cache lines moving between cores)
//! and keep what each system executes per task. They do not depend on the machine's
//! neighbours: the same binary and input give the same count, which the timings on a shared
//! 2-core machine do not (see the variance section of `benches/NOTES.md`).
//!
//! Systems: the workloads of `benches/common.rs`, named as in `ratios.rs`.

mod common;

use async_rayon::{Scope, ThreadPoolInner};

/// The admission bound of the bounded systems (as in `bounded.rs`).
const BOUND: usize = 10_000;

/// `max_pending` of the "controls" spawn system: above any task count the report uses, so
/// that the pool is built alike with and without `--setup-only`.
const CONTROLS_MAX_PENDING: usize = 1 << 22;

/// Every system this binary can run.
const SYSTEMS: [&str; 9] = [
    "tokio::spawn",
    "async_rayon",
    "async_rayon+controls",
    "JoinSet+Semaphore",
    "async_rayon_reserve",
    "rayon_par_iter",
    "rayon_par_iter_results",
    "batch_process",
    "par_map_async",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench binaries without `--bench`: measure nothing.
        println!("instructions bench: run by scripts/bench-report under callgrind");
        return;
    }
    let setup_only = args.iter().any(|a| a == "--setup-only");
    let rest: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with("--")).collect();
    let (Some(system), Some(n)) = (
        rest.first(),
        rest.get(1).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: instructions --bench <system> <n> [--setup-only]; systems: {SYSTEMS:?}");
        std::process::exit(2);
    };
    let data: Vec<u64> = (0..n).collect();
    run(system, if setup_only { &data[..0] } else { &data });
}

/// Runs `system`'s workload on `data.len()` items (tasks, for the spawn and bounded systems).
fn run(system: &str, data: &[u64]) {
    let n = data.len();
    let pool = || ThreadPoolInner::new(2, None);
    match system {
        "tokio::spawn" => common::tokio_spawn_await(&common::tokio_rt(), n),
        "async_rayon" => {
            let pool = pool();
            common::async_rayon_spawn_await(&pool, &Scope::new(pool.clone()), n);
        }
        "async_rayon+controls" => {
            let pool = common::controlled_pool(CONTROLS_MAX_PENDING);
            common::async_rayon_spawn_await(&pool, &Scope::new(pool.clone()), n);
        }
        "JoinSet+Semaphore" => common::joinset_semaphore(&common::tokio_rt(), n, BOUND),
        "async_rayon_reserve" => {
            // As in the timing rows (`bounded.rs`, `ratios.rs`): the bound, no task_timeout.
            let pool = ThreadPoolInner::new(2, Some(BOUND));
            common::async_rayon_reserve(&pool, &Scope::new(pool.clone()), n);
        }
        "rayon_par_iter" => {
            std::hint::black_box(common::rayon_map(&rayon_pool(), data));
        }
        "rayon_par_iter_results" => {
            std::hint::black_box(common::rayon_map_results(&rayon_pool(), data));
        }
        "batch_process" => {
            let pool = pool();
            std::hint::black_box(common::batch_process(
                &pool,
                &Scope::new(pool.clone()),
                data,
            ));
        }
        "par_map_async" => {
            let pool = pool();
            std::hint::black_box(common::par_map_async(
                &pool,
                &Scope::new(pool.clone()),
                data,
            ));
        }
        other => {
            eprintln!("instructions: unknown system {other:?}; systems: {SYSTEMS:?}");
            std::process::exit(2);
        }
    }
}

fn rayon_pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("rayon pool")
}
