//! 1M trivial items, results in input order: `par_map_async` and `batch_process` against
//! rayon `par_iter` and futures `buffered(10_000)`. Also, for reference, rayon producing the
//! bulk calls' own output type (`Vec<Result<u64, TaskError>>`), and CPU-bound scaling, 1 vs
//! 2 threads.

mod common;

use std::time::Duration;

use async_rayon::{Scope, ThreadPoolInner};
use common::work;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;

const N: u64 = 1_000_000;

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
        b.iter(|| std::hint::black_box(common::rayon_map(&rp, &data)))
    });
    g.bench_function("rayon par_iter, Result output (reference)", |b| {
        b.iter(|| std::hint::black_box(common::rayon_map_results(&rp, &data)))
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
        b.iter(|| std::hint::black_box(common::par_map_async(&pool, &scope, &data)))
    });
    g.bench_function("async_rayon batch_process", |b| {
        b.iter(|| std::hint::black_box(common::batch_process(&pool, &scope, &data)))
    });
    g.finish();
}

/// CPU-bound items: throughput with 2 threads against 1.
fn scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_scaling");
    g.sample_size(10)
        .throughput(Throughput::Elements(common::SCALING_ITEMS));
    for threads in [1usize, 2] {
        let pool = ThreadPoolInner::new(threads, None);
        let scope = Scope::new(pool.clone());
        g.bench_with_input(
            BenchmarkId::new("batch_process", threads),
            &threads,
            |b, _| b.iter(|| std::hint::black_box(common::cpu_bound_batches(&pool, &scope))),
        );
    }
    g.finish();
}

criterion_group!(benches, map, scaling);
criterion_main!(benches);
