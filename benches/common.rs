//! Shared set-up for the benchmarks: the peers, built the same way in every bench.
#![allow(dead_code)]

use std::sync::Arc;

/// A 2-worker multi-thread tokio runtime: the `tokio::spawn` peer.
pub fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// async-executor on 2 threads: the smol peer. Dropping the guard stops its threads.
pub struct SmolPool {
    pub ex: Arc<async_executor::Executor<'static>>,
    stop: Option<async_channel_stop::Sender>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// A tiny stop signal for the executor threads.
pub mod async_channel_stop {
    pub type Sender = tokio::sync::watch::Sender<bool>;
}

impl SmolPool {
    pub fn new(threads: usize) -> SmolPool {
        let ex = Arc::new(async_executor::Executor::new());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let threads = (0..threads)
            .map(|_| {
                let (ex, mut rx) = (ex.clone(), rx.clone());
                std::thread::spawn(move || {
                    futures::executor::block_on(ex.run(async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    }))
                })
            })
            .collect();
        drop(rx);
        SmolPool {
            ex,
            stop: Some(tx),
            threads,
        }
    }
}

impl Drop for SmolPool {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
