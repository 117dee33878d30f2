//! 1M tasks with at most 10k pending, waiting for room: `Scope::reserve` against tokio
//! `JoinSet` + `Semaphore` (acquire_owned before spawn).

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_rayon::{Scope, ThreadPoolInner};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const N: usize = 1_000_000;
const BOUND: usize = 10_000;

fn bounded(c: &mut Criterion) {
    let mut g = c.benchmark_group("bounded_1M");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(N as u64));
    let rt = common::tokio_rt();
    g.bench_function("JoinSet+Semaphore", |b| {
        b.iter(|| {
            rt.block_on(async {
                let sem = Arc::new(tokio::sync::Semaphore::new(BOUND));
                let mut set = tokio::task::JoinSet::new();
                for i in 0..N {
                    let permit = sem.clone().acquire_owned().await.expect("open");
                    set.spawn(async move {
                        let _permit = permit;
                        std::hint::black_box(i)
                    });
                    while let Some(r) = set.try_join_next() {
                        std::hint::black_box(r.expect("task"));
                    }
                }
                while let Some(r) = set.join_next().await {
                    std::hint::black_box(r.expect("task"));
                }
            })
        })
    });
    let pool = ThreadPoolInner::new(2, Some(BOUND));
    let scope = Scope::new(pool.clone());
    g.bench_function("async_rayon reserve()", |b| {
        b.iter(|| {
            pool.block_on(async {
                for i in 0..N {
                    let permit = scope.reserve().await.expect("open");
                    // Detached: scope.wait() below collects them all.
                    drop(permit.spawn_with_handle(async move { std::hint::black_box(i) }));
                }
                scope.wait().await;
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bounded);
criterion_main!(benches);
