//! The spawn, bounded, map and CPU-scaling rows with targets, measured in rotated order:
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

mod common;

use std::time::{Duration, Instant};

use async_rayon::{Scope, ThreadPoolInner};

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
    let rt = common::tokio_rt();

    let bare = ThreadPoolInner::new(2, None);
    let bare_scope = Scope::new(bare.clone());
    let controlled = common::controlled_pool(N);
    let controlled_scope = Scope::new(controlled.clone());
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
        ],
    );
    drop((bare_scope, controlled_scope, bare, controlled));

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

    let data: Vec<u64> = (0..N as u64).collect();
    let rp = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("rayon pool");
    let pool = ThreadPoolInner::new(2, Some(BOUND));
    let scope = Scope::new(pool.clone());
    // Each run's output is dropped inside its timing, as criterion's `iter` does.
    group(
        "map_1M",
        rounds * 3,
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
