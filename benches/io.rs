//! 10k items each sleeping 10 ms, 1000 at a time: `stream_process` against tokio
//! `JoinSet` + `Semaphore`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_rayon::{Scope, ThreadPoolInner};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const N: usize = 10_000;
const AT_ONCE: usize = 1_000;

fn io(c: &mut Criterion) {
    let mut g = c.benchmark_group("io_10k_x_10ms");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(N as u64));
    let rt = common::tokio_rt();
    g.bench_function("JoinSet+Semaphore", |b| {
        b.iter(|| {
            rt.block_on(async {
                let sem = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
                let mut set = tokio::task::JoinSet::new();
                for i in 0..N {
                    let permit = sem.clone().acquire_owned().await.expect("open");
                    set.spawn(async move {
                        let _permit = permit;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        i
                    });
                }
                let mut n = 0;
                while let Some(r) = set.join_next().await {
                    r.expect("task");
                    n += 1;
                }
                assert_eq!(n, N);
            })
        })
    });
    // Built inside the tokio runtime's context, as a service would: same timer driver.
    let pool = {
        let _enter = rt.enter();
        ThreadPoolInner::new(2, Some(10_000))
    };
    let scope = Scope::new(pool.clone());
    g.bench_function("async_rayon stream_process", |b| {
        b.iter(|| {
            rt.block_on(async {
                let out = scope
                    .stream_process(0..N, AT_ONCE, |i| async move {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        i
                    })
                    .await;
                assert_eq!(out.len(), N);
            })
        })
    });
    g.finish();
}

criterion_group!(benches, io);
criterion_main!(benches);
