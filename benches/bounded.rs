//! 1M tasks with at most 10k pending, waiting for room: `Scope::reserve` against tokio
//! `JoinSet` + `Semaphore` (acquire_owned before spawn).

mod common;

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
        b.iter(|| common::joinset_semaphore(&rt, N, BOUND))
    });
    let pool = ThreadPoolInner::new(2, Some(BOUND));
    let scope = Scope::new(pool.clone());
    g.bench_function("async_rayon reserve()", |b| {
        b.iter(|| common::async_rayon_reserve(&pool, &scope, N))
    });
    g.finish();
}

criterion_group!(benches, bounded);
criterion_main!(benches);
