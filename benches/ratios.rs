//! The spawn, bounded, map (1M and 4M items) and CPU-scaling rows with targets, measured in rotated order:
//! `cargo bench --bench ratios`.
//!
//! Criterion's quick mode takes a few samples of each system one after the other, so on a
//! shared machine one slow phase can land on one system only and decide a ratio (see the
//! variance table in benches/NOTES.md). Here every round runs each system of a group once,
//! starting with a different one each round, and the medians over the rounds are compared:
//! a slow phase hits all systems of a group alike. Prints one line per system:
//!
//! ```text
//! ratios <group> <system> median_ns=<ns> rounds=<n>
//! ```
//!
//! `ROUNDS=<n>` sets the number of rounds (default 7); `ONLY=<name>,<name>` runs only the
//! groups named (for A/B runs of one row).
//!
//! The `priority` group times a backlog of Low tasks alone (`low_only`) and with a paced
//! stream of High tasks spawned beside it (`low_with_high`): their ratio is the Low
//! throughput drop. It also prints the High tasks' queue wait (spawn to first poll) over
//! all rounds:
//!
//! ```text
//! ratios_priority high_wait_p50_ns=<ns> high_wait_p99_ns=<ns> samples=<n>
//! ```

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_rayon::{Priority, Scope, ThreadPoolInner};

const N: usize = 1_000_000;
const BOUND: usize = 10_000;

/// One system of a group: its name and one run of its workload.
type System<'a> = (&'static str, Box<dyn FnMut() + 'a>);

/// Runs every system once untimed, then once per round, the first one rotating, and prints
/// the medians.
fn group(name: &str, rounds: usize, mut systems: Vec<System<'_>>) {
    if let Ok(wanted) = std::env::var("ONLY")
        && !wanted.split(',').any(|g| g == name)
    {
        return;
    }
    // One untimed warm-up run of each system first: the first run of a system pays for
    // thread start-up, page faults of fresh allocations and cold caches, which would
    // otherwise land in whichever system the first round happens to start with.
    for (_, run) in systems.iter_mut() {
        run();
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); systems.len()];
    for round in 0..rounds {
        for k in 0..systems.len() {
            let i = (round + k) % systems.len();
            let start = Instant::now();
            (systems[i].1)();
            times[i].push(start.elapsed());
        }
    }
    for ((system, _), mut t) in systems.iter().zip(times) {
        t.sort();
        let median = t[t.len() / 2];
        println!(
            "ratios {name} {system} median_ns={} rounds={rounds}",
            median.as_nanos()
        );
    }
}

/// Low tasks in the `priority` group's backlog, and fixed work steps of each (about 50 µs on
/// the 2-core machine of BENCHMARKS.md: 25 000 steps took about 40 µs).
const LOW_TASKS: usize = 200_000;
const LOW_WORK: u64 = 31_000;
/// High tasks spawned beside the backlog, one every `HIGH_EVERY`.
const HIGH_TASKS: usize = 200;
const HIGH_EVERY: Duration = Duration::from_micros(200);

/// One run of the `priority` group: queues the Low backlog, then paces `HIGH_TASKS` turns of
/// `HIGH_EVERY` (spawning a High task in each when `waits` is given, recording its queue
/// wait there), and returns once the backlog is done.
fn low_backlog(
    pool: &ThreadPoolInner,
    low: &Scope,
    high: &Scope,
    waits: Option<&Mutex<Vec<Duration>>>,
) {
    let backlog: Vec<_> = (0..LOW_TASKS as u64)
        .map(|i| {
            low.spawn_with_handle(async move { (0..LOW_WORK).fold(i, |a, k| common::work(a ^ k)) })
        })
        .collect();
    let mut highs = Vec::with_capacity(HIGH_TASKS);
    let mut next = Instant::now();
    for _ in 0..HIGH_TASKS {
        next += HIGH_EVERY;
        if waits.is_some() {
            let spawned = Instant::now();
            highs.push(high.spawn_with_handle(async move { spawned.elapsed() }));
        }
        while Instant::now() < next {
            std::hint::spin_loop();
        }
    }
    let (done, highs) = pool.block_on(async {
        (
            low.join_handles(backlog).await,
            high.join_handles(highs).await,
        )
    });
    assert!(done.iter().all(Result::is_ok), "a Low task failed");
    if let Some(waits) = waits {
        let mut waits = waits.lock().expect("waits");
        waits.extend(highs.into_iter().map(|r| r.expect("a High task failed")));
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench binaries without `--bench`: measure nothing.
        println!("ratios bench: run it with `cargo bench --bench ratios`");
        return;
    }
    let rounds = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7usize)
        .max(1);
    // The map rows first, in a fresh heap. At 4M the result vector is 64 MB, above glibc's
    // largest mmap threshold, so on both sides it is fresh memory in every run and page
    // faults weigh in alike. Run after the spawn rows, the calling thread's arena can hold
    // the 160 MB a 1M spawn row freed, and the bulk calls (whose result vector is allocated
    // by the caller, where rayon's is allocated on its worker) then reuse those pages: in one
    // report that made `batch_process` 0.36x rayon into the same type, against 1.25x in a
    // run of this order.
    let rp = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("rayon pool");
    let pool = ThreadPoolInner::new(2, Some(BOUND));
    let scope = Scope::new(pool.clone());
    // The map rows at 1M and 4M items. At 4M the 96 MB result vector is fresh memory in
    // every run (above glibc's largest mmap threshold), so page faults weigh in on both
    // sides; at 1M it is usually reused.
    for (name, n, rounds) in [("map_1M", N, rounds * 3), ("map_4M", 4 * N, rounds * 2)] {
        let data: Vec<u64> = (0..n as u64).collect();
        // Each run's output is dropped inside its timing, as criterion's `iter` does.
        group(
            name,
            rounds,
            vec![
                (
                    "rayon_par_iter",
                    Box::new(|| drop(std::hint::black_box(common::rayon_map(&rp, &data)))),
                ),
                (
                    "rayon_par_iter_results",
                    Box::new(|| drop(std::hint::black_box(common::rayon_map_results(&rp, &data)))),
                ),
                (
                    "rayon_owned_results",
                    Box::new(|| {
                        drop(std::hint::black_box(common::rayon_map_results_owned(
                            &rp, &data,
                        )))
                    }),
                ),
                (
                    "par_map_async",
                    Box::new(|| {
                        drop(std::hint::black_box(common::par_map_async(
                            &pool, &scope, &data,
                        )))
                    }),
                ),
                (
                    "batch_process",
                    Box::new(|| {
                        drop(std::hint::black_box(common::batch_process(
                            &pool, &scope, &data,
                        )))
                    }),
                ),
            ],
        );
    }
    drop((rp, pool, scope));

    let rt = common::tokio_rt();

    let bare = ThreadPoolInner::new(2, None);
    let bare_scope = Scope::new(bare.clone());
    let controlled = common::controlled_pool(N);
    let controlled_scope = Scope::new(controlled.clone());
    // References: the floor of the pool's design (its parts without its controls), and the
    // same with two shared counts of unfinished tasks, as the pool keeps (admission, scope).
    let minimal = common::MinimalPool::new(2, 0);
    let minimal_counted = common::MinimalPool::new(2, 2);
    group(
        "spawn_await_10k",
        rounds * 6,
        vec![
            (
                "tokio::spawn",
                Box::new(|| common::tokio_spawn_await(&rt, 10_000)),
            ),
            (
                "async_rayon",
                Box::new(|| common::async_rayon_spawn_await(&bare, &bare_scope, 10_000)),
            ),
            (
                "async_rayon+controls",
                Box::new(|| {
                    common::async_rayon_spawn_await(&controlled, &controlled_scope, 10_000)
                }),
            ),
            (
                "minimal_executor",
                Box::new(|| common::minimal_spawn_await(&minimal, 10_000)),
            ),
            (
                "minimal_executor+2_counts",
                Box::new(|| common::minimal_spawn_await(&minimal_counted, 10_000)),
            ),
        ],
    );
    group(
        "spawn_await_1M",
        rounds,
        vec![
            (
                "tokio::spawn",
                Box::new(|| common::tokio_spawn_await(&rt, N)),
            ),
            (
                "async_rayon",
                Box::new(|| common::async_rayon_spawn_await(&bare, &bare_scope, N)),
            ),
            (
                "async_rayon+controls",
                Box::new(|| common::async_rayon_spawn_await(&controlled, &controlled_scope, N)),
            ),
            (
                "minimal_executor",
                Box::new(|| common::minimal_spawn_await(&minimal, N)),
            ),
            (
                "minimal_executor+2_counts",
                Box::new(|| common::minimal_spawn_await(&minimal_counted, N)),
            ),
        ],
    );
    drop((bare_scope, controlled_scope, bare, controlled));
    drop((minimal, minimal_counted));

    let bounded = ThreadPoolInner::new(2, Some(BOUND));
    let bounded_scope = Scope::new(bounded.clone());
    group(
        "bounded_1M",
        rounds,
        vec![
            (
                "JoinSet+Semaphore",
                Box::new(|| common::joinset_semaphore(&rt, N, BOUND)),
            ),
            (
                "async_rayon_reserve",
                Box::new(|| common::async_rayon_reserve(&bounded, &bounded_scope, N)),
            ),
        ],
    );
    drop((bounded_scope, bounded));

    let (one, two) = (ThreadPoolInner::new(1, None), ThreadPoolInner::new(2, None));
    let (one_scope, two_scope) = (Scope::new(one.clone()), Scope::new(two.clone()));
    group(
        "cpu_scaling",
        rounds * 2,
        vec![
            (
                "1_thread",
                Box::new(|| drop(common::cpu_bound_batches(&one, &one_scope))),
            ),
            (
                "2_threads",
                Box::new(|| drop(common::cpu_bound_batches(&two, &two_scope))),
            ),
        ],
    );
    drop((one_scope, two_scope, one, two));

    let pool = ThreadPoolInner::new(2, None);
    let (low, high) = (
        pool.scope_with_priority(Priority::Low),
        pool.scope_with_priority(Priority::High),
    );
    let waits = Mutex::new(Vec::new());
    group(
        "priority",
        rounds * 2,
        vec![
            (
                "low_only",
                Box::new(|| low_backlog(&pool, &low, &high, None)),
            ),
            (
                "low_with_high",
                Box::new(|| low_backlog(&pool, &low, &high, Some(&waits))),
            ),
        ],
    );
    let mut waits = waits.into_inner().expect("waits");
    if !waits.is_empty() {
        waits.sort();
        let at = |q: f64| waits[((waits.len() as f64 * q).ceil() as usize).max(1) - 1];
        println!(
            "ratios_priority high_wait_p50_ns={} high_wait_p99_ns={} samples={}",
            at(0.5).as_nanos(),
            at(0.99).as_nanos(),
            waits.len()
        );
    }
    drop((low, high, pool));
}
