//! Bulk work on a Scope: batch_process, stream_process (+ ordered, + stream source),
//! par_map_async and with_retry, as a user calls them.

mod common;

use common::eventually;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use async_rayon::{
    BatchOptions, Config, RetryPolicy, Scope, TaskError, ThreadPoolInner, with_retry,
};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pool(threads: usize, max_pending: Option<usize>) -> Arc<ThreadPoolInner> {
    ThreadPoolInner::new(threads, max_pending)
}

/// An input iterator that counts how many items were pulled from it.
fn counted(n: u64, pulled: Arc<AtomicUsize>) -> impl Iterator<Item = u64> + Send + 'static {
    (0..n).inspect(move |_| {
        pulled.fetch_add(1, SeqCst);
    })
}

/// batch_process returns every result in input order, including for `Box::pin`ned futures.
#[test]
fn batch_process_keeps_input_order() {
    let pool = pool(2, Some(10_000));
    let scope = Scope::new(pool.clone());
    let data: Vec<u64> = (0..100_000).collect();
    let results = pool.block_on(scope.batch_process(data, 50, |item| {
        Box::pin(async move {
            if item % 1000 == 0 {
                tokio::task::yield_now().await;
            }
            item * 2
        })
    }));
    assert_eq!(results.len(), 100_000);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r, &Ok(i as u64 * 2));
    }
}

/// An empty input yields an empty result at once, for every bulk call.
#[test]
fn empty_inputs_yield_empty_results() {
    let pool = pool(1, None);
    let scope = Scope::new(pool.clone());
    let none: Vec<u32> = Vec::new();
    assert!(
        pool.block_on(scope.batch_process(none.clone(), 4, |x| async move { x }))
            .is_empty()
    );
    assert!(
        pool.block_on(scope.stream_process(none.clone(), 4, |x| async move { x }))
            .is_empty()
    );
    assert!(
        pool.block_on(scope.par_map_async(&none, |&x| async move { x }))
            .is_empty()
    );
}

/// Zero concurrency is a bug in the caller: a panic that names the argument.
#[test]
#[should_panic(expected = "concurrency must be at least 1")]
fn stream_process_rejects_zero_concurrency() {
    let pool = pool(1, None);
    let scope = Scope::new(pool);
    let _ = scope.stream_process(0..3u8, 0, |x| async move { x });
}

/// Zero batches in flight is a bug in the caller: a panic that names the argument.
#[test]
#[should_panic(expected = "max_concurrent_batches must be at least 1")]
fn batch_process_rejects_zero_batches() {
    let pool = pool(1, None);
    let scope = Scope::new(pool.clone());
    let _ = pool.block_on(scope.batch_process(0..3u8, 0, |x| async move { x }));
}

/// A panic or a timeout in one item is that item's error; the others complete.
#[test]
fn item_failures_stay_with_their_item() {
    let pool = ThreadPoolInner::with_config(Config {
        num_threads: 2,
        max_pending: Some(1_000),
        enable_work_stealing: true,
        task_timeout: Some(Duration::from_millis(50)),
    });
    let scope = Scope::new(pool.clone());
    let work = |i: u32| async move {
        match i {
            3 => panic!("item three"),
            5 => {
                tokio::time::sleep(Duration::from_secs(10)).await;
                i
            }
            _ => i,
        }
    };
    let check = |results: Vec<Result<u32, TaskError>>| {
        assert_eq!(results.len(), 8);
        assert_eq!(results[3], Err(TaskError::Panicked("item three".into())));
        assert_eq!(results[5], Err(TaskError::TimedOut));
        for i in [0, 1, 2, 4, 6, 7] {
            assert_eq!(results[i], Ok(i as u32));
        }
    };
    check(pool.block_on(scope.batch_process(0..8u32, 2, work)));
    check(pool.block_on(scope.stream_process(0..8u32, 4, work)));
    check(pool.block_on(scope.par_map_async(&(0..8u32).collect::<Vec<_>>(), |&i| work(i))));
}

/// Within one batch, items done in their first poll, items that suspend (each keeping its
/// own future alive) and items that panic, in any mix, each end in their own slot.
#[test]
fn mixed_items_in_one_batch_keep_their_slots() {
    let pool = pool(2, None);
    let scope = Scope::new(pool.clone());
    let work = |i: u32| async move {
        match i % 4 {
            1 | 2 => {
                tokio::task::yield_now().await;
                i * 10
            }
            3 if i % 8 == 3 => panic!("item {i}"),
            _ => i * 10,
        }
    };
    let options = BatchOptions::new(2).batch_size(64);
    let results = pool.block_on(scope.batch_process_with(0..256u32, options, work));
    assert_eq!(results.len(), 256);
    for (i, r) in results.iter().enumerate() {
        if i % 8 == 3 {
            assert_eq!(
                r,
                &Err(TaskError::Panicked(format!("item {i}").into())),
                "item {i}"
            );
        } else {
            assert_eq!(r, &Ok(i as u32 * 10), "item {i}");
        }
    }
}

/// A panic in the user's function itself (before any future exists) is that item's error.
#[test]
fn panic_building_the_future_is_an_item_error() {
    let pool = pool(2, None);
    let scope = Scope::new(pool.clone());
    let f = |i: u32| {
        assert!(i != 2, "cannot build item 2");
        async move { i }
    };
    let batch = pool.block_on(scope.batch_process(0..4u32, 2, f));
    assert_eq!(
        batch[2],
        Err(TaskError::Panicked("cannot build item 2".into()))
    );
    assert_eq!(batch[3], Ok(3));
    let stream = pool.block_on(scope.stream_process(0..4u32, 2, f));
    assert_eq!(
        stream[2],
        Err(TaskError::Panicked("cannot build item 2".into()))
    );
    assert_eq!(stream[3], Ok(3));
}

/// stream_process pulls lazily: never more than `concurrency` items ahead of the consumer.
#[test]
fn stream_process_pulls_lazily() {
    let pool = pool(2, None);
    let scope = Scope::new(pool.clone());
    let pulled = Arc::new(AtomicUsize::new(0));
    let concurrency = 8;
    let mut stream = scope.stream_process(
        counted(1_000, pulled.clone()),
        concurrency,
        |i| async move {
            tokio::time::sleep(Duration::from_micros(200)).await;
            i
        },
    );
    pool.block_on(async {
        let mut yielded = 0;
        while let Some(r) = stream.next().await {
            r.expect("item ran");
            yielded += 1;
            let p = pulled.load(SeqCst);
            assert!(
                p <= yielded + concurrency,
                "pulled {p} with {yielded} yielded"
            );
            if yielded == 100 {
                break;
            }
        }
    });
    let p = pulled.load(SeqCst);
    assert!(p <= 100 + concurrency, "pulled {p} after 100 yielded");
}

/// .ordered() yields input order and bounds the reorder window: a slow head item stops pulls.
#[test]
fn ordered_stream_keeps_order_with_a_bounded_window() {
    let pool = pool(2, None);
    let scope = Scope::new(pool.clone());
    let pulled = Arc::new(AtomicUsize::new(0));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let concurrency = 4;
    let mut ordered = scope
        .stream_process(counted(200, pulled.clone()), concurrency, move |i| {
            let mut rx = release_rx.clone();
            async move {
                if i == 0 {
                    // The head item waits until released.
                    let _ = rx.wait_for(|go| *go).await;
                }
                i
            }
        })
        .ordered();
    pool.block_on(async {
        // Let the others finish while item 0 is stuck: pulls must stop at the window.
        let first = tokio::time::timeout(Duration::from_millis(200), ordered.next()).await;
        assert!(
            first.is_err(),
            "item 0 cannot be yielded before it is released"
        );
        let p = pulled.load(SeqCst);
        assert!(p <= concurrency, "pulled {p} while the head was stuck");
        release_tx.send(true).expect("receivers alive");
        let mut expect = 0u64;
        while let Some(r) = ordered.next().await {
            assert_eq!(r, Ok(expect));
            expect += 1;
        }
        assert_eq!(expect, 200);
    });
}

/// Dropping a stream cancels its items in flight and pulls no more input.
#[test]
fn dropping_a_stream_cancels_in_flight_items() {
    let pool = pool(2, None);
    let scope = Scope::new(pool.clone());
    let pulled = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }
    let d = dropped.clone();
    let mut stream = scope.stream_process(counted(1_000, pulled.clone()), 5, move |_| {
        let guard = Guard(d.clone());
        async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
    pool.block_on(async {
        let r = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
        assert!(r.is_err(), "nothing finishes within 50 ms");
    });
    let pulled_before = pulled.load(SeqCst);
    assert_eq!(pulled_before, 5);
    drop(stream);
    assert!(
        eventually(Duration::from_secs(5), || dropped.load(SeqCst) == 5),
        "in-flight futures dropped: {}",
        dropped.load(SeqCst)
    );
    assert!(eventually(Duration::from_secs(5), || scope.live_tasks() == 0));
    assert_eq!(pulled.load(SeqCst), pulled_before, "no more input pulled");
}

/// Bulk calls wait for max_pending slots instead of rejecting, and never run more than
/// `max_pending` items at once (counted by the items themselves).
#[test]
fn bulk_calls_respect_max_pending_without_rejecting() {
    let max = 16;
    let pool = pool(2, Some(max));
    let scope = Scope::new(pool.clone());
    let census = common::Census::default();
    let c = census.clone();
    let work = move |i: u32| {
        let c = c.clone();
        async move {
            let _alive = c.enter();
            tokio::time::sleep(Duration::from_micros(100)).await;
            i
        }
    };
    let r1 = pool.block_on(scope.stream_process(0..500u32, 64, work.clone()));
    assert!(r1.iter().all(Result::is_ok), "stream: none rejected");
    let r2 = pool.block_on(scope.batch_process_with(
        0..500u32,
        BatchOptions::new(8).batch_size(64),
        work,
    ));
    assert!(r2.iter().all(Result::is_ok), "batch: none rejected");
    let peak = census.peak();
    assert!(
        peak <= max,
        "{peak} items alive at once, max_pending is {max}"
    );
    assert!(peak > 1, "items ran concurrently (peak {peak})");
    assert_eq!(pool.pending_tasks(), 0);
}

/// A stream source (a bounded channel) gets backpressure: the sender blocks while the pool
/// is busy, and every item is processed.
#[test]
fn channel_source_gets_backpressure() {
    let pool = pool(2, Some(100));
    let scope = Scope::new(pool.clone());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(4);
    let sent = Arc::new(AtomicUsize::new(0));
    let s = sent.clone();
    let producer = std::thread::spawn(move || {
        for i in 0..200 {
            tx.blocking_send(i).expect("receiver alive");
            s.fetch_add(1, SeqCst);
        }
    });
    let source = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut stream = scope.stream_process_stream(source, 4, |i| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        i
    });
    pool.block_on(async {
        let first = stream.next().await;
        assert!(first.is_some());
        tokio::time::sleep(Duration::from_millis(100)).await;
        // 1 yielded + 4 in flight + 4 in the channel + 1 blocked in send.
        assert!(
            sent.load(SeqCst) <= 10,
            "sender ran ahead: {}",
            sent.load(SeqCst)
        );
        let mut n = 1;
        while let Some(r) = stream.next().await {
            r.expect("item ran");
            n += 1;
        }
        assert_eq!(n, 200);
    });
    producer.join().expect("producer finished");
}

/// with_retry retries failures with backoff and gives up after max_retries.
#[test]
fn retries_until_success_or_exhaustion() {
    let pool = pool(2, None);
    let scope = Scope::new(pool.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    // Even items fail twice then succeed; item 1 always fails.
    let attempts = Arc::new(parking_lot::Mutex::new(
        std::collections::HashMap::<u32, u32>::new(),
    ));
    let flaky = move |i: u32| {
        let (c, attempts) = (c.clone(), attempts.clone());
        async move {
            c.fetch_add(1, SeqCst);
            let n = {
                let mut a = attempts.lock();
                let e = a.entry(i).or_insert(0);
                *e += 1;
                *e
            };
            if i == 1 || n <= 2 {
                Err(format!("item {i} attempt {n}"))
            } else {
                Ok(i)
            }
        }
    };
    let policy = RetryPolicy::new(3).initial_backoff(Duration::from_millis(1));
    let results =
        pool.block_on(scope.batch_process(vec![0u32, 1, 2], 3, with_retry(policy, flaky)));
    assert_eq!(results[0], Ok(Ok(0)));
    assert_eq!(results[1], Ok(Err("item 1 attempt 4".to_string())));
    assert_eq!(results[2], Ok(Ok(2)));
    assert_eq!(calls.load(SeqCst), 3 + 4 + 3);
}

/// Cancelling the scope cancels bulk items, suspended ones included, as Err(Cancelled).
#[test]
fn scope_cancel_reaches_bulk_items() {
    let pool = pool(2, None);
    let scope = Arc::new(Scope::new(pool.clone()));
    let s = scope.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        s.cancel();
    });
    let start = Instant::now();
    // Every batch starts before the cancel (batches not started yet would be cancelled too).
    let options = BatchOptions::new(10).batch_size(2);
    let results = pool.block_on(scope.batch_process_with(0..20u32, options, |i| async move {
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        i
    }));
    canceller.join().expect("canceller finished");
    assert!(start.elapsed() < Duration::from_secs(10));
    for (i, r) in results.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(r, &Err(TaskError::Cancelled), "item {i}");
        } else {
            assert_eq!(r, &Ok(i as u32), "item {i}");
        }
    }
    assert_eq!(pool.pending_tasks(), 0);
}

/// After shutdown begins, bulk items are refused with Shutdown rather than lost.
#[test]
fn bulk_after_shutdown_is_refused() {
    let pool = pool(1, None);
    let scope = Scope::new(pool.clone());
    pool.block_on(pool.shutdown());
    let results = pool.block_on(scope.stream_process(0..3u8, 2, |x| async move { x }));
    assert_eq!(results, vec![Err(TaskError::Shutdown); 3]);
    let results = pool.block_on(scope.batch_process(0..3u8, 2, |x| async move { x }));
    assert_eq!(results, vec![Err(TaskError::Shutdown); 3]);
}

/// Items do real loopback TCP I/O: 500 requests through stream_process, 50 at a time.
#[test]
fn items_do_real_tcp_io() {
    let pool = ThreadPoolInner::with_config(Config::io_bound());
    let scope = Scope::new(pool.clone());
    let results = pool.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4];
                    if sock.read_exact(&mut buf).await.is_ok() {
                        let n = u32::from_le_bytes(buf);
                        let _ = sock.write_all(&(n + 1).to_le_bytes()).await;
                    }
                });
            }
        });
        scope
            .stream_process(0..500u32, 50, move |n| async move {
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                s.write_all(&n.to_le_bytes()).await?;
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).await?;
                Ok::<u32, std::io::Error>(u32::from_le_bytes(buf))
            })
            .await
    });
    for (n, r) in results.into_iter().enumerate() {
        assert_eq!(
            r.expect("task ran").expect("request succeeded"),
            n as u32 + 1
        );
    }
}

/// Pipelines: the output stream of one stage feeds the next, on another pool.
#[test]
fn stages_chain_across_pools() {
    let io = ThreadPoolInner::new(2, Some(100));
    let cpu = ThreadPoolInner::new(2, Some(100));
    let io_scope = Scope::new(io.clone());
    let cpu_scope = Scope::new(cpu.clone());
    let fetched = io_scope.stream_process(0..1_000u64, 32, |i| async move {
        tokio::time::sleep(Duration::from_micros(50)).await;
        i
    });
    let parsed = cpu_scope.stream_process_stream(fetched, 8, |r| async move { r.map(|i| i * i) });
    let stored = io_scope
        .stream_process_stream(parsed, 32, |r| async move { r.map(|r| r.map(|sq| sq + 1)) });
    let out = io.block_on(stored.ordered().collect::<Vec<_>>());
    assert_eq!(out.len(), 1_000);
    let mut got: Vec<u64> = out
        .into_iter()
        .map(|r| r.expect("store").expect("parse").expect("fetch"))
        .collect();
    got.sort_unstable();
    let want: Vec<u64> = (0..1_000u64).map(|i| i * i + 1).collect();
    assert_eq!(got, want);
}

/// Streams are Send + Unpin, so they can be moved into tasks and polled anywhere.
#[test]
fn process_stream_is_send_and_unpin() {
    fn assert_send_unpin<S: Send + Unpin>(_: &S) {}
    let pool = pool(1, None);
    let scope = Scope::new(pool);
    let s = scope.stream_process(0..3u8, 1, |x| async move { x });
    assert_send_unpin(&s);
    assert_send_unpin(&s.ordered());
}

/// Concurrent bulk calls on one scope, whose batches together want more slots than
/// `max_pending`: every call finishes (no call holds slots while it waits for more), every
/// item has its outcome, and no more than `max_pending` user futures are ever alive.
#[test]
fn concurrent_bulk_calls_share_a_small_pool_without_deadlock() {
    const MAX: usize = 16;
    const CALLS: usize = 12;
    const N: u64 = 400;
    let pool = pool(2, Some(MAX));
    let scope = Arc::new(Scope::new(pool.clone()));
    let census = common::Census::default();
    let items: Arc<Vec<u64>> = Arc::new((0..N).collect());
    let finished = pool.block_on(async {
        let mut calls = Vec::new();
        for call in 0..CALLS {
            let (scope, census, items) = (scope.clone(), census.clone(), items.clone());
            calls.push(tokio::spawn(async move {
                let work = move |x: u64| {
                    let alive = census.enter();
                    async move {
                        let _alive = alive;
                        tokio::task::yield_now().await;
                        x * 2
                    }
                };
                let w = work.clone();
                let mapped = scope.par_map_async(&items, move |&x| w(x)).await;
                let w = work.clone();
                let batched = scope.batch_process(0..N, 4, w).await;
                let streamed = if call % 2 == 0 {
                    scope.stream_process(0..N, 8, work).await
                } else {
                    scope
                        .stream_process(0..N, 8, work)
                        .ordered()
                        .collect::<Vec<_>>()
                        .await
                };
                for results in [mapped, batched, streamed] {
                    assert_eq!(results.len(), N as usize);
                    for (i, r) in results.iter().enumerate() {
                        assert_eq!(r, &Ok(i as u64 * 2), "call {call}, item {i}");
                    }
                }
            }));
        }
        common::within(60, "12 concurrent bulk calls on max_pending 16", async {
            let mut done = 0;
            for c in calls {
                c.await.expect("bulk call task");
                done += 1;
            }
            done
        })
        .await
    });
    assert_eq!(finished, CALLS);
    assert_eq!(census.live(), 0, "every user future was dropped");
    let peak = census.peak();
    assert!(
        peak <= MAX,
        "{peak} user futures alive at once, max_pending is {MAX}"
    );
    assert!(peak > 1, "the calls ran concurrently (peak {peak})");
}

/// par_map_async builds futures only for admitted items: with `max_pending` 16 and 2 000
/// items that suspend, at most 16 user futures exist at once (built and waiting ones
/// included), every result is in input order, and every slot is given back.
#[test]
fn par_map_async_builds_only_what_max_pending_admits() {
    const MAX: usize = 16;
    let pool = pool(2, Some(MAX));
    let scope = Scope::new(pool.clone());
    let census = common::Census::default();
    let items: Vec<u64> = (0..2_000).collect();
    let c = census.clone();
    let results = pool.block_on(scope.par_map_async(&items, move |&x| {
        let alive = c.enter();
        async move {
            let _alive = alive;
            tokio::task::yield_now().await;
            x + 1
        }
    }));
    assert_eq!(results.len(), items.len());
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r, &Ok(i as u64 + 1), "item {i}");
    }
    let peak = census.peak();
    assert!(
        peak <= MAX,
        "{peak} futures alive at once, max_pending is {MAX}"
    );
    assert!(peak > 1, "items ran concurrently (peak {peak})");
    assert_eq!(census.live(), 0);
    assert_eq!(pool.pending_tasks(), 0);
    let m = pool.metrics_fast();
    assert_eq!(m.submitted, 2_000);
    assert_eq!(m.completed, 2_000);
}

/// A panic in par_map_async's `f` reaches the caller and gives back every slot the call
/// held: those of the futures built and waiting, and those admitted but not built yet. The
/// pool then runs a full call under the same `max_pending`.
#[test]
fn a_panic_in_par_map_async_f_gives_every_slot_back() {
    let pool = pool(2, Some(8));
    let scope = Scope::new(pool.clone());
    let items: Vec<u64> = (0..500).collect();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.block_on(scope.par_map_async(&items, |&x| {
            assert!(x != 100, "cannot build item 100");
            async move {
                tokio::task::yield_now().await;
                x
            }
        }))
    }));
    assert!(caught.is_err(), "the panic in f reached the caller");
    assert!(
        eventually(Duration::from_secs(10), || pool.pending_tasks() == 0),
        "{} slots still held after the call panicked",
        pool.pending_tasks()
    );
    let again = pool.block_on(scope.par_map_async(&items, |&x| async move { x * 3 }));
    assert!(
        again
            .iter()
            .enumerate()
            .all(|(i, r)| r == &Ok(i as u64 * 3))
    );
    let m = pool.metrics_fast();
    assert_eq!(
        m.submitted,
        m.completed + m.cancelled,
        "every item counted as submitted has one outcome: {m:?}"
    );
}

/// Dropping par_map_async's future cancels what it started: the futures running and
/// those built and waiting are dropped, their slots are given back, and each is counted
/// once as cancelled.
#[test]
fn dropping_par_map_async_gives_every_slot_back() {
    let pool = pool(2, Some(32));
    let scope = Scope::new(pool.clone());
    let census = common::Census::default();
    let items: Vec<u64> = (0..10_000).collect();
    let c = census.clone();
    let started = pool.block_on(async {
        let call = scope.par_map_async(&items, move |&x| {
            let alive = c.enter();
            async move {
                let _alive = alive;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                x
            }
        });
        tokio::time::timeout(Duration::from_millis(100), call).await
    });
    assert!(started.is_err(), "the call was still running when dropped");
    assert!(
        eventually(Duration::from_secs(10), || pool.pending_tasks() == 0
            && census.live() == 0),
        "{} slots held, {} futures alive after the call was dropped",
        pool.pending_tasks(),
        census.live()
    );
    let m = pool.metrics_fast();
    assert!(m.submitted > 0);
    assert_eq!(m.submitted, m.cancelled, "{m:?}");
}

/// par_map_async on a pool that is shutting down refuses every item with `Shutdown`.
#[test]
fn par_map_async_after_shutdown_is_refused() {
    let pool = pool(1, Some(4));
    let scope = Scope::new(pool.clone());
    pool.block_on(pool.shutdown());
    let items = [1u8, 2, 3];
    let results = pool.block_on(scope.par_map_async(&items, |&x| async move { x }));
    assert_eq!(results, vec![Err(TaskError::Shutdown); 3]);
}

/// Once its scope is cancelled, par_map_async stops calling `f`: the items not built yet
/// are `Err(Cancelled)` without their futures being made, and each item is counted once.
#[test]
fn par_map_async_builds_no_futures_after_its_scope_is_cancelled() {
    let pool = pool(2, Some(64));
    let scope = Scope::new(pool.clone());
    let items: Vec<u64> = (0..100_000).collect();
    let built = AtomicUsize::new(0);
    let results = pool.block_on(scope.par_map_async(&items, |&x| {
        if built.fetch_add(1, SeqCst) == 1_000 {
            scope.cancel();
        }
        async move { x }
    }));
    // `f` may finish the admitted run it was building when the cancel came (at most
    // `max_pending` futures), never more.
    let built = built.load(SeqCst);
    assert!(
        built <= 1_001 + 64,
        "f was called {built} times after the cancel"
    );
    assert!(
        results[..1_000]
            .iter()
            .all(|r| r.is_ok() || r == &Err(TaskError::Cancelled))
    );
    assert!(
        results[2_000..]
            .iter()
            .all(|r| r == &Err(TaskError::Cancelled))
    );
    assert!(
        eventually(Duration::from_secs(10), || pool.pending_tasks() == 0),
        "{} slots still held",
        pool.pending_tasks()
    );
    let m = pool.metrics_fast();
    assert_eq!(m.submitted, 100_000, "{m:?}");
    assert_eq!(m.submitted, m.completed + m.cancelled, "{m:?}");
}
