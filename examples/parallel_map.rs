//! Parallel map with `par_map_async`: fetch user records concurrently, results in
//! input order.
//!
//! Run with `cargo run --release --example parallel_map`.

use std::time::Duration;

use async_rayon::{Config, Scope, ThreadPoolInner};

#[derive(Debug)]
#[allow(dead_code)] // fields are read through Debug
struct User {
    id: u32,
    name: String,
}

async fn fetch_user_data(id: u32) -> Result<User, String> {
    tokio::time::sleep(Duration::from_millis(10)).await;
    if id == 4 {
        return Err(format!("user {id} not found"));
    }
    Ok(User {
        id,
        name: format!("user-{id}"),
    })
}

fn main() {
    let pool = ThreadPoolInner::with_config(Config::io_bound());
    let scope = Scope::new(pool.clone());
    let user_ids = vec![1, 2, 3, 4, 5];

    let results = pool
        .block_on(scope.par_map_async(&user_ids, |&id| async move { fetch_user_data(id).await }));
    for result in results {
        match result {
            Ok(Ok(user)) => println!("User: {user:?}"),
            Ok(Err(e)) => eprintln!("Lookup failed: {e}"),
            Err(e) => eprintln!("Task failed: {e}"),
        }
    }
}
