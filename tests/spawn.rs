//! Spawning and joining tasks: values, ordering, ids, static guarantees, volume, and tokio
//! (timers, sync, `tokio::spawn`, real loopback TCP) used from inside tasks.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_rayon::{Scope, TaskError, TaskHandle, ThreadPoolInner};
use common::{eventually_async, pool, start_echo_server, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A spawned future's output comes back through its handle (sync test driving the pool's block_on).
#[test]
fn spawned_value_is_returned_through_handle() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let h = scope.spawn_with_handle(async { 40 + 2 });
    assert_eq!(pool.block_on(h), Ok(42));
    let s = scope.spawn_with_handle(async { String::from("hello") });
    assert_eq!(pool.block_on(s), Ok("hello".to_string()));
}

/// A handle can be awaited from a tokio task (it is Send) and yields the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_awaited_from_tokio_task() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let h = scope.spawn_with_handle(async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        vec![1u8, 2, 3]
    });
    let joined = tokio::spawn(h).await.expect("tokio task joined");
    assert_eq!(joined, Ok(vec![1u8, 2, 3]));
}

/// join_handles returns results in the order the handles were given, not completion order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_handles_keeps_given_order() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let n = 40u64;
    // Later tasks sleep less, so they finish first.
    let handles: Vec<_> = (0..n)
        .map(|i| {
            scope.spawn_with_handle(async move {
                tokio::time::sleep(Duration::from_millis(2 * (n - i))).await;
                i
            })
        })
        .collect();
    let results = scope.join_handles(handles).await;
    let expected: Vec<Result<u64, TaskError>> = (0..n).map(Ok).collect();
    assert_eq!(results, expected);
}

/// join_handles keeps errors in place beside values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_handles_mixes_values_and_errors_in_order() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let handles: Vec<TaskHandle<u32>> = vec![
        scope.spawn_with_handle(async { 1 }),
        scope.spawn_with_handle(async { panic!("second fails") }),
        scope.spawn_with_handle(async { 3 }),
    ];
    let results = scope.join_handles(handles).await;
    assert_eq!(results.len(), 3);
    assert_eq!(results[0], Ok(1));
    assert!(
        matches!(&results[1], Err(TaskError::Panicked(m)) if m.contains("second fails")),
        "{results:?}"
    );
    assert_eq!(results[2], Ok(3));
}

/// Every handle gets a distinct id, also across scopes and pools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_ids_are_unique() {
    let pool_a = pool(2);
    let pool_b = pool(1);
    let scope_a = Scope::new(pool_a.clone());
    let scope_a2 = Scope::new(pool_a.clone());
    let scope_b = Scope::new(pool_b.clone());
    let mut handles = Vec::new();
    for i in 0..500u32 {
        handles.push(scope_a.spawn_with_handle(async move { i }));
        handles.push(scope_a2.spawn_with_handle(async move { i }));
        handles.push(scope_b.spawn_with_handle(async move { i }));
    }
    let ids: HashSet<_> = handles.iter().map(|h| h.id()).collect();
    assert_eq!(ids.len(), handles.len(), "duplicate task ids");
    // The id is stable for the handle's lifetime.
    let first = handles[0].id();
    assert_eq!(handles[0].id(), first);
    for r in futures::future::join_all(handles).await {
        assert!(r.is_ok(), "{r:?}");
    }
}

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}
fn assert_unpin<T: Unpin>() {}
fn assert_handle_future<T, H: Future<Output = Result<T, TaskError>> + Send + Unpin>() {}

/// TaskHandle is a Send + Unpin future of Result<T, TaskError>; Scope is Send + Sync.
#[test]
fn static_guarantees() {
    assert_send::<TaskHandle<u32>>();
    assert_unpin::<TaskHandle<u32>>();
    assert_handle_future::<u32, TaskHandle<u32>>();
    assert_handle_future::<String, TaskHandle<String>>();
    assert_handle_future::<(), TaskHandle<()>>();
    // Unpin even when the value is not Unpin.
    assert_unpin::<TaskHandle<std::marker::PhantomPinned>>();
    assert_send::<Scope>();
    assert_sync::<Scope>();
    assert_send::<Arc<Scope>>();
    assert_send::<Arc<ThreadPoolInner>>();
    assert_sync::<Arc<ThreadPoolInner>>();
    assert_send::<TaskError>();
    assert_sync::<TaskError>();
}

/// is_finished turns true once the task is done, before the handle is awaited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_finished_reports_completion() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let gate = tokio_util::sync::CancellationToken::new();
    let g = gate.clone();
    let h = scope.spawn_with_handle(async move {
        g.cancelled().await;
        9
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!h.is_finished(), "task waiting on a gate reported finished");
    gate.cancel();
    assert!(
        eventually_async(Duration::from_secs(2), || h.is_finished()).await,
        "task never reported finished"
    );
    assert_eq!(h.await, Ok(9));
}

/// Ten thousand small tasks all run and return their values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_all_complete() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let ran = Arc::new(AtomicUsize::new(0));
    let n = 10_000u64;
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let ran = ran.clone();
            scope.spawn_with_handle(async move {
                if i.is_multiple_of(7) {
                    tokio::task::yield_now().await;
                }
                ran.fetch_add(1, Ordering::SeqCst);
                i
            })
        })
        .collect();
    let results = within(
        10,
        "10k tasks finished in time",
        scope.join_handles(handles),
    )
    .await;
    let mut sum = 0;
    for r in results {
        sum += r.expect("small task succeeds");
    }
    assert_eq!(sum, n * (n - 1) / 2);
    assert_eq!(ran.load(Ordering::SeqCst), n as usize);
}

/// Tasks may use tokio timers, sync primitives and tokio::spawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_timers_sync_and_spawn_work_inside_tasks() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());

    // Timer: sleep actually waits.
    let slept = scope.spawn_with_handle(async {
        let t = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(30)).await;
        t.elapsed()
    });
    // tokio::time::timeout fires inside a task.
    let timed = scope.spawn_with_handle(async {
        tokio::time::timeout(Duration::from_millis(10), std::future::pending::<()>())
            .await
            .is_err()
    });
    // Channels between two tasks of the pool.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(4);
    let producer = scope.spawn_with_handle(async move {
        for i in 0..100 {
            tx.send(i).await.expect("consumer alive");
        }
    });
    let consumer = scope.spawn_with_handle(async move {
        let mut sum = 0;
        while let Some(v) = rx.recv().await {
            sum += v;
        }
        sum
    });
    // Mutex and oneshot.
    let lock = Arc::new(tokio::sync::Mutex::new(0u32));
    let (otx, orx) = tokio::sync::oneshot::channel::<&'static str>();
    let l2 = lock.clone();
    let waiter = scope.spawn_with_handle(async move {
        let msg = orx.await.expect("sender alive");
        *l2.lock().await += 1;
        msg
    });
    let sender = scope.spawn_with_handle(async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        otx.send("ping").expect("receiver alive");
    });
    // tokio::spawn from a task goes to a tokio runtime and can be joined.
    let spawner = scope.spawn_with_handle(async {
        let jh = tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            7u32
        });
        jh.await.expect("tokio task joined") * 6
    });

    let slept = slept.await.expect("sleep task");
    assert!(slept >= Duration::from_millis(25), "slept only {slept:?}");
    assert_eq!(timed.await, Ok(true));
    assert_eq!(producer.await, Ok(()));
    assert_eq!(consumer.await, Ok((0..100).sum::<u32>()));
    assert_eq!(sender.await, Ok(()));
    assert_eq!(waiter.await, Ok("ping"));
    assert_eq!(*lock.lock().await, 1);
    assert_eq!(spawner.await, Ok(42));
}

/// A pool built outside any runtime still gives its tasks tokio timers and tokio::spawn.
#[test]
fn pool_without_ambient_runtime_supports_tokio() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let h = scope.spawn_with_handle(async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let jh = tokio::spawn(async { 5u8 });
        jh.await.expect("tokio task joined")
    });
    assert_eq!(pool.block_on(h), Ok(5));
}

/// Tasks talk to a real loopback TCP echo server (pool built inside a tokio runtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_echo_from_tasks() {
    let addr = start_echo_server().await;
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let handles: Vec<_> = (0..20u32)
        .map(|i| {
            scope.spawn_with_handle(async move {
                let mut conn = tokio::net::TcpStream::connect(addr)
                    .await
                    .expect("connect to echo server");
                let msg = format!("hello from task {i}\n");
                conn.write_all(msg.as_bytes()).await.expect("write");
                let mut buf = vec![0u8; msg.len()];
                conn.read_exact(&mut buf).await.expect("read echo");
                String::from_utf8(buf).expect("utf8 echo")
            })
        })
        .collect();
    let results = within(
        5,
        "echo round trips finished in time",
        scope.join_handles(handles),
    )
    .await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r, Ok(format!("hello from task {i}\n")));
    }
}

/// A pool with its own runtime serves TCP both ways: server and clients are pool tasks.
#[test]
fn tcp_server_and_clients_as_tasks_without_ambient_runtime() {
    let pool = pool(2);
    let scope = Scope::new(pool.clone());
    let listener = pool.block_on(async {
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback")
    });
    let addr = listener.local_addr().expect("local addr");
    let n = 8usize;
    let server = scope.spawn_with_handle(async move {
        let mut served = 0;
        while served < n {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4];
            sock.read_exact(&mut buf).await.expect("server read");
            let v = u32::from_be_bytes(buf) * 2;
            sock.write_all(&v.to_be_bytes())
                .await
                .expect("server write");
            served += 1;
        }
        served
    });
    let clients: Vec<_> = (0..n as u32)
        .map(|i| {
            scope.spawn_with_handle(async move {
                let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
                conn.write_all(&i.to_be_bytes())
                    .await
                    .expect("client write");
                let mut buf = [0u8; 4];
                conn.read_exact(&mut buf).await.expect("client read");
                u32::from_be_bytes(buf)
            })
        })
        .collect();
    let results = pool.block_on(async {
        within(5, "clients finished in time", scope.join_handles(clients)).await
    });
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r, Ok(i as u32 * 2));
    }
    assert_eq!(pool.block_on(server), Ok(n));
}
