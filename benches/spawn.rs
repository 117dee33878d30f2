//! Spawn and await trivial tasks: async_rayon (bare, and with max_pending + task_timeout)
//! against tokio::spawn on a 2-worker runtime and async-executor on 2 threads. Also
//! spawn-many from inside a task, and a yield-heavy bench (tokio's rt_multi_threaded designs).

mod common;

use std::time::Duration;

use async_rayon::{Scope, ThreadPoolInner};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const COUNTS: [usize; 2] = [10_000, 1_000_000];

fn spawn_await(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn_await");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    let rt = common::tokio_rt();
    let smol = common::SmolPool::new(2);
    for n in COUNTS {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("tokio::spawn", n), &n, |b, &n| {
            b.iter(|| common::tokio_spawn_await(&rt, n))
        });
        g.bench_with_input(BenchmarkId::new("async-executor", n), &n, |b, &n| {
            b.iter(|| {
                futures::executor::block_on(async {
                    let hs: Vec<_> = (0..n).map(|i| smol.ex.spawn(async move { i })).collect();
                    for h in hs {
                        std::hint::black_box(h.await);
                    }
                })
            })
        });
        let pool = ThreadPoolInner::new(2, None);
        let scope = Scope::new(pool.clone());
        g.bench_with_input(BenchmarkId::new("async_rayon", n), &n, |b, &n| {
            b.iter(|| common::async_rayon_spawn_await(&pool, &scope, n))
        });
        let pool = common::controlled_pool(n);
        let scope = Scope::new(pool.clone());
        g.bench_with_input(BenchmarkId::new("async_rayon+controls", n), &n, |b, &n| {
            b.iter(|| common::async_rayon_spawn_await(&pool, &scope, n))
        });
    }
    g.finish();
}

fn spawn_many_from_task(c: &mut Criterion) {
    const N: usize = 100_000;
    let mut g = c.benchmark_group("spawn_many_from_task");
    g.sample_size(10).throughput(Throughput::Elements(N as u64));
    let rt = common::tokio_rt();
    g.bench_function("tokio::spawn", |b| {
        b.iter(|| {
            rt.block_on(async {
                tokio::spawn(async {
                    let hs: Vec<_> = (0..N).map(|i| tokio::spawn(async move { i })).collect();
                    for h in hs {
                        std::hint::black_box(h.await.expect("task"));
                    }
                })
                .await
                .expect("outer")
            })
        })
    });
    let pool = ThreadPoolInner::new(2, None);
    let scope = std::sync::Arc::new(Scope::new(pool.clone()));
    g.bench_function("async_rayon", |b| {
        b.iter(|| {
            let s = scope.clone();
            pool.block_on(scope.spawn_with_handle(async move {
                let hs: Vec<_> = (0..N)
                    .map(|i| s.spawn_with_handle(async move { i }))
                    .collect();
                for h in hs {
                    std::hint::black_box(h.await.expect("task"));
                }
            }))
            .expect("outer")
        })
    });
    g.finish();
}

fn yield_many(c: &mut Criterion) {
    const TASKS: usize = 200;
    const YIELDS: usize = 1_000;
    let mut g = c.benchmark_group("yield_many");
    g.sample_size(10)
        .throughput(Throughput::Elements((TASKS * YIELDS) as u64));
    let rt = common::tokio_rt();
    g.bench_function("tokio::spawn", |b| {
        b.iter(|| {
            rt.block_on(async {
                let hs: Vec<_> = (0..TASKS)
                    .map(|_| {
                        tokio::spawn(async {
                            for _ in 0..YIELDS {
                                tokio::task::yield_now().await;
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.await.expect("task");
                }
            })
        })
    });
    let pool = ThreadPoolInner::new(2, None);
    let scope = Scope::new(pool.clone());
    g.bench_function("async_rayon", |b| {
        b.iter(|| {
            pool.block_on(async {
                let hs: Vec<_> = (0..TASKS)
                    .map(|_| {
                        scope.spawn_with_handle(async {
                            for _ in 0..YIELDS {
                                tokio::task::yield_now().await;
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.await.expect("task");
                }
            })
        })
    });
    g.finish();
}

fn ping_pong(c: &mut Criterion) {
    const PAIRS: usize = 1_000;
    const ROUNDS: usize = 10;
    let mut g = c.benchmark_group("ping_pong");
    g.sample_size(10)
        .throughput(Throughput::Elements((PAIRS * ROUNDS) as u64));
    async fn pair_tokio() {
        let (tx1, mut rx1) = tokio::sync::mpsc::channel::<()>(1);
        let (tx2, mut rx2) = tokio::sync::mpsc::channel::<()>(1);
        let pong = tokio::spawn(async move {
            while rx1.recv().await.is_some() {
                if tx2.send(()).await.is_err() {
                    break;
                }
            }
        });
        for _ in 0..ROUNDS {
            tx1.send(()).await.expect("pong alive");
            rx2.recv().await.expect("pong answers");
        }
        drop(tx1);
        pong.await.expect("pong");
    }
    let rt = common::tokio_rt();
    g.bench_function("tokio::spawn", |b| {
        b.iter(|| {
            rt.block_on(async {
                let hs: Vec<_> = (0..PAIRS).map(|_| tokio::spawn(pair_tokio())).collect();
                for h in hs {
                    h.await.expect("pair");
                }
            })
        })
    });
    let pool = ThreadPoolInner::new(2, None);
    let scope = std::sync::Arc::new(Scope::new(pool.clone()));
    g.bench_function("async_rayon", |b| {
        b.iter(|| {
            pool.block_on(async {
                let hs: Vec<_> = (0..PAIRS)
                    .map(|_| {
                        let s = scope.clone();
                        scope.spawn_with_handle(async move {
                            let (tx1, mut rx1) = tokio::sync::mpsc::channel::<()>(1);
                            let (tx2, mut rx2) = tokio::sync::mpsc::channel::<()>(1);
                            let pong = s.spawn_with_handle(async move {
                                while rx1.recv().await.is_some() {
                                    if tx2.send(()).await.is_err() {
                                        break;
                                    }
                                }
                            });
                            for _ in 0..ROUNDS {
                                tx1.send(()).await.expect("pong alive");
                                rx2.recv().await.expect("pong answers");
                            }
                            drop(tx1);
                            pong.await.expect("pong");
                        })
                    })
                    .collect();
                for h in hs {
                    h.await.expect("pair");
                }
            })
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    spawn_await,
    spawn_many_from_task,
    yield_many,
    ping_pong
);
criterion_main!(benches);
