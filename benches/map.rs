//! 1M trivial items, results in input order: `par_map_async` and `batch_process` against
//! rayon `par_iter` and futures `buffered(10_000)`. Also CPU-bound scaling, 1 vs 2 threads.

use std::time::Duration;

use async_rayon::{BatchOptions, Scope, ThreadPoolInner};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use rayon::prelude::*;

const N: u64 = 1_000_000;

#[inline]
fn work(x: u64) -> u64 {
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

fn map(c: &mut Criterion) {
    let mut g = c.benchmark_group("map_1M");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(N));
    let data: Vec<u64> = (0..N).collect();
    let rp = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("rayon pool");
    g.bench_function("rayon par_iter", |b| {
        b.iter(|| {
            let out: Vec<u64> = rp.install(|| data.par_iter().map(|&x| work(x)).collect());
            std::hint::black_box(out)
        })
    });
    g.bench_function("futures buffered(10_000)", |b| {
        b.iter(|| {
            let out: Vec<u64> = futures::executor::block_on(
                futures::stream::iter(data.iter().copied())
                    .map(|x| async move { work(x) })
                    .buffered(10_000)
                    .collect(),
            );
            std::hint::black_box(out)
        })
    });
    let pool = ThreadPoolInner::new(2, Some(10_000));
    let scope = Scope::new(pool.clone());
    g.bench_function("async_rayon par_map_async", |b| {
        b.iter(|| {
            let out = pool.block_on(scope.par_map_async(&data, |&x| async move { work(x) }));
            std::hint::black_box(out)
        })
    });
    g.bench_function("async_rayon batch_process", |b| {
        b.iter(|| {
            let out =
                pool.block_on(scope.batch_process(data.clone(), 4, |x| async move { work(x) }));
            std::hint::black_box(out)
        })
    });
    g.finish();
}

/// CPU-bound items: throughput with 2 threads against 1.
fn scaling(c: &mut Criterion) {
    const ITEMS: u64 = 2_000;
    fn spin(x: u64) -> u64 {
        (0..20_000u64).fold(x, |a, k| work(a ^ k))
    }
    let mut g = c.benchmark_group("cpu_scaling");
    g.sample_size(10).throughput(Throughput::Elements(ITEMS));
    for threads in [1usize, 2] {
        let pool = ThreadPoolInner::new(threads, None);
        let scope = Scope::new(pool.clone());
        g.bench_with_input(
            BenchmarkId::new("batch_process", threads),
            &threads,
            |b, _| {
                b.iter(|| {
                    let out = pool.block_on(scope.batch_process_with(
                        0..ITEMS,
                        BatchOptions::new(8).batch_size(50),
                        |x| async move { spin(x) },
                    ));
                    std::hint::black_box(out)
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, map, scaling);
criterion_main!(benches);
