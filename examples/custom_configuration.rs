//! Configuration: presets, a custom `Config`, the builder, and the error a bad setting gives.
//!
//! Run with `cargo run --release --example custom_configuration`.

use std::time::Duration;

use async_rayon::{Config, Scope, ThreadPoolInner};

fn main() {
    // CPU-bound: threads = cores; I/O-bound: threads = cores x 2.
    let cpu = ThreadPoolInner::with_config(Config::cpu_bound());
    let io = ThreadPoolInner::with_config(Config::io_bound());
    println!("cpu_bound: {:?}", cpu.config());
    println!("io_bound:  {:?}", io.config());

    let custom = ThreadPoolInner::with_config(Config {
        num_threads: 32,
        max_pending: Some(50_000),
        enable_work_stealing: true,
        task_timeout: Some(Duration::from_secs(30)),
    });
    println!("custom:    {:?}", custom.config());

    // The builder adds a name (metrics label, thread names) and thread hooks.
    let named = ThreadPoolInner::builder()
        .name("ingest")
        .num_threads(2)
        .max_pending(1_000)
        .thread_name("ingest-worker")
        .on_thread_start(|| println!("started {:?}", std::thread::current().name()))
        .build()
        .expect("valid configuration");
    let scope = Scope::new(named.clone());
    let where_ = named.block_on(
        scope.spawn_with_handle(async { std::thread::current().name().map(str::to_string) }),
    );
    println!("a task ran on {where_:?}");

    // Bad settings are errors that name the field.
    match ThreadPoolInner::try_with_config(Config {
        num_threads: 0,
        ..Config::default()
    }) {
        Ok(_) => unreachable!("0 threads is invalid"),
        Err(e) => println!("num_threads = 0: {e}"),
    }
}
